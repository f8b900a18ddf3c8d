# -*- test-case-name: tests.test_grpc_cluster -*-
"""
System tests of the gRPC API on a real three-node cluster (C{Insecure}, on
127.0.0.1): a write to a follower answers C{not-leader} with the leader's
HTTP endpoint, C{kurrentdbclient} follows it, and a discovering client
rides through a SIGKILL of the leader.  Every wait is bounded and
every process is stopped.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import NodeProcess, free_port
from tests.test_cluster_membership import (
    FAST,
    agreed_leader,
    gossip,
    own_record,
    running,
    start_all,
    wait_for_leader,
)

try:
    import grpc
    from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
except ImportError:  # pragma: no cover
    KurrentDBClient = None


class GrpcClusterTests(SynchronousTestCase):
    """
    kurrentdbclient against three real nodes.
    """

    def setUp(self) -> None:
        if KurrentDBClient is None:
            raise SkipTest("kurrentdbclient is not installed (pip install -e '.[test]')")
        ports = [
            {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for _ in range(3)
        ]
        seeds = ",".join(f"127.0.0.1:{p['int_http']}" for p in ports)
        base = self.mktemp()
        self.nodes = [
            NodeProcess(
                os.path.join(base, f"node{i}"),
                ports=ports[i],
                mem_db=True,
                extra_args=["--cluster-size", "3", "--discover-via-dns", "false",
                            "--gossip-seed", seeds, "--insecure"] + FAST,
            )
            for i in range(3)
        ]
        for n in self.nodes:
            self.addCleanup(n.stop)
        start_all(self.nodes)
        self.leader = wait_for_leader(self.nodes, timeout=30)

    def test_followerWriteIsNotLeader(self) -> None:
        """
        An append on a follower ends with C{NOT_FOUND} and the
        C{not-leader} trailers naming the leader's HTTP endpoint; a client
        connected to the follower is sent on to the leader and its append
        lands there.
        """
        follower = next(n for n in self.nodes if n is not self.leader)
        from kurrentdbclient.protos.v1 import streams_pb2

        options = streams_pb2.AppendReq()
        options.options.stream_identifier.stream_name = b"nl"
        options.options.any.SetInParent()
        channel = grpc.insecure_channel(f"127.0.0.1:{follower.ext_http_port}")
        self.addCleanup(channel.close)
        append = channel.stream_unary(
            "/event_store.client.streams.Streams/Append",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        with self.assertRaises(grpc.RpcError) as caught:
            append(iter([options]), timeout=10)
        error: Any = caught.exception
        self.assertEqual(error.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(error.details(), "Leader info available")
        trailers = dict(error.trailing_metadata())
        self.assertEqual(trailers["exception"], "not-leader")
        self.assertEqual(
            (trailers["leader-endpoint-host"], int(trailers["leader-endpoint-port"])),
            ("127.0.0.1", self.leader.ext_http_port),
        )
        # Connected to that follower alone, the client reports the leader
        # it was told about (it reconnects only when it discovers).
        from kurrentdbclient.exceptions import NodeIsNotLeaderError

        client = KurrentDBClient(f"kurrentdb://127.0.0.1:{follower.ext_http_port}?Tls=false")
        self.addCleanup(client.close)
        stream = "nl-" + uuid.uuid4().hex
        with self.assertRaises(NodeIsNotLeaderError) as refused:
            client.append_to_stream(stream, events=[NewEvent(type="Routed", data=b"{}")],
                                    current_version=StreamState.NO_STREAM)
        self.assertEqual((refused.exception.host, refused.exception.port),
                         ("127.0.0.1", self.leader.ext_http_port))
        # Given every node, it discovers the leader and follows a refusal.
        targets = ",".join(f"127.0.0.1:{n.ext_http_port}" for n in [follower] + self.nodes)
        routed = KurrentDBClient(f"kurrentdb://{targets}?Tls=false")
        self.addCleanup(routed.close)
        routed.append_to_stream(stream, events=[NewEvent(type="Routed", data=b"{}")],
                                current_version=StreamState.NO_STREAM)
        leader_client = KurrentDBClient(
            f"kurrentdb://127.0.0.1:{self.leader.ext_http_port}?Tls=false"
        )
        self.addCleanup(leader_client.close)
        self.assertEqual([e.type for e in leader_client.get_stream(stream)], ["Routed"])

    def _operations(self, node: NodeProcess, method: str, request: bytes) -> None:
        """
        Call C{Operations.<method>} with a serialized request (the client
        has no operations protos; ours would clash with its descriptors).
        """
        channel = grpc.insecure_channel(f"127.0.0.1:{node.ext_http_port}")
        self.addCleanup(channel.close)
        call = channel.unary_unary(
            f"/event_store.client.operations.Operations/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        self.assertEqual(call(request, timeout=10), b"")

    def test_resignNodeAndSetNodePriority(self) -> None:
        """
        C{Operations.SetNodePriority} on a follower shows in every node's
        C{/gossip} as that node's C{nodePriority}; C{Operations.ResignNode}
        on the leader gives a different agreed leader within a few seconds.
        """
        follower = next(n for n in self.nodes if n is not self.leader)
        # SetNodePriorityReq {priority: 3}: field 1, varint 3
        self._operations(follower, "SetNodePriority", b"\x08\x03")

        def priority_everywhere() -> bool:
            for n in self.nodes:
                doc = gossip(n)
                record = own_record(follower, doc) if doc is not None else None
                if record is None or record.get("nodePriority") != 3:
                    return False
            return True

        deadline = time.monotonic() + 10
        while not priority_everywhere():
            self.assertLess(time.monotonic(), deadline, "the priority never showed in /gossip")
            time.sleep(0.1)
        first = self.leader
        self._operations(first, "ResignNode", b"")
        deadline = time.monotonic() + 10
        while True:
            leader = agreed_leader(self.nodes)
            if leader is not None and leader is not first:
                break
            self.assertLess(time.monotonic(), deadline, "no other leader after ResignNode")
            time.sleep(0.1)
        self.assertEqual(len(running(self.nodes)), 3)

    def test_discoverRidesThroughLeaderKill(self) -> None:
        """
        A discovering client (several seeds) finds the leader through
        C{Gossip.Read}, appends, and after the leader is SIGKILLed appends
        again to the new leader; every acknowledged event is there once.
        """
        targets = ",".join(f"127.0.0.1:{n.ext_http_port}" for n in self.nodes)
        # Several seeds: the client discovers through Gossip.Read, as with
        # a kurrentdb+discover DNS name.
        client = KurrentDBClient(
            f"kurrentdb://{targets}?Tls=false&MaxDiscoverAttempts=50"
            "&DiscoveryInterval=200&GossipTimeout=2"
        )
        self.addCleanup(client.close)
        # The table the client reads may still show a node catching up.
        wanted = ["NODE_STATE_FOLLOWER", "NODE_STATE_FOLLOWER", "NODE_STATE_LEADER"]
        states: list[str] = []
        until = time.monotonic() + 20
        while time.monotonic() < until:
            states = sorted(m.state for m in client.read_gossip())
            if states == wanted:
                break
            time.sleep(0.2)
        self.assertEqual(states, wanted)
        stream = "kill-" + uuid.uuid4().hex
        first = NewEvent(type="Before", data=b"{}")
        client.append_to_stream(stream, events=[first], current_version=StreamState.NO_STREAM)
        old = self.leader
        old.kill()
        deadline = time.monotonic() + 30
        while agreed_leader(running(self.nodes)) in (None, old):
            if time.monotonic() > deadline:
                raise AssertionError("no new leader after the kill")
            time.sleep(0.1)
        second = NewEvent(type="After", data=b"{}")
        acknowledged = False
        last: Exception = AssertionError("no attempt")
        while time.monotonic() < deadline + 30 and not acknowledged:
            try:
                client.append_to_stream(stream, events=[second], current_version=StreamState.ANY)
                acknowledged = True
            except Exception as e:  # the client surfaces the failover once
                last = e
                time.sleep(0.2)
        if not acknowledged:
            raise AssertionError(f"no append after the failover: {last!r}")
        events = client.get_stream(stream)
        self.assertEqual([e.type for e in events], ["Before", "After"])

    def test_jsClientRidesThroughLeaderKill(self) -> None:
        """
        @eventstore/db-client discovers the leader through C{Gossip.Read}
        on the three seeds, appends, and after a leader SIGKILL appends to
        the new leader; the stream holds both events once.
        """
        import json
        import shutil
        import subprocess

        from tests.harness import REPO_ROOT

        js_dir = os.path.join(REPO_ROOT, "tests", "js")
        node_binary = shutil.which("node")
        if node_binary is None or not os.path.isdir(
            os.path.join(js_dir, "node_modules", "@eventstore", "db-client")
        ):
            raise SkipTest("node or tests/js/node_modules missing (npm ci --prefix tests/js)")
        hosts = ",".join(f"127.0.0.1:{n.ext_http_port}" for n in self.nodes)
        stream = "jsfail-" + uuid.uuid4().hex
        script = subprocess.Popen(
            [node_binary, os.path.join(js_dir, "grpc_failover.js"), hosts, stream],
            cwd=js_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: script.poll() is None and script.kill())
        assert script.stdout is not None and script.stdin is not None
        first = json.loads(script.stdout.readline() or b"{}")
        self.assertEqual(first, {"ready": True})
        old = self.leader
        old.kill()
        script.stdin.write(b"go\n")
        script.stdin.flush()
        out, err = script.communicate(timeout=90)
        lines = [x for x in out.decode("utf-8", "replace").splitlines() if x]
        result = json.loads(lines[-1]) if lines else {"ok": False, "error": err.decode()[-2000:]}
        self.assertTrue(result.get("ok"), result)
        self.assertEqual(result["types"], ["Before", "After"])
