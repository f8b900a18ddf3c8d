# -*- test-case-name: estwisted.test.test_index -*-
"""
Persistence of the L{StreamIndex}: one immutable file holding every stream's
positions up to a log position, so a restart only indexes the log's tail.

File layout (little-endian)::

    header, 64 bytes:
      magic "ESTWIDX1", version u32, reserved u32,
      covered i64 (log position the file covers: every record below it),
      streams i64, entries i64, tombstones i64, name bytes i64,
      body crc32 u32, header crc32 u32 (over the 60 bytes before it)
    body:
      counts      i64 x streams        events per stream, streams sorted by name
      name_lens   u32 x (streams + tombstones)   name lengths in characters
      entries     i64 x entries        positions, stream after stream
      tomb_pos    i64 x tombstones     tombstone positions
      names       UTF-8, the stream names then the tombstone names

Loading reads the file in one go and builds one C{array('q')} per stream
with C{frombytes} and slices: no Python object per event.  The file is
written to a temporary name, synced and renamed, so a reader sees either
the old file or the new one.
"""

from __future__ import annotations

import os
import struct
import sys
import uuid
from array import array
from bisect import bisect_left
from typing import Any, Optional
from zlib import crc32

from twisted.logger import Logger

from estwisted.errors import CorruptRecord, StorageError
from estwisted.model import DELETED_STREAM, FLAG_SYSTEM
from estwisted.storage.checkpoints import fsync_directory
from estwisted.storage.index import StreamIndex
from estwisted.storage.records import HEAD_SIZE, OVERHEAD, SCAN_HEAD

