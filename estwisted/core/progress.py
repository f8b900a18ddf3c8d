# -*- test-case-name: estwisted.core.test.test_progress -*-
"""
Progress of long work (index rebuild, chunk verification, a follower
catching up, scavenges, projections catching up), reported as data and as
log lines.

A L{Progress} is one task: a kind, a name, a total and how much of it is
done, in some unit (bytes, records, chunks).  The code doing the work
calls L{Progress.update} (how much is done now) or L{Progress.advance}
(how much more) with the current time, and L{Progress.finish} at the end;
the reporter logs a line with the percentage, the rate and the time left
at most every C{log_every} seconds, plus one when the task starts and one
when it ends.  Nothing here reads a clock: every time is passed in, in
whatever clock the caller uses (a task's numbers only ever compare its
own times).

A L{ProgressBoard} holds the running tasks and the last few finished ones;
C{GET /progress}, C{/metrics} and the admin UI read its L{snapshot}.
L{BOARD} is the process's board, used by code that has no other at hand
(storage opening runs before anything else exists).

The percentage never goes backwards (a bar that shrinks helps no one);
when the total grows (a follower catching up with a leader that keeps
writing) the C{remaining} amount and the time left say so.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Optional

from twisted.logger import Logger

_log = Logger(namespace="estwisted.progress")

#: Seconds between two progress log lines of one task, by default.
LOG_EVERY = 10.0

#: Elapsed times shorter than this give no rate (it would be noise).
_MIN_ELAPSED = 1e-6


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


class Progress:
    """
    One long task; see the module docstring.

    @ivar kind: what sort of work (C{"index-rebuild"}, C{"scavenge"}, ...).
    @ivar name: which one (a scavenge id, a projection name, ...).
    @ivar unit: what C{total} and C{done} count (C{"bytes"}, C{"chunks"}).
    @ivar total: how much there is to do (may grow).
    @ivar done: how much is done.
    @ivar result: C{""} while running, then C{"done"}, C{"stopped"} or
        C{"failed"}.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        total: float,
        now: float,
        unit: str = "bytes",
        log_every: float = LOG_EVERY,
        board: Optional[ProgressBoard] = None,
        log: bool = True,
    ) -> None:
        self.kind = kind
        self.name = name
        self.unit = unit
        self.total = max(0.0, _finite(float(total)))
        self.done = 0.0
        self.started = now
        self.updated = now
        self.result = ""
        self.log_every = log_every
        self._percentage = 0.0
        self._logged = now
        self._board = board
        self._log_enabled = log
        if log:
            _log.info(
                "{kind} {name} started: {total:.0f} {unit} to do",
                kind=kind, name=name, total=self.total, unit=unit,
            )

    # -- updates -------------------------------------------------------------------------

    def update(self, done: float, now: float, total: Optional[float] = None) -> bool:
        """
        Set how much is done (and, optionally, the new total).

        @return: whether a progress line was logged.
        """
        if total is not None:
            self.total = max(0.0, _finite(float(total)))
        self.done = max(0.0, _finite(float(done)))
        self.updated = max(self.updated, now)
        self._percentage = max(self._percentage, self._current_percentage())
        if self._log_enabled and self.updated - self._logged >= self.log_every:
            self._logged = self.updated
            self._log_line()
            return True
        return False

    def advance(self, amount: float, now: float) -> bool:
        """
        Add C{amount} to what is done.

        @return: whether a progress line was logged.
        """
        return self.update(self.done + max(0.0, _finite(float(amount))), now)

    def finish(self, now: float, result: str = "done") -> None:
        """
        The task ended (C{result}: C{"done"}, C{"stopped"}, C{"failed"}); a
        task done is 100%.  It moves to the board's finished list.
        """
        if self.result:
            return
        self.updated = max(self.updated, now)
        if result == "done":
            self.done = max(self.done, self.total)
            self._percentage = 100.0
        self.result = result
        if self._log_enabled:
            _log.info(
                "{kind} {name} {result}: {done:.0f} {unit} in {seconds:.1f} s ({rate:.0f} "
                "{unit}/s)",
                kind=self.kind, name=self.name, result=result, done=self.done, unit=self.unit,
                seconds=self.elapsed, rate=self.rate,
            )
        if self._board is not None:
            self._board.finished(self)

    # -- figures -------------------------------------------------------------------------

    def _current_percentage(self) -> float:
        if self.total <= 0:
            return 0.0
        return min(100.0, max(0.0, 100.0 * self.done / self.total))

    @property
    def percentage(self) -> float:
        """
        Done as a percentage of the total, 0 to 100, never decreasing.
        """
        return self._percentage

    @property
    def elapsed(self) -> float:
        """
        Seconds from the start to the last update.
        """
        return max(0.0, self.updated - self.started)

    @property
    def rate(self) -> float:
        """
        Units done per second since the start (0 until time has passed).
        """
        elapsed = self.elapsed
        if elapsed < _MIN_ELAPSED:
            return 0.0
        return _finite(self.done / elapsed)

    @property
    def remaining(self) -> float:
        """
        Units left to do.
        """
        return max(0.0, self.total - self.done)

    @property
    def eta(self) -> Optional[float]:
        """
        Seconds left at the current rate (C{None}: unknown, or finished).
        """
        if self.result:
            return None
        rate = self.rate
        if rate <= 0:
            return None
        return _finite(self.remaining / rate)

    def _log_line(self) -> None:
        eta = self.eta
        _log.info(
            "{kind} {name}: {percentage:.1f}% ({done:.0f} of {total:.0f} {unit}), "
            "{rate:.0f} {unit}/s, {eta} left",
            kind=self.kind, name=self.name, percentage=self.percentage, done=self.done,
            total=self.total, unit=self.unit, rate=self.rate,
            eta="unknown time" if eta is None else f"{eta:.0f} s",
        )

    def as_dict(self) -> dict[str, Any]:
        """
        The task as JSON-ready data (C{GET /progress}).
        """
        eta = self.eta
        return {
            "kind": self.kind,
            "name": self.name,
            "unit": self.unit,
            "total": self.total,
            "done": self.done,
            "remaining": self.remaining,
            "percentage": round(self.percentage, 2),
            "rate": round(self.rate, 2),
            "etaSeconds": None if eta is None else round(eta, 1),
            "elapsedSeconds": round(self.elapsed, 3),
            "running": not self.result,
            "result": self.result,
        }


