# -*- test-case-name: estwisted.test.test_replprotocol -*-
"""
Quorum replication over the internal TCP endpoint: the message codec and
the Twisted runners of the leader and of a replica.

Wire format
===========
Frames are those of the client protocol (L{estwisted.framing}: a 4-byte
little-endian length, then the package).  A replication package is one
command byte and a fixed little-endian payload; it is ours, not v5's
protobuf (nodes of this implementation only talk to each other).  The
commands are below C{0x80}, so the internal port can tell a replica from a
client by the first package (L{InternalTcpFactory}).

============  =====  ===================  ==============================================
message       code   direction            payload
============  =====  ===================  ==============================================
Subscribe     0x10   replica -> leader    subscription id, node id, leader id (16 each),
                                          log end (q), promotable (B), chunk size (q),
                                          epoch count (H), epochs (q position, i number,
                                          16 id), newest first
Subscribed    0x16   leader -> replica    subscription id, start position (q)
Retry         0x15   leader -> replica    subscription id, reason (UTF-8)
Data          0x14   leader -> replica    subscription id, position (q), leader commit
                                          position (q), framed records
Ack           0x11   replica -> leader    subscription id, durable end (q)
Committed     0x17   leader -> replica    subscription id, leader commit position (q)
Assignment    0x07   leader -> replica    subscription id, role (UTF-8)
============  =====  ===================  ==============================================

Records travel as the bytes of the leader's log (L{IReplicableLog.read_raw})
and land at identical positions on the replica (C{append_raw}); the
replica flushes (fsync) and only then acknowledges.

Runners
=======
  - L{ReplicationLeader}: on a node that became leader, writes the epoch
    record, answers subscriptions (L{estwisted.replication.decide_start}),
    streams the log to each replica within a send window, tracks acks in a
    L{LeaderState} and releases the writes waiting for the quorum
    (L{ReplicationLeader.wait_committed}); L{ReplicationLeader.stop} fails
    every waiting write (never completes it as replicated).
  - L{ReplicationFollower}: on a replica, subscribes to the leader with its
    end and newest epochs, truncates when told to (then subscribes again),
    appends, flushes, applies the records (index, listeners) and acks.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.cluster import EpochWritten
from estwisted.elections import CloneAssigned, LeaderLinkLost, ReplicaSubscribed, SlaveAssigned
from estwisted.elections import NoQuorum as QuorumLost
from estwisted.errors import CommitTimeout, CorruptRecord, NotReady
from estwisted.framing import Framer, FramingError, frame
from estwisted.gossip import VNodeState
from estwisted.interfaces import ICommitGate
from estwisted.leadership import Leadership, LeadershipView
from estwisted.model import FLAG_SYSTEM, EventRecord
from estwisted.replication import (
    BULK_SIZE,
    Assign,
    CommitWaiters,
    Continue,
    Epoch,
    Fatal,
    FollowerState,
    LeaderState,
    NoQuorum,
    ReplicaRole,
    StartAt,
    Truncate,
    decide_start,
    epoch_record_fields,
    newest_epochs,
    parse_epoch,
)
from estwisted.storage import records as codec

_log = Logger()

# --- Messages ---------------------------------------------------------------------------

SUBSCRIBE = 0x10
SUBSCRIBED = 0x16
RETRY = 0x15
DATA = 0x14
ACK = 0x11
COMMITTED = 0x17
ASSIGNMENT = 0x07

#: Every replication command (all below the client commands' 0x80).
COMMANDS = frozenset({SUBSCRIBE, SUBSCRIBED, RETRY, DATA, ACK, COMMITTED, ASSIGNMENT})

_SUBSCRIBE = struct.Struct("<B16s16s16sqBqH")
_EPOCH = struct.Struct("<qi16s")
_SUB_POS = struct.Struct("<B16sq")
_DATA = struct.Struct("<B16sqq")
_SUB = struct.Struct("<B16s")


class ProtocolError(Exception):
    """
    A package is not a well-formed replication message.
    """


@frozen
class Subscribe:
    subscription_id: bytes
    node_id: bytes
    leader_id: bytes
    position: int
    promotable: bool
    chunk_size: int
    epochs: tuple[Epoch, ...]


@frozen
class Subscribed:
    subscription_id: bytes
    position: int


@frozen
class Retry:
    subscription_id: bytes
    reason: str


@frozen
class Data:
    subscription_id: bytes
    position: int
    committed: int
    frames: bytes


@frozen
class Ack:
    subscription_id: bytes
    position: int


@frozen
class Committed:
    subscription_id: bytes
    position: int


@frozen
class Assignment:
    subscription_id: bytes
    role: str


Message = Union[Subscribe, Subscribed, Retry, Data, Ack, Committed, Assignment]


def encode_message(message: Message) -> bytes:
    """
    The package (without the length prefix) of C{message}.
    """
    if isinstance(message, Data):
        return (
            _DATA.pack(DATA, message.subscription_id, message.position, message.committed)
            + message.frames
        )
    if isinstance(message, Ack):
        return _SUB_POS.pack(ACK, message.subscription_id, message.position)
    if isinstance(message, Committed):
        return _SUB_POS.pack(COMMITTED, message.subscription_id, message.position)
    if isinstance(message, Subscribed):
        return _SUB_POS.pack(SUBSCRIBED, message.subscription_id, message.position)
    if isinstance(message, Retry):
        return _SUB.pack(RETRY, message.subscription_id) + message.reason.encode("utf-8")
    if isinstance(message, Assignment):
        return _SUB.pack(ASSIGNMENT, message.subscription_id) + message.role.encode("utf-8")
    head = _SUBSCRIBE.pack(
        SUBSCRIBE,
        message.subscription_id,
        message.node_id,
        message.leader_id,
        message.position,
        1 if message.promotable else 0,
        message.chunk_size,
        len(message.epochs),
    )
    return head + b"".join(_EPOCH.pack(e.position, e.number, e.epoch_id) for e in message.epochs)


def decode_message(package: bytes) -> Message:
    """
    Parse one package.

    @raise ProtocolError: unknown command or malformed payload.
    """
    if not package:
        raise ProtocolError("empty package")
    command = package[0]
    try:
        if command == DATA:
            _, sid, position, committed = _DATA.unpack_from(package)
            return Data(sid, position, committed, bytes(package[_DATA.size :]))
        if command in (ACK, COMMITTED, SUBSCRIBED):
            if len(package) != _SUB_POS.size:
                raise ProtocolError(f"bad length {len(package)} for command {command:#x}")
            _, sid, position = _SUB_POS.unpack(package)
            cls = {ACK: Ack, COMMITTED: Committed, SUBSCRIBED: Subscribed}[command]
            return cls(sid, position)  # type: ignore[no-any-return, return-value]
        if command in (RETRY, ASSIGNMENT):
            _, sid = _SUB.unpack_from(package)
            text = bytes(package[_SUB.size :]).decode("utf-8")
            return Retry(sid, text) if command == RETRY else Assignment(sid, text)
        if command == SUBSCRIBE:
            _, sid, node, leader, position, promotable, chunk_size, count = _SUBSCRIBE.unpack_from(
                package
            )
            if len(package) != _SUBSCRIBE.size + count * _EPOCH.size:
                raise ProtocolError("bad epoch list length")
            epochs = tuple(
                Epoch(*_EPOCH.unpack_from(package, _SUBSCRIBE.size + i * _EPOCH.size))
                for i in range(count)
            )
            return Subscribe(sid, node, leader, position, bool(promotable), chunk_size, epochs)
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed command {command:#x}: {e}") from e
    raise ProtocolError(f"unknown replication command {command:#x}")


def new_id() -> bytes:
    return os.urandom(16)


# --- Reading records and epochs out of frames ------------------------------------------


def decode_frames(position: int, frames: bytes) -> list[EventRecord]:
    """
    Every record in C{frames} (as L{IReplicableLog.read_raw} returns them).
    """
    records: list[EventRecord] = []
    offset = 0
    while offset < len(frames):
        (size,) = struct.unpack_from("<I", frames, offset)
        (pos,) = struct.unpack_from("<q", frames, offset + 4)
        records.append(codec.decode(frames, offset, offset + size, pos))
        offset += size
    return records


def scan_epochs(log: Any, batch: int = 1 << 20) -> list[Epoch]:
    """
    Every epoch record in C{log}, oldest first.  Reads the whole log once
    (the frame headers only).
    """
    epochs: list[Epoch] = []
    position = 0
    head = codec.SCAN_HEAD
    while True:
        _, frames, position = log.read_raw(position, batch)
        if not frames:
            return epochs
        offset = 0
        while offset < len(frames):
            size, pos, _, flags, _, _, _, _ = head.unpack_from(frames, offset)
            if flags & FLAG_SYSTEM:
                epoch = parse_epoch(codec.decode(frames, offset, offset + size, pos))
                if epoch is not None:
                    epochs.append(epoch)
            offset += size


# --- The connection protocol (both sides) ------------------------------------------------


class _ReplicationProtocol(Protocol):
    """
    Frames and decodes packages; hands messages to C{handler}.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.framer = Framer()
        self.connected_ = False

    def connectionMade(self) -> None:
        self.connected_ = True
        # small messages (acks, live bulks) must not wait for Nagle
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass
        self.handler.connection_made(self)

    def send(self, message: Message) -> None:
        if self.transport is not None and self.connected_:
            self.transport.write(frame(encode_message(message)))

    def dataReceived(self, data: bytes) -> None:
        try:
            packages = self.framer.feed(data)
        except FramingError as e:
            packages = e.packages
            self._handle(packages)
            self.abort(str(e))
            return
        self._handle(packages)

    def _handle(self, packages: list[bytes]) -> None:
        try:
            for package in packages:
                if not self.connected_:
                    return
                try:
                    message = decode_message(package)
                except ProtocolError as e:
                    self.abort(str(e))
                    return
                try:
                    self.handler.message_received(self, message)
                except Exception:
                    _log.failure("Replication message {message!r} failed", message=type(message))
                    self.abort("internal error")
                    return
        finally:
            done = getattr(self.handler, "batch_done", None)
            if done is not None:
                done()

    def abort(self, reason: str) -> None:
        _log.warn("Closing a replication connection: {reason}", reason=reason)
        self.connected_ = False
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected_ = False
        self.handler.connection_lost(self)