MAGIC = b"ESTWIDX1"
VERSION = 1
INDEX_FILE = "stream.idx"
_HEADER = struct.Struct("<8sIIqqqqqI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size

#: Log progress of a rebuild every this many records.
PROGRESS_EVERY = 1_000_000

_log = Logger()


class IndexFileError(StorageError):
    """
    The index file is missing, damaged or not ours.
    """


def _native(a: array[int]) -> array[int]:
    if sys.byteorder != "little":
        a.byteswap()
    return a


def save_index(index: StreamIndex, covered: int, path: str) -> int:
    """
    Write the entries of C{index} below log position C{covered} to C{path}
    (atomically: temporary file, fsync, rename, fsync of the directory).

    @return: the number of entries written.
    """
    names: list[str] = []
    counts = array("q")
    lens = array("I")
    parts: list[array[int]] = []
    entries = 0
    for name, positions in sorted(index.streams()):
        n = len(positions)
        if n and positions[-1] >= covered:
            n = bisect_left(positions, covered)
            positions = positions[:n]
        if not n:
            continue
        names.append(name)
        lens.append(len(name))
        counts.append(n)
        parts.append(positions)
        entries += n
    tomb_names: list[str] = []
    tombs = array("q")
    for name, position in sorted(index.tombstones()):
        if position < covered:
            tomb_names.append(name)
            lens.append(len(name))
            tombs.append(position)
    blob = "".join(names + tomb_names).encode("utf-8")
    body: list[bytes] = [_native(counts).tobytes(), _native(lens).tobytes()]
    body.extend(_native(part).tobytes() for part in parts)
    body.append(_native(tombs).tobytes())
    body.append(blob)
    crc = 0
    for chunk in body:
        crc = crc32(chunk, crc)
    head = _HEADER.pack(
        MAGIC, VERSION, 0, covered, len(names), entries, len(tomb_names), len(blob), crc
    )
    head += _CRC.pack(crc32(head))
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            f.writelines(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_directory(directory)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        from estwisted.storage.chunks import storage_error

        raise storage_error(e, f"cannot write index file {path}") from e
    return entries + len(tomb_names)


def load_index(path: str) -> tuple[int, dict[str, array[int]], dict[str, int]]:
    """
    Read an index file.

    @return: the covered log position, the streams and the tombstones, ready
        for L{StreamIndex.load}.
    @raise IndexFileError: the file is missing or damaged.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise IndexFileError(f"cannot read {path}: {e}") from e
    if len(raw) < HEADER_SIZE:
        raise IndexFileError(f"{path} is truncated")
    if _CRC.unpack_from(raw, _HEADER.size)[0] != crc32(raw[: _HEADER.size]):
        raise IndexFileError(f"{path}: header checksum mismatch")
    magic, version, _, covered, nstreams, nentries, ntombs, nblob, crc = _HEADER.unpack_from(raw)
    if magic != MAGIC or version != VERSION:
        raise IndexFileError(f"{path}: not an index file of version {VERSION}")
    sizes = (8 * nstreams, 4 * (nstreams + ntombs), 8 * nentries, 8 * ntombs, nblob)
    if min(sizes) < 0 or HEADER_SIZE + sum(sizes) != len(raw):
        raise IndexFileError(f"{path}: size does not match its header")
    view = memoryview(raw)
    if crc32(view[HEADER_SIZE:]) != crc:
        raise IndexFileError(f"{path}: body checksum mismatch")
    offsets = []
    o = HEADER_SIZE
    for size in sizes:
        offsets.append(view[o : o + size])
        o += size
    counts = array("q")
    counts.frombytes(offsets[0])
    lens = array("I")
    lens.frombytes(offsets[1])
    entries = array("q")
    entries.frombytes(offsets[2])
    tombs = array("q")
    tombs.frombytes(offsets[3])
    for a in (counts, lens, entries, tombs):
        _native(a)
    try:
        blob = str(offsets[4], "utf-8")
    except UnicodeDecodeError as e:
        raise IndexFileError(f"{path}: bad stream names") from e
    if sum(lens) != len(blob) or sum(counts) != nentries:
        raise IndexFileError(f"{path}: inconsistent counts")
    streams: dict[str, array[int]] = {}
    c = 0
    p = 0
    for i in range(nstreams):
        n = lens[i]
        k = counts[i]
        streams[blob[c : c + n]] = entries[p : p + k]
        c += n
        p += k
    tombstones: dict[str, int] = {}
    for i in range(ntombs):
        n = lens[nstreams + i]
        tombstones[blob[c : c + n]] = tombs[i]
        c += n
    view.release()
    return covered, streams, tombstones


def index_log(log: Any, index: StreamIndex, start: int, verify_from: int = 0) -> int:
    """
    Add every non-system record of C{log} from C{start} to its end to
    C{index}, logging progress on long runs.  Equivalent to calling
    C{index.add(stream, event_number, position)} for each record in log
    order; a log with C{segments} (L{ChunkedLog}) is scanned in place with
    no object per record.

    @param log: an L{IEventLog}.
    @param verify_from: records at or past this position have their
        checksum verified (those below were verified when first indexed;
        framing and positions are checked for all).
    @return: the number of records indexed.
    @raise StorageError: a record is damaged (L{CorruptRecord}) or does not
        fit the index.
    """
    segments = getattr(log, "segments", None)
    try:
        if segments is None:
            return _index_by_reading(log, index, start)
        return _index_segments(segments(start), index, log.end_position, verify_from)
    except ValueError as e:
        raise StorageError(f"the log does not fit the stream index: {e}") from e


def _progress(count: int, position: int, end: int) -> None:
    _log.info(
        "Indexing the log: {count} records, at position {position} of {end} ({percent:.0f}%)",
        count=count,
        position=position,
        end=end,
        percent=100.0 * position / max(end, 1),
    )


def _index_segments(segments: Any, index: StreamIndex, end: int, verify_from: int) -> int:
    unpack = SCAN_HEAD.unpack_from
    unpack_crc = _CRC.unpack_from
    overhead = OVERHEAD
    head_size = HEAD_SIZE
    system = FLAG_SYSTEM
    deleted = DELETED_STREAM
    # stream name (UTF-8 bytes) -> (new positions, number of the first)
    new: dict[Any, tuple[array[int], int]] = {}
    get = new.get
    last_event_number = index.last_event_number
    count = 0
    next_progress = PROGRESS_EVERY
    for view, off, limit, base in segments:
        while off < limit:
            n, pos, number, flags, sl, tl, dl, ml = unpack(view, off)
            stop = off + n
            if (
                pos != base + off
                or n != overhead + sl + tl + dl + ml
                or stop > limit
                or (
                    pos >= verify_from
                    and crc32(view[off : stop - 8]) != unpack_crc(view, stop - 8)[0]
                )
            ):
                raise CorruptRecord(f"damaged record at position {base + off}")
            if not flags & system:
                s = off + head_size
                name = view[s : s + sl]
                entry = get(name)
                if entry is None:
                    if number == deleted:
                        index.add(str(name, "utf-8"), number, pos)
                        off = stop
                        count += 1
                        continue
                    entry = new[name] = (array("q"), last_event_number(str(name, "utf-8")) + 1)
                positions, first = entry
                if number != first + len(positions):
                    if number != deleted:
                        raise ValueError(
                            f"index for {str(name, 'utf-8')!r}: event {number} after "
                            f"{first + len(positions) - 1}"
                        )
                    index.add(str(name, "utf-8"), number, pos)
                else:
                    positions.append(pos)
                count += 1
                if count >= next_progress:
                    next_progress += PROGRESS_EVERY
                    _progress(count, pos, end)
            off = stop
    for name, (positions, first) in new.items():
        index.extend(str(name, "utf-8"), first, positions)
    return count


def _index_by_reading(log: Any, index: StreamIndex, start: int) -> int:
    add = index.add
    end = log.end_position
    count = 0
    p = start
    while True:
        page = log.read_forward(p, 4096)
        if not page:
            return count
        for record in page:
            add(record.stream, record.event_number, record.position)
            count += 1
            if count % PROGRESS_EVERY == 0:
                _progress(count, record.position, end)
        p = page[-1].next_position


def load_or_rebuild(
    log: Any, directory: str, verify_from: int = 0
) -> tuple[StreamIndex, dict[str, Any]]:
    """
    Load the index file in C{directory} and index the log's tail past it;
    if the file is missing or damaged, or covers more than the log holds,
    rebuild the whole index from the log.

    @param verify_from: verify record checksums from this position on (the
        chaser checkpoint: what earlier runs verified need not be again).
    @return: the index and a report of what was done.
    """
    path = os.path.join(directory, INDEX_FILE)
    index = StreamIndex()
    report: dict[str, Any] = {"loaded": 0, "tail": 0, "rebuilt": False}
    start = 0
    reason: Optional[str] = None
    if os.path.exists(path):
        try:
            covered, streams, tombstones = load_index(path)
        except IndexFileError as e:
            reason = str(e)
        else:
            if covered > log.end_position:
                reason = f"it covers position {covered}, past the end of the log {log.end_position}"
            else:
                index.load(streams, tombstones)
                start = covered
                report["loaded"] = len(index)
    else:
        reason = "there is no index file"
    if reason is not None:
        if os.path.exists(path):
            _log.warn("Rebuilding the stream index from the log ({reason})", reason=reason)
        else:
            _log.info("Building the stream index from the log ({reason})", reason=reason)
        report["rebuilt"] = True
        index = StreamIndex()
    report["tail"] = index_log(log, index, start, verify_from)
    report["covered"] = start
    if reason is not None:
        _log.info("Built the stream index: {count} records", count=report["tail"])
    else:
        _log.info(
            "Loaded the stream index: {loaded} entries from the index file, "
            "{tail} records of log tail indexed",
            loaded=report["loaded"],
            tail=report["tail"],
        )
    return index, report
