# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
Values of the client API: what an application writes (L{EventData}), what
it reads back (L{RecordedEvent}, L{ResolvedEvent}, slices, results), log
positions and credentials.  Pure frozen attrs values, no I/O.

Event ids are L{uuid.UUID}s here; the wire uses .NET byte order and the
codec in L{estwisted.client._operations} converts.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from attrs import field, frozen

from estwisted.core.model import DELETED_STREAM


class ExpectedVersion:
    """
    The expected-version sentinels of a write (any non-negative number means
    "the stream's last event number is exactly this").
    """

    ANY = -2
    NO_STREAM = -1
    EMPTY_STREAM = -1
    STREAM_EXISTS = -4


class StreamPosition:
    """
    Event numbers with a meaning when reading a stream.
    """

    START = 0
    END = -1


@frozen(order=True)
class Position:
    """
    A position in the transaction log (C{$all}).
    """

    commit_position: int
    prepare_position: int

    @classmethod
    def start(cls) -> Position:
        return cls(0, 0)

    @classmethod
    def end(cls) -> Position:
        return cls(-1, -1)


def _check_user(value: str) -> None:
    if len(value.encode("utf-8")) > 255:
        raise ValueError("UserCredentials: login and password must encode to at most 255 bytes")


@frozen
class UserCredentials:
    """
    A login and password sent with each operation that names them (or with
    every operation, as C{ConnectionSettings.default_user_credentials}).
    """

    username: str = field()
    password: str = field(repr=False)

    @username.validator
    def _check_username(self, attribute: object, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("UserCredentials.username must be a non-empty string")
        _check_user(value)

    @password.validator
    def _check_password(self, attribute: object, value: str) -> None:
        if not isinstance(value, str):
            raise ValueError("UserCredentials.password must be a string")
        _check_user(value)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected bytes or str, got {type(value).__name__}")


@frozen
class EventData:
    """
    An event to write.  Keep C{event_id} when retrying a write yourself: the
    server recognises a repeated id and does not write the event twice.

    @ivar is_json: whether C{data} and C{metadata} are JSON.
    """

    event_id: uuid.UUID = field()
    type: str = field()
    data: bytes = field(default=b"", converter=_as_bytes)
    metadata: bytes = field(default=b"", converter=_as_bytes)
    is_json: bool = True

    @event_id.validator
    def _check_id(self, attribute: object, value: uuid.UUID) -> None:
        if not isinstance(value, uuid.UUID):
            raise TypeError("EventData.event_id must be a uuid.UUID")

    @type.validator
    def _check_type(self, attribute: object, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("EventData.type must be a non-empty string")


@frozen
class RecordedEvent:
    """
    An event as stored.  C{created} is Unix milliseconds.
    """

    event_stream_id: str
    event_number: int
    event_id: uuid.UUID
    event_type: str
    data: bytes
    metadata: bytes
    is_json: bool
    created: int


@frozen
class ResolvedEvent:
    """
    An event as read: C{event} is the target of a link (or the event
    itself), C{link} the link record when one was resolved; C{position} is
    set by C{$all} reads and subscriptions.
    """

    event: Optional[RecordedEvent]
    link: Optional[RecordedEvent] = None
    position: Optional[Position] = None

    @property
    def original_event(self) -> RecordedEvent:
        """
        The record actually read (the link, when there is one).
        """
        if self.link is not None:
            return self.link
        assert self.event is not None
        return self.event

    @property
    def original_event_number(self) -> int:
        return self.original_event.event_number

    @property
    def original_stream_id(self) -> str:
        return self.original_event.event_stream_id


@frozen
class WriteResult:
    """
    A successful append.  C{log_position} is C{Position(-1, -1)} when the
    server answered an idempotent repeat.
    """

    next_expected_version: int
    log_position: Position


@frozen
class DeleteResult:
    log_position: Position


class EventReadStatus(enum.Enum):
    SUCCESS = "Success"
    NOT_FOUND = "NotFound"
    NO_STREAM = "NoStream"
    STREAM_DELETED = "StreamDeleted"


@frozen
class EventReadResult:
    status: EventReadStatus
    stream: str
    event_number: int
    event: Optional[ResolvedEvent]


class SliceReadStatus(enum.Enum):
    SUCCESS = "Success"
    STREAM_NOT_FOUND = "StreamNotFound"
    STREAM_DELETED = "StreamDeleted"


class ReadDirection(enum.Enum):
    FORWARD = "Forward"
    BACKWARD = "Backward"


@frozen
class StreamEventsSlice:
    status: SliceReadStatus
    stream: str
    from_event_number: int
    read_direction: ReadDirection
    events: Sequence[ResolvedEvent]
    next_event_number: int
    last_event_number: int
    is_end_of_stream: bool


@frozen
class AllEventsSlice:
    read_direction: ReadDirection
    from_position: Position
    next_position: Position
    events: Sequence[ResolvedEvent]

    @property
    def is_end_of_stream(self) -> bool:
        return len(self.events) == 0


@frozen
class StreamAcl:
    read_roles: Optional[tuple[str, ...]] = None
    write_roles: Optional[tuple[str, ...]] = None
    delete_roles: Optional[tuple[str, ...]] = None
    meta_read_roles: Optional[tuple[str, ...]] = None
    meta_write_roles: Optional[tuple[str, ...]] = None


_ACL_KEYS = {
    "read_roles": "$r",
    "write_roles": "$w",
    "delete_roles": "$d",
    "meta_read_roles": "$mr",
    "meta_write_roles": "$mw",
}


@frozen
class StreamMetadata:
    """
    Structured stream metadata (the system keys; C{custom} holds the rest).
    C{max_age} and C{cache_control} are seconds.
    """

    max_count: Optional[int] = None
    max_age: Optional[int] = None
    truncate_before: Optional[int] = None
    cache_control: Optional[int] = None
    acl: Optional[StreamAcl] = None
    custom: Mapping[str, Any] = field(factory=dict)

    def to_json(self) -> bytes:
        """
        The JSON document stored in the metadata stream.
        """
        obj: dict[str, Any] = {}
        for name, key in (
            ("max_count", "$maxCount"),
            ("max_age", "$maxAge"),
            ("truncate_before", "$tb"),
            ("cache_control", "$cacheControl"),
        ):
            value = getattr(self, name)
            if value is not None:
                obj[key] = value
        if self.acl is not None:
            acl: dict[str, Any] = {}
            for name, key in _ACL_KEYS.items():
                roles = getattr(self.acl, name)
                if roles is not None:
                    acl[key] = list(roles)
            obj["$acl"] = acl
        for key, value in self.custom.items():
            if key in obj:
                raise ValueError(f"StreamMetadata.custom must not redefine {key!r}")
            obj[key] = value
        return json.dumps(obj).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> StreamMetadata:
        """
        Parse a metadata document (empty bytes: no metadata).

        @raise ValueError: not a JSON object.
        """
        if not raw:
            return cls()
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("stream metadata is not a JSON object")
        custom = {k: v for k, v in obj.items() if not k.startswith("$")}
        acl = None
        if isinstance(obj.get("$acl"), dict):
            raw_acl = obj["$acl"]

            def roles(key: str) -> Optional[tuple[str, ...]]:
                value = raw_acl.get(key)
                if value is None:
                    return None
                if isinstance(value, str):
                    return (value,)
                return tuple(str(v) for v in value)

            acl = StreamAcl(**{name: roles(key) for name, key in _ACL_KEYS.items()})
        return cls(
            max_count=obj.get("$maxCount"),
            max_age=obj.get("$maxAge"),
            truncate_before=obj.get("$tb"),
            cache_control=obj.get("$cacheControl"),
            acl=acl,
            custom=custom,
        )


@frozen
class RawStreamMetadataResult:
    """
    Stream metadata as stored.  C{metastream_version} is -1 when none was
    ever written; C{stream_metadata} is C{b""} then.
    """

    stream: str
    is_stream_deleted: bool
    metastream_version: int
    stream_metadata: bytes


@frozen
class StreamMetadataResult:
    stream: str
    is_stream_deleted: bool
    metastream_version: int
    stream_metadata: StreamMetadata


#: The current version of a hard-deleted stream.
DELETED_STREAM_VERSION = DELETED_STREAM
