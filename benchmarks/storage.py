# -*- test-case-name: estwisted.storage.test.test_event_log -*-
"""
Storage benchmark: prints figures and writes them as JSON to
C{benchmarks/results/storage.json}.

  - appends/s with 1, 16 and 256 concurrent appenders, each appending one
    event or a batch of 100 events (100-byte data, fsync on).  Appenders
    are simulated group commit without a reactor: in each round every
    appender appends its events to its own stream, then one
    L{ChunkedLog.flush} (one joined C{pwrite} + C{fdatasync}) makes them all
    durable and the index is updated, as the stream store does;
  - read throughput forward and backward over the log (pages of 4096, as
    a C{$all} read);
  - restart time with 1M events: L{open_storage} with the persisted index,
    and with the index file removed (rebuild from the log), in-process and
    as a whole new process up to the first read;
  - index memory per event and peak RSS;
  - the longest garbage-collector pause seen during the append runs.

Usage: C{python benchmarks/storage.py [--events N] [--seconds S] [--dir D]}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

# run as a script, this directory comes first on sys.path, where sibling
# benchmark modules (http.py) would shadow the standard library
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from estwisted.storage.index import StreamIndex
from estwisted.storage.log import ChunkedLog
from estwisted.storage.open import INDEX_DIRECTORY, open_storage

DATA = b"x" * 100
EVENT_ID = b"\x01" * 16
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "storage.json")


class GcWatch:
    """
    Records the longest cyclic-GC pause while installed.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._start)

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *args: Any) -> None:
        gc.callbacks.remove(self)


def bench_appends(
    directory: str, appenders: int, batch: int, seconds: float, mode: str = "fdatasync"
) -> dict[str, Any]:
    """
    C{mode}: C{fdatasync} (the default log), C{dsync} (C{O_DSYNC} writes) or
    C{nosync} (C{fdatasync} replaced by a no-op: the Python cost alone).
    """
    path = os.path.join(directory, f"append-{appenders}-{batch}-{mode}")
    real_sync = os.fdatasync
    if mode == "nosync":
        os.fdatasync = lambda fd: None
    try:
        return _bench_appends(path, appenders, batch, seconds, mode)
    finally:
        os.fdatasync = real_sync


