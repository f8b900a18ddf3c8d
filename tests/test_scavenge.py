# -*- test-case-name: tests.test_scavenge -*-
"""
Scavenging on a real node process: bytes are reclaimed, survivors stay
readable at the same positions (before and after a restart), and a SIGKILL
in the middle of a scavenge loses and resurrects nothing.  In a real
three-node cluster, a follower that was down while the leader scavenged,
and a brand-new empty node, catch up over the scavenged chunks (received
whole) and end with the leader's C{$all}.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

from twisted.trial.unittest import TestCase

from estwisted.wire import messages_pb2 as pb
from tests.harness import NodeProcess, free_port, start_node
from tests.test_cluster_membership import FAST, start_all, wait_for_leader
from tests.test_node import http
from tests.test_replication import TcpClient, wait_until

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


def first_difference(got: list[Any], expected: list[Any]) -> Any:
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return i, a, b
    return min(len(got), len(expected)), None, None


def finished(log: str, scavenge_id: str) -> bool:
    """
    Whether the node's log says the scavenge ended.
    """
    return any(f"Scavenge {scavenge_id} {r}:" in log for r in ("Success", "Stopped", "Failed"))


def check_survivors(testcase: TestCase, node: NodeProcess, tail: int = 400) -> None:
    """
    The streams of L{populate} read as they must after any scavenge.
    """
    status, kept = read_stream(node, "kept")
    testcase.assertEqual(status, 200)
    testcase.assertEqual(kept, [(n, n) for n in range(1000)])
    status, capped = read_stream(node, "capped", 990)
    testcase.assertEqual(capped, [(n, n) for n in range(990, 1000)])
    testcase.assertEqual(read_stream(node, "gone")[0], 410)
    testcase.assertEqual(read_stream(node, "soft")[0], 404)
    testcase.assertEqual(read_stream(node, "tail")[1], [(n, n) for n in range(tail)])


class ScavengeNodeTests(TestCase):
    timeout = 300

    def check(self, node: NodeProcess) -> None:
        check_survivors(self, node, tail=700 if read_stream(node, "bulk")[1] else 400)

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

    def test_kill_during_merge(self) -> None:
        """
        The chunks are scavenged with merging disabled; then, merging on,
        scavenges (almost only merges now) are killed with SIGKILL at
        random moments: every restart reads the same and leaves no
        temporary file; a final scavenge merges the chunks into fewer
        files.
        """
        node = start_node(
            self,
            extra_args=ARGS
            + ["--disable-scavenge-merging", "true", "--scavenge-history-max-age", "3"],
        )
        populate(node)
        # more chunks with few survivors, so that there is much to merge
        for i in range(10):
            write_batch(node, "bulk", i * 50, 50)
            write_batch(node, "bulkgone", i * 150, 150)
        status, _, _ = http(node, "DELETE", "/streams/bulkgone", headers={"ES-HardDelete": "true"})
        self.assertEqual(status, 204)
        write_batch(node, "tail", 400, 300)
        status, _, body = http(node, "POST", "/admin/scavenge")
        first_id = json.loads(body)["scavengeId"]
        self.assertEqual(wait_completed(node, first_id)["result"], "Success")
        # ScavengeHistoryMaxAge (days) is the history stream's $maxAge
        status, _, meta = http(
            node,
            "GET",
            f"/streams/$scavenges-{first_id}/metadata",
            headers={"Accept": "application/json"},
        )
        self.assertEqual(status, 200, meta)
        self.assertEqual(json.loads(meta).get("$maxAge"), 3 * 86400, meta)
        data = os.path.join(node.directory, "data")
        unmerged = len([n for n in os.listdir(data) if n.startswith("chunk-")])
        node.terminate()
        node.extra_args = list(ARGS)
        node.start()
        self.check(node)
        rng = random.Random(16)
        killed_merging = 0
        for _ in range(4):
            status, _, body = http(node, "POST", "/admin/scavenge")
            self.assertEqual(status, 200, body)
            scavenge_id = json.loads(body)["scavengeId"]
            # kill after a random number of merges of this scavenge
            wanted = rng.randint(0, 2)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = node.log()
                if text.count(f"Scavenge {scavenge_id}: merged chunks") >= wanted or finished(
                    text, scavenge_id
                ):
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.02))
            node.kill()
            node.wait(20)
            if not finished(node.log(), scavenge_id):
                killed_merging += 1
            node.start()
            self.check(node)
            self.check_extra(node)
            self.assertFalse([n for n in os.listdir(data) if n.endswith(".tmp")])
        self.assertGreater(killed_merging, 0, "no kill hit a running scavenge")
        status, _, body = http(node, "POST", "/admin/scavenge")
        self.assertEqual(wait_completed(node, json.loads(body)["scavengeId"])["result"], "Success")
        self.check(node)
        merged = len([n for n in os.listdir(data) if n.startswith("chunk-")])
        self.assertLess(merged, unmerged)
        self.assertIn("merged chunks", node.log())
        node.terminate()
        node.start()
        self.check(node)
        self.check_extra(node)

    def check_extra(self, node: NodeProcess) -> None:
        self.assertEqual(read_stream(node, "bulk")[1], [(n, n) for n in range(500)])
        self.assertEqual(read_stream(node, "bulkgone")[0], 410)


def read_all(node: NodeProcess) -> list[tuple[int, str, int]]:
    """
    C{$all} forwards over the client TCP protocol: C{(commit position,
    stream, event number)} of every event.
    """
    client = TcpClient(node.host, node.ext_tcp_port, timeout=10)
    out: list[tuple[int, str, int]] = []
    try:
        commit = prepare = 0
        for _ in range(10_000):
            message = pb.ReadAllEvents(
                commit_position=commit,
                prepare_position=prepare,
                max_count=1000,
                resolve_link_tos=False,
                require_master=False,
            )
            client.sock.sendall(client._frame(0xB6, os.urandom(16), message.SerializeToString()))
            package = client._receive()
            if package.command != 0xB7:
                raise ConnectionError(f"answered with command {package.command:#x}")
            completed = pb.ReadAllEventsCompleted.FromString(package.data)
            for e in completed.events:
                out.append((e.commit_position, e.event.event_stream_id, e.event.event_number))
            if not completed.events:
                return out
            commit = completed.next_commit_position
            prepare = completed.next_prepare_position
        raise AssertionError("$all did not end")
    finally:
        client.close()


class ScavengeClusterTests(TestCase):
    """
    Replication from a scavenged region, with real node processes.
    """

    timeout = 400

    def make_nodes(self, count: int) -> list[NodeProcess]:
        ports = [
            {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for _ in range(count)
        ]
        seeds = ",".join(f"127.0.0.1:{p['int_http']}" for p in ports)
        base = self.mktemp()
        nodes = []
        for i in range(count):
            args = ARGS + [
                "--cluster-size",
                str(count),
                "--discover-via-dns",
                "false",
                "--gossip-seed",
                seeds,
            ]
            nodes.append(
                NodeProcess(os.path.join(base, f"node{i}"), ports=ports[i], extra_args=args + FAST)
            )
        for n in nodes:
            self.addCleanup(n.stop)
        return nodes

    def assert_caught_up(self, node: NodeProcess, leader: NodeProcess) -> None:
        """
        C{node} ends with the leader's C{$all} (same events at the same
        positions) and reads every stream as the leader does.
        """
        expected = read_all(leader)
        got: list[tuple[int, str, int]] = []

        def same() -> bool:
            nonlocal got
            try:
                got = read_all(node)
            except (OSError, ConnectionError):
                return False
            return got == expected

        try:
            wait_until(same, 90, f"node {node.ext_tcp_port} to catch up")
        except AssertionError:
            raise AssertionError(
                f"{len(got)} events in $all, the leader has {len(expected)}; first difference "
                f"{first_difference(got, expected)}"
                f"\n{node.log()[-4000:]}"
            ) from None
        check_survivors(self, node)

    def scavenged_chunk_files(self, node: NodeProcess) -> list[str]:
        data = os.path.join(node.directory, "data")
        return sorted(
            n for n in os.listdir(data) if n.startswith("chunk-") and not n.endswith(".000000")
        )

    def test_followers_catch_up_over_scavenged_chunks(self) -> None:
        """
        A follower down while the leader takes writes, deletes and a
        scavenge catches up when it restarts, over the scavenged chunks;
        its data directory wiped, it joins as a new empty node and catches
        up again; after a restart it still reads the same.
        """
        nodes = self.make_nodes(3)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        write_batch(leader, "early", 0, 10)
        wait_until(
            lambda: read_stream(follower, "early")[1] == [(n, n) for n in range(10)],
            30,
            "the first writes on the follower",
        )
        follower.terminate()
        populate(leader)
        status, _, body = http(leader, "POST", "/admin/scavenge")
        self.assertEqual(status, 200, body)
        result = wait_completed(leader, json.loads(body)["scavengeId"])
        self.assertEqual(result["result"], "Success")
        self.assertGreater(result["spaceSaved"], 0)
        self.assertTrue(self.scavenged_chunk_files(leader))
        self.assertEqual(wait_for_leader(nodes), leader)

        follower.start()
        self.assert_caught_up(follower, leader)
        self.assertIn("Installed scavenged chunk 0 from the leader", follower.log())
        # the follower holds scavenged chunks too, not the records the
        # leader removed: less than the follower that stayed up (which
        # received everything before the scavenge)
        other = next(n for n in nodes if n is not leader and n is not follower)
        self.assertLess(chunk_bytes(follower), chunk_bytes(other))
        follower.terminate()
        follower.start()
        self.assert_caught_up(follower, leader)

        # a brand-new empty node in its place
        follower.terminate()
        import shutil

        shutil.rmtree(os.path.join(follower.directory, "data"))
        follower.start()
        write_batch(leader, "late", 0, 5)
        self.assert_caught_up(follower, leader)
        self.assertEqual(read_stream(follower, "late")[1], [(n, n) for n in range(5)])
        self.assertEqual(follower.log().count("Installed scavenged chunk 0 from the leader"), 2)
