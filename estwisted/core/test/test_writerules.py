"""
Tests for L{estwisted.core.writerules}: the idempotency window and the write
decisions, as pure functions.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import BadRequest, StreamDeleted, WrongExpectedVersion
from estwisted.core.metadata import NO_METADATA, StreamMetadata
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    EXPECTED_STREAM_EXISTS,
    NewEvent,
)
from estwisted.core.writerules import RecentIds, Repeat, check_delete, decide_write
from estwisted.storage.memory import MemoryLog

_ids = st.sampled_from([bytes([i]) * 16 for i in range(1, 12)])
_adds = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 20), st.lists(_ids, max_size=4)),
    max_size=30,
)


def _events(*ids: bytes) -> list[NewEvent]:
    return [NewEvent(i, "t") for i in ids]


class RecentIdsTests(SynchronousTestCase):
    @given(st.integers(1, 8), _adds)
    def test_window_is_the_last_adds(
        self, size: int, adds: list[tuple[str, int, list[bytes]]]
    ) -> None:
        """
        The window answers for exactly the last C{size} ids added, each
        with its latest stream and number.
        """
        recent = RecentIds(size)
        flat: list[tuple[bytes, str, int]] = []
        for stream, first, ids in adds:
            recent.add(stream, first, ids)
            flat += [(i, stream, first + n) for n, i in enumerate(ids)]
        window = flat[-size:]
        want: dict[bytes, tuple[str, int]] = {}
        for i, stream, number in window:
            want[i] = (stream, number)
        for i, _, _ in flat:
            self.assertEqual(recent.get(i), want.get(i))

    @given(st.integers(1, 8), st.lists(st.tuples(st.sampled_from(["a", "b"]), _ids), max_size=20))
    def test_rebuild_matches_incremental(self, size: int, writes: list[tuple[str, bytes]]) -> None:
        """
        Rebuilt from the log, the window is what adding every write in log
        order gives.
        """
        log = MemoryLog()
        numbers: dict[str, int] = {}
        live = RecentIds(size)
        for stream, event_id in writes:
            number = numbers.get(stream, -1) + 1
            numbers[stream] = number
            log.append(stream, number, event_id, "t", 0, b"", b"", 0)
            live.add(stream, number, [event_id])
        log.flush()
        rebuilt = RecentIds(size)
        rebuilt.rebuild(log)
        for _, event_id in writes:
            self.assertEqual(rebuilt.get(event_id), live.get(event_id))

    def test_forget_only_its_own(self) -> None:
        recent = RecentIds(10)
        recent.add("a", 0, [b"x" * 16])
        recent.add("b", 3, [b"x" * 16])
        recent.forget("a", 0, [b"x" * 16])
        self.assertEqual(recent.get(b"x" * 16), ("b", 3))
        recent.forget("b", 3, [b"x" * 16])
        self.assertIsNone(recent.get(b"x" * 16))


class DecideWriteTests(SynchronousTestCase):
    def decide(
        self,
        expected: int,
        events: list[NewEvent],
        current: int = -1,
        recent: RecentIds | None = None,
        stored: dict[int, bytes] | None = None,
        metadata: StreamMetadata = NO_METADATA,
        metastream: bool = False,
    ) -> object:
        stored = stored or {}
        return decide_write(
            "s",
            expected,
            events,
            current,
            metadata,
            recent or RecentIds(10),
            lambda n, i: stored.get(n) == i,
            lambda: metastream,
        )

    def test_fresh(self) -> None:
        self.assertEqual(self.decide(EXPECTED_ANY, _events(b"a" * 16)), 0)
        self.assertEqual(self.decide(EXPECTED_NO_STREAM, _events(b"a" * 16)), 0)
        self.assertEqual(self.decide(4, _events(b"a" * 16), current=4), 5)

    def test_any_repeat_and_partial(self) -> None:
        recent = RecentIds(10)
        recent.add("s", 0, [b"a" * 16, b"b" * 16])
        self.assertEqual(
            self.decide(EXPECTED_ANY, _events(b"a" * 16, b"b" * 16), 1, recent), Repeat(0, 1)
        )
        self.assertRaises(
            WrongExpectedVersion,
            self.decide,
            EXPECTED_ANY,
            _events(b"a" * 16, b"c" * 16),
            1,
            recent,
        )
        # known in another stream only: a fresh write here
        other = RecentIds(10)
        other.add("t", 0, [b"a" * 16])
        self.assertEqual(self.decide(EXPECTED_ANY, _events(b"a" * 16), 1, other), 2)

    def test_exact_repeat(self) -> None:
        stored = {0: b"a" * 16, 1: b"b" * 16}
        self.assertEqual(
            self.decide(EXPECTED_NO_STREAM, _events(b"a" * 16, b"b" * 16), 1, stored=stored),
            Repeat(0, 1),
        )
        self.assertRaises(
            WrongExpectedVersion,
            self.decide,
            EXPECTED_NO_STREAM,
            _events(b"x" * 16),
            1,
            stored=stored,
        )

    def test_refusals(self) -> None:
        self.assertRaises(StreamDeleted, self.decide, EXPECTED_ANY, [], DELETED_STREAM)
        self.assertRaises(WrongExpectedVersion, self.decide, EXPECTED_STREAM_EXISTS, [])
        self.assertEqual(self.decide(EXPECTED_STREAM_EXISTS, [], metastream=True), 0)
        self.assertRaises(WrongExpectedVersion, self.decide, 3, _events(b"a" * 16), 1)
        self.assertRaises(BadRequest, self.decide, -7, _events(b"a" * 16), 1)
        soft = StreamMetadata(truncate_before=DELETED_STREAM)
        self.assertRaises(
            StreamDeleted, self.decide, EXPECTED_STREAM_EXISTS, [], 2, metadata=soft
        )

    def test_check_delete(self) -> None:
        meta = StreamMetadata()
        check_delete("s", EXPECTED_ANY, 3, meta, lambda: False)
        check_delete("s", 3, 3, meta, lambda: False)
        self.assertRaises(WrongExpectedVersion, check_delete, "s", 2, 3, meta, lambda: False)
        self.assertRaises(
            WrongExpectedVersion, check_delete, "s", EXPECTED_NO_STREAM, 3, meta, lambda: False
        )
        self.assertRaises(
            StreamDeleted, check_delete, "s", EXPECTED_ANY, DELETED_STREAM, meta, lambda: False
        )
        self.assertRaises(BadRequest, check_delete, "s", -9, 3, meta, lambda: False)


class FlushNowTests(SynchronousTestCase):
    def test_flush_now(self) -> None:
        """
        L{StreamStore.flush_now} makes a buffered write durable and
        acknowledged at once, without waiting for the reactor turn.
        """
        from twisted.internet.task import Clock

        from estwisted.core.acl import SYSTEM_PRINCIPAL
        from estwisted.core.streams import StreamStore
        from estwisted.storage.index import StreamIndex

        log = MemoryLog()
        store = StreamStore(log, StreamIndex(), Clock())
        d = store.append("s", EXPECTED_ANY, _events(b"q" * 16), SYSTEM_PRINCIPAL)
        self.assertNoResult(d)
        store.flush_now()
        self.assertEqual(self.successResultOf(d).first_event_number, 0)
        self.assertEqual(len(log.read_forward(0, 10)), 1)
        store.flush_now()
