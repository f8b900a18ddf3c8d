"""
Scavenge benchmark: prints figures and writes them as JSON to
C{benchmarks/results/scavenge.json}.

A log of C{--events} events (default 1M, 100-byte data) in 1,000 streams of
which half are hard-deleted or truncated (C{$tb}) (three quarters with
C{--removed-quarters 3}), then one scavenge of
every completed chunk by L{estwisted.core.scavenger.Scavenger} on a
L{StreamStore}, in process with a deterministic clock standing in for the
reactor (each clock step runs one bounded slice, as one reactor turn does):

  - scavenge time and bytes of chunk files reclaimed;
  - append throughput (batches of 10 events, group commit per batch) and
    stream read throughput (pages of 100) in one loop, before the scavenge
    and while it runs with one scavenge slice per loop turn (as a reactor
    runs one slice per turn), and the longest slice (the latency a
    scavenge adds to one reactor turn);
  - with merging on (the default; C{--no-merge} turns it off), the chunk
    files before and after (a merge needs neighbours whose survivors fit
    one chunk together);
  - the catch-up of a new empty replica's log over the scavenged log, as
    the replication follower does it (scavenged chunks installed whole
    from their image, the others appended as records): seconds and MB/s
    of log, without the network.

Usage: C{python benchmarks/scavenge.py [--events N] [--dir D] [--no-merge]
[--removed-quarters 2|3]}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from twisted.internet.task import Clock  # noqa: E402

from estwisted.core.acl import SYSTEM_PRINCIPAL  # noqa: E402
from estwisted.core.model import EXPECTED_ANY, NewEvent  # noqa: E402
from estwisted.core.streams import StreamStore  # noqa: E402
from estwisted.storage.index import StreamIndex  # noqa: E402
from estwisted.storage.log import ChunkedLog  # noqa: E402

STREAMS = 1000
CHUNK_SIZE = 16 * 1024 * 1024


def chunk_files(path: str) -> int:
    return sum(1 for n in os.listdir(path) if n.startswith("chunk-"))


def catch_up(log: ChunkedLog, path: str) -> dict[str, Any]:
    """
    Copy C{log} into a new log at C{path} as a replica catching up does.
    """
    replica = ChunkedLog(path, chunk_size=log.chunk_size)
    began = time.perf_counter()
    replica.truncate(0)
    whole = 0
    end = log.end_position
    position = 0
    while position < end:
        start = log.scavenged_chunk_start(position)
        if start is not None and start == position:
            image = log.chunk_image(position // log.chunk_size)
            receiver = replica.receive_chunk(image.number, image.size)
            offset = 0
            while offset < image.size:
                data = image.read(offset, 64 * 1024)
                receiver.write(offset, data)
                offset += len(data)
            image.close()
            position = replica.install_chunk(receiver)
            whole += 1
            continue
        first, frames, after = log.read_raw(position, 64 * 1024)
        if not frames:
            break
        replica.append_raw(first, frames)
        if replica.pending_position - replica.end_position >= 4 * 1024 * 1024:
            replica.flush()
        position = after
    replica.flush()
    took = time.perf_counter() - began
    same = replica.end_position == end and replica.read_backward(end, 1000) == log.read_backward(
        end, 1000
    )
    replica.close()
    return {
        "catch_up_seconds": took,
        "catch_up_log_mb_per_s": end / took / 1e6,
        "catch_up_whole_chunks": whole,
        "catch_up_same_tail": same,
    }


def chunk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if "chunk-" in n)


def settle(clock: Clock, d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    for _ in range(1000):
        if out:
            break
        clock.advance(0.002)
    return out[0]


def populate(store: StreamStore, clock: Clock, events: int, removed_quarters: int = 2) -> None:
    per_stream = max(1, events // STREAMS)
    batch = 100
    for first in range(0, per_stream, batch):
        for s in range(STREAMS):
            new = [
                NewEvent(uuid.uuid4().bytes, "t", b"x" * 100)
                for _ in range(min(batch, per_stream - first))
            ]
            store.append(f"s-{s}", EXPECTED_ANY, new, SYSTEM_PRINCIPAL)
        clock.advance(0.002)
    for s in range(0, STREAMS, 4):
        settle(clock, store.delete_stream(f"s-{s}", EXPECTED_ANY, True, SYSTEM_PRINCIPAL))
    meta = json.dumps({"$tb": per_stream - 1}).encode()
    truncated = [s for s in range(STREAMS) if s % 4 == 2 or (removed_quarters >= 3 and s % 4 == 1)]
    for s in truncated:
        settle(clock, store.set_metadata(f"s-{s}", EXPECTED_ANY, meta, SYSTEM_PRINCIPAL))


class OneSliceClock:
    """
    The scavenger's clock: C{callLater(0, ...)} calls wait until L{step}
    runs one, as a reactor runs them one turn later (a L{Clock} would run
    the whole chain in one C{advance}).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.pending: list[Any] = []

    def seconds(self) -> float:
        return self._clock.seconds()

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self.pending.append((f, args, kwargs))

    def step(self) -> bool:
        if not self.pending:
            return False
        f, args, kwargs = self.pending.pop(0)
        f(*args, **kwargs)
        return True


