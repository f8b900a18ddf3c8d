# -*- test-case-name: estwisted.storage.test.test_records -*-
"""
Tests for L{estwisted.storage.records}: the log record codec.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import CorruptRecord
from estwisted.storage import records

_int64 = st.integers(-(2**63), 2**63 - 1)
_text = st.text(max_size=40)

record_fields = st.fixed_dictionaries(
    {
        "position": st.integers(0, 2**62),
        "stream": _text,
        "event_number": _int64,
        "event_id": st.binary(min_size=16, max_size=16),
        "event_type": _text,
        "flags": st.integers(0, 0xFFFF),
        "data": st.binary(max_size=300),
        "metadata": st.binary(max_size=100),
        "created": _int64,
    }
)


def _encode(f: dict) -> bytes:  # type: ignore[type-arg]
    return records.encode(
        f["position"],
        f["stream"].encode("utf-8"),
        f["event_number"],
        f["event_id"],
        f["event_type"].encode("utf-8"),
        f["flags"],
        f["data"],
        f["metadata"],
        f["created"],
    )


def _fields(record: object) -> dict:  # type: ignore[type-arg]
    return {k: getattr(record, k) for k in record_fields_keys}


record_fields_keys = (
    "position",
    "stream",
    "event_number",
    "event_id",
    "event_type",
    "flags",
    "data",
    "metadata",
    "created",
)


class RecordCodecTests(SynchronousTestCase):
    @given(record_fields)
    def test_round_trip(self, f: dict) -> None:  # type: ignore[type-arg]
        """
        A record decodes to exactly its fields, from bytes, a memoryview or
        inside a larger buffer.
        """
        frame = _encode(f)
        self.assertEqual(
            len(frame),
            records.frame_size(
                f["stream"].encode(), f["event_type"].encode(), f["data"], f["metadata"]
            ),
        )
        record = records.decode(frame, position=f["position"])
        self.assertEqual(_fields(record), f)
        self.assertEqual(record.next_position, f["position"] + len(frame))
        padded = b"\x07" * 5 + frame + b"\x09" * 3
        again = records.decode(memoryview(padded), 5, 5 + len(frame), f["position"])
        self.assertEqual(_fields(again), f)
        self.assertEqual(records.frame_at(padded, 5, len(padded), f["position"]), len(frame))
        self.assertEqual(records.size_before(padded, 5 + len(frame)), len(frame))

    @given(record_fields, st.data())
    def test_any_flipped_byte_detected(self, f: dict, data: st.DataObject) -> None:  # type: ignore[type-arg]
        """
        Changing any byte of a frame makes decoding fail: damage is never
        decoded as data.
        """
        frame = bytearray(_encode(f))
        i = data.draw(st.integers(0, len(frame) - 1))
        delta = data.draw(st.integers(1, 255))
        frame[i] ^= delta
        self.assertRaises(CorruptRecord, records.decode, bytes(frame), 0, -1, f["position"])

    @given(record_fields, st.data())
    def test_truncated_detected(self, f: dict, data: st.DataObject) -> None:  # type: ignore[type-arg]
        frame = _encode(f)
        cut = data.draw(st.integers(0, len(frame) - 1))
        self.assertRaises(CorruptRecord, records.decode, frame[:cut])
        self.assertRaises(CorruptRecord, records.decode, frame, 0, cut)
        self.assertEqual(records.frame_at(frame, 0, cut, f["position"]), 0)

    @given(st.binary(max_size=400))
    def test_garbage(self, garbage: bytes) -> None:
        """
        Random bytes are rejected.
        """
        self.assertRaises(CorruptRecord, records.decode, garbage)

    def test_zeros(self) -> None:
        """
        Zeros (an unwritten, preallocated area) are no record.
        """
        self.assertRaises(CorruptRecord, records.decode, bytes(200))
        self.assertEqual(records.frame_at(bytes(200), 0, 200, 0), 0)
        self.assertEqual(records.size_before(bytes(200), 200), 0)

    def test_wrong_position(self) -> None:
        """
        An intact record read as if it were at another position is rejected.
        """
        frame = records.encode(100, b"s", 0, b"i" * 16, b"t", 0, b"d", b"", 0)
        self.assertEqual(records.decode(frame, position=100).position, 100)
        self.assertRaises(CorruptRecord, records.decode, frame, 0, -1, 101)
        self.assertEqual(records.frame_at(frame, 0, len(frame), 101), 0)

    def test_limits(self) -> None:
        """
        Fields that do not fit raise C{ValueError} at encoding.
        """
        ok = dict(
            position=0,
            stream=b"s",
            event_number=0,
            event_id=b"i" * 16,
            event_type=b"t",
            flags=0,
            data=b"",
            metadata=b"",
            created=0,
        )
        records.encode(**ok)  # type: ignore[arg-type]
        for change in (
            {"event_id": b"short"},
            {"stream": b"s" * 65536},
            {"event_type": b"t" * 65536},
            {"data": b"d" * records.MAX_RECORD_SIZE},
        ):
            self.assertRaises(ValueError, records.encode, **{**ok, **change})  # type: ignore[arg-type]

    def test_bad_utf8(self) -> None:
        """
        A frame with a valid checksum but invalid UTF-8 in its names is
        reported as corrupt, not as a Unicode error.
        """
        frame = records.encode(0, b"\xff\xfe", 0, b"i" * 16, b"t", 0, b"", b"", 0)
        self.assertRaises(CorruptRecord, records.decode, frame)
