# -*- test-case-name: estwisted.tcp.test.test_server -*-
"""
Tests for L{estwisted.tcp.server}: the protocol driven through a
L{StringTransport} over a real L{StreamStore} on a L{MemoryLog}, with a
L{Clock}.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import DELETED_STREAM, DELETED_STREAM_V1
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.tcp.server import TcpClientFactory, TcpClientProtocol
from estwisted.wire import messages_pb2 as pb
from estwisted.wire import tcpcodec
from estwisted.wire.framing import Framer, frame
from estwisted.wire.tcpcodec import TcpCommand as C
from estwisted.wire.tcpcodec import TcpPackage, decode_package, encode_package

ADMIN = ("admin", "changeit")


class Node:
    """
    A store, hub and persistent service on a MemoryLog, with a Clock.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = StreamStore(MemoryLog(), StreamIndex(), self.clock)
        self.users = UserManager(self.store, iterations=1)
        self.users.ensure_default_users()
        self.settle()
        self.hub = SubscriptionHub(self.store)
        self.persistent = PersistentSubscriptions(self.store, self.clock)
        self.persistent.start()
        self.settle()
        self.factory = TcpClientFactory(
            self.store, self.hub, self.persistent, self.clock, 2.0, 1.0, 1024 * 1024,
            users=self.users,
        )

    def settle(self) -> None:
        for _ in range(5):
            self.clock.advance(0)


