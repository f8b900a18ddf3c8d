# -*- test-case-name: estwisted.storage.test.test_index -*-
"""
The stream index: stream name -> event number -> log position.

Event numbers are dense from 0 in every stream, so a stream's positions are
one C{array('q')} indexed by event number: 8 bytes per event and no Python
object per event.  The hard-delete tombstone (event number
L{DELETED_STREAM}) is kept apart, as a position per deleted stream.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Optional

from estwisted.core.model import DELETED_STREAM


class StreamIndex:
    """
    The in-memory stream index.  Synchronous and pure: persistence is added by
    the storage layer on top of L{streams}/L{tombstones} snapshots.
    """

    def __init__(self) -> None:
        self._streams: dict[str, array[int]] = {}
        self._tombstones: dict[str, int] = {}
        #: How many streams L{drop} forgot: index files saved before are
        #: stale (a delta cannot express a drop; a new base is needed).
        self.drops = 0

    def add(self, stream: str, event_number: int, position: int) -> None:
        """
        Record that C{stream}'s event C{event_number} is at C{position}.

        @raise ValueError: C{event_number} is not the stream's next number.
        """
        if event_number == DELETED_STREAM:
            self._tombstones[stream] = position
            return
        positions = self._streams.get(stream)
        if positions is None:
            positions = self._streams[stream] = array("q")
        if event_number != len(positions):
            raise ValueError(
                f"index for {stream!r}: event {event_number} after {len(positions) - 1}"
            )
        positions.append(position)

    def add_after_gap(self, stream: str, event_number: int, position: int) -> None:
        """
        L{add}, but events missing before C{event_number} (removed by a
        scavenge: a replica receiving a scavenged chunk) get position -1,
        as a rebuild from a scavenged log gives them.

        @raise ValueError: C{event_number} is below the stream's next number.
        """
        if event_number != DELETED_STREAM:
            positions = self._streams.get(stream)
            if positions is None:
                positions = self._streams[stream] = array("q")
            missing = event_number - len(positions)
            if missing > 0:
                positions.extend(array("q", [-1]) * missing)
        self.add(stream, event_number, position)

    def forget(self, stream: str, event_number: int) -> None:
        """
        Mark event C{event_number} of C{stream} as removed by a scavenge: its
        position becomes -1 (the stream's last event number is unchanged).
        Only a prefix of a stream is marked, so that its positions stay
        ascending (the index files bisect them); a removed event after a
        kept one keeps its entry, and reads skip it as they skip any
        position the log no longer has.
        """
        positions = self._streams.get(stream)
        if (
            positions is not None
            and 0 <= event_number < len(positions) - 1
            and (event_number == 0 or positions[event_number - 1] < 0)
        ):
            positions[event_number] = -1

    def drop(self, stream: str) -> None:
        """
        Forget C{stream} entirely: its positions and its tombstone (a
        scavenge with C{UnsafeIgnoreHardDelete} removed all its records);
        it reads as never written and may be written again from event 0.
        """
        had = self._streams.pop(stream, None) is not None
        had = self._tombstones.pop(stream, None) is not None or had
        if had:
            self.drops += 1

    def last_event_number(self, stream: str) -> int:
        """
        The stream's last event number, -1 if it has none (the tombstone does
        not count).
        """
        positions = self._streams.get(stream)
        return -1 if positions is None else len(positions) - 1

    def tombstone(self, stream: str) -> Optional[int]:
        """
        The position of the stream's hard-delete tombstone, or C{None}.
        """
        return self._tombstones.get(stream)

    def get(self, stream: str, event_number: int) -> Optional[int]:
        """
        The position of one event, or C{None} (-1 if it was scavenged).
        """
        positions = self._streams.get(stream)
        if positions is None or not 0 <= event_number < len(positions):
            return None
        return positions[event_number]

    def positions(self, stream: str, first: int, last: int) -> array[int]:
        """
        Positions of events C{first} to C{last} inclusive (clamped to what
        exists), ascending; -1 for a scavenged event.
        """
        positions = self._streams.get(stream)
        if positions is None:
            return array("q")
        first = max(first, 0)
        return positions[first : last + 1]

    def truncate_from(self, position: int) -> None:
        """
        Forget every entry at or past C{position} (after the log was
        truncated).  Counted in C{drops}: index files saved before hold
        entries of the cut records, so the next save writes a new base.
        """
        self.drops += 1
        for stream, positions in list(self._streams.items()):
            n = len(positions)
            while n and positions[n - 1] >= position:
                n -= 1
            if n == 0:
                del self._streams[stream]
            elif n < len(positions):
                del positions[n:]
        for stream, tomb in list(self._tombstones.items()):
            if tomb >= position:
                del self._tombstones[stream]

    def streams(self) -> Iterator[tuple[str, array[int]]]:
        """
        Every stream with its positions array (for persistence).
        """
        return iter(self._streams.items())

    def tombstones(self) -> Iterator[tuple[str, int]]:
        return iter(self._tombstones.items())

    def load(self, streams: dict[str, array[int]], tombstones: dict[str, int]) -> None:
        """
        Replace the whole index at once (the storage layer's bulk loader).
        The arrays are taken over, not copied; each must hold one stream's
        positions by event number.
        """
        self._streams = streams
        self._tombstones = tombstones

    def extend(self, stream: str, first: int, positions: array[int]) -> None:
        """
        Add events C{first}, C{first + 1} ... of C{stream} at once (the
        storage layer's bulk path, same checks as L{add}).

        @raise ValueError: C{first} is not the stream's next number.
        """
        if not positions:
            return
        current = self._streams.get(stream)
        if current is None:
            if first != 0:
                raise ValueError(f"index for {stream!r}: event {first} after -1")
            self._streams[stream] = array("q", positions)
            return
        if first != len(current):
            raise ValueError(f"index for {stream!r}: event {first} after {len(current) - 1}")
        current.extend(positions)

    def stream_count(self) -> int:
        """
        The number of streams with at least one event.
        """
        return len(self._streams)

    def __len__(self) -> int:
        return sum(len(p) for p in self._streams.values()) + len(self._tombstones)
