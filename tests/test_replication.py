# -*- test-case-name: tests.test_replication -*-
"""
System tests of quorum replication with real node processes on loopback
(three and five nodes, gossip seeds, shortened gossip and election
timings).

Writes go over the client TCP protocol to the node that says it is the
leader; every write acknowledged there must then be on every surviving
node exactly once, in order, also after a killed node restarts.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from twisted.trial.unittest import TestCase

from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import decode_package, encode_package
from tests.harness import NodeProcess, free_port
from tests.test_cluster_membership import FAST, masters, running, start_all, wait_for_leader

_LEN = struct.Struct("<i")


class TcpClient:
    """
    A blocking client of the TCP protocol: one request at a time.
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _receive(self) -> Any:
        while True:
            if len(self.buffer) >= 4:
                (n,) = _LEN.unpack_from(self.buffer)
                if len(self.buffer) >= 4 + n:
                    package = decode_package(self.buffer[4 : 4 + n])
                    self.buffer = self.buffer[4 + n :]
                    if package.command == 0x01:  # heartbeat request
                        self.sock.sendall(self._frame(0x02, package.correlation_id, b""))
                        continue
                    return package
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buffer += data

    @staticmethod
    def _frame(command: int, corr: bytes, data: bytes) -> bytes:
        package = encode_package(command, corr, data, "admin", "changeit")
        return _LEN.pack(len(package)) + package

    def write(
        self, stream: str, expected: int, event_ids: Sequence[bytes], require_master: bool = True
    ) -> tuple[str, Any]:
        """
        @return: C{("ok", completed)}, C{("error", completed)} or
            C{("not_handled", not_handled)}.
        """
        message = pb.WriteEvents(
            event_stream_id=stream, expected_version=expected, require_master=require_master
        )
        for event_id in event_ids:
            e = message.events.add()
            e.event_id = uuid.UUID(bytes=event_id).bytes_le
            e.event_type = "test"
            e.data_content_type = 1
            e.metadata_content_type = 0
            e.data = b'{"n":1}'
        corr = os.urandom(16)
        self.sock.sendall(self._frame(0x82, corr, message.SerializeToString()))
        package = self._receive()
        if package.command == 0xF1:
            return "not_handled", pb.NotHandled.FromString(package.data)
        completed = pb.WriteEventsCompleted.FromString(package.data)
        return ("ok" if completed.result == pb.Success else "error"), completed

    def read_stream(self, stream: str, start: int = 0, count: int = 4096) -> list[bytes]:
        message = pb.ReadStreamEvents(
            event_stream_id=stream,
            from_event_number=start,
            max_count=count,
            resolve_link_tos=False,
            require_master=False,
        )
        self.sock.sendall(self._frame(0xB2, os.urandom(16), message.SerializeToString()))
        package = self._receive()
        if package.command != 0xB3:
            # NotHandled while the node starts: the caller retries
            raise ConnectionError(f"answered with command {package.command:#x}")
        completed = pb.ReadStreamEventsCompleted.FromString(package.data)
        return [uuid.UUID(bytes_le=e.event.event_id).bytes for e in completed.events]


