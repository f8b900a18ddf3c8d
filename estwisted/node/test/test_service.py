"""
Tests for L{estwisted.node.service}: the node's service tree, built up
front by L{make_node_service}, started and stopped on a memory reactor.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.node import tap
from estwisted.node.config import NodeConfig
from estwisted.node.service import (
    INodeReactor,
    NodeService,
    SequentialMultiService,
    endpoint_description,
    listeners_of,
    make_node_service,
)


def config_of(*argv: str) -> NodeConfig:
    """
    A node configuration parsed as C{twistd estore} parses its command line.
    """
    options = tap.Options(environ={})
    options.parseOptions(["--mem-db", *argv])
    config: NodeConfig = options.config
    return config


class RefusingReactor(MemoryReactorClock):
    """
    A memory reactor on which one port is taken.
    """

    def __init__(self, taken: int) -> None:
        super().__init__()
        self.taken = taken

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port == self.taken:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def build(reactor: MemoryReactorClock, *argv: str) -> NodeService:
    return make_node_service(config_of(*argv), cast(INodeReactor, reactor))


class TreeTests(SynchronousTestCase):
    """
    L{make_node_service} builds the whole tree before anything runs.
    """

    def test_order(self) -> None:
        """
        A single in-memory node: storage first (it stops last), then the
        core, then the listeners, one per endpoint.
        """
        node = build(MemoryReactorClock())
        self.assertEqual([s.name for s in node], ["storage", "core", "listeners"])
        self.assertEqual(
            [s.name for s in listeners_of(node)],
            ["external TCP", "internal TCP", "external HTTP", "internal HTTP"],
        )

    def test_projections_and_cluster(self) -> None:
        """
        With projections and C{ClusterSize} 3 the projections and the
        cluster hang between the core and the listeners.
        """
        node = build(MemoryReactorClock(), "--run-projections", "system", "--cluster-size", "3")
        self.assertEqual(
            [s.name for s in node], ["storage", "core", "projections", "cluster", "listeners"]
        )
        self.assertIsNotNone(node.cluster)

    def test_nothing_runs_before_start(self) -> None:
        """
        Building listens on nothing; all it schedules is the group commit
        of the default users (written before a cluster's commit gate is
        attached).
        """
        reactor = MemoryReactorClock()
        build(reactor)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(
            [call.func.__qualname__ for call in reactor.getDelayedCalls()],  # type: ignore[attr-defined]
            ["GroupCommit.flush"],
        )


class StartStopTests(SynchronousTestCase):
    """
    Starting and stopping the tree.
    """

    def test_listens_once_users_are_durable(self) -> None:
        """
        A single node listens on its four ports once the default users'
        group commit ran, and says so.
        """
        reactor = MemoryReactorClock()
        node = build(reactor)
        listening = node.when_listening()
        node.startService()
        self.assertEqual(reactor.tcpServers, [])
        self.assertNoResult(listening)
        reactor.advance(0)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(1113, "127.0.0.1"), (1112, "127.0.0.1"), (2113, "127.0.0.1"), (2112, "127.0.0.1")],
        )
        self.successResultOf(listening)
        # Asked again afterwards, the answer is at once.
        self.successResultOf(node.when_listening())
        self.successResultOf(node.stopService())

    def test_stop_releases_ports_then_closes_storage(self) -> None:
        """
        Stopping releases every port, then closes the store's storage.
        """
        reactor = MemoryReactorClock()
        node = build(reactor)
        node.startService()
        reactor.advance(0)
        ports = list(listeners_of(node))
        self.assertTrue(all(s.running for s in ports))
        closed: list[str] = []
        storage = node.getServiceNamed("storage")
        original = storage.closer

        def closer() -> None:
            closed.append("storage")
            self.assertFalse(any(s.running for s in ports))
            original()

        storage.closer = closer
        self.successResultOf(node.stopService())
        self.assertEqual(closed, ["storage"])
        self.assertFalse(node.running)

    def test_listen_failure_stops_the_reactor(self) -> None:
        """
        A port that cannot be listened on fails L{NodeService.when_listening}
        with the reason and stops the reactor.
        """
        reactor = RefusingReactor(taken=2113)
        node = build(reactor)
        listening = node.when_listening()
        reactor.running = True
        node.startService()
        reactor.advance(0)
        self.failureResultOf(listening, CannotListenError)
        self.assertTrue(reactor.hasStopped)
        self.successResultOf(node.stopService())

    def test_stop_before_ready(self) -> None:
        """
        Stopped before its users were durable, the node never listens.
        """
        reactor = MemoryReactorClock()
        node = build(reactor)
        node.startService()
        d = node.stopService()
        reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual(reactor.tcpServers, [])


class Recording(Service):
    """
    Records its stop and stops when told.
    """

    def __init__(self, name: str, log: list[str]) -> None:
        self.setName(name)
        self.log = log
        self.stopped: Deferred[None] = Deferred()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.log.append(f"stop {self.name}")
        return self.stopped


class SequentialMultiServiceTests(SynchronousTestCase):
    """
    L{SequentialMultiService} stops its children last first, one at a time.
    """

    def test_one_at_a_time(self) -> None:
        log: list[str] = []
        parent = SequentialMultiService()
        children = [Recording(name, log) for name in "abc"]
        for child in children:
            cast(IService, child).setServiceParent(parent)
        parent.startService()
        done = parent.stopService()
        self.assertEqual(log, ["stop c"])
        children[2].stopped.callback(None)
        self.assertEqual(log, ["stop c", "stop b"])
        children[1].stopped.callback(None)
        self.assertEqual(log, ["stop c", "stop b", "stop a"])
        self.assertNoResult(done)
        children[0].stopped.callback(None)
        self.successResultOf(done)


class EndpointDescriptionTests(SynchronousTestCase):
    """
    L{endpoint_description} names a TCP listener as L{serverFromString}
    parses it.
    """

    @given(
        address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
        port=st.integers(0, 65535),
    )
    def test_round_trip(self, address: ipaddress._BaseAddress, port: int) -> None:
        endpoint = serverFromString(
            MemoryReactorClock(), endpoint_description(str(address), port)
        )
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)
        self.assertEqual(endpoint._interface, str(address))  # type: ignore[attr-defined]
        self.assertEqual(endpoint._port, port)  # type: ignore[attr-defined]

    def test_ipv6_quoted(self) -> None:
        self.assertEqual(endpoint_description("::1", 1113), "tcp:1113:interface=\\:\\:1")
