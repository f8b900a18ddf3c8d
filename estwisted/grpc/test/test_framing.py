"""
Tests for L{estwisted.grpc.framing}: the gRPC message codec, timeouts,
statuses and trailers.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.grpc.framing import (
    CallHead,
    FramingError,
    GrpcStatus,
    MessageDecoder,
    StatusCode,
    encode_message,
    format_timeout,
    parse_call_head,
    parse_timeout,
    percent_decode,
    percent_encode,
    trailers,
    trailers_only,
)

messages = st.lists(st.binary(max_size=300), max_size=8)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


class MessageCodecTests(SynchronousTestCase):
    """
    Length-prefixed messages round-trip however the bytes are cut.
    """

    @given(messages, st.lists(st.integers(min_value=0), max_size=10))
    def test_roundTripAnySplit(self, payloads: list[bytes], cuts: list[int]) -> None:
        """
        Feeding the encoded messages in arbitrary pieces yields exactly the
        messages, in order, with nothing left pending.
        """
        data = b"".join(encode_message(p) for p in payloads)
        decoder = MessageDecoder()
        out: list[bytes] = []
        for piece in _split(data, cuts):
            out.extend(decoder.feed(piece))
        self.assertEqual(out, payloads)
        self.assertEqual(decoder.pending, 0)
        decoder.finish()

    @given(st.binary(min_size=1, max_size=400))
    def test_garbageNeverCrashes(self, data: bytes) -> None:
        """
        Arbitrary bytes either decode into messages whose re-encoding is a
        prefix of the input, or raise L{FramingError}; nothing else.
        """
        decoder = MessageDecoder(max_size=1000)
        try:
            out = decoder.feed(data)
        except FramingError:
            return
        encoded = b"".join(encode_message(m) for m in out)
        self.assertTrue(data.startswith(encoded))
        self.assertEqual(decoder.pending, len(data) - len(encoded))

    def test_prefix(self) -> None:
        """
        The prefix is a zero flag and the big-endian length.
        """
        self.assertEqual(encode_message(b"abc"), b"\x00\x00\x00\x00\x03abc")

    def test_compressedRefused(self) -> None:
        """
        A message flagged compressed is refused on a call without a
        C{grpc-encoding}.
        """
        self.assertRaises(FramingError, MessageDecoder().feed, b"\x01\x00\x00\x00\x00")
        self.assertRaises(FramingError, MessageDecoder().feed, b"\x07\x00\x00\x00\x00")

    @given(messages, st.lists(st.integers(min_value=0), max_size=10),
           st.sampled_from(["gzip", "deflate"]), st.lists(st.booleans(), max_size=10))
    def test_compressedRoundTrip(self, payloads: list[bytes], cuts: list[int], encoding: str,
                                 which: list[bool]) -> None:
        """
        Messages compressed or not (the flag is per message) decode to the
        payloads however the bytes are cut, on a call with that encoding.
        """
        flags = which + [False] * len(payloads)
        data = b"".join(encode_message(p, encoding if f else "identity")
                        for p, f in zip(payloads, flags, strict=False))
        decoder = MessageDecoder(encoding=encoding)
        out: list[bytes] = []
        for piece in _split(data, cuts):
            out.extend(decoder.feed(piece))
        self.assertEqual(out, payloads)
        decoder.finish()

    @given(st.binary(max_size=200), st.sampled_from(["gzip", "deflate"]))
    def test_badCompressedData(self, junk: bytes, encoding: str) -> None:
        """
        Compressed junk decodes only when it is valid; otherwise it is a
        L{FramingError}, nothing else.
        """
        framed = b"\x01" + len(junk).to_bytes(4, "big") + junk
        try:
            out = MessageDecoder(encoding=encoding).feed(framed)
        except FramingError:
            return
        self.assertEqual(len(out), 1)

    def test_inflationBounded(self) -> None:
        """
        A small compressed message inflating above the size limit is
        refused without inflating it all.
        """
        bomb = encode_message(b"\0" * 100_000, "gzip")
        self.assertLess(len(bomb), 1000)
        decoder = MessageDecoder(max_size=10_000, encoding="gzip")
        self.assertRaises(FramingError, decoder.feed, bomb)

    def test_oversizeRefusedBeforeBuffering(self) -> None:
        """
        A length above the limit is refused from the prefix alone.
        """
        self.assertRaises(FramingError, MessageDecoder(max_size=10).feed, b"\x00\x00\x00\x00\x0b")

    def test_truncatedAtEnd(self) -> None:
        """
        A stream that ends inside a message is an error.
        """
        decoder = MessageDecoder()
        self.assertEqual(decoder.feed(b"\x00\x00\x00\x00\x05ab"), [])
        self.assertRaises(FramingError, decoder.finish)


class TimeoutTests(SynchronousTestCase):
    """
    C{grpc-timeout} values.
    """

    def test_units(self) -> None:
        """
        Every unit letter scales its digits.
        """
        self.assertEqual(parse_timeout("5S"), 5.0)
        self.assertEqual(parse_timeout("2M"), 120.0)
        self.assertEqual(parse_timeout("1H"), 3600.0)
        self.assertEqual(parse_timeout("250m"), 0.25)
        self.assertAlmostEqual(parse_timeout("7u") or 0, 7e-6)
        self.assertAlmostEqual(parse_timeout("9n") or 0, 9e-9)

    def test_malformed(self) -> None:
        """
        Bad values are C{None}: no digits, too many, a bad unit, signs.
        """
        for value in ("", "S", "123456789S", "5s", "-5S", "5", "٣S", "1.5S"):
            self.assertIsNone(parse_timeout(value), value)

    @given(st.floats(min_value=0, max_value=1e7))
    def test_formatParses(self, seconds: float) -> None:
        """
        A formatted timeout parses back to at least the seconds asked for.
        """
        value = parse_timeout(format_timeout(seconds))
        self.assertIsNotNone(value)
        assert value is not None
        self.assertGreaterEqual(value + 1e-9, min(seconds, 99_999_999))


class StatusTests(SynchronousTestCase):
    """
    Trailers and C{grpc-message} encoding.
    """

    @given(st.text(max_size=100))
    def test_percentRoundTrip(self, message: str) -> None:
        """
        Any message survives percent-encoding, which is printable ASCII.
        """
        encoded = percent_encode(message)
        self.assertTrue(all(0x20 <= ord(c) < 0x7F for c in encoded))
        self.assertEqual(percent_decode(encoded), message)

    def test_trailers(self) -> None:
        """
        A status becomes C{grpc-status}, C{grpc-message} and its metadata,
        with header-breaking characters replaced.
        """
        status = GrpcStatus(
            StatusCode.NOT_FOUND, "Leader info available",
            [("exception", "not-leader"), ("Stream-Name", "a\r\nb")],
        )
        self.assertEqual(
            trailers(status),
            [("grpc-status", "5"), ("grpc-message", "Leader info available"),
             ("exception", "not-leader"), ("stream-name", "a  b")],
        )
        self.assertEqual(trailers_only(GrpcStatus(StatusCode.OK))[:4],
                         [(":status", "200"), ("content-type", "application/grpc"),
                          ("grpc-accept-encoding", "identity,deflate,gzip"),
                          ("grpc-status", "0")])


class CallHeadTests(SynchronousTestCase):
    """
    L{parse_call_head} checks the request headers.
    """

    base = [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C"),
            (":authority", "x"), ("content-type", "application/grpc")]

    def test_parsed(self) -> None:
        """
        Service, method, timeout and metadata are taken from the headers.
        """
        head = parse_call_head(self.base + [("grpc-timeout", "3S"), ("Authorization", "x")])
        self.assertEqual(head, CallHead("a.B", "C", 3.0, {
            "content-type": "application/grpc", "grpc-timeout": "3S", "authorization": "x"}))

    def test_refused(self) -> None:
        """
        A bad method, content type, path or timeout is refused with the
        status a gRPC server answers.
        """
        cases = [
            ([(":method", "GET")] + self.base[1:], StatusCode.INVALID_ARGUMENT),
            (self.base[:4] + [("content-type", "text/plain")], StatusCode.INVALID_ARGUMENT),
            (self.base[:2] + [(":path", "/nothing")] + self.base[3:], StatusCode.UNIMPLEMENTED),
            (self.base + [("grpc-timeout", "soon")], StatusCode.INVALID_ARGUMENT),
            (self.base + [("grpc-encoding", "snappy")], StatusCode.UNIMPLEMENTED),
        ]
        for headers, code in cases:
            with self.assertRaises(GrpcStatus) as caught:
                parse_call_head(headers)
            self.assertEqual(caught.exception.code, code)


    def test_encodings(self) -> None:
        """
        Responses are compressed with the request's encoding only when the
        client also accepts it; an unknown encoding is refused with the
        list of those we take.
        """
        cases = [
            ([], ("identity", "identity")),
            ([("grpc-accept-encoding", "identity,gzip")], ("identity", "identity")),
            ([("grpc-encoding", "gzip")], ("gzip", "identity")),
            ([("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity, deflate, gzip")],
             ("gzip", "gzip")),
            ([("grpc-encoding", "deflate"), ("grpc-accept-encoding", "deflate")],
             ("deflate", "deflate")),
        ]
        for extra, expected in cases:
            head = parse_call_head(self.base + extra)
            self.assertEqual((head.encoding, head.response_encoding), expected, extra)
        with self.assertRaises(GrpcStatus) as caught:
            parse_call_head(self.base + [("grpc-encoding", "br")])
        self.assertIn(("grpc-accept-encoding", "identity,deflate,gzip"),
                      caught.exception.metadata)


class CodecTests(SynchronousTestCase):
    """
    L{estwisted.grpc.codec}: ids and recorded events.
    """

    @given(st.binary(min_size=16, max_size=16), st.booleans())
    def test_uuidRoundTrip(self, event_id: bytes, structured: bool) -> None:
        """
        An id survives both C{UUID} forms; the string form is uuid's.
        """
        import uuid

        from estwisted.grpc.codec import uuid_bytes, uuid_message, uuid_text

        self.assertEqual(uuid_bytes(uuid_message(event_id, structured)), event_id)
        self.assertEqual(uuid_text(event_id), str(uuid.UUID(bytes=event_id)))

    def test_recordedEvent(self) -> None:
        """
        A record becomes a C{RecordedEvent} with its system metadata.
        """
        from estwisted.core.model import FLAG_JSON, UNIX_EPOCH_TICKS, EventRecord
        from estwisted.grpc.codec import recorded_event

        record = EventRecord(10, 20, "s", 3, b"\x01" * 16, "T", FLAG_JSON, b"{}", b"m",
                             UNIX_EPOCH_TICKS + 5)
        out = recorded_event(record, False)
        self.assertEqual(
            (out.stream_identifier.stream_name, out.stream_revision, out.commit_position,
             out.prepare_position, out.data, out.custom_metadata, dict(out.metadata)),
            (b"s", 3, 10, 10, b"{}", b"m",
             {"type": "T", "content-type": "application/json", "created": "5"}),
        )
