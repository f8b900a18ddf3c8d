"""
Tests for L{estwisted.web.metrics}: the pure collection functions, the commit
counters over a real L{StreamStore}, and the text a scrape returns.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import NewEvent
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.http.api import HttpApi
from estwisted.http.info import NodeInfo
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.web.metrics import (
    NodeMetrics,
    NodeSources,
    batch_counts,
    db_files,
    gossip_families,
    http_kind,
    lag_seconds,
    progress_families,
    storage_families,
    subscription_families,
)

MASTER = (("alive", "true"), ("state", "Master"))
SLAVE = (("alive", "true"), ("state", "Slave"))
DEAD_SLAVE = (("alive", "false"), ("state", "Slave"))


def samples(families: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of C{families} by name and sorted labels.
    """
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Render C{metrics} and parse the text back, as Prometheus would.
    """
    return samples(text_string_to_metric_families(metrics.render().decode("utf-8")))


def member(
    instance: str, state: str, writer: int, alive: bool = True, epoch: int = 3
) -> dict[str, Any]:
    return {
        "instanceId": instance,
        "state": state,
        "isAlive": alive,
        "internalHttpIp": f"127.0.0.{instance}",
        "internalHttpPort": 2112,
        "writerCheckpoint": writer,
        "epochNumber": epoch,
    }


@frozen
class Group:
    stream: str
    group: str
    total_in_flight_messages: int
    connection_count: int
    last_known_event_number: int
    last_processed_event_number: int
    total_items_processed: int
    retry_buffer_count: int


class PureFunctionTests(SynchronousTestCase):
    def test_storage(self) -> None:
        got = samples(storage_families(1000, 900, [256, 512], 100, 42, 7))
        self.assertEqual(got[("estore_writer_checkpoint_bytes", ())], 1000)
        self.assertEqual(got[("estore_commit_position_bytes", ())], 900)
        self.assertEqual(got[("estore_chunks", ())], 2)
        self.assertEqual(got[("estore_chunk_bytes", ())], 768)
        self.assertEqual(got[("estore_disk_bytes", ())], 868)
        self.assertEqual(got[("estore_index_entries", ())], 42)
        self.assertEqual(got[("estore_index_streams", ())], 7)

    def test_storage_unknown_index(self) -> None:
        got = samples(storage_families(0, 0, [], 0, None, None))
        self.assertNotIn(("estore_index_entries", ()), got)

    def test_gossip_three_members(self) -> None:
        """
        Members are counted by state; each alive follower's lag is the
        leader's writer checkpoint minus its own; a dead one has none.
        """
        doc = {
            "members": [
                member("1", "Master", 5000),
                member("2", "Slave", 4000),
                member("3", "Slave", 1000, alive=False),
            ],
            "serverIp": "127.0.0.2",
            "serverPort": 2112,
        }
        got = samples(gossip_families(doc, "2"))
        self.assertEqual(got[("estore_gossip_members", MASTER)], 1)
        self.assertEqual(got[("estore_gossip_members", SLAVE)], 1)
        self.assertEqual(got[("estore_gossip_members", DEAD_SLAVE)], 1)
        self.assertEqual(got[("estore_cluster_has_leader", ())], 1)
        self.assertEqual(got[("estore_cluster_epoch_number", ())], 3)
        lag = {k[1]: v for k, v in got.items() if k[0] == "estore_replication_lag_bytes"}
        self.assertEqual(lag, {(("address", "127.0.0.2:2112"), ("instance", "2")): 1000})
        self.assertEqual(got[("estore_node_state", (("state", "Slave"),))], 1)

    def test_gossip_no_leader(self) -> None:
        got = samples(gossip_families({"members": [member("1", "Unknown", 0)]}, None))
        self.assertEqual(got[("estore_cluster_has_leader", ())], 0)
        self.assertFalse([k for k in got if k[0] == "estore_replication_lag_bytes"])

    def test_subscriptions(self) -> None:
        groups = [Group("s", "g", 3, 2, 10, 4, 5, 1)]
        got = samples(subscription_families(4, groups))
        key = (("group", "g"), ("stream", "s"))
        self.assertEqual(got[("estore_subscriptions", ())], 4)
        self.assertEqual(got[("estore_persistent_subscription_groups", ())], 1)
        self.assertEqual(got[("estore_persistent_subscription_in_flight_messages", key)], 3)
        self.assertEqual(got[("estore_persistent_subscription_connections", key)], 2)
        self.assertEqual(got[("estore_persistent_subscription_lag_events", key)], 6)
        self.assertEqual(got[("estore_persistent_subscription_items_processed_total", key)], 5)

    def test_http_kind(self) -> None:
        self.assertEqual(http_kind(b"POST", b"/streams/a"), "append")
        self.assertEqual(http_kind(b"GET", b"/streams/a/3"), "read_event")
        self.assertEqual(http_kind(b"GET", b"/streams/a"), "read_feed")
        self.assertEqual(http_kind(b"GET", b"/streams/a/head/backward/20"), "read_feed")
        self.assertEqual(http_kind(b"GET", b"/streams/%24all"), "read_all")
        self.assertEqual(http_kind(b"GET", b"/web/app.js"), "web")
        self.assertEqual(http_kind(b"GET", b"/metrics"), "metrics")
        self.assertEqual(http_kind(b"GET", b"/gossip"), "other")

    def test_db_files(self) -> None:
        path = self.mktemp()
        import os

        os.makedirs(os.path.join(path, "index"))
        for name, size in (("chunk-000000.000000", 10), ("writer.chk", 8)):
            with open(os.path.join(path, name), "wb") as f:
                f.write(b"x" * size)
        with open(os.path.join(path, "index", "table"), "wb") as f:
            f.write(b"y" * 5)
        self.assertEqual(db_files(path), ([10], 13))
        self.assertEqual(db_files(None), ([], 0))
        self.assertEqual(db_files(os.path.join(path, "missing")), ([], 0))


def new_event(n: int) -> NewEvent:
    return NewEvent(n.to_bytes(16, "big"), "t", b"{}", b"", True)


class NodeMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = StreamStore(MemoryLog(), StreamIndex(), self.clock)
        self.api = HttpApi(
            self.store,
            SubscriptionHub(self.store),
            PersistentSubscriptions(self.store, self.clock),
            self.clock,
            NodeInfo(),
            users=UserManager(self.store, iterations=10),
        )
        self.metrics = NodeMetrics(
            NodeSources(store=self.store, log=self.store._log, http_api=self.api), process=False
        )
        self.metrics.watch_store(self.store)
        self.addCleanup(self.metrics.close)

    def append(self, stream: str, *numbers: int) -> None:
        d = self.store.append(stream, -2, [new_event(n) for n in numbers], None)
        self.clock.advance(0)
        self.successResultOf(d)

    def test_commits_counted(self) -> None:
        """
        Events and writes committed are counted from the store's lazy
        batches, and each group commit's size is observed.
        """
        self.append("a", 1, 2, 3)
        self.append("b", 4)
        got = scrape(self.metrics)
        self.assertEqual(got[("estore_events_committed_total", ())], 4)
        self.assertEqual(got[("estore_writes_committed_total", ())], 2)
        self.assertEqual(got[("estore_commit_batch_events_count", ())], 2)
        self.assertEqual(got[("estore_commit_batch_events_sum", ())], 4)

    def test_batch_counts_of_plain_records(self) -> None:
        self.assertEqual(batch_counts([object(), object()]), (2, 2))

    def test_state_read_at_scrape(self) -> None:
        self.append("a", 1)
        got = scrape(self.metrics)
        self.assertEqual(
            got[("estore_commit_position_bytes", ())], self.store.last_commit_position
        )
        self.assertEqual(got[("estore_gossip_members", MASTER)], 1)
        self.assertEqual(got[("estore_node_state", (("state", "Master"),))], 1)
        self.assertEqual(got[("estore_scavenges_running", ())], 0)

    def test_failing_source(self) -> None:
        """
        A source that raises drops its own metrics only; the failure is
        logged.
        """

        class Broken:
            @property
            def last_commit_position(self) -> int:
                raise RuntimeError("boom")

        self.metrics.sources.store = Broken()
        got = scrape(self.metrics)
        self.assertNotIn(("estore_commit_position_bytes", ()), got)
        self.assertIn(("estore_scavenges_running", ()), got)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_http_timer(self) -> None:
        done = self.metrics.http_request(b"POST", b"/streams/x")
        done(None)
        got = scrape(self.metrics)
        self.assertEqual(
            got[("estore_http_request_duration_seconds_count", (("kind", "append"),))], 1
        )

    def test_gc_pauses(self) -> None:
        import gc

        self.metrics.watch_gc()
        gc.collect()
        got = scrape(self.metrics)
        self.assertGreaterEqual(
            got[("estore_gc_pause_seconds_count", (("generation", "2"),))], 1
        )
        self.metrics.close()
        self.assertNotIn(self.metrics._gc_callback, gc.callbacks)

    def test_leader_changes(self) -> None:
        docs = [
            {"members": [member("1", "Master", 0), member("2", "Slave", 0)]},
            {"members": [member("1", "Slave", 0), member("2", "Master", 0)]},
        ]
        self.api.node_info = NodeInfo(gossip_view=lambda: docs[0])
        scrape(self.metrics)
        docs.pop(0)
        got = scrape(self.metrics)
        self.assertEqual(got[("estore_leader_changes_total", ())], 1)


    def test_tcp_requests(self) -> None:
        """
        Every TCP request is counted by kind; the sampled latencies are
        observed by kind, unknown commands as C{other}.
        """
        from estwisted.wire.tcpcodec import TcpCommand

        meter = self.metrics.tcp_requests
        meter.counts[TcpCommand.WriteEvents] += 3
        meter.counts[TcpCommand.ReadStreamEventsBackward] += 1
        meter.counts[TcpCommand.ReadStreamEventsForward] += 1
        meter.counts[0x01] += 1
        meter.observe(TcpCommand.WriteEvents, 0.002)
        meter.observe(TcpCommand.ReadStreamEventsForward, 0.0001)
        meter.observe(0x01, 0.0001)
        got = scrape(self.metrics)
        total = "estore_tcp_requests_total"
        self.assertEqual(got[(total, (("kind", "write"),))], 3)
        self.assertEqual(got[(total, (("kind", "read_stream"),))], 2)
        self.assertEqual(got[(total, (("kind", "other"),))], 1)
        self.assertNotIn((total, (("kind", "read_all"),)), got)
        count = "estore_tcp_request_duration_seconds_count"
        self.assertEqual(got[(count, (("kind", "write"),))], 1)
        self.assertEqual(got[(count, (("kind", "read_stream"),))], 1)
        self.assertEqual(got[(count, (("kind", "other"),))], 1)
        self.assertNotIn((count, (("kind", "read_all"),)), got)

    def test_fsyncs_from_threads(self) -> None:
        """
        Data syncs timed on other threads are added up at scrape time; the
        observer is removed on close.
        """
        import threading

        from estwisted.storage import flushing

        self.metrics.watch_syncs()
        self.assertEqual(flushing.sync_observer, self.metrics.fsyncs.observe)
        threads = [
            threading.Thread(target=lambda: [flushing.sync_observer(0.003)  # type: ignore[misc]
                                             for _ in range(100)])
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        got = scrape(self.metrics)
        self.assertEqual(got[("estore_fsync_duration_seconds_count", ())], 400)
        self.assertEqual(
            got[("estore_fsync_duration_seconds_bucket", (("le", "0.0025"),))], 0
        )
        self.assertEqual(got[("estore_fsync_duration_seconds_bucket", (("le", "0.005"),))], 400)
        self.assertAlmostEqual(got[("estore_fsync_duration_seconds_sum", ())], 1.2)
        self.metrics.close()
        self.assertIsNone(flushing.sync_observer)

    def test_real_fsync_timed(self) -> None:
        """
        L{estwisted.storage.flushing.fdatasync} reports to the observer.
        """
        import os

        from estwisted.storage import flushing

        self.metrics.watch_syncs()
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x")
            flushing.fdatasync(f.fileno())
        os.unlink(path)
        got = scrape(self.metrics)
        self.assertEqual(got[("estore_fsync_duration_seconds_count", ())], 1)

    def test_progress_and_elections(self) -> None:
        """
        The board's tasks and the elections counter are scraped.
        """
        from estwisted.core.progress import ProgressBoard

        board = ProgressBoard()
        board.start("scavenge", "s", 4, now=0.0, unit="chunks", log=False).advance(3, 1.0)
        self.metrics.sources.board = board

        class Machine:
            elections_started = 2

        class Controller:
            machine = Machine()

        class Wiring:
            controller = Controller()

        self.metrics.sources.cluster = Wiring()
        got = scrape(self.metrics)
        self.assertEqual(got[("estore_scavenge_progress_ratio", ())], 0.75)
        self.assertEqual(
            got[("estore_progress_ratio", (("kind", "scavenge"), ("name", "s")))], 0.75
        )
        self.assertEqual(got[("estore_progress_tasks_running", (("kind", "scavenge"),))], 1)
        self.assertEqual(got[("estore_elections_started_total", ())], 2)

    def test_lag_seconds_scraped(self) -> None:
        """
        A follower's lag in seconds: how long ago the leader had what the
        follower lacks, from the leader positions seen at each scrape.
        """
        now = [100.0]
        self.metrics.collector._now = lambda: now[0]
        docs = {"members": [member("1", "Master", 500), member("2", "Slave", 500)]}
        self.api.node_info = NodeInfo(gossip_view=lambda: docs)
        lag = ("estore_replication_lag_seconds",
               (("address", "127.0.0.2:2112"), ("instance", "2")))
        self.assertEqual(scrape(self.metrics)[lag], 0)
        now[0] = 101.0
        docs["members"][0]["writerCheckpoint"] = 900
        scrape(self.metrics)
        now[0] = 104.0
        docs["members"][0]["writerCheckpoint"] = 1000
        self.assertEqual(scrape(self.metrics)[lag], 3.0)


class PureFamilyTests(SynchronousTestCase):
    def test_lag_seconds(self) -> None:
        samples = [(10.0, 100), (11.0, 200), (12.0, 300)]
        self.assertEqual(lag_seconds(samples, 300, 13.0), 0.0)
        self.assertEqual(lag_seconds(samples, 250, 13.0), 1.0)
        self.assertEqual(lag_seconds(samples, 200, 13.0), 1.0)
        self.assertEqual(lag_seconds(samples, 150, 13.0), 2.0)
        self.assertEqual(lag_seconds(samples, 0, 13.0), 3.0)
        self.assertEqual(lag_seconds([], 0, 13.0), 0.0)

    def test_progress_families_without_scavenge(self) -> None:
        got = samples(progress_families([]))
        self.assertNotIn(("estore_scavenge_progress_ratio", ()), got)


class HistogramTests(SynchronousTestCase):
    def test_buckets_cumulative(self) -> None:
        """
        Bounds are inclusive (Prometheus C{le}); counts are cumulative and
        end with C{+Inf}.
        """
        from estwisted.web.metrics import Histogram

        h = Histogram((1, 5))
        for value in (0.5, 1, 3, 7):
            h.observe(value)
        self.assertEqual(h.buckets(), [("1.0", 2.0), ("5.0", 3.0), ("+Inf", 4.0)])
        self.assertEqual(h.sum, 11.5)
