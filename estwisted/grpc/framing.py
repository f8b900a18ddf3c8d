# -*- test-case-name: estwisted.grpc.test.test_framing -*-
"""
gRPC over HTTP/2, the parts that know no socket and no reactor.

A gRPC message on an HTTP/2 stream is a 5-byte prefix (one compressed-flag
byte, then the big-endian uint32 length) followed by the serialized
protobuf.  A call ends with trailers carrying C{grpc-status} and, on
failure, a percent-encoded C{grpc-message} plus any metadata (EventStoreDB
puts an C{exception} key there).  C{grpc-timeout} is a number of at most 8
digits and a unit letter.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Optional

from attrs import field, frozen

#: The largest message a client may send (EventStoreDB's default maximum
#: append size is 1 MiB of events; leave room for framing and metadata).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024

_PREFIX = struct.Struct(">BI")
PREFIX_SIZE = _PREFIX.size


class StatusCode(enum.IntEnum):
    """
    The canonical gRPC status codes.
    """

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def _pairs(items: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in items)


@frozen
class GrpcStatus(Exception):
    """
    How a call ends: a status code, a message and trailing metadata (as
    C{(key, value)} pairs, lower-case keys).  Raised by handlers to end a
    call with an error.
    """

    code: StatusCode
    message: str = ""
    metadata: tuple[tuple[str, str], ...] = field(default=(), converter=_pairs)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


OK = GrpcStatus(StatusCode.OK)


class FramingError(Exception):
    """
    The bytes of a request stream are not a valid gRPC message sequence.
    """


#: The message encodings we decode, as C{grpc-accept-encoding} lists them.
ENCODINGS = ("identity", "deflate", "gzip")
ACCEPT_ENCODING = ",".join(ENCODINGS)
#: Responses to a compressing client are compressed from this size up
#: (smaller messages gain nothing).
COMPRESS_FROM = 256


def compress(payload: bytes, encoding: str) -> bytes:
    """
    C{payload} compressed as C{grpc-encoding} C{encoding} (C{gzip}: RFC 1952;
    C{deflate}: the zlib format of RFC 1950, as gRPC means it).
    """
    if encoding == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return c.compress(payload) + c.flush()


def decompress(data: bytes, encoding: str, max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """
    The inverse of L{compress}, refusing output above C{max_size} bytes
    (a small message may not inflate into a huge one).

    @raise FramingError: not valid C{encoding} data, or too large.
    """
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, max_size + 1)
    except zlib.error as e:
        raise FramingError(f"bad {encoding} message: {e}") from None
    if len(out) > max_size:
        raise FramingError(f"message inflates to more than {max_size} bytes")
    if not d.eof or d.unused_data:
        raise FramingError(f"bad {encoding} message: truncated or trailing bytes")
    return out


def encode_message(payload: bytes, encoding: str = "identity") -> bytes:
    """
    Frame one serialized message, compressed when C{encoding} is not
    C{identity}.
    """
    if encoding == "identity":
        return _PREFIX.pack(0, len(payload)) + payload
    data = compress(payload, encoding)
    return _PREFIX.pack(1, len(data)) + data


class MessageDecoder:
    """
    Split the DATA of one request stream into messages.

    @param max_size: a longer message (compressed or not) is refused with
        L{FramingError} before it is buffered.
    @param encoding: the call's C{grpc-encoding}: messages flagged
        compressed are decompressed with it.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE, encoding: str = "identity") -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._encoding = encoding

    @property
    def pending(self) -> int:
        """
        Bytes held of an incomplete message.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add bytes; return every message now complete, in order.

        @raise FramingError: a compressed message on a call without an
            encoding, a message that does not decompress, or one above the
            size limit.
        """
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= PREFIX_SIZE:
            flag, length = _PREFIX.unpack_from(buffer, offset)
            if flag not in (0, 1):
                raise FramingError(f"bad compressed flag {flag}")
            if flag == 1 and self._encoding == "identity":
                raise FramingError("compressed message, but no grpc-encoding was given")
            if length > self._max_size:
                raise FramingError(f"message of {length} bytes is over {self._max_size}")
            end = offset + PREFIX_SIZE + length
            if len(buffer) < end:
                break
            message = bytes(buffer[offset + PREFIX_SIZE : end])
            if flag == 1:
                message = decompress(message, self._encoding, self._max_size)
            out.append(message)
            offset = end
        if offset:
            del buffer[:offset]
        return out

    def finish(self) -> None:
        """
        The client ended its stream.

        @raise FramingError: a message was cut short.
        """
        if self._buffer:
            raise FramingError(f"stream ended inside a message ({len(self._buffer)} bytes)")


_TIMEOUT_UNITS = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


def parse_timeout(value: str) -> Optional[float]:
    """
    Seconds of a C{grpc-timeout} header value, C{None} when it is malformed.
    """
    if not 2 <= len(value) <= 9:
        return None
    digits, unit = value[:-1], value[-1]
    if not digits.isascii() or not digits.isdigit() or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


