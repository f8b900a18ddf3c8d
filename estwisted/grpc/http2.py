# -*- test-case-name: estwisted.grpc.test.test_http2 -*-
"""
A lean sans-IO HTTP/2 server connection (RFC 9113) for gRPC: what a gRPC
server needs and nothing more, with no per-frame event objects.

C{h2} (the general HTTP/2 state machine) cost ~250 µs of CPU per small
gRPC call on this machine; this layer parses frames with one C{struct}
call each and calls its L{IHttp2Handler} directly.

  - Inbound: the client preface, C{SETTINGS} (acknowledged), C{PING}
    (answered), C{HEADERS} + C{CONTINUATION} (decoded by C{hpack}),
    C{DATA} (flow-controlled; our windows are replenished once a quarter
    of them is consumed, not per frame), C{WINDOW_UPDATE}, C{RST_STREAM},
    C{PRIORITY} (ignored), C{GOAWAY}, unknown types (ignored).
  - Outbound header blocks never touch the HPACK dynamic table: each
    field is a static-table index or a literal without indexing
    (L{encode_header_block}), so constant blocks are encoded once and
    reused on every call.  A peer lowering C{SETTINGS_HEADER_TABLE_SIZE}
    gets the dynamic table size update its decoder expects.
  - A connection error queues C{GOAWAY} and raises L{ConnectionError}; a
    stream error sends C{RST_STREAM} and tells the handler.

The caller writes L{Http2ServerConnection.data_to_send} to its transport.
"""

from __future__ import annotations

import struct
from typing import Optional
from typing import Protocol as TypingProtocol

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 5, 6, 7, 8
COMPRESSION_ERROR = 9

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 1, 2, 3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 4, 5, 6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
#: The largest request header list we decode.
MAX_HEADER_LIST = 64 * 1024

_FRAME = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


