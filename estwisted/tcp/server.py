# -*- test-case-name: estwisted.tcp.test.test_server -*-
"""
The external (and internal-client) TCP endpoint: a thin Twisted adapter of
the Event Store v5 client protocol (tcp-protocol.md).

Layers, bottom up: L{estwisted.wire.framing.Framer} splits the byte stream into
packages; L{estwisted.wire.tcpcodec} owns the package header, protobuf parsing
and reply encoding by command name (L{estwisted.wire.tcpcodec.TcpCommand}: no
command byte is spelled out anywhere else); L{TcpClientProtocol} is the
connection (framing, the header decoded once, credentials, heartbeats,
backpressure) and hands each request to its
L{estwisted.tcp.dispatch.RequestDispatcher}, which calls the L{StreamStore},
the L{SubscriptionHub} or the L{PersistentSubscriptions} and sends the
encoded reply under the request's correlation id.

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
  - output: on a plain TCP socket the packages sent in one reactor turn are
    gathered and go out in one C{send} at the end of the turn (or as soon
    as a group commit has made all its replies), straight to
    the socket while the transport's buffer is empty (no registering the
    socket for writing and back per reply); the rest, and every package on
    TLS or test transports, go through C{transport.write};
  - on close every subscription of the connection is dropped server-side.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any, Optional

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.cluster.leadership import Leadership
from estwisted.core import errors
from estwisted.core.model import Principal
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.tcp.dispatch import RequestDispatcher, RequestMeter
from estwisted.wire import tcpcodec
from estwisted.wire.framing import DEFAULT_MAX_PACKAGE_SIZE, Framer, FramingError
from estwisted.wire.tcpcodec import (
    HEADER_SIZE,
    ZERO_CORRELATION,
    PackageError,
    TcpCommand,
    frame_package,
    heartbeat_response,
)

__all__ = ["TcpClientFactory", "TcpClientProtocol"]

#: v5's ConnectionQueueSizeThreshold and ConnectionPendingSendBytesThreshold.
MAX_PENDING_PACKAGES = 50_000
MAX_PENDING_BYTES = 10 * 1024 * 1024

C = TcpCommand
_HEARTBEAT_REQUEST = int(C.HeartbeatRequestCommand)
_HEARTBEAT_RESPONSE = int(C.HeartbeatResponseCommand)


@implementer(IPushProducer)
class TcpClientProtocol(Protocol):
    """
    One client connection: framing, the package header (decoded once, here),
    credentials, heartbeats and backpressure; requests go to its
    L{RequestDispatcher}.  See the module docstring.

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
        self._paused = False
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._received = 0
        self._last_seen = -1
        self._heartbeat_call: Optional[IDelayedCall] = None
        self._abort_call: Optional[IDelayedCall] = None
        self.dispatcher = RequestDispatcher(self)
        #: a plain TCP transport, written to directly while its buffer is
        #: empty (see L{send})
        self._direct: Optional[tcp.Server] = None
        self._out: list[bytes] = []

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._schedule_heartbeat(self.factory.heartbeat_interval)
        transport = self.transport
        if type(transport) is tcp.Server and self.factory.write_through:
            self._direct = transport

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self._direct = None
        self._out = []
        self.factory.connections.discard(self)
        for call in (self._heartbeat_call, self._abort_call):
            if call is not None and call.active():
                call.cancel()
        self._heartbeat_call = self._abort_call = None
        self._queue.clear()
        self._queued_bytes = 0
        self.dispatcher.connection_lost()

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
        dispatch = self.dispatcher.dispatch
        for package in packages:
            if self.closed:
                return
            if len(package) < HEADER_SIZE:
                self._close_with_bad_request(
                    f"Received bad network package. Error: package too short "
                    f"({len(package)} bytes)."
                )
                return
            # the header, decoded once: command, flags, correlation id
            command = package[0]
            if package[1]:
                self._flagged(command, package)
            elif command == _HEARTBEAT_REQUEST:
                self.send(heartbeat_response(package[2:HEADER_SIZE]))
            elif command != _HEARTBEAT_RESPONSE:
                dispatch(command, package[2:HEADER_SIZE], package[HEADER_SIZE:], self.default_user)
        if framing_error is not None and not self.closed:
            self._close_with_bad_request(f"Invalid TCP frame received. Error: {framing_error}")

    def _flagged(self, command: int, package: bytes) -> None:
        """
        A package with flags: credentials (authenticated), or a trusted
        write (refused on this interface).
        """
        flags = package[1]
        corr = package[2:HEADER_SIZE]
        login: Optional[str] = None
        password: Optional[str] = None
        data = package[HEADER_SIZE:]
        if flags & tcpcodec.FLAG_AUTHENTICATED:
            try:
                login, password, data = tcpcodec.decode_credentials(package)
            except PackageError as e:
                self._close_with_bad_request(f"Received bad network package. Error: {e}")
                return
        if flags & tcpcodec.FLAG_TRUSTED_WRITE:
            self.send(
                frame_package(
                    C.BadRequest,
                    corr,
                    b"Trusted writes aren't accepted over the external TCP interface",
                )
            )
            self._close()
            return
        if command == C.Authenticate:
            self.dispatcher.authenticate(corr, login or "", password or "")
            return
        if command == _HEARTBEAT_REQUEST:
            self.send(heartbeat_response(corr))
            return
        if command == _HEARTBEAT_RESPONSE:
            return
        principal = self.default_user
        if login is not None and self.dispatcher.handles(command):
            try:
                principal = self.factory.users.authenticate(login, password or "")
            except errors.NotAuthenticated:
                self.send(frame_package(C.NotAuthenticated, corr, b"Not Authenticated"))
                return
            except errors.NotReady:
                self.send(frame_package(C.NotHandled, corr, tcpcodec.not_handled(0)))
                return
            except Exception:
                self._log.failure("Authentication failed unexpectedly")
                self.send(frame_package(C.NotAuthenticated, corr, b"Internal Server Error"))
                return
        self.dispatcher.dispatch(command, corr, data, principal)

    # -- output and backpressure -------------------------------------------

    def send(self, frame: bytes) -> None:
        """
        Write one framed package, or queue it while the transport is full.
        """
        if self.closed:
            return
        if not self._paused:
            if self._direct is not None:
                # gathered for one send at the end of the turn
                out = self._out
                if not out:
                    self.factory.output_ready(self)
                out.append(frame)
                return
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
                    C.BadRequest,
                    ZERO_CORRELATION,
                    b"Connection pending send queue is over the limit; closing.",
                )
            )
            self._close()

    def flush_output(self) -> None:
        """
        Send what L{send} gathered this turn: straight to the socket while
        the transport's buffer is empty (no registering the socket for
        writing and back), the rest through the transport.
        """
        frames = self._out
        if not frames:
            return
        self._out = []
        direct = self._direct
        if direct is None:
            return  # closed
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if not self._paused and not direct.dataBuffer and not direct._tempDataBuffer:
            try:
                sent = direct.socket.send(data)
            except OSError:
                sent = 0  # the transport finds out what is wrong
            if sent == len(data):
                return
            data = data[sent:]
        direct.write(data)

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
        self.send(frame_package(C.BadRequest, ZERO_CORRELATION, text.encode("utf-8")))
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.flush_output()
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
        self.send(frame_package(C.HeartbeatRequestCommand, uuid.uuid4().bytes_le))
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

    _log = Logger()

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
        write_through: bool = True,
        users: Optional[UserManager] = None,
    ) -> None:
        if store is None:
            raise ValueError("TcpClientFactory needs an open StreamStore")
        self.store: StreamStore = store
        #: authenticates callers (a new manager over C{store} if not given)
        self.users = users if users is not None else UserManager(store)
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
        #: counts and times requests when set (the node's metrics,
        #: L{estwisted.tcp.dispatch.RequestMeter})
        self.request_meter: Optional[RequestMeter] = None
        #: replies to a plain TCP socket whose buffer is empty are sent at
        #: once (L{TcpClientProtocol.send}); off: always through the transport
        self.write_through = write_through
        self._output: list[TcpClientProtocol] = []
        self._output_call: Optional[IDelayedCall] = None
        if write_through:
            # a group commit's replies go out as soon as they are all made
            store.add_commit_listener(self._committed)
        self.connections: set[TcpClientProtocol] = set()

    def output_ready(self, protocol: TcpClientProtocol) -> None:
        """
        C{protocol} gathered output: send it at the end of this turn (one
        delayed call for every connection).
        """
        self._output.append(protocol)
        if self._output_call is None and not self.store.publishing:
            # (while a commit publishes, L{_committed} follows at once)
            self._output_call = self.clock.callLater(0, self._flush_output)

    def _committed(self, records: object) -> None:
        if self._output:
            call, self._output_call = self._output_call, None
            if call is not None and call.active():
                call.cancel()
            self._flush_output()

    def _flush_output(self) -> None:
        self._output_call = None
        protocols, self._output = self._output, []
        for protocol in protocols:
            try:
                protocol.flush_output()
            except Exception:
                self._log.failure("Sending to a client failed")

    def buildProtocol(self, addr: Any) -> TcpClientProtocol:  # type: ignore[override]
        return TcpClientProtocol(self)
