# -*- test-case-name: estwisted.storage.test.test_index -*-
"""
Persistence of the L{StreamIndex} in immutable table files, so a restart
only indexes the log's tail.

Two kinds of table, same layout:
  - the base table C{stream.idx}: every entry below its C{covered} log
    position;
  - delta tables C{delta-<since>.idx}: the entries with positions in
    C{[since, covered)}, written by periodic saves (cost proportional to
    what is new).  A load applies the chain of deltas whose C{since} is the
    covered position so far.  When deltas pile up the in-memory index (the
    merged view) is written as a new base and the deltas are deleted.

File layout (little-endian)::

    header, 72 bytes:
      magic "ESTWIDX2", version u32, kind u32 (0 base, 1 delta),
      since i64 (-1 for a base), covered i64 (log position the table covers),
      streams i64, entries i64, tombstones i64, name bytes i64,
      body crc32 u32, header crc32 u32 (over the bytes before it)
    body:
      counts      i64 x streams        events per stream, streams sorted by name
      firsts      i64 x streams        event number of each stream's first entry
      name_lens   u32 x (streams + tombstones)   name lengths in characters
      entries     i64 x entries        positions, stream after stream
      tomb_pos    i64 x tombstones     tombstone positions
      names       UTF-8, the stream names then the tombstone names

Loading reads a file in one go and builds one C{array('q')} per stream
with C{frombytes} and slices: no Python object per event.  Files are
written to a temporary name, synced and renamed, so a reader sees either
the old file or the new one.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import time
import uuid
from array import array
from bisect import bisect_left
from typing import Any, NamedTuple, Optional
from zlib import crc32

from twisted.logger import Logger

from estwisted.core.errors import CorruptRecord, StorageError
from estwisted.core.model import DELETED_STREAM, FLAG_SYSTEM
from estwisted.storage.checkpoints import fsync_directory
from estwisted.storage.index import StreamIndex
from estwisted.storage.records import HEAD_SIZE, OVERHEAD, SCAN_HEAD

MAGIC = b"ESTWIDX2"
VERSION = 2
KIND_BASE = 0
KIND_DELTA = 1
INDEX_FILE = "stream.idx"
DELTA_NAME = re.compile(r"^delta-(\d{20})\.idx$")
_HEADER = struct.Struct("<8sIIqqqqqqI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size

#: Log progress of a rebuild every this many records.
PROGRESS_EVERY = 1_000_000
#: Index rebuilds of fewer bytes of log log no progress lines.
PROGRESS_LOG_BYTES = 64 * 1024 * 1024

_log = Logger()


class IndexFileError(StorageError):
    """
    An index file is missing, damaged or not ours.
    """


class Table(NamedTuple):
    """
    One table file's content.

    @ivar since: -1 for a base table, else the first position a delta covers.
    @ivar streams: C{(name, first event number, positions)} per stream.
    """

    since: int
    covered: int
    streams: list[tuple[str, int, array[int]]]
    tombstones: dict[str, int]


def delta_file_name(since: int) -> str:
    return f"delta-{since:020d}.idx"


def _native(a: array[int]) -> array[int]:
    if sys.byteorder != "little":
        a.byteswap()
    return a


def save_index(index: StreamIndex, covered: int, path: str, since: int = -1) -> int:
    """
    Write the entries of C{index} with positions in C{[since, covered)} to
    C{path} (atomically: temporary file, fsync, rename, fsync of the
    directory).  C{since=-1} writes a base table (every entry below
    C{covered}), otherwise a delta table.

    @return: the number of entries written.
    """
    names: list[str] = []
    counts = array("q")
    firsts = array("q")
    lens = array("I")
    parts: list[array[int]] = []
    entries = 0
    low = max(since, 0)
    for name, positions in sorted(index.streams()):
        n = len(positions)
        if not n or positions[-1] < low:
            continue
        first = 0 if since < 0 or positions[0] >= low else bisect_left(positions, low)
        stop = n if positions[-1] < covered else bisect_left(positions, covered)
        if stop <= first:
            continue
        if first or stop < n:
            positions = positions[first:stop]
        names.append(name)
        lens.append(len(name))
        counts.append(stop - first)
        firsts.append(first)
        parts.append(positions)
        entries += stop - first
    tomb_names: list[str] = []
    tombs = array("q")
    for name, position in sorted(index.tombstones()):
        if low <= position < covered:
            tomb_names.append(name)
            lens.append(len(name))
            tombs.append(position)
    blob = "".join(names + tomb_names).encode("utf-8")
    body: list[bytes] = [
        _native(counts).tobytes(),
        _native(firsts).tobytes(),
        _native(lens).tobytes(),
    ]
    body.extend(_native(part).tobytes() for part in parts)
    body.append(_native(tombs).tobytes())
    body.append(blob)
    crc = 0
    for chunk in body:
        crc = crc32(chunk, crc)
    head = _HEADER.pack(
        MAGIC,
        VERSION,
        KIND_BASE if since < 0 else KIND_DELTA,
        since,
        covered,
        len(names),
        entries,
        len(tomb_names),
        len(blob),
        crc,
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


def read_table(path: str) -> Table:
    """
    Read one table file.

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
    (magic, version, kind, since, covered, nstreams, nentries, ntombs, nblob, crc) = (
        _HEADER.unpack_from(raw)
    )
    if magic != MAGIC or version != VERSION or kind not in (KIND_BASE, KIND_DELTA):
        raise IndexFileError(f"{path}: not an index file of version {VERSION}")
    sizes = (8 * nstreams, 8 * nstreams, 4 * (nstreams + ntombs), 8 * nentries, 8 * ntombs, nblob)
    if min(sizes) < 0 or HEADER_SIZE + sum(sizes) != len(raw):
        raise IndexFileError(f"{path}: size does not match its header")
    view = memoryview(raw)
    if crc32(view[HEADER_SIZE:]) != crc:
        raise IndexFileError(f"{path}: body checksum mismatch")
    parts = []
    o = HEADER_SIZE
    for size in sizes:
        parts.append(view[o : o + size])
        o += size
    counts = array("q")
    counts.frombytes(parts[0])
    firsts = array("q")
    firsts.frombytes(parts[1])
    lens = array("I")
    lens.frombytes(parts[2])
    entries = array("q")
    entries.frombytes(parts[3])
    tombs = array("q")
    tombs.frombytes(parts[4])
    for a in (counts, firsts, lens, entries, tombs):
        _native(a)
    try:
        blob = str(parts[5], "utf-8")
    except UnicodeDecodeError as e:
        raise IndexFileError(f"{path}: bad stream names") from e
    view.release()
    if sum(lens) != len(blob) or sum(counts) != nentries:
        raise IndexFileError(f"{path}: inconsistent counts")
    streams: list[tuple[str, int, array[int]]] = []
    c = 0
    p = 0
    for i in range(nstreams):
        n = lens[i]
        k = counts[i]
        streams.append((blob[c : c + n], firsts[i], entries[p : p + k]))
        c += n
        p += k
    tombstones: dict[str, int] = {}
    for i in range(ntombs):
        n = lens[nstreams + i]
        tombstones[blob[c : c + n]] = tombs[i]
        c += n
    return Table(since, covered, streams, tombstones)


