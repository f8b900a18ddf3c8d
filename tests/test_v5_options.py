# -*- test-case-name: tests.test_v5_options -*-
"""
The Event Store v5 options of issue 15 against real node processes, with a
real HTTP client (urllib): C{EnableTrustedAuth}, C{DisableHttpCaching},
C{ExtHttpPrefixes}/C{IntHttpPrefixes} and C{MaxTruncation}
(docs/v5-options.md).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

from estwisted.storage.checkpoints import FileCheckpoint
from tests.harness import NodeProcess, free_port, node_environment, start_node

ADMIN = "Basic " + base64.b64encode(b"admin:changeit").decode()
NO_CACHE = "max-age=0, no-cache, must-revalidate"


def http(
    node: NodeProcess,
    method: str,
    path: str,
    headers: Optional[dict[str, str]] = None,
    body: Optional[bytes] = None,
    port: Optional[int] = None,
) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP request (no credentials unless given in C{headers}).
    """
    url = f"http://{node.host}:{port or node.ext_http_port}{path}"
    request = urllib.request.Request(url, data=body, method=method)
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def write_events(node: NodeProcess, stream: str, count: int, size: int = 10) -> None:
    body = json.dumps(
        [
            {"eventId": str(uuid.uuid4()), "eventType": "t", "data": {"n": n, "pad": "x" * size}}
            for n in range(count)
        ]
    ).encode()
    status, _, text = http(
        node, "POST", f"/streams/{stream}",
        {"Authorization": ADMIN, "Content-Type": "application/vnd.eventstore.events+json"},
        body,
    )
    assert status == 201, (status, text)


def ports() -> dict[str, int]:
    return {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}


class HttpOptionsTests(SynchronousTestCase):
    """
    One node with the HTTP options set, one with the defaults.
    """

    def setUp(self) -> None:
        chosen = ports()
        ext, internal = chosen["ext_http"], chosen["int_http"]
        self.node = start_node(
            self,
            mem_db=True,
            ports=chosen,
            extra_args=[
                "--enable-trusted-auth",
                "--disable-http-caching",
                f"--ext-http-prefixes=http://es.example:{ext}/,http://*:{ext}/es/",
                f"--int-http-prefixes=http://int.example:{internal}/",
            ],
        )
        self.plain = start_node(self, mem_db=True)

    def test_trusted_auth(self) -> None:
        """
        With C{EnableTrustedAuth} the C{ES-TrustedAuth} header names the
        caller (an admin may read C{$users}); malformed it is 401; without
        the option it is ignored.
        """
        accept = {"Accept": "application/json"}
        as_admin = {**accept, "ES-TrustedAuth": "proxied; $admins, other"}
        self.assertEqual(http(self.node, "GET", "/streams/$users", as_admin)[0], 200)
        as_user = {**accept, "ES-TrustedAuth": "proxied"}
        self.assertEqual(http(self.node, "GET", "/streams/$users", as_user)[0], 401)
        bad = {**accept, "ES-TrustedAuth": "a; b; c"}
        self.assertEqual(http(self.node, "GET", "/streams/$users", bad)[0], 401)
        self.assertEqual(http(self.plain, "GET", "/streams/$users", as_admin)[0], 401)

    def test_disable_http_caching(self) -> None:
        """
        A full page and a single event are cacheable for a year by default,
        never with C{DisableHttpCaching}.
        """
        headers = {"Authorization": ADMIN, "Accept": "application/json"}
        for node, expected in ((self.node, NO_CACHE), (self.plain, "max-age=31536000, ")):
            write_events(node, "cached", 25)
            for path in ("/streams/cached/0/forward/20", "/streams/cached/3"):
                status, reply, _ = http(node, "GET", path, headers)
                self.assertEqual(status, 200)
                self.assertTrue(reply["Cache-Control"].startswith(expected), (path, reply))

    def test_ext_prefixes(self) -> None:
        """
        The named host and the interface address are answered; any host is
        answered below C{/es/} (the feed's URLs carry C{/es}), and outside
        it gets 404.
        """
        write_events(self.node, "prefixed", 2)
        port = self.node.ext_http_port
        headers = {"Authorization": ADMIN, "Accept": "application/json"}
        for host in (f"es.example:{port}", f"127.0.0.1:{port}"):
            status, _, _ = http(self.node, "GET", "/streams/prefixed", {**headers, "Host": host})
            self.assertEqual(status, 200, host)
        other = {**headers, "Host": f"other.example:{port}"}
        self.assertEqual(http(self.node, "GET", "/streams/prefixed", other)[0], 404)
        status, _, body = http(self.node, "GET", "/es/streams/prefixed", other)
        self.assertEqual(status, 200)
        feed = json.loads(body)
        self.assertEqual(feed["id"], f"http://other.example:{port}/es/streams/prefixed")
        # the node without prefixes answers any host
        plain = {**headers, "Host": "other.example"}
        write_events(self.plain, "prefixed", 1)
        self.assertEqual(http(self.plain, "GET", "/streams/prefixed", plain)[0], 200)

    def test_int_prefixes(self) -> None:
        """
        The internal port answers only its named host and its interface
        address: any other host gets 400 (the external prefixes do not
        apply there).
        """
        port = self.node.int_http_port
        for host, expected in (
            (f"int.example:{port}", 200),
            (f"127.0.0.1:{port}", 200),
            (f"es.example:{port}", 400),
        ):
            status, _, body = http(self.node, "GET", "/ping", {"Host": host}, port=port)
            self.assertEqual(status, expected, (host, body))


