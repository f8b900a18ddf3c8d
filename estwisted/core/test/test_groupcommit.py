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
from zope.interface import implementer

from estwisted.core.errors import CommitTimeout, DiskFull, EstoreError, NotReady, StorageError
from estwisted.core.groupcommit import SynchronousFlusher, ThreadFlusher
from estwisted.core.interfaces import ICommitGate
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

    def test_failed_flush_behind_gated_batch_keeps_versions(self: Any) -> None:
        """
        A batch flushed and waiting for the gate, then a later batch whose
        flush fails: the next write to the stream still follows the gated
        write (its records are in the log, and the gate may yet release
        them), never takes its event number again; the same for metadata.
        """
        gate = _Gate()
        self.store.set_commit_gate(gate)
        d1 = self.append("s")
        meta = self.store.append("$$s", EXPECTED_ANY, [NewEvent(
            uuid.uuid4().bytes, "$metadata", b'{"$maxCount":5}', b"", True)], None)
        self.clock.advance(0)
        self.flusher.finish()
        [(_, g1)] = gate.held
        d2 = self.append("s")
        self.clock.advance(0)
        self.flusher.fail_next = OSError(5, "EIO")
        self.flusher.finish()
        self.failureResultOf(d2, StorageError)
        self.flushLoggedErrors(StorageError)
        d3 = self.append("s")
        self.clock.advance(0)
        self.flusher.finish()
        g1.callback(None)
        for _, g in gate.held[1:]:
            g.callback(None)
        self.assertEqual(self.successResultOf(d1).first_event_number, 0)
        self.assertEqual(self.successResultOf(meta).first_event_number, 0)
        self.assertEqual(self.successResultOf(d3).first_event_number, 1)
        self.assertEqual(
            [(r.stream, r.event_number) for r in self.seen], [("s", 0), ("$$s", 0), ("s", 1)]
        )
        self.assertEqual(self.store.stream_metadata("s").max_count, 5)

    def test_next_batch_failing_to_start_keeps_returned_versions(self: Any) -> None:
        """
        A flush returns while the batch behind it fails to start (the disk
        filled at a chunk rollover): the returned batch, durable and about
        to wait for the gate, keeps its streams' versions, so the next
        write follows it instead of taking its event number again (the
        chaos suite, seed 23: "index for '...': event 2508 after 2508" and
        a deposed leader whose reads lost and doubled events).
        """
        gate = _Gate()
        self.store.set_commit_gate(gate)
        d1 = self.append("s")
        self.clock.advance(0)
        d2 = self.append("t")
        real = self.log.begin_flush

        def full() -> None:
            self.log.begin_flush = real
            self.log.discard()
            raise DiskFull("cannot create chunk: disk full (No space left on device)")

        self.log.begin_flush = full
        self.flusher.finish()
        self.failureResultOf(d2, DiskFull)
        d3 = self.append("s")
        self.clock.advance(0)
        self.flusher.finish()
        for _, g in gate.held:
            g.callback(None)
        self.assertEqual(self.successResultOf(d1).first_event_number, 0)
        self.assertEqual(self.successResultOf(d3).first_event_number, 1)
        self.assertEqual([(r.stream, r.event_number) for r in self.seen], [("s", 0), ("s", 1)])

    def test_gated_repeat_keeps_no_later_write(self: Any) -> None:
        """
        An idempotent repeat waiting for the gate alone (nothing of its own
        to flush) holds no reference to the buffer: a write buffered while
        the repeat waits is published once, with its own batch, not also
        with the repeat's (the chaos suite, seed 23: the same record
        indexed twice, "index for '...': event N after N", and a leader
        whose reads lost and doubled events).
        """
        gate = _Gate()
        self.store.set_commit_gate(gate)
        evs = _events(1)
        d1 = self.store.append("s", EXPECTED_ANY, evs, None)
        self.clock.advance(0)
        self.flusher.finish()
        # the client retries while the first attempt waits for the quorum
        d2 = self.store.append("s", EXPECTED_ANY, evs, None)
        self.clock.advance(0)
        d3 = self.append("s")
        self.clock.advance(0)
        self.flusher.finish()
        for _, g in gate.held:
            g.callback(None)
        self.assertEqual(self.successResultOf(d1).first_event_number, 0)
        self.assertEqual(self.successResultOf(d2).first_event_number, 0)
        self.assertEqual(self.successResultOf(d3).first_event_number, 1)
        self.assertEqual([(r.stream, r.event_number) for r in self.seen], [("s", 0), ("s", 1)])
        self.assertEqual(self.store.last_event_number("s"), 1)

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

    #: what a write may fail with (a gate adds timeouts and step-downs)
    write_failures: tuple[type[Exception], ...] = (StorageError,)

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
        #: every write made, for retries: its stream and events
        self.writes: list[tuple[str, list[NewEvent]]] = []

    @rule(stream=st.sampled_from(["a", "b"]), n=st.integers(1, 3))
    def write(self, stream: str, n: int) -> None:
        events = _events(n)
        self.writes.append((stream, events))
        d = self.store.append(stream, EXPECTED_ANY, events, None)
        self.outstanding.append(d)

        def ok(result: WriteResult) -> None:
            self.acked.append((stream, result.first_event_number, result.last_event_number))

        def failed(f: Any) -> None:
            f.trap(*self.write_failures)
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