# --- The leader ----------------------------------------------------------------------


class ReplicationLeader:
    """
    The leader's side.  Created once per node; L{start} when the node
    becomes leader, L{stop} when it stops being one.

    @param log: the node's L{IReplicableLog}.
    @param flush: makes buffered appends durable and returns the end (the
        store's own flush, so group commit is not disturbed); defaults to
        C{log.flush}.
    @param on_no_quorum: called once when too few replicas stayed
        subscribed for L{estwisted.replication.NO_QUORUM_TIMEOUT}.
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
        self.chunk_size = chunk_size or int(getattr(log, "chunk_size", 0))
        #: called after an epoch was added to L{epochs}
        self.epochs_changed: Optional[Callable[[], None]] = None
        self.state: Optional[LeaderState] = None
        self.waiters: CommitWaiters[tuple[Deferred[None], Optional[IDelayedCall]]] = CommitWaiters()
        self._connections: dict[bytes, _ReplicationProtocol] = {}
        self._by_protocol: dict[_ReplicationProtocol, bytes] = {}
        self._all: set[_ReplicationProtocol] = set()
        self._loop: Optional[LoopingCall] = None

    @property
    def active(self) -> bool:
        return self.state is not None

    @property
    def committed(self) -> int:
        return self.state.committed if self.state is not None else -1

    def factory(self) -> Factory:
        """
        A protocol factory for the replication connections of replicas.
        """
        return Factory.forProtocol(lambda: _ReplicationProtocol(self))  # type: ignore[arg-type]

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
        )
        if self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(1.0, now=False)
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
        self._effects(state.assign_roles())
        for effect in state.check_quorum(self.clock.seconds()):
            if isinstance(effect, NoQuorum):
                _log.warn("Leader without a quorum of replicas")
                if self.on_no_quorum is not None:
                    self.on_no_quorum()

    def _effects(self, effects: Sequence[Assign]) -> None:
        for effect in effects:
            protocol = self._connections.get(effect.subscription_id)
            if protocol is not None:
                protocol.send(Assignment(effect.subscription_id, effect.role.value))

    # -- connections (handler interface of _ReplicationProtocol) --

    def connection_made(self, protocol: _ReplicationProtocol) -> None:
        self._all.add(protocol)

    def connection_lost(self, protocol: _ReplicationProtocol) -> None:
        self._all.discard(protocol)
        sid = self._by_protocol.pop(protocol, None)
        if sid is not None:
            self._connections.pop(sid, None)
            if self.state is not None:
                self.state.unsubscribe(sid)

    def message_received(self, protocol: _ReplicationProtocol, message: Message) -> None:
        if isinstance(message, Subscribe):
            self._subscribe(protocol, message)
        elif isinstance(message, Ack):
            self._ack(message)
        else:
            protocol.abort(f"unexpected {type(message).__name__} from a replica")

    def _subscribe(self, protocol: _ReplicationProtocol, message: Subscribe) -> None:
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
            state.unsubscribe(old)
        answer = decide_start(self.epochs, self.log.end_position, message.position, message.epochs)
        if not isinstance(answer, StartAt):
            protocol.abort(answer.reason)
            return
        start = answer.position
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

    def _ack(self, message: Ack) -> None:
        state = self.state
        if state is None:
            return
        moved = state.acked(message.subscription_id, message.position)
        if moved is not None:
            self._release(moved)
        self._pump(message.subscription_id)

    def _pump(self, sid: bytes) -> None:
        """
        Send what a replica lacks, within its send window.
        """
        state = self.state
        protocol = self._connections.get(sid)
        if state is None or protocol is None:
            return
        cursor = state.replicas.get(sid)
        if cursor is None:
            return
        end = self.log.end_position
        while cursor.sent < end and state.can_send(sid) and protocol.connected_:
            start, frames, after = self.log.read_raw(cursor.sent, BULK_SIZE)
            if not frames:
                break
            protocol.send(Data(sid, start, state.committed, frames))
            state.sent(sid, after)
        if cursor.role is ReplicaRole.CatchingUp:
            self._effects(state.assign_roles())


# --- The replica ---------------------------------------------------------------------


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
        L{estwisted.elections.ReplicaSubscribed} when the leader accepted
        the subscription, L{estwisted.elections.CloneAssigned} and
        L{estwisted.elections.SlaveAssigned} for its role assignments,
        L{estwisted.elections.LeaderLinkLost} when the link closed (not
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
        self.leader_id: Optional[bytes] = None
        self.state = FollowerState(end=log.end_position)
        self.protocol: Optional[_ReplicationProtocol] = None
        self.committed = -1
        self.role: Optional[str] = None
        self._retry: Optional[IDelayedCall] = None

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
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.abort("stopped following")

    def _connect(self) -> None:
        self._retry = None
        if self.leader_id is None:
            return
        d = self.connect(Factory.forProtocol(lambda: _ReplicationProtocol(self)))  # type: ignore[arg-type]
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

    def connection_made(self, protocol: _ReplicationProtocol) -> None:
        if self.leader_id is None:
            protocol.abort("not following")
            return
        self.protocol = protocol
        self._subscribe()

    def connection_lost(self, protocol: _ReplicationProtocol) -> None:
        if protocol is self.protocol:
            self.protocol = None
            self.role = None
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

    def message_received(self, protocol: _ReplicationProtocol, message: Message) -> None:
        if protocol is not self.protocol:
            return
        if isinstance(message, Data):
            self._data(message)
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
            self._emit(ReplicaSubscribed())
            return
        if isinstance(decision, Fatal):
            _log.error("Replication refused: {reason}", reason=decision.reason)
            assert self.protocol is not None
            self.protocol.abort(decision.reason)
            return
        assert isinstance(decision, Truncate)
        self._truncate(decision.position)
        self._subscribe()

    def _truncate(self, position: int) -> None:
        """
        Cut our log at C{position} (our records past it were never
        committed: the leader never had them).
        """
        _log.warn(
            "Truncating the log from {end} to {position} (records the leader does not have)",
            end=self.log.end_position,
            position=position,
        )
        self.log.truncate(position)
        self.epochs[:] = [e for e in self.epochs if e.position < position]
        self.truncated(position)
        if self.epochs_changed is not None:
            self.epochs_changed()

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

    def _abandon_batch(self, reason: str) -> None:
        self.log.discard()
        self._batch = []
        self.state.position = self.log.end_position
        if self.protocol is not None:
            self.protocol.abort(reason)

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
            _log.failure("Flushing replicated records failed")
            self._batch = []
            self.log.discard()
            self.state.position = self.log.end_position
            if self.protocol is not None:
                self.protocol.abort(f"cannot flush: {e}")
            return
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
        if client:
            try:
                self.apply(client)
            except Exception:
                _log.failure("Applying replicated records failed")
        if acked is not None and self.protocol is not None:
            self.protocol.send(Ack(state.subscription_id, acked))


# --- Sharing the internal TCP port with clients -----------------------------------------


class _Sniffer(Protocol):
    """
    Waits for the first package: a replication command makes the connection
    a replication one, anything else a client one.
    """

    def __init__(self, owner: InternalTcpFactory, addr: Optional[IAddress]) -> None:
        self.owner = owner
        self.addr = addr
        self.buffer = b""
        self.inner: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self.buffer += data
        if len(self.buffer) < 5:
            return
        command = self.buffer[4]
        inner: Any
        if command in COMMANDS and self.owner.leader is not None:
            inner = self.owner.leader.factory().buildProtocol(self.addr)
        else:
            inner = self.owner.clients.buildProtocol(self.addr)
        if inner is None:
            assert self.transport is not None
            self.transport.loseConnection()
            return
        self.inner = inner
        inner.makeConnection(self.transport)
        buffered, self.buffer = self.buffer, b""
        inner.dataReceived(buffered)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.inner is not None:
            self.inner.connectionLost(reason)


class InternalTcpFactory(Factory):
    """
    The internal TCP port: replication for replicas (their first package is
    a replication command), the client protocol for everyone else.
    """

    def __init__(self, clients: Factory, leader: Optional[ReplicationLeader]) -> None:
        self.clients = clients
        self.leader = leader

    def doStart(self) -> None:
        self.clients.doStart()

    def doStop(self) -> None:
        self.clients.doStop()

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        return _Sniffer(self, addr)


# --- Wiring into a clustered node ---------------------------------------------------------


@implementer(ICommitGate)
class _CallableGate:
    """
    An L{ICommitGate} that asks C{commit(end)} of a callable: the
    leader's quorum wait, or the refusal of a node that stopped leading.
    """

    def __init__(self, commit: Callable[[int], Deferred[None]]) -> None:
        self._commit = commit

    def commit(self, end: int) -> Deferred[None]:
        return self._commit(end)


class NodeReplication:
    """
    Replication of one clustered node, performing what the node role
    machine decides (L{estwisted.cluster.IRoleReplication}: L{lead},
    L{follow}, L{stand_by}) and reporting what it observes back to it
    (C{report}: the leader accepted our subscription, assigned us a role,
    our link to it closed, or, leading, our epoch was written or the quorum
    was lost).  Writes are refused as the published leadership view says
    (L{estwisted.leadership.LeadershipView.refusal}:
    L{estwisted.errors.NotLeader} with the leader's external endpoints, or
    L{NotReady}) except on the leader, where they wait for the quorum
    (L{StreamStore.set_commit_gate}).

    @param connect: C{connect(host, port, factory)} opens a connection to a
        leader's internal TCP endpoint.
    @param report: called with every L{estwisted.cluster.ReplicationEvent}.
    @param leadership: the node's published L{estwisted.leadership.Leadership}
        (its write refusal is applied to the store); without one writes are
        refused until L{lead}.
    @param on_epoch: called with the newest epoch of the log (C{None}:
        none) whenever it changes (written here as leader, received or cut
        off as follower), to advertise it in gossip: elections compare it.
    """

    def __init__(
        self,
        store: Any,
        log: Any,
        clock: IReactorTime,
        node_id: bytes,
        cluster_size: int,
        connect: Callable[[str, int, Factory], Deferred[Any]],
        commit_count: int = -1,
        commit_timeout: float = 2.0,
        read_only: bool = False,
        report: Optional[Callable[[Any], None]] = None,
        on_epoch: Optional[Callable[[Optional[Epoch]], None]] = None,
        leadership: Optional[Leadership] = None,
    ) -> None:
        self.store = store
        self.log = log
        self.clock = clock
        self.epochs = scan_epochs(log)
        self._connect_to = connect
        self._target: Optional[tuple[str, int]] = None
        self.read_only = read_only
        self._report = report
        self.on_epoch = on_epoch
        self.leader = ReplicationLeader(
            log,
            clock,
            cluster_size,
            node_id,
            commit_count=commit_count,
            commit_timeout=commit_timeout,
            epochs=self.epochs,
            on_no_quorum=self._no_quorum,
        )
        self.follower = ReplicationFollower(
            log,
            clock,
            node_id,
            self._connect,
            store.apply_replicated,
            store.truncated,
            promotable=not read_only,
            epochs=self.epochs,
            report=self._follower_event,
        )
        if leadership is None:
            leadership = Leadership(LeadershipView(VNodeState.Initializing))
        self.leadership = leadership
        # The only writer of the store's refusal: what the view says.
        store.writes_refused = leadership.view.refusal()
        leadership.subscribe(self._leadership_changed)
        #: the node's L{estwisted.persistent.PersistentSubscriptions}, reloaded
        #: when this node becomes leader
        self.persistent: Any = None
        self.leader.epochs_changed = self._epochs_changed
        self.follower.epochs_changed = self._epochs_changed

    def _epochs_changed(self) -> None:
        if self.on_epoch is not None:
            self.on_epoch(self.epochs[-1] if self.epochs else None)

    def _emit(self, event: Any) -> None:
        if self._report is not None:
            self._report(event)

    def _leadership_changed(self, view: LeadershipView) -> None:
        self.store.writes_refused = view.refusal()

    def _no_quorum(self) -> None:
        self._emit(QuorumLost())

    def _follower_event(self, event: Any) -> None:
        if self.follower.leader_id is not None:
            self._emit(event)

    def _connect(self, factory: Factory) -> Deferred[Any]:
        if self._target is None:
            return Deferred()
        host, port = self._target
        return self._connect_to(host, port, factory)

    def _gate(self, end: int) -> Deferred[None]:
        d = self.leader.wait_committed(end)
        self.leader.flushed(end)
        return d

    # -- IRoleReplication --

    def lead(self, epoch_number: int) -> None:
        """
        Become the replication leader: write an epoch (numbered at least
        C{epoch_number}), gate writes on the quorum and take them.
        """
        self.follower.stop()
        self._target = None
        if self.leader.active:
            return
        epoch = self.leader.start(epoch_number)
        self.store.set_commit_gate(_CallableGate(self._gate))
        if self.persistent is not None:
            # groups and checkpoints written by the previous leader
            # arrived as events: serve them from here now
            try:
                self.persistent.reload()
            except Exception:
                _log.failure("Could not reload the persistent subscriptions")
        self._emit(EpochWritten(epoch.position, epoch.number, uuid.UUID(bytes=epoch.epoch_id)))

    def follow(self, leader: Any) -> None:
        """
        Replicate from C{leader} (an L{estwisted.gossip.MemberInfo}).
        """
        self._step_down()
        self._target = (leader.internal_tcp.host, leader.internal_tcp.port)
        self.follower.start(leader.instance_id.bytes)

    def stand_by(self) -> None:
        """
        Neither lead nor follow.
        """
        self._step_down()
        self._target = None
        self.follower.stop()

    def _step_down(self) -> None:
        if self.leader.active:
            self.leader.stop(NotReady("The leader stepped down before the write was replicated"))
            # Writes still buffered in the store flush later: they must fail
            # too, never be acknowledged without the quorum.
            self.store.set_commit_gate(_CallableGate(self._refuse))
            self.store.release_gated()

    def _refuse(self, end: int) -> Deferred[None]:
        """
        The commit gate of a node that stopped leading: the batch fails; its
        records (in our log) are indexed right after, and a truncation
        removes them if the new leader does not have them.
        """
        self.clock.callLater(0, self.store.release_gated)
        d: Deferred[None] = Deferred()
        d.errback(NotReady("The leader stepped down before the write was replicated"))
        return d

    def stop(self) -> None:
        self._step_down()
        self.follower.stop()


def attach_replication(
    config: Any,
    reactor: Any,
    store: Any,
    log: Any,
    wiring: Any,
    clients: Factory,
    persistent: Any = None,
    tls: Any = None,
) -> InternalTcpFactory:
    """
    Wire replication into a clustered node built by
    L{estwisted.cluster.make_cluster_service}: the controller drives it
    (L{estwisted.cluster.IRoleReplication}) and hears what it observes; it
    serves replicas on the internal TCP port beside clients.

    @param tls: the node's L{estwisted.tls.NodeTLS}, or C{None}: with it,
        replicas dial the leader's internal TCP port over mutual TLS (the
        leader's certificate must match the address dialled).
    @return: the factory to listen with on the internal TCP port.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint

    controller = wiring.controller

    def connect(host: str, port: int, factory: Factory) -> Deferred[Any]:
        wrapped: Any = factory if tls is None else tls.client_factory(factory, host)
        return TCP4ClientEndpoint(reactor, host, port, timeout=2).connect(wrapped)

    def on_epoch(epoch: Optional[Epoch]) -> None:
        # Elections compare epochs first (cluster.md 3.4): advertise the
        # log's newest epoch in our gossip record.
        if epoch is None:
            controller.set_epoch(-1, -1, uuid.UUID(int=0))
        else:
            controller.set_epoch(epoch.position, epoch.number, uuid.UUID(bytes=epoch.epoch_id))

    commit_count = max(
        int(getattr(config, "commit_count", -1)), int(getattr(config, "prepare_count", -1))
    )
    replication = NodeReplication(
        store,
        log,
        reactor,
        controller.machine.own.instance_id.bytes,
        int(config.cluster_size),
        connect,
        commit_count=commit_count,
        commit_timeout=int(getattr(config, "commit_timeout_ms", 2000)) / 1000.0,
        read_only=bool(getattr(config, "read_only_replica", False)),
        report=controller.replication_event,
        on_epoch=on_epoch,
        leadership=controller.leadership,
    )
    replication.persistent = persistent
    controller.drive(replication)
    if replication.epochs:
        on_epoch(replication.epochs[-1])
    reactor.addSystemEventTrigger("before", "shutdown", replication.stop)
    wiring_replication = InternalTcpFactory(clients, replication.leader)
    wiring_replication.replication = replication  # type: ignore[attr-defined]
    return wiring_replication


