# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
Tests for L{estwisted.replication} (codec, runners, node),
L{estwisted.tcp.internal} and L{estwisted.http.forwarding}: the replication
message codec, and a
leader and replicas talking over in-memory connections (iosim).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from estwisted.core.errors import CommitTimeout, NotReady
from estwisted.core.interfaces import ICommitGate
from estwisted.core.model import EventRecord
from estwisted.http.forwarding import LeaderForwardingResource
from estwisted.replication.codec import (
    Ack,
    Assignment,
    Committed,
    Data,
    Heartbeat,
    HeartbeatReply,
    ProtocolError,
    Retry,
    Subscribe,
    Subscribed,
    decode_frames,
    decode_message,
    encode_message,
    scan_epochs,
)
from estwisted.replication.follower import ReplicationFollower
from estwisted.replication.leader import ReplicationLeader
from estwisted.replication.state import Epoch
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.tcp.internal import InternalTcpFactory
from estwisted.wire.framing import frame


@implementer(ICommitGate)
class CallableGate:
    """
    A commit gate that asks a callable (the test's quorum wait or refusal).
    """

    def __init__(self, commit: Callable[[int], Deferred[None]]) -> None:
        self.commit = commit


_ids = st.binary(min_size=16, max_size=16)
_pos = st.integers(-(2**63), 2**63 - 1)
_epochs = st.lists(st.builds(Epoch, _pos, st.integers(-(2**31), 2**31 - 1), _ids), max_size=25).map(
    tuple
)
_messages = st.one_of(
    st.builds(Subscribe, _ids, _ids, _ids, _pos, st.booleans(), _pos, _epochs),
    st.builds(Subscribed, _ids, _pos),
    st.builds(Retry, _ids, st.text()),
    st.builds(Data, _ids, _pos, _pos, st.binary()),
    st.builds(Ack, _ids, _pos),
    st.builds(Committed, _ids, _pos),
    st.builds(Assignment, _ids, st.text()),
    st.just(Heartbeat()),
    st.just(HeartbeatReply()),
)


class HeartbeatTests(SynchronousTestCase):
    """
    L{ReplicationLink} heartbeats (cluster.md 2.7): a silent peer gets a
    heartbeat after the interval and the link closes after the timeout; a
    heartbeat is answered and never reaches the runner.
    """

    def _link(self) -> tuple[Any, Any, Clock]:
        from twisted.internet.testing import StringTransport

        from estwisted.replication.link import ReplicationLink

        clock = Clock()
        seen: list[Any] = []

        class Handler:
            def __init__(self) -> None:
                self.clock = clock
                self.lost = 0

            def connection_made(self, protocol: Any) -> None:
                pass

            def message_received(self, protocol: Any, message: Any) -> None:
                seen.append(message)

            def connection_lost(self, protocol: Any) -> None:
                self.lost += 1

        link = ReplicationLink(Handler(), heartbeat_interval=0.7, heartbeat_timeout=0.7)
        transport = StringTransport()
        link.makeConnection(transport)
        link.seen = seen  # type: ignore[attr-defined]
        return link, transport, clock

    def test_silent_peer_closed(self) -> None:
        link, transport, clock = self._link()
        clock.advance(0.35)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.35)
        self.assertEqual(transport.value(), frame(encode_message(Heartbeat())))
        clock.advance(0.35)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.35)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(link.connected_)

    def test_answers_and_stays_open(self) -> None:
        link, transport, clock = self._link()
        for _ in range(10):
            clock.advance(0.35)
            link.dataReceived(frame(encode_message(HeartbeatReply())))
        self.assertFalse(transport.disconnecting)
        transport.clear()
        link.dataReceived(frame(encode_message(Heartbeat())))
        self.assertEqual(transport.value(), frame(encode_message(HeartbeatReply())))
        self.assertEqual(link.seen, [])  # type: ignore[attr-defined]


class ConfirmedTests(SynchronousTestCase):
    """
    L{ReplicationLink.confirmed_at} is the send time of the newest message
    the peer answered, not the time the answer was read: a process that
    was stopped reads old answers as old.
    """

    def test_answers_read_late_count_as_old(self) -> None:
        from twisted.internet.testing import StringTransport

        from estwisted.replication.link import ReplicationLink

        clock = Clock()

        class Handler:
            def __init__(self) -> None:
                self.clock = clock

            def connection_made(self, protocol: Any) -> None:
                pass

            def message_received(self, protocol: Any, message: Any) -> None:
                pass

            def connection_lost(self, protocol: Any) -> None:
                pass

        link = ReplicationLink(Handler(), heartbeat_interval=0.7, heartbeat_timeout=30.0)
        link.makeConnection(StringTransport())
        self.assertIsNone(link.confirmed_at)
        clock.advance(0.35)
        clock.advance(0.35)  # first heartbeat, sent at 0.7
        clock.advance(5.0)  # stopped: one late check sends a second at 5.7
        reply = frame(encode_message(HeartbeatReply()))
        link.dataReceived(reply)
        self.assertEqual((link.confirmed_at, link.last_received), (0.7, 5.7))
        link.dataReceived(reply)
        self.assertEqual(link.confirmed_at, 5.7)
        link.dataReceived(reply)  # unasked: confirms nothing
        self.assertEqual(link.confirmed_at, 5.7)

    def test_acknowledged_data_confirms_its_send_time(self) -> None:
        """
        An ack confirms a replica up to the send time of the data it
        covers: the leader's quorum is heard as of that write.
        """
        cluster = _Cluster()
        leader = cluster.leader
        assert leader is not None
        leader.start(0)
        for name in (b"A" * 16, b"B" * 16):
            _Replica(cluster, name).follower.start(b"L" * 16)
        cluster.pump()
        cluster.clock.advance(0.05)
        cluster.pump()
        written = cluster.clock.seconds()
        cluster.write(3)
        cluster.pump()
        self.assertEqual(leader.quorum_heard_at(), written)
        cluster.clock.advance(0.05)
        self.assertEqual(leader.quorum_heard_at(), written)


class CodecTests(SynchronousTestCase):
    @given(_messages)
    def test_round_trip(self, message: Any) -> None:
        self.assertEqual(decode_message(encode_message(message)), message)

    @given(st.binary(max_size=200))
    def test_garbage(self, package: bytes) -> None:
        """
        Arbitrary bytes decode or raise L{ProtocolError}, nothing else.
        """
        try:
            decode_message(package)
        except ProtocolError:
            pass

    def test_unknown_and_empty(self) -> None:
        self.assertRaises(ProtocolError, decode_message, b"")
        self.assertRaises(ProtocolError, decode_message, b"\x99" + b"\x00" * 40)
        ack = encode_message(Ack(b"s" * 16, 5))
        self.assertRaises(ProtocolError, decode_message, ack + b"x")


def _event(log: Any, i: int, size: int = 20) -> int:
    return int(
        log.append(
            f"stream-{i}",
            0,
            i.to_bytes(16, "big"),
            "type",
            0,
            bytes([i % 256]) * size,
            b"",
            637000000000000000 + i,
        )
    )


