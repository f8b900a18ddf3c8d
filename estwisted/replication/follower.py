# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
The replica runner (Twisted): subscribes to the leader with its end and
newest epochs, truncates when told to (then subscribes again), appends,
flushes (fsync), applies the records (index, listeners) and only then
acknowledges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.cluster.elections import (
    CloneAssigned,
    LeaderLinkLost,
    ReplicaSubscribed,
    SlaveAssigned,
)
from estwisted.core.errors import CorruptRecord, DiskFull, StorageError
from estwisted.core.model import FLAG_SYSTEM, EventRecord
from estwisted.core.progress import BOARD, Progress
from estwisted.replication.codec import (
    Ack,
    Assignment,
    Committed,
    Data,
    Message,
    RawAck,
    RawChunk,
    Retry,
    Subscribe,
    Subscribed,
    new_id,
    scan_epochs,
)
from estwisted.replication.link import ReplicationLink
from estwisted.replication.state import (
    Continue,
    Epoch,
    Fatal,
    FollowerState,
    ReplicaRole,
    Truncate,
    newest_epochs,
    parse_epoch,
)
from estwisted.storage import records as codec

_log = Logger()


class ReplicationFollower:
    """
    The replica's side: one subscription to the current leader at a time.

    @param log: the node's L{IReplicableLog}.
    @param connect: given a protocol factory, connects it to the leader's
        internal TCP endpoint (returns a Deferred, ignored but for errors).
    @param apply: called with the client records of every flushed bulk, in
        log order (index them, notify subscriptions).
    @param truncated: called with the position the log was cut at, so the
        caller drops index entries and caches past it.
    @param report: called with what the node role machine decides on:
        L{estwisted.cluster.elections.ReplicaSubscribed} when the leader accepted
        the subscription, L{estwisted.cluster.elections.CloneAssigned} and
        L{estwisted.cluster.elections.SlaveAssigned} for its role assignments,
        L{estwisted.cluster.elections.LeaderLinkLost} when the link closed (not
        when L{stop} closed it).
    @ivar committed: the leader's commit position, as last told.
    """

    def __init__(
        self,
        log: Any,
        clock: IReactorTime,
        node_id: bytes,
        connect: Callable[[Factory], Deferred[Any]],
        apply: Callable[[list[EventRecord]], None],
        truncated: Callable[[int], None],
        promotable: bool = True,
        epochs: Optional[list[Epoch]] = None,
        resubscribe_delay: float = 0.5,
        chunk_size: int = 0,
        report: Optional[Callable[[Any], None]] = None,
    ) -> None:
        self.log = log
        self.clock = clock
        self.node_id = node_id
        self.connect = connect
        self._report = report
        self.apply = apply
        self.truncated = truncated
        self.promotable = promotable
        #: shared with the node's L{ReplicationLeader} (same list object)
        self.epochs = epochs if epochs is not None else scan_epochs(log)
        self.resubscribe_delay = resubscribe_delay
        self.chunk_size = chunk_size or int(getattr(log, "chunk_size", 0))
        self._batch: list[Data] = []
        #: called after L{epochs} changed (an epoch received, a truncation)
        self.epochs_changed: Optional[Callable[[], None]] = None
        #: called with the error when replicated records cannot be flushed
        #: for lack of space (the node must not lead: it reports it)
        self.on_disk_full: Optional[Callable[[DiskFull], None]] = None
        self._full_logged = False
        self.leader_id: Optional[bytes] = None
        self.state = FollowerState(end=log.end_position)
        self.protocol: Optional[ReplicationLink] = None
        self.committed = -1
        self.role: Optional[str] = None
        self._retry: Optional[IDelayedCall] = None
        #: a scavenged chunk arriving whole (L{RawChunk}s), if any
        self._raw: Any = None
        #: progress of catching up after subscribing (L{estwisted.core.progress})
        self.catch_up: Optional[Progress] = None
        self._catch_up_from: Optional[int] = None
        self._origin = 0

    # -- lifecycle --

    def start(self, leader_id: bytes) -> None:
        """
        Follow the leader C{leader_id} (reached through C{connect}).
        """
        if self.leader_id == leader_id:
            # already following it (connected, connecting or retrying)
            return
        self.stop()
        self.leader_id = leader_id
        self._connect()

    def stop(self) -> None:
        self.leader_id = None
        self.role = None
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._abort_raw()
        if self.catch_up is not None and not self.catch_up.result:
            self.catch_up.finish(self.clock.seconds(), "stopped")
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.abort("stopped following")

    def _connect(self) -> None:
        self._retry = None
        if self.leader_id is None:
            return
        d = self.connect(Factory.forProtocol(lambda: ReplicationLink(self)))
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        _log.info(
            "Cannot reach the leader for replication: {reason}", reason=failure.getErrorMessage()
        )
        self._schedule()

    def _schedule(self) -> None:
        if self.leader_id is not None and self._retry is None:
            self._retry = self.clock.callLater(self.resubscribe_delay, self._connect)

    # -- handler interface --

    def connection_made(self, protocol: ReplicationLink) -> None:
        if self.leader_id is None:
            protocol.abort("not following")
            return
        self.protocol = protocol
        self._subscribe()

    def connection_lost(self, protocol: ReplicationLink) -> None:
        if protocol is self.protocol:
            self._abort_raw()
            self.protocol = None
            self.role = None
            if self.catch_up is not None and not self.catch_up.result:
                self.catch_up.finish(self.clock.seconds(), "stopped")
            self._schedule()
            if self.leader_id is not None:
                self._emit(LeaderLinkLost())

    def _emit(self, event: Any) -> None:
        if self._report is not None:
            self._report(event)

    def _subscribe(self) -> None:
        protocol = self.protocol
        assert protocol is not None and self.leader_id is not None
        if self._batch or self.log.pending_position != self.log.end_position:
            # bulks of an older subscription not yet flushed: resent anyway
            self._batch = []
            self.log.discard()
        self._abort_raw()
        self.state = FollowerState(end=self.log.end_position)
        sid = new_id()
        self.state.subscription_id = sid
        protocol.send(
            Subscribe(
                sid,
                self.node_id,
                self.leader_id,
                self.log.end_position,
                self.promotable,
                self.chunk_size,
                tuple(newest_epochs(self.epochs)),
            )
        )

    def message_received(self, protocol: ReplicationLink, message: Message) -> None:
        if protocol is not self.protocol:
            return
        if isinstance(message, Data):
            self._data(message)
        elif isinstance(message, RawChunk):
            self._raw_chunk(message)
        elif isinstance(message, Committed):
            if message.subscription_id == self.state.subscription_id:
                self.committed = max(self.committed, message.position)
        elif isinstance(message, Subscribed):
            self._subscribed(message)
        elif isinstance(message, Assignment):
            if message.subscription_id == self.state.subscription_id:
                self.role = message.role
                self._assigned(message.role)
        elif isinstance(message, Retry):
            _log.info("Leader asks to subscribe again: {reason}", reason=message.reason)
            protocol.abort("retry")
        else:
            protocol.abort(f"unexpected {type(message).__name__} from the leader")

    def _assigned(self, role: str) -> None:
        if role == ReplicaRole.Clone.value:
            self._emit(CloneAssigned())
        elif role == ReplicaRole.Follower.value:
            self._emit(SlaveAssigned())

    def _subscribed(self, message: Subscribed) -> None:
        if message.subscription_id != self.state.subscription_id:
            return
        decision = self.state.subscribed(message.subscription_id, message.position)
        if isinstance(decision, Continue):
            _log.info("Replicating from position {position}", position=message.position)
            self._catch_up_from = message.position
            self._emit(ReplicaSubscribed())
            return
        if isinstance(decision, Fatal):
            _log.error("Replication refused: {reason}", reason=decision.reason)
            assert self.protocol is not None
            self.protocol.abort(decision.reason)
            return
        assert isinstance(decision, Truncate)
        if self._truncate(decision.position):
            self._subscribe()

    def _truncate(self, position: int) -> bool:
        """
        Cut our log at C{position} (our records past it were never
        committed: the leader never had them).

        @return: whether the log was cut (C{MaxTruncation} may refuse).
        """
        _log.warn(
            "Truncating the log from {end} to {position} (records the leader does not have)",
            end=self.log.end_position,
            position=position,
        )
        try:
            self.log.truncate(position)
        except StorageError as e:
            # MaxTruncation refused the cut (nothing changed): end this
            # link as a Fatal refusal does; the operator must decide.
            _log.error("Replication refused: {reason}", reason=str(e))
            assert self.protocol is not None
            self.protocol.abort(str(e))
            return False
        self.epochs[:] = [e for e in self.epochs if e.position < position]
        self.truncated(position)
        if self.epochs_changed is not None:
            self.epochs_changed()
        return True

    def _data(self, message: Data) -> None:
        """
        Append a bulk (not yet flushed: L{batch_done} flushes once for every
        bulk that arrived in the same read).
        """
        state = self.state
        if not state.accepts(message.subscription_id, message.position):
            return
        self.committed = max(self.committed, message.committed)
        if not message.frames:
            return
        try:
            self.log.append_raw(message.position, message.frames)
        except CorruptRecord as e:
            self._abandon_batch(f"bad replicated records: {e}")
            return
        state.position = self.log.pending_position
        self._batch.append(message)

    # -- scavenged chunks, whole --

    def _abort_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.abort()

    def _raw_chunk(self, message: RawChunk) -> None:
        """
        A piece of a chunk the leader scavenged: write it to a temporary
        file; with the last piece, install the chunk, apply its records and
        acknowledge its end.
        """
        state = self.state
        if message.subscription_id != state.subscription_id:
            return
        self.committed = max(self.committed, message.committed)
        raw = self._raw
        if raw is None:
            if message.offset != 0:
                return
            if self._batch:
                # records before the chunk: durable and applied first
                self.batch_done()
                if self.protocol is None or state is not self.state:
                    return
            start = message.number * self.chunk_size
            receive = getattr(self.log, "receive_chunk", None)
            if receive is None or state.position != start:
                self._abandon_batch(
                    f"cannot receive chunk {message.number} whole at {state.position}"
                )
                return
            try:
                raw = self._raw = receive(message.number, message.size)
            except StorageError as e:
                self._abandon_batch(f"cannot receive chunk {message.number}: {e}")
                return
            _log.info(
                "Receiving scavenged chunk {number} whole ({size} bytes)",
                number=message.number,
                size=message.size,
            )
        if raw.number != message.number or raw.total != message.size:
            self._abandon_batch(f"chunk {message.number} interleaved with chunk {raw.number}")
            return
        try:
            raw.write(message.offset, message.data)
        except StorageError as e:
            self._abandon_batch(f"cannot write chunk {message.number}: {e}")
            return
        if not raw.complete:
            if self.protocol is not None:
                self.protocol.send(RawAck(state.subscription_id, raw.number, raw.received))
            return
        self._raw = None
        start = raw.number * self.chunk_size
        try:
            end = self.log.install_chunk(raw)
        except StorageError as e:
            _log.error("Cannot install chunk {number}: {error}", number=raw.number, error=str(e))
            self._abandon_batch(f"cannot install chunk {raw.number}: {e}")
            return
        self._apply_range(start, end)
        acked = state.written(end)
        self._progress(end)
        if acked is not None and self.protocol is not None:
            self.protocol.send(Ack(state.subscription_id, acked))

    def _apply_range(self, start: int, end: int) -> None:
        """
        Apply the records of the log between C{start} and C{end} (an
        installed chunk, with gaps where the leader removed records), page
        by page; record its epochs.
        """
        head = codec.SCAN_HEAD
        new_epoch = False
        position = start
        while position < end:
            _, frames, after = self.log.read_raw(position, 1 << 20)
            if not frames or after <= position:
                break
            client: list[EventRecord] = []
            offset = 0
            while offset < len(frames):
                size, pos, _, flags, _, _, _, _ = head.unpack_from(frames, offset)
                record = codec.decode(frames, offset, offset + size, pos)
                if flags & FLAG_SYSTEM:
                    epoch = parse_epoch(record)
                    if epoch is not None:
                        self.epochs.append(epoch)
                        new_epoch = True
                else:
                    client.append(record)
                offset += size
            if client:
                try:
                    self.apply(client)
                except Exception:
                    _log.failure("Applying replicated records failed")
            position = after
        if new_epoch and self.epochs_changed is not None:
            self.epochs_changed()

    def _abandon_batch(self, reason: str) -> None:
        self._abort_raw()
        self.log.discard()
        self._batch = []
        self.state.position = self.log.end_position
        if self.protocol is not None:
            self.protocol.abort(reason)

    def _progress(self, end: int) -> None:
        """
        Report catching up with the leader's commit position, from the
        first bulk after subscribing until we reach it.
        """
        now = self.clock.seconds()
        if self._catch_up_from is not None:
            self._origin, self._catch_up_from = self._catch_up_from, None
            if self.committed > self._origin:
                self.catch_up = BOARD.start(
                    "replication-catch-up", "from the leader", self.committed - self._origin, now
                )
        p = self.catch_up
        if p is not None and not p.result:
            p.update(end - self._origin, now, max(self.committed, end) - self._origin)
            if end >= self.committed:
                p.finish(now)

    def batch_done(self) -> None:
        """
        Every package of one read was handled: make the appended bulks
        durable, apply them and acknowledge once.
        """
        batch, self._batch = self._batch, []
        if not batch:
            return
        state = self.state
        try:
            end = self.log.flush()
        except Exception as e:
            if isinstance(e, DiskFull):
                # one line, not a traceback per attempt: the disk stays
                # full until space is freed (the link retries meanwhile)
                if not self._full_logged:
                    self._full_logged = True
                    _log.error("Replicated records refused: {error}", error=e)
                if self.on_disk_full is not None:
                    self.on_disk_full(e)
            else:
                _log.failure("Flushing replicated records failed")
            self._batch = []
            self.log.discard()
            self.state.position = self.log.end_position
            if self.protocol is not None:
                self.protocol.abort(f"cannot flush: {e}")
            return
        self._full_logged = False
        count = 0
        new_epoch = False
        head = codec.SCAN_HEAD
        for message in batch:
            # frame headers only; system records (epochs) decoded in full
            frames = message.frames
            offset = 0
            while offset < len(frames):
                size, pos, _, flags, _, _, _, _ = head.unpack_from(frames, offset)
                if flags & FLAG_SYSTEM:
                    epoch = parse_epoch(codec.decode(frames, offset, offset + size, pos))
                    if epoch is not None:
                        self.epochs.append(epoch)
                        new_epoch = True
                else:
                    count += 1
                offset += size
        if new_epoch and self.epochs_changed is not None:
            self.epochs_changed()
        # read back: positions past the first are the log's own
        client = self.log.read_forward(batch[0].position, count) if count else []
        acked = state.written(end)
        self._progress(end)
        if client:
            try:
                self.apply(client)
            except Exception:
                _log.failure("Applying replicated records failed")
        if acked is not None and self.protocol is not None:
            self.protocol.send(Ack(state.subscription_id, acked))