def format_timeout(seconds: float) -> str:
    """
    A C{grpc-timeout} value for C{seconds} (milliseconds, rounded up).
    """
    ms = max(0, int(-(-seconds * 1000 // 1)))
    if ms < 10**8:
        return f"{ms}m"
    return f"{min(-(-ms // 1000), 10**8 - 1)}S"


_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> str:
    """
    C{grpc-message} encoding: printable ASCII except C{%} as is, every
    other UTF-8 byte as C{%XX}.
    """
    return "".join(
        chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in message.encode("utf-8")
    )


def percent_decode(value: str) -> str:
    """
    The inverse of L{percent_encode}; bad escapes are kept as they are.
    """
    raw = value.encode("utf-8", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


def _clean_metadata_value(value: str) -> str:
    # Header values may not hold CR, LF or NUL; metadata comes from names
    # clients chose (stream names), so replace what HTTP/2 forbids.
    return "".join(" " if c in "\r\n\x00" else c for c in value)


def response_headers(encoding: str = "identity") -> list[tuple[str, str]]:
    """
    The headers that start every response (C{encoding}: how its messages
    are compressed).
    """
    out = [(":status", "200"), ("content-type", "application/grpc"),
           ("grpc-accept-encoding", ACCEPT_ENCODING)]
    if encoding != "identity":
        out.append(("grpc-encoding", encoding))
    return out


def trailers(status: GrpcStatus) -> list[tuple[str, str]]:
    """
    The trailers that end a call with C{status}.
    """
    out = [("grpc-status", str(int(status.code)))]
    if status.message:
        out.append(("grpc-message", percent_encode(status.message)))
    for key, value in status.metadata:
        out.append((key.lower(), _clean_metadata_value(value)))
    return out


def trailers_only(status: GrpcStatus) -> list[tuple[str, str]]:
    """
    A response with no message: the headers and trailers in one block.
    """
    return response_headers() + trailers(status)


@frozen
class CallHead:
    """
    The request headers of a call that matter to the server.

    @ivar service: e.g. C{event_store.client.streams.Streams}.
    @ivar method: e.g. C{Read}.
    @ivar timeout: seconds from C{grpc-timeout}, C{None} without one.
    @ivar metadata: the other headers, lower-case keys.
    @ivar encoding: the request messages' C{grpc-encoding}.
    @ivar response_encoding: how to compress response messages: the
        request's encoding when the client also accepts it
        (C{grpc-accept-encoding}), else C{identity}.
    """

    service: str
    method: str
    timeout: Optional[float]
    metadata: dict[str, str]
    encoding: str = "identity"
    response_encoding: str = "identity"

    def get(self, key: str, default: str = "") -> str:
        return self.metadata.get(key, default)


def parse_call_head(headers: Iterable[tuple[str, str]]) -> CallHead:
    """
    Check the request headers of a gRPC call.

    @raise GrpcStatus: C{UNIMPLEMENTED} for a path that is not
        C{/service/method}, C{INVALID_ARGUMENT} for a bad content type,
        method or timeout.
    """
    pseudo: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for key, value in headers:
        if key.startswith(":"):
            pseudo[key] = value
        else:
            metadata[key.lower()] = value
    if pseudo.get(":method") != "POST":
        raise GrpcStatus(StatusCode.INVALID_ARGUMENT, "gRPC calls are POST requests")
    content_type = metadata.get("content-type", "")
    if not (content_type == "application/grpc" or content_type.startswith("application/grpc+")
            or content_type.startswith("application/grpc;")):
        raise GrpcStatus(StatusCode.INVALID_ARGUMENT, f"bad content-type {content_type!r}")
    encoding = metadata.get("grpc-encoding", "identity").strip().lower()
    if encoding not in ENCODINGS:
        raise GrpcStatus(
            StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding!r} is not supported",
            (("grpc-accept-encoding", ACCEPT_ENCODING),),
        )
    accepted = {e.strip().lower() for e in metadata.get("grpc-accept-encoding", "").split(",")}
    response_encoding = encoding if encoding in accepted else "identity"
    path = pseudo.get(":path", "")
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "" or not parts[1] or not parts[2]:
        raise GrpcStatus(StatusCode.UNIMPLEMENTED, f"no method at path {path!r}")
    timeout: Optional[float] = None
    if "grpc-timeout" in metadata:
        timeout = parse_timeout(metadata["grpc-timeout"])
        if timeout is None:
            raise GrpcStatus(
                StatusCode.INVALID_ARGUMENT, f"bad grpc-timeout {metadata['grpc-timeout']!r}"
            )
    return CallHead(parts[1], parts[2], timeout, metadata, encoding, response_encoding)


def is_grpc_request(headers: Sequence[tuple[str, str]]) -> bool:
    """
    Whether an HTTP/2 request is a gRPC call (by its content type).
    """
    for key, value in headers:
        if key == "content-type":
            return value.startswith("application/grpc")
    return False
