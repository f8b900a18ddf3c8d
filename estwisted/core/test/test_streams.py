"""
Tests for L{estwisted.core.streams}.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import (
    AccessDenied,
    BadRequest,
    InvalidTransaction,
    NotAuthenticated,
    StorageError,
    StreamDeleted,
    WrongExpectedVersion,
)
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    EXPECTED_STREAM_EXISTS,
    FLAG_TOMBSTONE,
    EventRecord,
    NewEvent,
    Principal,
    ReadStatus,
    WriteResult,
)
from estwisted.core.streams import (
    MAX_EVENT_SIZE,
    StreamMetadata,
    StreamStore,
    min_visible,
    parse_link,
    parse_metadata,
)
from estwisted.core.users import UserManager
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog

ADMIN = Principal("admin", frozenset({"$admins"}))
ALICE = Principal("alice", frozenset({"readers"}))


def new_event(event_type: str = "type", data: bytes = b"{}", is_json: bool = True) -> NewEvent:
    return NewEvent(uuid.uuid4().bytes, event_type, data, b"", is_json)


def events(n: int) -> list[NewEvent]:
    return [new_event(data=json.dumps({"i": i}).encode()) for i in range(n)]


def rebuild_index(log: MemoryLog) -> StreamIndex:
    """
    Replay a log into a fresh index, as the storage layer does on start.
    """
    index = StreamIndex()
    position = 0
    for _ in range(10**6):
        records = log.read_forward(position, 1000)
        if not records:
            break
        for record in records:
            index.add(record.stream, record.event_number, record.position)
        position = records[-1].next_position
    return index


class StoreTestMixin:
    """
    A store over a L{MemoryLog} with a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.log = MemoryLog()
        self.index = StreamIndex()
        self.store = StreamStore(self.log, self.index, self.clock)

    def restart(self) -> None:
        self.index = rebuild_index(self.log)
        self.store = StreamStore(self.log, self.index, self.clock)

    def settle(self, d: Deferred[Any]) -> Any:
        """
        Let the group commit run and return C{d}'s result (or raise).
        """
        self.clock.advance(0)
        return self.successResultOf(d)  # type: ignore[attr-defined]

    def write(
        self,
        stream: str,
        expected: int,
        evs: Sequence[NewEvent],
        principal: Optional[Principal] = None,
    ) -> WriteResult:
        d = self.store.append(stream, expected, evs, principal)
        return self.settle(d)  # type: ignore[no-any-return]

    def write_fails(
        self,
        stream: str,
        expected: int,
        evs: Sequence[NewEvent],
        error: type[Exception],
        principal: Optional[Principal] = None,
    ) -> Exception:
        d = self.store.append(stream, expected, evs, principal)
        self.clock.advance(0)
        return self.failureResultOf(d, error).value  # type: ignore[attr-defined,no-any-return]


class AppendTests(StoreTestMixin, SynchronousTestCase):
    def test_no_stream(self) -> None:
        """
        NoStream on a new stream writes events 0..n-1 at positions > 0.
        """
        result = self.write("s", EXPECTED_NO_STREAM, events(3))
        self.assertEqual((result.first_event_number, result.last_event_number), (0, 2))
        self.assertGreater(result.position, 0)
        self.assertEqual(self.store.last_event_number("s"), 2)

    def test_not_acknowledged_before_flush(self) -> None:
        """
        The Deferred fires only after the clock let the group commit run, and
        readers do not see the events before that.
        """
        d = self.store.append("s", EXPECTED_ANY, events(1), None)
        self.assertNoResult(d)
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(page.status, ReadStatus.NO_STREAM)
        self.assertLess(self.log.end_position, self.log.pending_position)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).last_event_number, 0)
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(len(page.events), 1)

    def test_group_commit_one_flush(self) -> None:
        """
        Writes in one reactor turn share one flush and see each other's
        pending versions.
        """
        flushes = []
        real_flush = self.log.flush

        def counting_flush() -> int:
            flushes.append(1)
            return real_flush()

        self.log.flush = counting_flush  # type: ignore[method-assign]
        d1 = self.store.append("s", EXPECTED_NO_STREAM, events(2), None)
        d2 = self.store.append("s", 1, events(1), None)
        d3 = self.store.append("s", 1, events(1), None)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d1).last_event_number, 1)
        self.assertEqual(self.successResultOf(d2).first_event_number, 2)
        self.assertEqual(self.failureResultOf(d3, WrongExpectedVersion).value.current_version, 2)
        self.assertEqual(flushes, [1])

    def test_exact_version(self) -> None:
        self.write("s", EXPECTED_ANY, events(2))
        result = self.write("s", 1, events(1))
        self.assertEqual(result.first_event_number, 2)
        error = self.write_fails("s", 5, events(1), WrongExpectedVersion)
        self.assertEqual(error.current_version, 2)  # type: ignore[attr-defined]

    def test_no_stream_on_existing(self) -> None:
        self.write("s", EXPECTED_ANY, events(1))
        error = self.write_fails("s", EXPECTED_NO_STREAM, events(1), WrongExpectedVersion)
        self.assertEqual(error.current_version, 0)  # type: ignore[attr-defined]

    def test_stream_exists(self) -> None:
        """
        StreamExists fails on a stream without events or metadata, succeeds
        on one with metadata only.
        """
        self.write_fails("s", EXPECTED_STREAM_EXISTS, events(1), WrongExpectedVersion)
        self.settle(self.store.set_metadata("s", EXPECTED_ANY, b'{"x":1}', None))
        result = self.write("s", EXPECTED_STREAM_EXISTS, events(1))
        self.assertEqual(result.first_event_number, 0)

    def test_empty_write(self) -> None:
        """
        An empty write with a satisfied version gives first = current + 1 and
        last = current.
        """
        self.write("s", EXPECTED_ANY, events(3))
        result = self.write("s", 2, [])
        self.assertEqual((result.first_event_number, result.last_event_number), (3, 2))
        self.write_fails("s", 1, [], WrongExpectedVersion)

    def test_idempotent_any(self) -> None:
        evs = events(3)
        first = self.write("s", EXPECTED_ANY, evs)
        again = self.write("s", EXPECTED_ANY, evs)
        self.assertEqual(
            (again.first_event_number, again.last_event_number, again.position), (0, 2, -1)
        )
        self.assertEqual(first.position > 0, True)
        self.assertEqual(self.store.last_event_number("s"), 2)

    def test_idempotent_partial(self) -> None:
        """
        First id known, a later one not: WrongExpectedVersion.
        """
        evs = events(2)
        self.write("s", EXPECTED_ANY, evs)
        self.write_fails("s", EXPECTED_ANY, [evs[0], new_event()], WrongExpectedVersion)

    def test_idempotent_exact(self) -> None:
        evs = events(3)
        self.write("s", EXPECTED_NO_STREAM, evs)
        again = self.write("s", EXPECTED_NO_STREAM, evs)
        self.assertEqual((again.first_event_number, again.last_event_number), (0, 2))
        tail = self.write("s", 0, evs[1:])
        self.assertEqual((tail.first_event_number, tail.last_event_number), (1, 2))
        self.write_fails("s", 0, [evs[1], new_event()], WrongExpectedVersion)
        self.write_fails("s", 1, evs, WrongExpectedVersion)
        self.write_fails("s", 1, [], WrongExpectedVersion)

    def test_idempotent_exact_after_restart(self) -> None:
        """
        Step 4 uses the index, not only the recent-id cache.
        """
        evs = events(2)
        self.write("s", EXPECTED_NO_STREAM, evs)
        self.restart()
        again = self.write("s", EXPECTED_NO_STREAM, evs)
        self.assertEqual((again.last_event_number, again.position), (1, -1))

    def test_validation(self) -> None:
        self.write_fails("", EXPECTED_ANY, events(1), BadRequest)
        self.write_fails("$all", EXPECTED_ANY, events(1), AccessDenied)
        self.write_fails("s", EXPECTED_ANY, [NewEvent(b"\x00" * 16, "t", b"", b"")], BadRequest)
        self.write_fails("s", EXPECTED_ANY, [NewEvent(uuid.uuid4().bytes, "")], BadRequest)
        big = NewEvent(uuid.uuid4().bytes, "t", b"x" * (MAX_EVENT_SIZE - 1))
        self.write_fails("s", EXPECTED_ANY, [big], BadRequest)
        self.assertEqual(self.store.last_event_number("s"), -1)

    def test_storage_error(self) -> None:
        """
        A failed flush fails every write of the batch, rolls back pending
        versions and acknowledges nothing.
        """

        def broken() -> int:
            raise StorageError("disk gone")

        real_flush = self.log.flush
        self.log.flush = broken  # type: ignore[method-assign]
        d1 = self.store.append("s", EXPECTED_NO_STREAM, events(2), None)
        d2 = self.store.append("t", EXPECTED_ANY, events(1), None)
        self.clock.advance(0)
        self.failureResultOf(d1, StorageError)
        self.failureResultOf(d2, StorageError)
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.log.flush = real_flush  # type: ignore[method-assign]
        self.assertEqual(self.store.last_event_number("s"), -1)
        result = self.write("s", EXPECTED_NO_STREAM, events(1))
        self.assertEqual(result.first_event_number, 0)

    def test_commit_listener(self) -> None:
        """
        Listeners get the records of each flush, in log order, after the
        index was updated.
        """
        seen: list[Sequence[EventRecord]] = []
        versions: list[int] = []

        def listener(records: Sequence[EventRecord]) -> None:
            seen.append(records)
            versions.append(self.store.last_event_number("s"))

        remove = self.store.add_commit_listener(listener)
        evs = events(2)
        self.store.append("s", EXPECTED_ANY, evs, None)
        self.store.append("t", EXPECTED_ANY, events(1), None)
        self.clock.advance(0)
        self.assertEqual(len(seen), 1)
        self.assertEqual(
            [(r.stream, r.event_number) for r in seen[0]], [("s", 0), ("s", 1), ("t", 0)]
        )
        self.assertEqual([r.event_id for r in seen[0][:2]], [e.event_id for e in evs])
        self.assertEqual(versions, [1])
        self.assertEqual(seen[0][0], self.log.read(seen[0][0].position))
        remove()
        self.write("s", EXPECTED_ANY, events(1))
        self.assertEqual(len(seen), 1)

    def test_publishing_while_acknowledging(self) -> None:
        """
        C{publishing} is true while a committed batch's writes are
        acknowledged and false again when the commit listeners run (the TCP
        factory sends the replies then, without an end-of-turn call); an
        acknowledgement of nothing new (an idempotent repeat) leaves it
        false.
        """
        during: list[bool] = []
        at_listener: list[bool] = []
        self.store.add_commit_listener(lambda records: at_listener.append(self.store.publishing))
        evs = events(1)
        self.assertFalse(self.store.publishing)
        d = self.store.append("s", EXPECTED_ANY, evs, None)
        d.addCallback(lambda _: during.append(self.store.publishing))
        self.clock.advance(0)
        self.assertEqual((during, at_listener), ([True], [False]))
        self.assertFalse(self.store.publishing)
        repeat = self.store.append("s", EXPECTED_ANY, evs, None)
        repeat.addCallback(lambda _: during.append(self.store.publishing))
        self.clock.advance(0)
        self.assertEqual((during, at_listener), ([True, False], [False]))

    def test_inline_decision_matches_rules(self) -> None:
        """
        The expected-version outcomes decided inline (a new write under
        C{ExpectedAny}, C{expected == current}) and those left to
        L{decide_write} (repeats, wrong versions) give the same results.
        """
        first = events(2)
        self.assertEqual(self.write("s", EXPECTED_ANY, first).first_event_number, 0)
        self.assertEqual(self.write("s", 1, events(1)).first_event_number, 2)
        repeat = self.write("s", EXPECTED_ANY, first)
        self.assertEqual((repeat.first_event_number, repeat.last_event_number), (0, 1))
        self.write_fails("s", 5, events(1), WrongExpectedVersion)
        self.assertEqual(self.write("s", 2, events(1)).first_event_number, 3)
        self.assertEqual(self.write("n", -1, events(1)).first_event_number, 0)


