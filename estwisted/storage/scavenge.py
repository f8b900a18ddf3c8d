# -*- test-case-name: estwisted.storage.test.test_scavenge -*-
"""
Scavenging of completed chunks: which records survive, and the rewrite of a
chunk into a scavenged chunk file (format in L{estwisted.storage.chunks}).

Pure planning
=============
L{keep_record} decides for one record from the state of its stream
(L{StreamState}: last event number, tombstone, metadata, the time); what
goes is what v5 removes:

 - events of a hard-deleted stream (the tombstone stays);
 - events below C{$tb} (soft delete included), beyond C{$maxCount} or
   older than C{$maxAge};
 - but never the last event of a stream, so its version is never lost, and
   never a system record.

L{plan_runs} turns the survivors into the runs of the rewritten chunk, and
L{encode_scavenged} builds its bytes (for tests; the rewrite streams them).

The rewrite
===========
L{rewrite_chunk} is a generator: each C{next()} does a bounded slice of work
(a thousand records planned or 256 KiB copied), so a caller on the
reactor thread can interleave it with other work.  It writes the survivors
to C{chunk-NNNNNN.VVVVVV.<random>.scavenge.tmp} (removed on open if a crash
leaves it), C{fsync}s it, renames it to the next version of the chunk's name
and C{fsync}s the directory.  The log's open keeps only the highest version
of a chunk, so a crash before the rename leaves the old chunk, and after it
the new one: both hold every surviving record at the same position.  The
caller then swaps the chunk in (L{estwisted.storage.log.ChunkedLog.replace_chunk}).
"""

from __future__ import annotations

import errno
import os
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Optional

import attr

from estwisted.core.errors import StorageError
from estwisted.core.metadata import StreamMetadata, min_visible
from estwisted.core.model import DELETED_STREAM, FLAG_SYSTEM
from estwisted.storage.checkpoints import fsync_directory
from estwisted.storage.chunks import (
    CHUNK_NAME,
    HEADER_MERGED,
    HEADER_SCAVENGED,
    HEADER_SIZE,
    MERGED_RUN,
    RUN,
    chunk_file_name,
    decode_header,
    encode_header,
    encode_merged_footer,
    encode_scavenged_footer,
    storage_error,
)
from estwisted.storage.records import HEAD

TICKS_PER_SECOND = 10_000_000
#: Records planned per slice of L{rewrite_chunk}.
PLAN_SLICE = 1024
#: Bytes copied per slice of L{rewrite_chunk}.
COPY_SLICE = 256 * 1024


@attr.s(frozen=True, auto_attribs=True)
class StreamState:
    """
    What scavenging needs to know about one stream.

    @ivar last: the stream's last event number (-1 if none).
    @ivar deleted: the stream is hard-deleted (has a tombstone).
    @ivar metadata: its committed metadata.
    """

    last: int
    deleted: bool
    metadata: StreamMetadata


def keep_record(
    event_number: int,
    created: int,
    flags: int,
    state: StreamState,
    now_ticks: int,
    ignore_hard_delete: bool = False,
) -> bool:
    """
    Whether a record survives a scavenge.

    @param now_ticks: the current time in .NET ticks (for C{$maxAge}).
    @param ignore_hard_delete: C{UnsafeIgnoreHardDelete}: a hard-deleted
        stream's tombstone goes too (Event Store v5), so the stream can be
        written again.
    """
    if flags & FLAG_SYSTEM:
        return True
    if state.deleted:
        return event_number == DELETED_STREAM and not ignore_hard_delete
    if event_number == DELETED_STREAM or event_number >= state.last:
        return True
    metadata = state.metadata
    if event_number < min_visible(state.last, metadata):
        return False
    if metadata.max_age is not None:
        return created >= now_ticks - metadata.max_age * TICKS_PER_SECOND
    return True


