# -*- test-case-name: estwisted.test.test_scavenger -*-
"""
The scavenger: runs a scavenge of a node's own log in the background.

One scavenge at a time walks the completed chunks from C{startFromChunk}
up to (not including) the current chunk.  Each chunk is rewritten by
L{estwisted.storage.scavenge.rewrite_chunk} in bounded slices, one slice per
reactor turn (C{callLater(0)}), so appends and reads go on in between; the
rewritten chunk is then swapped in
(L{estwisted.storage.log.ChunkedLog.replace_chunk}) and the index entries of
the removed events are set to -1.

Progress and results are written as v5 does: to C{$scavenges-{id}} the
events C{$scavengeStarted}, C{$scavengeChunksCompleted} (one per chunk,
with the space saved) and C{$scavengeCompleted} (result, time taken, total
space saved); to C{$scavenges} links to the started and completed events.
C{$scavenges-{id}} gets C{$maxAge} = C{ScavengeHistoryMaxAge} days.

Unless merging is disabled (C{DisableScavengeMerging}), a merge phase
follows: runs of consecutive scavenged chunks whose survivors fit one
chunk together are copied into one merged file
(L{estwisted.storage.scavenge.merge_chunks}, in slices too) and swapped in
(L{estwisted.storage.log.ChunkedLog.replace_merged}); each merge is
recorded as a C{$scavengeChunksCompleted} event covering its range.

With C{UnsafeIgnoreHardDelete} (the store's C{unsafe_ignore_hard_delete})
a scavenge from chunk 0 removes the tombstones of hard-deleted streams in
the chunks it scavenges (as Event Store v5 does), and each such stream is
forgotten (L{estwisted.core.streams.StreamStore.reopen_deleted}): it may be
written again.  A tombstone in the current chunk stays, as in v5.  A
scavenge from a later chunk keeps tombstones: records of the stream in the
chunks before could otherwise come back.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import StorageError
from estwisted.core.model import DELETED_STREAM, EXPECTED_ANY, NewEvent, ticks_from_unix
from estwisted.core.progress import BOARD, Progress
from estwisted.storage.index import StreamIndex
from estwisted.storage.indexfile import INDEX_FILE, remove_deltas
from estwisted.storage.open import INDEX_DIRECTORY
from estwisted.storage.scavenge import ChunkResult, StreamState, merge_chunks, rewrite_chunk

if TYPE_CHECKING:
    from estwisted.storage.log import ChunkedLog

SCAVENGES_STREAM = "$scavenges"
STARTED = "$scavengeStarted"
CHUNKS_COMPLETED = "$scavengeChunksCompleted"
COMPLETED = "$scavengeCompleted"
LINK = "$>"
#: v5's default C{ScavengeHistoryMaxAge}, in days.
DEFAULT_HISTORY_MAX_AGE = 30
#: Index entries marked per slice after a chunk swap.
FORGET_SLICE = 8192

_log = Logger()


class ScavengeInProgress(Exception):
    """
    A scavenge is already running on this node.

    @ivar scavenge_id: the running one.
    """

    def __init__(self, scavenge_id: str) -> None:
        super().__init__(scavenge_id)
        self.scavenge_id = scavenge_id


class Scavenger:
    """
    Runs scavenges of C{log} (one at a time).

    @ivar current: the id of the running scavenge, or C{None}.
    @ivar last_result: the C{$scavengeCompleted} body of the last one.
    """

    def __init__(
        self,
        store: Any,
        log: ChunkedLog,
        index: StreamIndex,
        clock: IReactorTime,
        node_endpoint: str = "",
        history_max_age: int = DEFAULT_HISTORY_MAX_AGE,
        merge: bool = True,
    ) -> None:
        self._store = store
        self._log = log
        self._index = index
        self._clock = clock
        self._node_endpoint = node_endpoint
        self._history_max_age = history_max_age
        self._merge = merge
        self.current: Optional[str] = None
        self.last_result: Optional[dict[str, Any]] = None
        self._stop_requested = False
        self._done: Optional[Deferred[dict[str, Any]]] = None
        #: the running (or last) scavenge's L{Progress}, in chunks
        self.progress: Optional[Progress] = None

    def start(self, start_from_chunk: int = 0) -> tuple[str, Deferred[dict[str, Any]]]:
        """
        Start a scavenge.

        @return: its id and a Deferred firing with the C{$scavengeCompleted}
            body when it ends.
        @raise ScavengeInProgress: one is running.
        """
        if self.current is not None:
            raise ScavengeInProgress(self.current)
        scavenge_id = str(uuid.uuid4())
        self.current = scavenge_id
        self._stop_requested = False
        done: Deferred[dict[str, Any]] = Deferred()
        self._done = done
        work = self._run(scavenge_id, start_from_chunk)
        self._clock.callLater(0, self._step, work)
        return scavenge_id, done

    def stop(self, scavenge_id: str) -> bool:
        """
        Ask the running scavenge to stop (at its next slice).

        @return: whether C{scavenge_id} is the running scavenge.
        """
        if scavenge_id != self.current:
            return False
        self._stop_requested = True
        return True

    def _step(self, work: Iterator[None]) -> None:
        try:
            next(work)
        except StopIteration:
            return
        except Exception:
            _log.failure("Scavenge failed unexpectedly")
            if self.progress is not None:
                self.progress.finish(self._clock.seconds(), "failed")
            self._finish({"result": "Failed", "error": "internal error"})
            return
        self._clock.callLater(0, self._step, work)

    def _finish(self, body: dict[str, Any]) -> None:
        self.current = None
        self.last_result = body
        done, self._done = self._done, None
        if done is not None:
            done.callback(body)

    def _write(self, stream: str, event_type: str, body: dict[str, Any]) -> Deferred[Any]:
        event = NewEvent(uuid.uuid4().bytes, event_type, json.dumps(body).encode(), b"", True)
        written: Deferred[Any] = self._store.append(stream, EXPECTED_ANY, [event], SYSTEM_PRINCIPAL)
        return written

    def _link(self, stream: str, written: Deferred[Any]) -> None:
        def link(result: Any) -> Any:
            data = f"{result.first_event_number}@{stream}".encode()
            event = NewEvent(uuid.uuid4().bytes, LINK, data, b"", False)
            return self._store.append(SCAVENGES_STREAM, EXPECTED_ANY, [event], SYSTEM_PRINCIPAL)

        written.addCallback(link)
        written.addErrback(lambda f: _log.failure("Cannot record the scavenge", f))

    def _state(self, name: str) -> StreamState:
        index = self._index
        deleted = index.tombstone(name) is not None or (
            name.startswith("$$") and index.tombstone(name[2:]) is not None
        )
        metadata = self._store.stream_metadata(name)
        return StreamState(index.last_event_number(name), deleted, metadata)

    def _run(self, scavenge_id: str, start_from_chunk: int) -> Iterator[None]:
        stream = f"{SCAVENGES_STREAM}-{scavenge_id}"
        began = time.monotonic()
        log = self._log
        end = log.completed_chunks
        max_age = json.dumps({"$maxAge": self._history_max_age * 86400}).encode()
        self._store.set_metadata(stream, EXPECTED_ANY, max_age, SYSTEM_PRINCIPAL).addErrback(
            lambda f: _log.failure("Cannot set the scavenge history age", f)
        )
        self._link(
            stream,
            self._write(
                stream, STARTED, {"scavengeId": scavenge_id, "nodeEndpoint": self._node_endpoint}
            ),
        )
        _log.info(
            "Scavenge {id} started: chunks {first} to {last}",
            id=scavenge_id,
            first=start_from_chunk,
            last=end - 1,
        )
        ignore_hard_delete = bool(
            getattr(self._store, "unsafe_ignore_hard_delete", False)
        ) and start_from_chunk == 0
        saved_total = 0
        result = "Success"
        error = ""
        self.progress = progress = BOARD.start(
            "scavenge", scavenge_id, max(0, end - start_from_chunk), self._clock.seconds(),
            unit="chunks",
        )
        for number in range(start_from_chunk, end):
            if self._stop_requested:
                result = "Stopped"
                break
            chunk_began = time.monotonic()
            outcome = ChunkResult(number)
            saved = 0
            chunk_error = ""
            try:
                now = ticks_from_unix(self._clock.seconds())
                work = rewrite_chunk(
                    log.chunk(number), log.chunk_runs(number), self._state, now, outcome,
                    ignore_hard_delete,
                )
                for _ in work:
                    yield None
                    if self._stop_requested:
                        work.close()
                        break
                if outcome.path is not None and not self._stop_requested:
                    saved = log.replace_chunk(number, outcome.path)
                    # in slices too; reads skip what is not marked yet
                    forget = self._index.forget
                    removed = outcome.removed
                    if any(n == DELETED_STREAM for _, n in removed):
                        # The index files still hold the tombstones: a
                        # crash before the next save rebuilds from the log.
                        discard_index_files(log.path)
                    for i, (name, event_number) in enumerate(removed):
                        if event_number == DELETED_STREAM:
                            _log.warn(
                                "Removed the hard-delete tombstone of {stream} "
                                "(UnsafeIgnoreHardDelete): it may be written again",
                                stream=name,
                            )
                            self._store.reopen_deleted(name)
                        else:
                            forget(name, event_number)
                        if i % FORGET_SLICE == FORGET_SLICE - 1:
                            yield None
            except (StorageError, OSError, ValueError) as e:
                chunk_error = str(e)
                result = "Failed"
                error = chunk_error
            saved_total += saved
            self._write(
                stream,
                CHUNKS_COMPLETED,
                {
                    "scavengeId": scavenge_id,
                    "chunkStartNumber": number,
                    "chunkEndNumber": number,
                    "timeTaken": _timespan(time.monotonic() - chunk_began),
                    "wasScavenged": outcome.path is not None and not chunk_error,
                    "spaceSaved": saved,
                    "errorMessage": chunk_error,
                },
            ).addErrback(lambda f: _log.failure("Cannot record the scavenge", f))
            _log.info(
                "Scavenge {id}: chunk {number} done ({percent:.0f}%), {removed} events "
                "removed, {saved} bytes saved",
                id=scavenge_id,
                number=number,
                percent=100.0 * (number - start_from_chunk + 1) / max(1, end - start_from_chunk),
                removed=len(outcome.removed),
                saved=saved,
            )
            progress.advance(1, self._clock.seconds())
            if chunk_error:
                break
            yield None
        if self._merge and result == "Success" and not self._stop_requested:
            merged = yield from self._merge_phase(scavenge_id, stream)
            saved_total += merged[0]
            if merged[1]:
                result = "Failed"
                error = merged[1]
        if self._stop_requested and result == "Success":
            result = "Stopped"
        progress.finish(self._clock.seconds(), {"Success": "done"}.get(result, result.lower()))
        body = {
            "scavengeId": scavenge_id,
            "nodeEndpoint": self._node_endpoint,
            "result": result,
            "error": error,
            "timeTaken": _timespan(time.monotonic() - began),
            "spaceSaved": saved_total,
        }
        self._link(stream, self._write(stream, COMPLETED, body))
        _log.info(
            "Scavenge {id} {result}: {saved} bytes saved in {seconds:.3f} s",
            id=scavenge_id,
            result=result,
            saved=saved_total,
            seconds=time.monotonic() - began,
        )
        self._finish(body)

    def _merge_phase(self, scavenge_id: str, stream: str) -> Any:
        """
        Merge small scavenged chunks (a generator of slices, like L{_run}).

        @return: (bytes saved, error message or "").
        """
        log = self._log
        saved_total = 0
        for first, last in log.merge_groups():
            if self._stop_requested:
                break
            began = time.monotonic()
            chunks = [log.chunk(n) for n in range(first, last + 1)]
            for chunk in chunks:
                chunk.pin()
            version = max(log.chunk_version(n) for n in range(first, last + 1)) + 1
            paths: list[str] = []
            error = ""
            saved = 0
            try:
                work = merge_chunks(chunks, version, paths)
                for _ in work:
                    yield None
                    if self._stop_requested:
                        work.close()
                        break
                if paths and not self._stop_requested:
                    saved = log.replace_merged(first, last, paths[0])
            except (StorageError, OSError, ValueError) as e:
                error = str(e)
            finally:
                for chunk in chunks:
                    chunk.unpin()
            saved_total += max(0, saved)
            self._write(
                stream,
                CHUNKS_COMPLETED,
                {
                    "scavengeId": scavenge_id,
                    "chunkStartNumber": first,
                    "chunkEndNumber": last,
                    "timeTaken": _timespan(time.monotonic() - began),
                    "wasScavenged": bool(paths) and not error,
                    "spaceSaved": max(0, saved),
                    "errorMessage": error,
                },
            ).addErrback(lambda f: _log.failure("Cannot record the scavenge", f))
            _log.info(
                "Scavenge {id}: merged chunks {first} to {last}, {saved} bytes saved",
                id=scavenge_id,
                first=first,
                last=last,
                saved=saved,
            )
            if error:
                return saved_total, error
            yield None
        return saved_total, ""


def discard_index_files(db_path: str) -> None:
    """
    Remove the stream index files of the database in C{db_path} (the next
    open rebuilds the index from the log).
    """
    directory = os.path.join(db_path, INDEX_DIRECTORY)
    try:
        os.unlink(os.path.join(directory, INDEX_FILE))
    except FileNotFoundError:
        pass
    if os.path.isdir(directory):
        remove_deltas(directory)


def _timespan(seconds: float) -> str:
    """
    A .NET C{TimeSpan} string (C{hh:mm:ss.fffffff}) as v5 writes it.
    """
    whole = int(seconds)
    fraction = int((seconds - whole) * 10_000_000)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{fraction:07d}"
