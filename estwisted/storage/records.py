# -*- test-case-name: estwisted.storage.test.test_records -*-
"""
The record codec of the transaction log: pure functions, no I/O.

One record is framed as::

    offset  size  field
    0       4     size      u32, the whole frame's length (prefix)
    4       8     position  i64, the record's logical log position
    12      8     event_number i64
    20      8     created   i64, .NET ticks
    28      2     flags     u16
    30      2     stream length (UTF-8 bytes), u16
    32      2     event type length (UTF-8 bytes), u16
    34      4     data length, u32
    38      4     metadata length, u32
    42      16    event id
    58      ...   stream, event type, data, metadata
    size-8  4     crc32 of bytes [0, size-8)
    size-4  4     size      u32 again (suffix, for reading backwards)

The frame carries its own position, so bytes that are not a record starting
exactly there are never taken for one, and its CRC covers the length prefix
and every field.  Decoding raises L{CorruptRecord} for any damage.
"""

from __future__ import annotations

import mmap
import struct
from typing import Union
from zlib import crc32

from estwisted.core.errors import CorruptRecord
from estwisted.core.model import EventRecord

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]

HEAD = struct.Struct("<IqqqHHHII16s")
#: The header without C{created} and the event id, for scans.
SCAN_HEAD = struct.Struct("<Iqq8xHHHII")
TAIL = struct.Struct("<II")
_SIZE = struct.Struct("<I")
_POSITION = struct.Struct("<q")

#: Bytes of a frame besides its variable fields.
OVERHEAD = HEAD.size + TAIL.size
HEAD_SIZE = HEAD.size
#: The largest frame accepted (16 MiB of payload plus framing).
MAX_RECORD_SIZE = 16 * 1024 * 1024 + 64 * 1024
_MAX_SHORT = 0xFFFF


def frame_size(stream: bytes, event_type: bytes, data: bytes, metadata: bytes) -> int:
    """
    The length of the frame that L{encode} would build for these fields.
    """
    return OVERHEAD + len(stream) + len(event_type) + len(data) + len(metadata)


def encode(
    position: int,
    stream: bytes,
    event_number: int,
    event_id: bytes,
    event_type: bytes,
    flags: int,
    data: bytes,
    metadata: bytes,
    created: int,
) -> bytes:
    """
    Build one framed record.  C{stream} and C{event_type} are already UTF-8.

    @raise ValueError: a field does not fit (event id not 16 bytes, stream or
        type longer than 65535 bytes, frame over L{MAX_RECORD_SIZE}).
    """
    sl = len(stream)
    tl = len(event_type)
    dl = len(data)
    ml = len(metadata)
    size = OVERHEAD + sl + tl + dl + ml
    if sl > _MAX_SHORT or tl > _MAX_SHORT:
        raise ValueError("stream name or event type longer than 65535 bytes")
    if size > MAX_RECORD_SIZE:
        raise ValueError(f"record of {size} bytes is larger than {MAX_RECORD_SIZE}")
    if len(event_id) != 16:
        raise ValueError("event id must be 16 bytes")
    return encode_sized(
        size, position, stream, event_number, event_id, event_type, flags, data, metadata, created
    )


def encode_sized(
    size: int,
    position: int,
    stream: bytes,
    event_number: int,
    event_id: bytes,
    event_type: bytes,
    flags: int,
    data: bytes,
    metadata: bytes,
    created: int,
) -> bytes:
    """
    L{encode} for a caller that already computed the frame C{size} and
    checked the limits (the log's append path).
    """
    body = b"".join(
        (
            HEAD.pack(
                size,
                position,
                event_number,
                created,
                flags,
                len(stream),
                len(event_type),
                len(data),
                len(metadata),
                event_id,
            ),
            stream,
            event_type,
            data,
            metadata,
        )
    )
    return body + TAIL.pack(crc32(body), size)


def frame_at(buf: Buffer, offset: int, limit: int, position: int) -> int:
    """
    Cheap check that a frame for a record at C{position} starts at C{offset}:
    the length prefix is sane, the suffix repeats it and the stored position
    matches.  The checksum is not verified.

    @return: the frame size, or 0 when no such frame starts there.
    """
    if offset < 0 or offset + OVERHEAD > limit:
        return 0
    (size,) = _SIZE.unpack_from(buf, offset)
    if size < OVERHEAD or size > MAX_RECORD_SIZE or offset + size > limit:
        return 0
    if _SIZE.unpack_from(buf, offset + size - 4)[0] != size:
        return 0
    if _POSITION.unpack_from(buf, offset + 4)[0] != position:
        return 0
    return int(size)


def decode(buf: Buffer, offset: int = 0, limit: int = -1, position: int = -1) -> EventRecord:
    """
    Decode the record framed at C{offset} of C{buf}, not reading at or past
    C{limit} (default: the buffer's end).

    @param position: when not negative, the position the record must carry.
    @raise CorruptRecord: the bytes are not one intact record.
    """
    if limit < 0:
        limit = len(buf)
    if offset < 0 or offset + OVERHEAD > limit:
        raise CorruptRecord(f"record at offset {offset} is truncated")
    size, pos, number, created, flags, sl, tl, dl, ml, event_id = HEAD.unpack_from(buf, offset)
    end = offset + size
    if size != OVERHEAD + sl + tl + dl + ml or end > limit:
        raise CorruptRecord(f"bad record length {size} at offset {offset}")
    crc, suffix = TAIL.unpack_from(buf, end - 8)
    if suffix != size:
        raise CorruptRecord(f"record length suffix {suffix} != prefix {size} at offset {offset}")
    if position >= 0 and pos != position:
        raise CorruptRecord(f"record at offset {offset} claims position {pos}, not {position}")
    # slicing bytes or a memory map gives bytes directly
    if crc32(buf[offset : end - 8]) != crc:
        raise CorruptRecord(f"checksum mismatch in record at position {pos}")
    o = offset + HEAD_SIZE
    try:
        stream = str(buf[o : o + sl], "utf-8")
        o += sl
        event_type = str(buf[o : o + tl], "utf-8")
    except UnicodeDecodeError as e:
        raise CorruptRecord(f"bad UTF-8 in record at position {pos}") from e
    o += tl
    raw_data = buf[o : o + dl]
    o += dl
    raw_metadata = buf[o : o + ml]
    data = raw_data if isinstance(raw_data, bytes) else bytes(raw_data)
    metadata = raw_metadata if isinstance(raw_metadata, bytes) else bytes(raw_metadata)
    # positional: position, next_position, stream, event_number, event_id,
    # event_type, flags, data, metadata, created
    return EventRecord(
        pos, pos + size, stream, number, event_id, event_type, flags, data, metadata, created
    )


def size_before(buf: Buffer, end: int) -> int:
    """
    The frame size recorded in the suffix just before C{end} (for walking
    backwards); 0 if it cannot be a frame.
    """
    if end < OVERHEAD:
        return 0
    (size,) = _SIZE.unpack_from(buf, end - 4)
    if size < OVERHEAD or size > MAX_RECORD_SIZE or size > end:
        return 0
    return int(size)
