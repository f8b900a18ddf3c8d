# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
The replication messages and their codec (pure: no reactor).

Wire format
===========
Frames are those of the client protocol (L{estwisted.wire.framing}: a 4-byte
little-endian length, then the package).  A replication package is one
command byte and a fixed little-endian payload; it is ours, not v5's
protobuf (nodes of this implementation only talk to each other).  The
commands are below C{0x80}, so the internal port can tell a replica from a
client by the first package (L{InternalTcpFactory}).

============  =====  ===================  ==============================================
message       code   direction            payload
============  =====  ===================  ==============================================
Subscribe     0x10   replica -> leader    subscription id, node id, leader id (16 each),
                                          log end (q), promotable (B), chunk size (q),
                                          epoch count (H), epochs (q position, i number,
                                          16 id), newest first
Subscribed    0x16   leader -> replica    subscription id, start position (q)
Retry         0x15   leader -> replica    subscription id, reason (UTF-8)
Data          0x14   leader -> replica    subscription id, position (q), leader commit
                                          position (q), framed records
Ack           0x11   replica -> leader    subscription id, durable end (q)
Committed     0x17   leader -> replica    subscription id, leader commit position (q)
Assignment    0x07   leader -> replica    subscription id, role (UTF-8)
RawChunk      0x13   leader -> replica    subscription id, chunk number (q), offset (q),
                                          image size (q), leader commit position (q),
                                          bytes of a scavenged chunk file
RawAck        0x18   replica -> leader    subscription id, chunk number (q), bytes
                                          received (q) (flow control only)
Heartbeat     0x01   both                 none (answered with 0x02 by the link)
HeartbeatRe.  0x02   both                 none
============  =====  ===================  ==============================================

Records travel as the bytes of the leader's log (L{IReplicableLog.read_raw})
and land at identical positions on the replica (C{append_raw}); the
replica flushes (fsync) and only then acknowledges.  A chunk the leader has
scavenged travels whole instead, as C{RawChunk}s of its file image
(L{estwisted.storage.rawchunk}); the replica installs it and acknowledges
the chunk's end with an C{Ack}.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Union

from attrs import frozen

from estwisted.core.model import FLAG_SYSTEM, EventRecord
from estwisted.replication.state import (
    Epoch,
    parse_epoch,
)
from estwisted.storage import records as codec

SUBSCRIBE = 0x10
SUBSCRIBED = 0x16
RETRY = 0x15
DATA = 0x14
ACK = 0x11
COMMITTED = 0x17
ASSIGNMENT = 0x07
RAW_CHUNK = 0x13
RAW_ACK = 0x18
HEARTBEAT_REQUEST = 0x01
HEARTBEAT_RESPONSE = 0x02

#: The replication commands that open or carry a subscription (all below the
#: client commands' 0x80; a replica's first package is always C{SUBSCRIBE}).
#: Heartbeats (0x01, 0x02, as the client protocol's) are not among them, so
#: the internal port never takes a client's heartbeat for a replica.
COMMANDS = frozenset(
    {SUBSCRIBE, SUBSCRIBED, RETRY, DATA, ACK, COMMITTED, ASSIGNMENT, RAW_CHUNK, RAW_ACK}
)

_SUBSCRIBE = struct.Struct("<B16s16s16sqBqH")
_EPOCH = struct.Struct("<qi16s")
_SUB_POS = struct.Struct("<B16sq")
_DATA = struct.Struct("<B16sqq")
_SUB = struct.Struct("<B16s")
_RAW_CHUNK = struct.Struct("<B16sqqqq")
_RAW_ACK = struct.Struct("<B16sqq")


class ProtocolError(Exception):
    """
    A package is not a well-formed replication message.
    """


@frozen
class Subscribe:
    subscription_id: bytes
    node_id: bytes
    leader_id: bytes
    position: int
    promotable: bool
    chunk_size: int
    epochs: tuple[Epoch, ...]


@frozen
class Subscribed:
    subscription_id: bytes
    position: int


@frozen
class Retry:
    subscription_id: bytes
    reason: str


@frozen
class Data:
    subscription_id: bytes
    position: int
    committed: int
    frames: bytes


@frozen
class Ack:
    subscription_id: bytes
    position: int


@frozen
class Committed:
    subscription_id: bytes
    position: int


@frozen
class Assignment:
    subscription_id: bytes
    role: str


@frozen
class RawChunk:
    """
    Bytes C{offset} on of the file image (C{size} bytes) of scavenged
    chunk C{number}.
    """

    subscription_id: bytes
    number: int
    offset: int
    size: int
    committed: int
    data: bytes


@frozen
class RawAck:
    """
    The replica has C{received} bytes of chunk C{number}'s image (flow
    control: durability is acknowledged with L{Ack} once installed).
    """

    subscription_id: bytes
    number: int
    received: int


@frozen
class Heartbeat:
    """
    Either side to the other after an interval of silence: answer with
    L{HeartbeatReply}.  Handled by the link itself (L{ReplicationLink}).
    """


@frozen
class HeartbeatReply:
    """
    The answer to a L{Heartbeat}.
    """


Message = Union[
    Subscribe,
    Subscribed,
    Retry,
    Data,
    Ack,
    Committed,
    Assignment,
    RawChunk,
    RawAck,
    Heartbeat,
    HeartbeatReply,
]


