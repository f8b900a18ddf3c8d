"""
Tests for L{estwisted.core.groupcommit} with a flusher: the flush's blocking half
off the reactor turn, at most one in flight, the next batch forming behind.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Any, Optional

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import StorageError
from estwisted.core.groupcommit import SynchronousFlusher, ThreadFlusher
from estwisted.core.model import EXPECTED_ANY, EventRecord, NewEvent, WriteResult
from estwisted.core.streams import StreamStore
from estwisted.storage.flushing import FlushJob
from estwisted.storage.index import StreamIndex
from estwisted.storage.log import ChunkedLog
from estwisted.storage.memory import MemoryLog


def _events(n: int, size: int = 10) -> list[NewEvent]:
    return [NewEvent(uuid.uuid4().bytes, "t", b"x" * size, b"", False) for _ in range(n)]


class ManualFlusher:
    """
    A flusher whose jobs run when the test says: C{finish()} runs the
    oldest and reports it, as the thread and C{callFromThread} would.
    """

    def __init__(self, inline_batch: int = 0) -> None:
        self.inline_batch = inline_batch
        self.jobs: list[tuple[FlushJob, Callable[[FlushJob], None]]] = []
        self.fail_next: Optional[BaseException] = None

    def run(self, job: FlushJob, done: Callable[[FlushJob], None]) -> None:
        self.jobs.append((job, done))

    def finish(self) -> None:
        job, done = self.jobs.pop(0)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            job.fail(error)
        else:
            job.run()
        done(job)


class _Gate:
    """
    An L{estwisted.core.interfaces.ICommitGate} that holds every batch until
    released.
    """

    def __init__(self) -> None:
        self.held: list[tuple[int, Deferred[None]]] = []

    def commit(self, end: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.held.append((end, d))
        return d


class ThreadedGroupCommitTestsMixin:
    """
    The store with a L{ManualFlusher}, on some log (L{make_log}).
    """

    def make_log(self) -> Any:
        raise NotImplementedError

    def setUp(self) -> None:
        self.clock = Clock()
        self.log = self.make_log()
        self.flusher = ManualFlusher()
        self.store = StreamStore(
            self.log, StreamIndex(), self.clock, flusher=self.flusher
        )
        self.seen: list[EventRecord] = []
        self.store.add_commit_listener(self.seen.extend)

    def append(self, stream: str, n: int = 1) -> Deferred[WriteResult]:
        return self.store.append(stream, EXPECTED_ANY, _events(n), None)

    def test_not_published_before_the_job_returns(self: Any) -> None:
        """
        A batch handed to the flusher is neither acknowledged, indexed,
        readable nor shown to listeners until its job returned.
        """
        d = self.append("s")
        end = self.log.end_position
        self.clock.advance(0)
        self.assertEqual(len(self.flusher.jobs), 1)
        self.assertNoResult(d)
        self.assertEqual(self.log.end_position, end)
        self.assertEqual(self.store.last_event_number("s"), -1)
        self.assertEqual(self.seen, [])
        self.flusher.finish()
        self.assertEqual(self.successResultOf(d).first_event_number, 0)
        self.assertEqual(self.store.last_event_number("s"), 0)
        self.assertEqual(len(self.seen), 1)

    def test_next_batch_forms_behind(self: Any) -> None:
        """
        Writes made while a flush is in flight form the next batch: it goes
        to the flusher as soon as the first returns, before the first is
        published, and their versions follow the first batch's.
        """
        d1 = self.append("s")
        self.clock.advance(0)
        d2 = self.append("s")
        d3 = self.append("t")
        self.clock.advance(0)
        self.assertEqual(len(self.flusher.jobs), 1, "at most one flush in flight")
        acked: list[int] = []
        d1.addCallback(lambda r: acked.append(len(self.flusher.jobs)))
        self.flusher.finish()
        self.assertEqual(acked, [1], "the next job was handed over before the first was acked")
        self.assertNoResult(d2)
        self.flusher.finish()
        self.assertEqual(self.successResultOf(d2).first_event_number, 1)
        self.assertEqual(self.successResultOf(d3).first_event_number, 0)
        self.assertEqual([r.stream for r in self.seen], ["s", "s", "t"])
        positions = [r.position for r in self.seen]
        self.assertEqual(positions, sorted(positions))

    def test_failed_job_fails_the_batch_behind(self: Any) -> None:
        """
        A failed flush fails every write of its batch and of the batch that
        formed behind it (whose records follow it in the log); the log is as
        before, and later writes succeed.
        """
        end = self.log.end_position
        d1 = self.append("s", 2)
        self.clock.advance(0)
        d2 = self.append("s")
        self.flusher.fail_next = OSError(5, "EIO")
        self.flusher.finish()
        self.failureResultOf(d1, StorageError)
        self.failureResultOf(d2, StorageError)
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.assertEqual(self.log.end_position, end)
        self.assertEqual(self.log.pending_position, end)
        self.assertEqual(self.flusher.jobs, [])
        self.assertEqual(self.seen, [])
        self.assertEqual(self.store.last_event_number("s"), -1)
        d3 = self.append("s")
        self.clock.advance(0)
        self.flusher.finish()
        self.assertEqual(self.successResultOf(d3).first_event_number, 0)
        [record] = self.seen
        self.assertEqual(record.position, end)

    def test_gate_holds_every_batch(self: Any) -> None:
        """
        With a commit gate, a batch whose flush returned still waits for the
        gate; batches are released in log order.
        """
        gate = _Gate()
        self.store.set_commit_gate(gate)
        d1 = self.append("s")
        self.clock.advance(0)
        d2 = self.append("s")
        self.flusher.finish()
        self.flusher.finish()
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.assertEqual(self.seen, [])
        [(end1, g1), (end2, g2)] = gate.held
        self.assertLess(end1, end2)
        g1.callback(None)
        self.assertEqual(self.successResultOf(d1).first_event_number, 0)
        self.assertNoResult(d2)
        g2.callback(None)
        self.assertEqual(self.successResultOf(d2).first_event_number, 1)

    def test_flush_now_waits(self: Any) -> None:
        """
        L{StreamStore.flush_now} (stopping) waits for the flush in flight
        and flushes the batch behind it in the caller's thread.
        """
        d1 = self.append("s")
        self.clock.advance(0)
        d2 = self.append("s")
        [(job, done)] = self.flusher.jobs
        # the thread ran it; its callFromThread has not arrived yet
        job.run()
        self.store.flush_now()
        self.assertEqual(self.successResultOf(d1).first_event_number, 0)
        self.assertEqual(self.successResultOf(d2).first_event_number, 1)
        done(job)  # the late report changes nothing
        self.assertEqual(len(self.seen), 2)

    def test_lone_writer_inline(self: Any) -> None:
        """
        With C{inline_batch}, a batch of one write after another such batch
        is flushed in the reactor turn, not handed to the flusher.
        """
        self.flusher.inline_batch = 1
        d1 = self.append("s")
        self.clock.advance(0)
        self.flusher.finish()
        self.successResultOf(d1)
        d2 = self.append("s")
        self.clock.advance(0)
        self.assertEqual(self.flusher.jobs, [])
        self.assertEqual(self.successResultOf(d2).first_event_number, 1)
        d3 = self.append("s")
        d4 = self.append("t")
        self.clock.advance(0)
        self.assertEqual(len(self.flusher.jobs), 1)
        self.flusher.finish()
        self.successResultOf(d3)
        self.successResultOf(d4)

    def test_repeat_waits_for_the_flush_in_flight(self: Any) -> None:
        """
        An idempotent repeat of a write whose flush is in flight is answered
        only after that flush returned.
        """
        evs = _events(1)
        d1 = self.store.append("s", EXPECTED_ANY, evs, None)
        self.clock.advance(0)
        d2 = self.store.append("s", EXPECTED_ANY, evs, None)
        self.clock.advance(0)
        self.assertNoResult(d2)
        self.flusher.finish()
        self.assertEqual(self.successResultOf(d1).first_event_number, 0)
        self.assertEqual(self.successResultOf(d2).first_event_number, 0)
        self.assertEqual(self.flusher.jobs, [])


class MemoryLogThreadedTests(ThreadedGroupCommitTestsMixin, SynchronousTestCase):
    def make_log(self) -> Any:
        return MemoryLog()


class ChunkedLogThreadedTests(ThreadedGroupCommitTestsMixin, SynchronousTestCase):
    def make_log(self) -> Any:
        path = tempfile.mkdtemp(prefix="estw-gc-")
        self.addCleanup(shutil.rmtree, path, True)
        log = ChunkedLog(path, chunk_size=64 * 1024)
        self.addCleanup(log.close)
        return log

    def test_rollover_behind_a_flush(self) -> None:
        """
        A batch that crosses into a new chunk, formed behind a flush in
        flight, is flushed whole; everything reads back after a reopen.
        """
        d1 = self.append("s")
        self.clock.advance(0)
        writes = [self.append("s", 10) for _ in range(2)]
        big = self.store.append("s", EXPECTED_ANY, _events(40, 2000), None)
        self.flusher.finish()
        while self.flusher.jobs:
            self.flusher.finish()
        self.successResultOf(d1)
        for d in writes:
            self.successResultOf(d)
        self.assertEqual(self.successResultOf(big).last_event_number, 60)
        self.assertGreater(self.log.end_position, 64 * 1024)
        path = self.log.path
        self.log.close()
        reopened = ChunkedLog(path, chunk_size=64 * 1024)
        self.addCleanup(reopened.close)
        records = reopened.read_forward(0, 1000)
        self.assertEqual([r.event_number for r in records], list(range(61)))


class ThreadFlusherTests(SynchronousTestCase):
    """
    L{ThreadFlusher} runs jobs in its own thread and reports them through
    C{callFromThread}.
    """

    def test_runs_in_a_thread(self) -> None:
        """
        The job runs off the calling thread; C{done} is called through the
        reactor's C{callFromThread}.
        """
        calls: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        arrived = threading.Event()

        class Reactor:
            def callFromThread(self, f: Callable[..., object], *args: object) -> None:
                calls.append((f, args))
                arrived.set()

        ran_in: list[threading.Thread] = []

        class Job(FlushJob):
            def write(self) -> None:
                ran_in.append(threading.current_thread())

        flusher = ThreadFlusher(Reactor())  # type: ignore[arg-type]
        self.addCleanup(flusher.stop)
        reported: list[FlushJob] = []
        job = Job(0)
        flusher.run(job, reported.append)
        self.assertTrue(arrived.wait(10))
        self.assertTrue(job.wait(0))
        self.assertNotEqual(ran_in, [threading.current_thread()])
        self.assertEqual(reported, [])
        [(f, args)] = calls
        f(*args)
        self.assertEqual(reported, [job])

    def test_synchronous(self) -> None:
        """
        L{SynchronousFlusher} runs the job and reports it at once.
        """
        reported: list[FlushJob] = []
        job = FlushJob(0)
        SynchronousFlusher().run(job, reported.append)
        self.assertEqual(reported, [job])
        self.assertTrue(job.done)


class SplitFlushTestsMixin:
    """
    C{begin_flush}/C{end_flush} of an L{estwisted.core.interfaces.IEventLog}.
    """

    def make_log(self) -> Any:
        raise NotImplementedError

    def _append(self, log: Any, n: int) -> list[int]:
        return [
            log.append("s", i, uuid.uuid4().bytes, "t", 0, b"d" * 20, b"", 0) for i in range(n)
        ]

    def test_like_flush(self: Any) -> None:
        """
        A job run and ended makes the records durable and readable, as
        C{flush} does; nothing buffered gives no job.
        """
        log = self.make_log()
        self.assertIsNone(log.begin_flush())
        positions = self._append(log, 3)
        job = log.begin_flush()
        self.assertRaises(StorageError, log.begin_flush)
        self.assertEqual(log.read_forward(0, 10), [])
        job.run()
        self.assertEqual(log.end_flush(job), log.end_position)
        self.assertEqual([r.position for r in log.read_forward(0, 10)], positions)

    def test_appends_behind(self: Any) -> None:
        """
        Records appended while a job is in flight follow its records and
        flush with the next job; a discard drops only them.
        """
        log = self.make_log()
        first = self._append(log, 2)
        job = log.begin_flush()
        second = self._append(log, 2)
        self.assertGreater(second[0], first[-1])
        log.discard()
        self.assertEqual(log.pending_position, job.end)
        second = self._append(log, 2)
        job.run()
        log.end_flush(job)
        self.assertEqual(log.end_position, second[0])
        job2 = log.begin_flush()
        job2.run()
        log.end_flush(job2)
        self.assertEqual([r.position for r in log.read_forward(0, 10)], first + second)

    def test_failed_job(self: Any) -> None:
        """
        A failed job raises at C{end_flush}; its records and those appended
        behind it are dropped.
        """
        log = self.make_log()
        end = log.end_position
        self._append(log, 2)
        job = log.begin_flush()
        self._append(log, 1)
        job.fail(OSError(28, "No space left on device"))
        self.assertRaises(StorageError, log.end_flush, job)
        self.assertEqual((log.end_position, log.pending_position), (end, end))
        self.assertEqual(log.read_forward(0, 10), [])
        [position] = self._append(log, 1)
        self.assertEqual(position, end)
        log.flush()
        self.assertEqual(len(log.read_forward(0, 10)), 1)

    def test_flush_settles(self: Any) -> None:
        """
        A synchronous C{flush} with a job in flight waits for it first.
        """
        log = self.make_log()
        first = self._append(log, 1)
        job = log.begin_flush()
        second = self._append(log, 1)
        job.run()
        log.flush()
        self.assertEqual([r.position for r in log.read_forward(0, 10)], first + second)


class MemorySplitFlushTests(SplitFlushTestsMixin, SynchronousTestCase):
    def make_log(self) -> Any:
        return MemoryLog()


class ChunkedSplitFlushTests(SplitFlushTestsMixin, SynchronousTestCase):
    def make_log(self) -> Any:
        path = tempfile.mkdtemp(prefix="estw-split-")
        self.addCleanup(shutil.rmtree, path, True)
        log = ChunkedLog(path, chunk_size=64 * 1024)
        self.addCleanup(log.close)
        return log

    def test_failed_job_erased_on_disk(self) -> None:
        """
        The bytes of a job that failed after its write are erased, so a
        reopen does not find them.
        """
        log = self.make_log()
        end = log.end_position
        self._append(log, 2)
        job = log.begin_flush()
        job.run()  # written and synced ...
        job.error = OSError(5, "EIO")  # ... but reported failed
        self.assertRaises(StorageError, log.end_flush, job)
        path = log.path
        log.close()
        reopened = ChunkedLog(path, chunk_size=64 * 1024)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.end_position, end)


class GroupCommitMachine(RuleBasedStateMachine):
    """
    Writes, flushes returning or failing, turns and stops in any order: a
    write is acknowledged only after the flush of its batch returned, never
    when it or the flush before it failed; acknowledged writes of a stream
    get consecutive numbers in acknowledgement order; listeners see exactly
    the acknowledged events, in log order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.log = MemoryLog()
        self.flusher = ManualFlusher()
        self.store = StreamStore(
            self.log, StreamIndex(), self.clock, flusher=self.flusher
        )
        self.seen: list[EventRecord] = []
        self.store.add_commit_listener(self.seen.extend)
        self.acked: list[tuple[str, int, int]] = []
        self.failed = 0
        self.outstanding: list[Deferred[WriteResult]] = []

    @rule(stream=st.sampled_from(["a", "b"]), n=st.integers(1, 3))
    def write(self, stream: str, n: int) -> None:
        d = self.store.append(stream, EXPECTED_ANY, _events(n), None)
        self.outstanding.append(d)

        def ok(result: WriteResult) -> None:
            self.acked.append((stream, result.first_event_number, result.last_event_number))

        def failed(f: Any) -> None:
            f.trap(StorageError)
            self.failed += 1

        d.addCallbacks(ok, failed)

    @rule()
    def turn(self) -> None:
        self.clock.advance(0)

    @precondition(lambda self: self.flusher.jobs)
    @rule(fail=st.booleans())
    def finish(self, fail: bool) -> None:
        if fail:
            self.flusher.fail_next = OSError(5, "EIO")
        self.flusher.finish()

    @rule()
    def stop(self) -> None:
        if self.flusher.jobs:
            job, _ = self.flusher.jobs.pop(0)
            job.run()
        self.store.flush_now()

    @invariant()
    def one_in_flight(self) -> None:
        assert len(self.flusher.jobs) <= 1

    @invariant()
    def consistent(self) -> None:
        for stream in ("a", "b"):
            numbers = [(first, last) for s, first, last in self.acked if s == stream]
            expected = 0
            for first, last in numbers:
                assert first == expected, (stream, numbers)
                expected = last + 1
            assert self.store.last_event_number(stream) == expected - 1
        acked_events = sum(last - first + 1 for _, first, last in self.acked)
        assert len(self.seen) == acked_events
        positions = [r.position for r in self.seen]
        assert positions == sorted(positions)
        assert all(r.position < self.log.end_position for r in self.seen)

    def teardown(self) -> None:
        self.flusher.fail_next = None
        while self.flusher.jobs:
            self.flusher.finish()
            self.clock.advance(0)
        self.clock.advance(0)
        while self.flusher.jobs:
            self.flusher.finish()
        for d in self.outstanding:
            assert d.called
        assert self.failed + len(self.acked) == len(self.outstanding)


class GroupCommitMachineTests(SynchronousTestCase):
    def test_machine(self) -> None:
        """
        See L{GroupCommitMachine}.
        """
        run_state_machine_as_test(
            GroupCommitMachine,
            settings=settings(max_examples=60, stateful_step_count=30, deadline=None),
        )
        self.flushLoggedErrors(StorageError, OSError)

