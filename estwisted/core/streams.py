# -*- test-case-name: estwisted.core.test.test_streams -*-
"""
The stream store: the one core that the TCP protocol, the HTTP API and the
subscription machinery all call.  It owns expected-version checks,
idempotency, soft and hard deletes, metadata, ACL checks, transactions
and group commit over an L{IEventLog}.  It knows nothing of user accounts
(L{estwisted.core.users.UserManager} is built over it and watches the
system streams it writes).

Contract (the edges rely on it):

  - Writes return Deferreds that fire after the records are durable (one
    flush shared by every write that arrived in the same reactor turn), with
    L{WriteResult}, or fail with an L{estwisted.core.errors.OperationError}
    subclass (L{WrongExpectedVersion}, L{StreamDeleted}, L{AccessDenied},
    L{InvalidTransaction}, L{BadRequest}) or L{StorageError}.
  - Reads are synchronous and return result values whose C{status} carries
    NoStream / StreamDeleted / AccessDenied / Error; they do not raise for
    those.
  - C{principal} is C{None} for anonymous callers; edges authenticate with
    L{estwisted.core.users.UserManager.authenticate} first.
  - Listeners added with L{StreamStore.add_commit_listener} are called with the
    list of L{EventRecord}s of each flush, in log order, after the index was
    updated: subscriptions hang off that.

More details:

  - C{WriteResult.position} of an append is the position of its first
    record (reading C{$all} forward from it returns the write's events); of
    an empty or idempotent write -1.  For a delete, C{first_event_number} and
    C{last_event_number} are the delete record's number in its stream
    (L{DELETED_STREAM} for a hard delete, the metastream's number for a soft
    delete) and C{position} its position.
  - Watchers added with L{StreamStore.add_system_stream_watcher} are told
    the names of the system streams (C{$...}) each flush wrote, after the
    store dropped its own caches of them.
  - L{SYSTEM_PRINCIPAL} is a member of C{$admins} for the node's own writes.
  - L{StreamStore.stream_metadata} gives the parsed metadata of a stream
    without an ACL check (e.g. C{$cacheControl} for HTTP).
"""

from __future__ import annotations

import json
import os
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, TypeVar, Union, overload

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from estwisted.core import acl
from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import (
    AccessDenied,
    BadRequest,
    DiskFull,
    EstoreError,
    InvalidTransaction,
    StorageError,
    StreamDeleted,
)
from estwisted.core.groupcommit import Flusher, GroupCommit, PendingWrite, WriteWaiter
from estwisted.core.interfaces import ICommitGate, IEventLog
from estwisted.core.metadata import (
    LINK_EVENT_TYPE,
    METADATA_EVENT_TYPE,
    METASTREAM_METADATA,
    NO_METADATA,
    TOMBSTONE_EVENT_TYPE,
    StreamMetadata,
    min_visible,
    parse_link,
    parse_metadata,
)
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    FLAG_JSON,
    FLAG_TOMBSTONE,
    MAX_READ_COUNT,
    UNIX_EPOCH_TICKS,
    AllSlice,
    EventRecord,
    MetadataResult,
    NewEvent,
    Principal,
    ReadEventResult,
    ReadStatus,
    ResolvedEvent,
    StreamSlice,
    WriteResult,
    ticks_from_unix,
)
from estwisted.core.writerules import (
    EMPTY_ID,
    MAX_EVENT_SIZE,
    RECENT_EVENT_IDS,
    RecentIds,
    Repeat,
    check_delete,
    decide_write,
    validate_event,
)
from estwisted.storage.index import StreamIndex

__all__ = [
    "LINK_EVENT_TYPE",
    "MAX_EVENT_SIZE",
    "METADATA_EVENT_TYPE",
    "NO_METADATA",
    "RECENT_EVENT_IDS",
    "SYSTEM_PRINCIPAL",
    "TOMBSTONE_EVENT_TYPE",
    "CommitListener",
    "StreamMetadata",
    "StreamStore",
    "min_visible",
    "parse_link",
    "parse_metadata",
]

CommitListener = Callable[[Sequence[EventRecord]], None]

_log = Logger()

#: Above this many cached metadata entries the cache is dropped.
METADATA_CACHE_LIMIT = 200_000

_TICKS_PER_SECOND = 10_000_000

_T = TypeVar("_T")


def _error_slice(
    status: ReadStatus, error: str = "", last: int = -1, commit_position: int = -1
) -> StreamSlice:
    return StreamSlice(
        status=status,
        events=(),
        next_event_number=-1,
        last_event_number=last,
        is_end_of_stream=True,
        last_commit_position=commit_position,
        error=error,
    )


class _ReadAccessDeniedError(Exception):
    """
    A link target in a read is not readable by the reader.
    """


class _Transaction:
    __slots__ = ("stream", "expected_version", "events")

    def __init__(self, stream: str, expected_version: int) -> None:
        self.stream = stream
        self.expected_version = expected_version
        self.events: list[NewEvent] = []


def _added(items: list[_T], item: _T) -> Callable[[], None]:
    """
    Append C{item} to C{items}; return a callable that removes it again.
    """
    items.append(item)

    def remove() -> None:
        if item in items:
            items.remove(item)

    return remove