class MaxTruncationTests(SynchronousTestCase):
    """
    C{MaxTruncation} refuses to start a node whose C{truncate.chk} asks for
    a larger cut, and changes nothing.
    """

    def test_refused_then_recovered(self) -> None:
        node = start_node(self)
        write_events(node, "kept", 20, size=500)
        self.assertIn(node.terminate(), (0, -signal.SIGTERM))
        data = os.path.join(node.directory, "data")
        writer = FileCheckpoint(os.path.join(data, "writer.chk"), 0)
        end = writer.value
        writer.close()
        truncate = FileCheckpoint(os.path.join(data, "truncate.chk"), -1)
        truncate.write(end - 5000)
        truncate.close()
        files = sorted(os.listdir(data))
        result = subprocess.run(
            node.command() + ["--max-truncation", "1000"],
            cwd=node.directory,
            capture_output=True,
            timeout=60,
            env=node_environment(),
        )
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout.decode() + result.stderr.decode()
        self.assertIn("more than MaxTruncation (1000)", output)
        self.assertIn(f"at least {5000}", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(sorted(os.listdir(data)), files)
        writer = FileCheckpoint(os.path.join(data, "writer.chk"), 0)
        self.assertEqual(writer.value, end)
        writer.close()
        # The operator clears the cut: everything is still there.
        truncate = FileCheckpoint(os.path.join(data, "truncate.chk"), -1)
        truncate.write(-1)
        truncate.close()
        node.start()
        status, _, body = http(
            node, "GET", "/streams/kept/0/forward/50",
            {"Authorization": ADMIN, "Accept": "application/json"},
        )
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(body)["entries"]), 20)


