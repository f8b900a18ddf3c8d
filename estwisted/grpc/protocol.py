# -*- test-case-name: estwisted.grpc.test.test_protocol -*-
"""
HTTP/2 for gRPC on the HTTP port: the sans-IO C{h2} state machine under a
Twisted protocol, and the sniffer that shares the port with the HTTP/1.1
site.

Connection flow::

    bytes --> SniffingProtocol --(starts with the HTTP/2 preface)--> GrpcConnection
                     |                                                |  h2 events
                     +--(anything else)--> the Site's HTTP/1.1 channel |
                                                                       v
                                          ServerCall per stream --> GrpcServer.start(call)

With TLS the listener offers ALPN C{http/1.1} first and C{h2}: a client that
offers both (browsers, curl) keeps HTTP/1.1, a gRPC client offers only C{h2}
and sends the preface.  Both paths end in the sniffer, so which protocol
serves a connection is decided by its first bytes alone, never by
twisted.web's own HTTP/2 switch.

Flow control: every stream's outbound bytes wait in the L{ServerCall} until
the peer's window allows them; handlers that produce much (reads,
subscriptions) look at L{ServerCall.buffered} and set
L{ServerCall.on_drain} to continue.  Inbound DATA is acknowledged as it is
consumed.  A protocol error from the peer is answered with C{GOAWAY} (or
C{RST_STREAM} for one stream) and the connection closed; a malformed gRPC
message ends its call with C{INVALID_ARGUMENT}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IProtocolNegotiationFactory, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.grpc.framing import (
    COMPRESS_FROM,
    ENCODINGS,
    OK,
    CallHead,
    FramingError,
    GrpcStatus,
    MessageDecoder,
    StatusCode,
    encode_message,
    is_grpc_request,
    parse_call_head,
    response_headers,
    trailers,
    trailers_only,
)
from estwisted.grpc.http2 import PREFACE as PREFACE
from estwisted.grpc.http2 import ConnectionError as Http2ConnectionError
from estwisted.grpc.http2 import Http2ServerConnection, encode_header_block


def _block(headers: list[tuple[str, str]]) -> bytes:
    return encode_header_block([(k.encode("latin-1"), v.encode("utf-8")) for k, v in headers])


#: The fixed header blocks, HPACK-encoded once (they never touch the
#: dynamic table, so the same bytes serve every call on every connection).
_RESPONSE_HEADERS = _block(response_headers())
_COMPRESSED_HEADERS = {e: _block(response_headers(e)) for e in ENCODINGS}
_OK_TRAILERS = _block(trailers(OK))
_OK_TRAILERS_ONLY = _block(trailers_only(OK))

#: Above this many buffered outbound bytes a stream's producer pauses.
HIGH_WATER = 1024 * 1024
#: How long a connection may stay silent before its first bytes.
SNIFF_TIMEOUT = 60.0
#: Our receive windows (the connection's and each stream's).
RECEIVE_WINDOW = 4 * 1024 * 1024


class IGrpcServer(TypingProtocol):
    def start(self, call: ServerCall) -> None: ...


class ServerCall:
    """
    One gRPC call on one HTTP/2 stream, as handlers see it.

    A handler sets L{on_message} (each decoded request message, as bytes),
    L{on_end} (the client half-closed) and L{on_cancel} (the client reset
    the stream, the deadline passed or the connection went away), then
    answers with L{send} and ends with L{finish}.

    @ivar head: the parsed request headers.
    @ivar on_drain: called once when the outbound buffer, above
        L{HIGH_WATER}, drains below it; cleared before the call.
    @ivar on_finish: called once when the call ends (finished, reset or
        cancelled), for the request metrics.
    """

    def __init__(self, connection: GrpcConnection, stream_id: int, head: CallHead) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.head = head
        self._decoder = MessageDecoder(encoding=head.encoding)
        self._compress = head.response_encoding
        self._outbound = bytearray()
        self._trailers: Optional[bytes] = None
        self._headers_sent = False
        self.finished = False
        self.client_done = False
        self.on_message: Callable[[bytes], None] = lambda message: None
        self.on_end: Callable[[], None] = lambda: None
        self.on_cancel: Callable[[], None] = lambda: None
        self.on_drain: Optional[Callable[[], None]] = None
        self.on_finish: Optional[Callable[[], None]] = None
        self._deadline: Any = None

    @property
    def buffered(self) -> int:
        """
        Outbound bytes not yet taken by the peer's flow-control window.
        """
        return len(self._outbound)

    @property
    def writable(self) -> bool:
        return not self.finished and len(self._outbound) < HIGH_WATER

    def send(self, message: Any, flush: bool = True) -> None:
        """
        Send one response message (a protobuf message).

        @param flush: hand the bytes to HTTP/2 now; a producer sending many
            messages at once passes C{False} and calls L{flush} after them.
        """
        if self.finished:
            return
        payload = message.SerializeToString()
        if self._compress != "identity" and len(payload) >= COMPRESS_FROM:
            self._outbound += encode_message(payload, self._compress)
        else:
            self._outbound += encode_message(payload)
        if flush:
            self._connection.flush_stream(self)

    def flush(self) -> None:
        """
        Hand the buffered messages to HTTP/2 (as far as the windows allow).
        """
        if not self.finished:
            self._connection.flush_stream(self)

    def finish(self, status: GrpcStatus = OK) -> None:
        """
        End the call: once the buffered messages went out, the trailers.
        """
        if self.finished:
            return
        self.finished = True
        self._cancel_deadline()
        self._report_finish()
        if not self._headers_sent and not self._outbound:
            self._headers_sent = True
            self._connection.send_trailers_only(self.stream_id, status)
            return
        self._trailers = _OK_TRAILERS if status == OK else _block(trailers(status))
        self._connection.flush_stream(self)

    # -- called by the connection -------------------------------------------

    def _data(self, data: bytes) -> None:
        if self.finished or self.client_done:
            return
        try:
            messages = self._decoder.feed(data)
        except FramingError as e:
            self._fail(GrpcStatus(StatusCode.INVALID_ARGUMENT, str(e)))
            return
        for message in messages:
            if self.finished:
                return
            try:
                self.on_message(message)
            except GrpcStatus as status:
                self._fail(status)
            except Exception:
                GrpcConnection._log.failure("A gRPC handler failed on a message")
                self._fail(GrpcStatus(StatusCode.UNKNOWN, "Exception was thrown by handler."))

    def _ended(self) -> None:
        if self.finished or self.client_done:
            return
        self.client_done = True
        try:
            self._decoder.finish()
        except FramingError as e:
            self._fail(GrpcStatus(StatusCode.INVALID_ARGUMENT, str(e)))
            return
        try:
            self.on_end()
        except GrpcStatus as status:
            self._fail(status)
        except Exception:
            GrpcConnection._log.failure("A gRPC handler failed at the end of its requests")
            self._fail(GrpcStatus(StatusCode.UNKNOWN, "Exception was thrown by handler."))

    def _fail(self, status: GrpcStatus) -> None:
        if not self.finished:
            self.finish(status)
            self._cancelled()

    def _cancelled(self) -> None:
        self._cancel_deadline()
        cancel, self.on_cancel = self.on_cancel, lambda: None
        self.on_message = lambda message: None
        self.on_drain = None
        try:
            cancel()
        except Exception:
            GrpcConnection._log.failure("A gRPC handler failed to cancel")

    def _report_finish(self) -> None:
        report, self.on_finish = self.on_finish, None
        if report is not None:
            try:
                report()
            except Exception:
                GrpcConnection._log.failure("A gRPC call's finish report failed")

    def _reset(self) -> None:
        self._report_finish()
        self.finished = True
        self._outbound.clear()
        self._trailers = None
        self._cancelled()

    def _start_deadline(self, clock: IReactorTime) -> None:
        if self.head.timeout is not None:
            self._deadline = clock.callLater(self.head.timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self.finished:
            self.finish(GrpcStatus(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
            self._cancelled()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class GrpcConnection(Protocol):
    """
    One HTTP/2 connection serving gRPC calls (over L{Http2ServerConnection}).
    """

    _log = Logger()

    def __init__(self, server: IGrpcServer, clock: IReactorTime) -> None:
        self._server = server
        self._clock = clock
        self._conn = Http2ServerConnection(self, RECEIVE_WINDOW, max_concurrent=1000)
        self._calls: dict[int, ServerCall] = {}
        self._closed = False
        self._write_pending = False

    def connectionMade(self) -> None:
        # Small frames go out at once (Nagle would hold a response behind
        # the WINDOW_UPDATE written for its request).
        transport: Any = self.transport
        for _ in range(4):
            set_no_delay = getattr(transport, "setTcpNoDelay", None)
            if set_no_delay is not None:
                set_no_delay(True)
                break
            transport = getattr(transport, "transport", None)
        self._conn.initiate()
        self._write_now()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._conn.receive(data)
        except Http2ConnectionError as e:
            self._log.info("HTTP/2 protocol error from a gRPC peer: {error}", error=str(e))
            self._write_now()
            self._close()
            return
        if self._conn.closed:
            self._write_now()
            self._close()
        else:
            self._write()

    def _close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.loseConnection()

    # -- IHttp2Handler --------------------------------------------------------

    def request(self, stream_id: int, raw: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self._request(stream_id, raw)
        if end_stream:
            self.ended(stream_id)

    def data(self, stream_id: int, data: bytes) -> None:
        call = self._calls.get(stream_id)
        if call is not None:
            call._data(data)

    def ended(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is not None:
            call._ended()

    def reset(self, stream_id: int) -> None:
        call = self._calls.pop(stream_id, None)
        if call is not None:
            call._reset()

    def window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            self._flush_waiting()
        else:
            call = self._calls.get(stream_id)
            if call is not None and call._outbound:
                self.flush_stream(call, write=False)

    def gone_away(self) -> None:
        pass

    def _flush_waiting(self) -> None:
        """
        A window opened: send for the calls whose bytes wait for it (most
        open calls wait for the store and have nothing to send).
        """
        for call in [c for c in self._calls.values() if c._outbound]:
            self.flush_stream(call, write=False)

    def _request(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        if not is_grpc_request(headers):
            body = (
                b"This HTTP/2 endpoint serves the gRPC API only; "
                b"use HTTP/1.1 for the HTTP API.\n"
            )
            conn = self._conn
            if conn.send_headers(stream_id, encode_header_block(
                    [(b":status", b"415"), (b"content-type", b"text/plain"),
                     (b"content-length", str(len(body)).encode())])):
                if conn.window(stream_id) >= len(body):
                    conn.send_data(stream_id, body, end_stream=True)
                else:
                    conn.send_data(stream_id, b"", end_stream=True)
            return
        try:
            head = parse_call_head(headers)
        except GrpcStatus as status:
            self.send_trailers_only(stream_id, status, write=False)
            return
        call = ServerCall(self, stream_id, head)
        self._calls[stream_id] = call
        call._start_deadline(self._clock)
        try:
            self._server.start(call)
        except GrpcStatus as status:
            call._fail(status)
        except Exception:
            self._log.failure("A gRPC handler failed to start")
            call._fail(GrpcStatus(StatusCode.UNKNOWN, "Exception was thrown by handler."))

    def send_trailers_only(self, stream_id: int, status: GrpcStatus, write: bool = True) -> None:
        self._calls.pop(stream_id, None)
        block = _OK_TRAILERS_ONLY if status == OK else _block(trailers_only(status))
        self._conn.send_headers(stream_id, block, end_stream=True)
        if write:
            self._write()

    def flush_stream(self, call: ServerCall, write: bool = True) -> None:
        """
        Send what the peer's windows allow of C{call}'s buffer, then its
        trailers once the buffer is empty.
        """
        if self._closed or self._calls.get(call.stream_id) is not call:
            return
        conn = self._conn
        sid = call.stream_id
        was_high = len(call._outbound) >= HIGH_WATER
        if not call._headers_sent:
            call._headers_sent = True
            conn.send_headers(sid, _RESPONSE_HEADERS if call._compress == "identity"
                              else _COMPRESSED_HEADERS[call._compress])
        out = call._outbound
        while out:
            window = min(conn.window(sid), conn.max_frame_size)
            if window <= 0:
                break
            if window >= len(out):
                chunk = bytes(out)
                out.clear()
            else:
                chunk = bytes(out[:window])
                del out[:window]
            if not conn.send_data(sid, chunk):
                break
        if sid not in conn.streams:
            # The peer reset or closed the stream while we were busy.
            self._calls.pop(sid, None)
            call._reset()
        elif not out and call._trailers is not None:
            conn.send_headers(sid, call._trailers, end_stream=True)
            call._trailers = None
            del self._calls[sid]
        if write:
            self._write()
        if was_high and len(call._outbound) < HIGH_WATER and call.on_drain is not None:
            drain, call.on_drain = call.on_drain, None
            drain()

    def _write(self) -> None:
        """
        Write what the connection queued, once per reactor turn: many calls
        finishing in one turn (a group commit) share one transport write.
        """
        if not self._write_pending:
            self._write_pending = True
            self._clock.callLater(0, self._write_now)

    def _write_now(self) -> None:
        self._write_pending = False
        data = self._conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call._reset()


class SniffingProtocol(Protocol):
    """
    Decide from the first bytes whether a connection speaks HTTP/2 (the
    client preface: gRPC) or anything else (the HTTP/1.1 site), then hand
    the connection over and forward everything to the chosen protocol.
    """

    def __init__(self, factory: GrpcSniffingFactory, addr: Any) -> None:
        self._factory = factory
        self._addr = addr
        self._buffer = b""
        self._inner: Optional[Protocol] = None
        self._timer: Any = None

    def connectionMade(self) -> None:
        self._timer = self._factory.clock.callLater(SNIFF_TIMEOUT, self._silent)

    def _silent(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        self._buffer += data
        buffer = self._buffer
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if buffer.startswith(PREFACE):
            inner: Protocol = GrpcConnection(self._factory.server, self._factory.clock)
            inner.factory = self._factory
        else:
            built = self._factory.http.buildProtocol(self._addr)
            if built is None:
                assert self.transport is not None
                self.transport.loseConnection()
                return
            inner = built
        self._inner = inner
        self._buffer = b""
        inner.makeConnection(self.transport)
        inner.dataReceived(buffer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._inner is not None:
            self._inner.connectionLost(reason)


@implementer(IProtocolNegotiationFactory)
class GrpcSniffingFactory(Factory):
    """
    The HTTP port's factory: gRPC over HTTP/2 beside C{http}, the HTTP/1.1
    site.

    @param server: starts each call (L{estwisted.grpc.services.GrpcServer}).
    @param http: the site's factory.
    """

    noisy = False

    def __init__(self, server: IGrpcServer, http: Any, clock: IReactorTime) -> None:
        self.server = server
        self.http = http
        self.clock = clock

    def acceptableProtocols(self) -> list[bytes]:
        """
        ALPN: HTTP/1.1 for clients that offer it, HTTP/2 for the rest.
        """
        return [b"http/1.1", b"h2"]

    def doStart(self) -> None:
        self.http.doStart()

    def doStop(self) -> None:
        self.http.doStop()

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = SniffingProtocol(self, addr)
        protocol.factory = self
        return protocol
