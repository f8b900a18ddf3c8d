# -*- test-case-name: tests.test_grpc -*-
"""
System tests of the EventStoreDB 20+ gRPC API (estwisted.grpc): a real node
process (C{twistd -n estore --insecure}, started by L{tests.harness}) on
127.0.0.1 driven by the real Python client C{kurrentdbclient} (pinned in
setup.py's test extra) and, for bad input, by raw sockets and grpcio's
generic calls.  The same node's v5 HTTP API (HTTP/1.1 on the same port)
reads what gRPC wrote and the other way round.

The node runs C{Insecure}: EventStoreDB 20+ clients send no credentials
without TLS, and an insecure node lets them act (docs/grpc.md).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import NodeProcess, start_node

try:
    import grpc
    from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
    from kurrentdbclient.exceptions import (
        NotFoundError,
        StreamIsDeletedError,
        WrongCurrentVersionError,
    )
except ImportError:  # pragma: no cover
    KurrentDBClient = None

ADMIN = "Basic " + base64.b64encode(b"admin:changeit").decode()


def _http(node: NodeProcess, method: str, path: str, body: Optional[bytes] = None,
          headers: Optional[dict[str, str]] = None) -> tuple[int, bytes]:
    request = urllib.request.Request(node.http_url + path, data=body, method=method)
    request.add_header("Authorization", ADMIN)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _safe_get(client: Any, stream: str) -> list[Any]:
    try:
        return list(client.get_stream(stream, resolve_links=False))
    except NotFoundError:
        return []


class GrpcClientTests(SynchronousTestCase):
    """
    kurrentdbclient against one real node.
    """

    def setUp(self) -> None:
        if KurrentDBClient is None:
            raise SkipTest("kurrentdbclient is not installed (pip install -e '.[test]')")
        self.node = start_node(self, mem_db=True, extra_args=["--insecure"])
        self.client = KurrentDBClient(
            f"kurrentdb://127.0.0.1:{self.node.ext_http_port}?Tls=false"
        )
        self.addCleanup(self.client.close)

    def tearDown(self) -> None:
        self.assertNotIn("Traceback", self.node.log())

    def stream(self) -> str:
        return "grpc-" + uuid.uuid4().hex

    def test_appendWithExpectedRevisions(self) -> None:
        """
        C{no_stream}, an exact revision, C{any} and C{stream_exists} are
        checked as the v5 API checks them; a wrong one raises the client's
        C{WrongCurrentVersionError}; a repeated event id is idempotent.
        """
        stream = self.stream()
        c = self.client
        first = NewEvent(type="Created", data=b'{"n":1}')
        position = c.append_to_stream(stream, events=[first], current_version=StreamState.NO_STREAM)
        self.assertGreater(position, 0)
        self.assertRaises(
            WrongCurrentVersionError,
            c.append_to_stream, stream, events=[NewEvent(type="X", data=b"{}")],
            current_version=StreamState.NO_STREAM,
        )
        c.append_to_stream(stream, events=NewEvent(type="Two", data=b"{}"), current_version=0)
        self.assertRaises(
            WrongCurrentVersionError,
            c.append_to_stream, stream, events=NewEvent(type="X", data=b"{}"), current_version=0,
        )
        c.append_to_stream(stream, events=[NewEvent(type="Three", data=b"{}")],
                           current_version=StreamState.ANY)
        c.append_to_stream(stream, events=[NewEvent(type="Four", data=b"{}")],
                           current_version=StreamState.EXISTS)
        self.assertRaises(
            WrongCurrentVersionError,
            c.append_to_stream, self.stream(), events=[NewEvent(type="X", data=b"{}")],
            current_version=StreamState.EXISTS,
        )
        # the same event again: no second copy
        c.append_to_stream(stream, events=[first], current_version=StreamState.ANY)
        events = c.get_stream(stream)
        self.assertEqual([e.type for e in events], ["Created", "Two", "Three", "Four"])
        self.assertEqual([e.stream_position for e in events], [0, 1, 2, 3])
        self.assertEqual(events[0].id, first.id)
        self.assertEqual(events[0].data, b'{"n":1}')
        self.assertEqual(events[0].commit_position, position)
        self.assertEqual(c.get_current_version(stream), 3)

    def test_readStreamAndAll(self) -> None:
        """
        Stream reads forwards and backwards from a revision with a limit,
        and C{$all} reads in both directions, see the appended events at
        their positions.
        """
        stream = self.stream()
        c = self.client
        c.append_to_stream(
            stream,
            events=[NewEvent(type=f"E{i}", data=b"{}") for i in range(10)],
            current_version=StreamState.NO_STREAM,
        )
        forward = c.get_stream(stream, stream_position=3, limit=4)
        self.assertEqual([e.stream_position for e in forward], [3, 4, 5, 6])
        backward = c.get_stream(stream, backwards=True, limit=3)
        self.assertEqual([e.stream_position for e in backward], [9, 8, 7])
        ours = [e for e in c.read_all() if e.stream_name == stream]
        self.assertEqual([e.type for e in ours], [f"E{i}" for i in range(10)])
        positions = [e.commit_position for e in ours]
        self.assertEqual(positions, sorted(positions))
        last = list(c.read_all(backwards=True, limit=1))
        self.assertEqual(last[0].id, ours[-1].id)
        self.assertEqual(c.get_commit_position(), ours[-1].commit_position)
        after = list(c.read_all(commit_position=ours[4].commit_position, limit=2))
        self.assertEqual([e.id for e in after], [ours[4].id, ours[5].id])
        self.assertRaises(NotFoundError, c.get_stream, self.stream())

    def test_resolveLinks(self) -> None:
        """
        A link event (C{$>}, C{"n@stream"}) read with C{resolve_links} is
        its target, with the link beside it; without, the link itself.
        """
        c = self.client
        target, links = self.stream(), self.stream()
        c.append_to_stream(target, events=[NewEvent(type="Real", data=b'{"r":1}')],
                           current_version=StreamState.NO_STREAM)
        c.append_to_stream(links, events=[NewEvent(type="$>", data=f"0@{target}".encode(),
                                                   content_type="application/octet-stream")],
                           current_version=StreamState.NO_STREAM)
        resolved = c.get_stream(links, resolve_links=True)
        self.assertEqual([(e.type, e.stream_name, e.data) for e in resolved],
                         [("Real", target, b'{"r":1}')])
        self.assertEqual(resolved[0].link.stream_name, links)
        plain = c.get_stream(links)
        self.assertEqual([e.type for e in plain], ["$>"])

    def test_catchUpSubscriptionToAllWithFilter(self) -> None:
        """
        A filtered C{$all} subscription gets the history that matches, then
        live events, and checkpoints.
        """
        c = self.client
        prefix = "flt" + uuid.uuid4().hex[:8]
        wanted, other = f"{prefix}-a", self.stream()
        c.append_to_stream(wanted, events=[NewEvent(type="Old", data=b"{}")],
                           current_version=StreamState.ANY)
        c.append_to_stream(other, events=[NewEvent(type="Old", data=b"{}")],
                           current_version=StreamState.ANY)
        subscription = c.subscribe_to_all(
            filter_include=[prefix + ".*"], filter_by_stream_name=True,
            include_checkpoints=True, timeout=30,
        )
        self.addCleanup(subscription.stop)
        seen: list[Any] = []
        for item in subscription:
            seen.append(item)
            if getattr(item, "type", None) == "Old":
                break
        c.append_to_stream(other, events=[NewEvent(type="New", data=b"{}")],
                           current_version=StreamState.ANY)
        c.append_to_stream(wanted, events=[NewEvent(type="New", data=b"{}")],
                           current_version=StreamState.ANY)
        for item in subscription:
            seen.append(item)
            if getattr(item, "type", None) == "New":
                break
        events = [x for x in seen if type(x).__name__ == "RecordedEvent"]
        self.assertEqual([(e.stream_name, e.type) for e in events],
                         [(wanted, "Old"), (wanted, "New")])
        checkpoints = [x for x in seen if type(x).__name__ == "Checkpoint"]
        self.assertTrue(checkpoints, seen)

    def test_catchUpSubscriptionToStream(self) -> None:
        """
        A stream subscription from the start gets the history then live
        events; one from a revision starts after it.
        """
        c = self.client
        stream = self.stream()
        c.append_to_stream(stream, events=[NewEvent(type=f"H{i}", data=b"{}") for i in range(3)],
                           current_version=StreamState.NO_STREAM)
        subscription = c.subscribe_to_stream(stream, timeout=30)
        self.addCleanup(subscription.stop)
        later = c.subscribe_to_stream(stream, stream_position=1, timeout=30)
        self.addCleanup(later.stop)
        got = [next(subscription).type for _ in range(3)]
        c.append_to_stream(stream, events=[NewEvent(type="Live", data=b"{}")],
                           current_version=2)
        got.append(next(subscription).type)
        self.assertEqual(got, ["H0", "H1", "H2", "Live"])
        self.assertEqual([next(later).type for _ in range(2)], ["H2", "Live"])

    def test_deleteAndTombstone(self) -> None:
        """
        A deleted stream reads as not found and can be written again; a
        tombstoned one raises C{StreamIsDeletedError} for reads and writes.
        """
        c = self.client
        soft, hard = self.stream(), self.stream()
        for stream in (soft, hard):
            c.append_to_stream(stream, events=[NewEvent(type="A", data=b"{}")],
                               current_version=StreamState.NO_STREAM)
        self.assertRaises(WrongCurrentVersionError, c.delete_stream, soft, current_version=5)
        c.delete_stream(soft, current_version=0)
        self.assertRaises(NotFoundError, c.get_stream, soft)
        c.tombstone_stream(hard, current_version=StreamState.ANY)
        self.assertRaises(StreamIsDeletedError, c.get_stream, hard)
        self.assertRaises(
            StreamIsDeletedError,
            c.append_to_stream, hard, events=[NewEvent(type="B", data=b"{}")],
            current_version=StreamState.ANY,
        )
        c.append_to_stream(soft, events=[NewEvent(type="Again", data=b"{}")],
                           current_version=StreamState.ANY)
        self.assertEqual([e.type for e in c.get_stream(soft)], ["Again"])

    def test_persistentSubscriptionAckAndNack(self) -> None:
        """
        A persistent subscription group created over gRPC delivers the
        stream's events; an acked event is not delivered again, a nacked
        (retry) one comes back with a retry count, a parked one goes to the
        parked stream; info, list and delete see the same group.
        """
        c = self.client
        stream, group = self.stream(), "g-" + uuid.uuid4().hex[:6]
        c.append_to_stream(stream, events=[NewEvent(type=f"P{i}", data=b"{}") for i in range(3)],
                           current_version=StreamState.NO_STREAM)
        c.create_subscription_to_stream(group, stream, max_retry_count=5, message_timeout=30)
        subscription = c.read_subscription_to_stream(group, stream, timeout=30)
        self.addCleanup(subscription.stop)
        first = next(subscription)
        self.assertEqual((first.type, first.retry_count), ("P0", 0))
        subscription.ack(first)
        second = next(subscription)
        self.assertEqual(second.type, "P1")
        subscription.nack(second, action="retry")
        third = next(subscription)
        self.assertEqual(third.type, "P2")
        subscription.nack(third, action="park")
        again = next(subscription)
        self.assertEqual((again.type, again.retry_count), ("P1", 1))
        subscription.ack(again)
        parked = _wait(lambda: [
            e for e in _safe_get(c, f"$persistentsubscription-{stream}::{group}-parked")
        ])
        self.assertEqual(len(parked), 1)
        info = c.get_subscription_info(group, stream)
        self.assertEqual((info.group_name, info.event_source), (group, stream))
        self.assertIn(group, [i.group_name for i in c.list_subscriptions()])
        subscription.stop()
        c.delete_subscription(group, stream)
        self.assertRaises(NotFoundError, c.get_subscription_info, group, stream)

    def test_persistentSubscriptionToAllWithFilter(self) -> None:
        """
        A group on C{$all} with a stream-name filter (EventStoreDB 21.10+)
        delivers the matching events only, in C{$all} order, with their
        commit positions; an ack is not delivered again, a nack retry comes
        back with a retry count, a nack park goes to
        C{$persistentsubscription-$all::<group>-parked} and comes back on
        C{ReplayParked}; info and list show the group with C{"C:/P:"}
        positions; delete removes it.
        """
        c = self.client
        prefix = "orders-" + uuid.uuid4().hex[:6]
        group = "g-" + uuid.uuid4().hex[:6]
        for name, kind in ((f"{prefix}-1", "A"), (self.stream(), "X"), (f"{prefix}-2", "B")):
            c.append_to_stream(name, events=[NewEvent(type=kind, data=b"{}")],
                               current_version=StreamState.ANY)
        c.create_subscription_to_all(group, filter_include=[f"{prefix}-.*"],
                                     filter_by_stream_name=True, max_retry_count=5,
                                     message_timeout=30)
        subscription = c.read_subscription_to_all(group, timeout=30)
        self.addCleanup(subscription.stop)
        first = next(subscription)
        self.assertEqual((first.type, first.stream_name, first.retry_count),
                         ("A", f"{prefix}-1", 0))
        subscription.ack(first)
        second = next(subscription)
        self.assertEqual(second.type, "B")
        self.assertGreater(second.commit_position, first.commit_position)
        subscription.nack(second, action="retry")
        again = next(subscription)
        self.assertEqual((again.type, again.retry_count), ("B", 1))
        subscription.nack(again, action="park")
        c.append_to_stream(self.stream(), events=[NewEvent(type="X", data=b"{}")],
                           current_version=StreamState.ANY)
        c.append_to_stream(f"{prefix}-3", events=[NewEvent(type="C", data=b"{}")],
                           current_version=StreamState.ANY)
        live = next(subscription)
        self.assertEqual((live.type, live.stream_name), ("C", f"{prefix}-3"))
        subscription.ack(live)
        parked = _wait(lambda: _safe_get(c, f"$persistentsubscription-$all::{group}-parked"))
        self.assertEqual(len(parked), 1)
        c.replay_parked_events(group)
        replayed = next(subscription)
        self.assertEqual(replayed.type, "B")
        subscription.ack(replayed)
        info = c.get_subscription_info(group)
        self.assertEqual((info.group_name, info.event_source), (group, "$all"))
        self.assertRegex(info.last_known_event_position, r"^C:\d+/P:\d+$")
        self.assertEqual(info.start_from, "C:0/P:0")
        listed = c.list_subscriptions()
        self.assertIn((group, "$all"), [(i.group_name, i.event_source) for i in listed])
        self.assertIn(group, [i.group_name for i in c.list_subscriptions_to_stream("$all")])
        status, body = _http(self.node, "GET", "/subscriptions")
        self.assertEqual(status, 200)
        self.assertIn(group.encode(), body)
        subscription.stop()
        c.delete_subscription(group)
        self.assertRaises(NotFoundError, c.get_subscription_info, group)

    def test_requestMetrics(self) -> None:
        """
        C{/metrics} counts the client's calls by method beside the TCP
        requests, with the sampled duration histogram (kurrentdbclient
        appends with C{BatchAppend}).
        """
        stream = self.stream()
        for _ in range(3):
            self.client.append_to_stream(stream, events=[NewEvent(type="M", data=b"{}")],
                                         current_version=StreamState.ANY)
        status, body = _http(self.node, "GET", "/metrics")
        self.assertEqual(status, 200)
        lines = body.decode().splitlines()
        appends = [line for line in lines
                   if line.startswith('estore_grpc_requests_total{method="Streams/BatchAppend"}')]
        self.assertEqual(len(appends), 1)
        self.assertGreaterEqual(float(appends[0].split()[-1]), 3)
        self.assertTrue([line for line in lines if line.startswith(
            'estore_grpc_request_duration_seconds_count{method="Streams/BatchAppend"}')])
        self.assertTrue([line for line in lines if line.startswith("# TYPE estore_tcp_requests")])

    def test_gossip(self) -> None:
        """
        C{Gossip.Read} names this node as the leader at its HTTP endpoint.
        """
        members = self.client.read_gossip()
        self.assertEqual(len(members), 1)
        self.assertEqual(members[0].state, "NODE_STATE_LEADER")
        self.assertEqual((members[0].address, members[0].port),
                         ("127.0.0.1", self.node.ext_http_port))

    def test_grpcWriteReadOverHttp(self) -> None:
        """
        An event appended over gRPC is read over the v5 HTTP API on the
        same port, with its id, type, data and number.
        """
        stream = self.stream()
        event = NewEvent(type="ViaGrpc", data=b'{"x":42}', metadata=b'{"m":1}')
        self.client.append_to_stream(stream, events=[event], current_version=StreamState.ANY)
        status, body = _http(self.node, "GET", f"/streams/{stream}/0",
                             headers={"Accept": "application/vnd.eventstore.atom+json"})
        self.assertEqual(status, 200, body)
        entry = json.loads(body)
        self.assertEqual(entry["content"]["eventType"], "ViaGrpc")
        self.assertEqual(entry["content"]["data"], {"x": 42})
        self.assertEqual(entry["content"]["metadata"], {"m": 1})
        self.assertEqual(entry["content"]["eventNumber"], 0)

    def test_httpWriteReadOverGrpc(self) -> None:
        """
        An event written over the v5 HTTP API is read over gRPC, in its
        stream and in C{$all}.
        """
        stream = self.stream()
        event_id = str(uuid.uuid4())
        body = json.dumps([{"eventId": event_id, "eventType": "ViaHttp", "data": {"y": 7}}])
        status, reply = _http(self.node, "POST", f"/streams/{stream}", body.encode(),
                              {"Content-Type": "application/vnd.eventstore.events+json"})
        self.assertEqual(status, 201, reply)
        events = self.client.get_stream(stream)
        self.assertEqual([(str(e.id), e.type, json.loads(e.data)) for e in events],
                         [(event_id, "ViaHttp", {"y": 7})])
        self.assertEqual(events[0].content_type, "application/json")
        in_all = [e for e in self.client.read_all() if e.stream_name == stream]
        self.assertEqual([str(e.id) for e in in_all], [event_id])


class GrpcBadInputTests(SynchronousTestCase):
    """
    Malformed HTTP/2 and gRPC input against a real node: a clean error,
    no crash, no hang, no change to the data.
    """

    def setUp(self) -> None:
        if KurrentDBClient is None:
            raise SkipTest("kurrentdbclient is not installed (pip install -e '.[test]')")
        self.node = start_node(self, mem_db=True, extra_args=["--insecure"])
        self.target = f"127.0.0.1:{self.node.ext_http_port}"

    def _frames_until_close(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.node.ext_http_port), timeout=5) as s:
            s.sendall(data)
            received = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                received += chunk
            return received

    def test_garbageAfterPrefaceGetsGoaway(self) -> None:
        """
        The HTTP/2 preface followed by a DATA frame on stream 0 (a
        connection error): the node answers GOAWAY and closes the
        connection.
        """
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        garbage = struct.pack(">I", 4)[1:] + b"\x00\x00" + b"\x00\x00\x00\x00" + b"abcd"
        received = self._frames_until_close(preface + garbage)
        types = []
        offset = 0
        while offset + 9 <= len(received):
            length = int.from_bytes(received[offset:offset + 3], "big")
            types.append(received[offset + 3])
            offset += 9 + length
        self.assertIn(7, types)  # GOAWAY

    def test_malformedMessageIsInvalidArgument(self) -> None:
        """
        A request message that is not a valid protobuf ends the call with
        C{INVALID_ARGUMENT}; an unknown method with C{UNIMPLEMENTED}.
        """
        channel = grpc.insecure_channel(self.target)
        self.addCleanup(channel.close)
        read = channel.unary_stream(
            "/event_store.client.streams.Streams/Read",
            request_serializer=lambda b: b, response_deserializer=lambda b: b,
        )
        with self.assertRaises(grpc.RpcError) as caught:
            list(read(b"\x0a\xff\xff\xff\xff", timeout=10))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        unknown = channel.unary_unary(
            "/event_store.client.streams.Streams/Nothing",
            request_serializer=lambda b: b, response_deserializer=lambda b: b,
        )
        with self.assertRaises(grpc.RpcError) as caught:
            unknown(b"", timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_nodeStillServesAfterBadInput(self) -> None:
        """
        After bad frames the node still serves gRPC and HTTP/1.1, and the
        data is unchanged.
        """
        client = KurrentDBClient(f"kurrentdb://{self.target}?Tls=false")
        self.addCleanup(client.close)
        stream = "bad-" + uuid.uuid4().hex
        client.append_to_stream(stream, events=[NewEvent(type="A", data=b"{}")],
                                current_version=StreamState.NO_STREAM)
        before = client.get_commit_position()
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        for junk in (preface + b"\xff" * 64,
                     preface + b"\x00\x00\x04\x01\x05\x00\x00\x00\x01abcd",
                     b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"):
            self._frames_until_close(junk)
        self.assertEqual(client.get_commit_position(), before)
        self.assertEqual([e.type for e in client.get_stream(stream)], ["A"])
        status, _ = _http(self.node, "GET", "/info", headers={"Accept": "application/json"})
        self.assertEqual(status, 200)
        self.assertNotIn("Traceback", self.node.log())


class GrpcTlsTests(SynchronousTestCase):
    """
    A node with a certificate from the private CA: gRPC over ALPN C{h2}
    with Basic credentials, HTTPS/1.1 on the same port.
    """

    def setUp(self) -> None:
        if KurrentDBClient is None:
            raise SkipTest("kurrentdbclient is not installed (pip install -e '.[test]')")
        from tests.test_tls import PKI

        self.pki = PKI(self.mktemp())
        self.pki.node("node1")
        self.node = start_node(self, mem_db=True, extra_args=self.pki.node_args("node1"))

    def test_grpcAndHttpsOnOnePort(self) -> None:
        """
        kurrentdbclient writes and reads over TLS as admin; wrong
        credentials are refused; an HTTPS/1.1 request on the same port
        still gets the v5 API, and ALPN gives it HTTP/1.1.
        """
        import ssl

        port = self.node.ext_http_port
        uri = (f"kurrentdb://admin:changeit@localhost:{port}"
               f"?Tls=true&TlsCaFile={self.pki.ca_cert}")
        client = KurrentDBClient(uri)
        self.addCleanup(client.close)
        stream = "tls-" + uuid.uuid4().hex
        client.append_to_stream(stream, events=[NewEvent(type="Secure", data=b"{}")],
                                current_version=StreamState.NO_STREAM)
        self.assertEqual([e.type for e in client.get_stream(stream)], ["Secure"])
        # $all needs an admin: the credentials were checked and used.
        self.assertTrue(any(e.stream_name == stream for e in client.read_all()))
        bad = KurrentDBClient(f"kurrentdb://admin:wrong@localhost:{port}"
                              f"?Tls=true&TlsCaFile={self.pki.ca_cert}")
        self.addCleanup(bad.close)
        from kurrentdbclient.exceptions import UnauthenticatedError

        self.assertRaises(UnauthenticatedError, bad.get_stream, stream)
        context = ssl.create_default_context(cafile=self.pki.ca_cert)
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                self.assertEqual(tls.selected_alpn_protocol(), "http/1.1")
                tls.sendall(f"GET /streams/{stream}/0 HTTP/1.1\r\nHost: localhost\r\n"
                            "Accept: application/vnd.eventstore.atom+json\r\n"
                            f"Authorization: {ADMIN}\r\nConnection: close\r\n\r\n".encode())
                reply = b""
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:200])
        self.assertIn(b"Secure", reply)
        self.assertNotIn("Traceback", self.node.log())


class EventStoreDbClientJsTests(SynchronousTestCase):
    """
    @eventstore/db-client 6.2.1 (Node, grpc-js; pinned in tests/js) against
    a real node: C{tests/js/grpc_client.js}.
    """

    def setUp(self) -> None:
        import shutil

        from tests.harness import REPO_ROOT

        self.js_dir = os.path.join(REPO_ROOT, "tests", "js")
        self.node_binary = shutil.which("node")
        if self.node_binary is None:
            raise SkipTest("node is not installed")
        if not os.path.isdir(os.path.join(self.js_dir, "node_modules", "@eventstore",
                                          "db-client")):
            raise SkipTest("tests/js/node_modules missing: run npm ci --prefix tests/js")
        self.node = start_node(self, mem_db=True, extra_args=["--insecure"])

    def test_client(self) -> None:
        """
        Appends with expected revisions, reads of streams and C{$all}, a
        filtered C{$all} and a stream subscription, a persistent
        subscription with ack, nack retry and park, a persistent
        subscription to C{$all} with a stream-name filter (ack, nack retry,
        info, list, delete), delete and tombstone: every check of the
        script passes.
        """
        import subprocess

        completed = subprocess.run(
            [self.node_binary, os.path.join(self.js_dir, "grpc_client.js"),
             str(self.node.ext_http_port)],
            cwd=self.js_dir, capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        lines = [x for x in completed.stdout.decode("utf-8", "replace").splitlines() if x]
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise AssertionError(
                f"client printed no result (exit {completed.returncode}):\n"
                f"{completed.stderr.decode('utf-8', 'replace')[-3000:]}\n"
                f"--- node log ---\n{self.node.log()[-3000:]}"
            ) from None
        if not result.get("ok"):
            raise AssertionError(
                f"client checks failed: {json.dumps(result.get('failures'), indent=1)}\n"
                f"--- node log ---\n{self.node.log()[-3000:]}"
            )
        self.assertGreaterEqual(len(result["checks"]), 21)
        self.assertIn("delivered after the restart", result["checks"])
        self.assertIn("persistent $all filtered deliveries", result["checks"])
        self.assertEqual(completed.returncode, 0)
        self.assertNotIn("Traceback", self.node.log())


class GrpcAdminTests(SynchronousTestCase):
    """
    grpcio's C core calling Users, Operations, Monitoring and
    ServerFeatures on a real node with credentials (C{tests/py/grpc_admin.py}
    in its own process).
    """

    def setUp(self) -> None:
        try:
            import grpc  # noqa: F401
        except ImportError:
            raise SkipTest("grpcio is not installed (pip install -e '.[test]')") from None
        # Not Insecure: credentials and ACLs are checked.
        self.node = start_node(self, mem_db=True)

    def test_adminServices(self) -> None:
        """
        Users are created, listed, re-passworded and deleted; only $ops may
        scavenge; stats stream; the supported methods list the services.
        """
        import subprocess
        import sys

        from tests.harness import REPO_ROOT

        completed = subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, "tests", "py", "grpc_admin.py"),
             str(self.node.ext_http_port)],
            capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        )
        lines = [x for x in completed.stdout.decode("utf-8", "replace").splitlines() if x]
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise AssertionError(
                f"script printed no result (exit {completed.returncode}):\n"
                f"{completed.stderr.decode('utf-8', 'replace')[-3000:]}"
            ) from None
        if not result.get("ok"):
            raise AssertionError(
                f"checks failed: {json.dumps(result.get('failures'), indent=1)}\n"
                f"--- node log ---\n{self.node.log()[-3000:]}"
            )
        self.assertGreaterEqual(len(result["checks"]), 13)
        self.assertIn("gzip read", result["checks"])
        self.assertNotIn("Traceback", self.node.log())