class ReadTests(StoreTestMixin, SynchronousTestCase):
    def test_forward_pages(self) -> None:
        self.write("s", EXPECTED_ANY, events(20))
        page = self.store.read_stream("s", 0, 5, True, False, None)
        self.assertEqual([e.original.event_number for e in page.events], [0, 1, 2, 3, 4])
        self.assertEqual((page.next_event_number, page.last_event_number), (5, 19))
        self.assertFalse(page.is_end_of_stream)
        page = self.store.read_stream("s", 15, 5, True, False, None)
        self.assertTrue(page.is_end_of_stream)
        self.assertEqual(page.next_event_number, 20)
        page = self.store.read_stream("s", 30, 5, True, False, None)
        self.assertEqual(
            (len(page.events), page.is_end_of_stream, page.next_event_number), (0, True, 20)
        )

    def test_backward(self) -> None:
        self.write("s", EXPECTED_ANY, events(20))
        page = self.store.read_stream("s", 19, 20, False, False, None)
        self.assertEqual([e.original.event_number for e in page.events], list(range(19, -1, -1)))
        self.assertEqual((page.next_event_number, page.is_end_of_stream), (-1, True))
        page = self.store.read_stream("s", -1, 5, False, False, None)
        self.assertEqual([e.original.event_number for e in page.events], [19, 18, 17, 16, 15])
        self.assertEqual((page.next_event_number, page.is_end_of_stream), (14, False))
        page = self.store.read_stream("s", 40, 20, False, False, None)
        self.assertEqual((page.status, len(page.events)), (ReadStatus.SUCCESS, 0))

    def test_too_many(self) -> None:
        self.write("s", EXPECTED_ANY, events(1))
        page = self.store.read_stream("s", 0, 4097, True, False, None)
        self.assertEqual(page.status, ReadStatus.ERROR)
        page = self.store.read_stream("s", -1, 10, True, False, None)
        self.assertEqual(page.status, ReadStatus.ERROR)

    def test_no_stream(self) -> None:
        page = self.store.read_stream("nope", 0, 10, True, False, None)
        self.assertEqual(
            (page.status, page.next_event_number, page.last_event_number, page.is_end_of_stream),
            (ReadStatus.NO_STREAM, -1, -1, True),
        )
        self.assertEqual(page.last_commit_position, self.store.last_commit_position)
        self.assertEqual(self.store.read_event("nope", 0, False, None).status, ReadStatus.NO_STREAM)

    def test_read_event(self) -> None:
        evs = events(3)
        self.write("s", EXPECTED_ANY, evs)
        result = self.store.read_event("s", 1, False, None)
        self.assertEqual(result.status, ReadStatus.SUCCESS)
        assert result.event is not None
        self.assertEqual(result.event.original.event_id, evs[1].event_id)
        last = self.store.read_event("s", -1, False, None)
        assert last.event is not None
        self.assertEqual(last.event.original.event_number, 2)
        self.assertEqual(self.store.read_event("s", 3, False, None).status, ReadStatus.NOT_FOUND)

    def test_read_all(self) -> None:
        self.write("a", EXPECTED_ANY, events(2))
        self.write("b", EXPECTED_ANY, events(2))
        denied = self.store.read_all(0, 10, True, False, None)
        self.assertEqual(denied.status, ReadStatus.ACCESS_DENIED)
        user_events = []
        position = 0
        for _ in range(100):
            page = self.store.read_all(position, 3, True, False, ADMIN)
            if not page.events:
                break
            self.assertGreater(page.next_position, position)
            user_events += [
                (e.original.stream, e.original.event_number)
                for e in page.events
                if e.original.stream in ("a", "b")
            ]
            position = page.next_position
        self.assertEqual(user_events, [("a", 0), ("a", 1), ("b", 0), ("b", 1)])
        back = self.store.read_all(-1, 2, False, False, ADMIN)
        self.assertEqual(back.position, self.log.end_position)
        self.assertEqual(
            [(e.original.stream, e.original.event_number) for e in back.events],
            [("b", 1), ("b", 0)],
        )
        self.assertLess(back.next_position, back.position)
        more = self.store.read_all(back.next_position, 2, False, False, ADMIN)
        self.assertEqual(
            [(e.original.stream, e.original.event_number) for e in more.events],
            [("a", 1), ("a", 0)],
        )

    def test_read_all_forward_from_end(self) -> None:
        """
        C{$all} forwards from -1 (the end, as a catch-up subscription from
        the end asks) gives no historical event and the end as the next
        position; events written afterwards are read from there.
        """
        self.write("a", EXPECTED_ANY, events(3))
        end = self.store.read_all(-1, 100, True, False, ADMIN)
        self.assertEqual(end.status, ReadStatus.SUCCESS)
        self.assertEqual(list(end.events), [])
        self.assertEqual(end.next_position, self.log.end_position)
        self.write("b", EXPECTED_ANY, events(1))
        live = self.store.read_all(end.next_position, 100, True, False, ADMIN)
        self.assertEqual([e.original.stream for e in live.events], ["b"])


