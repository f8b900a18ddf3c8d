"""
CPU cost of the TCP write path in one process, without sockets, reactor
or disk: what the node's Python spends per write between the bytes of a
C{WriteEvents} package and the bytes of its C{WriteEventsCompleted}.

    python benchmarks/writepath.py [--writes 20000] [--profile]

Each shape feeds C{CONNS} connections (L{TcpClientProtocol} on a
C{StringTransport}) one C{WriteEvents} of C{EVENTS} events of 100 bytes
each, then runs the group commit (a C{Clock} turn, a memory log or, with
C{--disk}, a chunked log in a temporary directory whose flush includes
its C{pwrite}/C{fdatasync}), and repeats.  Prints µs of CPU per write and
per event, and writes C{benchmarks/results/writepath.json}.  Ratios to a
measurement taken in the same run are what count (the machine is shared).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "writepath.json")


def write_package(stream: str, events: int) -> bytes:
    from estwisted.wire import messages_pb2 as pb
    from estwisted.wire.framing import frame

    message = pb.WriteEvents(event_stream_id=stream, expected_version=-2, require_master=False)
    for _ in range(events):
        message.events.add(
            event_id=uuid.uuid4().bytes_le,
            event_type="bench",
            data_content_type=1,
            metadata_content_type=0,
            data=b"{" + b" " * 98 + b"}",
        )
    return frame(b"\x82\x00" + uuid.uuid4().bytes_le + message.SerializeToString())


def run(conns: int, events: int, writes: int, disk: bool, profile: bool) -> dict[str, Any]:
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from estwisted.core.streams import StreamStore
    from estwisted.storage.index import StreamIndex
    from estwisted.storage.log import ChunkedLog
    from estwisted.storage.memory import MemoryLog
    from estwisted.subscriptions.persistent import PersistentSubscriptions
    from estwisted.subscriptions.volatile import SubscriptionHub
    from estwisted.tcp.server import TcpClientFactory

    directory = tempfile.mkdtemp(prefix="estw-writepath-") if disk else None
    log: Any = ChunkedLog(directory, chunk_size=64 * 1024 * 1024) if directory else MemoryLog()
    clock = Clock()
    store = StreamStore(log, StreamIndex(), clock)
    hub = SubscriptionHub(store)
    persistent = PersistentSubscriptions(store, clock)
    factory = TcpClientFactory(store, hub, persistent, clock)
    clients = []
    for i in range(conns):
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000 + i))
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        clients.append((protocol, transport))
    rounds = max(1, writes // conns)
    # fresh event ids in every write (a repeat would be an idempotent no-op)
    packages = [
        [write_package(f"bench-{i}", events) for i in range(conns)] for _ in range(rounds)
    ]
    profiler = cProfile.Profile() if profile else None
    started_cpu = time.process_time()
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for round_packages in packages:
        for (protocol, _), package in zip(clients, round_packages, strict=True):
            protocol.dataReceived(package)
        clock.advance(0)
        for _, transport in clients:
            transport.clear()
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started
    for protocol, _ in clients:
        protocol.connectionLost()
    log.close()
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
    total = rounds * conns
    return {
        "conns": conns,
        "events_per_write": events,
        "writes": total,
        "disk": disk,
        "cpu_us_per_write": cpu * 1e6 / total,
        "cpu_us_per_event": cpu * 1e6 / (total * events),
        "wall_us_per_write": wall * 1e6 / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--disk", action="store_true")
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    out = []
    for conns, events in ((1, 1), (64, 1), (64, 100)):
        writes = options.writes if events == 1 else max(64, options.writes // 20)
        r = run(conns, events, writes, options.disk, options.profile)
        out.append(r)
        print(
            f"{conns:>3} conns x {events:>3} events: {r['cpu_us_per_write']:>8.1f} µs CPU/write"
            f"  {r['cpu_us_per_event']:>6.2f} µs/event",
            flush=True,
        )
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
