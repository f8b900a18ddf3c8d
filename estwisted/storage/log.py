# -*- test-case-name: estwisted.storage.test.test_event_log -*-
"""
L{ChunkedLog}: the durable L{IEventLog} in chunk files.

Durability
==========
L{ChunkedLog.flush} writes every buffered record with one joined C{pwrite}
per chunk touched, then C{fdatasync}s the chunk (or, with C{dsync=True},
writes through a descriptor opened with C{O_DSYNC}, one system call
instead of two), and only then may store the new end in C{writer.chk}.
By default C{writer.chk} is written (one C{pwrite}, which survives a
process crash) only after C{checkpoint_write_bytes} of new log, and synced
only every C{checkpoint_sync_bytes}, at chunk rollover and at close: a
second C{fdatasync} per flush would halve the single-appender rate on this
machine.  That is safe because recovery does not trust the checkpoint to be
the end: it reads on from the checkpoint and keeps every intact record
(length prefix and suffix, CRC, the record's own position) up to the first
one that is not, so a record whose flush returned is never lost, even if the
checkpoint file lagged behind.  C{sync_checkpoint=True} restores the
textbook order (data sync, then checkpoint write and sync on every
flush).

Recovery on open
================
 1. C{truncate.chk >= 0} (a replica's divergence): cut the log there.
 2. Scan from C{writer.chk} over intact records, crossing into the next
    chunk where a chunk's footer marks it completed at exactly that size.
 3. The end is the last intact record's end.  Everything past it in the end
    chunk (a torn or corrupt tail, records of a flush that never returned)
    is overwritten with zeros and synced, so that no stale record can
    reappear after later writes; chunk files past the end chunk are
    deleted.  When the previous close was clean (C{shutdown.chk} equals the
    end) the zeroing scan is skipped.
 4. The outcome is logged.

The first record of a new log is a system record at position 0, so client
records start above 0 (as in L{estwisted.storage.memory.MemoryLog}).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Optional
from zlib import crc32

from twisted.logger import Logger
from zope.interface import implementer

from estwisted.core.errors import CorruptRecord, StorageError
from estwisted.core.interfaces import IEventLog, IReplicableLog
from estwisted.core.model import FLAG_JSON, FLAG_SYSTEM, EventRecord, NewEvent
from estwisted.storage import flushing
from estwisted.storage.checkpoints import Checkpoints, FileCheckpoint, fsync_directory
from estwisted.storage.chunks import (
    CHUNK_NAME,
    HEADER_SIZE,
    Chunk,
    chunk_file_name,
    decode_header,
    header_end_number,
    open_file,
    storage_error,
)
from estwisted.storage.flushing import FlushJob
from estwisted.storage.rawchunk import ChunkImage, ChunkReceiver, verify_chunk
from estwisted.storage.records import (
    HEAD,
    MAX_RECORD_SIZE,
    OVERHEAD,
    TAIL,
    decode,
    encode,
    frame_at,
    size_before,
)

#: Default chunk size: 256 MiB, as Event Store.
DEFAULT_CHUNK_SIZE = 256 * 1024 * 1024
#: Smallest chunk size accepted (tests use 64 KiB).
MIN_CHUNK_SIZE = 4096

_SIZE = struct.Struct("<I")
_HEAD_PACK = HEAD.pack
_TAIL_PACK = TAIL.pack
_log = Logger()


class _ChunkFlush(FlushJob):
    """
    One joined C{pwrite} (and C{fdatasync}) into one chunk.
    """

    __slots__ = ("chunk", "data", "start", "end_local", "dsync")

    def __init__(
        self,
        end: int,
        chunk: Optional[Chunk],
        data: bytes,
        start: int,
        end_local: int,
        dsync: bool,
    ) -> None:
        super().__init__(end)
        self.chunk = chunk
        self.data = data
        self.start = start
        self.end_local = end_local
        self.dsync = dsync

    def write(self) -> None:
        data = self.data
        if not data:
            return
        chunk = self.chunk
        assert chunk is not None
        fd = chunk.fd
        n = os.pwrite(fd, data, HEADER_SIZE + self.start)
        if n != len(data):
            raise OSError(errno.ENOSPC, "short write")
        if not self.dsync:
            flushing.fdatasync(fd)


def _lock_directory(path: str) -> int:
    fd = os.open(os.path.join(path, "lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StorageError(f"database {path} is in use by another process") from e
        raise storage_error(e, f"cannot lock {path}") from e
    return fd


def check_truncation(path: str, writer: int, truncate: int, max_truncation: int) -> None:
    """
    Refuse a C{truncate.chk} cut larger than C{max_truncation} bytes
    (Event Store 20's C{MaxTruncation}: the cut is measured from the writer
    checkpoint; C{-1} means no limit).

    @raise StorageError: naming both checkpoints, the cut and the option.
    """
    requested = writer - truncate
    if max_truncation >= 0 and requested > max_truncation:
        raise StorageError(
            f"{path}: truncate.chk asks to cut {requested} bytes of the log "
            f"(writer checkpoint {writer} => {truncate}), more than MaxTruncation "
            f"({max_truncation}); nothing was changed. To proceed, set MaxTruncation "
            f"to -1 (no limit) or at least {requested}"
        )


@implementer(IEventLog, IReplicableLog)
class ChunkedLog:
    """
    The transaction log in chunk files under C{path}.

    @param chunk_size: size of the data area of a new database's chunks; an
        existing database keeps the size it was created with.
    @param sync_checkpoint: sync C{writer.chk} on every flush (two
        C{fdatasync}s per flush instead of one; see the module docstring).
    @param checkpoint_sync_bytes: otherwise, sync it after this much log.
    @param checkpoint_write_bytes: and write it after this much log.
    @param dsync: write through an C{O_DSYNC} descriptor instead of calling
        C{fdatasync} after each write.
    @param max_truncation: most bytes C{truncate.chk} may cut from the log
        on open (counted from the writer checkpoint, as Event Store's
        C{MaxTruncation}); C{-1}: no limit.  A larger cut refuses to open
        and changes nothing.
    @ivar recovery: what the last open did, for tests and reports.
    """

    def __init__(
        self,
        path: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        sync_checkpoint: bool = False,
        checkpoint_sync_bytes: int = 64 * 1024 * 1024,
        checkpoint_write_bytes: int = 1024 * 1024,
        dsync: bool = False,
        max_truncation: int = -1,
    ) -> None:
        if chunk_size < MIN_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} is below {MIN_CHUNK_SIZE}")
        self.path = path
        self.chunk_size = chunk_size
        self._sync_checkpoint = sync_checkpoint
        self._checkpoint_sync_bytes = checkpoint_sync_bytes
        self._checkpoint_write_bytes = 0 if sync_checkpoint else checkpoint_write_bytes
        self._dsync = dsync
        self._max_truncation = max_truncation
        self._chunks: list[Chunk] = []
        self._inflight: Optional[_ChunkFlush] = None
        self._failed: Optional[str] = None
        self._closed = False
        self.recovery: dict[str, int] = {}
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise storage_error(e, f"cannot create {path}") from e
        self._lock_fd = _lock_directory(path)
        self.checkpoints: Optional[Checkpoints] = None
        try:
            self.checkpoints = Checkpoints(path)
            self._writer_chk = self.checkpoints.writer
            new = self._open_chunks()
            self._reset_buffer()
            if new:
                self.append("", -1, b"\x00" * 16, "$epoch", FLAG_SYSTEM, b"", b"", 0)
                self.flush()
                self._writer.write_and_sync(self.end_position)
        except OSError as e:
            self._release()
            raise storage_error(e, f"cannot open the database in {path}") from e
        except BaseException:
            self._release()
            raise

    # -- opening and recovery -----------------------------------------------

    @property
    def _writer(self) -> FileCheckpoint:
        assert self.checkpoints is not None
        return self.checkpoints.writer

    def _open_chunks(self) -> bool:
        """
        Open or create the chunks and recover the tail.

        @return: whether the database is new.
        """
        assert self.checkpoints is not None
        chk = self.checkpoints
        path = self.path
        files: list[tuple[int, int, str]] = []
        for name in sorted(os.listdir(path)):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(path, name))
                _log.info("Removed temporary file {name}", name=name)
                continue
            m = CHUNK_NAME.match(name)
            if m:
                files.append((int(m.group(1)), int(m.group(2)), name))
        # for each number, the highest version among the files covering it
        winners: dict[int, tuple[int, str]] = {}
        for start, version, name in files:
            with open(os.path.join(path, name), "rb") as f:
                head = f.read(HEADER_SIZE)
            try:
                decode_header(head)
            except StorageError as e:
                raise StorageError(f"{path}/{name}: {e}") from e
            for number in range(start, header_end_number(head) + 1):
                best = winners.get(number)
                if best is None or version > best[0]:
                    winners[number] = (version, name)
        used = {name for _, name in winners.values()}
        for _, _, name in files:
            if name not in used:
                os.unlink(os.path.join(path, name))
                _log.info("Removed superseded chunk file {name}", name=name)
        names = [winners[n][1] for n in sorted(winners)]
        if sorted(winners) != list(range(len(names))):
            raise StorageError(f"{path}: chunk files are not numbered 0..{len(names) - 1}")
        if not names:
            if chk.writer.value != 0:
                raise StorageError(
                    f"{path}: writer checkpoint is {chk.writer.value} but there are no chunks"
                )
            self._chunks.append(Chunk.create(path, 0, self.chunk_size, self._dsync))
            self._end_chunk = 0
            self._end_local = 0
            self.end_position = 0
            self.pending_position = 0
            chk.shutdown.write_and_sync(-1)
            _log.info(
                "Created a new database in {path} (chunk size {size})",
                path=path,
                size=self.chunk_size,
            )
            return True
        with open(os.path.join(path, names[0]), "rb") as f:
            existing_size, _, _ = decode_header(f.read(HEADER_SIZE))
        if existing_size != self.chunk_size:
            _log.warn(
                "Database {path} has chunks of {existing} bytes; using that, not {asked}",
                path=path,
                existing=existing_size,
                asked=self.chunk_size,
            )
            self.chunk_size = existing_size
        opened: dict[str, dict[int, Chunk]] = {}
        for i, name in enumerate(names):
            if name not in opened:
                found = open_file(os.path.join(path, name), writable=True, dsync=self._dsync)
                opened[name] = {c.number: c for c in found}
            chunk = opened[name].pop(i, None)
            if chunk is None or chunk.chunk_size != self.chunk_size:
                raise StorageError(f"{path}/{name}: does not hold chunk {i}")
            self._chunks.append(chunk)
        for rest in opened.values():
            # chunks of a merged file that newer files supersede
            for chunk in rest.values():
                chunk.close()
        self._recover()
        # a database whose creation was interrupted before its first record
        return self.end_position == 0

    def _scan_chunk(self, chunk: Chunk, local: int) -> int:
        """
        Walk intact records of C{chunk} from data offset C{local}.

        @return: the data offset just past the last intact record.
        """
        if chunk.runs is not None:
            # scavenged chunks are completed and were checked when written
            assert chunk.data_size is not None
            return chunk.data_size
        view = chunk.view
        base = chunk.number * self.chunk_size
        limit = HEADER_SIZE + self.chunk_size
        off = HEADER_SIZE + local
        while True:
            size = frame_at(view, off, limit, base + off - HEADER_SIZE)
            if (
                not size
                or crc32(view[off : off + size - 8]) != _SIZE.unpack_from(view, off + size - 8)[0]
            ):
                return off - HEADER_SIZE
            off += size

    def _recover(self) -> None:
        assert self.checkpoints is not None
        chk = self.checkpoints
        size = self.chunk_size
        writer = chk.writer.value
        chunks = self._chunks
        c, local = divmod(writer, size)
        if writer < 0 or c > len(chunks) or (c == len(chunks) and local != 0):
            raise StorageError(
                f"{self.path}: writer checkpoint {writer} is past the last chunk "
                f"({len(chunks)} chunks of {size} bytes)"
            )
        if c == len(chunks):
            # the checkpoint sits at the start of a chunk that was never created
            c -= 1
            last_size = chunks[c].data_size
            local = size if last_size is None else last_size
        torn_footer = False
        while True:
            chunk = chunks[c]
            local = self._scan_chunk(chunk, local)
            if chunk.data_size is not None:
                if local == chunk.data_size:
                    c += 1
                    local = 0
                    if c == len(chunks):
                        chunks.append(Chunk.create(self.path, c, size, self._dsync))
                        break
                    continue
                if local < chunk.data_size:
                    torn_footer = True
                else:
                    raise CorruptRecord(
                        f"{chunk.path}: records run past the footer's data size {chunk.data_size}"
                    )
            break
        end = c * size + local
        if end < writer:
            raise CorruptRecord(
                f"{self.path}: the log ends at {end}, before the writer checkpoint {writer}"
            )
        truncate = chk.truncate.value
        end_before_truncate = end
        if 0 <= truncate < end:
            check_truncation(self.path, writer, truncate, self._max_truncation)
            if truncate < chk.writer.value:
                chk.writer.write_and_sync(truncate)
            _log.warn(
                "Truncating the log from {end} to {truncate} as truncate.chk asks",
                end=end,
                truncate=truncate,
            )
            end = truncate
            c, local = divmod(end, size)
            if c > 0 and local == 0 and c >= len(chunks):
                c -= 1
                local = size
            torn_footer = True
        # delete chunk files past the end chunk
        removed = 0
        while len(chunks) > c + 1:
            extra = chunks.pop()
            extra.close()
            os.unlink(extra.path)
            removed += 1
        if removed:
            fsync_directory(self.path)
            _log.warn("Removed {n} chunk file(s) past the end of the log", n=removed)
        end_chunk = chunks[c]
        zeroed = 0
        clean = chk.shutdown.value == end and not torn_footer
        if not clean:
            if end_chunk.runs is not None:
                raise StorageError(
                    f"{end_chunk.path}: cannot cut the log inside a scavenged chunk (at {end})"
                )
            zeroed = end_chunk.zero_from(local)
        if end != writer:
            chk.writer.write_and_sync(end)
        if truncate >= 0:
            if chk.chaser.value > end:
                chk.chaser.write_and_sync(end)
            if chk.epoch.value >= end:
                chk.epoch.write_and_sync(-1)
            chk.truncate.write_and_sync(-1)
        elif chk.chaser.value > end:
            chk.chaser.write_and_sync(end)
        chk.shutdown.write_and_sync(-1)
        for chunk in chunks[:c]:
            chunk.release_fd()
        self._end_chunk = c
        self._end_local = local
        self.end_position = end
        self.pending_position = end
        self.recovery = {
            "writer_checkpoint": writer,
            "end": end,
            "recovered_bytes": max(0, end - writer),
            "zeroed_bytes": zeroed,
            "removed_chunks": removed,
            "clean": int(clean),
            "truncated": truncate if 0 <= truncate < end_before_truncate else -1,
        }
        if clean:
            _log.info("Opened {path}: clean shutdown, log ends at {end}", path=self.path, end=end)
        else:
            _log.warn(
                "Opened {path} after an unclean shutdown: writer checkpoint {writer}, "
                "{recovered} bytes of intact records past it kept, log ends at {end}; "
                "{zeroed} bytes of torn or unacknowledged tail erased, "
                "{removed} chunk file(s) removed",
                path=self.path,
                writer=writer,
                recovered=max(0, end - writer),
                end=end,
                zeroed=zeroed,
                removed=removed,
            )

    # -- appending -----------------------------------------------------------

    def _reset_buffer(self) -> None:
        """
        Empty the buffer: the next record goes at the end of the log, or of
        the flush in flight.
        """
        inflight = self._inflight
        if inflight is None:
            local = self._end_local
            position = self.end_position
        else:
            local = inflight.end_local
            position = inflight.end
        self._frames: list[bytes] = []
        self._segments: list[tuple[int, int, list[bytes]]] = [
            (self._end_chunk, local, self._frames)
        ]
        self._rollovers: dict[int, int] = {}
        self._pending_chunk = self._end_chunk
        self._pending_local = local
        self.pending_position = position

    def append(
        self,
        stream: str,
        event_number: int,
        event_id: bytes,
        event_type: str,
        flags: int,
        data: bytes,
        metadata: bytes,
        created: int,
    ) -> int:
        """
        Buffer one record; see L{IEventLog.append}.

        @raise ValueError: the record is too large (for the chunk size or
            L{estwisted.storage.records.MAX_RECORD_SIZE}) or a field does not
            fit.
        @raise StorageError: the log failed earlier and must be reopened.
        """
        if self._failed is not None:
            raise StorageError(self._failed)
        sb = stream.encode("utf-8")
        tb = event_type.encode("utf-8")
        sl = len(sb)
        tl = len(tb)
        dl = len(data)
        ml = len(metadata)
        size = OVERHEAD + sl + tl + dl + ml
        if size > MAX_RECORD_SIZE or sl > 0xFFFF or tl > 0xFFFF or len(event_id) != 16:
            # let the codec raise the precise error
            encode(0, sb, event_number, event_id, tb, flags, data, metadata, created)
        local = self._pending_local
        position = self.pending_position
        if local + size > self.chunk_size:
            if size > self.chunk_size:
                raise ValueError(f"record of {size} bytes exceeds chunk size {self.chunk_size}")
            self._rollovers[self._pending_chunk] = local
            self._pending_chunk += 1
            local = 0
            position = self._pending_chunk * self.chunk_size
            self._frames = []
            self._segments.append((self._pending_chunk, 0, self._frames))
        # the frame, as records.encode_sized builds it (inlined: hot path)
        body = b"".join(
            (
                _HEAD_PACK(size, position, event_number, created, flags, sl, tl, dl, ml, event_id),
                sb,
                tb,
                data,
                metadata,
            )
        )
        self._frames.append(body + _TAIL_PACK(crc32(body), size))
        self._pending_local = local + size
        self.pending_position = position + size
        return position

    def append_many(
        self, stream: str, first: int, events: Sequence[NewEvent], created: int
    ) -> tuple[list[int], list[int]]:
        """
        Buffer the records of one write: C{events} of C{stream} numbered from
        C{first} on (flags from C{is_json}); the same records as one
        L{append} per event, built in one loop.

        @return: the records' positions and next positions.
        @raise ValueError: a record is too large or a field does not fit;
            the records before it stay buffered (the caller fails the batch).
        @raise StorageError: the log failed earlier and must be reopened.
        """
        if self._failed is not None:
            raise StorageError(self._failed)
        sb = stream.encode("utf-8")
        sl = len(sb)
        if sl > 0xFFFF:
            raise ValueError(f"stream name of {sl} bytes does not fit")
        base = OVERHEAD + sl
        chunk_size = self.chunk_size
        frames = self._frames
        add = frames.append
        head = _HEAD_PACK
        tail = _TAIL_PACK
        join = b"".join
        positions: list[int] = []
        nexts: list[int] = []
        add_position = positions.append
        add_next = nexts.append
        local = self._pending_local
        position = self.pending_position
        number = first
        for event in events:
            event_id = event.event_id
            tb = event.event_type.encode("utf-8")
            data = event.data
            metadata = event.metadata
            tl = len(tb)
            dl = len(data)
            ml = len(metadata)
            size = base + tl + dl + ml
            if size > MAX_RECORD_SIZE or tl > 0xFFFF or len(event_id) != 16:
                self._pending_local = local
                self.pending_position = position
                encode(0, sb, number, event_id, tb, 0, data, metadata, created)
            if local + size > chunk_size:
                self._pending_local = local
                self.pending_position = position
                if size > chunk_size:
                    raise ValueError(f"record of {size} bytes exceeds chunk size {chunk_size}")
                self._rollovers[self._pending_chunk] = local
                self._pending_chunk += 1
                local = 0
                position = self._pending_chunk * chunk_size
                frames = self._frames = []
                add = frames.append
                self._segments.append((self._pending_chunk, 0, frames))
            flags = FLAG_JSON if event.is_json else 0
            body = join(
                (
                    head(size, position, number, created, flags, sl, tl, dl, ml, event_id),
                    sb,
                    tb,
                    data,
                    metadata,
                )
            )
            # body and tail as two frames: the flush joins them anyway
            add(body)
            add(tail(crc32(body), size))
            add_position(position)
            local += size
            position += size
            add_next(position)
            number += 1
        self._pending_local = local
        self.pending_position = position
        return positions, nexts

    def flush(self) -> int:
        """
        Write and sync every buffered record; see L{IEventLog.flush}.
        """
        if self._inflight is not None:
            self._settle()
        if self.pending_position == self.end_position:
            return self.end_position
        if self._failed is not None:
            self.discard()
            raise StorageError(self._failed)
        segments = self._segments
        if len(segments) == 1:
            # the common case: every record goes to the current chunk
            chunk = self._chunks[self._end_chunk]
            data = b"".join(self._frames)
            try:
                n = os.pwrite(chunk.fd, data, HEADER_SIZE + self._end_local)
                if n != len(data):
                    raise OSError(errno.ENOSPC, "short write")
                if not self._dsync:
                    flushing.fdatasync(chunk.fd)
            except OSError as e:
                self._roll_back([], [(chunk, self._end_local, len(data))], [])
                self.discard()
                raise storage_error(e, f"cannot write to {self.path}") from e
            end = self.end_position = self.pending_position
            self._end_local = self._pending_local
            frames: list[bytes] = []
            self._frames = frames
            self._segments = [(self._end_chunk, self._end_local, frames)]
            if end - self._writer_chk.value >= self._checkpoint_write_bytes:
                self._update_checkpoint(False)
            return end
        return self._flush_segments(segments)

    def begin_flush(self) -> Optional[FlushJob]:
        """
        Take the buffered records into a job whose C{run} writes and syncs
        them from any thread; see L{estwisted.storage.flushing}.  Records
        that fill more than the current chunk (a rollover) are flushed here
        at once, and the job has nothing left to do.

        @return: the job, or C{None} when nothing is buffered.
        @raise StorageError: a flush is in flight already, or the log failed.
        """
        if self._inflight is not None:
            raise StorageError("a flush of this log is in flight already")
        if self.pending_position == self.end_position:
            return None
        if self._failed is not None or len(self._segments) != 1:
            end = self.flush()
            job = _ChunkFlush(end, None, b"", 0, self._end_local, False)
            job.run()
            job.ended = True
            return job
        chunk = self._chunks[self._end_chunk]
        job = _ChunkFlush(
            self.pending_position,
            chunk,
            b"".join(self._frames),
            self._end_local,
            self._pending_local,
            self._dsync,
        )
        self._inflight = job
        # the next batch forms behind this one
        frames: list[bytes] = []
        self._frames = frames
        self._segments = [(self._end_chunk, self._pending_local, frames)]
        return job

    def end_flush(self, job: FlushJob) -> int:
        """
        Finish C{job} (its C{run} returned): publish the new end, or undo the
        job and drop what was buffered behind it.

        @return: the new L{end_position}.
        @raise StorageError: the job failed.
        """
        assert isinstance(job, _ChunkFlush)
        if job.ended:
            if job.error is not None:
                raise StorageError(f"cannot write to {self.path}: {job.error}")
            return self.end_position
        job.ended = True
        if self._inflight is job:
            self._inflight = None
        error = job.error
        chunk = job.chunk
        if error is not None:
            assert chunk is not None
            if isinstance(error, OSError):
                self._roll_back([], [(chunk, job.start, len(job.data))], [])
            self.discard()
            if isinstance(error, OSError):
                raise storage_error(error, f"cannot write to {self.path}") from error
            raise StorageError(f"cannot write to {self.path}: {error}") from error
        end = self.end_position = job.end
        self._end_local = job.end_local
        if end - self._writer_chk.value >= self._checkpoint_write_bytes:
            self._update_checkpoint(False)
        return end

    def _settle(self) -> None:
        """
        Wait for the flush in flight and finish it (closing, truncating, or
        a synchronous flush).
        """
        job = self._inflight
        if job is not None:
            job.wait()
            self.end_flush(job)

    def _flush_segments(self, segments: list[tuple[int, int, list[bytes]]]) -> int:
        """
        L{flush} when the records fill more than the current chunk.
        """
        rollovers = self._rollovers
        created: list[Chunk] = []
        written: list[tuple[Chunk, int, int]] = []
        completed: list[Chunk] = []
        try:
            for number, _, _ in segments:
                if number == len(self._chunks):
                    chunk = Chunk.create(self.path, number, self.chunk_size, self._dsync)
                    self._chunks.append(chunk)
                    created.append(chunk)
            for number, start, frames in segments:
                chunk = self._chunks[number]
                if frames:
                    data = frames[0] if len(frames) == 1 else b"".join(frames)
                    written.append((chunk, start, len(data)))
                    n = os.pwrite(chunk.fd, data, HEADER_SIZE + start)
                    if n != len(data):
                        raise OSError(errno.ENOSPC, "short write")
                if number in rollovers:
                    completed.append(chunk)
                    chunk.complete(rollovers[number])
                if not self._dsync:
                    flushing.fdatasync(chunk.fd)
        except (OSError, StorageError) as e:
            self._roll_back(created, written, completed)
            self.discard()
            if isinstance(e, StorageError):
                raise
            raise storage_error(e, f"cannot write to {self.path}") from e
        self.end_position = self.pending_position
        self._end_chunk = self._pending_chunk
        self._end_local = self._pending_local
        for chunk in completed:
            chunk.release_fd()
        self._reset_buffer()
        self._update_checkpoint(bool(completed))
        return self.end_position

    def _update_checkpoint(self, force_sync: bool) -> None:
        """
        Write C{writer.chk} (the end is durable already) and sync it when
        due.
        """
        writer = self._writer
        end = self.end_position
        try:
            writer.write(end)
            if (
                force_sync
                or self._sync_checkpoint
                or end - writer.synced_value >= self._checkpoint_sync_bytes
            ):
                writer.sync()
        except OSError as e:
            # the records are durable and recovery finds them past the
            # checkpoint; report the failure all the same
            self._failed = f"cannot update the writer checkpoint: {e}"
            raise storage_error(e, "cannot update the writer checkpoint") from e

    def _roll_back(
        self, created: list[Chunk], written: list[tuple[Chunk, int, int]], completed: list[Chunk]
    ) -> None:
        """
        Undo a failed flush on disk: erase what was written, so that recovery
        never finds it.  If even that fails, refuse further writes.
        """
        try:
            for chunk in completed:
                if chunk not in created:
                    chunk.uncomplete()
            for chunk, start, length in written:
                if chunk not in created and chunk.fd >= 0:
                    os.pwrite(chunk.fd, bytes(length), HEADER_SIZE + start)
            for chunk, _, _ in written:
                if chunk not in created and chunk.fd >= 0:
                    os.fdatasync(chunk.fd)
            for chunk in created:
                self._chunks.remove(chunk)
                chunk.close()
                os.unlink(chunk.path)
            if created:
                fsync_directory(self.path)
        except OSError as e:
            self._failed = (
                f"a failed write to {self.path} could not be undone ({e}); reopen the database"
            )
            _log.error("{msg}", msg=self._failed)

    def discard(self) -> None:
        """
        Drop every buffered record.
        """
        self._reset_buffer()

    # -- reading -------------------------------------------------------------

    def _data_end(self, c: int) -> int:
        if c == self._end_chunk:
            return self._end_local
        data_size = self._chunks[c].data_size
        assert data_size is not None
        return data_size

    def read(self, position: int) -> EventRecord:
        if position < 0 or position >= self.end_position:
            raise KeyError(position)
        c, local = divmod(position, self.chunk_size)
        chunk = self._chunks[c]
        if chunk.runs is not None:
            phys, logical, lengths = chunk.runs
            j = bisect_right(logical, local) - 1
            if j < 0 or local >= logical[j] + lengths[j]:
                raise KeyError(position)
            off = HEADER_SIZE + phys[j] + local - logical[j]
            limit = HEADER_SIZE + phys[j] + lengths[j]
        else:
            limit = HEADER_SIZE + self._data_end(c)
            off = HEADER_SIZE + local
        if not frame_at(chunk.view, off, limit, position):
            raise KeyError(position)
        return decode(chunk.view, off, limit, position)

    def _boundary(self, position: int) -> int:
        """
        The position of the first record at or after C{position} (or the
        end).
        """
        end = self.end_position
        if position >= end:
            return end
        if position < 0:
            position = 0
        size = self.chunk_size
        c, local = divmod(position, size)
        data_end = self._data_end(c)
        if local >= data_end:
            return (c + 1) * size
        chunk = self._chunks[c]
        view = chunk.view
        if chunk.runs is not None:
            return self._scavenged_boundary(chunk, local)
        if frame_at(view, HEADER_SIZE + local, HEADER_SIZE + data_end, position):
            return position
        # extend the sparse map of record starts, then walk from the nearest
        stride = Chunk.BOUNDARY_STRIDE
        boundaries = chunk.boundaries
        q = chunk.walked_to
        count = chunk.walked_count
        while q <= local and q < data_end:
            n = _SIZE.unpack_from(view, HEADER_SIZE + q)[0]
            if n < OVERHEAD:
                raise CorruptRecord(f"bad record length at {c * size + q}")
            q += n
            count += 1
            if count % stride == 0:
                boundaries.append(q)
        chunk.walked_to = q
        chunk.walked_count = count
        q = boundaries[bisect_right(boundaries, local) - 1]
        while q < local:
            n = _SIZE.unpack_from(view, HEADER_SIZE + q)[0]
            if n < OVERHEAD:
                raise CorruptRecord(f"bad record length at {c * size + q}")
            q += n
        if q >= data_end:
            return (c + 1) * size
        return c * size + q

    def _scavenged_boundary(self, chunk: Chunk, local: int) -> int:
        """
        L{_boundary} inside a scavenged chunk: the first kept record at or
        after data offset C{local}.
        """
        assert chunk.runs is not None
        phys, logical, lengths = chunk.runs
        base = chunk.number * self.chunk_size
        view = chunk.view
        j = bisect_right(logical, local) - 1
        if j >= 0 and local < logical[j] + lengths[j]:
            start = HEADER_SIZE + phys[j]
            limit = start + lengths[j]
            off = start + local - logical[j]
            if frame_at(view, off, limit, base + local):
                return base + local
            q = start
            while q < off:
                n = _SIZE.unpack_from(view, q)[0]
                if n < OVERHEAD:
                    raise CorruptRecord(f"bad record length in {chunk.path}")
                q += n
            if q < limit:
                return base + logical[j] + q - start
        j += 1
        if j < len(logical):
            return base + logical[j]
        return base + self.chunk_size

    def _runs_from(self, c: int, local: int) -> Iterator[tuple[mmap.mmap, int, int, int]]:
        """
        The stored runs of records of chunk C{c} from the record boundary
        C{local} on: C{(view, start, limit, base)}, records in
        C{view[start:limit]}, the one at offset C{o} having position
        C{base + o}.
        """
        chunk = self._chunks[c]
        phys, logical, lengths = chunk.run_list(self._data_end(c))
        view = chunk.view
        origin = c * self.chunk_size
        for j in range(max(0, bisect_right(logical, local) - 1), len(logical)):
            lo = logical[j]
            n = lengths[j]
            if lo + n <= local:
                continue
            start = max(local, lo)
            p = HEADER_SIZE + phys[j]
            yield view, p + start - lo, p + n, origin + lo - p

    def _runs_back(self, c: int, local: int) -> Iterator[tuple[mmap.mmap, int, int, int]]:
        """
        L{_runs_from} backwards: the runs before C{local}, last first, as
        C{(view, start, stop, base)} with records in C{view[start:stop]}.
        """
        chunk = self._chunks[c]
        phys, logical, lengths = chunk.run_list(self._data_end(c))
        view = chunk.view
        origin = c * self.chunk_size
        for j in range(bisect_right(logical, local) - 1, -1, -1):
            lo = logical[j]
            if lo >= local:
                continue
            stop = min(local, lo + lengths[j])
            p = HEADER_SIZE + phys[j]
            yield view, p, p + stop - lo, origin + lo - p

    def read_forward(self, position: int, max_count: int) -> list[EventRecord]:
        result: list[EventRecord] = []
        end = self.end_position
        size = self.chunk_size
        p = self._boundary(position)
        while p < end and len(result) < max_count:
            c, local = divmod(p, size)
            if local >= self._data_end(c):
                p = (c + 1) * size
                continue
            for view, off, limit, base in self._runs_from(c, local):
                while off < limit and len(result) < max_count:
                    record = decode(view, off, limit, base + off)
                    if not record.flags & FLAG_SYSTEM:
                        result.append(record)
                    off += record.next_position - record.position
                if len(result) >= max_count:
                    break
            p = (c + 1) * size
        return result

    def read_backward(self, position: int, max_count: int) -> list[EventRecord]:
        result: list[EventRecord] = []
        size = self.chunk_size
        p = self._boundary(position)
        while p > 0 and len(result) < max_count:
            c, local = divmod(p, size)
            if local == 0:
                # on to the previous chunk, from its end (which may be the
                # chunk size itself: no divmod of it)
                c -= 1
                local = self._data_end(c)
            for view, start, off, base in self._runs_back(c, local):
                while off > start and len(result) < max_count:
                    n = size_before(view, off)
                    if not n or off - n < start:
                        raise CorruptRecord(f"bad record length suffix before {base + off}")
                    off -= n
                    record = decode(view, off, off + n, base + off)
                    if not record.flags & FLAG_SYSTEM:
                        result.append(record)
                if len(result) >= max_count:
                    break
            p = c * size
        return result

    def segments(self, position: int) -> Iterator[tuple[mmap.mmap, int, int, int]]:
        """
        The stored bytes from the record at or after C{position} to the end,
        chunk by chunk, for fast scans: C{(view, start, limit, base)} where
        records lie in C{view[start:limit]} and a record at offset C{o} has
        position C{base + o}.
        """
        size = self.chunk_size
        p = self._boundary(position)
        while p < self.end_position:
            c, local = divmod(p, size)
            yield from self._runs_from(c, local)
            p = (c + 1) * size

    # -- replication (IReplicableLog) ----------------------------------------

    def read_raw(self, position: int, max_bytes: int) -> tuple[int, bytes, int]:
        """
        See L{IReplicableLog.read_raw}: the stored frames, copied from one
        chunk.
        """
        end = self.end_position
        p = self._boundary(position)
        size = self.chunk_size
        while p < end:
            c, local = divmod(p, size)
            for view, start, limit, base in self._runs_from(c, local):
                off = start
                while off < limit and (off == start or off - start < max_bytes):
                    n = _SIZE.unpack_from(view, off)[0]
                    if n < OVERHEAD or off + n > limit:
                        raise CorruptRecord(f"bad record length at {base + off}")
                    off += n
                return base + start, bytes(view[start:off]), base + off
            p = (c + 1) * size
        return end, b"", end

    def append_raw(self, position: int, frames: bytes) -> int:
        """
        See L{IReplicableLog.append_raw}: every frame is checked (length
        prefix and suffix, position, CRC) and must land where this log would
        put a record of its size; then the frames are buffered as they are.
        """
        if self._failed is not None:
            raise StorageError(self._failed)
        chunk = self._pending_chunk
        local = self._pending_local
        expected = self.pending_position
        plan: list[tuple[bool, bytes]] = []
        offset = 0
        total = len(frames)
        first = True
        while offset < total:
            if total - offset < OVERHEAD:
                raise CorruptRecord(f"truncated replicated record at {expected}")
            n = _SIZE.unpack_from(frames, offset)[0]
            roll = local + n > self.chunk_size
            if roll:
                chunk += 1
                local = 0
                expected = chunk * self.chunk_size
            if first and position != expected:
                raise CorruptRecord(f"replicated records start at {position}, not {expected}")
            first = False
            size = frame_at(frames, offset, total, expected)
            if (
                not size
                or crc32(frames[offset : offset + size - 8])
                != _SIZE.unpack_from(frames, offset + size - 8)[0]
            ):
                raise CorruptRecord(f"replicated record at {expected} is damaged or misplaced")
            plan.append((roll, frames[offset : offset + size]))
            offset += size
            local += size
            expected += size
        for roll, frame in plan:
            if roll:
                self._rollovers[self._pending_chunk] = self._pending_local
                self._pending_chunk += 1
                self._pending_local = 0
                self._frames = []
                self._segments.append((self._pending_chunk, 0, self._frames))
            self._frames.append(frame)
            self._pending_local += len(frame)
        self.pending_position = expected
        return expected

    def truncate(self, position: int) -> None:
        """
        See L{IReplicableLog.truncate}: C{truncate.chk} is set and the
        chunks are reopened, so recovery (step 1 of the module docstring)
        cuts the log; a crash in between finishes the cut at the next open.

        @raise StorageError: the cut is larger than C{max_truncation}
            (L{check_truncation}); nothing was changed.
        """
        try:
            self._settle()
        except StorageError:
            pass  # undone; the cut below is all that matters
        self.discard()
        if position >= self.end_position:
            return
        # Refused before truncate.chk is written: nothing changes.
        check_truncation(self.path, self.end_position, max(0, position), self._max_truncation)
        assert self.checkpoints is not None
        self.checkpoints.truncate.write_and_sync(max(0, position))
        for chunk in self._chunks:
            chunk.close()
        self._chunks = []
        self._open_chunks()
        self._reset_buffer()

    # -- whole scavenged chunks (replication from a scavenged region) ---------

    def scavenged_chunk_start(self, position: int) -> Optional[int]:
        """
        The start position of the completed scavenged chunk holding
        C{position}, or C{None} if that chunk is not scavenged (or not
        completed).  A replica catching up there gets the chunk whole
        (L{chunk_image}).
        """
        if position < 0:
            return None
        c = position // self.chunk_size
        if c >= self._end_chunk or self._chunks[c].runs is None:
            return None
        return c * self.chunk_size

    def chunk_image(self, number: int) -> ChunkImage:
        """
        The bytes of completed scavenged chunk C{number} as a file, for a
        replica (see L{estwisted.storage.rawchunk}); C{close} it when done.

        @raise StorageError: the chunk is not completed and scavenged.
        """
        if not 0 <= number < self._end_chunk:
            raise StorageError(f"chunk {number} is not a completed chunk")
        return ChunkImage(self._chunks[number], number, self.chunk_size)

    def receive_chunk(self, number: int, total: int) -> ChunkReceiver:
        """
        Start receiving chunk C{number} whole (C{total} bytes of image);
        L{install_chunk} it once complete.

        @raise StorageError: the log does not end at the start of chunk
            C{number}, or the file cannot be created.
        """
        if self._failed is not None:
            raise StorageError(self._failed)
        if number * self.chunk_size != self.end_position or self._end_local != 0:
            raise StorageError(
                f"cannot receive chunk {number}: the log ends at {self.end_position}"
            )
        return ChunkReceiver(self.path, number, total)

    def install_chunk(self, receiver: ChunkReceiver) -> int:
        """
        Put the received chunk in place of the (empty) current chunk, then
        start the next one: the log ends at the received chunk's end.

        Crash safety: the image is synced under its temporary name, checked
        (every frame), renamed to the next version of the chunk's name and
        the directory synced; a crash before the rename leaves a C{.tmp}
        file (removed on open), after it the open keeps the highest version
        (the received chunk) and recovery goes on to the next chunk.

        @return: the new end of the log.
        @raise StorageError: the image is not a valid scavenged chunk that
            fits here (nothing changes; the temporary file is removed).
        """
        number = receiver.number
        try:
            if not receiver.complete:
                raise StorageError(
                    f"chunk {number}: {receiver.received} of {receiver.total} bytes received"
                )
            if self._inflight is not None:
                self._settle()
            if (
                self.pending_position != self.end_position
                or number * self.chunk_size != self.end_position
                or self._end_chunk != number
                or len(self._chunks) != number + 1
            ):
                raise StorageError(
                    f"cannot install chunk {number}: the log ends at {self.end_position}"
                )
            receiver.finish()
            new = Chunk.open(receiver.path, writable=False)
            try:
                verify_chunk(new, number, self.chunk_size)
            except BaseException:
                new.close()
                raise
        except BaseException:
            receiver.abort()
            raise
        old = self._chunks[number]
        m = CHUNK_NAME.match(os.path.basename(old.path))
        version = int(m.group(2)) + 1 if m else 1
        final = os.path.join(self.path, chunk_file_name(number, version))
        try:
            os.rename(receiver.path, final)
            fsync_directory(self.path)
        except OSError as e:
            new.close()
            receiver.abort()
            raise storage_error(e, f"cannot install chunk {number}") from e
        new.path = final
        new.release_fd()
        self._chunks[number] = new
        old.retire()
        try:
            os.unlink(old.path)
        except FileNotFoundError:
            pass
        end = (number + 1) * self.chunk_size
        try:
            fsync_directory(self.path)
            self._chunks.append(Chunk.create(self.path, number + 1, self.chunk_size, self._dsync))
        except (OSError, StorageError) as e:
            # the chunk is durable; the next open creates the next chunk
            self._failed = f"cannot start chunk {number + 1} after installing {number}: {e}"
            raise StorageError(self._failed) from e
        self._end_chunk = number + 1
        self._end_local = 0
        self.end_position = end
        self._reset_buffer()
        self._writer.write_and_sync(end)
        _log.info(
            "Installed scavenged chunk {number} from the leader ({size} bytes)",
            number=number,
            size=receiver.total,
        )
        return end

    # -- scavenging ----------------------------------------------------------

    @property
    def completed_chunks(self) -> int:
        """
        The number of completed chunks (those before the current one): the
        chunks a scavenge may rewrite.
        """
        return self._end_chunk

    def chunk(self, number: int) -> Chunk:
        """
        The open chunk C{number} (for the scavenger, which reads it).
        """
        return self._chunks[number]

    def chunk_runs(self, number: int) -> list[tuple[mmap.mmap, int, int, int]]:
        """
        The stored runs of records of completed chunk C{number}, as
        L{segments} yields them.
        """
        return list(self._runs_from(number, 0))

    def replace_chunk(self, number: int, path: str) -> int:
        """
        Put the scavenged chunk file C{path} (already durable under its final
        name, a higher version than the current file) in place of chunk
        C{number}, and delete the old file.  Reads are synchronous, so no
        reader holds the old map when it is closed here.

        @return: the bytes of disk space given back.
        @raise StorageError: C{number} is not a completed chunk or C{path}
            is not a chunk of the same logical range.
        """
        if not 0 <= number < self._end_chunk:
            raise StorageError(f"chunk {number} is not a completed chunk")
        old = self._chunks[number]
        new = Chunk.open(path, writable=False)
        if (
            new.number != number
            or new.chunk_size != self.chunk_size
            or new.data_size != old.data_size
        ):
            new.close()
            raise StorageError(f"{path} does not replace chunk {number}")
        new.release_fd()
        after = os.stat(new.path).st_size
        self._chunks[number] = new
        old.retire()
        freed = self._delete_unused([old.path])
        return max(0, freed - after) if freed else 0

    def _delete_unused(self, paths: list[str]) -> int:
        """
        Delete those of C{paths} that no chunk uses any more (a merged file
        stays while it holds a chunk still in use).

        @return: the bytes of the files deleted.
        """
        in_use = {chunk.path for chunk in self._chunks}
        freed = 0
        for path in set(paths) - in_use:
            try:
                freed += os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                pass
        if freed:
            fsync_directory(self.path)
        return freed

    def chunk_version(self, number: int) -> int:
        """
        The version in the name of the file holding chunk C{number}.
        """
        m = CHUNK_NAME.match(os.path.basename(self._chunks[number].path))
        return int(m.group(2)) if m else 0

    def merge_groups(self) -> list[tuple[int, int]]:
        """
        Runs of consecutive completed scavenged chunks whose survivors fit
        one chunk's size together and are in more than one file: what a
        merge rewrites into one file each (v5's merge phase).
        """
        groups: list[tuple[int, int]] = []
        chunks = self._chunks
        limit = self.chunk_size
        c = 0
        while c < self._end_chunk:
            if chunks[c].runs is None:
                c += 1
                continue
            total = 0
            e = c
            paths: set[str] = set()
            while e < self._end_chunk:
                chunk = chunks[e]
                runs = chunk.runs
                if runs is None:
                    break
                cost = chunk.physical_size + 16 * len(runs[0]) + 8
                if total + cost > limit and e > c:
                    break
                total += cost
                paths.add(chunk.path)
                e += 1
            if e - c >= 2 and len(paths) > 1:
                groups.append((c, e - 1))
            c = max(e, c + 1)
        return groups

    def replace_merged(self, first: int, last: int, path: str) -> int:
        """
        Put the merged chunk file C{path} (durable under its final name)
        in place of chunks C{first..last}, and delete the files no chunk
        uses any more.  Readers holding an old chunk (L{Chunk.pin}) keep
        it until they let go.

        @return: the bytes of disk space given back (negative if the old
            files stay in use).
        @raise StorageError: the file does not hold exactly those chunks
            with the same logical sizes.
        """
        if not 0 <= first <= last < self._end_chunk:
            raise StorageError(f"chunks {first}..{last} are not completed chunks")
        new = open_file(path, writable=False)
        if [c.number for c in new] != list(range(first, last + 1)) or any(
            c.chunk_size != self.chunk_size or c.data_size != self._chunks[c.number].data_size
            for c in new
        ):
            for c in new:
                c.close()
            raise StorageError(f"{path} does not replace chunks {first}..{last}")
        old = self._chunks[first : last + 1]
        self._chunks[first : last + 1] = new
        for chunk in old:
            chunk.retire()
        freed = self._delete_unused([c.path for c in old])
        return freed - os.stat(path).st_size

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """
        Flush what is buffered, sync the checkpoints, mark the shutdown clean
        and release the files and the directory lock.
        """
        if self._closed:
            return
        try:
            if self._inflight is not None:
                self._inflight.wait()
            if self._failed is None:
                self.flush()
                assert self.checkpoints is not None
                self.checkpoints.writer.write_and_sync(self.end_position)
                self.checkpoints.shutdown.write_and_sync(self.end_position)
        finally:
            self._release()

    def _release(self) -> None:
        self._closed = True
        for chunk in self._chunks:
            chunk.close()
        self._chunks = []
        if self.checkpoints is not None:
            self.checkpoints.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
