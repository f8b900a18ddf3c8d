# -*- test-case-name: estwisted.client.test.test_testing -*-
"""
An in-memory node for unit-testing applications that use
L{estwisted.client}, without sockets:

    node = MemoryEventStore(clock)
    connection = node.connection()
    d = connection.connect()
    node.flush()            # with a Clock: run what is due now
    ...
    node.drop_connections() # simulate a lost connection

It is estwisted's own server core (the stream store on a memory log, the
subscription hub, persistent subscriptions and the TCP protocol) joined to
the client by in-memory transports that deliver on the next reactor turn
(C{callLater(0)}), so the client behaves as against a real node.  The same
suite of tests runs against it and against a real node process
(C{estwisted.client.test.suite}).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from estwisted.client._connection import EventStoreConnection
from estwisted.client._discovery import NodeEndpoints
from estwisted.client._settings import ConnectionSettings, SingleNode
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.tcp.server import TcpClientFactory

__all__ = ["MemoryEventStore"]

_ports = itertools.count(40000)


class _PipeTransport(StringTransport):
    """
    One end of an in-memory connection: what is written arrives at the
    other end's protocol on the next reactor turn.
    """

    def __init__(self, clock: IReactorTime, pipe: _Pipe, peer_port: int) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", peer_port))  # type: ignore[no-untyped-call]
        self._clock = clock
        self._pipe = pipe
        self.other: Optional[_PipeTransport] = None
        self.receiver: Any = None
        self._inbox: deque[bytes] = deque()
        self._call: Optional[IDelayedCall] = None

    def write(self, data: bytes) -> None:
        if self._pipe.closed or self.other is None:
            return
        self.other._receive(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def _receive(self, data: bytes) -> None:
        self._inbox.append(data)
        if self._call is None:
            self._call = self._clock.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self._call = None
        while self._inbox and not self._pipe.closed:
            self.receiver.dataReceived(self._inbox.popleft())

    def loseConnection(self) -> None:
        self._pipe.close()

    def abortConnection(self) -> None:
        self._pipe.close()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _Pipe:
    def __init__(self, clock: IReactorTime, client: Any, server: Any, node: MemoryEventStore):
        port = next(_ports)
        self.closed = False
        self._node = node
        self.client_transport = _PipeTransport(clock, self, 1113)
        self.server_transport = _PipeTransport(clock, self, port)
        self.client_transport.other = self.server_transport
        self.server_transport.other = self.client_transport
        self.client_transport.receiver = client
        self.server_transport.receiver = server
        self.client = client
        self.server = server

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client_transport.cancel()
        self.server_transport.cancel()
        self._node._pipes.discard(self)
        reason = Failure(ConnectionDone())
        self.server.connectionLost(reason)
        self.client.connectionLost(reason)


class MemoryEventStore:
    """
    An in-memory node.

    @ivar store: the L{StreamStore} (write to it directly to set up data).
    @ivar accepting: while false, connections are refused.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.store = StreamStore(MemoryLog(), StreamIndex(), clock)
        self.users = UserManager(self.store, iterations=1)
        self.users.ensure_default_users()
        self.hub = SubscriptionHub(self.store)
        self.persistent = PersistentSubscriptions(self.store, clock)
        self.persistent.start()
        self.factory = TcpClientFactory(
            self.store, self.hub, self.persistent, clock, users=self.users
        )
        self.accepting = True
        self._pipes: set[_Pipe] = set()
        self.flush()

    def endpoint_factory(self, node: NodeEndpoints) -> Any:
        """
        An C{endpoint_factory} for L{EventStoreConnection}: every endpoint
        leads to this node.
        """
        memory = self

        class Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()

                def connect() -> None:
                    if not memory.accepting:
                        d.errback(ConnectionRefusedError())
                        return
                    client = factory.buildProtocol(None)
                    server = memory.factory.buildProtocol(None)
                    pipe = _Pipe(memory.clock, client, server, memory)
                    memory._pipes.add(pipe)
                    server.makeConnection(pipe.server_transport)  # type: ignore[no-untyped-call]
                    client.makeConnection(pipe.client_transport)
                    d.callback(client)

                memory.clock.callLater(0, connect)
                return d

        return Endpoint()

    def connection(self, settings: Optional[ConnectionSettings] = None) -> EventStoreConnection:
        """
        A client connection to this node (call C{connect()} on it).
        """
        return EventStoreConnection.create(
            self.clock,
            settings or ConnectionSettings(),
            SingleNode("memory", 1113),
            endpoint_factory=self.endpoint_factory,
        )

    def drop_connections(self) -> None:
        """
        Close every client connection, as a network failure would.
        """
        for pipe in list(self._pipes):
            pipe.close()

    def set_ready(self, ready: bool) -> None:
        """
        While not ready, operations are answered C{NotHandled(NotReady)}.
        """
        self.factory.ready = ready

    def flush(self, turns: int = 20) -> None:
        """
        With a L{Clock}: run what is due now (message deliveries, commits),
        a few turns deep.  Does nothing with a real reactor.
        """
        if isinstance(self.clock, Clock):
            for _ in range(turns):
                self.clock.advance(0)

    def stop(self) -> Deferred[None]:
        """
        Close the connections and stop the persistent subscription service.
        """
        self.drop_connections()
        self.accepting = False
        d = self.persistent.stop()
        self.flush()
        return d if d is not None else succeed(None)
