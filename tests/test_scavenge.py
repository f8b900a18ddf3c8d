# -*- test-case-name: tests.test_scavenge -*-
"""
Scavenging on a real node process: bytes are reclaimed, survivors stay
readable at the same positions (before and after a restart), and a SIGKILL
in the middle of a scavenge loses and resurrects nothing.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

from twisted.trial.unittest import TestCase

from tests.harness import NodeProcess, start_node
from tests.test_node import http

CHUNK_SIZE = 64 * 1024
ARGS = ["--chunk-size", str(CHUNK_SIZE)]
JSON_EVENTS = {"Content-Type": "application/vnd.eventstore.events+json"}
ATOM = {"Accept": "application/vnd.eventstore.atom+json"}


def write_batch(node: NodeProcess, stream: str, first: int, count: int) -> None:
    body = json.dumps(
        [
            {"eventId": str(uuid.uuid4()), "eventType": "t", "data": {"n": n, "pad": "x" * 150}}
            for n in range(first, first + count)
        ]
    ).encode()
    status, _, text = http(node, "POST", f"/streams/{stream}", body, JSON_EVENTS)
    assert status == 201, (status, text)


def read_stream(
    node: NodeProcess, stream: str, start: int = 0
) -> tuple[int, list[tuple[int, Any]]]:
    """
    @return: the status and C{(event number, data)} of every event, read
        forwards page by page.
    """
    out: list[tuple[int, Any]] = []
    for _ in range(1000):
        status, _, body = http(
            node, "GET", f"/streams/{stream}/{start}/forward/100?embed=body", headers=ATOM
        )
        if status != 200:
            return status, out
        entries = json.loads(body)["entries"]
        if not entries:
            break
        for e in reversed(entries):
            data = json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
            out.append((e["eventNumber"], data["n"]))
        start = out[-1][0] + 1
    return 200, sorted(out)


def chunk_bytes(node: NodeProcess) -> int:
    data = os.path.join(node.directory, "data")
    return sum(
        os.path.getsize(os.path.join(data, n)) for n in os.listdir(data) if n.startswith("chunk-")
    )


def wait_completed(node: NodeProcess, scavenge_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = http(
            node,
            "GET",
            f"/streams/$scavenges-{scavenge_id}/0/forward/100?embed=body",
            headers=ATOM,
        )
        if status == 200:
            for e in json.loads(body)["entries"]:
                if e["eventType"] == "$scavengeCompleted":
                    data = e["data"]
                    return json.loads(data) if isinstance(data, str) else dict(data)
        time.sleep(0.2)
    raise AssertionError(f"scavenge {scavenge_id} did not complete\n{node.log()[-3000:]}")


def populate(node: NodeProcess) -> None:
    """
    About 30 chunks: C{kept} (1000 events), C{gone} (hard-deleted),
    C{soft} (soft-deleted), C{capped} (C{$maxCount} 10), interleaved.
    """
    for i in range(10):
        for stream in ("kept", "gone", "soft", "capped"):
            write_batch(node, stream, i * 100, 100)
    status, _, _ = http(node, "DELETE", "/streams/gone", headers={"ES-HardDelete": "true"})
    assert status == 204, status
    status, _, _ = http(node, "DELETE", "/streams/soft")
    assert status == 204, status
    meta = json.dumps(
        [{"eventId": str(uuid.uuid4()), "eventType": "$metadata", "data": {"$maxCount": 10}}]
    ).encode()
    status, _, _ = http(node, "POST", "/streams/capped/metadata", meta, JSON_EVENTS)
    assert status == 201, status
    # move on to a new chunk so that the deletes sit in completed chunks
    for i in range(4):
        write_batch(node, "tail", i * 100, 100)


class ScavengeNodeTests(TestCase):
    timeout = 300

    def check(self, node: NodeProcess) -> None:
        status, kept = read_stream(node, "kept")
        self.assertEqual(status, 200)
        self.assertEqual(kept, [(n, n) for n in range(1000)])
        status, capped = read_stream(node, "capped", 990)
        self.assertEqual(capped, [(n, n) for n in range(990, 1000)])
        self.assertEqual(read_stream(node, "gone")[0], 410)
        self.assertEqual(read_stream(node, "soft")[0], 404)
        self.assertEqual(read_stream(node, "tail")[1], [(n, n) for n in range(400)])

    def test_scavenge_reclaims(self) -> None:
        """
        C{POST /admin/scavenge} rewrites the completed chunks: space is
        given back, v5's history events are written, and every surviving
        event reads the same, also after a restart.
        """
        node = start_node(self, extra_args=ARGS)
        populate(node)
        status, _, all_before = http(node, "GET", "/streams/kept/0/forward/20", headers=ATOM)
        self.assertEqual(status, 200)
        before = chunk_bytes(node)
        began = time.monotonic()
        status, _, body = http(node, "POST", "/admin/scavenge")
        self.assertEqual(status, 200)
        scavenge_id = json.loads(body)["scavengeId"]
        result = wait_completed(node, scavenge_id)
        took = time.monotonic() - began
        after = chunk_bytes(node)
        self.assertEqual(result["result"], "Success")
        self.assertGreater(result["spaceSaved"], 0)
        self.assertLess(after, before)
        print(
            f"\nscavenge: chunk files {before} -> {after} bytes "
            f"(saved {result['spaceSaved']}) in {took:.2f} s"
        )
        self.check(node)
        status, _, all_after = http(node, "GET", "/streams/kept/0/forward/20", headers=ATOM)
        # the same entries (ids, positions) as before the scavenge
        entries = [e["id"] for e in json.loads(all_before)["entries"]]
        self.assertEqual([e["id"] for e in json.loads(all_after)["entries"]], entries)
        node.terminate()
        node.start()
        self.check(node)
        # a second scavenge finds little or nothing left
        status, _, body = http(node, "POST", "/admin/scavenge")
        self.assertEqual(wait_completed(node, json.loads(body)["scavengeId"])["result"], "Success")
        self.check(node)

    def test_kill_during_scavenge(self) -> None:
        """
        SIGKILL at random moments of a scavenge, then a restart: the node
        starts, nothing is lost or resurrected; a final scavenge completes.
        """
        node = start_node(self, extra_args=ARGS)
        populate(node)
        rng = random.Random(15)
        for _ in range(4):
            status, _, body = http(node, "POST", "/admin/scavenge")
            self.assertEqual(status, 200, body)
            time.sleep(rng.uniform(0.0, 0.4))
            node.kill()
            node.wait(20)
            node.start()
            self.check(node)
            names = os.listdir(os.path.join(node.directory, "data"))
            self.assertFalse([n for n in names if n.endswith(".tmp")])
        status, _, body = http(node, "POST", "/admin/scavenge")
        self.assertEqual(wait_completed(node, json.loads(body)["scavengeId"])["result"], "Success")
        self.check(node)
