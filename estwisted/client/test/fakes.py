# -*- test-case-name: estwisted.client.test.test_connection -*-
"""
Test doubles for the client's unit tests: endpoints that hand out
protocols connected to L{FakeServerConnection}s (a C{StringTransport} plus
helpers that decode what the client wrote and feed answers back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from estwisted.client._discovery import NodeEndpoints
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.framing import Framer
from estwisted.wire.tcpcodec import TcpCommand, TcpPackage, decode_package, frame_package


class _Transport(StringTransport):
    def __init__(self, connection: FakeServerConnection) -> None:
        super().__init__()
        self._connection = connection

    def loseConnection(self) -> None:
        super().loseConnection()
        self._connection.lose()

    def abortConnection(self) -> None:
        super().abortConnection()
        self._connection.lose()


class FakeServerConnection:
    """
    One client connection as the server sees it.
    """

    def __init__(self, node: NodeEndpoints, protocol: Any) -> None:
        self.node = node
        self.protocol = protocol
        self.transport = _Transport(self)
        self._framer = Framer()
        self._seen = 0
        self.received: list[TcpPackage] = []
        self.closed = False

    def lose(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def packages(self) -> list[TcpPackage]:
        """
        Packages the client wrote since the last call (all of them are also
        kept in C{received}).
        """
        data = self.transport.value()
        new = data[self._seen :]
        self._seen = len(data)
        packages = [decode_package(p) for p in self._framer.feed(new)]
        self.received += packages
        return packages

    def send(self, command: int, correlation_id: bytes, data: bytes = b"") -> None:
        self.protocol.dataReceived(frame_package(command, correlation_id, data))

    def identify(self) -> None:
        """
        Answer the client's C{IdentifyClient}.
        """
        (package,) = [p for p in self.packages() if p.command == TcpCommand.IdentifyClient]
        self.send(TcpCommand.ClientIdentified, package.correlation_id)

    def drop(self) -> None:
        """
        The server closes the connection.
        """
        self.lose()

    def answer_write(self, package: TcpPackage, last: int, result: int = 0) -> None:
        self.send(
            TcpCommand.WriteEventsCompleted,
            package.correlation_id,
            pb.WriteEventsCompleted(
                result=result,  # type: ignore[arg-type]
                first_event_number=last,
                last_event_number=last,
                prepare_position=100,
                commit_position=100,
            ).SerializeToString(),
        )

    def not_master(self, package: TcpPackage, leader: NodeEndpoints) -> None:
        info = pb.NotHandled.MasterInfo(
            external_tcp_address=leader.host,
            external_tcp_port=leader.tcp_port,
            external_http_address=leader.host,
            external_http_port=2113,
        )
        self.send(
            TcpCommand.NotHandled,
            package.correlation_id,
            pb.NotHandled(
                reason=pb.NotHandled.NotMaster, additional_info=info.SerializeToString()
            ).SerializeToString(),
        )


class FakeNetwork:
    """
    An endpoint factory for L{EventStoreConnection}: C{up} nodes accept,
    others refuse.  C{connections} lists every accepted connection.
    """

    def __init__(self, up: Optional[set[NodeEndpoints]] = None) -> None:
        self.up = up
        self.connections: list[FakeServerConnection] = []
        self.attempts: list[NodeEndpoints] = []

    def __call__(self, node: NodeEndpoints) -> Any:
        network = self

        class Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                network.attempts.append(node)
                if network.up is not None and node not in network.up:
                    return fail(ConnectionRefusedError())
                protocol = factory.buildProtocol(None)
                connection = FakeServerConnection(node, protocol)
                network.connections.append(connection)
                protocol.makeConnection(connection.transport)
                return succeed(protocol)

        return Endpoint()

    @property
    def last(self) -> FakeServerConnection:
        return self.connections[-1]


def static_gossip(documents: dict[tuple[str, int], bytes]) -> Callable[[str, int], Deferred[bytes]]:
    """
    A gossip fetch function answering from C{documents} (missing seeds
    fail).
    """

    def fetch(host: str, port: int) -> Deferred[bytes]:
        body = documents.get((host, port))
        if body is None:
            return fail(ConnectionRefusedError())
        return succeed(body)

    return fetch
