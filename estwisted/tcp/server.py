# -*- test-case-name: estwisted.tcp.test.test_server -*-
"""
The external (and internal-client) TCP endpoint: a thin Twisted adapter of
the Event Store v5 client protocol (tcp-protocol.md).

Layers, bottom up: L{estwisted.wire.framing.Framer} splits the byte stream into
packages; L{estwisted.wire.tcpcodec} decodes the package header and translates
protobuf messages from and to model values; L{TcpClientProtocol} dispatches
each package by command byte to one handler method, which calls the
L{StreamStore}, the L{SubscriptionHub} or the L{PersistentSubscriptions} and
writes the encoded reply under the request's correlation id.

Connection-level behaviour:
  - heartbeats: requests are answered at once; the server probes an idle
    peer every C{heartbeat_interval} seconds and aborts the connection when
    nothing arrives within C{heartbeat_timeout} after a probe;
  - a frame or package that cannot be decoded gets a C{BadRequest} with the
    all-zero correlation id and the connection is closed; a payload that
    cannot be decoded, or an unknown command, gets a C{BadRequest} under its
    own correlation id and the connection stays open;
  - backpressure: the protocol is registered as a streaming producer of its
    transport.  While the transport's buffer is full, reading from the
    socket stops and outgoing packages (subscription pushes, late replies)
    wait in a queue; above C{max_pending_packages} or C{max_pending_bytes}
    the connection is closed after a zero-correlation C{BadRequest}, as v5
    does;
  - on close every subscription of the connection is dropped server-side.

C{ScavengeDatabase} starts the store's scavenger
(L{estwisted.core.scavenger}) and answers C{Started} with its id,
C{InProgress} with the running one's, or C{Unauthorized}.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.cluster.leadership import Leadership
from estwisted.core import errors
from estwisted.core.model import Principal, ResolvedEvent, WriteResult
from estwisted.core.streams import StreamStore
from estwisted.subscriptions.persistent import (
    IPersistentSubscriber,
    NakAction,
    PersistentConnection,
    PersistentSettings,
    PersistentSubscriptions,
    drop_reason_for,
)
from estwisted.subscriptions.volatile import (
    DropReason,
    ISubscriber,
    SubscriptionHub,
    VolatileSubscription,
)
from estwisted.wire import messages_pb2 as pb
from estwisted.wire import tcpcodec
from estwisted.wire.framing import DEFAULT_MAX_PACKAGE_SIZE, Framer, FramingError
from estwisted.wire.tcpcodec import (
    INT_MIN,
    ZERO_CORRELATION,
    PackageError,
    PayloadError,
    TcpCommand,
    frame_package,
)

__all__ = ["TcpClientFactory", "TcpClientProtocol"]

#: v5's ConnectionQueueSizeThreshold and ConnectionPendingSendBytesThreshold.
MAX_PENDING_PACKAGES = 50_000
MAX_PENDING_BYTES = 10 * 1024 * 1024

_C = TcpCommand
_HEARTBEAT_RESPONSE = int(_C.HeartbeatResponseCommand)

_OPERATION_RESULTS: list[tuple[type[Exception], int]] = [
    (errors.WrongExpectedVersion, pb.WrongExpectedVersion),
    (errors.StreamDeleted, pb.StreamDeleted),
    (errors.InvalidTransaction, pb.InvalidTransaction),
    (errors.AccessDenied, pb.AccessDenied),
    (errors.CommitTimeout, pb.CommitTimeout),
    (errors.StorageError, pb.CommitTimeout),
]


def _not_master(error: errors.NotLeader) -> bytes:
    """
    A C{NotHandled(NotMaster)} payload with the leader's external endpoints.
    """
    tcp = error.tcp or ("", 0)
    http = error.http or tcp
    info = pb.NotHandled.MasterInfo(
        external_tcp_address=tcp[0],
        external_tcp_port=tcp[1],
        external_http_address=http[0],
        external_http_port=http[1],
    )
    return pb.NotHandled(
        reason=pb.NotHandled.NotMaster, additional_info=info.SerializeToString()
    ).SerializePartialToString()


def _error(failure: Failure) -> BaseException:
    error = failure.value
    assert error is not None
    return error


def _operation_result(error: BaseException) -> Optional[int]:
    for kind, result in _OPERATION_RESULTS:
        if isinstance(error, kind):
            return result
    return None


@implementer(ISubscriber)
class _VolatileSubscriber:
    """
    The L{estwisted.subscriptions.volatile.ISubscriber} of one C{SubscribeToStream}.
    """

    __slots__ = ("protocol", "correlation_id")

    def __init__(self, protocol: TcpClientProtocol, correlation_id: bytes) -> None:
        self.protocol = protocol
        self.correlation_id = correlation_id

    def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
        protocol = self.protocol
        protocol.send(
            frame_package(
                0xC2,
                self.correlation_id,
                tcpcodec.stream_event_appeared(event, protocol.v1),
            )
        )

    def dropped(self, reason: DropReason) -> None:
        self.protocol.subscription_dropped(self.correlation_id, reason)


@implementer(IPersistentSubscriber)
class _PersistentSubscriber:
    """
    The L{estwisted.subscriptions.persistent.IPersistentSubscriber} of one
    C{ConnectToPersistentSubscription}.  Pushes that happen before the
    confirmation was sent (during C{connect}) are held back until then.
    """

    __slots__ = ("protocol", "correlation_id", "held")

    def __init__(self, protocol: TcpClientProtocol, correlation_id: bytes) -> None:
        self.protocol = protocol
        self.correlation_id = correlation_id
        self.held: Optional[list[bytes]] = []

    def event_appeared(self, event: ResolvedEvent, retry_count: int) -> None:
        protocol = self.protocol
        package = frame_package(
            0xC7,
            self.correlation_id,
            tcpcodec.persistent_event_appeared(event, retry_count, protocol.v1),
        )
        if self.held is not None:
            self.held.append(package)
        else:
            protocol.send(package)

    def release(self) -> None:
        held, self.held = self.held, None
        for package in held or ():
            self.protocol.send(package)

    def dropped(self, reason: DropReason) -> None:
        self.held = None
        self.protocol.subscription_dropped(self.correlation_id, reason)


@implementer(IPushProducer)
class TcpClientProtocol(Protocol):
    """
    One client connection.  See the module docstring.

    @ivar v1: the client never identified as version 1 or later (V1 event
        number downgrades apply).
    @ivar default_user: the principal from C{Authenticate}, used by packages
        without credentials.
    """

    _log = Logger()

    factory: TcpClientFactory

    def __init__(self, factory: TcpClientFactory) -> None:
        self.factory = factory
        self.store = factory.store
        self._framer = Framer(factory.max_package_size)
        self.v1 = True
        self.connection_name = ""
        self.default_user: Optional[Principal] = None
        self.closed = False
        self._subscriptions: dict[bytes, Any] = {}
        self._paused = False
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._received = 0
        self._last_seen = -1
        self._heartbeat_call: Optional[IDelayedCall] = None
        self._abort_call: Optional[IDelayedCall] = None
        self._handlers: dict[int, Callable[[bytes, bytes, Optional[Principal]], None]] = {
            _C.WriteEvents: self._write_events,
            _C.TransactionStart: self._transaction_start,
            _C.TransactionWrite: self._transaction_write,
            _C.TransactionCommit: self._transaction_commit,
            _C.DeleteStream: self._delete_stream,
            _C.ReadEvent: self._read_event,
            _C.ReadStreamEventsForward: self._read_stream_forward,
            _C.ReadStreamEventsBackward: self._read_stream_backward,
            _C.ReadAllEventsForward: self._read_all_forward,
            _C.ReadAllEventsBackward: self._read_all_backward,
            _C.SubscribeToStream: self._subscribe,
            _C.UnsubscribeFromStream: self._unsubscribe,
            _C.ConnectToPersistentSubscription: self._connect_persistent,
            _C.CreatePersistentSubscription: self._create_persistent,
            _C.UpdatePersistentSubscription: self._update_persistent,
            _C.DeletePersistentSubscription: self._delete_persistent,
            _C.PersistentSubscriptionAckEvents: self._ack,
            _C.PersistentSubscriptionNakEvents: self._nak,
            _C.ScavengeDatabase: self._scavenge,
        }

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._schedule_heartbeat(self.factory.heartbeat_interval)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.factory.connections.discard(self)
        for call in (self._heartbeat_call, self._abort_call):
            if call is not None and call.active():
                call.cancel()
        self._heartbeat_call = self._abort_call = None
        self._queue.clear()
        self._queued_bytes = 0
        subscriptions, self._subscriptions = self._subscriptions, {}
        for subscription in subscriptions.values():
            try:
                subscription.drop_silently()
            except Exception:
                self._log.failure("Dropping a subscription of a closed connection failed")

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        self._received += 1
        try:
            packages = self._framer.feed(data)
        except FramingError as e:
            packages = e.packages
            framing_error: Optional[FramingError] = e
        else:
            framing_error = None
        handlers = self._handlers
        for package in packages:
            if self.closed:
                return
            command = package[0]
            if len(package) < 18:
                self._close_with_bad_request(
                    f"Received bad network package. Error: package too short "
                    f"({len(package)} bytes)."
                )
                return
            correlation_id = package[2:18]
            if package[1]:
                self._handle_flagged(package)
                continue
            handler = handlers.get(command)
            if handler is not None:
                self._run(command, handler, correlation_id, package[18:], self.default_user)
            else:
                self._control(command, correlation_id, package[18:])
        if framing_error is not None and not self.closed:
            self._close_with_bad_request(f"Invalid TCP frame received. Error: {framing_error}")

    def _handle_flagged(self, raw: bytes) -> None:
        try:
            package = tcpcodec.decode_package(raw)
        except PackageError as e:
            self._close_with_bad_request(f"Received bad network package. Error: {e}")
            return
        corr = package.correlation_id
        if package.flags & tcpcodec.FLAG_TRUSTED_WRITE:
            self.send(
                frame_package(
                    0xF0,
                    corr,
                    b"Trusted writes aren't accepted over the external TCP interface",
                )
            )
            self._close()
            return
        handler = self._handlers.get(package.command)
        if package.command == _C.Authenticate:
            self._authenticate(package)
            return
        if handler is None:
            self._control(package.command, corr, package.data)
            return
        principal = self.default_user
        if package.login is not None:
            try:
                principal = self.store.authenticate(package.login, package.password or "")
            except errors.NotAuthenticated:
                self.send(frame_package(0xF4, corr, b"Not Authenticated"))
                return
            except errors.NotReady:
                self.send(frame_package(0xF1, corr, tcpcodec.not_handled(0)))
                return
            except Exception:
                self._log.failure("Authentication failed unexpectedly")
                self.send(frame_package(0xF4, corr, b"Internal Server Error"))
                return
        self._run(package.command, handler, corr, package.data, principal)

    def _run(
        self,
        command: int,
        handler: Callable[[bytes, bytes, Optional[Principal]], None],
        corr: bytes,
        data: bytes,
        principal: Optional[Principal],
    ) -> None:
        """
        Call one handler; turn what it raises into the generic answers.
        """
        try:
            if not self.factory.ready:
                raise errors.NotReady()
            handler(corr, data, principal)
        except Exception as e:
            self._answer_error(corr, e, command)

    def _answer_error(self, corr: bytes, error: BaseException, command: int = 0) -> None:
        if isinstance(error, PayloadError):
            name = tcpcodec.command_name(command)
            self.send(
                frame_package(
                    0xF0,
                    corr,
                    f"Could not unwrap network package for command {name}.\n{error}".encode(),
                )
            )
        elif isinstance(error, errors.BadRequest):
            self.send(frame_package(0xF0, corr, str(error).encode("utf-8")))
        elif isinstance(error, errors.NotLeader) and error.tcp is not None:
            # a cluster follower (cluster.md 6.2): NotMaster with the leader
            self.send(frame_package(0xF1, corr, _not_master(error)))
        elif isinstance(error, errors.NotReady):
            self.send(frame_package(0xF1, corr, tcpcodec.not_handled(0)))
        elif isinstance(error, errors.NotAuthenticated):
            self.send(frame_package(0xF4, corr, b"Not Authenticated"))
        else:
            self._log.failure(
                "Unexpected error handling a request",
                failure=Failure(error),
            )
            self.send(frame_package(0xF0, corr, f"Internal error: {error}".encode()))

    def _late_error(self, failure: Failure, corr: bytes) -> None:
        """
        Building a reply failed: still answer the correlation id.
        """
        self._log.failure("Could not build a reply", failure)
        self.send(frame_package(0xF0, corr, b"Internal error while building the reply."))

    def _control(self, command: int, corr: bytes, data: bytes) -> None:
        """
        Commands that need no principal, and unknown ones.
        """
        if command == 0x01:
            self.send(frame_package(_HEARTBEAT_RESPONSE, corr))
        elif command == 0x02:
            pass
        elif command == 0x03:
            self.send(frame_package(0x04, corr, data))
        elif command == 0xF5:
            try:
                message = tcpcodec.parse(pb.IdentifyClient, data)
            except PayloadError as e:
                self._answer_error(corr, e, command)
                return
            self.v1 = message.version < 1
            self.connection_name = message.connection_name
            self.send(frame_package(0xF6, corr))
        elif command == 0xF2:
            self.send(frame_package(0xF4, corr, b"No user credentials provided."))
        elif command == 0xF0:
            self._log.info("Client sent BadRequest: {text}", text=data.decode("utf-8", "replace"))
        else:
            self.send(
                frame_package(
                    0xF0,
                    corr,
                    (
                        "Could not unwrap network package for command "
                        f"{tcpcodec.command_name(command)}.\nNo handler for this command."
                    ).encode(),
                )
            )

    def _authenticate(self, package: tcpcodec.TcpPackage) -> None:
        corr = package.correlation_id
        try:
            principal = self.store.authenticate(package.login or "", package.password or "")
        except errors.NotAuthenticated:
            self.send(frame_package(0xF4, corr, b"Unauthorized"))
            return
        except errors.NotReady:
            self.send(frame_package(0xF4, corr, b"Server not yet ready"))
            return
        except Exception:
            self._log.failure("Authentication failed unexpectedly")
            self.send(frame_package(0xF4, corr, b"Internal Server Error"))
            return
        self.default_user = principal
        self.send(frame_package(0xF3, corr))

    # -- output and backpressure -------------------------------------------

    def send(self, frame: bytes) -> None:
        """
        Write one framed package, or queue it while the transport is full.
        """
        if self.closed:
            return
        if not self._paused:
            self.transport.write(frame)  # type: ignore[union-attr]
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if (
            len(self._queue) > self.factory.max_pending_packages
            or self._queued_bytes > self.factory.max_pending_bytes
        ):
            self._log.warn(
                "Closing a slow connection: {packages} packages / {size} bytes pending",
                packages=len(self._queue),
                size=self._queued_bytes,
            )
            self._queue.clear()
            self._queued_bytes = 0
            self.transport.write(  # type: ignore[union-attr]
                frame_package(
                    0xF0,
                    ZERO_CORRELATION,
                    b"Connection pending send queue is over the limit; closing.",
                )
            )
            self._close()

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: stop reading requests and queue
        what must still be sent.
        """
        if self._paused:
            return
        self._paused = True
        if not self.closed:
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        """
        The transport drained: write the queue, then read again.
        """
        if not self._paused or self.closed:
            return
        self._paused = False
        queue = self._queue
        write = self.transport.write  # type: ignore[union-attr]
        while queue and not self._paused:
            frame = queue.popleft()
            self._queued_bytes -= len(frame)
            write(frame)
        if not self._paused and not self.closed:
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0

    @property
    def pending(self) -> tuple[int, int]:
        """
        Packages and bytes waiting for the transport.
        """
        return len(self._queue), self._queued_bytes

    def _close_with_bad_request(self, text: str) -> None:
        self._log.info("Closing connection: {text}", text=text)
        self.send(frame_package(0xF0, ZERO_CORRELATION, text.encode("utf-8")))
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.loseConnection()  # type: ignore[union-attr]
        # A peer that does not read would keep the connection open forever.
        self._abort_call = self.factory.clock.callLater(
            max(self.factory.heartbeat_timeout, 1.0) * 5, self._abort
        )

    def _abort(self) -> None:
        self._abort_call = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- heartbeats --------------------------------------------------------

    def _schedule_heartbeat(self, delay: float) -> None:
        self._heartbeat_call = self.factory.clock.callLater(delay, self._heartbeat_check)

    def _heartbeat_check(self) -> None:
        self._heartbeat_call = None
        if self.closed:
            return
        if self._received != self._last_seen or self._paused:
            # While the transport is full we do not read the peer, so its
            # silence proves nothing; the pending limits bound that state.
            self._last_seen = self._received
            self._schedule_heartbeat(self.factory.heartbeat_interval)
            return
        self.send(frame_package(0x01, uuid.uuid4().bytes_le))
        self._heartbeat_call = self.factory.clock.callLater(
            self.factory.heartbeat_timeout, self._heartbeat_timeout
        )

    def _heartbeat_timeout(self) -> None:
        self._heartbeat_call = None
        if self.closed:
            return
        if self._received != self._last_seen or self._paused:
            self._last_seen = self._received
            self._schedule_heartbeat(self.factory.heartbeat_interval)
            return
        self._log.info("Closing connection: HEARTBEAT TIMEOUT")
        self.closed = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- writes ------------------------------------------------------------

    def _write_events(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = pb.WriteEvents()
        try:
            message.ParseFromString(data)
        except Exception as e:
            raise PayloadError(str(e)) from e
        events = tcpcodec.new_events_from_proto(message.events)
        d = self.store.append(message.event_stream_id, message.expected_version, events, principal)
        d.addCallbacks(
            self._write_done,
            self._write_failed,
            callbackArgs=(corr,),
            errbackArgs=(corr,),
        ).addErrback(self._late_error, corr)

    def _write_done(self, result: WriteResult, corr: bytes) -> None:
        self.send(
            frame_package(
                0x83,
                corr,
                tcpcodec.write_completed_success(
                    result.first_event_number, result.last_event_number, result.position
                ),
            )
        )

    def _write_failed(self, failure: Failure, corr: bytes) -> None:
        error = _error(failure)
        result = _operation_result(error)
        if result is None:
            self._answer_error(corr, error)
            return
        if isinstance(error, errors.DiskFull):
            pass  # logged once per batch by the group commit
        elif result == pb.CommitTimeout and isinstance(error, errors.StorageError):
            self._log.failure("Write failed in storage", failure)
        current = getattr(error, "current_version", -1)
        self.send(
            frame_package(0x83, corr, tcpcodec.write_completed_failure(result, str(error), current))
        )

    def _delete_stream(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.DeleteStream, data)
        d = self.store.delete_stream(
            message.event_stream_id, message.expected_version, message.hard_delete, principal
        )

        def done(result: WriteResult) -> None:
            self.send(
                frame_package(
                    0x8B,
                    corr,
                    pb.DeleteStreamCompleted(
                        result=pb.Success,
                        message="",
                        prepare_position=result.position,
                        commit_position=result.position,
                    ).SerializePartialToString(),
                )
            )

        def failed(failure: Failure) -> None:
            result = _operation_result(_error(failure))
            if result is None:
                self._answer_error(corr, _error(failure))
                return
            self.send(
                frame_package(
                    0x8B,
                    corr,
                    pb.DeleteStreamCompleted(
                        result=result,  # type: ignore[arg-type]
                        message=str(_error(failure)),
                        prepare_position=-1,
                        commit_position=-1,
                    ).SerializePartialToString(),
                )
            )

        d.addCallbacks(done, failed).addErrback(self._late_error, corr)

    def _transaction_reply(
        self, command: int, corr: bytes, transaction_id: int, error: Optional[Exception]
    ) -> None:
        message_type = (
            pb.TransactionStartCompleted if command == 0x85 else pb.TransactionWriteCompleted
        )
        if error is None:
            message = message_type(transaction_id=transaction_id, result=pb.Success, message="")
        else:
            result = _operation_result(error)
            if result is None:
                raise error
            message = message_type(
                transaction_id=transaction_id,
                result=result,  # type: ignore[arg-type]
                message=str(error),
            )
        self.send(frame_package(command, corr, message.SerializePartialToString()))

    def _transaction_start(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.TransactionStart, data)
        try:
            transaction_id = self.store.start_transaction(
                message.event_stream_id, message.expected_version, principal
            )
        except errors.OperationError as e:
            if _operation_result(e) is None:
                raise
            self._transaction_reply(0x85, corr, -1, e)
            return
        self._transaction_reply(0x85, corr, transaction_id, None)

    def _transaction_write(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.TransactionWrite, data)
        events = tcpcodec.new_events_from_proto(message.events)
        try:
            self.store.transaction_write(message.transaction_id, events, principal)
        except errors.OperationError as e:
            if _operation_result(e) is None:
                raise
            self._transaction_reply(0x87, corr, message.transaction_id, e)
            return
        self._transaction_reply(0x87, corr, message.transaction_id, None)

    def _transaction_commit(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.TransactionCommit, data)
        transaction_id = message.transaction_id
        d = self.store.commit_transaction(transaction_id, principal)

        def done(result: WriteResult) -> None:
            self.send(
                frame_package(
                    0x89,
                    corr,
                    pb.TransactionCommitCompleted(
                        transaction_id=transaction_id,
                        result=pb.Success,
                        message="",
                        first_event_number=result.first_event_number,
                        last_event_number=result.last_event_number,
                        prepare_position=result.position,
                        commit_position=result.position,
                    ).SerializePartialToString(),
                )
            )

        def failed(failure: Failure) -> None:
            result = _operation_result(_error(failure))
            if result is None:
                self._answer_error(corr, _error(failure))
                return
            self.send(
                frame_package(
                    0x89,
                    corr,
                    pb.TransactionCommitCompleted(
                        transaction_id=transaction_id,
                        result=result,  # type: ignore[arg-type]
                        message=str(_error(failure)),
                        first_event_number=INT_MIN,
                        last_event_number=INT_MIN,
                        prepare_position=-1,
                        commit_position=-1,
                    ).SerializePartialToString(),
                )
            )

        d.addCallbacks(done, failed).addErrback(self._late_error, corr)

    # -- reads -------------------------------------------------------------

    def _check_master(self, require_master: bool) -> None:
        """
        A read that requires the master on a cluster node that is not the
        leader (cluster.md 6.1): NotHandled (NotMaster with the leader, or
        NotReady) as the published leadership view says, raised through
        L{_answer_error}.
        """
        leadership = self.factory.leadership
        if require_master and leadership is not None:
            refusal = leadership.view.refusal()
            if refusal is not None:
                raise refusal

    def _read_event(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.ReadEvent, data)
        self._check_master(message.require_master)
        result = self.store.read_event(
            message.event_stream_id, message.event_number, message.resolve_link_tos, principal
        )
        self.send(frame_package(0xB1, corr, tcpcodec.read_event_completed(result)))

    def _read_stream(
        self, reply: int, forward: bool, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        message = tcpcodec.parse(pb.ReadStreamEvents, data)
        self._check_master(message.require_master)
        result = self.store.read_stream(
            message.event_stream_id,
            message.from_event_number,
            message.max_count,
            forward,
            message.resolve_link_tos,
            principal,
        )
        self.send(frame_package(reply, corr, tcpcodec.read_stream_completed(result, self.v1)))

    def _read_stream_forward(
        self, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        self._read_stream(0xB3, True, corr, data, principal)

    def _read_stream_backward(
        self, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        self._read_stream(0xB5, False, corr, data, principal)

    def _read_all(
        self, reply: int, forward: bool, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        message = tcpcodec.parse(pb.ReadAllEvents, data)
        self._check_master(message.require_master)
        # Our events' commit and prepare positions are the same number.
        position = message.commit_position
        result = self.store.read_all(
            position, message.max_count, forward, message.resolve_link_tos, principal
        )
        self.send(frame_package(reply, corr, tcpcodec.read_all_completed(result, self.v1)))

    def _read_all_forward(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        self._read_all(0xB7, True, corr, data, principal)

    def _read_all_backward(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        self._read_all(0xB9, False, corr, data, principal)

    # -- volatile subscriptions --------------------------------------------

    def _subscribe(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.SubscribeToStream, data)
        self._forget(corr)
        try:
            subscription: VolatileSubscription = self.factory.hub.subscribe(
                message.event_stream_id,
                message.resolve_link_tos,
                principal,
                _VolatileSubscriber(self, corr),
            )
        except errors.AccessDenied:
            self.send(frame_package(0xC4, corr, tcpcodec.subscription_dropped(1)))
            return
        self._subscriptions[corr] = subscription
        last_event_number = subscription.last_event_number
        if last_event_number is not None and self.v1:
            last_event_number = tcpcodec.downgrade_event_number(last_event_number)
        self.send(
            frame_package(
                0xC1,
                corr,
                tcpcodec.subscription_confirmation(
                    subscription.last_commit_position, last_event_number
                ),
            )
        )

    def _unsubscribe(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        subscription = self._subscriptions.get(corr)
        if subscription is None:
            self.send(frame_package(0xC4, corr, tcpcodec.subscription_dropped(0)))
            return
        if isinstance(subscription, VolatileSubscription):
            subscription.unsubscribe()
        else:
            subscription.disconnect()
        if self._subscriptions.get(corr) is subscription:
            # The subscription did not report the drop itself.
            self.subscription_dropped(corr, DropReason.UNSUBSCRIBED)

    def subscription_dropped(self, corr: bytes, reason: DropReason) -> None:
        """
        A subscription of this connection ended: tell the client.
        """
        self._subscriptions.pop(corr, None)
        self.send(frame_package(0xC4, corr, tcpcodec.subscription_dropped(int(reason))))

    def _forget(self, corr: bytes) -> None:
        """
        A correlation id is reused for a new subscription: drop the old one.
        """
        old = self._subscriptions.pop(corr, None)
        if old is not None:
            old.drop_silently()

    # -- persistent subscriptions ------------------------------------------

    @staticmethod
    def _settings(
        message: pb.CreatePersistentSubscription | pb.UpdatePersistentSubscription,
    ) -> PersistentSettings:
        strategy = message.named_consumer_strategy
        if not strategy:
            strategy = "RoundRobin" if message.prefer_round_robin else "DispatchToSingle"
        return PersistentSettings(
            resolve_link_tos=message.resolve_link_tos,
            start_from=message.start_from,
            message_timeout_ms=message.message_timeout_milliseconds,
            record_statistics=message.record_statistics,
            live_buffer_size=message.live_buffer_size,
            read_batch_size=message.read_batch_size,
            buffer_size=message.buffer_size,
            max_retry_count=message.max_retry_count,
            prefer_round_robin=message.prefer_round_robin,
            checkpoint_after_ms=message.checkpoint_after_time,
            checkpoint_max_count=message.checkpoint_max_count,
            checkpoint_min_count=message.checkpoint_min_count,
            subscriber_max_count=message.subscriber_max_count,
            named_consumer_strategy=strategy,
        )

    def _persistent_reply(
        self,
        d: Deferred[None],
        corr: bytes,
        reply: int,
        message_type: Any,
        missing: type[Exception],
    ) -> None:
        def done(_: object) -> None:
            self.send(
                frame_package(
                    reply, corr, message_type(result=0, reason="").SerializePartialToString()
                )
            )

        def failed(failure: Failure) -> None:
            error = _error(failure)
            if isinstance(error, errors.AccessDenied):
                result = 3
            elif isinstance(error, missing):
                result = 1
            elif isinstance(error, (errors.BadRequest, errors.OperationError)):
                result = 2
            else:
                self._log.failure("Persistent subscription operation failed", failure)
                result = 2
            self.send(
                frame_package(
                    reply,
                    corr,
                    message_type(result=result, reason=str(error)).SerializePartialToString(),
                )
            )

        d.addCallbacks(done, failed).addErrback(self._late_error, corr)

    def _create_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.CreatePersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        d = self.factory.persistent.create(
            message.event_stream_id,
            message.subscription_group_name,
            self._settings(message),
            principal,
        )
        self._persistent_reply(
            d, corr, 0xC9, pb.CreatePersistentSubscriptionCompleted, errors.AlreadyExists
        )

    def _update_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.UpdatePersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        d = self.factory.persistent.update(
            message.event_stream_id,
            message.subscription_group_name,
            self._settings(message),
            principal,
        )
        self._persistent_reply(
            d, corr, 0xCF, pb.UpdatePersistentSubscriptionCompleted, errors.NotFound
        )

    def _delete_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.DeletePersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        d = self.factory.persistent.delete(
            message.event_stream_id, message.subscription_group_name, principal
        )
        self._persistent_reply(
            d, corr, 0xCB, pb.DeletePersistentSubscriptionCompleted, errors.NotFound
        )

    def _connect_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.ConnectToPersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        self._forget(corr)
        subscriber = _PersistentSubscriber(self, corr)
        peer = self.transport.getPeer() if self.transport is not None else None
        address = f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"
        try:
            connection: PersistentConnection = self.factory.persistent.connect(
                message.event_stream_id,
                message.subscription_id,
                principal,
                message.allowed_in_flight_messages,
                subscriber,
                address,
            )
        except errors.OperationError as e:
            subscriber.held = None
            self.send(frame_package(0xC4, corr, tcpcodec.subscription_dropped(drop_reason_for(e))))
            return
        self._subscriptions[corr] = connection
        last_event_number = connection.last_event_number
        if self.v1:
            last_event_number = tcpcodec.downgrade_event_number(last_event_number)
        self.send(
            frame_package(
                0xC6,
                corr,
                pb.PersistentSubscriptionConfirmation(
                    last_commit_position=connection.last_commit_position,
                    subscription_id=connection.subscription_id,
                    last_event_number=last_event_number,
                ).SerializePartialToString(),
            )
        )
        subscriber.release()

    def _persistent_connection(self, corr: bytes) -> Optional[PersistentConnection]:
        connection = self._subscriptions.get(corr)
        if connection is None or isinstance(connection, VolatileSubscription):
            return None
        return connection  # type: ignore[no-any-return]

    def _ack(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.PersistentSubscriptionAckEvents, data)
        connection = self._persistent_connection(corr)
        if connection is None:
            return
        connection.ack([tcpcodec.net_to_rfc(i) for i in message.processed_event_ids])

    def _nak(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse(pb.PersistentSubscriptionNakEvents, data)
        connection = self._persistent_connection(corr)
        if connection is None:
            return
        try:
            action = NakAction(message.action)
        except ValueError:
            action = NakAction.UNKNOWN
        connection.nak(
            [tcpcodec.net_to_rfc(i) for i in message.processed_event_ids],
            action,
            message.message,
        )

    # -- admin -------------------------------------------------------------

    def _scavenge(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        if principal is not None and principal.is_ops:
            make = getattr(self.store, "scavenger", None)
            scavenger = make() if make is not None else None
            result = pb.ScavengeDatabaseResponse.Started
            if scavenger is None:
                scavenge_id = str(uuid.UUID(bytes=os.urandom(16), version=4))
                self._log.info(
                    "Scavenge {id} requested by {user} (this log cannot be scavenged)",
                    id=scavenge_id,
                    user=principal.login,
                )
            else:
                from estwisted.core.scavenger import ScavengeInProgress

                try:
                    scavenge_id, _ = scavenger.start(0)
                except ScavengeInProgress as e:
                    scavenge_id = e.scavenge_id
                    result = pb.ScavengeDatabaseResponse.InProgress
            response = pb.ScavengeDatabaseResponse(result=result, scavengeId=scavenge_id)
        else:
            response = pb.ScavengeDatabaseResponse(result=pb.ScavengeDatabaseResponse.Unauthorized)
        self.send(frame_package(0xD1, corr, response.SerializePartialToString()))


class TcpClientFactory(Factory):
    """
    Builds L{TcpClientProtocol}s sharing one store, hub and persistent
    subscription service.

    @ivar ready: while false every operation is answered C{NotHandled}
        (C{NotReady}); heartbeats, ping, identify and authenticate still work.
    @ivar connections: the open connections.
    @ivar leadership: on a cluster node, the published
        L{estwisted.cluster.leadership.Leadership} (reads that require the master
        are refused as its view says); C{None} on a single node.
    """

    protocol = TcpClientProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        store: Optional[StreamStore],
        hub: SubscriptionHub,
        persistent: PersistentSubscriptions,
        clock: IReactorTime,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 1.0,
        max_package_size: int = DEFAULT_MAX_PACKAGE_SIZE,
        max_pending_packages: int = MAX_PENDING_PACKAGES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        leadership: Optional[Leadership] = None,
    ) -> None:
        if store is None:
            raise ValueError("TcpClientFactory needs an open StreamStore")
        self.store: StreamStore = store
        self.hub = hub
        self.persistent = persistent
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_package_size = max_package_size
        self.max_pending_packages = max_pending_packages
        self.max_pending_bytes = max_pending_bytes
        #: who leads, on a cluster node (C{None}: a single node, it leads)
        self.leadership = leadership
        self.ready = True
        self.connections: set[TcpClientProtocol] = set()

    def buildProtocol(self, addr: Any) -> TcpClientProtocol:  # type: ignore[override]
        return TcpClientProtocol(self)
