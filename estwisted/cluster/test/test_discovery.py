# -*- test-case-name: estwisted.cluster.test.test_discovery -*-
"""
Tests for L{estwisted.cluster.discovery}: A records to seeds, retries and plain log
lines while DNS finds nothing, static seeds from the configuration.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.discovery import DnsSeedSource, SeedDiscovery, a_record_addresses, is_ip
from estwisted.cluster.gossip import Endpoint
from estwisted.node.config import load_config


def a(name: bytes, address: str) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, dns.IN, 1, dns.Record_A(address))


class FakeResolver:
    """
    Answers C{lookupAddress} from a list of prepared results, recording
    the names asked.
    """

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.asked: list[str] = []

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.asked.append(name)
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            return fail(result)
        return succeed((result, [], []))


class RecordTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        answers = [
            a(b"c", "127.0.0.1"),
            dns.RRHeader(b"c", dns.CNAME, dns.IN, 1, dns.Record_CNAME(b"x")),
            a(b"c", "127.0.0.2"),
            a(b"c", "127.0.0.1"),
            dns.RRHeader(b"c", dns.AAAA, dns.IN, 1, dns.Record_AAAA("::1")),
        ]
        self.assertEqual(a_record_addresses(answers), ["127.0.0.1", "127.0.0.2", "::1"])

    def test_is_ip(self) -> None:
        self.assertTrue(is_ip("127.0.0.1"))
        self.assertTrue(is_ip("::1"))
        self.assertFalse(is_ip("node1.example.com"))


class DnsSeedSourceTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        Every A record becomes a seed on the gossip port.
        """
        found: list[list[Endpoint]] = []
        resolver = FakeResolver([a(b"c.test", "127.0.0.1"), a(b"c.test", "127.0.0.3")])
        source = DnsSeedSource(resolver, "c.test", 2112, Clock(), found.append)
        with capturedLogs() as events:
            source.start()
        self.assertEqual(found, [[Endpoint("127.0.0.1", 2112), Endpoint("127.0.0.3", 2112)]])
        self.assertEqual(resolver.asked, ["c.test"])
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn("c.test resolves to 127.0.0.1, 127.0.0.3", text)

    def test_nothing_found_retries_and_says_so(self) -> None:
        """
        An empty answer or an error is logged naming the name and server,
        and the lookup is retried every second until it finds something;
        the log line is not repeated every second.
        """
        clock = Clock()
        found: list[list[Endpoint]] = []
        resolver = FakeResolver(
            [], error.DomainError("c.test"), error.DNSServerError("c.test"),
            [a(b"c.test", "127.0.0.2")],
        )
        source = DnsSeedSource(
            resolver, "c.test", 2112, clock, found.append, server="DNS server 127.0.0.1:53"
        )
        with capturedLogs() as events:
            source.start()
            for _ in range(3):
                clock.advance(1.0)
        lines = [formatEvent(e) for e in events if e.get("log_level") is LogLevel.warn]
        self.assertEqual(len(lines), 1)
        self.assertIn("c.test has no A records at DNS server 127.0.0.1:53", lines[0])
        self.assertEqual(len(resolver.asked), 4)
        self.assertEqual(found, [[Endpoint("127.0.0.2", 2112)]])
        self.assertFalse(clock.getDelayedCalls())

    def test_failure_logged_with_reason(self) -> None:
        clock = Clock()
        source = DnsSeedSource(
            FakeResolver(error.DomainError("c.test")), "c.test", 2112, clock, lambda f: None
        )
        with capturedLogs() as events:
            source.start()
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn("DNS discovery: cannot resolve c.test at the system resolver", text)
        for _ in range(31):
            clock.advance(1.0)
        self.assertEqual(source.attempts, 32)

    def test_stop_cancels_retry(self) -> None:
        clock = Clock()
        source = DnsSeedSource(FakeResolver([]), "c.test", 2112, clock, lambda f: None)
        with capturedLogs():
            source.start()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        source.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(5)
        self.assertEqual(source.attempts, 1)


class SeedDiscoveryTests(SynchronousTestCase):
    def test_static_seeds_from_config(self) -> None:
        """
        C{DiscoverViaDns: false}: the C{GossipSeed} endpoints, this node's
        own endpoint left out, and no resolver built (nothing to resolve).
        """
        config = load_config(
            {
                "ClusterSize": "3",
                "DiscoverViaDns": "false",
                "GossipSeed": "127.0.0.2:2112,127.0.0.3:2112,127.0.0.1:2112",
            }
        )
        got: list[list[Endpoint]] = []
        discovery = SeedDiscovery.from_config(config, Clock(), got.append)
        self.assertIsNone(discovery.resolver)
        self.assertIsNone(discovery.dns_source)
        with capturedLogs():
            discovery.start()
        self.assertEqual(got, [[Endpoint("127.0.0.2", 2112), Endpoint("127.0.0.3", 2112)]])

    def test_dns_from_config(self) -> None:
        """
        C{ClusterDns} with C{ClusterGossipPort} and C{ClusterDnsServer}.
        """
        config = load_config(
            {
                "ClusterSize": "3",
                "ClusterDns": "cluster.estore.test",
                "ClusterGossipPort": "2112",
                "ClusterDnsServer": "127.0.0.1:5353",
            }
        )
        discovery = SeedDiscovery.from_config(config, Clock(), lambda s: None)
        source = discovery.dns_source
        assert source is not None
        self.assertEqual((source.name, source.port), ("cluster.estore.test", 2112))
        self.assertEqual(source.server, "DNS server 127.0.0.1:5353")
        self.assertEqual(discovery.resolver.servers, [("127.0.0.1", 5353)])

    def test_dns_leaves_out_own_endpoint(self) -> None:
        got: list[list[Endpoint]] = []
        resolver = FakeResolver([a(b"c", "127.0.0.1"), a(b"c", "127.0.0.2")])
        discovery = SeedDiscovery(got.append, exclude=[Endpoint("127.0.0.1", 2112)])
        discovery.dns_source = DnsSeedSource(resolver, "c", 2112, Clock(), discovery._found)
        with capturedLogs():
            discovery.start()
        self.assertEqual(got, [[Endpoint("127.0.0.2", 2112)]])

    def test_host_name_seed_resolved(self) -> None:
        got: list[list[Endpoint]] = []
        resolver = FakeResolver([a(b"node2.test", "127.0.0.2")])
        discovery = SeedDiscovery(
            got.append, static=[Endpoint("node2.test", 2113)], resolver=resolver
        )
        with capturedLogs():
            discovery.start()
        self.assertEqual(got, [[Endpoint("127.0.0.2", 2113)]])
        self.assertEqual(resolver.asked, ["node2.test"])
