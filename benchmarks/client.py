"""
Benchmark of L{estwisted.client} against one estwisted node, beside
C{benchmarks/tcp.py}'s C load client on the same node in the same run.

    python benchmarks/client.py [--seconds 2] [--rounds 3] [--mem-db] [--quick]
                                [--profile FILE]

It starts its own node (C{twistd -n estore} through L{tests.harness}) on
127.0.0.1, and measures: appends/s through one client connection with 1
and with 64 appends in flight, the C client's rate for the same shapes,
and catch-up read events/s (a C{subscribe_to_stream_from} over 10,000
events until it goes live).  The machine is shared, so each shape is run
C{--rounds} times, the C client and this client back to back in each
round (the C client in a thread while the client's reactor idles); the
figures are the medians, and the ratio is the median of the rounds'
ratios.  It also reports this process's CPU time per append (the
client's own cost), and the node's CPU time per append from this client
and from the C client paced to the same rate (what a request costs the
node depends on the request rate).  Beside them, a bare Twisted protocol
(hand-framed requests, no client library) on the same node shows the
floor of any client on this reactor.  Prints a table and writes C{benchmarks/results/client.json}.
Every run is bounded in time.
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
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this directory has an http.py that would shadow the standard library's
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results", "client.json")
PAYLOAD = b'{"x": "' + b"a" * 90 + b'"}'


def process_cpu(pid: int) -> float:
    """
    CPU seconds (user and system, all threads) process C{pid} has used.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def appends(
    connection: Any, inflight: int, seconds: float, tag: str, node_pid: int
) -> tuple[float, float, float]:
    """
    Appends/s through C{connection} with C{inflight} writers for C{seconds},
    this process's CPU time per append in microseconds (the client's own
    cost, which the machine's other load does not change much), and the
    node's.
    """
    from twisted.internet.defer import Deferred, gatherResults

    from estwisted.client import EventData, ExpectedVersion

    count = [0]
    deadline = time.monotonic() + seconds

    async def writer(stream: str) -> None:
        while time.monotonic() < deadline:
            await connection.append_to_stream(
                stream, ExpectedVersion.ANY, [EventData(uuid.uuid4(), "bench", PAYLOAD)]
            )
            count[0] += 1

    started = time.monotonic()
    cpu = time.process_time()
    node_cpu = process_cpu(node_pid)
    await gatherResults(
        [
            Deferred.fromCoroutine(writer(f"client-bench-{tag}-{inflight}-{i}"))
            for i in range(inflight)
        ]
    )
    cpu = time.process_time() - cpu
    node_cpu = process_cpu(node_pid) - node_cpu
    return (
        count[0] / (time.monotonic() - started),
        cpu / count[0] * 1e6,
        node_cpu / count[0] * 1e6,
    )


def raw_protocol() -> Any:
    """
    The floor of any Twisted client: a bare protocol that keeps
    C{inflight} C{WriteEvents} outstanding (a new event id each, framed by
    hand, sent with C{transport.write}), with no client library at all.
    """
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    from estwisted.client._protocol import frame_request
    from estwisted.wire import messages_pb2 as pb

    class RawWriter(Protocol):
        buffer = b""
        done: Any = None

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]

        def run(self, inflight: int, seconds: float) -> Deferred[float]:
            self.count = 0
            self.outstanding = 0
            self.started = time.monotonic()
            self.deadline = self.started + seconds
            self.done = Deferred()
            for _ in range(inflight):
                self.send_one()
            d: Deferred[float] = self.done
            return d

        def send_one(self) -> None:
            message = pb.WriteEvents(
                event_stream_id="client-bench-raw", expected_version=-2, require_master=True
            )
            e = message.events.add()
            e.event_id = uuid.uuid4().bytes_le
            e.event_type = "bench"
            e.data_content_type = e.metadata_content_type = 1
            e.data = PAYLOAD
            self.outstanding += 1
            self.transport.write(  # type: ignore[union-attr]
                frame_request(0x82, os.urandom(16), message.SerializeToString())
            )

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            while len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "little")
                if len(self.buffer) < 4 + size:
                    break
                package = self.buffer[4 : 4 + size]
                self.buffer = self.buffer[4 + size :]
                if package[0] == 0x01:  # heartbeat request
                    self.transport.write(  # type: ignore[union-attr]
                        frame_request(0x02, package[2:18], b"")
                    )
                    continue
                self.outstanding -= 1
                self.count += 1
                if time.monotonic() < self.deadline:
                    self.send_one()
                elif not self.outstanding and self.done is not None:
                    done, self.done = self.done, None
                    done.callback(self.count / (time.monotonic() - self.started))

    return RawWriter


async def catch_up(connection: Any, stream: str) -> tuple[float, float]:
    """
    Events/s of a catch-up subscription reading C{stream} until live, and
    this process's CPU time per event in microseconds.
    """
    seen = [0]
    started = time.monotonic()
    cpu = time.process_time()
    subscription = connection.subscribe_to_stream_from(
        stream, None, lambda s, e: seen.__setitem__(0, seen[0] + 1), read_batch_size=500
    )
    await subscription.live
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    await subscription.stop()
    if seen[0] != 10_000:
        raise RuntimeError(f"the catch-up subscription saw {seen[0]} events, not 10,000")
    return seen[0] / elapsed, cpu / seen[0] * 1e6