class Client:
    """
    One protocol instance on a StringTransport and helpers to talk to it.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol: TcpClientProtocol = node.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.framer = Framer()

    def send(
        self,
        command: int,
        message: Any = b"",
        corr: Optional[bytes] = None,
        creds: Optional[tuple[str, str]] = None,
        flags: int = 0,
    ) -> bytes:
        corr = corr or uuid.uuid4().bytes_le
        data = message if isinstance(message, bytes) else message.SerializePartialToString()
        login, password = creds if creds else (None, None)
        self.protocol.dataReceived(
            frame(encode_package(command, corr, data, login, password, flags))
        )
        return corr

    def replies(self) -> list[TcpPackage]:
        self.node.settle()
        data = self.transport.value()
        self.transport.clear()
        return [decode_package(p) for p in self.framer.feed(data)]

    def one(self, command: int, corr: bytes) -> TcpPackage:
        replies = [p for p in self.replies() if p.correlation_id == corr]
        assert len(replies) == 1, replies
        assert replies[0].command == command, (hex(replies[0].command), replies[0].data)
        return replies[0]

    def call(self, command: int, reply: int, message: Any = b"", **kw: Any) -> Any:
        corr = self.send(command, message, **kw)
        return self.one(reply, corr)

    def write(self, stream: str, count: int = 1, expected: int = -2, **kw: Any) -> Any:
        message = pb.WriteEvents(event_stream_id=stream, expected_version=expected)
        for i in range(count):
            e = message.events.add()
            e.event_id = uuid.uuid4().bytes_le
            e.event_type = "type"
            e.data_content_type = 1
            e.metadata_content_type = 0
            e.data = b'{"i": %d}' % i
        package = self.call(C.WriteEvents, C.WriteEventsCompleted, message, **kw)
        return pb.WriteEventsCompleted.FromString(package.data)

    def read_stream(self, stream: str, start: int = 0, count: int = 100, **kw: Any) -> Any:
        message = pb.ReadStreamEvents(
            event_stream_id=stream, from_event_number=start, max_count=count
        )
        package = self.call(
            C.ReadStreamEventsForward, C.ReadStreamEventsForwardCompleted, message, **kw
        )
        return pb.ReadStreamEventsCompleted.FromString(package.data)


class BasicTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.client = Client(self.node)

    def test_request_meter(self) -> None:
        """
        With a meter set, every request is counted by command and one in
        C{sample_mask + 1} timed; a write once its reply is sent.
        """

        class Meter:
            counts = [0] * 256
            sample_mask = 1
            timed: list[tuple[int, float]] = []

            def observe(self, command: int, seconds: float) -> None:
                self.timed.append((command, seconds))

        meter = Meter()
        self.node.factory.request_meter = meter
        for _ in range(4):
            self.client.write("timed", 2)
        self.client.read_stream("timed")
        self.client.read_stream("timed")
        self.client.call(C.Ping, C.Pong)
        self.assertEqual(meter.counts[C.WriteEvents], 4)
        self.assertEqual(meter.counts[C.ReadStreamEventsForward], 2)
        self.assertEqual(sum(meter.counts), 6)
        self.assertEqual([c for c, _ in meter.timed],
                         [C.WriteEvents, C.WriteEvents, C.ReadStreamEventsForward])
        self.assertTrue(all(seconds >= 0 for _, seconds in meter.timed))

    def test_heartbeat_request_answered_with_same_id(self) -> None:
        package = self.client.call(C.HeartbeatRequestCommand, C.HeartbeatResponseCommand)
        self.assertEqual(package.data, b"")

    def test_heartbeat_response_is_ignored(self) -> None:
        self.client.send(C.HeartbeatResponseCommand)
        self.assertEqual(self.client.replies(), [])

    def test_ping_echoes_payload(self) -> None:
        package = self.client.call(C.Ping, C.Pong, b"hello")
        self.assertEqual(package.data, b"hello")

    def test_identify(self) -> None:
        self.assertTrue(self.client.protocol.v1)
        message = pb.IdentifyClient(version=1, connection_name="c1")
        package = self.client.call(C.IdentifyClient, C.ClientIdentified, message)
        self.assertEqual(package.data, b"")
        self.assertFalse(self.client.protocol.v1)
        self.assertEqual(self.client.protocol.connection_name, "c1")

    def test_authenticate(self) -> None:
        package = self.client.call(C.Authenticate, C.Authenticated, b"", creds=ADMIN)
        self.assertEqual(package.data, b"")
        assert self.client.protocol.default_user is not None
        self.assertEqual(self.client.protocol.default_user.login, "admin")
        # The default user now reads $all.
        message = pb.ReadAllEvents(commit_position=0, prepare_position=0, max_count=10)
        package = self.client.call(C.ReadAllEventsForward, C.ReadAllEventsForwardCompleted, message)
        self.assertEqual(pb.ReadAllEventsCompleted.FromString(package.data).result, 0)

    def test_authenticate_wrong_password(self) -> None:
        package = self.client.call(
            C.Authenticate, C.NotAuthenticated, b"", creds=("admin", "wrong")
        )
        self.assertEqual(package.data, b"Unauthorized")
        self.assertIsNone(self.client.protocol.default_user)

    def test_authenticate_without_credentials(self) -> None:
        package = self.client.call(C.Authenticate, C.NotAuthenticated)
        self.assertEqual(package.data, b"No user credentials provided.")

    def test_unknown_command_bad_request_connection_stays(self) -> None:
        package = self.client.call(0x7E, C.BadRequest, b"x")
        self.assertIn(b"Could not unwrap network package for command 0x7E", package.data)
        self.assertFalse(self.client.transport.disconnecting)
        self.client.call(C.Ping, C.Pong, b"still here")

    def test_replication_command_bad_request(self) -> None:
        package = self.client.call(C.SubscribeReplica, C.BadRequest)
        self.assertIn(b"SubscribeReplica", package.data)

    def test_undecodable_payload(self) -> None:
        package = self.client.call(C.WriteEvents, C.BadRequest, b"\xff\xff\xff")
        self.assertIn(b"Could not unwrap network package for command WriteEvents", package.data)
        self.assertFalse(self.client.transport.disconnecting)

    def test_bad_frame_length_closes(self) -> None:
        self.client.protocol.dataReceived(b"\x00\x00\x00\x00")
        package = self.client.one(C.BadRequest, tcpcodec.ZERO_CORRELATION)
        self.assertIn(b"Package size is out of bounds: 0", package.data)
        self.assertTrue(self.client.transport.disconnecting)

    def test_requests_before_a_bad_frame_are_answered(self) -> None:
        corr = uuid.uuid4().bytes_le
        self.client.protocol.dataReceived(
            frame(encode_package(C.Ping, corr, b"first")) + b"\x00\x00\x00\x00"
        )
        replies = self.client.replies()
        self.assertEqual([(p.command, p.correlation_id) for p in replies][0], (C.Pong, corr))
        self.assertEqual(replies[1].command, C.BadRequest)
        self.assertTrue(self.client.transport.disconnecting)

    def test_frame_over_max_closes(self) -> None:
        self.client.protocol.dataReceived(b"\x01\x00\x10\x00")  # 1 MiB + 1
        package = self.client.one(C.BadRequest, tcpcodec.ZERO_CORRELATION)
        self.assertIn(b"(max: 1048576)", package.data)
        self.assertTrue(self.client.transport.disconnecting)

    def test_short_package_closes(self) -> None:
        self.client.protocol.dataReceived(frame(b"\x01\x00abc"))
        package = self.client.one(C.BadRequest, tcpcodec.ZERO_CORRELATION)
        self.assertIn(b"Received bad network package", package.data)
        self.assertTrue(self.client.transport.disconnecting)

    def test_bad_auth_block_closes(self) -> None:
        self.client.protocol.dataReceived(frame(b"\x82\x01" + bytes(16) + b"\x09ab"))
        self.client.one(C.BadRequest, tcpcodec.ZERO_CORRELATION)
        self.assertTrue(self.client.transport.disconnecting)

    def test_trusted_write_rejected_and_closed(self) -> None:
        corr = self.client.send(C.WriteEvents, b"", flags=tcpcodec.FLAG_TRUSTED_WRITE)
        package = self.client.one(C.BadRequest, corr)
        self.assertIn(b"Trusted writes", package.data)
        self.assertTrue(self.client.transport.disconnecting)

    def test_data_after_close_is_ignored(self) -> None:
        self.client.protocol.dataReceived(b"\xff\xff\xff\xff")
        self.client.replies()
        self.client.send(C.Ping, b"x")
        self.assertEqual(self.client.replies(), [])

    def test_not_ready(self) -> None:
        self.node.factory.ready = False
        package = self.client.call(C.ReadEvent, C.NotHandled, pb.ReadEvent(event_stream_id="s"))
        self.assertEqual(pb.NotHandled.FromString(package.data).reason, pb.NotHandled.NotReady)
        self.client.call(C.Ping, C.Pong)

    def test_scavenge(self) -> None:
        package = self.client.call(C.ScavengeDatabase, C.ScavengeDatabaseResponse, creds=ADMIN)
        response = pb.ScavengeDatabaseResponse.FromString(package.data)
        self.assertEqual(response.result, pb.ScavengeDatabaseResponse.Started)
        uuid.UUID(response.scavengeId)
        package = self.client.call(C.ScavengeDatabase, C.ScavengeDatabaseResponse)
        response = pb.ScavengeDatabaseResponse.FromString(package.data)
        self.assertEqual(response.result, pb.ScavengeDatabaseResponse.Unauthorized)

    def test_client_bad_request_is_only_logged(self) -> None:
        self.client.send(C.BadRequest, b"oops")
        self.assertEqual(self.client.replies(), [])
        self.assertFalse(self.client.transport.disconnecting)

    def test_factory_defaults(self) -> None:
        factory = TcpClientFactory(self.node.store, self.node.hub, self.node.persistent, Clock())
        self.assertEqual((factory.heartbeat_interval, factory.heartbeat_timeout), (2.0, 1.0))
        self.assertEqual(factory.max_package_size, 64 * 1024 * 1024)
        self.assertEqual(
            (factory.max_pending_packages, factory.max_pending_bytes), (50000, 10485760)
        )


class WriteReadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.client = Client(self.node)

    def test_write_and_read_back(self) -> None:
        result = self.client.write("s", 3)
        self.assertEqual(result.result, pb.Success)
        self.assertEqual((result.first_event_number, result.last_event_number), (0, 2))
        self.assertGreater(result.commit_position, 0)
        read = self.client.read_stream("s")
        self.assertEqual(read.result, 0)
        self.assertEqual([e.event.event_number for e in read.events], [0, 1, 2])
        self.assertTrue(read.is_end_of_stream)
        self.assertEqual(read.last_event_number, 2)
        self.assertTrue(all(e.event.HasField("created_epoch") for e in read.events))

    def test_event_ids_round_trip_in_net_order(self) -> None:
        event_id = uuid.uuid4()
        message = pb.WriteEvents(event_stream_id="s", expected_version=-2)
        e = message.events.add(event_id=event_id.bytes_le, event_type="t", data=b"x")
        e.data_content_type = 0
        e.metadata_content_type = 0
        self.client.call(C.WriteEvents, C.WriteEventsCompleted, message)
        read = self.client.read_stream("s")
        self.assertEqual(uuid.UUID(bytes_le=read.events[0].event.event_id), event_id)
        stored = self.node.store.read_event("s", 0, False, None)
        assert stored.event is not None
        self.assertEqual(stored.event.original.event_id, event_id.bytes)

    def test_read_event(self) -> None:
        self.client.write("s", 2)
        package = self.client.call(
            C.ReadEvent, C.ReadEventCompleted, pb.ReadEvent(event_stream_id="s", event_number=-1)
        )
        message = pb.ReadEventCompleted.FromString(package.data)
        self.assertEqual(message.result, 0)
        self.assertEqual(message.event.event.event_number, 1)
        package = self.client.call(
            C.ReadEvent, C.ReadEventCompleted, pb.ReadEvent(event_stream_id="nope")
        )
        message = pb.ReadEventCompleted.FromString(package.data)
        self.assertEqual(message.result, pb.ReadEventCompleted.NoStream)
        self.assertTrue(message.HasField("event"))

    def test_read_backward(self) -> None:
        self.client.write("s", 5)
        message = pb.ReadStreamEvents(event_stream_id="s", from_event_number=-1, max_count=2)
        package = self.client.call(
            C.ReadStreamEventsBackward, C.ReadStreamEventsBackwardCompleted, message
        )
        read = pb.ReadStreamEventsCompleted.FromString(package.data)
        self.assertEqual([e.event.event_number for e in read.events], [4, 3])

    def test_read_all_forward_and_backward(self) -> None:
        self.client.write("a", 2)
        self.client.write("b", 1)
        message = pb.ReadAllEvents(commit_position=0, prepare_position=0, max_count=1000)
        package = self.client.call(
            C.ReadAllEventsForward, C.ReadAllEventsForwardCompleted, message, creds=ADMIN
        )
        read = pb.ReadAllEventsCompleted.FromString(package.data)
        user = [e for e in read.events if not e.event.event_stream_id.startswith("$")]
        self.assertEqual([e.event.event_stream_id for e in user], ["a", "a", "b"])
        self.assertGreater(read.next_commit_position, 0)
        message = pb.ReadAllEvents(commit_position=-1, prepare_position=-1, max_count=1)
        package = self.client.call(
            C.ReadAllEventsBackward, C.ReadAllEventsBackwardCompleted, message, creds=ADMIN
        )
        read = pb.ReadAllEventsCompleted.FromString(package.data)
        self.assertEqual(read.events[0].event.event_stream_id, "b")
        self.assertGreater(read.commit_position, 0)

    def test_read_all_anonymous_denied(self) -> None:
        message = pb.ReadAllEvents(commit_position=0, prepare_position=0, max_count=10)
        package = self.client.call(C.ReadAllEventsForward, C.ReadAllEventsForwardCompleted, message)
        read = pb.ReadAllEventsCompleted.FromString(package.data)
        self.assertEqual(read.result, pb.ReadAllEventsCompleted.AccessDenied)

    def test_wrong_expected_version(self) -> None:
        self.client.write("s", 2)
        result = self.client.write("s", 1, expected=5)
        self.assertEqual(result.result, pb.WrongExpectedVersion)
        self.assertEqual(result.current_version, 1)
        self.assertEqual(result.first_event_number, tcpcodec.INT_MIN)

    def test_proto3_write_with_absent_fields(self) -> None:
        """
        A proto3 client leaves out expected_version 0 and require_master
        false: they read as defaults.
        """
        self.client.write("s", 1)
        data = b"\x0a\x01s"  # only the stream id: expected version 0
        e = pb.NewEvent(event_id=uuid.uuid4().bytes_le, event_type="t")
        data += b"\x1a" + bytes([len(e.SerializePartialToString())]) + e.SerializePartialToString()
        package = self.client.call(C.WriteEvents, C.WriteEventsCompleted, data)
        result = pb.WriteEventsCompleted.FromString(package.data)
        self.assertEqual(result.result, pb.Success)
        self.assertEqual(result.first_event_number, 1)

    def test_bad_credentials_do_not_run_the_operation(self) -> None:
        corr = self.client.send(
            C.WriteEvents,
            pb.WriteEvents(event_stream_id="s", expected_version=-2),
            creds=("admin", "bad"),
        )
        package = self.client.one(C.NotAuthenticated, corr)
        self.assertEqual(package.data, b"Not Authenticated")
        self.assertEqual(self.node.store.last_event_number("s"), -1)

    def test_access_denied_write(self) -> None:
        result = self.client.write("$system", 1)
        self.assertEqual(result.result, pb.AccessDenied)
        result = self.client.write("$system", 1, creds=ADMIN)
        self.assertEqual(result.result, pb.Success)

    def test_empty_event_type_is_bad_request(self) -> None:
        message = pb.WriteEvents(event_stream_id="s", expected_version=-2)
        message.events.add(event_id=uuid.uuid4().bytes_le, event_type="", data=b"")
        self.client.call(C.WriteEvents, C.BadRequest, message)

    def test_soft_and_hard_delete(self) -> None:
        self.client.write("s", 2)
        package = self.client.call(
            C.DeleteStream,
            C.DeleteStreamCompleted,
            pb.DeleteStream(event_stream_id="s", expected_version=-2),
        )
        message = pb.DeleteStreamCompleted.FromString(package.data)
        self.assertEqual(message.result, pb.Success)
        self.assertEqual(self.client.read_stream("s").result, 1)  # NoStream
        self.client.write("h", 1)
        package = self.client.call(
            C.DeleteStream,
            C.DeleteStreamCompleted,
            pb.DeleteStream(event_stream_id="h", expected_version=-2, hard_delete=True),
        )
        self.assertEqual(pb.DeleteStreamCompleted.FromString(package.data).result, pb.Success)
        read = self.client.read_stream("h")
        self.assertEqual(read.result, 2)  # StreamDeleted
        self.assertEqual(read.last_event_number, DELETED_STREAM_V1)  # never identified: V1
        self.client.call(C.IdentifyClient, C.ClientIdentified, pb.IdentifyClient(version=1))
        self.assertEqual(self.client.read_stream("h").last_event_number, DELETED_STREAM)
        self.assertEqual(self.client.write("h", 1).result, pb.StreamDeleted)
        package = self.client.call(
            C.DeleteStream,
            C.DeleteStreamCompleted,
            pb.DeleteStream(event_stream_id="h", expected_version=-2, hard_delete=True),
        )
        message = pb.DeleteStreamCompleted.FromString(package.data)
        self.assertEqual(message.result, pb.StreamDeleted)
        self.assertEqual(message.commit_position, -1)

    def test_transaction(self) -> None:
        package = self.client.call(
            C.TransactionStart,
            C.TransactionStartCompleted,
            pb.TransactionStart(event_stream_id="t", expected_version=-1),
        )
        start = pb.TransactionStartCompleted.FromString(package.data)
        self.assertEqual(start.result, pb.Success)
        write = pb.TransactionWrite(transaction_id=start.transaction_id)
        for _ in range(2):
            e = write.events.add(event_id=uuid.uuid4().bytes_le, event_type="t", data=b"")
            e.data_content_type = 0
            e.metadata_content_type = 0
        package = self.client.call(C.TransactionWrite, C.TransactionWriteCompleted, write)
        self.assertEqual(pb.TransactionWriteCompleted.FromString(package.data).result, pb.Success)
        self.assertEqual(self.node.store.last_event_number("t"), -1)
        package = self.client.call(
            C.TransactionCommit,
            C.TransactionCommitCompleted,
            pb.TransactionCommit(transaction_id=start.transaction_id),
        )
        commit = pb.TransactionCommitCompleted.FromString(package.data)
        self.assertEqual(commit.result, pb.Success)
        self.assertEqual((commit.first_event_number, commit.last_event_number), (0, 1))
        self.assertEqual(self.node.store.last_event_number("t"), 1)

    def test_transaction_unknown_id(self) -> None:
        package = self.client.call(
            C.TransactionWrite,
            C.TransactionWriteCompleted,
            pb.TransactionWrite(transaction_id=999),
        )
        message = pb.TransactionWriteCompleted.FromString(package.data)
        self.assertEqual(message.result, pb.InvalidTransaction)
        package = self.client.call(
            C.TransactionCommit,
            C.TransactionCommitCompleted,
            pb.TransactionCommit(transaction_id=999),
        )
        commit = pb.TransactionCommitCompleted.FromString(package.data)
        self.assertEqual(commit.result, pb.InvalidTransaction)
        self.assertTrue(commit.IsInitialized())

    def test_transaction_access_denied(self) -> None:
        package = self.client.call(
            C.TransactionStart,
            C.TransactionStartCompleted,
            pb.TransactionStart(event_stream_id="$sys", expected_version=-2),
        )
        self.assertEqual(pb.TransactionStartCompleted.FromString(package.data).result, 7)

    def test_reply_that_cannot_be_built_is_still_answered(self) -> None:
        def broken(*args: object) -> bytes:
            raise RuntimeError("boom")

        self.patch(tcpcodec, "write_completed_frame", broken)
        message = pb.WriteEvents(event_stream_id="s", expected_version=-2)
        package = self.client.call(C.WriteEvents, C.BadRequest, message)
        self.assertIn(b"Internal error", package.data)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_pipelined_requests_each_answered(self) -> None:
        corrs = set()
        data = b""
        for i in range(50):
            corr = uuid.uuid4().bytes_le
            corrs.add(corr)
            message = pb.WriteEvents(event_stream_id=f"p{i % 3}", expected_version=-2)
            message.events.add(
                event_id=uuid.uuid4().bytes_le,
                event_type="t",
                data=b"",
                data_content_type=0,
                metadata_content_type=0,
            )
            data += frame(encode_package(C.WriteEvents, corr, message.SerializePartialToString()))
        self.client.protocol.dataReceived(data)
        replies = self.client.replies()
        self.assertEqual({p.correlation_id for p in replies}, corrs)
        self.assertTrue(all(p.command == C.WriteEventsCompleted for p in replies))


class SubscriptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.client = Client(self.node)
        self.writer = Client(self.node)

    def test_subscribe_receive_unsubscribe(self) -> None:
        self.writer.write("s", 2)
        corr = self.client.send(C.SubscribeToStream, pb.SubscribeToStream(event_stream_id="s"))
        confirmation = pb.SubscriptionConfirmation.FromString(
            self.client.one(C.SubscriptionConfirmation, corr).data
        )
        self.assertEqual(confirmation.last_event_number, 1)
        self.writer.write("s", 2)
        self.writer.write("other", 1)
        pushed = [p for p in self.client.replies() if p.correlation_id == corr]
        self.assertEqual([p.command for p in pushed], [C.StreamEventAppeared] * 2)
        numbers = [
            pb.StreamEventAppeared.FromString(p.data).event.event.event_number for p in pushed
        ]
        self.assertEqual(numbers, [2, 3])
        self.client.send(C.UnsubscribeFromStream, b"", corr=corr)
        dropped = self.client.one(C.SubscriptionDropped, corr)
        self.assertEqual(pb.SubscriptionDropped.FromString(dropped.data).reason, 0)
        self.writer.write("s", 1)
        self.assertEqual(self.client.replies(), [])

    def test_subscribe_all_needs_admin(self) -> None:
        corr = self.client.send(C.SubscribeToStream, pb.SubscribeToStream(event_stream_id=""))
        dropped = self.client.one(C.SubscriptionDropped, corr)
        self.assertEqual(
            pb.SubscriptionDropped.FromString(dropped.data).reason,
            pb.SubscriptionDropped.AccessDenied,
        )
        corr = self.client.send(C.SubscribeToStream, b"", creds=ADMIN)  # proto3: "" absent
        confirmation = pb.SubscriptionConfirmation.FromString(
            self.client.one(C.SubscriptionConfirmation, corr).data
        )
        self.assertFalse(confirmation.HasField("last_event_number"))
        self.writer.write("x", 1)
        pushed = [p for p in self.client.replies() if p.command == C.StreamEventAppeared]
        event = pb.StreamEventAppeared.FromString(pushed[-1].data).event
        self.assertEqual(event.event.event_stream_id, "x")
        self.assertEqual(event.commit_position, event.prepare_position)

    def test_connection_close_drops_subscriptions(self) -> None:
        self.client.send(C.SubscribeToStream, pb.SubscribeToStream(event_stream_id="s"))
        self.client.send(C.SubscribeToStream, pb.SubscribeToStream(event_stream_id="t"))
        self.client.replies()
        self.assertEqual(self.node.hub.count, 2)
        self.client.protocol.connectionLost()
        self.assertEqual(self.node.hub.count, 0)
        self.writer.write("s", 1)
        self.assertEqual(self.client.transport.value(), b"")

    def test_unsubscribe_unknown_is_answered(self) -> None:
        corr = self.client.send(C.UnsubscribeFromStream)
        self.client.one(C.SubscriptionDropped, corr)


class PersistentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.client = Client(self.node)

    def create(self, stream: str = "s", group: str = "g", **kw: Any) -> Any:
        values: dict[str, Any] = dict(
            subscription_group_name=group,
            event_stream_id=stream,
            resolve_link_tos=False,
            start_from=0,
            message_timeout_milliseconds=10000,
            record_statistics=False,
            live_buffer_size=500,
            read_batch_size=20,
            buffer_size=500,
            max_retry_count=2,
            prefer_round_robin=True,
            checkpoint_after_time=1000,
            checkpoint_max_count=10,
            checkpoint_min_count=1,
            subscriber_max_count=0,
            named_consumer_strategy="RoundRobin",
        )
        values.update(kw)
        creds = values.pop("creds", ADMIN)
        package = self.client.call(
            C.CreatePersistentSubscription,
            C.CreatePersistentSubscriptionCompleted,
            pb.CreatePersistentSubscription(**values),
            creds=creds,
        )
        return pb.CreatePersistentSubscriptionCompleted.FromString(package.data)

    def connect(self, client: Client, stream: str = "s", group: str = "g") -> bytes:
        return client.send(
            C.ConnectToPersistentSubscription,
            pb.ConnectToPersistentSubscription(
                subscription_id=group, event_stream_id=stream, allowed_in_flight_messages=10
            ),
        )

    def test_create_connect_ack_nak(self) -> None:
        self.assertEqual(self.create().result, 0)
        self.assertEqual(self.create().result, 1)  # AlreadyExists
        self.client.write("s", 3)
        corr = self.connect(self.client)
        replies = [p for p in self.client.replies() if p.correlation_id == corr]
        self.assertEqual(replies[0].command, C.PersistentSubscriptionConfirmation)
        confirmation = pb.PersistentSubscriptionConfirmation.FromString(replies[0].data)
        self.assertEqual(confirmation.subscription_id, "s::g")
        events = [
            pb.PersistentSubscriptionStreamEventAppeared.FromString(p.data)
            for p in replies[1:]
            if p.command == C.PersistentSubscriptionStreamEventAppeared
        ]
        self.assertEqual([e.event.event.event_number for e in events], [0, 1, 2])
        ids = [e.event.event.event_id for e in events]
        self.client.send(
            C.PersistentSubscriptionAckEvents,
            pb.PersistentSubscriptionAckEvents(subscription_id="s::g", processed_event_ids=ids[:2]),
            corr=corr,
        )
        self.client.send(
            C.PersistentSubscriptionNakEvents,
            pb.PersistentSubscriptionNakEvents(
                subscription_id="s::g",
                processed_event_ids=ids[2:],
                action=pb.PersistentSubscriptionNakEvents.Retry,
            ),
            corr=corr,
        )
        retried = [
            pb.PersistentSubscriptionStreamEventAppeared.FromString(p.data)
            for p in self.client.replies()
            if p.command == C.PersistentSubscriptionStreamEventAppeared
        ]
        self.assertEqual([e.event.event.event_number for e in retried], [2])
        self.assertEqual(retried[0].retryCount, 1)
        self.client.send(C.UnsubscribeFromStream, b"", corr=corr)
        dropped = self.client.one(C.SubscriptionDropped, corr)
        self.assertEqual(pb.SubscriptionDropped.FromString(dropped.data).reason, 0)

    def test_settings_reach_the_group(self) -> None:
        self.assertEqual(
            self.create(group="p", named_consumer_strategy="Pinned", max_retry_count=7).result, 0
        )
        settings = self.node.persistent.get_group("s", "p").settings
        self.assertEqual(settings.named_consumer_strategy, "Pinned")
        self.assertEqual(settings.max_retry_count, 7)
        # Legacy clients: no strategy name, prefer_round_robin decides.
        self.assertEqual(
            self.create(group="d", named_consumer_strategy="", prefer_round_robin=False).result, 0
        )
        settings = self.node.persistent.get_group("s", "d").settings
        self.assertEqual(settings.named_consumer_strategy, "DispatchToSingle")

    def test_unknown_strategy_fails(self) -> None:
        self.assertEqual(self.create(named_consumer_strategy="Nope").result, 2)

    def test_create_needs_ops(self) -> None:
        self.assertEqual(self.create(creds=None).result, 3)

    def test_create_bad_stream_fails(self) -> None:
        self.assertEqual(self.create(stream="$all").result, 2)

    def test_connect_missing_group(self) -> None:
        corr = self.connect(self.client, group="nope")
        dropped = self.client.one(C.SubscriptionDropped, corr)
        self.assertEqual(
            pb.SubscriptionDropped.FromString(dropped.data).reason,
            pb.SubscriptionDropped.NotFound,
        )

    def test_update_and_delete(self) -> None:
        message = pb.UpdatePersistentSubscription(
            subscription_group_name="g", event_stream_id="s", start_from=0
        )
        package = self.client.call(
            C.UpdatePersistentSubscription,
            C.UpdatePersistentSubscriptionCompleted,
            message,
            creds=ADMIN,
        )
        self.assertEqual(
            pb.UpdatePersistentSubscriptionCompleted.FromString(package.data).result, 1
        )
        self.create()
        package = self.client.call(
            C.UpdatePersistentSubscription,
            C.UpdatePersistentSubscriptionCompleted,
            message,
            creds=ADMIN,
        )
        self.assertEqual(
            pb.UpdatePersistentSubscriptionCompleted.FromString(package.data).result, 0
        )
        delete = pb.DeletePersistentSubscription(subscription_group_name="g", event_stream_id="s")
        package = self.client.call(
            C.DeletePersistentSubscription,
            C.DeletePersistentSubscriptionCompleted,
            delete,
            creds=ADMIN,
        )
        self.assertEqual(
            pb.DeletePersistentSubscriptionCompleted.FromString(package.data).result, 0
        )
        package = self.client.call(
            C.DeletePersistentSubscription,
            C.DeletePersistentSubscriptionCompleted,
            delete,
            creds=ADMIN,
        )
        self.assertEqual(
            pb.DeletePersistentSubscriptionCompleted.FromString(package.data).result, 1
        )

    def test_closed_connection_messages_go_to_other_consumer(self) -> None:
        self.create()
        other = Client(self.node)
        corr1 = self.connect(self.client)
        self.client.replies()
        Client(self.node).write("s", 1)
        got1 = [
            p
            for p in self.client.replies()
            if p.command == C.PersistentSubscriptionStreamEventAppeared
        ]
        self.assertEqual(len(got1), 1)
        self.assertTrue(corr1)
        self.connect(other)
        other.replies()
        self.client.protocol.connectionLost()
        got2 = [
            p for p in other.replies() if p.command == C.PersistentSubscriptionStreamEventAppeared
        ]
        self.assertEqual(len(got2), 1)


class HeartbeatTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.client = Client(self.node)

    def test_idle_connection_is_probed_then_closed(self) -> None:
        clock = self.node.clock
        clock.advance(2.0)
        self.assertEqual(self.client.transport.value(), b"")  # connection just made
        clock.advance(2.0)
        packages = self.client.replies()
        self.assertEqual([p.command for p in packages], [C.HeartbeatRequestCommand])
        self.assertNotEqual(packages[0].correlation_id, tcpcodec.ZERO_CORRELATION)
        self.assertFalse(self.client.transport.disconnecting)
        clock.advance(1.0)
        self.assertTrue(self.client.protocol.closed)

    def test_answer_keeps_connection(self) -> None:
        clock = self.node.clock
        clock.advance(2.0)
        clock.advance(2.0)
        request = self.client.replies()[0]
        self.client.send(C.HeartbeatResponseCommand, corr=request.correlation_id)
        clock.advance(1.0)
        self.assertFalse(self.client.protocol.closed)
        for _ in range(10):
            self.client.send(C.Ping)
            clock.advance(2.0)
        self.assertFalse(self.client.protocol.closed)
        self.assertNotIn(C.HeartbeatRequestCommand, [p.command for p in self.client.replies()])

    def test_paused_connection_is_not_timed_out(self) -> None:
        """
        While the transport is full the peer is not read, so its silence
        does not count.
        """
        clock = self.node.clock
        self.client.protocol.pauseProducing()
        for _ in range(10):
            clock.advance(1.0)
        self.assertFalse(self.client.protocol.closed)
        self.client.protocol.resumeProducing()
        for _ in range(6):
            clock.advance(1.0)
        self.assertTrue(self.client.protocol.closed)

    def test_timers_cancelled_on_close(self) -> None:
        self.client.protocol.connectionLost()
        self.assertEqual(self.node.clock.getDelayedCalls(), [])


class HeartbeatPropertyTests(SynchronousTestCase):
    """
    The heartbeat state machine under random traffic: a connection is never
    closed while its peer was heard from within C{interval + timeout}, and a
    silent peer is always closed within C{2 * interval + timeout}.
    """

    @settings(max_examples=40)
    @given(st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=30))
    def test_close_only_after_silence(self, steps: list[tuple[int, bool]]) -> None:
        node = Node()
        client = Client(node)
        protocol = client.protocol
        clock = node.clock
        tick = 0.1
        interval, timeout = 2.0, 1.0
        last_heard = clock.seconds()
        for ticks, talk in steps:
            for _ in range(ticks):
                clock.advance(tick)
                silence = clock.seconds() - last_heard
                if protocol.closed:
                    self.assertGreaterEqual(silence, interval + timeout - 1e-6)
                    return
                self.assertLess(silence, 2 * interval + timeout + 2 * tick)
            if talk:
                client.send(C.HeartbeatResponseCommand)
                last_heard = clock.seconds()
            client.transport.clear()
        # Finally stay silent: the connection must be closed in time.
        for _ in range(int((2 * interval + timeout) / tick) + 3):
            clock.advance(tick)
        self.assertTrue(protocol.closed)


class BackpressureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.node.factory.max_pending_packages = 5
        self.client = Client(self.node)
        self.writer = Client(self.node)

    def test_producer_registered(self) -> None:
        self.assertIs(self.client.transport.producer, self.client.protocol)
        self.assertTrue(self.client.transport.streaming)

    def test_paused_queue_then_flushed_in_order(self) -> None:
        corr = self.client.send(C.SubscribeToStream, pb.SubscribeToStream(event_stream_id="s"))
        self.client.replies()
        self.client.protocol.pauseProducing()
        self.assertEqual(self.client.transport.producerState, "paused")
        for _ in range(3):
            self.writer.write("s", 1)
        self.assertEqual(self.client.transport.value(), b"")
        self.assertEqual(self.client.protocol.pending[0], 3)
        self.client.protocol.resumeProducing()
        self.assertEqual(self.client.transport.producerState, "producing")
        pushed = [p for p in self.client.replies() if p.correlation_id == corr]
        numbers = [
            pb.StreamEventAppeared.FromString(p.data).event.event.event_number for p in pushed
        ]
        self.assertEqual(numbers, [0, 1, 2])
        self.assertEqual(self.client.protocol.pending, (0, 0))

    def test_too_much_pending_closes(self) -> None:
        self.client.send(C.SubscribeToStream, pb.SubscribeToStream(event_stream_id="s"))
        self.client.replies()
        self.client.protocol.pauseProducing()
        for _ in range(6):
            self.writer.write("s", 1)
        packages = self.client.replies()
        self.assertEqual([p.command for p in packages], [C.BadRequest])
        self.assertEqual(packages[0].correlation_id, tcpcodec.ZERO_CORRELATION)
        self.assertTrue(self.client.transport.disconnecting)
        self.client.protocol.connectionLost()
        self.assertEqual(self.node.hub.count, 0)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=60)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=60),
                st.builds(
                    lambda c, f, d: frame(bytes([c, f]) + bytes(16) + d),
                    st.sampled_from([int(c) for c in C] + [0x00, 0x7F, 0xFF]),
                    st.sampled_from([0, 1, 2, 3]),
                    st.binary(max_size=40),
                ),
            ),
            max_size=12,
        )
    )
    def test_random_input_never_raises(self, chunks: list[bytes]) -> None:
        node = Node()
        client = Client(node)
        for chunk in chunks:
            client.protocol.dataReceived(chunk)
            node.settle()
        node.clock.advance(10)
        client.protocol.connectionLost()
        node.settle()
        self.assertEqual(node.hub.count, 0)
        self.assertEqual(self.flushLoggedErrors(), [])
