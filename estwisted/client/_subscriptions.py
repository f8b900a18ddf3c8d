# -*- test-case-name: estwisted.client.test.test_connection -*-
"""
Subscriptions that outlive connections.

Each object here is registered with its connection, which (re)sends its
subscribe request on every new connection and routes the packages with its
correlation id to C{package_received}.  What was already handed to the
application is tracked (L{estwisted.client._tracking}), so a
resubscription never delivers an event twice:

  - L{VolatileSubscription}: live events only; after a reconnection, events
    written while disconnected are missed, none is repeated.
  - L{CatchUpSubscription}: after each confirmation of its live
    subscription it reads from its last processed event to the end,
    buffering the live pushes meanwhile, then drains the buffer: no gap and
    no duplicate at the handover or across failovers.
  - L{PersistentSubscription}: a consumer of a server-side group; events
    it handed over and sees again (the group moved to a new leader and
    resumed from its last checkpoint) are acknowledged without reaching the
    handler.

Handlers may return a Deferred (or be C{async def}: the coroutine is run
with C{ensureDeferred}).  Events reach the handler one at a time and in
order: the next one waits until the previous handler's Deferred fired.  A
catch-up subscription reads its next slice of history only once the
handlers of the last one are done; a persistent subscription acknowledges
(C{auto_ack}) once the Deferred fired, and the server sends no more than
C{buffer_size} unacknowledged events.  A handler that raises, or whose
Deferred fails, is a handler error: the subscription is dropped with
C{"EventHandlerException"} and the error, or, for a persistent
subscription with C{handler_error_action}, the event is nak'ed with that
action and the next one is handled.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from inspect import iscoroutine
from typing import Any, Optional, Union

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

import estwisted.client._errors as errors
from estwisted.client._operations import Fail, Reconnect, Retry, decide_common, resolved_from_proto
from estwisted.client._tracking import AllTracker, HandledSet, StreamTracker
from estwisted.client._values import (
    Position,
    ResolvedEvent,
    SliceReadStatus,
    UserCredentials,
)
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import PayloadError, TcpCommand, TcpPackage, parse

#: The owning L{estwisted.client._connection.EventStoreConnection} (not
#: imported: that module imports this one).
EventStoreConnection = Any

_C = TcpCommand

_DROP_NAMES = {
    pb.SubscriptionDropped.Unsubscribed: "Unsubscribed",
    pb.SubscriptionDropped.AccessDenied: "AccessDenied",
    pb.SubscriptionDropped.NotFound: "NotFound",
    pb.SubscriptionDropped.PersistentSubscriptionDeleted: "PersistentSubscriptionDeleted",
    pb.SubscriptionDropped.SubscriberMaxCountReached: "SubscriberMaxCountReached",
}


class NakAction:
    """
    What the server should do with an event the application failed.
    """

    UNKNOWN = 0
    PARK = 1
    RETRY = 2
    SKIP = 3
    STOP = 4


class SubscriptionBase:
    """
    What the connection needs of a subscription.

    @ivar correlation_id: of the subscribe request on the current
        connection (C{None} while not subscribed).
    @ivar confirmed: fires with the subscription at its first confirmation.
    """

    _log = Logger()

    def __init__(
        self,
        connection: EventStoreConnection,
        subscription_dropped: Optional[Callable[..., None]],
        credentials: Optional[UserCredentials],
        event_appeared: Optional[Callable[..., Any]] = None,
    ) -> None:
        self._connection = connection
        self._dropped_callback = subscription_dropped
        self._event_appeared = event_appeared
        #: events waiting for the handler: their arguments, and a Deferred
        #: to fire once handled (or C{None})
        self._queue: deque[tuple[tuple[Any, ...], Optional[Deferred[None]]]] = deque()
        #: a handler's Deferred has not fired yet
        self._busy = False
        self.credentials = credentials
        self.correlation_id: Optional[bytes] = None
        self.retry_call: Optional[IDelayedCall] = None
        self.is_dropped = False
        self.is_subscribed = False
        self._stopping = False
        self._failures = 0
        self.confirmed: Deferred[Any] = Deferred()
        self.dropped: Deferred[tuple[str, Optional[Exception]]] = Deferred()

    def request(self) -> tuple[int, bytes]:
        raise NotImplementedError

    def package_received(self, package: TcpPackage) -> None:
        raise NotImplementedError

    def connection_lost(self) -> None:
        self.correlation_id = None
        self.is_subscribed = False

    def _subscribed(self) -> None:
        self.is_subscribed = True
        self._failures = 0
        if not self.confirmed.called:
            self.confirmed.callback(self)

    def drop(self, reason: str, error: Optional[Exception] = None) -> None:
        """
        End the subscription for good (once).
        """
        if self.is_dropped:
            return
        self.is_dropped = True
        self.is_subscribed = False
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        self._connection._remove_subscription(self)
        self.correlation_id = None
        queue, self._queue = self._queue, deque()
        for _, waiter in queue:
            if waiter is not None:
                waiter.callback(None)
        if not self.confirmed.called:
            self.confirmed.errback(
                error or errors.SubscriptionDropped(f"Subscription dropped: {reason}", reason)
            )
        self._dropped_before_ready(reason, error)
        if self._dropped_callback is not None:
            try:
                self._dropped_callback(self, reason, error)
            except Exception:
                self._log.failure("subscription_dropped callback failed")
        self.dropped.callback((reason, error))

    def _dropped_before_ready(self, reason: str, error: Optional[Exception]) -> None:
        pass

    def _common(self, package: TcpPackage) -> bool:
        """
        Handle C{NotHandled}, C{BadRequest}, C{NotAuthenticated} and
        C{SubscriptionDropped}.

        @return: whether the package was one of them.
        """
        if package.command == _C.SubscriptionDropped:
            try:
                message = parse(pb.SubscriptionDropped, package.data)
                reason = _DROP_NAMES.get(message.reason, str(message.reason))
            except PayloadError:
                reason = "Unknown"
            self._server_dropped(reason)
            return True
        decision = decide_common(package)
        if decision is None:
            return False
        settings = self._connection.settings
        if isinstance(decision, Fail):
            self.drop("ServerError", decision.error)
        elif isinstance(decision, Reconnect):
            self.correlation_id = None
            self._connection.reconnect_to(decision.endpoints)
        elif isinstance(decision, Retry):
            self._failures += 1
            if settings.max_retries >= 0 and self._failures > settings.max_retries:
                self.drop(
                    "RetriesLimitReached",
                    errors.RetriesLimitReached(f"subscribe: {decision.reason}", self._failures),
                )
            else:
                self._connection._resubscribe_later(self, settings.reconnection_delay)
        return True

    def _server_dropped(self, reason: str) -> None:
        if self._stopping or reason != "Unsubscribed":
            error: Optional[Exception] = None
            if not self._stopping:
                error = errors.SubscriptionDropped(f"Subscription dropped: {reason}", reason)
                if reason == "AccessDenied":
                    error = errors.AccessDenied("Subscription dropped: access denied")
            self.drop(reason, error)
            return
        # The node unsubscribed us without being asked (it is going away):
        # subscribe again shortly.
        self.is_subscribed = False
        self._connection._resubscribe_later(self, self._connection.settings.reconnection_delay)

    def stop(self) -> Deferred[tuple[str, Optional[Exception]]]:
        """
        Unsubscribe.  C{subscription_dropped} is called with
        C{"Unsubscribed"}.

        @return: fires once dropped.
        """
        if self.is_dropped:
            return self.dropped
        self._stopping = True
        if self.correlation_id is not None and self._connection.is_connected:
            self._connection._send_on_subscription(self, _C.UnsubscribeFromStream, b"")
            # the server answers SubscriptionDropped(Unsubscribed)
        else:
            self.drop("Unsubscribed")
        return self.dropped

    close = stop

    @property
    def pending_events(self) -> int:
        """
        Events received and waiting for the handler (not counting the one
        it is handling).
        """
        return sum(1 for args, _ in self._queue if args)

    def _deliver(self, *args: Any) -> None:
        """
        Hand C{event_appeared(self, *args)} the event, after those before it.
        """
        if self._busy or self._queue or self.is_dropped:
            if not self.is_dropped:
                self._queue.append((args, None))
                if not self._busy:
                    self._drain()
            return
        # nothing waiting: straight to the handler
        try:
            result = self._event_appeared(self, *args)  # type: ignore[misc]
        except Exception:
            self._settle_handled(args, Failure(), None)
            return
        if result is None:
            self._handler_done(*args)
            return
        self._result(args, None, result)
        if not self._busy:
            self._drain()

    def _when_idle(self) -> Optional[Deferred[None]]:
        """
        @return: C{None} when every event delivered so far was handled, else
            a Deferred that fires once they are (or the subscription is
            dropped).
        """
        if not self._busy and not self._queue:
            return None
        waiter: Deferred[None] = Deferred()
        self._queue.append(((), waiter))
        return waiter

    def _drain(self) -> None:
        """
        Call the handler for the waiting events, one at a time: stop at a
        handler's unfired Deferred and go on when it fires.
        """
        queue = self._queue
        while queue and not self._busy and not self.is_dropped:
            args, waiter = queue.popleft()
            if not args:
                # a marker: everything before it was handled
                if waiter is not None:
                    waiter.callback(None)
                continue
            try:
                result = self._event_appeared(self, *args)  # type: ignore[misc]
            except Exception:
                self._settle_handled(args, Failure(), waiter)
                continue
            self._result(args, waiter, result)

    def _result(
        self, args: tuple[Any, ...], waiter: Optional[Deferred[None]], result: object
    ) -> None:
        """
        What the handler returned for C{args}: settle it now, or (a
        Deferred or a coroutine not done yet) mark the subscription busy
        until it fires, then go on with the queue.
        """
        if iscoroutine(result):
            result = ensureDeferred(result)
        if not isinstance(result, Deferred):
            self._settle_handled(args, None, waiter)
            return
        self._busy = True
        synchronous = [True]

        def fired(outcome: object) -> None:
            self._busy = False
            self._settle_handled(args, outcome if isinstance(outcome, Failure) else None, waiter)
            if not synchronous[0]:
                self._drain()

        result.addBoth(fired)
        synchronous[0] = False

    def _settle_handled(
        self, args: tuple[Any, ...], failure: Optional[Failure], waiter: Optional[Deferred[None]]
    ) -> None:
        if self.is_dropped:
            pass
        elif failure is None:
            self._handler_done(*args)
        else:
            self._handler_failed(failure, *args)
        if waiter is not None:
            waiter.callback(None)

    def _handler_done(self, *args: Any) -> None:
        """
        The handler is done with an event (successfully).
        """

    def _handler_failed(self, failure: Failure, *args: Any) -> None:
        """
        The handler raised, or its Deferred failed: drop the subscription.
        """
        self._log.failure("event_appeared failed: dropping the subscription", failure)
        error = failure.value
        self.drop(
            "EventHandlerException",
            error if isinstance(error, Exception) else Exception(str(error)),
        )


class _StreamSubscription(SubscriptionBase):
    """
    The wire part of volatile and catch-up subscriptions (C{stream} C{""}
    is C{$all}).
    """

    def __init__(
        self,
        connection: EventStoreConnection,
        stream: str,
        subscription_dropped: Optional[Callable[..., None]],
        resolve_link_tos: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        super().__init__(connection, subscription_dropped, credentials)
        self.stream = stream
        self.resolve_link_tos = resolve_link_tos
        self.last_commit_position: Optional[int] = None
        self.last_event_number: Optional[int] = None
        self._tracker: Union[StreamTracker, AllTracker] = (
            StreamTracker() if stream else AllTracker()
        )

    @property
    def is_subscribed_to_all(self) -> bool:
        return not self.stream

    def request(self) -> tuple[int, bytes]:
        return (
            _C.SubscribeToStream,
            pb.SubscribeToStream(
                event_stream_id=self.stream, resolve_link_tos=self.resolve_link_tos
            ).SerializeToString(),
        )

    def package_received(self, package: TcpPackage) -> None:
        if self.is_dropped:
            return
        try:
            if package.command == _C.SubscriptionConfirmation:
                message = parse(pb.SubscriptionConfirmation, package.data)
                self.last_commit_position = message.last_commit_position
                if message.HasField("last_event_number"):
                    self.last_event_number = message.last_event_number
                self._subscribed()
                self._on_confirmed()
            elif package.command == _C.StreamEventAppeared:
                message = parse(pb.StreamEventAppeared, package.data)
                self._live_event(resolved_from_proto(message.event))
            elif not self._common(package):
                self._log.info(
                    "Unexpected command 0x{command:02X} on a subscription",
                    command=package.command,
                )
        except PayloadError as e:
            self.drop("ServerError", errors.ServerError(f"Bad subscription package: {e}"))

    def _on_confirmed(self) -> None:
        pass

    def _live_event(self, event: ResolvedEvent) -> None:
        raise NotImplementedError


class VolatileSubscription(_StreamSubscription):
    def __init__(
        self,
        connection: EventStoreConnection,
        stream: str,
        event_appeared: Callable[..., Any],
        subscription_dropped: Optional[Callable[..., None]],
        resolve_link_tos: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        super().__init__(connection, stream, subscription_dropped, resolve_link_tos, credentials)
        self._event_appeared = event_appeared

    def _live_event(self, event: ResolvedEvent) -> None:
        if self._tracker.accept(event):
            self._deliver(event)


class CatchUpSubscription(_StreamSubscription):
    """
    @ivar live: fires (with the subscription) when live processing started
        the first time; fails if the subscription is dropped before.
    """

    def __init__(
        self,
        connection: EventStoreConnection,
        stream: str,
        last_checkpoint: Union[int, Position, None],
        event_appeared: Callable[..., Any],
        live_processing_started: Optional[Callable[..., None]],
        subscription_dropped: Optional[Callable[..., None]],
        resolve_link_tos: bool,
        read_batch_size: int,
        credentials: Optional[UserCredentials],
    ) -> None:
        super().__init__(connection, stream, subscription_dropped, resolve_link_tos, credentials)
        if stream:
            if last_checkpoint is not None and not isinstance(last_checkpoint, int):
                raise ValueError("last_checkpoint of a stream must be an event number or None")
            self._tracker = StreamTracker(last_checkpoint)
        else:
            if last_checkpoint is not None and not isinstance(last_checkpoint, Position):
                raise ValueError("last_checkpoint of $all must be a Position or None")
            self._tracker = AllTracker(last_checkpoint)
        self._event_appeared = event_appeared
        self._live_started = live_processing_started
        self._batch = read_batch_size
        self._generation = 0
        self._buffer: list[ResolvedEvent] = []
        self.is_live = False
        self.live: Deferred[CatchUpSubscription] = Deferred()
        # The application watches live and dropped, not confirmed.
        self.confirmed.addErrback(lambda _: None)

    def _dropped_before_ready(self, reason: str, error: Optional[Exception]) -> None:
        if not self.live.called:
            self.live.errback(
                error or errors.SubscriptionDropped(f"Subscription dropped: {reason}", reason)
            )

    @property
    def last_processed_event_number(self) -> Optional[int]:
        tracker = self._tracker
        return tracker.last if isinstance(tracker, StreamTracker) else None

    @property
    def last_processed_position(self) -> Optional[Position]:
        tracker = self._tracker
        return tracker.last if isinstance(tracker, AllTracker) else None

    def connection_lost(self) -> None:
        super().connection_lost()
        self._generation += 1
        self.is_live = False
        self._buffer = []

    def _on_confirmed(self) -> None:
        self._generation += 1
        self.is_live = False
        self._buffer = []
        generation = self._generation
        d = Deferred.fromCoroutine(self._catch_up(generation))

        def failed(failure: Any) -> None:
            if generation == self._generation and not self.is_dropped:
                self.drop("CatchUpError", failure.value)

        d.addErrback(failed)

    def _live_event(self, event: ResolvedEvent) -> None:
        if self.is_live:
            if self._tracker.accept(event):
                self._deliver(event)
        else:
            self._buffer.append(event)

    def _handle(self, event: ResolvedEvent) -> None:
        if self._tracker.accept(event):
            self._deliver(event)

    async def _catch_up(self, generation: int) -> None:
        connection = self._connection

        def current() -> bool:
            return generation == self._generation and not self.is_dropped

        tracker = self._tracker
        if isinstance(tracker, StreamTracker):
            start = tracker.next_to_read
            while current():
                slice_ = await connection.read_stream_events_forward(
                    self.stream, start, self._batch, self.resolve_link_tos, self.credentials
                )
                if not current():
                    return
                if slice_.status is SliceReadStatus.STREAM_DELETED:
                    self.drop("StreamDeleted", errors.StreamDeleted(f"{self.stream} is deleted"))
                    return
                for event in slice_.events:
                    self._handle(event)
                idle = self._when_idle()
                if idle is not None:
                    # back-pressure: the next slice once these are handled
                    await idle
                if not current():
                    return
                if slice_.status is SliceReadStatus.STREAM_NOT_FOUND or slice_.is_end_of_stream:
                    break
                start = slice_.next_event_number
        else:
            position = tracker.next_to_read
            while current():
                all_slice = await connection.read_all_events_forward(
                    position, self._batch, self.resolve_link_tos, self.credentials
                )
                if not current():
                    return
                for event in all_slice.events:
                    self._handle(event)
                idle = self._when_idle()
                if idle is not None:
                    await idle
                if not current():
                    return
                if not all_slice.events or all_slice.next_position <= position:
                    break
                position = all_slice.next_position
        if not current():
            return
        # The live events pushed meanwhile (more may come while handlers
        # run: the buffer is empty when this loop ends).
        while self._buffer:
            buffered, self._buffer = self._buffer, []
            for event in buffered:
                self._handle(event)
            idle = self._when_idle()
            if idle is not None:
                await idle
            if not current():
                return
        self.is_live = True
        if not self.live.called:
            self.live.callback(self)
            if self._live_started is not None:
                try:
                    self._live_started(self)
                except Exception:
                    self._log.failure("live_processing_started failed")


class PersistentSubscription(SubscriptionBase):
    """
    @ivar subscription_id: the server's id of this consumer's group
        connection (from the confirmation).
    """

    def __init__(
        self,
        connection: EventStoreConnection,
        stream: str,
        group: str,
        event_appeared: Callable[..., Any],
        subscription_dropped: Optional[Callable[..., None]],
        buffer_size: int,
        auto_ack: bool,
        credentials: Optional[UserCredentials],
        handled_capacity: int = 100_000,
        handler_error_action: Optional[int] = None,
    ) -> None:
        super().__init__(connection, subscription_dropped, credentials)
        if handler_error_action not in (
            None, NakAction.PARK, NakAction.RETRY, NakAction.SKIP, NakAction.STOP
        ):
            raise ValueError(
                f"handler_error_action must be None or a NakAction, got {handler_error_action!r}"
            )
        self._handler_error_action = handler_error_action
        self.stream = stream
        self.group = group
        self._event_appeared = event_appeared
        self._buffer_size = buffer_size
        self._auto_ack = auto_ack
        self._handled = HandledSet(handled_capacity)
        # How each handed-over event was settled: None (acknowledged) or a
        # NakAction; absent while the application still holds it.
        self._settled: OrderedDict[uuid.UUID, Optional[tuple[int, str]]] = OrderedDict()
        self._settled_capacity = handled_capacity
        self.subscription_id = ""
        self.redeliveries_suppressed = 0

    def request(self) -> tuple[int, bytes]:
        return (
            _C.ConnectToPersistentSubscription,
            pb.ConnectToPersistentSubscription(
                subscription_id=self.group,
                event_stream_id=self.stream,
                allowed_in_flight_messages=self._buffer_size,
            ).SerializeToString(),
        )

    def package_received(self, package: TcpPackage) -> None:
        if self.is_dropped:
            return
        try:
            if package.command == _C.PersistentSubscriptionConfirmation:
                message = parse(pb.PersistentSubscriptionConfirmation, package.data)
                self.subscription_id = message.subscription_id
                self._subscribed()
            elif package.command == _C.PersistentSubscriptionStreamEventAppeared:
                message = parse(pb.PersistentSubscriptionStreamEventAppeared, package.data)
                retry_count = message.retryCount if message.HasField("retryCount") else 0
                self._event(resolved_from_proto(message.event), retry_count)
            elif package.command == _C.SubscriptionDropped and not self._stopping:
                message = parse(pb.SubscriptionDropped, package.data)
                reason = _DROP_NAMES.get(message.reason, str(message.reason))
                if reason == "NotFound":
                    # A new leader may not have loaded the group yet: retry.
                    self._retry_subscribe(reason)
                else:
                    self._common(package)
            elif not self._common(package):
                self._log.info(
                    "Unexpected command 0x{command:02X} on a persistent subscription",
                    command=package.command,
                )
        except PayloadError as e:
            self.drop("ServerError", errors.ServerError(f"Bad subscription package: {e}"))

    def _retry_subscribe(self, reason: str) -> None:
        settings = self._connection.settings
        self._failures += 1
        if settings.max_retries >= 0 and self._failures > settings.max_retries:
            self.drop(reason, errors.SubscriptionDropped(f"Subscription dropped: {reason}",
                                                         reason))
            return
        self.is_subscribed = False
        self._connection._resubscribe_later(self, settings.reconnection_delay)

    def _event(self, event: ResolvedEvent, retry_count: int) -> None:
        event_id = event.original_event.event_id
        if not self._handled.add(event_id):
            # Already handed over (before a failover, or the server's message
            # timeout ran out): never to the handler again.  Settle it again
            # as the application did; if it still holds it, its own ack or
            # nak will come.
            self.redeliveries_suppressed += 1
            if event_id in self._settled:
                nak = self._settled[event_id]
                if nak is None:
                    self._send_ack([event_id])
                else:
                    self._send_nak([event_id], nak[0], nak[1])
            return
        self._deliver(event, retry_count)

    def _handler_done(self, *args: Any) -> None:
        if self._auto_ack:
            event: ResolvedEvent = args[0]
            self._ack([event.original_event.event_id])

    def _handler_failed(self, failure: Failure, *args: Any) -> None:
        action = self._handler_error_action
        if action is None:
            super()._handler_failed(failure, *args)
            return
        event: ResolvedEvent = args[0]
        self._log.failure(
            "event_appeared failed on {event_id}: nak ({action})",
            failure,
            event_id=event.original_event.event_id,
            action=action,
        )
        self.fail(event, action, f"{type(failure.value).__name__}: {failure.getErrorMessage()}")

    def _settle(self, ids: Iterable[uuid.UUID], how: Optional[tuple[int, str]]) -> None:
        for i in ids:
            self._settled[i] = how
            self._settled.move_to_end(i)
        while len(self._settled) > self._settled_capacity:
            self._settled.popitem(last=False)

    def _ack(self, ids: Iterable[uuid.UUID]) -> None:
        ids = list(ids)
        self._settle(ids, None)
        self._send_ack(ids)

    def _send_ack(self, ids: list[uuid.UUID]) -> None:
        payload = pb.PersistentSubscriptionAckEvents(
            subscription_id=self.subscription_id,
            processed_event_ids=[i.bytes_le for i in ids],
        ).SerializeToString()
        self._connection._send_on_subscription(self, _C.PersistentSubscriptionAckEvents, payload)

    def _send_nak(self, ids: list[uuid.UUID], action: int, reason: str) -> None:
        payload = pb.PersistentSubscriptionNakEvents(
            subscription_id=self.subscription_id,
            processed_event_ids=[i.bytes_le for i in ids],
            message=reason,
            action=action,  # type: ignore[arg-type]
        ).SerializeToString()
        self._connection._send_on_subscription(self, _C.PersistentSubscriptionNakEvents, payload)

    def acknowledge(self, events: Union[ResolvedEvent, Iterable[ResolvedEvent]]) -> None:
        """
        Tell the group these events are processed.
        """
        self._ack(e.original_event.event_id for e in _events(events))

    def fail(
        self,
        events: Union[ResolvedEvent, Iterable[ResolvedEvent]],
        action: int = NakAction.PARK,
        reason: str = "",
    ) -> None:
        """
        Tell the group these events could not be processed: C{action} is a
        L{NakAction} (park, retry, skip, stop).  An event failed with
        C{RETRY} may be handed over again.
        """
        ids = [e.original_event.event_id for e in _events(events)]
        if action == NakAction.RETRY:
            for i in ids:
                self._handled.forget(i)
                self._settled.pop(i, None)
        else:
            self._settle(ids, (action, reason))
        self._send_nak(ids, action, reason)


def _events(events: Union[ResolvedEvent, Iterable[ResolvedEvent]]) -> list[ResolvedEvent]:
    if isinstance(events, ResolvedEvent):
        return [events]
    return list(events)
