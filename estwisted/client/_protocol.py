# -*- test-case-name: estwisted.client.test.test_connection -*-
"""
The client side of the TCP protocol: a thin adapter.  Bytes go through
L{estwisted.wire.framing.Framer} and L{estwisted.wire.tcpcodec.decode_package}; each
package is handed to the owning connection, except heartbeats, answered
here.

Heartbeats (tcp-protocol.md 3.2): after C{heartbeat_interval} seconds
without anything received the protocol sends a C{HeartbeatRequest}; if
nothing arrives within C{heartbeat_timeout} after it, the connection is
aborted (a paused or unreachable node is noticed this way).
"""

from __future__ import annotations

import os
from typing import Optional
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.client._values import UserCredentials
from estwisted.wire.framing import Framer, FramingError, frame
from estwisted.wire.tcpcodec import (
    PackageError,
    TcpCommand,
    TcpPackage,
    decode_package,
    encode_package,
)

_HEARTBEAT_REQUEST = int(TcpCommand.HeartbeatRequestCommand)
_HEARTBEAT_RESPONSE = int(TcpCommand.HeartbeatResponseCommand)


class PackageHandler(TypingProtocol):
    """
    What the protocol reports to.
    """

    def tcp_connected(self, protocol: ClientProtocol) -> None: ...

    def package_received(self, protocol: ClientProtocol, package: TcpPackage) -> None: ...

    def tcp_lost(self, protocol: ClientProtocol, reason: Failure) -> None: ...


class ClientProtocol(Protocol):
    """
    @ivar lost: fires (with C{None}) once the connection is closed.
    """

    _log = Logger()

    def __init__(
        self,
        handler: PackageHandler,
        clock: IReactorTime,
        heartbeat_interval: float,
        heartbeat_timeout: float,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._interval = heartbeat_interval
        self._timeout = heartbeat_timeout
        self._framer = Framer()
        self._last_received = clock.seconds()
        self._idle: Optional[IDelayedCall] = None
        self._probe: Optional[IDelayedCall] = None
        self.lost: Deferred[None] = Deferred()
        self.closed = False
        #: which connect attempt of the owner made this protocol
        self.attempt = 0

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        self._last_received = self._clock.seconds()
        self._idle = self._clock.callLater(self._interval, self._check_idle)
        self._handler.tcp_connected(self)

    def send(
        self,
        command: int,
        correlation_id: bytes,
        data: bytes = b"",
        credentials: Optional[UserCredentials] = None,
    ) -> None:
        if self.closed or self.transport is None:
            return
        if credentials is None:
            package = encode_package(command, correlation_id, data)
        else:
            package = encode_package(
                command, correlation_id, data, credentials.username, credentials.password
            )
        self.transport.write(frame(package))

    def dataReceived(self, data: bytes) -> None:
        self._last_received = self._clock.seconds()
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
            self._idle = self._clock.callLater(self._interval, self._check_idle)
        try:
            packages = self._framer.feed(data)
        except FramingError as e:
            self._log.warn("Bad frame from the server: {error}", error=e)
            packages = e.packages
            self.abort()
        for raw in packages:
            if self.closed:
                return
            try:
                package = decode_package(raw)
            except PackageError as e:
                self._log.warn("Bad package from the server: {error}", error=e)
                self.abort()
                return
            if package.command == _HEARTBEAT_REQUEST:
                self.send(_HEARTBEAT_RESPONSE, package.correlation_id)
            elif package.command == _HEARTBEAT_RESPONSE:
                pass
            else:
                self._handler.package_received(self, package)

    def _check_idle(self) -> None:
        self._idle = None
        if self.closed:
            return
        silent = self._clock.seconds() - self._last_received
        if silent < self._interval:
            self._idle = self._clock.callLater(self._interval - silent, self._check_idle)
            return
        self.send(_HEARTBEAT_REQUEST, os.urandom(16))
        self._probe = self._clock.callLater(self._timeout, self._heartbeat_timed_out)

    def _heartbeat_timed_out(self) -> None:
        self._probe = None
        self._log.info("Heartbeat timeout: dropping the connection")
        self.abort()

    def abort(self) -> None:
        """
        Drop the connection at once.
        """
        if self.transport is not None and not self.closed:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        for call in (self._idle, self._probe):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._probe = None
        self._handler.tcp_lost(self, reason)
        self.lost.callback(None)


class ClientFactory(Factory):
    def __init__(
        self,
        handler: PackageHandler,
        clock: IReactorTime,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        attempt: int = 0,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._interval = heartbeat_interval
        self._timeout = heartbeat_timeout
        self._attempt = attempt

    def buildProtocol(self, addr: object) -> ClientProtocol:
        protocol = ClientProtocol(self._handler, self._clock, self._interval, self._timeout)
        protocol.attempt = self._attempt
        return protocol
