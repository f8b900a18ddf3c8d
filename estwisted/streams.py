# -*- test-case-name: estwisted.test.test_streams -*-
"""
The stream store: the one core that the TCP protocol, the HTTP API and the
subscription machinery all call.  It owns expected-version checks,
idempotency, soft and hard deletes, metadata, ACL checks, transactions,
users, and group commit over an L{IEventLog}.

Contract (the edges rely on it):

  - Writes return Deferreds that fire after the records are durable (one
    flush shared by every write that arrived in the same reactor turn), with
    L{WriteResult}, or fail with an L{estwisted.errors.OperationError}
    subclass (L{WrongExpectedVersion}, L{StreamDeleted}, L{AccessDenied},
    L{InvalidTransaction}, L{BadRequest}) or L{StorageError}.
  - Reads are synchronous and return result values whose C{status} carries
    NoStream / StreamDeleted / AccessDenied / Error; they do not raise for
    those.
  - C{principal} is C{None} for anonymous callers; edges authenticate with
    L{StreamStore.authenticate} first.
  - Listeners added with L{StreamStore.add_commit_listener} are called with the
    list of L{EventRecord}s of each flush, in log order, after the index was
    updated: subscriptions hang off that.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from estwisted.interfaces import IEventLog
from estwisted.model import (
    AllSlice,
    EventRecord,
    MetadataResult,
    NewEvent,
    Principal,
    ReadEventResult,
    StreamSlice,
    WriteResult,
)
from estwisted.storage.index import StreamIndex

CommitListener = Callable[[Sequence[EventRecord]], None]


class StreamStore:
    """
    See the module docstring.

    @param log: where records go.
    @param index: the stream index, already loaded or rebuilt to the log's end.
    @param clock: schedules group commits (C{callLater(0, ...)}) and gives the
        time for C{created} stamps and C{$maxAge}.
    """

    def __init__(self, log: IEventLog, index: StreamIndex, clock: IReactorTime) -> None:
        raise NotImplementedError

    # -- writes ------------------------------------------------------------

    def append(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        principal: Optional[Principal],
    ) -> Deferred[WriteResult]:
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

    def start_transaction(
        self, stream: str, expected_version: int, principal: Optional[Principal]
    ) -> int:
        """
        @return: a new transaction id (>= 0).
        @raise AccessDenied: no write right.
        """
        raise NotImplementedError

    def transaction_write(
        self, transaction_id: int, events: Sequence[NewEvent], principal: Optional[Principal]
    ) -> None:
        raise NotImplementedError

    def commit_transaction(
        self, transaction_id: int, principal: Optional[Principal]
    ) -> Deferred[WriteResult]:
        raise NotImplementedError

    # -- reads -------------------------------------------------------------

    def read_event(
        self,
        stream: str,
        event_number: int,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> ReadEventResult:
        raise NotImplementedError

    def read_stream(
        self,
        stream: str,
        from_event_number: int,
        max_count: int,
        forward: bool,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> StreamSlice:
        raise NotImplementedError

    def read_all(
        self,
        position: int,
        max_count: int,
        forward: bool,
        resolve_links: bool,
        principal: Optional[Principal],
    ) -> AllSlice:
        """
        C{position} -1 with C{forward=False} means from the end.
        """
        raise NotImplementedError

    def get_metadata(self, stream: str, principal: Optional[Principal]) -> MetadataResult:
        """
        @raise AccessDenied: no C{$mr} right.
        """
        raise NotImplementedError

    # -- state -------------------------------------------------------------

    @property
    def last_commit_position(self) -> int:
        raise NotImplementedError

    def last_event_number(self, stream: str) -> int:
        """
        -1 when none, L{DELETED_STREAM} when hard-deleted.
        """
        raise NotImplementedError

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """
        @return: a callable that removes the listener.
        """
        raise NotImplementedError

    # -- security ----------------------------------------------------------

    def authenticate(self, login: str, password: str) -> Principal:
        """
        @raise NotAuthenticated: unknown user, wrong password or disabled.
        """
        raise NotImplementedError

    def check_access(self, principal: Optional[Principal], stream: str, operation: str) -> bool:
        """
        C{operation} is one of C{"$r"}, C{"$w"}, C{"$d"}, C{"$mr"}, C{"$mw"}.
        """
        raise NotImplementedError