def _bench_appends(
    path: str, appenders: int, batch: int, seconds: float, mode: str
) -> dict[str, Any]:
    log = ChunkedLog(path, dsync=mode == "dsync")
    index = StreamIndex()
    streams = [f"stream-{i}" for i in range(appenders)]
    numbers = [0] * appenders
    append = log.append
    add = index.add
    flush = log.flush
    events = 0
    flushes = 0
    latencies: list[float] = []
    entries: list[tuple[str, int, int]] = []
    gc.collect()
    gc.freeze()
    with GcWatch() as watch:
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            t0 = now
            for a in range(appenders):
                stream = streams[a]
                n = numbers[a]
                for _ in range(batch):
                    entries.append(
                        (stream, n, append(stream, n, EVENT_ID, "bench", 0, DATA, b"", 0))
                    )
                    n += 1
                numbers[a] = n
            flush()
            for stream, n, position in entries:
                add(stream, n, position)
            events += len(entries)
            entries.clear()
            flushes += 1
            now = time.perf_counter()
            latencies.append(now - t0)
        elapsed = now - start
        cpu = time.process_time() - cpu
    log.close()
    shutil.rmtree(path)
    latencies.sort()
    return {
        "mode": mode,
        "appenders": appenders,
        "batch": batch,
        "events": events,
        "flushes": flushes,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "cpu_us_per_event": round(cpu / events * 1e6, 2),
        "flush_p50_us": round(latencies[len(latencies) // 2] * 1e6, 1),
        "flush_p99_us": round(latencies[int(len(latencies) * 0.99)] * 1e6, 1),
        "longest_gc_pause_ms": round(watch.longest * 1000, 2),
    }


def reference(directory: str) -> dict[str, Any]:
    """
    Two probes of this machine's state at run time, to compare the figures
    with the quiet-machine limits of shared/performance.md: C{fdatasync}s/s
    of 100-byte appends to a preallocated file (L3: 44.6k/s quiet), and the
    time of a plain Python scan of 1M 100-byte records with a 28-byte header
    building a dict index (L30: 0.348 s quiet).
    """
    import struct

    path = os.path.join(directory, "probe")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.posix_fallocate(fd, 0, 64 << 20)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        os.pwrite(fd, DATA, n * 100)
        os.fdatasync(fd)
        n += 1
    syncs = n / (time.perf_counter() - start)
    os.close(fd)
    os.unlink(path)
    head = struct.Struct("<IqqiI")
    record = b"\x00" * 100
    buf = b"".join(
        head.pack(128, i * 128, i % 10_000, i // 10_000, 0) + record for i in range(1_000_000)
    )
    unpack = head.unpack_from
    index: dict[int, int] = {}
    start = time.perf_counter()
    off = 0
    end = len(buf)
    while off < end:
        size, position, stream, number, _ = unpack(buf, off)
        index[position] = stream
        off += size
    scan = time.perf_counter() - start
    return {
        "fdatasync_per_s_100B": round(syncs),
        "fdatasync_quiet_L3": 44600,
        "python_scan_1M_s": round(scan, 3),
        "python_scan_1M_quiet_L30_s": 0.348,
        "cpu_slowdown_vs_quiet": round(scan / 0.348, 2),
    }


def fill(path: str, events: int, streams: int) -> float:
    """
    Write C{events} events over C{streams} streams in 1000-event flushes and
    close (persisting the index).

    @return: seconds taken.
    """
    start = time.perf_counter()
    log, index, closer = open_storage(path, False, 256 * 1024 * 1024)
    append = log.append
    add = index.add
    numbers = [0] * streams
    done = 0
    while done < events:
        entries = []
        for i in range(done, min(events, done + 1000)):
            s = i % streams
            stream = f"stream-{s}"
            n = numbers[s]
            numbers[s] = n + 1
            entries.append((stream, n, append(stream, n, EVENT_ID, "bench", 0, DATA, b"", 0)))
        log.flush()
        for stream, n, position in entries:
            add(stream, n, position)
        done += len(entries)
    closer()
    return time.perf_counter() - start


def bench_reads(path: str) -> dict[str, Any]:
    log, index, closer = open_storage(path, False)
    result: dict[str, Any] = {}
    try:
        start = time.perf_counter()
        count = 0
        p = 0
        while True:
            page = log.read_forward(p, 4096)
            if not page:
                break
            count += len(page)
            p = page[-1].next_position
        elapsed = time.perf_counter() - start
        result["forward_events_per_s"] = round(count / elapsed)
        start = time.perf_counter()
        count = 0
        p = log.end_position
        while True:
            page = log.read_backward(p, 4096)
            if not page:
                break
            count += len(page)
            p = page[-1].position
        elapsed = time.perf_counter() - start
        result["backward_events_per_s"] = round(count / elapsed)
        # a stream read through the index: 100-event pages of one stream
        start = time.perf_counter()
        count = 0
        read = log.read
        for s in range(0, 1000, 10):
            stream = f"stream-{s}"
            last = index.last_event_number(stream)
            for first in range(0, last + 1, 100):
                for position in index.positions(stream, first, first + 99):
                    read(position)
                    count += 1
        elapsed = time.perf_counter() - start
        result["stream_read_events_per_s"] = round(count / elapsed)
    finally:
        closer()
    return result


_CHILD = """
import sys, time
t0 = time.perf_counter()
from estwisted.storage.open import open_storage
t1 = time.perf_counter()
log, index, closer = open_storage(sys.argv[1], False)
t2 = time.perf_counter()
p = index.get("stream-3", 0)
log.read(p)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t0, closer.report["rebuilt"], len(index))
closer()
"""


def bench_restart(path: str, events: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    index_file = os.path.join(path, INDEX_DIRECTORY, "stream.idx")
    for mode in ("persisted", "rebuilt"):
        if mode == "rebuilt":
            os.rename(index_file, index_file + ".saved")
        start = time.perf_counter()
        log, index, closer = open_storage(path, False)
        elapsed = time.perf_counter() - start
        assert closer.report["rebuilt"] == (mode == "rebuilt"), closer.report
        assert len(index) == events, (len(index), events)
        if mode == "persisted":
            sizes = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in index.streams())
            sizes += sys.getsizeof(dict(index.streams()))
            result["index_bytes_per_event"] = round(sizes / len(index), 2)
        closer()
        gc.unfreeze()
        del log, index, closer
        gc.collect()
        result[f"open_{mode}_s"] = round(elapsed, 3)
        if mode == "rebuilt":
            result["rebuild_s_per_1M"] = round(elapsed * 1_000_000 / events, 3)
    os.replace(index_file + ".saved", index_file)
    # whole process: interpreter start, imports, open, first read
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, path], capture_output=True, text=True, check=True
    ).stdout.split()
    result["process_start_to_first_read_persisted_s"] = round(time.perf_counter() - start, 3)
    result["process_import_s"] = round(float(out[0]), 3)
    result["process_open_s"] = round(float(out[1]), 3)
    # crash recovery: 10,000 more events, then the process "dies" (no index
    # save, no clean close); the next open recovers the tail past the
    # lagging writer checkpoint, erases the unwritten tail and indexes the
    # 10,000 events on top of the persisted index
    log, index, closer = open_storage(path, False)
    for _ in range(100):
        entries = []
        for i in range(100):
            stream = f"stream-{i}"
            n = index.last_event_number(stream) + 1
            entries.append((stream, n, log.append(stream, n, EVENT_ID, "bench", 0, DATA, b"", 0)))
        log.flush()
        for stream, n, position in entries:
            index.add(stream, n, position)
    log._release()
    closer._closed = True
    gc.unfreeze()
    del log, index, closer
    gc.collect()
    start = time.perf_counter()
    log, index, closer = open_storage(path, False)
    result["open_after_crash_s"] = round(time.perf_counter() - start, 3)
    result["open_after_crash_report"] = closer.report
    assert len(index) == events + 10_000
    closer()
    gc.unfreeze()
    return result


def index_rss(path: str) -> dict[str, Any]:
    """
    Resident memory of a fresh process before and after opening the
    database with its persisted index (from C{/proc/self/status}).
    """
    code = (
        "import sys\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(('VmRSS', 'VmHWM')):\n"
        "            yield int(line.split()[1])\n"
        "from estwisted.storage.open import open_storage\n"
        "before, _ = sorted(rss())\n"
        "log, index, closer = open_storage(sys.argv[1], False)\n"
        "after, peak = sorted(rss())\n"
        "print(before, after, peak, len(index))\n"
        "closer()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, text=True, check=True
    ).stdout.split()
    before, after, peak, n = (int(x) for x in out)
    return {
        "rss_before_open_mib": round(before / 1024, 1),
        "rss_after_open_mib": round(after / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_growth_bytes_per_event": round((after - before) * 1024 / n, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="estw-bench-", dir=args.dir)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "method": (
            "appenders = records of that many logical appenders joined into one "
            "flush (simulated group commit, no reactor); 100-byte data; fsync on"
        ),
    }
    try:
        results["reference"] = reference(directory)
        print(f"reference: {results['reference']}", flush=True)
        appends = []
        for batch in (1, 100):
            for appenders in (1, 16, 256):
                r = bench_appends(directory, appenders, batch, args.seconds)
                appends.append(r)
                print(
                    f"append: {appenders:>3} appenders x {batch:>3} events: "
                    f"{r['events_per_s']:>10,} events/s  {r['cpu_us_per_event']} cpu-us/event  "
                    f"flush p50 {r['flush_p50_us']} us p99 {r['flush_p99_us']} us  "
                    f"longest GC {r['longest_gc_pause_ms']} ms",
                    flush=True,
                )
        for mode in ("dsync", "nosync"):
            for batch in (1, 100):
                r = bench_appends(directory, 1, batch, args.seconds, mode)
                appends.append(r)
                print(
                    f"append ({mode}): 1 appender x {batch:>3} events: "
                    f"{r['events_per_s']:>10,} events/s  {r['cpu_us_per_event']} cpu-us/event",
                    flush=True,
                )
        results["appends"] = appends
        path = os.path.join(directory, "big")
        gc.unfreeze()
        elapsed = fill(path, args.events, args.streams)
        results["fill"] = {
            "events": args.events,
            "streams": args.streams,
            "seconds": round(elapsed, 2),
            "events_per_s": round(args.events / elapsed),
        }
        print(f"fill: {args.events:,} events in {elapsed:.2f} s", flush=True)
        results["reads"] = bench_reads(path)
        print(f"reads: {results['reads']}", flush=True)
        results["memory"] = index_rss(path)
        results["restart"] = bench_restart(path, args.events)
        print(f"restart: {results['restart']}", flush=True)
        print(f"memory: {results['memory']}", flush=True)
        results["peak_rss_mib_this_process"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
