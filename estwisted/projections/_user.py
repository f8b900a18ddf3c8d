# -*- test-case-name: estwisted.projections.test.test_user -*-
"""
User (JavaScript) projections as pure logic: their persisted definition
(v5's C{$ProjectionUpdated}), the streams v5 names for them, the event
object handed to the query, the events written for what it emits, its
state and result, and L{EmitPlanner}, the state machine that turns what
handlers emitted into writes without writing an event twice.

Exactly-once is the technique of the system projections: every written
event carries its source record's log position (C{$c}); an output stream
gets its events in log order; before writing to a stream the planner
learns the C{$c} of its last event and drops what is already there, and
writes with that expected version.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from attrs import define, evolve, field, frozen

from estwisted.core.metadata import LINK_EVENT_TYPE
from estwisted.core.model import DELETED_STREAM, EventRecord, NewEvent
from estwisted.projections._js import Emitted
from estwisted.projections._system import (
    PROJECTION_UPDATED_EVENT_TYPE,
    OutputState,
    Write,
    category_of,
    derived_id,
)

#: The stream that registers every projection, as v5 names it.
REGISTRATION_STREAM = "$projections-$all"
#: Event types of L{REGISTRATION_STREAM}.
PROJECTION_CREATED = "$ProjectionCreated"
PROJECTION_DELETED = "$ProjectionDeleted"
#: A partition's (or the root's) state, in its C{-state} stream.
STATE_EVENT_TYPE = "StateUpdated"
#: A result, in a C{-result} stream.
RESULT_EVENT_TYPE = "Result"
#: A partition's first event, in C{-partitions} (v5's catalog).
PARTITION_EVENT_TYPE = "$partition"
#: A stream the projection emitted to, in C{-emittedstreams}.
STREAM_TRACKED_EVENT_TYPE = "$StreamTracked"


class Mode(enum.Enum):
    """
    v5's projection modes (the C{{mode}} of C{POST /projections/{mode}}).
    """

    ONE_TIME = "OneTime"
    CONTINUOUS = "Continuous"
    TRANSIENT = "Transient"

    @classmethod
    def from_path(cls, text: str) -> Mode:
        """
        @raise ValueError: not C{onetime}, C{continuous} or C{transient}.
        """
        modes = {"onetime": cls.ONE_TIME, "continuous": cls.CONTINUOUS,
                 "transient": cls.TRANSIENT}
        try:
            return modes[text.lower()]
        except KeyError:
            raise ValueError(f"unknown projection mode {text!r}") from None


@frozen
class Definition:
    """
    A user projection as persisted in C{$projections-{name}}.
    """

    name: str
    query: str
    mode: Mode
    enabled: bool = True
    emit_enabled: bool = False
    checkpoints_enabled: bool = True
    track_emitted_streams: bool = False
    epoch: int = 0
    run_as: str = "admin"
    #: v5's C{checkpointHandledThreshold}.
    checkpoint_every: int = 4000

    def to_json(self) -> dict[str, Any]:
        return {
            "handlerType": "JS",
            "query": self.query,
            "mode": self.mode.value,
            "enabled": self.enabled,
            "emitEnabled": self.emit_enabled,
            "checkpointsDisabled": not self.checkpoints_enabled,
            "trackEmittedStreams": self.track_emitted_streams,
            "epoch": self.epoch,
            "checkpointHandledThreshold": self.checkpoint_every,
            "runAs": {"name": self.run_as, "roles": ["$admins"]},
        }

    def event(self, event_id: bytes) -> NewEvent:
        """
        The C{$ProjectionUpdated} event recording this definition.
        """
        body = json.dumps(self.to_json()).encode()
        return NewEvent(event_id, PROJECTION_UPDATED_EVENT_TYPE, body, b"", True)

    def with_changes(self, **changes: Any) -> Definition:
        return evolve(self, **changes)


def parse_definition(name: str, data: bytes) -> Optional[Definition]:
    """
    A user projection's definition from its C{$ProjectionUpdated} data;
    C{None} when unreadable or not a JavaScript projection.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict) or str(raw.get("handlerType", "")).upper() != "JS":
        return None
    try:
        mode = Mode(raw.get("mode", "Continuous"))
    except ValueError:
        return None
    run_as = raw.get("runAs")
    every = raw.get("checkpointHandledThreshold", 4000)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        every = 4000
    return Definition(
        name=name,
        query=str(raw.get("query", "")),
        mode=mode,
        enabled=bool(raw.get("enabled", True)),
        emit_enabled=bool(raw.get("emitEnabled", False)),
        checkpoints_enabled=not bool(raw.get("checkpointsDisabled", False)),
        track_emitted_streams=bool(raw.get("trackEmittedStreams", False)),
        epoch=int(raw.get("epoch", 0) or 0),
        run_as=str(run_as.get("name", "admin")) if isinstance(run_as, dict) else "admin",
        checkpoint_every=every,
    )


def registration_event(event_id: bytes, name: str, created: bool) -> NewEvent:
    """
    C{$ProjectionCreated}/C{$ProjectionDeleted} in C{$projections-$all}:
    the data is the name, as v5 writes it.
    """
    kind = PROJECTION_CREATED if created else PROJECTION_DELETED
    return NewEvent(event_id, kind, name.encode(), b"", False)


def state_stream(name: str, partition: str) -> str:
    """
    Where a partition's state is kept: C{$projections-{name}-state} for the
    root partition, C{$projections-{name}-{partition}-state} otherwise.
    """
    return f"$projections-{name}-state" if partition == "" else (
        f"$projections-{name}-{partition}-state")


