# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
The connection lifecycle as a pure state machine.

    INIT --start--> DISCOVERING --discovered--> CONNECTING --tcp_connected-->
    IDENTIFYING --identified--> CONNECTED

Any failure (discovery found nothing, the TCP connect failed, the
connection was lost) goes to WAITING with a C{Schedule(delay)} effect, the
delay doubling from C{reconnection_delay} up to C{max_reconnection_delay};
C{timer_fired} starts discovery again.  C{reconnect_to} (the node said
C{NotMaster} and named the leader) drops the connection and connects there
directly.  Without C{keep_reconnecting}, more than C{max_reconnections}
failures in a row close the connection (C{CLOSED} with an error).  A
successful identification resets the count.

Methods return the effects for the runner to perform, in order.  Time
never enters: the runner owns the timers.
"""

from __future__ import annotations

import enum
from typing import Optional, Union

from attrs import frozen

from estwisted.client._discovery import NodeEndpoints


class Phase(enum.Enum):
    INIT = "init"
    DISCOVERING = "discovering"
    CONNECTING = "connecting"
    IDENTIFYING = "identifying"
    CONNECTED = "connected"
    WAITING = "waiting"
    CLOSED = "closed"


@frozen
class Discover:
    """
    Find a node; C{failed} is the one just lost (avoid it if possible).
    """

    failed: Optional[NodeEndpoints]


@frozen
class ConnectTcp:
    endpoints: NodeEndpoints


@frozen
class SendIdentify:
    pass


@frozen
class DropTcp:
    pass


@frozen
class Schedule:
    delay: float


@frozen
class CancelTimer:
    pass


@frozen
class NotifyConnected:
    endpoints: NodeEndpoints


@frozen
class NotifyDisconnected:
    endpoints: NodeEndpoints


@frozen
class NotifyReconnecting:
    pass


@frozen
class NotifyClosed:
    """
    The connection is closed for good; C{reason} is C{None} after
    C{close()}, otherwise why it gave up.
    """

    reason: Optional[str]


Effect = Union[
    Discover,
    ConnectTcp,
    SendIdentify,
    DropTcp,
    Schedule,
    CancelTimer,
    NotifyConnected,
    NotifyDisconnected,
    NotifyReconnecting,
    NotifyClosed,
]


def backoff_delay(failures: int, first: float, maximum: float) -> float:
    """
    The wait after C{failures} (>= 1) failures in a row.
    """
    return float(min(maximum, first * (2 ** min(failures - 1, 30))))


class ConnectionMachine:
    """
    @ivar phase: the current L{Phase}.
    @ivar failures: failures since the last successful identification.
    @ivar endpoints: the node being connected to, or connected.
    """

    def __init__(
        self,
        keep_reconnecting: bool,
        max_reconnections: int,
        reconnection_delay: float,
        max_reconnection_delay: float,
    ) -> None:
        self._keep = keep_reconnecting
        self._max = max_reconnections
        self._delay = reconnection_delay
        self._max_delay = max_reconnection_delay
        self.phase = Phase.INIT
        self.failures = 0
        self.endpoints: Optional[NodeEndpoints] = None
        self._lost: Optional[NodeEndpoints] = None

    def start(self) -> list[Effect]:
        if self.phase is not Phase.INIT:
            return []
        self.phase = Phase.DISCOVERING
        return [Discover(None)]

    def discovered(self, endpoints: NodeEndpoints) -> list[Effect]:
        if self.phase is not Phase.DISCOVERING:
            return []
        self.phase = Phase.CONNECTING
        self.endpoints = endpoints
        return [ConnectTcp(endpoints)]

    def discovery_failed(self) -> list[Effect]:
        if self.phase is not Phase.DISCOVERING:
            return []
        return self._failed("no node found")

    def tcp_connected(self) -> list[Effect]:
        if self.phase is not Phase.CONNECTING:
            return [DropTcp()] if self.phase is Phase.CLOSED else []
        self.phase = Phase.IDENTIFYING
        return [SendIdentify()]

    def tcp_failed(self) -> list[Effect]:
        if self.phase is not Phase.CONNECTING:
            return []
        self._lost = self.endpoints
        return self._failed("cannot connect")

    def identified(self) -> list[Effect]:
        if self.phase is not Phase.IDENTIFYING:
            return []
        assert self.endpoints is not None
        self.phase = Phase.CONNECTED
        self.failures = 0
        return [NotifyConnected(self.endpoints)]

    def connection_lost(self) -> list[Effect]:
        """
        The TCP connection closed (or was dropped for a heartbeat or
        identification timeout).
        """
        if self.phase is Phase.CONNECTED:
            assert self.endpoints is not None
            self._lost = self.endpoints
            return [NotifyDisconnected(self.endpoints)] + self._failed("connection lost")
        if self.phase in (Phase.IDENTIFYING, Phase.CONNECTING):
            self._lost = self.endpoints
            return self._failed("connection lost while connecting")
        return []

    def reconnect_to(self, endpoints: Optional[NodeEndpoints]) -> list[Effect]:
        """
        The node is not the leader: go to C{endpoints} (or rediscover when
        C{None}).
        """
        if self.phase not in (Phase.CONNECTED, Phase.IDENTIFYING):
            return []
        effects: list[Effect] = [DropTcp()]
        if self.phase is Phase.CONNECTED:
            assert self.endpoints is not None
            effects.append(NotifyDisconnected(self.endpoints))
        effects.append(NotifyReconnecting())
        if endpoints is None or endpoints == self.endpoints:
            self._lost = self.endpoints
            self.phase = Phase.DISCOVERING
            return effects + [Discover(self._lost)]
        self.phase = Phase.CONNECTING
        self.endpoints = endpoints
        return effects + [ConnectTcp(endpoints)]

    def timer_fired(self) -> list[Effect]:
        if self.phase is not Phase.WAITING:
            return []
        self.phase = Phase.DISCOVERING
        return [NotifyReconnecting(), Discover(self._lost)]

    def close(self, reason: Optional[str] = None) -> list[Effect]:
        if self.phase is Phase.CLOSED:
            return []
        effects: list[Effect] = []
        if self.phase is Phase.WAITING:
            effects.append(CancelTimer())
        if self.phase in (Phase.CONNECTING, Phase.IDENTIFYING, Phase.CONNECTED):
            effects.append(DropTcp())
        if self.phase is Phase.CONNECTED:
            assert self.endpoints is not None
            effects.append(NotifyDisconnected(self.endpoints))
        self.phase = Phase.CLOSED
        return effects + [NotifyClosed(reason)]

    def _failed(self, why: str) -> list[Effect]:
        self.failures += 1
        if not self._keep and self._max >= 0 and self.failures > self._max:
            self.phase = Phase.CLOSED
            return [
                NotifyClosed(f"{why}; gave up after {self.failures - 1} reconnection attempts")
            ]
        self.phase = Phase.WAITING
        return [Schedule(backoff_delay(self.failures, self._delay, self._max_delay))]