def read_all_ids(node: NodeProcess, stream: str) -> list[bytes]:
    client = TcpClient(node.host, node.ext_tcp_port)
    try:
        ids: list[bytes] = []
        while True:
            batch = client.read_stream(stream, len(ids))
            ids += batch
            if len(batch) < 4096:
                return ids
    finally:
        client.close()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class ReplicationTestCase(TestCase):
    timeout = 240

    def make_nodes(
        self,
        count: int,
        mem_db: bool = False,
        cluster_size: int = 0,
        read_only: Sequence[int] = (),
    ) -> list[NodeProcess]:
        ports = [
            {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for _ in range(count)
        ]
        seeds = ",".join(f"127.0.0.1:{p['int_http']}" for p in ports)
        nodes = []
        base = self.mktemp()
        for i in range(count):
            args = [
                "--cluster-size",
                str(cluster_size or count),
                "--discover-via-dns",
                "false",
                "--gossip-seed",
                seeds,
            ] + FAST
            if i in read_only:
                args += ["--read-only-replica", "true"]
            nodes.append(
                NodeProcess(
                    os.path.join(base, f"node{i}"), ports=ports[i], extra_args=args, mem_db=mem_db
                )
            )
        for n in nodes:
            self.addCleanup(n.stop)
        return nodes

    def write_until(
        self,
        nodes: Sequence[NodeProcess],
        stream: str,
        count: int,
        acknowledged: list[bytes],
        budget: float = 60.0,
    ) -> None:
        """
        Write single events to whoever is leader until C{count} more were
        acknowledged, retrying a failed write with the same event id.
        """
        deadline = time.monotonic() + budget
        target = len(acknowledged) + count
        client: Optional[TcpClient] = None
        pending: Optional[bytes] = None
        try:
            while len(acknowledged) < target:
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {len(acknowledged)} writes acknowledged")
                if client is None:
                    leaders = masters(nodes)
                    if len(leaders) != 1:
                        time.sleep(0.1)
                        continue
                    try:
                        client = TcpClient(leaders[0].host, leaders[0].ext_tcp_port)
                    except OSError:
                        time.sleep(0.1)
                        continue
                if pending is None:
                    pending = uuid.uuid4().bytes
                try:
                    outcome, _ = client.write(stream, -2, [pending])
                except (OSError, ConnectionError):
                    client.close()
                    client = None
                    continue
                if outcome == "ok":
                    acknowledged.append(pending)
                    pending = None
                else:
                    client.close()
                    client = None
                    time.sleep(0.05)
        finally:
            if client is not None:
                client.close()

    def assert_has_exactly(
        self, node: NodeProcess, stream: str, acknowledged: list[bytes], timeout: float = 20.0
    ) -> None:
        """
        Every acknowledged id on C{node}, once each, in acknowledgement order
        (unacknowledged retries may add ids, never duplicates).
        """
        ids: list[bytes] = []

        def has_all() -> bool:
            nonlocal ids
            try:
                ids = read_all_ids(node, stream)
            except (OSError, ConnectionError):
                return False
            return set(acknowledged) <= set(ids)

        try:
            wait_until(has_all, timeout, f"the writes on node {node.ext_tcp_port}")
        except AssertionError:
            missing = [a.hex() for a in acknowledged if a not in set(ids)]
            raise AssertionError(
                f"{len(missing)} acknowledged writes missing: {missing[:5]}"
            ) from None
        self.assertEqual(len(ids), len(set(ids)), "an event is duplicated")
        order = [i for i in ids if i in set(acknowledged)]
        self.assertEqual(order, acknowledged)


class ThreeNodeTests(ReplicationTestCase):
    def test_leader_killed(self) -> None:
        """
        Writes to the leader; SIGKILL it; writes continue on the new leader;
        every acknowledged write is on both survivors and on the killed node
        once it is back.
        """
        nodes = self.make_nodes(3)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        acknowledged: list[bytes] = []
        self.write_until(nodes, "repl", 200, acknowledged)
        leader.kill()
        self.write_until(nodes, "repl", 200, acknowledged)
        for node in running(nodes):
            self.assert_has_exactly(node, "repl", acknowledged)
        leader.start()
        wait_for_leader(nodes)
        self.write_until(nodes, "repl", 20, acknowledged)
        for node in nodes:
            self.assert_has_exactly(node, "repl", acknowledged)

    def test_deposed_leader_truncates_unreplicated_tail(self) -> None:
        """
        The followers are killed while the leader takes writes it cannot
        replicate (never acknowledged, but in its log); the leader is
        killed, the followers restart and elect a new leader that takes
        more writes; the old leader restarts, truncates its unreplicated
        tail and ends with exactly the new leader's history.
        """
        nodes = self.make_nodes(3)
        start_all(nodes)
        old = wait_for_leader(nodes)
        followers = [n for n in nodes if n is not old]
        acknowledged: list[bytes] = []
        self.write_until(nodes, "tail", 20, acknowledged)
        for n in followers:
            n.kill()
        client = TcpClient(old.host, old.ext_tcp_port, timeout=10)
        lost = [uuid.uuid4().bytes for _ in range(3)]
        try:
            for event_id in lost:
                outcome, _ = client.write("tail", -2, [event_id])
                self.assertNotEqual(outcome, "ok")
        finally:
            client.close()
        old.kill()
        start_all(followers)
        new = wait_for_leader(followers, timeout=30)
        self.write_until(followers, "tail", 20, acknowledged)
        old.start()
        self.assert_has_exactly(old, "tail", acknowledged, timeout=30)
        self.assertEqual(read_all_ids(old, "tail"), read_all_ids(new, "tail"))
        for event_id in lost:
            self.assertNotIn(event_id, read_all_ids(old, "tail"))
        import re

        cuts = [
            int(m.group(1))
            for m in re.finditer(r"Truncating the log from \d+ to (\d+) \(", old.log())
        ]
        self.assertTrue([c for c in cuts if c > 0], f"no truncation of the tail: {cuts}")

    def test_follower_restarts_and_catches_up(self) -> None:
        nodes = self.make_nodes(3)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        acknowledged: list[bytes] = []
        self.write_until(nodes, "repl", 50, acknowledged)
        follower.kill()
        self.write_until(nodes, "repl", 300, acknowledged)
        follower.start()
        self.assert_has_exactly(follower, "repl", acknowledged)
        # its catch-up was reported (GET /progress, estwisted.core.progress)
        with urllib.request.urlopen(f"{follower.http_url}/progress", timeout=10) as r:
            tasks = json.loads(r.read())["tasks"]
        caught_up = [t for t in tasks if t["kind"] == "replication-catch-up"]
        self.assertTrue(caught_up, tasks)
        self.assertEqual((caught_up[0]["result"], caught_up[0]["percentage"]), ("done", 100.0))
        self.assertGreater(caught_up[0]["total"], 0)

    def test_follower_refuses_writes_with_leader_info(self) -> None:
        nodes = self.make_nodes(3, mem_db=True)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        client = TcpClient(follower.host, follower.ext_tcp_port)
        try:
            outcome, answer = client.write("s", -2, [uuid.uuid4().bytes])
        finally:
            client.close()
        self.assertEqual(outcome, "not_handled")
        self.assertEqual(answer.reason, pb.NotHandled.NotMaster)
        info = pb.NotHandled.MasterInfo.FromString(answer.additional_info)
        self.assertEqual(
            (info.external_tcp_address, info.external_tcp_port),
            (leader.host, leader.ext_tcp_port),
        )


class HttpForwardingTests(ReplicationTestCase):
    def test_http_write_through_a_follower(self) -> None:
        """
        An HTTP write sent to a follower is answered as the leader answered
        (201) and the event is on the leader; with C{ES-RequireMaster: True}
        the follower does not take it.
        """
        import base64
        import json
        import urllib.error
        import urllib.request

        nodes = self.make_nodes(3, mem_db=True)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        follower = next(n for n in nodes if n is not leader)
        event_id = str(uuid.uuid4())
        body = json.dumps([{"eventId": event_id, "eventType": "t", "data": {"a": 1}}])
        auth = "Basic " + base64.b64encode(b"admin:changeit").decode()
        request = urllib.request.Request(
            f"{follower.http_url}/streams/http-fwd",
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": "application/vnd.eventstore.events+json",
                "Authorization": auth,
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.assertEqual(response.status, 201)
        self.assertEqual(read_all_ids(leader, "http-fwd"), [uuid.UUID(event_id).bytes])
        self.assert_has_exactly(follower, "http-fwd", [uuid.UUID(event_id).bytes])
        request = urllib.request.Request(
            f"{follower.http_url}/streams/http-fwd",
            data=json.dumps(
                [{"eventId": str(uuid.uuid4()), "eventType": "t", "data": {"a": 2}}]
            ).encode(),
            method="POST",
            headers={
                "Content-Type": "application/vnd.eventstore.events+json",
                "Authorization": auth,
                "ES-RequireMaster": "True",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as e:
            status = e.code
        self.assertNotEqual(status, 201)
        self.assertEqual(len(read_all_ids(leader, "http-fwd")), 1)


class NodeClientFailoverTests(ReplicationTestCase):
    def test_gossip_seeded_client_survives_leader_kill(self) -> None:
        """
        node-eventstore-client 0.2.19 with the three gossip seeds writes
        10 lanes x 1,000 events while the leader is SIGKILLed; every write
        it saw acknowledged is on every surviving node exactly once and in
        lane order, and on the killed node after it rejoins.
        """
        import json
        import shutil
        import subprocess

        from tests.harness import REPO_ROOT

        node_binary = shutil.which("node")
        js_dir = os.path.join(REPO_ROOT, "tests", "js")
        if node_binary is None or not os.path.isdir(
            os.path.join(js_dir, "node_modules", "node-eventstore-client")
        ):
            from twisted.trial.unittest import SkipTest

            raise SkipTest("node or tests/js/node_modules missing")
        nodes = self.make_nodes(3, mem_db=True)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        out = os.path.abspath(self.mktemp())
        seeds = ",".join(str(n.ext_http_port) for n in nodes)
        script = subprocess.Popen(
            [
                node_binary,
                os.path.join(js_dir, "replication_failover.js"),
                seeds,
                "10",
                "1000",
                out,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: script.poll() is None and script.kill())
        # kill the leader half-way through the writes
        wait_until(
            lambda: os.path.exists(out + ".half") or script.poll() is not None,
            90,
            "half the writes",
        )
        self.assertIsNone(script.poll(), "the client stopped before half its writes")
        leader.kill()
        try:
            stdout, stderr = script.communicate(timeout=170)
        except subprocess.TimeoutExpired:
            script.kill()
            raise
        self.assertEqual(script.returncode, 0, (stdout[-2000:], stderr[-2000:]))
        result = json.loads(stdout.decode().strip().splitlines()[-1])
        self.assertEqual(result["total"], 10_000)
        with open(out) as f:
            lanes = [[uuid.UUID(i).bytes for i in lane] for lane in json.load(f)]
        for node in running(nodes):
            for i, acknowledged in enumerate(lanes):
                self.assert_has_exactly(node, f"lane-{i}", acknowledged)
        leader.start()
        for i, acknowledged in enumerate(lanes):
            self.assert_has_exactly(leader, f"lane-{i}", acknowledged, timeout=60)


class ReadOnlyReplicaTests(ReplicationTestCase):
    def test_read_only_replica_receives_everything(self) -> None:
        """
        Three voting nodes and a read-only replica: the replica receives
        every write, never leads, and the cluster keeps writing with one
        voting node down (the replica is never counted in the quorum).
        """
        nodes = self.make_nodes(4, mem_db=True, cluster_size=3, read_only=(3,))
        start_all(nodes)
        voting, replica = nodes[:3], nodes[3]
        leader = wait_for_leader(voting)
        acknowledged: list[bytes] = []
        self.write_until(voting, "ro", 50, acknowledged)
        self.assert_has_exactly(replica, "ro", acknowledged)
        follower = next(n for n in voting if n is not leader)
        follower.kill()
        self.write_until(voting, "ro", 50, acknowledged)
        self.assert_has_exactly(replica, "ro", acknowledged)
        self.assertNotIn(replica, masters(nodes))
        self.assertNotIn("-> Master", replica.log())


class FiveNodeTests(ReplicationTestCase):
    def test_two_down_writes_three_down_refuses(self) -> None:
        nodes = self.make_nodes(5, mem_db=True)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        acknowledged: list[bytes] = []
        self.write_until(nodes, "five", 20, acknowledged)
        followers = [n for n in nodes if n is not leader]
        followers[0].kill()
        followers[1].kill()
        self.write_until(nodes, "five", 20, acknowledged)
        followers[2].kill()
        # the leader still believes it leads for a moment: a write must not
        # be acknowledged
        client = TcpClient(leader.host, leader.ext_tcp_port, timeout=10)
        try:
            outcome, _ = client.write("five", -2, [uuid.uuid4().bytes])
        except (OSError, ConnectionError):
            outcome = "closed"
        finally:
            client.close()
        self.assertNotEqual(outcome, "ok")
        for node in running(nodes):
            self.assert_has_exactly(node, "five", acknowledged)


def http_call(
    method: str, url: str, body: Optional[bytes] = None, accept: Optional[str] = None
) -> tuple[int, bytes]:
    """
    One HTTP request as admin; C{(status, body)}, also for error statuses.
    """
    import base64
    import urllib.error
    import urllib.request

    headers = {"Authorization": "Basic " + base64.b64encode(b"admin:changeit").decode()}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if accept is not None:
        headers["Accept"] = accept
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class PersistentSubscriptionFailoverTests(ReplicationTestCase):
    def pull_and_ack(
        self, node: NodeProcess, stream: str, group: str, count: int
    ) -> list[tuple[int, bytes]]:
        """
        Pull up to C{count} messages from C{node} over HTTP and ack them all.

        @return: C{(event number, event id)} of each message, oldest first;
            empty when the node does not answer or has nothing.
        """
        import json

        try:
            status, body = http_call(
                "GET",
                f"{node.http_url}/subscriptions/{stream}/{group}/{count}?embed=body",
                accept="application/vnd.eventstore.competingatom+json",
            )
        except OSError:
            return []
        if status != 200:
            return []
        entries = json.loads(body)["entries"]
        pulled = sorted((e["eventNumber"], uuid.UUID(e["eventId"]).bytes) for e in entries)
        if pulled:
            ids = ",".join(str(uuid.UUID(bytes=i)) for _, i in pulled)
            status, _ = http_call(
                "POST", f"{node.http_url}/subscriptions/{stream}/{group}/ack?ids={ids}", b""
            )
            self.assertEqual(status, 202)
        return pulled

    def test_checkpoint_survives_leader_kill(self) -> None:
        """
        A persistent subscription group is created on the leader, half the
        stream is pulled and acked over HTTP and checkpointed (the
        checkpoint is an event in the replicated log); after the leader is
        SIGKILLed the new leader delivers exactly the other half, then the
        events written after the failover, each once.
        """
        import json

        stream, group = "psub", "workers"
        nodes = self.make_nodes(3)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        settings = {
            "startFrom": 0,
            "checkPointAfterMilliseconds": 200,
            "minCheckPointCount": 1,
            "messageTimeoutMilliseconds": 60000,
        }
        status, body = http_call(
            "PUT",
            f"{leader.http_url}/subscriptions/{stream}/{group}",
            json.dumps(settings).encode(),
        )
        self.assertEqual(status, 201, body)
        written: list[bytes] = []
        self.write_until(nodes, stream, 40, written)
        # the group lives on whoever leads now
        leader = wait_for_leader(nodes)
        half = len(written) // 2

        acked: list[tuple[int, bytes]] = []

        def pull_first_half() -> bool:
            acked.extend(self.pull_and_ack(leader, stream, group, half - len(acked)))
            return len(acked) >= half

        wait_until(pull_first_half, 20, "the first half of the events")
        self.assertEqual(acked, list(enumerate(written[:half])))

        checkpoint = f"$persistentsubscription-{stream}::{group}-checkpoint"
        last_checkpoint: list[Any] = []

        def checkpointed() -> bool:
            # read on a follower: the checkpoint must be replicated
            for node in nodes:
                if node is leader:
                    continue
                try:
                    status, body = http_call(
                        "GET",
                        f"{node.http_url}/streams/{checkpoint}/head/backward/1?embed=body",
                        accept="application/vnd.eventstore.atom+json",
                    )
                except OSError:
                    return False
                if status != 200:
                    return False
                entries = json.loads(body)["entries"]
                if not entries:
                    return False
                value = entries[0].get("data")
                if isinstance(value, str):
                    value = json.loads(value)
                last_checkpoint[:] = [value]
                if value != half - 1:
                    return False
            return True

        wait_until(checkpointed, 20, f"the checkpoint at {half - 1} (last {last_checkpoint})")

        leader.kill()
        survivors = running(nodes)
        new_leader = wait_for_leader(survivors, timeout=30)
        self.assertIsNot(new_leader, leader)
        self.write_until(survivors, stream, 10, written)
        # a retried write may have left an unacknowledged extra event: the
        # stream as the new leader has it is what must be delivered
        in_stream = read_all_ids(new_leader, stream)
        self.assertTrue(set(written) <= set(in_stream))
        self.assertEqual(in_stream[:half], written[:half])
        expected = list(enumerate(in_stream))[half:]

        delivered: list[tuple[int, bytes]] = []

        def pull_rest() -> bool:
            leaders = masters(survivors)
            if len(leaders) == 1:
                delivered.extend(self.pull_and_ack(leaders[0], stream, group, 100))
            return len(delivered) >= len(expected)

        try:
            wait_until(pull_rest, 40, "the rest of the events from the new leader")
        except AssertionError:
            raise AssertionError(
                f"{len(delivered)} of {len(expected)} delivered: {delivered[:3]}"
            ) from None
        # nothing more comes (no acked event again, no duplicate)
        time.sleep(1.0)
        for node in masters(survivors):
            delivered.extend(self.pull_and_ack(node, stream, group, 100))
        self.assertEqual(sorted(delivered), expected)
