# -*- test-case-name: estwisted.projections.test.test_js -*-
"""
A user projection's JavaScript, run in V8 (the C{mini-racer} package):
compile a v5 projection query, learn its sources and options, and feed
it batches of events.  No reactor and no store: every method blocks the
calling thread, so the runner calls them off the reactor thread.

Each call has a time limit and the isolate a memory limit; a query that
throws, loops or allocates without bound raises L{ProjectionFault}
naming the event it was handling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from attrs import frozen

from estwisted.projections._prelude import PRELUDE

#: v5's default C{ProjectionExecutionTimeout}, in seconds (per handler call).
DEFAULT_TIMEOUT = 0.25
#: The isolate's heap limit, in bytes.
DEFAULT_MAX_MEMORY = 256 * 1024 * 1024


class ProjectionFault(Exception):
    """
    The query failed: it did not compile, a handler threw, ran out of time
    or memory.

    @ivar index: the index in the batch of the event being handled, -1
        when not handling an event.
    @ivar timed_out: the time limit was reached (the batch may have held
        several events: the runner replays them one by one to find which).
    """

    def __init__(self, message: str, index: int = -1, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.timed_out = timed_out


@frozen
class Sources:
    """
    What a query reads and how, from its C{from...}/C{options} calls.

    @ivar all_streams: C{fromAll()}.
    @ivar streams: C{fromStream}/C{fromStreams} names.
    @ivar categories: C{fromCategory} names.
    @ivar by_streams: C{foreachStream()}: one partition per stream.
    @ivar by_custom_partitions: C{partitionBy(f)}.
    @ivar all_events: a C{$any} handler (or none at all): every event type.
    @ivar events: the event types with their own handler.
    @ivar include_links: C{options({$includeLinks: true})}.
    @ivar produces_results: C{outputState}/C{transformBy}/C{filterBy}.
    @ivar result_stream_name: C{options({resultStreamName})}, C{None} for
        v5's default.
    @ivar handles_deleted: a C{$deleted} handler.
    @ivar bi_state: an C{$initShared} handler.
    """

    all_streams: bool
    streams: tuple[str, ...]
    categories: tuple[str, ...]
    by_streams: bool
    by_custom_partitions: bool
    all_events: bool
    events: frozenset[str]
    include_links: bool
    produces_results: bool
    defines_state_transform: bool
    result_stream_name: Optional[str]
    handles_deleted: bool
    bi_state: bool
    reorder_events: bool
    processing_lag: int

    @property
    def partitioned(self) -> bool:
        return self.by_streams or self.by_custom_partitions

    def definition(self) -> dict[str, Any]:
        """
        The C{definition} object of v5's C{/query?config=yes} and
        statistics.
        """
        return {
            "allStreams": self.all_streams,
            "categories": list(self.categories),
            "streams": list(self.streams),
            "allEvents": self.all_events,
            "events": sorted(self.events),
            "byStreams": self.by_streams,
            "byCustomPartitions": self.by_custom_partitions,
            "definesStateTransform": self.defines_state_transform,
            "handlesDeletedNotifications": self.handles_deleted,
            "producesResults": self.produces_results,
            "resultStreamName": self.result_stream_name,
            "includeLinks": self.include_links,
            "biState": self.bi_state,
        }


def parse_sources(text: str) -> Sources:
    """
    L{Sources} from the runtime's JSON.

    @raise ProjectionFault: the query declared no source, or an option of
        the wrong type.
    """
    raw = json.loads(text)
    options = raw["options"]
    if not (raw["allStreams"] or raw["streams"] or raw["categories"]):
        raise ProjectionFault(
            "the query has no source: call fromAll, fromStream(s) or fromCategory")
    result_stream = options.get("resultStreamName")
    if result_stream is not None and not isinstance(result_stream, str):
        raise ProjectionFault("options.resultStreamName must be a string")
    lag = options.get("processingLag") or 0
    if isinstance(lag, bool) or not isinstance(lag, (int, float)):
        raise ProjectionFault("options.processingLag must be a number")
    return Sources(
        all_streams=bool(raw["allStreams"]),
        streams=tuple(raw["streams"]),
        categories=tuple(raw["categories"]),
        by_streams=bool(raw["byStreams"]),
        by_custom_partitions=bool(raw["byCustomPartitions"]),
        all_events=bool(raw["allEvents"]),
        events=frozenset(raw["events"]),
        include_links=bool(options.get("$includeLinks")),
        produces_results=bool(options.get("producesResults")),
        defines_state_transform=bool(options.get("definesStateTransform")),
        result_stream_name=result_stream or None,
        handles_deleted=bool(options.get("handlesDeletedNotifications")),
        bi_state=bool(options.get("biState")),
        reorder_events=bool(options.get("reorderEvents")),
        processing_lag=int(lag),
    )


@frozen
class Emitted:
    """
    One event a handler emitted (C{emit}, C{linkTo}, C{copyTo},
    C{linkStreamTo}).
    """

    stream: str
    event_type: str
    data: bytes
    metadata: Optional[Mapping[str, Any]]
    is_json: bool


@frozen
class BatchResult:
    """
    What L{JsProjection.process} did.

    @ivar emits: for each event handled, what it emitted.
    @ivar logs: what the handlers logged (C{log(...)}), at most 100.
    """

    emits: tuple[tuple[Emitted, ...], ...]
    logs: tuple[str, ...]


def _emitted(raw: Mapping[str, Any]) -> Emitted:
    body = raw.get("body")
    data = b"" if body is None else str(body).encode()
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProjectionFault("emitted metadata must be an object")
    return Emitted(str(raw["streamId"]), str(raw["eventType"]), data, metadata,
                   bool(raw.get("isJson")))


class JsProjection:
    """
    One compiled query in its own V8 isolate.

    @ivar sources: what it reads.
    """

    def __init__(
        self,
        query: str,
        timeout: float = DEFAULT_TIMEOUT,
        max_memory: int = DEFAULT_MAX_MEMORY,
    ) -> None:
        """
        @raise ProjectionFault: the query does not compile, throws while
            it runs its top level, or declares no source.
        """
        from py_mini_racer import MiniRacer

        self._timeout = timeout
        self._ctx = MiniRacer()
        self._ctx.set_hard_memory_limit(max_memory)
        self._call("eval", PRELUDE, compile_timeout=True)
        self._call("eval", query, compile_timeout=True)
        self.sources = parse_sources(str(self._call("call", "__es.sources")))
        self.shared_loaded = False

    def _call(
        self, how: str, code: str, *args: Any, compile_timeout: bool = False,
        timeout: Optional[float] = None,
    ) -> Any:
        from py_mini_racer import JSOOMException, JSTimeoutException
        from py_mini_racer._exc import MiniRacerBaseException

        limit = timeout if timeout is not None else self._timeout
        if compile_timeout:
            limit = max(limit, 5.0)
        try:
            if how == "eval":
                return self._ctx.eval(code, timeout_sec=limit)
            return self._ctx.call(code, *args, timeout_sec=limit)
        except JSTimeoutException:
            # let the isolate finish its termination now, so that closing
            # it later leaves no callback behind
            try:
                self._ctx.eval("0", timeout_sec=1.0)
            except MiniRacerBaseException:
                pass
            raise ProjectionFault(
                f"the handler ran for more than {limit * 1000:g} ms", timed_out=True
            ) from None
        except JSOOMException:
            raise ProjectionFault("the projection ran out of memory") from None
        except MiniRacerBaseException as e:
            raise ProjectionFault(_first_line(str(e))) from None

    def close(self) -> None:
        self._ctx.close()

    def handles(self, event_type: str) -> bool:
        """
        Whether an event of C{event_type} reaches a handler.
        """
        s = self.sources
        return s.all_events or event_type in s.events

    def partitions(self, events: Sequence[Mapping[str, Any]]) -> list[str]:
        """
        The partition of each event (C{partitionBy}'s function).

        @raise ProjectionFault: the function threw or ran out of time.
        """
        try:
            return list(json.loads(self._call(
                "call", "__es.partitions", json.dumps(list(events)))))
        except ProjectionFault as e:
            if not e.timed_out:
                e.index = int(self._call("call", "__es.current"))
            raise

    def load(self, states: Mapping[str, Optional[str]]) -> None:
        """
        Give partitions their state: JSON text, or C{None} for C{$init}'s.
        """
        if states:
            self._call("call", "__es.load", json.dumps(dict(states)))

    def load_shared(self, state: Optional[str]) -> None:
        """
        The bi-state shared state (JSON, C{None} for C{$initShared}'s).
        """
        self._call("call", "__es.loadShared", state)
        self.shared_loaded = True

    def process(
        self, events: Sequence[Mapping[str, Any]], partitions: Sequence[str]
    ) -> BatchResult:
        """
        Run the handlers over C{events}, each in its partition.

        Events are dicts: C{s} stream, C{n} event number, C{t} type, C{d}
        data text, C{m} metadata text, C{lm} link metadata text, C{j}
        is-JSON, C{id} event id, C{c} category, C{del} (a stream
        deletion, for C{$deleted}).

        @raise ProjectionFault: a handler threw (C{index} names the event;
            the states of the events before it are applied), or the batch
            ran out of time or memory (the isolate must be dropped).
        """
        raw = json.loads(self._call(
            "call", "__es.process", json.dumps(list(events)), json.dumps(list(partitions))
        ))
        if raw["error"] is not None:
            raise ProjectionFault(_first_line(str(raw["error"])), index=int(raw["done"]))
        return BatchResult(
            tuple(tuple(_emitted(e) for e in one) for one in raw["emits"]),
            tuple(raw["logs"]),
        )

    def states(self, partitions: Sequence[str]) -> dict[str, Optional[str]]:
        """
        The JSON state of each partition (C{None}: not loaded).
        """
        return dict(json.loads(self._call("call", "__es.states", json.dumps(list(partitions)))))

    def shared(self) -> Optional[str]:
        """
        The bi-state shared state as JSON, C{None} when not bi-state.
        """
        value = self._call("call", "__es.shared")
        return None if value is None else str(value)

    def results(self, partitions: Sequence[str]) -> dict[str, Optional[str]]:
        """
        Each partition's result: its state through C{transformBy}/
        C{filterBy}, as JSON; C{None} when filtered out or not loaded.

        @raise ProjectionFault: a transform threw.
        """
        return dict(json.loads(self._call("call", "__es.results", json.dumps(list(partitions)))))

    def forget(self, partitions: Sequence[str]) -> None:
        """
        Drop partitions' states from memory (they are persisted).
        """
        if partitions:
            self._call("call", "__es.forget", json.dumps(list(partitions)))


def _first_line(text: str) -> str:
    """
    A V8 error without the source excerpt mini-racer appends, bounded.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else text
    if head.startswith("<anonymous>:"):
        head = head.split(": ", 1)[-1]
    return head[:500]
