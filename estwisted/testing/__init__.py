# -*- test-case-name: estwisted.cluster.test.test_elections -*-
"""
Reusable fakes and simulators for estwisted's own tests and for code built
on it.  Nothing here is used by a running node.
"""
