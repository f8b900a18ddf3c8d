# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
The replication leader runner (Twisted): on a node that became leader,
writes the epoch record, answers subscriptions
(L{estwisted.replication.state.decide_start}), streams the log to each
replica within a send window, tracks acks in a L{LeaderState} and releases
the writes waiting for the quorum (L{ReplicationLeader.wait_committed});
L{ReplicationLeader.stop} fails every waiting write (never completes it as
replicated).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from estwisted.core.errors import CommitTimeout, NotReady
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
from estwisted.replication.link import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, ReplicationLink
from estwisted.replication.state import (
    BULK_SIZE,
    SEND_WINDOW,
    Assign,
    CommitWaiters,
    Epoch,
    LeaderState,
    NoQuorum,
    NoQuorumTiming,
    ReplicaRole,
    StartAt,
    decide_start,
    epoch_record_fields,
    no_quorum_timing,
)

_log = Logger()

#: A quorum check more than this many ticks after the previous one is put
#: off once (the reactor was busy; see L{ReplicationLeader}).
STALL_TICKS = 3


class _RawSend:
    """
    A scavenged chunk being sent whole to one replica.

    @ivar image: the chunk's file image (pinned until closed).
    @ivar sent: bytes of it sent.
    @ivar acked: bytes of it the replica reported received.
    """

    def __init__(self, image: Any) -> None:
        self.image = image
        self.sent = 0
        self.acked = 0


