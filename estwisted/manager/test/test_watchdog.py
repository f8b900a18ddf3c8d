# -*- test-case-name: estwisted.manager.test.test_watchdog -*-
"""
Tests for L{estwisted.manager.watchdog}: the runner performs the
supervision's effects on a fake process reactor and a L{Clock}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from estwisted.manager.supervision import RestartPolicy, State
from estwisted.manager.watchdog import NodeRunner, WatchdogService, node_command
from estwisted.manager.watchdogfile import NodeSpec


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeProcessReactor(Clock):
    """
    A clock whose C{spawnProcess} records what was spawned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], FakeTransport]] = []
        self.envs: list[Any] = []
        self.fail = False

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None,
                     path: Any = None, usePTY: bool = False, **kw: Any) -> FakeTransport:  # noqa: N803
        if self.fail:
            raise OSError("no such file")
        self.envs.append(env)
        transport = FakeTransport(1000 + len(self.spawned))
        self.spawned.append((protocol, list(args), transport))
        protocol.makeConnection(transport)
        return transport

    def end(self, index: int = -1, signal: int | None = 9, code: int | None = None) -> None:
        protocol = self.spawned[index][0]
        if signal is None and code == 0:
            protocol.processEnded(Failure(ProcessDone(0)))
        else:
            protocol.processEnded(Failure(ProcessTerminated(code, signal)))


SPEC = NodeSpec(1, 3, ("--config", "/etc/estore/database.yaml"))