class MoreWriteTests(StoreTestMixin, SynchronousTestCase):
    def test_recent_id_cache_is_bounded(self) -> None:
        """
        The idempotency cache of C{Any} writes keeps only the most recent
        ids: an old retry is written again (as v5 does), a recent one is not.
        """
        self.store = StreamStore(self.log, self.index, self.clock, recent_event_ids=3)
        old = events(1)
        self.write("s", EXPECTED_ANY, old)
        for _ in range(3):
            self.write("s", EXPECTED_ANY, events(1))
        recent = events(1)
        self.write("s", EXPECTED_ANY, recent)
        self.assertEqual(self.write("s", EXPECTED_ANY, recent).position, -1)
        again = self.write("s", EXPECTED_ANY, old)
        self.assertEqual(again.first_event_number, 5)
        self.assertGreater(again.position, 0)

    def test_log_append_error(self) -> None:
        """
        A log that refuses a record fails the whole batch with
        L{StorageError}; nothing is indexed.
        """
        real_append = self.log.append

        def refusing(stream: str, *args: Any) -> int:
            if stream == "bad":
                raise ValueError("record too large for the chunk")
            return real_append(stream, *args)

        self.log.append = refusing  # type: ignore[method-assign,assignment]
        good = self.store.append("good", EXPECTED_ANY, events(1), None)
        bad = self.store.append("bad", EXPECTED_ANY, events(2), None)
        self.assertIsInstance(self.failureResultOf(bad, StorageError).value, StorageError)
        self.clock.advance(0)
        self.failureResultOf(good, StorageError)
        self.flushLoggedErrors(StorageError)
        self.assertEqual(self.store.last_event_number("good"), -1)
        self.log.append = real_append  # type: ignore[method-assign]
        self.assertEqual(self.write("good", EXPECTED_NO_STREAM, events(1)).first_event_number, 0)

    def test_listener_sees_system_records(self) -> None:
        """
        Listeners get metadata events and hard-delete tombstones too.
        """
        seen: list[EventRecord] = []
        self.store.add_commit_listener(seen.extend)
        self.write("s", EXPECTED_ANY, events(1))
        self.settle(self.store.delete_stream("s", EXPECTED_ANY, False, None))
        self.write("s", EXPECTED_ANY, events(1))
        self.settle(self.store.delete_stream("s", EXPECTED_ANY, True, None))
        self.assertEqual(
            [(r.stream, r.event_number, r.event_type) for r in seen],
            [
                ("s", 0, "type"),
                ("$$s", 0, "$metadata"),
                ("s", 1, "type"),
                ("$$s", 1, "$metadata"),
                ("s", DELETED_STREAM, "$streamDeleted"),
            ],
        )
        for record in seen:
            self.assertEqual(self.log.read(record.position), record)

    def test_failing_listener_is_logged(self) -> None:
        calls: list[int] = []

        def broken(records: Sequence[EventRecord]) -> None:
            raise RuntimeError("listener bug")

        self.store.add_commit_listener(broken)
        self.store.add_commit_listener(lambda records: calls.append(len(records)))
        self.write("s", EXPECTED_ANY, events(2))
        self.assertEqual(calls, [2])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_caller_list_reused(self) -> None:
        """
        The store keeps its own copy of the events of a write.
        """
        seen: list[EventRecord] = []
        self.store.add_commit_listener(seen.extend)
        evs = events(2)
        d = self.store.append("s", EXPECTED_ANY, evs, None)
        evs.clear()
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(len(seen), 2)

    def test_metastream_expected_version(self) -> None:
        self.settle(self.store.set_metadata("s", EXPECTED_NO_STREAM, b"{}", None))
        d = self.store.set_metadata("s", EXPECTED_NO_STREAM, b"{}", None)
        self.clock.advance(0)
        self.assertEqual(self.failureResultOf(d, WrongExpectedVersion).value.current_version, 0)
        self.assertEqual(
            self.settle(self.store.set_metadata("s", 0, b"{}", None)).first_event_number, 1
        )

    def test_writer_position(self) -> None:
        """
        The writer position (what gossip advertises) is the end of the log,
        past the last committed record's start.
        """
        self.write("s", EXPECTED_ANY, events(2))
        self.assertEqual(self.store.writer_position, self.log.end_position)
        self.assertGreater(self.store.writer_position, self.store.last_commit_position)

    def test_last_commit_position(self) -> None:
        start = self.store.last_commit_position
        result = self.write("s", EXPECTED_ANY, events(2))
        self.assertGreater(self.store.last_commit_position, start)
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(page.last_commit_position, page.events[-1].original.position)
        self.assertEqual(result.position, page.events[0].original.position)
        self.restart()
        self.assertEqual(self.store.last_commit_position, page.events[-1].original.position)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
metadata_objects = st.fixed_dictionaries(
    {},
    optional={
        "$maxCount": json_values,
        "$maxAge": json_values,
        "$tb": json_values,
        "$cacheControl": json_values,
        "$acl": json_values,
        "x": json_values,
    },
)


class ParseTests(SynchronousTestCase):
    @given(st.binary(max_size=50), st.booleans(), st.integers(-1, 5))
    def test_metadata_never_raises(self, data: bytes, is_json: bool, version: int) -> None:
        meta = parse_metadata(data, is_json, version)
        self.assertEqual((meta.raw, meta.version), (data, version))

    @given(metadata_objects)
    def test_metadata_keys(self, value: dict[str, Any]) -> None:
        """
        Numeric keys are kept only when they are integers in range; other
        keys survive in C{data}.
        """
        meta = parse_metadata(json.dumps(value).encode(), True, 0)
        self.assertEqual(meta.data, value)

        def expected(key: str, minimum: int) -> Optional[int]:
            v = value.get(key)
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= minimum
            return v if ok else None

        self.assertEqual(meta.max_count, expected("$maxCount", 1))
        self.assertEqual(meta.max_age, expected("$maxAge", 1))
        self.assertEqual(meta.truncate_before, expected("$tb", 0))
        self.assertEqual(meta.cache_control, expected("$cacheControl", 1))
        self.assertEqual(meta.acl is None, not isinstance(value.get("$acl"), dict))

    @given(st.integers(0, 2**63 - 1), st.text(min_size=1, max_size=10))
    def test_link_round_trip(self, number: int, stream: str) -> None:
        self.assertEqual(parse_link(f"{number}@{stream}".encode()), (number, stream))

    @given(st.binary(max_size=30))
    def test_link_never_raises(self, data: bytes) -> None:
        result = parse_link(data)
        if result is not None:
            self.assertTrue(result[1])

    def test_min_visible(self) -> None:
        self.assertEqual(min_visible(9, StreamMetadata(max_count=3)), 7)
        self.assertEqual(min_visible(9, StreamMetadata(max_count=3, truncate_before=8)), 8)
        self.assertEqual(min_visible(1, StreamMetadata(max_count=5)), 0)


