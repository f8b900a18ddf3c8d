"""
Benchmark of L{estwisted.client} against one estwisted node, beside
C{benchmarks/tcp.py}'s C load client on the same node in the same run.

    python benchmarks/client.py [--seconds 3] [--mem-db] [--quick]

It starts its own node (C{twistd -n estore} through L{tests.harness}) on
127.0.0.1, and measures: appends/s through one client connection with 1
and with 64 appends in flight, the C client's rate for the same shapes,
and catch-up read events/s (a C{subscribe_to_stream_from} over 10,000
events until it goes live).  Prints a table and writes
C{benchmarks/results/client.json}.  Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this directory has an http.py that would shadow the standard library's
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "client.json")


async def client_runs(reactor: Any, port: int, seconds: float) -> dict[str, Any]:
    from estwisted.client import (
        ConnectionSettings,
        EventData,
        EventStoreConnection,
        ExpectedVersion,
        SingleNode,
        UserCredentials,
    )

    connection = EventStoreConnection.create(
        reactor,
        ConnectionSettings(default_user_credentials=UserCredentials("admin", "changeit")),
        SingleNode("127.0.0.1", port),
    )
    await connection.connect()
    results: dict[str, Any] = {}
    payload = b'{"x": "' + b"a" * 90 + b'"}'

    for inflight in (1, 64):
        count = [0]
        deadline = time.monotonic() + seconds

        async def writer(stream: str, deadline: float, count: list[int]) -> None:
            while time.monotonic() < deadline:
                await connection.append_to_stream(
                    stream,
                    ExpectedVersion.ANY,
                    [EventData(uuid.uuid4(), "bench", payload)],
                )
                count[0] += 1

        from twisted.internet.defer import Deferred, gatherResults

        started = time.monotonic()
        await gatherResults(
            [
                Deferred.fromCoroutine(writer(f"client-bench-{inflight}-{i}", deadline, count))
                for i in range(inflight)
            ]
        )
        elapsed = time.monotonic() - started
        results[f"appends_inflight_{inflight}"] = {
            "appends": count[0],
            "seconds": elapsed,
            "appends_per_s": count[0] / elapsed,
        }

    # catch-up read of 10,000 events
    stream = "client-bench-read"
    for _ in range(0, 10_000, 500):
        await connection.append_to_stream(
            stream,
            ExpectedVersion.ANY,
            [EventData(uuid.uuid4(), "bench", payload) for _ in range(500)],
        )
    seen = [0]
    started = time.monotonic()
    subscription = connection.subscribe_to_stream_from(
        stream, None, lambda s, e: seen.__setitem__(0, seen[0] + 1), read_batch_size=500
    )
    await subscription.live
    elapsed = time.monotonic() - started
    results["catch_up_read"] = {
        "events": seen[0],
        "seconds": elapsed,
        "events_per_s": seen[0] / elapsed,
    }
    await subscription.stop()
    await connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--mem-db", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 s runs (smoke test)")
    options = parser.parse_args()
    seconds = 1.0 if options.quick else options.seconds

    # benchmarks/tcp.py by path (benchmarks/ on sys.path would shadow http)
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_tcp", os.path.join(HERE, "tcp.py"))
    assert spec is not None and spec.loader is not None
    bench_tcp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_tcp)
    build_load_client, run_load = bench_tcp.build_load_client, bench_tcp.run_load

    from tests.harness import NodeProcess

    workdir = tempfile.mkdtemp(prefix="estwisted-client-bench-")
    binary = build_load_client(workdir)
    node = NodeProcess(os.path.join(workdir, "node"), mem_db=options.mem_db)
    node.start()
    results: dict[str, Any] = {"seconds_per_run": seconds, "durable": not options.mem_db}
    try:
        c1 = run_load(binary, node.ext_tcp_port, "write", 1, 1, 1, seconds)
        c64 = run_load(binary, node.ext_tcp_port, "write", 1, 64, 1, seconds)
        results["c_client"] = {
            "appends_inflight_1": c1["events_per_s"],
            "appends_inflight_64": c64["events_per_s"],
        }
        from twisted.internet import defer, task

        out: dict[str, Any] = {}

        def run(reactor: Any) -> Any:
            d = defer.Deferred.fromCoroutine(client_runs(reactor, node.ext_tcp_port, seconds))
            return d.addCallback(out.update)

        try:
            task.react(run)
        except SystemExit as e:
            if e.code:
                raise
        results["client"] = out
    finally:
        node.stop()
    for inflight in (1, 64):
        mine = results["client"][f"appends_inflight_{inflight}"]["appends_per_s"]
        theirs = results["c_client"][f"appends_inflight_{inflight}"]
        print(
            f"append, {inflight:>2} in flight, 1 conn: client {mine:>9,.0f}/s"
            f"   C client {theirs:>9,.0f}/s   ({mine / theirs:.0%})"
        )
    catch_up = results["client"]["catch_up_read"]["events_per_s"]
    print(f"catch-up read (10,000 events):   client {catch_up:>9,.0f} ev/s")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results in {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
