# -*- test-case-name: estwisted.projections.test.test_runner -*-
"""
The loop that runs one user (JavaScript) projection over a
L{StreamStore}: read its checkpoint and states, catch up from C{$all},
then follow new commits; feed the query batches of events (off the
reactor thread, through C{run_js}); write what it emitted, its results,
states and checkpoints as C{$system}, never an event twice (see
L{EmitPlanner}).

On a node that may not write (a follower), and after a failed write, the
projection pauses and starts again from the (replicated) checkpoint.  A
query that throws, runs out of time or memory is Faulted, with the error
and the event position in its status.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import NotReady
from estwisted.core.metadata import TOMBSTONE_EVENT_TYPE
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EventRecord,
    NewEvent,
    ReadStatus,
)
from estwisted.core.progress import Progress
from estwisted.projections._catchup import CatchUpReport
from estwisted.projections._js import (
    DEFAULT_MAX_MEMORY,
    DEFAULT_TIMEOUT,
    JsProjection,
    ProjectionFault,
)
from estwisted.projections._system import (
    CHECKPOINT_EVENT_TYPE,
    category_of,
    checkpoint_stream,
    derived_id,
)
from estwisted.projections._user import (
    PARTITION_EVENT_TYPE,
    RESULT_EVENT_TYPE,
    STATE_EVENT_TYPE,
    STREAM_TRACKED_EVENT_TYPE,
    Definition,
    EmitPlanner,
    Mode,
    Output,
    emitted_streams_stream,
    is_link,
    js_event,
    output_of,
    parse_link,
    parse_tag,
    partitions_stream,
    result_stream,
    state_stream,
    tag_metadata,
)

_log = Logger()
T = TypeVar("T")

#: Runs a blocking call off the reactor thread: C{run_js(f, *args)}.
RunJs = Callable[..., "Deferred[Any]"]

#: Records read from C{$all} per step.
BATCH_SIZE = 500
#: Seconds to wait after a refused or failed write, or while a follower.
RETRY_DELAY = 1.0
#: Catching up over fewer bytes of log logs no progress lines.
#: Partitions kept in the isolate; past this, clean ones are dropped
#: after a checkpoint.
MAX_CACHED_PARTITIONS = 5000
#: State events read back to find one at or before the checkpoint.
STATE_LOOKBACK = 100


class UserProjectionRunner:
    """
    Runs one user projection.

    @ivar status: C{Stopped}, C{Running}, C{Paused}, C{Faulted},
        C{Completed}.
    @ivar reason: why Paused or Faulted.
    @ivar processed: records read from C{$all} since start.
    """

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        definition: Definition,
        run_js: RunJs,
        timeout: float = DEFAULT_TIMEOUT,
        max_memory: int = DEFAULT_MAX_MEMORY,
    ) -> None:
        self._store = store
        self._clock = clock
        self.definition = definition
        self._run_js = run_js
        self._timeout = timeout
        self._max_memory = max_memory
        self._engine: Optional[JsProjection] = None
        self._planner: Optional[EmitPlanner] = None
        self._position = -1
        self._read_from = 0
        self._checkpointed = -1
        self._since_checkpoint = 0
        self._loaded: set[str] = set()
        self._dirty: set[str] = set()
        self._tracked: set[str] = set()
        self._careful_until = -1
        self._running = False
        self._busy: Optional[Deferred[None]] = None
        self._wanted = False
        self._retry: Optional[IDelayedCall] = None
        self._remove_listener: Optional[Callable[[], None]] = None
        self.status = "Stopped"
        self.reason = ""
        self.processed = 0
        #: catching up after (re)loading, on the progress board
        self._catch_up = CatchUpReport(self.name, store, clock)
        self.logs: list[str] = []

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def catch_up(self) -> Optional[Progress]:
        """
        Catching up after (re)loading, on the progress board (C{None}
        before the first report).
        """
        return self._catch_up.task

    @property
    def persisted(self) -> bool:
        return self.definition.mode is not Mode.TRANSIENT

    @property
    def position(self) -> int:
        return self._position

    @property
    def checkpoint(self) -> int:
        return self._checkpointed

    @property
    def epoch(self) -> int:
        return self.definition.epoch

    # -- life ---------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._drop()
        self.status = "Running"
        self.reason = ""
        self._remove_listener = self._store.add_commit_listener(self._committed)
        self._schedule(0)

    def stop(self) -> Deferred[None]:
        """
        Stop; fires when the step in progress (if any) has ended.  The
        isolate is kept, so the state stays readable.
        """
        self._running = False
        self._catch_up.end("stopped")
        if self.status not in ("Faulted", "Completed"):
            self.status = "Stopped"
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        busy = self._busy
        if busy is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        busy.addBoth(lambda _: done.callback(None))
        return done

    def close(self) -> Deferred[None]:
        """
        Stop and free the isolate.
        """
        d = self.stop()

        def closed(_: object) -> None:
            self._drop()

        return d.addCallback(closed)

    def _drop(self) -> None:
        engine, self._engine = self._engine, None
        self._planner = None
        if engine is not None:
            engine.close()

    def _schedule(self, delay: float) -> None:
        def retry() -> None:
            self._retry = None
            self._kick()

        self._retry = self._clock.callLater(delay, retry)

    def _committed(self, records: Sequence[EventRecord]) -> None:
        self._kick()

    def _kick(self) -> None:
        if not self._running or self._retry is not None:
            return
        if self._busy is not None:
            self._wanted = True
            return
        self._wanted = False
        busy: Deferred[None] = Deferred.fromCoroutine(self._run())
        self._busy = busy

        def ended(_: object) -> None:
            self._busy = None
            if self._wanted:
                self._kick()

        busy.addBoth(ended)

    def _pause(self, reason: str) -> None:
        self._drop()
        self._catch_up.end("stopped")
        if not self._running:
            return
        self.status = "Paused"
        self.reason = reason
        self._schedule(RETRY_DELAY)

    def _fault(self, reason: str) -> None:
        _log.warn("Projection {name} faulted: {reason}", name=self.name, reason=reason)
        self._drop()
        self._catch_up.end("failed")
        self.status = "Faulted"
        self.reason = reason
        self._running = False
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    async def _run(self) -> None:
        try:
            while self._running:
                if self.persisted and self._store.writes_refused is not None:
                    self._pause(str(self._store.writes_refused))
                    return
                if not await self._step():
                    return
        except _Faulted as e:
            self._fault(str(e))
        except _Replay:
            # a batch ran out of time: from the checkpoint again, the
            # events of that batch one by one, to find the one at fault
            self._drop()
            if self._running:
                self._schedule(0)
        except NotReady as e:
            self._pause(str(e))
        except Exception as e:
            _log.failure("Projection {name} failed; retrying from its checkpoint", name=self.name)
            self._pause(f"{type(e).__name__}: {e}")

    # -- loading ------------------------------------------------------------

    def _read_last(self, stream: str) -> Optional[EventRecord]:
        result = self._store.read_stream(stream, -1, 1, False, False, SYSTEM_PRINCIPAL)
        if result.status == ReadStatus.SUCCESS and result.events:
            event: Optional[EventRecord] = result.events[0].event
            return event
        return None

    async def _load(self) -> JsProjection:
        definition = self.definition
        position, epoch, root, shared = -1, definition.epoch, None, None
        if self.persisted and definition.checkpoints_enabled:
            last = self._read_last(checkpoint_stream(self.name))
            if last is not None:
                position, at_epoch = parse_tag(last.metadata)
                if at_epoch != epoch:
                    position = -1
                elif last.data:
                    root, shared = _split_state(last.data.decode("utf-8", "replace"))
        try:
            engine: JsProjection = await self._run_js(
                JsProjection, definition.query, self._timeout, self._max_memory)
        except ProjectionFault as e:
            raise _Faulted(e.message) from None
        self._engine = engine
        self._planner = EmitPlanner(self.name, epoch)
        self._position = position
        self._read_from = max(position, 0)
        self._checkpointed = position
        self._since_checkpoint = 0
        self._loaded = {""}
        self._dirty = set()
        await self._run_js(engine.load, {"": root})
        if engine.sources.bi_state:
            await self._run_js(engine.load_shared, shared)
        self._tracked = set()
        if definition.track_emitted_streams:
            self._tracked = self._read_tracked()
        return engine

    def _read_tracked(self) -> set[str]:
        stream = emitted_streams_stream(self.name)
        tracked: set[str] = set()
        start = 0
        for _ in range(10_000):
            page = self._store.read_stream(stream, start, 1000, True, False, SYSTEM_PRINCIPAL)
            if page.status != ReadStatus.SUCCESS or not page.events:
                break
            for e in page.events:
                if e.event is not None:
                    tracked.add(e.event.data.decode("utf-8", "replace"))
            start = page.events[-1].original.event_number + 1
        return tracked

    def _stored_state(self, partition: str) -> Optional[str]:
        """
        A partition's state as of the checkpoint: its newest state event of
        this epoch at or before the checkpoint position.
        """
        stream = state_stream(self.name, partition)
        page = self._store.read_stream(
            stream, -1, STATE_LOOKBACK, False, False, SYSTEM_PRINCIPAL)
        if page.status != ReadStatus.SUCCESS:
            return None
        for e in page.events:
            record = e.event
            if record is None:
                continue
            at, epoch = parse_tag(record.metadata)
            if epoch == self.epoch and at <= self._checkpointed:
                return str(record.data.decode("utf-8", "replace"))
            if epoch < self.epoch:
                return None
        return None

    def _load_output(self, planner: EmitPlanner, stream: str) -> None:
        last = self._store.last_event_number(stream)
        source = -1
        if last >= 0 and last != DELETED_STREAM:
            record = self._read_last(stream)
            if record is not None:
                at, epoch = parse_tag(record.metadata)
                # events of an older epoch are before this one's positions
                source = at if epoch == self.epoch else -1
        planner.load(stream, last, source)

    # -- one step -----------------------------------------------------------

    def _selects(self, engine: JsProjection, record: EventRecord) -> Optional[dict[str, Any]]:
        """
        The event the query sees for C{record}, C{None} for none.
        """
        s = engine.sources
        stream = record.stream
        named = stream in s.streams
        if not named:
            if not stream or stream[0] == "$":
                return None
            if not s.all_streams and category_of(stream) not in s.categories:
                return None
        if record.event_type == TOMBSTONE_EVENT_TYPE:
            if s.handles_deleted and s.by_streams:
                return js_event(record, deleted=True)
            return None
        if is_link(record):
            if named:
                target = self._resolve(record)
                if target is None or not engine.handles(target.event_type):
                    return None
                return js_event(target, link=record)
            if not s.include_links:
                return None
        if not engine.handles(record.event_type):
            return None
        return js_event(record)

    def _resolve(self, link: EventRecord) -> Optional[EventRecord]:
        parsed = parse_link(link.data)
        if parsed is None:
            return None
        result = self._store.read_event(parsed[0], parsed[1], False, SYSTEM_PRINCIPAL)
        if result.status != ReadStatus.SUCCESS or result.event is None:
            return None
        target: Optional[EventRecord] = result.event.event
        return target

    async def _step(self) -> bool:
        """
        Handle one batch; C{False} when caught up (or done).
        """
        engine = self._engine
        if engine is None:
            engine = await self._load()
            self._catch_up.begin(self._position)
            self.status = "Running"
            self.reason = ""
        planner = self._planner
        assert planner is not None
        start = self._read_from
        size = 1 if self._careful_until > self._position else BATCH_SIZE
        page = self._store.read_all(start, size, True, False, SYSTEM_PRINCIPAL)
        if page.status != ReadStatus.SUCCESS:
            raise RuntimeError(f"reading $all failed: {page.error or page.status.name}")
        records = [e.event for e in page.events
                   if e.event is not None and e.event.position > self._position]
        if page.events:
            self._read_from = max(self._read_from, page.events[-1].original.next_position)
        self._catch_up.report(records[-1].position if records else -1)
        if not records:
            await self._caught_up(engine)
            return False
        chosen: list[tuple[EventRecord, dict[str, Any]]] = []
        for record in records:
            event = self._selects(engine, record)
            if event is not None:
                chosen.append((record, event))
        if chosen:
            await self._handle(engine, planner, chosen, records[-1].position)
        self._position = records[-1].position
        self._read_from = records[-1].next_position
        self.processed += len(records)
        self._since_checkpoint += len(chosen)
        if self._since_checkpoint >= self.definition.checkpoint_every:
            await self._checkpoint(engine)
        return True


    async def _handle(
        self, engine: JsProjection, planner: EmitPlanner,
        chosen: list[tuple[EventRecord, dict[str, Any]]], last: int,
    ) -> None:
        events = [e for _, e in chosen]
        s = engine.sources
        fresh: set[str] = set()
        try:
            if s.by_streams:
                partitions = [e["s"] for e in events]
            elif s.by_custom_partitions:
                partitions = await self._run_js(engine.partitions, events)
            else:
                partitions = [""] * len(events)
            unknown = {p for p in partitions if p not in self._loaded}
            if unknown:
                stored = {p: self._stored_state(p) for p in unknown}
                fresh = {p for p, text in stored.items() if text is None}
                await self._run_js(engine.load, stored)
                self._loaded.update(unknown)
            result = await self._run_js(engine.process, events, partitions)
        except ProjectionFault as e:
            if e.timed_out and len(events) > 1:
                # find which event: replay this batch one event at a time
                self._careful_until = last
                raise _Replay() from None
            where = chosen[e.index][0] if 0 <= e.index < len(chosen) else chosen[0][0]
            raise _Faulted(
                f"{e.message} (handling event {where.event_number}@{where.stream} at "
                f"C:{where.position}/P:{where.position})"
            ) from None
        if result.logs:
            self.logs = (self.logs + list(result.logs))[-100:]
        outputs: list[Output] = []
        definition = self.definition
        last_of: dict[str, int] = {}
        for (record, event), emitted, partition in zip(
                chosen, result.emits, partitions, strict=True):
            if partition in fresh:
                # first seen: into the catalog (once, like any output)
                fresh.discard(partition)
                outputs.append(Output(
                    partitions_stream(self.name), PARTITION_EVENT_TYPE, partition.encode(),
                    None, False, record.position, event["id"]))
            last_of[partition] = record.position
            self._dirty.add(partition)
            if emitted and not definition.emit_enabled:
                raise _Faulted(
                    "'emit' is not allowed by the projection/configuration/mode "
                    f"(handling event {record.event_number}@{record.stream})"
                )
            for one in emitted:
                if definition.track_emitted_streams and one.stream not in self._tracked:
                    self._tracked.add(one.stream)
                    outputs.append(Output(
                        emitted_streams_stream(self.name), STREAM_TRACKED_EVENT_TYPE,
                        one.stream.encode(), None, False, record.position, event["id"]))
                outputs.append(output_of(one, record.position, event["id"]))
        if s.produces_results and definition.mode is Mode.CONTINUOUS:
            results = await self._run_js(engine.results, list(last_of))
            for partition, at in last_of.items():
                text = results.get(partition)
                if text is not None:
                    outputs.append(Output(
                        result_stream(self.name, partition, s.result_stream_name),
                        RESULT_EVENT_TYPE, text.encode(), None, True, at, ""))
        if outputs and self.persisted:
            await self._write(planner, outputs)

    async def _write(self, planner: EmitPlanner, outputs: list[Output]) -> None:
        for stream in planner.unknown(outputs):
            self._load_output(planner, stream)
        for write in planner.plan(outputs):
            await self._store.append(
                write.stream, write.expected_version, list(write.events), SYSTEM_PRINCIPAL)

    async def _caught_up(self, engine: JsProjection) -> None:
        if self._position > self._checkpointed and self._dirty:
            await self._checkpoint(engine)
        if self.definition.mode is Mode.CONTINUOUS:
            return
        # one-time and transient: done once caught up
        s = engine.sources
        if s.produces_results and self.persisted:
            partitions = sorted(self._loaded)
            results = await self._run_js(engine.results, partitions)
            planner = self._planner
            assert planner is not None
            outputs = [
                Output(result_stream(self.name, p, s.result_stream_name), RESULT_EVENT_TYPE,
                       text.encode(), None, True, max(self._position, 0), "")
                for p, text in results.items() if text is not None
            ]
            await self._write(planner, outputs)
        self.status = "Completed"
        self._running = False
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    async def _checkpoint(self, engine: JsProjection) -> None:
        position = self._position
        self._since_checkpoint = 0
        if not self.persisted:
            return
        if not self.definition.checkpoints_enabled:
            return
        dirty = sorted(self._dirty)
        states = await self._run_js(engine.states, dirty) if dirty else {}
        shared = await self._run_js(engine.shared) if engine.sources.bi_state else None
        meta = json.dumps(tag_metadata(position, self.epoch), separators=(",", ":")).encode()
        store = self._store
        for partition in dirty:
            text = states.get(partition)
            if text is None:
                continue
            key = f"{self.name}\x00{self.epoch}\x00state\x00{partition}\x00{position}"
            await store.append(
                state_stream(self.name, partition), EXPECTED_ANY,
                [NewEvent(derived_id(key), STATE_EVENT_TYPE, text.encode(), meta, True)],
                SYSTEM_PRINCIPAL)
        root = states.get("") if "" in states else (
            (await self._run_js(engine.states, [""])).get(""))
        data = root or ""
        if engine.sources.bi_state:
            data = f"[{root or '{}'},{shared or '{}'}]"
        key = f"{self.name}\x00{self.epoch}\x00checkpoint\x00{position}"
        await store.append(
            checkpoint_stream(self.name), EXPECTED_ANY,
            [NewEvent(derived_id(key), CHECKPOINT_EVENT_TYPE, data.encode(), meta, True)],
            SYSTEM_PRINCIPAL)
        self._checkpointed = position
        self._dirty = set()
        if len(self._loaded) > MAX_CACHED_PARTITIONS:
            drop = [p for p in self._loaded if p != ""]
            await self._run_js(engine.forget, drop)
            self._loaded = {""}

    # -- reading state --------------------------------------------------------

    async def state(self, partition: str) -> Optional[str]:
        """
        A partition's state as JSON text, C{None} when it has none.
        """
        engine = self._engine
        if engine is not None and partition in self._loaded:
            states = await self._run_js(engine.states, [partition])
            text: Optional[str] = states.get(partition)
            return text
        if partition == "":
            last = self._read_last(checkpoint_stream(self.name))
            if last is None or not last.data:
                return None
            return _split_state(last.data.decode("utf-8", "replace"))[0]
        return self._latest_state(partition)

    def _latest_state(self, partition: str) -> Optional[str]:
        last = self._read_last(state_stream(self.name, partition))
        if last is None:
            return None
        return str(last.data.decode("utf-8", "replace"))

    async def result(self, partition: str) -> Optional[str]:
        """
        A partition's result (its state through C{transformBy}), as JSON.
        """
        engine = self._engine
        if engine is not None and partition in self._loaded:
            results = await self._run_js(engine.results, [partition])
            text: Optional[str] = results.get(partition)
            return text
        last = self._read_last(
            result_stream(self.name, partition,
                          engine.sources.result_stream_name if engine else None))
        if last is None:
            return await self.state(partition)
        return str(last.data.decode("utf-8", "replace"))

    def known_partitions(self) -> set[str]:
        """
        The partitions seen since the isolate was loaded, C{""} excepted.
        """
        return {p for p in self._loaded if p != ""}

    def catalogued_partitions(self) -> set[str]:
        """
        The partitions in C{$projections-{name}-partitions}, and the ones
        in memory.
        """
        found = self.known_partitions()
        stream = partitions_stream(self.name)
        start = 0
        for _ in range(10_000):
            page = self._store.read_stream(stream, start, 1000, True, False, SYSTEM_PRINCIPAL)
            if page.status != ReadStatus.SUCCESS or not page.events:
                break
            for e in page.events:
                if e.event is not None:
                    found.add(e.event.data.decode("utf-8", "replace"))
            start = page.events[-1].original.event_number + 1
        return found

    def emitted_streams(self) -> set[str]:
        """
        The streams it emitted to, as tracked (C{trackEmittedStreams}).
        """
        if self._engine is None and self.definition.track_emitted_streams:
            return self._read_tracked()
        return set(self._tracked)

    def sources_definition(self) -> Optional[dict[str, Any]]:
        engine = self._engine
        return None if engine is None else engine.sources.definition()


class _Replay(Exception):
    """
    A batch ran out of time: replay it one event at a time.
    """


class _Faulted(Exception):
    """
    The projection cannot go on: the message is its state reason.
    """


def _split_state(text: str) -> tuple[Optional[str], Optional[str]]:
    """
    C{(state, shared)} from a checkpoint's data: a bi-state checkpoint
    holds C{[state, shared]}.
    """
    if not text:
        return None, None
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            return text, None
        if isinstance(value, list) and len(value) == 2:
            return json.dumps(value[0]), json.dumps(value[1])
    return text, None


def new_id() -> bytes:
    return uuid.uuid4().bytes
