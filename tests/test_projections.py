# -*- test-case-name: tests.test_projections -*-
"""
System tests of the standard projections (issue 16) on a real node:
C{$ce-}/C{$et-}/C{$streams} streams read with links resolved over HTTP
and over TCP (node-eventstore-client), catch-up of events written before
the projections ran, and no link twice across a restart.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import NodeProcess, start_node
from tests.test_node import http, write_event
from tests.test_tcp_clients import ClientScriptMixin

PROJECTIONS = ["--run-projections", "System", "--start-standard-projections", "true"]
ALL = ["--run-projections", "All"]

#: A user projection that emits one event per C{counted} event of a
#: C{cart-} stream and counts them.
EMITTER = """fromCategory('cart').when({
  $init: function () { return {n: 0}; },
  counted: function (s, e) {
    s.n += 1;
    emit('cart-audit', 'Seen', {at: e.streamId + '/' + e.body.n});
  }
})"""


def read_stream(node: NodeProcess, stream: str, resolve: bool = True) -> tuple[int, list[Any]]:
    """
    All entries of C{stream} over HTTP (atom JSON, bodies embedded), oldest
    first; C{(status, entries)}.
    """
    status, _, body = http(
        node,
        "GET",
        f"/streams/{stream}/0/forward/4000?embed=body",
        headers={
            "Accept": "application/vnd.eventstore.atom+json",
            "ES-ResolveLinkTos": "true" if resolve else "false",
        },
    )
    if status != 200:
        return status, []
    return status, list(json.loads(body)["entries"])


def wait_for_count(node: NodeProcess, stream: str, count: int, timeout: float = 20) -> list[Any]:
    entries: list[Any] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _, entries = read_stream(node, stream)
        if len(entries) >= count:
            return entries
        time.sleep(0.1)
    raise AssertionError(
        f"{stream} has {len(entries)} entries, wanted {count}\n{node.log()[-3000:]}"
    )


class StandardProjectionsTests(ClientScriptMixin, SynchronousTestCase):
    def test_catch_up_and_links_resolved_over_http(self) -> None:
        directory = self.mktemp()
        node = start_node(self, directory)
        # written before the projections run: they catch up from the start
        for n in range(2):
            write_event(node, "order-1", n)
        node.terminate()
        node.extra_args = PROJECTIONS
        node.start()
        write_event(node, "order-2", 2)
        write_event(node, "order-2", 3)
        entries = wait_for_count(node, "$ce-order", 4)
        self.assertEqual(len(entries), 4)
        self.assertEqual(
            sorted((e["streamId"], e["eventNumber"]) for e in entries),
            [("order-1", 0), ("order-1", 1), ("order-2", 0), ("order-2", 1)],
        )
        self.assertEqual(len(wait_for_count(node, "$et-counted", 4)), 4)
        self.assertEqual(
            sorted(e["streamId"] for e in wait_for_count(node, "$streams", 2))[:2],
            ["order-1", "order-2"],
        )
        _, unresolved = read_stream(node, "$ce-order", resolve=False)
        self.assertEqual({e["eventType"] for e in unresolved}, {"$>"})

    def test_ce_stream_resolved_over_tcp(self) -> None:
        """
        node-eventstore-client reads C{$ce-order} with resolveLinkTos.
        """
        node = start_node(self, extra_args=PROJECTIONS)
        for n in range(6):
            write_event(node, f"order-{n % 2}", n)
        self.run_js(node, "projections_read.js", "order", "6")

    def test_projections_manager(self) -> None:
        """
        node-eventstore-client's ProjectionsManager lists, inspects,
        disables and enables the standard projections over HTTP.
        """
        node = start_node(self, extra_args=PROJECTIONS)
        self.run_js(node, "projections_manager.js", str(node.ext_http_port))

    def test_geteventstore_promise(self) -> None:
        """
        geteventstore-promise's projection calls: list, info with config,
        config, state, result, stop/start, disableAll/enableAll, reset; then
        no link was emitted twice.
        """
        node = start_node(self, extra_args=PROJECTIONS)
        for n in range(4):
            write_event(node, f"order-{n % 2}", n)
        wait_for_count(node, "$ce-order", 4)
        self.run_js(node, "projections_http_client.js", str(node.ext_http_port))
        write_event(node, "order-9", 4)
        wait_for_count(node, "$ce-order", 5)
        time.sleep(1.0)
        self.assertEqual(len(read_stream(node, "$ce-order")[1]), 5)

    def test_restart_emits_no_link_twice(self) -> None:
        node = start_node(self, extra_args=PROJECTIONS)
        for n in range(10):
            write_event(node, f"cart-{n % 3}", n)
        wait_for_count(node, "$ce-cart", 10)
        node.terminate()
        node.start()
        write_event(node, "cart-9", 10)
        entries = wait_for_count(node, "$ce-cart", 11)
        time.sleep(1.0)
        _, entries = read_stream(node, "$ce-cart")
        self.assertEqual(len(entries), 11)
        status, checkpoints = read_stream(node, "$projections-$by_category-checkpoint", False)
        self.assertEqual(status, 200)
        self.assertTrue(checkpoints)
        streams = [e["streamId"] for e in read_stream(node, "$streams")[1]]
        self.assertEqual(sorted(s for s in streams if s.startswith("cart-")),
                         ["cart-0", "cart-1", "cart-2", "cart-9"])

    def test_off_by_default(self) -> None:
        node = start_node(self)
        write_event(node, "order-1", 0)
        time.sleep(1.0)
        status, _ = read_stream(node, "$ce-order")
        self.assertEqual(status, 404)


class ClusterProjectionsTests(SynchronousTestCase):
    """
    Three nodes with the standard projections: only the leader emits; after
    a leader kill the new leader resumes from the replicated checkpoint and
    emits no link twice.
    """

    def test_leader_kill_no_duplicate_links(self) -> None:
        from tests.harness import free_port
        from tests.test_cluster_membership import FAST, start_all, wait_for_leader

        ports = [
            {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for _ in range(3)
        ]
        seeds = ",".join(f"127.0.0.1:{p['int_http']}" for p in ports)
        base = self.mktemp()
        nodes = []
        for i in range(3):
            args = ["--cluster-size", "3", "--discover-via-dns", "false",
                    "--gossip-seed", seeds] + FAST + PROJECTIONS
            node = NodeProcess(f"{base}/node{i}", ports=ports[i], extra_args=args)
            self.addCleanup(node.stop)
            nodes.append(node)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        for n in range(10):
            write_event(leader, f"cart-{n % 3}", n)
        wait_for_count(leader, "$ce-cart", 10)
        leader.kill()
        second = wait_for_leader(nodes)
        self.assertIsNot(second, leader)
        for n in range(10, 15):
            write_event(second, f"cart-{n % 3}", n)
        wait_for_count(second, "$ce-cart", 15, timeout=30)
        time.sleep(1.5)
        _, entries = read_stream(second, "$ce-cart")
        targets = [(e["streamId"], e["eventNumber"]) for e in entries]
        self.assertEqual(len(targets), 15)
        self.assertEqual(len(set(targets)), 15)


def create_projection(node: NodeProcess, name: str, query: str, mode: str = "continuous",
                      params: str = "&emit=yes") -> None:
    status, headers, body = http(
        node, "POST", f"/projections/{mode}?name={name}&type=js&enabled=yes{params}",
        query.encode(), {"Content-Type": "application/javascript"})
    assert status == 201, (status, body)


def projection_state(node: NodeProcess, name: str, partition: str = "") -> Any:
    path = f"/projection/{name}/state" + (f"?partition={partition}" if partition else "")
    status, _, body = http(node, "GET", path)
    assert status == 200, (status, body)
    return json.loads(body) if body else None


def wait_for_state(node: NodeProcess, name: str, key: str, value: Any,
                   timeout: float = 30) -> Any:
    state: Any = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = projection_state(node, name)
        except (AssertionError, OSError):
            state = None
        if isinstance(state, dict) and state.get(key) == value:
            return state
        time.sleep(0.1)
    raise AssertionError(f"state of {name} is {state!r}\n{node.log()[-3000:]}")


def audit_keys(node: NodeProcess) -> list[str]:
    _, entries = read_stream(node, "cart-audit", resolve=False)
    return [json.loads(e["data"])["at"] for e in entries]


class UserProjectionsTests(ClientScriptMixin, SynchronousTestCase):
    """
    User (JavaScript) projections on real nodes, driven by real v5 clients.
    """

    def test_geteventstore_promise(self) -> None:
        """
        geteventstore-promise: create (assert), getInfo with config, state
        and result per partition, config, stop/start, update query
        (assert again), reset, remove.
        """
        node = start_node(self, extra_args=ALL)
        self.run_js(node, "projections_user_promise.js", str(node.ext_http_port))

    def test_projections_manager(self) -> None:
        """
        node-eventstore-client's ProjectionsManager: createContinuous,
        getState, getResult, getQuery, updateQuery; emits read over TCP.
        """
        node = start_node(self, extra_args=ALL)
        self.run_js(node, "projections_user_manager.js", str(node.ext_http_port))

    def test_http_errors(self) -> None:
        node = start_node(self, extra_args=ALL)
        create_projection(node, "one", EMITTER)
        status, _, _ = http(node, "POST", "/projections/continuous?name=one&type=js",
                            EMITTER.encode())
        self.assertEqual(status, 409)
        status, _, _ = http(node, "POST", "/projections/continuous?name=two&emit=maybe",
                            EMITTER.encode())
        self.assertEqual(status, 400)
        status, _, _ = http(node, "POST", "/projections/continuous?name=two", b"")
        self.assertEqual(status, 400)
        status, _, _ = http(node, "DELETE", "/projection/one")
        self.assertEqual(status, 400)
        status, _, _ = http(node, "GET", "/projection/nope/state")
        self.assertEqual(status, 404)
        status, _, body = http(node, "GET", "/projection/one/query")
        self.assertEqual((status, body.decode()), (200, EMITTER))
        status, _, _ = http(node, "POST", "/projections/continuous?name=three",
                            EMITTER.encode(), {"Authorization": ""})
        self.assertEqual(status, 401)
        # registration and definition as v5 writes them
        _, registered = read_stream(node, "$projections-$all", resolve=False)
        self.assertIn("$ProjectionCreated", [e["eventType"] for e in registered])
        _, definitions = read_stream(node, "$projections-one", resolve=False)
        self.assertEqual(definitions[-1]["eventType"], "$ProjectionUpdated")
        self.assertEqual(json.loads(definitions[-1]["data"])["query"], EMITTER)

    def test_faulted_projection_reports_and_node_serves(self) -> None:
        node = start_node(self, extra_args=ALL)
        write_event(node, "loop-1", 0)
        create_projection(node, "spin", "fromAll().when({$any: function () { for (;;) {} }})",
                          params="")
        end = time.monotonic() + 30
        stats: Any = {}
        while time.monotonic() < end:
            _, _, body = http(node, "GET", "/projection/spin")
            stats = json.loads(body)
            if stats["status"] == "Faulted":
                break
            time.sleep(0.2)
        self.assertEqual(stats["status"], "Faulted", stats)
        self.assertIn("ran for more than", stats["stateReason"])
        self.assertIn("0@loop-1", stats["stateReason"])
        # the node goes on serving
        write_event(node, "loop-1", 1)

    def test_continuous_survives_restart_without_emitting_twice(self) -> None:
        node = start_node(self, extra_args=ALL)
        for n in range(10):
            write_event(node, f"cart-{n % 3}", n)
        create_projection(node, "audit", EMITTER)
        wait_for_state(node, "audit", "n", 10)
        node.terminate()
        node.start()
        for n in range(10, 13):
            write_event(node, f"cart-{n % 3}", n)
        wait_for_state(node, "audit", "n", 13)
        time.sleep(1.0)
        keys = audit_keys(node)
        self.assertEqual(len(keys), 13)
        self.assertEqual(len(set(keys)), 13)


class ClusterUserProjectionsTests(SynchronousTestCase):
    """
    A user projection in a 3-node cluster: only the leader runs it; after
    a leader SIGKILL the new leader resumes from the replicated
    checkpoint and emits nothing twice.
    """

    def test_leader_kill_no_duplicate_emits(self) -> None:
        from tests.harness import free_port
        from tests.test_cluster_membership import FAST, start_all, wait_for_leader

        ports = [
            {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for _ in range(3)
        ]
        seeds = ",".join(f"127.0.0.1:{p['int_http']}" for p in ports)
        base = self.mktemp()
        nodes = []
        for i in range(3):
            args = ["--cluster-size", "3", "--discover-via-dns", "false",
                    "--gossip-seed", seeds] + FAST + ALL
            node = NodeProcess(f"{base}/node{i}", ports=ports[i], extra_args=args)
            self.addCleanup(node.stop)
            nodes.append(node)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        for n in range(10):
            write_event(leader, f"cart-{n % 3}", n)
        create_projection(leader, "audit", EMITTER)
        wait_for_state(leader, "audit", "n", 10)
        followers = [n for n in nodes if n is not leader]
        _, _, body = http(followers[0], "GET", "/projection/audit")
        self.assertNotEqual(json.loads(body)["status"], "Running")
        leader.kill()
        second = wait_for_leader(nodes)
        self.assertIsNot(second, leader)
        for n in range(10, 15):
            write_event(second, f"cart-{n % 3}", n)
        wait_for_state(second, "audit", "n", 15, timeout=40)
        time.sleep(1.5)
        keys = audit_keys(second)
        self.assertEqual(len(keys), 15, keys)
        self.assertEqual(len(set(keys)), 15, keys)