class ReplicationLeader:
    """
    The leader's side.  Created once per node; L{start} when the node
    becomes leader, L{stop} when it stops being one.

    @param log: the node's L{IReplicableLog}.
    @param flush: makes buffered appends durable and returns the end (the
        store's own flush, so group commit is not disturbed); defaults to
        C{log.flush}.
    @param on_no_quorum: called once when too few replicas were heard
        from for C{no_quorum.timeout}.
    @param no_quorum: the no-quorum timing (by default that of the default
        election timeout, 1 s: L{no_quorum_timing}): the leader checks its
        quorum every C{no_quorum.tick} and its links heartbeat after
        C{no_quorum.heartbeat_interval} of silence, so that a leader cut
        off silently reports L{NoQuorum} within the election timeout of the
        moment it last heard a quorum.  A check that comes late (the
        reactor was busy for more than L{STALL_TICKS} ticks) is put off to
        the next tick once, so that what arrived meanwhile is read first.
    @ivar epochs: the epochs of the log, oldest first.
    """

    def __init__(
        self,
        log: Any,
        clock: IReactorTime,
        cluster_size: int,
        node_id: bytes,
        commit_count: int = -1,
        commit_timeout: float = 2.0,
        epochs: Optional[list[Epoch]] = None,
        flush: Optional[Callable[[], int]] = None,
        on_no_quorum: Optional[Callable[[], None]] = None,
        chunk_size: int = 0,
        no_quorum: Optional[NoQuorumTiming] = None,
    ) -> None:
        self.log = log
        self.clock = clock
        self.cluster_size = cluster_size
        self.node_id = node_id
        self.commit_count = commit_count
        self.commit_timeout = commit_timeout
        #: shared with the node's L{ReplicationFollower} (same list object)
        self.epochs = epochs if epochs is not None else scan_epochs(log)
        self._flush = flush or log.flush
        self.on_no_quorum = on_no_quorum
        self.no_quorum = no_quorum or no_quorum_timing(1.0)
        self._last_tick: Optional[float] = None
        self._put_off = False
        self.chunk_size = chunk_size or int(getattr(log, "chunk_size", 0))
        #: called after an epoch was added to L{epochs}
        self.epochs_changed: Optional[Callable[[], None]] = None
        self.state: Optional[LeaderState] = None
        self.waiters: CommitWaiters[tuple[Deferred[None], Optional[IDelayedCall]]] = CommitWaiters()
        self._connections: dict[bytes, ReplicationLink] = {}
        self._by_protocol: dict[ReplicationLink, bytes] = {}
        self._all: set[ReplicationLink] = set()
        self._loop: Optional[LoopingCall] = None
        #: scavenged chunks being sent whole, by subscription id
        self._raw: dict[bytes, _RawSend] = {}
        #: per subscription, the end and send time of each data message not
        #: yet acknowledged (an ack confirms the link up to its send time)
        self._unacked: dict[bytes, deque[tuple[int, float]]] = {}

    @property
    def active(self) -> bool:
        return self.state is not None

    @property
    def committed(self) -> int:
        return self.state.committed if self.state is not None else -1

    def quorum_heard_at(self) -> Optional[float]:
        """
        While leading: the last moment a quorum (this node and
        C{ClusterSize/2} voting replicas) were known to hear from us: the
        send time of the newest message each replica answered (a heartbeat
        or data it acknowledged, L{ReplicationLink.confirmed_at}), so that
        answers read late (our process was stopped) count as old; C{None}
        if never.
        """
        state = self.state
        if state is None:
            return None
        needed = state.cluster_size // 2
        if needed <= 0:
            return self.clock.seconds()
        heard = sorted(
            (
                protocol.confirmed_at
                for sid, protocol in self._connections.items()
                if (cursor := state.replicas.get(sid)) is not None
                and cursor.promotable
                and protocol.confirmed_at is not None
            ),
            reverse=True,
        )
        if len(heard) < needed:
            return None
        return float(heard[needed - 1])

    def factory(self) -> Factory:
        """
        A protocol factory for the replication connections of replicas.
        """
        interval = min(HEARTBEAT_INTERVAL, self.no_quorum.heartbeat_interval)
        # the link still closes after the usual total silence
        timeout = max(HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT - interval, HEARTBEAT_TIMEOUT)
        return Factory.forProtocol(
            lambda: ReplicationLink(self, heartbeat_interval=interval, heartbeat_timeout=timeout)
        )

    # -- leadership --

    def start(self, epoch_number: int, epoch_id: Optional[bytes] = None) -> Epoch:
        """
        Become leader: write and flush an epoch record at the end of the log
        (everything before it that this node holds is its history) and
        start counting acks.
        """
        previous = self.epochs[-1].position if self.epochs else -1
        if self.epochs:
            epoch_number = max(epoch_number, self.epochs[-1].number + 1)
        fields = epoch_record_fields(epoch_number, epoch_id or new_id(), previous)
        position = self.log.append(**fields)
        end = self._flush()
        epoch = Epoch(position, epoch_number, fields["event_id"])
        self.epochs.append(epoch)
        if self.epochs_changed is not None:
            self.epochs_changed()
        self.state = LeaderState.create(
            self.cluster_size,
            end,
            commit_count=self.commit_count,
            committed=0,
            epoch_end=end,
            no_quorum_timeout=self.no_quorum.timeout,
        )
        if self._loop is None:
            self._last_tick = self.clock.seconds()
            self._put_off = False
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(self.no_quorum.tick, now=False)
        _log.info(
            "Leader of epoch {number} at position {position}",
            number=epoch_number,
            position=position,
        )
        return epoch

    def stop(self, reason: Optional[Exception] = None) -> None:
        """
        No longer leader: fail every waiting write (they may or may not end
        up replicated: the client retries with the same event ids) and drop
        the replicas.
        """
        self.state = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        error = reason or NotReady("The leader stepped down before the write was replicated")
        for d, timer in self.waiters.fail_all():
            if timer is not None and timer.active():
                timer.cancel()
            if not d.called:
                d.errback(error)
        for sid in list(self._raw):
            self._drop_raw(sid)
        self._unacked.clear()
        for protocol in list(self._all):
            sid = self._by_protocol.get(protocol, b"\x00" * 16)
            protocol.send(Retry(sid, "not leader"))
            protocol.abort("no longer leader")

    # -- the commit gate --

    def wait_committed(self, position: int) -> Deferred[None]:
        """
        Fire once records up to C{position} are durable on a quorum; fail
        with L{CommitTimeout} after C{commit_timeout} or L{NotReady} when
        leadership ends.
        """
        d: Deferred[None] = Deferred()
        state = self.state
        if state is None:
            d.errback(NotReady("Not the leader"))
            return d
        if position <= state.committed:
            d.callback(None)
            return d
        timer: Optional[IDelayedCall] = None
        if self.commit_timeout > 0:

            def expire() -> None:
                if not d.called:
                    d.errback(CommitTimeout("The write was not replicated in time"))

            timer = self.clock.callLater(self.commit_timeout, expire)
        self.waiters.add(position, (d, timer))
        return d

    def flushed(self, end: Optional[int] = None) -> None:
        """
        The leader's log was flushed (call after every group commit): send
        the new records and release the writes that no longer wait.
        """
        state = self.state
        if state is None:
            return
        moved = state.flushed(self.log.end_position if end is None else end)
        if moved is not None:
            self._release(moved)
        for sid in list(self._connections):
            self._pump(sid)

    def _release(self, committed: int) -> None:
        for d, timer in self.waiters.release(committed):
            if timer is not None and timer.active():
                timer.cancel()
            if not d.called:
                d.callback(None)
        for sid, protocol in self._connections.items():
            protocol.send(Committed(sid, committed))

    def _tick(self) -> None:
        state = self.state
        if state is None:
            return
        now = self.clock.seconds()
        last, self._last_tick = self._last_tick, now
        self._effects(state.assign_roles())
        for sid, protocol in self._connections.items():
            state.heard(sid, protocol.last_received)
        if (
            last is not None
            and now - last > STALL_TICKS * self.no_quorum.tick
            and not self._put_off
        ):
            # The reactor was busy: timers run before the network is read,
            # so what the replicas sent meanwhile is not counted yet.
            self._put_off = True
            return
        self._put_off = False
        for effect in state.check_quorum(now):
            if isinstance(effect, NoQuorum):
                _log.warn(
                    "Leader without a quorum of replicas for {silent:.2f} s "
                    "(more than {timeout:.2f} s); stepping down",
                    silent=effect.silent,
                    timeout=self.no_quorum.timeout,
                )
                if self.on_no_quorum is not None:
                    self.on_no_quorum()

    def _effects(self, effects: Sequence[Assign]) -> None:
        for effect in effects:
            protocol = self._connections.get(effect.subscription_id)
            if protocol is not None:
                protocol.send(Assignment(effect.subscription_id, effect.role.value))

    # -- connections (handler interface of ReplicationLink) --

    def connection_made(self, protocol: ReplicationLink) -> None:
        self._all.add(protocol)

    def connection_lost(self, protocol: ReplicationLink) -> None:
        self._all.discard(protocol)
        sid = self._by_protocol.pop(protocol, None)
        if sid is not None:
            self._connections.pop(sid, None)
            self._unacked.pop(sid, None)
            self._drop_raw(sid)
            if self.state is not None:
                self.state.unsubscribe(sid)

    def message_received(self, protocol: ReplicationLink, message: Message) -> None:
        if isinstance(message, Subscribe):
            self._subscribe(protocol, message)
        elif isinstance(message, Ack):
            self._ack(message)
        elif isinstance(message, RawAck):
            raw = self._raw.get(message.subscription_id)
            if raw is not None and raw.image.number == message.number:
                raw.acked = max(raw.acked, message.received)
                self._pump(message.subscription_id)
        else:
            protocol.abort(f"unexpected {type(message).__name__} from a replica")

    def _subscribe(self, protocol: ReplicationLink, message: Subscribe) -> None:
        state = self.state
        sid = message.subscription_id
        if state is None or message.leader_id != self.node_id:
            protocol.send(Retry(sid, "not the leader"))
            return
        if self.chunk_size and message.chunk_size and message.chunk_size != self.chunk_size:
            protocol.send(
                Retry(sid, f"chunk size {message.chunk_size} differs from {self.chunk_size}")
            )
            protocol.abort("chunk size mismatch")
            return
        old = self._by_protocol.pop(protocol, None)
        if old is not None:
            self._connections.pop(old, None)
            self._unacked.pop(old, None)
            self._drop_raw(old)
            state.unsubscribe(old)
        answer = decide_start(self.epochs, self.log.end_position, message.position, message.epochs)
        if not isinstance(answer, StartAt):
            protocol.abort(answer.reason)
            return
        start = answer.position
        chunk_start = self._scavenged_chunk_start(start)
        if chunk_start is not None:
            # inside a chunk we scavenged: the replica gets it whole, from
            # its start (it truncates to there first)
            start = chunk_start
        protocol.send(Subscribed(sid, start))
        if start < message.position:
            _log.info(
                "Replica {node} must truncate from {end} to {start}",
                node=message.node_id.hex(),
                end=message.position,
                start=start,
            )
            return
        self._connections[sid] = protocol
        self._by_protocol[protocol] = sid
        effects = state.subscribe(sid, message.node_id, start, message.promotable)
        protocol.send(Committed(sid, state.committed))
        self._effects(effects)
        self._pump(sid)

    def _sent(self, sid: bytes, end: int) -> None:
        sent = self._unacked.get(sid)
        if sent is None:
            sent = self._unacked[sid] = deque()
        sent.append((end, self.clock.seconds()))

    def _ack(self, message: Ack) -> None:
        state = self.state
        if state is None:
            return
        sid = message.subscription_id
        sent = self._unacked.get(sid)
        protocol = self._connections.get(sid)
        if sent and protocol is not None:
            confirmed: Optional[float] = None
            while sent and sent[0][0] <= message.position:
                confirmed = sent.popleft()[1]
            if confirmed is not None:
                protocol.confirm(confirmed)
        moved = state.acked(message.subscription_id, message.position)
        if moved is not None:
            self._release(moved)
        self._pump(message.subscription_id)

    def _scavenged_chunk_start(self, position: int) -> Optional[int]:
        find = getattr(self.log, "scavenged_chunk_start", None)
        if find is None:
            return None
        start: Optional[int] = find(position)
        return start

    def _drop_raw(self, sid: bytes) -> None:
        raw = self._raw.pop(sid, None)
        if raw is not None:
            raw.image.close()

    def _pump(self, sid: bytes) -> None:
        """
        Send what a replica lacks, within its send window: records, or a
        chunk we scavenged as a whole file (L{RawChunk}s).
        """
        state = self.state
        protocol = self._connections.get(sid)
        if state is None or protocol is None:
            return
        cursor = state.replicas.get(sid)
        if cursor is None:
            return
        end = self.log.end_position
        while protocol.connected_:
            raw = self._raw.get(sid)
            if raw is not None:
                if not self._send_raw(sid, protocol, raw):
                    break
                continue
            if cursor.sent >= end or not state.can_send(sid):
                break
            chunk_start = self._scavenged_chunk_start(cursor.sent)
            if chunk_start is not None:
                if chunk_start != cursor.sent:
                    # scavenged while this replica was inside it: it must
                    # subscribe again (and get the chunk whole)
                    protocol.send(Retry(sid, "chunk scavenged meanwhile"))
                    protocol.abort("replica inside a chunk scavenged meanwhile")
                    return
                image = self.log.chunk_image(chunk_start // self.chunk_size)
                self._raw[sid] = _RawSend(image)
                _log.info(
                    "Sending scavenged chunk {number} whole to a replica ({size} bytes)",
                    number=image.number,
                    size=image.size,
                )
                continue
            start, frames, after = self.log.read_raw(cursor.sent, BULK_SIZE)
            if not frames:
                break
            protocol.send(Data(sid, start, state.committed, frames))
            state.sent(sid, after)
            self._sent(sid, after)
        if cursor.role is ReplicaRole.CatchingUp:
            self._effects(state.assign_roles())

    def _send_raw(self, sid: bytes, protocol: ReplicationLink, raw: _RawSend) -> bool:
        """
        Send pieces of a chunk image within the send window.

        @return: whether the image was sent to its end (then the cursor
            moves to the chunk's end and records follow).
        """
        state = self.state
        assert state is not None
        image = raw.image
        while raw.sent < image.size:
            if raw.sent - raw.acked >= SEND_WINDOW or not protocol.connected_:
                return False
            data = image.read(raw.sent, BULK_SIZE)
            protocol.send(RawChunk(sid, image.number, raw.sent, image.size, state.committed, data))
            raw.sent += len(data)
        state.sent(sid, (image.number + 1) * self.chunk_size)
        self._drop_raw(sid)
        return True
