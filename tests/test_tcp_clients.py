# -*- test-case-name: tests.test_tcp_clients -*-
"""
System tests of the TCP client protocol: a real node process (C{twistd -n
estore}, started by L{tests.harness}) driven by real Event Store clients,
node-eventstore-client 0.2.19 (scripts in C{tests/js}) and photon-pump
0.9.5.2 (scripts in C{tests/py}), plus a raw socket for heartbeats and bad
frames.  Everything is on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import REPO_ROOT, NodeProcess, start_node

JS_DIR = os.path.join(REPO_ROOT, "tests", "js")
PY_DIR = os.path.join(REPO_ROOT, "tests", "py")


def _node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise SkipTest("node is not installed")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "node-eventstore-client")):
        raise SkipTest("tests/js/node_modules missing: run npm ci --prefix tests/js")
    return node


def _result(completed: Any, node: NodeProcess) -> dict[str, Any]:
    lines = [line for line in completed.stdout.decode("utf-8", "replace").splitlines() if line]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AssertionError(
            f"client printed no result (exit {completed.returncode}):\n"
            f"{completed.stdout.decode('utf-8', 'replace')[-3000:]}\n"
            f"{completed.stderr.decode('utf-8', 'replace')[-3000:]}\n"
            f"--- node log ---\n{node.log()[-3000:]}"
        ) from None
    return result


class ClientScriptMixin:
    """
    Run one client script and assert its checks passed.
    """

    def assert_ok(self, result: dict[str, Any], node: NodeProcess) -> None:
        if not result.get("ok") or result.get("failures"):
            raise AssertionError(
                f"client checks failed: {json.dumps(result.get('failures'), indent=1)}\n"
                f"--- node log ---\n{node.log()[-3000:]}"
            )
        assert result["checks"], "the client ran no check"

    #: The npm package the JS scripts load (tests/js/common.js reads ES_CLIENT).
    js_client = "node-eventstore-client"

    def run_js(self, node: NodeProcess, script: str, *args: str, timeout: float = 120) -> Any:
        env = dict(os.environ)
        env["ES_CLIENT"] = self.js_client
        completed = subprocess.run(
            [_node_binary(), os.path.join(JS_DIR, script), str(node.ext_tcp_port), *args],
            cwd=JS_DIR,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        result = _result(completed, node)
        self.assert_ok(result, node)
        return result

    def run_py(self, node: NodeProcess, script: str, *args: str, timeout: float = 120) -> Any:
        # photon-pump's generated code needs the pure-Python protobuf runtime.
        env = dict(os.environ)
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
        probe = subprocess.run(
            [sys.executable, "-c", "import photonpump"], env=env, capture_output=True, timeout=60
        )
        if probe.returncode != 0:
            raise SkipTest("photon-pump is not importable: " + probe.stderr.decode()[-500:])
        completed = subprocess.run(
            [sys.executable, os.path.join(PY_DIR, script), str(node.ext_tcp_port), *args],
            cwd=PY_DIR,
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        result = _result(completed, node)
        self.assert_ok(result, node)
        return result


class NodeEventStoreClientTests(ClientScriptMixin, SynchronousTestCase):
    """
    node-eventstore-client 0.2.19, the acceptance client.
    """

    def test_every_operation(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "operations.js")
        self.assertGreaterEqual(len(result["checks"]), 40)

    def test_catch_up_subscription_live_switchover(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "catchup.js")
        self.assertGreater(result["written"], 210)

    def test_persistent_competing_consumers_nak_park_replay(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "persistent.js", str(node.ext_http_port))
        self.assertIn("parked messages replayed", result["checks"])

    def test_reconnect_after_node_restart_nothing_lost(self) -> None:
        node = start_node(self)
        env = dict(os.environ)
        env["ES_CLIENT"] = self.js_client
        process = subprocess.Popen(
            [_node_binary(), os.path.join(JS_DIR, "restart.js"), str(node.ext_tcp_port), "300"],
            cwd=JS_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        progress = -1
        while progress < 100 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            progress = json.loads(line).get("progress", progress)
        self.assertGreaterEqual(progress, 100, "the client did not get going")
        node.restart()
        out, err = process.communicate(timeout=120)
        lines = [line for line in out.decode().splitlines() if line]
        result = json.loads(lines[-1])
        self.assert_ok(result, node)
        self.assertEqual(result["events"], 300)
        self.assertGreater(result["reconnects"], 0)

    def test_idle_connection_stays_up_with_heartbeats(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "idle.js", "6")
        self.assertGreater(result["heartbeats"], 0)

    def test_persistent_subscription_right_after_restart(self) -> None:
        node = start_node(self)
        stream = f"prestart-{uuid.uuid4().hex}"
        self.run_js(node, "persistent_restart.js", "before", stream)
        node.restart()
        result = self.run_js(node, "persistent_restart.js", "after", stream)
        self.assertEqual(result["received"], 10)


class NodeEventStoreClient21Tests(ClientScriptMixin, SynchronousTestCase):
    """
    node-eventstore-client 21.10.1: the proto3 generation, which leaves out
    fields equal to their default value.
    """

    js_client = "node-eventstore-client-21"

    def test_every_operation(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "operations.js")
        self.assertGreaterEqual(len(result["checks"]), 40)

    def test_catch_up_subscription_live_switchover(self) -> None:
        node = start_node(self, mem_db=True)
        self.run_js(node, "catchup.js")

    def test_persistent_competing_consumers_nak_park_replay(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "persistent.js", str(node.ext_http_port))
        self.assertIn("parked messages replayed", result["checks"])


class PhotonPumpTests(ClientScriptMixin, SynchronousTestCase):
    """
    photon-pump 0.9.5.2 (asyncio, never identifies, credentials per package).
    """

    def test_operations(self) -> None:
        node = start_node(self, mem_db=True)
        result = self.run_py(node, "pp_operations.py")
        self.assertIn("persistent subscription", result["checks"])


def _frame(command: int, corr: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<iBB", 18 + len(data), command, 0) + corr + data


def _read_frame(sock: socket.socket, timeout: float) -> Optional[tuple[int, bytes, bytes]]:
    """
    One package, or C{None} when the peer closed the connection.
    """
    deadline = time.monotonic() + timeout
    buffer = b""
    while True:
        if len(buffer) >= 4:
            (length,) = struct.unpack_from("<i", buffer)
            if len(buffer) >= 4 + length:
                package = buffer[4 : 4 + length]
                return package[0], package[2:18], package[18:]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no package within the time limit")
        ready, _, _ = select.select([sock], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buffer += chunk


class RawProtocolTests(SynchronousTestCase):
    """
    Heartbeats and connection-level errors seen from a raw socket.
    """

    def setUp(self) -> None:
        self.node = start_node(self, mem_db=True)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.node.ext_tcp_port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def test_heartbeat_timeout_closes_silent_connection(self) -> None:
        sock = self.connect()
        started = time.monotonic()
        command, corr, _ = _read_frame(sock, 6) or (None, b"", b"")
        self.assertEqual(command, 0x01)
        self.assertNotEqual(corr, bytes(16))
        self.assertIsNone(_read_frame(sock, 6))  # closed: we never answered
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 6.5)

    def test_answered_heartbeats_keep_connection(self) -> None:
        sock = self.connect()
        for _ in range(3):
            package = _read_frame(sock, 6)
            assert package is not None
            self.assertEqual(package[0], 0x01)
            sock.sendall(_frame(0x02, package[1]))
        corr = uuid.uuid4().bytes_le
        sock.sendall(_frame(0x03, corr, b"alive"))
        package = _read_frame(sock, 5)
        while package is not None and package[0] == 0x01:
            sock.sendall(_frame(0x02, package[1]))
            package = _read_frame(sock, 5)
        self.assertEqual(package, (0x04, corr, b"alive"))

    def test_bad_frame_gets_zero_correlation_bad_request_and_close(self) -> None:
        sock = self.connect()
        sock.sendall(struct.pack("<i", -1))
        package = _read_frame(sock, 5)
        assert package is not None
        self.assertEqual(package[0], 0xF0)
        self.assertEqual(package[1], bytes(16))
        self.assertIn(b"Package size is out of bounds", package[2])
        self.assertIsNone(_read_frame(sock, 5))
        # The node is unaffected.
        other = self.connect()
        corr = uuid.uuid4().bytes_le
        other.sendall(_frame(0x03, corr, b"x"))
        self.assertEqual(_read_frame(other, 5), (0x04, corr, b"x"))


def _write_request(stream: str, count: int) -> bytes:
    """
    A WriteEvents payload of C{count} 1 KiB JSON events (hand-encoded).
    """
    from estwisted.wire import messages_pb2 as pb

    message = pb.WriteEvents(event_stream_id=stream, expected_version=-2, require_master=False)
    for _ in range(count):
        message.events.add(
            event_id=uuid.uuid4().bytes_le,
            event_type="load",
            data_content_type=1,
            metadata_content_type=0,
            data=b"{" + b" " * 1022 + b"}",
        )
    return message.SerializeToString()


class SlowAndIdleClientTests(SynchronousTestCase):
    """
    Clients that stop reading, and many idle connections, do not take the
    node down.
    """

    def setUp(self) -> None:
        self.node = start_node(self, mem_db=True)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.node.ext_tcp_port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def ping(self, sock: socket.socket) -> None:
        corr = uuid.uuid4().bytes_le
        sock.sendall(_frame(0x03, corr, b"p"))
        package = _read_frame(sock, 10)
        while package is not None and package[0] == 0x01:
            sock.sendall(_frame(0x02, package[1]))
            package = _read_frame(sock, 10)
        self.assertEqual(package, (0x04, corr, b"p"))

    def test_subscriber_that_stops_reading_is_cut_off(self) -> None:
        from estwisted.wire import messages_pb2 as pb

        slow = self.connect()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        corr = uuid.uuid4().bytes_le
        subscribe = pb.SubscribeToStream(event_stream_id="flood", resolve_link_tos=False)
        slow.sendall(_frame(0xC0, corr, subscribe.SerializeToString()))
        writer = self.connect()
        # 16 MiB of events: more than the 10 MiB pending limit.
        for _ in range(160):
            wcorr = uuid.uuid4().bytes_le
            writer.sendall(_frame(0x82, wcorr, _write_request("flood", 100)))
            package = _read_frame(writer, 30)
            while package is not None and package[0] == 0x01:
                writer.sendall(_frame(0x02, package[1]))
                package = _read_frame(writer, 30)
            assert package is not None
            self.assertEqual((package[0], package[1]), (0x83, wcorr))
        # The node still serves others.
        self.ping(writer)
        # The slow subscriber was cut off (a zero-correlation BadRequest is
        # queued behind what it did not read, then the connection is
        # aborted): it never gets all 16,000 events.
        received = 0
        closed = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            package = _read_frame(slow, 30)
            if package is None:
                closed = True
                break
            if package[0] == 0xC2:
                received += 1
        self.assertTrue(closed)
        self.assertLess(received, 16000)
        self.assertIn("Closing a slow connection", self.node.log())

    def test_a_thousand_idle_connections(self) -> None:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        count = min(1000, soft - 200)
        idle = []
        for _ in range(count):
            idle.append(socket.create_connection(("127.0.0.1", self.node.ext_tcp_port), timeout=5))
        try:
            self.ping(self.connect())
            # They get heartbeat requests and are closed after the timeout.
            deadline = time.monotonic() + 20
            closed = 0
            for sock in idle:
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    while True:
                        package = _read_frame(sock, remaining)
                        if package is None:
                            closed += 1
                            break
                except AssertionError:
                    pass
            self.assertEqual(closed, count)
            self.ping(self.connect())
        finally:
            for sock in idle:
                sock.close()
