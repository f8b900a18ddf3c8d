# -*- test-case-name: estwisted.projections.test.test_runner -*-
"""
A projection catching up with the log after it loaded, reported on the
progress board (L{estwisted.core.progress.BOARD}): shared by the system and
the user projection runners.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IReactorTime

from estwisted.core.progress import BOARD, Progress
from estwisted.core.streams import StreamStore

#: A catch-up over more of the log than this is logged, not only reported.
CATCH_UP_LOG_BYTES = 16 * 1024 * 1024


class CatchUpReport:
    """
    The catch-up of one projection, from L{begin} until it reached the
    log's end (L{report} with -1) or L{end}.

    @ivar task: the progress board's task (C{None} before the first report).
    """

    def __init__(self, name: str, store: StreamStore, clock: IReactorTime) -> None:
        self.name = name
        self._store = store
        self._clock = clock
        self.task: Optional[Progress] = None
        self._origin: Optional[int] = None

    def begin(self, origin: int) -> None:
        """
        Catching up starts at log position C{origin}.
        """
        self._origin = max(origin, 0)

    def report(self, position: int) -> None:
        """
        Handled the log up to C{position}; C{-1}: caught up.
        """
        origin = self._origin
        if origin is None:
            return
        now = self._clock.seconds()
        end = int(self._store.last_commit_position)
        task = self.task
        if task is None or task.result:
            if position < 0:
                self._origin = None
                return
            task = self.task = BOARD.start(
                "projection-catch-up", self.name, end - origin, now,
                log=end - origin >= CATCH_UP_LOG_BYTES,
            )
        if position < 0:
            task.finish(now)
            self._origin = None
        else:
            task.update(position - origin, now, end - origin)

    def end(self, result: str) -> None:
        """
        The projection stopped (C{result}: C{"stopped"}, C{"failed"}).
        """
        if self.task is not None and not self.task.result:
            self.task.finish(self._clock.seconds(), result)
