# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
Cluster discovery: which node to connect to, from gossip documents.

L{choose_node} is the pure decision (members in, endpoint out);
L{GossipDiscoverer} asks the seeds one after the other through an injected
C{fetch(host, port) -> Deferred[bytes]} (L{http_gossip_fetcher} is the real
one, an C{Agent} GET of C{/gossip}) and applies it.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from estwisted.client._settings import ClusterSettings, NodePreference
from estwisted.cluster.gossip import GossipFormatError, MemberInfo, VNodeState, decode_cluster_info

_log = Logger()

#: Members never connected to.
_EXCLUDED = frozenset({VNodeState.Manager, VNodeState.ShuttingDown, VNodeState.Shutdown})

#: Preference among states when the leader is wanted (lower is better).
_LEADER_ORDER = {
    VNodeState.Master: 0,
    VNodeState.PreMaster: 1,
    VNodeState.Slave: 2,
    VNodeState.CatchingUp: 3,
    VNodeState.Clone: 4,
    VNodeState.PreReplica: 5,
    VNodeState.ReadOnlyReplica: 6,
    VNodeState.Unknown: 7,
    VNodeState.Initializing: 8,
}
_FOLLOWER_ORDER = dict(_LEADER_ORDER)
_FOLLOWER_ORDER.update({VNodeState.Slave: -2, VNodeState.CatchingUp: -1})


@frozen
class NodeEndpoints:
    """
    Where a node takes client connections.  C{secure_tcp_port} is 0 when it
    has no TLS listener.
    """

    host: str
    tcp_port: int
    secure_tcp_port: int = 0


def choose_node(
    members: Sequence[MemberInfo], preference: NodePreference, rng: random.Random
) -> Optional[MemberInfo]:
    """
    The member to connect to: alive, not a manager or shutting down, then
    the best by C{preference} and state (ties keep gossip order, except for
    C{RANDOM} and among equally ranked followers, chosen at random).

    @return: C{None} when no member qualifies.
    """
    candidates = [
        m
        for m in members
        if m.is_alive and m.state not in _EXCLUDED and not m.is_seed_placeholder
    ]
    if not candidates:
        return None
    if preference is NodePreference.RANDOM:
        return rng.choice(candidates)
    order = _LEADER_ORDER if preference is NodePreference.LEADER else _FOLLOWER_ORDER
    best = min(order.get(m.state, 99) for m in candidates)
    ranked = [m for m in candidates if order.get(m.state, 99) == best]
    if preference is NodePreference.FOLLOWER and len(ranked) > 1:
        return rng.choice(ranked)
    return ranked[0]


def endpoints_of(member: MemberInfo) -> NodeEndpoints:
    return NodeEndpoints(
        member.external_tcp.host, member.external_tcp.port, member.external_secure_tcp_port
    )


Fetch = Callable[[str, int], "Deferred[bytes]"]


def http_gossip_fetcher(reactor: Any, timeout: float) -> Fetch:
    """
    A fetch function doing C{GET http://host:port/gossip?format=json} with
    an C{Agent} on C{reactor}, abandoned after C{timeout} seconds.
    """
    agent = Agent(reactor, connectTimeout=max(1, int(timeout + 0.999)))

    def fetch(host: str, port: int) -> Deferred[bytes]:
        url = f"http://{host}:{port}/gossip?format=json".encode("ascii")
        d = agent.request(b"GET", url, Headers({b"Accept": [b"application/json"]}))

        def got(response: Any) -> Deferred[bytes]:
            if response.code != 200:
                response.deliverBody(_Discard())
                raise GossipFormatError(f"gossip answered HTTP {response.code}")
            return readBody(response)

        body: Deferred[bytes] = d.addCallback(got)
        body.addTimeout(timeout, reactor)
        return body

    return fetch


class _Discard:
    """
    Body consumer that drops everything.
    """

    def makeConnection(self, transport: Any) -> None:  # noqa: N802
        pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        pass

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        pass


Resolve = Callable[[str], Awaitable[Sequence[str]]]


class GossipDiscoverer:
    """
    Finds the node to connect to, asking the seeds (or every address of the
    cluster DNS name) in turn.  It remembers the members of the last good
    answer and asks those first next time, as the .NET client does.
    """

    def __init__(
        self,
        clock: IReactorTime,
        settings: ClusterSettings,
        fetch: Fetch,
        resolve: Optional[Resolve] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._fetch = fetch
        self._resolve = resolve
        self._rng = rng or random.Random()
        self._known: list[tuple[str, int]] = []

    async def _seeds(self) -> list[tuple[str, int]]:
        if self._settings.gossip_seeds:
            seeds = list(self._settings.gossip_seeds)
        else:
            assert self._settings.cluster_dns is not None
            if self._resolve is None:
                return []
            try:
                addresses = await self._resolve(self._settings.cluster_dns)
            except Exception as e:
                _log.info("Cannot resolve {name}: {error}", name=self._settings.cluster_dns,
                          error=e)
                return []
            seeds = [(a, self._settings.gossip_port) for a in addresses]
        # Known members first (shuffled), then seeds not among them.
        known = list(self._known)
        self._rng.shuffle(known)
        return known + [s for s in seeds if s not in known]

    async def discover_once(self, failed: Optional[NodeEndpoints] = None) -> Optional[
        NodeEndpoints
    ]:
        """
        One pass over the seeds.

        @param failed: the endpoint just lost: not chosen again in this pass
            unless gossip says it is the leader.
        @return: the chosen node, or C{None} if no seed gave one.
        """
        for host, port in await self._seeds():
            try:
                body = await self._fetch(host, port)
                info = decode_cluster_info(body)
            except Exception as e:
                _log.debug("Gossip from {host}:{port} failed: {error}", host=host, port=port,
                           error=e)
                continue
            member = choose_node(info.members, self._settings.node_preference, self._rng)
            if member is None:
                continue
            self._known = [
                (m.external_http.host, m.external_http.port)
                for m in info.members
                if m.state not in _EXCLUDED and not m.is_seed_placeholder
            ]
            chosen = endpoints_of(member)
            if chosen == failed and member.state is not VNodeState.Master:
                continue
            return chosen
        return None
