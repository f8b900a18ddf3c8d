"""
System tests: real node processes, real clusters, real third-party clients.
"""
