"""
One node: configuration, the wiring of its services, the twistd plugin's
options and the command line.
"""
