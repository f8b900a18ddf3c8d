# -*- test-case-name: estwisted.storage.test.test_rawchunk -*-
"""
Whole scavenged chunks for replication (storage.md 15, cluster.md 5.3).

A replica that must catch up from a position inside a chunk the leader has
scavenged cannot receive it as records: the survivors are not contiguous,
and a replica appends only contiguous records.  As v5 does, the leader then
sends the whole chunk as a scavenged chunk file, and the replica installs
it as its own chunk (same logical range, same run map, so every surviving
record has the same position on both).

 - L{ChunkImage} (leader): the bytes of a scavenged chunk file for one
   logical chunk, built from its runs, whatever file holds them (a
   merged file holds several chunks).  It pins the chunk, so a scavenge or
   merge that replaces the file meanwhile does not pull the map away.
 - L{ChunkReceiver} (replica): writes the received bytes to a temporary
   file in the database directory (removed on open if a crash leaves it);
   L{estwisted.storage.log.ChunkedLog.install_chunk} checks and installs
   it.
 - L{verify_chunk}: every frame of a scavenged chunk is intact and at its
   position (the replica's check before installing).
"""

from __future__ import annotations

import os
import uuid
from bisect import bisect_right
from typing import Any
from zlib import crc32

from estwisted.core.errors import CorruptRecord, StorageError
from estwisted.storage.chunks import (
    HEADER_SCAVENGED,
    HEADER_SIZE,
    RUN,
    Chunk,
    chunk_file_name,
    decode_header,
    encode_header,
    encode_scavenged_footer,
    storage_error,
)
from estwisted.storage.records import frame_at

_CRC_SIZE = 4


class ChunkImage:
    """
    The file image of logical chunk C{number} as a scavenged chunk:
    C{[header][kept records][run map][footer]}.

    @ivar number: the chunk number.
    @ivar size: the image's length in bytes.
    """

    def __init__(self, chunk: Chunk, number: int, chunk_size: int) -> None:
        runs = chunk.runs
        if runs is None or chunk.data_size is None:
            raise StorageError(f"chunk {number} is not a scavenged chunk")
        chunk.pin()
        self._chunk = chunk
        self.number = number
        phys, logical, lengths = runs
        _, _, chunk_id = decode_header(bytes(chunk.view[:HEADER_SIZE]))
        header = encode_header(chunk_size, number, chunk_id, HEADER_SCAVENGED)
        #: (image offset, bytes or None, map offset, length)
        pieces: list[tuple[int, Any, int, int]] = [(0, header, 0, len(header))]
        at = len(header)
        runmap = []
        physical = 0
        for p, lo, n in zip(phys, logical, lengths, strict=True):
            pieces.append((at, None, HEADER_SIZE + p, n))
            runmap.append(RUN.pack(physical, lo, n))
            at += n
            physical += n
        tail = b"".join(runmap) + encode_scavenged_footer(chunk.data_size, physical, len(runmap))
        pieces.append((at, tail, 0, len(tail)))
        self._pieces = pieces
        self._starts = [piece[0] for piece in pieces]
        self.size = at + len(tail)
        self._closed = False

    def read(self, offset: int, max_bytes: int) -> bytes:
        """
        Up to C{max_bytes} of the image from C{offset} (empty at the end).
        """
        if self._closed:
            raise StorageError(f"the image of chunk {self.number} was closed")
        out: list[bytes] = []
        want = min(max_bytes, self.size - offset)
        i = bisect_right(self._starts, offset) - 1
        view = self._chunk.view
        while want > 0 and i < len(self._pieces):
            start, data, source, length = self._pieces[i]
            skip = offset - start
            n = min(length - skip, want)
            if data is None:
                out.append(view[source + skip : source + skip + n])
            else:
                out.append(data[skip : skip + n])
            offset += n
            want -= n
            i += 1
        return b"".join(out)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunk.unpin()


class ChunkReceiver:
    """
    A chunk image arriving from the leader, written to a temporary file.

    @ivar number: the chunk number.
    @ivar total: the image's size.
    @ivar received: bytes written so far.
    """

    def __init__(self, directory: str, number: int, total: int) -> None:
        if total < 2 * HEADER_SIZE:
            raise StorageError(f"a chunk image of {total} bytes is too short")
        self.number = number
        self.total = total
        self.received = 0
        self.path = os.path.join(directory, f"{chunk_file_name(number)}.{uuid.uuid4().hex}.raw.tmp")
        try:
            self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            raise storage_error(e, f"cannot create {self.path}") from e

    @property
    def complete(self) -> bool:
        return self.received == self.total

    def write(self, offset: int, data: bytes) -> None:
        """
        Append C{data}, which must start where the last piece ended.

        @raise StorageError: out of order, past the end, or an I/O error
            (L{estwisted.core.errors.DiskFull} if no space).
        """
        if self.fd < 0:
            raise StorageError(f"{self.path} is closed")
        if offset != self.received or offset + len(data) > self.total:
            raise StorageError(
                f"chunk {self.number}: {len(data)} bytes at {offset}, expected at "
                f"{self.received} of {self.total}"
            )
        try:
            n = os.pwrite(self.fd, data, offset)
            if n != len(data):
                raise OSError(28, "short write")
        except OSError as e:
            raise storage_error(e, f"cannot write {self.path}") from e
        self.received += n

    def finish(self) -> None:
        """
        Make the file durable and close it.
        """
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise storage_error(e, f"cannot sync {self.path}") from e
        finally:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        """
        Give up: close and delete the temporary file.
        """
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.path)
        except OSError:
            pass


def verify_chunk(chunk: Chunk, number: int, chunk_size: int) -> None:
    """
    Check a scavenged chunk file: its number, and every frame (length
    prefix and suffix, position, CRC) in every run, runs ascending and
    inside the logical data size.

    @raise CorruptRecord: a frame or the run map is damaged.
    @raise StorageError: it is not scavenged chunk C{number}.
    """
    if chunk.number != number or chunk.chunk_size != chunk_size:
        raise StorageError(
            f"{chunk.path} is chunk {chunk.number} of size {chunk.chunk_size}, "
            f"not chunk {number} of size {chunk_size}"
        )
    if chunk.runs is None or chunk.data_size is None:
        raise StorageError(f"{chunk.path} is not a scavenged chunk")
    phys, logical, lengths = chunk.runs
    view = chunk.view
    base = number * chunk_size
    expected_phys = 0
    previous_end = 0
    for p, lo, n in zip(phys, logical, lengths, strict=True):
        if p != expected_phys or lo < previous_end or lo + n > chunk.data_size or n <= 0:
            raise CorruptRecord(f"{chunk.path}: bad run ({p}, {lo}, {n})")
        off = HEADER_SIZE + p
        limit = off + n
        while off < limit:
            position = base + lo + off - HEADER_SIZE - p
            size = frame_at(view, off, limit, position)
            if not size or crc32(view[off : off + size - 8]) != int.from_bytes(
                view[off + size - 8 : off + size - 8 + _CRC_SIZE], "little"
            ):
                raise CorruptRecord(f"{chunk.path}: damaged record at {position}")
            off += size
        expected_phys += n
        previous_end = lo + n
    if expected_phys != chunk.physical_size:
        raise CorruptRecord(f"{chunk.path}: runs hold {expected_phys} of {chunk.physical_size}")
