"""
estwisted: a clustered event database on Twisted, wire-compatible with Event Store v5.
"""

__version__ = "0.1.0"