class UsersInStoreTests(StoreTestMixin, SynchronousTestCase):
    def test_default_users(self) -> None:
        users = UserManager(self.store, iterations=10)
        self.settle(users.ensure_default_users())
        principal = users.authenticate("admin", "changeit")
        self.assertEqual(principal, Principal("admin", frozenset({"$admins"})))
        self.assertEqual(users.authenticate("ops", "changeit").groups, frozenset({"$ops"}))
        self.assertRaises(NotAuthenticated, users.authenticate, "admin", "wrong")
        self.assertRaises(NotAuthenticated, users.authenticate, "nobody", "changeit")


def numbers(page: Any) -> list[int]:
    return [e.original.event_number for e in page.events]


class DeleteTests(StoreTestMixin, SynchronousTestCase):
    def test_soft_delete(self) -> None:
        """
        A soft delete hides the stream, writes C{$tb} = long.MaxValue, and a
        later write re-creates it with numbering continued and old events
        hidden.
        """
        self.write("s", EXPECTED_ANY, events(3))
        self.settle(self.store.set_metadata("s", EXPECTED_ANY, b'{"custom":1}', None))
        result = self.settle(self.store.delete_stream("s", 2, False, None))
        self.assertGreater(result.position, 0)
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(page.status, ReadStatus.NO_STREAM)
        self.assertEqual(self.store.read_event("s", 0, False, None).status, ReadStatus.NO_STREAM)
        meta = self.store.get_metadata("s", None)
        self.assertEqual(json.loads(meta.raw), {"$tb": DELETED_STREAM})
        self.assertEqual(meta.metastream_version, 1)
        self.write_fails("s", EXPECTED_STREAM_EXISTS, events(1), StreamDeleted)
        again = self.write("s", EXPECTED_NO_STREAM, events(2))
        self.assertEqual((again.first_event_number, again.last_event_number), (3, 4))
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(numbers(page), [3, 4])
        self.assertEqual(json.loads(self.store.get_metadata("s", None).raw), {"$tb": 3})
        backward = self.store.read_stream("s", -1, 10, False, False, None)
        self.assertEqual((numbers(backward), backward.is_end_of_stream), ([4, 3], True))

    def test_soft_delete_recreate_keeps_keys(self) -> None:
        """
        Re-creation keeps other keys present in the metadata at that time.
        """
        self.write("s", EXPECTED_ANY, events(1))
        self.settle(self.store.delete_stream("s", EXPECTED_ANY, False, None))
        raw = json.dumps({"$tb": DELETED_STREAM, "$maxCount": 5, "k": "v"}).encode()
        self.settle(self.store.set_metadata("s", EXPECTED_ANY, raw, None))
        self.write("s", EXPECTED_ANY, events(1))
        self.assertEqual(
            json.loads(self.store.get_metadata("s", None).raw), {"$tb": 1, "$maxCount": 5, "k": "v"}
        )

    def test_soft_delete_same_turn(self) -> None:
        """
        A write in the same turn as the soft delete sees the pending
        deletion and re-creates the stream.
        """
        self.write("s", EXPECTED_ANY, events(2))
        d1 = self.store.delete_stream("s", EXPECTED_ANY, False, None)
        d2 = self.store.append("s", EXPECTED_NO_STREAM, events(1), None)
        self.clock.advance(0)
        self.successResultOf(d1)
        self.assertEqual(self.successResultOf(d2).first_event_number, 2)
        self.assertEqual(numbers(self.store.read_stream("s", 0, 10, True, False, None)), [2])

    def test_hard_delete(self) -> None:
        self.write("s", EXPECTED_ANY, events(2))
        result = self.settle(self.store.delete_stream("s", 1, True, None))
        self.assertEqual(self.store.last_event_number("s"), DELETED_STREAM)
        tombstone = self.log.read(result.position)
        self.assertEqual(
            (tombstone.event_number, tombstone.event_type, tombstone.flags & FLAG_TOMBSTONE),
            (DELETED_STREAM, "$streamDeleted", FLAG_TOMBSTONE),
        )
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(
            (page.status, page.last_event_number), (ReadStatus.STREAM_DELETED, DELETED_STREAM)
        )
        self.assertEqual(
            self.store.read_event("s", 0, False, None).status, ReadStatus.STREAM_DELETED
        )
        self.assertEqual(
            self.store.read_stream("$$s", 0, 10, True, False, None).status,
            ReadStatus.STREAM_DELETED,
        )
        self.assertTrue(self.store.get_metadata("s", None).is_deleted)
        self.write_fails("s", EXPECTED_ANY, events(1), StreamDeleted)
        error = self.write_fails("s", 5, events(1), StreamDeleted)
        self.assertIsInstance(error, StreamDeleted)
        self.failureResultOf(self.store.delete_stream("s", EXPECTED_ANY, True, None), StreamDeleted)
        self.failureResultOf(self.store.set_metadata("s", EXPECTED_ANY, b"{}", None), StreamDeleted)
        all_page = self.store.read_all(-1, 1, False, False, ADMIN)
        self.assertEqual(all_page.events[0].original.event_type, "$streamDeleted")
        self.restart()
        self.assertEqual(self.store.last_event_number("s"), DELETED_STREAM)
        self.write_fails("s", EXPECTED_ANY, events(1), StreamDeleted)

    def test_delete_version_checks(self) -> None:
        self.write("s", EXPECTED_ANY, events(2))
        d = self.store.delete_stream("s", 0, True, None)
        self.clock.advance(0)
        self.assertEqual(self.failureResultOf(d, WrongExpectedVersion).value.current_version, 1)
        self.failureResultOf(
            self.store.delete_stream("s", EXPECTED_NO_STREAM, False, None), WrongExpectedVersion
        )
        d = self.store.delete_stream("never", EXPECTED_ANY, False, None)
        self.clock.advance(0)
        self.successResultOf(d)
        d = self.store.delete_stream("never2", EXPECTED_NO_STREAM, True, None)
        self.clock.advance(0)
        self.successResultOf(d)

    def test_delete_refused(self) -> None:
        self.write("s", EXPECTED_ANY, events(1))
        self.failureResultOf(
            self.store.delete_stream("$$s", EXPECTED_ANY, False, ADMIN), AccessDenied
        )
        self.failureResultOf(
            self.store.delete_stream("$all", EXPECTED_ANY, False, ADMIN), AccessDenied
        )
        self.failureResultOf(self.store.delete_stream("", EXPECTED_ANY, False, ADMIN), BadRequest)