class _Replica:
    """
    A replica node: log, index, follower; connects through the cluster.
    """

    def __init__(
        self,
        cluster: _Cluster,
        name: bytes,
        log: Optional[Any] = None,
        report: Optional[Any] = None,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.log = log if log is not None else MemoryLog()
        self.epochs: list[Epoch] = scan_epochs(self.log)
        self.index = StreamIndex()
        self.applied: list[EventRecord] = []
        self.truncations: list[int] = []
        self.follower = ReplicationFollower(
            self.log,
            cluster.clock,
            name,
            self.connect,
            self.apply,
            self.truncated,
            epochs=self.epochs,
            report=report,
        )

    def lead(self, size: int = 3) -> ReplicationLeader:
        return ReplicationLeader(self.log, self.cluster.clock, size, self.name, epochs=self.epochs)

    def connect(self, factory: Factory) -> Deferred[Any]:
        leader = self.cluster.leader
        if leader is None or not self.cluster.reachable.get(self.name, True):
            return Deferred.fromFuture  # type: ignore[return-value]
        server = leader.factory().buildProtocol(None)  # type: ignore[arg-type]
        client = factory.buildProtocol(None)  # type: ignore[arg-type]
        pump = connect(
            server,
            FakeTransport(server, isServer=True),
            client,
            FakeTransport(client, isServer=False),
            greet=False,
            clock=Clock(),
        )
        self.cluster.pumps.append(pump)
        return succeed(None)

    def apply(self, records: list[EventRecord]) -> None:
        for r in records:
            self.index.add(r.stream, r.event_number, r.position)
        self.applied.extend(records)

    def truncated(self, position: int) -> None:
        self.index.truncate_from(position)
        self.truncations.append(position)
        self.applied = [r for r in self.applied if r.position < position]


class _Cluster:
    def __init__(self, size: int = 3, commit_timeout: float = 2.0) -> None:
        self.clock = Clock()
        self.log = MemoryLog()
        self.leader: Optional[ReplicationLeader] = ReplicationLeader(
            self.log, self.clock, size, b"L" * 16, commit_timeout=commit_timeout
        )
        self.pumps: list[IOPump] = []
        self.reachable: dict[bytes, bool] = {}

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for p in list(self.pumps):
                moved = p.flush(advanceClock=False) or moved
            if not moved:
                return
        raise AssertionError("pumps never settled")

    def write(self, count: int, start: int = 0, size: int = 20) -> int:
        for i in range(start, start + count):
            _event(self.log, i, size)
        end = self.log.flush()
        assert self.leader is not None
        self.leader.flushed(end)
        return int(end)


def _records(log: Any) -> list[EventRecord]:
    return list(log.read_forward(0, 100000))


class LeaderFollowerTests(SynchronousTestCase):
    def test_replicates_and_commits(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        replica = _Replica(cluster, b"A" * 16)
        changes: list[int] = []
        replica.follower.epochs_changed = lambda: changes.append(len(replica.epochs))
        replica.follower.start(b"L" * 16)
        cluster.pump()
        # a fresh replica's first system record is resent from 0
        self.assertEqual(replica.truncations, [0])
        # told of the truncation (no epochs) and of the leader's epoch
        self.assertEqual(changes, [0, 1])
        end = cluster.write(50)
        waiting = cluster.leader.wait_committed(end)
        self.assertFalse(waiting.called)
        cluster.pump()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(replica.log.end_position, end)
        self.assertEqual(_records(replica.log), _records(cluster.log))
        self.assertEqual(replica.applied, _records(cluster.log))
        self.assertEqual(replica.index.last_event_number("stream-49"), 0)
        self.assertEqual(cluster.leader.committed, end)
        self.assertEqual(replica.follower.committed, end)
        self.assertEqual(replica.follower.epochs, cluster.leader.epochs)
        self.assertEqual(replica.follower.role, "Follower")

    def test_reports_role_events(self) -> None:
        """
        The follower reports what the role machine decides on: the leader
        accepted the subscription, then assigned clone and follower; a lost
        link is reported, a link closed by L{ReplicationFollower.stop} is
        not.
        """
        from estwisted.cluster.elections import (
            CloneAssigned,
            LeaderLinkLost,
            ReplicaSubscribed,
            SlaveAssigned,
        )

        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        events: list[Any] = []
        replica = _Replica(cluster, b"A" * 16, report=events.append)
        replica.follower.start(b"L" * 16)
        cluster.pump()
        self.assertEqual(events, [ReplicaSubscribed(), CloneAssigned(), SlaveAssigned()])
        del events[:]
        protocol = replica.follower.protocol
        assert protocol is not None
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        cluster.pump()
        self.assertEqual(events, [LeaderLinkLost()])
        del events[:]
        cluster.clock.advance(0.5)
        cluster.pump()
        self.assertEqual(events, [ReplicaSubscribed(), CloneAssigned(), SlaveAssigned()])
        del events[:]
        replica.follower.stop()
        cluster.pump()
        self.assertEqual(events, [])

    def test_bulk_catch_up_then_live(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        cluster.write(400, size=1000)
        replica = _Replica(cluster, b"A" * 16)
        replica.follower.start(b"L" * 16)
        cluster.pump()
        self.assertEqual(replica.log.end_position, cluster.log.end_position)
        for round_ in range(5):
            end = cluster.write(3, start=1000 + round_ * 3)
            cluster.pump()
            self.assertEqual(replica.log.end_position, end)
            self.assertEqual(cluster.leader.committed, end)
        self.assertEqual(_records(replica.log), _records(cluster.log))

    def test_joining_replica_reports_catch_up(self) -> None:
        """
        A replica joining a cluster that has committed records reports its
        progress catching up with the leader's commit position, finished
        once it reached it.
        """
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        first = _Replica(cluster, b"A" * 16)
        first.follower.start(b"L" * 16)
        cluster.pump()
        end = cluster.write(400, size=1000)
        cluster.pump()
        self.assertEqual(cluster.leader.committed, end)
        joining = _Replica(cluster, b"B" * 16)
        joining.follower.start(b"L" * 16)
        cluster.pump()
        progress = joining.follower.catch_up
        assert progress is not None
        self.assertEqual((progress.kind, progress.result), ("replication-catch-up", "done"))
        self.assertEqual((progress.percentage, progress.remaining), (100.0, 0.0))
        self.assertGreater(progress.total, 400 * 1000)

    def test_stopped_catch_up_is_finished(self) -> None:
        """
        A replica stopped (or cut off) while catching up ends its progress
        as C{stopped}, not running forever.
        """
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        first = _Replica(cluster, b"A" * 16)
        first.follower.start(b"L" * 16)
        cluster.pump()
        cluster.write(50, size=1000)
        cluster.pump()
        joining = _Replica(cluster, b"B" * 16)
        follower = joining.follower
        follower.start(b"L" * 16)
        cluster.pump()
        follower.catch_up = None
        follower._catch_up_from = 0
        follower.committed = follower.log.end_position + 1000
        follower._progress(follower.log.end_position)
        progress = follower.catch_up
        assert progress is not None
        self.assertEqual(progress.result, "")
        follower.stop()
        self.assertEqual(progress.result, "stopped")

    def test_no_replica_times_out(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        end = cluster.write(1)
        d = cluster.leader.wait_committed(end)
        cluster.clock.advance(1.9)
        self.assertNoResult(d)
        cluster.clock.advance(0.2)
        self.failureResultOf(d, CommitTimeout)

    def test_step_down_fails_pending(self) -> None:
        """
        Writes pending when the leader steps down fail: never completed as
        if replicated.
        """
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        end = cluster.write(1)
        d = cluster.leader.wait_committed(end)
        cluster.leader.stop()
        self.failureResultOf(d, NotReady)
        self.failureResultOf(cluster.leader.wait_committed(0), NotReady)
        cluster.clock.advance(10)

    def test_five_nodes_need_two_acks(self) -> None:
        cluster = _Cluster(size=5)
        assert cluster.leader is not None
        cluster.leader.start(0)
        a = _Replica(cluster, b"A" * 16)
        a.follower.start(b"L" * 16)
        cluster.pump()
        end = cluster.write(5)
        d = cluster.leader.wait_committed(end)
        cluster.pump()
        self.assertNoResult(d)
        b = _Replica(cluster, b"B" * 16)
        b.follower.start(b"L" * 16)
        cluster.pump()
        self.successResultOf(d)
        self.assertEqual(b.log.end_position, end)

    def test_deposed_leader_truncates_its_tail(self) -> None:
        """
        A node that led epoch 0 and wrote records nobody else got rejoins a
        new leader (epoch 1): its unreplicated tail is cut, then it gets the
        new leader's history.
        """
        cluster = _Cluster()
        old = _Replica(cluster, b"O" * 16)
        new = _Replica(cluster, b"N" * 16)
        # the old leader's term: both replicate epoch 0 and 10 records
        old_leader = old.lead()
        old_leader.start(0)
        cluster.leader = old_leader
        new.follower.start(b"O" * 16)
        for i in range(10):
            _event(old.log, i)
        old_leader.flushed(old.log.flush())
        cluster.pump()
        shared = old.log.end_position
        self.assertEqual(new.log.end_position, shared)
        # the old leader writes a tail nobody receives
        cluster.pumps.clear()
        for i in range(10, 15):
            _event(old.log, i)
        tail_end = old.log.flush()
        old_leader.flushed(tail_end)
        pending = old_leader.wait_committed(tail_end)
        old_leader.stop()
        self.failureResultOf(pending, NotReady)
        # new leader (epoch 1) with its own writes
        new.follower.stop()
        new_leader = new.lead()
        new_leader.start(1)
        cluster.leader = new_leader
        for i in range(100, 103):
            _event(new.log, i)
        new_leader.flushed(new.log.flush())
        old.follower.start(b"N" * 16)
        cluster.pump()
        self.assertEqual(old.truncations, [shared])
        self.assertEqual(_records(old.log), _records(new.log))
        self.assertEqual(old.log.end_position, new.log.end_position)
        self.assertEqual(new_leader.committed, new.log.end_position)
        ids = [r.event_id for r in _records(old.log)]
        self.assertNotIn((12).to_bytes(16, "big"), ids)
        self.assertIn((101).to_bytes(16, "big"), ids)
        self.assertEqual([e.number for e in old.follower.epochs], [0, 1])

    def test_wrong_leader_id_retries(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        replica = _Replica(cluster, b"A" * 16)
        replica.follower.start(b"X" * 16)
        cluster.pump()
        self.assertIsNone(replica.follower.protocol)
        self.assertEqual(replica.log.end_position, MemoryLog().end_position)
        # it keeps retrying every 0.5 s until it follows the right leader
        replica.follower.start(b"L" * 16)
        cluster.pump()
        self.assertEqual(replica.log.end_position, cluster.log.end_position)

    def test_reconnects_after_loss(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        replica = _Replica(cluster, b"A" * 16)
        replica.follower.start(b"L" * 16)
        cluster.pump()
        protocol = replica.follower.protocol
        assert protocol is not None
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        cluster.pump()
        self.assertIsNone(replica.follower.protocol)
        self.assertEqual(cluster.leader.state.replicas, {})  # type: ignore[union-attr]
        end = cluster.write(5)
        cluster.clock.advance(0.5)
        cluster.pump()
        self.assertEqual(replica.log.end_position, end)
        self.assertEqual(cluster.leader.committed, end)

    def test_damaged_data_closes(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        replica = _Replica(cluster, b"A" * 16)
        replica.follower.start(b"L" * 16)
        cluster.pump()
        before = replica.log.end_position
        protocol = replica.follower.protocol
        assert protocol is not None
        start, frames, _ = cluster.log.read_raw(0, 100)
        bad = bytearray(frames)
        bad[-9] ^= 1
        sid = replica.follower.state.subscription_id
        protocol.dataReceived(frame(encode_message(Data(sid, before, 0, bytes(bad)))))
        self.assertEqual(replica.log.end_position, before)
        self.assertEqual(replica.log.pending_position, before)
        self.assertFalse(protocol.connected_)

    def test_read_only_replica_not_counted(self) -> None:
        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        replica = _Replica(cluster, b"R" * 16)
        replica.follower.promotable = False
        replica.follower.start(b"L" * 16)
        cluster.pump()
        end = cluster.write(3)
        d = cluster.leader.wait_committed(end)
        cluster.pump()
        self.assertEqual(replica.log.end_position, end)
        self.assertNoResult(d)
        self.assertEqual(replica.follower.role, "ReadOnly")
        cluster.leader.stop()
        self.failureResultOf(d, NotReady)


class HelpersTests(SynchronousTestCase):
    def test_scan_epochs_and_decode_frames(self) -> None:
        log = MemoryLog()
        leader = ReplicationLeader(log, Clock(), 1, b"L" * 16)
        self.assertEqual(leader.epochs, [])
        e0 = leader.start(0)
        _event(log, 1)
        log.flush()
        leader.stop()
        e1 = leader.start(0)
        self.assertEqual(e1.number, 1)
        self.assertEqual(scan_epochs(log), [e0, e1])
        # a single node commits on its own flush
        end = log.flush()
        leader.flushed(end)
        self.successResultOf(leader.wait_committed(end))
        start, frames, _ = log.read_raw(0, 1 << 20)
        records = decode_frames(start, frames)
        self.assertEqual([r.position for r in records][:2], [0, e0.position])


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"client:" + data)


class InternalTcpFactoryTests(SynchronousTestCase):
    def _connect(self, factory: InternalTcpFactory) -> tuple[Any, Any]:
        from twisted.internet.testing import StringTransport

        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_clients_go_to_the_client_factory(self) -> None:
        leader = ReplicationLeader(MemoryLog(), Clock(), 3, b"L" * 16)
        factory = InternalTcpFactory(Factory.forProtocol(_Echo), leader)
        protocol, transport = self._connect(factory)
        protocol.dataReceived(b"\x05\x00")
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"\x00\x00\xf5rest")
        self.assertEqual(transport.value(), b"client:\x05\x00\x00\x00\xf5rest")

    def test_replicas_go_to_the_leader(self) -> None:
        leader = ReplicationLeader(MemoryLog(), Clock(), 3, b"L" * 16)
        factory = InternalTcpFactory(Factory.forProtocol(_Echo), leader)
        protocol, transport = self._connect(factory)
        sub = Subscribe(b"s" * 16, b"A" * 16, b"L" * 16, 0, True, 0, ())
        protocol.dataReceived(frame(encode_message(sub)))
        # not leader yet: Retry
        answer = decode_message(transport.value()[4:])
        self.assertEqual(answer, Retry(b"s" * 16, "not the leader"))


class ChunkedLogReplicationTests(SynchronousTestCase):
    """
    The same over chunk files with small chunks: records cross chunk
    rollovers at the same positions, and a deposed leader's tail is cut on
    disk (and stays cut after reopening).
    """

    def _log(self, name: str) -> Any:
        import os
        import shutil
        import tempfile

        from estwisted.storage.log import ChunkedLog

        path = os.path.join(tempfile.mkdtemp(prefix="estw-repl-"), name)
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        log = ChunkedLog(path, chunk_size=8192)
        self.addCleanup(log.close)
        return log

    def test_deposed_leader_on_disk(self) -> None:
        from estwisted.storage.log import ChunkedLog

        cluster = _Cluster()
        old = _Replica(cluster, b"O" * 16, self._log("old"))
        new = _Replica(cluster, b"N" * 16, self._log("new"))
        old_leader = old.lead()
        old_leader.start(0)
        cluster.leader = old_leader
        new.follower.start(b"O" * 16)
        for i in range(60):
            _event(old.log, i, size=700)
        old_leader.flushed(old.log.flush())
        cluster.pump()
        shared = old.log.end_position
        self.assertEqual(new.log.end_position, shared)
        self.assertGreater(shared, 4 * 8192)
        self.assertEqual(old_leader.committed, shared)
        cluster.pumps.clear()
        for i in range(60, 80):
            _event(old.log, i, size=700)
        old_leader.flushed(old.log.flush())
        old_leader.stop()
        new.follower.stop()
        new_leader = new.lead()
        new_leader.start(1)
        cluster.leader = new_leader
        for i in range(100, 120):
            _event(new.log, i, size=700)
        new_leader.flushed(new.log.flush())
        old.follower.start(b"N" * 16)
        cluster.pump()
        self.assertEqual(old.truncations, [shared])
        self.assertEqual(_records(old.log), _records(new.log))
        self.assertEqual(new_leader.committed, new.log.end_position)
        path = old.log.path  # type: ignore[union-attr]
        old.log.close()
        again = ChunkedLog(path, chunk_size=8192)
        self.addCleanup(again.close)
        self.assertEqual(_records(again), _records(new.log))
        self.assertEqual(scan_epochs(again), new_leader.epochs)


class StoreGateTests(SynchronousTestCase):
    """
    L{StreamStore} with the leader's commit gate: writes are indexed,
    acknowledged and shown to listeners only once a quorum has them; a
    replica's store applies what it receives.
    """

    def setUp(self) -> None:
        from estwisted.core.streams import SYSTEM_PRINCIPAL, StreamStore

        self.principal = SYSTEM_PRINCIPAL
        self.cluster = _Cluster()
        leader = self.cluster.leader
        assert leader is not None
        self.leader = leader
        self.store = StreamStore(self.cluster.log, StreamIndex(), self.cluster.clock)
        leader._flush = self._flush_store
        leader.start(0)
        self.store.set_commit_gate(CallableGate(self._gate))
        self.seen: list[EventRecord] = []
        self.store.add_commit_listener(self.seen.extend)
        replica_log = MemoryLog()
        self.replica = _Replica(self.cluster, b"A" * 16, replica_log)
        self.replica_store = StreamStore(replica_log, StreamIndex(), self.cluster.clock)
        self.replica.apply = self.replica_store.apply_replicated  # type: ignore[method-assign]
        self.replica.follower.apply = self.replica_store.apply_replicated
        self.replica.follower.truncated = self.replica_store.truncated
        self.replica_seen: list[EventRecord] = []
        self.replica_store.add_commit_listener(self.replica_seen.extend)

    def _flush_store(self) -> int:
        return int(self.cluster.log.flush())

    def _gate(self, end: int) -> Deferred[None]:
        d = self.leader.wait_committed(end)
        self.leader.flushed(end)
        return d

    def _append(self, stream: str, expected: int, n: int = 1) -> Deferred[Any]:
        from estwisted.core.model import NewEvent

        events = [NewEvent(os_urandom(), "t", b"{}", b"", True) for _ in range(n)]
        return self.store.append(stream, expected, events, self.principal)

    def _read_all(self, stream: str) -> tuple[list[int], list[int]]:
        """
        Event numbers of C{stream} in C{$all}, forward and backward.
        """
        out = []
        for forward in (True, False):
            result = self.store.read_all(
                -1 if not forward else 0, 100, forward, False, self.principal
            )
            records = [e.event for e in result.events if e.event is not None]
            out.append([r.event_number for r in records if r.stream == stream])
        return out[0], out[1]

    def _read(self, store: Any, stream: str) -> list[int]:
        result = store.read_stream(stream, 0, 100, True, False, self.principal)
        return [e.event.event_number for e in result.events]

    def test_acknowledged_after_quorum(self) -> None:
        self.replica.follower.start(b"L" * 16)
        self.cluster.pump()
        d = self._append("s", -1, 3)
        self.cluster.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(self._read(self.store, "s"), [])
        self.assertEqual(self._read_all("s"), ([], []))
        self.assertEqual(self.seen, [])
        self.cluster.pump()
        self.assertEqual(self._read_all("s"), ([0, 1, 2], [2, 1, 0]))
        result = self.successResultOf(d)
        self.assertEqual((result.first_event_number, result.last_event_number), (0, 2))
        self.assertEqual(self._read(self.store, "s"), [0, 1, 2])
        self.assertEqual(len(self.seen), 3)
        # the replica indexed and notified too
        self.assertEqual(self._read(self.replica_store, "s"), [0, 1, 2])
        self.assertEqual(self.replica_seen, self.seen)

    def test_timeout_then_later_commit(self) -> None:
        """
        Without a replica the write times out (not acknowledged); the next
        write still sees its event numbers, and both become visible once a
        replica catches up.
        """
        d1 = self._append("s", -1, 2)
        self.cluster.clock.advance(0)
        self.cluster.clock.advance(2.1)
        self.failureResultOf(d1, CommitTimeout)
        d2 = self._append("s", 1, 1)
        self.cluster.clock.advance(0)
        self.assertNoResult(d2)
        self.replica.follower.start(b"L" * 16)
        self.cluster.pump()
        self.assertEqual(self.successResultOf(d2).first_event_number, 2)
        self.assertEqual(self._read(self.store, "s"), [0, 1, 2])

    def test_step_down(self) -> None:
        d = self._append("s", -1, 1)
        self.cluster.clock.advance(0)
        self.leader.stop()
        self.failureResultOf(d, NotReady)
        self.store.release_gated()
        self.assertEqual(self._read(self.store, "s"), [0])
        # truncated later by a new leader: forgotten
        cut = self.cluster.log.read(self.leader.epochs[-1].position).next_position
        self.cluster.log.truncate(cut)
        self.store.truncated(cut)
        self.assertEqual(self.store.last_commit_position, 0)
        self.assertEqual(self._read(self.store, "s"), [])


    def _same(self, stream: str, expected: int, event_id: bytes) -> Deferred[Any]:
        from estwisted.core.model import NewEvent

        event = NewEvent(event_id, "t", b"{}", b"", True)
        return self.store.append(stream, expected, [event], self.principal)

    def test_retry_of_unreplicated_write_waits_for_the_quorum(self) -> None:
        """
        Issue 11, the path that lost acknowledged writes: a write times out
        without a quorum; the client retries the same event id on the same
        node.  The retry matches the record in the leader's log, which no
        quorum holds: it is not acknowledged until one does.
        """
        ids = {expected: os_urandom() for expected in (-2, -1)}
        firsts = [self._same(f"s{e}", e, i) for e, i in ids.items()]
        self.cluster.clock.advance(0)
        self.cluster.clock.advance(2.1)
        for first in firsts:
            self.failureResultOf(first, CommitTimeout)
        retries = [self._same(f"s{e}", e, i) for e, i in ids.items()]
        self.cluster.clock.advance(0)
        for retry in retries:
            self.assertNoResult(retry)
        self.replica.follower.start(b"L" * 16)
        self.cluster.pump()
        for retry in retries:
            result = self.successResultOf(retry)
            self.assertEqual((result.first_event_number, result.last_event_number), (0, 0))
        self.assertEqual(self._read(self.store, "s-2"), [0])
        self.assertEqual(self._read(self.store, "s-1"), [0])
        self.assertEqual(self._read(self.replica_store, "s-2"), [0])

    def test_retry_of_unreplicated_write_times_out(self) -> None:
        """
        Still no quorum: the retry fails as the first attempt did.
        """
        event_id = os_urandom()
        first = self._same("s", -2, event_id)
        self.cluster.clock.advance(0)
        self.cluster.clock.advance(2.1)
        self.failureResultOf(first, CommitTimeout)
        retry = self._same("s", -2, event_id)
        self.cluster.clock.advance(0)
        self.cluster.clock.advance(2.1)
        self.failureResultOf(retry, CommitTimeout)

    def test_retry_after_step_down_fails(self) -> None:
        """
        The leader stepped down with the record unreplicated (the gate now
        refuses, as L{NodeReplication} sets it): a retry that matches the
        record fails; it is never acknowledged.
        """
        event_id = os_urandom()
        first = self._same("s", -2, event_id)
        self.cluster.clock.advance(0)
        self.leader.stop()
        self.failureResultOf(first, NotReady)

        def refuse(end: int) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            d.errback(NotReady("stepped down"))
            return d

        self.store.set_commit_gate(CallableGate(refuse))
        self.store.release_gated()
        for expected in (-2, -1):
            retry = self._same("s", expected, event_id)
            self.cluster.clock.advance(0)
            self.failureResultOf(retry, NotReady)

    def test_retry_of_committed_write_acknowledged(self) -> None:
        """
        A retry of a write the quorum holds is acknowledged with the
        original event numbers and writes nothing.
        """
        self.replica.follower.start(b"L" * 16)
        self.cluster.pump()
        event_id = os_urandom()
        first = self._same("s", -2, event_id)
        self.cluster.clock.advance(0)
        self.cluster.pump()
        self.successResultOf(first)
        end = self.cluster.log.end_position
        retry = self._same("s", -2, event_id)
        self.cluster.clock.advance(0)
        self.cluster.pump()
        self.assertEqual(self.successResultOf(retry).first_event_number, 0)
        self.assertEqual(self.cluster.log.end_position, end)


def os_urandom() -> bytes:
    import os

    return os.urandom(16)


class NotMasterTests(SynchronousTestCase):
    """
    A follower's TCP edge answers writes with C{NotHandled(NotMaster)} and
    the leader's external endpoints.
    """

    def test_write_on_follower(self) -> None:
        import uuid

        from twisted.internet.testing import StringTransport

        from estwisted.core.errors import NotLeader
        from estwisted.core.streams import StreamStore
        from estwisted.tcp.server import TcpClientFactory
        from estwisted.wire import messages_pb2 as pb
        from estwisted.wire.tcpcodec import decode_package, encode_package

        clock = Clock()
        log = MemoryLog()
        end = log.end_position
        store = StreamStore(log, StreamIndex(), clock)
        store.writes_refused = NotLeader(tcp=("127.0.0.9", 1113), http=("127.0.0.9", 2113))
        factory = TcpClientFactory(store, None, None, clock)  # type: ignore[arg-type]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        message = pb.WriteEvents(event_stream_id="s", expected_version=-2, require_master=True)
        e = message.events.add()
        e.event_id = uuid.uuid4().bytes_le
        e.event_type = "t"
        e.data_content_type = 0
        e.metadata_content_type = 0
        e.data = b"x"
        package = encode_package(0x82, b"c" * 16, message.SerializeToString())
        protocol.dataReceived(frame(package))
        clock.advance(0)
        answer = decode_package(transport.value()[4:])
        self.assertEqual(answer.command, 0xF1)
        self.assertEqual(answer.correlation_id, b"c" * 16)
        not_handled = pb.NotHandled.FromString(answer.data)
        self.assertEqual(not_handled.reason, pb.NotHandled.NotMaster)
        info = pb.NotHandled.MasterInfo.FromString(not_handled.additional_info)
        self.assertEqual(
            (info.external_tcp_address, info.external_tcp_port, info.external_http_port),
            ("127.0.0.9", 1113, 2113),
        )
        # nothing reached the log
        self.assertEqual((log.end_position, log.pending_position), (end, end))


class LeaderForwardingTests(TestCase):
    """
    L{LeaderForwardingResource} over real loopback sockets: a follower's
    HTTP write is answered by the leader; reads, C{ES-RequireMaster: True}
    and already-forwarded requests stay local.
    """

    def setUp(self) -> None:
        from twisted.internet import reactor
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        self.reactor: Any = reactor
        self.seen: list[tuple[bytes, bytes, bytes, Optional[bytes]]] = []
        test = self

        class Leader(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                test.seen.append(
                    (
                        request.method,
                        request.uri,
                        request.content.read(),
                        request.getHeader(b"x-forwarded-host"),
                    )
                )
                request.setResponseCode(201, b"Created")
                request.setHeader(b"location", b"/streams/s/0")
                return b"leader"

        class Local(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                return b"local"

        r: Any = reactor
        leader_port = r.listenTCP(0, Site(Leader()), interface="127.0.0.1")
        self.addCleanup(leader_port.stopListening)
        self.target: Optional[tuple[str, int]] = ("127.0.0.1", leader_port.getHost().port)
        root = LeaderForwardingResource(Local(), lambda: self.target, reactor)
        port = r.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(root.close)
        self.url = f"http://127.0.0.1:{port.getHost().port}"

    async def _call(self, method: str, path: str, **kw: Any) -> tuple[int, bytes, Any]:
        import treq

        response = await treq.request(
            method, self.url + path, reactor=self.reactor, persistent=False, **kw
        )
        body = await treq.content(response)
        return response.code, body, response.headers

    async def _test_forwarded(self) -> None:
        code, body, headers = await self._call(
            "POST",
            "/streams/s?x=1",
            data=b'{"a":1}',
            headers={"Content-Type": ["application/json"]},
        )
        self.assertEqual((code, body), (201, b"leader"))
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/streams/s/0"])
        self.assertEqual(self.seen[0][:3], (b"POST", b"/streams/s?x=1", b'{"a":1}'))
        self.assertIsNotNone(self.seen[0][3])

    def test_forwarded(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._test_forwarded())

    async def _test_subscription_reads_forwarded(self) -> None:
        path = "/subscriptions/s/g/20?embed=body"
        self.assertEqual((await self._call("GET", path))[:2], (201, b"leader"))
        self.assertEqual(self.seen[0][:2], (b"GET", path.encode()))
        self.assertEqual((await self._call("GET", "/streams/s"))[1], b"local")

    def test_subscription_reads_forwarded(self) -> Deferred[None]:
        """
        A persistent subscription pull (a C{GET}) is served by the leader
        too: a follower's stale groups would hand out what the leader's
        consumers already acked (issue 11, found by the chaos suite).
        """
        return Deferred.fromCoroutine(self._test_subscription_reads_forwarded())

    async def _test_local(self) -> None:
        self.assertEqual((await self._call("GET", "/streams/s"))[:2], (200, b"local"))
        code, body, _ = await self._call(
            "POST", "/streams/s", data=b"{}", headers={"ES-RequireMaster": ["True"]}
        )
        self.assertEqual(body, b"local")
        code, body, _ = await self._call(
            "POST", "/streams/s", data=b"{}", headers={"X-Estwisted-Forwarded": ["1"]}
        )
        self.assertEqual(body, b"local")
        self.target = None
        code, body, _ = await self._call("POST", "/streams/s", data=b"{}")
        self.assertEqual(body, b"local")
        self.assertEqual(self.seen, [])

    def test_local(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._test_local())

    async def _test_leader_down(self) -> None:
        """
        A leader that cannot be reached: the client is sent there itself
        (C{307} with the leader's C{Location}), not answered C{503}.
        """
        self.target = ("127.0.0.1", 1)
        code, _, headers = await self._call(
            "POST", "/streams/s?embed=body", data=b"{}", allow_redirects=False
        )
        self.assertEqual(code, 307)
        self.assertEqual(
            headers.getRawHeaders(b"location"), [b"http://127.0.0.1:1/streams/s?embed=body"]
        )

    def test_leader_down(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._test_leader_down())


class NodeReplicationTests(SynchronousTestCase):
    """
    L{NodeReplication} performs the role machine's decisions: lead (writes
    gated by the quorum), follow or stand by (writes refused); a step-down
    fails waiting and still-buffered writes.
    """

    def test_states(self) -> None:
        """
        Leading writes an epoch and reports it (L{EpochWritten}); writes
        are refused as the published view says; following fails waiting
        and buffered writes and connects to the leader; standing by stops.
        """
        import uuid
        from types import SimpleNamespace

        from estwisted.cluster.controller import EpochWritten
        from estwisted.cluster.gossip import Endpoint, VNodeState
        from estwisted.cluster.leadership import Leadership, LeadershipView
        from estwisted.core.errors import NotLeader
        from estwisted.core.model import NewEvent
        from estwisted.core.streams import SYSTEM_PRINCIPAL, StreamStore
        from estwisted.replication.node import NodeReplication

        clock = Clock()
        log = MemoryLog()
        store = StreamStore(log, StreamIndex(), clock)
        connects: list[tuple[str, int]] = []

        def connect(host: str, port: int, factory: Factory) -> Deferred[Any]:
            connects.append((host, port))
            return Deferred()

        leadership = Leadership(LeadershipView(VNodeState.Initializing))
        reports: list[Any] = []
        epochs: list[Any] = []
        node = NodeReplication(
            store, log, clock, b"N" * 16, 3, connect, report=reports.append,
            on_epoch=epochs.append, leadership=leadership,
        )
        reloads: list[int] = []
        node.persistent = SimpleNamespace(reload=lambda: reloads.append(1))

        def write() -> Deferred[Any]:
            event = NewEvent(uuid.uuid4().bytes, "t", b"{}", b"", True)
            return store.append("s", -2, [event], SYSTEM_PRINCIPAL)

        self.failureResultOf(write(), NotReady)
        node.lead(4)
        self.assertTrue(node.leader.active)
        self.assertEqual([e.number for e in epochs], [4])
        (written,) = reports
        assert isinstance(written, EpochWritten)
        self.assertEqual((written.position, written.number), (epochs[0].position, 4))
        self.assertEqual(written.epoch_id, uuid.UUID(bytes=epochs[0].epoch_id))
        self.assertEqual(reloads, [1])
        self.failureResultOf(write(), NotReady)  # until the view says so
        leadership.publish(LeadershipView(VNodeState.Master, takes_writes=True))
        first = write()
        clock.advance(0)
        self.assertNoResult(first)
        second = write()  # buffered, not flushed yet
        leader = SimpleNamespace(
            instance_id=uuid.UUID(int=7),
            external_tcp=Endpoint("127.0.0.5", 1113),
            external_http=Endpoint("127.0.0.5", 2113),
            internal_tcp=Endpoint("127.0.0.5", 1112),
        )
        node.follow(leader)
        self.failureResultOf(first, NotReady)
        clock.advance(0)
        self.failureResultOf(second, NotReady)
        clock.advance(0)
        # the records are in the log and indexed (a truncation may remove them)
        result = store.read_stream("s", 0, 10, True, False, SYSTEM_PRINCIPAL)
        self.assertEqual(len(result.events), 2)
        leadership.publish(
            LeadershipView(
                VNodeState.PreReplica,
                leader_external_tcp=leader.external_tcp,
                leader_external_http=leader.external_http,
            )
        )
        refusal = self.failureResultOf(write(), NotLeader).value
        self.assertEqual(refusal.http, ("127.0.0.5", 2113))
        self.assertEqual(connects, [("127.0.0.5", 1112)])
        self.assertEqual(node.follower.leader_id, uuid.UUID(int=7).bytes)
        node.stand_by()
        leadership.publish(LeadershipView(VNodeState.Unknown))
        self.assertIsNone(node.follower.leader_id)
        f = self.failureResultOf(write(), NotReady)
        self.assertNotIsInstance(f.value, NotLeader)

    def test_no_quorum_reported(self) -> None:
        """
        Leading without replicas is reported once to the role machine (the
        node's only no-quorum detector): a leader that never had a quorum
        is given L{NO_QUORUM_TIMEOUT} for its replicas to subscribe.
        """
        from estwisted.cluster.elections import NoQuorum
        from estwisted.core.streams import StreamStore
        from estwisted.replication.node import NodeReplication
        from estwisted.replication.state import NO_QUORUM_TIMEOUT

        clock = Clock()
        log = MemoryLog()
        store = StreamStore(log, StreamIndex(), clock)
        events: list[Any] = []
        node = NodeReplication(
            store, log, clock, b"N" * 16, 3, lambda h, p, f: Deferred(), report=events.append,
            election_timeout=2.0,
        )
        node.lead(1)
        del events[:]  # EpochWritten
        for _ in range(round(NO_QUORUM_TIMEOUT / 0.1) - 1):
            clock.advance(0.1)
        self.assertEqual(events, [])
        for _ in range(2):
            clock.advance(0.1)
        self.assertEqual(events, [NoQuorum()])
        for _ in range(50):
            clock.advance(0.1)
        self.assertEqual(events, [NoQuorum()])
        node.stop()


class _FullLog(MemoryLog):
    """
    A memory log whose disk fills on demand: flushing (and so writing an
    epoch) then fails with L{DiskFull}, as a L{ChunkedLog} does on
    C{ENOSPC}, and nothing is kept.
    """

    full = False

    def flush(self) -> int:
        if self.full:
            self.discard()
            from estwisted.core.errors import DiskFull

            raise DiskFull("cannot write to the log: disk full (No space left on device)")
        return int(super().flush())


class DiskFullTests(SynchronousTestCase):
    """
    L{NodeReplication} on a full disk: a write failing with L{DiskFull}
    is reported once as L{StorageFull} (the role machine hands leadership
    over), free space is then checked every second and reported once as
    L{StorageFreed}; a node told to lead without room for its epoch
    reports L{StorageFull} instead of L{EpochWritten}.
    """

    def _node(self) -> tuple[Any, Any, _FullLog, list[Any], list[bool], Clock]:
        from estwisted.core.streams import StreamStore
        from estwisted.replication.node import NodeReplication

        clock = Clock()
        log = _FullLog()
        store = StreamStore(log, StreamIndex(), clock)
        events: list[Any] = []
        room = [False]
        from estwisted.cluster.gossip import VNodeState
        from estwisted.cluster.leadership import Leadership, LeadershipView

        node = NodeReplication(
            store, log, clock, b"N" * 16, 1, lambda h, p, f: Deferred(), report=events.append,
            space_available=lambda: room[0],
            leadership=Leadership(LeadershipView(VNodeState.Master, takes_writes=True)),
        )
        self.addCleanup(node.stop)
        return node, store, log, events, room, clock

    def test_leader_write_reports_full_then_freed(self) -> None:
        from estwisted.cluster.controller import EpochWritten, StorageFreed, StorageFull
        from estwisted.core.errors import DiskFull
        from estwisted.core.model import NewEvent
        from estwisted.core.streams import SYSTEM_PRINCIPAL

        node, store, log, events, room, clock = self._node()
        node.lead(1)
        self.assertIsInstance(events.pop(), EpochWritten)
        log.full = True
        failures = []
        for n in range(3):
            d = store.append("s", -2, [NewEvent(bytes([n + 1]) * 16, "t", b"{}", b"", True)],
                             SYSTEM_PRINCIPAL)
            clock.advance(0)
            failures.append(self.failureResultOf(d, DiskFull))
        self.assertIn("disk full", str(failures[0].value))
        self.assertEqual(events, [StorageFull(str(failures[0].value))])
        self.assertTrue(node.disk_full)
        clock.advance(5)
        self.assertEqual(len(events), 1)
        room[0] = True
        log.full = False
        clock.advance(1)
        self.assertEqual(events[1:], [StorageFreed()])
        self.assertFalse(node.disk_full)
        clock.advance(5)
        self.assertEqual(len(events), 2)
        # reads still work, and writes again
        d = store.append("s", -2, [NewEvent(b"z" * 16, "t", b"{}", b"", True)], SYSTEM_PRINCIPAL)
        clock.advance(0)
        self.successResultOf(d)

    def test_gated_batches_indexed_after_hand_over(self) -> None:
        """
        A batch flushed and waiting for the quorum when a later batch
        finds the disk full: the leader hands over (the role machine, told
        on the next turn, stands replication by), the waiting writes fail
        and their records, which are in the log, are indexed (a stream
        read and the next expected version see them): nothing in the log
        is left out of the index.
        """
        from estwisted.cluster.controller import StorageFull
        from estwisted.core.errors import DiskFull
        from estwisted.core.model import NewEvent
        from estwisted.core.streams import SYSTEM_PRINCIPAL, StreamStore
        from estwisted.replication.node import NodeReplication

        clock = Clock()
        log = _FullLog()
        store = StreamStore(log, StreamIndex(), clock)
        events: list[Any] = []
        node: Any = None

        def report(event: Any) -> None:
            events.append(event)
            if isinstance(event, StorageFull):
                node.stand_by()  # what the role machine makes of it

        from estwisted.cluster.gossip import VNodeState
        from estwisted.cluster.leadership import Leadership, LeadershipView

        node = NodeReplication(
            store, log, clock, b"N" * 16, 3, lambda h, p, f: Deferred(), report=report,
            space_available=lambda: False,
            leadership=Leadership(LeadershipView(VNodeState.Master, takes_writes=True)),
        )
        self.addCleanup(node.stop)
        node.lead(1)

        def write(n: int) -> Deferred[Any]:
            return store.append(
                "s", -2, [NewEvent(bytes([n + 1]) * 16, "t", b"{}", b"", True)], SYSTEM_PRINCIPAL
            )

        first = write(0)
        clock.advance(0)  # flushed, waiting for the quorum
        self.assertNoResult(first)
        log.full = True
        second = write(1)
        clock.advance(0)
        self.failureResultOf(second, DiskFull)
        clock.advance(0)
        self.failureResultOf(first, NotReady)
        self.assertTrue(any(isinstance(e, StorageFull) for e in events))
        result = store.read_stream("s", 0, 10, True, False, SYSTEM_PRINCIPAL)
        ids = [r.event.event_id for r in result.events if r.event is not None]
        self.assertEqual(ids, [b"\x01" * 16])
        self.assertEqual(result.last_event_number, 0)

    def test_follower_reports_full_disk(self) -> None:
        """
        A replica that cannot flush replicated records for lack of space
        tells C{on_disk_full} (the node reports L{StorageFull}: it must not
        lead), drops what it appended and reconnects; once there is room
        it catches up.
        """
        from estwisted.core.errors import DiskFull

        cluster = _Cluster()
        assert cluster.leader is not None
        cluster.leader.start(0)
        log = _FullLog()
        replica = _Replica(cluster, b"A" * 16, log=log)
        full: list[DiskFull] = []
        replica.follower.on_disk_full = full.append
        replica.follower.start(b"L" * 16)
        cluster.pump()
        log.full = True
        end = cluster.write(5)
        cluster.pump()
        self.assertTrue(full)
        self.assertLess(log.end_position, end)
        log.full = False
        for _ in range(30):
            cluster.clock.advance(0.1)
            cluster.pump()
        self.assertEqual(log.end_position, end)

    def test_no_room_for_the_epoch(self) -> None:
        from estwisted.cluster.controller import StorageFull

        node, store, log, events, room, clock = self._node()
        log.full = True
        node.lead(1)
        clock.advance(0)
        self.assertFalse(node.leader.active)
        [event] = events
        self.assertIsInstance(event, StorageFull)
        self.assertEqual(node.epochs, [])


class CutLeaderTests(SynchronousTestCase):
    """
    A real L{ReplicationLeader} and two replicas over in-memory links, on
    a L{Clock}: cut off silently (nothing delivered any more, no FIN) the
    leader reports no quorum within the election timeout of the cut; a
    healthy idle cluster never does; a reactor busy for most of the
    timeout does not make it step down.
    """

    def _cluster(self, election_timeout: float = 1.0) -> tuple[_Cluster, list[float]]:
        from estwisted.replication.state import no_quorum_timing

        cluster = _Cluster()
        lost: list[float] = []
        cluster.leader = ReplicationLeader(
            cluster.log,
            cluster.clock,
            3,
            b"L" * 16,
            on_no_quorum=lambda: lost.append(cluster.clock.seconds()),
            no_quorum=no_quorum_timing(election_timeout),
        )
        cluster.leader.start(0)
        for name in (b"A" * 16, b"B" * 16):
            _Replica(cluster, name).follower.start(b"L" * 16)
        cluster.pump()
        return cluster, lost

    def _advance(self, cluster: _Cluster, seconds: float, pump: bool = True) -> None:
        for _ in range(round(seconds / 0.01)):
            cluster.clock.advance(0.01)
            if pump:
                cluster.pump()

    def test_healthy_idle_never_steps_down(self) -> None:
        cluster, lost = self._cluster()
        self._advance(cluster, 30.0)
        self.assertEqual(lost, [])

    def test_cut_steps_down_within_election_timeout(self) -> None:
        for timeout in (1.0, 0.5):
            cluster, lost = self._cluster(timeout)
            self._advance(cluster, 3.3)
            self.assertEqual(lost, [])
            cut = cluster.clock.seconds()
            self._advance(cluster, 3.0, pump=False)
            [at] = lost
            self.assertLessEqual(at - cut, timeout + 1e-6)
            self.assertGreater(at - cut, timeout / 2)

    def test_quorum_heard_and_lease_lapse_first(self) -> None:
        """
        While the replicas answer, the leader has heard a quorum within a
        heartbeat and its lease holds; cut off, the lease (0.4 s with the
        default timeouts) lapses before the leader steps down, and before a
        follower's probe (0.5 s) could time out and start an election.
        """
        from estwisted.cluster.leadership import LeaderLease, lease_duration

        cluster, lost = self._cluster()
        lease = LeaderLease(lease_duration(1.0, 0.5))
        leader = cluster.leader
        assert leader is not None

        def holds() -> bool:
            heard = leader.quorum_heard_at()
            if heard is not None:
                lease.renew(heard)
            return lease.holds(cluster.clock.seconds())

        for _ in range(300):
            self._advance(cluster, 0.01)
            self.assertTrue(holds())
        heard = leader.quorum_heard_at()
        assert heard is not None
        self.assertLessEqual(cluster.clock.seconds() - heard, 0.25)
        cut = cluster.clock.seconds()
        lapsed = None
        while lapsed is None and cluster.clock.seconds() - cut < 3:
            self._advance(cluster, 0.01, pump=False)
            if not holds():
                lapsed = cluster.clock.seconds()
        assert lapsed is not None
        self.assertLessEqual(lapsed - cut, 0.4 + 1e-6)
        self._advance(cluster, 2.0, pump=False)
        [stepped_down] = lost
        self.assertLess(lapsed, stepped_down)

    def test_busy_reactor_put_off(self) -> None:
        """
        After a stall of most of the timeout (timers run before the
        network is read), the check waits one tick for what arrived; a
        second late tick in a row checks.
        """
        cluster, lost = self._cluster()
        self._advance(cluster, 2.0)
        cluster.clock.advance(1.0)  # the reactor was busy: nothing read
        cluster.pump()
        self._advance(cluster, 5.0)
        self.assertEqual(lost, [])
        cluster.clock.advance(1.0)
        cluster.clock.advance(1.0)
        self.assertEqual(len(lost), 1)


class ReplicatedIdempotencyTests(SynchronousTestCase):
    def test_retry_on_new_leader(self) -> None:
        """
        A write replicated to a follower but never acknowledged, retried by
        the client on the follower once it leads (same event id, expected
        version Any), is not written twice.
        """
        from estwisted.core.model import NewEvent
        from estwisted.core.streams import SYSTEM_PRINCIPAL, StreamStore

        clock = Clock()
        leader_log = MemoryLog()
        leader = StreamStore(leader_log, StreamIndex(), clock)
        event = NewEvent(b"e" * 16, "t", b"{}", b"", True)
        leader.append("s", -2, [event], SYSTEM_PRINCIPAL)
        clock.advance(0)
        follower_log = MemoryLog()
        follower = StreamStore(follower_log, StreamIndex(), clock)
        start, frames, _ = leader_log.read_raw(follower_log.end_position, 1 << 20)
        follower_log.append_raw(start, frames)
        follower_log.flush()
        follower.apply_replicated(follower_log.read_forward(start, 10))
        end = follower_log.end_position
        result = self.successResultOf_(follower.append("s", -2, [event], SYSTEM_PRINCIPAL), clock)
        self.assertEqual((result.first_event_number, result.last_event_number), (0, 0))
        self.assertEqual(follower_log.end_position, end)

    def test_window_rebuilt_on_restart_and_truncation(self) -> None:
        """
        The idempotency window comes back from the log: after a restart
        (a new store over the same log) and after a truncation of a later
        tail, a retry of an earlier write with expected version Any is
        recognised and writes nothing.
        """
        from estwisted.core.model import NewEvent
        from estwisted.core.streams import SYSTEM_PRINCIPAL, StreamStore
        from estwisted.core.test.test_streams import rebuild_index

        clock = Clock()
        log = MemoryLog()
        store = StreamStore(log, StreamIndex(), clock)
        kept = NewEvent(b"k" * 16, "t", b"{}", b"", True)
        self.successResultOf_(store.append("s", -2, [kept], SYSTEM_PRINCIPAL), clock)
        cut = log.end_position
        self.successResultOf_(
            store.append("s", -2, [NewEvent(b"x" * 16, "t", b"{}", b"", True)], SYSTEM_PRINCIPAL),
            clock,
        )
        restarted = StreamStore(log, rebuild_index(log), clock)
        end = log.end_position
        result = self.successResultOf_(restarted.append("s", -2, [kept], SYSTEM_PRINCIPAL), clock)
        self.assertEqual((result.first_event_number, result.position), (0, -1))
        self.assertEqual(log.end_position, end)
        log.truncate(cut)
        restarted.truncated(cut)
        result = self.successResultOf_(restarted.append("s", -2, [kept], SYSTEM_PRINCIPAL), clock)
        self.assertEqual((result.first_event_number, result.position), (0, -1))
        self.assertEqual(log.end_position, cut)

    def successResultOf_(self, d: Deferred[Any], clock: Clock) -> Any:
        clock.advance(0)
        return self.successResultOf(d)


def following_view() -> Any:
    """
    The leadership view of a Slave of the leader at 127.0.0.9.
    """
    from estwisted.cluster.gossip import Endpoint, VNodeState
    from estwisted.cluster.leadership import LeadershipView

    return LeadershipView(
        VNodeState.Slave,
        leader_external_tcp=Endpoint("127.0.0.9", 1113),
        leader_external_http=Endpoint("127.0.0.9", 2113),
    )


class RequireMasterReadTests(SynchronousTestCase):
    """
    On a follower, reads with C{require_master} get C{NotHandled}
    (NotMaster with the leader, NotReady without one); others are served.
    """

    def _read(self, store: Any, require_master: bool, leadership: Any = None) -> Any:
        from twisted.internet.testing import StringTransport

        from estwisted.tcp.server import TcpClientFactory
        from estwisted.wire import messages_pb2 as pb
        from estwisted.wire.tcpcodec import decode_package, encode_package

        factory = TcpClientFactory(
            store, None, None, Clock(), leadership=leadership  # type: ignore[arg-type]
        )
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        message = pb.ReadStreamEvents(
            event_stream_id="s",
            from_event_number=0,
            max_count=10,
            resolve_link_tos=False,
            require_master=require_master,
        )
        protocol.dataReceived(frame(encode_package(0xB2, b"r" * 16, message.SerializeToString())))
        return decode_package(transport.value()[4:])

    def test_reads(self) -> None:
        """
        The leadership view decides: a leader (or a single node) serves, a
        follower names the leader, a node without one is not ready.
        """
        from estwisted.cluster.gossip import VNodeState
        from estwisted.cluster.leadership import STANDALONE, Leadership, LeadershipView
        from estwisted.core.streams import StreamStore
        from estwisted.wire import messages_pb2 as pb

        store = StreamStore(MemoryLog(), StreamIndex(), Clock())
        self.assertEqual(self._read(store, True).command, 0xB3)
        leadership = Leadership(STANDALONE)
        self.assertEqual(self._read(store, True, leadership).command, 0xB3)
        leadership.publish(following_view())
        answer = self._read(store, True, leadership)
        self.assertEqual(answer.command, 0xF1)
        self.assertEqual(pb.NotHandled.FromString(answer.data).reason, pb.NotHandled.NotMaster)
        self.assertEqual(self._read(store, False, leadership).command, 0xB3)
        leadership.publish(LeadershipView(VNodeState.Unknown))
        answer = self._read(store, True, leadership)
        self.assertEqual(pb.NotHandled.FromString(answer.data).reason, pb.NotHandled.NotReady)


class PersistentOnFollowerTests(RequireMasterReadTests):
    def test_connect_persistent(self) -> None:
        from twisted.internet.testing import StringTransport

        from estwisted.cluster.leadership import Leadership
        from estwisted.core.streams import StreamStore
        from estwisted.tcp.server import TcpClientFactory
        from estwisted.wire import messages_pb2 as pb
        from estwisted.wire.tcpcodec import decode_package, encode_package

        store = StreamStore(MemoryLog(), StreamIndex(), Clock())
        factory = TcpClientFactory(
            store, None, None, Clock(), leadership=Leadership(following_view())  # type: ignore[arg-type]
        )
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        message = pb.ConnectToPersistentSubscription(
            subscription_id="g", event_stream_id="s", allowed_in_flight_messages=10
        )
        protocol.dataReceived(frame(encode_package(0xC5, b"p" * 16, message.SerializeToString())))
        answer = decode_package(transport.value()[4:])
        self.assertEqual(answer.command, 0xF1)
        self.assertEqual(pb.NotHandled.FromString(answer.data).reason, pb.NotHandled.NotMaster)


class PersistentReloadTests(SynchronousTestCase):
    def test_group_created_on_the_leader_known_after_reload(self) -> None:
        """
        A group created on the leader reaches a follower as events; once
        the follower leads, L{PersistentSubscriptions.reload} finds it.
        """
        from estwisted.core.streams import SYSTEM_PRINCIPAL, StreamStore
        from estwisted.subscriptions.persistent import PersistentSettings, PersistentSubscriptions

        clock = Clock()
        leader_log = MemoryLog()
        leader = StreamStore(leader_log, StreamIndex(), clock)
        leader_groups = PersistentSubscriptions(leader, clock)
        leader_groups.start()
        d = leader_groups.create("s", "g", PersistentSettings(), SYSTEM_PRINCIPAL)
        clock.advance(0)
        self.successResultOf(d)
        follower_log = MemoryLog()
        follower_log.truncate(0)
        follower = StreamStore(follower_log, StreamIndex(), clock)
        follower_groups = PersistentSubscriptions(follower, clock)
        follower_groups.start()
        start, frames, _ = leader_log.read_raw(0, 1 << 20)
        follower_log.append_raw(start, frames)
        follower_log.flush()
        follower.apply_replicated(follower_log.read_forward(0, 1000))
        self.assertEqual(follower_groups.list_groups(), [])
        follower_groups.reload()
        self.assertEqual([(g.stream, g.group) for g in follower_groups.list_groups()], [("s", "g")])
