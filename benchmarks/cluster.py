"""
Quorum replication benchmark: a 3-node cluster on loopback (every node on
disk, so each acknowledged write was fsync'ed by the leader and at least one
follower) beside a single node, in the same run.

    python benchmarks/cluster.py [--seconds 3] [--failovers 3] [--quick]

Measures appends/s and p50/p99 latency with 1, 8 and 64 connections
(single-event and 100-event writes, one request in flight per connection),
with the C load client of C{benchmarks/tcp.py}; then the time from a
leader's SIGKILL to the first write acknowledged by the new leader.  Prints
a table and writes C{benchmarks/results/cluster.json}.  Only talks to
127.0.0.1; every phase is bounded in time; every node is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this directory holds http.py, which would shadow the standard library
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "cluster.json")


def _tcp_benchmark() -> Any:
    """
    C{benchmarks/tcp.py} as a module (not on C{sys.path}: its neighbour
    C{http.py} would shadow the standard library).
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tcp_bench", os.path.join(HERE, "tcp.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loads(binary: str, port: int, seconds: float, quick: bool) -> list[dict[str, Any]]:
    run_load = _tcp_benchmark().run_load

    shapes = [(1, 1), (8, 1), (64, 1), (8, 100)]
    if quick:
        shapes = [(1, 1), (64, 1)]
    out = []
    for conns, events in shapes:
        r = run_load(binary, port, "write", conns, 1, events, seconds)
        out.append(r)
        print(
            f"  {conns:>3} conns x {events:>3} events: {r['events_per_s']:>9.0f} events/s"
            f"  p50 {r.get('p50_us', 0):>7.0f} us  p99 {r.get('p99_us', 0):>7.0f} us",
            flush=True,
        )
    return out


def cluster_nodes(base: str, count: int, mem_db: bool = False) -> list[Any]:
    from tests.harness import NodeProcess, free_port
    from tests.test_cluster_membership import FAST

    ports = [
        {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
        for _ in range(count)
    ]
    seeds = ",".join(f"127.0.0.1:{p['int_http']}" for p in ports)
    args = ["--cluster-size", str(count), "--discover-via-dns", "false", "--gossip-seed", seeds]
    return [
        NodeProcess(
            os.path.join(base, f"node{i}"), ports=ports[i], extra_args=args + FAST, mem_db=mem_db
        )
        for i in range(count)
    ]


#: Log lines that mean an election or a step-down happened.
ELECTION_LINES = ("Elected leader in view", "Leader without a quorum", "Starting elections")


def election_lines(nodes: list[Any]) -> dict[str, int]:
    """
    How many of each L{ELECTION_LINES} the nodes' logs hold so far.
    """
    text = "".join(n.log() for n in nodes)
    return {line: text.count(line) for line in ELECTION_LINES}


def time_to_write(nodes: list[Any], budget: float = 30.0) -> float:
    """
    Seconds from now until a write is acknowledged by whoever leads.
    """
    from tests.test_cluster_membership import masters
    from tests.test_replication import TcpClient

    start = time.monotonic()
    while time.monotonic() - start < budget:
        for leader in masters(nodes):
            try:
                client = TcpClient(leader.host, leader.ext_tcp_port, timeout=2.0)
            except OSError:
                continue
            try:
                outcome, _ = client.write("failover", -2, [uuid.uuid4().bytes])
            except (OSError, ConnectionError):
                outcome = "error"
            finally:
                client.close()
            if outcome == "ok":
                return time.monotonic() - start
        time.sleep(0.01)
    return float("inf")


def main() -> None:
    from tests.harness import NodeProcess
    from tests.test_cluster_membership import running, start_all, wait_for_leader

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--mem-db", action="store_true", help="nodes in memory (no fsync): protocol costs only"
    )
    options = parser.parse_args()
    base = tempfile.mkdtemp(prefix="estw-replbench-")
    binary = _tcp_benchmark().build_load_client(base)
    results: dict[str, Any] = {"seconds": options.seconds, "mem_db": options.mem_db}

    where = "in memory" if options.mem_db else "on disk"
    print(f"single node ({where}):", flush=True)
    single = NodeProcess(os.path.join(base, "single"), mem_db=options.mem_db)
    try:
        single.start()
        results["single"] = loads(binary, single.ext_tcp_port, options.seconds, options.quick)
    finally:
        single.stop()

    print(f"3-node cluster ({where}), writes to the leader:", flush=True)
    nodes = cluster_nodes(os.path.join(base, "cluster"), 3, options.mem_db)
    try:
        start_all(nodes)
        leader = wait_for_leader(nodes)
        time_to_write(nodes)
        before = election_lines(nodes)
        results["cluster"] = loads(binary, leader.ext_tcp_port, options.seconds, options.quick)
        # a healthy cluster under load must not hold elections (the leader's
        # no-quorum check fires within the election timeout: issue 11 item 6)
        during = {k: v - before[k] for k, v in election_lines(nodes).items()}
        results["election_lines_during_load"] = during
        print(f"  election log lines during the load: {during}", flush=True)
        failovers = []
        for _ in range(options.failovers):
            leader = wait_for_leader(nodes)
            time_to_write(nodes)
            leader.kill()
            took = time_to_write(nodes)
            failovers.append(took)
            print(f"  leader SIGKILL -> write accepted after {took:.2f} s", flush=True)
            leader.start()
            wait_for_leader(nodes, timeout=30)
        results["failover_seconds"] = failovers
        if failovers:
            results["failover_median_s"] = statistics.median(failovers)
            results["failover_max_s"] = max(failovers)
        results["cluster_nodes_running"] = len(running(nodes))
    finally:
        for n in nodes:
            n.stop()

    ratios = []
    for s, c in zip(results.get("single", []), results.get("cluster", []), strict=False):
        ratios.append(
            {
                "conns": c["conns"],
                "events": c["events_per_request"],
                "cluster_over_single": c["events_per_s"] / s["events_per_s"],
            }
        )
    results["ratios"] = ratios
    print(json.dumps({"ratios": ratios, "failover_seconds": results.get("failover_seconds")}))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