class StreamStore:
    """
    See the module docstring.

    @param log: where records go.
    @param index: the stream index, already loaded or rebuilt to the log's end.
    @param clock: schedules group commits (C{callLater(0, ...)}) and gives the
        time for C{created} stamps and C{$maxAge}.
    @param recent_event_ids: size of the idempotency cache.
    @param flusher: where group commits do their C{pwrite}/C{fdatasync}
        (L{estwisted.core.groupcommit.ThreadFlusher} on a node on disk);
        C{None}: in the reactor turn.
    @param unsafe_ignore_hard_delete: C{UnsafeIgnoreHardDelete}: a scavenge
        (from chunk 0) removes the tombstones of hard-deleted streams in the
        chunks it scavenges, and those streams may be written again
        (L{reopen_deleted}).
    @param random_bytes: randomness (C{os.urandom}), for transaction ids.
    """

    def __init__(
        self,
        log: IEventLog,
        index: StreamIndex,
        clock: IReactorTime,
        recent_event_ids: int = RECENT_EVENT_IDS,
        flusher: Optional[Flusher] = None,
        unsafe_ignore_hard_delete: bool = False,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.unsafe_ignore_hard_delete = unsafe_ignore_hard_delete
        self._log = log
        self._index = index
        self._clock = clock
        #: keyword arguments of the L{estwisted.core.scavenger.Scavenger}
        #: (the node's scavenge options), set before its first use
        self.scavenge_options: dict[str, Any] = {}
        # Group commit, and the state of writes buffered but not committed.
        self._commit = GroupCommit(log, clock, self, flusher)
        self._pending_last: dict[str, int] = {}
        self._pending_meta: dict[str, StreamMetadata] = {}
        # The idempotency window, rebuilt from the log's tail.
        self._recent = RecentIds(recent_event_ids)
        self._recent.rebuild(log)
        # Caches of committed state.
        self._meta_cache: dict[str, StreamMetadata] = {}
        self._settings: Optional[acl.SystemSettings] = None
        self._listeners: list[CommitListener] = []
        #: a committed batch is being acknowledged (between L{index_batch}
        #: and L{notify_batch}): the commit listeners run right after
        self.publishing = False
        self._system_watchers: list[Callable[[set[str]], None]] = []
        self._transactions: dict[int, _Transaction] = {}
        self._random_bytes = random_bytes
        #: When set (a cluster node that is not the leader), every write
        #: fails with it before touching the log.
        self.writes_refused: Optional[EstoreError] = None
        #: Called with the error whenever a write fails because the disk is
        #: full (a cluster node hands leadership over).
        self.on_disk_full: Optional[Callable[[DiskFull], None]] = None
        last = log.read_backward(log.end_position, 1)
        self._last_commit_position = last[0].position if last else 0

    # -- writes ------------------------------------------------------------

    def append(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        principal: Optional[Principal],
    ) -> Deferred[WriteResult]:
        d: Deferred[WriteResult] = Deferred()
        self.append_to(stream, expected_version, events, principal, d)
        return d

    def append_to(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        principal: Optional[Principal],
        waiter: WriteWaiter,
    ) -> None:
        """
        L{append}, telling C{waiter} (a L{Deferred} or a lighter object with
        the same C{callback}/C{errback}) instead of returning a Deferred.
        """
        try:
            if not stream or stream == "$all":
                self._check_stream_name(stream)
            for event in events:
                event_id = event.event_id
                event_type = event.event_type
                if (
                    len(event_id) != 16
                    or event_id == EMPTY_ID
                    or not event_type
                    or len(event.data) + len(event.metadata) + 2 * len(event_type) > MAX_EVENT_SIZE
                ):
                    validate_event(event)
            if self.writes_refused is not None:
                raise self.writes_refused
            if not self.check_access(principal, stream, acl.WRITE):
                raise AccessDenied(f"Write access denied for stream {stream!r}")
            self._write(stream, expected_version, events, waiter)
        except EstoreError as e:
            waiter.errback(e)

    def delete_stream(
        self,
        stream: str,
        expected_version: int,
        hard_delete: bool,
        principal: Optional[Principal],
    ) -> Deferred[WriteResult]:
        """
        Soft or hard delete; the result's C{position} is the delete record's.
        """
        try:
            self._check_stream_name(stream)
            if stream == acl.ALL_STREAM or acl.is_metastream(stream):
                raise AccessDenied(f"Stream {stream!r} cannot be deleted")
            if self.writes_refused is not None:
                raise self.writes_refused
            if not self.check_access(principal, stream, acl.DELETE):
                raise AccessDenied(f"Delete access denied for stream {stream!r}")
            return self._delete(stream, expected_version, hard_delete)
        except EstoreError as e:
            return fail(e)

    def set_metadata(
        self,
        stream: str,
        expected_version: int,
        metadata: bytes,
        principal: Optional[Principal],
    ) -> Deferred[WriteResult]:
        """
        Write JSON C{metadata} as a C{$metadata} event to C{$$stream}.
        C{expected_version} applies to the metastream.
        """
        if acl.is_metastream(stream):
            return fail(AccessDenied(f"Metastream {stream!r} has no metadata"))
        event = NewEvent(uuid.uuid4().bytes, METADATA_EVENT_TYPE, metadata, b"", True)
        return self.append("$$" + stream, expected_version, [event], principal)

    def start_transaction(
        self, stream: str, expected_version: int, principal: Optional[Principal]
    ) -> int:
        """
        @return: a new transaction id (>= 0).
        @raise AccessDenied: no write right.
        @raise BadRequest: bad stream name.
        """
        self._check_stream_name(stream)
        if not self.check_access(principal, stream, acl.WRITE):
            raise AccessDenied(f"Write access denied for stream {stream!r}")
        # Transactions live in this store's memory only.  Their ids are
        # random, not counted: a client that retries on another node (after
        # a failover) or after a restart can never name someone else's.
        while True:
            transaction_id = int.from_bytes(self._random_bytes(8), "big") >> 1
            if transaction_id not in self._transactions:
                break
        self._transactions[transaction_id] = _Transaction(stream, expected_version)
        return transaction_id

    def transaction_write(
        self, transaction_id: int, events: Sequence[NewEvent], principal: Optional[Principal]
    ) -> None:
        """
        Add events to an open transaction.

        @raise InvalidTransaction: unknown id.
        @raise AccessDenied: no write right.
        @raise BadRequest: an invalid event.
        """
        transaction = self._transactions.get(transaction_id)
        if transaction is None:
            raise InvalidTransaction(f"Unknown transaction {transaction_id}")
        if not self.check_access(principal, transaction.stream, acl.WRITE):
            raise AccessDenied(f"Write access denied for stream {transaction.stream!r}")
        for event in events:
            validate_event(event)
        transaction.events.extend(events)

    def commit_transaction(
        self, transaction_id: int, principal: Optional[Principal]
    ) -> Deferred[WriteResult]:
        transaction = self._transactions.pop(transaction_id, None)
        if transaction is None:
            return fail(InvalidTransaction(f"Unknown transaction {transaction_id}"))
        return self.append(
            transaction.stream, transaction.expected_version, transaction.events, principal
        )

    # -- reads -------------------------------------------------------------

    def read_event(
        self,
        stream: str,
        event_number: int,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> ReadEventResult:
        if not stream:
            return ReadEventResult(ReadStatus.ERROR, error="Empty stream name")
        if event_number < -1:
            return ReadEventResult(ReadStatus.ERROR, error=f"Bad event number {event_number}")
        if not self.check_access(principal, stream, acl.READ):
            return ReadEventResult(ReadStatus.ACCESS_DENIED)
        try:
            result = self._read_event(stream, event_number, resolve_links, principal)
        except _ReadAccessDeniedError:
            return ReadEventResult(ReadStatus.ACCESS_DENIED)
        except StorageError as e:
            _log.failure("Reading {stream} failed", stream=stream)
            return ReadEventResult(ReadStatus.ERROR, error=str(e))
        if (
            result.status in (ReadStatus.NOT_FOUND, ReadStatus.NO_STREAM)
            and acl.is_system_stream(stream)
            and self._original_exists(stream)
        ):
            return ReadEventResult(ReadStatus.SUCCESS)
        return result

    def read_stream(
        self,
        stream: str,
        from_event_number: int,
        max_count: int,
        forward: bool,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> StreamSlice:
        if not stream:
            return self._error_slice(ReadStatus.ERROR, "Empty stream name")
        if max_count > MAX_READ_COUNT:
            return self._error_slice(
                ReadStatus.ERROR,
                f"Read size too big, should be less than {MAX_READ_COUNT} items",
            )
        if max_count < 0:
            return self._error_slice(ReadStatus.ERROR, f"Bad max count {max_count}")
        if forward and from_event_number < 0:
            return self._error_slice(
                ReadStatus.ERROR, f"Bad start event number {from_event_number}"
            )
        if not self.check_access(principal, stream, acl.READ):
            return self._error_slice(ReadStatus.ACCESS_DENIED)
        try:
            return self._read_stream(
                stream, from_event_number, max_count, forward, resolve_links, principal
            )
        except _ReadAccessDeniedError:
            return self._error_slice(ReadStatus.ACCESS_DENIED)
        except StorageError as e:
            _log.failure("Reading {stream} failed", stream=stream)
            return self._error_slice(ReadStatus.ERROR, str(e))

    def read_all(
        self,
        position: int,
        max_count: int,
        forward: bool,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> AllSlice:
        """
        C{position} -1 means from the end, in both directions (v5's
        C{Position.End}): forwards it reads nothing and answers the end, so
        a catch-up subscription from the end goes live at once.
        """
        if max_count > MAX_READ_COUNT or max_count < 0:
            return AllSlice(
                ReadStatus.ERROR,
                (),
                position,
                position,
                f"Read size too big, should be less than {MAX_READ_COUNT} items",
            )
        if not self.check_access(principal, acl.ALL_STREAM, acl.READ):
            return AllSlice(ReadStatus.ACCESS_DENIED, (), position, position)
        log = self._log
        try:
            if forward:
                if position < 0:
                    position = self._committed_end()
                records = log.read_forward(position, max_count)
                if self._commit.gated:
                    records = self._committed_only(records)
                next_position = records[-1].next_position if records else position
            else:
                if position < 0 or position > log.end_position:
                    position = log.end_position
                records = log.read_backward(position, max_count)
                if self._commit.gated:
                    records = self._committed_only(records)
                next_position = records[-1].position if records else position
            if resolve_links:
                events = [self._resolve(r, principal) for r in records]
            else:
                events = [ResolvedEvent(r) for r in records]
        except _ReadAccessDeniedError:
            return AllSlice(ReadStatus.ACCESS_DENIED, (), position, position)
        except StorageError as e:
            _log.failure("Reading $all failed")
            return AllSlice(ReadStatus.ERROR, (), position, position, str(e))
        return AllSlice(ReadStatus.SUCCESS, events, position, next_position)

    def _committed_end(self) -> int:
        """
        The position just past the last committed record (records written
        but still waiting for the quorum are after it).
        """
        log = self._log
        if not self._commit.gated:
            end: int = log.end_position
            return end
        last = self._committed_only(log.read_forward(self._last_commit_position, 1))
        return last[0].next_position if last else self._last_commit_position

    def get_metadata(self, stream: str, principal: Optional[Principal]) -> MetadataResult:
        """
        @raise AccessDenied: no C{$mr} right.
        @raise BadRequest: empty stream name or a metastream.
        """
        self._check_stream_name(stream)
        if acl.is_metastream(stream):
            raise BadRequest(f"Metastream {stream!r} has no metadata")
        if not self.check_access(principal, "$$" + stream, acl.READ):
            raise AccessDenied(f"Metadata read access denied for stream {stream!r}")
        if self._index.tombstone(stream) is not None:
            return MetadataResult(stream, DELETED_STREAM, b"", True)
        metadata = self._metadata(stream)
        return MetadataResult(stream, metadata.version, metadata.raw, False)

    def stream_metadata(self, stream: str) -> StreamMetadata:
        """
        The parsed committed metadata of C{stream} (no ACL check).
        """
        return self._metadata(stream)

    def scavenger(self) -> Optional[Any]:
        """
        The L{estwisted.core.scavenger.Scavenger} of this store's log, created on
        first use; C{None} when the log cannot be scavenged (in memory).
        """
        existing = getattr(self, "_scavenger", None)
        if existing is None and hasattr(self._log, "replace_chunk"):
            from estwisted.core.scavenger import Scavenger

            existing = self._scavenger = Scavenger(
                self,
                self._log,  # type: ignore[arg-type]
                self._index,
                self._clock,
                **self.scavenge_options,
            )
        return existing

    # -- state -------------------------------------------------------------

    @property
    def last_commit_position(self) -> int:
        """
        The position of the last committed record (0 for an empty log).
        """
        return self._last_commit_position

    @property
    def writer_position(self) -> int:
        """
        The end of the log: what this node holds, committed or not (the
        writer checkpoint that gossip advertises and elections compare).
        """
        end: int = self._log.end_position
        return end

    def last_event_number(self, stream: str) -> int:
        """
        -1 when none, L{DELETED_STREAM} when hard-deleted.
        """
        if self._index.tombstone(stream) is not None:
            return DELETED_STREAM
        return self._index.last_event_number(stream)

    def add_system_stream_watcher(
        self, watcher: Callable[[set[str]], None]
    ) -> Callable[[], None]:
        """
        Tell C{watcher} the names of the system streams each flush (local
        or replicated) wrote.

        @return: a callable that removes the watcher.
        """
        return _added(self._system_watchers, watcher)

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """
        @return: a callable that removes the listener.
        """
        return _added(self._listeners, listener)

    # -- security ----------------------------------------------------------

    def check_access(self, principal: Optional[Principal], stream: str, operation: str) -> bool:
        """
        C{operation} is one of C{"$r"}, C{"$w"}, C{"$d"}, C{"$mr"}, C{"$mw"}.
        An empty C{stream} means C{$all} (as in subscription requests).
        """
        if principal is not None and "$admins" in principal.groups:
            return True
        if not stream:
            stream = acl.ALL_STREAM
        settings = self._settings
        if settings is None:
            settings = self._settings = self._load_settings()
        if stream[0] != "$":
            # Fast path: a user stream without an ACL of its own under the
            # built-in default ($all for every operation).
            metadata = self._meta_cache.get(stream)
            if metadata is None:
                metadata = self._metadata(stream)
            if metadata.acl is None and settings.user_stream_acl is None:
                return True
        resolved = acl.resolve_operation(stream, operation)
        if resolved is None:
            return False
        target, op = resolved
        metadata = self._metadata(target)
        return acl.has_role(principal, acl.required_roles(target, op, metadata.acl, settings))

    # -- internals: writing ------------------------------------------------

    def _check_stream_name(self, stream: str) -> None:
        if not stream:
            raise BadRequest("Empty stream name")
        if stream == acl.ALL_STREAM:
            raise AccessDenied("Cannot write to $all")

    def _current(self, stream: str) -> int:
        """
        The stream's last event number including buffered writes.
        """
        current = self._pending_last.get(stream)
        if current is not None:
            return current
        if self._index.tombstone(stream) is not None:
            return DELETED_STREAM
        return self._index.last_event_number(stream)

    def _write_metadata(self, stream: str) -> StreamMetadata:
        """
        The metadata of C{stream} including buffered metadata writes.
        """
        metadata = self._pending_meta.get(stream)
        if metadata is not None:
            return metadata
        return self._metadata(stream)

    def _write(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        waiter: WriteWaiter,
    ) -> None:
        """
        The expected-version check, then buffer the records (tcp-protocol.md
        6.2).  Access was checked.
        """
        if stream[0] == "$" and stream.startswith("$$"):
            self._write_metastream(stream, expected_version, events, waiter)
            return
        # _current and _write_metadata, inlined: this is the hot path.
        current = self._pending_last.get(stream)
        if current is None:
            index = self._index
            if index.tombstone(stream) is not None:
                current = DELETED_STREAM
            else:
                current = index.last_event_number(stream)
        metadata = self._pending_meta.get(stream)
        if metadata is None:
            metadata = self._meta_cache.get(stream)
            if metadata is None:
                metadata = self._metadata(stream)
        if current != DELETED_STREAM and (
            expected_version == current
            or (
                expected_version == EXPECTED_ANY
                and (not events or self._recent.get(events[0].event_id) is None)
            )
        ):
            # decide_write's common outcomes, without its call: a new write
            first = current + 1
        else:
            decision = self._decide(stream, expected_version, events, current, metadata)
            if isinstance(decision, Repeat):
                self._repeat(decision, waiter)
                return
            first = decision
        created = UNIX_EPOCH_TICKS + int(self._clock.seconds() * _TICKS_PER_SECOND)
        result = self._buffer(stream, first, events, created)
        if metadata.truncate_before == DELETED_STREAM and events:
            self._buffer_undelete(stream, metadata, first, created)
        self._commit.wait_with(result, waiter)

    def _write_metastream(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        waiter: WriteWaiter,
    ) -> None:
        original = stream[2:]
        if self._current(original) == DELETED_STREAM:
            raise StreamDeleted(f"Stream {original!r} is deleted")
        current = self._current(stream)
        decision = self._decide(stream, expected_version, events, current, METASTREAM_METADATA)
        if isinstance(decision, Repeat):
            self._repeat(decision, waiter)
            return
        created = ticks_from_unix(self._clock.seconds())
        original_metadata = self._write_metadata(original)
        if original_metadata.is_soft_deleted and events:
            self._buffer_undelete(original, original_metadata, self._current(original) + 1, created)
            decision = self._current(stream) + 1
        result = self._buffer(stream, decision, events, created)
        if events:
            last = events[-1]
            self._pending_meta[original] = parse_metadata(
                last.data, last.is_json, result.last_event_number
            )
        self._commit.wait_with(result, waiter)

    def _decide(
        self,
        stream: str,
        expected: int,
        events: Sequence[NewEvent],
        current: int,
        metadata: StreamMetadata,
    ) -> Union[int, Repeat]:
        """
        L{decide_write} against this store's index and idempotency window.
        """
        return decide_write(
            stream,
            expected,
            events,
            current,
            metadata,
            self._recent,
            lambda number, event_id: self._has_event_id(stream, number, event_id),
            lambda: self._current("$$" + stream) >= 0,
        )

    def _repeat(self, decision: Repeat, waiter: WriteWaiter) -> None:
        """
        Answer an idempotent repeat once what it matched is committed.
        """
        self._commit.wait_with(WriteResult(decision.first, decision.last, -1), waiter)

    def _has_event_id(self, stream: str, number: int, event_id: bytes) -> bool:
        known = self._recent.get(event_id)
        if known is not None and known[0] == stream and known[1] == number:
            return True
        position = self._index.get(stream, number)
        if position is None or position < 0:
            return False
        try:
            found: bool = self._log.read(position).event_id == event_id
            return found
        except KeyError:
            # removed by a scavenge
            return False

    def _buffer(
        self, stream: str, first: int, events: Sequence[NewEvent], created: int
    ) -> WriteResult:
        """
        Append the records of one write to the log's buffer.
        """
        if not events:
            return WriteResult(first, first - 1, -1)
        try:
            positions, nexts = self._log.append_many(stream, first, events, created)
        except Exception as e:
            self._commit.append_failed(PendingWrite(stream, first, events, [], [], created))
            if isinstance(e, DiskFull):
                self._disk_full(e)
            if isinstance(e, EstoreError):
                raise
            raise StorageError(f"Cannot append to the log: {e}") from e
        number = first + len(events)
        # A copy: the caller may reuse its list before the flush.
        copied = tuple(events)
        self._recent.add(
            stream,
            first,
            [copied[0].event_id] if len(copied) == 1 else [event.event_id for event in copied],
        )
        self._commit.buffered(PendingWrite(stream, first, copied, positions, nexts, created))
        self._pending_last[stream] = number - 1
        return WriteResult(first, number - 1, positions[0])

    def _buffer_undelete(
        self, stream: str, metadata: StreamMetadata, first_new: int, created: int
    ) -> None:
        """
        Re-create a soft-deleted stream: rewrite its metadata with C{$tb} =
        the first new event number, keeping the other keys.
        """
        data: dict[str, Any] = dict(metadata.data or {})
        data["$tb"] = first_new
        raw = json.dumps(data, separators=(",", ":")).encode("utf-8")
        metastream = "$$" + stream
        number = self._current(metastream) + 1
        event = NewEvent(uuid.uuid4().bytes, METADATA_EVENT_TYPE, raw, b"", True)
        self._buffer(metastream, number, [event], created)
        self._pending_meta[stream] = parse_metadata(raw, True, number)

    def _delete(self, stream: str, expected: int, hard: bool) -> Deferred[WriteResult]:
        current = self._current(stream)
        metadata = self._write_metadata(stream)
        check_delete(
            stream, expected, current, metadata, lambda: self._current("$$" + stream) >= 0
        )
        created = ticks_from_unix(self._clock.seconds())
        if hard:
            tombstone = NewEvent(uuid.uuid4().bytes, TOMBSTONE_EVENT_TYPE)
            position = self._log.append(
                stream,
                DELETED_STREAM,
                tombstone.event_id,
                TOMBSTONE_EVENT_TYPE,
                FLAG_TOMBSTONE,
                b"",
                b"",
                created,
            )
            self._commit.buffered(
                PendingWrite(
                    stream,
                    DELETED_STREAM,
                    (tombstone,),
                    [position],
                    [self._log.pending_position],
                    created,
                    tombstone=True,
                )
            )
            self._pending_last[stream] = DELETED_STREAM
            return self._wait(WriteResult(DELETED_STREAM, DELETED_STREAM, position))
        raw = json.dumps({"$tb": DELETED_STREAM}, separators=(",", ":")).encode("utf-8")
        metastream = "$$" + stream
        number = self._current(metastream) + 1
        event = NewEvent(uuid.uuid4().bytes, METADATA_EVENT_TYPE, raw, b"", True)
        result = self._buffer(metastream, number, [event], created)
        self._pending_meta[stream] = parse_metadata(raw, True, number)
        return self._wait(result)

    def _wait(self, result: WriteResult) -> Deferred[WriteResult]:
        return self._commit.wait(result)

    def flush_now(self) -> None:
        """
        Make buffered writes durable now (the node is stopping).
        """
        self._commit.flush_now()

    # -- group commit (estwisted.core.groupcommit.CommitSink) -------------------

    def index_batch(self, batch: list[PendingWrite]) -> None:
        """
        Index a committed batch (before its writes are acknowledged).
        """
        system: set[str] = set()
        index = self._index
        add = index.add
        extend = index.extend
        for write in batch:
            positions = write.positions
            if len(positions) == 1:
                add(write.stream, write.first, positions[0])
            else:
                extend(write.stream, write.first, array("q", positions))
            if write.stream[0] == "$":
                system.add(write.stream)
        if batch:
            self._last_commit_position = batch[-1].positions[-1]
        if system:
            self._invalidate(system)
        # the batch's acknowledgements follow, then notify_batch
        self.publishing = bool(batch)

    def notify_batch(self, batch: list[PendingWrite]) -> None:
        """
        Tell the commit listeners about a committed batch.
        """
        self.publishing = False
        if self._listeners:
            records = BatchRecords(batch)
            for listener in list(self._listeners):
                try:
                    listener(records)
                except Exception:
                    _log.failure("Commit listener {listener!r} failed", listener=listener)

    def pending_settled(self) -> None:
        self._pending_last.clear()
        self._pending_meta.clear()

    def _disk_full(self, error: DiskFull) -> None:
        if self.on_disk_full is not None:
            try:
                self.on_disk_full(error)
            except Exception:
                _log.failure("The disk-full listener failed")

    def batch_failed(self, batch: list[PendingWrite], error: Optional[Exception] = None) -> None:
        if isinstance(error, DiskFull):
            self._disk_full(error)
        # What is buffered behind the failed batch failed with it; what is
        # flushed and gated before it stays: the next write of its streams
        # must still follow it.
        self.pending_settled()
        for write in self._commit.unpublished():
            self._pending_from(write)
        for write in batch:
            self._recent.forget(write.stream, write.first, [e.event_id for e in write.events])

    def _pending_from(self, write: PendingWrite) -> None:
        """
        Put back the pending version (and metadata) that C{write}, still
        unpublished, gave its stream when it was buffered.
        """
        if write.tombstone:
            self._pending_last[write.stream] = DELETED_STREAM
            return
        if not write.events:
            return
        last = write.first + len(write.events) - 1
        self._pending_last[write.stream] = last
        if write.stream.startswith("$$"):
            event = write.events[-1]
            self._pending_meta[write.stream[2:]] = parse_metadata(event.data, event.is_json, last)

    # -- replication hooks (estwisted.replication) ------------------------

    def set_commit_gate(self, gate: Optional[ICommitGate]) -> None:
        """
        Make writes wait for replication: after each group commit,
        C{gate.commit(end)} returns a Deferred that fires when a quorum has
        the log up to C{end}; only then are the writes indexed (visible to
        stream reads and subscriptions) and acknowledged.  When it fails,
        the batch's writes fail with its error (the records stay in the log
        and are indexed with a later batch or by L{release_gated}).  An
        idempotent repeat waits for the gate too.  C{None} (the default, a
        single node) publishes at once.
        """
        self._commit.set_gate(gate)

    def _committed_only(self, records: list[EventRecord]) -> list[EventRecord]:
        """
        A clustered leader's C{$all} reads stop at the last record the
        quorum has (the log holds later ones that may still be lost).
        """
        limit = self._last_commit_position
        if records and max(records[0].position, records[-1].position) > limit:
            return [r for r in records if r.position <= limit]
        return records

    def release_gated(self) -> None:
        """
        Leadership ended: index the batches still waiting for the quorum
        (their writes failed already); a later truncation removes what the
        new leader does not have.
        """
        self._commit.release_gated()

    def apply_replicated(self, records: Sequence[EventRecord]) -> None:
        """
        A replica appended and flushed C{records} (client records, log
        order): index them and notify listeners, as a local commit does.
        """
        if not records:
            return
        index = self._index
        system: set[str] = set()
        # remembered for idempotency, as local writes are: a client that
        # retries on a new leader with the same event ids must not write
        # them twice
        add_recent = self._recent.add
        for r in records:
            # events removed by the leader's scavenge leave gaps (-1)
            index.add_after_gap(r.stream, r.event_number, r.position)
            if r.stream and r.stream[0] == "$":
                system.add(r.stream)
            add_recent(r.stream, r.event_number, (r.event_id,))
        self._last_commit_position = records[-1].position
        if system:
            self._invalidate(system)
        for listener in list(self._listeners):
            try:
                listener(list(records))
            except Exception:
                _log.failure("Commit listener {listener!r} failed", listener=listener)

    def truncated(self, position: int) -> None:
        """
        The log was cut at C{position} (a replica dropping a deposed
        leader's tail): forget index entries and cached state past it; the
        idempotency window is rebuilt from what the log still holds.
        """
        self._index.truncate_from(position)
        self._commit.reset()
        self._pending_last.clear()
        self._pending_meta.clear()
        self._meta_cache.clear()
        self._settings = None
        self._recent.rebuild(self._log)
        last = self._log.read_backward(self._log.end_position, 1)
        self._last_commit_position = last[0].position if last else 0

    def reopen_deleted(self, stream: str) -> None:
        """
        A scavenge with C{UnsafeIgnoreHardDelete} removed C{stream}'s
        tombstone and every record of it and of its metastream: forget
        them, so the stream reads as never written and a write with
        expected version C{NoStream} starts it again at event 0 (Event Store
        v5's behaviour after such a scavenge).
        """
        for name in (stream, "$$" + stream):
            self._index.drop(name)
            self._meta_cache.pop(name, None)
            self._pending_last.pop(name, None)
            self._pending_meta.pop(name, None)

    def _invalidate(self, streams: set[str]) -> None:
        """
        Drop cached state derived from system streams written in a batch.
        """
        for stream in streams:
            if stream.startswith("$$"):
                original = stream[2:]
                self._meta_cache.pop(original, None)
                if original == acl.SETTINGS_STREAM:
                    self._settings = None
            elif stream == acl.SETTINGS_STREAM:
                self._settings = None
            if self._index.tombstone(stream) is not None:
                self._meta_cache.pop(stream, None)
        for watcher in list(self._system_watchers):
            try:
                watcher(streams)
            except Exception:
                _log.failure("System stream watcher {watcher!r} failed", watcher=watcher)

    # -- internals: reading ------------------------------------------------

    def _metadata(self, stream: str) -> StreamMetadata:
        """
        Committed metadata of C{stream}, cached.
        """
        metadata = self._meta_cache.get(stream)
        if metadata is not None:
            return metadata
        if stream.startswith("$$"):
            return METASTREAM_METADATA
        metastream = "$$" + stream
        last = self._index.last_event_number(metastream)
        if last < 0:
            metadata = NO_METADATA
        else:
            position = self._index.get(metastream, last)
            assert position is not None
            record = self._log.read(position)
            metadata = parse_metadata(record.data, record.is_json, last)
        cache = self._meta_cache
        if len(cache) >= METADATA_CACHE_LIMIT:
            cache.clear()
        cache[stream] = metadata
        return metadata

    def _load_settings(self) -> acl.SystemSettings:
        stream = acl.SETTINGS_STREAM
        last = self._index.last_event_number(stream)
        if last < 0 or self._index.tombstone(stream) is not None:
            return acl.NO_SETTINGS
        metadata = self._metadata(stream)
        if last < min_visible(last, metadata):
            return acl.NO_SETTINGS
        position = self._index.get(stream, last)
        assert position is not None
        return acl.parse_settings(self._log.read(position).data)

    def _original_exists(self, stream: str) -> bool:
        original = stream[2:] if stream.startswith("$$") else stream
        return self.last_event_number(original) != -1

    def _error_slice(self, status: ReadStatus, error: str = "", last: int = -1) -> StreamSlice:
        return _error_slice(status, error, last, self._last_commit_position)

    def _stream_state(self, stream: str) -> tuple[Optional[StreamSlice], int, StreamMetadata]:
        """
        The common start of stream reads: an early reply for a missing or
        deleted stream, else C{(None, last, metadata)}.
        """
        index = self._index
        if index.tombstone(stream) is not None or (
            stream.startswith("$$") and index.tombstone(stream[2:]) is not None
        ):
            return self._error_slice(ReadStatus.STREAM_DELETED, last=DELETED_STREAM), 0, NO_METADATA
        last = index.last_event_number(stream)
        metadata = self._metadata(stream)
        if last == -1 or metadata.is_soft_deleted:
            return self._error_slice(ReadStatus.NO_STREAM), 0, NO_METADATA
        return None, last, metadata

    def _read_event(
        self,
        stream: str,
        event_number: int,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> ReadEventResult:
        early, last, metadata = self._stream_state(stream)
        if early is not None:
            return ReadEventResult(early.status)
        if event_number == -1:
            event_number = last
        if event_number < min_visible(last, metadata) or event_number > last:
            return ReadEventResult(ReadStatus.NOT_FOUND)
        position = self._index.get(stream, event_number)
        if position is None or position < 0:
            return ReadEventResult(ReadStatus.NOT_FOUND)
        try:
            record = self._log.read(position)
        except KeyError:
            # removed by a scavenge (an index entry persisted before it)
            return ReadEventResult(ReadStatus.NOT_FOUND)
        if metadata.max_age is not None and record.created < self._age_threshold(metadata):
            return ReadEventResult(ReadStatus.NOT_FOUND)
        if resolve_links:
            return ReadEventResult(ReadStatus.SUCCESS, self._resolve(record, principal))
        return ReadEventResult(ReadStatus.SUCCESS, ResolvedEvent(record))

    def _age_threshold(self, metadata: StreamMetadata) -> int:
        assert metadata.max_age is not None
        return ticks_from_unix(self._clock.seconds()) - metadata.max_age * _TICKS_PER_SECOND

    def _read_stream(
        self,
        stream: str,
        start: int,
        max_count: int,
        forward: bool,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> StreamSlice:
        early, last, metadata = self._stream_state(stream)
        if early is not None:
            return early
        lowest = min_visible(last, metadata)
        commit = self._last_commit_position
        if forward:
            end = start + max_count - 1
            if end < lowest:
                return StreamSlice(ReadStatus.SUCCESS, (), lowest, last, False, commit)
            records = self._records(stream, max(start, lowest), end, metadata)
            next_number = min(end + 1, last + 1)
            if records:
                next_number = records[-1].event_number + 1
            events = self._resolve_all(records, resolve_links, principal)
            return StreamSlice(ReadStatus.SUCCESS, events, next_number, last, end >= last, commit)
        end = last if start < 0 else start
        first = max(0, end - max_count + 1)
        if end < lowest:
            return StreamSlice(ReadStatus.SUCCESS, (), -1, last, True, commit)
        is_end = False
        if first <= lowest:
            is_end = True
            first = lowest
        records = self._records(stream, first, end, metadata)
        records.reverse()
        is_end = (
            is_end
            or first == 0
            or (first <= last and (not records or records[-1].event_number != first))
        )
        next_number = -1 if is_end else min(first - 1, last)
        events = self._resolve_all(records, resolve_links, principal)
        return StreamSlice(ReadStatus.SUCCESS, events, next_number, last, is_end, commit)

    def _records(
        self, stream: str, first: int, last: int, metadata: StreamMetadata
    ) -> list[EventRecord]:
        """
        The records C{first}..C{last} of C{stream} (clamped), ascending,
        without those older than C{$maxAge}.
        """
        if first > last:
            return []
        read = self._log.read
        positions = self._index.positions(stream, first, last)
        try:
            records = [read(p) for p in positions]
        except KeyError:
            # some were removed by a scavenge (-1 in the index, or an entry
            # persisted before the scavenge): skip them
            records = []
            for p in positions:
                if p >= 0:
                    try:
                        records.append(read(p))
                    except KeyError:
                        pass
        if metadata.max_age is not None:
            threshold = self._age_threshold(metadata)
            records = [r for r in records if r.created >= threshold]
        return records

    def _resolve_all(
        self, records: list[EventRecord], resolve_links: bool, principal: Optional[Principal]
    ) -> list[ResolvedEvent]:
        if resolve_links:
            return [self._resolve(r, principal) for r in records]
        return [ResolvedEvent(r) for r in records]

    def _resolve(self, record: EventRecord, principal: Optional[Principal]) -> ResolvedEvent:
        """
        Resolve a link record (tcp-protocol.md 6.6); other records as they
        are.

        @raise _ReadAccessDeniedError: the target stream is not readable.
        """
        if record.event_type != LINK_EVENT_TYPE:
            return ResolvedEvent(record)
        target = parse_link(record.data)
        if target is None:
            return ResolvedEvent(record)
        number, stream = target
        if not self.check_access(principal, stream, acl.READ):
            raise _ReadAccessDeniedError(stream)
        result = self._read_event(stream, number, False, principal)
        if result.status != ReadStatus.SUCCESS or result.event is None:
            return ResolvedEvent(None, record)
        return ResolvedEvent(result.event.event, record)


def _records_of(batch: list[PendingWrite]) -> list[EventRecord]:
    """
    The L{EventRecord}s of a flushed batch, built from what was appended.
    """
    records: list[EventRecord] = []
    add = records.append
    for write in batch:
        stream = write.stream
        positions = write.positions
        nexts = write.nexts
        created = write.created
        if write.tombstone:
            event = write.events[0]
            add(
                EventRecord(
                    positions[0],
                    nexts[0],
                    stream,
                    DELETED_STREAM,
                    event.event_id,
                    event.event_type,
                    FLAG_TOMBSTONE,
                    b"",
                    b"",
                    created,
                )
            )
            continue
        number = write.first
        for i, event in enumerate(write.events):
            add(
                EventRecord(
                    positions[i],
                    nexts[i],
                    stream,
                    number,
                    event.event_id,
                    event.event_type,
                    FLAG_JSON if event.is_json else 0,
                    event.data,
                    event.metadata,
                    created,
                )
            )
            number += 1
    return records


class BatchRecords(Sequence[EventRecord]):
    """
    The records of one flush for commit listeners, built on first use (a
    flush nobody subscribed to builds none).
    """

    __slots__ = ("_batch", "_records")

    def __init__(self, batch: list[PendingWrite]) -> None:
        self._batch = batch
        self._records: Optional[list[EventRecord]] = None

    def _materialize(self) -> list[EventRecord]:
        records = self._records
        if records is None:
            records = self._records = _records_of(self._batch)
        return records

    def counts(self) -> tuple[int, int]:
        """
        C{(writes, events)} of the batch, without building its records.
        """
        batch = self._batch
        return len(batch), sum([len(write.events) for write in batch])

    def __len__(self) -> int:
        return len(self._materialize())

    @overload
    def __getitem__(self, index: int) -> EventRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[EventRecord]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[EventRecord, Sequence[EventRecord]]:
        return self._materialize()[index]

    def __iter__(self) -> Iterator[EventRecord]:
        return iter(self._materialize())

    def __repr__(self) -> str:
        return f"BatchRecords({self._materialize()!r})"