@implementer(ICommitGate)
class _LeaderGate:
    """
    A commit gate as a leader's replication is one: batches wait until the
    test releases them (in log order, as quorum acks do) or times them out;
    after a step-down every new batch is refused and the store told to
    release what is gated (L{estwisted.replication.node.NodeReplication}).
    """

    def __init__(self, store: StreamStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.leading = True
        self.held: list[Deferred[None]] = []

    def commit(self, end: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.leading:
            self.clock.callLater(0, self.store.release_gated)
            d.errback(NotReady("not leading"))
            return d
        self.held.append(d)
        return d



class GatedGroupCommitMachine(GroupCommitMachine):
    """
    The same with a leader's commit gate: batches released by the quorum
    in log order, timed out, or failed by a step-down (then released
    unacknowledged) in any order with the flushes.  Acknowledged writes of
    a stream get consecutive numbers; once everything settled, the
    records of each stream in the log are numbered 0, 1, 2... with no
    number twice, and the index has each of them where the log has it.
    """

    write_failures = (EstoreError,)

    def __init__(self) -> None:
        super().__init__()
        self.gate = _LeaderGate(self.store, self.clock)
        self.store.set_commit_gate(self.gate)
        #: retries answered: stream, first event number, events
        self.retried: list[tuple[str, int, list[NewEvent]]] = []

    @precondition(lambda self: self.writes)
    @rule(i=st.integers(0, 100))
    def retry(self, i: int) -> None:
        """
        A client retries an earlier write with the same event ids, whatever
        became of it (acknowledged, waiting for the gate, failed).  A retry
        that succeeds answers where the log holds those events.
        """
        stream, events = self.writes[i % len(self.writes)]
        d = self.store.append(stream, EXPECTED_ANY, events, None)
        self.outstanding.append(d)

        def ok(result: WriteResult) -> None:
            self.retried.append((stream, result.first_event_number, events))

        def failed(f: Any) -> None:
            f.trap(*self.write_failures)
            self.failed += 1

        d.addCallbacks(ok, failed)

    @precondition(lambda self: self.gate.held)
    @rule(count=st.integers(1, 3), timeout=st.booleans())
    def quorum(self, count: int, timeout: bool) -> None:
        released, self.gate.held = self.gate.held[:count], self.gate.held[count:]
        for d in released:
            if timeout:
                d.errback(CommitTimeout("not replicated in time"))
            else:
                d.callback(None)

    @rule()
    def disk_fills(self) -> None:
        """
        The next flush to start fails as a chunk rollover on a full disk
        does: the buffered records are dropped and C{DiskFull} raised.
        """
        log = self.log

        def full() -> None:
            del log.begin_flush  # back to the class's
            log.discard()
            raise DiskFull("cannot create chunk: disk full (No space left on device)")

        log.begin_flush = full  # type: ignore[method-assign]

    @rule()
    def step_down(self) -> None:
        self.gate.leading = False
        held, self.gate.held = self.gate.held, []
        for d in held:
            d.errback(NotReady("stepped down"))
        self.store.release_gated()

    @rule()
    def lead(self) -> None:
        self.gate.leading = True

    @invariant()
    def consistent(self) -> None:
        for stream in ("a", "b"):
            numbers = [(first, last) for s, first, last in self.acked if s == stream]
            for (_, last), (first, _) in zip(numbers, numbers[1:], strict=False):
                assert first > last, (stream, numbers)
        positions = [r.position for r in self.seen]
        assert positions == sorted(positions)

    def _settle(self) -> None:
        held, self.gate.held = self.gate.held, []
        for gated in held:
            gated.callback(None)

    def _lead(self) -> None:
        self.gate.leading = True

    def teardown(self) -> None:
        self.flusher.fail_next = None
        # A later write publishes the batches whose wait timed out (their
        # records are in the log, as they are when the quorum comes late).
        self._lead()
        self.log.__dict__.pop("begin_flush", None)  # the disk has room again
        self.store.append("c", EXPECTED_ANY, _events(1), None)
        for _ in range(20):
            while self.flusher.jobs:
                self.flusher.finish()
            self._settle()
            self.clock.advance(0)
        assert not self.flusher.jobs and not self.gate.held
        for d in self.outstanding:
            assert d.called
        records = self.log.read_forward(0, 100000)
        for stream in ("a", "b"):
            mine = [r for r in records if r.stream == stream]
            assert [r.event_number for r in mine] == list(range(len(mine))), (
                stream, [r.event_number for r in mine])
            assert self.store.last_event_number(stream) == len(mine) - 1
            for r in mine:
                assert self.store._index.get(stream, r.event_number) == r.position
            # every event id once in the stream, and each answered retry
            # where its events are
            ids = [r.event_id for r in mine]
            assert len(ids) == len(set(ids)), stream
            for s, first, events in self.retried:
                if s == stream:
                    assert ids[first : first + len(events)] == [e.event_id for e in events]


@implementer(ICommitGate)
class _QuorumGate:
    """
    A commit gate that behaves as L{estwisted.replication.leader} does: a
    commit position that only grows, waits released in position order once
    it reaches them (at once if it already has), a wait that times out,
    and a step-down that fails every wait and releases what is gated.
    """

    def __init__(self, store: StreamStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.leading = True
        self.committed = 0
        #: nothing is held back apart from the waits (teardown checks it)
        self.held: list[Deferred[None]] = []
        self.waits: list[tuple[int, int, Deferred[None]]] = []
        self._seq = 0

    def commit(self, end: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.leading:
            self.clock.callLater(0, self.store.release_gated)
            d.errback(NotReady("not leading"))
        elif end <= self.committed:
            d.callback(None)
        else:
            self._seq += 1
            self.waits.append((end, self._seq, d))
            self.waits.sort(key=lambda w: (w[0], w[1]))
        return d

    def advance(self, to: int) -> None:
        self.committed = max(self.committed, to)
        ready = [w for w in self.waits if w[0] <= self.committed]
        self.waits = [w for w in self.waits if w[0] > self.committed]
        for _, _, d in ready:
            if not d.called:
                d.callback(None)

    def step_down(self) -> None:
        self.leading = False
        waits, self.waits = self.waits, []
        for _, _, d in waits:
            if not d.called:
                d.errback(NotReady("stepped down"))
        self.store.release_gated()


class QuorumGateMachine(GatedGroupCommitMachine):
    """
    L{GatedGroupCommitMachine} with L{_QuorumGate}: the same end state.  Its
    quorum, step-down and lead rules replace the parent's.
    """

    def __init__(self) -> None:
        GroupCommitMachine.__init__(self)
        self.gate = _QuorumGate(self.store, self.clock)  # type: ignore[assignment]
        self.store.set_commit_gate(self.gate)
        self.retried = []

    @property
    def qgate(self) -> _QuorumGate:
        assert isinstance(self.gate, _QuorumGate)
        return self.gate

    @rule(fraction=st.floats(0, 1))  # type: ignore[override]
    def quorum(self, fraction: float) -> None:
        low, high = self.qgate.committed, self.log.end_position
        self.qgate.advance(low + int((high - low) * fraction))

    @precondition(lambda self: self.qgate.waits)
    @rule(i=st.integers(0, 10))
    def times_out(self, i: int) -> None:
        end, seq, d = self.qgate.waits.pop(i % len(self.qgate.waits))
        d.errback(CommitTimeout("not replicated in time"))

    @rule()
    def step_down(self) -> None:
        self.qgate.step_down()

    def _settle(self) -> None:
        self.qgate.advance(self.log.end_position)


class GateMachineTests(SynchronousTestCase):
    """
    Group commit behind a leader's gate, as the machines above drive it.
    """

    def _drive(self, machine: type[RuleBasedStateMachine], examples: int) -> None:
        run_state_machine_as_test(
            machine,
            settings=settings(max_examples=examples, stateful_step_count=40, deadline=None),
        )
        self.flushLoggedErrors(StorageError, OSError)

    def test_gated(self) -> None:
        """
        See L{GatedGroupCommitMachine}.
        """
        self._drive(GatedGroupCommitMachine, 150)

    def test_quorum(self) -> None:
        """
        See L{QuorumGateMachine}.
        """
        self._drive(QuorumGateMachine, 300)
