"""
estwisted beside Redis Streams, in one run (issue 12).

    python benchmarks/versus.py [--seconds 3] [--no-cluster] [--quick]

Starts its own C{redis-server} (C{appendonly yes}, C{appendfsync always},
so every acknowledged C{XADD} was fsync'ed) in a temporary directory and an
estwisted single node on disk (through L{tests.harness}), both on
127.0.0.1; then, unless C{--no-cluster}, the 3-node loopback cluster of
C{benchmarks/cluster.py}.  The same shapes run against each: 1 and 64
connections, one write in flight per connection, one event of 100 bytes per
write.  estwisted's load comes from C{benchmarks/tcpload.c} (compiled here
as C{benchmarks/tcp.py} does), Redis's from C{redis-benchmark} running
C{XADD}.  Redis and estwisted run side by side and alternate shape by
shape for C{--rounds} rounds (the table shows medians), and the
C{fdatasync} latency of a 100-byte append in the same temporary directory
is sampled before, between and after the rounds: the figures move with the
disk and the neighbours from minute to minute, and only ratios measured
side by side count.

Prints a table with the ratios and writes C{benchmarks/results/versus.json}.
It installs nothing: when C{redis-server} or C{redis-benchmark} is missing
it says so (Debian: C{apt-get install redis-server redis-tools}) and runs
the estwisted rows only.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this directory holds http.py, which would shadow the standard library
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "versus.json")
DATA = b"x" * 100
SHAPES = (1, 64)


def _module(name: str) -> Any:
    """
    A sibling benchmark script as a module.
    """
    spec = importlib.util.spec_from_file_location(f"_{name}_bench", os.path.join(HERE, name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fdatasync_latency(directory: str, seconds: float = 1.0) -> dict[str, float]:
    """
    Append 100 bytes and C{fdatasync} in a loop, in a preallocated file
    under C{directory}, for C{seconds}: the disk's commit cost right now.
    """
    path = os.path.join(directory, "fdatasync.probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 64 * 1024 * 1024)
        os.fsync(fd)
        samples = []
        offset = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            os.pwrite(fd, DATA, offset)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t)
            offset += len(DATA)
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    n = len(samples)
    return {
        "syncs_per_s": n / seconds,
        "p50_us": samples[n // 2] * 1e6,
        "p99_us": samples[min(n - 1, n * 99 // 100)] * 1e6,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_redis() -> list[str]:
    return [tool for tool in ("redis-server", "redis-benchmark") if shutil.which(tool) is None]


class Redis:
    """
    A C{redis-server} with every write fsync'ed, in C{directory}.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self.log = open(os.path.join(self.directory, "redis.log"), "wb")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                self.directory,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
            self.log.close()

    def xadd(self, conns: int, requests: int) -> dict[str, Any]:
        """
        C{redis-benchmark} C{XADD} of one 100-byte field, C{conns}
        connections, one request in flight each.
        """
        command = [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            str(conns),
            "-n",
            str(requests),
            "-P",
            "1",
            "--csv",
            "XADD",
            "bench",
            "*",
            "data",
            DATA.decode(),
        ]
        started = time.monotonic()
        out = subprocess.run(command, capture_output=True, check=True, timeout=120).stdout
        elapsed = time.monotonic() - started
        rows = list(csv.DictReader(io.StringIO(out.decode())))
        row = rows[-1]
        return {
            "conns": conns,
            "requests": requests,
            "wall_seconds": elapsed,
            "requests_per_s": float(row["rps"]),
            "p50_us": float(row["p50_latency_ms"]) * 1000,
            "p99_us": float(row["p99_latency_ms"]) * 1000,
        }


def redis_row(redis: Redis, conns: int, seconds: float) -> dict[str, Any]:
    probe = redis.xadd(conns, 500 * conns)
    requests = max(1000, int(probe["requests_per_s"] * seconds))
    return redis.xadd(conns, requests)


def estwisted_row(
    run_load: Any, binary: str, port: int, conns: int, seconds: float
) -> dict[str, Any]:
    r = run_load(binary, port, "write", conns, 1, 1, seconds)
    return {
        "conns": conns,
        "requests_per_s": r["requests_per_s"],
        "p50_us": r["p50_us"],
        "p99_us": r["p99_us"],
    }


