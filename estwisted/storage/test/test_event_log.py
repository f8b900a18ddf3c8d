# -*- test-case-name: estwisted.storage.test.test_event_log -*-
"""
One behavioural suite for every L{IEventLog}: L{MemoryLog} and L{ChunkedLog}
must be interchangeable above the storage layer.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from typing import Any, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from estwisted.core.interfaces import IEventLog
from estwisted.core.model import FLAG_JSON, FLAG_SYSTEM, EventRecord, NewEvent
from estwisted.storage.flushing import FlushJob
from estwisted.storage.log import ChunkedLog
from estwisted.storage.memory import MemoryLog


def _event(i: int, size: int = 10) -> dict[str, Any]:
    return dict(
        stream=f"stream-{i % 5}",
        event_number=i // 5,
        event_id=i.to_bytes(16, "big"),
        event_type=f"type-{i}",
        flags=FLAG_JSON if i % 2 else 0,
        data=bytes([i % 256]) * size,
        metadata=b"{}" if i % 3 else b"",
        created=637000000000000000 + i,
    )


def _fields(record: EventRecord) -> dict[str, Any]:
    return dict(
        stream=record.stream,
        event_number=record.event_number,
        event_id=record.event_id,
        event_type=record.event_type,
        flags=record.flags,
        data=record.data,
        metadata=record.metadata,
        created=record.created,
    )


class EventLogTestsMixin:
    """
    Tests every L{IEventLog} must pass.  Subclasses define L{make_log} and
    L{reopen}.
    """

    def make_log(self) -> Any:
        raise NotImplementedError

    def reopen(self, log: Any) -> Optional[Any]:
        """
        Close C{log} and open it again, or C{None} if it cannot persist.
        """
        raise NotImplementedError

    def _append(self, log: Any, n: int, start: int = 0, size: int = 10) -> list[int]:
        return [log.append(**_event(i, size)) for i in range(start, start + n)]

    def test_interface(self: Any) -> None:
        log = self.make_log()
        self.assertTrue(verifyObject(IEventLog, log))

    def test_first_position_above_zero(self: Any) -> None:
        """
        The log starts with a system record, so the first client record is
        at a position above 0 and reads skip the system record.
        """
        log = self.make_log()
        self.assertGreater(log.end_position, 0)
        self.assertEqual(log.pending_position, log.end_position)
        self.assertEqual(log.read_forward(0, 10), [])
        self.assertEqual(log.read_backward(log.end_position, 10), [])
        system = log.read(0)
        self.assertTrue(system.flags & FLAG_SYSTEM)
        [position] = self._append(log, 1)
        self.assertGreater(position, 0)
        self.assertEqual(position, log.end_position)

    def test_unflushed_invisible(self: Any) -> None:
        """
        Appended records are invisible until flushed; positions increase.
        """
        log = self.make_log()
        end = log.end_position
        positions = self._append(log, 3)
        self.assertEqual(positions, sorted(set(positions)))
        self.assertEqual(log.end_position, end)
        self.assertGreater(log.pending_position, positions[-1])
        self.assertEqual(log.read_forward(0, 10), [])
        self.assertRaises(KeyError, log.read, positions[0])
        self.assertEqual(log.flush(), log.pending_position)
        self.assertEqual(log.end_position, log.pending_position)
        self.assertEqual([r.position for r in log.read_forward(0, 10)], positions)

    def test_read_fields(self: Any) -> None:
        """
        A flushed record reads back with every field and its positions.
        """
        log = self.make_log()
        positions = self._append(log, 4)
        log.flush()
        for i, position in enumerate(positions):
            record = log.read(position)
            self.assertEqual(_fields(record), _event(i))
            self.assertEqual(record.position, position)
            self.assertEqual(record.next_position, (positions + [log.end_position])[i + 1])

    def test_read_missing(self: Any) -> None:
        log = self.make_log()
        [position] = self._append(log, 1)
        log.flush()
        self.assertRaises(KeyError, log.read, position + 1)
        self.assertRaises(KeyError, log.read, log.end_position)
        self.assertRaises(KeyError, log.read, -5)

    def test_read_forward(self: Any) -> None:
        log = self.make_log()
        positions = self._append(log, 20)
        log.flush()
        self.assertEqual([r.position for r in log.read_forward(0, 100)], positions)
        self.assertEqual([r.position for r in log.read_forward(positions[5], 3)], positions[5:8])
        self.assertEqual(
            [r.position for r in log.read_forward(positions[5] + 1, 3)], positions[6:9]
        )
        self.assertEqual(log.read_forward(log.end_position, 10), [])
        self.assertEqual(log.read_forward(log.end_position + 1000, 10), [])
        self.assertEqual([r.position for r in log.read_forward(-10, 2)], positions[:2])

    def test_read_backward(self: Any) -> None:
        log = self.make_log()
        positions = self._append(log, 20)
        log.flush()
        back = positions[::-1]
        self.assertEqual([r.position for r in log.read_backward(log.end_position, 100)], back)
        self.assertEqual(
            [r.position for r in log.read_backward(log.end_position + 99, 2)], back[:2]
        )
        self.assertEqual([r.position for r in log.read_backward(positions[5], 3)], back[15:18])
        self.assertEqual([r.position for r in log.read_backward(positions[5] + 1, 3)], back[14:17])
        self.assertEqual(log.read_backward(positions[0], 10), [])

    def test_discard(self: Any) -> None:
        log = self.make_log()
        kept = self._append(log, 2)
        log.flush()
        end = log.end_position
        self._append(log, 3, start=2)
        log.discard()
        self.assertEqual(log.pending_position, end)
        self.assertEqual(log.flush(), end)
        again = self._append(log, 1, start=7)
        self.assertEqual(again, [end])
        log.flush()
        records = log.read_forward(0, 10)
        self.assertEqual([r.position for r in records], kept + again)
        self.assertEqual(_fields(records[-1]), _event(7))

    def test_flush_nothing(self: Any) -> None:
        log = self.make_log()
        end = log.end_position
        self.assertEqual(log.flush(), end)
        self.assertEqual(log.flush(), end)

    def test_many_and_large(self: Any) -> None:
        """
        Many records of varied sizes, flushed in batches, read back in both
        directions.
        """
        log = self.make_log()
        positions = []
        for i in range(300):
            positions.append(log.append(**_event(i, size=(i * 37) % 3000)))
            if i % 17 == 0:
                log.flush()
        log.flush()
        forward = []
        p = 0
        while True:
            page = log.read_forward(p, 50)
            if not page:
                break
            forward.extend(page)
            p = page[-1].next_position
        self.assertEqual([r.position for r in forward], positions)
        expected = [_event(i, (i * 37) % 3000) for i in range(300)]
        self.assertEqual([_fields(r) for r in forward], expected)
        backward = []
        p = log.end_position
        while True:
            page = log.read_backward(p, 50)
            if not page:
                break
            backward.extend(page)
            p = page[-1].position
        self.assertEqual([r.position for r in backward], positions[::-1])

    def test_reopen(self: Any) -> None:
        log = self.make_log()
        positions = self._append(log, 10)
        log.flush()
        end = log.end_position
        self._append(log, 2, start=10)
        log.discard()
        again = self.reopen(log)
        if again is None:
            return
        self.assertEqual(again.end_position, end)
        self.assertEqual(again.pending_position, end)
        records = again.read_forward(0, 100)
        self.assertEqual([r.position for r in records], positions)
        self.assertEqual([_fields(r) for r in records], [_event(i) for i in range(10)])
        more = self._append(again, 3, start=10)
        self.assertEqual(more[0], end)
        again.flush()
        self.assertEqual(len(again.read_forward(0, 100)), 13)

    def test_close_flushes(self: Any) -> None:
        log = self.make_log()
        positions = self._append(log, 3)
        again = self.reopen(log)
        if again is None:
            return
        self.assertEqual([r.position for r in again.read_forward(0, 10)], positions)

    @settings(max_examples=30, suppress_health_check=[HealthCheck.differing_executors])
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("append"), st.integers(0, 2000)),
                st.just(("flush", 0)),
                st.just(("discard", 0)),
                st.just(("reopen", 0)),
            ),
            max_size=60,
        )
    )
    def test_model(self: Any, steps: list[tuple[str, int]]) -> None:
        """
        Random appends, flushes, discards and reopens: reads always match a
        list of the flushed records.
        """
        log = self.make_log()
        flushed: list[tuple[int, dict[str, Any]]] = []
        pending: list[tuple[int, dict[str, Any]]] = []
        i = 0
        try:
            for op, size in steps:
                if op == "append":
                    event = _event(i, size)
                    i += 1
                    pending.append((log.append(**event), event))
                elif op == "flush":
                    log.flush()
                    flushed.extend(pending)
                    pending = []
                elif op == "discard":
                    log.discard()
                    pending = []
                else:
                    again = self.reopen(log)
                    if again is not None:
                        log = again
                        flushed.extend(pending)
                        pending = []
                records = log.read_forward(0, 10_000)
                self.assertEqual([(r.position, _fields(r)) for r in records], flushed)
                back = log.read_backward(log.end_position, 10_000)
                self.assertEqual([r.position for r in back], [p for p, _ in flushed][::-1])
                for position, event in flushed[-3:]:
                    self.assertEqual(_fields(log.read(position)), event)
        finally:
            log.close()


    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow],
    )
    @given(
        st.lists(
            st.lists(st.tuples(st.integers(0, 2500), st.booleans()), min_size=1, max_size=6),
            max_size=6,
        )
    )
    def test_append_many_like_append(self: Any, writes: list[list[tuple[int, bool]]]) -> None:
        """
        C{append_many} buffers the records one C{append} per event would,
        rolling over into new chunks the same way; they read back whole.
        """
        one = self.make_log()
        many = self.make_log()
        try:
            i = 0
            for w, write in enumerate(writes):
                stream = f"s{w % 3}"
                events: list[NewEvent] = []
                expected: list[int] = []
                for size, is_json in write:
                    event_id = i.to_bytes(16, "big")
                    events.append(NewEvent(event_id, f"t{i}", b"d" * size, b"m", is_json))
                    expected.append(
                        one.append(
                            stream,
                            10 + len(expected),
                            event_id,
                            f"t{i}",
                            FLAG_JSON if is_json else 0,
                            b"d" * size,
                            b"m",
                            5,
                        )
                    )
                    i += 1
                positions, nexts = many.append_many(stream, 10, events, 5)
                self.assertEqual(positions, expected)
                self.assertEqual(nexts[-1], one.pending_position)
                self.assertEqual(many.pending_position, one.pending_position)
            self.assertEqual(one.flush(), many.flush())
            self.assertEqual(
                [_fields(r) for r in one.read_forward(0, 1000)],
                [_fields(r) for r in many.read_forward(0, 1000)],
            )
            for r in many.read_forward(0, 1000):
                self.assertEqual(many.read(r.position), r)
        finally:
            one.close()
            many.close()


class MemoryLogTests(EventLogTestsMixin, SynchronousTestCase):
    def make_log(self) -> MemoryLog:
        return MemoryLog()

    def reopen(self, log: Any) -> None:
        return None


class ChunkedLogTests(EventLogTestsMixin, SynchronousTestCase):
    """
    The same suite on disk, with small chunks so records roll over.
    """

    chunk_size = 8192

    def make_log(self) -> ChunkedLog:
        path = tempfile.mkdtemp(prefix="estw-log-")
        self.addCleanup(shutil.rmtree, path, True)
        log = ChunkedLog(path, chunk_size=self.chunk_size)
        self.addCleanup(log.close)
        return log

    def reopen(self, log: Any) -> ChunkedLog:
        log.close()
        again = ChunkedLog(log.path, chunk_size=self.chunk_size)
        self.addCleanup(again.close)
        return again


class ChunkedLogLargeChunkTests(ChunkedLogTests):
    chunk_size = 1 << 20


class ChunkedLogDsyncTests(ChunkedLogTests):
    """
    The same with C{O_DSYNC} writes and the checkpoint synced every flush.
    """

    def make_log(self) -> ChunkedLog:
        path = tempfile.mkdtemp(prefix="estw-log-")
        self.addCleanup(shutil.rmtree, path, True)
        log = ChunkedLog(path, chunk_size=self.chunk_size, dsync=True, sync_checkpoint=True)
        self.addCleanup(log.close)
        return log

    def reopen(self, log: Any) -> ChunkedLog:
        log.close()
        again = ChunkedLog(log.path, chunk_size=self.chunk_size, dsync=True, sync_checkpoint=True)
        self.addCleanup(again.close)
        return again


class FlushJobTests(SynchronousTestCase):
    """
    L{FlushJob}'s completion: C{done} and C{wait}, from the thread that
    runs it or another one.
    """

    def test_done_after_run(self) -> None:
        """
        C{done} and C{wait} are false (C{wait} after its timeout) until
        C{run} returned, then true; a failure is kept in C{error}; a second
        C{run} keeps the job done.
        """

        class Failing(FlushJob):
            def write(self) -> None:
                raise OSError("disk")

        job = Failing(10)
        self.assertFalse(job.done)
        self.assertFalse(job.wait(0))
        self.assertFalse(job.wait(0.001))
        job.run()
        self.assertTrue(job.done)
        self.assertTrue(job.wait())
        self.assertTrue(job.wait(0))
        self.assertIsInstance(job.error, OSError)
        job.run()
        self.assertTrue(job.done)
        self.assertTrue(job.wait(0))

    def test_wait_for_another_thread(self) -> None:
        """
        C{wait} returns once another thread's C{run} returned.
        """
        ran: list[int] = []

        class Recording(FlushJob):
            def write(self) -> None:
                ran.append(self.end)

        job = Recording(7)
        thread = threading.Thread(target=job.run)
        thread.start()
        try:
            self.assertTrue(job.wait(10))
        finally:
            thread.join(10)
        self.assertEqual((ran, job.done, job.error), ([7], True, None))

    def test_fail(self) -> None:
        """
        C{fail} ends the job with the error, without running C{write}.
        """
        ran: list[int] = []

        class Recording(FlushJob):
            def write(self) -> None:
                ran.append(self.end)

        job = Recording(3)
        error = OSError("no space")
        job.fail(error)
        self.assertEqual((ran, job.done, job.error, job.wait(0)), ([], True, error, True))
