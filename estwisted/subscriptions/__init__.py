"""
Subscriptions over the core: volatile (catch-up and live) and persistent
(competing consumers).
"""
