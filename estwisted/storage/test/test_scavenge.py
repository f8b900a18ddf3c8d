"""
Tests for L{estwisted.storage.scavenge}, scavenged chunks in
L{estwisted.storage.log.ChunkedLog} and L{estwisted.core.scavenger}.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.metadata import NO_METADATA, StreamMetadata
from estwisted.core.model import DELETED_STREAM, EXPECTED_ANY, FLAG_SYSTEM, NewEvent
from estwisted.core.streams import StreamStore
from estwisted.storage.chunks import HEADER_SIZE, Chunk
from estwisted.storage.index import StreamIndex
from estwisted.storage.indexfile import index_log
from estwisted.storage.log import MIN_CHUNK_SIZE, ChunkedLog
from estwisted.storage.records import encode
from estwisted.storage.scavenge import (
    TICKS_PER_SECOND,
    ChunkResult,
    StreamState,
    encode_scavenged,
    keep_record,
    plan_runs,
    rewrite_chunk,
)

NOW = 1_000_000 * TICKS_PER_SECOND


class KeepRecordTests(SynchronousTestCase):
    def test_rules(self) -> None:
        """
        v5's rules: system records and the last event stay; a hard-deleted
        stream keeps only its tombstone; C{$tb}, C{$maxCount} and
        C{$maxAge} remove what reads hide.
        """
        plain = StreamState(9, False, NO_METADATA)
        self.assertTrue(keep_record(0, 0, 0, plain, NOW))
        self.assertTrue(keep_record(0, 0, FLAG_SYSTEM, StreamState(9, True, NO_METADATA), NOW))
        deleted = StreamState(9, True, NO_METADATA)
        self.assertFalse(keep_record(9, 0, 0, deleted, NOW))
        self.assertTrue(keep_record(DELETED_STREAM, 0, 0, deleted, NOW))
        soft = StreamState(9, False, StreamMetadata(truncate_before=DELETED_STREAM))
        self.assertFalse(keep_record(8, 0, 0, soft, NOW))
        self.assertTrue(keep_record(9, 0, 0, soft, NOW))
        count = StreamState(9, False, StreamMetadata(max_count=3))
        self.assertEqual([n for n in range(10) if keep_record(n, 0, 0, count, NOW)], [7, 8, 9])
        tb = StreamState(9, False, StreamMetadata(truncate_before=4))
        self.assertEqual(min(n for n in range(10) if keep_record(n, 0, 0, tb, NOW)), 4)
        age = StreamState(9, False, StreamMetadata(max_age=10))
        self.assertFalse(keep_record(3, NOW - 11 * TICKS_PER_SECOND, 0, age, NOW))
        self.assertTrue(keep_record(3, NOW - 9 * TICKS_PER_SECOND, 0, age, NOW))
        self.assertTrue(keep_record(9, 0, 0, age, NOW))

    @given(
        st.integers(-1, 50),
        st.integers(0, 60),
        st.one_of(st.none(), st.integers(1, 20)),
        st.one_of(st.none(), st.integers(0, 60)),
    )
    def test_last_and_visible_kept(
        self, last: int, number: int, max_count: Any, truncate_before: Any
    ) -> None:
        """
        The last event and every event a read can still see always survive.
        """
        from estwisted.core.metadata import min_visible

        metadata = StreamMetadata(max_count=max_count, truncate_before=truncate_before)
        state = StreamState(last, False, metadata)
        if number >= last or number >= min_visible(last, metadata):
            self.assertTrue(keep_record(number, 0, 0, state, NOW))
        else:
            self.assertFalse(keep_record(number, 0, 0, state, NOW))


def _frames(sizes: list[int], keep: list[bool]) -> tuple[list[tuple[int, bytes]], int]:
    out = []
    local = 0
    for size, k in zip(sizes, keep, strict=True):
        frame = encode(local, b"s", 0, b"\x00" * 16, b"t", 0, b"x" * size, b"", 0)
        if k:
            out.append((local, frame))
        local += len(frame)
    return out, local


class CodecTests(SynchronousTestCase):
    @given(st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=40))
    def test_runs(self, records: list[tuple[int, bool]]) -> None:
        """
        Runs cover exactly the kept records, are packed physically, and
        merge records that were adjacent.
        """
        frames, _ = _frames([s for s, _ in records], [k for _, k in records])
        runs = plan_runs((local, len(f)) for local, f in frames)
        self.assertEqual(sum(n for _, _, n in runs), sum(len(f) for _, f in frames))
        physical = 0
        for p, _lo, n in runs:
            self.assertEqual(p, physical)
            physical += n
        for (_, a, n), (_, b, _) in zip(runs, runs[1:], strict=False):
            self.assertLess(a + n, b)

    @given(st.lists(st.tuples(st.integers(0, 300), st.booleans()), min_size=1, max_size=30))
    def test_round_trip(self, records: list[tuple[int, bool]]) -> None:
        """
        A scavenged chunk file opened by L{Chunk.open} gives back every
        survivor at its logical position.
        """
        frames, data_size = _frames([s for s, _ in records], [k for _, k in records])
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "chunk-000000.000001")
        with open(path, "wb") as f:
            f.write(encode_scavenged(MIN_CHUNK_SIZE * 4, 0, data_size, frames))
        chunk = Chunk.open(path, writable=False)
        self.addCleanup(chunk.close)
        self.assertEqual(chunk.data_size, data_size)
        assert chunk.runs is not None
        phys, logical, lengths = chunk.runs
        found = []
        for p, lo, n in zip(phys, logical, lengths, strict=True):
            off = HEADER_SIZE + p
            while off < HEADER_SIZE + p + n:
                size = int.from_bytes(chunk.view[off : off + 4], "little")
                found.append((lo + off - HEADER_SIZE - p, bytes(chunk.view[off : off + size])))
                off += size
        self.assertEqual(found, frames)


class ScavengedLogTests(SynchronousTestCase):
    """
    A L{ChunkedLog} with scavenged chunks reads what survived at the same
    positions, forwards, backwards, raw and after a reopen.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="estwisted-scav-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.addCleanup(lambda: self.log.close())
        for i in range(300):
            stream = f"s{i % 3}"
            self.log.append(stream, i // 3, uuid.uuid4().bytes, "t", 0, b"d" * (i % 50), b"", 0)
        self.log.flush()
        self.all = self.log.read_forward(0, 10_000)

    def scavenge(self, drop: Any) -> list[Any]:
        """
        Scavenge every completed chunk, removing stream C{drop} (a name or
        a tuple of names).
        """
        drops = (drop,) if isinstance(drop, str) else tuple(drop)
        states = {s: StreamState(99, s in drops, NO_METADATA) for s in ("s0", "s1", "s2")}
        saved = 0
        for number in range(self.log.completed_chunks):
            result = ChunkResult(number)
            work = rewrite_chunk(
                self.log.chunk(number),
                self.log.chunk_runs(number),
                states.__getitem__,
                NOW,
                result,
            )
            for _ in work:
                pass
            if result.path:
                saved += self.log.replace_chunk(number, result.path)
        self.assertGreater(saved, 0)
        current = self.log.completed_chunks * MIN_CHUNK_SIZE
        return [r for r in self.all if r.stream not in drops or r.position >= current]

    def check(self, expected: list[Any]) -> None:
        log = self.log
        self.assertEqual(log.read_forward(0, 10_000), expected)
        self.assertEqual(log.read_backward(log.end_position, 10_000), expected[::-1])
        for r in expected:
            self.assertEqual(log.read(r.position), r)
            self.assertEqual(log.read_forward(r.position, 1), [r])
        for r in self.all:
            if r not in expected:
                self.assertRaises(KeyError, log.read, r.position)
                nxt = [e for e in expected if e.position > r.position][:1]
                self.assertEqual(log.read_forward(r.position, 1), nxt)
        # raw reads start at a survivor and hold whole frames
        for r in expected:
            start, frames, after = log.read_raw(r.position, 1)
            self.assertEqual(start, r.position)
            self.assertEqual(after - start, r.next_position - r.position)
            self.assertEqual(len(frames), after - start)
        index = StreamIndex()
        index_log(log, index, 0)
        for r in expected:
            self.assertEqual(index.get(r.stream, r.event_number), r.position)

    def test_read_back(self) -> None:
        """
        Survivors are read at their positions; removed positions are gone
        and reads from them go on with the next survivor.
        """
        expected = self.scavenge("s1")
        self.assertLess(len(expected), len(self.all))
        self.check(expected)

    def test_reopen(self) -> None:
        """
        After a reopen the scavenged chunks (highest version) are used and
        the old files are gone.
        """
        expected = self.scavenge("s1")
        self.log.close()
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.check(expected)
        names = [n for n in os.listdir(self.directory) if n.startswith("chunk-000000")]
        self.assertEqual(names, ["chunk-000000.000001"])

    def test_scavenge_twice(self) -> None:
        """
        A scavenged chunk can be scavenged again (version 2).
        """
        self.scavenge("s1")
        expected = [
            r
            for r in self.scavenge("s2")
            if r.stream != "s1" or r.position >= (self.log.completed_chunks * MIN_CHUNK_SIZE)
        ]
        self.check(expected)

    def merge(self) -> list[tuple[int, int]]:
        """
        Merge every group L{ChunkedLog.merge_groups} proposes.
        """
        from estwisted.storage.scavenge import merge_chunks

        groups = self.log.merge_groups()
        for first, last in groups:
            chunks = [self.log.chunk(n) for n in range(first, last + 1)]
            version = max(self.log.chunk_version(n) for n in range(first, last + 1)) + 1
            paths: list[str] = []
            for _ in merge_chunks(chunks, version, paths):
                pass
            self.log.replace_merged(first, last, paths[0])
        return groups

    def chunk_files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if n.startswith("chunk-"))

    def test_merge(self) -> None:
        """
        Small scavenged chunks merge into fewer files; every survivor reads
        at its position (forwards, backwards, raw, index rebuild), also
        after a reopen; a second merge finds nothing to do.
        """
        expected = self.scavenge(("s1", "s2"))
        before = self.chunk_files()
        groups = self.merge()
        self.assertTrue(groups)
        after = self.chunk_files()
        self.assertLess(len(after), len(before))
        self.check(expected)
        self.assertEqual(self.log.merge_groups(), [])
        self.log.close()
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.assertEqual(self.chunk_files(), after)
        self.check(expected)

    def test_rescavenge_inside_a_merged_file(self) -> None:
        """
        A chunk of a merged file scavenged again gets its own newer file,
        which wins for that chunk (the merged file keeps the others) also
        after a reopen; the next merge folds it back in.
        """
        self.scavenge(("s1", "s2"))
        self.merge()
        expected = self.scavenge(("s0", "s1", "s2"))
        self.check(expected)
        self.log.close()
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.check(expected)
        files = len(self.chunk_files())
        self.assertTrue(self.merge())
        self.assertLess(len(self.chunk_files()), files)
        self.check(expected)
        self.log.close()
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.check(expected)

    def test_merge_crash_windows(self) -> None:
        """
        A crash after the merged file's rename but before the old files are
        deleted: the open keeps the merged file and deletes the others.  A
        crash before the rename leaves a C{.tmp} file, removed on open.
        """
        from estwisted.storage.scavenge import merge_chunks

        expected = self.scavenge(("s1", "s2"))
        first, last = self.log.merge_groups()[0]
        chunks = [self.log.chunk(n) for n in range(first, last + 1)]
        version = max(self.log.chunk_version(n) for n in range(first, last + 1)) + 1
        paths: list[str] = []
        for _ in merge_chunks(chunks, version, paths):
            pass
        old = [os.path.basename(c.path) for c in chunks]
        # "crash": the log never swapped the file in
        self.log.close()
        with open(os.path.join(self.directory, "chunk-000001.000009.x.merge.tmp"), "wb") as f:
            f.write(b"partial")
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        names = self.chunk_files()
        self.assertIn(os.path.basename(paths[0]), names)
        self.assertFalse(set(old) & set(names))
        self.assertFalse([n for n in os.listdir(self.directory) if n.endswith(".tmp")])
        self.check(expected)

    def test_reader_keeps_a_replaced_chunk(self) -> None:
        """
        A pinned chunk (an image being sent to a replica) stays readable
        after a merge replaced and deleted its file; it closes when
        released.
        """
        self.scavenge(("s1", "s2"))
        first, _ = self.log.merge_groups()[0]
        image = self.log.chunk_image(first)
        data = image.read(0, image.size)
        old = self.log.chunk(first)
        self.merge()
        self.assertIsNot(self.log.chunk(first), old)
        self.assertFalse(os.path.exists(old.path) and old.path != self.log.chunk(first).path)
        self.assertEqual(image.read(0, image.size), data)
        self.assertFalse(old.closed)
        image.close()
        self.assertTrue(old.closed)

    def test_crash_leftovers(self) -> None:
        """
        A temporary file and an old version left by a crash are removed on
        open.
        """
        expected = self.scavenge("s1")
        self.log.close()
        with open(os.path.join(self.directory, "chunk-000001.000009.ab.scavenge.tmp"), "wb"):
            pass
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.check(expected)
        self.assertFalse([n for n in os.listdir(self.directory) if n.endswith(".tmp")])