# --- HTTP writes on a follower go to the leader ---------------------------------------

#: Set on requests a node forwarded, so that two nodes that each take the
#: other for the leader never bounce a request between them.
FORWARDED_HEADER = b"x-estwisted-forwarded"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"content-length",
        b"host",
    }
)
_LOCAL_PREFIXES = (b"/gossip", b"/elections", b"/admin", b"/ping", b"/info")
#: Reads served by the leader only: persistent subscription groups run
#: there (a follower's copy would hand out what the leader's consumers
#: already acked).
_LEADER_ONLY_PREFIXES = (b"/subscriptions",)


class LeaderForwardingResource:
    """
    Wraps the HTTP API root (a leaf resource) of a cluster node: a write
    (any method but C{GET}/C{HEAD}/C{OPTIONS}) received while the node is a
    follower, and every persistent subscription request (their groups run
    on the leader), without C{ES-RequireMaster: True}, is sent to the leader's
    HTTP endpoint with the same method, path, query, headers and body, and
    answered as the leader answered (cluster.md 6.4), so a load balancer in
    front of every node works.  Everything else is served locally.

    @param leader_http: returns the leader's external HTTP C{(host, port)}
        when this node follows a known leader, else C{None}.
    @param https_policy: in a TLS cluster, the node's peer policy
        (L{estwisted.tls.NodeTLS.https_policy}, the one gossip uses): the
        request goes to the leader over HTTPS and the leader's certificate
        is checked against the trusted roots and its SAN (issue 11 item 4).
        C{None}: plain HTTP.
    @param client: the treq L{HTTPClient} to send with (tests); by default
        one over L{estwisted.gossiphttp.PeerEndpointFactory}.
    """

    isLeaf = True

    def __init__(
        self,
        inner: Any,
        leader_http: Callable[[], Optional[tuple[str, int]]],
        reactor: Any,
        timeout: float = 10.0,
        https_policy: Optional[Any] = None,
        client: Optional[Any] = None,
    ) -> None:
        self.inner = inner
        self.leader_http = leader_http
        self.reactor = reactor
        self.timeout = timeout
        self.scheme = "https" if https_policy is not None else "http"
        if client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            from estwisted.gossiphttp import PeerEndpointFactory

            # a few kept-alive connections to the leader: forwarding does
            # not pay a (TLS) handshake per request
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 8
            pool.cachedConnectionTimeout = 30
            pool.retryAutomatically = False
            factory = PeerEndpointFactory(reactor, timeout, https_policy)
            client = HTTPClient(Agent.usingEndpointFactory(reactor, factory, pool=pool))
            self._pool: Optional[Any] = pool
        else:
            self._pool = None
        self.client = client

    def close(self) -> Deferred[None]:
        """
        Close the kept-alive connections to the leader.
        """
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()  # type: ignore[no-any-return]

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: bytes, child: Any) -> None:
        self.inner.putChild(path, child)

    def _should_forward(self, request: Any) -> Optional[tuple[str, int]]:
        if request.method in (b"GET", b"HEAD", b"OPTIONS") and not request.path.startswith(
            _LEADER_ONLY_PREFIXES
        ):
            return None
        if request.getHeader(FORWARDED_HEADER) is not None:
            return None
        if request.path.startswith(_LOCAL_PREFIXES):
            return None
        require = request.getHeader(b"es-requiremaster")
        if require is not None and require.strip().lower() == b"true":
            return None
        return self.leader_http()

    def render(self, request: Any) -> Any:
        target = self._should_forward(request)
        if target is None:
            return self.inner.render(request)
        return self._forward(request, target)

    def _forward(self, request: Any, target: tuple[str, int]) -> Any:
        import treq
        from twisted.web.server import NOT_DONE_YET

        host, port = target
        netloc = f"[{host}]" if ":" in host else host
        url = f"{self.scheme}://{netloc}:{port}{request.uri.decode('latin-1')}"
        from twisted.web.http_headers import Headers

        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                headers.setRawHeaders(name, list(values))
        forwarded_host = request.getHeader(b"host")
        if forwarded_host is not None:
            headers.setRawHeaders(b"X-Forwarded-Host", [forwarded_host])
        headers.setRawHeaders(FORWARDED_HEADER, [b"1"])
        body = request.content.read() if request.content is not None else b""
        d = self.client.request(
            request.method.decode("ascii"),
            url,
            headers=headers,
            data=body or None,
            timeout=self.timeout,
        )
        finished = {"done": False}
        request.notifyFinish().addBoth(lambda _: finished.update(done=True))

        def answered(response: Any) -> Any:
            def send(content: bytes) -> None:
                if finished["done"]:
                    return
                request.setResponseCode(response.code, response.phrase)
                for name, values in response.headers.getAllRawHeaders():
                    if name.lower() not in _HOP_BY_HOP:
                        request.responseHeaders.setRawHeaders(name, values)
                request.setHeader(b"content-length", str(len(content)).encode())
                request.write(content)
                request.finish()

            return treq.content(response).addCallback(send)

        def failed(failure: Failure) -> None:
            _log.info(
                "Forwarding {method} {path} to the leader failed: {reason}",
                method=request.method,
                path=request.path,
                reason=failure.getErrorMessage(),
            )
            if finished["done"]:
                return
            request.setResponseCode(503, b"Server Is Not Ready")
            request.setHeader(b"content-length", b"0")
            request.finish()

        d.addCallback(answered).addErrback(failed)
        return NOT_DONE_YET


def leader_http_of(leadership: Leadership) -> Callable[[], Optional[tuple[str, int]]]:
    """
    The leader's external HTTP endpoint while this node follows one, as the
    published leadership view tells it, for L{LeaderForwardingResource}.
    """

    def leader_http() -> Optional[tuple[str, int]]:
        return leadership.view.forward_http()

    return leader_http


__all__ = [
    "Ack",
    "Assignment",
    "Committed",
    "Data",
    "InternalTcpFactory",
    "LeaderForwardingResource",
    "leader_http_of",
    "NodeReplication",
    "attach_replication",
    "ProtocolError",
    "ReplicationFollower",
    "ReplicationLeader",
    "Retry",
    "Subscribe",
    "Subscribed",
    "decode_frames",
    "decode_message",
    "encode_message",
    "scan_epochs",
]
