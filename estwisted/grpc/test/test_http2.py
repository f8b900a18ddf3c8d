"""
Tests for L{estwisted.grpc.http2}: the HPACK codec against the C{hpack}
library (hypothesis round trips) and the connection against C{h2}'s client.
"""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from hpack import Decoder, Encoder
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.grpc.http2 import (
    ConnectionError,
    HeaderDecoder,
    HpackError,
    Http2ServerConnection,
    encode_header_block,
    encode_integer,
)

names = st.one_of(
    st.sampled_from([b":status", b"content-type", b"content-length", b"grpc-status",
                     b":path", b"te", b"user-agent"]),
    st.binary(min_size=1, max_size=40).map(lambda b: bytes(c | 0x61 for c in b)),
)
values = st.one_of(st.sampled_from([b"200", b"415", b"application/grpc", b"0", b""]),
                   st.binary(max_size=300))
header_lists = st.lists(st.tuples(names, values), max_size=12)


class HpackTests(SynchronousTestCase):
    @given(st.integers(0, 2**28), st.integers(1, 8))
    def test_integer(self, value: int, prefix: int) -> None:
        """
        L{encode_integer} decodes to the same value.
        """
        data = encode_integer(value, prefix)
        self.assertEqual(HeaderDecoder()._integer(data, 0, prefix), (value, len(data)))

    @given(st.lists(header_lists, max_size=6))
    def test_ourBlocksDecode(self, blocks: list[list[tuple[bytes, bytes]]]) -> None:
        """
        The blocks we send decode with C{hpack} to what we meant, and leave
        its dynamic table empty (so constant blocks stay valid).
        """
        decoder = Decoder()
        for headers in blocks:
            self.assertEqual(
                [(bytes(k), bytes(v)) for k, v in decoder.decode(encode_header_block(headers),
                                                                 raw=True)],
                headers,
            )
        self.assertEqual(len(decoder.header_table.dynamic_entries), 0)

    @given(st.lists(st.tuples(header_lists, st.booleans(),
                              st.sampled_from([None, 0, 100, 4096])), max_size=8))
    def test_decodeWhatHpackEncodes(
        self, blocks: list[tuple[list[tuple[bytes, bytes]], bool, Any]]
    ) -> None:
        """
        L{HeaderDecoder} decodes C{hpack}'s blocks (Huffman or not,
        indexed, with table size changes) as C{hpack}'s decoder does.
        """
        encoder = Encoder()
        ours = HeaderDecoder()
        theirs = Decoder()
        for headers, huffman, size in blocks:
            if size is not None:
                encoder.header_table_size = size
            block = encoder.encode(headers, huffman=huffman)
            expected = [(bytes(k), bytes(v)) for k, v in theirs.decode(block, raw=True)]
            self.assertEqual(ours.decode(block), expected)
            self.assertEqual(expected, headers)

    @given(st.binary(max_size=64))
    def test_junk(self, junk: bytes) -> None:
        """
        Junk decodes or fails with L{HpackError}, nothing else.
        """
        try:
            HeaderDecoder().decode(junk)
        except HpackError:
            pass

    def test_oversizedTableUpdate(self) -> None:
        """
        A table size update above our setting is refused.
        """
        self.assertRaises(HpackError, HeaderDecoder().decode, encode_integer(8192, 5, 0x20))


class Handler:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                end_stream: bool) -> None:
        self.events.append(("request", stream_id, dict(headers), end_stream))

    def data(self, stream_id: int, data: bytes) -> None:
        self.events.append(("data", stream_id, data))

    def ended(self, stream_id: int) -> None:
        self.events.append(("ended", stream_id))

    def reset(self, stream_id: int) -> None:
        self.events.append(("reset", stream_id))

    def window_opened(self, stream_id: int) -> None:
        self.events.append(("window", stream_id))

    def gone_away(self) -> None:
        self.events.append(("gone",))


REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/a/b"),
           (":authority", "x"), ("content-type", "application/grpc")]


class ConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handler = Handler()
        self.server = Http2ServerConnection(self.handler, receive_window=1 << 20)
        self.server.initiate()
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.client.initiate_connection()
        self.pump()

    def pump(self) -> list[Any]:
        events: list[Any] = []
        for _ in range(20):
            out = self.client.data_to_send()
            if out:
                self.server.receive(out)
            back = self.server.data_to_send()
            if back:
                events += self.client.receive_data(back)
            if not out and not back:
                break
        return events

    def test_requestResponse(self) -> None:
        """
        A request with data, answered with headers, data and trailers, as
        h2's client sees it; the stream is gone after both ends.
        """
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, REQUEST)
        self.client.send_data(sid, b"hello", end_stream=True)
        self.pump()
        self.assertEqual(self.handler.events[0][0:2], ("request", sid))
        self.assertEqual(self.handler.events[0][2][b":path"], b"/a/b")
        self.assertEqual(self.handler.events[1:], [("data", sid, b"hello"), ("ended", sid)])
        server = self.server
        self.assertTrue(server.send_headers(sid, encode_header_block([(b":status", b"200")])))
        self.assertTrue(server.send_data(sid, b"world"))
        self.assertTrue(server.send_headers(sid, encode_header_block([(b"grpc-status", b"0")]),
                                            end_stream=True))
        events = self.pump()
        kinds = [type(e) for e in events]
        self.assertEqual(kinds, [ResponseReceived, DataReceived, TrailersReceived, StreamEnded])
        self.assertEqual(events[1].data, b"world")
        self.assertEqual(events[2].headers, [("grpc-status", "0")])
        self.assertNotIn(sid, server.streams)

    def test_flowControl(self) -> None:
        """
        L{Http2ServerConnection.window} follows the client's windows.
        """
        self.client.update_settings({4: 10})
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, REQUEST, end_stream=True)
        self.pump()
        self.assertEqual(self.server.window(sid), 10)
        self.server.send_headers(sid, encode_header_block([(b":status", b"200")]))
        self.server.send_data(sid, b"x" * 10)
        self.assertEqual(self.server.window(sid), 0)
        events = self.pump()
        self.client.acknowledge_received_data(10, sid)
        self.pump()
        self.assertEqual(self.server.window(sid), 10)
        self.assertIn(("window", sid), self.handler.events)
        self.assertIn(DataReceived, [type(e) for e in events])

    def test_clientReset(self) -> None:
        """
        A client's RST_STREAM reaches the handler.
        """
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, REQUEST)
        self.client.reset_stream(sid)
        self.pump()
        self.assertEqual(self.handler.events[-1], ("reset", sid))
        self.assertFalse(self.server.send_data(sid, b""))

    def test_ping(self) -> None:
        """
        A PING is answered.
        """
        self.client.ping(b"12345678")
        events = self.pump()
        self.assertEqual([type(e).__name__ for e in events], ["PingAckReceived"])

    def test_badPreface(self) -> None:
        """
        A connection that does not start with the preface is refused.
        """
        server = Http2ServerConnection(Handler())
        self.assertRaises(ConnectionError, server.receive, b"GET / HTTP/1.1\r\n\r\n" * 3)
        self.assertTrue(server.closed)

    def test_evenStream(self) -> None:
        """
        An even stream id is a protocol error answered with GOAWAY.
        """
        from estwisted.grpc.http2 import END_HEADERS, HEADERS, frame

        self.assertRaises(ConnectionError, self.server.receive,
                          frame(HEADERS, END_HEADERS, 2, encode_header_block([])))
        events = self.client.receive_data(self.server.data_to_send())
        self.assertEqual([type(e) for e in events], [ConnectionTerminated])

    @given(st.binary(max_size=200))
    def test_fuzz(self, junk: bytes) -> None:
        """
        After a valid start, junk either is taken or ends the connection
        with L{ConnectionError}; nothing else escapes.
        """
        handler = Handler()
        server = Http2ServerConnection(handler)
        server.initiate()
        client = H2Connection(H2Configuration(client_side=True))
        client.initiate_connection()
        server.receive(client.data_to_send())
        try:
            server.receive(junk)
        except ConnectionError:
            self.assertTrue(server.closed)
        for event in handler.events:
            self.assertIn(event[0], {"request", "data", "ended", "reset", "window", "gone"})

    def test_refusedBeyondConcurrency(self) -> None:
        """
        Streams above the concurrency limit are refused with RST_STREAM.
        """
        server = Http2ServerConnection(Handler(), max_concurrent=1)
        server.initiate()
        client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        client.initiate_connection()
        # Both before the client learns the limit.
        client.send_headers(1, REQUEST)
        client.send_headers(3, REQUEST)
        server.receive(client.data_to_send())
        events = client.receive_data(server.data_to_send())
        resets = [e.stream_id for e in events if isinstance(e, StreamReset)]
        self.assertEqual(resets, [3])