class ScavengerTests(SynchronousTestCase):
    """
    L{estwisted.core.scavenger.Scavenger} over a real store and log.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="estwisted-scavenger-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.addCleanup(lambda: self.log.close())
        self.index = StreamIndex()
        self.store = StreamStore(self.log, self.index, self.clock)

    def settle(self, d: Any) -> Any:
        for _ in range(50):
            self.clock.advance(0.01)
        return self.successResultOf(d)

    def write(self, stream: str, n: int) -> None:
        events = [NewEvent(uuid.uuid4().bytes, "t", b"x" * 100) for _ in range(n)]
        self.settle(self.store.append(stream, EXPECTED_ANY, events, None))

    def test_scavenge(self) -> None:
        """
        A scavenge removes deleted and truncated events, keeps the rest
        readable, and records v5's events in C{$scavenges-{id}}.
        """
        for _ in range(10):
            self.write("gone", 10)
            self.write("kept", 10)
            self.write("capped", 10)
        meta = json.dumps({"$maxCount": 5}).encode()
        self.settle(self.store.set_metadata("capped", EXPECTED_ANY, meta, None))
        self.settle(self.store.delete_stream("gone", EXPECTED_ANY, True, None))
        self.write("tail", 60)
        before = self.store.read_stream("kept", 0, 1000, True, False, None)
        scavenger = self.store.scavenger()
        assert scavenger is not None
        scavenge_id, done = scavenger.start()
        body = self.settle(done)
        self.assertEqual(body["result"], "Success")
        self.assertGreater(body["spaceSaved"], 0)
        progress = scavenger.progress
        assert progress is not None
        self.assertEqual(
            (progress.kind, progress.name, progress.unit, progress.result, progress.percentage),
            ("scavenge", scavenge_id, "chunks", "done", 100.0),
        )
        after = self.store.read_stream("kept", 0, 1000, True, False, None)
        self.assertEqual(after.events, before.events)
        capped = self.store.read_stream("capped", 0, 1000, True, False, None)
        self.assertEqual(
            [e.event.event_number for e in capped.events if e.event], list(range(95, 100))
        )
        self.settle(self.store.append("tail", EXPECTED_ANY, [], None))
        history = self.store.read_stream(
            f"$scavenges-{scavenge_id}", 0, 100, True, False, SYSTEM_PRINCIPAL
        )
        types = [e.event.event_type for e in history.events if e.event]
        self.assertEqual(types[0], "$scavengeStarted")
        self.assertEqual(types[-1], "$scavengeCompleted")
        self.assertIn("$scavengeChunksCompleted", types)

    def populate(self) -> None:
        for _ in range(10):
            self.write("gone", 10)
            self.write("kept", 10)
        self.settle(self.store.delete_stream("gone", EXPECTED_ANY, True, None))
        self.write("tail", 60)

    def test_stop(self) -> None:
        """
        A stopped scavenge ends with C{Stopped}, leaves no temporary file
        and the log readable; another can start afterwards.
        """
        self.populate()
        before = self.store.read_stream("kept", 0, 1000, True, False, None)
        scavenger = self.store.scavenger()
        assert scavenger is not None
        scavenge_id, done = scavenger.start()
        self.assertTrue(scavenger.stop(scavenge_id))
        self.assertFalse(scavenger.stop("other"))
        body = self.settle(done)
        self.assertEqual(body["result"], "Stopped")
        self.assertEqual(scavenger.progress and scavenger.progress.result, "stopped")
        self.assertFalse([n for n in os.listdir(self.directory) if n.endswith(".tmp")])
        self.assertEqual(
            self.store.read_stream("kept", 0, 1000, True, False, None).events, before.events
        )
        _, again = scavenger.start()
        self.assertEqual(self.settle(again)["result"], "Success")

    def test_disk_full(self) -> None:
        """
        No space for the new chunk file: the scavenge fails cleanly, the old
        chunk stays in use and no temporary file is left.
        """
        import errno

        from estwisted.storage import scavenge

        self.populate()
        before = self.store.read_stream("kept", 0, 1000, True, False, None)

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(scavenge, "_write_all", full)
        scavenger = self.store.scavenger()
        assert scavenger is not None
        _, done = scavenger.start()
        body = self.settle(done)
        self.assertEqual(body["result"], "Failed")
        self.assertIn("disk full", body["error"])
        self.assertFalse([n for n in os.listdir(self.directory) if n.endswith(".tmp")])
        self.assertEqual(
            self.store.read_stream("kept", 0, 1000, True, False, None).events, before.events
        )


class ScavengerMergeTests(ScavengerTests):
    """
    The scavenger's merge phase and its options (C{DisableScavengeMerging},
    C{ScavengeHistoryMaxAge}).
    """

    def files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if n.startswith("chunk-"))

    def run_scavenge(self) -> tuple[str, dict[str, Any]]:
        scavenger = self.store.scavenger()
        assert scavenger is not None
        scavenge_id, done = scavenger.start()
        body = self.settle(done)
        self.assertEqual(body["result"], "Success")
        return scavenge_id, body

    def history(self, scavenge_id: str) -> list[Any]:
        return [
            e.event
            for e in self.store.read_stream(
                f"$scavenges-{scavenge_id}", 0, 1000, True, False, SYSTEM_PRINCIPAL
            ).events
            if e.event
        ]

    def test_merges_by_default(self) -> None:
        """
        After the chunks are scavenged, small neighbours merge into one
        file; the merge is recorded with its chunk range; reads and a
        reopen see the same.
        """
        self.populate()
        before = self.store.read_stream("kept", 0, 1000, True, False, None)
        scavenge_id, _ = self.run_scavenge()
        merged = [
            json.loads(e.data)
            for e in self.history(scavenge_id)
            if e.event_type == "$scavengeChunksCompleted"
            and json.loads(e.data)["chunkEndNumber"] > json.loads(e.data)["chunkStartNumber"]
        ]
        self.assertTrue(merged)
        self.assertLess(len(self.files()), self.log.completed_chunks + 1)
        self.assertEqual(
            self.store.read_stream("kept", 0, 1000, True, False, None).events, before.events
        )
        records = self.log.read_forward(0, 100_000)
        self.log.close()
        self.log = ChunkedLog(self.directory, chunk_size=MIN_CHUNK_SIZE)
        self.assertEqual(self.log.read_forward(0, 100_000), records)

    def test_merging_disabled(self) -> None:
        self.store.scavenge_options = {"merge": False, "history_max_age": 7}
        self.populate()
        scavenge_id, _ = self.run_scavenge()
        self.assertEqual(len(self.files()), self.log.completed_chunks + 1)
        ranges = [
            json.loads(e.data)
            for e in self.history(scavenge_id)
            if e.event_type == "$scavengeChunksCompleted"
        ]
        self.assertTrue(all(r["chunkStartNumber"] == r["chunkEndNumber"] for r in ranges))
        self.assertTrue(self.log.merge_groups())
        metadata = self.store.stream_metadata(f"$scavenges-{scavenge_id}")
        self.assertEqual(metadata.max_age, 7 * 86400)


class FullChunkTests(SynchronousTestCase):
    """
    A chunk whose records fill it exactly (its data size is the chunk
    size), scavenged or not, reads backwards (a restart's first read).
    """

    def test_read_backward_over_a_full_chunk(self) -> None:
        from estwisted.storage.records import OVERHEAD

        path = tempfile.mkdtemp(prefix="estw-full-")
        self.addCleanup(shutil.rmtree, path, True)
        log = ChunkedLog(path, chunk_size=MIN_CHUNK_SIZE)
        self.addCleanup(log.close)
        number = 0
        while log.pending_position < MIN_CHUNK_SIZE:
            room = MIN_CHUNK_SIZE - log.pending_position - OVERHEAD - 2
            data = 500 if room >= 600 else room
            log.append("x", number, uuid.uuid4().bytes, "t", 0, b"d" * data, b"", 0)
            number += 1
        self.assertEqual(log.pending_position, MIN_CHUNK_SIZE)
        log.append("y", 0, uuid.uuid4().bytes, "t", 0, b"after", b"", 0)
        log.flush()
        self.assertEqual(log.chunk(0).data_size, MIN_CHUNK_SIZE)
        everything = log.read_forward(0, 1000)
        self.assertEqual(log.read_backward(log.end_position, 1000), everything[::-1])
        # everything of "x" but its last event goes: the chunk is scavenged
        states = {
            "x": StreamState(number - 1, True, NO_METADATA),
            "y": StreamState(0, False, NO_METADATA),
        }
        result = ChunkResult(0)
        for _ in rewrite_chunk(log.chunk(0), log.chunk_runs(0), states.__getitem__, NOW, result):
            pass
        assert result.path is not None
        log.replace_chunk(0, result.path)
        self.assertEqual(log.chunk(0).data_size, MIN_CHUNK_SIZE)
        left = log.read_forward(0, 1000)
        self.assertEqual([r.stream for r in left], ["y"])
        self.assertEqual(log.read_backward(log.end_position, 1000), left[::-1])
