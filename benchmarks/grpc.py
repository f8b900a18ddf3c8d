"""
gRPC benchmark of an estwisted node (estwisted.grpc, docs/grpc.md) against
the v5 TCP path of the same node in the same run.

    python benchmarks/grpc.py [--seconds 3] [--quick] [--mem-db]

Starts its own node (C{twistd -n estore --insecure} through
L{tests.harness}, on-disk database unless C{--mem-db}) on 127.0.0.1 and
stops it at the end.

  - TCP: C{benchmarks/tcpload.c} (as in C{benchmarks/tcp.py}), one event
    per write with 1 and 64 connections each keeping one write in flight,
    and C{ReadStreamEventsForward} pages of 100.
  - gRPC: load processes using grpcio's asyncio API (its C core does the
    HTTP/2), C{Streams.Append} calls of one event with 1 and 64 calls in
    flight, and C{Streams.Read} of the same 10,000-event stream.

Prints the figures and the gRPC/TCP ratios and writes
C{benchmarks/results/grpc.json}.  Every run is bounded in time and only
talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# This file is named like the grpc package: keep its folder off the path so
# that "import grpc" finds grpcio.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "grpc.json")

APPEND = "/event_store.client.streams.Streams/Append"
READ = "/event_store.client.streams.Streams/Read"


def _append_messages(stream: str) -> list[bytes]:
    from estwisted.grpc.protos import streams_pb2

    options = streams_pb2.AppendReq()
    options.options.stream_identifier.stream_name = stream.encode()
    options.options.any.SetInParent()
    event = streams_pb2.AppendReq()
    proposed = event.proposed_message
    proposed.metadata["type"] = "bench"
    proposed.metadata["content-type"] = "application/json"
    proposed.data = b'{"payload":"' + b"x" * 86 + b'"}'
    return [options.SerializeToString(), event]  # type: ignore[list-item]


def _load_process(port: int, mode: str, concurrency: int, seconds: float,
                  queue: Any) -> None:
    """
    One load process: C{concurrency} calls in flight for C{seconds}.
    """
    import asyncio

    import grpc

    from estwisted.grpc.protos import streams_pb2

    async def run() -> dict[str, Any]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        append = channel.stream_unary(APPEND, request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
        read = channel.unary_stream(READ, request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        read_request = streams_pb2.ReadReq()
        o = read_request.options
        o.stream.stream_identifier.stream_name = b"bench-0"
        o.stream.start.SetInParent()
        o.count = 10_000
        o.no_filter.SetInParent()
        o.uuid_option.string.SetInParent()
        read_bytes = read_request.SerializeToString()
        latencies: list[float] = []
        events = [0]
        end = [0.0]

        async def writer(index: int) -> None:
            options, event = _append_messages(f"grpc-bench-{os.getpid()}-{index}")
            while time.monotonic() < end[0]:
                event.proposed_message.id.string = str(uuid.uuid4())  # type: ignore[attr-defined]
                body = event.SerializeToString()  # type: ignore[attr-defined]
                started = time.monotonic()
                await append(iter([options, body]), timeout=30)
                latencies.append(time.monotonic() - started)
                events[0] += 1

        async def reader(index: int) -> None:
            while time.monotonic() < end[0]:
                async for _ in read(read_bytes, timeout=60):
                    events[0] += 1

        await channel.channel_ready()
        # warm up one call of each kind
        options, event = _append_messages("grpc-bench-warmup")
        event.proposed_message.id.string = str(uuid.uuid4())  # type: ignore[attr-defined]
        await append(iter([options, event.SerializeToString()]), timeout=30)  # type: ignore
        started = time.monotonic()
        end[0] = started + seconds
        worker = writer if mode == "append" else reader
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
        await channel.close()
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[int(p * (len(latencies) - 1))] * 1e6 if latencies else 0.0

        return {"events": events[0], "seconds": elapsed, "p50_us": pct(0.5),
                "p99_us": pct(0.99)}

    try:
        queue.put(asyncio.run(run()))
    except BaseException as e:
        queue.put({"error": repr(e)})
        raise


def run_grpc(port: int, mode: str, concurrency: int, seconds: float,
             processes: int = 1) -> dict[str, Any]:
    """
    Run the load in C{processes} processes sharing C{concurrency} calls.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    each = max(1, concurrency // processes)
    workers = [
        context.Process(target=_load_process, args=(port, mode, each, seconds, queue))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    for r in results:
        if "error" in r:
            raise RuntimeError(f"gRPC load process failed: {r['error']}")
    total = sum(r["events"] for r in results)
    elapsed = max(r["seconds"] for r in results)
    return {
        "mode": mode,
        "concurrency": each * processes,
        "processes": processes,
        "events": total,
        "seconds": elapsed,
        "events_per_s": total / elapsed,
        "p50_us": max(r["p50_us"] for r in results),
        "p99_us": max(r["p99_us"] for r in results),
    }


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU seconds of process C{pid} so far (/proc).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run: Any) -> dict[str, Any]:
    """
    Run C{run()} and add the node's CPU microseconds per event to its result.
    """
    before = cpu_seconds(pid)
    result: dict[str, Any] = run()
    used = cpu_seconds(pid) - before
    result["node_cpu_s"] = used
    result["node_cpu_us_per_event"] = used / max(1, result["events"]) * 1e6
    return result


def main() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_tcp", os.path.join(HERE, "tcp.py"))
    assert spec is not None and spec.loader is not None
    tcp_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tcp_bench)
    build_load_client, quiet_enough = tcp_bench.build_load_client, tcp_bench.quiet_enough
    report, run_load, write_events = tcp_bench.report, tcp_bench.run_load, tcp_bench.write_events

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--mem-db", action="store_true", help="start the node with --mem-db")
    parser.add_argument("--quick", action="store_true", help="1 s runs (smoke test)")
    options = parser.parse_args()
    seconds = 1.0 if options.quick else options.seconds

    from tests.harness import NodeProcess

    workdir = tempfile.mkdtemp(prefix="estwisted-bench-grpc-")
    binary = build_load_client(workdir)
    node = NodeProcess(os.path.join(workdir, "node"), mem_db=options.mem_db,
                       extra_args=["--insecure"])
    node.start()
    idle = quiet_enough()
    results: dict[str, Any] = {
        "machine_idle_before": round(idle, 3),
        "seconds_per_run": seconds,
        "durable": not options.mem_db,
    }
    try:
        write_events(node.ext_tcp_port, "bench-0", 10_000)
        tcp: dict[str, Any] = {}
        pid = node.process.pid if node.process is not None else 0
        for conns in (1, 64):
            r = measured(pid, lambda c=conns: run_load(  # type: ignore[misc]
                binary, node.ext_tcp_port, "write", c, 1, 1, seconds))
            tcp[f"append_{conns}"] = r
            report(f"TCP append 1 ev/write, {conns} in flight", r)
        r = measured(pid, lambda: run_load(
            binary, node.ext_tcp_port, "readstream", 4, 16, 10_000, seconds))
        tcp["read"] = r
        report("TCP stream pages of 100, 4x16", r)
        grpc_results: dict[str, Any] = {}
        for concurrency, processes in ((1, 1), (64, 2)):
            r = measured(pid, lambda c=concurrency, p=processes: run_grpc(  # type: ignore[misc]
                node.ext_http_port, "append", c, seconds, p))
            grpc_results[f"append_{concurrency}"] = r
            report(f"gRPC Append 1 ev/call, {concurrency} in flight", r)
        r = measured(pid, lambda: run_grpc(node.ext_http_port, "read", 4, seconds, processes=2))
        grpc_results["read"] = r
        print(f"{'gRPC Read of 10,000 events, 4 calls':<40} {r['events_per_s']:>10,.0f} ev/s")
        ratios = {
            key: grpc_results[key]["events_per_s"] / tcp[key]["events_per_s"]
            for key in ("append_1", "append_64", "read")
        }
        # The load clients differ (C for TCP, grpcio from Python for gRPC)
        # and share the two cores with the node: the node's own CPU per
        # event compares the two paths without the clients' cost.
        cpu_ratios = {
            key: tcp[key]["node_cpu_us_per_event"] / grpc_results[key]["node_cpu_us_per_event"]
            for key in ("append_64", "read")
        }
        for key, value in ratios.items():
            print(f"{'gRPC/TCP ' + key + ' events/s':<40} {value:>10.2f}x")
        for key, value in cpu_ratios.items():
            print(
                f"{'node CPU/event TCP/gRPC ' + key:<40} {value:>10.2f}x"
                f"  ({tcp[key]['node_cpu_us_per_event']:,.0f} vs "
                f"{grpc_results[key]['node_cpu_us_per_event']:,.0f} µs)"
            )
        results.update(tcp=tcp, grpc=grpc_results, ratio=ratios, node_cpu_ratio=cpu_ratios)
    finally:
        node.stop()
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"machine idle before the runs: {idle:.0%}; results in {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
