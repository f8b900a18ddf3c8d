# -*- test-case-name: estwisted.manager.test.test_watchdog -*-
"""
The watchdog service: one L{NodeRunner} per line of the watchdog file, each
performing the effects of its L{estwisted.manager.supervision.Supervision}
with the reactor's process support (never a shell).

Each node runs as::

    python -m estwisted.manager.child <manager pid> -n --pidfile=<Log>/node-N.pid \\
        estore <options from the watchdog file>

in the manager's working directory and environment (without the manager's
C{EVENTSTORE_*} variables, see L{node_environment}), its output (stdout and
stderr) appended to C{<Log>/node-N.log}.  L{estwisted.manager.child} asks the kernel to send
the node SIGTERM when the manager dies, so a SIGKILLed manager takes its
nodes with it, and starts them again when it comes back; the twistd pid
file refuses a second copy of a node whose first copy is still shutting
down (the watchdog then retries with its back-off).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Optional, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.manager.supervision import (
    CancelTimer,
    Effect,
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
from estwisted.manager.watchdogfile import NodeSpec
from estwisted.node.config import ENV_PREFIX

__all__ = ["NodeRunner", "WatchdogService", "node_command", "node_environment"]


def node_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """
    The environment a node runs with: the manager's, without its
    C{EVENTSTORE_*} variables.  Those configure the manager (for example
    C{EVENTSTORE_INT_HTTP_PORT}); passed on, they would override the node's
    own YAML file.  A node is configured by its watchdog line and its file.
    """
    return {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}


def node_command(
    spec: NodeSpec, log_dir: str, manager_pid: int, python: str = sys.executable
) -> list[str]:
    """
    The argument vector that runs the node of C{spec}.
    """
    return [
        python,
        "-m",
        "estwisted.manager.child",
        str(manager_pid),
        "-n",
        f"--pidfile={os.path.join(log_dir, f'node-{spec.index}.pid')}",
        "estore",
        *spec.arguments,
    ]


class _NodeProcessProtocol(ProcessProtocol):
    """
    Copies the node's output to its log file and reports its end.
    """

    def __init__(self, output: IO[bytes], ended: Callable[[ExitStatus], None]) -> None:
        self.output = output
        self.ended = ended

    def outReceived(self, data: bytes) -> None:
        self.output.write(data)
        self.output.flush()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated):
            status = ExitStatus(code=value.exitCode, signal=value.signal)
        elif isinstance(value, ProcessDone):
            status = ExitStatus(code=0)
        else:
            status = ExitStatus()
        self.ended(status)


class NodeRunner:
    """
    Runs one node: performs its L{Supervision}'s effects.

    @ivar supervision: the state machine (read it for status).
    @ivar command: the argument vector of the node.
    """

    _log = Logger()

    def __init__(
        self,
        spec: NodeSpec,
        command: Union[Sequence[str], Callable[[], Sequence[str]]],
        log_path: str,
        policy: RestartPolicy,
        reactor: Any,
        environ: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """
        @param command: the node's argument vector, or a function that
            returns it, called at each start (the manager's pid is part of
            it, and twistd daemonizes after the service is built).
        @param reactor: provides L{IReactorTime} and L{IReactorProcess}.
        @param wall_clock: Unix time for the status document.
        """
        self.spec = spec
        self._command_for = command if callable(command) else (lambda: command)
        self.command = list(self._command_for())
        self.log_path = log_path
        self.supervision = Supervision(policy)
        self._clock: IReactorTime = reactor
        self._processes: IReactorProcess = reactor
        self._environ = node_environment(os.environ if environ is None else environ)
        self._cwd = cwd
        self._wall_clock = wall_clock
        self._timer: Optional[IDelayedCall] = None
        self._transport: Any = None
        self._output: Optional[IO[bytes]] = None
        self._stopped: Optional[Deferred[None]] = None
        self.last_exit_wall: Optional[float] = None

    @property
    def name(self) -> str:
        return f"node-{self.spec.index}"

    def start(self) -> None:
        self._run(self.supervision.start(self._clock.seconds()))

    def stop(self) -> Deferred[None]:
        """
        Stop the node (SIGTERM, SIGKILL after the grace period).

        @return: fires when its process has ended.
        """
        self._run(self.supervision.stop(self._clock.seconds()))
        if self.supervision.state is not State.STOPPING:
            self._close_output()
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        if self._stopped is None:
            self._stopped = Deferred()
        return self._stopped

    def status(self) -> dict[str, Any]:
        """
        The node's line of C{GET /watchdog}.
        """
        s = self.supervision
        return {
            "name": self.name,
            "line": self.spec.line,
            "command": self.command,
            "pid": s.pid,
            "state": s.state.value,
            "restarts": s.restarts,
            "recentFailures": len(s.failures),
            "lastExit": None if s.last_exit is None else str(s.last_exit),
            "lastExitTime": self.last_exit_wall,
            "log": self.log_path,
        }

    # --- effects

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Spawn):
                self._spawn()
            elif isinstance(effect, ScheduleRestart):
                self._schedule(effect.delay, self.supervision.restart_due)
                self._log.info(
                    "{node} will be restarted in {delay:.2f}s ({failures} failure(s) in the "
                    "last {window:.0f}s)",
                    node=self.name,
                    delay=effect.delay,
                    failures=len(self.supervision.failures),
                    window=self.supervision.policy.window,
                )
            elif isinstance(effect, ScheduleKill):
                self._schedule(effect.delay, self.supervision.kill_due)
            elif isinstance(effect, CancelTimer):
                self._cancel()
            elif isinstance(effect, SendSignal):
                self._signal(effect.name)
            elif isinstance(effect, GiveUp):
                self._log.error(
                    "{node} failed {failures} times within {window:.0f}s "
                    "(WatchdogFailureCount); it will not be restarted: {command}",
                    node=self.name,
                    failures=effect.failures,
                    window=effect.window,
                    command=" ".join(self.command),
                )

    def _schedule(self, delay: float, method: Callable[[float], list[Effect]]) -> None:
        self._cancel()

        def fire() -> None:
            self._timer = None
            self._run(method(self._clock.seconds()))

        self._timer = self._clock.callLater(delay, fire)

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _spawn(self) -> None:
        self.command = list(self._command_for())
        if self._output is None:
            self._output = open(self.log_path, "ab")
        protocol = _NodeProcessProtocol(self._output, self._ended)
        try:
            self._transport = self._processes.spawnProcess(
                protocol,
                self.command[0],
                self.command,
                env=self._environ,
                path=self._cwd,
                usePTY=False,
            )
        except Exception as e:
            self._log.error("{node} could not be started: {error}", node=self.name, error=e)
            self._transport = None
            self._ended(ExitStatus())
            return
        pid = getattr(self._transport, "pid", None)
        self._log.info("{node} started, pid {pid}: {command}", node=self.name, pid=pid,
                       command=" ".join(self.command))
        self._run(self.supervision.spawned(self._clock.seconds(), pid))

    def _signal(self, name: str) -> None:
        if self._transport is None:
            return
        try:
            self._transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def _ended(self, status: ExitStatus) -> None:
        self._transport = None
        self.last_exit_wall = self._wall_clock()
        asked = self.supervision.state is State.STOPPING
        log = self._log.info if asked else self._log.warn
        log("{node} (pid {pid}) ended: {status}", node=self.name, pid=self.supervision.pid,
            status=str(status))
        self._run(self.supervision.exited(self._clock.seconds(), status))
        if self.supervision.state is State.STOPPED:
            self._close_output()
            stopped, self._stopped = self._stopped, None
            if stopped is not None:
                stopped.callback(None)

    def _close_output(self) -> None:
        output, self._output = self._output, None
        if output is not None:
            output.close()


class WatchdogService(Service):
    """
    Starts every node when the service starts; stops them all (and waits
    for their processes to end) when it stops.
    """

    _log = Logger()

    def __init__(self, runners: Sequence[NodeRunner]) -> None:
        self.runners = list(runners)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        for runner in self.runners:
            runner.start()

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        return DeferredList([runner.stop() for runner in self.runners])

    def status(self) -> list[dict[str, Any]]:
        return [runner.status() for runner in self.runners]
