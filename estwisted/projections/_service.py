# -*- test-case-name: estwisted.projections.test.test_service -*-
"""
The service that runs the standard system projections over a
L{StreamStore}: for each projection, read its checkpoint, catch up from
C{$all}, then follow new commits; write the planned events and the
checkpoint as C{$system}.  A thin loop around L{Projector}.

On a node that may not write (a follower: the store refuses with
L{NotReady}/L{NotLeader}) and after any failed write, the projection
pauses, then starts again from the (replicated) checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

import estwisted.projections._status as _status
from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import NotReady
from estwisted.core.model import DELETED_STREAM, EXPECTED_ANY, EventRecord, ReadStatus
from estwisted.core.progress import Progress
from estwisted.projections._catchup import CatchUpReport
from estwisted.projections._system import (
    STANDARD_PROJECTIONS,
    Projector,
    SystemProjection,
    checkpoint_event,
    checkpoint_stream,
    definition_event,
    definition_stream,
    parse_checkpoint,
    parse_enabled,
    source_position_of,
)

_log = Logger()

#: Records read from C{$all} per step.
BATCH_SIZE = 1000
#: Catching up over fewer bytes of log logs no progress lines.
#: Seconds to wait after a refused or failed write, or while a follower.
RETRY_DELAY = 1.0
#: Write a checkpoint after this many records, or when caught up.
CHECKPOINT_EVERY = 4000


class ProjectionRunner:
    """
    Runs one system projection over C{store}.

    @ivar status: C{"Stopped"}, C{"Running"}, C{"Paused"} (not the leader,
        or retrying after a failure), as v5 reports it roughly.
    @ivar processed: records read from C{$all} since start.
    """

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        projection: SystemProjection,
        separator: str = "-",
    ) -> None:
        self._store = store
        self._clock = clock
        self.projection = projection
        self._separator = separator
        self._projector: Optional[Projector] = None
        self._checkpointed = -1
        self._since_checkpoint = 0
        self._emitted = False
        self._running = False
        self._busy: Optional[Deferred[None]] = None
        self._wanted = False
        self._retry: Optional[IDelayedCall] = None
        self._remove_listener: Optional[Callable[[], None]] = None
        self.status = "Stopped"
        self.processed = 0
        self.last_error = ""
        #: catching up after (re)loading, on the progress board
        self._catch_up = CatchUpReport(self.name, store, clock)

    @property
    def name(self) -> str:
        return self.projection.value

    @property
    def catch_up(self) -> Optional[Progress]:
        """
        Catching up after (re)loading, on the progress board (C{None}
        before the first report).
        """
        return self._catch_up.task

    @property
    def checkpoint(self) -> int:
        """
        The position of the last checkpoint read or written, -1 when none.
        """
        return self._checkpointed

    @property
    def position(self) -> int:
        """
        The last source position processed, -1 when none or not loaded.
        """
        return -1 if self._projector is None else self._projector.position

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._projector = None
        self.status = "Running"
        self._remove_listener = self._store.add_commit_listener(self._committed)
        # First step on the next turn: a cluster node refuses writes only
        # once its cluster wiring (started after this service) is in place.
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        def retry() -> None:
            self._retry = None
            self._kick()

        self._retry = self._clock.callLater(delay, retry)

    def stop(self) -> Deferred[None]:
        """
        Stop; fires when the step in progress (if any) has ended.
        """
        self._running = False
        self.status = "Stopped"
        self._catch_up.end("stopped")
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

    # -- the loop ----------------------------------------------------------

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
        self._projector = None
        self._catch_up.end("stopped")
        if not self._running:
            return
        self.status = "Paused"
        self.last_error = reason
        self._schedule(RETRY_DELAY)

    async def _run(self) -> None:
        try:
            while self._running:
                if self._store.writes_refused is not None:
                    self._pause(str(self._store.writes_refused))
                    return
                if not await self._step():
                    return
        except NotReady as e:
            self._pause(str(e))
        except Exception as e:
            _log.failure("Projection {name} failed; retrying from its checkpoint", name=self.name)
            self._pause(f"{type(e).__name__}: {e}")

    def _load(self) -> Projector:
        store = self._store
        result = store.read_stream(
            checkpoint_stream(self.name), -1, 1, False, False, SYSTEM_PRINCIPAL
        )
        position = -1
        if result.status == ReadStatus.SUCCESS and result.events:
            event = result.events[0].event
            if event is not None:
                position = parse_checkpoint(event.metadata)
        self._checkpointed = position
        self._since_checkpoint = 0
        self._emitted = False
        return Projector(self.projection, position, self._separator)

    def _load_output(self, projector: Projector, stream: str) -> None:
        store = self._store
        last = store.last_event_number(stream)
        source = -1
        if last >= 0 and last != DELETED_STREAM:
            result = store.read_stream(stream, -1, 1, False, False, SYSTEM_PRINCIPAL)
            if result.status == ReadStatus.SUCCESS and result.events:
                event = result.events[0].event
                if event is not None:
                    source = source_position_of(event.metadata)
        projector.load_output(stream, last, source)

    async def _step(self) -> bool:
        """
        Process one batch; C{False} when caught up.
        """
        if self._projector is None:
            self._projector = self._load()
            self._catch_up.begin(self._projector.position)
            self.status = "Running"
            self.last_error = ""
        projector = self._projector
        start = max(projector.position, 0)
        page = self._store.read_all(start, BATCH_SIZE, True, False, SYSTEM_PRINCIPAL)
        if page.status != ReadStatus.SUCCESS:
            raise RuntimeError(f"reading $all failed: {page.error or page.status.name}")
        records = [e.event for e in page.events if e.event is not None]
        fresh = [r for r in records if r.position > projector.position]
        self._catch_up.report(fresh[-1].position if fresh else -1)
        if not fresh:
            # Caught up: checkpoint only if this projection wrote since the
            # last one, so checkpoints never wake each other up forever.
            if self._emitted:
                await self._checkpoint(projector)
            return False
        for stream in projector.unknown_outputs(fresh):
            self._load_output(projector, stream)
        for write in projector.plan(fresh):
            self._emitted = True
            await self._store.append(
                write.stream, write.expected_version, list(write.events), SYSTEM_PRINCIPAL
            )
        self.processed += len(fresh)
        self._since_checkpoint += len(fresh)
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            await self._checkpoint(projector)
        return True

    async def _checkpoint(self, projector: Projector) -> None:
        position = projector.position
        if position <= self._checkpointed:
            return
        await self._store.append(
            checkpoint_stream(self.name),
            EXPECTED_ANY,
            [checkpoint_event(self.name, position)],
            SYSTEM_PRINCIPAL,
        )
        self._checkpointed = position
        self._since_checkpoint = 0
        self._emitted = False


class SystemProjectionsService(Service):
    """
    Runs the standard projections while the service runs.

    @ivar runners: one L{ProjectionRunner} per projection, by name.
    """

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        projections: Sequence[SystemProjection] = STANDARD_PROJECTIONS,
        separator: str = "-",
        enabled: bool = True,
    ) -> None:
        self.runners = {
            p.value: ProjectionRunner(store, clock, p, separator) for p in projections
        }
        self._store = store
        self._remove_listener: Optional[Callable[[], None]] = None
        self._definition_versions: dict[str, int] = {}
        #: Names of the projections to run while the service runs (the
        #: default for those with no persisted definition).
        self.enabled = set(self.runners) if enabled else set()
        #: The L{UserProjectionsService} (C{RunProjections All}), or C{None}.
        self.user: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        for name in self.runners:
            self._definition_versions[name] = self._store.last_event_number(
                definition_stream(name)
            )
            persisted = self._persisted_enabled(name)
            if persisted is True:
                self.enabled.add(name)
            elif persisted is False:
                self.enabled.discard(name)
        self._remove_listener = self._store.add_commit_listener(self._committed)
        for name in self.enabled:
            self.runners[name].start()

    def _persisted_enabled(self, name: str) -> Optional[bool]:
        result = self._store.read_stream(
            definition_stream(name), -1, 1, False, False, SYSTEM_PRINCIPAL
        )
        if result.status != ReadStatus.SUCCESS or not result.events:
            return None
        event = result.events[0].event
        return None if event is None else parse_enabled(event.data)

    def _committed(self, records: Sequence[EventRecord]) -> None:
        """
        Apply definition events as they commit, here or replicated from
        the leader, so every node knows which projections run.  Only the
        definition streams' last event numbers are looked at (the batch's
        records are never built for this).
        """
        store = self._store
        versions = self._definition_versions
        for name in self.runners:
            version = store.last_event_number(definition_stream(name))
            if versions.get(name, -1) == version:
                continue
            versions[name] = version
            enabled = self._persisted_enabled(name)
            if enabled is not None:
                self._apply(name, enabled)

    def _apply(self, name: str, enabled: bool) -> None:
        runner = self.runners[name]
        if enabled:
            self.enabled.add(name)
            if self.running:
                runner.start()
        else:
            self.enabled.discard(name)
            runner.stop()

    def enable(self, name: str) -> Deferred[None]:
        """
        Run projection C{name} (C{POST /projection/{name}/command/enable}):
        record it in C{$projections-{name}}; it applies when committed.

        @raise KeyError: no such projection.
        """
        return self._set_enabled(name, True)

    def disable(self, name: str) -> Deferred[None]:
        """
        Stop projection C{name}, recorded as L{enable} is; it resumes from
        its checkpoint when enabled again.

        @raise KeyError: no such projection.
        """
        return self._set_enabled(name, False)

    def reset(self, name: str) -> Deferred[None]:
        """
        Start projection C{name} again from the log start (a checkpoint at
        -1).  Exactly-once holds across a reset, so nothing is emitted
        twice; the output streams stay as they are.

        @raise KeyError: no such projection.
        """
        runner = self.runners[name]
        d = self._store.append(
            checkpoint_stream(name), EXPECTED_ANY, [checkpoint_event(name, -1)], SYSTEM_PRINCIPAL
        )

        def restart(_: object) -> Deferred[None]:
            was = runner.status != "Stopped"
            stopped = runner.stop()
            if was and name in self.enabled and self.running:
                stopped.addCallback(lambda _: runner.start())
            return stopped

        return d.addCallback(restart)  # type: ignore[no-any-return]

    def _set_enabled(self, name: str, enabled: bool) -> Deferred[None]:
        runner = self.runners[name]
        event = definition_event(
            runner.projection, enabled, _status.SYSTEM_QUERIES.get(name, "")
        )
        d = self._store.append(definition_stream(name), EXPECTED_ANY, [event], SYSTEM_PRINCIPAL)
        return d.addCallback(lambda _: self._apply(name, enabled))  # type: ignore[no-any-return]

    def statistics(self, name: str, base_url: str) -> dict[str, Any]:
        """
        The v5 statistics of C{name}.

        @raise KeyError: no such projection.
        """
        r = self.runners[name]
        return _status.statistics(
            name, r.status, r.position, r.checkpoint, r.processed, r.last_error, base_url
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        from twisted.internet.defer import gatherResults

        d = gatherResults([r.stop() for r in self.runners.values()], consumeErrors=True)
        return d.addCallback(lambda _: None)
