# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
One replication connection (both sides): frames in, messages out, to a
handler (the leader or the follower runner).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.replication.codec import (
    Heartbeat,
    HeartbeatReply,
    Message,
    ProtocolError,
    decode_message,
    encode_message,
)
from estwisted.wire.framing import Framer, FramingError, frame

_log = Logger()


#: Seconds of silence (nothing received) before a heartbeat is sent, and
#: seconds more without an answer before the connection is closed
#: (C{IntTcpHeartbeatInterval}/C{IntTcpHeartbeatTimeout}, cluster.md 2.7).
HEARTBEAT_INTERVAL = 0.7
HEARTBEAT_TIMEOUT = 0.7


#: Unanswered heartbeats remembered (a peer that answers none is closed
#: long before this many are sent).
_MAX_PINGS = 64


class ReplicationLink(Protocol):
    """
    Frames and decodes packages; hands messages to C{handler}.

    Heartbeats, as v5's internal TCP (cluster.md 2.7): after
    C{heartbeat_interval} seconds without receiving anything (or without
    sending anything) the link sends a L{Heartbeat}; the peer answers; with
    still nothing received C{heartbeat_timeout} seconds later the link is
    closed.  A peer cut off silently (packets dropped, no FIN) is noticed
    within interval + timeout, on both sides.

    @ivar last_received: C{handler.clock.seconds()} when something last
        arrived (the leader's no-quorum check counts a replica by it).
    @ivar confirmed_at: the time we sent the newest message the peer is
        known to have received (a heartbeat it answered, or what the
        handler L{confirm}s, such as data it acknowledged); C{None} before
        any.  Unlike C{last_received} it does not move when a stalled
        process reads a backlog of old answers: the leader's lease counts
        a replica by it.
    """

    def __init__(
        self,
        handler: Any,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.framer = Framer()
        self.connected_ = False
        self.clock: IReactorTime = handler.clock
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.last_received = self.clock.seconds()
        self._last_sent = self.last_received
        self._timer: Optional[IDelayedCall] = None
        self.confirmed_at: Optional[float] = None
        self._connected_at = self.last_received
        #: when each of our heartbeats not yet answered was sent (answers
        #: come back in order)
        self._pings: deque[float] = deque()

    def connectionMade(self) -> None:
        self.connected_ = True
        self.last_received = self._last_sent = self._connected_at = self.clock.seconds()
        self._schedule()
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
            self._last_sent = self.clock.seconds()

    def _schedule(self) -> None:
        if self.connected_ and self.heartbeat_interval > 0:
            self._timer = self.clock.callLater(self.heartbeat_interval / 2, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self.connected_:
            return
        now = self.clock.seconds()
        silent = now - self.last_received
        if silent >= self.heartbeat_interval + self.heartbeat_timeout:
            self.abort(f"no answer for {silent:.1f} s (heartbeat timeout)")
            return
        confirmed = self.confirmed_at
        if confirmed is None:
            confirmed = self._connected_at
        if (
            silent >= self.heartbeat_interval
            or now - self._last_sent >= self.heartbeat_interval
            or now - confirmed >= self.heartbeat_interval
        ):
            self._ping(now)
        self._schedule()

    def _ping(self, now: float) -> None:
        if len(self._pings) < _MAX_PINGS:
            self._pings.append(now)
        self.send(Heartbeat())

    def confirm(self, sent_at: float) -> None:
        """
        The peer received what we sent at C{sent_at} (see C{confirmed_at}).
        """
        if self.confirmed_at is None or sent_at > self.confirmed_at:
            self.confirmed_at = sent_at

    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.clock.seconds()
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
                if isinstance(message, Heartbeat):
                    self.send(HeartbeatReply())
                    continue
                if isinstance(message, HeartbeatReply):
                    if self._pings:
                        self.confirm(self._pings.popleft())
                    continue
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
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.handler.connection_lost(self)
