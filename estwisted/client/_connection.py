# -*- test-case-name: estwisted.client.test.test_connection -*-
"""
L{EventStoreConnection}: runs the L{ConnectionMachine}'s effects
(discovery, TCP connects, timers), sends operations with their timeouts and
retries, and keeps subscriptions across reconnections.

Operations wait in a queue while there is no connection and are sent, at
most C{max_concurrent_items} at a time, once identified.  Each attempt is
bounded by C{operation_timeout}; a timeout, a lost connection, C{NotReady},
C{TooBusy}, a server timeout or C{NotMaster} sends the operation again
(with the same payload, so an append keeps its event ids) until
C{max_retries} retries were spent.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar, Union

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

import estwisted.client._errors as errors
from estwisted.client._discovery import (
    Fetch,
    GossipDiscoverer,
    NodeEndpoints,
    Resolve,
    http_gossip_fetcher,
)
from estwisted.client._machine import (
    CancelTimer,
    ConnectionMachine,
    ConnectTcp,
    Discover,
    DropTcp,
    Effect,
    NotifyClosed,
    NotifyConnected,
    NotifyDisconnected,
    NotifyReconnecting,
    Phase,
    Schedule,
    SendIdentify,
)
from estwisted.client._operations import (
    AppendToStream,
    Complete,
    DeleteStream,
    Fail,
    Operation,
    PersistentGroupOperation,
    PersistentSubscriptionSettings,
    ReadAllEvents,
    ReadEvent,
    ReadStreamEvents,
    Reconnect,
    TransactionCommit,
    TransactionStart,
    TransactionWrite,
    can_retry,
    not_resendable_error,
)
from estwisted.client._protocol import ClientFactory, ClientProtocol
from estwisted.client._settings import (
    ClusterSettings,
    ConnectionSettings,
    SingleNode,
    Target,
    parse_connection_string,
)
from estwisted.client._subscriptions import (
    CatchUpSubscription,
    PersistentSubscription,
    SubscriptionBase,
    VolatileSubscription,
)
from estwisted.client._values import (
    AllEventsSlice,
    DeleteResult,
    EventData,
    EventReadResult,
    EventReadStatus,
    Position,
    RawStreamMetadataResult,
    StreamEventsSlice,
    StreamMetadata,
    StreamMetadataResult,
    UserCredentials,
    WriteResult,
)
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import TcpCommand, TcpPackage

_T = TypeVar("_T")

EndpointFactory = Callable[[NodeEndpoints], IStreamClientEndpoint]

#: Events a listener can subscribe to with L{EventStoreConnection.on}.
CONNECTION_EVENTS = ("connected", "disconnected", "reconnecting", "closed", "error")


class _Pending:
    """
    One operation of the application, across its attempts.

    @ivar deadline: when the current attempt times out (in flight only).
    """

    __slots__ = ("operation", "deferred", "attempts", "correlation_id", "deadline", "sequence")

    def __init__(self, operation: Operation, deferred: Deferred[Any], sequence: int) -> None:
        self.operation = operation
        self.deferred = deferred
        self.attempts = 0
        self.correlation_id: Optional[bytes] = None
        self.deadline = 0.0
        self.sequence = sequence


class _CorrelationIds:
    """
    Correlation ids for one process: a random 8-byte prefix and a counter
    (unique on any connection, and cheaper than 16 random bytes each).
    """

    __slots__ = ("_prefix", "_counter")

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return self._prefix + _pack_counter(next(self._counter))


_pack_counter = struct.Struct(">Q").pack

#: Slack when comparing a deadline with the clock (a timer may fire a hair
#: before the deadline it was computed from).
_EPSILON = 1e-6


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


class EventStoreConnection:
    """
    A connection to one node or a cluster.  Build it with L{create}, then
    C{connect()}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: ConnectionSettings,
        target: Target,
        fetch: Optional[Fetch] = None,
        resolve: Optional[Resolve] = None,
        endpoint_factory: Optional[EndpointFactory] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self.settings = settings
        self.target = target
        self._rng = rng or random.Random()
        self._endpoint_factory = endpoint_factory or self._default_endpoint
        self._discoverer: Optional[GossipDiscoverer] = None
        if isinstance(target, ClusterSettings):
            self._discoverer = GossipDiscoverer(
                self._clock,
                target,
                fetch or http_gossip_fetcher(reactor, target.gossip_timeout),
                resolve or self._default_resolve,
                self._rng,
            )
        self._machine = ConnectionMachine(
            settings.keep_reconnecting,
            settings.max_reconnections,
            settings.reconnection_delay,
            settings.max_reconnection_delay,
        )
        self._protocol: Optional[ClientProtocol] = None
        self._attempt = 0
        self._identify_timeout: Optional[IDelayedCall] = None
        self._timer: Optional[IDelayedCall] = None
        self._discovery: Optional[Deferred[Optional[NodeEndpoints]]] = None
        self._waiting: deque[_Pending] = deque()
        self._delayed: dict[_Pending, IDelayedCall] = {}
        #: in the order sent, so the first one is the next to time out
        self._in_flight: dict[bytes, _Pending] = {}
        #: one timer for every in-flight operation (not one per operation)
        self._timeout_call: Optional[IDelayedCall] = None
        self._ids = _CorrelationIds(os.urandom(8))
        #: the credentials the current connection is authenticated with
        #: (C{Authenticate}); operations with them are sent without any
        self._session_credentials: Optional[UserCredentials] = None
        self._authenticate_id: Optional[bytes] = None
        #: counts identified TCP connections: a transaction is bound to the
        #: one it was started on
        self._session = 0
        self._sequence = itertools.count()
        self._subscriptions: list[SubscriptionBase] = []
        self._subscription_by_corr: dict[bytes, SubscriptionBase] = {}
        self._connect_waiters: list[Deferred[None]] = []
        self._closed_reason: Optional[str] = None
        self._listeners: dict[str, list[Callable[..., None]]] = {e: [] for e in CONNECTION_EVENTS}
        self._dropping: list[Deferred[None]] = []

    # -- construction ------------------------------------------------------

    @classmethod
    def create(
        cls,
        reactor: Any,
        settings: Union[ConnectionSettings, str, None] = None,
        target: Union[Target, tuple[str, int], None] = None,
        **kwargs: Any,
    ) -> EventStoreConnection:
        """
        Build a connection (nothing happens until C{connect()}).

        @param settings: a L{ConnectionSettings}, or a connection string
            (C{tcp://...}, C{discover://...}) giving both settings and
            target.
        @param target: L{ClusterSettings}, L{SingleNode} or a C{(host,
            port)} TCP endpoint.
        """
        if isinstance(settings, str):
            if target is not None:
                raise ValueError("a connection string already names the target")
            settings, target = parse_connection_string(settings)
        if settings is None:
            settings = ConnectionSettings()
        if isinstance(target, tuple):
            target = SingleNode(*target)
        if not isinstance(target, (ClusterSettings, SingleNode)):
            raise ValueError("target must be ClusterSettings, SingleNode or (host, port)")
        return cls(reactor, settings, target, **kwargs)

    def _default_endpoint(self, node: NodeEndpoints) -> IStreamClientEndpoint:
        port = node.tcp_port
        if self.settings.use_tls and node.secure_tcp_port and isinstance(
            self.target, ClusterSettings
        ):
            port = node.secure_tcp_port
        timeout = max(1, int(self.settings.operation_timeout))
        endpoint: IStreamClientEndpoint
        if _is_ipv4(node.host):
            endpoint = TCP4ClientEndpoint(self._reactor, node.host, port, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(self._reactor, node.host, port, timeout=timeout)
        if self.settings.use_tls:
            endpoint = wrapClientTLS(self._tls_options(), endpoint)
        return endpoint

    def _tls_options(self) -> Any:
        from twisted.internet import ssl

        if not self.settings.validate_server:
            return ssl.CertificateOptions(verify=False)
        trust = None
        if self.settings.ca_file:
            with open(self.settings.ca_file, "rb") as f:
                trust = ssl.Certificate.loadPEM(f.read())
        assert self.settings.target_host is not None
        return ssl.optionsForClientTLS(self.settings.target_host, trustRoot=trust)

    async def _default_resolve(self, name: str) -> Sequence[str]:
        from twisted.names import client

        answers, _, _ = await client.lookupAddress(name)
        return [a.payload.dottedQuad() for a in answers if a.type == 1]

    # -- public lifecycle ----------------------------------------------------

    def on(self, event: str, callback: Callable[..., None]) -> None:
        """
        Call C{callback} on a connection event: C{connected(endpoints)},
        C{disconnected(endpoints)}, C{reconnecting()}, C{closed(reason)},
        C{error(exception)}.
        """
        if event not in self._listeners:
            raise ValueError(f"unknown connection event {event!r}; one of {CONNECTION_EVENTS}")
        self._listeners[event].append(callback)

    def _emit(self, event: str, *args: Any) -> None:
        for callback in list(self._listeners[event]):
            try:
                callback(*args)
            except Exception:
                self._log.failure("A {event} listener failed", event=event)

    @property
    def is_connected(self) -> bool:
        return self._machine.phase is Phase.CONNECTED

    @property
    def connected_to(self) -> Optional[NodeEndpoints]:
        return self._machine.endpoints if self.is_connected else None

    def connect(self) -> Deferred[None]:
        """
        Start connecting.

        @return: fires once connected and identified, or fails with
            L{CannotEstablishConnection} when the connection gives up first.
        """
        if self._machine.phase is Phase.CLOSED:
            return _failed(errors.ConnectionClosed(self._closed_reason or "Connection is closed."))
        if self._machine.phase is Phase.CONNECTED:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._connect_waiters.append(d)
        self._run(self._machine.start())
        return d

    def close(self) -> Deferred[None]:
        """
        Close the connection: pending operations fail with
        L{ConnectionClosed}, subscriptions are dropped.

        @return: fires once the TCP connection is closed.
        """
        self._run(self._machine.close())
        dropping, self._dropping = self._dropping, []
        d: Deferred[None] = Deferred()
        remaining = [x for x in dropping if not x.called]
        if not remaining:
            d.callback(None)
            return d
        count = [len(remaining)]

        def one(_: object) -> None:
            count[0] -= 1
            if count[0] == 0 and not d.called:
                d.callback(None)

        for x in remaining:
            x.addBoth(one)
        return d

    # -- effects ---------------------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Discover):
                self._discover(effect.failed)
            elif isinstance(effect, ConnectTcp):
                self._connect_tcp(effect.endpoints)
            elif isinstance(effect, SendIdentify):
                self._send_identify()
            elif isinstance(effect, DropTcp):
                self._drop_tcp()
            elif isinstance(effect, Schedule):
                self._timer = self._clock.callLater(effect.delay, self._timer_fired)
            elif isinstance(effect, CancelTimer):
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = None
            elif isinstance(effect, NotifyConnected):
                self._connected(effect.endpoints)
            elif isinstance(effect, NotifyDisconnected):
                self._emit("disconnected", effect.endpoints)
            elif isinstance(effect, NotifyReconnecting):
                self._emit("reconnecting")
            elif isinstance(effect, NotifyClosed):
                self._closed(effect.reason)

    def _timer_fired(self) -> None:
        self._timer = None
        self._run(self._machine.timer_fired())

    def _discover(self, failed: Optional[NodeEndpoints]) -> None:
        if isinstance(self.target, SingleNode):
            self._run(self._machine.discovered(NodeEndpoints(self.target.host, self.target.port)))
            return
        d: Deferred[Optional[NodeEndpoints]] = Deferred.fromCoroutine(
            self._discover_passes(failed)
        )
        self._discovery = d

        def done(result: Optional[NodeEndpoints]) -> None:
            if self._discovery is d:
                self._discovery = None
            if result is None:
                self._run(self._machine.discovery_failed())
            else:
                self._run(self._machine.discovered(result))

        def failed_(failure: Failure) -> None:
            if self._discovery is d:
                self._discovery = None
            if not failure.check(CancelledError):
                self._log.failure("Discovery failed", failure)
                self._run(self._machine.discovery_failed())

        d.addCallbacks(done, failed_)

    async def _discover_passes(self, failed: Optional[NodeEndpoints]) -> Optional[NodeEndpoints]:
        assert self._discoverer is not None and isinstance(self.target, ClusterSettings)
        for attempt in range(self.target.max_discover_attempts):
            if attempt:
                await _sleep(self._clock, self.target.discover_delay)
            found = await self._discoverer.discover_once(failed)
            if found is not None:
                self._log.debug("Discovered {node}", node=found)
                return found
        return None

    def _connect_tcp(self, node: NodeEndpoints) -> None:
        self._attempt += 1
        attempt = self._attempt
        factory = ClientFactory(
            self,
            self._clock,
            self.settings.heartbeat_interval,
            self.settings.heartbeat_timeout,
            attempt,
        )
        try:
            d = self._endpoint_factory(node).connect(factory)
        except Exception as e:
            self._log.info("Cannot connect to {node}: {error}", node=node, error=e)
            self._run(self._machine.tcp_failed())
            return

        def failed(failure: Failure) -> None:
            if attempt == self._attempt:
                self._log.info(
                    "Cannot connect to {node}: {error}", node=node, error=failure.value
                )
                self._run(self._machine.tcp_failed())

        def made(protocol: ClientProtocol) -> None:
            if attempt != self._attempt:
                protocol.abort()

        d.addCallbacks(made, failed)

    def tcp_connected(self, protocol: ClientProtocol) -> None:
        if (
            self._machine.phase is not Phase.CONNECTING
            or self._protocol is not None
            or protocol.attempt != self._attempt
        ):
            protocol.abort()
            return
        self._protocol = protocol
        lost = protocol.lost
        self._dropping.append(lost)

        def forget(_: object) -> None:
            if lost in self._dropping:
                self._dropping.remove(lost)

        lost.addBoth(forget)
        self._run(self._machine.tcp_connected())

    def _send_identify(self) -> None:
        assert self._protocol is not None
        self._protocol.send(
            TcpCommand.IdentifyClient,
            os.urandom(16),
            pb.IdentifyClient(
                version=1, connection_name=self.settings.connection_name
            ).SerializeToString(),
        )
        protocol = self._protocol
        credentials = self.settings.default_user_credentials
        self._session_credentials = None
        self._authenticate_id = None
        if credentials is not None:
            # Authenticate the connection once: later operations with the
            # default credentials go without them (the node checks them once).
            self._authenticate_id = self._ids.next()
            protocol.send(TcpCommand.Authenticate, self._authenticate_id, b"", credentials)

        def timed_out() -> None:
            self._identify_timeout = None
            self._log.info("The server did not answer IdentifyClient in time")
            protocol.abort()

        self._identify_timeout = self._clock.callLater(self.settings.operation_timeout, timed_out)

    def _cancel_identify_timeout(self) -> None:
        if self._identify_timeout is not None and self._identify_timeout.active():
            self._identify_timeout.cancel()
        self._identify_timeout = None

    def _drop_tcp(self) -> None:
        protocol, self._protocol = self._protocol, None
        self._cancel_identify_timeout()
        self._session_credentials = None
        self._authenticate_id = None
        self._attempt += 1  # a connect in progress is now stale
        self._connection_gone()
        if protocol is not None:
            protocol.abort()

    def tcp_lost(self, protocol: ClientProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._cancel_identify_timeout()
        self._session_credentials = None
        self._authenticate_id = None
        self._log.info("Connection lost: {reason}", reason=reason.getErrorMessage())
        self._connection_gone()
        self._run(self._machine.connection_lost())

    def _connection_gone(self) -> None:
        """
        The current TCP connection is gone: in-flight operations go back to
        the front of the queue (in their order), subscriptions wait.
        """
        pending = sorted(self._in_flight.values(), key=lambda p: p.sequence)
        self._in_flight.clear()
        self._cancel_timeouts()
        requeue = []
        for p in pending:
            p.correlation_id = None
            if not p.operation.resend_safe:
                self._fail(p, not_resendable_error(p.operation, "the connection was lost"))
            elif can_retry(p.attempts, self.settings.max_retries):
                requeue.append(p)
            else:
                self._fail(
                    p,
                    errors.RetriesLimitReached(
                        f"{p.operation.name}: connection lost after {p.attempts} attempts",
                        p.attempts,
                    ),
                )
        self._waiting.extendleft(reversed(requeue))
        self._subscription_by_corr.clear()
        for subscription in list(self._subscriptions):
            subscription.connection_lost()

    def _connected(self, node: NodeEndpoints) -> None:
        self._session += 1
        self._log.info("Connected to {node}", node=node)
        waiters, self._connect_waiters = self._connect_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._emit("connected", node)
        for subscription in list(self._subscriptions):
            self._send_subscribe(subscription)
        self._pump()

    def _closed(self, reason: Optional[str]) -> None:
        self._closed_reason = reason or "Connection closed."
        if self._discovery is not None:
            d, self._discovery = self._discovery, None
            d.cancel()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        error: Exception
        if reason is None:
            error = errors.ConnectionClosed("Connection closed.")
        else:
            error = errors.CannotEstablishConnection(reason)
        for subscription in list(self._subscriptions):
            subscription.drop("ConnectionClosed", error)
        self._subscriptions.clear()
        pending = sorted(self._in_flight.values(), key=lambda p: p.sequence) + list(self._waiting)
        for p, call in list(self._delayed.items()):
            if call.active():
                call.cancel()
            pending.append(p)
        self._delayed.clear()
        self._in_flight.clear()
        self._cancel_timeouts()
        self._waiting.clear()
        for p in pending:
            self._fail(p, error)
        waiters, self._connect_waiters = self._connect_waiters, []
        for waiter in waiters:
            waiter.errback(error)
        if reason is not None:
            self._emit("error", error)
        self._emit("closed", reason)

    # -- packages ---------------------------------------------------------------

    def package_received(self, protocol: ClientProtocol, package: TcpPackage) -> None:
        if protocol is not self._protocol:
            return
        pending = self._in_flight.pop(package.correlation_id, None)
        if pending is not None:
            self._answered(pending, package)
            return
        if package.command == TcpCommand.ClientIdentified:
            self._cancel_identify_timeout()
            self._run(self._machine.identified())
            return
        if package.correlation_id == self._authenticate_id:
            self._authenticate_id = None
            if package.command == TcpCommand.Authenticated:
                self._session_credentials = self.settings.default_user_credentials
            else:
                # Operations keep sending their credentials; the node
                # answers each of them on its own.
                self._log.info(
                    "The connection is not authenticated ({command:02X}): sending credentials"
                    " with each operation",
                    command=package.command,
                )
            return
        subscription = self._subscription_by_corr.get(package.correlation_id)
        if subscription is not None:
            subscription.package_received(package)

    def _answered(self, pending: _Pending, package: TcpPackage) -> None:
        pending.correlation_id = None
        decision = pending.operation.decide(package)
        if isinstance(decision, Complete):
            self._pump()
            pending.deferred.callback(decision.value)
            return
        if isinstance(decision, Fail):
            self._pump()
            pending.deferred.errback(decision.error)
            return
        operation = pending.operation
        if not operation.resend_safe and isinstance(decision, Reconnect):
            # not handled, so not committed; but the transaction lives on
            # this node, which no longer leads
            self._fail(
                pending,
                errors.TransactionLost(
                    f"transaction {getattr(operation, 'transaction_id', -1)}: the node is no"
                    " longer the leader (NotMaster); the transaction is abandoned (nothing of"
                    " it is committed)",
                    getattr(operation, "transaction_id", -1),
                ),
            )
        elif not operation.resend_safe and decision.reason not in ("NotReady", "TooBusy"):
            self._fail(
                pending, not_resendable_error(operation, f"the node answered {decision.reason}")
            )
        elif isinstance(decision, Reconnect):
            self._retry(pending, decision.reason)
        else:
            self._retry(pending, decision.reason, self.settings.reconnection_delay)
        if isinstance(decision, Reconnect):
            self._log.info(
                "{reason}: reconnecting to {node}", reason=decision.reason, node=decision.endpoints
            )
            self._run(self._machine.reconnect_to(decision.endpoints))
        else:
            self._pump()

    def reconnect_to(self, endpoints: Optional[NodeEndpoints]) -> None:
        """
        Used by subscriptions told C{NotMaster}.
        """
        self._run(self._machine.reconnect_to(endpoints))

    # -- operations -----------------------------------------------------------------

    def _submit(self, operation: Operation) -> Deferred[Any]:
        if self._machine.phase is Phase.CLOSED:
            return _failed(errors.ConnectionClosed(self._closed_reason or "Connection is closed."))
        if len(self._waiting) >= self.settings.max_queue_size:
            return _failed(
                errors.QueueFull(
                    f"{len(self._waiting)} operations are waiting (max_queue_size)"
                )
            )
        d: Deferred[Any] = Deferred(self._cancel_pending)
        pending = _Pending(operation, d, next(self._sequence))
        self._waiting.append(pending)
        if self._protocol is not None:
            self._pump()
        return d

    def _cancel_pending(self, d: Deferred[Any]) -> None:
        """
        The application cancelled an operation's Deferred: forget it.
        """
        for pending in itertools.chain(self._waiting, self._in_flight.values(), self._delayed):
            if pending.deferred is d:
                break
        else:
            return
        try:
            self._waiting.remove(pending)
        except ValueError:
            pass
        if pending.correlation_id is not None:
            self._in_flight.pop(pending.correlation_id, None)
        call = self._delayed.pop(pending, None)
        if call is not None and call.active():
            call.cancel()

    def _pump(self) -> None:
        protocol = self._protocol
        if protocol is None or self._machine.phase is not Phase.CONNECTED:
            return
        limit = self.settings.max_concurrent_items
        while self._waiting and len(self._in_flight) < limit:
            pending = self._waiting.popleft()
            session = pending.operation.session
            if session is not None and session != self._session:
                transaction_id = getattr(pending.operation, "transaction_id", -1)
                self._fail(
                    pending,
                    errors.TransactionLost(
                        f"transaction {transaction_id}: the connection it was started on is"
                        " gone (a reconnection or a failover); the transaction is abandoned"
                        " (nothing of it is committed)",
                        transaction_id,
                    ),
                )
                continue
            self._send(protocol, pending)

    def _send(self, protocol: ClientProtocol, pending: _Pending) -> None:
        corr = self._ids.next()
        pending.correlation_id = corr
        pending.attempts += 1
        timeout = self.settings.operation_timeout
        pending.deadline = self._clock.seconds() + timeout
        self._in_flight[corr] = pending
        if self._timeout_call is None:
            self._timeout_call = self._clock.callLater(timeout, self._check_timeouts)
        operation = pending.operation
        credentials = operation.credentials
        if credentials is None:
            credentials = self.settings.default_user_credentials
            if credentials is self._session_credentials:
                credentials = None
        protocol.send(operation.command, corr, operation.payload(), credentials)

    def _check_timeouts(self) -> None:
        """
        The timer of the oldest in-flight operation fired: time out every
        attempt whose deadline passed (all of them have the same timeout,
        so they are in deadline order), then wait for the next deadline.
        """
        self._timeout_call = None
        now = self._clock.seconds() + _EPSILON
        in_flight = self._in_flight
        expired = []
        for corr, pending in in_flight.items():
            if pending.deadline > now:
                break
            expired.append((corr, pending))
        for corr, pending in expired:
            del in_flight[corr]
            pending.correlation_id = None
            if not pending.operation.resend_safe:
                self._fail(
                    pending,
                    not_resendable_error(
                        pending.operation,
                        f"no answer within {self.settings.operation_timeout} s",
                    ),
                )
            elif can_retry(pending.attempts, self.settings.max_retries):
                self._log.info(
                    "{operation} timed out (attempt {attempts}): retrying",
                    operation=pending.operation.name,
                    attempts=pending.attempts,
                )
                self._waiting.appendleft(pending)
            else:
                self._fail(
                    pending,
                    errors.OperationTimedOut(
                        f"{pending.operation.name} timed out after {pending.attempts} attempts"
                    ),
                )
        self._schedule_timeouts()
        if expired:
            self._pump()

    def _schedule_timeouts(self) -> None:
        if self._timeout_call is not None or not self._in_flight:
            return
        oldest = next(iter(self._in_flight.values()))
        delay = max(0.0, oldest.deadline - self._clock.seconds())
        self._timeout_call = self._clock.callLater(delay, self._check_timeouts)

    def _cancel_timeouts(self) -> None:
        call, self._timeout_call = self._timeout_call, None
        if call is not None and call.active():
            call.cancel()

    def _retry(self, pending: _Pending, reason: str, delay: float = 0.0) -> None:
        """
        Send C{pending} again (after C{delay} seconds: C{NotReady} and
        C{TooBusy} are not hammered), unless its retries are spent.
        """
        if can_retry(pending.attempts, self.settings.max_retries):
            if delay <= 0:
                self._waiting.appendleft(pending)
                return

            def again() -> None:
                self._delayed.pop(pending, None)
                if not pending.deferred.called:
                    self._waiting.appendleft(pending)
                    self._pump()

            self._delayed[pending] = self._clock.callLater(delay, again)
        else:
            self._fail(
                pending,
                errors.RetriesLimitReached(
                    f"{pending.operation.name}: {reason} after {pending.attempts} attempts",
                    pending.attempts,
                ),
            )

    def _fail(self, pending: _Pending, error: Exception) -> None:
        if not pending.deferred.called:
            pending.deferred.errback(error)

    # -- subscriptions (used by the subscription objects) -----------------------------

    def _add_subscription(self, subscription: SubscriptionBase) -> None:
        if self._machine.phase is Phase.CLOSED:
            subscription.drop(
                "ConnectionClosed",
                errors.ConnectionClosed(self._closed_reason or "Connection is closed."),
            )
            return
        self._subscriptions.append(subscription)
        if self.is_connected:
            self._send_subscribe(subscription)

    def _send_subscribe(self, subscription: SubscriptionBase) -> None:
        protocol = self._protocol
        if protocol is None or not self.is_connected or subscription.is_dropped:
            return
        if subscription.retry_call is not None:
            if subscription.retry_call.active():
                subscription.retry_call.cancel()
            subscription.retry_call = None
        if subscription.correlation_id is not None:
            # still subscribed on this connection: nothing to do
            return
        corr = self._ids.next()
        subscription.correlation_id = corr
        self._subscription_by_corr[corr] = subscription
        command, payload = subscription.request()
        protocol.send(command, corr, payload, self._credentials_for(subscription.credentials))

    def _resubscribe_later(self, subscription: SubscriptionBase, delay: float) -> None:
        if subscription.correlation_id is not None:
            self._subscription_by_corr.pop(subscription.correlation_id, None)
            subscription.correlation_id = None

        def again() -> None:
            subscription.retry_call = None
            if subscription in self._subscriptions:
                self._send_subscribe(subscription)

        if subscription.retry_call is not None and subscription.retry_call.active():
            subscription.retry_call.cancel()
        subscription.retry_call = self._clock.callLater(delay, again)

    def _send_on_subscription(
        self, subscription: SubscriptionBase, command: int, payload: bytes
    ) -> None:
        protocol = self._protocol
        corr = subscription.correlation_id
        if protocol is None or corr is None or not self.is_connected:
            return
        protocol.send(command, corr, payload, self._credentials_for(subscription.credentials))

    def _credentials_for(
        self, credentials: Optional[UserCredentials]
    ) -> Optional[UserCredentials]:
        """
        What to send with a package: C{credentials}, else the default ones
        (none when the connection is authenticated with them).
        """
        if credentials is None:
            credentials = self.settings.default_user_credentials
            if credentials is self._session_credentials:
                return None
        return credentials

    def _remove_subscription(self, subscription: SubscriptionBase) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        if subscription.correlation_id is not None:
            self._subscription_by_corr.pop(subscription.correlation_id, None)

    # -- the operations API ---------------------------------------------------------------

    def _require_master(self, require_master: Optional[bool]) -> bool:
        return self.settings.require_master if require_master is None else require_master

    def append_to_stream(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[EventData],
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[WriteResult]:
        """
        Append C{events} (atomically) to C{stream}.

        @return: a L{WriteResult}; fails with L{WrongExpectedVersion},
            L{StreamDeleted}, L{AccessDenied}, L{RetriesLimitReached}, ...
        """
        _check_stream(stream)
        events = list(events)
        for event in events:
            if not isinstance(event, EventData):
                raise TypeError("events must be EventData values")
        return self._submit(
            AppendToStream(stream, expected_version, events, self.settings.require_master,
                           credentials)
        )

    def start_transaction(
        self,
        stream: str,
        expected_version: int,
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[EventStoreTransaction]:
        """
        Start a transaction on C{stream}: write to it any number of times,
        then C{commit()}.

        A transaction lives in the memory of the node that started it, so
        it is bound to the TCP connection it was started on: once that
        connection is gone (a reconnection, a failover), its writes and
        its commit fail with L{TransactionLost} and nothing of it is
        committed; a write or commit sent and never answered is not sent
        again (L{TransactionLost}, L{TransactionCommitUnknown}).  The
        start itself is retried like any operation.
        """
        _check_stream(stream)
        d = self._submit(
            TransactionStart(stream, expected_version, self.settings.require_master, credentials)
        )
        # (runs as the answer arrives, so on the session that answered)
        return d.addCallback(
            lambda tid: EventStoreTransaction(
                self, tid, credentials, self._session, stream, expected_version
            )
        )

    def continue_transaction(
        self, transaction_id: int, credentials: Optional[UserCredentials] = None
    ) -> EventStoreTransaction:
        """
        A transaction started earlier (by its id), perhaps by another
        connection: it is bound to the current connection (or, while
        there is none, to the next one).  The id must name a transaction
        on the node this connection is on: ids are only meaningful on the
        node that gave them.
        """
        session = self._session if self.is_connected else self._session + 1
        return EventStoreTransaction(self, transaction_id, credentials, session)

    def _transaction_write(
        self, transaction_id: int, events: Sequence[EventData],
        credentials: Optional[UserCredentials], session: Optional[int],
    ) -> Deferred[None]:
        return self._submit(
            TransactionWrite(
                transaction_id, events, self.settings.require_master, credentials, session
            )
        )

    def _transaction_commit(
        self, transaction_id: int, credentials: Optional[UserCredentials],
        session: Optional[int], stream: Optional[str], expected_version: Optional[int],
        events: Sequence[EventData],
    ) -> Deferred[WriteResult]:
        return self._submit(
            TransactionCommit(
                transaction_id, self.settings.require_master, credentials, session, stream,
                expected_version, events,
            )
        )

    def delete_stream(
        self,
        stream: str,
        expected_version: int,
        hard_delete: bool = False,
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[DeleteResult]:
        _check_stream(stream)
        return self._submit(
            DeleteStream(stream, expected_version, hard_delete, self.settings.require_master,
                         credentials)
        )

    def read_event(
        self,
        stream: str,
        event_number: int,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
        require_master: Optional[bool] = None,
    ) -> Deferred[EventReadResult]:
        """
        Read one event (C{event_number} -1: the last one).
        """
        _check_stream(stream)
        if event_number < -1:
            raise ValueError(f"event_number must be -1 or more, got {event_number}")
        return self._submit(
            ReadEvent(stream, event_number, resolve_link_tos,
                      self._require_master(require_master), credentials)
        )

    def _read_stream(
        self,
        forward: bool,
        stream: str,
        start: int,
        count: int,
        resolve_link_tos: bool,
        credentials: Optional[UserCredentials],
        require_master: Optional[bool],
    ) -> Deferred[StreamEventsSlice]:
        _check_stream(stream)
        _check_count(count)
        if forward and start < 0:
            raise ValueError(f"start must be 0 or more when reading forward, got {start}")
        return self._submit(
            ReadStreamEvents(stream, start, count, forward, resolve_link_tos,
                             self._require_master(require_master), credentials)
        )

    def read_stream_events_forward(
        self,
        stream: str,
        start: int,
        count: int,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
        require_master: Optional[bool] = None,
    ) -> Deferred[StreamEventsSlice]:
        return self._read_stream(
            True, stream, start, count, resolve_link_tos, credentials, require_master
        )

    def read_stream_events_backward(
        self,
        stream: str,
        start: int,
        count: int,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
        require_master: Optional[bool] = None,
    ) -> Deferred[StreamEventsSlice]:
        """
        Read backward from C{start} (-1: from the end).
        """
        return self._read_stream(
            False, stream, start, count, resolve_link_tos, credentials, require_master
        )

    def read_all_events_forward(
        self,
        position: Position,
        count: int,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
        require_master: Optional[bool] = None,
    ) -> Deferred[AllEventsSlice]:
        _check_count(count)
        return self._submit(
            ReadAllEvents(position, count, True, resolve_link_tos,
                          self._require_master(require_master), credentials)
        )

    def read_all_events_backward(
        self,
        position: Position,
        count: int,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
        require_master: Optional[bool] = None,
    ) -> Deferred[AllEventsSlice]:
        _check_count(count)
        return self._submit(
            ReadAllEvents(position, count, False, resolve_link_tos,
                          self._require_master(require_master), credentials)
        )

    def set_stream_metadata(
        self,
        stream: str,
        expected_metastream_version: int,
        metadata: Union[StreamMetadata, bytes],
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[WriteResult]:
        """
        Write C{stream}'s metadata (structured, or raw JSON bytes) to
        C{$$stream}.
        """
        _check_stream(stream)
        if stream.startswith("$$"):
            raise ValueError(f"{stream!r} is a metadata stream: it has no metadata")
        raw = metadata.to_json() if isinstance(metadata, StreamMetadata) else bytes(metadata)
        return self.append_to_stream(
            "$$" + stream,
            expected_metastream_version,
            [EventData(uuid.uuid4(), "$metadata", raw, is_json=True)],
            credentials,
        )

    async def _get_raw_metadata(
        self, stream: str, credentials: Optional[UserCredentials]
    ) -> RawStreamMetadataResult:
        result = await self.read_event("$$" + stream, -1, False, credentials)
        if result.status is EventReadStatus.SUCCESS and result.event is not None:
            event = result.event.original_event
            return RawStreamMetadataResult(stream, False, event.event_number, event.data)
        if result.status is EventReadStatus.STREAM_DELETED:
            return RawStreamMetadataResult(stream, True, -1, b"")
        return RawStreamMetadataResult(stream, False, -1, b"")

    def get_stream_metadata_as_raw_bytes(
        self, stream: str, credentials: Optional[UserCredentials] = None
    ) -> Deferred[RawStreamMetadataResult]:
        _check_stream(stream)
        return Deferred.fromCoroutine(self._get_raw_metadata(stream, credentials))

    def get_stream_metadata(
        self, stream: str, credentials: Optional[UserCredentials] = None
    ) -> Deferred[StreamMetadataResult]:
        _check_stream(stream)

        async def get() -> StreamMetadataResult:
            raw = await self._get_raw_metadata(stream, credentials)
            return StreamMetadataResult(
                raw.stream,
                raw.is_stream_deleted,
                raw.metastream_version,
                StreamMetadata.from_json(raw.stream_metadata),
            )

        return Deferred.fromCoroutine(get())

    def create_persistent_subscription(
        self,
        stream: str,
        group: str,
        settings: Optional[PersistentSubscriptionSettings] = None,
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[None]:
        _check_stream(stream)
        return self._submit(
            PersistentGroupOperation(
                "create", stream, group, settings or PersistentSubscriptionSettings(),
                credentials,
            )
        )

    def update_persistent_subscription(
        self,
        stream: str,
        group: str,
        settings: PersistentSubscriptionSettings,
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[None]:
        _check_stream(stream)
        return self._submit(
            PersistentGroupOperation("update", stream, group, settings, credentials)
        )

    def delete_persistent_subscription(
        self, stream: str, group: str, credentials: Optional[UserCredentials] = None
    ) -> Deferred[None]:
        _check_stream(stream)
        return self._submit(PersistentGroupOperation("delete", stream, group, None, credentials))

    # -- subscriptions API ---------------------------------------------------------------

    def subscribe_to_stream(
        self,
        stream: str,
        event_appeared: Callable[..., Any],
        subscription_dropped: Optional[Callable[..., None]] = None,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[VolatileSubscription]:
        """
        A live subscription to C{stream}: C{event_appeared(subscription,
        event)} for each new event (it may return a Deferred, or be C{async
        def}: the next event waits for it).  It resubscribes after a reconnection
        (events written while disconnected are not delivered; use
        L{subscribe_to_stream_from} for that) and never delivers an event
        twice.

        @return: fires with the subscription once the server confirmed it.
        """
        _check_stream(stream)
        subscription = VolatileSubscription(
            self, stream, event_appeared, subscription_dropped, resolve_link_tos, credentials
        )
        self._add_subscription(subscription)
        return subscription.confirmed

    def subscribe_to_all(
        self,
        event_appeared: Callable[..., Any],
        subscription_dropped: Optional[Callable[..., None]] = None,
        resolve_link_tos: bool = True,
        credentials: Optional[UserCredentials] = None,
    ) -> Deferred[VolatileSubscription]:
        subscription = VolatileSubscription(
            self, "", event_appeared, subscription_dropped, resolve_link_tos, credentials
        )
        self._add_subscription(subscription)
        return subscription.confirmed

    def subscribe_to_stream_from(
        self,
        stream: str,
        last_checkpoint: Optional[int],
        event_appeared: Callable[..., Any],
        live_processing_started: Optional[Callable[..., None]] = None,
        subscription_dropped: Optional[Callable[..., None]] = None,
        resolve_link_tos: bool = True,
        read_batch_size: int = 500,
        credentials: Optional[UserCredentials] = None,
    ) -> CatchUpSubscription:
        """
        A catch-up subscription: every event after C{last_checkpoint}
        (C{None}: from the start), then the live ones, each delivered once
        and in order, also across reconnections.
        """
        _check_stream(stream)
        _check_count(read_batch_size)
        subscription = CatchUpSubscription(
            self, stream, last_checkpoint, event_appeared, live_processing_started,
            subscription_dropped, resolve_link_tos, read_batch_size, credentials,
        )
        self._add_subscription(subscription)
        return subscription

    def subscribe_to_all_from(
        self,
        last_checkpoint: Optional[Position],
        event_appeared: Callable[..., Any],
        live_processing_started: Optional[Callable[..., None]] = None,
        subscription_dropped: Optional[Callable[..., None]] = None,
        resolve_link_tos: bool = True,
        read_batch_size: int = 500,
        credentials: Optional[UserCredentials] = None,
    ) -> CatchUpSubscription:
        _check_count(read_batch_size)
        subscription = CatchUpSubscription(
            self, "", last_checkpoint, event_appeared, live_processing_started,
            subscription_dropped, resolve_link_tos, read_batch_size, credentials,
        )
        self._add_subscription(subscription)
        return subscription

    def connect_to_persistent_subscription(
        self,
        stream: str,
        group: str,
        event_appeared: Callable[..., Any],
        subscription_dropped: Optional[Callable[..., None]] = None,
        buffer_size: int = 10,
        auto_ack: bool = True,
        credentials: Optional[UserCredentials] = None,
        handler_error_action: Optional[int] = None,
    ) -> Deferred[PersistentSubscription]:
        """
        Join the persistent subscription group C{group} on C{stream}:
        C{event_appeared(subscription, event, retry_count)} for each event
        the server hands this consumer.  With C{auto_ack} the event is
        acknowledged once the handler returned; otherwise call
        C{subscription.acknowledge} or C{subscription.fail}.  The
        subscription follows the group to a new leader, and an event it
        already handed over is acknowledged again without reaching the
        handler a second time.

        The handler may return a Deferred (or be C{async def}): the next
        event waits for it, and C{auto_ack} acknowledges once it fired.

        @param handler_error_action: what a handler error (an exception, or
            a failed Deferred) does: C{None} drops the subscription
            (C{"EventHandlerException"}); a L{NakAction} (C{PARK},
            C{RETRY}, C{SKIP}, C{STOP}) naks the event with it and goes on.
        """
        _check_stream(stream)
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        subscription = PersistentSubscription(
            self, stream, group, event_appeared, subscription_dropped, buffer_size, auto_ack,
            credentials, handler_error_action=handler_error_action,
        )
        self._add_subscription(subscription)
        return subscription.confirmed


class EventStoreTransaction:
    """
    A transaction: C{write} events, then C{commit} (or C{rollback}, which
    only forgets it: the server drops uncommitted transactions itself).

    It is bound to the connection session it was started on (see
    L{EventStoreConnection.start_transaction}).  C{commit} waits for the
    writes still in flight and refuses (L{InvalidTransaction}, or the
    L{TransactionLost} of the write) if any of them failed: the client
    never commits a transaction that may miss some of its events.

    @ivar events: every event written so far through this object.
    """

    def __init__(
        self,
        connection: EventStoreConnection,
        transaction_id: int,
        credentials: Optional[UserCredentials],
        session: Optional[int] = None,
        stream: Optional[str] = None,
        expected_version: Optional[int] = None,
    ) -> None:
        self._connection = connection
        self.transaction_id = transaction_id
        self._credentials = credentials
        self._session = session
        self.stream = stream
        self.expected_version = expected_version
        self.events: list[EventData] = []
        self._writes: list[Deferred[None]] = []
        self._broken: Optional[Exception] = None
        self._done = False

    def write(self, events: Sequence[EventData]) -> Deferred[None]:
        if self._done:
            raise errors.InvalidTransaction("the transaction is committed or rolled back")
        if self._broken is not None:
            return _failed(self._broken)
        events = list(events)
        self.events.extend(events)
        d = self._connection._transaction_write(
            self.transaction_id, events, self._credentials, self._session
        )
        self._writes.append(d)

        def done(result: object) -> object:
            self._writes.remove(d)
            if isinstance(result, Failure) and self._broken is None:
                error = result.value
                self._broken = (
                    error
                    if isinstance(error, errors.TransactionLost)
                    else errors.InvalidTransaction(
                        f"transaction {self.transaction_id}: a write failed ({error});"
                        " it cannot be committed"
                    )
                )
            return result

        return d.addBoth(done)

    def commit(self) -> Deferred[WriteResult]:
        """
        Commit once the writes in flight are answered.

        @return: a L{WriteResult}; fails with L{TransactionLost} (nothing
            committed), L{TransactionCommitUnknown} (the answer was lost:
            see its C{events}), L{WrongExpectedVersion}, ...
        """
        if self._done:
            raise errors.InvalidTransaction("the transaction is committed or rolled back")
        self._done = True
        if not self._writes:
            return self._commit_now(None)
        result: Deferred[WriteResult] = Deferred()

        def settled(_: object) -> None:
            self._commit_now(None).chainDeferred(result)

        DeferredList(list(self._writes)).addCallback(settled)
        return result

    def _commit_now(self, _: object) -> Deferred[WriteResult]:
        if self._broken is not None:
            return _failed(self._broken)
        return self._connection._transaction_commit(
            self.transaction_id, self._credentials, self._session, self.stream,
            self.expected_version, self.events,
        )

    def rollback(self) -> None:
        self._done = True


def _check_stream(stream: str) -> None:
    if not isinstance(stream, str) or not stream:
        raise ValueError("stream must be a non-empty string")


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 4096:
        raise ValueError(f"count must be between 1 and 4096, got {count!r}")


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


def _sleep(clock: IReactorTime, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred(lambda d: call.cancel())
    call = clock.callLater(seconds, d.callback, None)
    return d
