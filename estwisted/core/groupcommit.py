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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.core.errors import DiskFull, EstoreError, StorageError
from estwisted.core.interfaces import ICommitGate, IEventLog
from estwisted.core.model import NewEvent, WriteResult

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


Waiter = tuple["Deferred[WriteResult]", WriteResult]


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

    def batch_failed(self, batch: list[PendingWrite]) -> None:
        """
        A flush failed: forget the batch (its records are gone).
        """


class _Gated:
    """
    A flushed batch waiting for the gate.
    """

    __slots__ = ("batch", "waiters")

    def __init__(self, batch: list[PendingWrite], waiters: list[Waiter]) -> None:
        self.batch = batch
        self.waiters = waiters


class GroupCommit:
    """
    See the module docstring.

    @param log: the log the store buffers records in.
    @param clock: schedules the flush (C{callLater(0)}) after the first
        write of a turn.
    @param sink: the store.
    """

    def __init__(self, log: IEventLog, clock: IReactorTime, sink: CommitSink) -> None:
        self._log = log
        self._clock = clock
        self._sink = sink
        self._flush_call: Optional[IDelayedCall] = None
        self._batch: list[PendingWrite] = []
        self._waiters: list[Waiter] = []
        self._failed = False
        self._gate: Optional[ICommitGate] = None
        self._gated: list[_Gated] = []

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

    @property
    def busy(self) -> bool:
        """
        Whether writes are buffered or waiting for the gate.
        """
        return bool(self._batch or self._gated)

    def flush_now(self) -> None:
        """
        Flush what is buffered now rather than at the end of the turn (the
        node is stopping).
        """
        call, self._flush_call = self._flush_call, None
        if call is not None:
            if call.active():
                call.cancel()
            self.flush()

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    # -- committing --

    def flush(self) -> None:
        """
        Make the batch durable, then publish it (through the gate, if any).
        """
        self._flush_call = None
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
            self._sink.batch_failed(batch)
            if isinstance(e, DiskFull):
                # one line, not a traceback per batch: the disk stays full
                # until an operator frees space
                _log.error(
                    "Group commit of {count} writes refused: the disk is full ({error})",
                    count=len(batch),
                    error=e,
                )
            else:
                _log.failure("Group commit of {count} writes failed", count=len(batch))
            for d, _ in waiters:
                d.errback(e)
            return
        gate = self._gate
        if gate is not None and (batch or waiters):
            # Everything a repeat can have matched lies before the log's end.
            entry = _Gated(batch, waiters)
            self._gated.append(entry)
            gate.commit(self._log.end_position).addCallbacks(
                lambda _: self._publish_through(entry),
                lambda f: self._gate_failed(entry, f),
            )
            return
        if not self._gated:
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
        if not gated and not self._batch:
            # before any callback can buffer a new write
            self._sink.pending_settled()
        for e in done:
            self._publish(e.batch, e.waiters)

    def _gate_failed(self, entry: _Gated, failure: Failure) -> None:
        waiters, entry.waiters = entry.waiters, []
        for d, _ in waiters:
            d.errback(failure)

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
        self._gated = []
        self._batch = []
        self._waiters = []
