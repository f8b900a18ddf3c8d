# -*- test-case-name: estwisted.cluster.test.test_leadership -*-
"""
Who leads, as one immutable value: the read model of the node role machine.

L{LeadershipView} is what the node role machine
(L{estwisted.cluster.controller.NodeMachine}, the only place node states change)
publishes after every change: our own state, our epoch, the leader's
internal and external endpoints, and whether this node takes writes.
L{Leadership} holds the current view and tells subscribers of new ones.
The edges read it (TCP C{require_master} checks, HTTP
C{ES-RequireMaster} redirects, forwarding of HTTP writes to the leader,
C{/info}) and replication applies its write refusal to the store, instead
of each keeping its own idea of who leads.

A single node (C{ClusterSize = 1}) is always L{STANDALONE}: it takes
writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Optional

from attrs import frozen

from estwisted.cluster.gossip import Endpoint, MemberInfo, VNodeState
from estwisted.core.errors import EstoreError, NotLeader, NotReady

#: No epoch yet (the gossip convention).
NO_EPOCH_ID = uuid.UUID(int=0)


@frozen
class LeadershipView:
    """
    One node's view of the cluster's leadership.

    @ivar state: our node state.
    @ivar epoch_number: the number of the newest epoch in our log (C{-1}:
        none).
    @ivar epoch_position: where that epoch record is (C{-1}: none).
    @ivar epoch_id: its id (L{NO_EPOCH_ID}: none).
    @ivar leader_id: the leader's instance id: ours while we take writes,
        the followed leader's while we follow one, else C{None}.
    @ivar leader_internal_tcp: the leader's internal TCP endpoint
        (replication), C{None} when no leader is known.
    @ivar leader_internal_http: the leader's internal HTTP endpoint
        (gossip, elections).
    @ivar leader_external_tcp: the leader's external TCP endpoint (what a
        client is told in C{NotHandled}).
    @ivar leader_external_http: the leader's external HTTP endpoint
        (redirects, forwarding).
    @ivar takes_writes: we lead and replication wrote our epoch: writes
        are ours to take (they still wait for the quorum).
    """

    state: VNodeState
    epoch_number: int = -1
    epoch_position: int = -1
    epoch_id: uuid.UUID = NO_EPOCH_ID
    leader_id: Optional[uuid.UUID] = None
    leader_internal_tcp: Optional[Endpoint] = None
    leader_internal_http: Optional[Endpoint] = None
    leader_external_tcp: Optional[Endpoint] = None
    leader_external_http: Optional[Endpoint] = None
    takes_writes: bool = False

    @classmethod
    def of(
        cls, own: MemberInfo, state: VNodeState, leader: Optional[MemberInfo], takes_writes: bool
    ) -> LeadershipView:
        """
        The view of a node whose record is C{own}, in C{state}, that takes
        writes or follows C{leader} (C{None}: neither).
        """
        if takes_writes:
            leader = own
        return cls(
            state=state,
            epoch_number=own.epoch_number,
            epoch_position=own.epoch_position,
            epoch_id=own.epoch_id,
            leader_id=None if leader is None else leader.instance_id,
            leader_internal_tcp=None if leader is None else leader.internal_tcp,
            leader_internal_http=None if leader is None else leader.internal_http,
            leader_external_tcp=None if leader is None else leader.external_tcp,
            leader_external_http=None if leader is None else leader.external_http,
            takes_writes=takes_writes,
        )

    @property
    def v5_state(self) -> str:
        """
        Our state as v5 names it (C{"Master"}, C{"Slave"}, ...).
        """
        return self.state.v5_name

    @property
    def follows(self) -> bool:
        """
        We do not take writes but know the leader that does.
        """
        return not self.takes_writes and self.leader_external_http is not None

    def refusal(self) -> Optional[EstoreError]:
        """
        Why a write (or a read that requires the master) is not ours:
        C{None} when we take writes, L{NotLeader} naming the leader's
        external endpoints when we follow one, else L{NotReady}.
        """
        if self.takes_writes:
            return None
        tcp, http = self.leader_external_tcp, self.leader_external_http
        if tcp is not None and http is not None:
            return NotLeader(
                "Not the leader", tcp=(tcp.host, tcp.port), http=(http.host, http.port)
            )
        if self.state is VNodeState.Initializing:
            return NotReady("The node has not joined the cluster yet")
        return NotReady("No leader")

    def forward_http(self) -> Optional[tuple[str, int]]:
        """
        Where a follower sends an HTTP write: the leader's external HTTP
        C{(host, port)} while we follow one, else C{None}.
        """
        http = self.leader_external_http
        if not self.follows or http is None:
            return None
        return (http.host, http.port)


#: A single node: it leads, always.
STANDALONE = LeadershipView(state=VNodeState.Master, takes_writes=True)


class Leadership:
    """
    The published L{LeadershipView} of a node: the current one, and the
    listeners told of each new one (in subscription order).
    """

    def __init__(self, initial: LeadershipView = STANDALONE) -> None:
        self._view = initial
        self._listeners: list[Callable[[LeadershipView], None]] = []

    @property
    def view(self) -> LeadershipView:
        return self._view

    def subscribe(self, listener: Callable[[LeadershipView], None]) -> None:
        """
        Call C{listener} with every view published from now on.
        """
        self._listeners.append(listener)

    def publish(self, view: LeadershipView) -> None:
        """
        Make C{view} current and tell the listeners, if it differs from
        the current one.
        """
        if view == self._view:
            return
        self._view = view
        for listener in list(self._listeners):
            listener(view)




class LeaderLease:
    """
    How long a leader may still act alone on what it last heard.

    A leader holds the lease for C{duration} seconds after it last heard
    a quorum of the cluster (itself included).  The duration is shorter than
    the time the other nodes need to elect a new leader after they last
    heard this one, so while the lease holds no other node can be leading:
    what a leader does without a quorum write behind it (handing persistent
    subscription messages to consumers) waits while the lease has lapsed.
    Time is passed in.
    """

    def __init__(self, duration: float) -> None:
        if duration <= 0:
            raise ValueError("a lease lasts longer than 0 s")
        self.duration = duration
        self._until: Optional[float] = None

    def renew(self, heard_at: float) -> None:
        """
        A quorum was heard at C{heard_at}: hold the lease until
        C{heard_at + duration} (never shorter than it already is).
        """
        until = heard_at + self.duration
        if self._until is None or until > self._until:
            self._until = until

    def release(self) -> None:
        """
        No longer leading: the lease is gone until the next renewal.
        """
        self._until = None

    def holds(self, now: float) -> bool:
        """
        Whether the lease holds at C{now}.
        """
        return self._until is not None and now < self._until


def lease_duration(election_timeout: float, gossip_timeout: Optional[float] = None) -> float:
    """
    The lease of a leader in a cluster electing with C{election_timeout}
    (C{LeaderElectionTimeoutMs}) whose followers probe their leader with
    C{gossip_timeout} (C{GossipTimeoutMs}): 80% of the shorter of half the
    election timeout and the gossip timeout (0.4 s with the defaults).  A
    follower declares a silent leader dead no sooner than a probe sent
    after it last heard the leader timed out, and elections start only then;
    the leader heard that follower at about the same moment, so its lease
    lapses before a rival can lead.  The leader's links heartbeat every
    fifth of the election timeout (L{estwisted.replication.state}), so an
    idle healthy leader keeps its lease.
    """
    shortest = election_timeout / 2
    if gossip_timeout is not None:
        shortest = min(shortest, gossip_timeout)
    return 0.8 * shortest


__all__ = [
    "NO_EPOCH_ID",
    "STANDALONE",
    "LeaderLease",
    "Leadership",
    "LeadershipView",
    "lease_duration",
]