def plan_runs(kept: Iterable[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """
    The runs of a scavenged chunk.

    @param kept: C{(logical local offset, frame size)} of each surviving
        record, ascending.
    @return: C{(physical offset, logical offset, length)} per run of records
        that were contiguous in the original chunk.
    """
    runs: list[tuple[int, int, int]] = []
    physical = 0
    for local, size in kept:
        if runs:
            p, lo, n = runs[-1]
            if lo + n == local:
                runs[-1] = (p, lo, n + size)
                physical += size
                continue
        runs.append((physical, local, size))
        physical += size
    return runs


def encode_scavenged(
    chunk_size: int, number: int, data_size: int, frames: list[tuple[int, bytes]]
) -> bytes:
    """
    The whole file of a scavenged chunk holding C{frames}.

    @param data_size: the logical data size of the original chunk.
    @param frames: C{(logical local offset, frame bytes)}, ascending.
    """
    runs = plan_runs((local, len(frame)) for local, frame in frames)
    data = b"".join(frame for _, frame in frames)
    return b"".join(
        (
            encode_header(chunk_size, number, uuid.uuid4().bytes, HEADER_SCAVENGED),
            data,
            b"".join(RUN.pack(*run) for run in runs),
            encode_scavenged_footer(data_size, len(data), len(runs)),
        )
    )


@attr.s(auto_attribs=True)
class ChunkResult:
    """
    The outcome of scavenging one chunk.

    @ivar path: the new chunk file, durable under its final name; C{None}
        when nothing could be removed (the chunk is left alone).
    @ivar removed: C{(stream, event number)} of every removed event.
    @ivar kept_bytes: bytes of records kept.
    @ivar removed_bytes: bytes of records removed.
    """

    number: int
    path: Optional[str] = None
    removed: list[tuple[str, int]] = attr.Factory(list)
    kept_bytes: int = 0
    removed_bytes: int = 0


def _version(path: str) -> int:
    m = CHUNK_NAME.match(os.path.basename(path))
    if m is None:
        raise StorageError(f"{path} is not a chunk file name")
    return int(m.group(2))


def rewrite_chunk(
    chunk: Any,
    runs: list[tuple[Any, int, int, int]],
    state: Callable[[str], StreamState],
    now_ticks: int,
    result: ChunkResult,
    ignore_hard_delete: bool = False,
) -> Iterator[None]:
    """
    Scavenge one completed chunk in bounded slices (see the module
    docstring); C{result} is filled in when the generator is exhausted.

    @param chunk: the L{estwisted.storage.chunks.Chunk} (completed).
    @param runs: its stored runs, C{(view, start, limit, base)} as
        L{estwisted.storage.log.ChunkedLog.chunk_runs} gives them.
    @param state: the state of a stream, by name.
    @param ignore_hard_delete: remove tombstones too (L{keep_record}).
    @raise DiskFull: no space for the new file (nothing is left behind).
    @raise StorageError: another I/O failure, or a damaged record.
    """
    origin = chunk.number * chunk.chunk_size
    unpack = HEAD.unpack_from
    head_size = HEAD.size
    states: dict[str, StreamState] = {}
    # (view, file offset, logical local offset, size) of each survivor
    kept: list[tuple[Any, int, int, int]] = []
    counted = 0
    for view, off, limit, base in runs:
        while off < limit:
            size, pos, number, created, flags, sl, _, _, _, _ = unpack(view, off)
            if size < head_size or off + size > limit or pos != base + off:
                raise StorageError(f"{chunk.path}: damaged record at {base + off}")
            if flags & FLAG_SYSTEM:
                keep = True
            else:
                name = str(view[off + head_size : off + head_size + sl], "utf-8")
                s = states.get(name)
                if s is None:
                    s = states[name] = state(name)
                keep = keep_record(number, created, flags, s, now_ticks, ignore_hard_delete)
                if not keep:
                    result.removed.append((name, number))
            if keep:
                kept.append((view, off, pos - origin, size))
                result.kept_bytes += size
            else:
                result.removed_bytes += size
            off += size
            counted += 1
            if counted % PLAN_SLICE == 0:
                yield None
    if not result.removed_bytes:
        return
    directory = os.path.dirname(chunk.path)
    final = os.path.join(directory, chunk_file_name(chunk.number, _version(chunk.path) + 1))
    tmp = f"{final}.{uuid.uuid4().hex}.scavenge.tmp"
    plan = plan_runs((local, size) for _, _, local, size in kept)
    _, _, chunk_id = decode_header(bytes(chunk.view[:HEADER_SIZE]))
    fd = -1
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        out = [encode_header(chunk.chunk_size, chunk.number, chunk_id, HEADER_SCAVENGED)]
        pending = len(out[0])
        written = 0
        for view, off, _, size in kept:
            out.append(view[off : off + size])
            pending += size
            if pending >= COPY_SLICE:
                written += _write_all(fd, b"".join(out), written)
                # sync as we go, so that the final fsync is short
                os.fdatasync(fd)
                out = []
                pending = 0
                yield None
        out.append(b"".join(RUN.pack(*run) for run in plan))
        out.append(encode_scavenged_footer(chunk.data_size, result.kept_bytes, len(plan)))
        _write_all(fd, b"".join(out), written)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        yield None
        os.rename(tmp, final)
        result.path = final
        fsync_directory(directory)
    except OSError as e:
        raise storage_error(e, f"cannot write the scavenged chunk {final}") from e
    finally:
        # also when the caller stops the scavenge (GeneratorExit)
        if fd >= 0:
            os.close(fd)
        if result.path is None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def merge_chunks(chunks: list[Any], version: int, result: list[str]) -> Iterator[None]:
    """
    Write the survivors of the consecutive completed chunks C{chunks}
    (L{estwisted.storage.chunks.Chunk}s, scavenged) into one merged chunk
    file, in bounded slices; C{result} receives its path (durable under its
    final name) when the generator is exhausted.

    @param version: the version of the new file's name (above every file
        that holds one of C{chunks}).
    @raise DiskFull: no space for the new file (nothing is left behind).
    @raise StorageError: another I/O failure.
    """
    first = chunks[0]
    for i, chunk in enumerate(chunks):
        if chunk.number != first.number + i or chunk.data_size is None:
            raise StorageError("merge_chunks needs consecutive completed chunks")
    last = chunks[-1].number
    directory = os.path.dirname(first.path)
    final = os.path.join(directory, chunk_file_name(first.number, version))
    tmp = f"{final}.{uuid.uuid4().hex}.merge.tmp"
    _, _, chunk_id = decode_header(bytes(first.view[:HEADER_SIZE]))
    fd = -1
    done = False
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        out: list[Any] = [
            encode_header(
                first.chunk_size,
                first.number,
                chunk_id,
                HEADER_SCAVENGED | HEADER_MERGED,
                end_number=last,
            )
        ]
        pending = len(out[0])
        written = 0
        runmap: list[bytes] = []
        physical = 0
        for i, chunk in enumerate(chunks):
            phys, logical, lengths = chunk.run_list(chunk.data_size)
            view = chunk.view
            for p, lo, n in zip(phys, logical, lengths, strict=True):
                out.append(view[HEADER_SIZE + p : HEADER_SIZE + p + n])
                runmap.append(MERGED_RUN.pack(physical, i, lo, n))
                physical += n
                pending += n
                if pending >= COPY_SLICE:
                    written += _write_all(fd, b"".join(out), written)
                    os.fdatasync(fd)
                    out = []
                    pending = 0
                    yield None
        out.extend(runmap)
        out.extend(struct.pack("<q", chunk.data_size) for chunk in chunks)
        out.append(encode_merged_footer(len(chunks), physical, len(runmap)))
        _write_all(fd, b"".join(out), written)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        yield None
        os.rename(tmp, final)
        done = True
        fsync_directory(directory)
        result.append(final)
    except OSError as e:
        raise storage_error(e, f"cannot write the merged chunk {final}") from e
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _write_all(fd: int, data: bytes, offset: int) -> int:
    n = os.pwrite(fd, data, offset)
    if n != len(data):
        raise OSError(errno.ENOSPC, "short write")
    return n
