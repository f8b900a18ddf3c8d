# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
The internal TCP port: replicas and clients share it; the first package
tells them apart (replication commands are below the client commands'
C{0x80}).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.replication.codec import (
    COMMANDS,
)
from estwisted.replication.leader import ReplicationLeader

_log = Logger()


class _Sniffer(Protocol):
    """
    Waits for the first package: a replication command makes the connection
    a replication one, anything else a client one.
    """

    def __init__(self, owner: InternalTcpFactory, addr: Optional[IAddress]) -> None:
        self.owner = owner
        self.addr = addr
        self.buffer = b""
        self.inner: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self.buffer += data
        if len(self.buffer) < 5:
            return
        command = self.buffer[4]
        inner: Any
        if command in COMMANDS and self.owner.leader is not None:
            inner = self.owner.leader.factory().buildProtocol(self.addr)
        else:
            inner = self.owner.clients.buildProtocol(self.addr)
        if inner is None:
            assert self.transport is not None
            self.transport.loseConnection()
            return
        self.inner = inner
        inner.makeConnection(self.transport)
        buffered, self.buffer = self.buffer, b""
        inner.dataReceived(buffered)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.inner is not None:
            self.inner.connectionLost(reason)


class InternalTcpFactory(Factory):
    """
    The internal TCP port: replication for replicas (their first package is
    a replication command), the client protocol for everyone else.
    """

    def __init__(self, clients: Factory, leader: Optional[ReplicationLeader]) -> None:
        self.clients = clients
        self.leader = leader

    def doStart(self) -> None:
        self.clients.doStart()

    def doStop(self) -> None:
        self.clients.doStop()

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        return _Sniffer(self, addr)
