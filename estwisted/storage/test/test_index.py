# -*- test-case-name: estwisted.storage.test.test_index -*-
"""
Tests for the stream index, its persistence (L{estwisted.storage.indexfile})
and L{estwisted.storage.open.open_storage}.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from array import array
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import DELETED_STREAM, FLAG_SYSTEM
from estwisted.storage import indexfile
from estwisted.storage.index import StreamIndex
from estwisted.storage.indexfile import (
    IndexFileError,
    delta_files,
    index_log,
    load_index,
    read_table,
    save_index,
)
from estwisted.storage.log import ChunkedLog
from estwisted.storage.memory import MemoryLog
from estwisted.storage.open import StorageCloser, open_storage

CHUNK = 16384


def _snapshot(index: StreamIndex) -> tuple[dict[str, list[int]], dict[str, int]]:
    return (
        {name: list(positions) for name, positions in index.streams()},
        dict(index.tombstones()),
    )


def _write(log: Any, index: StreamIndex, stream: str, count: int, tombstone: bool = False) -> None:
    """
    Append C{count} events to C{stream} the way the stream store does:
    append, flush, then index.
    """
    first = index.last_event_number(stream) + 1
    entries = []
    for n in range(first, first + count):
        entries.append((n, log.append(stream, n, b"i" * 16, "t", 0, b"x" * 20, b"", 0)))
    if tombstone:
        entries.append(
            (DELETED_STREAM, log.append(stream, DELETED_STREAM, b"d" * 16, "$d", 2, b"", b"", 0))
        )
    log.flush()
    for n, position in entries:
        index.add(stream, n, position)


streams_strategy = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.lists(st.integers(1, 2**40), min_size=1, max_size=20, unique=True).map(sorted),
    max_size=20,
)


class StreamIndexTests(SynchronousTestCase):
    def test_load(self) -> None:
        """
        L{StreamIndex.load} takes over whole arrays.
        """
        index = StreamIndex()
        positions = array("q", [10, 20, 30])
        index.load({"a": positions}, {"b": 99})
        self.assertEqual(index.last_event_number("a"), 2)
        self.assertEqual(index.get("a", 1), 20)
        self.assertEqual(index.tombstone("b"), 99)
        self.assertEqual(index.stream_count(), 1)
        self.assertEqual(len(index), 4)
        index.add("a", 3, 40)
        self.assertEqual(list(positions), [10, 20, 30, 40])


class IndexFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="estw-idx-")
        self.addCleanup(shutil.rmtree, self.path, True)
        self.file = os.path.join(self.path, "stream.idx")

    @settings(max_examples=25, suppress_health_check=[HealthCheck.differing_executors])
    @given(streams_strategy, st.dictionaries(st.text(max_size=8), st.integers(0, 2**40)))
    def test_round_trip(self, streams: dict[str, list[int]], tombs: dict[str, int]) -> None:
        index = StreamIndex()
        index.load({k: array("q", v) for k, v in streams.items()}, dict(tombs))
        covered = 2**41
        save_index(index, covered, self.file)
        got_covered, got_streams, got_tombs = load_index(self.file)
        self.assertEqual(got_covered, covered)
        self.assertEqual({k: list(v) for k, v in got_streams.items()}, streams)
        self.assertEqual(got_tombs, tombs)
        for v in got_streams.values():
            self.assertEqual(v.typecode, "q")
        self.assertEqual([n for n in os.listdir(self.path)], ["stream.idx"])

    @settings(max_examples=25, suppress_health_check=[HealthCheck.differing_executors])
    @given(streams_strategy, st.integers(0, 2**40))
    def test_covered_cut(self, streams: dict[str, list[int]], covered: int) -> None:
        """
        Only entries below the covered position are saved.
        """
        index = StreamIndex()
        index.load({k: array("q", v) for k, v in streams.items()}, {"t1": covered, "t0": 0})
        save_index(index, covered, self.file)
        _, got, tombs = load_index(self.file)
        expected = {k: [p for p in v if p < covered] for k, v in streams.items()}
        self.assertEqual(
            {k: list(v) for k, v in got.items()}, {k: v for k, v in expected.items() if v}
        )
        self.assertEqual(tombs, {"t0": 0} if covered > 0 else {})

    @settings(max_examples=25, suppress_health_check=[HealthCheck.differing_executors])
    @given(streams_strategy, st.integers(0, 2**40), st.integers(0, 2**40))
    def test_delta_window(self, streams: dict[str, list[int]], a: int, b: int) -> None:
        """
        A delta table holds exactly the entries in C{[since, covered)}, each
        stream with the number of its first entry there.
        """
        since, covered = min(a, b), max(a, b)
        index = StreamIndex()
        index.load({k: array("q", v) for k, v in streams.items()}, {"t": since})
        save_index(index, covered, self.file, since)
        table = read_table(self.file)
        self.assertEqual((table.since, table.covered), (since, covered))
        expected = {}
        for name, positions in streams.items():
            window = [(n, p) for n, p in enumerate(positions) if since <= p < covered]
            if window:
                expected[name] = (window[0][0], [p for _, p in window])
        self.assertEqual({n: (f, list(p)) for n, f, p in table.streams}, expected)
        self.assertEqual(table.tombstones, {"t": since} if since < covered else {})
        self.assertRaises(IndexFileError, load_index, self.file)

    @settings(max_examples=40)
    @given(st.data())
    def test_damage_detected(self, data: st.DataObject) -> None:
        """
        Any changed byte or truncation makes loading fail.
        """
        index = StreamIndex()
        index.load({"a": array("q", [1, 2, 3]), "\u00e9t\u00e9": array("q", [4])}, {"z": 5})
        save_index(index, 100, self.file)
        with open(self.file, "rb") as f:
            raw = bytearray(f.read())
        if data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        else:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        with open(self.file, "wb") as f:
            f.write(raw)
        self.assertRaises(IndexFileError, load_index, self.file)

    def test_missing(self) -> None:
        self.assertRaises(IndexFileError, load_index, self.file)


class OpenStorageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="estw-open-")
        self.addCleanup(shutil.rmtree, self.path, True)
        self.index_file = os.path.join(self.path, "index", "stream.idx")

    def open(self) -> tuple[Any, StreamIndex, StorageCloser]:
        log, index, closer = open_storage(self.path, False, CHUNK)
        self.addCleanup(closer)
        return log, index, closer

    def fill(self, log: Any, index: StreamIndex) -> None:
        for i in range(40):
            _write(log, index, f"stream-{i % 7}", 1 + i % 4)
        _write(log, index, "gone", 3, tombstone=True)

    def test_memory(self) -> None:
        log, index, closer = open_storage(None, True, CHUNK)
        self.assertIsInstance(log, MemoryLog)
        self.assertEqual(len(index), 0)
        self.assertFalse(closer.save_index())
        closer()

    def test_new_database(self) -> None:
        log, index, closer = self.open()
        self.assertIsInstance(log, ChunkedLog)
        self.assertEqual(len(index), 0)
        self.assertTrue(closer.report["rebuilt"])

    def test_persisted_round_trip(self) -> None:
        """
        The index saved at close is loaded at the next open, without
        re-reading the log, and equals the index built while writing.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        expected = _snapshot(index)
        closer()
        self.assertTrue(os.path.exists(self.index_file))
        log2, index2, closer2 = self.open()
        self.assertFalse(closer2.report["rebuilt"])
        self.assertEqual(closer2.report["tail"], 0)
        self.assertEqual(closer2.report["loaded"], len(index))
        self.assertEqual(_snapshot(index2), expected)
        self.assertEqual(log2.checkpoints.chaser.value, log2.end_position)

    def test_tail_indexed(self) -> None:
        """
        Records written after the last save (then a crash) are indexed from
        the log tail on top of the loaded file.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        closer.save_index()
        _write(log, index, "stream-1", 5)
        _write(log, index, "late", 2)
        expected = _snapshot(index)
        log._release()  # crash: no save, no clean close
        closer._closed = True
        _, index2, closer2 = self.open()
        self.assertFalse(closer2.report["rebuilt"])
        self.assertEqual(closer2.report["tail"], 7)
        self.assertEqual(_snapshot(index2), expected)

    def _crash(self, log: Any, closer: StorageCloser) -> None:
        log._release()
        closer._closed = True

    def test_deltas(self) -> None:
        """
        Saves after the first write delta tables; a restart loads the base,
        applies the deltas and indexes only the tail.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        closer.save_index()
        base = load_index(self.index_file)[0]
        _write(log, index, "stream-1", 5)
        closer.save_index()
        _write(log, index, "new", 3, tombstone=True)
        closer.save_index()
        _write(log, index, "stream-2", 2)
        expected = _snapshot(index)
        self.assertEqual(len(delta_files(os.path.dirname(self.index_file))), 2)
        self.assertEqual(load_index(self.index_file)[0], base)
        self._crash(log, closer)
        _, index2, closer2 = self.open()
        self.assertEqual(closer2.report["deltas"], 2)
        self.assertEqual(closer2.report["tail"], 2)
        self.assertFalse(closer2.report["rebuilt"])
        self.assertEqual(_snapshot(index2), expected)

    def test_deltas_merged_into_base(self) -> None:
        """
        After enough deltas the next save writes a new base and deletes them.
        """
        from estwisted.storage.open import MAX_DELTAS

        log, index, closer = self.open()
        self.fill(log, index)
        closer.save_index()
        directory = os.path.dirname(self.index_file)
        for i in range(MAX_DELTAS):
            _write(log, index, "more", 1)
            closer.save_index()
            self.assertEqual(len(delta_files(directory)), i + 1)
        _write(log, index, "more", 1)
        closer.save_index()
        self.assertEqual(delta_files(directory), [])
        self.assertEqual(load_index(self.index_file)[0], log.end_position)
        expected = _snapshot(index)
        closer()
        _, index2, closer2 = self.open()
        self.assertEqual(_snapshot(index2), expected)

    def test_damaged_delta(self) -> None:
        """
        A damaged delta and the ones after it are dropped; their entries come
        back from the log tail.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        closer.save_index()
        for i in range(3):
            _write(log, index, f"d{i}", 2)
            closer.save_index()
        expected = _snapshot(index)
        self._crash(log, closer)
        directory = os.path.dirname(self.index_file)
        names = delta_files(directory)
        with open(os.path.join(directory, names[1]), "r+b") as f:
            f.seek(80)
            f.write(b"\xfe")
        _, index2, closer2 = self.open()
        self.assertEqual(closer2.report["deltas"], 1)
        self.assertEqual(closer2.report["tail"], 4)
        self.assertEqual(_snapshot(index2), expected)
        self.assertEqual(delta_files(directory), names[:1])

    def test_stale_delta_removed(self) -> None:
        """
        A delta already merged into the base (a crash between writing the
        base and deleting the deltas) is ignored and deleted.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        closer.save_index()
        since = load_index(self.index_file)[0]
        _write(log, index, "x", 2)
        directory = os.path.dirname(self.index_file)
        stale = os.path.join(directory, f"delta-{since:020d}.idx")
        save_index(index, log.end_position, stale, since)
        save_index(index, log.end_position, self.index_file)
        expected = _snapshot(index)
        closer()
        _, index2, closer2 = self.open()
        self.assertEqual(closer2.report["deltas"], 0)
        self.assertEqual(_snapshot(index2), expected)
        self.assertFalse(os.path.exists(stale))

    def test_damaged_file_rebuilds(self) -> None:
        log, index, closer = self.open()
        self.fill(log, index)
        expected = _snapshot(index)
        closer()
        with open(self.index_file, "r+b") as f:
            f.seek(70)
            f.write(b"\x99")
        _, index2, closer2 = self.open()
        self.assertTrue(closer2.report["rebuilt"])
        self.assertEqual(_snapshot(index2), expected)

    def test_missing_file_rebuilds(self) -> None:
        log, index, closer = self.open()
        self.fill(log, index)
        expected = _snapshot(index)
        closer()
        os.unlink(self.index_file)
        _, index2, closer2 = self.open()
        self.assertTrue(closer2.report["rebuilt"])
        self.assertEqual(_snapshot(index2), expected)

    def test_index_ahead_of_log(self) -> None:
        """
        An index file covering more than the log holds is not trusted.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        expected = _snapshot(index)
        closer()
        covered, streams, tombs = load_index(self.index_file)
        bogus = StreamIndex()
        bogus.load(streams, tombs)
        save_index(bogus, covered + 10_000, self.index_file)
        _, index2, closer2 = self.open()
        self.assertTrue(closer2.report["rebuilt"])
        self.assertEqual(_snapshot(index2), expected)

    def test_truncation_rebuilds(self) -> None:
        log, index, closer = self.open()
        self.fill(log, index)
        cut = index.get("stream-3", 0)
        assert cut is not None
        closer()
        from estwisted.storage.test.test_chunks import _set_checkpoint

        _set_checkpoint(self.path, "truncate", cut)
        _, index2, closer2 = self.open()
        self.assertTrue(closer2.report["rebuilt"])
        self.assertEqual(index2.last_event_number("stream-3"), -1)
        for _, positions in index2.streams():
            self.assertTrue(all(p < cut for p in positions))

    def _cut_and_regrow(self, save_after: bool) -> None:
        """
        A replica cuts its log while running (a deposed leader's tail),
        then replicates new records at the same positions, past what the
        saved index covered, and crashes (after one more save, or not):
        the next open does not trust the index files that held the cut
        records (the chaos suite, seed 23, saw "event 7212 after 7212"
        and a node that would not start), and its index is the log's.
        """
        log, index, closer = self.open()
        self.fill(log, index)
        closer.save_index()
        covered = log.end_position
        cut = index.get("stream-3", 0)
        assert cut is not None
        log.truncate(cut)
        index.truncate_from(cut)
        for i in range(200):
            if log.end_position > covered + 1000:
                break
            _write(log, index, f"stream-{i % 7}", 2)
        self.assertGreater(log.end_position, covered)
        if save_after:
            closer.save_index()
        expected = _snapshot(index)
        self._crash(log, closer)
        _, index2, closer2 = self.open()
        self.assertEqual(_snapshot(index2), expected)

    def test_live_truncation_then_regrowth(self) -> None:
        self._cut_and_regrow(save_after=False)

    def test_live_truncation_saved_then_regrowth(self) -> None:
        self._cut_and_regrow(save_after=True)

    def test_system_records_skipped(self) -> None:
        log, index, closer = self.open()
        log.append("", -1, b"\x00" * 16, "$epoch", FLAG_SYSTEM, b"", b"", 0)
        log.flush()
        _write(log, index, "a", 2)
        closer()
        os.unlink(self.index_file)
        _, index2, _ = self.open()
        self.assertEqual(_snapshot(index2), ({"a": [p for p in index.positions("a", 0, 9)]}, {}))

    def test_save_only_when_changed(self) -> None:
        log, index, closer = self.open()
        _write(log, index, "a", 2)
        self.assertTrue(closer.save_index())
        self.assertFalse(closer.save_index())
        _write(log, index, "a", 1)
        self.assertTrue(closer.save_index())

    def test_index_saver(self) -> None:
        """
        The periodic saver writes the index when enough entries are new, and
        survives a failing save.
        """
        from twisted.internet.task import Clock

        from estwisted.storage.open import index_saver

        log, index, closer = self.open()
        clock = Clock()
        service = index_saver(closer, clock, interval=10, min_new_entries=5)
        service.startService()
        self.addCleanup(service.stopService)
        _write(log, index, "a", 3)
        clock.advance(10)
        self.assertFalse(os.path.exists(self.index_file))
        _write(log, index, "a", 3)
        clock.advance(10)
        self.assertEqual(load_index(self.index_file)[0], log.end_position)
        calls = []

        def broken(n: int) -> bool:
            calls.append(n)
            raise OSError("boom")

        self.patch(closer, "save_index", broken)
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(calls, [5, 5])
        self.flushLoggedErrors(OSError)

    def test_index_log_memory(self) -> None:
        """
        L{index_log} works on any L{IEventLog} (here without C{scan}).
        """
        log = MemoryLog()
        built = StreamIndex()
        _write(log, built, "a", 3)
        _write(log, built, "b", 1, tombstone=True)
        index = StreamIndex()
        self.assertEqual(index_log(log, index, 0), 5)
        self.assertEqual(_snapshot(index), _snapshot(built))

    def test_progress_logged(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.patch(indexfile, "PROGRESS_EVERY", 10)
        log = MemoryLog()
        _write(log, StreamIndex(), "a", 25)
        index_log(log, StreamIndex(), 0)
        progress = [e for e in events if "Indexing the log" in e.get("log_format", "")]
        self.assertEqual([e["count"] for e in progress], [10, 20])

    def test_memory_per_event(self) -> None:
        """
        The index stays well under 48 bytes per event (arrays, no object per
        event).
        """
        log, index, closer = self.open()
        for i in range(100):
            stream = f"s-{i}"
            positions = array("q", range(i * 1000, i * 1000 + 1000))
            index.load({**dict(index.streams()), stream: positions}, {})
        size = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in index.streams())
        size += sys.getsizeof(dict(index.streams()))
        self.assertLess(size / len(index), 48)
        closer.save_index()
        _, streams, _ = load_index(self.index_file)
        loaded = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in streams.items())
        self.assertLess(loaded / len(index), 48)


class PersistenceMachine(RuleBasedStateMachine):
    """
    Writes, index saves (base and delta tables), crashes, clean restarts
    and damaged index files: after every step the index equals the one
    built while writing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="estw-persist-")
        self.log: Any
        self.log, self.index, self.closer = open_storage(self.path, False, CHUNK)
        self.expected = StreamIndex()

    @rule(stream=st.sampled_from(["a", "b", "c", "$$a"]), count=st.integers(1, 30))
    def write(self, stream: str, count: int) -> None:
        before = self.index.last_event_number(stream)
        _write(self.log, self.index, stream, count)
        for n in range(before + 1, before + 1 + count):
            position = self.index.get(stream, n)
            assert position is not None
            self.expected.add(stream, n, position)

    @rule()
    def save(self) -> None:
        self.closer.save_index()

    @rule()
    def restart(self) -> None:
        self.closer()
        self.log, self.index, self.closer = open_storage(self.path, False, CHUNK)

    @rule()
    def crash(self) -> None:
        self.log._release()
        self.closer._closed = True
        self.log, self.index, self.closer = open_storage(self.path, False, CHUNK)

    @rule(offset=st.integers(0, 200))
    def damage_newest_table(self, offset: int) -> None:
        """
        Crash, then flip a byte of the newest index table.
        """
        self.log._release()
        self.closer._closed = True
        directory = os.path.join(self.path, "index")
        names = sorted(n for n in os.listdir(directory) if n.endswith(".idx"))
        if names:
            path = os.path.join(directory, names[-1])
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.seek(offset % size)
                byte = f.read(1)
                f.seek(offset % size)
                f.write(bytes([byte[0] ^ 0x5A]))
        self.log, self.index, self.closer = open_storage(self.path, False, CHUNK)

    @invariant()
    def index_matches(self) -> None:
        assert _snapshot(self.index) == _snapshot(self.expected)

    def teardown(self) -> None:
        self.closer()
        shutil.rmtree(self.path, True)


class PersistenceMachineTests(SynchronousTestCase):
    def test_machine(self) -> None:
        run_state_machine_as_test(
            PersistenceMachine, settings=settings(max_examples=25, stateful_step_count=20)
        )


class ForgetTests(SynchronousTestCase):
    def test_forget_prefix(self) -> None:
        """
        L{StreamIndex.forget} marks a scavenged prefix with -1, never the
        last event, and keeps the positions ascending.
        """
        index = StreamIndex()
        for n in range(5):
            index.add("s", n, 100 + n)
        index.forget("s", 2)
        self.assertEqual(list(index.positions("s", 0, 4)), [100, 101, 102, 103, 104])
        for n in range(5):
            index.forget("s", n)
        self.assertEqual(list(index.positions("s", 0, 4)), [-1, -1, -1, -1, 104])
        self.assertEqual(index.last_event_number("s"), 4)
