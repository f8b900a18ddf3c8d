"""
Tests for L{estwisted.grpc.protocol} and L{estwisted.grpc.services}: the
HTTP/2 connection driven by a real C{h2} client state machine over a
L{StringTransport}, the sniffer, and the services over a memory store.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, TrailersReceived
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import Principal
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.grpc.admin import MONITORING, OPERATIONS, USERS
from estwisted.grpc.framing import MessageDecoder, encode_message
from estwisted.grpc.protocol import PREFACE, GrpcConnection, GrpcSniffingFactory
from estwisted.grpc.protos import (
    gossip_pb2,
    monitoring_pb2,
    operations_pb2,
    persistent_pb2,
    serverfeatures_pb2,
    shared_pb2,
    streams_pb2,
    users_pb2,
)
from estwisted.grpc.services import (
    GOSSIP,
    PERSISTENT_SERVICE,
    SERVER_FEATURES,
    STREAMS,
    GrpcServer,
)
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.volatile import SubscriptionHub

ADMIN = Principal("admin", frozenset({"$admins"}))


class Reply:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.decoder = MessageDecoder(encoding="gzip")
        self.raw = b""
        self.messages: list[bytes] = []
        self.ended = False
        self.reset = False

    @property
    def raw_messages(self) -> list[tuple[int, bytes]]:
        """
        The response messages as sent: (compressed flag, bytes).
        """
        out, data = [], self.raw
        while len(data) >= 5:
            length = int.from_bytes(data[1:5], "big")
            out.append((data[0], data[5 : 5 + length]))
            data = data[5 + length :]
        return out

    def meta(self, key: str) -> Optional[str]:
        return self.trailers.get(key, self.headers.get(key))

    @property
    def status(self) -> Optional[int]:
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if value is None else int(value)


class Pair:
    """
    A server connection and an h2 client, pumped by hand.
    """

    def __init__(self, server: Any, clock: Clock) -> None:
        self.clock = clock
        self.transport = StringTransport()
        self.proto = GrpcConnection(server, clock)
        self.proto.makeConnection(self.transport)
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.client.initiate_connection()
        self.replies: dict[int, Reply] = {}
        self.pump()

    def pump(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            self.clock.advance(0)
            out = self.client.data_to_send()
            if out:
                self.proto.dataReceived(out)
            self.clock.advance(0)
            back = self.transport.value()
            self.transport.clear()
            if back:
                for event in self.client.receive_data(back):
                    self._event(event)
            if not out and not back:
                return

    def _event(self, event: Any) -> None:
        reply = self.replies.get(getattr(event, "stream_id", 0))
        if reply is None:
            return
        if isinstance(event, ResponseReceived):
            reply.headers = {str(k): str(v) for k, v in event.headers}
        elif isinstance(event, DataReceived):
            self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if reply.headers.get("content-type") == "application/grpc":
                reply.raw += event.data
                reply.messages.extend(reply.decoder.feed(event.data))
        elif isinstance(event, TrailersReceived):
            reply.trailers = {str(k): str(v) for k, v in event.headers}
        elif isinstance(event, StreamEnded):
            reply.ended = True
        elif type(event).__name__ == "StreamReset":
            reply.reset = True

    def call(self, service: str, method: str, messages: list[Any], end: bool = True,
             metadata: Optional[list[tuple[str, str]]] = None,
             content_type: str = "application/grpc") -> int:
        sid = self.client.get_next_available_stream_id()
        self.replies[sid] = Reply()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/{service}/{method}"),
                   (":authority", "localhost"), ("content-type", content_type),
                   ("te", "trailers")] + (metadata or [])
        self.client.send_headers(sid, headers, end_stream=not messages and end)
        for i, message in enumerate(messages):
            data = message if isinstance(message, bytes) else encode_message(
                message.SerializeToString())
            self.client.send_data(sid, data, end_stream=end and i == len(messages) - 1)
        self.pump()
        return sid


def make_server(clock: Clock, anonymous: Optional[Principal] = ADMIN
                ) -> tuple[GrpcServer, StreamStore]:
    from estwisted.subscriptions.persistent import PersistentSubscriptions

    store = StreamStore(MemoryLog(), StreamIndex(), clock)
    hub = SubscriptionHub(store)
    persistent = PersistentSubscriptions(store, clock)
    persistent.start()
    server = GrpcServer(
        store, hub, clock,
        lambda: [(uuid.UUID(int=1), 1.0, "Master", True, "127.0.0.1", 2113)],
        anonymous=anonymous,
        persistent=persistent,
        shutdown=lambda: None,
        users=UserManager(store, iterations=1),
    )
    return server, store


def append_request(stream: str, events: list[tuple[bytes, str]],
                   revision: Optional[int] = None) -> list[Any]:
    options = streams_pb2.AppendReq()
    options.options.stream_identifier.stream_name = stream.encode()
    if revision is None:
        options.options.any.SetInParent()
    elif revision == -1:
        options.options.no_stream.SetInParent()
    else:
        options.options.revision = revision
    out = [options]
    for event_id, event_type in events:
        message = streams_pb2.AppendReq()
        proposed = message.proposed_message
        proposed.id.string = str(uuid.UUID(bytes=event_id))
        proposed.metadata["type"] = event_type
        proposed.metadata["content-type"] = "application/json"
        proposed.data = b"{}"
        out.append(message)
    return out


def read_request(stream: Optional[str], count: int = 1000, subscribe: bool = False,
                 backwards: bool = False) -> streams_pb2.ReadReq:
    request = streams_pb2.ReadReq()
    options = request.options
    if stream is None:
        options.all.start.SetInParent()
    else:
        options.stream.stream_identifier.stream_name = stream.encode()
        if backwards:
            options.stream.end.SetInParent()
        else:
            options.stream.start.SetInParent()
    if backwards:
        options.read_direction = streams_pb2.ReadReq.Options.Backwards
    if subscribe:
        options.subscription.SetInParent()
    else:
        options.count = count
    options.no_filter.SetInParent()
    options.uuid_option.string.SetInParent()
    return request


def parse(message_type: Any, data: bytes) -> Any:
    out = message_type()
    out.ParseFromString(data)
    return out


class ProtocolTests(SynchronousTestCase):
    """
    HTTP/2 and gRPC framing at the connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server, self.store = make_server(self.clock)
        self.pair = Pair(self.server, self.clock)

    def test_unknownMethod(self) -> None:
        """
        An unknown method ends at once with C{UNIMPLEMENTED}.
        """
        sid = self.pair.call(STREAMS, "Nope", [shared_pb2.Empty()])
        reply = self.pair.replies[sid]
        self.assertEqual(reply.status, 12)
        self.assertTrue(reply.ended)

    def test_notGrpc(self) -> None:
        """
        A non-gRPC HTTP/2 request is answered 415.
        """
        sid = self.pair.call(GOSSIP, "Read", [], content_type="text/plain")
        self.assertEqual(self.pair.replies[sid].headers[":status"], "415")

    def test_malformedMessage(self) -> None:
        """
        A request that is not a valid message ends with C{INVALID_ARGUMENT};
        the connection goes on serving.
        """
        sid = self.pair.call(STREAMS, "Read", [b"\x00\x00\x00\x00\x03\x0a\xff\xff"])
        self.assertEqual(self.pair.replies[sid].status, 3)
        sid = self.pair.call(GOSSIP, "Read", [shared_pb2.Empty()])
        self.assertEqual(self.pair.replies[sid].status, 0)

    def test_compressedMessage(self) -> None:
        """
        A message flagged compressed ends its call with C{INVALID_ARGUMENT}.
        """
        sid = self.pair.call(GOSSIP, "Read", [b"\x01\x00\x00\x00\x00"])
        self.assertEqual(self.pair.replies[sid].status, 3)

    def test_gzipCall(self) -> None:
        """
        A client sending gzip messages (C{grpc-encoding: gzip}) and
        accepting gzip gets its append done and a large read answered with
        compressed messages (C{grpc-encoding: gzip} in the response
        headers), each decoding to the events.
        """
        from estwisted.grpc.framing import decompress

        gzip = [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity,deflate,gzip")]
        ids = [uuid.uuid4().bytes for _ in range(3)]
        messages = [encode_message(m.SerializeToString(), "gzip")
                    for m in append_request("gz", [(i, "t" * 300) for i in ids])]
        sid = self.pair.call(STREAMS, "Append", messages, metadata=gzip)
        reply = self.pair.replies[sid]
        self.assertEqual(reply.status, 0)
        self.assertEqual(parse(streams_pb2.AppendResp, reply.messages[0]).WhichOneof("result"),
                         "success")
        sid = self.pair.call(STREAMS, "Read", [encode_message(
            read_request("gz").SerializeToString(), "gzip")], metadata=gzip)
        reply = self.pair.replies[sid]
        self.assertEqual(reply.headers["grpc-encoding"], "gzip")
        self.assertEqual(reply.headers["grpc-accept-encoding"], "identity,deflate,gzip")
        raw = reply.raw_messages
        self.assertTrue(any(flag == 1 for flag, _ in raw))
        events = [parse(streams_pb2.ReadResp, decompress(body, "gzip") if flag else body)
                  for flag, body in raw]
        read = [e.event.event.id.string for e in events if e.WhichOneof("content") == "event"]
        self.assertEqual(read, [str(uuid.UUID(bytes=i)) for i in ids])

    def test_unknownEncoding(self) -> None:
        """
        A message encoding we do not take is C{UNIMPLEMENTED}, with the
        ones we take.
        """
        sid = self.pair.call(GOSSIP, "Read", [shared_pb2.Empty()],
                             metadata=[("grpc-encoding", "snappy")])
        self.assertEqual(self.pair.replies[sid].status, 12)
        self.assertEqual(self.pair.replies[sid].meta("grpc-accept-encoding"),
                         "identity,deflate,gzip")

    def test_deadline(self) -> None:
        """
        A call still open when its C{grpc-timeout} passes ends with
        C{DEADLINE_EXCEEDED}.
        """
        sid = self.pair.call(STREAMS, "Read", [read_request(None, subscribe=True)],
                             metadata=[("grpc-timeout", "2S")])
        self.assertIsNone(self.pair.replies[sid].status)
        self.clock.advance(2.5)
        self.pair.pump()
        self.assertEqual(self.pair.replies[sid].status, 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badCredentials(self) -> None:
        """
        Wrong Basic credentials end the call with C{UNAUTHENTICATED}.
        """
        sid = self.pair.call(GOSSIP, "Read", [shared_pb2.Empty()],
                             metadata=[("authorization", "Basic YWRtaW46bm9wZQ==")])
        self.assertEqual(self.pair.replies[sid].status, 16)

    def test_requiresLeader(self) -> None:
        """
        On a node that does not lead, C{requires-leader: true} fails a read
        with C{not-leader} naming the leader; gossip is served anyway.
        """
        from estwisted.core.errors import NotLeader

        self.server.leader_refusal = lambda: NotLeader(http=("127.0.0.9", 2113))
        metadata = [("requires-leader", "true")]
        sid = self.pair.call(STREAMS, "Read", [read_request("s")], metadata=metadata)
        reply = self.pair.replies[sid]
        self.assertEqual(
            (reply.status, reply.meta("exception"), reply.meta("leader-endpoint-host"),
             reply.meta("leader-endpoint-port")),
            (5, "not-leader", "127.0.0.9", "2113"),
        )
        sid = self.pair.call(GOSSIP, "Read", [shared_pb2.Empty()], metadata=metadata)
        self.assertEqual(self.pair.replies[sid].status, 0)

    @given(st.binary(max_size=200))
    def test_fuzzFrames(self, junk: bytes) -> None:
        """
        Arbitrary bytes after the client preface never raise out of the
        protocol, never schedule anything and never write to the store: the
        connection ends (GOAWAY then close) or waits for more.
        """
        clock = Clock()
        server, store = make_server(clock)
        transport = StringTransport()
        proto = GrpcConnection(server, clock)
        proto.makeConnection(transport)
        proto.dataReceived(PREFACE + junk)
        clock.advance(0)
        self.assertEqual(store.last_commit_position, 0)
        self.assertEqual(clock.getDelayedCalls(), [])


    @given(
        st.sampled_from([(STREAMS, "Read"), (STREAMS, "Append"), (STREAMS, "BatchAppend"),
                         (STREAMS, "Delete"), (STREAMS, "Tombstone"), (GOSSIP, "Read"),
                         (SERVER_FEATURES, "GetSupportedMethods"), (USERS, "Create"),
                         (USERS, "Details"), (OPERATIONS, "StartScavenge"),
                         (MONITORING, "Stats"), (PERSISTENT_SERVICE, "Create"),
                         (PERSISTENT_SERVICE, "Read"), (PERSISTENT_SERVICE, "List")]),
        st.lists(st.binary(max_size=60), max_size=3),
    )
    def test_fuzzMessages(self, method: tuple[str, str], bodies: list[bytes]) -> None:
        """
        Arbitrary request messages to every method never make a handler
        raise (trial fails a test on a logged error) and leave the
        connection serving: each call ends with a status or stays a valid
        open call.
        """
        clock = Clock()
        server, _ = make_server(clock)
        pair = Pair(server, clock)
        sid = pair.call(method[0], method[1], [encode_message(b) for b in bodies])
        reply = pair.replies[sid]
        if reply.status is not None:
            self.assertIn(reply.status, range(17))
        sid = pair.call(GOSSIP, "Read", [shared_pb2.Empty()])
        self.assertEqual(pair.replies[sid].status, 0)


class ServiceTests(SynchronousTestCase):
    """
    The services over a memory store.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server, self.store = make_server(self.clock)
        self.pair = Pair(self.server, self.clock)

    def append(self, stream: str, count: int, revision: Optional[int] = None) -> Any:
        events = [(uuid.uuid4().bytes, f"T{i}") for i in range(count)]
        sid = self.pair.call(STREAMS, "Append", append_request(stream, events, revision))
        reply = self.pair.replies[sid]
        self.assertEqual(reply.status, 0, reply.trailers)
        return parse(streams_pb2.AppendResp, reply.messages[0])

    def read(self, request: Any) -> list[Any]:
        sid = self.pair.call(STREAMS, "Read", [request])
        reply = self.pair.replies[sid]
        self.assertEqual(reply.status, 0, reply.trailers)
        return [parse(streams_pb2.ReadResp, m) for m in reply.messages]

    def test_appendThenRead(self) -> None:
        """
        Appended events read back with their revisions, types and positions.
        """
        result = self.append("s", 3, revision=-1)
        self.assertEqual(result.success.current_revision, 2)
        responses = self.read(read_request("s"))
        self.assertEqual([r.event.event.stream_revision for r in responses], [0, 1, 2])
        self.assertEqual([r.event.event.metadata["type"] for r in responses], ["T0", "T1", "T2"])
        self.assertEqual(responses[0].event.event.commit_position,
                         result.success.position.commit_position)
        backwards = self.read(read_request("s", count=2, backwards=True))
        self.assertEqual([r.event.event.stream_revision for r in backwards], [2, 1])

    def test_wrongExpectedVersion(self) -> None:
        """
        A wrong expected revision is an C{AppendResp.wrong_expected_version}
        naming the current revision.
        """
        self.append("s", 2)
        result = self.append("s", 1, revision=5)
        self.assertEqual(result.WhichOneof("result"), "wrong_expected_version")
        self.assertEqual(result.wrong_expected_version.current_revision, 1)
        self.assertEqual(result.wrong_expected_version.expected_revision, 5)

    def test_batchAppendOnFollower(self) -> None:
        """
        A BatchAppend on a node that does not lead ends the whole call with
        C{not-leader} and the leader's endpoint (the client reconnects),
        not with a per-batch error.
        """
        from estwisted.core.errors import NotLeader

        self.store.writes_refused = NotLeader(http=("127.0.0.9", 2113))
        request = streams_pb2.BatchAppendReq(is_final=True)
        request.correlation_id.string = str(uuid.uuid4())
        request.options.stream_identifier.stream_name = b"s"
        request.options.any.SetInParent()
        proposed = request.proposed_messages.add()
        proposed.id.string = str(uuid.uuid4())
        proposed.metadata["type"] = "T"
        proposed.metadata["content-type"] = "application/json"
        sid = self.pair.call(STREAMS, "BatchAppend", [request])
        reply = self.pair.replies[sid]
        self.assertEqual(
            (reply.status, reply.meta("exception"), reply.meta("leader-endpoint-port")),
            (5, "not-leader", "2113"),
        )
        self.assertEqual(reply.messages, [])

    def test_readNoStream(self) -> None:
        """
        Reading a stream that does not exist answers C{stream_not_found}.
        """
        responses = self.read(read_request("nothing"))
        self.assertEqual([r.WhichOneof("content") for r in responses], ["stream_not_found"])

    def test_tombstone(self) -> None:
        """
        A tombstoned stream reads as C{stream-deleted}.
        """
        self.append("s", 1)
        request = streams_pb2.TombstoneReq()
        request.options.stream_identifier.stream_name = b"s"
        request.options.any.SetInParent()
        sid = self.pair.call(STREAMS, "Tombstone", [request])
        self.assertEqual(self.pair.replies[sid].status, 0)
        sid = self.pair.call(STREAMS, "Read", [read_request("s")])
        reply = self.pair.replies[sid]
        self.assertEqual((reply.status, reply.meta("exception")), (9, "stream-deleted"))

    def test_largeReadFlowControl(self) -> None:
        """
        A read larger than the client's flow-control window arrives whole,
        paused and resumed by window updates.
        """
        for _ in range(6):
            self.append("big", 500)
        responses = self.read(read_request("big", count=10_000))
        self.assertEqual(len(responses), 3000)
        self.assertEqual(responses[-1].event.event.stream_revision, 2999)

    def test_subscriptionCatchUpThenLive(self) -> None:
        """
        A subscription sends its confirmation, the history, then live
        events.
        """
        self.append("s", 2)
        sid = self.pair.call(STREAMS, "Read", [read_request("s", subscribe=True)])
        self.append("s", 1)
        reply = self.pair.replies[sid]
        kinds = [parse(streams_pb2.ReadResp, m).WhichOneof("content") for m in reply.messages]
        self.assertEqual(kinds, ["confirmation", "event", "event", "event"])
        self.assertIsNone(reply.status)
        self.pair.client.reset_stream(sid)
        self.pair.pump()
        self.assertEqual(self.server.hub.count, 0)

    def test_gossip(self) -> None:
        """
        C{Gossip.Read} maps v5 states to the 20+ ones.
        """
        sid = self.pair.call(GOSSIP, "Read", [shared_pb2.Empty()])
        info = parse(gossip_pb2.ClusterInfo, self.pair.replies[sid].messages[0])
        self.assertEqual(info.members[0].state, gossip_pb2.MemberInfo.Leader)
        self.assertEqual(info.members[0].http_end_point.port, 2113)

    def test_supportedMethods(self) -> None:
        """
        C{GetSupportedMethods} of a full node lists exactly the methods
        implemented (an explicit list: adding or dropping one must show
        here), each of which answers something other than
        C{UNIMPLEMENTED}; the features of C{Streams.Read} and of the
        persistent subscription methods are listed.
        """
        store = StreamStore(MemoryLog(), StreamIndex(), self.clock)
        from estwisted.subscriptions.persistent import PersistentSubscriptions

        persistent = PersistentSubscriptions(store, self.clock)
        persistent.start()
        server = GrpcServer(
            store, SubscriptionHub(store), self.clock, lambda: [], anonymous=None,
            persistent=persistent, shutdown=lambda: None,
            users=UserManager(store, iterations=1),
            node_control=(lambda: None, lambda priority: None),
        )
        pair = Pair(server, self.clock)
        sid = pair.call(SERVER_FEATURES, "GetSupportedMethods", [shared_pb2.Empty()])
        methods = parse(serverfeatures_pb2.SupportedMethods, pair.replies[sid].messages[0])
        listed = {(m.service_name, m.method_name): list(m.features) for m in methods.methods}
        prefix = "event_store.client."
        expected = {
            "streams.streams": ["read", "append", "batchappend", "delete", "tombstone"],
            "gossip.gossip": ["read"],
            "server_features.serverfeatures": ["getsupportedmethods"],
            "persistent_subscriptions.persistentsubscriptions": [
                "create", "update", "delete", "read", "getinfo", "list", "replayparked",
                "restartsubsystem"],
            "users.users": ["create", "update", "delete", "enable", "disable", "details",
                            "changepassword", "resetpassword"],
            "operations.operations": ["startscavenge", "stopscavenge", "shutdown",
                                      "mergeindexes", "resignnode", "setnodepriority",
                                      "restartpersistentsubscriptions"],
            "monitoring.monitoring": ["stats"],
        }
        self.assertEqual(
            set(listed),
            {(prefix + service, m) for service, names in expected.items() for m in names},
        )
        self.assertEqual(listed[(STREAMS.lower(), "read")],
                         ["position", "events", "all", "stream", "filtered"])
        self.assertEqual(listed[(PERSISTENT_SERVICE.lower(), "read")], ["stream", "all"])
        for service, method in server.methods:
            sid = pair.call(service, method, [encode_message(b"")])
            self.assertNotEqual(pair.replies[sid].status, 12, (service, method))


class AdminServiceTests(SynchronousTestCase):
    """
    Users, Operations, Monitoring and PersistentSubscriptions over a memory
    store.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server, self.store = make_server(self.clock)
        self.pair = Pair(self.server, self.clock)

    def test_users(self) -> None:
        """
        A user created over gRPC is listed by C{Details}, can be disabled
        and deleted; details of a missing user are C{user-not-found}.
        """
        create = users_pb2.CreateReq()
        create.options.login_name = "ann"
        create.options.password = "pw"
        create.options.full_name = "Ann"
        create.options.groups.append("$ops")
        sid = self.pair.call(USERS, "Create", [create])
        self.assertEqual(self.pair.replies[sid].status, 0, self.pair.replies[sid].trailers)
        disable = users_pb2.DisableReq()
        disable.options.login_name = "ann"
        sid = self.pair.call(USERS, "Disable", [disable])
        self.assertEqual(self.pair.replies[sid].status, 0)
        details = users_pb2.DetailsReq()
        details.options.login_name = "ann"
        sid = self.pair.call(USERS, "Details", [details])
        got = parse(users_pb2.DetailsResp, self.pair.replies[sid].messages[0]).user_details
        self.assertEqual((got.login_name, got.full_name, list(got.groups), got.disabled),
                         ("ann", "Ann", ["$ops"], True))
        delete = users_pb2.DeleteReq()
        delete.options.login_name = "ann"
        sid = self.pair.call(USERS, "Delete", [delete])
        self.assertEqual(self.pair.replies[sid].status, 0)
        sid = self.pair.call(USERS, "Details", [details])
        reply = self.pair.replies[sid]
        self.assertEqual((reply.status, reply.meta("exception")), (5, "user-not-found"))

    def test_operationsNeedOps(self) -> None:
        """
        An anonymous scavenge is refused with C{access-denied}; an admin's
        starts.
        """
        server, _ = make_server(self.clock, anonymous=None)
        pair = Pair(server, self.clock)
        sid = pair.call(OPERATIONS, "StartScavenge", [operations_pb2.StartScavengeReq()])
        self.assertEqual(pair.replies[sid].status, 7)
        sid = self.pair.call(OPERATIONS, "StartScavenge", [operations_pb2.StartScavengeReq()])
        response = parse(operations_pb2.ScavengeResp, self.pair.replies[sid].messages[0])
        self.assertEqual(response.scavenge_result, operations_pb2.ScavengeResp.Started)

    def test_stats(self) -> None:
        """
        C{Stats} sends a map now and each refresh period until cancelled,
        and leaves nothing scheduled.
        """
        sid = self.pair.call(MONITORING, "Stats",
                             [monitoring_pb2.StatsReq(refresh_time_period_in_ms=200)])
        self.clock.advance(0.2)
        self.pair.pump()
        reply = self.pair.replies[sid]
        self.assertEqual(len(reply.messages), 2)
        stats = parse(monitoring_pb2.StatsResp, reply.messages[0]).stats
        self.assertIn("es-writer-lastCommitPosition", stats)
        self.pair.client.reset_stream(sid)
        self.pair.pump()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def _create_group(self, stream: str, group: str) -> None:
        create = persistent_pb2.CreateReq()
        create.options.group_name = group
        create.options.stream.stream_identifier.stream_name = stream.encode()
        create.options.stream.start.SetInParent()
        create.options.settings.max_retry_count = 3
        create.options.settings.message_timeout_ms = 10_000
        create.options.settings.consumer_strategy = "RoundRobin"
        sid = self.pair.call(PERSISTENT_SERVICE, "Create", [create])
        self.assertEqual(self.pair.replies[sid].status, 0)

    def _read_group(self, stream: str, group: str) -> int:
        read = persistent_pb2.ReadReq()
        read.options.stream_identifier.stream_name = stream.encode()
        read.options.group_name = group
        read.options.buffer_size = 10
        read.options.uuid_option.string.SetInParent()
        return self.pair.call(PERSISTENT_SERVICE, "Read", [read], end=False)

    def test_restartSubsystem(self) -> None:
        """
        C{RestartSubsystem} and C{Operations.RestartPersistentSubscriptions}
        drop the consumers, keep the groups and their progress, and deliver
        live events again afterwards; anonymous callers are refused.
        """
        self._create_group("orders", "g")
        for method, service in (("RestartSubsystem", PERSISTENT_SERVICE),
                                ("RestartPersistentSubscriptions", OPERATIONS)):
            sid = self._read_group("orders", "g")
            self.assertIsNone(self.pair.replies[sid].status)
            restart = self.pair.call(service, method, [shared_pb2.Empty()])
            self.assertEqual(self.pair.replies[restart].status, 0, method)
            self.assertTrue(self.pair.replies[sid].ended)
            self.assertEqual(self.pair.replies[sid].status, 1)
        sid = self._read_group("orders", "g")
        self.pair.call(STREAMS, "Append", append_request("orders", [(uuid.uuid4().bytes, "t")]))
        self.pair.pump()
        events = [parse(persistent_pb2.ReadResp, m) for m in self.pair.replies[sid].messages]
        self.assertEqual([e.WhichOneof("content") for e in events],
                         ["subscription_confirmation", "event"])
        server, _ = make_server(self.clock, anonymous=None)
        pair = Pair(server, self.clock)
        sid = pair.call(PERSISTENT_SERVICE, "RestartSubsystem", [shared_pb2.Empty()])
        self.assertEqual(pair.replies[sid].status, 7)

    def test_requestMetrics(self) -> None:
        """
        With the node's metrics as its meter, every call is counted in
        C{estore_grpc_requests_total{method}} (an unknown method as
        C{other}); the first of each method and then one in sixteen are
        timed, from the headers to the trailers, in
        C{estore_grpc_request_duration_seconds{method}}.
        """
        from estwisted.web.metrics import NodeMetrics
        from estwisted.web.test.test_metrics import scrape

        metrics = NodeMetrics(process=False)
        self.server.request_meter = metrics.grpc_requests
        for _ in range(17):
            sid = self.pair.call(STREAMS, "Append",
                                 append_request("m", [(uuid.uuid4().bytes, "t")]))
            self.pair.pump()
            self.assertEqual(self.pair.replies[sid].status, 0)
        sid = self.pair.call(SERVER_FEATURES, "GetSupportedMethods", [shared_pb2.Empty()])
        self.assertEqual(self.pair.replies[sid].status, 0)
        sid = self.pair.call("no.such.Service", "Nothing", [shared_pb2.Empty()])
        self.assertEqual(self.pair.replies[sid].status, 12)
        got = scrape(metrics)
        total = "estore_grpc_requests_total"
        self.assertEqual(got[(total, (("method", "Streams/Append"),))], 17)
        self.assertEqual(got[(total, (("method", "ServerFeatures/GetSupportedMethods"),))], 1)
        self.assertEqual(got[(total, (("method", "other"),))], 1)
        count = "estore_grpc_request_duration_seconds_count"
        self.assertEqual(got[(count, (("method", "Streams/Append"),))], 2)
        self.assertEqual(got[(count, (("method", "other"),))], 1)
        self.assertGreater(
            got[("estore_grpc_request_duration_seconds_sum", (("method", "Streams/Append"),))], 0
        )

    def test_resignAndNodePriority(self) -> None:
        """
        C{ResignNode} answers, then asks the node to step down;
        C{SetNodePriority} passes the priority on; both for C{$ops} or
        C{$admins} only, and both are in the supported methods.
        """
        calls: list[object] = []
        store = StreamStore(MemoryLog(), StreamIndex(), self.clock)
        server = GrpcServer(
            store, SubscriptionHub(store), self.clock, lambda: [], anonymous=ADMIN,
            users=UserManager(store, iterations=1),
            node_control=(lambda: calls.append("resign"), calls.append),
        )
        pair = Pair(server, self.clock)
        sid = pair.call(OPERATIONS, "ResignNode", [shared_pb2.Empty()])
        self.assertEqual(pair.replies[sid].status, 0)
        self.clock.advance(0)
        self.assertEqual(calls, ["resign"])
        sid = pair.call(OPERATIONS, "SetNodePriority",
                        [operations_pb2.SetNodePriorityReq(priority=5)])
        self.assertEqual(pair.replies[sid].status, 0)
        self.assertEqual(calls, ["resign", 5])
        names = {(m.service_name, m.method_name) for m in server.supported_methods().methods}
        self.assertIn((OPERATIONS.lower(), "resignnode"), names)
        self.assertIn((OPERATIONS.lower(), "setnodepriority"), names)
        anonymous = GrpcServer(
            store, SubscriptionHub(store), self.clock, lambda: [], anonymous=None,
            users=UserManager(store, iterations=1),
            node_control=(lambda: calls.append("resign"), calls.append),
        )
        pair = Pair(anonymous, self.clock)
        for method, request in (("ResignNode", shared_pb2.Empty()),
                                ("SetNodePriority", operations_pb2.SetNodePriorityReq())):
            sid = pair.call(OPERATIONS, method, [request])
            self.assertEqual(pair.replies[sid].status, 7, method)
        self.clock.advance(0)
        self.assertEqual(calls, ["resign", 5])

    def test_persistentAll(self) -> None:
        """
        A group on C{$all} with a filter: created, read with the filter
        applied and C{$all::<group>} confirmed, acked, shown by C{GetInfo}
        with C{"C:/P:"} positions; a bad regular expression is
        C{INVALID_ARGUMENT}; the supported methods advertise C{"all"}.
        """
        bad = persistent_pb2.CreateReq()
        bad.options.group_name = "bad"
        bad.options.all.start.SetInParent()
        bad.options.all.filter.stream_identifier.regex = "("
        sid = self.pair.call(PERSISTENT_SERVICE, "Create", [bad])
        self.assertEqual(self.pair.replies[sid].status, 3)
        for stream in ("orders-1", "other", "orders-2"):
            self.pair.call(STREAMS, "Append", append_request(stream, [(uuid.uuid4().bytes, "t")]))
        self.pair.pump()
        create = persistent_pb2.CreateReq()
        create.options.group_name = "g"
        create.options.all.start.SetInParent()
        create.options.all.filter.stream_identifier.prefix.append("orders-")
        create.options.settings.message_timeout_ms = 10_000
        create.options.settings.consumer_strategy = "RoundRobin"
        sid = self.pair.call(PERSISTENT_SERVICE, "Create", [create])
        self.assertEqual(self.pair.replies[sid].status, 0)
        read = persistent_pb2.ReadReq()
        read.options.all.SetInParent()
        read.options.group_name = "g"
        read.options.buffer_size = 10
        read.options.uuid_option.string.SetInParent()
        sid = self.pair.call(PERSISTENT_SERVICE, "Read", [read], end=False)
        self.pair.pump()
        replies = [parse(persistent_pb2.ReadResp, m) for m in self.pair.replies[sid].messages]
        self.assertEqual(replies[0].subscription_confirmation.subscription_id, "$all::g")
        streams = [r.event.event.stream_identifier.stream_name for r in replies[1:]]
        self.assertEqual(streams, [b"orders-1", b"orders-2"])
        self.assertTrue(all(r.event.commit_position > 0 for r in replies[2:]))
        info_request = persistent_pb2.GetInfoReq()
        info_request.options.all.SetInParent()
        info_request.options.group_name = "g"
        sid = self.pair.call(PERSISTENT_SERVICE, "GetInfo", [info_request])
        info = parse(persistent_pb2.GetInfoResp, self.pair.replies[sid].messages[0])
        self.assertEqual(info.subscription_info.event_source, "$all")
        self.assertEqual(info.subscription_info.start_from, "C:0/P:0")
        self.assertRegex(info.subscription_info.last_known_event_position, r"^C:\d+/P:\d+$")
        features = {
            (m.service_name, m.method_name): list(m.features)
            for m in self.server.supported_methods().methods
        }
        self.assertEqual(features[(PERSISTENT_SERVICE.lower(), "create")], ["stream", "all"])


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class SnifferTests(SynchronousTestCase):
    """
    L{GrpcSniffingFactory} hands connections to gRPC or the HTTP/1.1 site.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        server, _ = make_server(self.clock)
        self.http = Factory.forProtocol(_Recorder)
        self.factory = GrpcSniffingFactory(server, self.http, self.clock)

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_http1(self) -> None:
        """
        An HTTP/1.1 request goes to the site with every byte.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"GE")
        protocol.dataReceived(b"T / HTTP/1.1\r\n\r\n")
        self.assertIsInstance(protocol._inner, _Recorder)
        self.assertEqual(protocol._inner.received, b"GET / HTTP/1.1\r\n\r\n")

    def test_http2(self) -> None:
        """
        The preface, even byte by byte, selects the gRPC connection.
        """
        protocol, transport = self.connect()
        for i in range(len(PREFACE)):
            protocol.dataReceived(PREFACE[i : i + 1])
        self.assertIsInstance(protocol._inner, GrpcConnection)
        self.assertTrue(transport.value())  # our SETTINGS

    def test_silentTimesOut(self) -> None:
        """
        A connection that sends nothing is closed after the sniff timeout.
        """
        _, transport = self.connect()
        self.clock.advance(61)
        self.assertTrue(transport.disconnecting)

    def test_alpn(self) -> None:
        """
        ALPN prefers HTTP/1.1 (browsers keep it) and offers h2.
        """
        self.assertEqual(self.factory.acceptableProtocols(), [b"http/1.1", b"h2"])