class MetadataTests(StoreTestMixin, SynchronousTestCase):
    def set_meta(self, stream: str, meta: dict[str, Any]) -> WriteResult:
        d = self.store.set_metadata(stream, EXPECTED_ANY, json.dumps(meta).encode(), None)
        return self.settle(d)  # type: ignore[no-any-return]

    def test_get_set(self) -> None:
        self.assertEqual(self.store.get_metadata("s", None).metastream_version, -1)
        result = self.set_meta("s", {"a": 1})
        self.assertEqual(result.first_event_number, 0)
        meta = self.store.get_metadata("s", None)
        self.assertEqual((meta.metastream_version, json.loads(meta.raw)), (0, {"a": 1}))
        self.set_meta("s", {"a": 2})
        page = self.store.read_stream("$$s", 0, 10, True, False, None)
        self.assertEqual(numbers(page), [1])
        self.assertEqual(page.events[0].original.event_type, "$metadata")

    def test_max_count(self) -> None:
        self.write("s", EXPECTED_ANY, events(10))
        self.set_meta("s", {"$maxCount": 3})
        self.assertEqual(self.store.stream_metadata("s").max_count, 3)
        page = self.store.read_stream("s", 0, 100, True, False, None)
        self.assertEqual(numbers(page), [7, 8, 9])
        page = self.store.read_stream("s", 0, 2, True, False, None)
        self.assertEqual(
            (numbers(page), page.next_event_number, page.is_end_of_stream), ([], 7, False)
        )
        page = self.store.read_stream("s", -1, 100, False, False, None)
        self.assertEqual(
            (numbers(page), page.is_end_of_stream, page.next_event_number), ([9, 8, 7], True, -1)
        )
        page = self.store.read_stream("s", 5, 100, False, False, None)
        self.assertEqual((numbers(page), page.is_end_of_stream), ([], True))
        self.assertEqual(self.store.read_event("s", 6, False, None).status, ReadStatus.NOT_FOUND)

    def test_truncate_before(self) -> None:
        self.write("s", EXPECTED_ANY, events(10))
        self.set_meta("s", {"$tb": 4, "$maxCount": 0})
        page = self.store.read_stream("s", 0, 5, True, False, None)
        self.assertEqual((numbers(page), page.next_event_number), ([4], 5))
        page = self.store.read_stream("s", 9, 3, False, False, None)
        self.assertEqual(
            (numbers(page), page.next_event_number, page.is_end_of_stream), ([9, 8, 7], 6, False)
        )

    def test_max_age(self) -> None:
        self.write("s", EXPECTED_ANY, events(2))
        self.clock.advance(100)
        self.write("s", EXPECTED_ANY, events(2))
        self.set_meta("s", {"$maxAge": 50})
        page = self.store.read_stream("s", 0, 10, True, False, None)
        self.assertEqual(numbers(page), [2, 3])
        self.assertEqual(self.store.read_event("s", 0, False, None).status, ReadStatus.NOT_FOUND)
        self.clock.advance(60)
        self.assertEqual(numbers(self.store.read_stream("s", 0, 10, True, False, None)), [])

    def test_unparseable(self) -> None:
        """
        Non-JSON or malformed metadata counts as none.
        """
        self.write("s", EXPECTED_ANY, events(3))
        self.settle(self.store.set_metadata("s", EXPECTED_ANY, b"{nope", None))
        self.assertEqual(numbers(self.store.read_stream("s", 0, 10, True, False, None)), [0, 1, 2])
        self.assertEqual(self.store.get_metadata("s", None).raw, b"{nope")
        self.write(
            "$$s", EXPECTED_ANY, [NewEvent(uuid.uuid4().bytes, "$metadata", b'{"$maxCount":1}')]
        )
        self.assertEqual(numbers(self.store.read_stream("s", 0, 10, True, False, None)), [0, 1, 2])

    def test_cache_control(self) -> None:
        self.set_meta("s", {"$cacheControl": 30, "$maxAge": -5})
        meta = self.store.stream_metadata("s")
        self.assertEqual((meta.cache_control, meta.max_age), (30, None))

    def test_metadata_read_event(self) -> None:
        """
        Reading the last event of C{$$s} when C{s} exists without metadata
        gives Success with no event; when neither exists, NoStream.
        """
        result = self.store.read_event("$$s", -1, False, None)
        self.assertEqual(result.status, ReadStatus.NO_STREAM)
        self.write("s", EXPECTED_ANY, events(1))
        result = self.store.read_event("$$s", -1, False, None)
        self.assertEqual((result.status, result.event), (ReadStatus.SUCCESS, None))

    def test_metastream_metadata_refused(self) -> None:
        self.failureResultOf(
            self.store.set_metadata("$$s", EXPECTED_ANY, b"{}", None), AccessDenied
        )

    def test_metadata_survives_restart(self) -> None:
        self.write("s", EXPECTED_ANY, events(5))
        self.set_meta("s", {"$maxCount": 2})
        self.restart()
        self.assertEqual(numbers(self.store.read_stream("s", 0, 10, True, False, None)), [3, 4])


def acl_meta(**ops: Any) -> bytes:
    return json.dumps({"$acl": ops}).encode()


class AccessTests(StoreTestMixin, SynchronousTestCase):
    def test_anonymous_user_streams(self) -> None:
        self.write("s", EXPECTED_ANY, events(1))
        self.assertEqual(
            self.store.read_stream("s", 0, 1, True, False, None).status, ReadStatus.SUCCESS
        )

    def test_system_streams_admin_only(self) -> None:
        self.write_fails("$sys", EXPECTED_ANY, events(1), AccessDenied)
        self.write_fails("$sys", EXPECTED_ANY, events(1), AccessDenied, ALICE)
        self.write("$sys", EXPECTED_ANY, events(1), ADMIN)
        page = self.store.read_stream("$sys", 0, 1, True, False, None)
        self.assertEqual(
            (page.status, page.next_event_number, page.last_event_number, page.is_end_of_stream),
            (ReadStatus.ACCESS_DENIED, -1, -1, True),
        )
        self.assertEqual(
            self.store.read_event("$sys", 0, False, None).status, ReadStatus.ACCESS_DENIED
        )

    def test_stream_acl(self) -> None:
        self.write("s", EXPECTED_ANY, events(1))
        self.settle(
            self.store.set_metadata(
                "s", EXPECTED_ANY, acl_meta(**{"$r": "readers", "$w": ["bob"]}), None
            )
        )
        self.assertEqual(
            self.store.read_stream("s", 0, 1, True, False, None).status, ReadStatus.ACCESS_DENIED
        )
        self.assertEqual(
            self.store.read_stream("s", 0, 1, True, False, ALICE).status, ReadStatus.SUCCESS
        )
        self.write_fails("s", EXPECTED_ANY, events(1), AccessDenied, ALICE)
        self.write("s", EXPECTED_ANY, events(1), Principal("bob"))
        # $d not set: falls back to the default ($all).
        self.settle(self.store.delete_stream("s", EXPECTED_ANY, False, None))

    def test_meta_rights(self) -> None:
        self.settle(
            self.store.set_metadata(
                "s", EXPECTED_ANY, acl_meta(**{"$mr": "bob", "$mw": "bob"}), None
            )
        )
        self.assertRaises(AccessDenied, self.store.get_metadata, "s", None)
        self.failureResultOf(self.store.set_metadata("s", EXPECTED_ANY, b"{}", ALICE), AccessDenied)
        self.assertEqual(self.store.get_metadata("s", Principal("bob")).metastream_version, 0)
        self.assertFalse(self.store.check_access(None, "$$s", "$r"))
        self.assertTrue(self.store.check_access(Principal("bob"), "$$s", "$w"))

    def test_settings_defaults(self) -> None:
        settings = {
            "$userStreamAcl": {"$r": "readers", "$w": "readers"},
            "$systemStreamAcl": {"$r": "$all"},
        }
        self.write(
            "$settings",
            EXPECTED_ANY,
            [NewEvent(uuid.uuid4().bytes, "$settings", json.dumps(settings).encode(), b"", True)],
            ADMIN,
        )
        self.write_fails("s", EXPECTED_ANY, events(1), AccessDenied)
        self.write("s", EXPECTED_ANY, events(1), ALICE)
        self.assertEqual(
            self.store.read_stream("s", 0, 1, True, False, None).status, ReadStatus.ACCESS_DENIED
        )
        self.write("$sys", EXPECTED_ANY, events(1), ADMIN)
        self.assertEqual(
            self.store.read_stream("$sys", 0, 1, True, False, None).status, ReadStatus.SUCCESS
        )
        self.assertEqual(self.store.read_all(0, 1, True, False, None).status, ReadStatus.SUCCESS)
        self.restart()
        self.write_fails("s", EXPECTED_ANY, events(1), AccessDenied)
        self.settle(self.store.delete_stream("$settings", EXPECTED_ANY, False, ADMIN))
        self.write("s", EXPECTED_ANY, events(1))

    def test_empty_stream_is_all(self) -> None:
        self.assertFalse(self.store.check_access(None, "", "$r"))
        self.assertTrue(self.store.check_access(ADMIN, "", "$r"))

    def test_all_stream_acl(self) -> None:
        self.settle(
            self.store.set_metadata("$all", EXPECTED_ANY, acl_meta(**{"$r": "$all"}), ADMIN)
        )
        self.assertEqual(self.store.read_all(0, 1, True, False, None).status, ReadStatus.SUCCESS)