class CompetingRedeliveryTests(SynchronousTestCase):
    """
    Over HTTP competing consumers, messages nacked in any order come back
    in Event Store's order: entries newest first, as in every Atom feed.
    """

    def test_nack_eight_ack_four(self) -> None:
        node = start_node(self, mem_db=True)
        admin = {"Authorization": ADMIN}
        status, _, body = http(
            node, "PUT", "/subscriptions/jobs/g",
            {**admin, "Content-Type": "application/json"},
            json.dumps({"startFrom": 0, "maxRetryCount": 5}).encode(),
        )
        self.assertEqual(status, 201, body)
        write_events(node, "jobs", 12)
        competing = {**admin, "Accept": "application/vnd.eventstore.competingatom+json"}

        def feed(count: int) -> list[tuple[int, str]]:
            status, _, body = http(node, "GET", f"/subscriptions/jobs/g/{count}", competing)
            self.assertEqual(status, 200, body)
            entries = json.loads(body)["entries"]
            return [(int(e["title"].split("@")[0]), e["id"]) for e in entries]

        received: list[tuple[int, str]] = []
        for _ in range(10):
            received += feed(12 - len(received))
            if len(received) >= 12:
                break
        self.assertEqual(sorted(n for n, _ in received), list(range(12)))
        ids: dict[int, str] = {}
        status, _, body = http(node, "GET", "/streams/jobs/0/forward/20?embed=rich",
                               {**admin, "Accept": "application/json"})
        for entry in json.loads(body)["entries"]:
            ids[entry["eventNumber"]] = entry["eventId"]
        nacked = [11, 9, 7, 5, 3, 2, 1, 0]
        acked = [10, 4, 8, 6]
        joined = ",".join(ids[n] for n in nacked)
        status, _, _ = http(node, "POST", f"/subscriptions/jobs/g/nack?ids={joined}&action=Retry",
                            admin)
        self.assertEqual(status, 202)
        joined = ",".join(ids[n] for n in acked)
        status, _, _ = http(node, "POST", f"/subscriptions/jobs/g/ack?ids={joined}", admin)
        self.assertEqual(status, 202)
        again: list[int] = []
        for _ in range(10):
            again = [n for n, _ in feed(10)]
            if again:
                break
        self.assertEqual(again, sorted(nacked, reverse=True))


class UnsafeIgnoreHardDeleteTests(SynchronousTestCase):
    """
    C{UnsafeIgnoreHardDelete}: after a scavenge a hard-deleted stream (its
    tombstone in a completed chunk) can be written again; without the
    option it stays deleted (410).
    """

    def scenario(self, *extra: str) -> NodeProcess:
        node = start_node(self, extra_args=["--chunk-size", "65536", *extra])
        write_events(node, "gone", 5)
        status, _, _ = http(
            node, "DELETE", "/streams/gone",
            {"Authorization": ADMIN, "ES-HardDelete": "true"},
        )
        self.assertEqual(status, 204)
        for _ in range(6):
            write_events(node, "filler", 40, size=500)  # the tombstone's chunk completes
        status, _, body = http(node, "POST", "/admin/scavenge", {"Authorization": ADMIN})
        self.assertEqual(status, 200, body)
        scavenge_id = json.loads(body)["scavengeId"]
        accept = {"Authorization": ADMIN, "Accept": "application/json"}
        for _ in range(200):
            status, _, body = http(
                node, "GET", f"/streams/$scavenges-{scavenge_id}/0/forward/100?embed=body",
                accept,
            )
            if status == 200 and any(
                e["eventType"] == "$scavengeCompleted" for e in json.loads(body)["entries"]
            ):
                break
            time.sleep(0.05)
        else:
            self.fail("the scavenge did not complete")
        return node

    def test_reopened(self) -> None:
        node = self.scenario("--unsafe-ignore-hard-delete")
        accept = {"Authorization": ADMIN, "Accept": "application/json"}
        self.assertEqual(http(node, "GET", "/streams/gone", accept)[0], 404)
        body = json.dumps([{"eventId": str(uuid.uuid4()), "eventType": "t", "data": {}}]).encode()
        status, headers, _ = http(
            node, "POST", "/streams/gone",
            {"Authorization": ADMIN, "Content-Type": "application/vnd.eventstore.events+json",
             "ES-ExpectedVersion": "-1"},
            body,
        )
        self.assertEqual(status, 201)
        self.assertTrue(headers["Location"].endswith("/streams/gone/0"), headers)
        self.assertIn("Removed the hard-delete tombstone of gone", node.log())
        # and after a restart
        node.restart()
        status, _, body = http(node, "GET", "/streams/gone/0", accept)
        self.assertEqual(status, 200)

    def test_default_stays_deleted(self) -> None:
        node = self.scenario()
        accept = {"Authorization": ADMIN, "Accept": "application/json"}
        self.assertEqual(http(node, "GET", "/streams/gone", accept)[0], 410)