def result_stream(name: str, partition: str, result_stream_name: Optional[str] = None) -> str:
    """
    Where a partition's results go: C{options.resultStreamName} or
    C{$projections-{name}-result} for the root partition,
    C{$projections-{name}-{partition}-result} otherwise.
    """
    if partition == "":
        return result_stream_name or f"$projections-{name}-result"
    return f"$projections-{name}-{partition}-result"


def partitions_stream(name: str) -> str:
    """
    v5's partition catalog: one C{$partition} event per partition.
    """
    return f"$projections-{name}-partitions"


def emitted_streams_stream(name: str) -> str:
    return f"$projections-{name}-emittedstreams"


def tag_metadata(position: int, epoch: int) -> dict[str, Any]:
    """
    The checkpoint tag v5 puts in written events' metadata, with the epoch.
    """
    return {"$v": f"1:{epoch}:1:3", "$c": position, "$p": position, "$epoch": epoch}


def parse_tag(metadata: bytes) -> tuple[int, int]:
    """
    C{($c, epoch)} of a written event's metadata; C{(-1, 0)} when absent.
    """
    try:
        value = json.loads(metadata)
    except (ValueError, UnicodeDecodeError):
        return -1, 0
    if not isinstance(value, dict):
        return -1, 0
    position = value.get("$c")
    epoch = value.get("$epoch", 0)
    if isinstance(position, bool) or not isinstance(position, int):
        return -1, 0
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        epoch = 0
    return position, epoch


def js_event(record: EventRecord, link: Optional[EventRecord] = None,
             deleted: bool = False) -> dict[str, Any]:
    """
    The event as the runtime takes it (see L{JsProjection.process}): the
    fields of v5's event envelope, C{link} being the link it was read
    through.
    """
    return {
        "s": record.stream,
        "n": record.event_number,
        "t": record.event_type,
        "d": record.data.decode("utf-8", "replace"),
        "m": record.metadata.decode("utf-8", "replace"),
        "lm": None if link is None else link.metadata.decode("utf-8", "replace"),
        "j": record.is_json,
        "id": _uuid_text(record.event_id),
        "c": category_of(record.stream),
        "del": deleted,
    }


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@frozen
class Output:
    """
    One event to write for a source record.

    @ivar source: the source record's log position.
    @ivar index: its place among the events the record makes for this
        stream (keeps event ids distinct and deterministic).
    """

    stream: str
    event_type: str
    data: bytes
    metadata: Optional[Mapping[str, Any]]
    is_json: bool
    source: int
    caused_by: str
    index: int = 0

    def new_event(self, projection: str, epoch: int) -> NewEvent:
        meta: dict[str, Any] = {}
        if self.metadata:
            meta.update(self.metadata)
        meta.update(tag_metadata(self.source, epoch))
        meta["$causedBy"] = self.caused_by
        key = f"{projection}\x00{epoch}\x00{self.stream}\x00{self.source}\x00{self.index}"
        return NewEvent(
            derived_id(key), self.event_type, self.data,
            json.dumps(meta, separators=(",", ":")).encode(), self.is_json,
        )


def output_of(emitted: Emitted, source: int, caused_by: str) -> Output:
    return Output(emitted.stream, emitted.event_type, emitted.data, emitted.metadata,
                  emitted.is_json, source, caused_by)


@define
class EmitPlanner:
    """
    Plans the writes of a user projection's outputs, never one twice.

    Before L{plan}, load the state of every stream L{unknown} names (its
    last event number and the C{$c} of its last event).  After a failed
    write, drop the planner and build a new one.
    """

    projection: str
    epoch: int = 0
    _outputs: dict[str, OutputState] = field(factory=dict)

    def unknown(self, outputs: Sequence[Output]) -> list[str]:
        seen: dict[str, None] = {}
        for o in outputs:
            if o.stream not in self._outputs:
                seen[o.stream] = None
        return list(seen)

    def load(self, stream: str, last_event_number: int, last_source: int) -> None:
        self._outputs[stream] = OutputState(last_event_number, last_source)

    def plan(self, outputs: Sequence[Output]) -> list[Write]:
        """
        One write per stream (first-use order) of the outputs not already
        there; outputs must come in source order.

        @raise KeyError: a stream's state is not loaded.
        """
        grouped: dict[str, list[Output]] = {}
        for o in outputs:
            state = self._outputs[o.stream]
            if state.last_event_number == DELETED_STREAM or o.source <= state.last_source:
                continue
            grouped.setdefault(o.stream, []).append(o)
        writes = []
        for stream, items in grouped.items():
            state = self._outputs[stream]
            counts: dict[int, int] = {}
            events = []
            for o in items:
                n = counts.get(o.source, 0)
                counts[o.source] = n + 1
                events.append(evolve(o, index=n).new_event(self.projection, self.epoch))
            writes.append(Write(stream, state.last_event_number, tuple(events)))
            self._outputs[stream] = OutputState(
                state.last_event_number + len(items), items[-1].source)
        return writes


def is_link(record: EventRecord) -> bool:
    return record.event_type == LINK_EVENT_TYPE


def parse_link(data: bytes) -> Optional[tuple[str, int]]:
    """
    C{(stream, number)} of a link's C{{number}@{stream}} data.
    """
    text = data.decode("utf-8", "replace")
    number, sep, stream = text.partition("@")
    if not sep or not stream:
        return None
    try:
        return stream, int(number)
    except ValueError:
        return None
