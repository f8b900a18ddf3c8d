# -*- test-case-name: estwisted.test.test_replprotocol -*-
"""
One replication connection (both sides): frames in, messages out, to a
handler (the leader or the follower runner).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.framing import Framer, FramingError, frame
from estwisted.replication.codec import (
    Message,
    ProtocolError,
    decode_message,
    encode_message,
)

_log = Logger()


class ReplicationLink(Protocol):
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