def load_index(path: str) -> tuple[int, dict[str, array[int]], dict[str, int]]:
    """
    Read a base table.

    @return: the covered log position, the streams and the tombstones, ready
        for L{StreamIndex.load}.
    @raise IndexFileError: the file is missing, damaged or not a base table.
    """
    table = read_table(path)
    if table.since != -1:
        raise IndexFileError(f"{path} is not a base table")
    return (
        table.covered,
        {name: positions for name, _, positions in table.streams},
        table.tombstones,
    )


def delta_files(directory: str) -> list[str]:
    """
    The delta table files in C{directory}, oldest first.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if DELTA_NAME.match(n))


def remove_deltas(directory: str, names: Optional[list[str]] = None) -> None:
    """
    Delete delta tables (all of them by default).
    """
    for name in delta_files(directory) if names is None else names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    fsync_directory(directory)


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
    progress = _StartupProgress(start, log.end_position, verify_from, segments is not None)
    try:
        if segments is None:
            count = _index_by_reading(log, index, start)
        else:
            count = _index_segments(
                segments(start), index, log.end_position, verify_from, progress.update
            )
    except ValueError as e:
        progress.finish("failed")
        raise StorageError(f"the log does not fit the stream index: {e}") from e
    except BaseException:
        progress.finish("failed")
        raise
    progress.finish("done")
    return count


class _StartupProgress:
    """
    Progress of indexing (and verifying) the log at start, on
    L{estwisted.core.progress.BOARD}, in bytes of log.
    """

    def __init__(self, start: int, end: int, verify_from: int, verifies: bool) -> None:
        from estwisted.core.progress import BOARD

        now = time.monotonic()
        self.start = start
        self.verify_from = max(start, verify_from)
        # short work: reported as data, not logged (the summary line is)
        log = end - start >= PROGRESS_LOG_BYTES
        self.index = BOARD.start("index-rebuild", "stream index", end - start, now, log=log)
        self.verify = None
        if verifies and end > self.verify_from:
            self.verify = BOARD.start(
                "chunk-verification", "record checksums", end - self.verify_from, now, log=log
            )

    def update(self, position: int) -> None:
        now = time.monotonic()
        self.index.update(position - self.start, now)
        if self.verify is not None:
            self.verify.update(max(0, position - self.verify_from), now)

    def finish(self, result: str) -> None:
        now = time.monotonic()
        self.index.finish(now, result)
        if self.verify is not None:
            self.verify.finish(now, result)


def _progress(count: int, position: int, end: int) -> None:
    _log.info(
        "Indexing the log: {count} records, at position {position} of {end} ({percent:.0f}%)",
        count=count,
        position=position,
        end=end,
        percent=100.0 * position / max(end, 1),
    )


def _index_segments(
    segments: Any, index: StreamIndex, end: int, verify_from: int,
    progress: Any = lambda position: None,
) -> int:
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
        progress(base + off)
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
                if number > first + len(positions) and number != deleted:
                    # events removed by a scavenge: their positions are -1
                    positions.extend(array("q", [-1]) * (number - first - len(positions)))
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
                    progress(pos)
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


def _apply_deltas(
    index: StreamIndex, directory: str, covered: int, end: int, report: dict[str, Any]
) -> int:
    """
    Apply the chain of delta tables that continues from C{covered}; delete
    stale ones (already in the base) and those after a break in the chain.

    @return: the position covered afterwards.
    """
    stale: list[str] = []
    names = delta_files(directory)
    for i, name in enumerate(names):
        path = os.path.join(directory, name)
        try:
            table = read_table(path)
        except IndexFileError as e:
            _log.warn("Ignoring index delta {name}: {error}", name=name, error=str(e))
            stale.extend(names[i:])
            break
        if table.covered <= covered:
            stale.append(name)
            continue
        if table.since != covered or table.covered > end:
            stale.extend(names[i:])
            break
        for stream, first, positions in table.streams:
            index.extend(stream, first, positions)
        for stream, position in table.tombstones.items():
            index.add(stream, DELETED_STREAM, position)
        covered = table.covered
        report["deltas"] += 1
    if stale:
        remove_deltas(directory, stale)
    return covered


def load_or_rebuild(
    log: Any, directory: str, verify_from: int = 0, chaser: Optional[int] = None
) -> tuple[StreamIndex, dict[str, Any]]:
    """
    Load the base table and the chain of delta tables in C{directory}, then
    index the log's tail past them; if the base is missing or damaged, or
    covers more than the log holds, rebuild the whole index from the log.

    @param verify_from: verify record checksums from this position on (the
        chaser checkpoint: what earlier runs verified need not be again).
    @param chaser: the chaser checkpoint, written after each save to the
        position the files cover and lowered when the log is cut: files
        covering more were saved before a cut and hold entries of records
        that are gone (the log may have grown past them again), so they are
        not trusted.
    @return: the index and a report of what was done: C{loaded} entries
        from table files, C{deltas} applied, C{tail} records indexed from
        the log, C{rebuilt}, C{covered} (the position the files covered).
    """
    path = os.path.join(directory, INDEX_FILE)
    for name in os.listdir(directory):
        if name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))
    index = StreamIndex()
    report: dict[str, Any] = {"loaded": 0, "deltas": 0, "tail": 0, "rebuilt": False}
    start = 0
    reason: Optional[str] = None
    end = log.end_position
    if os.path.exists(path):
        try:
            covered, streams, tombstones = load_index(path)
            if covered > end:
                reason = f"it covers position {covered}, past the end of the log {end}"
            elif chaser is not None and covered > chaser:
                reason = (
                    f"it covers position {covered}, past the chaser checkpoint {chaser}: "
                    "the log was cut after it was saved"
                )
            else:
                index.load(streams, tombstones)
                start = _apply_deltas(index, directory, covered, end, report)
                report["loaded"] = len(index)
        except (IndexFileError, ValueError) as e:
            reason = str(e)
    else:
        reason = "there is no index file"
    if reason is not None:
        if os.path.exists(path):
            _log.warn("Rebuilding the stream index from the log ({reason})", reason=reason)
        else:
            _log.info("Building the stream index from the log ({reason})", reason=reason)
        remove_deltas(directory)
        report["rebuilt"] = True
        report["loaded"] = report["deltas"] = 0
        index = StreamIndex()
        start = 0
    report["tail"] = index_log(log, index, start, verify_from)
    report["covered"] = start
    if reason is not None:
        _log.info("Built the stream index: {count} records", count=report["tail"])
    else:
        _log.info(
            "Loaded the stream index: {loaded} entries from the index files "
            "({deltas} delta tables), {tail} records of log tail indexed",
            loaded=report["loaded"],
            deltas=report["deltas"],
            tail=report["tail"],
        )
    return index, report