class ProgressBoard:
    """
    The running tasks and the last C{keep} finished ones.
    """

    def __init__(self, keep: int = 20) -> None:
        self._running: list[Progress] = []
        self._finished: deque[Progress] = deque(maxlen=keep)

    def start(
        self,
        kind: str,
        name: str,
        total: float,
        now: float,
        unit: str = "bytes",
        log_every: float = LOG_EVERY,
        log: bool = True,
    ) -> Progress:
        """
        A new running task on this board.
        """
        progress = Progress(kind, name, total, now, unit, log_every, self, log)
        self._running.append(progress)
        return progress

    def finished(self, progress: Progress) -> None:
        """
        C{progress} ended (called by L{Progress.finish}).
        """
        if progress in self._running:
            self._running.remove(progress)
            self._finished.append(progress)

    @property
    def running(self) -> list[Progress]:
        return list(self._running)

    def tasks(self) -> list[Progress]:
        """
        Running tasks (oldest first), then finished ones (newest first).
        """
        return [*self._running, *reversed(self._finished)]

    def snapshot(self) -> list[dict[str, Any]]:
        """
        L{tasks} as data.
        """
        return [p.as_dict() for p in self.tasks()]

    def clear(self) -> None:
        """
        Forget every task (tests).
        """
        self._running.clear()
        self._finished.clear()


#: The process's board.
BOARD = ProgressBoard()


__all__ = ["BOARD", "LOG_EVERY", "Progress", "ProgressBoard"]
