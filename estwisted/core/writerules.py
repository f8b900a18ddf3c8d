# -*- test-case-name: estwisted.core.test.test_writerules -*-
"""
The rules that decide a write (tcp-protocol.md 6.2), shared by append,
metadata writes, transaction commits and deletes: expected-version checks,
idempotency against the window of recent event ids, and event validation.

Pure: the caller passes the stream's current state (buffered writes
included) and lookups into the index; nothing here touches the reactor or
writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Optional, Union

from attrs import frozen

from estwisted.core.errors import BadRequest, StreamDeleted, WrongExpectedVersion
from estwisted.core.interfaces import IEventLog
from estwisted.core.metadata import StreamMetadata
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    EXPECTED_STREAM_EXISTS,
    NewEvent,
)

#: Largest C{len(data) + len(metadata) + 2 * len(event_type)} of one event.
MAX_EVENT_SIZE = 16 * 1024 * 1024 - 10_000

#: How many recently written event ids are remembered for idempotency of
#: C{Any}/C{StreamExists} writes (tcp-protocol.md 6.2 step 3) by default
#: (a node takes C{IdempotencyWindow}).
RECENT_EVENT_IDS = 50_000

EMPTY_ID = b"\x00" * 16


@frozen
class Repeat:
    """
    The decision for a write whose events are already stored: nothing is
    written; the write is answered with the original event numbers (once
    those are committed).
    """

    first: int
    last: int


#: A decision: the first event number to append at, or a L{Repeat}.
Decision = Union[int, Repeat]


class RecentIds:
    """
    The idempotency window: the last C{size} event ids written (or
    replicated) with their stream and event number, oldest evicted first.
    It is rebuilt from the log's tail on start and after a truncation
    (L{rebuild}), so neither shortens it.

    @param size: how many ids are remembered (at least 1).
    """

    __slots__ = ("_ids", "_ring", "_values", "_next")

    def __init__(self, size: int = RECENT_EVENT_IDS) -> None:
        self._ids: dict[bytes, tuple[str, int]] = {}
        # the ids in order of adding, and the value each add stored: an
        # evicted slot drops its id only if no later add re-stored it
        self._ring: list[Optional[bytes]] = [None] * max(1, size)
        self._values: list[Optional[tuple[str, int]]] = [None] * max(1, size)
        self._next = 0

    @property
    def size(self) -> int:
        return len(self._ring)

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, event_id: bytes) -> Optional[tuple[str, int]]:
        """
        The C{(stream, event number)} last written with C{event_id}.
        """
        return self._ids.get(event_id)

    def add(self, stream: str, first: int, event_ids: Iterable[bytes]) -> None:
        """
        Remember C{event_ids} as written to C{stream} from event number
        C{first} on.
        """
        ids = self._ids
        ring = self._ring
        values = self._values
        size = len(ring)
        slot = self._next
        if not isinstance(event_ids, list):
            event_ids = list(event_ids)
        count = len(event_ids)
        end = slot + count
        if count > 1 and end <= size:
            # the common case, whole slices at once
            get = ids.get
            for old, stored in zip(ring[slot:end], values[slot:end], strict=True):
                if old is not None and get(old) is stored:
                    del ids[old]
            new = [(stream, number) for number in range(first, first + count)]
            ring[slot:end] = event_ids
            values[slot:end] = new
            ids.update(zip(event_ids, new, strict=True))
            self._next = 0 if end == size else end
            return
        number = first
        for event_id in event_ids:
            old = ring[slot]
            if old is not None and ids.get(old) is values[slot]:
                del ids[old]
            value = (stream, number)
            ring[slot] = event_id
            values[slot] = value
            ids[event_id] = value
            slot += 1
            if slot == size:
                slot = 0
            number += 1
        self._next = slot

    def forget(self, stream: str, first: int, event_ids: Iterable[bytes]) -> None:
        """
        Drop ids of a write that failed (only where they still map to it).
        """
        ids = self._ids
        for number, event_id in enumerate(event_ids, first):
            if ids.get(event_id) == (stream, number):
                del ids[event_id]

    def rebuild(self, log: IEventLog) -> None:
        """
        Refill the window from the last records of C{log} (client records
        of a stream, oldest first).
        """
        size = len(self._ring)
        found: list[tuple[bytes, str, int]] = []
        position = log.end_position
        for _ in range(size // 500 + 2):
            if len(found) >= size or position <= 0:
                break
            page = log.read_backward(position, 1000)
            if not page:
                break
            for r in page:
                if r.stream and r.event_number >= 0:
                    found.append((r.event_id, r.stream, r.event_number))
            position = page[-1].position
        del found[size:]
        found.reverse()
        self._ids = {}
        self._ring = [None] * size
        self._values = [None] * size
        self._next = 0
        for event_id, stream, number in found:
            self.add(stream, number, (event_id,))


def decide_write(
    stream: str,
    expected: int,
    events: Sequence[NewEvent],
    current: int,
    metadata: StreamMetadata,
    recent: RecentIds,
    has_event_id: Callable[[int, bytes], bool],
    metastream_exists: Callable[[], bool],
) -> Decision:
    """
    Decide a write of C{events} to C{stream} expecting C{expected}.

    @param current: the stream's last event number, buffered writes
        included (L{DELETED_STREAM} when hard-deleted).
    @param has_event_id: C{has_event_id(number, event_id)}: whether the
        stream's event C{number} has C{event_id}.
    @param metastream_exists: whether the stream's metastream has an event
        (a stream with metadata only "exists" for C{StreamExists}).
    @return: the first event number to append at, or a L{Repeat}.
    @raise StreamDeleted: hard-deleted, or soft-deleted and
        C{StreamExists} expected.
    @raise WrongExpectedVersion: the check failed, or the ids match only
        part of an earlier write.
    @raise BadRequest: an invalid expected version.
    """
    if current == DELETED_STREAM:
        raise StreamDeleted(f"Stream {stream!r} is deleted")
    soft_deleted = metadata.is_soft_deleted
    if expected == EXPECTED_STREAM_EXISTS:
        if soft_deleted:
            raise StreamDeleted(f"Stream {stream!r} is deleted")
        if current == -1 and not metastream_exists():
            raise WrongExpectedVersion(stream, current)
    if expected == EXPECTED_ANY or expected == EXPECTED_STREAM_EXISTS:
        if not events:
            return current + 1
        first = recent.get(events[0].event_id)
        if first is None or first[0] != stream:
            return current + 1
        last = first
        for event in events:
            known = recent.get(event.event_id)
            if known is None or known[0] != stream:
                raise WrongExpectedVersion(
                    stream, current, "Corrupted idempotency: partially known events"
                )
            last = known
        return Repeat(first[1], last[1])
    if expected < EXPECTED_NO_STREAM:
        raise BadRequest(f"Invalid expected version {expected}")
    if expected < current:
        if not events:
            raise WrongExpectedVersion(stream, current)
        number = expected + 1
        for i, event in enumerate(events):
            if number > current or not has_event_id(number, event.event_id):
                if i == 0 and expected == EXPECTED_NO_STREAM and soft_deleted:
                    return current + 1
                raise WrongExpectedVersion(stream, current)
            number += 1
        return Repeat(expected + 1, expected + len(events))
    if expected > current:
        raise WrongExpectedVersion(stream, current)
    return current + 1


def check_delete(
    stream: str,
    expected: int,
    current: int,
    metadata: StreamMetadata,
    metastream_exists: Callable[[], bool],
) -> None:
    """
    Check a delete of C{stream} expecting C{expected}.

    @raise StreamDeleted: already hard-deleted, or soft-deleted and
        C{StreamExists} expected.
    @raise WrongExpectedVersion: the check failed.
    @raise BadRequest: an invalid expected version.
    """
    if current == DELETED_STREAM:
        raise StreamDeleted(f"Stream {stream!r} is deleted")
    if expected == EXPECTED_STREAM_EXISTS:
        if metadata.is_soft_deleted:
            raise StreamDeleted(f"Stream {stream!r} is deleted")
        if current == -1 and not metastream_exists():
            raise WrongExpectedVersion(stream, current)
    elif expected == EXPECTED_NO_STREAM:
        if current != -1 and not metadata.is_soft_deleted:
            raise WrongExpectedVersion(stream, current)
    elif expected != EXPECTED_ANY:
        if expected < EXPECTED_NO_STREAM:
            raise BadRequest(f"Invalid expected version {expected}")
        if expected != current:
            raise WrongExpectedVersion(stream, current)


def validate_event(event: NewEvent) -> None:
    """
    @raise BadRequest: empty or malformed event id, empty type, too big.
    """
    if len(event.event_id) != 16 or event.event_id == EMPTY_ID:
        raise BadRequest("Empty or malformed event id")
    if not event.event_type:
        raise BadRequest("Empty event type")
    if len(event.data) + len(event.metadata) + 2 * len(event.event_type) > MAX_EVENT_SIZE:
        raise BadRequest("Event too big")
