# -*- test-case-name: estwisted.test.test_model -*-
"""
Values shared by every layer: events as stored, results of reads and writes,
principals.  Pure data, no I/O.

Conventions:
  - Event ids are 16 bytes in RFC 4122 order (C{uuid.UUID(...).bytes}).  The
    TCP edge converts from and to .NET order (C{bytes_le}); HTTP from and to
    the hyphenated string.
  - A log position is one int64.  Over TCP an event's commit and prepare
    positions are both its record position.
  - C{created} is .NET ticks (100 ns units since 0001-01-01 UTC).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Optional

from attrs import field, frozen

#: Expected version sentinels (tcp-protocol.md section 6.1).
EXPECTED_ANY = -2
EXPECTED_NO_STREAM = -1
EXPECTED_INVALID = -3
EXPECTED_STREAM_EXISTS = -4

#: Event number of the hard-delete tombstone and "current version" of a
#: hard-deleted stream.
DELETED_STREAM = 9223372036854775807  # long.MaxValue
#: The same marker for V1 (pre-v4) clients.
DELETED_STREAM_V1 = 2147483647

#: Record flags stored in the log.
FLAG_JSON = 0x01
FLAG_TOMBSTONE = 0x02
FLAG_SYSTEM = 0x04  # a system record (epoch, ...), never shown to clients

#: Ticks of the Unix epoch, and ticks per millisecond.
UNIX_EPOCH_TICKS = 621355968000000000
TICKS_PER_MS = 10000

#: Maximum events returned by one read (tcp-protocol.md section 6.5).
MAX_READ_COUNT = 4096


def ticks_from_unix(seconds: float) -> int:
    """
    Convert Unix seconds into .NET ticks.
    """
    return UNIX_EPOCH_TICKS + int(seconds * 10_000_000)


def unix_ms_from_ticks(ticks: int) -> int:
    """
    Convert .NET ticks into Unix milliseconds.
    """
    return (ticks - UNIX_EPOCH_TICKS) // TICKS_PER_MS


@frozen
class NewEvent:
    """
    An event a client asks to write.

    @ivar event_id: 16 bytes, RFC 4122 order.
    @ivar is_json: whether data and metadata are JSON.
    """

    event_id: bytes
    event_type: str
    data: bytes = b""
    metadata: bytes = b""
    is_json: bool = False


@frozen
class EventRecord:
    """
    An event as stored in the log.

    @ivar position: log position of the record (the C{$all} position).
    @ivar next_position: log position just past the record.
    """

    position: int
    next_position: int
    stream: str
    event_number: int
    event_id: bytes
    event_type: str
    flags: int
    data: bytes
    metadata: bytes
    created: int

    @property
    def is_json(self) -> bool:
        return bool(self.flags & FLAG_JSON)


@frozen
class ResolvedEvent:
    """
    An event as returned to a reader: C{event} is the target (absent when a
    link could not be resolved), C{link} the link record when one was
    resolved.  C{original} is the record actually read from the stream.
    """

    event: Optional[EventRecord]
    link: Optional[EventRecord] = None

    @property
    def original(self) -> EventRecord:
        if self.link is not None:
            return self.link
        assert self.event is not None
        return self.event


class ReadStatus(enum.IntEnum):
    """
    Outcome of a stream or single-event read.  The values are those of
    C{ReadEventCompleted.ReadEventResult}; the TCP edge maps them to the
    stream-read enum.
    """

    SUCCESS = 0
    NOT_FOUND = 1
    NO_STREAM = 2
    STREAM_DELETED = 3
    ERROR = 4
    ACCESS_DENIED = 5


@frozen
class ReadEventResult:
    status: ReadStatus
    event: Optional[ResolvedEvent] = None
    error: str = ""


@frozen
class StreamSlice:
    """
    One page of a stream read (tcp-protocol.md section 6.5).
    """

    status: ReadStatus
    events: Sequence[ResolvedEvent]
    next_event_number: int
    last_event_number: int
    is_end_of_stream: bool
    last_commit_position: int
    error: str = ""


@frozen
class AllSlice:
    """
    One page of a C{$all} read.  C{position} is the position actually read
    from (resolved for a backward read from the end), C{next_position} where
    to continue in the same direction.
    """

    status: ReadStatus
    events: Sequence[ResolvedEvent]
    position: int
    next_position: int
    error: str = ""


@frozen
class WriteResult:
    """
    A successful write.  Positions are -1 for an idempotent repeat.
    """

    first_event_number: int
    last_event_number: int
    position: int = -1


@frozen
class MetadataResult:
    """
    Stream metadata as read from C{$$stream}.

    @ivar metastream_version: the metadata stream's last event number, -1
        when none was ever written.
    @ivar raw: the JSON bytes of the latest metadata event (C{b""} if none).
    @ivar is_deleted: the stream is hard-deleted.
    """

    stream: str
    metastream_version: int
    raw: bytes
    is_deleted: bool = False


@frozen
class Principal:
    """
    An authenticated user: the login and its groups.  Anonymous callers are
    represented by C{None}.
    """

    login: str
    groups: frozenset[str] = field(factory=frozenset)

    @property
    def roles(self) -> frozenset[str]:
        return self.groups | {self.login}

    @property
    def is_admin(self) -> bool:
        return "$admins" in self.groups

    @property
    def is_ops(self) -> bool:
        return "$ops" in self.groups or self.is_admin
