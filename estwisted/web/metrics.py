# -*- test-case-name: estwisted.web.test.test_metrics -*-
"""
Prometheus metrics of one node (C{GET /metrics}, see C{docs/metrics.md}).

Two kinds of metric live here:

  - a few counters and histograms updated as things happen, each update a
    cheap increment: events and writes committed and group-commit batch
    sizes (from the store's commit listener), HTTP request latency, garbage
    collector pauses;
  - everything else is read from the node's existing state when Prometheus
    scrapes: log positions, chunk files and bytes on disk, index size,
    connections, subscriptions, gossip members and replication lag.

The functions that turn state into metric families (L{storage_families},
L{gossip_families}, L{subscription_families}, ...) are pure: they take
plain values and return families, so they are tested without a node.
L{NodeCollector} gathers the values from L{NodeSources} at scrape time and
never lets one failing source break the scrape.  Nothing here touches the
reactor.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Optional

from attrs import define, field
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.logger import Logger

_log = Logger()

#: The media type of C{GET /metrics}.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: v5 state names of a member that leads.
LEADER_STATES = frozenset({"Master", "Leader"})

#: Request kinds of the HTTP latency histogram.
HTTP_KINDS = ("append", "read_event", "read_feed", "read_all", "web", "metrics", "other")

#: TCP command name to the kind of the TCP latency histogram.
TCP_COMMAND_KINDS = {
    "WriteEvents": "write",
    "DeleteStream": "delete",
    "TransactionStart": "transaction",
    "TransactionWrite": "transaction",
    "TransactionCommit": "transaction",
    "ReadEvent": "read_event",
    "ReadStreamEventsForward": "read_stream",
    "ReadStreamEventsBackward": "read_stream",
    "ReadAllEventsForward": "read_all",
    "ReadAllEventsBackward": "read_all",
    "SubscribeToStream": "subscribe",
    "UnsubscribeFromStream": "subscribe",
    "ConnectToPersistentSubscription": "persistent",
    "CreatePersistentSubscription": "persistent",
    "UpdatePersistentSubscription": "persistent",
    "DeletePersistentSubscription": "persistent",
    "PersistentSubscriptionAckEvents": "persistent_ack",
    "PersistentSubscriptionNakEvents": "persistent_ack",
}

#: Request kinds of the TCP latency histogram.
TCP_KINDS = (*dict.fromkeys(TCP_COMMAND_KINDS.values()), "other")

#: Leader positions kept to turn replication lag into seconds (one per scrape).
LAG_SAMPLES = 3600

#: Seconds an expensive value (index entry count) is reused between scrapes.
SLOW_VALUE_TTL = 10.0

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
_SYNC_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


# -- pure collection functions ----------------------------------------------------------


def gauge(name: str, documentation: str, value: float, unit: str = "") -> GaugeMetricFamily:
    """
    A family with one unlabelled gauge sample.
    """
    return GaugeMetricFamily(name, documentation, value=value, unit=unit)


def storage_families(
    writer_position: int,
    commit_position: int,
    chunk_sizes: Sequence[int],
    other_bytes: int,
    index_entries: Optional[int],
    index_streams: Optional[int],
) -> list[Metric]:
    """
    Log and index metrics.

    @param writer_position: the log's end (writer checkpoint).
    @param commit_position: the position of the last committed record.
    @param chunk_sizes: the size of each chunk file, in bytes.
    @param other_bytes: bytes of the database's other files (index,
        checkpoints).
    @param index_entries: events and tombstones in the stream index
        (C{None}: unknown).
    @param index_streams: streams with at least one event (C{None}:
        unknown).
    """
    families: list[Metric] = [
        gauge("estore_writer_checkpoint_bytes", "Log position of the writer checkpoint (end of "
              "the log).", writer_position),
        gauge("estore_commit_position_bytes", "Log position of the last committed record.",
              commit_position),
        gauge("estore_chunks", "Chunk files in the database.", len(chunk_sizes)),
        gauge("estore_chunk_bytes", "Bytes of chunk files on disk.", sum(chunk_sizes)),
        gauge("estore_disk_bytes", "Bytes of all database files on disk.",
              sum(chunk_sizes) + other_bytes),
    ]
    if index_entries is not None:
        families.append(
            gauge("estore_index_entries", "Entries (events and tombstones) in the stream index.",
                  index_entries)
        )
    if index_streams is not None:
        families.append(
            gauge("estore_index_streams", "Streams with at least one event in the index.",
                  index_streams)
        )
    return families


def connection_families(connections: dict[str, int], long_polls: int) -> list[Metric]:
    """
    Open connections by protocol, and HTTP long polls waiting.

    @param connections: protocol name (C{"tcp_external"}, ...) to count.
    """
    family = GaugeMetricFamily(
        "estore_connections", "Open client connections by protocol.", labels=["protocol"]
    )
    for protocol, count in sorted(connections.items()):
        family.add_metric([protocol], count)
    return [
        family,
        gauge("estore_http_long_polls", "HTTP long-poll requests waiting for events.", long_polls),
    ]


def subscription_families(volatile: int, groups: Iterable[Any]) -> list[Metric]:
    """
    Volatile subscriptions and persistent subscription groups.

    @param volatile: live volatile (catch-up or live) subscriptions.
    @param groups: L{estwisted.subscriptions.persistent.GroupInfo} values (any object
        with the same attributes).
    """
    labels = ["stream", "group"]
    in_flight = GaugeMetricFamily(
        "estore_persistent_subscription_in_flight_messages",
        "Messages sent to consumers and not yet acknowledged.", labels=labels,
    )
    connected = GaugeMetricFamily(
        "estore_persistent_subscription_connections", "Consumers connected to the group.",
        labels=labels,
    )
    lag = GaugeMetricFamily(
        "estore_persistent_subscription_lag_events",
        "Last known event number of the stream minus the last processed one.", labels=labels,
    )
    processed = CounterMetricFamily(
        "estore_persistent_subscription_items_processed",
        "Messages processed by the group since the node started.", labels=labels,
    )
    parked = GaugeMetricFamily(
        "estore_persistent_subscription_retry_buffer_messages",
        "Messages waiting in the group's retry buffer.", labels=labels,
    )
    count = 0
    for g in groups:
        count += 1
        key = [g.stream, g.group]
        in_flight.add_metric(key, g.total_in_flight_messages)
        connected.add_metric(key, g.connection_count)
        lag.add_metric(
            key, max(0, g.last_known_event_number - max(-1, g.last_processed_event_number))
        )
        processed.add_metric(key, g.total_items_processed)
        parked.add_metric(key, g.retry_buffer_count)
    return [
        gauge("estore_subscriptions", "Live volatile subscriptions.", volatile),
        gauge("estore_persistent_subscription_groups", "Persistent subscription groups.", count),
        in_flight, connected, lag, processed, parked,
    ]


def gossip_families(document: dict[str, Any], own_instance_id: Optional[str]) -> list[Metric]:
    """
    Cluster metrics from a C{/gossip} document.

    Replication lag of a member is the leader's writer checkpoint minus the
    member's, in bytes, as the gossip table last heard it.

    @param document: C{{"members": [...], ...}} as served by C{GET /gossip}.
    @param own_instance_id: this node's instance id, to tell which member is
        this node (C{None}: unknown).
    """
    members = [m for m in document.get("members", ()) if isinstance(m, dict)]
    by_state = GaugeMetricFamily(
        "estore_gossip_members", "Gossip members by state and liveness.",
        labels=["state", "alive"],
    )
    counts: dict[tuple[str, str], int] = {}
    for m in members:
        key = (str(m.get("state", "Unknown")), "true" if m.get("isAlive") else "false")
        counts[key] = counts.get(key, 0) + 1
    for key, value in sorted(counts.items()):
        by_state.add_metric(list(key), value)
    leaders = [m for m in members if m.get("isAlive") and m.get("state") in LEADER_STATES]
    leader = leaders[0] if leaders else None
    labels = ["instance", "address"]
    writer = GaugeMetricFamily(
        "estore_member_writer_checkpoint_bytes", "Writer checkpoint of each gossip member.",
        labels=labels,
    )
    lag = GaugeMetricFamily(
        "estore_replication_lag_bytes",
        "Leader's writer checkpoint minus the follower's, per alive follower.", labels=labels,
    )
    own_state = GaugeMetricFamily(
        "estore_node_state", "1 for this node's current v5 state.", labels=["state"]
    )
    epoch = -1
    for m in members:
        address = f"{m.get('internalHttpIp', '')}:{m.get('internalHttpPort', '')}"
        instance = str(m.get("instanceId", ""))
        position = int(m.get("writerCheckpoint", 0) or 0)
        writer.add_metric([instance, address], position)
        if leader is not None and m is not leader and m.get("isAlive"):
            lead = int(leader.get("writerCheckpoint", 0) or 0)
            lag.add_metric([instance, address], max(0, lead - position))
        if own_instance_id is not None and instance == own_instance_id:
            own_state.add_metric([str(m.get("state", "Unknown"))], 1)
        epoch = max(epoch, int(m.get("epochNumber", -1) or 0))
    return [
        by_state,
        gauge("estore_cluster_has_leader", "1 when an alive member leads.",
              1 if leader is not None else 0),
        gauge("estore_cluster_epoch_number", "Highest epoch number in the gossip table (one "
              "more per election won).", epoch),
        writer, lag, own_state,
    ]


def lag_seconds(samples: Sequence[tuple[float, int]], position: int, now: float) -> float:
    """
    How long ago the leader first had data a follower at C{position} has
    not got yet, from C{(time, leader position)} samples, oldest first
    (positions never decreasing).  0 when the follower has everything the
    last sample had; at least the age of the oldest sample when even that
    one was ahead of it.  The resolution is the sampling interval (one
    scrape).
    """
    if not samples or position >= samples[-1][1]:
        return 0.0
    positions = [p for _, p in samples]
    first_ahead = bisect_right(positions, position)
    return max(0.0, now - samples[first_ahead][0])


def progress_families(tasks: Sequence[dict[str, Any]]) -> list[Metric]:
    """
    Progress of long work from L{estwisted.core.progress.ProgressBoard.snapshot}
    (running tasks first, then the last finished ones, newest first).
    """
    ratio = GaugeMetricFamily(
        "estore_progress_ratio", "Done over total of each long task on the progress board "
        "(running and recently finished).", labels=["kind", "name"],
    )
    remaining = GaugeMetricFamily(
        "estore_progress_remaining", "Units left to do of each long task.",
        labels=["kind", "name", "unit"],
    )
    rate = GaugeMetricFamily(
        "estore_progress_rate", "Units done per second of each long task since it started.",
        labels=["kind", "name", "unit"],
    )
    running = GaugeMetricFamily(
        "estore_progress_tasks_running", "Long tasks running, by kind.", labels=["kind"]
    )
    counts: dict[str, int] = {}
    scavenge: Optional[float] = None
    for t in tasks:
        kind, name, unit = str(t["kind"]), str(t["name"]), str(t["unit"])
        value = float(t["percentage"]) / 100.0
        ratio.add_metric([kind, name], value)
        remaining.add_metric([kind, name, unit], float(t["remaining"]))
        rate.add_metric([kind, name, unit], float(t["rate"]))
        if t["running"]:
            counts[kind] = counts.get(kind, 0) + 1
        if kind == "scavenge" and scavenge is None:
            scavenge = value
    for kind, count in sorted(counts.items()):
        running.add_metric([kind], count)
    families: list[Metric] = [ratio, remaining, rate, running]
    if scavenge is not None:
        families.append(
            gauge("estore_scavenge_progress_ratio", "Progress of the running scavenge (or of "
                  "the last one), 0 to 1, in chunks.", scavenge)
        )
    return families


def db_files(path: Optional[str]) -> tuple[list[int], int]:
    """
    The sizes of the chunk files and the total size of the other files in
    a database directory (one level deep: chunks, checkpoints, index).

    @return: C{(chunk sizes, other bytes)}; empty for C{None} (memory).
    """
    if path is None:
        return [], 0
    chunks: list[int] = []
    other = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return [], 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                if entry.name.startswith("chunk-"):
                    chunks.append(size)
                else:
                    other += size
            elif entry.is_dir(follow_symlinks=False):
                for sub in os.scandir(entry.path):
                    if sub.is_file(follow_symlinks=False):
                        other += sub.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return chunks, other


# -- counters updated as things happen ------------------------------------------------


def batch_counts(records: Any) -> tuple[int, int]:
    """
    C{(writes, events)} of one commit-listener call, without building the
    records when the store hands a lazy L{BatchRecords}; a plain sequence
    counts as one write per record.
    """
    from estwisted.core.streams import BatchRecords

    if isinstance(records, BatchRecords):
        return records.counts()
    n = len(records)
    return n, n


def http_kind(method: bytes, path: bytes) -> str:
    """
    The kind of an HTTP request, for the latency histogram's label.
    """
    if path.startswith(b"/streams/"):
        if method == b"POST":
            return "append"
        if method == b"GET":
            if path.startswith(b"/streams/$all") or path.startswith(b"/streams/%24all"):
                return "read_all"
            tail = path[9:].rstrip(b"/").split(b"/")
            return "read_event" if len(tail) == 2 else "read_feed"
        return "other"
    if path.startswith(b"/web") or path == b"/":
        return "web"
    if path == b"/metrics":
        return "metrics"
    return "other"


@define
class NodeSources:
    """
    Where L{NodeCollector} reads the node's state; any may be C{None} (not
    built yet, or not on this node).

    @ivar store: the L{estwisted.core.streams.StreamStore}.
    @ivar log: the L{IEventLog} (C{end_position}).
    @ivar index: the L{estwisted.storage.index.StreamIndex}.
    @ivar db_path: the database directory (C{None}: in memory).
    @ivar tcp_factories: protocol name to a factory with C{connections}.
    @ivar hub: the volatile L{estwisted.subscriptions.volatile.SubscriptionHub}.
    @ivar persistent: the L{estwisted.subscriptions.persistent.PersistentSubscriptions}.
    @ivar http_api: the L{estwisted.http.api.HttpApi} (gossip document, long
        polls, scavenges).
    @ivar cluster: the L{estwisted.cluster.wiring.ClusterWiring} (elections).
    @ivar board: the L{estwisted.core.progress.ProgressBoard} (C{None}: the
        process's L{estwisted.core.progress.BOARD}).
    """

    store: Any = None
    log: Any = None
    index: Any = None
    db_path: Optional[str] = None
    tcp_factories: dict[str, Any] = field(factory=dict)
    hub: Any = None
    persistent: Any = None
    http_api: Any = None
    cluster: Any = None
    board: Any = None


class NodeCollector:
    """
    A C{prometheus_client} collector reading L{NodeSources} at scrape time.

    @param sources: what to read.
    @param now: the time in seconds (for the cached index size).
    """

    def __init__(self, sources: NodeSources, now: Callable[[], float] = time.monotonic) -> None:
        self.sources = sources
        self._now = now
        self._index_entries: Optional[tuple[float, int]] = None
        self._leader: Optional[str] = None
        self._leader_changes = 0
        self._leader_samples: deque[tuple[float, int]] = deque(maxlen=LAG_SAMPLES)

    def describe(self) -> list[Metric]:
        # Registered without describing: names depend on what the node has.
        return []

    def collect(self) -> Iterator[Metric]:
        for section in (
            self._storage, self._connections, self._subscriptions, self._gossip, self._admin,
            self._progress, self._elections,
        ):
            try:
                families = section()
            except Exception:
                _log.failure("Metrics section {section} failed", section=section.__name__)
                continue
            yield from families

    def _storage(self) -> list[Metric]:
        s = self.sources
        if s.store is None:
            return []
        commit = int(s.store.last_commit_position)
        writer = int(s.log.end_position) if s.log is not None else commit
        chunks, other = db_files(s.db_path)
        entries: Optional[int] = None
        streams: Optional[int] = None
        if s.index is not None:
            streams = int(s.index.stream_count())
            # Counting entries walks every stream: reuse it for a while.
            now = self._now()
            cached = self._index_entries
            if cached is None or now - cached[0] >= SLOW_VALUE_TTL:
                cached = self._index_entries = (now, len(s.index))
            entries = cached[1]
        return storage_families(writer, commit, chunks, other, entries, streams)

    def _connections(self) -> list[Metric]:
        s = self.sources
        counts = {
            f"tcp_{name}": len(getattr(f, "connections", ()))
            for name, f in s.tcp_factories.items()
        }
        long_polls = 0
        waiters = getattr(s.http_api, "_waiters", None)
        if waiters is not None:
            long_polls = sum(len(v) for v in waiters.by_stream.values())
        return connection_families(counts, long_polls)

    def _subscriptions(self) -> list[Metric]:
        s = self.sources
        volatile = int(s.hub.count) if s.hub is not None else 0
        groups = s.persistent.list_groups() if s.persistent is not None else []
        return subscription_families(volatile, groups)

    def _gossip(self) -> list[Metric]:
        api = self.sources.http_api
        if api is None:
            return []
        view = api.node_info.gossip_view
        document = view() if view is not None else api.gossip_document()
        families = gossip_families(document, self._own_instance(document))
        leaders = [
            str(m.get("instanceId"))
            for m in document.get("members", ())
            if m.get("isAlive") and m.get("state") in LEADER_STATES
        ]
        leader = leaders[0] if leaders else None
        if leader is not None and leader != self._leader:
            if self._leader is not None:
                self._leader_changes += 1
            self._leader = leader
            self._leader_samples.clear()
        families.append(self._lag_seconds(document, leader))
        families.append(
            CounterMetricFamily(
                "estore_leader_changes",
                "Changes of the alive leader seen between scrapes.",
                value=self._leader_changes,
            )
        )
        return families

    def _lag_seconds(self, document: dict[str, Any], leader: Optional[str]) -> Metric:
        family = GaugeMetricFamily(
            "estore_replication_lag_seconds",
            "How long ago the leader first had data each alive follower has not got yet "
            "(resolution: one scrape).", labels=["instance", "address"],
        )
        members = [m for m in document.get("members", ()) if isinstance(m, dict)]
        lead = [m for m in members if str(m.get("instanceId")) == leader]
        if leader is None or not lead:
            return family
        now = self._now()
        position = int(lead[0].get("writerCheckpoint", 0) or 0)
        samples = self._leader_samples
        if samples and position < samples[-1][1]:
            samples.clear()  # the leader's log was cut: start again
        samples.append((now, position))
        for m in members:
            if m is lead[0] or not m.get("isAlive"):
                continue
            address = f"{m.get('internalHttpIp', '')}:{m.get('internalHttpPort', '')}"
            behind = int(m.get("writerCheckpoint", 0) or 0)
            family.add_metric(
                [str(m.get("instanceId", "")), address], lag_seconds(samples, behind, now)
            )
        return family

    def _progress(self) -> list[Metric]:
        from estwisted.core.progress import BOARD

        board = self.sources.board if self.sources.board is not None else BOARD
        return progress_families(board.snapshot())

    def _elections(self) -> list[Metric]:
        cluster = self.sources.cluster
        machine = getattr(getattr(cluster, "controller", None), "machine", None)
        if machine is None:
            return []
        return [
            CounterMetricFamily(
                "estore_elections_started", "Elections this node started since it started.",
                value=int(machine.elections_started),
            )
        ]

    def _own_instance(self, document: dict[str, Any]) -> Optional[str]:
        api = self.sources.http_api
        info = api.node_info
        if info.gossip_view is None:
            return str(info.instance_id)
        ip, port = document.get("serverIp"), document.get("serverPort")
        for m in document.get("members", ()):
            if m.get("internalHttpIp") == ip and m.get("internalHttpPort") == port:
                return str(m.get("instanceId"))
        return None

    def _admin(self) -> list[Metric]:
        api = self.sources.http_api
        scavenges = getattr(api, "_scavenges", None) or {}
        running = sum(1 for v in scavenges.values() if v is not None)
        return [
            gauge("estore_scavenges_running", "Scavenges in progress.", running),
            CounterMetricFamily(
                "estore_scavenges_started", "Scavenges started since the node started.",
                value=len(scavenges),
            ),
        ]


class Histogram:
    """
    A histogram for the reactor thread: C{observe} is one bisect and two
    additions, with no lock (C{prometheus_client}'s own takes one per call,
    several times the cost on the write path).  Exported at scrape time by
    L{NodeMetrics}.

    @ivar bounds: the buckets' upper bounds (C{le}), ascending.
    @ivar counts: observations per bucket; the last one is C{+Inf}.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """
        Cumulative C{(le, count)} pairs ending with C{+Inf}.
        """
        out = []
        total = 0
        for bound, count in zip((*map(repr, map(float, self.bounds)), "+Inf"), self.counts,
                                strict=True):
            total += count
            out.append((bound, float(total)))
        return out


def _command_kinds() -> list[str]:
    """
    The kind of each command byte (C{"other"} for the rest).
    """
    from estwisted.wire.tcpcodec import TcpCommand

    kinds = ["other"] * 256
    for name, kind in TCP_COMMAND_KINDS.items():
        if name in TcpCommand.__members__:
            kinds[int(TcpCommand[name])] = kind
    return kinds


class TcpRequestMeter:
    """
    The TCP edge's L{estwisted.tcp.dispatch.RequestMeter}: the edge counts
    every request in L{counts} (one list addition) and times one in
    C{sample_mask + 1} of each command (L{observe}); timing every request
    cost about 0.7 µs per write, several percent of a pipelined write's
    node CPU.

    @ivar counts: requests by command byte.
    @ivar latency: the sampled latencies by kind.
    """

    def __init__(self, sample_mask: int = 15) -> None:
        self.counts = [0] * 256
        self.sample_mask = sample_mask
        self.latency = {kind: Histogram(_LATENCY_BUCKETS) for kind in TCP_KINDS}
        self._kinds = _command_kinds()
        self._by_command = [self.latency[kind] for kind in self._kinds]

    def observe(self, command: int, seconds: float) -> None:
        self._by_command[command & 0xFF].observe(seconds)

    def families(self) -> list[Metric]:
        """
        C{estore_tcp_requests_total{kind}} and the sampled latency
        histogram.
        """
        totals: dict[str, int] = {}
        for command, count in enumerate(self.counts):
            if count:
                kind = self._kinds[command]
                totals[kind] = totals.get(kind, 0) + count
        requests = CounterMetricFamily(
            "estore_tcp_requests", "TCP requests by kind.", labels=["kind"]
        )
        for kind, count in sorted(totals.items()):
            requests.add_metric([kind], count)
        return [
            requests,
            histogram_family(
                "estore_tcp_request_duration_seconds",
                "TCP request latency by kind, of one request in "
                f"{self.sample_mask + 1} of each command.",
                {(k,): h for k, h in self.latency.items()}, ["kind"],
            ),
        ]


class GrpcRequestMeter:
    """
    The gRPC edge's L{estwisted.grpc.services.GrpcRequestMeter}: the edge
    counts every call in L{counts} by method label (C{"Streams/Append"})
    and times one in C{sample_mask + 1} of each method, from the call's
    headers to its trailers (L{observe}), as the TCP edge samples.

    @ivar counts: calls by method label.
    @ivar latency: the sampled durations by method label.
    """

    def __init__(self, sample_mask: int = 15) -> None:
        self.counts: dict[str, int] = {}
        self.sample_mask = sample_mask
        self.latency: dict[str, Histogram] = {}

    def observe(self, method: str, seconds: float) -> None:
        histogram = self.latency.get(method)
        if histogram is None:
            histogram = self.latency[method] = Histogram(_LATENCY_BUCKETS)
        histogram.observe(seconds)

    def families(self) -> list[Metric]:
        """
        C{estore_grpc_requests_total{method}} and the sampled duration
        histogram C{estore_grpc_request_duration_seconds{method}}.
        """
        requests = CounterMetricFamily(
            "estore_grpc_requests", "gRPC calls by method.", labels=["method"]
        )
        for method, count in sorted(self.counts.items()):
            requests.add_metric([method], count)
        return [
            requests,
            histogram_family(
                "estore_grpc_request_duration_seconds",
                "gRPC call duration (headers to trailers) by method, of one call in "
                f"{self.sample_mask + 1} of each method.",
                {(k,): h for k, h in sorted(self.latency.items())}, ["method"],
            ),
        ]


def histogram_family(
    name: str, documentation: str, histograms: dict[tuple[str, ...], Histogram],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    """
    One family from histograms keyed by their label values.  A labelled
    histogram with no observation yet is left out: each costs a dozen lines
    per scrape.
    """
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for key, h in histograms.items():
        if key and not any(h.counts):
            continue
        family.add_metric(list(key), h.buckets(), h.sum)
    return family


class ThreadHistogram:
    """
    A histogram observed from any thread without a lock: each thread adds
    to its own L{Histogram} (found through a C{threading.local}); a scrape
    adds them up (L{merged}).  A scrape racing an observation may see it
    in the bucket counts and not yet in the sum, never a torn count.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._local = threading.local()
        self._parts: list[Histogram] = []

    def observe(self, value: float) -> None:
        h: Optional[Histogram] = getattr(self._local, "histogram", None)
        if h is None:
            h = self._local.histogram = Histogram(self.bounds)
            self._parts.append(h)  # one append, atomic under the GIL
        h.observe(value)

    def merged(self) -> Histogram:
        """
        Every thread's observations in one histogram.
        """
        out = Histogram(self.bounds)
        counts = out.counts
        for h in list(self._parts):
            for i, c in enumerate(list(h.counts)):
                counts[i] += c
            out.sum += h.sum
        return out


class NodeMetrics:
    """
    The registry of one node: the live counters, the state collector and
    the process collectors.

    The counters are plain attributes incremented on the reactor thread and
    exported at scrape time (L{NodeMetrics.collect}): the write path pays a
    few additions per group commit and nothing per event.

    @ivar sources: fill in as the node builds its parts.
    @ivar events_committed: events committed (written here or replicated).
    @ivar writes_committed: writes committed.
    """

    def __init__(self, sources: Optional[NodeSources] = None, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.sources = sources if sources is not None else NodeSources()
        self.collector = NodeCollector(self.sources)
        self.registry.register(self.collector)
        self.registry.register(self)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.events_committed = 0
        self.writes_committed = 0
        self.commit_batches = Histogram(_BATCH_BUCKETS)
        self.http_latency = {kind: Histogram(_LATENCY_BUCKETS) for kind in HTTP_KINDS}
        self.tcp_requests = TcpRequestMeter()
        self.grpc_requests = GrpcRequestMeter()
        self.fsyncs = ThreadHistogram(_SYNC_BUCKETS)
        self._syncs_watched = False
        self.gc_pauses = [Histogram(_GC_BUCKETS) for _ in range(3)]
        self._gc_started = 0.0
        self._gc_installed = False
        self._remove_listener: Optional[Callable[[], None]] = None

    # -- wiring -------------------------------------------------------------------------

    def watch_store(self, store: Any) -> None:
        """
        Count what C{store} commits (through its commit listener).
        """
        if self._remove_listener is not None:
            self._remove_listener()
        self._remove_listener = store.add_commit_listener(self.committed)

    def watch_syncs(self) -> None:
        """
        Time the log's data syncs (L{estwisted.storage.flushing.sync_observer},
        called on the flushing thread).
        """
        from estwisted.storage import flushing

        flushing.sync_observer = self.fsyncs.observe
        self._syncs_watched = True

    def watch_gc(self) -> None:
        """
        Time the garbage collector's pauses (C{gc.callbacks}).
        """
        if not self._gc_installed:
            gc.callbacks.append(self._gc_callback)
            self._gc_installed = True

    def close(self) -> None:
        """
        Stop watching the store and the garbage collector.
        """
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._syncs_watched:
            from estwisted.storage import flushing

            if flushing.sync_observer == self.fsyncs.observe:
                flushing.sync_observer = None
            self._syncs_watched = False
        if self._gc_installed:
            if self._gc_callback in gc.callbacks:
                gc.callbacks.remove(self._gc_callback)
            self._gc_installed = False

    # -- updates ------------------------------------------------------------------------

    def committed(self, records: Any) -> None:
        """
        The store's commit listener: one call per published batch.
        """
        writes, events = batch_counts(records)
        self.writes_committed += writes
        self.events_committed += events
        self.commit_batches.observe(events)

    def http_request(self, method: bytes, path: bytes) -> Callable[[object], object]:
        """
        Start timing an HTTP request.

        @return: call it (with anything) when the request finishes.
        """
        histogram = self.http_latency[http_kind(method, path)]
        started = time.perf_counter()

        def finished(result: object) -> object:
            histogram.observe(time.perf_counter() - started)
            return None

        return finished

    def _gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            generation = info.get("generation", 0)
            if 0 <= generation < 3:
                self.gc_pauses[generation].observe(time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    # -- output -------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        """
        The live counters as metric families (called by the registry).
        """
        yield CounterMetricFamily(
            "estore_events_committed",
            "Events committed to the log (written here or replicated).",
            value=self.events_committed,
        )
        yield CounterMetricFamily(
            "estore_writes_committed",
            "Committed writes (appends, deletes, metadata writes); a replicated batch counts "
            "one per record.",
            value=self.writes_committed,
        )
        yield histogram_family(
            "estore_commit_batch_events", "Events per group commit.", {(): self.commit_batches}
        )
        yield histogram_family(
            "estore_http_request_duration_seconds", "HTTP request latency by kind.",
            {(k,): h for k, h in self.http_latency.items()}, ["kind"],
        )
        yield from self.tcp_requests.families()
        yield from self.grpc_requests.families()
        yield histogram_family(
            "estore_fsync_duration_seconds", "Time of each data sync (fdatasync) of the log.",
            {(): self.fsyncs.merged()},
        )
        yield histogram_family(
            "estore_gc_pause_seconds", "Garbage collector pauses by generation.",
            {(str(g),): h for g, h in enumerate(self.gc_pauses)}, ["generation"],
        )

    def render(self) -> bytes:
        """
        The Prometheus text exposition of every metric.
        """
        return generate_latest(self.registry)


__all__ = [
    "CONTENT_TYPE",
    "Histogram",
    "NodeCollector",
    "NodeMetrics",
    "NodeSources",
    "TcpRequestMeter",
    "ThreadHistogram",
    "batch_counts",
    "connection_families",
    "db_files",
    "gossip_families",
    "http_kind",
    "lag_seconds",
    "progress_families",
    "storage_families",
    "subscription_families",
]