def encode_message(message: Message) -> bytes:
    """
    The package (without the length prefix) of C{message}.
    """
    if isinstance(message, Data):
        return (
            _DATA.pack(DATA, message.subscription_id, message.position, message.committed)
            + message.frames
        )
    if isinstance(message, Ack):
        return _SUB_POS.pack(ACK, message.subscription_id, message.position)
    if isinstance(message, RawChunk):
        return (
            _RAW_CHUNK.pack(
                RAW_CHUNK,
                message.subscription_id,
                message.number,
                message.offset,
                message.size,
                message.committed,
            )
            + message.data
        )
    if isinstance(message, RawAck):
        return _RAW_ACK.pack(RAW_ACK, message.subscription_id, message.number, message.received)
    if isinstance(message, Heartbeat):
        return bytes((HEARTBEAT_REQUEST,))
    if isinstance(message, HeartbeatReply):
        return bytes((HEARTBEAT_RESPONSE,))
    if isinstance(message, Committed):
        return _SUB_POS.pack(COMMITTED, message.subscription_id, message.position)
    if isinstance(message, Subscribed):
        return _SUB_POS.pack(SUBSCRIBED, message.subscription_id, message.position)
    if isinstance(message, Retry):
        return _SUB.pack(RETRY, message.subscription_id) + message.reason.encode("utf-8")
    if isinstance(message, Assignment):
        return _SUB.pack(ASSIGNMENT, message.subscription_id) + message.role.encode("utf-8")
    head = _SUBSCRIBE.pack(
        SUBSCRIBE,
        message.subscription_id,
        message.node_id,
        message.leader_id,
        message.position,
        1 if message.promotable else 0,
        message.chunk_size,
        len(message.epochs),
    )
    return head + b"".join(_EPOCH.pack(e.position, e.number, e.epoch_id) for e in message.epochs)


def decode_message(package: bytes) -> Message:
    """
    Parse one package.

    @raise ProtocolError: unknown command or malformed payload.
    """
    if not package:
        raise ProtocolError("empty package")
    command = package[0]
    if command in (HEARTBEAT_REQUEST, HEARTBEAT_RESPONSE):
        if len(package) != 1:
            raise ProtocolError(f"bad length {len(package)} for command {command:#x}")
        return Heartbeat() if command == HEARTBEAT_REQUEST else HeartbeatReply()
    try:
        if command == DATA:
            _, sid, position, committed = _DATA.unpack_from(package)
            return Data(sid, position, committed, bytes(package[_DATA.size :]))
        if command == RAW_CHUNK:
            _, sid, number, offset, size, committed = _RAW_CHUNK.unpack_from(package)
            return RawChunk(sid, number, offset, size, committed, bytes(package[_RAW_CHUNK.size :]))
        if command == RAW_ACK:
            if len(package) != _RAW_ACK.size:
                raise ProtocolError(f"bad length {len(package)} for command {command:#x}")
            _, sid, number, received = _RAW_ACK.unpack(package)
            return RawAck(sid, number, received)
        if command in (ACK, COMMITTED, SUBSCRIBED):
            if len(package) != _SUB_POS.size:
                raise ProtocolError(f"bad length {len(package)} for command {command:#x}")
            _, sid, position = _SUB_POS.unpack(package)
            cls = {ACK: Ack, COMMITTED: Committed, SUBSCRIBED: Subscribed}[command]
            return cls(sid, position)  # type: ignore[return-value]
        if command in (RETRY, ASSIGNMENT):
            _, sid = _SUB.unpack_from(package)
            text = bytes(package[_SUB.size :]).decode("utf-8")
            return Retry(sid, text) if command == RETRY else Assignment(sid, text)
        if command == SUBSCRIBE:
            _, sid, node, leader, position, promotable, chunk_size, count = _SUBSCRIBE.unpack_from(
                package
            )
            if len(package) != _SUBSCRIBE.size + count * _EPOCH.size:
                raise ProtocolError("bad epoch list length")
            epochs = tuple(
                Epoch(*_EPOCH.unpack_from(package, _SUBSCRIBE.size + i * _EPOCH.size))
                for i in range(count)
            )
            return Subscribe(sid, node, leader, position, bool(promotable), chunk_size, epochs)
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed command {command:#x}: {e}") from e
    raise ProtocolError(f"unknown replication command {command:#x}")


def new_id() -> bytes:
    return os.urandom(16)


# --- Reading records and epochs out of frames ------------------------------------------


def decode_frames(position: int, frames: bytes) -> list[EventRecord]:
    """
    Every record in C{frames} (as L{IReplicableLog.read_raw} returns them).
    """
    records: list[EventRecord] = []
    offset = 0
    while offset < len(frames):
        (size,) = struct.unpack_from("<I", frames, offset)
        (pos,) = struct.unpack_from("<q", frames, offset + 4)
        records.append(codec.decode(frames, offset, offset + size, pos))
        offset += size
    return records


def scan_epochs(log: Any, batch: int = 1 << 20) -> list[Epoch]:
    """
    Every epoch record in C{log}, oldest first.  Reads the whole log once
    (the frame headers only).
    """
    epochs: list[Epoch] = []
    position = 0
    head = codec.SCAN_HEAD
    while True:
        _, frames, position = log.read_raw(position, batch)
        if not frames:
            return epochs
        offset = 0
        while offset < len(frames):
            size, pos, _, flags, _, _, _, _ = head.unpack_from(frames, offset)
            if flags & FLAG_SYSTEM:
                epoch = parse_epoch(codec.decode(frames, offset, offset + size, pos))
                if epoch is not None:
                    epochs.append(epoch)
            offset += size
