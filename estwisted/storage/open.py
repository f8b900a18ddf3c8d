# -*- test-case-name: estwisted.storage.test.test_index -*-
"""
The one entry point the wiring layer uses: L{open_storage} opens (or
creates) the log, recovers it, loads or rebuilds the stream index, and
returns them with a closer that persists the index and closes the log.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Optional

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from estwisted.core.errors import CorruptRecord
from estwisted.core.interfaces import IEventLog
from estwisted.storage.index import StreamIndex
from estwisted.storage.indexfile import (
    INDEX_FILE,
    delta_file_name,
    load_or_rebuild,
    remove_deltas,
    save_index,
)
from estwisted.storage.log import DEFAULT_CHUNK_SIZE, ChunkedLog
from estwisted.storage.memory import MemoryLog

_log = Logger()

#: Sub-directory of the database holding the index files.
INDEX_DIRECTORY = "index"
#: Delta tables kept before the next save writes a new base table.
MAX_DELTAS = 8


class StorageCloser:
    """
    Closes what L{open_storage} opened.  Call it (or L{close}) once at
    shutdown; L{save_index} may be called at any time between reactor turns
    (e.g. from a C{TimerService}) to shorten the next restart.

    @ivar report: what opening did (recovery and index loading), for logs
        and tests.
    """

    def __init__(
        self, log: IEventLog, index: StreamIndex, index_path: Optional[str], report: dict[str, Any]
    ) -> None:
        self.log = log
        self.index = index
        self.index_path = index_path
        self.report = report
        self._closed = False
        # entries already in the index files (none if it was rebuilt)
        self._saved_entries = int(report.get("loaded", 0))
        self._saved_position = report.get("covered", -1)
        self._base_entries = -1 if report.get("rebuilt", True) else self._saved_entries
        self._deltas = int(report.get("deltas", 0))
        self._drops = index.drops

    def save_index(self, min_new_entries: int = 1) -> bool:
        """
        Persist the index up to the log's durable end, unless fewer than
        C{min_new_entries} entries were added since the last save.

        @return: whether a file was written.
        """
        if self.index_path is None or self._closed:
            return False
        covered = self.log.end_position
        dropped = self.index.drops != self._drops
        if covered == self._saved_position and not dropped:
            return False
        if len(self.index) - self._saved_entries < min_new_entries and not dropped:
            return False
        entries = len(self.index)
        directory = os.path.dirname(self.index_path)
        self._drops = self.index.drops
        if (
            dropped
            or self._base_entries < 0
            or self._deltas >= MAX_DELTAS
            or entries - self._base_entries > self._base_entries
        ):
            # a new base: the in-memory index is the merge of everything
            save_index(self.index, covered, self.index_path)
            remove_deltas(directory)
            self._base_entries = entries
            self._deltas = 0
        else:
            name = delta_file_name(self._saved_position)
            save_index(self.index, covered, os.path.join(directory, name), self._saved_position)
            self._deltas += 1
        self._saved_position = covered
        self._saved_entries = entries
        if isinstance(self.log, ChunkedLog) and self.log.checkpoints is not None:
            self.log.checkpoints.chaser.write_and_sync(covered)
        return True

    def close(self) -> None:
        """
        Save the index (best effort: a failure is logged, the next start
        rebuilds), then flush and close the log.
        """
        if self._closed:
            return
        try:
            try:
                self.save_index()
            except Exception:
                _log.failure("Could not save the stream index")
        finally:
            self._closed = True
            self.log.close()

    __call__ = close


def index_saver(
    closer: StorageCloser,
    clock: IReactorTime,
    interval: float = 60.0,
    min_new_entries: int = 100_000,
) -> TimerService:
    """
    A service that saves the index every C{interval} seconds when at least
    C{min_new_entries} entries were added, so that a restart after a crash
    indexes only a short log tail.  Failures are logged, never stop it.
    """

    def tick() -> None:
        try:
            closer.save_index(min_new_entries)
        except Exception:
            _log.failure("Periodic save of the stream index failed")

    service = TimerService(interval, tick)
    service.clock = clock
    return service


def open_storage(
    path: Optional[str],
    mem_db: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_truncation: int = -1,
) -> tuple[IEventLog, StreamIndex, StorageCloser]:
    """
    Open the node's storage.

    @param path: the database directory (created if missing); ignored with
        C{mem_db}.
    @param mem_db: keep everything in memory (L{MemoryLog}).
    @param chunk_size: data bytes per chunk of a new database.
    @param max_truncation: most bytes C{truncate.chk} may cut on open
        (C{MaxTruncation}; C{-1}: no limit), see L{ChunkedLog}.
    @return: the log, the index (covering the whole log) and the closer.
    @raise estwisted.core.errors.StorageError: the database cannot be opened
        (locked by another process, unreadable, corrupt below its writer
        checkpoint).
    """
    if mem_db or path is None:
        memory = MemoryLog()
        index = StreamIndex()
        return memory, index, StorageCloser(memory, index, None, {})
    log = ChunkedLog(path, chunk_size=chunk_size, max_truncation=max_truncation)
    try:
        index_dir = os.path.join(path, INDEX_DIRECTORY)
        os.makedirs(index_dir, exist_ok=True)
        index_path = os.path.join(index_dir, INDEX_FILE)
        truncated = log.recovery.get("truncated", -1)
        if truncated >= 0 and os.path.exists(index_path):
            os.unlink(index_path)
            remove_deltas(index_dir)
        assert log.checkpoints is not None
        try:
            chaser = log.checkpoints.chaser.value
            index, report = load_or_rebuild(log, index_dir, chaser, chaser)
        except CorruptRecord as e:
            raise CorruptRecord(
                f"{path}: {e}: acknowledged records are damaged; not truncating them, "
                "refusing to start"
            ) from e
    except BaseException:
        log.close()
        raise
    report["recovery"] = dict(log.recovery)
    gc.collect()
    gc.freeze()
    return log, index, StorageCloser(log, index, index_path, report)