class LinkTests(StoreTestMixin, SynchronousTestCase):
    def link(self, target: str) -> NewEvent:
        return NewEvent(uuid.uuid4().bytes, "$>", target.encode())

    def test_resolve(self) -> None:
        evs = events(2)
        self.write("target", EXPECTED_ANY, evs)
        self.write(
            "links",
            EXPECTED_ANY,
            [self.link("1@target"), self.link("7@target"), self.link("garbage")],
        )
        page = self.store.read_stream("links", 0, 10, True, True, None)
        first, missing, plain = page.events
        assert first.event is not None and first.link is not None
        self.assertEqual(first.event.event_id, evs[1].event_id)
        self.assertEqual(first.link.event_number, 0)
        self.assertEqual((missing.event, missing.original.event_number), (None, 1))
        self.assertEqual((plain.link, plain.original.event_number), (None, 2))
        raw = self.store.read_stream("links", 0, 10, True, False, None)
        self.assertEqual([e.link for e in raw.events], [None, None, None])
        single = self.store.read_event("links", 0, True, None)
        assert single.event is not None and single.event.event is not None
        self.assertEqual(single.event.event.stream, "target")

    def test_resolve_denied(self) -> None:
        self.write("$secret", EXPECTED_ANY, events(1), ADMIN)
        self.write("links", EXPECTED_ANY, [self.link("0@$secret")])
        page = self.store.read_stream("links", 0, 10, True, True, None)
        self.assertEqual(page.status, ReadStatus.ACCESS_DENIED)
        self.assertEqual(
            self.store.read_stream("links", 0, 10, True, True, ADMIN).status, ReadStatus.SUCCESS
        )

    def test_resolve_in_all(self) -> None:
        self.write("target", EXPECTED_ANY, events(1))
        self.write("links", EXPECTED_ANY, [self.link("0@target")])
        page = self.store.read_all(-1, 1, False, True, ADMIN)
        resolved = page.events[0]
        assert resolved.event is not None and resolved.link is not None
        self.assertEqual((resolved.event.stream, resolved.link.stream), ("target", "links"))


class TransactionTests(StoreTestMixin, SynchronousTestCase):
    def test_commit(self) -> None:
        tid = self.store.start_transaction("s", EXPECTED_NO_STREAM, None)
        self.assertGreaterEqual(tid, 0)
        self.store.transaction_write(tid, events(2), None)
        self.store.transaction_write(tid, events(1), None)
        self.assertEqual(self.store.last_event_number("s"), -1)
        result = self.settle(self.store.commit_transaction(tid, None))
        self.assertEqual((result.first_event_number, result.last_event_number), (0, 2))
        self.failureResultOf(self.store.commit_transaction(tid, None), InvalidTransaction)

    def test_ids_differ_across_stores(self) -> None:
        """
        Transaction ids are random (63 bits), not counted from 0: a second
        store (another node after a failover, or this one restarted) does
        not hand out the ids of the first, so a client's retry can never
        write into someone else's transaction.
        """
        first = [self.store.start_transaction("s", EXPECTED_ANY, None) for _ in range(3)]
        other = StreamStore(MemoryLog(), StreamIndex(), self.clock)
        second = [other.start_transaction("s", EXPECTED_ANY, None) for _ in range(3)]
        self.assertEqual(len(set(first + second)), 6)
        self.assertTrue(all(0 <= t < 2**63 for t in first + second))
        self.assertRaises(InvalidTransaction, other.transaction_write, first[0], events(1), None)

    def test_id_collision_drawn_again(self) -> None:
        """
        A drawn id already in use is drawn again.
        """
        draws = iter([b"\x00" * 7 + b"\x02", b"\x00" * 7 + b"\x02", b"\x00" * 7 + b"\x04"])
        store = StreamStore(
            MemoryLog(), StreamIndex(), self.clock, random_bytes=lambda n: next(draws)
        )
        self.assertEqual(store.start_transaction("s", EXPECTED_ANY, None), 1)
        self.assertEqual(store.start_transaction("s", EXPECTED_ANY, None), 2)

    def test_wrong_version_at_commit(self) -> None:
        tid = self.store.start_transaction("s", 5, None)
        self.store.transaction_write(tid, events(1), None)
        d = self.store.commit_transaction(tid, None)
        self.clock.advance(0)
        self.failureResultOf(d, WrongExpectedVersion)

    def test_empty(self) -> None:
        tid = self.store.start_transaction("s", EXPECTED_ANY, None)
        result = self.settle(self.store.commit_transaction(tid, None))
        self.assertEqual((result.first_event_number, result.last_event_number), (0, -1))

    def test_errors(self) -> None:
        self.assertRaises(InvalidTransaction, self.store.transaction_write, 99, events(1), None)
        self.assertRaises(AccessDenied, self.store.start_transaction, "$sys", EXPECTED_ANY, None)
        self.assertRaises(AccessDenied, self.store.start_transaction, "$all", EXPECTED_ANY, None)
        tid = self.store.start_transaction("s", EXPECTED_ANY, None)
        self.assertRaises(BadRequest, self.store.transaction_write, tid, [NewEvent(b"", "t")], None)


# -- the rule-based state machine --------------------------------------------


STREAMS = ("a", "b", "c")

#: Expected-version choices: a constant, or a name resolved against the
#: model ("current", "current-1", "current+1", "old").
EXPECTED_CHOICES = st.sampled_from(
    [
        EXPECTED_ANY,
        EXPECTED_NO_STREAM,
        EXPECTED_STREAM_EXISTS,
        "current",
        "current",
        "current-1",
        "current+1",
        "old",
        0,
        1,
    ]
)


