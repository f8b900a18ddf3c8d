# -*- test-case-name: estwisted.projections.test.test_runner -*-
"""
The service that holds the user (JavaScript) projections of a node:
their definitions, persisted as v5 does (C{$ProjectionCreated}/
C{$ProjectionDeleted} in C{$projections-$all}, C{$ProjectionUpdated} in
C{$projections-{name}}) and applied when they commit, here or replicated
from the leader; one L{UserProjectionRunner} each.  Transient
projections live in memory on the node that made them.

The query runs off the reactor thread, on one worker thread shared by
every projection (C{run_js}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import AlreadyExists, BadRequest
from estwisted.core.model import EXPECTED_ANY, EventRecord, ReadStatus
from estwisted.projections._js import DEFAULT_MAX_MEMORY, DEFAULT_TIMEOUT
from estwisted.projections._runner import RunJs, UserProjectionRunner, new_id
from estwisted.projections._system import (
    PROJECTION_UPDATED_EVENT_TYPE,
    checkpoint_stream,
    definition_stream,
)
from estwisted.projections._user import (
    PROJECTION_CREATED,
    PROJECTION_DELETED,
    REGISTRATION_STREAM,
    Definition,
    Mode,
    emitted_streams_stream,
    parse_definition,
    partitions_stream,
    registration_event,
    result_stream,
    state_stream,
)


class ProjectionConflict(AlreadyExists):
    """
    A projection of that name exists (409).
    """


class ProjectionStateError(BadRequest):
    """
    The command does not apply to the projection as it is (400).
    """


class UserProjectionsService(Service):
    """
    The user projections of a node.

    @ivar runners: by name.
    """

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        run_js: Optional[RunJs] = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_memory: int = DEFAULT_MAX_MEMORY,
        reserved: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._pool: Any = None
        self._run_js: RunJs = run_js if run_js is not None else self._in_thread
        self._timeout = timeout
        self._max_memory = max_memory
        self._reserved = reserved
        self.runners: dict[str, UserProjectionRunner] = {}
        self._versions: dict[str, int] = {}
        self._registration_version = -2
        self._remove_listener: Optional[Callable[[], None]] = None

    # -- definitions ------------------------------------------------------

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{f} on the one JavaScript worker thread (C{clock} is then
        the reactor).
        """
        from twisted.internet.threads import deferToThreadPool

        if self._pool is None:
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(1, 1, name="projections-js")
            self._pool.start()
        return deferToThreadPool(self._clock, self._pool, f, *args)  # type: ignore[arg-type]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._remove_listener = self._store.add_commit_listener(self._committed)
        self._scan()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        d = gatherResults([r.close() for r in self.runners.values()], consumeErrors=True)

        def stopped(_: object) -> None:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.stop()

        return d.addCallback(stopped)

    def _registered(self) -> list[str]:
        names: dict[str, None] = {}
        start = 0
        for _ in range(10_000):
            page = self._store.read_stream(
                REGISTRATION_STREAM, start, 1000, True, False, SYSTEM_PRINCIPAL)
            if page.status != ReadStatus.SUCCESS or not page.events:
                break
            for e in page.events:
                record = e.event
                if record is None:
                    continue
                name = record.data.decode("utf-8", "replace")
                if record.event_type == PROJECTION_CREATED:
                    names[name] = None
                elif record.event_type == PROJECTION_DELETED:
                    names.pop(name, None)
            start = page.events[-1].original.event_number + 1
        return list(names)

    def _persisted(self, name: str) -> Optional[Definition]:
        result = self._store.read_stream(
            definition_stream(name), -1, 1, False, False, SYSTEM_PRINCIPAL)
        if result.status != ReadStatus.SUCCESS or not result.events:
            return None
        record: Optional[EventRecord] = result.events[0].event
        if record is None or record.event_type != PROJECTION_UPDATED_EVENT_TYPE:
            return None
        return parse_definition(name, record.data)

    def _committed(self, records: Sequence[EventRecord]) -> None:
        self._scan()

    def _scan(self) -> None:
        """
        Apply what C{$projections-$all} and the definition streams hold,
        looking only at their last event numbers when nothing changed.
        """
        store = self._store
        version = store.last_event_number(REGISTRATION_STREAM)
        if version != self._registration_version:
            self._registration_version = version
            names = set(self._registered())
            for name in list(self.runners):
                runner = self.runners[name]
                if runner.persisted and name not in names:
                    del self.runners[name]
                    self._versions.pop(name, None)
                    runner.close()
            for name in names:
                self._versions.setdefault(name, -2)
        for name, seen in list(self._versions.items()):
            version = store.last_event_number(definition_stream(name))
            if version == seen:
                continue
            self._versions[name] = version
            definition = self._persisted(name)
            if definition is not None:
                self._apply(definition)

    def _apply(self, definition: Definition) -> None:
        runner = self.runners.get(definition.name)
        if runner is not None and runner.definition == definition:
            return
        if runner is not None:
            old = runner.definition
            same_code = (old.query, old.epoch, old.emit_enabled, old.checkpoints_enabled,
                         old.track_emitted_streams) == (
                definition.query, definition.epoch, definition.emit_enabled,
                definition.checkpoints_enabled, definition.track_emitted_streams)
            if same_code:
                runner.definition = definition
                if definition.enabled and self.running:
                    runner.start()
                elif not definition.enabled:
                    runner.stop()
                return
            runner.close()
        runner = UserProjectionRunner(
            self._store, self._clock, definition, self._run_js, self._timeout,
            self._max_memory)
        self.runners[definition.name] = runner
        if definition.enabled and self.running:
            runner.start()

    def _write_definition(self, definition: Definition) -> Deferred[None]:
        d = self._store.append(
            definition_stream(definition.name), EXPECTED_ANY, [definition.event(new_id())],
            SYSTEM_PRINCIPAL)
        return d.addCallback(lambda _: self._apply(definition))  # type: ignore[no-any-return]

    # -- commands -----------------------------------------------------------

    def get(self, name: str) -> UserProjectionRunner:
        """
        @raise KeyError: no such user projection.
        """
        return self.runners[name]

    def create(self, definition: Definition) -> Deferred[None]:
        """
        A new projection (C{POST /projections/{mode}}).

        @raise ProjectionConflict: the name is taken.
        """
        name = definition.name
        if name in self.runners or self._reserved(name):
            raise ProjectionConflict(f"Duplicate projection name: {name}")
        if definition.mode is Mode.TRANSIENT:
            self._apply(definition)
            return succeed(None)
        d = self._store.append(
            REGISTRATION_STREAM, EXPECTED_ANY, [registration_event(new_id(), name, True)],
            SYSTEM_PRINCIPAL)

        def registered(_: object) -> Deferred[None]:
            self._versions.setdefault(name, -2)
            return self._write_definition(definition)

        return d.addCallback(registered)  # type: ignore[no-any-return]

    def _change(self, name: str, **changes: Any) -> Deferred[None]:
        runner = self.get(name)
        definition = runner.definition.with_changes(**changes)
        if not runner.persisted:
            self._apply(definition)
            return succeed(None)
        return self._write_definition(definition)

    def update_query(self, name: str, query: str, emit: Optional[bool]) -> Deferred[None]:
        """
        C{PUT /projection/{name}/query}: the projection goes on from its
        checkpoint with the new query.
        """
        changes: dict[str, Any] = {"query": query}
        if emit is not None:
            changes["emit_enabled"] = emit
        return self._change(name, **changes)

    def update_config(self, name: str, emit: Optional[bool],
                      track: Optional[bool], checkpoint_every: Optional[int]) -> Deferred[None]:
        changes: dict[str, Any] = {}
        if checkpoint_every is not None:
            if checkpoint_every < 1:
                raise ProjectionStateError("checkpointHandledThreshold must be at least 1")
            changes["checkpoint_every"] = checkpoint_every
        if emit is not None:
            changes["emit_enabled"] = emit
        if track is not None:
            changes["track_emitted_streams"] = track
        if not changes:
            return succeed(None)
        return self._change(name, **changes)

    def enable(self, name: str) -> Deferred[None]:
        runner = self.get(name)
        if runner.status in ("Faulted", "Completed") and runner.definition.enabled:
            # v5 restarts a faulted projection when enabled again
            runner.status = "Stopped"
            runner.start()
            return succeed(None)
        return self._change(name, enabled=True)

    def disable(self, name: str) -> Deferred[None]:
        return self._change(name, enabled=False)

    def reset(self, name: str) -> Deferred[None]:
        """
        Start again from the log start with fresh states (a new epoch);
        what was emitted stays, and nothing is emitted twice.
        """
        runner = self.get(name)
        return self._change(name, epoch=runner.definition.epoch + 1)

    def delete(
        self, name: str, delete_state: bool, delete_checkpoint: bool, delete_emitted: bool
    ) -> Deferred[None]:
        """
        C{DELETE /projection/{name}}; the projection must be stopped.

        @raise ProjectionStateError: it is running.
        """
        runner = self.get(name)
        if runner.status in ("Running", "Paused"):
            raise ProjectionStateError(
                f"Cannot delete a projection that hasn't been disabled: {name}")
        if not runner.persisted:
            del self.runners[name]
            return runner.close()
        streams: list[str] = []
        if delete_state:
            partitions = sorted(runner.catalogued_partitions())
            streams += [state_stream(name, p) for p in partitions]
            streams += [result_stream(name, p) for p in partitions]
            streams += [state_stream(name, ""), result_stream(name, ""),
                        partitions_stream(name)]
        if delete_checkpoint:
            streams.append(checkpoint_stream(name))
        if delete_emitted:
            streams += sorted(runner.emitted_streams())
            streams.append(emitted_streams_stream(name))
        store = self._store

        async def go() -> None:
            for stream in streams:
                if store.last_event_number(stream) >= 0:
                    await store.delete_stream(stream, EXPECTED_ANY, False, SYSTEM_PRINCIPAL)
            await store.append(
                REGISTRATION_STREAM, EXPECTED_ANY, [registration_event(new_id(), name, False)],
                SYSTEM_PRINCIPAL)
            await store.delete_stream(definition_stream(name), EXPECTED_ANY, False,
                                      SYSTEM_PRINCIPAL)
            if name in self.runners:
                del self.runners[name]
                self._versions.pop(name, None)
                await runner.close()

        return Deferred.fromCoroutine(go())
