# -*- test-case-name: tests.test_http_clients -*-
"""
System tests of the HTTP API: a real node process (C{twistd -n estore},
started by L{tests.harness}) driven by geteventstore-promise 4.0.1's HTTP
client (C{tests/js/http_client.js}: write, read, paging, metadata, delete,
persistent subscriptions, scavenge, gossip), plus raw requests over a socket
for what a client library would never send.  Everything is on 127.0.0.1 and
every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import REPO_ROOT, NodeProcess, start_node

JS_DIR = os.path.join(REPO_ROOT, "tests", "js")
ADMIN = "Basic " + base64.b64encode(b"admin:changeit").decode()


def _node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise SkipTest("node is not installed")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "geteventstore-promise")):
        raise SkipTest("tests/js/node_modules missing: run npm ci --prefix tests/js")
    return node


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """
    Send raw bytes to 127.0.0.1:C{port} and read until the server closes or
    a complete response with a Content-Length arrived.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        if len(body) >= int(value.strip()):
                            return data
        return data


def http(port: int, method: str, path: str, headers: Optional[dict[str, str]] = None,
         body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP/1.1 request with C{Connection: close}; returns status, headers
    (lower-case names) and body.
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    data = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, rest


class GetEventStorePromiseTests(SynchronousTestCase):
    """
    geteventstore-promise against a real node.
    """

    def setUp(self) -> None:
        self.node = start_node(self, mem_db=True)

    def test_client(self) -> None:
        """
        Every check of C{tests/js/http_client.js} passes.
        """
        completed = subprocess.run(
            [_node_binary(), os.path.join(JS_DIR, "http_client.js"), str(self.node.ext_http_port)],
            cwd=JS_DIR,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        lines = [x for x in completed.stdout.decode("utf-8", "replace").splitlines() if x]
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise AssertionError(
                f"client printed no result (exit {completed.returncode}):\n"
                f"{completed.stderr.decode('utf-8', 'replace')[-3000:]}\n"
                f"--- node log ---\n{self.node.log()[-3000:]}"
            ) from None
        if not result.get("ok"):
            raise AssertionError(
                f"client checks failed: {json.dumps(result.get('failures'), indent=1)}\n"
                f"--- node log ---\n{self.node.log()[-3000:]}"
            )
        self.assertGreater(len(result["checks"]), 30)
        self.assertEqual(completed.returncode, 0)
        self.assertNotIn("Traceback", self.node.log())


class RawHttpTests(SynchronousTestCase):
    """
    Requests no client library sends, over a real socket.
    """

    def setUp(self) -> None:
        self.node: NodeProcess = start_node(self, mem_db=True)
        self.port = self.node.ext_http_port

    def test_writeThenReadDocumentationStyle(self) -> None:
        """
        The documentation's curl flow: POST an events+json array, read the
        feed with an explicit Accept, get 406 with C{*/*}.
        """
        body = json.dumps(
            [{"eventId": str(uuid.uuid4()), "eventType": "event-type", "data": {"a": "1"}}]
        ).encode()
        status, headers, _ = http(
            self.port,
            "POST",
            "/streams/newstream",
            {"Authorization": ADMIN, "Content-Type": "application/vnd.eventstore.events+json"},
            body,
        )
        self.assertEqual(status, 201)
        self.assertEqual(headers["location"], f"http://127.0.0.1:{self.port}/streams/newstream/0")
        status, headers, body = http(
            self.port,
            "GET",
            "/streams/newstream",
            {"Authorization": ADMIN, "Accept": "application/vnd.eventstore.atom+json"},
        )
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["entries"][0]["title"], "0@newstream")
        status, _, body = http(
            self.port, "GET", "/streams/newstream", {"Authorization": ADMIN, "Accept": "*/*"}
        )
        self.assertEqual(status, 406)
        self.assertIn("Description document", json.loads(body)["title"])

    def test_badInputNever500(self) -> None:
        """
        Malformed requests get 4xx answers and the node keeps serving.
        """
        cases = [
            ("POST", "/streams/s", {"Content-Type": "text/csv"}, b"x"),
            ("POST", "/streams/s", {"Content-Type": "application/vnd.eventstore.events+json"},
             b"[{]"),
            ("POST", "/streams/s", {"Content-Type": "application/vnd.eventstore.events+json",
                                    "ES-ExpectedVersion": "seven"}, b"[]"),
            ("GET", "/streams/s/-5", {}, b""),
            ("GET", "/streams/s/0/forward/abc", {}, b""),
            ("GET", "/streams/%24all/zz/forward/5", {}, b""),
            ("GET", "/no/such/route", {}, b""),
            ("DELETE", "/streams/s", {"ES-HardDelete": "perhaps"}, b""),
        ]
        for method, path, headers, body in cases:
            status, _, _ = http(self.port, method, path, {"Authorization": ADMIN, **headers}, body)
            self.assertTrue(400 <= status < 500, (method, path, status))
        status, _, _ = http(self.port, "GET", "/ping")
        self.assertEqual(status, 200)
        self.assertNotIn("Traceback", self.node.log())
