# -*- test-case-name: estwisted.storage.test.test_chunks -*-
"""
Chunk files of the transaction log.

A chunk file C{chunk-NNNNNN.VVVVVV} (number, version) is preallocated to its
full size at creation::

    [header 128 B][data area: chunk_size B][footer 128 B]

Header (at 0): magic C{ESTWCHNK}, format u16, reserved u16, chunk size i64,
chunk number i64, chunk id (16 random bytes), zeros, crc32 of bytes
[0, 124) at 124.

Footer (at 128 + chunk_size), written when the writer moves on to the next
chunk: magic C{ESTWFOOT}, flags u32 (1 = completed), data size i64 (bytes of
records in the data area), zeros, crc32 of bytes [0, 124) at 124.  An
ongoing chunk's footer is all zeros.

The logical position of data-area offset C{o} of chunk C{n} is
C{n * chunk_size + o}.  Reads go through a read-only memory map of the file;
writes use C{pwrite} on the file descriptor.

Scavenged chunks
================
A scavenged chunk (header flag L{HEADER_SCAVENGED}, written by
L{estwisted.storage.scavenge}) holds only the records that survived, packed::

    [header][kept records: physical B][run map: 12 B per run][footer]

A I{run} is a maximal sequence of kept records that were contiguous in the
original chunk; its map entry is C{(physical offset, logical local offset,
length)} as three u32 (offsets in the data area).  Records keep their
logical positions (and the position stored in each frame), so a record of
logical local offset C{l} inside the run starting at C{(p, l0, n)} lies at
data-area offset C{p + l - l0}.  The footer's flags carry
L{FLAG_SCAVENGED}, its data size is the I{logical} data size of the
original chunk, followed by the physical size (i64) and the run count
(i64).  The footer is always the last 128 bytes of the file.

Merged chunks
=============
A merged chunk file (header flags L{HEADER_SCAVENGED} | L{HEADER_MERGED},
written by L{estwisted.storage.scavenge.merge_chunks}) holds the survivors
of the consecutive chunks C{start..end} in one file named after C{start};
the header carries C{end} (i64 at offset 44)::

    [header][kept records][run map: 16 B per run][data sizes: 8 B per chunk][footer]

A run is C{(physical offset, chunk - start, logical local offset, length)}
as four u32; the data sizes are each chunk's logical data size (i64).  The
footer's flags add L{FLAG_MERGED}; its data size field holds the chunk
count.  L{open_file} gives one L{Chunk} per logical chunk (each with its
own map of the file), so reads never know whether a chunk shares a file.

Which file holds a chunk
========================
Every file names the chunk range it covers (one chunk, or C{start..end}).
For each chunk number, the file with the highest version among those that
cover it wins; a file that wins no number is superseded and deleted at
open.  A new file (scavenged or merged) always gets a version above every
file that covered its numbers, so after a crash the newest complete file
wins, whichever step the crash interrupted.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import struct
import uuid
from array import array
from typing import Optional
from zlib import crc32

from estwisted.core.errors import DiskFull, StorageError

HEADER_SIZE = 128
FOOTER_SIZE = 128
FORMAT_VERSION = 1
HEADER_MAGIC = b"ESTWCHNK"
FOOTER_MAGIC = b"ESTWFOOT"
FLAG_COMPLETED = 1
FLAG_SCAVENGED = 2
FLAG_MERGED = 4
HEADER_SCAVENGED = 1
HEADER_MERGED = 2

_HEADER = struct.Struct("<8sHHqq16s")
_FOOTER = struct.Struct("<8sIq")
_FOOTER_SCAVENGED = struct.Struct("<8sIqqq")
RUN = struct.Struct("<III")
MERGED_RUN = struct.Struct("<IIII")
_END_NUMBER = struct.Struct("<q")
_END_OFFSET = 44
_DATA_SIZE = struct.Struct("<q")
_CRC = struct.Struct("<I")

CHUNK_NAME = re.compile(r"^chunk-(\d{6})\.(\d{6})$")


def chunk_file_name(number: int, version: int = 0) -> str:
    return f"chunk-{number:06d}.{version:06d}"


def file_size(chunk_size: int) -> int:
    return HEADER_SIZE + chunk_size + FOOTER_SIZE


def storage_error(e: OSError, what: str) -> StorageError:
    """
    Turn an C{OSError} into L{DiskFull} or L{StorageError}.
    """
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{what}: disk full ({e.strerror})")
    return StorageError(f"{what}: {e}")


def encode_header(
    chunk_size: int, number: int, chunk_id: bytes, flags: int = 0, end_number: int = 0
) -> bytes:
    head = _HEADER.pack(HEADER_MAGIC, FORMAT_VERSION, flags, chunk_size, number, chunk_id)
    head = head + _END_NUMBER.pack(end_number if flags & HEADER_MERGED else 0)
    head = head.ljust(HEADER_SIZE - 4, b"\x00")
    return head + _CRC.pack(crc32(head))


def decode_header(raw: bytes) -> tuple[int, int, bytes]:
    """
    @return: chunk size, chunk number, chunk id.
    @raise StorageError: not a valid header.
    """
    if len(raw) < HEADER_SIZE:
        raise StorageError("chunk header truncated")
    if _CRC.unpack_from(raw, HEADER_SIZE - 4)[0] != crc32(raw[: HEADER_SIZE - 4]):
        raise StorageError("chunk header checksum mismatch")
    magic, version, _, chunk_size, number, chunk_id = _HEADER.unpack_from(raw, 0)
    if magic != HEADER_MAGIC:
        raise StorageError("not a chunk file (bad magic)")
    if version != FORMAT_VERSION:
        raise StorageError(f"unsupported chunk format {version}")
    return chunk_size, number, chunk_id


def header_end_number(raw: bytes) -> int:
    """
    The last chunk number a header's file covers (its number unless merged).
    """
    _, _, flags, _, number, _ = _HEADER.unpack_from(raw, 0)
    if flags & HEADER_MERGED:
        return int(_END_NUMBER.unpack_from(raw, _END_OFFSET)[0])
    return int(number)


def encode_merged_footer(count: int, physical_size: int, run_count: int) -> bytes:
    """
    The footer of a merged chunk (see the module docstring).
    """
    foot = _FOOTER_SCAVENGED.pack(
        FOOTER_MAGIC,
        FLAG_COMPLETED | FLAG_SCAVENGED | FLAG_MERGED,
        count,
        physical_size,
        run_count,
    ).ljust(FOOTER_SIZE - 4, b"\x00")
    return foot + _CRC.pack(crc32(foot))


def merged_file_size(physical_size: int, run_count: int, count: int) -> int:
    return (
        HEADER_SIZE + physical_size + MERGED_RUN.size * run_count + 8 * count + FOOTER_SIZE
    )


def header_flags(raw: bytes) -> int:
    """
    The flags of a header L{decode_header} accepted (L{HEADER_SCAVENGED}).
    """
    return int(_HEADER.unpack_from(raw, 0)[2])


def encode_scavenged_footer(data_size: int, physical_size: int, run_count: int) -> bytes:
    """
    The footer of a scavenged chunk (see the module docstring).
    """
    foot = _FOOTER_SCAVENGED.pack(
        FOOTER_MAGIC, FLAG_COMPLETED | FLAG_SCAVENGED, data_size, physical_size, run_count
    ).ljust(FOOTER_SIZE - 4, b"\x00")
    return foot + _CRC.pack(crc32(foot))


def decode_scavenged_footer(raw: bytes) -> Optional[tuple[int, int, int]]:
    """
    @return: logical data size, physical size and run count of a scavenged
        chunk's footer, or C{None} if C{raw} is not one.
    """
    if decode_footer(raw) is None:
        return None
    magic, flags, data_size, physical, runs = _FOOTER_SCAVENGED.unpack_from(raw, 0)
    if not flags & FLAG_SCAVENGED:
        return None
    return int(data_size), int(physical), int(runs)


def scavenged_file_size(physical_size: int, run_count: int) -> int:
    return HEADER_SIZE + physical_size + RUN.size * run_count + FOOTER_SIZE


def encode_footer(data_size: int) -> bytes:
    foot = _FOOTER.pack(FOOTER_MAGIC, FLAG_COMPLETED, data_size).ljust(FOOTER_SIZE - 4, b"\x00")
    return foot + _CRC.pack(crc32(foot))


def decode_footer(raw: bytes) -> Optional[int]:
    """
    @return: the data size of a completed chunk, or C{None} if the footer is
        not a valid completed footer (an ongoing chunk).
    """
    if len(raw) < FOOTER_SIZE:
        return None
    if _CRC.unpack_from(raw, FOOTER_SIZE - 4)[0] != crc32(raw[: FOOTER_SIZE - 4]):
        return None
    magic, flags, data_size = _FOOTER.unpack_from(raw, 0)
    if magic != FOOTER_MAGIC or not flags & FLAG_COMPLETED:
        return None
    return int(data_size)


class Chunk:
    """
    One open chunk file.

    @ivar number: the chunk number.
    @ivar data_size: bytes of data of a completed chunk, C{None} while it is
        ongoing (the log knows its end).
    @ivar view: the whole file, mapped read-only (slicing it gives bytes).
    @ivar boundaries: sparse map of record starts (data-area offsets), every
        L{BOUNDARY_STRIDE}th record, for reads at arbitrary positions.
    """

    BOUNDARY_STRIDE = 64

    def __init__(
        self, path: str, number: int, chunk_size: int, fd: int, size: Optional[int] = None
    ) -> None:
        self.path = path
        self.number = number
        self.chunk_size = chunk_size
        self.fd = fd
        self.data_size: Optional[int] = None
        #: For a scavenged chunk: the runs as three arrays (physical data
        #: offset, logical local offset, length); C{None} otherwise.
        self.runs: Optional[tuple[array[int], array[int], array[int]]] = None
        self.physical_size = 0
        if size is None:
            size = file_size(chunk_size)
        self.view = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        self._closed = False
        #: readers holding the map across reactor turns (L{pin})
        self.pins = 0
        self._retired = False
        self.boundaries = array("q", [0])
        self.walked_to = 0
        self.walked_count = 0

    @classmethod
    def create(cls, directory: str, number: int, chunk_size: int, dsync: bool = False) -> Chunk:
        """
        Create and preallocate a new chunk file (temporary file, fsync, rename,
        fsync of the directory).

        @raise StorageError: it could not be created (L{DiskFull} if no space).
        """
        from estwisted.storage.checkpoints import fsync_directory

        name = chunk_file_name(number)
        path = os.path.join(directory, name)
        tmp = os.path.join(directory, f"{name}.{uuid.uuid4().hex}.tmp")
        fd = -1
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            try:
                os.posix_fallocate(fd, 0, file_size(chunk_size))
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # a file system without preallocation: a sparse file
                os.ftruncate(fd, file_size(chunk_size))
            os.pwrite(fd, encode_header(chunk_size, number, uuid.uuid4().bytes), 0)
            os.fsync(fd)
            os.rename(tmp, path)
            fsync_directory(directory)
            if dsync:
                os.close(fd)
                fd = -1
                fd = os.open(path, os.O_RDWR | os.O_DSYNC)
        except OSError as e:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise storage_error(e, f"cannot create chunk {name}") from e
        return cls(path, number, chunk_size, fd)

    @classmethod
    def open(cls, path: str, writable: bool, dsync: bool = False) -> Chunk:
        """
        Open an existing chunk and check its header and footer.

        @raise StorageError: unreadable or not a chunk file.
        """
        try:
            flags = (os.O_RDWR | (os.O_DSYNC if dsync else 0)) if writable else os.O_RDONLY
            fd = os.open(path, flags)
        except OSError as e:
            raise storage_error(e, f"cannot open {path}") from e
        try:
            head = os.pread(fd, HEADER_SIZE, 0)
            chunk_size, number, _ = decode_header(head)
            actual = os.fstat(fd).st_size
            if header_flags(head) & HEADER_SCAVENGED:
                foot = os.pread(fd, FOOTER_SIZE, actual - FOOTER_SIZE)
                scavenged = decode_scavenged_footer(foot)
                if scavenged is None:
                    raise StorageError("scavenged chunk without a valid footer")
                data_size, physical, count = scavenged
                if actual != scavenged_file_size(physical, count):
                    raise StorageError("size does not match its scavenged footer")
                chunk = cls(path, number, chunk_size, fd, actual)
                chunk.physical_size = physical
                raw = bytes(chunk.view[HEADER_SIZE + physical : actual - FOOTER_SIZE])
                phys, logical, lengths = array("q"), array("q"), array("q")
                for p, lo, n in RUN.iter_unpack(raw):
                    phys.append(p)
                    logical.append(lo)
                    lengths.append(n)
                chunk.runs = (phys, logical, lengths)
                chunk.data_size = data_size
                return chunk
            if actual != file_size(chunk_size):
                raise StorageError(f"{path}: size does not match its chunk size {chunk_size}")
            chunk = cls(path, number, chunk_size, fd)
        except (StorageError, OSError, ValueError) as e:
            os.close(fd)
            if isinstance(e, StorageError):
                raise StorageError(f"{path}: {e}") from e
            raise StorageError(f"{path}: {e}") from e
        chunk.data_size = decode_footer(chunk.read_footer())
        return chunk

    def run_list(self, data_end: int) -> tuple[array[int], array[int], array[int]]:
        """
        The chunk's runs (see the module docstring); an unscavenged chunk is
        one run of C{data_end} bytes.
        """
        if self.runs is not None:
            return self.runs
        return array("q", [0]), array("q", [0]), array("q", [data_end])

    @property
    def data_offset(self) -> int:
        return HEADER_SIZE

    def read_footer(self) -> bytes:
        start = HEADER_SIZE + self.chunk_size
        return bytes(self.view[start : start + FOOTER_SIZE])

    def complete(self, data_size: int) -> None:
        """
        Write the footer marking the chunk completed with C{data_size} bytes
        of data (not synced: the caller syncs).
        """
        os.pwrite(self.fd, encode_footer(data_size), HEADER_SIZE + self.chunk_size)
        self.data_size = data_size

    def uncomplete(self) -> None:
        """
        Erase the footer (back to an ongoing chunk; not synced).
        """
        os.pwrite(self.fd, b"\x00" * FOOTER_SIZE, HEADER_SIZE + self.chunk_size)
        self.data_size = None

    def zero_from(self, local: int) -> int:
        """
        Overwrite with zeros every non-zero block of the data area from
        C{local} on, and the footer; then sync.  Only regions the file
        system reports as data are read (C{SEEK_DATA}: preallocated,
        never-written space is skipped).

        @return: the number of bytes overwritten.
        """
        block = 1 << 20
        zeros = bytes(block)
        written = 0
        start = HEADER_SIZE + local
        end = file_size(self.chunk_size)
        fd = self.fd
        while start < end:
            try:
                start = os.lseek(fd, start, os.SEEK_DATA)
                stop_data = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                stop_data = end
            if start >= end:
                break
            stop_data = min(stop_data, end)
            while start < stop_data:
                stop = min(stop_data, (start // block + 1) * block)
                n = stop - start
                if os.pread(fd, n, start) != zeros[:n]:
                    os.pwrite(fd, zeros[:n], start)
                    written += n
                start = stop
        if written:
            os.fdatasync(fd)
        self.data_size = None
        return written

    def reset_boundaries(self) -> None:
        self.boundaries = array("q", [0])
        self.walked_to = 0
        self.walked_count = 0

    def release_fd(self) -> None:
        """
        Close the file descriptor of a completed chunk (reads use the map).
        """
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def pin(self) -> None:
        """
        Keep the map open for a reader that holds it across reactor turns
        (a raw chunk being sent to a replica), even if the chunk is
        replaced meanwhile; L{unpin} when done.
        """
        self.pins += 1

    def unpin(self) -> None:
        """
        A reader released the chunk; a retired chunk closes with the last.
        """
        self.pins -= 1
        if self.pins <= 0 and self._retired:
            self.close()

    def retire(self) -> None:
        """
        The chunk was replaced by a new file: close it now, or when the last
        pinned reader lets go (its file may be deleted already: the map
        stays valid).
        """
        self._retired = True
        if self.pins <= 0:
            self.close()
        else:
            self.release_fd()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.view.close()
        self.release_fd()


def open_file(path: str, writable: bool, dsync: bool = False) -> list[Chunk]:
    """
    Open a chunk file: one L{Chunk}, or one per logical chunk of a merged
    file (see the module docstring).

    @raise StorageError: unreadable or not a valid chunk file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
    except OSError as e:
        raise storage_error(e, f"cannot open {path}") from e
    try:
        decode_header(head)
    except StorageError as e:
        raise StorageError(f"{path}: {e}") from e
    if not header_flags(head) & HEADER_MERGED:
        return [Chunk.open(path, writable, dsync)]
    return _open_merged(path, head)


