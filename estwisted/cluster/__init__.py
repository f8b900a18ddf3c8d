"""
Cluster membership: gossip, elections, discovery, the leadership view and
the node controller that drives them.
"""
