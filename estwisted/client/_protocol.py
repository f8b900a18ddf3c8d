# -*- test-case-name: estwisted.client.test.test_connection -*-
"""
The client side of the TCP protocol: a thin adapter.  Bytes go through
L{estwisted.wire.framing.Framer} and L{estwisted.wire.tcpcodec.decode_package}; each
package is handed to the owning connection, except heartbeats, answered
here.

Output: on a plain TCP socket the packages sent while a chunk of input is
handled (the answers, and what the application sends back from their
callbacks) go out in one C{send} straight to the socket when its buffer is
empty (no registering the socket for writing and back per package);
packages sent at other times are gathered until the next reactor turn.  TLS
and test transports get each package through C{transport.write} at once.

Heartbeats (tcp-protocol.md 3.2): after C{heartbeat_interval} seconds
without anything received the protocol sends a C{HeartbeatRequest}; if
nothing arrives within C{heartbeat_timeout} after it, the connection is
aborted (a paused or unreachable node is noticed this way).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Optional
from typing import Protocol as TypingProtocol

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.client._values import UserCredentials
from estwisted.wire.framing import Framer, FramingError
from estwisted.wire.tcpcodec import (
    FLAG_AUTHENTICATED,
    HEADER_SIZE,
    PackageError,
    TcpCommand,
    TcpPackage,
    decode_package,
)

_HEARTBEAT_REQUEST = int(TcpCommand.HeartbeatRequestCommand)
_HEARTBEAT_RESPONSE = int(TcpCommand.HeartbeatResponseCommand)
_pack_frame_header = struct.Struct("<iBB").pack


def auth_block(credentials: UserCredentials) -> bytes:
    """
    The auth block of a package (login and password, each after its
    length).

    @raise ValueError: either encodes to more than 255 bytes.
    """
    login = credentials.username.encode("utf-8")
    password = credentials.password.encode("utf-8")
    if len(login) > 255 or len(password) > 255:
        raise ValueError("login and password must each encode to at most 255 bytes")
    return bytes((len(login),)) + login + bytes((len(password),)) + password


def frame_request(
    command: int, correlation_id: bytes, data: bytes, block: Optional[bytes] = None
) -> bytes:
    """
    One whole frame (length prefix included), with the auth block C{block}
    when given.
    """
    if len(correlation_id) != 16:
        raise ValueError("correlation id must be 16 bytes")
    if block is None:
        return _pack_frame_header(HEADER_SIZE + len(data), command, 0) + correlation_id + data
    return (
        _pack_frame_header(HEADER_SIZE + len(block) + len(data), command, FLAG_AUTHENTICATED)
        + correlation_id
        + block
        + data
    )


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
        #: a plain TCP transport, written to directly (see L{send})
        self._direct: Optional[Any] = None
        self._out: list[bytes] = []
        self._receiving = False
        self._flush_call: Optional[IDelayedCall] = None
        self._blocks: dict[UserCredentials, bytes] = {}
        #: which connect attempt of the owner made this protocol
        self.attempt = 0

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        self._last_received = self._clock.seconds()
        self._idle = self._clock.callLater(self._interval, self._check_idle)
        if type(self.transport) is tcp.Client:
            self._direct = self.transport
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
            frame = frame_request(command, correlation_id, data)
        else:
            block = self._blocks.get(credentials)
            if block is None:
                block = self._blocks[credentials] = auth_block(credentials)
            frame = frame_request(command, correlation_id, data, block)
        if self._direct is None:
            self.transport.write(frame)
            return
        self._out.append(frame)
        if not self._receiving and self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        """
        Send what L{send} gathered: straight to the socket while the
        transport's buffer is empty, the rest through the transport.
        """
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        frames = self._out
        if not frames:
            return
        self._out = []
        direct = self._direct
        if direct is None or self.closed or direct.disconnecting:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if not direct.dataBuffer and not direct._tempDataBuffer:
            try:
                sent = direct.socket.send(data)
            except OSError:
                sent = 0  # the transport finds out what is wrong
            if sent == len(data):
                return
            data = data[sent:]
        direct.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self._direct is None:
            self._received(data)
            return
        self._receiving = True
        try:
            self._received(data)
        finally:
            self._receiving = False
            self._flush()

    def _received(self, data: bytes) -> None:
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
        self._direct = None
        self._out = []
        if self.transport is not None and not self.closed:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self._direct = None
        self._out = []
        for call in (self._idle, self._probe, self._flush_call):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._probe = self._flush_call = None
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
