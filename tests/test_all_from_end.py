# -*- test-case-name: tests.test_all_from_end -*-
"""
The end-position sentinels (C{-1}, C{Position.End}, C{END}, C{head}) at
every read and subscription entry point, with real clients (issue 15):

  - v5 TCP (node-eventstore-client, both generations): a catch-up
    subscription to C{$all} from the end; reads of C{$all} forwards and
    backwards and of a stream backwards from the end, C{readEvent(-1)}, a
    volatile subscription, a catch-up subscription to a stream from its last
    event, a persistent subscription with C{startFrom} -1;
  - gRPC (@eventstore/db-client): reads of C{$all} and of a stream from
    C{END} in both directions, subscriptions to C{$all} and to a stream from
    C{END}, a persistent subscription from C{END};
  - HTTP (urllib): C{head} feeds of a stream and of C{$all}, C{head} refused
    forwards, negative C{$all} positions refused (as v5), a persistent
    subscription with C{startFrom} -1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from typing import Any, Optional
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import REPO_ROOT, NodeProcess, start_node
from tests.test_tcp_clients import ClientScriptMixin

ADMIN = "Basic " + base64.b64encode(b"admin:changeit").decode()


class AllFromEndTests(ClientScriptMixin, SynchronousTestCase):
    js_client = "node-eventstore-client"

    def test_subscribe_to_all_from_end(self) -> None:
        """
        C{subscribeToAllFrom(positions.end)} delivers no historical event,
        goes live, and then gets exactly the new events.
        """
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "catchup_end.js")
        self.assertEqual(result["historical"], 0)
        self.assertEqual(result["seen"], 5)

    def test_reads_and_subscriptions_from_end(self) -> None:
        """
        Every TCP read and subscription from the end (tests/js/from_end_tcp.js).
        """
        node = start_node(self, mem_db=True)
        self.run_js(node, "from_end_tcp.js")


class AllFromEndClient21Tests(AllFromEndTests):
    js_client = "node-eventstore-client-21"



class GrpcFromEndTests(SynchronousTestCase):
    """
    @eventstore/db-client against a real node: C{tests/js/from_end_grpc.js}.
    """

    def test_reads_and_subscriptions_from_end(self) -> None:
        js_dir = os.path.join(REPO_ROOT, "tests", "js")
        node_binary = shutil.which("node")
        if node_binary is None:
            raise SkipTest("node is not installed")
        if not os.path.isdir(os.path.join(js_dir, "node_modules", "@eventstore", "db-client")):
            raise SkipTest("tests/js/node_modules missing: run npm ci --prefix tests/js")
        node = start_node(self, mem_db=True, extra_args=["--insecure"])
        completed = subprocess.run(
            [node_binary, os.path.join(js_dir, "from_end_grpc.js"), str(node.ext_http_port)],
            cwd=js_dir, capture_output=True, timeout=90, stdin=subprocess.DEVNULL,
        )
        lines = [x for x in completed.stdout.decode("utf-8", "replace").splitlines() if x]
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise AssertionError(
                f"client printed no result (exit {completed.returncode}):\n"
                f"{completed.stderr.decode('utf-8', 'replace')[-3000:]}\n"
                f"--- node log ---\n{node.log()[-3000:]}"
            ) from None
        if not result.get("ok"):
            raise AssertionError(
                f"client checks failed: {json.dumps(result.get('failures'), indent=1)}\n"
                f"--- node log ---\n{node.log()[-3000:]}"
            )
        self.assertEqual(len(result["checks"]), 7)
        self.assertEqual(completed.returncode, 0)


def _http(
    node: NodeProcess,
    method: str,
    path: str,
    headers: Optional[dict[str, str]] = None,
    body: Optional[bytes] = None,
) -> tuple[int, Any]:
    request = urllib.request.Request(node.http_url + path, data=body, method=method)
    request.add_header("Authorization", ADMIN)
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
            return response.status, json.loads(data) if data.strip() else None
    except urllib.error.HTTPError as e:
        return e.code, e.reason


class HttpFromEndTests(SynchronousTestCase):
    """
    The HTTP API's end sentinels with urllib against a real node.
    """

    def setUp(self) -> None:
        self.node = start_node(self, mem_db=True)
        self.stream = "httpend-" + uuid.uuid4().hex
        self.write(range(5))

    def write(self, numbers: Any) -> None:
        body = json.dumps(
            [{"eventId": str(uuid.uuid4()), "eventType": "t", "data": {"n": n}} for n in numbers]
        ).encode()
        status, _ = _http(
            self.node, "POST", f"/streams/{self.stream}",
            {"Content-Type": "application/vnd.eventstore.events+json"}, body,
        )
        self.assertEqual(status, 201)

    def titles(self, path: str, accept: str = "application/json") -> list[str]:
        status, feed = _http(self.node, "GET", path, {"Accept": accept})
        self.assertEqual(status, 200, (path, feed))
        return [e["title"] for e in feed["entries"]]

    def test_head_feeds(self) -> None:
        """
        C{head} reads backwards from the newest event, of a stream and of
        C{$all}; C{head} forwards and negative positions are refused as v5
        refuses them.
        """
        s = self.stream
        self.assertEqual(self.titles(f"/streams/{s}/head/backward/2"), [f"4@{s}", f"3@{s}"])
        self.assertEqual(self.titles(f"/streams/{s}"), [f"{n}@{s}" for n in (4, 3, 2, 1, 0)])
        self.assertEqual(self.titles("/streams/$all/head/backward/1"), [f"4@{s}"])
        accept = {"Accept": "application/json"}
        status, reason = _http(self.node, "GET", f"/streams/{s}/-1/backward/2", accept)
        self.assertEqual((status, reason), (400, "'-1' is not valid event number"))
        status, reason = _http(self.node, "GET", f"/streams/{s}/head/forward/2", accept)
        self.assertEqual((status, reason), (400, "'head' is not valid event number"))
        for direction in ("backward", "forward"):
            path = f"/streams/$all/{'f' * 32}/{direction}/1"
            status, reason = _http(self.node, "GET", path, accept)
            self.assertEqual((status, reason), (400, f"Invalid position argument: {'f' * 32}"))

    def test_persistent_from_end(self) -> None:
        """
        A group created with C{startFrom} -1 hands out only the events
        written after it.
        """
        s = self.stream
        status, _ = _http(
            self.node, "PUT", f"/subscriptions/{s}/g",
            {"Content-Type": "application/json"}, json.dumps({"startFrom": -1}).encode(),
        )
        self.assertEqual(status, 201)
        competing = "application/vnd.eventstore.competingatom+json"
        self.assertEqual(self.titles(f"/subscriptions/{s}/g/10", competing), [])
        self.write(range(5, 8))
        titles: list[str] = []
        for _ in range(20):
            titles += self.titles(f"/subscriptions/{s}/g/10", competing)
            if len(titles) >= 3:
                break
        self.assertEqual(sorted(titles), [f"{n}@{s}" for n in (5, 6, 7)])
