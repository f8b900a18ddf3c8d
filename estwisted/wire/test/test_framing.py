# -*- test-case-name: estwisted.wire.test.test_framing -*-
"""
Tests for L{estwisted.wire.framing}.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.wire.framing import DEFAULT_MAX_PACKAGE_SIZE, Framer, FramingError, frame

packages = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out = []
    start = 0
    for p in points:
        out.append(data[start:p])
        start = p
    out.append(data[start:])
    return out


class FrameTests(SynchronousTestCase):
    def test_frame_prefixes_little_endian_length(self) -> None:
        self.assertEqual(frame(b"abc"), b"\x03\x00\x00\x00abc")

    def test_default_max_is_64_mib(self) -> None:
        self.assertEqual(DEFAULT_MAX_PACKAGE_SIZE, 67108864)
        self.assertEqual(Framer().max_size, 67108864)


class FramerTests(SynchronousTestCase):
    def test_whole_frames_in_one_chunk(self) -> None:
        framer = Framer()
        self.assertEqual(framer.feed(frame(b"a") + frame(b"bc")), [b"a", b"bc"])
        self.assertEqual(framer.buffered, 0)

    def test_partial_frame_is_buffered(self) -> None:
        framer = Framer()
        self.assertEqual(framer.feed(frame(b"hello")[:6]), [])
        self.assertEqual(framer.buffered, 6)
        self.assertEqual(framer.feed(b"llo" + frame(b"x")[:2]), [b"hello"])
        self.assertEqual(framer.feed(frame(b"x")[2:]), [b"x"])

    @given(packages, st.lists(st.integers(min_value=0), max_size=10))
    def test_arbitrary_split_round_trip(self, items: list[bytes], cuts: list[int]) -> None:
        data = b"".join(frame(p) for p in items)
        framer = Framer()
        got: list[bytes] = []
        for chunk in _chunks(data, cuts):
            got.extend(framer.feed(chunk))
        self.assertEqual(got, items)
        self.assertEqual(framer.buffered, 0)

    @given(packages)
    def test_byte_at_a_time(self, items: list[bytes]) -> None:
        data = b"".join(frame(p) for p in items)
        framer = Framer()
        got: list[bytes] = []
        for i in range(len(data)):
            got.extend(framer.feed(data[i : i + 1]))
        self.assertEqual(got, items)

    def test_zero_length_is_an_error(self) -> None:
        framer = Framer()
        with self.assertRaises(FramingError) as cm:
            framer.feed(b"\x00\x00\x00\x00")
        self.assertEqual(cm.exception.length, 0)
        self.assertIn("Package size is out of bounds: 0 (max: 67108864).", str(cm.exception))

    def test_negative_length_is_an_error(self) -> None:
        framer = Framer()
        with self.assertRaises(FramingError) as cm:
            framer.feed(struct.pack("<i", -5))
        self.assertEqual(cm.exception.length, -5)

    def test_too_long_is_an_error_before_the_body_arrives(self) -> None:
        framer = Framer(max_size=10)
        self.assertEqual(framer.feed(frame(b"0123456789")), [b"0123456789"])
        with self.assertRaises(FramingError) as cm:
            framer.feed(struct.pack("<i", 11))
        self.assertEqual(cm.exception.max_size, 10)

    def test_error_after_buffered_data(self) -> None:
        framer = Framer(max_size=10)
        framer.feed(b"\x01\x00")
        with self.assertRaises(FramingError):
            framer.feed(b"\x00\x01" + b"x" * 20)

    def test_packages_before_the_error_are_kept(self) -> None:
        framer = Framer(max_size=10)
        with self.assertRaises(FramingError) as cm:
            framer.feed(frame(b"a") + frame(b"b") + b"\xff\xff\xff\xff")
        self.assertEqual(cm.exception.packages, [b"a", b"b"])
        framer = Framer(max_size=10)
        framer.feed(b"\x01")
        with self.assertRaises(FramingError) as cm:
            framer.feed(b"\x00\x00\x00c" + b"\x00\x00\x00\x00")
        self.assertEqual(cm.exception.packages, [b"c"])
        with self.assertRaises(FramingError) as cm:
            framer.feed(frame(b"d"))
        self.assertEqual(cm.exception.packages, [])

    def test_error_is_sticky(self) -> None:
        framer = Framer()
        with self.assertRaises(FramingError):
            framer.feed(b"\xff\xff\xff\xff")
        with self.assertRaises(FramingError):
            framer.feed(frame(b"ok"))

    @given(st.binary(max_size=200))
    def test_random_bytes_never_raise_anything_else(self, data: bytes) -> None:
        framer = Framer(max_size=1000)
        try:
            for p in framer.feed(data):
                self.assertGreater(len(p), 0)
        except FramingError as e:
            self.assertTrue(e.length <= 0 or e.length > 1000)
