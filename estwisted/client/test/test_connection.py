# -*- test-case-name: estwisted.client.test.test_connection -*-
"""
Tests for L{estwisted.client._connection} and L{estwisted.client._protocol}:
the connection lifecycle, operation timeouts and retries, failover to the
leader named by C{NotMaster}, heartbeats, and subscriptions across
reconnections, with a L{Clock} and in-memory transports.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.client import (
    CannotEstablishConnection,
    ClusterSettings,
    ConnectionClosed,
    ConnectionSettings,
    EventData,
    EventStoreConnection,
    ExpectedVersion,
    NodeEndpoints,
    OperationTimedOut,
    QueueFull,
    ResolvedEvent,
    RetriesLimitReached,
    SingleNode,
    UserCredentials,
    WrongExpectedVersion,
)
from estwisted.client.test.fakes import FakeNetwork, FakeServerConnection, static_gossip
from estwisted.cluster.gossip import (
    ClusterInfo,
    Endpoint,
    MemberInfo,
    VNodeState,
    encode_cluster_info,
)
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import TcpCommand

NODE = NodeEndpoints("10.0.0.1", 1113)
LEADER = NodeEndpoints("10.0.0.2", 1113)


def timeout_timers(clock: Clock) -> int:
    """
    How many operation timeout timers are scheduled.
    """
    names = [getattr(getattr(c, "func", None), "__name__", "") for c in clock.getDelayedCalls()]
    return names.count("_check_timeouts")


def make(
    settings: ConnectionSettings | None = None, target: Any = None, **kwargs: Any
) -> tuple[EventStoreConnection, Clock, FakeNetwork]:
    clock = Clock()
    network = kwargs.pop("network", None) or FakeNetwork()
    connection = EventStoreConnection.create(
        clock,
        settings or ConnectionSettings(),
        target or SingleNode(NODE.host, NODE.tcp_port),
        endpoint_factory=network,
        **kwargs,
    )
    return connection, clock, network


def event(n: int = 0) -> EventData:
    return EventData(uuid.uuid4(), "test", b"{}")


def writes(server: FakeServerConnection) -> list[Any]:
    return [p for p in server.packages() if p.command == TcpCommand.WriteEvents]


def member(host: str, state: VNodeState, alive: bool = True) -> MemberInfo:
    return MemberInfo(
        instance_id=uuid.uuid4(),
        timestamp=0.0,
        state=state,
        is_alive=alive,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
    )


class LifecycleTests(SynchronousTestCase):
    def test_connect_identifies(self) -> None:
        """
        C{connect()} connects, sends C{IdentifyClient} with the connection
        name, and fires once C{ClientIdentified} arrives.
        """
        connection, clock, network = make(ConnectionSettings(connection_name="mine"))
        events: list[Any] = []
        connection.on("connected", events.append)
        d = connection.connect()
        self.assertNoResult(d)
        server = network.last
        (identify,) = server.packages()
        self.assertEqual(identify.command, TcpCommand.IdentifyClient)
        self.assertEqual(pb.IdentifyClient.FromString(identify.data).connection_name, "mine")
        server.send(TcpCommand.ClientIdentified, identify.correlation_id)
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(connection.is_connected)
        self.assertEqual(events, [NODE])

    def test_identify_timeout_reconnects(self) -> None:
        """
        A server that never answers C{IdentifyClient} is dropped after the
        operation timeout and the client connects again.
        """
        connection, clock, network = make(ConnectionSettings(operation_timeout=2.0))
        connection.connect()
        clock.advance(2.0)
        self.assertTrue(network.connections[0].closed)
        clock.advance(1.0)
        self.assertEqual(len(network.connections), 2)

    def test_gives_up(self) -> None:
        """
        Without C{keep_reconnecting}, C{max_reconnections} failures in a
        row close the connection; C{connect()} and waiting operations fail
        with L{CannotEstablishConnection}.
        """
        network = FakeNetwork(up=set())
        connection, clock, network = make(
            ConnectionSettings(max_reconnections=3, reconnection_delay=0.5), network=network
        )
        closed: list[Any] = []
        connection.on("closed", closed.append)
        d = connection.connect()
        append = connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        clock.pump([0.5, 1.0, 2.0, 2.0, 2.0])
        self.assertEqual(len(network.attempts), 4)
        self.failureResultOf(d, CannotEstablishConnection)
        self.failureResultOf(append, CannotEstablishConnection)
        self.assertEqual(len(closed), 1)
        self.assertFalse(clock.getDelayedCalls())

    def test_keep_reconnecting_backs_off(self) -> None:
        """
        With C{keep_reconnecting} it tries forever, the delay doubling up
        to C{max_reconnection_delay}; it connects when the node comes.
        """
        network = FakeNetwork(up=set())
        connection, clock, network = make(
            ConnectionSettings(
                keep_reconnecting=True, reconnection_delay=0.1, max_reconnection_delay=1.0
            ),
            network=network,
        )
        d = connection.connect()
        delays = []
        for _ in range(8):
            (call,) = clock.getDelayedCalls()
            delays.append(round(call.getTime() - clock.seconds(), 3))
            clock.advance(call.getTime() - clock.seconds())
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
        network.up = {NODE}
        clock.advance(1.0)
        network.last.identify()
        self.successResultOf(d)

    def test_close(self) -> None:
        """
        C{close()} fails pending operations with L{ConnectionClosed}, closes
        the TCP connection and leaves nothing scheduled.
        """
        connection, clock, network = make()
        connection.connect()
        network.last.identify()
        d = connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        closed = connection.close()
        self.failureResultOf(d, ConnectionClosed)
        self.successResultOf(closed)
        self.assertTrue(network.last.closed)
        self.assertFalse(clock.getDelayedCalls())
        self.failureResultOf(
            connection.append_to_stream("s", ExpectedVersion.ANY, [event()]), ConnectionClosed
        )


class OperationTests(SynchronousTestCase):
    def connected(
        self, settings: ConnectionSettings | None = None
    ) -> tuple[EventStoreConnection, Clock, FakeNetwork]:
        connection, clock, network = make(settings)
        connection.connect()
        network.last.identify()
        return connection, clock, network

    def test_append(self) -> None:
        """
        An append is sent with its events (ids in .NET order) and completes
        with the next expected version.
        """
        connection, clock, network = self.connected()
        e = event()
        d = connection.append_to_stream("orders", ExpectedVersion.NO_STREAM, [e])
        (write,) = writes(network.last)
        message = pb.WriteEvents.FromString(write.data)
        self.assertEqual(message.event_stream_id, "orders")
        self.assertEqual(message.expected_version, -1)
        self.assertEqual(message.events[0].event_id, e.event_id.bytes_le)
        network.last.answer_write(write, 0)
        self.assertEqual(self.successResultOf(d).next_expected_version, 0)
        # One timer watches every in-flight operation; once it fires with
        # nothing in flight it is not scheduled again.
        self.assertEqual(timeout_timers(clock), 1)
        clock.advance(connection.settings.operation_timeout)
        self.assertEqual(timeout_timers(clock), 0)

    def test_wrong_expected_version(self) -> None:
        """
        A C{WrongExpectedVersion} result fails with
        L{WrongExpectedVersion}, not retried.
        """
        connection, clock, network = self.connected()
        d = connection.append_to_stream("orders", 5, [event()])
        (write,) = writes(network.last)
        network.last.send(
            TcpCommand.WriteEventsCompleted,
            write.correlation_id,
            pb.WriteEventsCompleted(
                result=pb.WrongExpectedVersion, first_event_number=-1, last_event_number=-1,
                current_version=2,
            ).SerializeToString(),
        )
        failure = self.failureResultOf(d, WrongExpectedVersion)
        self.assertEqual(failure.value.current_version, 2)
        self.assertEqual(writes(network.last), [])

    def test_timeout_retries_same_payload(self) -> None:
        """
        An unanswered append is sent again after C{operation_timeout} with
        the same bytes (the same event ids); a late answer to the first
        attempt is ignored.
        """
        connection, clock, network = self.connected(ConnectionSettings(operation_timeout=1.0))
        d = connection.append_to_stream("s", ExpectedVersion.ANY, [event(), event()])
        (first,) = writes(network.last)
        clock.advance(1.0)
        (second,) = writes(network.last)
        self.assertEqual(first.data, second.data)
        self.assertNotEqual(first.correlation_id, second.correlation_id)
        network.last.answer_write(first, 7)
        self.assertNoResult(d)
        network.last.answer_write(second, 1)
        self.assertEqual(self.successResultOf(d).next_expected_version, 1)

    def test_one_timer_for_all_timeouts(self) -> None:
        """
        One timer watches every operation in flight; each attempt still
        times out C{operation_timeout} after it was sent, not before.
        """
        connection, clock, network = self.connected(
            ConnectionSettings(operation_timeout=1.0, heartbeat_interval=60, heartbeat_timeout=60)
        )
        a = connection.append_to_stream("a", ExpectedVersion.ANY, [event()])
        b = connection.append_to_stream("b", ExpectedVersion.ANY, [event()])
        clock.advance(0.5)
        c = connection.append_to_stream("c", ExpectedVersion.ANY, [event()])
        first = writes(network.last)
        self.assertEqual(len(first), 3)
        self.assertEqual(timeout_timers(clock), 1)
        network.last.answer_write(first[1], 0)  # b answered
        clock.advance(0.5)  # a times out, c not yet
        again = writes(network.last)
        self.assertEqual([pb.WriteEvents.FromString(p.data).event_stream_id for p in again], ["a"])
        self.assertEqual(timeout_timers(clock), 1)
        clock.advance(0.4999)
        self.assertEqual(writes(network.last), [])
        clock.advance(0.0001)  # c times out
        (retried,) = writes(network.last)
        self.assertEqual(pb.WriteEvents.FromString(retried.data).event_stream_id, "c")
        network.last.answer_write(again[0], 0)
        network.last.answer_write(retried, 0)
        self.successResultOf(a)
        self.successResultOf(b)
        self.successResultOf(c)

    def test_correlation_ids_unique(self) -> None:
        """
        Every request gets its own correlation id.
        """
        connection, clock, network = self.connected()
        for _ in range(100):
            connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        ids = [p.correlation_id for p in writes(network.last)]
        self.assertEqual(len(set(ids)), 100)
        self.assertTrue(all(len(i) == 16 for i in ids))

    def test_timeout_gives_up(self) -> None:
        """
        After C{max_retries} retries the operation fails with
        L{OperationTimedOut}.
        """
        connection, clock, network = self.connected(
            ConnectionSettings(
                operation_timeout=1.0, max_retries=2, heartbeat_interval=60, heartbeat_timeout=60
            )
        )
        d = connection.read_event("s", 0)
        for _ in range(3):
            clock.advance(1.0)
        self.failureResultOf(d, OperationTimedOut)
        network.last.packages()
        reads = [p for p in network.last.received if p.command == TcpCommand.ReadEvent]
        self.assertEqual(len(reads), 3)

    def test_retried_after_connection_loss(self) -> None:
        """
        Writes in flight when the connection drops are sent again, in
        order and with the same event ids, on the next connection.
        """
        connection, clock, network = self.connected(ConnectionSettings(reconnection_delay=0.1))
        a = connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        b = connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        before = writes(network.last)
        network.last.drop()
        clock.advance(0.1)
        self.assertEqual(len(network.connections), 2)
        network.last.identify()
        after = writes(network.last)
        self.assertEqual([p.data for p in after], [p.data for p in before])
        network.last.answer_write(after[0], 0)
        network.last.answer_write(after[1], 1)
        self.assertEqual(self.successResultOf(a).next_expected_version, 0)
        self.assertEqual(self.successResultOf(b).next_expected_version, 1)

    def test_not_master_reconnects_to_leader(self) -> None:
        """
        C{NotHandled(NotMaster)} makes the client connect to the endpoint
        in C{MasterInfo} and send the operation there.
        """
        connection, clock, network = self.connected()
        d = connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        (write,) = writes(network.last)
        network.last.not_master(write, LEADER)
        self.assertTrue(network.connections[0].closed)
        self.assertEqual(network.last.node, LEADER)
        network.last.identify()
        (again,) = writes(network.last)
        self.assertEqual(again.data, write.data)
        network.last.answer_write(again, 0)
        self.successResultOf(d)
        self.assertEqual(connection.connected_to, LEADER)

    def test_not_ready_retried(self) -> None:
        """
        C{NotHandled(NotReady)} is retried after C{reconnection_delay} up
        to C{max_retries}, then fails with L{RetriesLimitReached}.
        """
        connection, clock, network = self.connected(ConnectionSettings(max_retries=1))
        d = connection.read_event("s", 0)
        for _ in range(2):
            clock.advance(0.1)
            (read,) = [p for p in network.last.packages() if p.command == TcpCommand.ReadEvent]
            network.last.send(
                TcpCommand.NotHandled,
                read.correlation_id,
                pb.NotHandled(reason=pb.NotHandled.NotReady).SerializeToString(),
            )
        self.failureResultOf(d, RetriesLimitReached)

    def test_queue_and_concurrency_limits(self) -> None:
        """
        At most C{max_concurrent_items} are in flight; beyond
        C{max_queue_size} waiting operations are refused.
        """
        connection, clock, network = self.connected(
            ConnectionSettings(max_concurrent_items=2, max_queue_size=3)
        )
        ds = [connection.append_to_stream("s", ExpectedVersion.ANY, [event()]) for _ in range(6)]
        for d in ds[:-1]:
            self.assertNoResult(d)
        self.failureResultOf(ds[-1], QueueFull)
        sent = writes(network.last)
        self.assertEqual(len(sent), 2)
        network.last.answer_write(sent[0], 0)
        self.assertEqual(len(writes(network.last)), 1)

    def test_cancel(self) -> None:
        """
        Cancelling an operation's Deferred removes it from the queue.
        """
        connection, clock, network = make()
        d = connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        d.cancel()
        self.failureResultOf(d)
        connection.connect()
        network.last.identify()
        self.assertEqual(writes(network.last), [])


class AuthenticationTests(SynchronousTestCase):
    """
    With default credentials the connection is authenticated once
    (C{Authenticate}); operations with the default credentials then go
    without them, so the node checks them once, not on every operation.
    """

    admin = UserCredentials("admin", "changeit")

    def setup_connection(self) -> tuple[EventStoreConnection, Clock, FakeNetwork, Any]:
        connection, clock, network = make(ConnectionSettings(default_user_credentials=self.admin))
        connection.connect()
        packages = network.last.packages()
        self.assertEqual(
            [p.command for p in packages], [TcpCommand.IdentifyClient, TcpCommand.Authenticate]
        )
        authenticate = packages[1]
        self.assertEqual((authenticate.login, authenticate.password), ("admin", "changeit"))
        network.last.send(TcpCommand.ClientIdentified, packages[0].correlation_id)
        return connection, clock, network, authenticate

    def test_authenticated_connection(self) -> None:
        connection, clock, network, authenticate = self.setup_connection()
        connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        (before,) = writes(network.last)
        self.assertEqual(before.login, "admin")  # not yet confirmed
        network.last.send(TcpCommand.Authenticated, authenticate.correlation_id)
        connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        connection.append_to_stream(
            "s", ExpectedVersion.ANY, [event()], credentials=UserCredentials("ouro", "pw")
        )
        default, other = writes(network.last)
        self.assertIsNone(default.login)
        self.assertEqual((other.login, other.password), ("ouro", "pw"))
        # a new connection authenticates again; until then credentials go along
        network.last.drop()
        clock.advance(1.0)
        packages = network.last.packages()
        self.assertEqual(
            [p.command for p in packages], [TcpCommand.IdentifyClient, TcpCommand.Authenticate]
        )
        network.last.send(TcpCommand.ClientIdentified, packages[0].correlation_id)
        connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        # the three unanswered appends again, then the new one
        self.assertEqual(
            [p.login for p in writes(network.last)], ["admin", "admin", "ouro", "admin"]
        )

    def test_not_authenticated_connection(self) -> None:
        """
        When the node refuses C{Authenticate}, every operation keeps
        sending its credentials (and gets its own answer).
        """
        connection, clock, network, authenticate = self.setup_connection()
        network.last.send(TcpCommand.NotAuthenticated, authenticate.correlation_id, b"no")
        self.assertTrue(connection.is_connected)
        connection.append_to_stream("s", ExpectedVersion.ANY, [event()])
        self.assertEqual([p.login for p in writes(network.last)], ["admin"])

    def test_no_default_credentials(self) -> None:
        connection, clock, network = make()
        connection.connect()
        self.assertEqual(
            [p.command for p in network.last.packages()], [TcpCommand.IdentifyClient]
        )


class HeartbeatTests(SynchronousTestCase):
    def test_heartbeat(self) -> None:
        """
        After C{heartbeat_interval} of silence the client sends a heartbeat
        request; unanswered within C{heartbeat_timeout} the connection is
        dropped; server heartbeat requests are answered.
        """
        connection, clock, network = make(
            ConnectionSettings(heartbeat_interval=1.0, heartbeat_timeout=0.5)
        )
        connection.connect()
        server = network.last
        server.identify()
        server.send(TcpCommand.HeartbeatRequestCommand, b"h" * 16)
        (answer,) = server.packages()
        self.assertEqual(
            (answer.command, answer.correlation_id),
            (TcpCommand.HeartbeatResponseCommand, b"h" * 16),
        )
        clock.advance(1.0)
        (probe,) = server.packages()
        self.assertEqual(probe.command, TcpCommand.HeartbeatRequestCommand)
        server.send(TcpCommand.HeartbeatResponseCommand, probe.correlation_id)
        clock.advance(0.5)
        self.assertFalse(server.closed)
        clock.advance(1.0)
        server.packages()
        clock.advance(0.5)
        self.assertTrue(server.closed)
        self.assertFalse(connection.is_connected)


class DiscoveryTests(SynchronousTestCase):
    def test_connects_to_leader_from_gossip(self) -> None:
        """
        Gossip from the first answering seed picks the Master's external
        TCP endpoint; dead seeds are skipped.
        """
        doc = encode_cluster_info(
            ClusterInfo(
                (
                    member("10.0.0.1", VNodeState.Slave),
                    member("10.0.0.2", VNodeState.Master),
                    member("10.0.0.3", VNodeState.Master, alive=False),
                )
            )
        )
        fetch = static_gossip({("10.0.0.9", 2113): doc})
        connection, clock, network = make(
            target=ClusterSettings(gossip_seeds=[("10.0.0.8", 2113), ("10.0.0.9", 2113)]),
            fetch=fetch,
        )
        d = connection.connect()
        self.assertEqual(network.attempts, [NodeEndpoints("10.0.0.2", 1113)])
        network.last.identify()
        self.successResultOf(d)

    def test_no_seed_answers(self) -> None:
        """
        When no seed answers, discovery is retried C{max_discover_attempts}
        times, then counts as one failed reconnection.
        """
        fetched: list[Any] = []

        def fetch(host: str, port: int) -> Any:
            fetched.append(host)
            return static_gossip({})(host, port)

        connection, clock, network = make(
            ConnectionSettings(max_reconnections=0),
            target=ClusterSettings(
                gossip_seeds=[("10.0.0.8", 2113)], max_discover_attempts=3, discover_delay=0.5
            ),
            fetch=fetch,
        )
        d = connection.connect()
        clock.pump([0.5, 0.5])
        self.assertEqual(len(fetched), 3)
        self.failureResultOf(d, CannotEstablishConnection)


def reads(server: FakeServerConnection) -> list[Any]:
    return [p for p in server.packages() if p.command == TcpCommand.ReadStreamEventsForward]


def confirm_subscription(server: FakeServerConnection, last: int) -> Any:
    (request,) = [p for p in server.packages() if p.command == TcpCommand.SubscribeToStream]
    server.send(
        TcpCommand.SubscriptionConfirmation,
        request.correlation_id,
        pb.SubscriptionConfirmation(
            last_commit_position=100, last_event_number=last
        ).SerializeToString(),
    )
    return request


def record(stream: str, number: int, event_id: uuid.UUID) -> pb.EventRecord:
    return pb.EventRecord(
        event_stream_id=stream,
        event_number=number,
        event_id=event_id.bytes_le,
        event_type="test",
        data_content_type=1,
        metadata_content_type=0,
        data=b"{}",
    )


def push(server: FakeServerConnection, corr: bytes, number: int, event_id: uuid.UUID) -> None:
    server.send(
        TcpCommand.StreamEventAppeared,
        corr,
        pb.StreamEventAppeared(
            event=pb.ResolvedEvent(
                event=record("s", number, event_id),
                commit_position=number * 10,
                prepare_position=number * 10,
            )
        ).SerializeToString(),
    )


def answer_read(
    server: FakeServerConnection, package: Any, ids: list[uuid.UUID], start: int, end: bool
) -> None:
    message = pb.ReadStreamEventsCompleted(
        result=pb.ReadStreamEventsCompleted.Success,
        next_event_number=start + len(ids),
        last_event_number=start + len(ids) - 1,
        is_end_of_stream=end,
        last_commit_position=0,
    )
    for n, event_id in enumerate(ids):
        message.events.add().event.CopyFrom(record("s", start + n, event_id))
    server.send(
        TcpCommand.ReadStreamEventsForwardCompleted, package.correlation_id,
        message.SerializeToString(),
    )


class SubscriptionTests(SynchronousTestCase):
    def test_volatile_resubscribes_without_duplicates(self) -> None:
        """
        A volatile subscription is sent again on the next connection; an
        event delivered before the failover and pushed again is not handed
        over twice.
        """
        connection, clock, network = make(ConnectionSettings(reconnection_delay=0.1))
        connection.connect()
        network.last.identify()
        seen: list[int] = []
        d = connection.subscribe_to_stream(
            "s", lambda sub, e: seen.append(e.original_event_number)
        )
        request = confirm_subscription(network.last, 0)
        self.successResultOf(d)
        ids = [uuid.uuid4() for _ in range(4)]
        push(network.last, request.correlation_id, 1, ids[1])
        push(network.last, request.correlation_id, 2, ids[2])
        network.last.drop()
        clock.advance(0.1)
        network.last.identify()
        request = confirm_subscription(network.last, 2)
        push(network.last, request.correlation_id, 2, ids[2])
        push(network.last, request.correlation_id, 3, ids[3])
        self.assertEqual(seen, [1, 2, 3])

    def test_catch_up_handover_and_failover(self) -> None:
        """
        A catch-up subscription reads history, buffers live pushes, hands
        over without a gap or a duplicate, and after a reconnection reads
        again from its last processed event.
        """
        connection, clock, network = make(ConnectionSettings(reconnection_delay=0.1))
        connection.connect()
        network.last.identify()
        ids = [uuid.uuid4() for _ in range(8)]
        seen: list[uuid.UUID] = []

        def appeared(sub: Any, e: ResolvedEvent) -> None:
            seen.append(e.original_event.event_id)

        subscription = connection.subscribe_to_stream_from("s", None, appeared, read_batch_size=2)
        request = confirm_subscription(network.last, 3)
        push(network.last, request.correlation_id, 3, ids[3])  # buffered
        (read,) = reads(network.last)
        answer_read(network.last, read, ids[0:2], 0, False)
        (read,) = reads(network.last)
        self.assertEqual(pb.ReadStreamEvents.FromString(read.data).from_event_number, 2)
        answer_read(network.last, read, ids[2:4], 2, True)
        self.successResultOf(subscription.live)
        push(network.last, request.correlation_id, 4, ids[4])
        self.assertEqual(seen, ids[:5])

        network.last.drop()
        clock.advance(0.1)
        network.last.identify()
        request = confirm_subscription(network.last, 6)
        push(network.last, request.correlation_id, 7, ids[7])  # buffered
        (read,) = reads(network.last)
        self.assertEqual(pb.ReadStreamEvents.FromString(read.data).from_event_number, 5)
        answer_read(network.last, read, ids[5:7], 5, True)
        self.assertEqual(seen, ids)
        self.assertEqual(subscription.last_processed_event_number, 7)

    def test_persistent_redelivery_acked_not_handed_over(self) -> None:
        """
        After a failover the group hands over events again from its last
        checkpoint: those already handled are acknowledged and not given
        to the handler again.
        """
        connection, clock, network = make(ConnectionSettings(reconnection_delay=0.1))
        connection.connect()
        network.last.identify()
        handled: list[uuid.UUID] = []
        d = connection.connect_to_persistent_subscription(
            "s", "g", lambda sub, e, retry: handled.append(e.original_event.event_id)
        )
        ids = [uuid.uuid4() for _ in range(3)]

        def session(numbers: list[int]) -> list[Any]:
            server = network.last
            (request,) = [
                p for p in server.packages()
                if p.command == TcpCommand.ConnectToPersistentSubscription
            ]
            server.send(
                TcpCommand.PersistentSubscriptionConfirmation,
                request.correlation_id,
                pb.PersistentSubscriptionConfirmation(
                    last_commit_position=0, subscription_id="s::g"
                ).SerializeToString(),
            )
            for n in numbers:
                server.send(
                    TcpCommand.PersistentSubscriptionStreamEventAppeared,
                    request.correlation_id,
                    pb.PersistentSubscriptionStreamEventAppeared(
                        event=pb.ResolvedIndexedEvent(event=record("s", n, ids[n])),
                        retryCount=0,
                    ).SerializeToString(),
                )
            return [
                pb.PersistentSubscriptionAckEvents.FromString(p.data)
                for p in server.packages()
                if p.command == TcpCommand.PersistentSubscriptionAckEvents
            ]

        acks = session([0, 1])
        self.successResultOf(d)
        self.assertEqual(len(acks), 2)
        network.last.drop()
        clock.advance(0.1)
        network.last.identify()
        acks = session([0, 1, 2])
        self.assertEqual(handled, ids)
        self.assertEqual(
            [uuid.UUID(bytes_le=a.processed_event_ids[0]) for a in acks], [ids[0], ids[1], ids[2]]
        )


class SubscriptionEdgeTests(SynchronousTestCase):
    def test_not_ready_then_reconnect_subscribes_once(self) -> None:
        """
        A subscription refused with C{NotReady} waits to subscribe again;
        if the connection is replaced meanwhile it subscribes once on the
        new one, not a second time when the wait is over.
        """
        connection, clock, network = make(ConnectionSettings(reconnection_delay=0.5))
        connection.connect()
        network.last.identify()
        connection.subscribe_to_stream("s", lambda sub, e: None)
        (request,) = [
            p for p in network.last.packages() if p.command == TcpCommand.SubscribeToStream
        ]
        network.last.send(
            TcpCommand.NotHandled,
            request.correlation_id,
            pb.NotHandled(reason=pb.NotHandled.NotReady).SerializeToString(),
        )
        network.last.drop()
        clock.advance(0.5)
        network.last.identify()
        clock.advance(5)
        network.last.packages()
        subscribes = [
            p for p in network.last.received if p.command == TcpCommand.SubscribeToStream
        ]
        self.assertEqual(len(subscribes), 1)

    def test_catch_up_dropped_before_live(self) -> None:
        """
        A catch-up subscription the server refuses fails its C{live}
        Deferred and calls C{subscription_dropped}.
        """
        connection, clock, network = make()
        connection.connect()
        network.last.identify()
        dropped: list[str] = []
        subscription = connection.subscribe_to_stream_from(
            "s", None, lambda sub, e: None,
            subscription_dropped=lambda sub, reason, error: dropped.append(reason),
        )
        (request,) = [
            p for p in network.last.packages() if p.command == TcpCommand.SubscribeToStream
        ]
        network.last.send(
            TcpCommand.SubscriptionDropped,
            request.correlation_id,
            pb.SubscriptionDropped(reason=pb.SubscriptionDropped.AccessDenied).SerializeToString(),
        )
        self.failureResultOf(subscription.live)
        self.assertEqual(dropped, ["AccessDenied"])

    def test_stale_connection_not_adopted(self) -> None:
        """
        A connection attempt overtaken by a C{NotMaster} redirect is closed
        when it completes, not adopted.
        """
        pending: list[tuple[Any, Deferred[Any]]] = []

        class SlowEndpoint:
            def __init__(self, node: NodeEndpoints) -> None:
                self.node = node

            def connect(self, factory: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                pending.append((factory, d))
                return d

        clock = Clock()
        connection = EventStoreConnection.create(
            clock, ConnectionSettings(operation_timeout=1.0), SingleNode("10.0.0.1", 1113),
            endpoint_factory=SlowEndpoint,
        )
        connection.connect()
        factory, d = pending[0]
        # identify times out on nothing; the attempt is abandoned by a new one
        connection._drop_tcp()
        protocol = factory.buildProtocol(None)
        server = FakeServerConnection(NODE, protocol)
        protocol.makeConnection(server.transport)
        d.callback(protocol)
        self.assertTrue(server.closed)
        self.assertIsNone(connection._protocol)


class PersistentManualAckTests(SynchronousTestCase):
    def test_redelivery_of_held_event(self) -> None:
        """
        With explicit acknowledgement, an event handed over and redelivered
        (the server's message timeout) is neither handed over again nor
        acknowledged by the client while the application holds it; once the
        application acknowledged it, a redelivery is acknowledged again.
        """
        connection, clock, network = make()
        connection.connect()
        network.last.identify()
        held: list[Any] = []
        d = connection.connect_to_persistent_subscription(
            "s", "g", lambda sub, e, retry: held.append(e), auto_ack=False
        )
        server = network.last
        (request,) = [
            p for p in server.packages()
            if p.command == TcpCommand.ConnectToPersistentSubscription
        ]
        server.send(
            TcpCommand.PersistentSubscriptionConfirmation,
            request.correlation_id,
            pb.PersistentSubscriptionConfirmation(
                last_commit_position=0, subscription_id="s::g"
            ).SerializeToString(),
        )
        subscription = self.successResultOf(d)
        event_id = uuid.uuid4()

        def deliver() -> list[Any]:
            server.send(
                TcpCommand.PersistentSubscriptionStreamEventAppeared,
                request.correlation_id,
                pb.PersistentSubscriptionStreamEventAppeared(
                    event=pb.ResolvedIndexedEvent(event=record("s", 0, event_id)), retryCount=1
                ).SerializeToString(),
            )
            return [
                p for p in server.packages()
                if p.command == TcpCommand.PersistentSubscriptionAckEvents
            ]

        self.assertEqual(deliver(), [])
        self.assertEqual(deliver(), [])
        self.assertEqual(len(held), 1)
        subscription.acknowledge(held[0])
        self.assertEqual(len(server.packages()), 1)
        self.assertEqual(len(deliver()), 1)
        self.assertEqual(len(held), 1)
        self.assertEqual(subscription.redeliveries_suppressed, 2)


class RetryPropertyTests(SynchronousTestCase):
    @given(
        st.lists(st.sampled_from(["timeout", "drop", "not_ready", "too_busy", "not_master"]),
                 max_size=12),
        st.integers(0, 6),
    )
    def test_append_retries(self, failures: list[str], max_retries: int) -> None:
        """
        Whatever goes wrong with each attempt (a timeout, a lost
        connection, C{NotReady}, C{TooBusy}, C{NotMaster}), an append is
        sent at most C{max_retries + 1} times, every time with the same
        bytes; it succeeds if an attempt within that budget is answered,
        and fails otherwise.
        """
        connection, clock, network = make(
            ConnectionSettings(
                max_retries=max_retries, operation_timeout=1.0, reconnection_delay=0.1,
                max_reconnection_delay=0.1, heartbeat_interval=100, heartbeat_timeout=100,
                keep_reconnecting=True,
            )
        )
        connection.connect()
        network.last.identify()
        d = connection.append_to_stream("s", ExpectedVersion.ANY, [event(), event()])
        sent: list[bytes] = []
        steps = list(failures) + ["answer"]
        for step in steps:
            for _ in range(5):
                server = network.last
                if not server.closed and connection.is_connected:
                    break
                clock.advance(0.1)
                if not network.last.closed and not connection.is_connected:
                    network.last.identify()
            mine = writes(network.last)
            if not mine:
                clock.advance(0.1)
                mine = writes(network.last)
            if d.called:
                break
            self.assertEqual(len(mine), 1)
            write = mine[0]
            sent.append(write.data)
            server = network.last
            if step == "answer":
                server.answer_write(write, 1)
            elif step == "timeout":
                clock.advance(1.0)
            elif step == "drop":
                server.drop()
            elif step == "not_master":
                server.not_master(write, NodeEndpoints("10.0.0.2", 1113))
            else:
                reason = pb.NotHandled.NotReady if step == "not_ready" else pb.NotHandled.TooBusy
                server.send(
                    TcpCommand.NotHandled,
                    write.correlation_id,
                    pb.NotHandled(reason=reason).SerializeToString(),
                )
        self.assertEqual(len(sent), min(len(steps), max_retries + 1))
        self.assertEqual(len(set(sent)), 1)
        if len(failures) <= max_retries:
            self.assertEqual(self.successResultOf(d).next_expected_version, 1)
        else:
            self.failureResultOf(d, RetriesLimitReached, OperationTimedOut)
        connection.close()


class FramingPropertyTests(SynchronousTestCase):
    @given(
        command=st.integers(0, 255),
        correlation_id=st.binary(min_size=16, max_size=16),
        data=st.binary(max_size=300),
        login=st.none() | st.text(min_size=1, max_size=40),
        password=st.text(max_size=40),
    )
    def test_frame_request_matches_codec(
        self, command: int, correlation_id: bytes, data: bytes, login: str | None, password: str
    ) -> None:
        """
        The protocol's one-step frames are what the wire codec encodes
        (and decodes back).
        """
        from estwisted.client._protocol import auth_block, frame_request
        from estwisted.wire.framing import frame
        from estwisted.wire.tcpcodec import decode_package, encode_package

        if login is None:
            mine = frame_request(command, correlation_id, data)
            theirs = frame(encode_package(command, correlation_id, data))
        else:
            credentials = UserCredentials(login, password)
            mine = frame_request(command, correlation_id, data, auth_block(credentials))
            theirs = frame(encode_package(command, correlation_id, data, login, password))
        self.assertEqual(mine, theirs)
        package = decode_package(mine[4:])
        self.assertEqual((package.command, package.correlation_id, package.data),
                         (command, correlation_id, data))
        self.assertEqual(package.login, login)
