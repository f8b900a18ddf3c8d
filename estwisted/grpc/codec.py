# -*- test-case-name: estwisted.grpc.test.test_protocol -*-
"""
The gRPC API's messages to and from the store's values, and the store's
errors to gRPC statuses with EventStoreDB's C{exception} trailers.  Pure:
no reactor, no I/O.

Conventions (as EventStoreDB 20+ serves them):
  - A position is C{(commit_position, prepare_position)}; here both are
    the record's log position.
  - An event's system metadata map holds C{type}, C{content-type}
    (C{application/json} or C{application/octet-stream}) and C{created}
    (ticks of 100 ns since the Unix epoch, as a decimal string).
  - Expected revisions: C{any} -2, C{no_stream} -1, C{stream_exists} -4, an
    exact revision as itself (the v5 numbers the store takes).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Optional

from attrs import frozen

from estwisted.core.errors import (
    AccessDenied,
    AlreadyExists,
    BadRequest,
    CommitTimeout,
    InvalidTransaction,
    NotAuthenticated,
    NotFound,
    NotLeader,
    NotReady,
    StorageError,
    StreamDeleted,
    WrongExpectedVersion,
)
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    EXPECTED_STREAM_EXISTS,
    FLAG_JSON,
    UNIX_EPOCH_TICKS,
    EventRecord,
    NewEvent,
    ResolvedEvent,
)
from estwisted.grpc.framing import GrpcStatus, StatusCode
from estwisted.grpc.protos import shared_pb2, streams_pb2

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


def bad_argument(message: str) -> GrpcStatus:
    return GrpcStatus(StatusCode.INVALID_ARGUMENT, message)


# -- ids ------------------------------------------------------------------


def _signed64(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def uuid_message(event_id: bytes, structured: bool) -> shared_pb2.UUID:
    """
    An event id (16 bytes, RFC 4122 order) as the client asked for it.
    """
    if structured:
        return shared_pb2.UUID(
            structured=shared_pb2.UUID.Structured(
                most_significant_bits=_signed64(event_id[:8]),
                least_significant_bits=_signed64(event_id[8:]),
            )
        )
    return shared_pb2.UUID(string=str(uuid.UUID(bytes=event_id)))


def uuid_bytes(message: shared_pb2.UUID) -> bytes:
    """
    The 16 bytes of a C{UUID} message.

    @raise GrpcStatus: C{INVALID_ARGUMENT} when it is empty or malformed.
    """
    which = message.WhichOneof("value")
    if which == "string":
        try:
            return uuid.UUID(message.string).bytes
        except ValueError:
            raise bad_argument(f"bad event id {message.string!r}") from None
    if which == "structured":
        s = message.structured
        return s.most_significant_bits.to_bytes(8, "big", signed=True) + (
            s.least_significant_bits.to_bytes(8, "big", signed=True)
        )
    raise bad_argument("an event id is required")


def stream_name(identifier: shared_pb2.StreamIdentifier) -> str:
    """
    @raise GrpcStatus: C{INVALID_ARGUMENT} for a name that is not UTF-8.
    """
    try:
        return identifier.stream_name.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_argument("a stream name must be UTF-8") from None


def stream_identifier(name: str) -> shared_pb2.StreamIdentifier:
    return shared_pb2.StreamIdentifier(stream_name=name.encode("utf-8"))


# -- expected revisions ---------------------------------------------------


def expected_version(options: Any, revision_field: str = "revision") -> int:
    """
    The store's expected version from an C{expected_stream_revision} (or
    C{expected_stream_position}) oneof of C{options}.
    """
    oneof = (
        "expected_stream_position"
        if revision_field == "stream_position"
        else "expected_stream_revision"
    )
    which = options.WhichOneof(oneof)
    if which == revision_field:
        value = getattr(options, revision_field)
        if value >= DELETED_STREAM:
            raise bad_argument(f"bad expected revision {value}")
        return int(value)
    if which == "no_stream":
        return EXPECTED_NO_STREAM
    if which == "stream_exists":
        return EXPECTED_STREAM_EXISTS
    return EXPECTED_ANY


def set_expected(message: Any, expected: int, exact: str, any_: str, exists: str,
                 no_stream: str) -> None:
    """
    Fill an expected-revision oneof of C{message} from the store's number;
    the field names differ between messages.
    """
    if expected >= 0:
        setattr(message, exact, expected)
    elif expected == EXPECTED_NO_STREAM:
        getattr(message, no_stream).SetInParent()
    elif expected == EXPECTED_STREAM_EXISTS:
        getattr(message, exists).SetInParent()
    else:
        getattr(message, any_).SetInParent()


# -- events ---------------------------------------------------------------


def new_event(proposed: Any) -> NewEvent:
    """
    A store event from an C{AppendReq.ProposedMessage} (or BatchAppend's).

    @raise GrpcStatus: C{INVALID_ARGUMENT} without a type or content type.
    """
    event_id = uuid_bytes(proposed.id)
    metadata = proposed.metadata
    event_type = metadata.get("type", "")
    if not event_type:
        raise bad_argument("an event needs a 'type' in its metadata")
    content_type = metadata.get("content-type", "")
    if not content_type:
        raise bad_argument("an event needs a 'content-type' in its metadata")
    return NewEvent(
        event_id,
        event_type,
        bytes(proposed.data),
        bytes(proposed.custom_metadata),
        content_type == JSON,
    )


def created_since_epoch(record: EventRecord) -> str:
    return str(record.created - UNIX_EPOCH_TICKS)


def uuid_text(event_id: bytes) -> str:
    """
    The hyphenated form of 16 id bytes (C{str(uuid.UUID(bytes=...))}).
    """
    h = event_id.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fill_recorded(target: Any, record: EventRecord, structured_ids: bool) -> None:
    """
    Fill a C{RecordedEvent} message (of the streams or the persistent
    subscriptions service: the fields are the same) in place.
    """
    if structured_ids:
        ident = target.id.structured
        event_id = record.event_id
        ident.most_significant_bits = _signed64(event_id[:8])
        ident.least_significant_bits = _signed64(event_id[8:])
    else:
        target.id.string = uuid_text(record.event_id)
    target.stream_identifier.stream_name = record.stream.encode("utf-8")
    target.stream_revision = record.event_number
    target.prepare_position = record.position
    target.commit_position = record.position
    if record.metadata:
        target.custom_metadata = record.metadata
    if record.data:
        target.data = record.data
    metadata = target.metadata
    metadata["type"] = record.event_type
    metadata["content-type"] = JSON if record.flags & FLAG_JSON else OCTET_STREAM
    metadata["created"] = str(record.created - UNIX_EPOCH_TICKS)


def recorded_event(
    record: EventRecord, structured_ids: bool
) -> streams_pb2.ReadResp.ReadEvent.RecordedEvent:
    recorded = streams_pb2.ReadResp.ReadEvent.RecordedEvent()
    fill_recorded(recorded, record, structured_ids)
    return recorded


def read_event(
    resolved: ResolvedEvent, structured_ids: bool, with_position: bool
) -> streams_pb2.ReadResp:
    """
    One C{ReadResp} carrying C{resolved}; C{commit_position} is that of the
    record read (the link when one was resolved) on C{$all} reads and
    subscriptions.
    """
    out = streams_pb2.ReadResp()
    event = out.event
    if resolved.event is not None:
        fill_recorded(event.event, resolved.event, structured_ids)
    if resolved.link is not None:
        fill_recorded(event.link, resolved.link, structured_ids)
    if with_position:
        event.commit_position = resolved.original.position
    else:
        event.no_position.SetInParent()
    return out


# -- $all filters ---------------------------------------------------------


@frozen
class EventFilter:
    """
    A server-side C{$all} filter: on the stream name or the event type, by
    prefixes or a regular expression (searched, as .NET's C{IsMatch}).
    """

    on_stream: bool
    prefixes: tuple[str, ...] = ()
    regex: Optional[re.Pattern[str]] = None

    def matches(self, record: EventRecord) -> bool:
        value = record.stream if self.on_stream else record.event_type
        if self.prefixes:
            return value.startswith(self.prefixes)
        if self.regex is not None:
            return self.regex.search(value) is not None
        return True


def event_filter(options: Any) -> Optional[EventFilter]:
    """
    The filter of C{ReadReq.Options}, C{None} for none.

    @raise GrpcStatus: C{INVALID_ARGUMENT} for a bad expression.
    """
    if options.WhichOneof("filter_option") != "filter":
        return None
    f = options.filter
    which = f.WhichOneof("filter")
    if which is None:
        return None
    expression = getattr(f, which)
    prefixes = tuple(expression.prefix)
    pattern: Optional[re.Pattern[str]] = None
    if not prefixes and expression.regex:
        try:
            pattern = re.compile(expression.regex)
        except (re.error, OverflowError, RecursionError) as e:
            raise bad_argument(f"bad filter expression: {e}") from None
    return EventFilter(which == "stream_identifier", prefixes, pattern)


#: EventStoreDB's default search window for a filtered read or subscription.
DEFAULT_WINDOW = 32


def checkpoint_interval(options: Any) -> int:
    """
    Events searched between two checkpoints of a filtered C{$all}
    subscription: the window times the multiplier.
    """
    f = options.filter
    window = f.max if f.WhichOneof("window") == "max" and f.max > 0 else DEFAULT_WINDOW
    return int(window) * max(1, int(f.checkpointIntervalMultiplier))


# -- errors ---------------------------------------------------------------


def _version_text(version: int) -> str:
    return str(version)


def wrong_expected_version_status(stream: str, expected: int, actual: int) -> GrpcStatus:
    return GrpcStatus(
        StatusCode.FAILED_PRECONDITION,
        f"Append failed due to WrongExpectedVersion. Stream: {stream}, "
        f"Expected version: {expected}, Actual version: {actual}",
        (
            ("exception", "wrong-expected-version"),
            ("stream-name", stream),
            ("expected-version", _version_text(expected)),
            ("actual-version", _version_text(actual)),
        ),
    )


def stream_deleted_status(stream: str) -> GrpcStatus:
    return GrpcStatus(
        StatusCode.FAILED_PRECONDITION,
        f"Event stream '{stream}' is deleted.",
        (("exception", "stream-deleted"), ("stream-name", stream)),
    )


def access_denied_status() -> GrpcStatus:
    return GrpcStatus(
        StatusCode.PERMISSION_DENIED, "Access Denied", (("exception", "access-denied"),)
    )


def not_leader_status(leader: Optional[tuple[str, int]]) -> GrpcStatus:
    if leader is None:
        return GrpcStatus(
            StatusCode.UNAVAILABLE, "Server Is Not Ready", (("exception", "server-not-ready"),)
        )
    return GrpcStatus(
        StatusCode.NOT_FOUND,
        "Leader info available",
        (
            ("exception", "not-leader"),
            ("leader-endpoint-host", leader[0]),
            ("leader-endpoint-port", str(leader[1])),
        ),
    )


def status_of(error: BaseException, stream: str = "", expected: int = EXPECTED_ANY) -> GrpcStatus:
    """
    The status a store error ends a call with (as EventStoreDB answers).
    Unexpected errors become C{UNKNOWN} (the caller logs them).
    """
    if isinstance(error, GrpcStatus):
        return error
    if isinstance(error, WrongExpectedVersion):
        return wrong_expected_version_status(
            error.stream or stream, expected, error.current_version
        )
    if isinstance(error, StreamDeleted):
        return stream_deleted_status(stream)
    if isinstance(error, AccessDenied):
        return access_denied_status()
    if isinstance(error, NotAuthenticated):
        return GrpcStatus(StatusCode.UNAUTHENTICATED, str(error) or "Bad credentials")
    if isinstance(error, NotLeader):
        return not_leader_status(error.http)
    if isinstance(error, NotReady):
        return not_leader_status(None)
    if isinstance(error, InvalidTransaction):
        return GrpcStatus(
            StatusCode.FAILED_PRECONDITION, "Invalid Transaction",
            (("exception", "invalid-transaction"),),
        )
    if isinstance(error, BadRequest):
        return bad_argument(str(error))
    if isinstance(error, NotFound):
        return GrpcStatus(StatusCode.NOT_FOUND, str(error))
    if isinstance(error, AlreadyExists):
        return GrpcStatus(StatusCode.ALREADY_EXISTS, str(error))
    if isinstance(error, CommitTimeout):
        return GrpcStatus(StatusCode.DEADLINE_EXCEEDED, "Operation timed out")
    if isinstance(error, StorageError):
        return GrpcStatus(StatusCode.UNAVAILABLE, f"Storage error: {error}")
    return GrpcStatus(StatusCode.UNKNOWN, "Exception was thrown by handler.")


def is_expected_error(error: BaseException) -> bool:
    """
    Whether C{error} is one the client is told about without a log line.
    """
    return status_of(error).code is not StatusCode.UNKNOWN
