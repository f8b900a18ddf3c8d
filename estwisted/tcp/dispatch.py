# -*- test-case-name: estwisted.tcp.test.test_server -*-
"""
The request half of the external TCP endpoint: L{RequestDispatcher} takes
one decoded request (command, correlation id, payload, principal) from the
connection (L{estwisted.tcp.server.TcpClientProtocol}, which owns framing,
heartbeats and backpressure), calls the core (L{StreamStore},
L{SubscriptionHub}, L{PersistentSubscriptions}) and sends the reply that
L{estwisted.wire.tcpcodec} encodes by command name.

C{ScavengeDatabase} starts the store's scavenger
(L{estwisted.core.scavenger}) and answers C{Started} with its id,
C{InProgress} with the running one's, or C{Unauthorized}.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from time import perf_counter
from typing import Any, Optional, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.cluster.leadership import Leadership
from estwisted.core import errors
from estwisted.core.model import Principal, ResolvedEvent, WriteResult
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
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
from estwisted.wire.tcpcodec import PayloadError, TcpCommand, frame_package

__all__ = ["Connection", "Core", "RequestDispatcher"]


class Core(Protocol):
    """
    What the dispatcher calls: the connection factory's core objects.

    @ivar ready: while false every request is answered C{NotHandled}.
    @ivar leadership: on a cluster node, who leads (C{None}: a single node).
    """

    store: StreamStore
    users: UserManager
    hub: SubscriptionHub
    persistent: PersistentSubscriptions
    leadership: Optional[Leadership]
    ready: bool
    request_meter: Optional[RequestMeter]


class RequestMeter(Protocol):
    """
    Counts every request and times a sample of them (the node's metrics,
    L{estwisted.web.metrics.TcpRequestMeter}).

    @ivar counts: requests so far, by command byte (256 entries).
    @ivar sample_mask: a request is timed when its command's count has no
        bit of the mask set (15: one in sixteen).
    """

    counts: list[int]
    sample_mask: int

    def observe(self, command: int, seconds: float) -> None:
        """
        A timed request of C{command} took C{seconds}.
        """


class Connection(Protocol):
    """
    What the dispatcher needs of its connection
    (L{estwisted.tcp.server.TcpClientProtocol}).
    """

    @property
    def factory(self) -> Core: ...

    transport: Optional[ITransport]
    v1: bool
    default_user: Optional[Principal]
    connection_name: str

    def send(self, frame: bytes) -> None:
        """
        Write one framed package (or queue it while the transport is full).
        """


C = TcpCommand


def _error(failure: Failure) -> BaseException:
    error = failure.value
    assert error is not None
    return error


class _WriteReply:
    """
    The L{estwisted.core.groupcommit.WriteWaiter} of one C{WriteEvents}: no
    L{Deferred} on the write hot path.  Never raises: a reply that cannot
    be built is still answered (C{BadRequest}).
    """

    __slots__ = ("dispatcher", "correlation_id", "started")

    def __init__(self, dispatcher: RequestDispatcher, correlation_id: bytes) -> None:
        self.dispatcher = dispatcher
        self.correlation_id = correlation_id
        self.started = dispatcher._started

    def _timed(self) -> None:
        meter = self.dispatcher.factory.request_meter
        if meter is not None:
            meter.observe(C.WriteEvents, perf_counter() - self.started)

    def callback(self, result: WriteResult) -> None:
        if self.started:
            self._timed()
        try:
            self.dispatcher._write_done(result, self.correlation_id)
        except Exception:
            self.dispatcher._late_error(Failure(), self.correlation_id)

    def errback(self, fail: Optional[Failure | BaseException] = None) -> None:
        failure = fail if isinstance(fail, Failure) else Failure(fail)
        if self.started:
            self._timed()
        try:
            self.dispatcher._write_failed(failure, self.correlation_id)
        except Exception:
            self.dispatcher._late_error(Failure(), self.correlation_id)


@implementer(ISubscriber)
class _VolatileSubscriber:
    """
    The L{estwisted.subscriptions.volatile.ISubscriber} of one C{SubscribeToStream}.
    """

    __slots__ = ("protocol", "correlation_id")

    def __init__(self, protocol: RequestDispatcher, correlation_id: bytes) -> None:
        self.protocol = protocol
        self.correlation_id = correlation_id

    def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
        protocol = self.protocol
        protocol.send(
            frame_package(
                C.StreamEventAppeared,
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

    def __init__(self, protocol: RequestDispatcher, correlation_id: bytes) -> None:
        self.protocol = protocol
        self.correlation_id = correlation_id
        self.held: Optional[list[bytes]] = []

    def event_appeared(self, event: ResolvedEvent, retry_count: int) -> None:
        protocol = self.protocol
        package = frame_package(
            C.PersistentSubscriptionStreamEventAppeared,
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


class RequestDispatcher:
    """
    The requests of one connection; see the module docstring.

    @param connection: the connection: its C{send}, its session state
        (C{v1}, C{default_user}, C{connection_name}) and its factory's core
        objects.
    """

    _log = Logger()

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        factory = connection.factory
        self.factory = factory
        self.store = factory.store
        self.users = factory.users
        self.send = connection.send
        self._subscriptions: dict[bytes, Any] = {}
        #: when the request being dispatched arrived (0.0: not timed)
        self._started = 0.0
        self._handlers: dict[int, Callable[[bytes, bytes, Optional[Principal]], None]] = {
            C.WriteEvents: self._write_events,
            C.TransactionStart: self._transaction_start,
            C.TransactionWrite: self._transaction_write,
            C.TransactionCommit: self._transaction_commit,
            C.DeleteStream: self._delete_stream,
            C.ReadEvent: self._read_event,
            C.ReadStreamEventsForward: self._read_stream_forward,
            C.ReadStreamEventsBackward: self._read_stream_backward,
            C.ReadAllEventsForward: self._read_all_forward,
            C.ReadAllEventsBackward: self._read_all_backward,
            C.SubscribeToStream: self._subscribe,
            C.UnsubscribeFromStream: self._unsubscribe,
            C.ConnectToPersistentSubscription: self._connect_persistent,
            C.CreatePersistentSubscription: self._create_persistent,
            C.UpdatePersistentSubscription: self._update_persistent,
            C.DeletePersistentSubscription: self._delete_persistent,
            C.PersistentSubscriptionAckEvents: self._ack,
            C.PersistentSubscriptionNakEvents: self._nak,
            C.ScavengeDatabase: self._scavenge,
        }

    @property
    def v1(self) -> bool:
        return self.connection.v1

    def dispatch(
        self, command: int, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        """
        Handle one request (or answer that its command has no handler).
        """
        handler = self._handlers.get(command)
        if handler is None:
            self._control(command, corr, data)
            return
        meter = self.factory.request_meter
        started = 0.0
        if meter is not None:
            # every request counted, one in sixteen timed; a write until
            # its reply (L{_WriteReply})
            counts = meter.counts
            n = counts[command] = counts[command] + 1
            if not n & meter.sample_mask:
                started = perf_counter()
        self._started = started
        try:
            if not self.factory.ready:
                raise errors.NotReady()
            handler(corr, data, principal)
        except Exception as e:
            self._answer_error(corr, e, command)
        if started and command != C.WriteEvents:
            assert meter is not None
            meter.observe(command, perf_counter() - started)

    def handles(self, command: int) -> bool:
        """
        Whether C{command} is a request that takes a principal.
        """
        return command in self._handlers

    def connection_lost(self) -> None:
        """
        Drop every subscription of the closed connection server-side.
        """
        subscriptions, self._subscriptions = self._subscriptions, {}
        for subscription in subscriptions.values():
            try:
                subscription.drop_silently()
            except Exception:
                self._log.failure("Dropping a subscription of a closed connection failed")

    def _answer_error(self, corr: bytes, error: BaseException, command: int = 0) -> None:
        if isinstance(error, PayloadError):
            name = tcpcodec.command_name(command)
            self.send(
                frame_package(
                    C.BadRequest,
                    corr,
                    f"Could not unwrap network package for command {name}.\n{error}".encode(),
                )
            )
        elif isinstance(error, errors.BadRequest):
            self.send(frame_package(C.BadRequest, corr, str(error).encode("utf-8")))
        elif isinstance(error, errors.NotLeader) and error.tcp is not None:
            # a cluster follower (cluster.md 6.2): NotMaster with the leader
            self.send(frame_package(C.NotHandled, corr, tcpcodec.not_master(error.tcp, error.http)))
        elif isinstance(error, errors.NotReady):
            self.send(frame_package(C.NotHandled, corr, tcpcodec.not_handled(0)))
        elif isinstance(error, errors.NotAuthenticated):
            self.send(frame_package(C.NotAuthenticated, corr, b"Not Authenticated"))
        else:
            self._log.failure(
                "Unexpected error handling a request",
                failure=Failure(error),
            )
            self.send(frame_package(C.BadRequest, corr, f"Internal error: {error}".encode()))

    def _late_error(self, failure: Failure, corr: bytes) -> None:
        """
        Building a reply failed: still answer the correlation id.
        """
        self._log.failure("Could not build a reply", failure)
        self.send(frame_package(C.BadRequest, corr, b"Internal error while building the reply."))

    def _control(self, command: int, corr: bytes, data: bytes) -> None:
        """
        Commands that need no principal, and unknown ones.
        """
        if command == C.Ping:
            self.send(frame_package(C.Pong, corr, data))
        elif command == C.IdentifyClient:
            try:
                message = tcpcodec.parse_request(C.IdentifyClient, data)
            except PayloadError as e:
                self._answer_error(corr, e, command)
                return
            self.connection.v1 = message.version < 1
            self.connection.connection_name = message.connection_name
            self.send(frame_package(C.ClientIdentified, corr))
        elif command == C.Authenticate:
            self.send(frame_package(C.NotAuthenticated, corr, b"No user credentials provided."))
        elif command == C.BadRequest:
            self._log.info("Client sent BadRequest: {text}", text=data.decode("utf-8", "replace"))
        else:
            self.send(
                frame_package(
                    C.BadRequest,
                    corr,
                    (
                        "Could not unwrap network package for command "
                        f"{tcpcodec.command_name(command)}.\nNo handler for this command."
                    ).encode(),
                )
            )

    def authenticate(self, corr: bytes, login: str, password: str) -> None:
        """
        C{Authenticate}: the credentials become the connection's default
        user.
        """
        try:
            principal = self.users.authenticate(login, password)
        except errors.NotAuthenticated:
            self.send(frame_package(C.NotAuthenticated, corr, b"Unauthorized"))
            return
        except errors.NotReady:
            self.send(frame_package(C.NotAuthenticated, corr, b"Server not yet ready"))
            return
        except Exception:
            self._log.failure("Authentication failed unexpectedly")
            self.send(frame_package(C.NotAuthenticated, corr, b"Internal Server Error"))
            return
        self.connection.default_user = principal
        self.send(frame_package(C.Authenticated, corr))

    # -- writes ------------------------------------------------------------

    def _write_events(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        stream, expected, events = tcpcodec.write_events_request(data)
        self.store.append_to(stream, expected, events, principal, _WriteReply(self, corr))

    def _write_done(self, result: WriteResult, corr: bytes) -> None:
        self.send(
            tcpcodec.write_completed_frame(
                corr, result.first_event_number, result.last_event_number, result.position
            )
        )

    def _write_failed(self, failure: Failure, corr: bytes) -> None:
        error = _error(failure)
        result = tcpcodec.operation_result(error)
        if result is None:
            self._answer_error(corr, error)
            return
        if isinstance(error, errors.DiskFull):
            pass  # logged once per batch by the group commit
        elif result == tcpcodec.COMMIT_TIMEOUT and isinstance(error, errors.StorageError):
            self._log.failure("Write failed in storage", failure)
        current = getattr(error, "current_version", -1)
        self.send(
            frame_package(
                C.WriteEventsCompleted,
                corr,
                tcpcodec.write_completed_failure(result, str(error), current),
            )
        )

    def _delete_stream(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.DeleteStream, data)
        d = self.store.delete_stream(
            message.event_stream_id, message.expected_version, message.hard_delete, principal
        )

        def done(result: WriteResult) -> None:
            self.send(
                frame_package(
                    C.DeleteStreamCompleted,
                    corr,
                    tcpcodec.delete_stream_completed(tcpcodec.SUCCESS, "", result.position),
                )
            )

        def failed(failure: Failure) -> None:
            result = tcpcodec.operation_result(_error(failure))
            if result is None:
                self._answer_error(corr, _error(failure))
                return
            self.send(
                frame_package(
                    C.DeleteStreamCompleted,
                    corr,
                    tcpcodec.delete_stream_completed(result, str(_error(failure))),
                )
            )

        d.addCallbacks(done, failed).addErrback(self._late_error, corr)

    def _transaction_reply(
        self, command: int, corr: bytes, transaction_id: int, error: Optional[Exception]
    ) -> None:
        if error is None:
            payload = tcpcodec.transaction_completed(command, transaction_id, tcpcodec.SUCCESS)
        else:
            result = tcpcodec.operation_result(error)
            if result is None:
                raise error
            payload = tcpcodec.transaction_completed(command, transaction_id, result, str(error))
        self.send(frame_package(command, corr, payload))

    def _transaction_start(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.TransactionStart, data)
        try:
            transaction_id = self.store.start_transaction(
                message.event_stream_id, message.expected_version, principal
            )
        except errors.OperationError as e:
            if tcpcodec.operation_result(e) is None:
                raise
            self._transaction_reply(C.TransactionStartCompleted, corr, -1, e)
            return
        self._transaction_reply(C.TransactionStartCompleted, corr, transaction_id, None)

    def _transaction_write(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.TransactionWrite, data)
        events = tcpcodec.new_events_from_proto(message.events)
        try:
            self.store.transaction_write(message.transaction_id, events, principal)
        except errors.OperationError as e:
            if tcpcodec.operation_result(e) is None:
                raise
            self._transaction_reply(C.TransactionWriteCompleted, corr, message.transaction_id, e)
            return
        self._transaction_reply(C.TransactionWriteCompleted, corr, message.transaction_id, None)

    def _transaction_commit(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.TransactionCommit, data)
        transaction_id = message.transaction_id
        d = self.store.commit_transaction(transaction_id, principal)

        def done(result: WriteResult) -> None:
            self.send(
                frame_package(
                    C.TransactionCommitCompleted,
                    corr,
                    tcpcodec.transaction_commit_completed(
                        transaction_id,
                        tcpcodec.SUCCESS,
                        "",
                        result.first_event_number,
                        result.last_event_number,
                        result.position,
                    ),
                )
            )

        def failed(failure: Failure) -> None:
            result = tcpcodec.operation_result(_error(failure))
            if result is None:
                self._answer_error(corr, _error(failure))
                return
            self.send(
                frame_package(
                    C.TransactionCommitCompleted,
                    corr,
                    tcpcodec.transaction_commit_completed(
                        transaction_id, result, str(_error(failure))
                    ),
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
        message = tcpcodec.parse_request(C.ReadEvent, data)
        self._check_master(message.require_master)
        result = self.store.read_event(
            message.event_stream_id, message.event_number, message.resolve_link_tos, principal
        )
        self.send(frame_package(C.ReadEventCompleted, corr, tcpcodec.read_event_completed(result)))

    def _read_stream(
        self, reply: int, forward: bool, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        message = tcpcodec.parse_request(C.ReadStreamEventsForward, data)
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
        self._read_stream(C.ReadStreamEventsForwardCompleted, True, corr, data, principal)

    def _read_stream_backward(
        self, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        self._read_stream(C.ReadStreamEventsBackwardCompleted, False, corr, data, principal)

    def _read_all(
        self, reply: int, forward: bool, corr: bytes, data: bytes, principal: Optional[Principal]
    ) -> None:
        message = tcpcodec.parse_request(C.ReadAllEventsForward, data)
        self._check_master(message.require_master)
        # Our events' commit and prepare positions are the same number.
        position = message.commit_position
        result = self.store.read_all(
            position, message.max_count, forward, message.resolve_link_tos, principal
        )
        self.send(frame_package(reply, corr, tcpcodec.read_all_completed(result, self.v1)))

    def _read_all_forward(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        self._read_all(C.ReadAllEventsForwardCompleted, True, corr, data, principal)

    def _read_all_backward(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        self._read_all(C.ReadAllEventsBackwardCompleted, False, corr, data, principal)

    # -- volatile subscriptions --------------------------------------------

    def _subscribe(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.SubscribeToStream, data)
        self._forget(corr)
        try:
            subscription: VolatileSubscription = self.factory.hub.subscribe(
                message.event_stream_id,
                message.resolve_link_tos,
                principal,
                _VolatileSubscriber(self, corr),
            )
        except errors.AccessDenied:
            self.send(frame_package(C.SubscriptionDropped, corr, tcpcodec.subscription_dropped(1)))
            return
        self._subscriptions[corr] = subscription
        last_event_number = subscription.last_event_number
        if last_event_number is not None and self.v1:
            last_event_number = tcpcodec.downgrade_event_number(last_event_number)
        self.send(
            frame_package(
                C.SubscriptionConfirmation,
                corr,
                tcpcodec.subscription_confirmation(
                    subscription.last_commit_position, last_event_number
                ),
            )
        )

    def _unsubscribe(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        subscription = self._subscriptions.get(corr)
        if subscription is None:
            self.send(frame_package(C.SubscriptionDropped, corr, tcpcodec.subscription_dropped(0)))
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
        self.send(
            frame_package(C.SubscriptionDropped, corr, tcpcodec.subscription_dropped(int(reason)))
        )

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
        missing: type[Exception],
    ) -> None:
        def done(_: object) -> None:
            self.send(frame_package(reply, corr, tcpcodec.persistent_operation_completed(reply, 0)))

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
                    tcpcodec.persistent_operation_completed(reply, result, str(error)),
                )
            )

        d.addCallbacks(done, failed).addErrback(self._late_error, corr)

    def _create_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.CreatePersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        d = self.factory.persistent.create(
            message.event_stream_id,
            message.subscription_group_name,
            self._settings(message),
            principal,
        )
        self._persistent_reply(
            d,
            corr,
            C.CreatePersistentSubscriptionCompleted,
            errors.AlreadyExists,
        )

    def _update_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.UpdatePersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        d = self.factory.persistent.update(
            message.event_stream_id,
            message.subscription_group_name,
            self._settings(message),
            principal,
        )
        self._persistent_reply(
            d,
            corr,
            C.UpdatePersistentSubscriptionCompleted,
            errors.NotFound,
        )

    def _delete_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.DeletePersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        d = self.factory.persistent.delete(
            message.event_stream_id, message.subscription_group_name, principal
        )
        self._persistent_reply(
            d,
            corr,
            C.DeletePersistentSubscriptionCompleted,
            errors.NotFound,
        )

    def _connect_persistent(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.ConnectToPersistentSubscription, data)
        # persistent subscriptions live on the leader (cluster.md 6.1)
        self._check_master(True)
        self._forget(corr)
        subscriber = _PersistentSubscriber(self, corr)
        transport = self.connection.transport
        peer = transport.getPeer() if transport is not None else None
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
            self.send(
                frame_package(
                    C.SubscriptionDropped, corr, tcpcodec.subscription_dropped(drop_reason_for(e))
                )
            )
            return
        self._subscriptions[corr] = connection
        last_event_number = connection.last_event_number
        if self.v1:
            last_event_number = tcpcodec.downgrade_event_number(last_event_number)
        self.send(
            frame_package(
                C.PersistentSubscriptionConfirmation,
                corr,
                tcpcodec.persistent_confirmation(
                    connection.last_commit_position,
                    connection.subscription_id,
                    last_event_number,
                ),
            )
        )
        subscriber.release()

    def _persistent_connection(self, corr: bytes) -> Optional[PersistentConnection]:
        connection = self._subscriptions.get(corr)
        if connection is None or isinstance(connection, VolatileSubscription):
            return None
        return connection  # type: ignore[no-any-return]

    def _ack(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.PersistentSubscriptionAckEvents, data)
        connection = self._persistent_connection(corr)
        if connection is None:
            return
        connection.ack([tcpcodec.net_to_rfc(i) for i in message.processed_event_ids])

    def _nak(self, corr: bytes, data: bytes, principal: Optional[Principal]) -> None:
        message = tcpcodec.parse_request(C.PersistentSubscriptionNakEvents, data)
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
            scavenger = self.store.scavenger()
            result = tcpcodec.SCAVENGE_STARTED
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
                    result = tcpcodec.SCAVENGE_IN_PROGRESS
            response = tcpcodec.scavenge_response(result, scavenge_id)
        else:
            response = tcpcodec.scavenge_response(tcpcodec.SCAVENGE_UNAUTHORIZED)
        self.send(frame_package(C.ScavengeDatabaseResponse, corr, response))
