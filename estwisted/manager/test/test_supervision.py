# -*- test-case-name: estwisted.manager.test.test_supervision -*-
"""
Tests for L{estwisted.manager.supervision}: the pure supervision machine.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.manager.supervision import (
    CancelTimer,
    ExitStatus,
    GiveUp,
    RestartPolicy,
    ScheduleKill,
    ScheduleRestart,
    SendSignal,
    Spawn,
    State,
    Supervision,
)

KILLED = ExitStatus(signal=9)


class SupervisionTests(SynchronousTestCase):
    """
    Examples of the transitions.
    """

    def test_startSpawns(self) -> None:
        """
        Starting a stopped node spawns it once; starting again does nothing.
        """
        s = Supervision()
        self.assertEqual(s.start(0), [Spawn()])
        self.assertEqual(s.spawned(0, 42), [])
        self.assertEqual((s.state, s.pid), (State.RUNNING, 42))
        self.assertEqual(s.start(1), [])

    def test_exitRestartsWithGrowingBackoff(self) -> None:
        """
        An exit not asked for schedules a restart, with a delay that doubles
        with each failure in the window.
        """
        s = Supervision(RestartPolicy(count=5, window=60, base_delay=0.25))
        s.start(0)
        delays = []
        now = 0.0
        for _ in range(4):
            effects = s.exited(now, KILLED)
            (restart,) = effects
            assert isinstance(restart, ScheduleRestart)
            delays.append(restart.delay)
            self.assertEqual(s.state, State.WAITING)
            now += restart.delay
            self.assertEqual(s.restart_due(now), [Spawn()])
        self.assertEqual(delays, [0.25, 0.5, 1.0, 2.0])
        self.assertEqual(s.restarts, 4)

    def test_cleanExitIsAFailureToo(self) -> None:
        """
        A node that exits 0 on its own is restarted as well.
        """
        s = Supervision()
        s.start(0)
        self.assertEqual(s.exited(1, ExitStatus(code=0)), [ScheduleRestart(0.25)])

    def test_giveUpAfterCountInWindow(self) -> None:
        """
        The C{count}th failure within the window gives up: no restart.
        """
        s = Supervision(RestartPolicy(count=3, window=10))
        s.start(0)
        s.exited(1, KILLED)
        s.restart_due(2)
        s.exited(3, KILLED)
        s.restart_due(4)
        self.assertEqual(s.exited(5, KILLED), [GiveUp(3, 10)])
        self.assertEqual(s.state, State.GAVE_UP)
        self.assertEqual(s.restart_due(100), [])

    def test_oldFailuresForgotten(self) -> None:
        """
        Failures older than the window do not count, and the back-off starts
        over.
        """
        s = Supervision(RestartPolicy(count=2, window=10))
        s.start(0)
        s.exited(1, KILLED)
        s.restart_due(2)
        self.assertEqual(s.exited(20, KILLED), [ScheduleRestart(0.25)])

    def test_stopRunning(self) -> None:
        """
        Stopping a running node sends SIGTERM and schedules SIGKILL; its exit
        then is no failure and cancels the kill.
        """
        s = Supervision(RestartPolicy(grace=7))
        s.start(0)
        self.assertEqual(s.stop(1), [SendSignal("TERM"), ScheduleKill(7)])
        self.assertEqual(s.kill_due(8), [SendSignal("KILL")])
        self.assertEqual(s.exited(9, KILLED), [CancelTimer()])
        self.assertEqual((s.state, s.failures), (State.STOPPED, []))

    def test_stopWaiting(self) -> None:
        """
        Stopping a node waiting for its restart cancels the restart.
        """
        s = Supervision()
        s.start(0)
        s.exited(1, KILLED)
        self.assertEqual(s.stop(2), [CancelTimer()])
        self.assertEqual(s.restart_due(3), [])
        self.assertEqual(s.state, State.STOPPED)

    def test_startAfterGiveUp(self) -> None:
        """
        An operator's start after giving up starts afresh.
        """
        s = Supervision(RestartPolicy(count=1))
        s.start(0)
        s.exited(1, KILLED)
        self.assertEqual(s.start(2), [Spawn()])
        self.assertEqual(s.failures, [])


_event = st.one_of(
    st.tuples(st.just("exit"), st.floats(0, 30)),
    st.tuples(st.just("due"), st.floats(0, 30)),
    st.tuples(st.just("stop"), st.floats(0, 30)),
    st.tuples(st.just("start"), st.floats(0, 30)),
    st.tuples(st.just("kill"), st.floats(0, 30)),
)


class SupervisionPropertyTests(SynchronousTestCase):
    """
    Properties over arbitrary sequences of inputs.
    """

    @given(
        st.integers(1, 6),
        st.floats(1, 100),
        st.lists(_event, max_size=60),
    )
    def test_invariants(self, count: int, window: float, events: list[tuple[str, float]]) -> None:
        """
        Whatever happens: a spawn is only asked for when no process runs;
        the failures kept at an exit are within the window, fewer than C{count}
        unless the node was given up; delays never exceed the maximum;
        after a stop no restart happens until a start.
        """
        policy = RestartPolicy(count=count, window=window, base_delay=0.25, max_delay=8)
        s = Supervision(policy)
        now = 0.0
        alive = False
        s.start(now)
        alive = True
        stopped_by_us = False
        for kind, gap in events:
            now += gap
            if kind == "exit":
                if not alive:
                    continue
                alive = False
                effects = s.exited(now, KILLED)
            elif kind == "due":
                effects = s.restart_due(now)
            elif kind == "stop":
                effects = s.stop(now)
                stopped_by_us = True
            elif kind == "kill":
                effects = s.kill_due(now)
            else:
                effects = s.start(now)
                if effects:
                    stopped_by_us = False
            for effect in effects:
                if isinstance(effect, Spawn):
                    self.assertFalse(alive, "spawned while a process runs")
                    self.assertFalse(stopped_by_us and kind != "start")
                    alive = True
                if isinstance(effect, ScheduleRestart):
                    self.assertLessEqual(effect.delay, policy.max_delay)
                    self.assertGreater(effect.delay, 0)
            if kind == "exit":
                self.assertTrue(all(now - t < window for t in s.failures))
            if s.state is State.GAVE_UP:
                self.assertEqual(len(s.failures), count)
            else:
                self.assertLess(len(s.failures), count)
            self.assertEqual(alive, s.state in (State.RUNNING, State.STOPPING))

    @given(st.integers(1, 8), st.lists(st.floats(0, 0.01), min_size=1, max_size=20))
    def test_failingAtOnceGivesUp(self, count: int, runtimes: list[float]) -> None:
        """
        A node that fails at once each time is given up after exactly
        C{count} failures, after back-off delays that never shrink: no
        tight loop.
        """
        s = Supervision(RestartPolicy(count=count, window=1000))
        now = 0.0
        s.start(now)
        delays: list[float] = []
        spawns = 1
        for runtime in runtimes * count:
            now += runtime
            effects = s.exited(now, ExitStatus(code=1))
            if s.state is State.GAVE_UP:
                break
            (restart,) = effects
            assert isinstance(restart, ScheduleRestart)
            delays.append(restart.delay)
            now += restart.delay
            s.restart_due(now)
            spawns += 1
        self.assertEqual(s.state, State.GAVE_UP)
        self.assertEqual(spawns, count)
        self.assertEqual(delays, sorted(delays))