class ConnectionError(Exception):  # noqa: A001 (HTTP/2's own term)
    """
    The peer broke the protocol; C{GOAWAY} is queued, close the connection.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class IHttp2Handler(TypingProtocol):
    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                end_stream: bool) -> None: ...

    def data(self, stream_id: int, data: bytes) -> None: ...

    def ended(self, stream_id: int) -> None: ...

    def reset(self, stream_id: int) -> None: ...

    def window_opened(self, stream_id: int) -> None: ...

    def gone_away(self) -> None: ...


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """
    One frame's bytes.
    """
    return _FRAME.pack(len(payload) << 8 | kind, flags, stream_id) + payload


# -- HPACK without the dynamic table -------------------------------------------------

#: RFC 7541 Appendix A: the static table entries we may index.
_STATIC: dict[tuple[bytes, bytes], int] = {
    (b":method", b"GET"): 2,
    (b":method", b"POST"): 3,
    (b":path", b"/"): 4,
    (b":scheme", b"http"): 6,
    (b":scheme", b"https"): 7,
    (b":status", b"200"): 8,
    (b":status", b"204"): 9,
    (b":status", b"206"): 10,
    (b":status", b"304"): 11,
    (b":status", b"400"): 12,
    (b":status", b"404"): 13,
    (b":status", b"500"): 14,
}
_STATIC_NAMES: dict[bytes, int] = {
    b":status": 8,
    b"content-length": 28,
    b"content-type": 31,
}


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """
    RFC 7541 5.1: C{value} with an C{prefix_bits}-bit prefix, the high bits
    of the first byte taken from C{first}.
    """
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    return encode_integer(len(value), 7) + value


def encode_header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """
    An HPACK block that leaves both dynamic tables as they are: static
    indices where the static table has the field, literals without
    indexing (no Huffman) for the rest.
    """
    out = bytearray()
    for name, value in headers:
        index = _STATIC.get((name, value))
        if index is not None:
            out.append(0x80 | index)
            continue
        name_index = _STATIC_NAMES.get(name)
        if name_index is not None:
            out += encode_integer(name_index, 4)
        else:
            out.append(0)
            out += _string(name)
        out += _string(value)
    return bytes(out)


class HpackError(Exception):
    """
    A request header block that does not decode.
    """


_STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_COUNT = len(_STATIC_TABLE)


class HeaderDecoder:
    """
    RFC 7541 decoding of request header blocks, with the decoder's dynamic
    table (C{hpack}'s own decoder logs at debug level per field and costs
    several times more).

    @param max_table_size: our C{SETTINGS_HEADER_TABLE_SIZE}.
    @param max_list_size: the largest decoded header list (RFC 7541 size
        accounting) accepted.
    """

    def __init__(self, max_table_size: int = 4096, max_list_size: int = MAX_HEADER_LIST) -> None:
        self._max_allowed = max_table_size
        self._max_size = max_table_size
        self._size = 0
        # Newest first: index _STATIC_COUNT + 1 is entries[0].
        self._entries: list[tuple[bytes, bytes]] = []
        self._max_list = max_list_size

    def _integer(self, data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            if pos >= len(data):
                raise HpackError("integer cut short")
            byte = data[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos
            if shift > 28:
                raise HpackError("integer too large")

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(data):
            raise HpackError("string cut short")
        huffman = data[pos] & 0x80
        length, pos = self._integer(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HpackError("string cut short")
        raw = data[pos:end]
        if huffman:
            try:
                raw = decode_huffman(raw)
            except Exception as e:
                raise HpackError(f"bad Huffman string: {e}") from None
        return raw, end

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if index <= 0 or dynamic >= len(self._entries):
            raise HpackError(f"no header table entry {index}")
        return self._entries[dynamic]

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        entries = self._entries
        if size > self._max_size:
            entries.clear()
            self._size = 0
            return
        entries.insert(0, (name, value))
        self._size += size
        self._shrink()

    def _shrink(self) -> None:
        entries = self._entries
        while self._size > self._max_size:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + 32

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """
        The header list of one block.

        @raise HpackError: malformed, or a list over the size limit.
        """
        out: list[tuple[bytes, bytes]] = []
        pos = 0
        end = len(data)
        total = 0
        fields = False
        while pos < end:
            first = data[pos]
            if first & 0x80:
                index, pos = self._integer(data, pos, 7)
                header = self._lookup(index)
            elif first & 0xE0 == 0x20:
                if fields:
                    raise HpackError("table size update after a header field")
                size, pos = self._integer(data, pos, 5)
                if size > self._max_allowed:
                    raise HpackError(f"table size {size} over {self._max_allowed}")
                self._max_size = size
                self._shrink()
                continue
            else:
                indexing = first & 0x40
                index, pos = self._integer(data, pos, 6 if indexing else 4)
                if index:
                    name = self._lookup(index)[0]
                else:
                    name, pos = self._string(data, pos)
                value, pos = self._string(data, pos)
                header = (name, value)
                if indexing:
                    self._add(name, value)
            fields = True
            total += len(header[0]) + len(header[1]) + 32
            if total > self._max_list:
                raise HpackError("header list too large")
            out.append(header)
        return out


class _Stream:
    __slots__ = ("send_window", "unacked", "remote_closed", "local_closed")

    def __init__(self, send_window: int) -> None:
        self.send_window = send_window
        self.unacked = 0
        self.remote_closed = False
        self.local_closed = False


class Http2ServerConnection:
    """
    The server side of one HTTP/2 connection.

    @param handler: told of requests, their data and ends, resets and
        opened windows.
    @param receive_window: our connection and stream receive windows.
    @param max_concurrent: streams the client may have open at once.
    """

    def __init__(self, handler: IHttp2Handler, receive_window: int = DEFAULT_WINDOW,
                 max_concurrent: int = 100) -> None:
        self._handler = handler
        self._out = bytearray()
        self._in = bytearray()
        self._preface_seen = False
        self._receive_window = receive_window
        self._max_concurrent = max_concurrent
        self._decoder = HeaderDecoder()
        self.streams: dict[int, _Stream] = {}
        self._highest = 0
        #: The peer's settings that matter when we send.
        self.send_window = DEFAULT_WINDOW
        self._initial_send_window = DEFAULT_WINDOW
        self.max_frame_size = DEFAULT_FRAME_SIZE
        self._conn_unacked = 0
        self._table_size_update: Optional[int] = None
        self._encoder_table_size = 4096
        # The header block being received: (stream id, END_STREAM, fragments).
        self._continuing: Optional[tuple[int, bool, bytearray]] = None
        self.closed = False

    # -- outbound ---------------------------------------------------------------

    def initiate(self) -> None:
        """
        Queue our preface: C{SETTINGS} and the connection window.
        """
        settings = (
            _SETTING.pack(S_MAX_CONCURRENT_STREAMS, self._max_concurrent)
            + _SETTING.pack(S_INITIAL_WINDOW_SIZE, self._receive_window)
            + _SETTING.pack(S_ENABLE_PUSH, 0)
        )
        self._out += frame(SETTINGS, 0, 0, settings)
        if self._receive_window > DEFAULT_WINDOW:
            self._out += frame(
                WINDOW_UPDATE, 0, 0, _U32.pack(self._receive_window - DEFAULT_WINDOW)
            )

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def window(self, stream_id: int) -> int:
        """
        How many DATA bytes C{stream_id} may send now (0 when it cannot).
        """
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        return max(0, min(self.send_window, stream.send_window))

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> bool:
        """
        Send an encoded header block (L{encode_header_block}).

        @return: C{False} when the stream is gone (reset or closed).
        """
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed or self.closed:
            return False
        if self._table_size_update is not None:
            block = encode_integer(self._table_size_update, 5, 0x20) + block
            self._table_size_update = None
        out = self._out
        size = self.max_frame_size
        flags = END_STREAM if end_stream else 0
        if len(block) <= size:
            out += _FRAME.pack(len(block) << 8 | HEADERS, flags | END_HEADERS, stream_id)
            out += block
        else:
            chunks = [block[i : i + size] for i in range(0, len(block), size)]
            for i, chunk in enumerate(chunks):
                last = END_HEADERS if i == len(chunks) - 1 else 0
                if i == 0:
                    out += frame(HEADERS, flags | last, stream_id, chunk)
                else:
                    out += frame(CONTINUATION, last, stream_id, chunk)
        if end_stream:
            self._local_end(stream_id, stream)
        return True

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        """
        Send C{data} (at most L{window} and L{max_frame_size} bytes).
        """
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed or self.closed:
            return False
        length = len(data)
        assert length <= self.max_frame_size and length <= min(self.send_window,
                                                                stream.send_window)
        stream.send_window -= length
        self.send_window -= length
        self._out += _FRAME.pack(length << 8 | DATA, END_STREAM if end_stream else 0, stream_id)
        self._out += data
        if end_stream:
            self._local_end(stream_id, stream)
        return True

    def reset_stream(self, stream_id: int, code: int = CANCEL) -> None:
        if self.streams.pop(stream_id, None) is not None:
            self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(code))

    def close(self, code: int = NO_ERROR, reason: str = "") -> None:
        """
        Queue C{GOAWAY}; nothing is sent after it.
        """
        if not self.closed:
            self.closed = True
            self._out += frame(
                GOAWAY, 0, 0,
                _U32.pack(self._highest) + _U32.pack(code) + reason.encode("utf-8")[:256],
            )

    def _local_end(self, stream_id: int, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream_id]

    # -- inbound ----------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """
        Take bytes from the peer and tell the handler what they mean.

        @raise ConnectionError: the peer broke the protocol (C{GOAWAY} is
            queued).
        """
        if self.closed:
            return
        buffer = self._in
        buffer += data
        offset = 0
        if not self._preface_seen:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    self._fail(PROTOCOL_ERROR, "no HTTP/2 client preface")
                return
            if not buffer.startswith(PREFACE):
                self._fail(PROTOCOL_ERROR, "no HTTP/2 client preface")
            self._preface_seen = True
            offset = len(PREFACE)
        end = len(buffer)
        unpack = _FRAME.unpack_from
        try:
            while end - offset >= 9:
                word, flags, stream_id = unpack(buffer, offset)
                length = word >> 8
                if length > DEFAULT_FRAME_SIZE:
                    self._fail(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if end - offset - 9 < length:
                    break
                start = offset + 9
                offset = start + length
                self._frame(word & 0xFF, flags, stream_id & MAX_WINDOW,
                            bytes(buffer[start:offset]))
                if self.closed:
                    break
        finally:
            del buffer[:offset]

    def _fail(self, code: int, reason: str) -> None:
        self.close(code, reason)
        raise ConnectionError(code, reason)

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and kind != CONTINUATION:
            self._fail(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                self._fail(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self._out += frame(PING, ACK, 0, payload)
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                self._fail(FRAME_SIZE_ERROR if stream_id else PROTOCOL_ERROR, "bad RST_STREAM")
            if stream_id > self._highest:
                self._fail(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            if self.streams.pop(stream_id, None) is not None:
                self._handler.reset(stream_id)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == PRIORITY:
            if not stream_id or len(payload) != 5:
                self._fail(FRAME_SIZE_ERROR if stream_id else PROTOCOL_ERROR, "bad PRIORITY")
        elif kind == GOAWAY:
            if stream_id or len(payload) < 8:
                self._fail(PROTOCOL_ERROR, "bad GOAWAY")
            self.closed = True
            self._handler.gone_away()
        elif kind == PUSH_PROMISE:
            self._fail(PROTOCOL_ERROR, "a client may not push")
        # Unknown frame types are ignored (RFC 9113 4.1).

    def _strip_padding(self, flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                self._fail(PROTOCOL_ERROR, "bad padding")
            return payload[1 : len(payload) - payload[0]]
        return payload

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._fail(PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self._conn_unacked += length
        if self._conn_unacked > self._receive_window:
            self._fail(FLOW_CONTROL_ERROR, "connection window exceeded")
        if self._conn_unacked >= self._receive_window // 4:
            self._out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_unacked))
            self._conn_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._highest:
                self._fail(PROTOCOL_ERROR, "DATA on an idle stream")
            if stream is not None:
                self.reset_stream(stream_id, STREAM_CLOSED)
                self._handler.reset(stream_id)
            else:
                self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(STREAM_CLOSED))
            return
        stream.unacked += length
        if stream.unacked > self._receive_window:
            self.reset_stream(stream_id, FLOW_CONTROL_ERROR)
            self._handler.reset(stream_id)
            return
        data = self._strip_padding(flags, payload)
        end = bool(flags & END_STREAM)
        if not end and stream.unacked >= self._receive_window // 4:
            self._out += frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.unacked))
            stream.unacked = 0
        if data:
            self._handler.data(stream_id, data)
        if end:
            self._remote_end(stream_id)

    def _remote_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.remote_closed = True
        if stream.local_closed:
            del self.streams[stream_id]
        self._handler.ended(stream_id)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._fail(PROTOCOL_ERROR, "HEADERS on stream 0")
        payload = self._strip_padding(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                self._fail(FRAME_SIZE_ERROR, "short HEADERS priority")
            payload = payload[5:]
        end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._header_block(stream_id, end_stream, payload)
        else:
            self._continuing = (stream_id, end_stream, bytearray(payload))

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is None or self._continuing[0] != stream_id:
            self._fail(PROTOCOL_ERROR, "unexpected CONTINUATION")
        assert self._continuing is not None
        block = self._continuing[2]
        block += payload
        if len(block) > MAX_HEADER_LIST * 2:
            self._fail(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            sid, end_stream, _ = self._continuing
            self._continuing = None
            self._header_block(sid, end_stream, bytes(block))

    def _header_block(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)
        except HpackError as e:
            self._fail(COMPRESSION_ERROR, f"bad header block: {e}")
        stream = self.streams.get(stream_id)
        if stream is not None:
            # Trailers: they must end the stream.
            if stream.remote_closed or not end_stream:
                self._fail(PROTOCOL_ERROR, "HEADERS on an open stream without END_STREAM")
            self._remote_end(stream_id)
            return
        if stream_id <= self._highest:
            self._fail(STREAM_CLOSED, "HEADERS on a closed stream")
        if not stream_id & 1:
            self._fail(PROTOCOL_ERROR, "a client stream id must be odd")
        self._highest = stream_id
        if len(self.streams) >= self._max_concurrent:
            self._out += frame(RST_STREAM, 0, stream_id, _U32.pack(REFUSED_STREAM))
            return
        stream = _Stream(self._initial_send_window)
        stream.remote_closed = end_stream
        self.streams[stream_id] = stream
        self._handler.request(stream_id, headers, end_stream)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = _U32.unpack(payload)[0] & MAX_WINDOW
        if not stream_id:
            if not increment:
                self._fail(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                self._fail(FLOW_CONTROL_ERROR, "connection window overflow")
            self._handler.window_opened(0)
            return
        if stream_id > self._highest:
            self._fail(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not increment or stream.send_window + increment > MAX_WINDOW:
            self.reset_stream(stream_id, PROTOCOL_ERROR if not increment else FLOW_CONTROL_ERROR)
            self._handler.reset(stream_id)
            return
        stream.send_window += increment
        self._handler.window_opened(stream_id)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._fail(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                self._fail(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self._fail(FRAME_SIZE_ERROR, "bad SETTINGS length")
        opened = False
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._fail(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._initial_send_window
                self._initial_send_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        self._fail(FLOW_CONTROL_ERROR, "stream window overflow")
                opened = opened or delta > 0
            elif key == S_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                    self._fail(PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self.max_frame_size = value
            elif key == S_ENABLE_PUSH:
                if value > 1:
                    self._fail(PROTOCOL_ERROR, "bad ENABLE_PUSH")
            elif key == S_HEADER_TABLE_SIZE:
                # Our blocks never insert; still tell the peer's decoder
                # we honour a smaller table.
                if value < self._encoder_table_size:
                    self._encoder_table_size = value
                    self._table_size_update = value
        self._out += frame(SETTINGS, ACK, 0)
        if opened:
            self._handler.window_opened(0)
