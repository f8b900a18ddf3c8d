"""
Tests for L{estwisted.projections._service}: the standard projections
over a real L{StreamStore} on a L{MemoryLog}, with a L{Clock}.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import NotLeader
from estwisted.core.model import EXPECTED_ANY, NewEvent, ReadStatus
from estwisted.core.streams import StreamStore
from estwisted.projections import (
    SystemProjection,
    SystemProjectionsService,
    _service,
    checkpoint_stream,
)
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog


def make_store(log: Any = None) -> tuple[StreamStore, Clock]:
    clock = Clock()
    store = StreamStore(log if log is not None else MemoryLog(), StreamIndex(), clock)
    clock.advance(0)
    return store, clock


def write(store: StreamStore, clock: Clock, stream: str, count: int = 1,
          event_type: str = "T") -> None:
    store.append(
        stream, EXPECTED_ANY,
        [NewEvent(uuid.uuid4().bytes, event_type, b"{}", b"", True) for _ in range(count)], None,
    )
    settle(clock)


def settle(clock: Clock, rounds: int = 50) -> None:
    for _ in range(rounds):
        clock.advance(0)


def links(store: StreamStore, stream: str, resolve: bool = False) -> list[Any]:
    s = store.read_stream(stream, 0, 4096, True, resolve, SYSTEM_PRINCIPAL)
    if s.status != ReadStatus.SUCCESS:
        return []
    return list(s.events)


def datas(store: StreamStore, stream: str) -> list[bytes]:
    return [e.event.data for e in links(store, stream)]


class ServiceTests(SynchronousTestCase):
    def test_catch_up_then_live(self) -> None:
        store, clock = make_store()
        write(store, clock, "order-1", 2, "Placed")
        write(store, clock, "order-2", 1, "Shipped")
        service = SystemProjectionsService(store, clock)
        service.startService()
        settle(clock)
        self.assertEqual(datas(store, "$ce-order"), [b"0@order-1", b"1@order-1", b"0@order-2"])
        self.assertEqual(datas(store, "$et-Placed"), [b"0@order-1", b"1@order-1"])
        self.assertEqual(datas(store, "$category-order"), [b"order-1", b"order-2"])
        self.assertEqual(datas(store, "$streams"), [b"0@order-1", b"0@order-2"])
        # each projection reported catching up, and finished it
        for runner in service.runners.values():
            assert runner.catch_up is not None
            self.assertEqual(
                (runner.catch_up.kind, runner.catch_up.name, runner.catch_up.result,
                 runner.catch_up.percentage),
                ("projection-catch-up", runner.name, "done", 100.0),
            )
        write(store, clock, "order-3", 1, "Placed")
        settle(clock)
        self.assertEqual(datas(store, "$ce-order")[-1], b"0@order-3")
        resolved = links(store, "$ce-order", resolve=True)
        self.assertEqual([(e.event.stream, e.event.event_number) for e in resolved],
                         [("order-1", 0), ("order-1", 1), ("order-2", 0), ("order-3", 0)])
        self.assertEqual([e.link.stream for e in resolved], ["$ce-order"] * 4)
        self.successResultOf(service.stopService())
        # a checkpoint was written and the loop went quiet
        self.assertTrue(links(store, checkpoint_stream("$by_category")))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_quiet_when_caught_up(self) -> None:
        store, clock = make_store()
        write(store, clock, "order-1")
        service = SystemProjectionsService(store, clock)
        service.startService()
        settle(clock, 500)
        end = store.last_commit_position
        settle(clock, 500)
        self.assertEqual(store.last_commit_position, end)
        self.successResultOf(service.stopService())

    def test_restart_emits_nothing_twice(self) -> None:
        log = MemoryLog()
        store, clock = make_store(log)
        for i in range(30):
            write(store, clock, f"c{i % 3}-{i}", 2)
        service = SystemProjectionsService(store, clock)
        service.startService()
        settle(clock)
        before = {s: datas(store, s) for s in ("$ce-c0", "$ce-c1", "$streams", "$et-T")}
        self.successResultOf(service.stopService())
        # Forget the checkpoints: a restart from the log start is still safe.
        self.patch(_service, "checkpoint_stream", lambda name: "$nothing-" + name)
        again = SystemProjectionsService(store, clock)
        again.startService()
        settle(clock)
        write(store, clock, "c0-new")
        settle(clock)
        after = {s: datas(store, s) for s in before}
        self.assertEqual(after["$ce-c1"], before["$ce-c1"])
        self.assertEqual(after["$ce-c0"], before["$ce-c0"] + [b"0@c0-new"])
        self.assertEqual(after["$streams"], before["$streams"] + [b"0@c0-new"])
        self.assertEqual(len(after["$et-T"]), 61)
        self.successResultOf(again.stopService())

    def test_follower_pauses_then_resumes(self) -> None:
        store, clock = make_store()
        write(store, clock, "order-1")
        store.writes_refused = NotLeader("not the leader")
        service = SystemProjectionsService(store, clock, [SystemProjection.BY_CATEGORY])
        service.startService()
        settle(clock)
        runner = service.runners["$by_category"]
        self.assertEqual(runner.status, "Paused")
        self.assertEqual(datas(store, "$ce-order"), [])
        store.writes_refused = None
        clock.advance(_service.RETRY_DELAY)
        settle(clock)
        self.assertEqual(runner.status, "Running")
        self.assertEqual(datas(store, "$ce-order"), [b"0@order-1"])
        self.successResultOf(service.stopService())

    def test_failed_write_retries_from_checkpoint(self) -> None:
        store, clock = make_store()
        service = SystemProjectionsService(store, clock, [SystemProjection.BY_CATEGORY])
        service.startService()
        original = store.append
        calls: list[str] = []

        def failing(stream: str, *a: Any) -> Any:
            if stream.startswith("$ce-") and not calls:
                calls.append(stream)
                from twisted.internet.defer import fail

                return fail(RuntimeError("disk on fire"))
            return original(stream, *a)

        self.patch(store, "append", failing)
        write(store, clock, "order-1")
        settle(clock)
        self.flushLoggedErrors(RuntimeError)
        runner = service.runners["$by_category"]
        self.assertEqual(runner.status, "Paused")
        self.assertIn("disk on fire", runner.last_error)
        clock.advance(_service.RETRY_DELAY)
        settle(clock)
        self.assertEqual(datas(store, "$ce-order"), [b"0@order-1"])
        self.successResultOf(service.stopService())

    def test_link_to_deleted_event_is_returned_unresolved(self) -> None:
        store, clock = make_store()
        write(store, clock, "order-1")
        write(store, clock, "order-2")
        service = SystemProjectionsService(store, clock, [SystemProjection.BY_CATEGORY])
        service.startService()
        settle(clock)
        store.delete_stream("order-1", EXPECTED_ANY, False, SYSTEM_PRINCIPAL)
        settle(clock)
        resolved = links(store, "$ce-order", resolve=True)
        self.assertEqual(len(resolved), 2)
        self.assertIsNone(resolved[0].event)
        self.assertEqual(resolved[0].link.data, b"0@order-1")
        self.assertEqual(resolved[1].event.stream, "order-2")
        self.successResultOf(service.stopService())

    def test_enabled_state_is_persisted(self) -> None:
        store, clock = make_store()
        service = SystemProjectionsService(store, clock)
        service.startService()
        settle(clock)
        d = service.disable("$streams")
        settle(clock)
        self.successResultOf(d)
        self.assertEqual(service.runners["$streams"].status, "Stopped")
        self.successResultOf(service.stopService())
        write(store, clock, "order-1")
        # a new service (a restart) keeps it disabled, whatever its default
        again = SystemProjectionsService(store, clock, enabled=True)
        again.startService()
        settle(clock)
        self.assertEqual(again.runners["$streams"].status, "Stopped")
        self.assertEqual(datas(store, "$streams"), [])
        self.assertEqual(datas(store, "$ce-order"), [b"0@order-1"])
        d = again.enable("$streams")
        settle(clock)
        self.successResultOf(d)
        self.assertEqual(datas(store, "$streams"), [b"0@order-1"])
        self.successResultOf(again.stopService())

    def test_definition_replicated_from_leader_applies(self) -> None:
        store, clock = make_store()
        service = SystemProjectionsService(store, clock, enabled=False)
        service.startService()
        # a definition event committed by someone else (the leader's, replicated)
        from estwisted.projections._system import definition_event

        store.append("$projections-$by_category", EXPECTED_ANY,
                     [definition_event(SystemProjection.BY_CATEGORY, True, "")], SYSTEM_PRINCIPAL)
        settle(clock)
        self.assertEqual(service.runners["$by_category"].status, "Running")
        self.successResultOf(service.stopService())
