# -*- test-case-name: estwisted.storage.test.test_event_log -*-
"""
L{MemoryLog}: the in-memory L{IEventLog} used by C{MemDb: true} and by tests
of everything above storage.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Optional

from zope.interface import implementer

from estwisted.core.errors import CorruptRecord, StorageError
from estwisted.core.interfaces import IEventLog, IReplicableLog
from estwisted.core.model import FLAG_JSON, FLAG_SYSTEM, EventRecord, NewEvent
from estwisted.storage import records as codec
from estwisted.storage.flushing import FlushJob

#: Size the memory log pretends every record has, besides its payload, so
#: that positions look like byte offsets.
_RECORD_OVERHEAD = 64


class _MemoryFlush(FlushJob):
    __slots__ = ("records",)

    def __init__(self, end: int, records: list[EventRecord]) -> None:
        super().__init__(end)
        self.records = records


@implementer(IEventLog, IReplicableLog)
class MemoryLog:
    """
    A log held in a list.  Positions are emulated byte offsets; the first
    record is a system record at 0 so client events start above 0.
    """

    def __init__(self) -> None:
        self._records: list[EventRecord] = []
        self._positions: list[int] = []
        self._pending: list[EventRecord] = []
        self._inflight: Optional[_MemoryFlush] = None
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

    def append_many(
        self, stream: str, first: int, events: Sequence[NewEvent], created: int
    ) -> tuple[list[int], list[int]]:
        """
        See L{estwisted.storage.log.ChunkedLog.append_many}.
        """
        positions: list[int] = []
        nexts: list[int] = []
        for number, event in enumerate(events, first):
            positions.append(
                self.append(
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
            nexts.append(self.pending_position)
        return positions, nexts

    def flush(self) -> int:
        if self._inflight is not None:
            self.end_flush(self._inflight)
        for record in self._pending:
            self._records.append(record)
            self._positions.append(record.position)
        self._pending = []
        self.end_position = self.pending_position
        return self.end_position

    def discard(self) -> None:
        self._pending = []
        inflight = self._inflight
        self.pending_position = self.end_position if inflight is None else inflight.end

    def begin_flush(self) -> Optional[FlushJob]:
        """
        See L{estwisted.storage.log.ChunkedLog.begin_flush}; the job has
        nothing to write.
        """
        if self._inflight is not None:
            raise StorageError("a flush of this log is in flight already")
        if not self._pending:
            return None
        job = self._inflight = _MemoryFlush(self.pending_position, self._pending)
        self._pending = []
        return job

    def end_flush(self, job: FlushJob) -> int:
        """
        See L{estwisted.storage.log.ChunkedLog.end_flush}.
        """
        assert isinstance(job, _MemoryFlush)
        if job.ended:
            if job.error is not None:
                raise StorageError(f"the flush failed: {job.error}")
            return self.end_position
        job.ended = True
        if self._inflight is job:
            self._inflight = None
        if job.error is not None:
            self.discard()
            raise StorageError(f"the flush failed: {job.error}")
        for record in job.records:
            self._records.append(record)
            self._positions.append(record.position)
        self.end_position = job.end
        return job.end

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

    # -- replication (IReplicableLog) --

    def read_raw(self, position: int, max_bytes: int) -> tuple[int, bytes, int]:
        """
        See L{IReplicableLog.read_raw}: the records framed with
        L{estwisted.storage.records.encode} at their own positions.
        """
        i = bisect_left(self._positions, position)
        records = self._records
        if i == len(records):
            return self.end_position, b"", self.end_position
        start = records[i].position
        frames: list[bytes] = []
        size = 0
        while i < len(records) and (not frames or size < max_bytes):
            r = records[i]
            frame = codec.encode(
                r.position,
                r.stream.encode("utf-8"),
                r.event_number,
                r.event_id,
                r.event_type.encode("utf-8"),
                r.flags,
                r.data,
                r.metadata,
                r.created,
            )
            frames.append(frame)
            size += len(frame)
            i += 1
        return start, b"".join(frames), records[i - 1].next_position

    def append_raw(self, position: int, frames: bytes) -> int:
        """
        See L{IReplicableLog.append_raw}.
        """
        decoded: list[EventRecord] = []
        offset = 0
        expected = self.pending_position
        if position != expected:
            raise CorruptRecord(f"replicated records start at {position}, not {expected}")
        while offset < len(frames):
            size = codec.frame_at(frames, offset, len(frames), expected)
            if not size:
                raise CorruptRecord(f"no replicated record at {expected}")
            record = codec.decode(frames, offset, offset + size, expected)
            decoded.append(record)
            offset += size
            expected += _RECORD_OVERHEAD + (
                len(record.stream.encode("utf-8"))
                + len(record.event_type.encode("utf-8"))
                + len(record.data)
                + len(record.metadata)
            )
        for r in decoded:
            self.append(
                r.stream,
                r.event_number,
                r.event_id,
                r.event_type,
                r.flags,
                r.data,
                r.metadata,
                r.created,
            )
        return self.pending_position

    def truncate(self, position: int) -> None:
        """
        See L{IReplicableLog.truncate}.
        """
        if self._inflight is not None:
            try:
                self.end_flush(self._inflight)
            except StorageError:
                pass
        self.discard()
        if position >= self.end_position:
            return
        i = bisect_left(self._positions, position)
        del self._records[i:]
        del self._positions[i:]
        self.end_position = self.pending_position = max(0, position)
