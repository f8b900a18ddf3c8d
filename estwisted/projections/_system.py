# -*- test-case-name: estwisted.projections.test.test_system -*-
"""
The four standard system projections of Event Store v5 as pure logic:
which event a source record makes each one emit, the link metadata v5
writes, the checkpoint event, and L{Projector}, the state machine that
turns a batch of C{$all} records into writes without ever emitting an
event twice.  No store, no reactor.

Exactly-once: every emitted event's metadata carries the source record's
log position (C{$c}/C{$p}), and each output stream receives its events in
log order.  A projection that restarts from an older checkpoint (a crash
between a link and its checkpoint, a new leader) first learns each output
stream's last event number and last source position and skips what is
already there; writes carry that expected version, so a concurrent writer
makes the write fail instead of doubling a link.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Optional

from attrs import define, field, frozen

from estwisted.core.metadata import LINK_EVENT_TYPE, TOMBSTONE_EVENT_TYPE
from estwisted.core.model import DELETED_STREAM, EventRecord, NewEvent

#: Event type of a stream reference (C{$stream_by_category}).
STREAM_REFERENCE_EVENT_TYPE = "$@"
#: Event type of a checkpoint in C{$projections-{name}-checkpoint}.
CHECKPOINT_EVENT_TYPE = "$ProjectionCheckpoint"
#: Event type of a projection's definition in C{$projections-{name}}.
PROJECTION_UPDATED_EVENT_TYPE = "$ProjectionUpdated"
#: The C{$v} version tag written with emitted events and checkpoints
#: (projection id, epoch, version, projections subsystem version).
PROJECTION_VERSION_TAG = "1:-1:1:3"


class SystemProjection(enum.Enum):
    """
    The standard projections, by their v5 names.
    """

    BY_CATEGORY = "$by_category"
    BY_EVENT_TYPE = "$by_event_type"
    STREAM_BY_CATEGORY = "$stream_by_category"
    STREAMS = "$streams"


STANDARD_PROJECTIONS: tuple[SystemProjection, ...] = tuple(SystemProjection)


def checkpoint_stream(name: str) -> str:
    """
    The checkpoint stream of projection C{name}, as v5 names it.
    """
    return f"$projections-{name}-checkpoint"


#: v5's handler type of each standard projection.
_NATIVE = "native:EventStore.Projections.Core.Standard."
HANDLER_TYPES = {
    SystemProjection.BY_CATEGORY: _NATIVE + "CategorizeEventsByStreamPath",
    SystemProjection.BY_EVENT_TYPE: _NATIVE + "IndexEventsByEventType",
    SystemProjection.STREAM_BY_CATEGORY: _NATIVE + "CategorizeStreamByPath",
    SystemProjection.STREAMS: _NATIVE + "IndexStreams",
}


def definition_stream(name: str) -> str:
    """
    The stream of projection C{name}'s persisted definition, as v5 names it.
    """
    return f"$projections-{name}"


def definition_event(projection: SystemProjection, enabled: bool, query: str) -> NewEvent:
    """
    A C{$ProjectionUpdated} event recording whether C{projection} runs.
    """
    body = {
        "handlerType": HANDLER_TYPES[projection],
        "query": query,
        "mode": "Continuous",
        "enabled": enabled,
        "emitEnabled": True,
        "checkpointsDisabled": False,
        "trackEmittedStreams": False,
        "runAs": {"name": "$system", "roles": ["$admins"]},
    }
    return NewEvent(
        uuid.uuid4().bytes, PROJECTION_UPDATED_EVENT_TYPE, json.dumps(body).encode(), b"", True
    )


def parse_enabled(data: bytes) -> Optional[bool]:
    """
    The C{enabled} flag of a definition event, C{None} when unreadable.
    """
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("enabled"), bool):
        return None
    return bool(value["enabled"])


def category_of(stream: str, separator: str = "-") -> Optional[str]:
    """
    The category of C{stream}: the part before the first C{separator};
    C{None} when there is none (v5's C{first} extractor).
    """
    category, sep, _ = stream.partition(separator)
    if not sep:
        return None
    return category


@frozen
class Emit:
    """
    One event a projection emits for a source record.

    @ivar stream: the output stream.
    @ivar event_type: C{$>} for a link, C{$@} for a stream reference.
    @ivar data: C{{number}@{stream}} for a link, the stream name for a
        reference.
    @ivar source: the source record's log position.
    @ivar original_stream: the source record's stream (C{$o}).
    @ivar caused_by: the source record's event id (C{$causedBy}).
    """

    stream: str
    event_type: str
    data: bytes
    source: int
    original_stream: str
    caused_by: bytes

    def metadata(self) -> bytes:
        """
        The metadata v5 writes with an emitted event: the version tag, the
        source's commit and prepare positions, the original stream and the
        causing event.
        """
        h = self.caused_by.hex()
        return (
            f'{{"$v":"{PROJECTION_VERSION_TAG}","$c":{self.source},"$p":{self.source},'
            f'"$o":{json.dumps(self.original_stream)},'
            f'"$causedBy":"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"}}'
        ).encode()

    def new_event(self, projection: str) -> NewEvent:
        """
        The event to append, with an id derived from the projection, the
        output stream and the source position (a retry carries the same id).
        """
        key = f"{projection}\x00{self.stream}\x00{self.source}"
        return NewEvent(derived_id(key), self.event_type, self.data, self.metadata(), False)


def derived_id(key: str) -> bytes:
    """
    A deterministic 16-byte event id for C{key}: a hash of it, shaped as
    an RFC 4122 version 5 UUID.
    """
    raw = bytearray(hashlib.blake2b(key.encode(), digest_size=16).digest())
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def emit_for(
    projection: SystemProjection, record: EventRecord, separator: str = "-"
) -> Optional[Emit]:
    """
    What C{projection} emits for C{record}, C{None} for nothing.

    Records of system streams (names starting with C{$}) and stream
    tombstones are not projected.
    """
    stream = record.stream
    if not stream or stream[0] == "$" or record.event_type == TOMBSTONE_EVENT_TYPE:
        return None
    target = f"{record.event_number}@{stream}".encode()
    if projection is SystemProjection.BY_CATEGORY:
        category = category_of(stream, separator)
        if category is None:
            return None
        if record.event_type == LINK_EVENT_TYPE:
            # v5 includes links: the category link points at the original.
            target = record.data
        return Emit(f"$ce-{category}", LINK_EVENT_TYPE, target, record.position, stream,
                    record.event_id)
    if projection is SystemProjection.BY_EVENT_TYPE:
        if record.event_type == LINK_EVENT_TYPE:
            return None
        return Emit(f"$et-{record.event_type}", LINK_EVENT_TYPE, target, record.position,
                    stream, record.event_id)
    if record.event_number != 0:
        return None
    if projection is SystemProjection.STREAM_BY_CATEGORY:
        category = category_of(stream, separator)
        if category is None:
            return None
        return Emit(f"$category-{category}", STREAM_REFERENCE_EVENT_TYPE, stream.encode(),
                    record.position, stream, record.event_id)
    return Emit("$streams", LINK_EVENT_TYPE, target, record.position, stream, record.event_id)


def source_position_of(metadata: bytes) -> int:
    """
    The source position (C{$c}) in an emitted event's metadata; -1 when
    absent or unreadable.
    """
    try:
        value = json.loads(metadata)
    except (ValueError, UnicodeDecodeError):
        return -1
    if not isinstance(value, dict):
        return -1
    position = value.get("$c")
    if isinstance(position, bool) or not isinstance(position, int):
        return -1
    return position


def checkpoint_event(projection: str, position: int) -> NewEvent:
    """
    A checkpoint: the last source position processed, in the metadata as v5
    writes a checkpoint tag; the data is the (empty) state.
    """
    tag = json.dumps(
        {"$v": PROJECTION_VERSION_TAG, "$c": position, "$p": position}, separators=(",", ":")
    ).encode()
    event_id = derived_id(f"{projection}\x00checkpoint\x00{position}")
    return NewEvent(event_id, CHECKPOINT_EVENT_TYPE, b"", tag, False)


@frozen
class OutputState:
    """
    What an output stream already holds.

    @ivar last_event_number: -1 when empty, L{DELETED_STREAM} when
        hard-deleted (emits to it are dropped).
    @ivar last_source: the source position of its last emitted event.
    """

    last_event_number: int
    last_source: int


@frozen
class Write:
    """
    One append: C{events} to C{stream} at C{expected_version}.
    """

    stream: str
    expected_version: int
    events: tuple[NewEvent, ...]


@define
class Projector:
    """
    The state machine of one system projection.

    Feed it C{$all} records in log order with L{plan}; before that, tell it
    the state of every output stream L{unknown_outputs} names, with
    L{load_output}.  When a planned write fails, drop the projector and
    build a new one from the last checkpoint: it is always safe.

    @ivar position: the log position of the last record processed, -1
        before any.
    """

    projection: SystemProjection
    position: int = -1
    separator: str = "-"
    _outputs: dict[str, OutputState] = field(factory=dict)
    _cached: Optional[tuple[Sequence[EventRecord], int, list[Emit]]] = None

    @property
    def name(self) -> str:
        return self.projection.value

    def _emits(self, records: Sequence[EventRecord]) -> list[Emit]:
        cached = self._cached
        if cached is not None and cached[0] is records and cached[1] == self.position:
            return cached[2]
        emits = []
        for record in records:
            if record.position <= self.position:
                continue
            emit = emit_for(self.projection, record, self.separator)
            if emit is not None:
                emits.append(emit)
        self._cached = (records, self.position, emits)
        return emits

    def unknown_outputs(self, records: Sequence[EventRecord]) -> list[str]:
        """
        The output streams C{records} would write to whose state is not
        known yet, in first-use order.
        """
        seen: dict[str, None] = {}
        for emit in self._emits(records):
            if emit.stream not in self._outputs:
                seen[emit.stream] = None
        return list(seen)

    def load_output(self, stream: str, last_event_number: int, last_source: int) -> None:
        self._outputs[stream] = OutputState(last_event_number, last_source)

    def output(self, stream: str) -> Optional[OutputState]:
        return self._outputs.get(stream)

    def plan(self, records: Sequence[EventRecord]) -> list[Write]:
        """
        The writes for C{records} (one per output stream, in first-use
        order), skipping what the outputs already hold; advances
        L{position} past the records as if the writes succeeded.

        @raise KeyError: an output stream's state is not loaded.
        """
        grouped: dict[str, list[Emit]] = {}
        for emit in self._emits(records):
            state = self._outputs[emit.stream]
            if state.last_event_number == DELETED_STREAM or emit.source <= state.last_source:
                continue
            grouped.setdefault(emit.stream, []).append(emit)
        writes = []
        for stream, emits in grouped.items():
            state = self._outputs[stream]
            writes.append(
                Write(stream, state.last_event_number,
                      tuple(e.new_event(self.name) for e in emits))
            )
            self._outputs[stream] = OutputState(
                state.last_event_number + len(emits), emits[-1].source
            )
        if records:
            self.position = max(self.position, records[-1].position)
        self._cached = None
        return writes


def parse_checkpoint(metadata: bytes) -> int:
    """
    The position in a checkpoint event's metadata, -1 when unreadable.
    """
    return source_position_of(metadata)