def _open_merged(path: str, head: bytes) -> list[Chunk]:
    chunk_size, start, _ = decode_header(head)
    end = header_end_number(head)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise storage_error(e, f"cannot open {path}") from e
    chunks: list[Chunk] = []
    try:
        actual = os.fstat(fd).st_size
        foot = os.pread(fd, FOOTER_SIZE, actual - FOOTER_SIZE)
        if decode_footer(foot) is None:
            raise StorageError("merged chunk without a valid footer")
        _, flags, count, physical, run_count = _FOOTER_SCAVENGED.unpack_from(foot, 0)
        if not flags & FLAG_MERGED or count != end - start + 1 or count < 1:
            raise StorageError("footer does not match a merged header")
        if actual != merged_file_size(physical, run_count, count):
            raise StorageError("size does not match its merged footer")
        tail = os.pread(fd, actual - FOOTER_SIZE - HEADER_SIZE - physical, HEADER_SIZE + physical)
        runs = [(array("q"), array("q"), array("q")) for _ in range(count)]
        totals = [0] * count
        for p, delta, lo, n in MERGED_RUN.iter_unpack(tail[: MERGED_RUN.size * run_count]):
            if delta >= count or p + n > physical:
                raise StorageError(f"bad run ({p}, {delta}, {lo}, {n})")
            phys, logical, lengths = runs[delta]
            phys.append(p)
            logical.append(lo)
            lengths.append(n)
            totals[delta] += n
        sizes = [
            int(v[0]) for v in _DATA_SIZE.iter_unpack(tail[MERGED_RUN.size * run_count :])
        ]
        for i in range(count):
            chunk = Chunk(path, start + i, chunk_size, os.dup(fd), actual)
            chunk.release_fd()
            chunk.runs = runs[i]
            chunk.data_size = sizes[i]
            chunk.physical_size = totals[i]
            chunks.append(chunk)
    except (StorageError, OSError, ValueError, struct.error) as e:
        for chunk in chunks:
            chunk.close()
        raise StorageError(f"{path}: {e}") from e
    finally:
        os.close(fd)
    return chunks
