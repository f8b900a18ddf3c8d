# -*- test-case-name: estwisted.core.test.test_ignore_hard_delete -*-
"""
C{UnsafeIgnoreHardDelete}: a scavenge from chunk 0 removes the tombstones
of hard-deleted streams in the chunks it scavenges, and those streams can
be written again (Event Store v5); without the option, or from a later
chunk, or with the tombstone in the current chunk, they stay deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import StreamDeleted
from estwisted.core.metadata import StreamMetadata
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    NewEvent,
    ReadStatus,
)
from estwisted.core.streams import StreamStore
from estwisted.storage.log import MIN_CHUNK_SIZE
from estwisted.storage.open import open_storage
from estwisted.storage.scavenge import StreamState, keep_record


class KeepRecordTests(SynchronousTestCase):
    @given(st.integers(0, 1000), st.booleans())
    def test_deleted_stream(self, number: int, ignore: bool) -> None:
        """
        A hard-deleted stream keeps only its tombstone, and not even that
        with the option.
        """
        state = StreamState(1000, True, StreamMetadata())
        self.assertFalse(keep_record(number, 0, 0, state, 0, ignore))
        self.assertEqual(keep_record(DELETED_STREAM, 0, 0, state, 0, ignore), not ignore)


class IgnoreHardDeleteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="estwisted-ihd-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)

    def open(self, ignore: bool) -> StreamStore:
        log, index, closer = open_storage(self.directory, False, MIN_CHUNK_SIZE)
        self.closer = closer
        self.addCleanup(closer.close)
        self.index = index
        self.store = StreamStore(
            log, index, self.clock, unsafe_ignore_hard_delete=ignore
        )
        return self.store

    def settle(self, d: Any) -> Any:
        for _ in range(50):
            self.clock.advance(0.01)
        return self.successResultOf(d)

    def events(self, n: int) -> list[NewEvent]:
        return [NewEvent(uuid.uuid4().bytes, "t", b"x" * 100) for _ in range(n)]

    def populate(self, store: StreamStore) -> None:
        for _ in range(5):
            self.settle(store.append("gone", EXPECTED_ANY, self.events(10), None))
            self.settle(store.append("kept", EXPECTED_ANY, self.events(10), None))
        self.settle(store.set_metadata("gone", EXPECTED_ANY, b'{"custom": 1}', None))
        self.settle(store.delete_stream("gone", EXPECTED_ANY, True, None))
        # push the tombstone out of the current chunk
        self.settle(store.append("tail", EXPECTED_ANY, self.events(60), None))

    def scavenge(self, store: StreamStore, start_from_chunk: int = 0) -> None:
        scavenger = store.scavenger()
        assert scavenger is not None
        _, done = scavenger.start(start_from_chunk)
        self.assertEqual(self.settle(done)["result"], "Success")

    def test_reopened(self) -> None:
        """
        After the scavenge the stream reads as never written, its metadata
        is gone, and a write with C{NoStream} starts it at event 0; other
        streams are untouched; the state survives a restart.
        """
        store = self.open(True)
        self.populate(store)
        kept = store.read_stream("kept", 0, 1000, True, False, None).events
        self.assertEqual(store.read_stream("gone", 0, 10, True, False, None).status,
                         ReadStatus.STREAM_DELETED)
        self.scavenge(store)
        self.assertEqual(store.read_stream("gone", 0, 10, True, False, None).status,
                         ReadStatus.NO_STREAM)
        meta = store.read_stream("$$gone", 0, 10, True, False, None)
        self.assertEqual(meta.status, ReadStatus.NO_STREAM)
        result = self.settle(store.append("gone", EXPECTED_NO_STREAM, self.events(2), None))
        self.assertEqual(result.first_event_number, 0)
        self.assertEqual(store.read_stream("kept", 0, 1000, True, False, None).events, kept)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "index", "stream.idx")))
        self.closer.close()
        again = self.open(True)
        page = again.read_stream("gone", 0, 10, True, False, None)
        self.assertEqual([e.original.event_number for e in page.events], [0, 1])
        self.assertEqual(len(again.read_stream("kept", 0, 1000, True, False, None).events), 50)

    def test_off_stays_deleted(self) -> None:
        store = self.open(False)
        self.populate(store)
        self.scavenge(store)
        self.assertEqual(store.read_stream("gone", 0, 10, True, False, None).status,
                         ReadStatus.STREAM_DELETED)
        d = store.append("gone", EXPECTED_ANY, self.events(1), None)
        self.clock.advance(0.01)
        self.failureResultOf(d, StreamDeleted)

    def test_later_chunk_stays_deleted(self) -> None:
        """
        A scavenge from a later chunk keeps tombstones (records before it
        could come back).
        """
        store = self.open(True)
        self.populate(store)
        self.scavenge(store, start_from_chunk=1)
        self.assertEqual(self.index.tombstone("gone") is not None, True)

    def test_current_chunk_stays_deleted(self) -> None:
        """
        A tombstone in the current chunk is not scavenged (as in v5).
        """
        store = self.open(True)
        self.settle(store.append("gone", EXPECTED_ANY, self.events(2), None))
        self.settle(store.delete_stream("gone", EXPECTED_ANY, True, None))
        self.scavenge(store)
        self.assertEqual(store.read_stream("gone", 0, 10, True, False, None).status,
                         ReadStatus.STREAM_DELETED)
