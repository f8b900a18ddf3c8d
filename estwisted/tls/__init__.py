"""
TLS: contexts for every listener, peer verification, certificate files.
"""