def medians(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """
    Per shape, the median rate and p50 over the rounds.
    """
    out = []
    for conns in SHAPES:
        cells = [c for row in rounds for c in row if c["conns"] == conns]
        if cells:
            out.append(
                {
                    "conns": conns,
                    "requests_per_s": statistics.median(c["requests_per_s"] for c in cells),
                    "p50_us": statistics.median(c["p50_us"] for c in cells),
                    "p99_us": statistics.median(c["p99_us"] for c in cells),
                    "rounds": len(cells),
                }
            )
    return out


def _cell(rows: Optional[list[dict[str, Any]]], conns: int) -> Optional[dict[str, Any]]:
    for r in rows or ():
        if r["conns"] == conns:
            return r
    return None


def table(results: dict[str, Any]) -> str:
    sync = results["fdatasync"]
    lines = [
        f"fdatasync of a 100-byte append, median of {len(results['fdatasync_samples'])} samples"
        f" over the run: p50 {sync['p50_us']:.0f} µs ({sync['syncs_per_s']:,.0f}/s; first"
        f" {results['fdatasync_before']['p50_us']:.0f} µs,"
        f" last {results['fdatasync_after']['p50_us']:.0f} µs)",
        "",
        f"| {'figure':<30} | {'Redis Streams':>22} | {'estwisted':>22} | {'ratio':>22} |",
        f"|{'-' * 32}|{'-' * 24}|{'-' * 24}|{'-' * 24}|",
    ]

    def fmt(r: Optional[dict[str, Any]]) -> str:
        if r is None:
            return "—"
        return f"{r['requests_per_s']:,.0f} (p50 {r['p50_us']:,.0f} µs)"

    redis = results.get("redis")
    single = results["single"]
    cluster = results.get("cluster")
    for conns in SHAPES:
        r = _cell(redis, conns)
        s = _cell(single, conns)
        assert s is not None
        ratio = f"{s['requests_per_s'] / r['requests_per_s']:.2f}×" if r else "—"
        lines.append(
            f"| {f'single node, {conns} conn':<30} | {fmt(r):>22} | {fmt(s):>22} | {ratio:>22} |"
        )
    for conns in SHAPES:
        c = _cell(cluster, conns)
        if c is None:
            continue
        r = _cell(redis, conns)
        s = _cell(single, conns)
        assert s is not None
        parts = []
        if r:
            parts.append(f"{c['requests_per_s'] / r['requests_per_s']:.2f}× Redis")
        parts.append(f"{c['requests_per_s'] / s['requests_per_s']:.2f}× single")
        parts.append(f"p50 {c['p50_us'] / max(1.0, s['p50_us']):.1f}×")
        lines.append(
            f"| {f'3-node cluster, {conns} conn':<30} | {'—':>22} | {fmt(c):>22} |"
            f" {', '.join(parts):>22} |"
        )
    s1 = _cell(single, 1)
    assert s1 is not None
    lines.append("")
    lines.append(
        f"single node 1 conn p50 {s1['p50_us']:.0f} µs = fdatasync p50 + "
        f"{s1['p50_us'] - sync['p50_us']:.0f} µs (goal: + 40 µs at most)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-cluster", action="store_true", help="skip the 3-node rows")
    parser.add_argument("--quick", action="store_true", help="1 s runs")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating Redis/estwisted rounds (medians)"
    )
    options = parser.parse_args()
    seconds = 1.0 if options.quick else options.seconds

    from tests.harness import NodeProcess

    tcp = _module("tcp.py")
    workdir = tempfile.mkdtemp(prefix="estwisted-versus-")
    binary = tcp.build_load_client(workdir)
    missing = missing_redis()
    results: dict[str, Any] = {
        "seconds_per_run": seconds,
        "machine_idle_before": round(tcp.quiet_enough(), 3),
        "missing": missing,
    }
    try:
        results["fdatasync_before"] = fdatasync_latency(workdir)
        redis: Optional[Redis] = None
        if missing:
            print(
                f"{' and '.join(missing)} not found: the Redis rows are left out "
                "(Debian: apt-get install redis-server redis-tools)",
                flush=True,
            )
        else:
            redis = Redis(os.path.join(workdir, "redis"))
            redis.start()
        node = NodeProcess(os.path.join(workdir, "node"))
        node.start()
        redis_rounds: list[list[dict[str, Any]]] = []
        single_rounds: list[list[dict[str, Any]]] = []
        syncs = [results["fdatasync_before"]]
        try:
            # Redis and estwisted alternate, shape by shape, so that a disk
            # or a neighbour that changes speed moves both sides alike.
            for r in range(options.rounds):
                redis_row_set: list[dict[str, Any]] = []
                single_row_set: list[dict[str, Any]] = []
                for conns in SHAPES:
                    sides = ["redis", "estwisted"] if r % 2 == 0 else ["estwisted", "redis"]
                    for side in sides:
                        if side == "redis" and redis is not None:
                            redis_row_set.append(redis_row(redis, conns, seconds))
                        elif side == "estwisted":
                            single_row_set.append(
                                estwisted_row(
                                    tcp.run_load, binary, node.ext_tcp_port, conns, seconds
                                )
                            )
                if redis_row_set:
                    redis_rounds.append(redis_row_set)
                single_rounds.append(single_row_set)
                syncs.append(fdatasync_latency(workdir, 0.5))
        finally:
            node.stop()
            if redis is not None:
                redis.stop()
        if redis_rounds:
            results["redis"] = medians(redis_rounds)
            results["redis_rounds"] = redis_rounds
        results["single"] = medians(single_rounds)
        results["single_rounds"] = single_rounds
        if not options.no_cluster:
            cluster = _module("cluster.py")
            from tests.test_cluster_membership import start_all, wait_for_leader

            nodes = cluster.cluster_nodes(os.path.join(workdir, "cluster"), 3)
            try:
                start_all(nodes)
                leader = wait_for_leader(nodes)
                cluster.time_to_write(nodes)
                results["cluster"] = [
                    estwisted_row(tcp.run_load, binary, leader.ext_tcp_port, conns, seconds)
                    for conns in SHAPES
                ]
            finally:
                for n in nodes:
                    n.stop()
        results["fdatasync_after"] = fdatasync_latency(workdir)
        syncs.append(results["fdatasync_after"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["fdatasync_samples"] = syncs
    results["fdatasync"] = {k: statistics.median(x[k] for x in syncs) for k in syncs[0]}
    ratios: dict[str, float] = {}
    for conns in SHAPES:
        r = _cell(results.get("redis"), conns)
        s = _cell(results["single"], conns)
        c = _cell(results.get("cluster"), conns)
        if r and s:
            ratios[f"single_{conns}_over_redis"] = s["requests_per_s"] / r["requests_per_s"]
        if c and s:
            ratios[f"cluster_{conns}_over_single"] = c["requests_per_s"] / s["requests_per_s"]
            ratios[f"cluster_{conns}_p50_over_single"] = c["p50_us"] / max(1.0, s["p50_us"])
    results["ratios"] = ratios
    print(table(results))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results in {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
