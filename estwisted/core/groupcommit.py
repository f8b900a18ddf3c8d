# -*- test-case-name: estwisted.core.test.test_streams,estwisted.replication.test.test_runners -*-
"""
Group commit: every write buffered in one reactor turn shares one flush
(one joined write and one C{fdatasync} of the log); only then are the
writes published (indexed, acknowledged, shown to listeners).  In a
cluster an L{ICommitGate} holds the publication until a quorum has the
records; an idempotent repeat (a write with no records of its own) waits
for the gate too, since the records it matched may be on no quorum yet.

The store (L{estwisted.core.streams.StreamStore}) decides and buffers writes
and is this object's L{CommitSink}.

Flushing off the reactor thread
===============================
Without a flusher, the flush is C{log.flush()} on the reactor thread, as
unit tests with a C{Clock} and a memory log want.  With a L{Flusher} (a
node: L{ThreadFlusher}), the flush is split (L{estwisted.storage.flushing}):
the reactor takes the batch (C{log.begin_flush()}), the flusher runs the
C{pwrite}/C{fdatasync} in its thread with the GIL released, and meanwhile
the reactor parses and decides the next batch, which forms behind.  At most
one flush is in flight; when it returns, the next batch goes to the disk at
once and only then is the returned one published.  Durability is as
before: nothing is indexed, acknowledged or shown to readers before its
flush returned (readers see the log only up to C{log.end_position}, which
moves in C{end_flush} on the reactor thread), and a failed flush fails
every write of its batch and of the batch formed behind it (whose records
follow it in the log).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import Optional, Protocol, Union, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorCore,
    IReactorThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.core.errors import DiskFull, EstoreError, StorageError
from estwisted.core.interfaces import ICommitGate, IEventLog
from estwisted.core.model import NewEvent, WriteResult
from estwisted.storage.flushing import FlushJob

_log = Logger()


class PendingWrite:
    """
    One buffered write: its records are in the log's buffer.

    @ivar stream: the stream written.
    @ivar first: the first event number (L{DELETED_STREAM} for a tombstone).
    @ivar events: the events, in order.
    @ivar positions: each record's log position.
    @ivar nexts: each record's next position.
    @ivar created: the records' C{created} stamp (ticks).
    @ivar tombstone: whether this is a hard delete's tombstone.
    """

    __slots__ = ("stream", "first", "events", "positions", "nexts", "created", "tombstone")

    def __init__(
        self,
        stream: str,
        first: int,
        events: Sequence[NewEvent],
        positions: list[int],
        nexts: list[int],
        created: int,
        tombstone: bool = False,
    ) -> None:
        self.stream = stream
        self.first = first
        self.events = events
        self.positions = positions
        self.nexts = nexts
        self.created = created
        self.tombstone = tombstone

    def __repr__(self) -> str:
        return f"PendingWrite({self.stream!r}, {self.first}, {len(self.events)} events)"


class WriteWaiter(Protocol):
    """
    Who is told a write's outcome: a L{Deferred}, or a lighter object of the
    same two methods that never raises (the TCP write path).
    """

    def callback(self, result: WriteResult) -> None:
        """
        The write is committed.
        """

    def errback(self, fail: Optional[Union[Failure, BaseException]] = None) -> None:
        """
        The write failed.
        """


Waiter = tuple[WriteWaiter, WriteResult]


class CommitSink(Protocol):
    """
    What L{GroupCommit} tells the store.
    """

    def index_batch(self, batch: list[PendingWrite]) -> None:
        """
        A batch is committed: index it and drop cached state of the system
        streams it wrote (before its writes are acknowledged).
        """

    def notify_batch(self, batch: list[PendingWrite]) -> None:
        """
        A batch is committed and acknowledged: tell the commit listeners.
        """

    def pending_settled(self) -> None:
        """
        Nothing is buffered or waiting for the gate any more: the pending
        per-stream state can be dropped.
        """

    def batch_failed(self, batch: list[PendingWrite], error: Optional[Exception] = None) -> None:
        """
        A flush failed with C{error}: forget the batch (its records are
        gone).
        """


class Flusher(Protocol):
    """
    Runs the blocking half of a flush.

    @ivar inline_batch: a batch of at most this many writes, after another
        such batch, is flushed in the reactor turn instead (a lone writer
        would only wait for two thread wake-ups more).
    """

    inline_batch: int

    def run(self, job: FlushJob, done: Callable[[FlushJob], None]) -> None:
        """
        Call C{job.run()} (which never raises), then C{done(job)} on the
        reactor thread.
        """


class SynchronousFlusher:
    """
    A L{Flusher} that runs the job at once, in the caller's thread (tests).
    """

    inline_batch = 0

    def run(self, job: FlushJob, done: Callable[[FlushJob], None]) -> None:
        job.run()
        done(job)


_SYNCHRONOUS = SynchronousFlusher()


class ThreadFlusher:
    """
    A L{Flusher} with one thread of its own, started on first use; C{done}
    comes back through C{reactor.callFromThread}.  The thread stops when
    the reactor shuts down (or at L{stop}).

    @param switch_interval: the interpreter's thread switch interval is
        lowered to this (seconds) when the thread starts.
    @param inline_batch: see L{Flusher.inline_batch}.
    """

    def __init__(
        self, reactor: IReactorThreads, switch_interval: float = 0.0005, inline_batch: int = 1
    ) -> None:
        self._reactor = reactor
        self.inline_batch = inline_batch
        self._switch_interval = switch_interval
        self._queue: SimpleQueue[Optional[tuple[FlushJob, Callable[[FlushJob], None]]]] = (
            SimpleQueue()
        )
        self._thread: Optional[threading.Thread] = None

    def run(self, job: FlushJob, done: Callable[[FlushJob], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="estwisted-flush", daemon=True)
            # The flush thread needs the GIL back when the disk returns;
            # with the default 5 ms switch interval a busy reactor would
            # hold it that long.
            if sys.getswitchinterval() > self._switch_interval:
                sys.setswitchinterval(self._switch_interval)
            self._thread.start()
            if IReactorCore.providedBy(self._reactor):
                cast(IReactorCore, self._reactor).addSystemEventTrigger(
                    "after", "shutdown", self.stop
                )
        self._queue.put((job, done))

    def _work(self) -> None:
        queue = self._queue
        call = self._reactor.callFromThread
        while True:
            item = queue.get()
            if item is None:
                return
            job, done = item
            job.run()
            call(done, job)

    def stop(self) -> None:
        """
        Let the thread end once its queue is done.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(10)


