# -*- test-case-name: tests.test_node -*-
"""
System tests of a single real node process: it starts with the embedded
defaults, logs its endpoints, keeps data across clean and unclean restarts,
and stops cleanly on SIGTERM and SIGINT.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid

from twisted.trial.unittest import TestCase

from tests.harness import (
    NodeProcess,
    free_port,
    node_environment,
    start_node,
    twistd_command,
    wait_for_port,
)

ADMIN = "Basic " + base64.b64encode(b"admin:changeit").decode()


def http(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP request to the node, as admin unless told otherwise.
    """
    request = urllib.request.Request(node.http_url + path, data=body, method=method)
    request.add_header("Authorization", ADMIN)
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def write_event(node: NodeProcess, stream: str, n: int) -> None:
    body = json.dumps(
        [{"eventId": str(uuid.uuid4()), "eventType": "counted", "data": {"n": n}}]
    ).encode()
    status, _, text = http(
        node,
        "POST",
        f"/streams/{stream}",
        body,
        {"Content-Type": "application/vnd.eventstore.events+json"},
    )
    assert status == 201, (status, text)


def read_numbers(node: NodeProcess, stream: str) -> list[int]:
    status, _, body = http(
        node,
        "GET",
        f"/streams/{stream}/0/forward/100?embed=body",
        headers={"Accept": "application/vnd.eventstore.atom+json"},
    )
    assert status == 200, (status, body)
    entries = json.loads(body)["entries"]
    data = [json.loads(e["data"]) if isinstance(e["data"], str) else e["data"] for e in entries]
    return sorted(d["n"] for d in data)


class SingleNodeTests(TestCase):
    """
    A real C{twistd -n estore} process.
    """

    def test_logsEachEndpoint(self) -> None:
        """
        The node logs one line per listening endpoint.
        """
        node = start_node(self)
        lines = [
            f"Listening for {name} on 127.0.0.1:{port}"
            for name, port in [
                ("external TCP", node.ext_tcp_port),
                ("internal TCP", node.int_tcp_port),
                ("external HTTP", node.ext_http_port),
                ("internal HTTP", node.int_http_port),
            ]
        ]
        # A port accepts connections a moment before its line reaches the
        # log file, so the test waits (bounded) for the lines to arrive.
        deadline = time.monotonic() + 10
        log = node.log()
        while not all(line in log for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
            log = node.log()
        for line in lines:
            self.assertIn(line, log)

    def test_dataSurvivesCleanRestart(self) -> None:
        """
        Events written before a SIGTERM are there after the restart, and the
        node exits 0 with its checkpoints flushed.
        """
        node = start_node(self)
        for n in range(5):
            write_event(node, "restarted", n)
        # twistd re-raises the signal after a clean shutdown, so the exit
        # status says "terminated by SIGTERM"; the log says it was clean.
        self.assertIn(node.terminate(), (0, -signal.SIGTERM))
        self.assertIn("Stopped cleanly", node.log())
        node.start()
        self.assertEqual(read_numbers(node, "restarted"), list(range(5)))
        write_event(node, "restarted", 5)
        self.assertEqual(read_numbers(node, "restarted"), list(range(6)))

    def test_dataSurvivesKill(self) -> None:
        """
        Events acknowledged before a SIGKILL are there after the restart.
        """
        node = start_node(self)
        for n in range(20):
            write_event(node, "killed", n)
        node.kill()
        node.start()
        self.assertEqual(read_numbers(node, "killed"), list(range(20)))

    def test_sigintStopsCleanly(self) -> None:
        """
        SIGINT (Ctrl-C) stops the node like SIGTERM.
        """
        node = start_node(self)
        assert node.process is not None
        node.process.send_signal(signal.SIGINT)
        self.assertIn(node.wait(20), (0, -signal.SIGINT))
        self.assertIn("Stopped cleanly", node.log())

    def test_memDb(self) -> None:
        """
        With C{--mem-db} nothing is written under the data directory.
        """
        node = start_node(self, mem_db=True)
        write_event(node, "memory", 0)
        self.assertEqual(read_numbers(node, "memory"), [0])
        self.assertFalse(os.path.exists(os.path.join(node.directory, "data")))

    def test_embeddedDefault(self) -> None:
        """
        With no configuration at all the node starts, with its data under
        C{./estore-data} of its working directory.  (Uses the default ports,
        so it is skipped when they are taken.)
        """
        for port in (1112, 1113, 2112, 2113):
            if free_port_taken(port):
                raise self.skipTest(f"default port {port} is in use")
        directory = self.mktemp()
        os.makedirs(directory)
        defaults = {"ext_tcp": 1113, "int_tcp": 1112, "ext_http": 2113, "int_http": 2112}
        node = NodeProcess(directory, ports=defaults)
        node.command = lambda: twistd_command() + ["-n", "--pidfile=", "estore"]  # type: ignore[method-assign]
        self.addCleanup(node.stop)
        node.start()
        wait_for_port("127.0.0.1", 2113, 10)
        write_event(node, "default", 0)
        self.assertTrue(os.path.isdir(os.path.join(directory, "estore-data")))

    def test_portInUse(self) -> None:
        """
        A port that is taken stops the node with a line naming the endpoint.
        """
        import socket

        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        directory = self.mktemp()
        node = NodeProcess(directory, mem_db=True)
        node.ports["ext_http"] = taken
        self.addCleanup(node.stop)
        node.process = None
        import subprocess

        code = subprocess.run(
            node.command(),
            cwd=node.directory,
            capture_output=True,
            timeout=60,
            env=node_environment(),
        )
        output = code.stdout.decode() + code.stderr.decode()
        self.assertIn(f"Cannot listen for external HTTP on 127.0.0.1:{taken}", output)


def free_port_taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


__all__ = ["free_port"]


class StartupRefusalTests(TestCase):
    """
    A node that cannot open its database exits non-zero with one clear line
    and listens on nothing.
    """

    def test_databaseInUse(self) -> None:
        """
        A second node on the same data directory is refused: the directory is
        locked by the first.
        """
        import subprocess

        first = start_node(self)
        second = NodeProcess(first.directory + "-second")
        second_command = second.command()
        db = os.path.join(first.directory, "data")
        second_command[second_command.index("--db") + 1] = db
        result = subprocess.run(
            second_command,
            cwd=second.directory,
            capture_output=True,
            timeout=60,
            env=node_environment(),
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"estore: cannot open the database in {db}", result.stderr.decode())
        # An expected refusal is one line, not a traceback.
        self.assertNotIn("Traceback", result.stdout.decode() + result.stderr.decode())
        # The first node still serves.
        write_event(first, "still-here", 0)
