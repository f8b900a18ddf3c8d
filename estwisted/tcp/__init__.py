"""
The TCP edges: the client protocol (1113) and the internal port (1112)
that replicas share with clients.
"""
