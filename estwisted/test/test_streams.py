"""
Tests for L{estwisted.streams}.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.errors import (
    AccessDenied,
    BadRequest,
    InvalidTransaction,
    NotAuthenticated,
    StorageError,
    StreamDeleted,
    WrongExpectedVersion,
)
from estwisted.model import (
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
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.streams import MAX_EVENT_SIZE, StreamStore

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
        self.store = StreamStore(self.log, self.index, self.clock, password_iterations=10)

    def restart(self) -> None:
        self.index = rebuild_index(self.log)
        self.store = StreamStore(self.log, self.index, self.clock, password_iterations=10)

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


class UsersInStoreTests(StoreTestMixin, SynchronousTestCase):
    def test_default_users(self) -> None:
        self.settle(self.store.users.ensure_default_users())
        principal = self.store.authenticate("admin", "changeit")
        self.assertEqual(principal, Principal("admin", frozenset({"$admins"})))
        self.assertEqual(self.store.authenticate("ops", "changeit").groups, frozenset({"$ops"}))
        self.assertRaises(NotAuthenticated, self.store.authenticate, "admin", "wrong")
        self.assertRaises(NotAuthenticated, self.store.authenticate, "nobody", "changeit")


# Silence unused-import warnings for names used by later tests.
_ = (DELETED_STREAM, FLAG_TOMBSTONE, InvalidTransaction, StreamDeleted, ALICE)
