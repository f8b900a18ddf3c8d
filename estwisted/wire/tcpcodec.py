# -*- test-case-name: estwisted.wire.test.test_tcpcodec -*-
"""
Package codec of the Event Store TCP protocol (tcp-protocol.md sections 2-5)
and translation between its protobuf messages and the core model values.

Pure code: no reactor, no I/O.  The protocol in L{estwisted.tcp.server} feeds
packages from L{estwisted.wire.framing.Framer} to L{decode_package} and writes what
L{encode_package} / L{frame_package} return.

Conventions:
  - Correlation ids stay raw 16-byte strings in .NET order: they are only
    echoed back, never interpreted.
  - Event ids on the wire are .NET order; the model uses RFC 4122 order
    (L{net_to_rfc} / L{rfc_to_net}, the same byte permutation both ways).
  - Replies fill every C{required} field (proto2 clients insist); requests are
    parsed leniently (proto3 clients omit default values).
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Optional, cast

from attrs import frozen

from estwisted.core import errors
from estwisted.core.model import (
    DELETED_STREAM,
    DELETED_STREAM_V1,
    FLAG_JSON,
    UNIX_EPOCH_TICKS,
    AllSlice,
    EventRecord,
    NewEvent,
    ReadEventResult,
    ReadStatus,
    ResolvedEvent,
    StreamSlice,
    unix_ms_from_ticks,
)
from estwisted.wire import messages_pb2 as pb

#: Size of the mandatory package header: command, flags, correlation id.
HEADER_SIZE = 18

FLAG_NONE = 0x00
FLAG_AUTHENTICATED = 0x01
FLAG_TRUSTED_WRITE = 0x02

#: The correlation id of connection-level errors.
ZERO_CORRELATION = b"\x00" * 16

#: Client versions from C{IdentifyClient} (section 3.3).
CLIENT_V1 = 0
CLIENT_V2 = 1

#: int.MinValue, what v5 puts in number fields of failed writes.
INT_MIN = -2147483648


class TcpCommand(enum.IntEnum):
    """
    Command bytes (section 4).
    """

    HeartbeatRequestCommand = 0x01
    HeartbeatResponseCommand = 0x02
    Ping = 0x03
    Pong = 0x04
    PrepareAck = 0x05
    CommitAck = 0x06
    SlaveAssignment = 0x07
    CloneAssignment = 0x08
    SubscribeReplica = 0x10
    ReplicaLogPositionAck = 0x11
    CreateChunk = 0x12
    RawChunkBulk = 0x13
    DataChunkBulk = 0x14
    ReplicaSubscriptionRetry = 0x15
    ReplicaSubscribed = 0x16
    CreateStream = 0x80
    CreateStreamCompleted = 0x81
    WriteEvents = 0x82
    WriteEventsCompleted = 0x83
    TransactionStart = 0x84
    TransactionStartCompleted = 0x85
    TransactionWrite = 0x86
    TransactionWriteCompleted = 0x87
    TransactionCommit = 0x88
    TransactionCommitCompleted = 0x89
    DeleteStream = 0x8A
    DeleteStreamCompleted = 0x8B
    ReadEvent = 0xB0
    ReadEventCompleted = 0xB1
    ReadStreamEventsForward = 0xB2
    ReadStreamEventsForwardCompleted = 0xB3
    ReadStreamEventsBackward = 0xB4
    ReadStreamEventsBackwardCompleted = 0xB5
    ReadAllEventsForward = 0xB6
    ReadAllEventsForwardCompleted = 0xB7
    ReadAllEventsBackward = 0xB8
    ReadAllEventsBackwardCompleted = 0xB9
    SubscribeToStream = 0xC0
    SubscriptionConfirmation = 0xC1
    StreamEventAppeared = 0xC2
    UnsubscribeFromStream = 0xC3
    SubscriptionDropped = 0xC4
    ConnectToPersistentSubscription = 0xC5
    PersistentSubscriptionConfirmation = 0xC6
    PersistentSubscriptionStreamEventAppeared = 0xC7
    CreatePersistentSubscription = 0xC8
    CreatePersistentSubscriptionCompleted = 0xC9
    DeletePersistentSubscription = 0xCA
    DeletePersistentSubscriptionCompleted = 0xCB
    PersistentSubscriptionAckEvents = 0xCC
    PersistentSubscriptionNakEvents = 0xCD
    UpdatePersistentSubscription = 0xCE
    UpdatePersistentSubscriptionCompleted = 0xCF
    ScavengeDatabase = 0xD0
    ScavengeDatabaseResponse = 0xD1
    BadRequest = 0xF0
    NotHandled = 0xF1
    Authenticate = 0xF2
    Authenticated = 0xF3
    NotAuthenticated = 0xF4
    IdentifyClient = 0xF5
    ClientIdentified = 0xF6


def command_name(command: int) -> str:
    """
    The name of a command byte, or its hex value when unknown.
    """
    try:
        return TcpCommand(command).name
    except ValueError:
        return f"0x{command:02X}"


class PackageError(Exception):
    """
    A package is malformed at the package level (too short, bad auth block):
    a connection-level error.
    """


class PayloadError(Exception):
    """
    A payload could not be decoded or validated: the one request fails with
    C{BadRequest}, the connection stays open.
    """


@frozen
class TcpPackage:
    """
    One decoded package.

    @ivar correlation_id: 16 raw bytes, .NET order.
    @ivar login: from the auth block, C{None} when the package has none.
    """

    command: int
    flags: int
    correlation_id: bytes
    data: bytes
    login: Optional[str] = None
    password: Optional[str] = None


_HEADER = struct.Struct("<BB")
_FRAMED_HEADER = struct.Struct("<iBB")
_pack_framed_header = _FRAMED_HEADER.pack


def decode_package(package: bytes) -> TcpPackage:
    """
    Decode one package (the bytes of a frame without its length).

    @raise PackageError: shorter than the header, or a bad auth block.
    """
    size = len(package)
    if size < HEADER_SIZE:
        raise PackageError(f"Package too short: {size} bytes (the header alone is {HEADER_SIZE}).")
    command = package[0]
    flags = package[1]
    correlation_id = package[2:18]
    if not flags & FLAG_AUTHENTICATED:
        return TcpPackage(command, flags, correlation_id, package[18:])
    login, password, data = decode_credentials(package)
    return TcpPackage(command, flags, correlation_id, data, login, password)


def decode_credentials(package: bytes) -> tuple[str, str, bytes]:
    """
    The login, password and payload of a package (at least L{HEADER_SIZE}
    bytes) whose flags have L{FLAG_AUTHENTICATED}; the header itself is the
    caller's.

    @raise PackageError: a bad auth block.
    """
    size = len(package)
    if size < 19:
        raise PackageError("Login length is missing.")
    login_len = package[18]
    # v5's check: rejects the package when nothing follows the password length.
    if HEADER_SIZE + 1 + login_len + 1 >= size:
        raise PackageError("Login length is too big, it doesn't fit into TcpPackage.")
    password_len = package[19 + login_len]
    password_start = 20 + login_len
    if password_start + password_len > size:
        raise PackageError("Password length is too big, it doesn't fit into TcpPackage.")
    try:
        login = package[19 : 19 + login_len].decode("utf-8")
        password = package[password_start : password_start + password_len].decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageError(f"Credentials are not UTF-8: {e}") from e
    return login, password, package[password_start + password_len :]


def encode_package(
    command: int,
    correlation_id: bytes,
    data: bytes = b"",
    login: Optional[str] = None,
    password: Optional[str] = None,
    flags: int = FLAG_NONE,
) -> bytes:
    """
    Encode one package (without its frame length).  Giving C{login} (and
    C{password}) sets the authenticated flag and writes the auth block.

    @raise ValueError: a bad correlation id or over-long credentials.
    """
    if len(correlation_id) != 16:
        raise ValueError("correlation id must be 16 bytes")
    if login is None:
        return _HEADER.pack(command, flags) + correlation_id + data
    login_bytes = login.encode("utf-8")
    password_bytes = (password or "").encode("utf-8")
    if len(login_bytes) > 255 or len(password_bytes) > 255:
        raise ValueError("login and password must each encode to at most 255 bytes")
    return b"".join(
        (
            _HEADER.pack(command, flags | FLAG_AUTHENTICATED),
            correlation_id,
            bytes((len(login_bytes),)),
            login_bytes,
            bytes((len(password_bytes),)),
            password_bytes,
            data,
        )
    )


def frame_package(command: int, correlation_id: bytes, data: bytes = b"") -> bytes:
    """
    A whole frame (length prefix included) of an unauthenticated package:
    the server's replies.
    """
    return _pack_framed_header(HEADER_SIZE + len(data), command, 0) + correlation_id + data


_HEARTBEAT_RESPONSE_HEADER = _FRAMED_HEADER.pack(HEADER_SIZE, 0x02, 0)


def heartbeat_response(correlation_id: bytes) -> bytes:
    """
    The frame of a C{HeartbeatResponseCommand} answering C{correlation_id}.
    """
    return _HEARTBEAT_RESPONSE_HEADER + correlation_id


# -- GUIDs ------------------------------------------------------------------

#: A GUID as its .NET fields: Data1 (4 bytes), Data2, Data3 (2 each), Data4
#: (8).  Unpacking little-endian and packing big-endian turns the .NET byte
#: order into the RFC one.
_unpack_guid_le = struct.Struct("<IHH8s").unpack
_pack_guid_be = struct.Struct(">IHH8s").pack
_unpack_guid_be = struct.Struct(">IHH8s").unpack
_pack_guid_le = struct.Struct("<IHH8s").pack


def net_to_rfc(guid: bytes) -> bytes:
    """
    Convert a GUID from .NET byte order to RFC 4122 order.

    @raise PayloadError: not 16 bytes.
    """
    if len(guid) != 16:
        raise PayloadError(f"A GUID must be 16 bytes, got {len(guid)}.")
    return guid[3::-1] + guid[5:3:-1] + guid[7:5:-1] + guid[8:]


def rfc_to_net(guid: bytes) -> bytes:
    """
    Convert a GUID from RFC 4122 order to .NET byte order (the same
    permutation as L{net_to_rfc}).
    """
    return guid[3::-1] + guid[5:3:-1] + guid[7:5:-1] + guid[8:]


def uuid_from_net(guid: bytes) -> uuid.UUID:
    """
    A L{uuid.UUID} from 16 bytes in .NET order.
    """
    return uuid.UUID(bytes_le=bytes(guid))


def uuid_to_net(value: uuid.UUID) -> bytes:
    """
    16 bytes in .NET order from a L{uuid.UUID}.
    """
    return value.bytes_le


# -- requests ----------------------------------------------------------------


def parse(message_type: type, data: bytes):  # type: ignore[no-untyped-def]
    """
    Parse C{data} as C{message_type}, tolerating absent required fields.

    @raise PayloadError: the bytes are not a valid protobuf message.
    """
    message = message_type()
    try:
        message.ParseFromString(data)
    except Exception as e:  # DecodeError, and RuntimeError from some runtimes
        raise PayloadError(f"{message_type.__name__}: {e}") from e
    return message


def new_events_from_proto(events: Iterable[pb.NewEvent]) -> list[NewEvent]:
    """
    Model L{NewEvent}s from protobuf ones (the write hot path: one list
    comprehension, the GUID reordered by one C{struct} unpack/pack pair).

    @raise PayloadError: an event id is not 16 bytes.
    """
    try:
        return [
            NewEvent(
                _pack_guid_be(*_unpack_guid_le(e.event_id)),
                e.event_type,
                e.data,
                e.metadata,
                e.data_content_type == 1,
            )
            for e in events
        ]
    except struct.error:
        raise PayloadError("Event id must be 16 bytes.") from None


def new_event_to_proto(event: NewEvent, out: pb.NewEvent) -> None:
    """
    Fill a protobuf L{pb.NewEvent} from a model one (for clients and tests).
    """
    out.event_id = rfc_to_net(event.event_id)
    out.event_type = event.event_type
    out.data_content_type = 1 if event.is_json else 0
    out.metadata_content_type = 0
    out.data = event.data
    out.metadata = event.metadata


# -- replies -----------------------------------------------------------------


def downgrade_event_number(number: int) -> int:
    """
    What a V1 client is sent instead of a 64-bit event number.
    """
    if number == DELETED_STREAM:
        return DELETED_STREAM_V1
    return ((number + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def created_epoch_ms(created: int) -> int:
    """
    Unix milliseconds from .NET ticks (0 ticks, "unknown", gives 0).
    """
    if created <= 0:
        return 0
    return unix_ms_from_ticks(created)


def event_record_to_proto(record: EventRecord, out: pb.EventRecord, v1: bool = False) -> None:
    """
    Fill C{out} with every field of C{record}.

    @param v1: downgrade the event number for a V1 client.
    """
    event_id = record.event_id
    json_flag = 1 if record.flags & FLAG_JSON else 0
    created = record.created
    out.event_stream_id = record.stream
    out.event_number = downgrade_event_number(record.event_number) if v1 else record.event_number
    out.event_id = _pack_guid_le(*_unpack_guid_be(event_id))
    out.event_type = record.event_type
    out.data_content_type = json_flag
    out.metadata_content_type = json_flag
    out.data = record.data
    out.metadata = record.metadata
    out.created = created if created > 0 else UNIX_EPOCH_TICKS
    out.created_epoch = (created - UNIX_EPOCH_TICKS) // 10000 if created > 0 else 0


def event_record_from_proto(
    message: pb.EventRecord, position: int = -1, next_position: int = -1
) -> EventRecord:
    """
    A model L{EventRecord} from a protobuf one (for clients and tests).
    """
    return EventRecord(
        position=position,
        next_position=next_position,
        stream=message.event_stream_id,
        event_number=message.event_number,
        event_id=net_to_rfc(message.event_id),
        event_type=message.event_type,
        flags=FLAG_JSON if message.data_content_type == 1 else 0,
        data=message.data,
        metadata=message.metadata,
        created=message.created,
    )


def resolved_indexed_to_proto(
    resolved: ResolvedEvent, out: pb.ResolvedIndexedEvent, v1: bool = False
) -> None:
    """
    Fill a L{pb.ResolvedIndexedEvent}: C{event} is left absent for an
    unresolvable link.
    """
    if resolved.event is not None:
        event_record_to_proto(resolved.event, out.event, v1)
    if resolved.link is not None:
        event_record_to_proto(resolved.link, out.link, v1)


def resolved_event_to_proto(
    resolved: ResolvedEvent, out: pb.ResolvedEvent, v1: bool = False
) -> None:
    """
    Fill a L{pb.ResolvedEvent}; both positions are the original record's.
    """
    if resolved.event is not None:
        event_record_to_proto(resolved.event, out.event, v1)
    link = resolved.link
    if link is not None:
        event_record_to_proto(link, out.link, v1)
        position = link.position
    else:
        assert resolved.event is not None
        position = resolved.event.position
    out.commit_position = position
    out.prepare_position = position


def resolved_event_from_proto(message: pb.ResolvedEvent | pb.ResolvedIndexedEvent) -> ResolvedEvent:
    """
    A model L{ResolvedEvent} from a protobuf one (for clients and tests).
    """
    position = getattr(message, "prepare_position", -1)
    event = event_record_from_proto(message.event, position) if message.HasField("event") else None
    link = event_record_from_proto(message.link, position) if message.HasField("link") else None
    return ResolvedEvent(event, link)


_STREAM_RESULT = {
    ReadStatus.SUCCESS: pb.ReadStreamEventsCompleted.Success,
    ReadStatus.NOT_FOUND: pb.ReadStreamEventsCompleted.NoStream,
    ReadStatus.NO_STREAM: pb.ReadStreamEventsCompleted.NoStream,
    ReadStatus.STREAM_DELETED: pb.ReadStreamEventsCompleted.StreamDeleted,
    ReadStatus.ERROR: pb.ReadStreamEventsCompleted.Error,
    ReadStatus.ACCESS_DENIED: pb.ReadStreamEventsCompleted.AccessDenied,
}

_ALL_RESULT = {
    ReadStatus.SUCCESS: pb.ReadAllEventsCompleted.Success,
    ReadStatus.NOT_FOUND: pb.ReadAllEventsCompleted.Error,
    ReadStatus.NO_STREAM: pb.ReadAllEventsCompleted.Error,
    ReadStatus.STREAM_DELETED: pb.ReadAllEventsCompleted.Error,
    ReadStatus.ERROR: pb.ReadAllEventsCompleted.Error,
    ReadStatus.ACCESS_DENIED: pb.ReadAllEventsCompleted.AccessDenied,
}


def read_event_completed(result: ReadEventResult) -> bytes:
    """
    Encode a C{ReadEventCompleted} payload.  The C{event} field is always
    present (empty when there is no event).
    """
    message = pb.ReadEventCompleted(
        result=cast(pb.ReadEventCompleted.ReadEventResult, int(result.status))
    )
    message.event.SetInParent()
    if result.event is not None:
        resolved_indexed_to_proto(result.event, message.event)
    if result.error:
        message.error = result.error
    return message.SerializePartialToString()


# -- hand-assembled replies ---------------------------------------------------
#
# Reads and subscription pushes carry many EventRecords.  Filling a nested
# protobuf message field by field costs more than joining the encoded bytes
# ourselves, so these replies are assembled here (fields in number order,
# exactly what the protobuf runtime would write; the tests compare both).

#: Varints of 0..16383: every length and small event number.
_SMALL_VARINTS = [
    bytes((i,)) if i < 0x80 else bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(16384)
]
_CACHE_LIMIT = 10_000
#: (tag, text) -> tag + length + UTF-8 text (stream names, event types).
_text_fields: dict[tuple[bytes, str], bytes] = {}
#: created ticks -> fields 9 and 10 of an EventRecord.
_created_fields: dict[int, bytes] = {}
_JSON_FLAGS = b"\x28\x01\x30\x01"
_BINARY_FLAGS = b"\x28\x00\x30\x00"


def _length(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < 16384 else _varint(n)


def _text_field(tag: bytes, text: str) -> bytes:
    key = (tag, text)
    encoded = _text_fields.get(key)
    if encoded is None:
        raw = text.encode("utf-8")
        encoded = tag + _length(len(raw)) + raw
        if len(_text_fields) >= _CACHE_LIMIT:
            _text_fields.clear()
        _text_fields[key] = encoded
    return encoded


def _created_field(created: int) -> bytes:
    encoded = _created_fields.get(created)
    if encoded is None:
        if created > 0:
            epoch = (created - UNIX_EPOCH_TICKS) // 10000
            encoded = b"\x48" + _varint(created) + b"\x50" + _varint(epoch)
        else:
            encoded = b"\x48" + _varint(UNIX_EPOCH_TICKS) + b"\x50\x00"
        if len(_created_fields) >= _CACHE_LIMIT:
            _created_fields.clear()
        _created_fields[created] = encoded
    return encoded


def encode_event_record(record: EventRecord, v1: bool = False) -> bytes:
    """
    The serialized C{EventRecord} of C{record}: the same message as
    L{event_record_to_proto} fills, every field present.
    """
    number = record.event_number
    if v1:
        number = downgrade_event_number(number)
    data = record.data
    metadata = record.metadata
    return b"".join(
        (
            _text_field(b"\x0a", record.stream),
            b"\x10",
            _SMALL_VARINTS[number] if 0 <= number < 16384 else _varint(number),
            b"\x1a\x10",
            _pack_guid_le(*_unpack_guid_be(record.event_id)),
            _text_field(b"\x22", record.event_type),
            _JSON_FLAGS if record.flags & FLAG_JSON else _BINARY_FLAGS,
            b"\x3a",
            _length(len(data)),
            data,
            b"\x42",
            _length(len(metadata)),
            metadata,
            _created_field(record.created),
        )
    )


def _resolved_parts(resolved: ResolvedEvent, v1: bool) -> list[bytes]:
    """
    Fields 1 (event, absent for an unresolvable link) and 2 (link) shared by
    C{ResolvedIndexedEvent} and C{ResolvedEvent}, as pieces to join.
    """
    event = resolved.event
    link = resolved.link
    if link is None:
        assert event is not None
        encoded = encode_event_record(event, v1)
        return [b"\x0a", _length(len(encoded)), encoded]
    parts: list[bytes] = []
    if event is not None:
        encoded = encode_event_record(event, v1)
        parts += (b"\x0a", _length(len(encoded)), encoded)
    encoded = encode_event_record(link, v1)
    parts += (b"\x12", _length(len(encoded)), encoded)
    return parts


def encode_resolved_event(resolved: ResolvedEvent, v1: bool = False) -> bytes:
    """
    A serialized C{ResolvedEvent}: both positions are the original record's.
    """
    original = resolved.link if resolved.link is not None else resolved.event
    assert original is not None
    position = _varint(original.position)
    parts = _resolved_parts(resolved, v1)
    parts += (b"\x18", position, b"\x20", position)
    return b"".join(parts)


def read_stream_completed(result: StreamSlice, v1: bool = False) -> bytes:
    """
    Encode a C{ReadStreamEventsCompleted} payload.
    """
    parts: list[bytes] = []
    extend = parts.extend
    for resolved in result.events:
        body = b"".join(_resolved_parts(resolved, False))
        extend((b"\x0a", _length(len(body)), body))
    parts.append(
        pb.ReadStreamEventsCompleted(
            result=_STREAM_RESULT[result.status],
            next_event_number=result.next_event_number,
            last_event_number=(
                downgrade_event_number(result.last_event_number) if v1 else result.last_event_number
            ),
            is_end_of_stream=result.is_end_of_stream,
            last_commit_position=result.last_commit_position,
            error=result.error,
        ).SerializePartialToString()
    )
    return b"".join(parts)


def read_all_completed(result: AllSlice, v1: bool = False) -> bytes:
    """
    Encode a C{ReadAllEventsCompleted} payload.
    """
    message = pb.ReadAllEventsCompleted(
        commit_position=result.position,
        prepare_position=result.position,
        next_commit_position=result.next_position,
        next_prepare_position=result.next_position,
        result=_ALL_RESULT[result.status],
    )
    if result.error:
        message.error = result.error
    parts = [message.SerializePartialToString()]
    extend = parts.extend
    for resolved in result.events:
        body = encode_resolved_event(resolved, v1)
        extend((b"\x1a", _length(len(body)), body))
    return b"".join(parts)


#: The last StreamEventAppeared payload and what it was built from: a commit
#: is fanned out to every subscriber in turn, so consecutive calls usually
#: carry the very same record objects.  Identity (not equality) is checked,
#: and the references are kept, so a match is always the same record.
_last_appeared: tuple[Optional[EventRecord], Optional[EventRecord], bool, bytes] = (
    None,
    None,
    False,
    b"",
)


def stream_event_appeared(resolved: ResolvedEvent, v1: bool = False) -> bytes:
    """
    Encode a C{StreamEventAppeared} payload.
    """
    global _last_appeared
    event, link = resolved.event, resolved.link
    last = _last_appeared
    if last[0] is event and last[1] is link and last[2] == v1 and last[3]:
        return last[3]
    body = encode_resolved_event(resolved, v1)
    data = b"\x0a" + _length(len(body)) + body
    _last_appeared = (event, link, v1, data)
    return data


def persistent_event_appeared(resolved: ResolvedEvent, retry_count: int, v1: bool = False) -> bytes:
    """
    Encode a C{PersistentSubscriptionStreamEventAppeared} payload.  The
    original record's position is also written as fields 3/4 inside the
    nested C{ResolvedIndexedEvent} (unknown there, so skipped by clients that
    do not want them; photon-pump decodes this payload with its
    C{ResolvedEvent} type and reads them).  The nested message is written as
    one occurrence: protobufjs replaces, rather than merges, repeated
    occurrences of a message field.
    """
    body = encode_resolved_event(resolved, v1)
    return b"".join((b"\x0a", _length(len(body)), body, b"\x10", _varint(retry_count)))


def _varint(value: int) -> bytes:
    """
    Protobuf varint of C{value} (negative values as 10-byte two's complement).
    Unrolled for the sizes log positions and ticks have.
    """
    if 0 <= value < 0x4000:
        return _SMALL_VARINTS[value]
    if 0 < value < 0x800000000:
        if value < 0x200000:
            return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
        if value < 0x10000000:
            return bytes(
                (
                    (value & 0x7F) | 0x80,
                    ((value >> 7) & 0x7F) | 0x80,
                    ((value >> 14) & 0x7F) | 0x80,
                    value >> 21,
                )
            )
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                ((value >> 21) & 0x7F) | 0x80,
                value >> 28,
            )
        )
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


#: One reused reply message: filling four fields of an existing message and
#: serialising it is about twice as fast as building a new one (the write
#: hot path).  Safe because encoding is synchronous.
_WRITE_OK = pb.WriteEventsCompleted(
    result=pb.Success,
    first_event_number=0,
    last_event_number=0,
    prepare_position=0,
    commit_position=0,
    current_version=-1,
)


def write_completed_success(
    first_event_number: int, last_event_number: int, position: int
) -> bytes:
    """
    Encode a successful C{WriteEventsCompleted} payload.
    """
    message = _WRITE_OK
    message.first_event_number = first_event_number
    message.last_event_number = last_event_number
    message.prepare_position = position
    message.commit_position = position
    return message.SerializePartialToString()


_WRITE_OK_HEAD = b"\x08\x00\x18"
_MINUS_ONE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
_WRITE_OK_TAIL = b"\x38" + _MINUS_ONE
_WRITE_COMPLETED = int(TcpCommand.WriteEventsCompleted)


def write_completed_frame(
    correlation_id: bytes, first_event_number: int, last_event_number: int, position: int
) -> bytes:
    """
    The whole C{WriteEventsCompleted} frame of a successful write, from a
    template (no protobuf message): the same bytes as framing
    L{write_completed_success}.
    """
    varint = _varint
    p = varint(position)
    first = varint(first_event_number)
    payload = b"".join(
        (
            _WRITE_OK_HEAD,
            first,
            b"\x20",
            first if last_event_number == first_event_number else varint(last_event_number),
            b"\x28",
            p,
            b"\x30",
            p,
            _WRITE_OK_TAIL,
        )
    )
    return (
        _pack_framed_header(HEADER_SIZE + len(payload), _WRITE_COMPLETED, 0)
        + correlation_id
        + payload
    )


def write_completed_failure(result: int, message: str, current_version: int = -1) -> bytes:
    """
    Encode a failed C{WriteEventsCompleted} payload the way v5 fills it.
    """
    return pb.WriteEventsCompleted(
        result=cast(pb.OperationResult, result),
        message=message,
        first_event_number=INT_MIN,
        last_event_number=INT_MIN,
        prepare_position=INT_MIN,
        commit_position=0,
        current_version=current_version,
    ).SerializePartialToString()


def subscription_confirmation(last_commit_position: int, last_event_number: Optional[int]) -> bytes:
    """
    Encode a C{SubscriptionConfirmation} (no event number for C{$all}).
    """
    message = pb.SubscriptionConfirmation(last_commit_position=last_commit_position)
    if last_event_number is not None:
        message.last_event_number = last_event_number
    return message.SerializePartialToString()


def subscription_dropped(reason: int) -> bytes:
    """
    Encode a C{SubscriptionDropped} payload (the reason always written).
    """
    return pb.SubscriptionDropped(
        reason=cast(pb.SubscriptionDropped.SubscriptionDropReason, reason)
    ).SerializePartialToString()


def not_handled(reason: int) -> bytes:
    """
    Encode a C{NotHandled} payload without master info.
    """
    return pb.NotHandled(
        reason=cast(pb.NotHandled.NotHandledReason, reason)
    ).SerializePartialToString()


def identify_client(version: int, connection_name: str = "") -> bytes:
    """
    Encode an C{IdentifyClient} payload (for clients and tests).
    """
    return pb.IdentifyClient(version=version, connection_name=connection_name).SerializeToString()


def resolved_events_from_proto(messages: Sequence[pb.ResolvedEvent]) -> list[ResolvedEvent]:
    """
    Model values of a list of protobuf resolved events.
    """
    return [resolved_event_from_proto(m) for m in messages]


# -- requests by command -------------------------------------------------------

#: The protobuf message of each request the external interface takes.
REQUEST_MESSAGES: dict[int, type] = {
    TcpCommand.WriteEvents: pb.WriteEvents,
    TcpCommand.TransactionStart: pb.TransactionStart,
    TcpCommand.TransactionWrite: pb.TransactionWrite,
    TcpCommand.TransactionCommit: pb.TransactionCommit,
    TcpCommand.DeleteStream: pb.DeleteStream,
    TcpCommand.ReadEvent: pb.ReadEvent,
    TcpCommand.ReadStreamEventsForward: pb.ReadStreamEvents,
    TcpCommand.ReadStreamEventsBackward: pb.ReadStreamEvents,
    TcpCommand.ReadAllEventsForward: pb.ReadAllEvents,
    TcpCommand.ReadAllEventsBackward: pb.ReadAllEvents,
    TcpCommand.SubscribeToStream: pb.SubscribeToStream,
    TcpCommand.UnsubscribeFromStream: pb.UnsubscribeFromStream,
    TcpCommand.ConnectToPersistentSubscription: pb.ConnectToPersistentSubscription,
    TcpCommand.CreatePersistentSubscription: pb.CreatePersistentSubscription,
    TcpCommand.UpdatePersistentSubscription: pb.UpdatePersistentSubscription,
    TcpCommand.DeletePersistentSubscription: pb.DeletePersistentSubscription,
    TcpCommand.PersistentSubscriptionAckEvents: pb.PersistentSubscriptionAckEvents,
    TcpCommand.PersistentSubscriptionNakEvents: pb.PersistentSubscriptionNakEvents,
    TcpCommand.IdentifyClient: pb.IdentifyClient,
}


def parse_request(command: int, data: bytes):  # type: ignore[no-untyped-def]
    """
    Parse the payload of request C{command} (see L{REQUEST_MESSAGES}).

    @raise PayloadError: it does not parse.
    """
    return parse(REQUEST_MESSAGES[command], data)


def write_events_request(data: bytes) -> tuple[str, int, list[NewEvent]]:
    """
    A C{WriteEvents} payload as C{(stream, expected version, events)}.

    @raise PayloadError: it does not parse, or an event id is not 16 bytes.
    """
    message = pb.WriteEvents()
    try:
        message.ParseFromString(data)
    except Exception as e:
        raise PayloadError(str(e)) from e
    return (
        message.event_stream_id,
        message.expected_version,
        new_events_from_proto(message.events),
    )


# -- replies by command --------------------------------------------------------

#: C{OperationResult} values.
SUCCESS = pb.Success
COMMIT_TIMEOUT = pb.CommitTimeout

_OPERATION_RESULTS: list[tuple[type[Exception], int]] = [
    (errors.WrongExpectedVersion, pb.WrongExpectedVersion),
    (errors.StreamDeleted, pb.StreamDeleted),
    (errors.InvalidTransaction, pb.InvalidTransaction),
    (errors.AccessDenied, pb.AccessDenied),
    (errors.CommitTimeout, pb.CommitTimeout),
    (errors.StorageError, pb.CommitTimeout),
]


def operation_result(error: BaseException) -> Optional[int]:
    """
    The C{OperationResult} that answers C{error}, or C{None} when it is no
    operation outcome (a generic error answer).
    """
    for kind, result in _OPERATION_RESULTS:
        if isinstance(error, kind):
            return result
    return None


def not_master(
    tcp: Optional[tuple[str, int]], http: Optional[tuple[str, int]]
) -> bytes:
    """
    A C{NotHandled(NotMaster)} payload with the leader's external endpoints.
    """
    tcp = tcp or ("", 0)
    http = http or tcp
    info = pb.NotHandled.MasterInfo(
        external_tcp_address=tcp[0],
        external_tcp_port=tcp[1],
        external_http_address=http[0],
        external_http_port=http[1],
    )
    return pb.NotHandled(
        reason=pb.NotHandled.NotMaster, additional_info=info.SerializeToString()
    ).SerializePartialToString()


def delete_stream_completed(result: int, message: str = "", position: int = -1) -> bytes:
    """
    A C{DeleteStreamCompleted} payload.
    """
    return pb.DeleteStreamCompleted(
        result=cast(pb.OperationResult, result),
        message=message,
        prepare_position=position,
        commit_position=position,
    ).SerializePartialToString()


def transaction_completed(
    command: int, transaction_id: int, result: int, message: str = ""
) -> bytes:
    """
    A C{TransactionStartCompleted} or C{TransactionWriteCompleted} payload
    (C{command} says which).
    """
    message_type = (
        pb.TransactionStartCompleted
        if command == TcpCommand.TransactionStartCompleted
        else pb.TransactionWriteCompleted
    )
    return message_type(
        transaction_id=transaction_id,
        result=cast(pb.OperationResult, result),
        message=message,
    ).SerializePartialToString()


def transaction_commit_completed(
    transaction_id: int,
    result: int,
    message: str = "",
    first_event_number: int = INT_MIN,
    last_event_number: int = INT_MIN,
    position: int = -1,
) -> bytes:
    """
    A C{TransactionCommitCompleted} payload.
    """
    return pb.TransactionCommitCompleted(
        transaction_id=transaction_id,
        result=cast(pb.OperationResult, result),
        message=message,
        first_event_number=first_event_number,
        last_event_number=last_event_number,
        prepare_position=position,
        commit_position=position,
    ).SerializePartialToString()


_PERSISTENT_REPLIES: dict[int, type] = {
    TcpCommand.CreatePersistentSubscriptionCompleted: pb.CreatePersistentSubscriptionCompleted,
    TcpCommand.UpdatePersistentSubscriptionCompleted: pb.UpdatePersistentSubscriptionCompleted,
    TcpCommand.DeletePersistentSubscriptionCompleted: pb.DeletePersistentSubscriptionCompleted,
}


def persistent_operation_completed(command: int, result: int, reason: str = "") -> bytes:
    """
    The payload of the C{Create}/C{Update}/C{DeletePersistentSubscription}
    reply C{command}.
    """
    return _PERSISTENT_REPLIES[command](result=result, reason=reason).SerializePartialToString()  # type: ignore[no-any-return]


def persistent_confirmation(
    last_commit_position: int, subscription_id: str, last_event_number: int
) -> bytes:
    """
    A C{PersistentSubscriptionConfirmation} payload.
    """
    return pb.PersistentSubscriptionConfirmation(
        last_commit_position=last_commit_position,
        subscription_id=subscription_id,
        last_event_number=last_event_number,
    ).SerializePartialToString()


SCAVENGE_STARTED = pb.ScavengeDatabaseResponse.Started
SCAVENGE_IN_PROGRESS = pb.ScavengeDatabaseResponse.InProgress
SCAVENGE_UNAUTHORIZED = pb.ScavengeDatabaseResponse.Unauthorized


def scavenge_response(result: int, scavenge_id: str = "") -> bytes:
    """
    A C{ScavengeDatabaseResponse} payload (no id when unauthorized).
    """
    if result == SCAVENGE_UNAUTHORIZED:
        return pb.ScavengeDatabaseResponse(
            result=pb.ScavengeDatabaseResponse.Unauthorized
        ).SerializePartialToString()
    return pb.ScavengeDatabaseResponse(
        result=cast(pb.ScavengeDatabaseResponse.ScavengeResult, result), scavengeId=scavenge_id
    ).SerializePartialToString()
