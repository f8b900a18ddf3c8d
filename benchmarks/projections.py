# -*- test-case-name: estwisted.projections.test.test_service -*-
"""
Projections benchmark (issue 16): prints figures and writes them as JSON to
C{benchmarks/results/projections.json}.

  - C{$by_category} keeping up with appends: a writer appends 100-byte
    events to 100 streams of one category at C{--rate} events/s (10k by
    default, the rate of C{benchmarks/tcp.py}) for C{--seconds}; every
    100 ms the lag of C{$ce-bench} behind the writer is sampled, in events
    and in ms (how long ago the newest linked event was appended);
  - catch-up of an existing log of C{--catch-up-events} events (1M for the
    issue's figure; 200k by default to spare a shared machine's memory):
    time and events/s until C{$ce-bench} links them all;
  - user (JavaScript) projections catching up on a log of
    C{--user-events} events (200k by default; JSON, 100 streams of one
    category): events/s of C{fromAll().when({$any: count})} and of a
    C{foreachStream()} one (one partition per stream), until the
    projection has handled the whole log (V8 on its worker thread, the
    store and runner on the reactor).

The store runs in-process on a L{MemoryLog} with the real reactor (group
commit as in a node), so the figures are the projection's own cost, not
the network's or the disk's.

Usage: C{python benchmarks/projections.py [--rate R] [--seconds S]
[--catch-up-events N] [--user-events N] [--user-only]}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from typing import Any

# run as a script, this directory comes first on sys.path, where sibling
# benchmark modules (http.py) would shadow the standard library
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.model import EXPECTED_ANY, NewEvent
from estwisted.core.streams import StreamStore
from estwisted.projections import (
    Definition,
    Mode,
    SystemProjection,
    SystemProjectionsService,
    UserProjectionsService,
)
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog

DATA = b"x" * 100
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "projections.json")


def _events(n: int) -> list[NewEvent]:
    return [NewEvent(uuid.uuid4().bytes, "bench", DATA, b"", False) for _ in range(n)]


def _linked(store: StreamStore) -> int:
    return max(store.last_event_number("$ce-bench") + 1, 0)


async def keep_up(reactor: Any, rate: int, seconds: float) -> dict[str, Any]:
    store = StreamStore(MemoryLog(), StreamIndex(), reactor)
    service = SystemProjectionsService(store, reactor, [SystemProjection.BY_CATEGORY])
    service.startService()
    tick = 0.01
    appended_at: list[float] = []
    writes: list[Deferred[Any]] = []
    state = {"i": 0}
    begin = time.monotonic()

    def append() -> None:
        # as many events as the rate asks for by now (ticks can be late)
        now = time.monotonic()
        due = int((now - begin) * rate) - len(appended_at)
        if due <= 0:
            return
        stream = f"bench-{state['i'] % 100}"
        state["i"] += 1
        appended_at.extend([now] * due)
        writes.append(store.append(stream, EXPECTED_ANY, _events(due), None))

    lag_events: list[int] = []
    lag_ms: list[float] = []

    def sample() -> None:
        linked = _linked(store)
        lag_events.append(len(appended_at) - linked)
        if linked:
            lag_ms.append((time.monotonic() - appended_at[linked - 1]) * 1000)

    writer = task.LoopingCall(append)
    sampler = task.LoopingCall(sample)
    started = time.monotonic()
    writer.start(tick)
    sampler.start(0.1, now=False)
    await task.deferLater(reactor, seconds, lambda: None)
    writer.stop()
    elapsed = time.monotonic() - started
    await gatherResults(writes)
    drain_start = time.monotonic()
    for _ in range(600):
        if _linked(store) >= len(appended_at):
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    drain = time.monotonic() - drain_start
    sampler.stop()
    await service.stopService()
    lag_events.sort()
    lag_ms.sort()

    def pct(values: list[Any], p: float) -> Any:
        return values[min(len(values) - 1, int(len(values) * p))] if values else None

    return {
        "target_rate": rate,
        "achieved_rate": round(len(appended_at) / elapsed),
        "appended": len(appended_at),
        "linked": _linked(store),
        "lag_events_p50": pct(lag_events, 0.5),
        "lag_events_p99": pct(lag_events, 0.99),
        "lag_events_max": lag_events[-1] if lag_events else None,
        "lag_ms_p50": round(pct(lag_ms, 0.5) or 0, 1),
        "lag_ms_p99": round(pct(lag_ms, 0.99) or 0, 1),
        "lag_ms_max": round(lag_ms[-1], 1) if lag_ms else None,
        "drain_after_stop_s": round(drain, 3),
    }


async def catch_up(reactor: Any, count: int) -> dict[str, Any]:
    store = StreamStore(MemoryLog(), StreamIndex(), reactor)
    batch = 1000
    for i in range(0, count, batch):
        await store.append(f"bench-{(i // batch) % 100}", EXPECTED_ANY,
                           _events(min(batch, count - i)), None)
    service = SystemProjectionsService(store, reactor, [SystemProjection.BY_CATEGORY])
    started = time.monotonic()
    service.startService()
    for _ in range(100_000):
        if _linked(store) >= count:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    elapsed = time.monotonic() - started
    await service.stopService()
    return {
        "events": count,
        "linked": _linked(store),
        "seconds": round(elapsed, 2),
        "events_per_s": round(count / elapsed),
    }


#: The user projections measured.
USER_QUERIES = {
    "count_all": "fromAll().when({$init: function () { return {n: 0}; },"
                 " $any: function (s, e) { s.n += 1; }})",
    "foreach_stream": "fromAll().foreachStream().when({$init: function () {"
                      " return {n: 0, sum: 0}; }, $any: function (s, e) {"
                      " s.n += 1; s.sum += e.body.v; }})",
}


async def user_projection(reactor: Any, count: int, which: str) -> dict[str, Any]:
    store = StreamStore(MemoryLog(), StreamIndex(), reactor)
    batch = 1000
    for i in range(0, count, batch):
        events = [NewEvent(uuid.uuid4().bytes, "bench", b'{"v":%d}' % (i + k), b"", True)
                  for k in range(min(batch, count - i))]
        await store.append(f"bench-{(i // batch) % 100}", EXPECTED_ANY, events, None)
    last = store.read_all(-1, 1, False, False, SYSTEM_PRINCIPAL).events[0].original.position
    service = UserProjectionsService(store, reactor)
    service.startService()
    started = time.monotonic()
    await service.create(Definition("bench", USER_QUERIES[which], Mode.CONTINUOUS))
    runner = service.get("bench")
    for _ in range(100_000):
        if runner.position >= last or runner.status not in ("Running", "Stopped"):
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    elapsed = time.monotonic() - started
    handled = runner.processed
    status = runner.status
    partitions = len(runner.known_partitions())
    # the count proves every event was handled
    first = sorted(runner.known_partitions())[:1] or [""]
    state = await Deferred.fromCoroutine(runner.state(first[0]))
    await service.stopService()
    return {
        "query": USER_QUERIES[which],
        "events": count,
        "records_read": handled,
        "partitions": partitions,
        "status": status,
        "state": json.loads(state) if state else None,
        "seconds": round(elapsed, 2),
        "events_per_s": round(count / elapsed),
    }


async def main(reactor: Any, args: argparse.Namespace) -> None:
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    if not args.user_only:
        results["keep_up"] = await keep_up(reactor, args.rate, args.seconds)
        results["catch_up"] = await catch_up(reactor, args.catch_up_events)
    results["user_projections"] = {
        which: await user_projection(reactor, args.user_events, which)
        for which in USER_QUERIES
    }
    print(json.dumps(results, indent=2))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--catch-up-events", type=int, default=200_000)
    parser.add_argument("--user-events", type=int, default=200_000)
    parser.add_argument("--user-only", action="store_true",
                        help="measure only the user projections")
    parsed = parser.parse_args()
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, parsed)))