class _InFlight:
    """
    A batch whose flush job is running.
    """

    __slots__ = ("job", "batch", "waiters")

    def __init__(self, job: FlushJob, batch: list[PendingWrite], waiters: list[Waiter]) -> None:
        self.job = job
        self.batch = batch
        self.waiters = waiters


class _Gated:
    """
    A flushed batch waiting for the gate to release the log up to C{end}.
    """

    __slots__ = ("batch", "waiters", "end")

    def __init__(self, batch: list[PendingWrite], waiters: list[Waiter], end: int) -> None:
        self.batch = batch
        self.waiters = waiters
        self.end = end


class GroupCommit:
    """
    See the module docstring.

    @param log: the log the store buffers records in.
    @param clock: schedules the flush (C{callLater(0)}) after the first
        write of a turn.
    @param sink: the store.
    @param flusher: where the blocking half of a flush runs; C{None}: the
        whole flush is C{log.flush()} in the reactor turn (see the module
        docstring).
    """

    def __init__(
        self,
        log: IEventLog,
        clock: IReactorTime,
        sink: CommitSink,
        flusher: Optional[Flusher] = None,
    ) -> None:
        self._log = log
        self._clock = clock
        self._sink = sink
        self._flusher = flusher
        self._inflight: Optional[_InFlight] = None
        self._completing = False
        self._returned = False
        self._last_small = False
        self._flush_call: Optional[IDelayedCall] = None
        self._batch: list[PendingWrite] = []
        self._waiters: list[Waiter] = []
        self._failed = False
        self._gate: Optional[ICommitGate] = None
        self._gated: list[_Gated] = []
        self._completing_batch: Optional[list[PendingWrite]] = None

    # -- buffering --

    def buffered(self, write: PendingWrite) -> None:
        """
        C{write}'s records were appended to the log's buffer.
        """
        self._batch.append(write)

    def append_failed(self, write: PendingWrite) -> None:
        """
        Appending C{write}'s records failed part way: the whole batch fails
        at the flush.
        """
        self._failed = True
        self._batch.append(write)
        self._schedule()

    def wait(self, result: WriteResult) -> Deferred[WriteResult]:
        """
        A Deferred that fires with C{result} once the current batch is
        committed (for a repeat: once everything logged so far is).
        """
        d: Deferred[WriteResult] = Deferred()
        self._waiters.append((d, result))
        self._schedule()
        return d

    def wait_with(self, result: WriteResult, waiter: WriteWaiter) -> None:
        """
        L{wait}, telling C{waiter} instead of a new L{Deferred}.
        """
        self._waiters.append((waiter, result))
        self._schedule()

    @property
    def busy(self) -> bool:
        """
        Whether writes are buffered or waiting for the gate.
        """
        return bool(self._batch or self._gated or self._inflight)

    def flush_now(self) -> None:
        """
        Flush what is buffered now rather than at the end of the turn (the
        node is stopping): wait for a flush in flight, then flush the rest in
        this thread.
        """
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if self._flusher is None:
            if call is not None:
                self.flush()
            return
        flusher, self._flusher = self._flusher, SynchronousFlusher()
        try:
            inflight = self._inflight
            if inflight is not None:
                inflight.job.wait()
                self._job_done(inflight.job)
            if self._inflight is None:
                self._start()
        finally:
            self._flusher = flusher

    def _schedule(self) -> None:
        # with a flush in flight, its end starts the next one
        if self._flush_call is None and self._inflight is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    # -- committing --

    def flush(self) -> None:
        """
        Make the batch durable, then publish it (through the gate, if any).
        """
        self._flush_call = None
        if self._flusher is not None:
            if self._inflight is None:
                self._start()
            return
        batch, self._batch = self._batch, []
        waiters, self._waiters = self._waiters, []
        try:
            if self._failed:
                raise StorageError("Appending to the log failed")
            if batch:
                self._log.flush()
        except Exception as e:
            self._failed = False
            self._log.discard()
            self._fail(batch, waiters, e)
            return
        self._committed(batch, waiters)

    def _fail(self, batch: list[PendingWrite], waiters: list[Waiter], e: Exception) -> None:
        self._sink.batch_failed(batch, e)
        if isinstance(e, DiskFull):
            # one line, not a traceback per batch: the disk stays full
            # until an operator frees space
            _log.error(
                "Group commit of {count} writes refused: the disk is full ({error})",
                count=len(batch),
                error=e,
            )
        else:
            _log.failure(
                "Group commit of {count} writes failed", count=len(batch), failure=Failure(e)
            )
        for d, _ in waiters:
            d.errback(e)

    def _start(self) -> None:
        """
        Hand the buffered batch to the flusher (nothing is in flight).
        """
        batch = self._batch
        if not batch:
            # Only repeats wait: everything logged so far is durable.  Their
            # entry gets a batch of its own, never the buffer itself: writes
            # buffered while it waits for the gate would be published with
            # it and again with their own batch.
            waiters, self._waiters = self._waiters, []
            if waiters:
                self._committed([], waiters)
            return
        self._batch = []
        waiters, self._waiters = self._waiters, []
        try:
            if self._failed:
                raise StorageError("Appending to the log failed")
            job = self._log.begin_flush()
        except Exception as e:
            self._failed = False
            self._log.discard()
            self._fail(batch, waiters, e)
            return
        if job is None:
            self._committed(batch, waiters)
            return
        self._inflight = _InFlight(job, batch, waiters)
        flusher = self._flusher
        assert flusher is not None
        small = len(batch) <= flusher.inline_batch
        if small and self._last_small:
            # a lone writer: handing the flush to a thread would only add
            # two thread wake-ups to its latency
            flusher = _SYNCHRONOUS
        self._last_small = small
        flusher.run(job, self._job_done)

    def _job_done(self, job: FlushJob) -> None:
        """
        The flusher returned C{job} (reactor thread): start the next batch's
        flush, then publish this one.  A flusher that returns the next job
        at once (synchronous) leaves it to the loop here, so that batches
        are published in log order.
        """
        inflight = self._inflight
        if inflight is None or inflight.job is not job:
            return  # finished already by flush_now
        if self._completing:
            self._returned = True
            return
        self._completing = True
        try:
            while inflight is not None:
                self._inflight = None
                self._returned = False
                try:
                    self._log.end_flush(inflight.job)
                except Exception as e:
                    # the batch behind it follows it in the log: it fails
                    # too (the log dropped its records)
                    batch = inflight.batch + self._batch
                    waiters = inflight.waiters + self._waiters
                    self._batch = []
                    self._waiters = []
                    self._failed = False
                    self._fail(batch, waiters, e)
                    return
                if self._batch:
                    # durable but not yet gated: if the next batch fails
                    # to start, its versions must survive (L{unpublished})
                    self._completing_batch = inflight.batch
                    try:
                        self._start()
                    finally:
                        self._completing_batch = None
                self._committed(inflight.batch, inflight.waiters)
                inflight = self._inflight if self._returned else None
            if self._waiters and not self._batch and self._inflight is None:
                self._start()
        finally:
            self._completing = False

    def _committed(self, batch: list[PendingWrite], waiters: list[Waiter]) -> None:
        """
        C{batch} is durable: publish it, through the gate if any.
        """
        gate = self._gate
        if gate is not None and (batch or waiters):
            # Everything a repeat can have matched lies before the log's end.
            entry = _Gated(batch, waiters, self._log.end_position)
            self._gated.append(entry)
            self._through_gate(gate, entry)
            return
        if not self._gated and not self._batch and self._inflight is None:
            self._sink.pending_settled()
        self._publish(batch, waiters)

    def _publish(self, batch: list[PendingWrite], waiters: list[Waiter]) -> None:
        self._sink.index_batch(batch)
        for d, result in waiters:
            d.callback(result)
        if batch:
            self._sink.notify_batch(batch)

    def _publish_through(self, entry: _Gated) -> None:
        gated = self._gated
        count = next((i + 1 for i, e in enumerate(gated) if e is entry), 0)
        if not count:
            return
        done = gated[:count]
        del gated[:count]
        if not gated and not self._batch and self._inflight is None:
            # before any callback can buffer a new write
            self._sink.pending_settled()
        for e in done:
            self._publish(e.batch, e.waiters)

    def _through_gate(self, gate: ICommitGate, entry: _Gated) -> None:
        gate.commit(entry.end).addCallbacks(
            lambda _: self._publish_through(entry),
            lambda f: self._gate_failed(entry, f),
        )

    def _gate_failed(self, entry: _Gated, failure: Failure) -> None:
        """
        The gate failed C{entry}: its writes fail; its records are published
        with a later batch, or by L{release_gated} when leadership ends.
        """
        waiters, entry.waiters = entry.waiters, []
        for d, _ in waiters:
            d.errback(failure)

    def unpublished(self) -> list[PendingWrite]:
        """
        The writes that are durable and not yet published, in log order:
        those waiting for the gate, then the batch whose flush just
        returned while the next one starts.  Their records are in the log
        and will be published.
        """
        writes = [write for entry in self._gated for write in entry.batch]
        if self._completing_batch is not None:
            writes.extend(self._completing_batch)
        return writes

    # -- the gate (replication) --

    def set_gate(self, gate: Optional[ICommitGate]) -> None:
        """
        See L{estwisted.core.streams.StreamStore.set_commit_gate}.
        """
        self._gate = gate

    @property
    def gated(self) -> bool:
        """
        Whether a commit gate is set (a clustered node).
        """
        return self._gate is not None

    def release_gated(self) -> None:
        """
        Leadership ended: fail the writes still waiting for the quorum and
        index their batches (a later truncation removes what the new leader
        does not have).
        """
        for entry in self._gated:
            waiters, entry.waiters = entry.waiters, []
            for d, _ in waiters:
                d.errback(EstoreError("The leader stepped down before the write was replicated"))
        if self._gated:
            self._publish_through(self._gated[-1])

    def reset(self) -> None:
        """
        The log was truncated: forget everything buffered or gated.
        """
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            for d, _ in inflight.waiters:
                d.errback(EstoreError("The log was truncated before the write was committed"))
        self._gated = []
        self._batch = []
        self._waiters = []
