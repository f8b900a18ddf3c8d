"""
Tests for L{estwisted.projections._runner} and L{_user_service}: user
projections over a real L{StreamStore} on a L{MemoryLog}, with a
L{Clock}; the query runs in V8 on the test's thread.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import NotLeader
from estwisted.core.model import EXPECTED_ANY, NewEvent, ReadStatus
from estwisted.projections._runner import UserProjectionRunner
from estwisted.projections._user import Definition, Mode
from estwisted.projections._user_service import (
    ProjectionConflict,
    ProjectionStateError,
    UserProjectionsService,
)
from estwisted.projections.test.test_service import make_store, settle


def run_here(f: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


def done(clock: Clock, d: Deferred[Any]) -> Any:
    settle(clock)
    return d


def write(store: Any, clock: Clock, stream: str, body: Any, event_type: str = "T") -> None:
    store.append(
        stream, EXPECTED_ANY,
        [NewEvent(uuid.uuid4().bytes, event_type, json.dumps(body).encode(), b"", True)],
        None,
    )
    settle(clock)


def bodies(store: Any, stream: str) -> list[Any]:
    s = store.read_stream(stream, 0, 4096, True, False, SYSTEM_PRINCIPAL)
    if s.status != ReadStatus.SUCCESS:
        return []
    return [json.loads(e.event.data) if e.event.is_json else e.event.data.decode()
            for e in s.events]


COUNT = "fromAll().when({$init: function () { return {n: 0}; }, $any: function (s, e) { s.n++; }})"
EMIT = """fromCategory('order').when({
  Placed: function (s, e) { emit('totals', 'Counted', {id: e.streamId, v: e.body.v}); }
})"""
PER_STREAM = """fromAll().foreachStream().when({
  $init: function () { return {n: 0}; },
  T: function (s, e) { s.n += e.data.v; return s; }
}).outputState()"""


def definition(query: str, mode: Mode = Mode.CONTINUOUS, **kw: Any) -> Definition:
    return Definition("p", query, mode, **kw)


class RunnerTests(SynchronousTestCase):
    def runner(self, store: Any, clock: Clock, d: Definition, **kw: Any) -> UserProjectionRunner:
        r = UserProjectionRunner(store, clock, d, run_here, timeout=0.5, **kw)
        self.addCleanup(lambda: self.successResultOf(r.close()))
        return r

    def state(self, r: UserProjectionRunner, partition: str = "") -> Any:
        text = self.successResultOf(Deferred.fromCoroutine(r.state(partition)))
        return None if text is None else json.loads(text)

    def test_count_all(self) -> None:
        store, clock = make_store()
        for n in range(5):
            write(store, clock, f"a-{n % 2}", {"v": n})
        r = self.runner(store, clock, definition(COUNT))
        r.start()
        settle(clock)
        self.assertEqual(self.state(r), {"n": 5})
        # catching up from the start of the log was reported, and ended
        assert r.catch_up is not None
        self.assertEqual((r.catch_up.kind, r.catch_up.name, r.catch_up.result,
                          r.catch_up.percentage), ("projection-catch-up", "p", "done", 100.0))
        write(store, clock, "b-1", {"v": 9})
        settle(clock)
        self.assertEqual(self.state(r), {"n": 6})
        self.assertEqual(r.status, "Running")
        # caught up: a checkpoint holds the state
        ck = bodies(store, "$projections-p-checkpoint")
        self.assertEqual(ck[-1], {"n": 6})

    def test_emit_exactly_once_across_restarts(self) -> None:
        store, clock = make_store()
        for n in range(6):
            write(store, clock, f"order-{n % 3}", {"v": n}, "Placed")
        write(store, clock, "other-1", {"v": 99}, "Placed")
        d = definition(EMIT, emit_enabled=True)
        r = self.runner(store, clock, d)
        r.start()
        settle(clock)
        self.assertEqual([b["v"] for b in bodies(store, "totals")], list(range(6)))
        self.successResultOf(r.close())
        # forget the checkpoint: a restart from the start emits nothing again
        store.append("$projections-p-checkpoint", EXPECTED_ANY, [NewEvent(
            uuid.uuid4().bytes, "$ProjectionCheckpoint", b"", b'{"$c":-1,"$p":-1}', True)],
            SYSTEM_PRINCIPAL)
        settle(clock)
        again = self.runner(store, clock, d)
        again.start()
        settle(clock)
        write(store, clock, "order-4", {"v": 6}, "Placed")
        self.assertEqual([b["v"] for b in bodies(store, "totals")], list(range(7)))

    def test_emit_not_enabled_faults(self) -> None:
        store, clock = make_store()
        write(store, clock, "order-1", {"v": 1}, "Placed")
        r = self.runner(store, clock, definition(EMIT))
        r.start()
        settle(clock)
        self.assertEqual(r.status, "Faulted")
        self.assertIn("'emit' is not allowed", r.reason)
        self.assertEqual(bodies(store, "totals"), [])

    def test_foreach_stream_state_result_and_restart(self) -> None:
        store, clock = make_store()
        for n in range(6):
            write(store, clock, f"s-{n % 2}", {"v": n})
        r = self.runner(store, clock, definition(PER_STREAM))
        r.start()
        settle(clock)
        self.assertEqual(self.state(r, "s-0"), {"n": 0 + 2 + 4})
        self.assertEqual(self.state(r, "s-1"), {"n": 1 + 3 + 5})
        self.assertEqual(bodies(store, "$projections-p-s-1-result")[-1], {"n": 9})
        self.assertEqual(bodies(store, "$projections-p-s-1-state")[-1], {"n": 9})
        self.successResultOf(r.close())
        again = self.runner(store, clock, definition(PER_STREAM))
        again.start()
        settle(clock)
        write(store, clock, "s-1", {"v": 10})
        self.assertEqual(self.state(again, "s-1"), {"n": 19})
        self.assertEqual(bodies(store, "$projections-p-s-1-result")[-1], {"n": 19})
        write(store, clock, "s-2", {"v": 1})
        # v5's partition catalog: each partition once, across the restart
        self.assertEqual(bodies(store, "$projections-p-partitions"), ["s-0", "s-1", "s-2"])

    def test_throwing_handler_faults_with_position(self) -> None:
        store, clock = make_store()
        write(store, clock, "a-1", {"v": 1})
        write(store, clock, "a-1", {"v": 2})
        query = "fromAll().when({T: function (s, e) { if (e.data.v === 2) throw 'no'; }})"
        r = self.runner(store, clock, definition(query))
        r.start()
        settle(clock)
        self.assertEqual(r.status, "Faulted")
        self.assertIn("no", r.reason)
        self.assertIn("1@a-1", r.reason)

    def test_endless_loop_faults_with_position(self) -> None:
        store, clock = make_store()
        for n in range(4):
            write(store, clock, "a-1", {"v": n})
        query = "fromAll().when({T: function (s, e) { while (e.data.v === 2) {} }})"
        r = self.runner(store, clock, definition(query))
        r.start()
        for _ in range(5):
            settle(clock)
            clock.advance(1.0)
        self.assertEqual(r.status, "Faulted")
        self.assertIn("ran for more than", r.reason)
        self.assertIn("2@a-1", r.reason)

    def test_syntax_error_faults(self) -> None:
        store, clock = make_store()
        r = self.runner(store, clock, definition("fromAll(.when("))
        r.start()
        settle(clock)
        self.assertEqual(r.status, "Faulted")
        self.assertIn("SyntaxError", r.reason)

    def test_one_time_completes_with_result(self) -> None:
        store, clock = make_store()
        for n in range(3):
            write(store, clock, "a-1", {"v": n})
        query = COUNT + ".transformBy(function (s) { return {total: s.n * 10}; })"
        r = self.runner(store, clock, definition(query, Mode.ONE_TIME))
        r.start()
        settle(clock)
        self.assertEqual(r.status, "Completed")
        self.assertEqual(bodies(store, "$projections-p-result"), [{"total": 30}])
        result = self.successResultOf(Deferred.fromCoroutine(r.result("")))
        self.assertEqual(json.loads(str(result)), {"total": 30})

    def test_partition_by(self) -> None:
        store, clock = make_store()
        for n in range(5):
            write(store, clock, f"a-{n}", {"k": "odd" if n % 2 else "even"})
        query = ("fromAll().partitionBy(function (e) { return e.body.k; }).when({"
                 "$init: function () { return {n: 0}; }, T: function (s) { s.n += 1; }})")
        r = self.runner(store, clock, definition(query))
        r.start()
        settle(clock)
        self.assertEqual(self.state(r, "even"), {"n": 3})
        self.assertEqual(self.state(r, "odd"), {"n": 2})
        self.assertEqual(bodies(store, "$projections-p-partitions"), ["even", "odd"])

    def test_bi_state_survives_restart(self) -> None:
        store, clock = make_store()
        query = ("fromAll().foreachStream().when({"
                 "$init: function () { return {n: 0}; },"
                 "$initShared: function () { return {all: 0}; },"
                 "T: function (s) { s[0].n += 1; s[1].all += 1; return s; }})")
        r = self.runner(store, clock, definition(query))
        r.start()
        for n in range(3):
            write(store, clock, f"a-{n % 2}", {})
        settle(clock)
        self.assertEqual(bodies(store, "$projections-p-checkpoint")[-1], [{"n": 0}, {"all": 3}])
        self.successResultOf(r.close())
        again = self.runner(store, clock, definition(query))
        again.start()
        settle(clock)
        write(store, clock, "a-0", {})
        self.assertEqual(self.state(again, "a-0"), {"n": 3})
        self.assertEqual(bodies(store, "$projections-p-checkpoint")[-1], [{"n": 0}, {"all": 4}])

    def test_deleted_notification(self) -> None:
        store, clock = make_store()
        write(store, clock, "a-1", {"v": 1})
        write(store, clock, "a-2", {"v": 1})
        query = ("fromAll().foreachStream().when({$any: function (s) { s.seen = true; },"
                 " $deleted: function (s, e) { return {deleted: e.partition}; }})")
        r = self.runner(store, clock, definition(query))
        r.start()
        settle(clock)
        store.delete_stream("a-1", EXPECTED_ANY, True, SYSTEM_PRINCIPAL)
        settle(clock)
        self.assertEqual(self.state(r, "a-1"), {"deleted": "a-1"})
        self.assertEqual(self.state(r, "a-2"), {"seen": True})

    def test_from_stream_resolves_links(self) -> None:
        store, clock = make_store()
        write(store, clock, "a-1", {"v": 5})
        store.append("mine", EXPECTED_ANY, [NewEvent(
            uuid.uuid4().bytes, "$>", b"0@a-1", b'{"why": "linked"}', False)], None)
        settle(clock)
        query = ("fromStream('mine').when({T: function (s, e) { return {"
                 "stream: e.streamId, v: e.body.v, why: e.linkMetadata.why}; }})")
        r = self.runner(store, clock, definition(query))
        r.start()
        settle(clock)
        self.assertEqual(self.state(r), {"stream": "a-1", "v": 5, "why": "linked"})

    def test_pauses_when_not_leader(self) -> None:
        store, clock = make_store()
        write(store, clock, "a-1", {"v": 1})
        store.writes_refused = NotLeader("not the leader")
        r = self.runner(store, clock, definition(COUNT))
        r.start()
        settle(clock)
        self.assertEqual(r.status, "Paused")
        store.writes_refused = None
        clock.advance(1.0)
        settle(clock)
        self.assertEqual(r.status, "Running")
        self.assertEqual(self.state(r), {"n": 1})


class ServiceTests(SynchronousTestCase):
    def service(self, store: Any, clock: Clock) -> UserProjectionsService:
        s = UserProjectionsService(store, clock, run_here, timeout=0.5,
                                   reserved=lambda n: n.startswith("$"))
        s.startService()
        self.addCleanup(lambda: self.successResultOf(s.stopService()) if s.running else None)
        return s

    def test_create_persists_and_restores(self) -> None:
        store, clock = make_store()
        write(store, clock, "a-1", {"v": 1})
        s = self.service(store, clock)
        self.successResultOf(done(clock, s.create(definition(COUNT))))
        settle(clock)
        self.assertEqual(s.get("p").status, "Running")
        self.assertRaises(ProjectionConflict, s.create, definition(COUNT))
        self.assertRaises(ProjectionConflict, s.create, Definition("$streams", COUNT,
                                                                   Mode.CONTINUOUS))
        self.assertEqual(bodies(store, "$projections-$all"), ["p"])
        self.assertEqual(bodies(store, "$projections-p")[-1]["query"], COUNT)
        self.successResultOf(s.stopService())
        other = self.service(store, clock)
        settle(clock)
        self.assertEqual(other.get("p").status, "Running")
        self.successResultOf(done(clock, other.disable("p")))
        self.assertEqual(other.get("p").status, "Stopped")
        self.successResultOf(done(clock, other.update_query("p", PER_STREAM, None)))
        self.assertEqual(other.get("p").definition.query, PER_STREAM)
        self.successResultOf(done(clock, other.delete("p", True, True, False)))
        settle(clock)
        self.assertNotIn("p", other.runners)
        self.assertEqual(bodies(store, "$projections-p-checkpoint"), [])
        self.assertEqual(bodies(store, "$projections-p"), [])
        self.assertEqual(bodies(store, "$projections-$all"), ["p", "p"])

    def test_faulted_then_fixed(self) -> None:
        store, clock = make_store()
        write(store, clock, "a-1", {"v": 1})
        s = self.service(store, clock)
        broken = "fromAll().when({$any: function () { throw 'broken'; }})"
        self.successResultOf(done(clock, s.create(definition(broken))))
        settle(clock)
        self.assertEqual(s.get("p").status, "Faulted")
        self.assertIn("broken", s.get("p").reason)
        self.successResultOf(done(clock, s.update_query("p", COUNT, None)))
        settle(clock)
        self.assertEqual(s.get("p").status, "Running")
        text = self.successResultOf(Deferred.fromCoroutine(s.get("p").state("")))
        self.assertEqual(json.loads(str(text)), {"n": 1})

    def test_delete_running_refused(self) -> None:
        store, clock = make_store()
        s = self.service(store, clock)
        self.successResultOf(done(clock, s.create(definition(COUNT))))
        settle(clock)
        self.assertRaises(ProjectionStateError, s.delete, "p", False, False, False)

    def test_replicated_definition_applies(self) -> None:
        """
        A definition written by another node (here: straight to the
        store) is applied when it commits.
        """
        store, clock = make_store()
        s = self.service(store, clock)
        from estwisted.projections._runner import new_id
        from estwisted.projections._user import registration_event
        store.append("$projections-$all", EXPECTED_ANY, [registration_event(new_id(), "q", True)],
                     SYSTEM_PRINCIPAL)
        d = Definition("q", COUNT, Mode.CONTINUOUS)
        store.append("$projections-q", EXPECTED_ANY, [d.event(new_id())], SYSTEM_PRINCIPAL)
        settle(clock)
        self.assertEqual(s.get("q").status, "Running")


RUNNING_SUM = """fromAll().foreachStream().when({
  $init: function () { return {sum: 0}; },
  T: function (s, e) {
    s.sum += e.body.v;
    if (e.body.v % 2 === 0) emit('out', 'E', {p: e.streamId, sum: s.sum});
  }
})"""


class RestartPropertyTests(SynchronousTestCase):
    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), min_size=3, max_size=15),
        st.dictionaries(st.integers(1, 12), st.booleans(), min_size=1, max_size=4),
        st.integers(1, 6),
    )
    def test_restarts_emit_one_pass(
        self, events: list[tuple[int, int]], restarts: dict[int, bool], every: int
    ) -> None:
        """
        Stopping and starting the projection anywhere, with checkpoints
        every C{every} events, and sometimes from the log start (a
        checkpoint at -1: as if every later checkpoint was lost, so all
        is handled again), gives the states and the emitted events of one
        uninterrupted pass.
        """
        from estwisted.projections._user import tag_metadata

        store, clock = make_store()
        d = Definition("p", RUNNING_SUM, Mode.CONTINUOUS, emit_enabled=True,
                       checkpoint_every=every)
        runner = UserProjectionRunner(store, clock, d, run_here, timeout=1.0)
        runner.start()
        try:
            for i, (stream, value) in enumerate(events):
                if i in restarts:
                    self.successResultOf(runner.close())
                    if restarts[i]:
                        store.append("$projections-p-checkpoint", EXPECTED_ANY, [NewEvent(
                            uuid.uuid4().bytes, "$ProjectionCheckpoint", b"",
                            json.dumps(tag_metadata(-1, 0)).encode(), True)],
                            SYSTEM_PRINCIPAL)
                        settle(clock)
                    runner = UserProjectionRunner(store, clock, d, run_here, timeout=1.0)
                    runner.start()
                write(store, clock, f"s-{stream}", {"v": value})
            settle(clock)
            sums: dict[str, int] = {}
            expected = []
            for stream, value in events:
                key = f"s-{stream}"
                sums[key] = sums.get(key, 0) + value
                if value % 2 == 0:
                    expected.append({"p": key, "sum": sums[key]})
            self.assertEqual(bodies(store, "out"), expected)
            for key, total in sums.items():
                text = self.successResultOf(Deferred.fromCoroutine(runner.state(key)))
                self.assertEqual(json.loads(str(text)), {"sum": total})
        finally:
            self.successResultOf(runner.close())
