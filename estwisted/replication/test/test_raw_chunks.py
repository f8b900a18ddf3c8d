# -*- test-case-name: estwisted.replication.test.test_raw_chunks -*-
"""
Replication from a scavenged region: a replica that must catch up from a
position inside (or at the start of) a chunk the leader has scavenged gets
the chunk whole (L{estwisted.storage.rawchunk}) and ends up with the same
positions for every surviving record, the same C{$all}, the same epochs,
and an index that matches, also after reopening its log.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import CorruptRecord, StorageError
from estwisted.core.metadata import NO_METADATA, StreamMetadata
from estwisted.core.model import DELETED_STREAM, EventRecord
from estwisted.replication.codec import (
    RawAck,
    RawChunk,
    decode_message,
    encode_message,
    scan_epochs,
)
from estwisted.replication.test.test_runners import _Cluster, _Replica
from estwisted.storage.index import StreamIndex
from estwisted.storage.indexfile import index_log
from estwisted.storage.log import ChunkedLog
from estwisted.storage.scavenge import ChunkResult, StreamState, rewrite_chunk

CHUNK = 8192
NOW = 638000000000000000
_ids = st.binary(min_size=16, max_size=16)
_pos = st.integers(-(2**63), 2**63 - 1)


class _ScavengedReplica(_Replica):
    """
    A replica whose index takes the gaps of a scavenged chunk, as the
    store's (L{estwisted.core.streams.StreamStore.apply_replicated}).
    """

    log: Any

    def apply(self, records: list[EventRecord]) -> None:
        for r in records:
            self.index.add_after_gap(r.stream, r.event_number, r.position)
        self.applied.extend(records)


def _temp_log(testcase: SynchronousTestCase, name: str) -> ChunkedLog:
    path = os.path.join(tempfile.mkdtemp(prefix="estw-raw-"), name)
    testcase.addCleanup(shutil.rmtree, os.path.dirname(path), True)
    log = ChunkedLog(path, chunk_size=CHUNK)
    testcase.addCleanup(log.close)
    return log


class _Writer:
    """
    Appends events to C{kept}, C{gone} (hard-deleted later) and C{capped}
    (C{$maxCount} 5) in turn, numbering each stream densely.
    """

    def __init__(self, log: Any) -> None:
        self.log = log
        self.numbers: dict[str, int] = {}

    def write(self, count: int, size: int = 300) -> None:
        for i in range(count):
            stream = ("kept", "gone", "capped")[i % 3]
            number = self.numbers.get(stream, 0)
            self.numbers[stream] = number + 1
            self.log.append(
                stream,
                number,
                os.urandom(16),
                "t",
                0,
                bytes([i % 251]) * size,
                b"",
                NOW,
            )

    def states(self) -> dict[str, StreamState]:
        return {
            "kept": StreamState(self.numbers["kept"] - 1, False, NO_METADATA),
            "gone": StreamState(self.numbers["gone"] - 1, True, NO_METADATA),
            "capped": StreamState(self.numbers["capped"] - 1, False, StreamMetadata(max_count=5)),
        }


def scavenge(log: ChunkedLog, states: dict[str, StreamState]) -> int:
    """
    Scavenge every completed chunk of C{log}.

    @return: the number of chunks rewritten.
    """
    rewritten = 0
    for number in range(log.completed_chunks):
        result = ChunkResult(number)
        for _ in rewrite_chunk(
            log.chunk(number), log.chunk_runs(number), states.__getitem__, NOW, result
        ):
            pass
        if result.path:
            log.replace_chunk(number, result.path)
            rewritten += 1
    return rewritten


def _index_of(log: Any) -> dict[str, list[int]]:
    index = StreamIndex()
    index_log(log, index, 0)
    return {name: list(positions) for name, positions in index.streams()}


_quick = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


class RawChunkCodecTests(SynchronousTestCase):
    @_quick
    @given(_ids, _pos, _pos, _pos, _pos, st.binary())
    def test_raw_chunk_round_trip(
        self, sid: bytes, number: int, offset: int, size: int, committed: int, data: bytes
    ) -> None:
        message = RawChunk(sid, number, offset, size, committed, data)
        self.assertEqual(decode_message(encode_message(message)), message)

    @_quick
    @given(_ids, _pos, _pos)
    def test_raw_ack_round_trip(self, sid: bytes, number: int, received: int) -> None:
        message = RawAck(sid, number, received)
        self.assertEqual(decode_message(encode_message(message)), message)


class ScavengedCatchUpTests(SynchronousTestCase):
    """
    A leader on chunk files scavenges its completed chunks; replicas that
    were behind catch up over them.
    """

    def setUp(self) -> None:
        self.cluster = _Cluster()
        self.leader_node = _ScavengedReplica(self.cluster, b"L" * 16, _temp_log(self, "leader"))
        self.leader = self.leader_node.lead()
        self.leader.start(0)
        self.cluster.leader = self.leader
        self.log: ChunkedLog = self.leader_node.log
        self.writer = _Writer(self.log)

    def write(self, count: int) -> None:
        self.writer.write(count)
        self.leader.flushed(self.log.flush())

    def delete_and_scavenge(self) -> int:
        self.log.append("gone", DELETED_STREAM, os.urandom(16), "$streamDeleted", 0, b"", b"", NOW)
        # a few more so that the tombstone lies in the current chunk
        self.write(3)
        rewritten = scavenge(self.log, self.writer.states())
        self.assertGreater(rewritten, 3)
        return rewritten

    def check_same(self, replica: _ScavengedReplica, since: int = 0) -> None:
        """
        Same records at the same positions (from C{since}: the replica
        keeps the unscavenged chunks it had), same epochs, an index that
        matches the log, and scavenged chunk files where the leader has
        them; the same after reopening the replica's log.
        """
        leader_records = [r for r in self.log.read_forward(0, 1_000_000) if r.position >= since]
        self.assertEqual(replica.log.end_position, self.log.end_position)
        own = list(replica.log.read_forward(0, 1_000_000))
        self.assertEqual([r for r in own if r.position >= since], leader_records)
        self.assertEqual(scan_epochs(replica.log), self.leader.epochs)
        self.assertEqual(replica.follower.epochs, self.leader.epochs)
        expected_index = _index_of(self.log if since == 0 else replica.log)
        self.assertEqual(
            {name: list(p) for name, p in replica.index.streams()},
            expected_index,
        )
        for number in range(since // CHUNK, self.log.completed_chunks):
            self.assertEqual(
                replica.log.chunk(number).runs is not None,
                self.log.chunk(number).runs is not None,
                f"chunk {number}",
            )
        path = replica.log.path
        replica.log.close()
        again = ChunkedLog(path, chunk_size=CHUNK)
        self.addCleanup(again.close)
        self.assertEqual(list(again.read_forward(0, 1_000_000)), own)
        self.assertEqual(again.end_position, self.log.end_position)
        self.assertEqual(_index_of(again), expected_index)
        self.assertEqual(scan_epochs(again), self.leader.epochs)
        names = os.listdir(path)
        self.assertFalse([n for n in names if n.endswith(".tmp")], names)

    def test_new_replica_after_scavenge(self) -> None:
        """
        A brand-new empty replica subscribes after the leader scavenged
        chunk 0 on: it gets every scavenged chunk whole, then records.
        """
        self.write(150)
        self.delete_and_scavenge()
        self.assertIsNotNone(self.log.chunk(0).runs)
        replica = _ScavengedReplica(self.cluster, b"R" * 16, _temp_log(self, "new"))
        replica.follower.start(b"L" * 16)
        self.cluster.pump()
        self.assertEqual(replica.truncations, [0])
        self.check_same(replica)
        self.assertEqual(self.leader.committed, self.log.end_position)

    def test_replica_behind_inside_a_scavenged_chunk(self) -> None:
        """
        A replica down while the leader wrote and scavenged resumes from
        inside a chunk that is now scavenged: it truncates to the chunk's
        start, gets it whole and continues; writes after it catch up
        replicate as records.
        """
        replica = _ScavengedReplica(self.cluster, b"R" * 16, _temp_log(self, "behind"))
        replica.follower.start(b"L" * 16)
        self.write(40)
        self.cluster.pump()
        behind = replica.log.end_position
        self.assertEqual(behind, self.log.end_position)
        self.assertNotEqual(behind % CHUNK, 0)
        replica.follower.stop()
        self.cluster.pumps.clear()
        self.write(150)
        self.delete_and_scavenge()
        self.assertIsNotNone(self.log.scavenged_chunk_start(behind))
        replica.follower.start(b"L" * 16)
        self.cluster.pump()
        # 0: the new log's own first record; then back to the chunk's start
        self.assertEqual(replica.truncations, [0, behind - behind % CHUNK])
        self.write(20)
        self.cluster.pump()
        self.check_same(replica, since=behind - behind % CHUNK)

    def test_scavenged_while_following(self) -> None:
        """
        A replica streaming records of a completed chunk when the leader
        scavenges it subscribes again and gets the chunk whole (in several
        pieces, with small bulks and windows).
        """
        from estwisted.replication import leader, state

        self.patch(state, "SEND_WINDOW", 3000)
        self.patch(leader, "SEND_WINDOW", 3000)
        self.patch(leader, "BULK_SIZE", 1000)
        self.reasons: list[str] = []
        from estwisted.replication.link import ReplicationLink

        abort = ReplicationLink.abort

        def noting(this: Any, reason: str) -> None:
            self.reasons.append(reason)
            abort(this, reason)

        self.patch(ReplicationLink, "abort", noting)
        replica = _ScavengedReplica(self.cluster, b"R" * 16, _temp_log(self, "during"))
        replica.follower.start(b"L" * 16)
        self.cluster.pump()
        self.write(150)
        # the leader sent one window; the replica has not received it yet
        self.delete_and_scavenge()
        self.cluster.pump()
        behind = replica.log.end_position
        self.assertLess(behind, CHUNK)
        for _ in range(10):
            self.cluster.pump()
            self.cluster.clock.advance(1.0)
        self.cluster.pump()
        # it got the chunk it was inside whole
        self.assertGreater(behind, 0)
        self.assertIsNotNone(replica.log.chunk(0).runs)
        self.assertIn("chunk scavenged meanwhile", "".join(self.reasons))
        self.check_same(replica, since=behind - behind % CHUNK)

    def test_image_survives_a_replaced_chunk(self) -> None:
        """
        The image pins its chunk: replacing the chunk file (a second
        scavenge) does not pull the map away from an image being sent.
        """
        self.write(150)
        states = self.writer.states()
        states["gone"] = StreamState(states["gone"].last, False, NO_METADATA)
        states["capped"] = StreamState(states["capped"].last, False, NO_METADATA)
        states["kept"] = StreamState(states["kept"].last, False, StreamMetadata(max_count=30))
        scavenge(self.log, states)
        image = self.log.chunk_image(0)
        first = image.read(0, 1 << 20)
        self.log.append("gone", DELETED_STREAM, os.urandom(16), "$streamDeleted", 0, b"", b"", NOW)
        self.write(3)
        scavenge(self.log, self.writer.states())
        self.assertEqual(image.read(0, 1 << 20), first)
        image.close()
        self.assertNotEqual(self.log.chunk_image(0).read(0, 1 << 20), first)


class InstallChunkTests(SynchronousTestCase):
    """
    L{ChunkedLog.install_chunk} refuses what does not fit and leaves the
    log as it was.
    """

    def setUp(self) -> None:
        self.leader = _temp_log(self, "leader")
        writer = _Writer(self.leader)
        writer.write(100)
        self.leader.append(
            "gone", DELETED_STREAM, os.urandom(16), "$streamDeleted", 0, b"", b"", NOW
        )
        writer.write(3)
        self.leader.flush()
        scavenge(self.leader, writer.states())
        self.image = self.leader.chunk_image(0)
        self.addCleanup(self.image.close)
        self.replica = _temp_log(self, "replica")
        self.replica.truncate(0)

    def receive(self, data: bytes) -> Any:
        receiver = self.replica.receive_chunk(0, len(data))
        receiver.write(0, data)
        return receiver

    def test_damaged_image_refused(self) -> None:
        data = bytearray(self.image.read(0, self.image.size))
        data[200] ^= 0xFF
        receiver = self.receive(bytes(data))
        self.assertRaises((CorruptRecord, StorageError), self.replica.install_chunk, receiver)
        self.assertEqual(self.replica.end_position, 0)
        self.assertFalse(os.path.exists(receiver.path))
        # the right image still installs afterwards
        good = self.receive(self.image.read(0, self.image.size))
        self.assertEqual(self.replica.install_chunk(good), CHUNK)
        self.assertEqual(
            self.replica.read_forward(0, 10_000),
            [r for r in self.leader.read_forward(0, 10_000) if r.position < CHUNK],
        )

    def test_out_of_order_and_wrong_place(self) -> None:
        receiver = self.replica.receive_chunk(0, self.image.size)
        self.assertRaises(StorageError, receiver.write, 5, b"x")
        self.assertRaises(StorageError, self.replica.install_chunk, receiver)
        self.assertRaises(StorageError, self.replica.receive_chunk, 1, self.image.size)

    def test_crash_before_rename_leaves_only_a_temporary(self) -> None:
        """
        A received image never installed is a C{.tmp} file: the next open
        removes it and the log is unchanged.
        """
        receiver = self.receive(self.image.read(0, self.image.size))
        receiver.finish()
        path = self.replica.path
        self.replica.close()
        again = ChunkedLog(path, chunk_size=CHUNK)
        self.addCleanup(again.close)
        # the new log's first system record only
        self.assertEqual(again.read_forward(0, 10), [])
        self.assertLess(again.end_position, 100)
        self.assertIsNone(again.chunk(0).runs)
        self.assertFalse([n for n in os.listdir(path) if n.endswith(".tmp")])