class NodeRunnerTests(SynchronousTestCase):
    """
    L{NodeRunner} spawns, restarts with back-off, gives up and stops.
    """

    def runner(self, **policy: Any) -> tuple[NodeRunner, FakeProcessReactor]:
        reactor = FakeProcessReactor()
        log = self.mktemp()
        runner = NodeRunner(SPEC, ["python", "-m", "x"], log, RestartPolicy(**policy), reactor,
                            environ={}, wall_clock=lambda: 1234.0)
        self.addCleanup(runner._close_output)
        return runner, reactor

    def test_commandLine(self) -> None:
        """
        The node runs C{estore} through the child wrapper with its own pid
        file and the watchdog line's options, never a shell.
        """
        self.assertEqual(
            node_command(SPEC, "/var/log/m", 77, python="/py"),
            ["/py", "-m", "estwisted.manager.child", "77", "-n",
             "--pidfile=/var/log/m/node-1.pid", "estore", "--config",
             "/etc/estore/database.yaml"],
        )

    def test_commandBuiltAtEachStart(self) -> None:
        """
        A command function is called at each start (the manager's pid
        changes when twistd daemonizes after building the service).
        """
        reactor = FakeProcessReactor()
        pids = iter(["10", "20", "30"])
        runner = NodeRunner(SPEC, lambda: ["python", next(pids)], self.mktemp(),
                            RestartPolicy(), reactor, environ={})
        self.addCleanup(runner._close_output)
        runner.start()
        reactor.end()
        reactor.advance(1)
        self.assertEqual([args for _, args, _ in reactor.spawned],
                         [["python", "20"], ["python", "30"]])
        self.assertEqual(runner.status()["command"], ["python", "30"])

    def test_managerVariablesNotPassedOn(self) -> None:
        """
        The node gets the manager's environment without C{EVENTSTORE_*}
        (the manager's own options).
        """
        reactor = FakeProcessReactor()
        runner = NodeRunner(SPEC, ["python"], self.mktemp(), RestartPolicy(), reactor,
                            environ={"PATH": "/bin", "EVENTSTORE_INT_HTTP_PORT": "30777"})
        self.addCleanup(runner._close_output)
        runner.start()
        self.assertEqual(reactor.envs, [{"PATH": "/bin"}])

    def test_startAndOutput(self) -> None:
        """
        Starting spawns the command; its output goes to the log file.
        """
        runner, reactor = self.runner()
        runner.start()
        (protocol, args, transport) = reactor.spawned[0]
        self.assertEqual(args, ["python", "-m", "x"])
        protocol.outReceived(b"hello\n")
        protocol.errReceived(b"oops\n")
        with open(runner.log_path, "rb") as f:
            self.assertEqual(f.read(), b"hello\noops\n")
        self.assertEqual(runner.status()["pid"], 1000)
        self.assertEqual(runner.status()["state"], "running")

    def test_restartAfterKill(self) -> None:
        """
        A killed node is restarted after the back-off; status shows it.
        """
        runner, reactor = self.runner()
        runner.start()
        with capturedLogs() as events:
            reactor.end(signal=9)
        self.assertEqual(len(reactor.spawned), 1)
        reactor.advance(0.25)
        self.assertEqual(len(reactor.spawned), 2)
        status = runner.status()
        self.assertEqual((status["restarts"], status["lastExit"], status["lastExitTime"],
                          status["pid"]), (1, "killed by signal 9", 1234.0, 1001))
        self.assertTrue(any("ended" in e.get("log_format", "") for e in events))

    def test_giveUp(self) -> None:
        """
        After WatchdogFailureCount failures in the window the node is not
        restarted, and an error says so.
        """
        runner, reactor = self.runner(count=3, window=60)
        runner.start()
        with capturedLogs() as events:
            for _ in range(3):
                reactor.end(code=1, signal=None)
                reactor.advance(10)
        self.assertEqual(len(reactor.spawned), 3)
        self.assertEqual(runner.supervision.state, State.GAVE_UP)
        self.assertEqual(runner.status()["state"], "gave-up")
        errors = [e for e in events if e["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_spawnFailureIsAFailure(self) -> None:
        """
        A command that cannot be spawned counts as a failure and is retried
        with back-off.
        """
        runner, reactor = self.runner(count=2)
        reactor.fail = True
        runner.start()
        self.assertEqual(runner.supervision.state, State.WAITING)
        reactor.advance(0.25)
        self.assertEqual(runner.supervision.state, State.GAVE_UP)

    def test_stopTermThenKill(self) -> None:
        """
        Stopping sends SIGTERM, then SIGKILL after the grace period; the
        returned Deferred fires when the process has ended, and no restart
        follows.
        """
        runner, reactor = self.runner(grace=5)
        runner.start()
        transport = reactor.spawned[0][2]
        d = runner.stop()
        self.assertEqual(transport.signals, ["TERM"])
        self.assertNoResult(d)
        reactor.advance(5)
        self.assertEqual(transport.signals, ["TERM", "KILL"])
        reactor.end(signal=9)
        self.successResultOf(d)
        reactor.advance(100)
        self.assertEqual(len(reactor.spawned), 1)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stopCleanExitCancelsKill(self) -> None:
        """
        A node that exits within the grace period is not SIGKILLed.
        """
        runner, reactor = self.runner(grace=5)
        runner.start()
        transport = reactor.spawned[0][2]
        d = runner.stop()
        reactor.end(code=0, signal=None)
        self.successResultOf(d)
        self.assertEqual(transport.signals, ["TERM"])
        self.assertEqual(reactor.getDelayedCalls(), [])


class WatchdogServiceTests(SynchronousTestCase):
    """
    L{WatchdogService} starts every runner and stops them all.
    """

    def test_startStop(self) -> None:
        reactor = FakeProcessReactor()
        directory = self.mktemp()
        os.makedirs(directory)
        runners = [
            NodeRunner(NodeSpec(i, i, ("--mem-db",)), ["python"], os.path.join(directory, f"{i}"),
                       RestartPolicy(), reactor, environ={})
            for i in (1, 2)
        ]
        service = WatchdogService(runners)
        service.startService()
        self.assertEqual(len(reactor.spawned), 2)
        self.assertEqual([s["state"] for s in service.status()], ["running", "running"])
        d = service.stopService()
        self.assertNoResult(d)
        reactor.end(0, code=0, signal=None)
        self.assertNoResult(d)
        reactor.end(1, code=0, signal=None)
        self.successResultOf(d)
        self.assertEqual([s["state"] for s in service.status()], ["stopped", "stopped"])
