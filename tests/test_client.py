# -*- test-case-name: tests.test_client -*-
"""
System tests of L{estwisted.client} against real node processes on
loopback: the operations on one node, and a three-node cluster (on
127.0.0.1-3) whose leader is SIGKILLed while writers and subscribers run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Coroutine
from typing import Any, Optional

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from estwisted.client import (
    AccessDenied,
    ClusterSettings,
    ConnectionSettings,
    EventData,
    EventReadStatus,
    EventStoreConnection,
    ExpectedVersion,
    NotAuthenticated,
    PersistentSubscriptionSettings,
    Position,
    ResolvedEvent,
    SingleNode,
    SliceReadStatus,
    StreamAcl,
    StreamDeleted,
    StreamMetadata,
    UserCredentials,
    WrongExpectedVersion,
)
from tests.harness import NodeProcess, free_port, start_node
from tests.test_cluster_membership import FAST, port_free, running, start_all, wait_for_leader

reactor: Any = _reactor

ADMIN = UserCredentials("admin", "changeit")


def run(coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def event(n: int, event_type: str = "test") -> EventData:
    return EventData(uuid.uuid4(), event_type, f'{{"n": {n}}}'.encode())


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
        c = self.connection
        await c.connect()
        events = [event(i) for i in range(5)]
        result = await c.append_to_stream("orders-1", ExpectedVersion.NO_STREAM, events)
        self.assertEqual(result.next_expected_version, 4)
        self.assertGreaterEqual(result.log_position.commit_position, 0)

        # The same events again (the same ids): an idempotent repeat.
        again = await c.append_to_stream("orders-1", ExpectedVersion.NO_STREAM, events)
        self.assertEqual(again.next_expected_version, 4)

        with self.assertRaises(WrongExpectedVersion):
            await c.append_to_stream("orders-1", 1, [event(9)])

        read = await c.read_event("orders-1", 2)
        self.assertEqual(read.status, EventReadStatus.SUCCESS)
        assert read.event is not None
        self.assertEqual(read.event.original_event.event_id, events[2].event_id)
        self.assertEqual(read.event.original_event.data, b'{"n": 2}')
        self.assertTrue(read.event.original_event.is_json)
        last = await c.read_event("orders-1", -1)
        self.assertEqual(last.event_number, 4)
        missing = await c.read_event("orders-1", 99)
        self.assertEqual(missing.status, EventReadStatus.NOT_FOUND)
        nostream = await c.read_event("nothing-here", 0)
        self.assertEqual(nostream.status, EventReadStatus.NO_STREAM)

        forward = await c.read_stream_events_forward("orders-1", 1, 3)
        self.assertEqual([e.original_event_number for e in forward.events], [1, 2, 3])
        self.assertFalse(forward.is_end_of_stream)
        self.assertEqual(forward.next_event_number, 4)
        backward = await c.read_stream_events_backward("orders-1", -1, 10)
        self.assertEqual([e.original_event_number for e in backward.events], [4, 3, 2, 1, 0])
        self.assertTrue(backward.is_end_of_stream)
        empty = await c.read_stream_events_forward("nothing-here", 0, 10)
        self.assertEqual(empty.status, SliceReadStatus.STREAM_NOT_FOUND)

        all_forward = await c.read_all_events_forward(Position.start(), 4096)
        ids = [e.original_event.event_id for e in all_forward.events]
        for e in events:
            self.assertIn(e.event_id, ids)
        all_backward = await c.read_all_events_backward(Position.end(), 2)
        self.assertEqual(len(all_backward.events), 2)
        self.assertEqual(all_backward.events[0].original_event.event_id, events[4].event_id)

        # metadata, structured and raw
        metadata = StreamMetadata(
            max_count=10, acl=StreamAcl(read_roles=("$admins",)), custom={"owner": "me"}
        )
        await c.set_stream_metadata("orders-1", ExpectedVersion.ANY, metadata)
        got = await c.get_stream_metadata("orders-1")
        self.assertEqual(got.metastream_version, 0)
        self.assertEqual(got.stream_metadata.max_count, 10)
        self.assertEqual(got.stream_metadata.custom, {"owner": "me"})
        assert got.stream_metadata.acl is not None
        self.assertEqual(got.stream_metadata.acl.read_roles, ("$admins",))
        raw = await c.get_stream_metadata_as_raw_bytes("no-metadata")
        self.assertEqual(raw.metastream_version, -1)

        # The ACL now refuses a user that is not an admin.
        with self.assertRaises((AccessDenied, NotAuthenticated)):
            await c.read_event("orders-1", 0, credentials=UserCredentials("ops", "changeit"))
        with self.assertRaises(NotAuthenticated):
            await c.read_event("orders-1", 0, credentials=UserCredentials("admin", "wrong"))

        # soft delete: the stream can be written again; hard delete: not.
        await c.append_to_stream("soft", ExpectedVersion.ANY, [event(0)])
        await c.delete_stream("soft", ExpectedVersion.ANY)
        gone = await c.read_stream_events_forward("soft", 0, 10)
        self.assertEqual(gone.status, SliceReadStatus.STREAM_NOT_FOUND)
        await c.append_to_stream("hard", ExpectedVersion.ANY, [event(0)])
        await c.delete_stream("hard", ExpectedVersion.ANY, hard_delete=True)
        with self.assertRaises(StreamDeleted):
            await c.append_to_stream("hard", ExpectedVersion.ANY, [event(1)])
        deleted = await c.read_event("hard", 0)
        self.assertEqual(deleted.status, EventReadStatus.STREAM_DELETED)

    def test_subscriptions(self) -> Deferred[None]:
        """
        A volatile, a catch-up and a persistent subscription each see every
        event once, in order.
        """
        return run(self._subscriptions())

    async def _subscriptions(self) -> None:
        c = self.connection
        await c.connect()
        first = [event(i) for i in range(30)]
        await c.append_to_stream("subs", ExpectedVersion.ANY, first)
        await c.create_persistent_subscription(
            "subs", "group", PersistentSubscriptionSettings(start_from=0)
        )

        volatile: list[uuid.UUID] = []
        catch_up: list[uuid.UUID] = []
        catch_up_all: list[uuid.UUID] = []
        persistent: list[uuid.UUID] = []

        def on_volatile(sub: object, e: ResolvedEvent) -> None:
            volatile.append(e.original_event.event_id)

        def on_catch_up(sub: object, e: ResolvedEvent) -> None:
            catch_up.append(e.original_event.event_id)

        def on_all(sub: object, e: ResolvedEvent) -> None:
            if e.original_stream_id == "subs":
                catch_up_all.append(e.original_event.event_id)

        def on_persistent(sub: object, e: ResolvedEvent, retry_count: int) -> None:
            persistent.append(e.original_event.event_id)

        await c.subscribe_to_stream("subs", on_volatile)
        cu = c.subscribe_to_stream_from("subs", None, on_catch_up, read_batch_size=7)
        cu_all = c.subscribe_to_all_from(None, on_all, read_batch_size=50)
        ps = await c.connect_to_persistent_subscription("subs", "group", on_persistent)
        second = [event(i) for i in range(30, 60)]
        for e in second:
            await c.append_to_stream("subs", ExpectedVersion.ANY, [e])
        await cu.live
        await cu_all.live
        everything = [e.event_id for e in first + second]
        await wait_until(
            lambda: len(catch_up) >= 60 and len(persistent) >= 60 and len(catch_up_all) >= 60,
            20,
            "subscribers",
        )
        self.assertEqual(volatile, [e.event_id for e in second])
        self.assertEqual(catch_up, everything)
        self.assertEqual(catch_up_all, everything)
        self.assertEqual(sorted(persistent), sorted(everything))
        self.assertEqual(len(persistent), len(set(persistent)))
        self.assertEqual(cu.last_processed_event_number, 59)
        reason, _ = await cu.stop()
        self.assertEqual(reason, "Unsubscribed")
        await ps.stop()
        await c.delete_persistent_subscription("subs", "group")


#: Leader kills in the failover test (the issue asks for 10; set
#: ESTWISTED_CLIENT_KILLS=10 for the long run).
KILLS = int(os.environ.get("ESTWISTED_CLIENT_KILLS", "3"))
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


class ClusterFailoverTests(TestCase):
    """
    A three-node cluster on 127.0.0.1-3 (same ports, gossip seeds): writers
    and subscribers run through leader SIGKILLs.
    """

    timeout = 600

    def make_nodes(self) -> list[NodeProcess]:
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
        args = ["--cluster-size=3", "--discover-via-dns=false", f"--gossip-seed={seeds}"] + FAST
        base = self.mktemp()
        nodes = [
            NodeProcess(os.path.join(base, h), host=h, ports=dict(ports), extra_args=args)
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
        return run(self._failover())

    async def _failover(self) -> None:
        from twisted.internet.threads import deferToThread

        nodes = self.make_nodes()
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

        writers = [run(write(i)) for i in range(4)]
        killed: Optional[NodeProcess] = None
        for _ in range(KILLS):
            await sleep(1.5)
            leader = await deferToThread(wait_for_leader, nodes, 30.0)
            before = sum(len(a) for a in acknowledged.values())
            await deferToThread(leader.kill)
            killed = leader
            await sleep(3.0)
            after = sum(len(a) for a in acknowledged.values())
            self.assertGreater(after, before, "no write acknowledged after the leader died")
            await deferToThread(killed.start)
            await deferToThread(wait_for_leader, nodes, 30.0)
        await sleep(1.0)
        stop[0] = True
        await DeferredList(writers)
        self.assertEqual(failures, [])
        every = [i for a in acknowledged.values() for i in a]
        self.assertGreater(len(every), 100)

        await wait_until(
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
        self.assertGreaterEqual(len(reconnections), 1 + KILLS - 1)
        self.assertEqual(len(running(nodes)), 3)
        print(
            f"\nfailover: {len(every)} appends acknowledged, {len(stored)} stored, "
            f"{len(reconnections)} writer connections, "
            f"{persistent.redeliveries_suppressed} persistent redeliveries suppressed"
        )
        await catch_up.stop()
        await persistent.stop()
