"""
Manager nodes (the Event Store "Setting up a Cluster with Manager Nodes"
guide): a watchdog that starts and supervises database nodes, manager
gossip, and a known C{/gossip} endpoint for clients.  Run with
C{twistd -n estore-manager --config manager.yaml}; see C{docs/manager.md}.
"""
