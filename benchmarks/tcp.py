"""
TCP benchmark of an estwisted node (tcp-protocol.md; targets in
shared/performance.md section 3).

    python benchmarks/tcp.py [--port PORT --http-port P] [--seconds 3] [--quick]

Without C{--port} it starts its own node (C{twistd -n estore} through
L{tests.harness}, on-disk database, so every acknowledged write was
fsync'ed) on 127.0.0.1 and stops it at the end.

Load comes from C{benchmarks/tcpload.c}, a small C client compiled here with
the system C compiler (the load client must not be the bottleneck: a Python
client costs as much CPU per request as the server).  Subscription figures
use raw-socket Python consumers in their own processes.

Prints a table and writes C{benchmarks/results/tcp.json}.  Every run is
bounded in time and only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "tcp.json")


def build_load_client(directory: str) -> str:
    """
    Compile C{tcpload.c}; return the binary's path.
    """
    binary = os.path.join(directory, "tcpload")
    compiler = os.environ.get("CC", "cc")
    subprocess.run(
        [compiler, "-O2", "-o", binary, os.path.join(HERE, "tcpload.c")],
        check=True,
    )
    return binary


def run_load(
    binary: str,
    port: int,
    mode: str,
    conns: int,
    inflight: int,
    events: int,
    seconds: float,
    data_size: int = 100,
    auth: bool = False,
    rate: float = 0,
) -> dict[str, Any]:
    args = [
        binary,
        str(port),
        mode,
        str(conns),
        str(inflight),
        str(events),
        str(seconds),
        str(data_size),
        "1" if auth else "0",
        str(rate),
    ]
    completed = subprocess.run(args, capture_output=True, timeout=seconds + 60)
    if completed.returncode != 0:
        raise RuntimeError(
            f"tcpload {' '.join(args[2:])} failed: {completed.stderr.decode()[-1000:]}"
        )
    result: dict[str, Any] = json.loads(completed.stdout)
    result["requests_per_s"] = result["requests"] / result["seconds"]
    result["events_per_s"] = result["events"] / result["seconds"]
    result.update(
        mode=mode, conns=conns, inflight=inflight, events_per_request=events, rate_limit=rate
    )
    return result


# -- raw protocol helpers for the Python consumers --------------------------------


def _frame(
    command: int, corr: bytes, data: bytes = b"", creds: Optional[tuple[str, str]] = None
) -> bytes:
    flags = 0
    auth = b""
    if creds is not None:
        flags = 1
        login, password = (c.encode() for c in creds)
        auth = bytes([len(login)]) + login + bytes([len(password)]) + password
    body = bytes([command, flags]) + corr + auth + data
    return struct.pack("<i", len(body)) + body


def _packages(sock: socket.socket, buffer: bytearray) -> list[bytes]:
    chunk = sock.recv(1 << 20)
    if not chunk:
        raise ConnectionError("closed")
    buffer += chunk
    out = []
    offset = 0
    while len(buffer) - offset >= 4:
        (length,) = struct.unpack_from("<i", buffer, offset)
        if len(buffer) - offset < 4 + length:
            break
        out.append(bytes(buffer[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    del buffer[:offset]
    return out


def _call(sock: socket.socket, command: int, data: bytes, creds: Any = None) -> bytes:
    corr = uuid.uuid4().bytes_le
    sock.sendall(_frame(command, corr, data, creds))
    buffer = bytearray()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for package in _packages(sock, buffer):
            if package[2:18] == corr:
                return package
            if package[0] == 0x01:
                sock.sendall(_frame(0x02, package[2:18]))
    raise TimeoutError("no reply")


def volatile_consumer(port: int, stream: str, seconds: float, queue: Any) -> None:
    """
    Subscribe to C{stream} and count pushed events for C{seconds} after the
    first one.
    """
    from estwisted.wire import messages_pb2 as pb

    sock = socket.create_connection(("127.0.0.1", port))
    corr = uuid.uuid4().bytes_le
    sock.sendall(
        _frame(
            0xC0,
            corr,
            pb.SubscribeToStream(
                event_stream_id=stream, resolve_link_tos=False
            ).SerializeToString(),
        )
    )
    buffer = bytearray()
    count = 0
    first = None
    queue.put("subscribed")
    end = time.monotonic() + seconds + 30
    sock.settimeout(1.0)
    while time.monotonic() < end:
        try:
            packages = _packages(sock, buffer)
        except TimeoutError:
            if first is not None:
                break
            continue
        for package in packages:
            if package[0] == 0xC2:
                if first is None:
                    first = time.monotonic()
                    end = first + seconds
                count += 1
            elif package[0] == 0x01:
                sock.sendall(_frame(0x02, package[2:18]))
    elapsed = time.monotonic() - first if first else 0.0
    sock.close()
    queue.put((count, elapsed))


def persistent_consumer(port: int, stream: str, group: str, total: int, queue: Any) -> None:
    """
    Connect to a group, ack everything received (one ack per received
    chunk), until C{total} messages were acked by all consumers together
    (the parent stops us) or 60 s pass.
    """
    from estwisted.wire import messages_pb2 as pb

    sock = socket.create_connection(("127.0.0.1", port))
    corr = uuid.uuid4().bytes_le
    sock.sendall(
        _frame(
            0xC5,
            corr,
            pb.ConnectToPersistentSubscription(
                subscription_id=group, event_stream_id=stream, allowed_in_flight_messages=200
            ).SerializeToString(),
        )
    )
    buffer = bytearray()
    count = 0
    key = f"{stream}::{group}"
    sock.settimeout(1.0)
    deadline = time.monotonic() + 60
    queue.put("connected")
    idle = 0
    while time.monotonic() < deadline and idle < 3:
        try:
            packages = _packages(sock, buffer)
        except TimeoutError:
            idle += 1
            continue
        idle = 0
        ids = []
        for package in packages:
            if package[0] == 0xC7:
                message = pb.PersistentSubscriptionStreamEventAppeared.FromString(package[18:])
                ids.append(message.event.event.event_id)
            elif package[0] == 0x01:
                sock.sendall(_frame(0x02, package[2:18]))
        if ids:
            count += len(ids)
            ack = pb.PersistentSubscriptionAckEvents(subscription_id=key, processed_event_ids=ids)
            sock.sendall(_frame(0xCC, corr, ack.SerializeToString()))
            queue.put(("acked", len(ids), time.monotonic()))
    sock.close()
    queue.put(("done", count))


def write_events(port: int, stream: str, count: int, batch: int = 100) -> None:
    from estwisted.wire import messages_pb2 as pb

    sock = socket.create_connection(("127.0.0.1", port))
    for start in range(0, count, batch):
        message = pb.WriteEvents(event_stream_id=stream, expected_version=-2, require_master=False)
        for _ in range(min(batch, count - start)):
            message.events.add(
                event_id=uuid.uuid4().bytes_le,
                event_type="bench",
                data_content_type=1,
                metadata_content_type=0,
                data=b"{" + b" " * 98 + b"}",
            )
        reply = _call(sock, 0x82, message.SerializeToString())
        if reply[0] != 0x83:
            raise RuntimeError(f"write failed: {reply[:60]!r}")
    sock.close()


def bench_volatile(binary: str, port: int, seconds: float, subscribers: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=volatile_consumer, args=(port, "bench-0", seconds, queue))
        for _ in range(subscribers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        queue.get(timeout=30)
    time.sleep(0.5)
    load = run_load(binary, port, "write", 1, 10, 100, seconds + 1)
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    received = sum(c for c, _ in results)
    elapsed = max(e for _, e in results) or 1.0
    return {
        "subscribers": subscribers,
        "delivered_events": received,
        "delivered_per_s": received / elapsed,
        "written_per_s": load["events_per_s"],
    }


def bench_persistent(port: int, consumers: int, total: int) -> dict[str, Any]:
    from estwisted.wire import messages_pb2 as pb

    stream = f"bench-ps-{uuid.uuid4().hex[:8]}"
    write_events(port, stream, total)
    sock = socket.create_connection(("127.0.0.1", port))
    create = pb.CreatePersistentSubscription(
        subscription_group_name="g",
        event_stream_id=stream,
        resolve_link_tos=False,
        start_from=0,
        message_timeout_milliseconds=30000,
        record_statistics=False,
        live_buffer_size=500,
        read_batch_size=500,
        buffer_size=2000,
        max_retry_count=10,
        prefer_round_robin=True,
        checkpoint_after_time=2000,
        checkpoint_max_count=1000,
        checkpoint_min_count=100,
        subscriber_max_count=0,
        named_consumer_strategy="RoundRobin",
    )
    reply = _call(sock, 0xC8, create.SerializeToString(), ("admin", "changeit"))
    if reply[0] != 0xC9 or pb.CreatePersistentSubscriptionCompleted.FromString(reply[18:]).result:
        raise RuntimeError(f"create failed: {reply!r}")
    sock.close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=persistent_consumer, args=(port, stream, "g", total, queue))
        for _ in range(consumers)
    ]
    for p in procs:
        p.start()
    connected = 0
    acked = 0
    first = last = None
    done = []
    deadline = time.monotonic() + 90
    while len(done) < consumers and time.monotonic() < deadline:
        item = queue.get(timeout=90)
        if item == "connected":
            connected += 1
        elif item[0] == "acked":
            acked += item[1]
            first = first or item[2]
            last = item[2]
        elif item[0] == "done":
            done.append(item[1])
    for p in procs:
        p.join(10)
    elapsed = (last - first) if first and last and last > first else 1.0
    return {
        "consumers": consumers,
        "messages": total,
        "acked": acked,
        "duplicates": max(0, acked - total),
        "acked_per_s": acked / elapsed,
    }


def report(label: str, r: dict[str, Any]) -> None:
    print(
        f"{label:<40} {r['events_per_s']:>10,.0f} ev/s  p50 {r['p50_us']:,.0f} µs"
        f"  p99 {r['p99_us']:,.0f} µs"
    )


def quiet_enough() -> float:
    """
    CPU idle fraction over 1 s (from /proc/stat).
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)

    idle1, total1 = sample()
    time.sleep(1)
    idle2, total2 = sample()
    return (idle2 - idle1) / max(1, total2 - total1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, help="an already running node's external TCP port")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--mem-db", action="store_true", help="start the node with --mem-db")
    parser.add_argument("--quick", action="store_true", help="1 s runs (smoke test)")
    options = parser.parse_args()
    seconds = 1.0 if options.quick else options.seconds

    node = None
    workdir = tempfile.mkdtemp(prefix="estwisted-bench-")
    binary = build_load_client(workdir)
    if options.port is None:
        from tests.harness import NodeProcess

        node = NodeProcess(os.path.join(workdir, "node"), mem_db=options.mem_db)
        node.start()
        port = node.ext_tcp_port
    else:
        port = options.port
    idle = quiet_enough()
    results: dict[str, Any] = {
        "machine_idle_before": round(idle, 3),
        "seconds_per_run": seconds,
        "durable": options.port is None and not options.mem_db,
        "appends": [],
        "reads": [],
    }
    try:
        # Data for the read runs: 10,000 events in bench-0.
        write_events(port, "bench-0", 10_000)
        for events in (1, 100):
            for conns in (1, 8, 64):
                r = run_load(binary, port, "write", conns, 1, events, seconds)
                results["appends"].append(r)
                report(f"append {events} ev/write, {conns} conns rr", r)
        peak = max(a["events_per_s"] for a in results["appends"] if a["events_per_request"] == 1)
        r = run_load(binary, port, "write", 8, 4, 1, seconds, rate=peak / 2)
        results["latency_at_half_peak"] = r
        report(f"append latency at half peak ({peak / 2:,.0f}/s)", r)
        r = run_load(binary, port, "write", 10, 200, 1, seconds)
        results["appends"].append(r)
        report("append pipelined 10x200 in flight", r)
        r = run_load(binary, port, "write", 1, 10, 100, seconds)
        results["appends"].append(r)
        report("append 100 ev/write, 10 in flight", r)
        # Latency at a light load: one client request/response is the
        # idle-node figure; 8 clients rr is roughly half of the peak.
        for mode, conns, inflight, auth, label in (
            ("readevent", 16, 1, False, "ReadEvent 16 conns rr"),
            ("readstream", 4, 16, False, "stream pages of 100, 4x16 in flight"),
            ("readall", 4, 16, True, "$all pages of 100, 4x16 in flight"),
        ):
            r = run_load(binary, port, mode, conns, inflight, 10_000, seconds, auth=auth)
            results["reads"].append(r)
            report(label, r)
        results["volatile"] = bench_volatile(binary, port, seconds, 1)
        rate = results["volatile"]["delivered_per_s"]
        print(f"{'volatile subscription, 1 subscriber':<40} {rate:>10,.0f} ev/s")
        results["volatile4"] = bench_volatile(binary, port, seconds, 4)
        rate = results["volatile4"]["delivered_per_s"]
        print(f"{'volatile subscription, 4 subscribers':<40} {rate:>10,.0f} ev/s in total")
        results["persistent"] = bench_persistent(port, 4, 20_000 if not options.quick else 4000)
        persistent = results["persistent"]
        print(
            f"{'persistent, 4 acking consumers':<40} {persistent['acked_per_s']:>10,.0f} msg/s"
            f" ({persistent['duplicates']} duplicates)"
        )
    finally:
        if node is not None:
            node.stop()
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"machine idle before the runs: {idle:.0%}; results in {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