def mixed_rate(
    store: StreamStore, clock: Clock, seconds: float, step: Any = None
) -> tuple[float, float, float]:
    """
    Loop: one append batch of 10 events (group commit), one read page of
    100 events, and (during the scavenge) one scavenge slice.

    @return: appends/s, events read/s, the longest slice in seconds.
    """
    appended = read = 0
    s = 1
    longest = 0.0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        new = [NewEvent(uuid.uuid4().bytes, "t", b"y" * 100) for _ in range(10)]
        settle(clock, store.append("bench-append", EXPECTED_ANY, new, SYSTEM_PRINCIPAL))
        appended += 10
        page = store.read_stream(f"s-{s}", 0, 100, True, False, SYSTEM_PRINCIPAL)
        read += len(page.events)
        s = s + 2 if s + 2 < STREAMS else 1
        if step is not None:
            t = time.perf_counter()
            more = step()
            longest = max(longest, time.perf_counter() - t)
            if not more:
                break
    took = time.perf_counter() - began
    return appended / took, read / took, longest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-merge", action="store_true", help="disable merging")
    parser.add_argument(
        "--removed-quarters",
        type=int,
        choices=(2, 3),
        default=2,
        help="quarters of the streams removed (2: one deleted, one truncated; 3: two truncated)",
    )
    options = parser.parse_args()
    base = tempfile.mkdtemp(prefix="estw-scav-bench-", dir=options.dir)
    try:
        clock = Clock()
        clock.advance(1_700_000_000)
        log = ChunkedLog(os.path.join(base, "db"), chunk_size=CHUNK_SIZE)
        store = StreamStore(log, StreamIndex(), clock)
        began = time.perf_counter()
        populate(store, clock, options.events, options.removed_quarters)
        # close the current chunk: scavenging needs completed chunks
        log.flush()
        print(f"populated {options.events} events in {time.perf_counter() - began:.1f} s")
        results: dict[str, Any] = {
            "events": options.events,
            "chunk_size": CHUNK_SIZE,
            "merging": not options.no_merge,
            "removed_quarters": options.removed_quarters,
        }
        appends, reads, _ = mixed_rate(store, clock, options.seconds)
        results["append_per_s_before"] = appends
        results["read_per_s_before"] = reads
        before = chunk_bytes(log.path)
        files_before = chunk_files(log.path)
        from estwisted.core.scavenger import Scavenger

        slices = OneSliceClock(clock)
        scavenger = Scavenger(
            store,
            log,
            store._index,
            slices,  # type: ignore[arg-type]
            merge=not options.no_merge,
        )
        _, done = scavenger.start()
        finished: list[Any] = []
        done.addBoth(finished.append)

        def step() -> bool:
            slices.step()
            return not finished

        began = time.perf_counter()
        appends, reads, longest = mixed_rate(store, clock, 3600.0, step)
        results["scavenge_seconds"] = time.perf_counter() - began
        results["append_per_s_during"] = appends
        results["read_per_s_during"] = reads
        results["longest_slice_ms"] = longest * 1000
        result = finished[0]
        results["result"] = result["result"]
        results["space_saved"] = result["spaceSaved"]
        results["chunk_bytes_before"] = before
        results["chunk_bytes_after"] = chunk_bytes(log.path)
        results["chunk_files_before"] = files_before
        results["chunk_files_after"] = chunk_files(log.path)
        results["merge_groups_left"] = len(log.merge_groups())
        results.update(catch_up(log, os.path.join(base, "replica")))
        log.close()
        for key, value in results.items():
            print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "scavenge.json"), "w") as f:
            json.dump(results, f, indent=2)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
