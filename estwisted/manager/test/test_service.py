# -*- test-case-name: estwisted.manager.test.test_service -*-
"""
Tests for L{estwisted.manager.service}: the manager's service tree.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.gossip import Endpoint
from estwisted.manager.config import ManagerConfig
from estwisted.manager.service import StartupError, make_manager_service


class RefusingTransport:
    def __init__(self) -> None:
        self.posts: list[Any] = []

    def post_gossip(self, target: Any, info: Any) -> Deferred[Any]:
        self.posts.append(target)
        return fail(ConnectionRefusedError())


class RecordingDiscovery:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


class ServiceTreeTests(SynchronousTestCase):
    """
    L{make_manager_service} listens on both HTTP ports and runs gossip.
    """

    def test_listensAndGossips(self) -> None:
        """
        The two listeners are IntIp:IntHttpPort and ExtIp:ExtHttpPort;
        discovery starts and stops with the service, and gossip rounds go to
        the seeds.
        """
        reactor = MemoryReactorClock()
        transport, discovery = RefusingTransport(), RecordingDiscovery()
        config = ManagerConfig(enable_watchdog=False, int_ip="127.0.0.2", ext_ip="127.0.0.3")
        service = make_manager_service(config, (), reactor, transport=transport,
                                       discovery=discovery)
        service.startService()
        self.assertEqual(sorted((port, interface) for port, _, _, interface in reactor.tcpServers),
                         [(30777, "127.0.0.2"), (30778, "127.0.0.3")])
        service.gossip.set_seeds([Endpoint("127.0.0.9", 30777)])  # type: ignore[attr-defined]
        reactor.advance(0.1)
        self.assertIn(Endpoint("127.0.0.9", 30777), transport.posts)
        service.stopService()
        self.assertEqual(discovery.calls, ["start", "stop"])
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_plaintextOffLoopbackRefused(self) -> None:
        """
        Without a certificate a non-loopback address is refused unless
        Insecure is set.
        """
        reactor = MemoryReactorClock()
        config = ManagerConfig(enable_watchdog=False, int_ip="10.0.0.1", ext_ip="10.0.0.1")
        e = self.assertRaises(StartupError, make_manager_service, config, (), reactor,
                              transport=RefusingTransport(), discovery=RecordingDiscovery())
        self.assertIn("not a loopback address", str(e))
        insecure = ManagerConfig(enable_watchdog=False, int_ip="10.0.0.1", ext_ip="10.0.0.1",
                                 insecure=True)
        make_manager_service(insecure, (), reactor, transport=RefusingTransport(),
                             discovery=RecordingDiscovery())
