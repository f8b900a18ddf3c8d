"""
What C{/metrics} costs append throughput (issue 17: at most 2% while
scraped every second).

    python benchmarks/metrics_overhead.py [--seconds 3] [--rounds 3] [--mem-db]
                                          [--before REV [--before-probe PATH]]

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
    options = parser.parse_args()
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