async def client_runs(
    reactor: Any,
    port: int,
    seconds: float,
    rounds: int,
    c_load: Callable[[int, float], tuple[float, float]],
    node_pid: int,
) -> dict[str, Any]:
    from twisted.internet.threads import deferToThread

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
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory

    raw = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(raw_protocol())
    )
    runs: dict[str, Any] = {}
    for inflight in (1, 64):
        mine, theirs, cpu, node_mine, node_theirs, floor = [], [], [], [], [], []
        for r in range(rounds):
            c_rate, _ = await deferToThread(c_load, inflight, 0.0)
            theirs.append(c_rate)
            floor.append(await raw.run(inflight, seconds))
            rate, us, node_us = await appends(connection, inflight, seconds, str(r), node_pid)
            mine.append(rate)
            cpu.append(us)
            node_mine.append(node_us)
            # the node's cost per append from the C client at this client's
            # rate (a node's cost per request depends on the request rate)
            _, c_node = await deferToThread(c_load, inflight, rate)
            node_theirs.append(c_node)
        runs[f"appends_inflight_{inflight}"] = {
            "client": mine, "c_client": theirs, "cpu": cpu, "raw_twisted": floor,
            "node_cpu": node_mine, "node_cpu_c": node_theirs,
        }

    stream = "client-bench-read"
    for _ in range(0, 10_000, 500):
        await connection.append_to_stream(
            stream,
            ExpectedVersion.ANY,
            [EventData(uuid.uuid4(), "bench", PAYLOAD) for _ in range(500)],
        )
    runs["catch_up_read"] = [await catch_up(connection, stream) for _ in range(rounds)]
    await connection.close()
    raw.transport.loseConnection()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mem-db", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one round of 1 s (smoke test)")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the client side into FILE (pstats)"
    )
    options = parser.parse_args()
    seconds = 1.0 if options.quick else options.seconds
    rounds = 1 if options.quick else max(1, options.rounds)

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
    results: dict[str, Any] = {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "durable": not options.mem_db,
    }

    def c_load(inflight: int, rate: float) -> tuple[float, float]:
        """
        The C client's appends/s (paced to C{rate} if not 0), and the
        node's CPU microseconds per append.
        """
        assert node.process is not None
        before = process_cpu(node.process.pid)
        result = run_load(
            binary, node.ext_tcp_port, "write", 1, inflight, 1, seconds, rate=rate
        )
        used = process_cpu(node.process.pid) - before
        events: int = result["events"]
        return float(result["events_per_s"]), used / max(1, events) * 1e6

    try:
        from twisted.internet import defer, task

        out: dict[str, Any] = {}

        def run(reactor: Any) -> Any:
            assert node.process is not None
            d = defer.Deferred.fromCoroutine(
                client_runs(reactor, node.ext_tcp_port, seconds, rounds, c_load, node.process.pid)
            )
            return d.addCallback(out.update)

        profiler = None
        if options.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            task.react(run)
        except SystemExit as e:
            if e.code:
                raise
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(options.profile)
    finally:
        node.stop()
    for inflight in (1, 64):
        run_ = out[f"appends_inflight_{inflight}"]
        mine, theirs = run_["client"], run_["c_client"]
        ratios = [m / t for m, t in zip(mine, theirs, strict=True)]
        floor = run_["raw_twisted"]
        floor_ratios = [f / t for f, t in zip(floor, theirs, strict=True)]
        results[f"appends_inflight_{inflight}"] = {
            "client_per_s": mine,
            "c_client_per_s": theirs,
            "ratios": ratios,
            "client_median_per_s": statistics.median(mine),
            "c_client_median_per_s": statistics.median(theirs),
            "median_ratio": statistics.median(ratios),
            "raw_twisted_per_s": floor,
            "raw_twisted_median_ratio": statistics.median(floor_ratios),
            "client_cpu_us_per_append": run_["cpu"],
            "client_cpu_us_per_append_median": statistics.median(run_["cpu"]),
            "node_cpu_us_per_append": run_["node_cpu"],
            "node_cpu_us_per_append_c_client": run_["node_cpu_c"],
            "node_cpu_us_per_append_median": statistics.median(run_["node_cpu"]),
            "node_cpu_us_per_append_c_client_median": statistics.median(run_["node_cpu_c"]),
        }
        print(
            f"append, {inflight:>2} in flight, 1 conn: client {statistics.median(mine):>9,.0f}/s"
            f"   C client {statistics.median(theirs):>9,.0f}/s"
            f"   (ratio {statistics.median(ratios):.0%}; rounds "
            + " ".join(f"{r:.0%}" for r in ratios)
            + f"; a bare Twisted protocol {statistics.median(floor_ratios):.0%}"
            + f"; client CPU {statistics.median(run_['cpu']):.1f} us/append;"
            f" node CPU {statistics.median(run_['node_cpu']):.1f} us/append,"
            f" {statistics.median(run_['node_cpu_c']):.1f} from the C client at that rate)"
        )
    reads = [r for r, _ in out["catch_up_read"]]
    cpu = [c for _, c in out["catch_up_read"]]
    results["catch_up_read"] = {
        "events_per_s": reads,
        "median": statistics.median(reads),
        "client_cpu_us_per_event": cpu,
        "client_cpu_us_per_event_median": statistics.median(cpu),
    }
    print(
        f"catch-up read (10,000 events):   client {statistics.median(reads):>9,.0f} ev/s"
        f"   (client CPU {statistics.median(cpu):.2f} us/event)"
    )
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results in {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
