# -*- test-case-name: estwisted.test.test_event_log -*-
"""
L{MemoryLog}: the in-memory L{IEventLog} used by C{MemDb: true} and by tests
of everything above storage.
"""

from __future__ import annotations

from bisect import bisect_left

from zope.interface import implementer

from estwisted.interfaces import IEventLog
from estwisted.model import FLAG_SYSTEM, EventRecord

#: Size the memory log pretends every record has, besides its payload, so
#: that positions look like byte offsets.
_RECORD_OVERHEAD = 64


@implementer(IEventLog)
class MemoryLog:
    """
    A log held in a list.  Positions are emulated byte offsets; the first
    record is a system record at 0 so client events start above 0.
    """

    def __init__(self) -> None:
        self._records: list[EventRecord] = []
        self._positions: list[int] = []
        self._pending: list[EventRecord] = []
        self.end_position = 0
        self.pending_position = 0
        self.append("", -1, b"\x00" * 16, "$epoch", FLAG_SYSTEM, b"", b"", 0)
        self.flush()

    def append(
        self,
        stream: str,
        event_number: int,
        event_id: bytes,
        event_type: str,
        flags: int,
        data: bytes,
        metadata: bytes,
        created: int,
    ) -> int:
        position = self.pending_position
        size = (
            _RECORD_OVERHEAD
            + len(stream.encode("utf-8"))
            + len(event_type.encode("utf-8"))
            + len(data)
            + len(metadata)
        )
        record = EventRecord(
            position=position,
            next_position=position + size,
            stream=stream,
            event_number=event_number,
            event_id=bytes(event_id),
            event_type=event_type,
            flags=flags,
            data=bytes(data),
            metadata=bytes(metadata),
            created=created,
        )
        self._pending.append(record)
        self.pending_position = record.next_position
        return position

    def flush(self) -> int:
        for record in self._pending:
            self._records.append(record)
            self._positions.append(record.position)
        self._pending = []
        self.end_position = self.pending_position
        return self.end_position

    def discard(self) -> None:
        self._pending = []
        self.pending_position = self.end_position

    def read(self, position: int) -> EventRecord:
        i = bisect_left(self._positions, position)
        if i == len(self._positions) or self._positions[i] != position:
            raise KeyError(position)
        return self._records[i]

    def read_forward(self, position: int, max_count: int) -> list[EventRecord]:
        i = bisect_left(self._positions, position)
        result: list[EventRecord] = []
        records = self._records
        while i < len(records) and len(result) < max_count:
            record = records[i]
            if not record.flags & FLAG_SYSTEM:
                result.append(record)
            i += 1
        return result

    def read_backward(self, position: int, max_count: int) -> list[EventRecord]:
        i = bisect_left(self._positions, position) - 1
        result: list[EventRecord] = []
        records = self._records
        while i >= 0 and len(result) < max_count:
            record = records[i]
            if not record.flags & FLAG_SYSTEM:
                result.append(record)
            i -= 1
        return result

    def close(self) -> None:
        pass
