"""
What C{/metrics} costs append throughput (issue 17: at most 2% while
scraped every second).

    python benchmarks/metrics_overhead.py [--seconds 3] [--rounds 3] [--mem-db]
                                          [--before REV [--before-probe PATH]]
    python benchmarks/metrics_overhead.py --micro

Starts a node (on-disk database unless C{--mem-db}) and runs the append
loads of C{benchmarks/tcp.py} (its C{tcpload} client) in interleaved
rounds, without and with a scraper fetching C{GET /metrics} every second.
With C{--before REV} a second node runs the code of git revision C{REV}
(e.g. the commit before the metrics were added) beside it, so the cost of
the always-on counters is measured in the same run too.  Prints the median
of each configuration and writes C{benchmarks/results/metrics_overhead.json}.
Only talks to 127.0.0.1; every run is bounded in time.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# benchmarks/http.py would shadow the standard library's http package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from typing import Any, Optional  # noqa: E402

from tests.harness import NodeProcess  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_tcp", os.path.join(HERE, "tcp.py"))
assert _spec is not None and _spec.loader is not None
_tcp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tcp)
build_load_client = _tcp.build_load_client
run_load = _tcp.run_load

RESULTS = os.path.join(HERE, "results", "metrics_overhead.json")

#: (label, conns, in flight, events per write) of the append loads.
LOADS = (
    ("append 1 ev/write, 8 conns rr", 8, 1, 1),
    ("append pipelined 10x200 in flight", 10, 200, 1),
)


class Scraper(threading.Thread):
    """
    Fetches C{url} every C{interval} seconds until stopped.
    """

    def __init__(self, url: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.done = threading.Event()
        self.scrapes = 0
        self.bytes = 0
        self.seconds: list[float] = []

    def run(self) -> None:
        while not self.done.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.bytes = len(response.read())
                self.scrapes += 1
                self.seconds.append(time.perf_counter() - started)
            except OSError:
                pass
            self.done.wait(max(0.0, self.interval - (time.perf_counter() - started)))

    def stop(self) -> None:
        self.done.set()
        self.join(10)


class BeforeNode(NodeProcess):
    """
    A node running the code of an exported older revision.
    """

    def __init__(self, directory: str, code: str, probe: str = "/metrics", **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.probe = probe
        # The node runs with its directory first on sys.path (python -c):
        # the older package found there wins over this checkout's.
        os.symlink(os.path.join(code, "estwisted"), os.path.join(self.directory, "estwisted"))

    def start(self, timeout: float = 30.0) -> NodeProcess:
        started = super().start(timeout)
        url = f"http://127.0.0.1:{self.ext_http_port}{self.probe}"
        try:
            urllib.request.urlopen(url, timeout=5).close()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return started
        raise RuntimeError(f"the older node serves {self.probe}: it is not running the old code")


def export(revision: str, directory: str) -> str:
    """
    The tree of C{revision} unpacked under C{directory}.
    """
    target = os.path.join(directory, "before")
    os.makedirs(target)
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return target


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} so far (Linux C{/proc}).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    binary: str, node: NodeProcess, scrape: bool, seconds: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    scraper: Optional[Scraper] = None
    assert node.process is not None
    pid = node.process.pid
    if scrape:
        scraper = Scraper(f"http://127.0.0.1:{node.ext_http_port}/metrics")
        scraper.start()
    try:
        for label, conns, inflight, events in LOADS:
            before = cpu_seconds(pid)
            r = run_load(binary, node.ext_tcp_port, "write", conns, inflight, events, seconds)
            used = cpu_seconds(pid) - before
            out[label] = r["events_per_s"]
            out[f"{label} cpu_us_per_event"] = used / max(1, r["events"]) * 1e6
    finally:
        if scraper is not None:
            scraper.stop()
            out["scrapes"] = scraper.scrapes
            out["scrape_bytes"] = scraper.bytes
            if scraper.seconds:
                out["scrape_ms_median"] = statistics.median(scraper.seconds) * 1000
    return out


def _best(fn: Any, number: int, repeat: int = 7) -> float:
    """
    Seconds per call of C{fn}: the best of C{repeat} runs of C{number}.
    """
    import timeit

    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def micro() -> dict[str, float]:
    """
    In-process costs of each metric update and of one scrape, in
    microseconds (best of 7): the parts an end-to-end run on a shared
    machine cannot resolve to 2%.
    """
    import uuid

    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from estwisted.core.model import NewEvent
    from estwisted.core.progress import ProgressBoard
    from estwisted.core.streams import StreamStore
    from estwisted.core.users import UserManager
    from estwisted.http.api import HttpApi
    from estwisted.http.info import NodeInfo
    from estwisted.storage import flushing
    from estwisted.storage.index import StreamIndex
    from estwisted.storage.memory import MemoryLog
    from estwisted.subscriptions.persistent import PersistentSubscriptions
    from estwisted.subscriptions.volatile import SubscriptionHub
    from estwisted.tcp.server import TcpClientFactory
    from estwisted.web.metrics import NodeMetrics, NodeSources, ThreadHistogram
    from estwisted.wire import messages_pb2 as pb
    from estwisted.wire.framing import frame
    from estwisted.wire.tcpcodec import TcpCommand, encode_package

    out: dict[str, float] = {}
    clock = Clock()
    store = StreamStore(MemoryLog(), StreamIndex(), clock)
    users = UserManager(store, iterations=1)
    users.ensure_default_users()
    for i in range(200):
        events = [NewEvent(uuid.uuid4().bytes, "t", b"x" * 100) for _ in range(50)]
        store.append(f"stream-{i}", -2, events, None)
        clock.advance(0)
    hub = SubscriptionHub(store)
    persistent = PersistentSubscriptions(store, clock)
    persistent.start()
    clock.advance(0)
    factory = TcpClientFactory(
        store, hub, persistent, clock, 2.0, 1.0, 1024 * 1024, users=users
    )
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    read = pb.ReadStreamEvents(event_stream_id="stream-1", from_event_number=0, max_count=1)
    package = frame(encode_package(
        TcpCommand.ReadStreamEventsForward, uuid.uuid4().bytes, read.SerializePartialToString(),
        "admin", "changeit",
    ))

    def one_read() -> None:
        protocol.dataReceived(package)
        transport.clear()

    api = HttpApi(store, hub, persistent, clock, NodeInfo())
    board = ProgressBoard()
    for n in range(20):
        board.start("scavenge", f"s-{n}", 10, 0.0, unit="chunks", log=False).finish(1.0)
    metrics = NodeMetrics(NodeSources(store=store, log=store._log, hub=hub,
                                      persistent=persistent, http_api=api,
                                      tcp_factories={"external": factory}, board=board))
    def write_frame(i: int) -> bytes:
        m = pb.WriteEvents(event_stream_id=f"w-{i % 100}", expected_version=-2)
        e = m.events.add()
        e.event_id = uuid.uuid4().bytes
        e.event_type = "t"
        e.data_content_type = 0
        e.metadata_content_type = 0
        e.data = b"x" * 100
        return frame(encode_package(
            TcpCommand.WriteEvents, uuid.uuid4().bytes, m.SerializePartialToString(),
            "admin", "changeit",
        ))

    writes = b"".join(write_frame(i) for i in range(200))

    def pipelined_writes() -> None:
        # 200 pipelined writes in one read, one group commit, the replies
        protocol.dataReceived(writes)
        clock.advance(0)
        clock.advance(0)
        transport.clear()

    # Interleaved, best of each: the store grows as the writes go on.
    best: dict[str, list[float]] = {}
    for round_ in range(6):
        for metered in ((False, True) if round_ % 2 else (True, False)):
            factory.request_meter = metrics.tcp_requests if metered else None
            key = "metered" if metered else "unmetered"
            best.setdefault(f"tcp_read_{key}_us", []).append(_best(one_read, 2000, 3) * 1e6)
            best.setdefault(f"tcp_write_pipelined_{key}_us", []).append(
                _best(pipelined_writes, 10, 3) / 200 * 1e6)
    out.update({k: min(v) for k, v in best.items()})
    # The dispatch step alone, with a handler that does nothing: what the
    # meter adds to every request, without the noise of the rest.
    dispatcher = protocol.dispatcher
    dispatcher._handlers[TcpCommand.ReadEvent] = lambda corr, data, principal: None
    corr = uuid.uuid4().bytes

    def bare_dispatch() -> None:
        dispatcher.dispatch(TcpCommand.ReadEvent, corr, b"", None)

    bare: dict[str, list[float]] = {}
    for round_ in range(6):
        for metered in ((False, True) if round_ % 2 else (True, False)):
            factory.request_meter = metrics.tcp_requests if metered else None
            key = "metered" if metered else "unmetered"
            bare.setdefault(f"tcp_dispatch_{key}_us", []).append(
                _best(bare_dispatch, 200000, 3) * 1e6)
    out.update({k: min(v) for k, v in bare.items()})
    factory.request_meter = None
    meter = metrics.tcp_requests
    started = time.perf_counter()
    out["tcp_observe_call_us"] = _best(
        lambda: meter.observe(TcpCommand.WriteEvents, time.perf_counter() - started), 100000
    ) * 1e6
    histogram = ThreadHistogram((0.001, 0.01, 0.1))
    results: list[float] = []
    worker = threading.Thread(target=lambda: results.append(
        _best(lambda: histogram.observe(0.002), 100000)))
    worker.start()
    worker.join(60)
    out["fsync_observe_other_thread_us"] = results[0] * 1e6
    fd, path = tempfile.mkstemp(prefix="estwisted-fsync-")
    try:
        os.write(fd, b"x")
        flushing.sync_observer = None
        out["fdatasync_untimed_us"] = _best(lambda: flushing.fdatasync(fd), 50) * 1e6
        flushing.sync_observer = histogram.observe
        out["fdatasync_timed_us"] = _best(lambda: flushing.fdatasync(fd), 50) * 1e6
    finally:
        flushing.sync_observer = None
        os.close(fd)
        os.unlink(path)
    out["scrape_render_us"] = _best(metrics.render, 50) * 1e6
    out["scrape_bytes"] = float(len(metrics.render()))
    metrics.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mem-db", action="store_true")
    parser.add_argument("--before", help="also run a node on this git revision's code")
    parser.add_argument(
        "--before-probe", default="/metrics",
        help="a path the --before node must answer 404 (proof it runs the old code); "
        "/progress for a revision with /metrics but without the progress and new metrics",
    )
    parser.add_argument(
        "--micro", action="store_true",
        help="only the in-process costs of the metric updates and of a scrape",
    )
    options = parser.parse_args()
    if options.micro:
        costs = micro()
        for name, value in costs.items():
            print(f"{name:<32} {value:12.2f}")
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS.replace(".json", "_micro.json"), "w") as f:
            json.dump(costs, f, indent=1)
        return
    workdir = tempfile.mkdtemp(prefix="estwisted-metrics-bench-")
    binary = build_load_client(workdir)
    nodes: dict[str, NodeProcess] = {
        "metrics": NodeProcess(os.path.join(workdir, "node"), mem_db=options.mem_db)
    }
    if options.before:
        code = export(options.before, workdir)
        nodes["before"] = BeforeNode(
            os.path.join(workdir, "before-node"), code, probe=options.before_probe,
            mem_db=options.mem_db,
        )
    configs = [("metrics", False), ("metrics", True)]
    if options.before:
        configs.insert(0, ("before", False))
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        for node in nodes.values():
            node.start()
        # Warm up each node once.
        for node in nodes.values():
            run_load(binary, node.ext_tcp_port, "write", 8, 1, 1, 1.0)
        for _ in range(options.rounds):
            for name, scrape in configs:
                key = f"{name}{' + scraper 1/s' if scrape else ''}"
                samples.setdefault(key, []).append(
                    measure(binary, nodes[name], scrape, options.seconds)
                )
    finally:
        for node in nodes.values():
            node.stop()
    summary: dict[str, dict[str, float]] = {}
    for key, runs in samples.items():
        summary[key] = {
            label: statistics.median(r[label] for r in runs) for label, _, _, _ in LOADS
        }
        for label, _, _, _ in LOADS:
            cpu = f"{label} cpu_us_per_event"
            summary[key][cpu] = statistics.median(r[cpu] for r in runs)
        scrapes = [r for r in runs if "scrapes" in r]
        if scrapes:
            summary[key]["scrapes_per_run"] = statistics.median(r["scrapes"] for r in scrapes)
            summary[key]["scrape_bytes"] = scrapes[-1]["scrape_bytes"]
            summary[key]["scrape_ms_median"] = statistics.median(
                r.get("scrape_ms_median", 0.0) for r in scrapes
            )
    base = summary["metrics"]
    print(f"{'configuration':<32} " + "  ".join(f"{label:>34}" for label, _, _, _ in LOADS))
    for key, values in summary.items():
        cells = []
        for label, _, _, _ in LOADS:
            change = (values[label] / base[label] - 1) * 100 if base[label] else 0.0
            cells.append(f"{values[label]:>22,.0f} ev/s ({change:+5.1f}%)")
        print(f"{key:<32} " + "  ".join(cells))
    print("node CPU per event (µs; less sensitive than throughput to other load)")
    for key, values in summary.items():
        cells = []
        for label, _, _, _ in LOADS:
            cpu = f"{label} cpu_us_per_event"
            change = (values[cpu] / base[cpu] - 1) * 100 if base[cpu] else 0.0
            cells.append(f"{values[cpu]:>24.1f} µs ({change:+5.1f}%)")
        print(f"{key:<32} " + "  ".join(cells))
    print("(percentages relative to the metrics node without a scraper; "
          f"{options.rounds} interleaved rounds of {options.seconds:g} s, medians)")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(
            {"options": vars(options), "summary": summary, "runs": samples}, f, indent=1
        )
    print(f"results in {os.path.relpath(RESULTS, ROOT)}")


if __name__ == "__main__":
    main()
