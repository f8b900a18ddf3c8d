# -*- test-case-name: estwisted.manager.test.test_gossip -*-
"""
Tests for L{estwisted.manager.gossip} and L{estwisted.manager.http}.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.gossip import (
    ClusterInfo,
    ClusterView,
    Endpoint,
    GossipSettings,
    MemberInfo,
    VNodeState,
    decode_cluster_info,
    encode_cluster_info,
)
from estwisted.manager.gossip import ManagerGossip, manager_member
from estwisted.manager.http import ManagerResource


class Network:
    """
    In-memory gossip transport: posts go straight to the target's
    C{handle_gossip}.
    """

    def __init__(self) -> None:
        self.members: dict[Endpoint, ManagerGossip] = {}

    def post_gossip(self, target: Endpoint, info: ClusterInfo) -> Deferred[ClusterInfo]:
        peer = self.members.get(target)
        if peer is None:
            return fail(ConnectionRefusedError())
        reply = peer.handle_gossip(info)
        return succeed(reply) if reply is not None else fail(Exception("rejected"))


def make_manager(n: int, clock: Clock, network: Network, seeds: list[Endpoint]) -> ManagerGossip:
    own = manager_member(uuid.uuid4(), Endpoint(f"127.0.0.{n}", 30777),
                         Endpoint(f"127.0.0.{n}", 30778), clock.seconds())
    gossip = ManagerGossip(own, seeds, GossipSettings(), clock, network, random.Random(n))
    network.members[own.key] = gossip
    return gossip


def node_member(n: int, state: VNodeState, now: float) -> MemberInfo:
    return MemberInfo(
        instance_id=uuid.UUID(int=n), timestamp=now, state=state, is_alive=True,
        internal_tcp=Endpoint(f"127.0.0.{n}", 1112), external_tcp=Endpoint(f"127.0.0.{n}", 1113),
        internal_http=Endpoint(f"127.0.0.{n}", 2112),
        external_http=Endpoint(f"127.0.0.{n}", 2113),
    )


class ManagerGossipTests(SynchronousTestCase):
    """
    Managers find each other by their seeds and relay database nodes'
    records.
    """

    def test_managersConverge(self) -> None:
        """
        Three managers seeded with each other all end up knowing the three
        managers and a database node that gossiped to only one of them.
        """
        clock = Clock()
        clock.advance(1000)
        network = Network()
        ports = [Endpoint(f"127.0.0.{n}", 30777) for n in (1, 2, 3)]
        managers = [make_manager(n, clock, network, [p for p in ports if p.host != f"127.0.0.{n}"])
                    for n in (1, 2, 3)]
        for m in managers:
            m.start()
        reply = managers[0].handle_gossip(
            ClusterInfo((node_member(1, VNodeState.Master, clock.seconds()),),
                        Endpoint("127.0.0.1", 2112)))
        assert reply is not None
        self.assertIn(VNodeState.Manager, {m.state for m in reply.members})
        for _ in range(30):
            clock.advance(0.1)
        for m in managers:
            info = m.cluster_info()
            states = sorted(member.state.value for member in info.members)
            self.assertEqual(states, ["Manager", "Manager", "Manager", "Master"])
            self.assertTrue(all(member.instance_id.int != 0 for member in info.members))
        # Managers are never part of the electorate.
        view = ClusterView(managers[2].cluster_info().members)
        self.assertEqual(
            [m.state for m in view.members if m.is_alive].count(VNodeState.Manager), 3)
        self.assertNotIn(VNodeState.Manager, [m.state for m in view.electorate()])
        for m in managers:
            m.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_silentPeerMarkedDead(self) -> None:
        """
        A member that refuses gossip is marked dead; the loop goes on.
        """
        clock = Clock()
        network = Network()
        m = make_manager(1, clock, network, [Endpoint("127.0.0.2", 30777)])
        m.start()
        clock.advance(0.1)
        seed = m.machine.view.get(Endpoint("127.0.0.2", 30777))
        assert seed is not None
        self.assertFalse(seed.is_alive)
        self.assertTrue(clock.getDelayedCalls())
        m.stop()


class ManagerResourceTests(SynchronousTestCase):
    """
    The manager's HTTP resource, through L{StubTreq}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(5000)
        self.gossip = make_manager(1, self.clock, Network(), [])
        self.status = [{"name": "node-1", "state": "running"}]
        self.treq = StubTreq(ManagerResource(self.gossip, lambda: self.status))

    def get(self, path: str) -> tuple[int, bytes, Any]:
        response = self.successResultOf(self.treq.get("http://127.0.0.1:30778" + path))  # type: ignore[attr-defined]
        return response.code, self.successResultOf(response.content()), response.headers

    def test_getGossip(self) -> None:
        """
        C{GET /gossip} answers the v5 document with the manager's record in
        state Manager.
        """
        code, body, headers = self.get("/gossip")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"),
                         [b"application/json; charset=utf-8"])
        info = decode_cluster_info(body)
        self.assertEqual([m.state for m in info.members], [VNodeState.Manager])
        self.assertEqual(info.server, Endpoint("127.0.0.1", 30777))
        self.assertEqual(info.members[0].external_http, Endpoint("127.0.0.1", 30778))

    def test_postGossip(self) -> None:
        """
        C{POST /gossip} merges a node's table and answers the merged one.
        """
        node = node_member(2, VNodeState.Slave, self.clock.seconds())
        body = encode_cluster_info(ClusterInfo((node,), node.internal_http))
        response = self.successResultOf(
            self.treq.post("http://127.0.0.1:30777/gossip", data=body))  # type: ignore[attr-defined]
        self.assertEqual(response.code, 200)
        info = decode_cluster_info(self.successResultOf(response.content()))
        self.assertEqual(sorted(m.state.value for m in info.members), ["Manager", "Slave"])
        code, body, _ = self.get("/gossip")
        self.assertEqual(len(decode_cluster_info(body).members), 2)

    def test_postGarbage(self) -> None:
        response = self.successResultOf(
            self.treq.post("http://127.0.0.1:30777/gossip", data=b"nope"))  # type: ignore[attr-defined]
        self.assertEqual(response.code, 400)

    def test_watchdog(self) -> None:
        """
        C{GET /watchdog} lists the supervised nodes.
        """
        code, body, _ = self.get("/watchdog")
        self.assertEqual((code, json.loads(body)), (200, {"nodes": self.status}))

    def test_notFound(self) -> None:
        self.assertEqual(self.get("/streams/x")[0], 404)
