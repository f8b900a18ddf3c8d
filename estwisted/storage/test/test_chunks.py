# -*- test-case-name: estwisted.storage.test.test_chunks -*-
"""
Tests for chunk files (L{estwisted.storage.chunks}) and for what
L{ChunkedLog} does with them: rollover, recovery of torn or corrupt tails,
truncation, locking and failed writes.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import CorruptRecord, DiskFull, StorageError
from estwisted.core.model import FLAG_SYSTEM
from estwisted.storage import chunks
from estwisted.storage.checkpoints import FileCheckpoint
from estwisted.storage.chunks import HEADER_SIZE, Chunk
from estwisted.storage.log import ChunkedLog
from estwisted.storage.open import open_storage

CHUNK = 8192


def _append(log: ChunkedLog, i: int, size: int = 100) -> int:
    return log.append(f"s{i % 3}", i // 3, i.to_bytes(16, "big"), "t", 0, b"d" * size, b"", i)


def _crash(log: ChunkedLog) -> None:
    """
    Drop the log the way a killed process would: no flush, no clean
    shutdown mark, checkpoints as last written.
    """
    log._release()


def _set_checkpoint(path: str, name: str, value: int) -> None:
    chk = FileCheckpoint(os.path.join(path, f"{name}.chk"), 0)
    chk.write(value)
    chk.close()


def _chunk_path(log: ChunkedLog, number: int) -> str:
    return os.path.join(log.path, chunks.chunk_file_name(number))


def _poke(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _peek(path: str, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


class ChunkCodecTests(SynchronousTestCase):
    @given(st.integers(4096, 2**31), st.integers(0, 999_999), st.binary(min_size=16, max_size=16))
    def test_header_round_trip(self, size: int, number: int, chunk_id: bytes) -> None:
        raw = chunks.encode_header(size, number, chunk_id)
        self.assertEqual(len(raw), HEADER_SIZE)
        self.assertEqual(chunks.decode_header(raw), (size, number, chunk_id))

    @given(st.integers(0, 2**31), st.data())
    def test_header_damage(self, size: int, data: st.DataObject) -> None:
        raw = bytearray(chunks.encode_header(size + 4096, 1, b"x" * 16))
        i = data.draw(st.integers(0, HEADER_SIZE - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        self.assertRaises(StorageError, chunks.decode_header, bytes(raw))

    @given(st.integers(0, 2**40), st.data())
    def test_footer(self, data_size: int, data: st.DataObject) -> None:
        raw = chunks.encode_footer(data_size)
        self.assertEqual(chunks.decode_footer(raw), data_size)
        damaged = bytearray(raw)
        damaged[data.draw(st.integers(0, chunks.FOOTER_SIZE - 1))] ^= 0x40
        self.assertIsNone(chunks.decode_footer(bytes(damaged)))
        self.assertIsNone(chunks.decode_footer(bytes(chunks.FOOTER_SIZE)))

    def test_names(self) -> None:
        self.assertEqual(chunks.chunk_file_name(3), "chunk-000003.000000")
        self.assertEqual(chunks.chunk_file_name(12, 2), "chunk-000012.000002")
        self.assertTrue(chunks.CHUNK_NAME.match("chunk-000012.000002"))
        self.assertFalse(chunks.CHUNK_NAME.match("chunk-000012.000002.tmp"))

    def test_create_and_open(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        chunk = Chunk.create(directory, 4, 4096)
        self.assertEqual(os.path.getsize(chunk.path), chunks.file_size(4096))
        self.assertIsNone(chunk.data_size)
        chunk.complete(1000)
        chunk.close()
        again = Chunk.open(chunk.path, writable=False)
        self.addCleanup(again.close)
        self.assertEqual((again.number, again.chunk_size, again.data_size), (4, 4096, 1000))
        self.assertEqual(os.listdir(directory), ["chunk-000004.000000"])

    def test_open_not_a_chunk(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "chunk-000000.000000")
        with open(path, "wb") as f:
            f.write(b"\x01" * 9000)
        self.assertRaises(StorageError, Chunk.open, path, False)


class ChunkedLogTestBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="estw-chunks-")
        self.addCleanup(shutil.rmtree, self.path, True)

    def open(self, chunk_size: int = CHUNK) -> ChunkedLog:
        log = ChunkedLog(self.path, chunk_size=chunk_size)
        self.addCleanup(log.close)
        return log

    def positions(self, log: ChunkedLog) -> list[int]:
        return [r.position for r in log.read_forward(0, 100_000)]


class RolloverTests(ChunkedLogTestBase):
    def test_records_never_span_chunks(self) -> None:
        """
        Records fill chunk after chunk; none crosses a chunk boundary, and
        every completed chunk has a footer with its data size.
        """
        log = self.open()
        positions = [_append(log, i, size=(i * 131) % 1500) for i in range(200)]
        log.flush()
        self.assertEqual(self.positions(log), positions)
        for p, record in zip(positions, log.read_forward(0, 1000), strict=True):
            self.assertEqual(p // CHUNK, (record.next_position - 1) // CHUNK)
        count = log.end_position // CHUNK + 1
        self.assertGreater(count, 5)
        names = sorted(n for n in os.listdir(self.path) if n.startswith("chunk-"))
        self.assertEqual(names, [chunks.chunk_file_name(i) for i in range(count)])
        for i in range(count - 1):
            footer = _peek(_chunk_path(log, i), HEADER_SIZE + CHUNK, chunks.FOOTER_SIZE)
            self.assertIsNotNone(chunks.decode_footer(footer))

    def test_batch_across_several_chunks(self) -> None:
        """
        One flush whose records fill more than two chunks.
        """
        log = self.open()
        positions = [_append(log, i, size=3000) for i in range(12)]
        log.flush()
        self.assertGreaterEqual(log.end_position // CHUNK, 4)
        log.close()
        again = self.open()
        self.assertEqual(self.positions(again), positions)

    def test_too_large(self) -> None:
        log = self.open()
        self.assertRaises(ValueError, _append, log, 1, CHUNK)
        self.assertEqual(log.pending_position, log.end_position)

    def test_existing_chunk_size_wins(self) -> None:
        log = self.open()
        positions = [_append(log, i, size=2000) for i in range(10)]
        log.close()
        again = self.open(chunk_size=1 << 20)
        self.assertEqual(again.chunk_size, CHUNK)
        self.assertEqual(self.positions(again), positions)

    def test_lock(self) -> None:
        """
        A second opener of the same directory is refused.
        """
        self.open()
        self.assertRaises(StorageError, ChunkedLog, self.path, CHUNK)

    def test_temporary_files_removed(self) -> None:
        log = self.open()
        log.close()
        junk = os.path.join(self.path, "chunk-000001.000000.abc.tmp")
        open(junk, "wb").close()
        self.open()
        self.assertFalse(os.path.exists(junk))


class ArbitraryPositionTests(SynchronousTestCase):
    """
    Reads from any position, not only record starts (the sparse map of
    record starts per chunk).
    """

    def setUp(self) -> None:
        path = tempfile.mkdtemp(prefix="estw-positions-")
        self.addCleanup(shutil.rmtree, path, True)
        self.log = ChunkedLog(path, chunk_size=CHUNK)
        self.addCleanup(self.log.close)
        self.positions = [_append(self.log, i, size=(i * 7) % 90) for i in range(600)]
        self.log.flush()

    @settings(max_examples=300)
    @given(st.integers(-10, 60_000))
    def test_forward_and_backward(self, p: int) -> None:
        after = [q for q in self.positions if q >= p][:3]
        before = [q for q in self.positions if q < p][::-1][:3]
        self.assertEqual([r.position for r in self.log.read_forward(p, 3)], after)
        self.assertEqual([r.position for r in self.log.read_backward(p, 3)], before)
        if p in self.positions or p == 0:  # 0: the system record
            self.assertEqual(self.log.read(p).position, p)
        else:
            self.assertRaises(KeyError, self.log.read, p)


class RecoveryTests(ChunkedLogTestBase):
    def test_clean_reopen(self) -> None:
        log = self.open()
        positions = [_append(log, i) for i in range(10)]
        log.close()
        again = self.open()
        self.assertEqual(again.recovery["clean"], 1)
        self.assertEqual(self.positions(again), positions)

    def test_lagging_checkpoint(self) -> None:
        """
        Intact records past the writer checkpoint (flushed, checkpoint not
        yet on disk) are kept.
        """
        log = self.open()
        first = [_append(log, i) for i in range(5)]
        log.flush()
        lag = log.end_position
        rest = [_append(log, i) for i in range(5, 40)]
        log.flush()
        end = log.end_position
        _crash(log)
        _set_checkpoint(self.path, "writer", lag)
        again = self.open()
        self.assertEqual(again.end_position, end)
        self.assertEqual(self.positions(again), first + rest)
        self.assertEqual(again.recovery["recovered_bytes"], end - lag)

    def test_torn_tail(self) -> None:
        """
        Half a record past the end is erased; later writes at the same
        positions are intact and the torn bytes never come back.
        """
        log = self.open()
        positions = [_append(log, i) for i in range(5)]
        log.flush()
        end = log.end_position
        _append(log, 5, size=500)
        torn = b"".join(log._frames)[:300]
        log.discard()
        _crash(log)
        path = _chunk_path(log, end // CHUNK)
        _poke(path, HEADER_SIZE + end % CHUNK, torn)
        again = self.open()
        self.assertEqual(again.end_position, end)
        self.assertEqual(self.positions(again), positions)
        self.assertEqual(_peek(path, HEADER_SIZE + end % CHUNK, 300), bytes(300))
        self.assertGreater(again.recovery["zeroed_bytes"], 0)

    def test_bad_checksum_in_tail(self) -> None:
        """
        Past the checkpoint, the log ends before the first damaged record,
        and the records after it are dropped too (never resurrected later).
        """
        log = self.open()
        positions = [_append(log, i) for i in range(3)]
        log.flush()
        chk = log.end_position
        tail = [_append(log, i) for i in range(3, 8)]
        log.flush()
        _crash(log)
        _set_checkpoint(self.path, "writer", chk)
        path = _chunk_path(log, 0)
        _poke(path, HEADER_SIZE + tail[2] + 70, b"\xff")
        again = self.open()
        self.assertEqual(again.end_position, tail[2])
        self.assertEqual(self.positions(again), positions + tail[:2])
        # a short record where the damaged one was, then a crash: the old
        # intact records after it must not reappear
        p = again.append("x", 0, b"n" * 16, "t", 0, b"", b"", 0)
        self.assertEqual(p, tail[2])
        again.flush()
        _crash(again)
        third = self.open()
        self.assertEqual(self.positions(third), positions + tail[:2] + [p])

    def test_ghost_records_after_torn_first(self) -> None:
        """
        A batch whose first record is torn but later ones intact: the later
        ones are erased, so a later short write cannot expose them.
        """
        log = self.open()
        kept = [_append(log, i) for i in range(2)]
        log.flush()
        end = log.end_position
        ghosts = [_append(log, i, size=50) for i in range(2, 6)]
        data = bytearray(b"".join(log._frames))
        log.discard()
        _crash(log)
        data[10] ^= 0xFF
        _poke(_chunk_path(log, 0), HEADER_SIZE + end, bytes(data))
        again = self.open()
        self.assertEqual(self.positions(again), kept)
        # write exactly one record the size of the first ghost: the next
        # position is where the second ghost was
        p = again.append("s2", 0, (2).to_bytes(16, "big"), "t", 0, b"d" * 50, b"", 2)
        again.flush()
        self.assertEqual(again.end_position, ghosts[1])
        _crash(again)
        third = self.open()
        self.assertEqual(self.positions(third), kept + [p])

    def test_torn_rollover(self) -> None:
        """
        Damage in a completed chunk past a lagging checkpoint: the footer is
        erased, later chunks removed, the log ends before the damage.
        """
        log = self.open()
        first = [_append(log, i, size=1000) for i in range(3)]
        log.flush()
        chk = log.end_position
        more = [_append(log, i, size=1000) for i in range(3, 20)]
        log.flush()
        self.assertGreater(log.end_position // CHUNK, 1)
        _crash(log)
        _set_checkpoint(self.path, "writer", chk)
        _poke(_chunk_path(log, 0), HEADER_SIZE + more[1] + 80, b"\x00\x01")
        again = self.open()
        self.assertEqual(self.positions(again), first + more[:1])
        self.assertFalse(os.path.exists(_chunk_path(log, 1)))
        self.assertIsNone(
            chunks.decode_footer(_peek(_chunk_path(log, 0), HEADER_SIZE + CHUNK, 128))
        )
        positions = [_append(again, i, size=1000) for i in range(30, 40)]
        again.flush()
        self.assertEqual(self.positions(again), first + more[:1] + positions)

    def test_chunk_past_end_removed(self) -> None:
        """
        A chunk file created by a flush that never returned is removed.
        """
        log = self.open()
        positions = [_append(log, i) for i in range(3)]
        log.close()
        Chunk.create(self.path, 1, CHUNK).close()
        again = self.open()
        self.assertEqual(again.recovery["removed_chunks"], 1)
        self.assertFalse(os.path.exists(_chunk_path(again, 1)))
        self.assertEqual(self.positions(again), positions)

    def test_corruption_below_checkpoint(self) -> None:
        """
        A damaged record below the writer checkpoint is not truncated away:
        reads report it and rebuilding the index refuses it.
        """
        log = self.open()
        positions = [_append(log, i) for i in range(10)]
        log.close()
        _poke(_chunk_path(log, 0), HEADER_SIZE + positions[4] + 60, b"\xee")
        again = ChunkedLog(self.path, chunk_size=CHUNK)
        self.assertEqual(again.end_position, log.end_position)
        self.assertRaises(CorruptRecord, again.read, positions[4])
        self.assertRaises(CorruptRecord, again.read_forward, 0, 100)
        again.close()
        self.assertRaises(CorruptRecord, open_storage, self.path, False, CHUNK)

    def test_truncate_checkpoint(self) -> None:
        log = self.open()
        positions = [_append(log, i, size=900) for i in range(30)]
        log.close()
        _set_checkpoint(self.path, "truncate", positions[12])
        again = self.open()
        self.assertEqual(again.end_position, positions[12])
        self.assertEqual(self.positions(again), positions[:12])
        self.assertEqual(again.checkpoints.truncate.value, -1)  # type: ignore[union-attr]
        self.assertEqual(again.recovery["truncated"], positions[12])
        p = _append(again, 99)
        again.flush()
        self.assertEqual(self.positions(again), positions[:12] + [p])

    def test_killed_after_completing_chunk(self) -> None:
        """
        Killed after a chunk's footer was written but before the next chunk
        got data: the log ends at the next chunk's start, past its last
        record, and goes on from there.
        """
        log = self.open()
        positions = [_append(log, i, size=1000) for i in range(7)]
        log.flush()
        self.assertEqual(positions[-1] // CHUNK, 0)
        rolled = _append(log, 7, size=1000)
        self.assertEqual(rolled, CHUNK)
        log.flush()
        _crash(log)
        os.unlink(_chunk_path(log, 1))
        _set_checkpoint(self.path, "writer", positions[-1])
        again = self.open()
        self.assertEqual(again.end_position, CHUNK)
        records = again.read_forward(0, 100)
        self.assertEqual([r.position for r in records], positions)
        self.assertEqual(again.read_forward(records[-1].next_position, 10), [])
        self.assertEqual(again.read_backward(again.end_position, 1)[0].position, positions[-1])
        p = _append(again, 8)
        self.assertEqual(p, CHUNK)
        again.flush()
        self.assertEqual(self.positions(again), positions + [p])

    def test_interrupted_creation(self) -> None:
        """
        A database whose creation stopped after its first chunk file still
        gets its system record at 0 on the next open.
        """
        Chunk.create(self.path, 0, CHUNK).close()
        log = self.open()
        self.assertGreater(log.end_position, 0)
        self.assertTrue(log.read(0).flags & FLAG_SYSTEM)

    def test_missing_chunk(self) -> None:
        log = self.open()
        [_append(log, i, size=3000) for i in range(10)]
        log.close()
        os.unlink(_chunk_path(log, 1))
        self.assertRaises(StorageError, ChunkedLog, self.path, CHUNK)


class FailedWriteTests(ChunkedLogTestBase):
    def _fail(self, name: str, when: Any, times: int = 1_000_000) -> list[int]:
        """
        Make C{os.<name>} raise C{ENOSPC} when C{when(args)} holds, at most
        C{times} times.
        """
        real = getattr(os, name)
        calls: list[int] = []

        def fake(*args: Any) -> Any:
            if len(calls) < times and when(args):
                calls.append(1)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args)

        self._patched.append((name, real))
        setattr(os, name, fake)
        self.addCleanup(self.unpatch)
        return calls

    def setUp(self) -> None:
        super().setUp()
        self._patched: list[tuple[str, Any]] = []

    def unpatch(self) -> None:
        while self._patched:
            name, real = self._patched.pop()
            setattr(os, name, real)

    def test_disk_full_on_write(self) -> None:
        """
        C{ENOSPC} from C{pwrite}: L{DiskFull}, the buffer is dropped, the log
        and its checkpoint are unchanged, and later writes work.
        """
        log = self.open()
        kept = [_append(log, i) for i in range(3)]
        log.flush()
        end = log.end_position
        checkpoint = log.checkpoints.writer.value  # type: ignore[union-attr]
        calls = self._fail("pwrite", lambda args: len(args[1]) > 100, times=1)
        [_append(log, i) for i in range(3, 6)]
        self.assertRaises(DiskFull, log.flush)
        self.assertEqual(calls, [1])
        self.assertEqual((log.end_position, log.pending_position), (end, end))
        self.assertEqual(self.positions(log), kept)
        self.assertEqual(log.checkpoints.writer.value, checkpoint)  # type: ignore[union-attr]
        self.unpatch()
        more = [_append(log, i) for i in range(6, 8)]
        log.flush()
        self.assertEqual(self.positions(log), kept + more)

    def test_sync_fails(self) -> None:
        """
        A failing C{fdatasync} after the bytes were written: the error is
        reported and the written bytes are erased, so a restart does not
        show them.
        """
        log = self.open()
        kept = [_append(log, i) for i in range(3)]
        log.flush()
        end = log.end_position
        real_sync = os.fdatasync
        state = {"fail": True}

        def fake_sync(fd: int) -> None:
            if state["fail"]:
                state["fail"] = False
                raise OSError(errno.EIO, "I/O error")
            real_sync(fd)

        self._patched.append(("fdatasync", real_sync))
        os.fdatasync = fake_sync  # type: ignore[assignment]
        self.addCleanup(self.unpatch)
        [_append(log, i) for i in range(3, 6)]
        e = self.assertRaises(StorageError, log.flush)
        self.assertNotIsInstance(e, DiskFull)
        self.assertEqual(log.end_position, end)
        self.assertEqual(_peek(_chunk_path(log, 0), HEADER_SIZE + end, 64), bytes(64))
        _crash(log)
        self.unpatch()
        again = self.open()
        self.assertEqual(self.positions(again), kept)

    def test_disk_full_on_new_chunk(self) -> None:
        """
        No space for the next chunk: L{DiskFull}, no chunk file left behind,
        the current chunk not marked completed.
        """
        log = self.open()
        kept = [_append(log, i, size=1000) for i in range(5)]
        log.flush()
        end = log.end_position
        self._fail("posix_fallocate", lambda args: True)
        [_append(log, i, size=1000) for i in range(5, 12)]
        self.assertRaises(DiskFull, log.flush)
        self.assertEqual(log.end_position, end)
        self.assertEqual(
            sorted(n for n in os.listdir(self.path) if n.startswith("chunk")),
            ["chunk-000000.000000"],
        )
        self.assertIsNone(
            chunks.decode_footer(_peek(_chunk_path(log, 0), HEADER_SIZE + CHUNK, 128))
        )
        self.unpatch()
        more = [_append(log, i, size=1000) for i in range(12, 20)]
        log.flush()
        log.close()
        again = self.open()
        self.assertEqual(self.positions(again), kept + more)

    def test_no_preallocation(self) -> None:
        """
        On a file system without C{posix_fallocate} chunks are sparse files
        of the same size and everything else works.
        """
        real = os.posix_fallocate

        def unsupported(*args: Any) -> None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        self._patched.append(("posix_fallocate", real))
        os.posix_fallocate = unsupported
        self.addCleanup(self.unpatch)
        log = self.open()
        positions = [_append(log, i, size=1000) for i in range(20)]
        log.close()
        again = self.open()
        self.assertEqual(self.positions(again), positions)
        self.assertEqual(os.path.getsize(_chunk_path(again, 0)), chunks.file_size(CHUNK))

    def test_open_fails(self) -> None:
        """
        An I/O error while opening is reported as L{StorageError} and
        releases the lock.
        """
        self._fail("posix_fallocate", lambda args: True)
        self.assertRaises(DiskFull, ChunkedLog, self.path, CHUNK)
        self.unpatch()
        self.open()

    def test_undo_fails(self) -> None:
        """
        If even erasing a failed write fails, the log refuses further writes
        until reopened.
        """
        log = self.open()
        [_append(log, i) for i in range(3)]
        log.flush()
        self._fail("pwrite", lambda args: True)
        _append(log, 4)
        self.assertRaises(DiskFull, log.flush)
        self.unpatch()
        self.assertRaises(StorageError, _append, log, 5)


class ChunkStructTests(SynchronousTestCase):
    def test_record_position_inside(self) -> None:
        """
        A record in a chunk file carries its logical position, so chunk
        number and local offset can be checked against it.
        """
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path)
        log = ChunkedLog(path, chunk_size=CHUNK)
        p = [_append(log, i, size=2500) for i in range(6)][-1]
        log.close()
        raw = _peek(os.path.join(path, chunks.chunk_file_name(p // CHUNK)), 0, HEADER_SIZE + CHUNK)
        (stored,) = struct.unpack_from("<q", raw, HEADER_SIZE + p % CHUNK + 4)
        self.assertEqual(stored, p)


class CrashMachine(RuleBasedStateMachine):
    """
    Appends, flushes, discards, clean reopens, crashes and garbage written
    past the end after a crash: the log always reads back exactly the
    flushed records.
    """

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="estw-machine-")
        self.log = ChunkedLog(self.path, chunk_size=CHUNK)
        self.flushed: list[tuple[int, int]] = []
        self.pending: list[tuple[int, int]] = []
        self.i = 0

    @rule(size=st.integers(0, 3000))
    def append(self, size: int) -> None:
        self.pending.append((_append(self.log, self.i, size), self.i))
        self.i += 1

    @rule()
    def flush(self) -> None:
        self.log.flush()
        self.flushed.extend(self.pending)
        self.pending = []

    @rule()
    def discard(self) -> None:
        self.log.discard()
        self.pending = []

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.flushed.extend(self.pending)
        self.pending = []
        self.log = ChunkedLog(self.path, chunk_size=CHUNK)

    @rule(garbage=st.binary(min_size=1, max_size=500), keep=st.integers(0, 400))
    def crash(self, garbage: bytes, keep: int) -> None:
        """
        Kill during a flush: a prefix of the pending frames reached the disk,
        then garbage.  Pending records whose frames are complete on disk
        survive (written but never acknowledged); the rest are lost.
        """
        frames = self.log._segments[0][2]
        torn = b"".join(frames)[:keep]
        end = self.log.end_position
        _crash(self.log)
        c, local = divmod(end, CHUNK)
        path = _chunk_path(self.log, c)
        room = CHUNK - local
        survivors = 0
        if room > 0:
            data = (torn + garbage)[:room]
            _poke(path, HEADER_SIZE + local, data)
            total = 0
            for frame in frames:
                total += len(frame)
                if total > len(data) or total > len(torn):
                    break
                survivors += 1
        self.flushed.extend(self.pending[:survivors])
        self.pending = []
        self.log = ChunkedLog(self.path, chunk_size=CHUNK)

    @invariant()
    def reads_match(self) -> None:
        records = self.log.read_forward(0, 100_000)
        assert [(r.position, r.created) for r in records] == self.flushed, (
            [(r.position, r.created) for r in records],
            self.flushed,
        )

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.path, True)


class CrashMachineTests(SynchronousTestCase):
    def test_machine(self) -> None:
        run_state_machine_as_test(
            CrashMachine, settings=settings(max_examples=30, stateful_step_count=25)
        )
