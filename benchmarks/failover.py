# -*- test-case-name: tests.test_cluster_membership -*-
"""
Failover benchmark: time from SIGKILL of the leader of a three-node
cluster (real C{twistd -n estore} processes on 127.0.0.1) to a new leader
reported by every surviving node's C{GET /gossip}.

For each configuration (the defaults, GossipIntervalMs 1000 /
GossipTimeoutMs 500 / LeaderElectionTimeoutMs 1000, and a fast one,
100 / 500 / 500 ms) the cluster is started once, then N times: wait until
all three nodes agree on a leader, SIGKILL it, poll the two survivors'
C{/gossip} every 5 ms until both name the same new alive Master, restart
the killed node.  Prints the figures and writes them as JSON to
C{benchmarks/results/failover.json}.

Usage: C{python benchmarks/failover.py [--runs N] [--only default|fast]}.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this directory comes first on sys.path, where sibling
# benchmark modules (http.py) would shadow the standard library.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from typing import Any, Optional  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.harness import NodeProcess, free_port  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "failover.json")

CONFIGS = {
    "default": [],
    "fast": [
        "--gossip-interval-ms", "100",
        "--gossip-timeout-ms", "500",
        "--leader-election-timeout-ms", "500",
    ],
}


def gossip(node: NodeProcess) -> Optional[dict[str, Any]]:
    url = f"http://{node.host}:{node.ext_http_port}/gossip?format=json"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def reported_leader(node: NodeProcess) -> Optional[int]:
    """
    The internal HTTP port of the single alive Master in the node's
    gossip, if there is exactly one.
    """
    doc = gossip(node)
    if doc is None:
        return None
    masters = [m for m in doc["members"] if m["isAlive"] and m["state"] == "Master"]
    if len(masters) != 1:
        return None
    return int(masters[0]["internalHttpPort"])


def agreed(nodes: list[NodeProcess]) -> Optional[int]:
    seen = {reported_leader(n) for n in nodes}
    if len(seen) == 1:
        leader = seen.pop()
        if leader in {n.int_http_port for n in nodes}:
            return leader
    return None


def wait_agreed(nodes: list[NodeProcess], timeout: float, poll: float = 0.005) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = agreed(nodes)
        if leader is not None:
            return leader
        time.sleep(poll)
    return None


def run_config(name: str, flags: list[str], runs: int, base: str) -> dict[str, Any]:
    ports = [
        {k: free_port() for k in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
        for _ in range(3)
    ]
    nodes = []
    for i, p in enumerate(ports):
        seeds = ",".join(f"127.0.0.1:{q['int_http']}" for q in ports if q is not p)
        args = ["--cluster-size=3", "--discover-via-dns=false", f"--gossip-seed={seeds}"]
        nodes.append(
            NodeProcess(
                os.path.join(base, name, f"node{i}"), ports=p, extra_args=args + flags,
                mem_db=True,
            )
        )
    times: list[float] = []
    try:
        for n in nodes:
            n.start()
        for run in range(runs):
            leader_port = wait_agreed(nodes, 30.0)
            if leader_port is None:
                raise RuntimeError("no leader before the kill")
            time.sleep(0.5)  # let the followers settle into probing
            leader = next(n for n in nodes if n.int_http_port == leader_port)
            survivors = [n for n in nodes if n is not leader]
            start = time.monotonic()
            leader.kill()
            new = wait_agreed(survivors, 30.0, poll=0.005)
            elapsed = time.monotonic() - start
            if new is None or new == leader_port:
                raise RuntimeError(f"run {run}: no new leader after 30 s")
            times.append(elapsed)
            print(f"  {name} run {run + 1}: {elapsed * 1000:.0f} ms", flush=True)
            leader.start()
    finally:
        for n in nodes:
            n.stop()
    return {
        "flags": flags,
        "runs": len(times),
        "seconds": times,
        "median": statistics.median(times),
        "max": max(times),
        "min": min(times),
        "mean": statistics.fmean(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", choices=sorted(CONFIGS))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "failover: SIGKILL of the leader to a new leader in every survivor's gossip",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "configs": {},
    }
    with tempfile.TemporaryDirectory() as base:
        for name, flags in CONFIGS.items():
            if args.only and name != args.only:
                continue
            results["configs"][name] = run_config(name, flags, args.runs, base)
    print()
    print(f"{'config':<10}{'runs':>6}{'median ms':>12}{'max ms':>10}{'min ms':>10}")
    for name, r in results["configs"].items():
        print(
            f"{name:<10}{r['runs']:>6}{r['median'] * 1000:>12.0f}{r['max'] * 1000:>10.0f}"
            f"{r['min'] * 1000:>10.0f}"
        )
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwritten to {os.path.relpath(RESULTS, REPO)}")


if __name__ == "__main__":
    main()
