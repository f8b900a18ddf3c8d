"""
Quorum replication (cluster.md sections 4 and 5; docs/replication.md).

  - L{estwisted.replication.state}: the pure decisions (epochs, where a
    replica starts, the leader's quorum commit position, role assignment,
    the follower's state), no I/O;
  - L{estwisted.replication.codec}: the replication messages on the
    internal TCP port (pure);
  - L{estwisted.replication.link}: one connection, both sides;
  - L{estwisted.replication.leader} and L{estwisted.replication.follower}:
    the Twisted runners;
  - L{estwisted.replication.node}: one node's replication, driven by the
    role machine, and its wiring.

The internal TCP port that replicas share with clients is
L{estwisted.tcp.internal}; HTTP forwarding to the leader is
L{estwisted.http.forwarding}.
"""
