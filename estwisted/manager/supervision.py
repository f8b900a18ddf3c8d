# -*- test-case-name: estwisted.manager.test.test_supervision -*-
"""
Supervision of one database node, as a pure state machine.

Every input is a method call taking C{now} (seconds, from whatever clock
the edge uses); every method returns the effects the edge must perform, as
plain values.  Nothing here knows processes, signals or reactors::

    stopped --start--> running --exit (not asked)--> waiting --restart_due--> running
                          |                            |
                          |                 (WatchdogFailureCount failures
                          |                  within the window)
                          |                            v
                          +--stop--> stopping        gave-up
                                        |
                                  exit / kill_due (SIGKILL)
                                        v
                                     stopped

An exit the manager did not ask for is a failure, whatever the exit status
(a node that exits 0 on its own is restarted too).  Failures older than
the window are forgotten.  The delay before a restart grows with the number
of failures in the window: C{base * 2 ** (failures - 1)}, at most
C{max_delay}; when C{count} failures fall within the window the node is
not restarted again (L{GiveUp}), until an operator starts it (L{start}).
"""

from __future__ import annotations

import enum
from typing import Optional, Union

from attrs import define, field, frozen

__all__ = [
    "CancelTimer",
    "Effect",
    "ExitStatus",
    "GiveUp",
    "RestartPolicy",
    "ScheduleKill",
    "ScheduleRestart",
    "SendSignal",
    "Spawn",
    "State",
    "Supervision",
]


class State(enum.Enum):
    """
    Where a supervised node is.
    """

    STOPPED = "stopped"
    RUNNING = "running"
    WAITING = "waiting"
    STOPPING = "stopping"
    GAVE_UP = "gave-up"


@frozen
class RestartPolicy:
    """
    @ivar count: C{WatchdogFailureCount}.
    @ivar window: C{WatchdogFailureTimeWindow}, seconds.
    @ivar base_delay: delay before the first restart, seconds.
    @ivar max_delay: the largest delay.
    @ivar grace: seconds between SIGTERM and SIGKILL when stopping.
    """

    count: int = 5
    window: float = 60.0
    base_delay: float = 0.25
    max_delay: float = 30.0
    grace: float = 10.0

    def delay(self, failures: int) -> float:
        """
        The back-off before the restart that follows the C{failures}th
        failure in the window.
        """
        exponent = max(failures - 1, 0)
        if exponent > 60:
            return self.max_delay
        return float(min(self.base_delay * 2**exponent, self.max_delay))


@frozen
class ExitStatus:
    """
    How a process ended: an exit code, or the signal that killed it.
    """

    code: Optional[int] = None
    signal: Optional[int] = None

    def __str__(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        if self.code is None:
            return "unknown"
        return f"exit code {self.code}"


@frozen
class Spawn:
    """
    Effect: start the node's process.
    """


@frozen
class ScheduleRestart:
    """
    Effect: call L{Supervision.restart_due} after C{delay} seconds.
    """

    delay: float


@frozen
class ScheduleKill:
    """
    Effect: call L{Supervision.kill_due} after C{delay} seconds.
    """

    delay: float


@frozen
class CancelTimer:
    """
    Effect: cancel the pending restart or kill timer, if any.
    """


@frozen
class SendSignal:
    """
    Effect: send C{name} (C{"TERM"} or C{"KILL"}) to the process.
    """

    name: str


@frozen
class GiveUp:
    """
    Effect: log that the node will not be restarted.
    """

    failures: int
    window: float


Effect = Union[Spawn, ScheduleRestart, ScheduleKill, CancelTimer, SendSignal, GiveUp]


@define
class Supervision:
    """
    The supervision state of one node.

    @ivar failures: times of the failures still within the window.
    @ivar restarts: restarts made after failures, ever.
    @ivar last_exit: how the process last ended, and when.
    """

    policy: RestartPolicy = field(factory=RestartPolicy)
    state: State = State.STOPPED
    pid: Optional[int] = None
    failures: list[float] = field(factory=list)
    restarts: int = 0
    last_exit: Optional[ExitStatus] = None
    last_exit_time: Optional[float] = None
    started_at: Optional[float] = None
    next_restart: Optional[float] = None

    def _forget_old(self, now: float) -> None:
        self.failures = [t for t in self.failures if now - t < self.policy.window]

    def start(self, now: float) -> list[Effect]:
        """
        Start the node (at manager start, or an operator's start after it
        was given up or stopped): past failures are forgotten.
        """
        if self.state in (State.STOPPED, State.GAVE_UP):
            self.failures = []
            self.state = State.RUNNING
            self.pid = None
            self.started_at = now
            return [Spawn()]
        return []

    def spawned(self, now: float, pid: Optional[int]) -> list[Effect]:
        """
        The process of the last L{Spawn} exists, with C{pid}.
        """
        self.pid = pid
        return []

    def exited(self, now: float, status: ExitStatus) -> list[Effect]:
        """
        The process ended (or could not be started at all).
        """
        self.pid = None
        self.last_exit = status
        self.last_exit_time = now
        if self.state is State.STOPPING:
            self.state = State.STOPPED
            return [CancelTimer()]
        if self.state is not State.RUNNING:
            return []
        self._forget_old(now)
        self.failures.append(now)
        if len(self.failures) >= self.policy.count:
            self.state = State.GAVE_UP
            self.next_restart = None
            return [GiveUp(len(self.failures), self.policy.window)]
        delay = self.policy.delay(len(self.failures))
        self.state = State.WAITING
        self.next_restart = now + delay
        return [ScheduleRestart(delay)]

    def restart_due(self, now: float) -> list[Effect]:
        """
        The back-off of L{ScheduleRestart} ran out.
        """
        if self.state is not State.WAITING:
            return []
        self.state = State.RUNNING
        self.restarts += 1
        self.started_at = now
        self.next_restart = None
        return [Spawn()]

    def stop(self, now: float) -> list[Effect]:
        """
        The manager asks the node to stop (the manager is stopping).
        """
        if self.state is State.RUNNING:
            self.state = State.STOPPING
            return [SendSignal("TERM"), ScheduleKill(self.policy.grace)]
        if self.state is State.WAITING:
            self.state = State.STOPPED
            self.next_restart = None
            return [CancelTimer()]
        if self.state is State.GAVE_UP:
            self.state = State.STOPPED
            self.failures = []
        return []

    def kill_due(self, now: float) -> list[Effect]:
        """
        The grace period after SIGTERM ran out.
        """
        if self.state is State.STOPPING:
            return [SendSignal("KILL")]
        return []
