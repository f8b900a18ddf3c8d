"""
Tests for L{estwisted.core.progress}: the reporter with a fake clock.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.progress import Progress, ProgressBoard

steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e12, allow_nan=False),
        st.floats(min_value=0, max_value=1e4, allow_nan=False),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e12, allow_nan=False)),
    ),
    max_size=50,
)


class CapturedLog:
    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        observer: Any = self.events.append
        globalLogPublisher.addObserver(observer)
        case.addCleanup(globalLogPublisher.removeObserver, observer)

    def progress_lines(self) -> list[LogEvent]:
        return [e for e in self.events if e.get("log_namespace") == "estwisted.progress"]


class ProgressTests(SynchronousTestCase):
    def test_figures(self) -> None:
        """
        Percentage, rate, remaining and time left follow what was done and
        when.
        """
        p = Progress("index-rebuild", "db", 1000, now=100.0, log=False)
        self.assertEqual((p.percentage, p.rate, p.eta), (0.0, 0.0, None))
        p.update(250, now=102.0)
        self.assertEqual(p.percentage, 25.0)
        self.assertEqual(p.rate, 125.0)
        self.assertEqual(p.remaining, 750.0)
        self.assertEqual(p.eta, 6.0)
        p.advance(250, now=104.0)
        self.assertEqual((p.done, p.percentage, p.rate), (500.0, 50.0, 125.0))
        p.finish(now=105.0)
        self.assertEqual((p.percentage, p.done, p.result, p.eta), (100.0, 1000.0, "done", None))
        d = p.as_dict()
        self.assertEqual(d["running"], False)
        self.assertEqual(d["elapsedSeconds"], 5.0)

    def test_growing_total(self) -> None:
        """
        When the total grows, the percentage holds and the remaining amount
        grows.
        """
        p = Progress("replication-catch-up", "leader", 100, now=0.0, log=False)
        p.update(80, now=1.0)
        p.update(90, now=2.0, total=200)
        self.assertEqual(p.percentage, 80.0)
        self.assertEqual(p.remaining, 110.0)
        p.update(190, now=3.0)
        self.assertEqual(p.percentage, 95.0)

    def test_stopped(self) -> None:
        """
        A stopped task keeps its percentage.
        """
        p = Progress("scavenge", "x", 4, now=0.0, unit="chunks", log=False)
        p.advance(1, now=1.0)
        p.finish(now=2.0, result="stopped")
        self.assertEqual((p.percentage, p.result), (25.0, "stopped"))
        p.finish(now=3.0)
        self.assertEqual(p.result, "stopped")

    def test_logs_at_most_every_interval(self) -> None:
        """
        A line with the percentage and the rate at most every C{log_every}
        seconds, plus the start and the end.
        """
        log = CapturedLog(self)
        p = Progress("index-rebuild", "db", 100, now=0.0, log_every=5.0)
        logged = [p.update(n, now=float(n)) for n in range(1, 12)]
        self.assertEqual([i + 1 for i, x in enumerate(logged) if x], [5, 10])
        p.finish(now=12.0)
        lines = log.progress_lines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[1]["percentage"], 5.0)
        self.assertEqual(lines[1]["rate"], 1.0)
        self.assertEqual(lines[2]["percentage"], 10.0)
        self.assertEqual(lines[3]["result"], "done")

    def test_empty_total(self) -> None:
        """
        Nothing to do: 0% while running, 100% once done.
        """
        p = Progress("chunk-verification", "db", 0, now=0.0, log=False)
        p.update(0, now=1.0)
        self.assertEqual(p.percentage, 0.0)
        p.finish(now=1.0)
        self.assertEqual(p.percentage, 100.0)

    @given(steps)
    def test_percentage_monotone_and_bounded(
        self, updates: list[tuple[float, float, float | None]]
    ) -> None:
        """
        Whatever the updates, the percentage stays within 0..100 and never
        decreases, and the rate and time left are finite.
        """
        p = Progress("any", "any", 1000, now=0.0, log_every=1.0, log=False)
        now = 0.0
        last = 0.0
        for done, dt, total in updates:
            now += dt
            p.update(done, now, total)
            self.assertTrue(0.0 <= p.percentage <= 100.0)
            self.assertGreaterEqual(p.percentage, last)
            last = p.percentage
            self.assertTrue(math.isfinite(p.rate))
            self.assertTrue(p.rate >= 0)
            eta = p.eta
            self.assertTrue(eta is None or (math.isfinite(eta) and eta >= 0))

    @given(st.lists(st.floats(min_value=-10, max_value=1e9, allow_nan=False), max_size=50))
    def test_advance_monotone(self, amounts: list[float]) -> None:
        """
        Advancing never lowers what is done or the percentage.
        """
        p = Progress("any", "any", 1e6, now=0.0, log=False)
        done, percentage = 0.0, 0.0
        for i, amount in enumerate(amounts):
            p.advance(amount, float(i))
            self.assertGreaterEqual(p.done, done)
            self.assertGreaterEqual(p.percentage, percentage)
            self.assertLessEqual(p.percentage, 100.0)
            done, percentage = p.done, p.percentage


class BoardTests(SynchronousTestCase):
    def test_running_then_finished(self) -> None:
        """
        The board lists running tasks, then finished ones newest first,
        keeping only the last few finished.
        """
        board = ProgressBoard(keep=2)
        a = board.start("scavenge", "a", 3, now=0.0, log=False)
        b = board.start("scavenge", "b", 3, now=0.0, log=False)
        c = board.start("scavenge", "c", 3, now=0.0, log=False)
        self.assertEqual([t["name"] for t in board.snapshot()], ["a", "b", "c"])
        a.finish(1.0)
        b.finish(2.0)
        self.assertEqual([t["name"] for t in board.snapshot()], ["c", "b", "a"])
        c.finish(3.0)
        self.assertEqual([t["name"] for t in board.snapshot()], ["c", "b"])
        self.assertEqual(board.running, [])