class _ModelStream:
    """
    The plain model of one stream.
    """

    def __init__(self) -> None:
        self.ids: list[bytes] = []
        self.hard_deleted = False
        self.meta_count = 0
        self.meta: Optional[dict[str, Any]] = None

    @property
    def current(self) -> int:
        return DELETED_STREAM if self.hard_deleted else len(self.ids) - 1

    def _int(self, key: str, minimum: int) -> Optional[int]:
        value = (self.meta or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        return None

    @property
    def soft_deleted(self) -> bool:
        return self._int("$tb", 0) == DELETED_STREAM

    @property
    def lowest(self) -> int:
        lowest = 0
        max_count = self._int("$maxCount", 1)
        if max_count is not None:
            lowest = max(lowest, len(self.ids) - max_count)
        tb = self._int("$tb", 0)
        if tb is not None:
            lowest = max(lowest, tb)
        return lowest

    def visible(self) -> list[int]:
        return list(range(self.lowest, len(self.ids)))


class _Model:
    def __init__(self) -> None:
        self.streams = {name: _ModelStream() for name in STREAMS}
        self.recent: dict[bytes, tuple[str, int]] = {}
        self.writes: dict[str, list[list[bytes]]] = {name: [] for name in STREAMS}

    def append(self, name: str, expected: int, ids: list[bytes]) -> Any:
        """
        Decide and apply a write as tcp-protocol.md 6.2 says.

        @return: C{(first, last, wrote)} or an exception class.
        """
        s = self.streams[name]
        current = s.current
        if s.hard_deleted:
            return StreamDeleted
        if expected == EXPECTED_STREAM_EXISTS:
            if s.soft_deleted:
                return StreamDeleted
            if current == -1 and s.meta_count == 0:
                return WrongExpectedVersion
        if expected in (EXPECTED_ANY, EXPECTED_STREAM_EXISTS):
            if not ids:
                return (current + 1, current, False)
            first = self.recent.get(ids[0])
            if first is not None and first[0] == name:
                known = [self.recent.get(i) for i in ids]
                if all(k is not None and k[0] == name for k in known):
                    return (first[1], known[-1][1], False)  # type: ignore[index]
                return WrongExpectedVersion
        elif expected < current:
            if not ids:
                return WrongExpectedVersion
            for i, event_id in enumerate(ids):
                number = expected + 1 + i
                if number > current or s.ids[number] != event_id:
                    if i == 0 and expected == EXPECTED_NO_STREAM and s.soft_deleted:
                        break
                    return WrongExpectedVersion
            else:
                return (expected + 1, expected + len(ids), False)
        elif expected > current:
            return WrongExpectedVersion
        first_number = len(s.ids)
        for event_id in ids:
            self.recent[event_id] = (name, len(s.ids))
            s.ids.append(event_id)
        if s.soft_deleted and ids:
            meta = dict(s.meta or {})
            meta["$tb"] = first_number
            s.meta = meta
            s.meta_count += 1
        self.writes[name].append(ids)
        return (first_number, len(s.ids) - 1, bool(ids))

    def set_metadata(self, name: str, meta: dict[str, Any]) -> Any:
        s = self.streams[name]
        if s.hard_deleted:
            return StreamDeleted
        if s.soft_deleted:
            undelete = dict(s.meta or {})
            undelete["$tb"] = len(s.ids)
            s.meta_count += 1
        s.meta = meta
        s.meta_count += 1
        return (s.meta_count - 1, s.meta_count - 1, True)

    def delete(self, name: str, expected: int, hard: bool) -> Any:
        s = self.streams[name]
        current = s.current
        if s.hard_deleted:
            return StreamDeleted
        if expected == EXPECTED_STREAM_EXISTS:
            if s.soft_deleted:
                return StreamDeleted
            if current == -1 and s.meta_count == 0:
                return WrongExpectedVersion
        elif expected == EXPECTED_NO_STREAM:
            if current != -1 and not s.soft_deleted:
                return WrongExpectedVersion
        elif expected != EXPECTED_ANY and expected != current:
            return WrongExpectedVersion
        if hard:
            s.hard_deleted = True
        else:
            s.meta = {"$tb": DELETED_STREAM}
            s.meta_count += 1
        return True


class StreamStoreMachine(RuleBasedStateMachine):
    """
    Drives a L{StreamStore} and L{_Model} with the same operations and
    compares every result.
    """

    def make_log(self) -> Any:
        return MemoryLog()

    def reopen_log(self, log: Any) -> Any:
        return log

    @initialize()
    def start(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.log = self.make_log()
        self.store = StreamStore(self.log, rebuild_index(self.log), self.clock)
        self.model = _Model()

    def teardown(self) -> None:
        log = getattr(self, "log", None)
        if log is not None:
            log.close()

    def resolve_expected(self, name: str, choice: Any) -> int:
        s = self.model.streams[name]
        current = -1 if s.hard_deleted else len(s.ids) - 1
        if choice == "current":
            return current
        if choice == "current-1":
            return max(-1, current - 1)
        if choice == "current+1":
            return current + 1
        if choice == "old":
            return max(-1, current - 2)
        assert isinstance(choice, int)
        return choice

    def check_write(self, d: Deferred[WriteResult], expected: Any) -> None:
        if isinstance(expected, type):
            failure = self._failure(d)
            assert failure is not None and failure.check(expected), (expected, failure)
            return
        result = self._result(d)
        if expected is True:
            assert isinstance(result, WriteResult)
            return
        first, last, wrote = expected
        assert (result.first_event_number, result.last_event_number) == (first, last), (
            result,
            expected,
        )
        if wrote:
            assert result.position > 0, result
        else:
            assert result.position == -1, result

    def _result(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        assert len(results) == 1, "Deferred did not fire"
        assert not hasattr(results[0], "check"), results[0]
        return results[0]

    def _failure(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        assert len(results) == 1, "Deferred did not fire"
        assert hasattr(results[0], "check"), results[0]
        return results[0]

    def pick_ids(self, name: str, data: st.DataObject, count: int) -> list[bytes]:
        kind = data.draw(st.sampled_from(["fresh", "fresh", "retry", "partial", "other"]))
        fresh = [uuid.uuid4().bytes for _ in range(count)]
        writes = self.model.writes[name]
        if kind == "retry" and writes:
            return list(data.draw(st.sampled_from(writes)))
        if kind == "partial" and writes:
            old = data.draw(st.sampled_from(writes))
            return list(old[:1]) + fresh[: max(1, count)]
        if kind == "other":
            others = [w for n, ws in self.model.writes.items() if n != name for w in ws]
            if others:
                return list(data.draw(st.sampled_from(others)))
        return fresh

    @rule(
        name=st.sampled_from(STREAMS),
        choice=EXPECTED_CHOICES,
        count=st.integers(0, 3),
        data=st.data(),
    )
    def append(self, name: str, choice: Any, count: int, data: st.DataObject) -> None:
        expected = self.resolve_expected(name, choice)
        ids = self.pick_ids(name, data, count)
        d = self.store.append(
            name, expected, [NewEvent(i, "t", b"{}", b"", True) for i in ids], None
        )
        outcome = self.model.append(name, expected, ids)
        if not isinstance(outcome, type):
            self.assertNoResultYet(d)
        self.clock.advance(0)
        self.check_write(d, outcome)

    @rule(
        name1=st.sampled_from(STREAMS),
        name2=st.sampled_from(STREAMS),
        choice1=EXPECTED_CHOICES,
        choice2=EXPECTED_CHOICES,
        data=st.data(),
    )
    def two_appends_one_turn(
        self, name1: str, name2: str, choice1: Any, choice2: Any, data: st.DataObject
    ) -> None:
        """
        Two writes in one reactor turn: the second is decided against the
        first's pending state.
        """
        expected1 = self.resolve_expected(name1, choice1)
        ids1 = self.pick_ids(name1, data, 2)
        d1 = self.store.append(name1, expected1, [NewEvent(i, "t") for i in ids1], None)
        outcome1 = self.model.append(name1, expected1, ids1)
        expected2 = self.resolve_expected(name2, choice2)
        ids2 = self.pick_ids(name2, data, 1)
        d2 = self.store.append(name2, expected2, [NewEvent(i, "t") for i in ids2], None)
        outcome2 = self.model.append(name2, expected2, ids2)
        self.clock.advance(0)
        self.check_write(d1, outcome1)
        self.check_write(d2, outcome2)

    @rule(
        name=st.sampled_from(STREAMS),
        choice=EXPECTED_CHOICES,
        sizes=st.lists(st.integers(0, 2), max_size=3),
        data=st.data(),
    )
    def transaction(self, name: str, choice: Any, sizes: list[int], data: st.DataObject) -> None:
        """
        A transaction decides like one write of all its events, at commit.
        """
        expected = self.resolve_expected(name, choice)
        tid = self.store.start_transaction(name, expected, None)
        ids: list[bytes] = []
        for size in sizes:
            chunk = self.pick_ids(name, data, size)
            ids += chunk
            self.store.transaction_write(tid, [NewEvent(i, "t") for i in chunk], None)
        d = self.store.commit_transaction(tid, None)
        outcome = self.model.append(name, expected, ids)
        self.clock.advance(0)
        self.check_write(d, outcome)

    @rule(name=st.sampled_from(STREAMS), choice=EXPECTED_CHOICES, hard=st.booleans())
    def delete(self, name: str, choice: Any, hard: bool) -> None:
        if hard and self.model.streams[name].hard_deleted is False and len(STREAMS) > 1:
            # Keep most runs alive: hard deletes are permanent.
            pass
        expected = self.resolve_expected(name, choice)
        d = self.store.delete_stream(name, expected, hard, None)
        outcome = self.model.delete(name, expected, hard)
        self.clock.advance(0)
        self.check_write(d, outcome)

    @rule(
        name=st.sampled_from(STREAMS),
        max_count=st.one_of(st.none(), st.integers(-1, 4)),
        tb=st.one_of(st.none(), st.integers(0, 6), st.just(DELETED_STREAM)),
        custom=st.booleans(),
    )
    def set_metadata(
        self, name: str, max_count: Optional[int], tb: Optional[int], custom: bool
    ) -> None:
        meta: dict[str, Any] = {}
        if max_count is not None:
            meta["$maxCount"] = max_count
        if tb is not None:
            meta["$tb"] = tb
        if custom:
            meta["custom"] = "x"
        d = self.store.set_metadata(name, EXPECTED_ANY, json.dumps(meta).encode(), None)
        outcome = self.model.set_metadata(name, meta)
        self.clock.advance(0)
        self.check_write(d, outcome)

    @rule()
    def failed_flush(self) -> None:
        """
        A write whose flush fails changes nothing.
        """
        alive = [n for n in STREAMS if not self.model.streams[n].hard_deleted]
        if not alive:
            return
        name = alive[0]
        real_flush = self.log.flush

        def broken() -> int:
            raise StorageError("injected")

        self.log.flush = broken
        ids = [uuid.uuid4().bytes]
        d = self.store.append(name, EXPECTED_ANY, [NewEvent(ids[0], "t")], None)
        try:
            self.clock.advance(0)
        finally:
            self.log.flush = real_flush
        self.check_write(d, StorageError)
        d = self.store.append(name, EXPECTED_ANY, [NewEvent(ids[0], "t")], None)
        self.clock.advance(0)
        self.check_write(d, self.model.append(name, EXPECTED_ANY, ids))

    @rule()
    def restart(self) -> None:
        self.log = self.reopen_log(self.log)
        self.store = StreamStore(self.log, rebuild_index(self.log), self.clock)
        # the idempotency window is rebuilt from the log: a restart keeps
        # every event id the model remembers (issue 11, item 2)

    @rule(
        name=st.sampled_from(STREAMS),
        start=st.integers(-1, 12),
        count=st.integers(0, 6),
        forward=st.booleans(),
    )
    def read_page(self, name: str, start: int, count: int, forward: bool) -> None:
        s = self.model.streams[name]
        page = self.store.read_stream(name, start, count, forward, False, None)
        if forward and start < 0:
            assert page.status == ReadStatus.ERROR
            return
        if s.hard_deleted:
            assert page.status == ReadStatus.STREAM_DELETED, page
            assert page.last_event_number == DELETED_STREAM
            return
        if not s.ids or s.soft_deleted:
            assert (page.status, page.next_event_number, page.last_event_number) == (
                ReadStatus.NO_STREAM,
                -1,
                -1,
            ), page
            return
        assert page.status == ReadStatus.SUCCESS, page
        last = len(s.ids) - 1
        lowest = s.lowest
        got = numbers(page)
        assert [e.original.event_id for e in page.events] == [s.ids[n] for n in got]
        assert page.last_event_number == last
        if forward:
            end = start + count - 1
            want = [n for n in range(max(start, lowest), end + 1) if n <= last]
            assert got == want, (got, want)
            if end < lowest:
                assert (page.next_event_number, page.is_end_of_stream) == (lowest, False), page
            else:
                assert page.next_event_number == (want[-1] + 1 if want else min(end + 1, last + 1))
                assert page.is_end_of_stream == (end >= last)
        else:
            end = last if start < 0 else start
            first = max(0, end - count + 1, lowest)
            want = [n for n in range(end, first - 1, -1) if n <= last]
            if end < lowest:
                want = []
            assert got == want, (got, want, page)

    @rule(name=st.sampled_from(STREAMS), number=st.integers(-1, 12))
    def read_event(self, name: str, number: int) -> None:
        s = self.model.streams[name]
        result = self.store.read_event(name, number, False, None)
        if s.hard_deleted:
            assert result.status == ReadStatus.STREAM_DELETED
        elif not s.ids or s.soft_deleted:
            assert result.status == ReadStatus.NO_STREAM
        else:
            n = len(s.ids) - 1 if number == -1 else number
            if s.lowest <= n < len(s.ids):
                assert result.status == ReadStatus.SUCCESS
                assert result.event is not None
                assert result.event.original.event_id == s.ids[n]
            else:
                assert result.status == ReadStatus.NOT_FOUND, result

    @invariant()
    def versions_agree(self) -> None:
        if not hasattr(self, "store"):
            return
        for name, s in self.model.streams.items():
            want = DELETED_STREAM if s.hard_deleted else len(s.ids) - 1
            assert self.store.last_event_number(name) == want, (name, want)
            if not s.hard_deleted:
                meta = self.store.get_metadata(name, None)
                assert meta.metastream_version == s.meta_count - 1, (meta, s.meta_count)
                if s.meta is not None:
                    assert json.loads(meta.raw) == s.meta, (meta.raw, s.meta)

    @invariant()
    def full_scans_agree(self) -> None:
        """
        Paging a whole stream forward or backward gives the visible events.
        """
        if not hasattr(self, "store"):
            return
        for name, s in self.model.streams.items():
            if s.hard_deleted or not s.ids or s.soft_deleted:
                continue
            seen: list[int] = []
            start = 0
            for _ in range(50):
                page = self.store.read_stream(name, start, 2, True, False, None)
                seen += numbers(page)
                if page.is_end_of_stream:
                    break
                start = page.next_event_number
            assert seen == s.visible(), (seen, s.visible())
            back: list[int] = []
            start = -1
            for _ in range(50):
                page = self.store.read_stream(name, start, 2, False, False, None)
                back += numbers(page)
                if page.is_end_of_stream:
                    break
                start = page.next_event_number
            assert back == s.visible()[::-1], (back, s.visible())

    def assertNoResultYet(self, d: Deferred[Any]) -> None:
        results: list[Any] = []

        def seen(result: Any) -> Any:
            results.append(result)
            return result

        d.addBoth(seen)
        assert results == [], "acknowledged before the flush"


class ChunkedLogStreamStoreMachine(StreamStoreMachine):
    """
    The same machine on a L{ChunkedLog} with tiny chunks; a restart closes
    the log and opens it again from its files.
    """

    def make_log(self) -> Any:
        from estwisted.storage.log import MIN_CHUNK_SIZE, ChunkedLog

        self.directory = tempfile.mkdtemp(prefix="estwisted-machine-")
        return ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)

    def reopen_log(self, log: Any) -> Any:
        from estwisted.storage.log import MIN_CHUNK_SIZE, ChunkedLog

        log.close()
        return ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            directory = getattr(self, "directory", None)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


class StateMachineTests(SynchronousTestCase):
    def test_memory_log(self) -> None:
        """
        The machine on L{MemoryLog}.
        """
        try:
            run_state_machine_as_test(StreamStoreMachine)
        finally:
            self.flushLoggedErrors(StorageError)

    def test_chunked_log(self) -> None:
        """
        The machine on L{ChunkedLog} (files in a temporary directory).
        """
        try:
            run_state_machine_as_test(
                ChunkedLogStreamStoreMachine, settings=settings(max_examples=40)
            )
        finally:
            self.flushLoggedErrors(StorageError)
