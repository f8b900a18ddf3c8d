# -*- test-case-name: tests.test_harness -*-
"""
A harness for system tests: real C{twistd -n estore} processes on loopback.

    with NodeProcess.start(tmpdir) as node:      # or node.stop() in cleanup
        node.ext_tcp_port, node.ext_http_port     # where it listens
        node.kill()  /  node.terminate()  /  node.pause() / node.resume()
        node.restart()                            # same ports, same data

L{Cluster} starts several at once.  Every process started is stopped by
L{NodeProcess.stop} (registered with C{addCleanup} by L{start_node}), and
every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Optional

#: The checkout this harness belongs to: nodes run its code.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: How long a node may take to start listening.
START_TIMEOUT = 30.0


def twistd_command() -> list[str]:
    """
    The command that runs C{twistd} with this interpreter.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def node_environment(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """
    The environment a node process runs with: ours, plus C{extra}, with this
    checkout first on C{PYTHONPATH} so the node runs the code under test.
    """
    env = dict(os.environ)
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """
    A TCP port that is free on C{host} right now.
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """
    C{count} different TCP ports that are free on C{host} right now (all
    bound at once, so the kernel cannot hand out the same one twice).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_port(
    host: str, port: int, timeout: float, process: Optional[subprocess.Popen[bytes]] = None
) -> None:
    """
    Wait until something accepts TCP connections on C{host}:C{port}.

    @raise RuntimeError: the process died or the time ran out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_closed(host: str, port: int, timeout: float) -> None:
    """
    Wait until C{host}:C{port} refuses connections.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} still accepts connections after {timeout}s")


class NodeProcess:
    """
    One real node process.

    @ivar directory: the node's working directory (data in C{data/}, its
        output in C{node.log}).
    """

    def __init__(
        self,
        directory: str,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        ports: Optional[dict[str, int]] = None,
        env: Optional[dict[str, str]] = None,
        mem_db: bool = False,
    ) -> None:
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.host = host
        self.extra_args = list(extra_args)
        self.mem_db = mem_db
        self.env = env
        self.ports = ports or dict(
            zip(("int_tcp", "ext_tcp", "int_http", "ext_http"), free_ports(4, host), strict=True)
        )
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log_path = os.path.join(self.directory, "node.log")
        self._log_file: Optional[object] = None

    @property
    def ext_tcp_port(self) -> int:
        return self.ports["ext_tcp"]

    @property
    def ext_http_port(self) -> int:
        return self.ports["ext_http"]

    @property
    def int_tcp_port(self) -> int:
        return self.ports["int_tcp"]

    @property
    def int_http_port(self) -> int:
        return self.ports["int_http"]

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ext_http_port}"

    def command(self) -> list[str]:
        args = twistd_command() + [
            "-n",
            "--pidfile=",
            "estore",
            "--db",
            os.path.join(self.directory, "data"),
            "--int-ip",
            self.host,
            "--ext-ip",
            self.host,
            "--int-tcp-port",
            str(self.int_tcp_port),
            "--ext-tcp-port",
            str(self.ext_tcp_port),
            "--int-http-port",
            str(self.int_http_port),
            "--ext-http-port",
            str(self.ext_http_port),
        ]
        if self.mem_db:
            args.append("--mem-db")
        return args + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> NodeProcess:
        """
        Start the process and wait until its external TCP and HTTP ports
        listen.
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("node already running")
        env = node_environment(self.env)
        log = open(self.log_path, "ab")
        self._log_file = log
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            for port in (self.ext_tcp_port, self.ext_http_port):
                wait_for_port(self.host, port, timeout, self.process)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{e}\n--- node log ---\n{self.log()[-4000:]}") from None
        return self

    def log(self) -> str:
        """
        Everything the node printed so far.
        """
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """
        SIGKILL the node and wait for it to die.
        """
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        """
        SIGTERM the node and wait for a clean exit.

        @return: its exit code.
        """
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        return self.wait(timeout)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._close_log()
        return code

    def restart(self, timeout: float = START_TIMEOUT) -> NodeProcess:
        """
        Stop (SIGTERM) if running, then start again with the same ports and
        data.
        """
        if self.process is not None and self.process.poll() is None:
            self.terminate()
        return self.start(timeout)

    def stop(self) -> None:
        """
        Make sure the process is gone: SIGTERM, then SIGKILL after a grace
        period.  Safe to call twice.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        log = self._log_file
        self._log_file = None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_node(testcase: object, directory: Optional[str] = None, **kwargs: object) -> NodeProcess:
    """
    Start a node for a trial test and stop it in the test's cleanup.
    """
    if directory is None:
        directory = testcase.mktemp()  # type: ignore[attr-defined]
    node = NodeProcess(directory, **kwargs)  # type: ignore[arg-type]
    testcase.addCleanup(node.stop)  # type: ignore[attr-defined]
    return node.start()


class Cluster:
    """
    Several nodes started together (each on its own 127.0.0.x address when
    C{hosts} says so).
    """

    def __init__(self, nodes: Iterable[NodeProcess]) -> None:
        self.nodes = list(nodes)

    def start(self) -> Cluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
