# -*- test-case-name: tests.test_client -*-
"""
System tests of L{estwisted.client} against real node processes on
loopback: the shared suite (L{estwisted.client.test.suite}) on one node, a
client started before its node, DNS discovery, and three-node clusters (on
127.0.0.1-3) whose leader is SIGKILLed or SIGSTOPped while writers and
subscribers run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Coroutine
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase

from estwisted.client import (
    ClusterSettings,
    ConnectionSettings,
    EventStoreConnection,
    ExpectedVersion,
    PersistentSubscriptionSettings,
    ResolvedEvent,
    SingleNode,
    TransactionCommitUnknown,
    TransactionLost,
)
from estwisted.client.test.suite import (
    ADMIN,
    event,
    handlers_suite,
    operations_suite,
    subscriptions_suite,
    wait_until,
)
from tests.harness import NodeProcess, free_port, start_node
from tests.test_cluster_membership import FAST, port_free, running, start_all, wait_for_leader

reactor: Any = _reactor
_log = Logger()


def run(coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


class SingleNodeTests(TestCase):
    """
    Every operation against one real node.
    """

    timeout = 120

    def setUp(self) -> None:
        self.node = start_node(self, mem_db=True)
        self.connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(default_user_credentials=ADMIN, operation_timeout=5.0),
            SingleNode("127.0.0.1", self.node.ext_tcp_port),
        )
        self.addCleanup(self.connection.close)

    def test_operations(self) -> Deferred[None]:
        """
        Append, read one event, read forward and backward, read $all,
        expected-version errors, soft and hard delete, metadata.
        """
        return run(self._operations())

    async def _operations(self) -> None:
        await self.connection.connect()
        await operations_suite(self, self.connection)

    def test_subscriptions(self) -> Deferred[None]:
        """
        A volatile, a catch-up and a persistent subscription each see every
        event once, in order.
        """
        return run(self._subscriptions())

    async def _subscriptions(self) -> None:
        await self.connection.connect()
        await subscriptions_suite(self, self.connection, reactor)

    def test_handlers_returning_deferreds(self) -> Deferred[None]:
        """
        Catch-up, volatile and persistent handlers that return Deferreds or
        are coroutines see every event once, in order, one at a time; a
        failing persistent handler parks its event.
        """
        return run(self._handlers())

    async def _handlers(self) -> None:
        await self.connection.connect()
        await handlers_suite(self, self.connection, reactor)


class StartBeforeNodeTests(TestCase):
    timeout = 120

    def test_connects_when_the_node_comes(self) -> Deferred[None]:
        """
        A client started while no node is up keeps trying and connects when
        the node starts; an append queued meanwhile is then written.
        """
        return run(self._late_node())

    async def _late_node(self) -> None:
        from twisted.internet.threads import deferToThread

        node = NodeProcess(self.mktemp(), mem_db=True)
        self.addCleanup(node.stop)
        connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(
                keep_reconnecting=True, reconnection_delay=0.1, max_reconnection_delay=0.5,
                default_user_credentials=ADMIN, max_retries=-1,
            ),
            SingleNode("127.0.0.1", node.ext_tcp_port),
        )
        self.addCleanup(connection.close)
        connected = connection.connect()
        append = connection.append_to_stream("late", ExpectedVersion.ANY, [event(0)])
        await sleep(1.0)
        self.assertFalse(connected.called)
        await deferToThread(node.start)
        await connected
        result = await append
        self.assertEqual(result.next_expected_version, 0)


#: Leader kills in the failover test (the issue asks for 10; set
#: ESTWISTED_CLIENT_KILLS=10 for the long run).
KILLS = int(os.environ.get("ESTWISTED_CLIENT_KILLS", "3"))
PAUSES = int(os.environ.get("ESTWISTED_CLIENT_PAUSES", "2"))
#: Acknowledged appends the kill test waits for at least, the kills spread
#: over them (the issue's figure: ESTWISTED_CLIENT_KILLS=10
#: ESTWISTED_CLIENT_APPENDS=10000).
APPENDS = int(os.environ.get("ESTWISTED_CLIENT_APPENDS", "0"))
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


class ClusterFailoverTests(TestCase):
    """
    A three-node cluster on 127.0.0.1-3 (same ports, gossip seeds): writers
    and subscribers run through leader SIGKILLs.
    """

    timeout = 600

    def make_nodes(self, mem_db: bool = False) -> list[NodeProcess]:
        for host in HOSTS:
            if not port_free(host, 0):
                raise SkipTest(f"cannot bind {host}")
        for _ in range(20):
            ports = {n: free_port() for n in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            if all(port_free(h, p) for h in HOSTS for p in ports.values()):
                break
        else:
            raise SkipTest("no common free ports")
        seeds = ",".join(f"{h}:{ports['int_http']}" for h in HOSTS)
        # 16 MiB chunks: less to create on a busy disk than the default 256 MiB
        args = [
            "--cluster-size=3",
            "--discover-via-dns=false",
            f"--gossip-seed={seeds}",
            "--chunk-size=16777216",
        ] + FAST
        base = self.mktemp()
        nodes = [
            NodeProcess(
                os.path.join(base, h), host=h, ports=dict(ports), extra_args=args, mem_db=mem_db
            )
            for h in HOSTS
        ]
        for n in nodes:
            self.addCleanup(n.stop)
        return nodes

    def test_leader_killed_while_writing_and_subscribing(self) -> Deferred[None]:
        """
        Four writers append single events through one connection while a
        catch-up and a persistent subscriber on another connection read the
        stream; the leader is SIGKILLed (then restarted) several times.
        Every acknowledged append is in the stream exactly once, in each
        writer's order; each subscriber handled every acknowledged event
        and none twice.
        """
        return run(self._failover("kill", KILLS))

    def test_leader_paused_while_writing_and_subscribing(self) -> Deferred[None]:
        """
        The same with the leader SIGSTOPped (so only heartbeats and timeouts
        tell the client it is gone) and resumed a few seconds later, when it
        has been deposed.
        """
        return run(self._failover("pause", PAUSES))

    def test_client_started_before_the_cluster(self) -> Deferred[None]:
        """
        A client started while no node is up keeps discovering and connects
        to the leader once the cluster comes; an append queued meanwhile is
        written.
        """
        return run(self._before_cluster())

    def test_transactions_across_failover(self) -> Deferred[None]:
        """
        Transactions live in the leader's memory: after the leader is
        SIGKILLed, a transaction started on it fails its writes and its
        commit with L{TransactionLost} and nothing of it is stored; a
        commit racing the kill is stored atomically (all of its events or
        none, never twice) and, when its answer was lost
        (L{TransactionCommitUnknown}), appending the same events with the
        transaction's expected version settles it; a transaction on the
        new leader commits.
        """
        return run(self._transactions())

    async def _transactions(self) -> None:
        from twisted.internet.threads import deferToThread

        nodes = self.make_nodes(mem_db=True)
        start_all(nodes)
        wait_for_leader(nodes)
        connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(
                keep_reconnecting=True, operation_timeout=2.0, max_retries=100,
                reconnection_delay=0.1, max_reconnection_delay=0.5,
                default_user_credentials=ADMIN, heartbeat_interval=0.5, heartbeat_timeout=1.0,
            ),
            ClusterSettings(
                gossip_seeds=[(h, nodes[0].ext_http_port) for h in HOSTS], gossip_timeout=0.5
            ),
        )
        self.addCleanup(connection.close)
        await connection.connect()

        async def stored(stream: str) -> list[uuid.UUID]:
            page = await connection.read_stream_events_forward(stream, 0, 4096)
            return [e.original_event.event_id for e in page.events]

        # 1. a transaction open on the leader when it dies
        lost = await connection.start_transaction("tx-lost", ExpectedVersion.NO_STREAM)
        lost_events = [event(i) for i in range(3)]
        await lost.write(lost_events)
        leader = await deferToThread(wait_for_leader, nodes, 30.0)
        await deferToThread(leader.kill)
        survivors = [n for n in nodes if n is not leader]
        await deferToThread(wait_for_leader, survivors, 30.0)
        with self.assertRaises(TransactionLost):
            await lost.write([event(3)])
        with self.assertRaises(TransactionLost):
            await lost.commit()
        self.assertEqual(await stored("tx-lost"), [])

        # 2. a transaction on the new leader commits
        ok = await connection.start_transaction("tx-ok", ExpectedVersion.NO_STREAM)
        ok_events = [event(i) for i in range(4)]
        await ok.write(ok_events[:2])
        await ok.write(ok_events[2:])
        result = await ok.commit()
        self.assertEqual(result.next_expected_version, 3)
        self.assertEqual(await stored("tx-ok"), [e.event_id for e in ok_events])

        # 3. a commit racing a leader kill: all or nothing, never twice
        await deferToThread(leader.start)
        await deferToThread(wait_for_leader, nodes, 30.0)
        race = await connection.start_transaction("tx-race", ExpectedVersion.NO_STREAM)
        race_events = [event(i) for i in range(5)]
        await race.write(race_events)
        current = await deferToThread(wait_for_leader, nodes, 30.0)
        commit = race.commit()
        await deferToThread(current.kill)
        outcome: object
        try:
            outcome = await commit
        except (TransactionLost, TransactionCommitUnknown) as e:
            outcome = e
        await deferToThread(wait_for_leader, [n for n in nodes if n is not current], 30.0)
        ids = [e.event_id for e in race_events]
        found = await stored("tx-race")
        self.assertIn(found, ([], ids), f"a partial or repeated commit: {outcome!r}")
        if isinstance(outcome, TransactionLost):
            self.assertEqual(found, [])
        elif not isinstance(outcome, TransactionCommitUnknown):
            self.assertEqual(found, ids)
        else:
            # settle it: the same events, the same expected version
            assert outcome.expected_version is not None and outcome.stream is not None
            await connection.append_to_stream(
                outcome.stream, outcome.expected_version, list(outcome.events)
            )
            self.assertEqual(await stored("tx-race"), ids)
        _log.info(
            "transaction commit racing a leader kill: {outcome!r}; {found} of 5 events stored"
            " before settling",
            outcome=outcome, found=len(found),
        )

    async def _before_cluster(self) -> None:
        from twisted.internet.threads import deferToThread

        nodes = self.make_nodes(mem_db=True)
        connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(
                keep_reconnecting=True, max_retries=-1, reconnection_delay=0.1,
                max_reconnection_delay=0.5, default_user_credentials=ADMIN,
            ),
            ClusterSettings(
                gossip_seeds=[(h, nodes[0].ext_http_port) for h in HOSTS], gossip_timeout=0.5
            ),
        )
        self.addCleanup(connection.close)
        connected = connection.connect()
        append = connection.append_to_stream("early", ExpectedVersion.ANY, [event(0)])
        await sleep(1.5)
        self.assertFalse(connected.called)
        await deferToThread(start_all, nodes)
        leader = await deferToThread(wait_for_leader, nodes, 30.0)
        await connected
        result = await append
        self.assertEqual(result.next_expected_version, 0)
        await wait_until(
            reactor,
            lambda: connection.connected_to is not None
            and connection.connected_to.host == leader.host,
            20,
            "the client to be on the leader",
        )

    async def _failover(self, how: str, rounds: int) -> None:
        from twisted.internet.threads import deferToThread

        # paused nodes are not restarted: they may keep their data in memory
        nodes = self.make_nodes(mem_db=how == "pause")
        start_all(nodes)
        wait_for_leader(nodes)
        cluster = ClusterSettings(
            gossip_seeds=[(h, nodes[0].ext_http_port) for h in HOSTS], gossip_timeout=0.5
        )
        settings = ConnectionSettings(
            keep_reconnecting=True,
            operation_timeout=2.0,
            max_retries=100,
            reconnection_delay=0.1,
            max_reconnection_delay=0.5,
            default_user_credentials=ADMIN,
            heartbeat_interval=0.5,
            heartbeat_timeout=1.0,
        )
        writer = EventStoreConnection.create(reactor, settings, cluster)
        reader = EventStoreConnection.create(reactor, settings, cluster)
        self.addCleanup(writer.close)
        self.addCleanup(reader.close)
        reconnections: list[object] = []
        writer.on("connected", reconnections.append)
        await writer.connect()
        await reader.connect()
        stream = "failover"
        await writer.create_persistent_subscription(
            stream,
            "workers",
            PersistentSubscriptionSettings(
                start_from=0, checkpoint_after_ms=500, checkpoint_min_count=5,
                checkpoint_max_count=50, message_timeout_ms=10_000,
            ),
        )

        caught_up: list[uuid.UUID] = []
        handled: list[uuid.UUID] = []

        def on_catch_up(sub: object, e: ResolvedEvent) -> None:
            caught_up.append(e.original_event.event_id)

        def on_persistent(sub: object, e: ResolvedEvent, retry_count: int) -> None:
            handled.append(e.original_event.event_id)

        catch_up = reader.subscribe_to_stream_from(stream, None, on_catch_up, read_batch_size=100)
        persistent = await reader.connect_to_persistent_subscription(
            stream, "workers", on_persistent, buffer_size=50
        )

        stop = [False]
        acknowledged: dict[int, list[uuid.UUID]] = {i: [] for i in range(4)}
        failures: list[BaseException] = []

        async def write(i: int) -> None:
            n = 0
            while not stop[0]:
                e = event(n)
                n += 1
                try:
                    await writer.append_to_stream(stream, ExpectedVersion.ANY, [e])
                except Exception as error:
                    failures.append(error)
                    return
                acknowledged[i].append(e.event_id)

        def acked() -> int:
            return sum(len(a) for a in acknowledged.values())

        started = reactor.seconds()
        target = APPENDS if how == "kill" else 0
        writers = [run(write(i)) for i in range(4)]
        for round_ in range(rounds):
            await sleep(1.5)
            # spread the kills over the appends asked for
            share = target * round_ // rounds
            await wait_until(
                reactor, lambda share=share: acked() >= share or bool(failures), 300,
                f"{share} appends acknowledged",
            )
            leader = await deferToThread(wait_for_leader, nodes, 30.0)
            before = sum(len(a) for a in acknowledged.values())
            if how == "kill":
                await deferToThread(leader.kill)
            else:
                leader.pause()
            await sleep(2.0)
            # writes go on without the old leader (bounded wait: a loaded
            # machine may need a few seconds for the election)
            await wait_until(
                reactor,
                lambda before=before: sum(len(a) for a in acknowledged.values()) > before + 10,
                30,
                f"writes acknowledged after the {how}",
            )
            if how == "kill":
                await deferToThread(leader.start)
            else:
                leader.resume()
            await deferToThread(wait_for_leader, nodes, 30.0)
        await wait_until(
            reactor, lambda: acked() >= target or bool(failures), 300,
            f"{target} appends acknowledged",
        )
        await sleep(1.0)
        stop[0] = True
        await DeferredList(writers)
        elapsed = reactor.seconds() - started
        self.assertEqual(failures, [])
        every = [i for a in acknowledged.values() for i in a]
        self.assertGreater(len(every), 100)

        await wait_until(
            reactor,
            lambda: set(every) <= set(caught_up) and set(every) <= set(handled),
            60,
            "the subscribers to see every acknowledged event",
        )

        # The stream as stored: each acknowledged id once, in each writer's order.
        stored: list[uuid.UUID] = []
        start = 0
        while True:
            page = await writer.read_stream_events_forward(stream, start, 4096)
            stored += [e.original_event.event_id for e in page.events]
            if page.is_end_of_stream:
                break
            start = page.next_event_number
        self.assertEqual(len(stored), len(set(stored)), "an event is stored twice")
        missing = set(every) - set(stored)
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged writes missing")
        positions = {event_id: n for n, event_id in enumerate(stored)}
        for ids in acknowledged.values():
            self.assertEqual([positions[i] for i in ids], sorted(positions[i] for i in ids))

        self.assertEqual(len(caught_up), len(set(caught_up)), "catch-up delivered twice")
        self.assertEqual(caught_up, stored[: len(caught_up)], "catch-up out of order or gap")
        self.assertEqual(len(handled), len(set(handled)), "persistent delivered twice")
        self.assertLessEqual(set(handled), set(stored))
        self.assertGreaterEqual(len(reconnections), rounds)
        self.assertEqual(len(running(nodes)), 3)
        _log.info(
            "{how} x{rounds}: {acked} appends acknowledged in {elapsed:.0f} s, {stored} stored,"
            " {connections} writer connections, {suppressed} persistent redeliveries suppressed",
            how=how, rounds=rounds, acked=len(every), stored=len(stored), elapsed=elapsed,
            connections=len(reconnections), suppressed=persistent.redeliveries_suppressed,
        )
        await catch_up.stop()
        await persistent.stop()


class DnsDiscoveryTests(TestCase):
    """
    A cluster found through a DNS name (a twisted.names server on loopback
    with one A record per node, nodes on 127.0.0.1-3).
    """

    timeout = 300
    name = "cluster.estore.test"

    def dns_server(self, addresses: list[str]) -> int:
        import subprocess
        import sys

        from tests.harness import REPO_ROOT

        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_dns", str(port), self.name, *addresses],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            process.kill()
            process.wait(10)
            assert process.stdout is not None
            process.stdout.close()

        self.addCleanup(stop)
        assert process.stdout is not None
        line = process.stdout.readline()
        if b"ready" not in line:
            raise AssertionError(f"DNS server did not start: {line!r}")
        return port

    def test_dns_discovery_and_failover(self) -> Deferred[None]:
        """
        The client resolves the cluster name, gossips to the addresses,
        connects to the leader, and after the leader is killed writes on
        the new one; every acknowledged append is stored once.
        """
        return run(self._dns())

    async def _dns(self) -> None:
        from twisted.internet.threads import deferToThread
        from twisted.names import client as dns_client

        for host in HOSTS:
            if not port_free(host, 0):
                raise SkipTest(f"cannot bind {host}")
        ports = {n: free_port() for n in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
        if not all(port_free(h, p) for h in HOSTS for p in ports.values()):
            raise SkipTest("ports taken")
        dns_port = self.dns_server(HOSTS)
        args = [
            "--cluster-size=3",
            f"--cluster-dns={self.name}",
            f"--cluster-gossip-port={ports['int_http']}",
            f"--cluster-dns-server=127.0.0.1:{dns_port}",
        ] + FAST
        base = self.mktemp()
        nodes = [
            NodeProcess(os.path.join(base, h), host=h, ports=dict(ports), extra_args=args,
                        mem_db=True)
            for h in HOSTS
        ]
        for n in nodes:
            self.addCleanup(n.stop)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        resolver = dns_client.Resolver(servers=[("127.0.0.1", dns_port)])

        async def resolve(name: str) -> list[str]:
            answers, _, _ = await resolver.lookupAddress(name)
            return [a.payload.dottedQuad() for a in answers if a.type == 1]

        connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(
                keep_reconnecting=True, operation_timeout=2.0, max_retries=100,
                default_user_credentials=ADMIN,
            ),
            ClusterSettings(cluster_dns=self.name, gossip_port=ports["ext_http"],
                            gossip_timeout=0.5),
            resolve=resolve,
        )
        self.addCleanup(connection.close)
        await connection.connect()
        assert connection.connected_to is not None
        self.assertEqual(connection.connected_to.host, leader.host)
        acknowledged: list[uuid.UUID] = []
        for i in range(50):
            e = event(i)
            await connection.append_to_stream("dns", ExpectedVersion.ANY, [e])
            acknowledged.append(e.event_id)
        await deferToThread(leader.kill)
        for i in range(50):
            e = event(i)
            await connection.append_to_stream("dns", ExpectedVersion.ANY, [e])
            acknowledged.append(e.event_id)
        assert connection.connected_to is not None
        self.assertNotEqual(connection.connected_to.host, leader.host)
        page = await connection.read_stream_events_forward("dns", 0, 4096)
        self.assertEqual([e.original_event.event_id for e in page.events], acknowledged)


class TlsTests(TestCase):
    """
    The client over TLS to a node whose every listener speaks TLS.
    """

    timeout = 120

    def setUp(self) -> None:
        from tests.test_tls import PKI

        self.pki = PKI(self.mktemp())
        self.pki.node("node1", ips="127.0.0.1", dns="localhost")
        self.node = start_node(self, mem_db=True, extra_args=self.pki.node_args("node1"))

    def connection(self, ca_file: str, **kwargs: Any) -> EventStoreConnection:
        connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(
                use_tls=True, target_host="localhost", ca_file=ca_file,
                default_user_credentials=ADMIN, **kwargs,
            ),
            SingleNode("127.0.0.1", self.node.ext_tcp_port),
        )
        self.addCleanup(connection.close)
        return connection

    def test_operations_over_tls(self) -> Deferred[None]:
        """
        With the cluster CA trusted, the operations suite passes over TLS.
        """

        async def go() -> None:
            connection = self.connection(self.pki.ca_cert)
            await connection.connect()
            await operations_suite(self, connection)

        return run(go())

    def test_untrusted_server_refused(self) -> Deferred[None]:
        """
        A node whose certificate another CA signed is not connected to.
        """
        from estwisted.client import CannotEstablishConnection

        async def go() -> None:
            connection = self.connection(
                self.pki.other_ca_cert, max_reconnections=1, reconnection_delay=0.1
            )
            with self.assertRaises(CannotEstablishConnection):
                await connection.connect()
            self.assertFalse(connection.is_connected)

        return run(go())
