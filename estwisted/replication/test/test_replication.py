# -*- test-case-name: estwisted.replication.test.test_replication -*-
"""
Tests for L{estwisted.replication.state}: the pure replication decisions.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import FLAG_SYSTEM, EventRecord
from estwisted.replication.state import (
    LAST_EPOCHS,
    NO_QUORUM_TIMEOUT,
    Assign,
    CommitWaiters,
    Continue,
    Epoch,
    Fatal,
    FollowerState,
    LeaderState,
    NoQuorum,
    ReplicaRole,
    StartAt,
    Truncate,
    decide_start,
    epoch_record_fields,
    newest_epochs,
    parse_epoch,
)


def _id(n: int) -> bytes:
    return n.to_bytes(16, "big")


class EpochRecordTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        fields = epoch_record_fields(7, _id(9), 1234)
        self.assertEqual(fields["flags"], FLAG_SYSTEM)
        record = EventRecord(
            500,
            600,
            fields["stream"],
            fields["event_number"],
            fields["event_id"],
            fields["event_type"],
            fields["flags"],
            fields["data"],
            fields["metadata"],
            fields["created"],
        )
        self.assertEqual(parse_epoch(record), Epoch(500, 7, _id(9)))

    def test_not_an_epoch(self) -> None:
        first = EventRecord(0, 64, "", -1, bytes(16), "$epoch", FLAG_SYSTEM, b"", b"", 0)
        self.assertIsNone(parse_epoch(first))
        client = EventRecord(64, 128, "s", 0, bytes(16), "$epoch", 0, b"x" * 28, b"", 0)
        self.assertIsNone(parse_epoch(client))

    def test_bad_id(self) -> None:
        self.assertRaises(ValueError, epoch_record_fields, 1, b"short", -1)

    def test_newest_epochs(self) -> None:
        epochs = [Epoch(p, p, _id(p)) for p in range(30)]
        newest = newest_epochs(epochs)
        self.assertEqual(len(newest), LAST_EPOCHS)
        self.assertEqual(newest[0].position, 29)
        self.assertEqual(newest[-1].position, 10)


class DecideStartTests(SynchronousTestCase):
    e0 = Epoch(10, 0, _id(1))
    e1 = Epoch(100, 1, _id(2))
    e2 = Epoch(200, 2, _id(3))

    def test_no_epochs(self) -> None:
        self.assertEqual(decide_start([self.e0], 300, 0, []), StartAt(0))
        self.assertEqual(decide_start([self.e0], 300, 64, []), StartAt(0))

    def test_same_last_epoch(self) -> None:
        self.assertEqual(
            decide_start([self.e0, self.e1], 300, 150, [self.e1, self.e0]), StartAt(150)
        )

    def test_replica_ahead_in_last_epoch_is_capped(self) -> None:
        self.assertEqual(decide_start([self.e0, self.e1], 300, 400, [self.e1]), StartAt(300))

    def test_divergent_tail(self) -> None:
        # the replica led epoch 1' (unknown to the leader) from 150
        theirs = Epoch(150, 2, _id(99))
        self.assertEqual(
            decide_start([self.e0, self.e1, self.e2], 500, 180, [theirs, self.e1, self.e0]),
            StartAt(150),
        )

    def test_old_epoch_capped_by_next(self) -> None:
        self.assertEqual(
            decide_start([self.e0, self.e1, self.e2], 500, 260, [self.e1, self.e0]), StartAt(200)
        )

    def test_nothing_in_common(self) -> None:
        self.assertEqual(decide_start([self.e0], 500, 260, [Epoch(10, 0, _id(7))]), StartAt(0))


class LeaderStateTests(SynchronousTestCase):
    def test_single_node_commits_on_flush(self) -> None:
        state = LeaderState.create(1, 0)
        self.assertEqual(state.quorum, 1)
        self.assertEqual(state.flushed(100), 100)
        self.assertEqual(state.committed, 100)

    def test_three_nodes_need_one_ack(self) -> None:
        state = LeaderState.create(3, 100, committed=100)
        self.assertEqual(state.quorum, 2)
        state.subscribe(b"a", b"A", 100)
        state.subscribe(b"b", b"B", 100)
        self.assertIsNone(state.flushed(300))
        self.assertEqual(state.committed, 100)
        self.assertEqual(state.acked(b"a", 200), 200)
        self.assertIsNone(state.acked(b"b", 150))
        self.assertEqual(state.acked(b"b", 400), 300)

    def test_commit_count_raises_quorum(self) -> None:
        state = LeaderState.create(3, 0, commit_count=3)
        self.assertEqual(state.quorum, 3)
        state.subscribe(b"a", b"A", 0)
        state.subscribe(b"b", b"B", 0)
        state.flushed(100)
        self.assertIsNone(state.acked(b"a", 100))
        self.assertEqual(state.acked(b"b", 100), 100)

    def test_read_only_acks_do_not_count(self) -> None:
        state = LeaderState.create(3, 0)
        effects = state.subscribe(b"r", b"R", 0, promotable=False)
        self.assertIn(Assign(b"r", ReplicaRole.ReadOnly), effects)
        state.flushed(100)
        self.assertIsNone(state.acked(b"r", 100))
        self.assertEqual(state.committed, 0)

    def test_nothing_commits_before_own_epoch(self) -> None:
        state = LeaderState.create(3, 50, epoch_end=120)
        state.subscribe(b"a", b"A", 50)
        state.flushed(200)
        self.assertIsNone(state.acked(b"a", 100))
        self.assertEqual(state.acked(b"a", 130), 130)

    def test_resubscribe_replaces(self) -> None:
        state = LeaderState.create(3, 0)
        state.subscribe(b"a", b"A", 0)
        state.subscribe(b"a2", b"A", 0)
        self.assertEqual(list(state.replicas), [b"a2"])

    def test_roles(self) -> None:
        state = LeaderState.create(3, 5000)
        effects = state.subscribe(b"a", b"A", 5000)
        self.assertEqual(
            effects, [Assign(b"a", ReplicaRole.Clone), Assign(b"a", ReplicaRole.Follower)]
        )
        state.subscribe(b"b", b"B", 0)
        self.assertEqual(state.replicas[b"b"].role, ReplicaRole.CatchingUp)
        state.sent(b"b", 4500)
        effects = state.assign_roles()
        self.assertEqual(
            effects, [Assign(b"b", ReplicaRole.Clone), Assign(b"b", ReplicaRole.Follower)]
        )
        state.subscribe(b"c", b"C", 5000)
        self.assertEqual(state.replicas[b"c"].role, ReplicaRole.Clone)

    def test_lagging_follower_swapped(self) -> None:
        state = LeaderState.create(2, 0)
        state.subscribe(b"a", b"A", 0)
        self.assertEqual(state.replicas[b"a"].role, ReplicaRole.Follower)
        state.flushed(1_000_000)
        state.subscribe(b"b", b"B", 1_000_000)
        self.assertEqual(state.replicas[b"b"].role, ReplicaRole.Clone)
        # ranked below the desired count at the subscription and now: lagged
        self.assertEqual(state.replicas[b"a"].lag_count, 1)
        effects = state.assign_roles()
        self.assertEqual(
            effects, [Assign(b"a", ReplicaRole.Clone), Assign(b"b", ReplicaRole.Follower)]
        )

    def test_no_quorum(self) -> None:
        state = LeaderState.create(3, 0)
        self.assertEqual(state.check_quorum(0.0), [])
        self.assertEqual(state.check_quorum(NO_QUORUM_TIMEOUT), [])
        self.assertEqual(state.check_quorum(NO_QUORUM_TIMEOUT + 0.1), [NoQuorum()])
        self.assertEqual(state.check_quorum(NO_QUORUM_TIMEOUT + 0.2), [])
        state.subscribe(b"a", b"A", 0)
        self.assertEqual(state.check_quorum(10.0), [])
        state.unsubscribe(b"a")
        self.assertEqual(state.check_quorum(11.0), [])
        self.assertEqual(state.check_quorum(11.0 + NO_QUORUM_TIMEOUT + 0.1), [NoQuorum()])

    def test_no_quorum_when_replicas_go_silent(self) -> None:
        """
        A leader whose replicas stay subscribed but go silent (a partition
        that drops packets, no FIN) reports no quorum once it has heard no
        quorum for L{NO_QUORUM_TIMEOUT}, counted from the last moment it
        heard one; hearing them again re-arms the detector.
        """
        state = LeaderState.create(3, 0)
        state.subscribe(b"a", b"A", 0)
        state.subscribe(b"b", b"B", 0)
        state.heard(b"a", 1.0)
        state.heard(b"b", 2.0)
        self.assertEqual(state.check_quorum(2.5), [])
        # the quorum (one replica of three) was last complete at 2.0
        self.assertEqual(state.check_quorum(2.0 + NO_QUORUM_TIMEOUT), [])
        self.assertEqual(state.check_quorum(2.1 + NO_QUORUM_TIMEOUT), [NoQuorum()])
        self.assertEqual(state.check_quorum(2.2 + NO_QUORUM_TIMEOUT), [])
        state.heard(b"a", 9.0)
        self.assertEqual(state.check_quorum(9.5), [])
        self.assertEqual(state.check_quorum(9.1 + NO_QUORUM_TIMEOUT), [NoQuorum()])

    def test_no_quorum_counts_from_the_last_contact(self) -> None:
        """
        A replica that was silent before its link closed does not buy the
        leader a fresh L{NO_QUORUM_TIMEOUT} when it is dropped.
        """
        state = LeaderState.create(3, 0)
        state.subscribe(b"a", b"A", 0)
        state.heard(b"a", 5.0)
        self.assertEqual(state.check_quorum(5.0), [])
        state.unsubscribe(b"a")  # the heartbeat timeout closed it at 6.4
        self.assertEqual(state.check_quorum(6.4), [])
        self.assertEqual(state.check_quorum(5.1 + NO_QUORUM_TIMEOUT), [NoQuorum()])

    def test_no_quorum_timing(self) -> None:
        """
        The timing for an election timeout: the leader reports no quorum
        at most C{timeout + tick} (one tick less than the election timeout)
        after it last heard a quorum, and its links heartbeat often enough that a healthy
        idle replica (heard at least every 1.5 heartbeat intervals plus a
        round trip) leaves more than half the timeout as margin.
        """
        from estwisted.replication.state import no_quorum_timing

        for election in (0.5, 1.0, 2.0, 0.05):
            t = no_quorum_timing(election)
            self.assertAlmostEqual(t.timeout + 2 * t.tick, election)
            self.assertLessEqual(t.tick, 0.1)
            self.assertLess(1.5 * t.heartbeat_interval, t.timeout / 2)
        t = no_quorum_timing(1.0)
        self.assertEqual((t.timeout, t.tick, t.heartbeat_interval), (0.8, 0.1, 0.2))

    def test_no_quorum_custom_timeout(self) -> None:
        """
        C{no_quorum_timeout} replaces L{NO_QUORUM_TIMEOUT}; the effect
        carries how long no quorum was heard (not compared).
        """
        state = LeaderState.create(3, 0, no_quorum_timeout=0.9)
        state.subscribe(b"a", b"A", 0)
        state.heard(b"a", 10.0)
        self.assertEqual(state.check_quorum(10.85), [])
        [effect] = state.check_quorum(10.95)
        self.assertEqual(effect, NoQuorum())
        self.assertAlmostEqual(effect.silent, 0.95)

    def test_no_quorum_start_grace(self) -> None:
        """
        A leader that never had a quorum (replicas still subscribing) waits
        C{start_grace}; once it had one, the short timeout applies.
        """
        state = LeaderState.create(3, 0, no_quorum_timeout=0.8)
        self.assertEqual(state.check_quorum(100.0), [])
        self.assertEqual(state.check_quorum(100.0 + NO_QUORUM_TIMEOUT), [])
        self.assertEqual(state.check_quorum(100.1 + NO_QUORUM_TIMEOUT), [NoQuorum()])
        state = LeaderState.create(3, 0, no_quorum_timeout=0.8)
        self.assertEqual(state.check_quorum(100.0), [])
        state.subscribe(b"a", b"A", 0)
        state.heard(b"a", 101.0)
        self.assertEqual(state.check_quorum(101.0), [])
        state.unsubscribe(b"a")
        self.assertEqual(state.check_quorum(101.8), [])
        self.assertEqual(state.check_quorum(101.85), [NoQuorum()])

    def test_send_window(self) -> None:
        state = LeaderState.create(3, 0)
        state.subscribe(b"a", b"A", 0)
        self.assertTrue(state.can_send(b"a"))
        state.sent(b"a", 17 * 1024 * 1024)
        self.assertFalse(state.can_send(b"a"))
        state.acked(b"a", 16 * 1024 * 1024)
        self.assertTrue(state.can_send(b"a"))
        self.assertFalse(state.can_send(b"zz"))

    @given(
        st.integers(1, 7),
        st.lists(
            st.tuples(
                st.sampled_from(["flush", "ack", "join", "leave"]),
                st.integers(0, 6),
                st.integers(0, 1000),
            ),
            max_size=60,
        ),
    )
    def test_commit_never_decreases_nor_exceeds_quorum(self, size: int, ops: list) -> None:  # type: ignore[type-arg]
        """
        Random flushes, acks, joins and leaves: the commit position never
        decreases, and when it moves, C{quorum} nodes (the leader counted)
        had acknowledged it.
        """
        state = LeaderState.create(size, 0)
        end = 0
        acked: dict[bytes, int] = {}
        last = 0
        for op, who, amount in ops:
            sid = bytes([who])
            if op == "flush":
                end += amount
                moved = state.flushed(end)
            elif op == "join":
                start = min(end, amount)
                state.subscribe(sid, sid, start, promotable=who != 6)
                acked = {k: v for k, v in acked.items() if k in state.replicas}
                acked[sid] = start
                moved = None
            elif op == "leave":
                state.unsubscribe(sid)
                acked.pop(sid, None)
                moved = None
            else:
                if sid not in state.replicas:
                    continue
                pos = min(end, acked[sid] + amount)
                acked[sid] = max(acked[sid], pos)
                moved = state.acked(sid, pos)
            self.assertGreaterEqual(state.committed, last)
            if moved is not None:
                holders = 1 + sum(1 for k, v in acked.items() if v >= moved and k != bytes([6]))
                self.assertGreaterEqual(holders, state.quorum)
                self.assertLessEqual(moved, end)
            last = state.committed


class CommitWaitersTests(SynchronousTestCase):
    def test_release_in_order(self) -> None:
        waiters: CommitWaiters[str] = CommitWaiters()
        waiters.add(300, "c")
        waiters.add(100, "a")
        waiters.add(200, "b")
        waiters.add(200, "b2")
        self.assertEqual(waiters.release(99), [])
        self.assertEqual(waiters.release(200), ["a", "b", "b2"])
        self.assertEqual(len(waiters), 1)
        self.assertEqual(waiters.fail_all(), ["c"])
        self.assertEqual(len(waiters), 0)

    @given(st.lists(st.integers(0, 100)), st.lists(st.integers(0, 100)))
    def test_every_token_once(self, positions: list[int], commits: list[int]) -> None:
        waiters: CommitWaiters[int] = CommitWaiters()
        for i, p in enumerate(positions):
            waiters.add(p, i)
        seen: list[int] = []
        committed = 0
        for c in commits:
            committed = max(committed, c)
            for token in waiters.release(committed):
                self.assertLessEqual(positions[token], committed)
                seen.append(token)
        seen += waiters.fail_all()
        self.assertEqual(sorted(seen), list(range(len(positions))))


class FollowerStateTests(SynchronousTestCase):
    def test_continue(self) -> None:
        f = FollowerState(end=100)
        self.assertEqual(f.subscribed(b"s", 100), Continue())
        self.assertTrue(f.accepts(b"s", 100))
        self.assertFalse(f.accepts(b"t", 100))
        self.assertFalse(f.accepts(b"s", 90))
        self.assertTrue(f.accepts(b"s", 8192))
        self.assertEqual(f.written(150), 150)
        self.assertIsNone(f.written(150))
        self.assertTrue(f.accepts(b"s", 150))

    def test_truncate(self) -> None:
        self.assertEqual(FollowerState(end=100).subscribed(b"s", 60), Truncate(60))

    def test_fatal(self) -> None:
        self.assertIsInstance(FollowerState(end=100).subscribed(b"s", 160), Fatal)


# --- A whole-cluster simulation of logs, elections, truncation and commit ----------------


@define
class _Node:
    log: list[tuple[str, int, int]] = field(factory=list)  # (kind, epoch number, uid)

    def epochs(self) -> list[Epoch]:
        return [Epoch(p, n, _id(u)) for p, (k, n, u) in enumerate(self.log) if k == "E"]

    def last_epoch(self) -> int:
        es = self.epochs()
        return es[-1].number if es else -1


def _common_prefix(a: list[tuple[str, int, int]], b: list[tuple[str, int, int]]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


_step = st.one_of(
    st.tuples(st.just("elect"), st.sets(st.integers(0, 4), min_size=1)),
    st.tuples(st.just("write"), st.integers(1, 4)),
    st.tuples(st.just("replicate"), st.integers(0, 4), st.integers(0, 6)),
)


class ClusterSimulationTests(SynchronousTestCase):
    """
    Positions are record indices.  Leaders are elected by a majority and are
    the most up-to-date member of it (last epoch number, then length), write
    an epoch record, then records; replicas subscribe (L{decide_start}),
    truncate, copy a prefix of the leader's log and acknowledge
    (L{LeaderState}).
    """

    @given(st.sampled_from([3, 5]), st.lists(_step, max_size=40))
    @example(
        # Raft's "figure 8": A's old record reaches C through A's later term
        # without A's new epoch record; it must not count as committed.
        3,
        [
            ("elect", {0, 2}),
            ("write", 1),
            ("elect", {1, 2}),
            ("write", 1),
            ("elect", {0, 2}),
            ("replicate", 2, 2),
            ("elect", {1, 2}),
            ("replicate", 2, 5),
        ],
    )
    def test_committed_records_survive(self, size: int, steps: list) -> None:  # type: ignore[type-arg]
        nodes = [_Node() for _ in range(size)]
        uid = 100
        leader = -1
        state = LeaderState.create(size, 0)
        committed: set[tuple[int, tuple[str, int, int]]] = set()
        epoch_number = -1
        for step in steps:
            note(repr(step))
            if step[0] == "elect":
                voters = {v % size for v in step[1]}
                if len(voters) < size // 2 + 1:
                    continue
                leader = max(voters, key=lambda v: (nodes[v].last_epoch(), len(nodes[v].log)))
                epoch_number += 1
                uid += 1
                log = nodes[leader].log
                log.append(("E", epoch_number, uid))
                state = LeaderState.create(size, len(log), epoch_end=len(log))
                # the leader holds every committed record
                for pos, rec in committed:
                    self.assertEqual(log[pos], rec)
            elif leader < 0:
                continue
            elif step[0] == "write":
                log = nodes[leader].log
                for _ in range(step[1]):
                    uid += 1
                    log.append(("R", epoch_number, uid))
                state.flushed(len(log))
            else:
                j = step[1] % size
                if j == leader:
                    continue
                lead, node = nodes[leader], nodes[j]
                replica_epochs = newest_epochs(node.epochs())
                answer = decide_start(lead.epochs(), len(lead.log), len(node.log), replica_epochs)
                assert isinstance(answer, StartAt)
                start = answer.position
                common = _common_prefix(lead.log, node.log)
                self.assertLessEqual(start, common)
                if len(node.epochs()) <= LAST_EPOCHS:
                    self.assertEqual(start, common)
                for pos in range(start, len(node.log)):
                    self.assertNotIn((pos, node.log[pos]), committed, "truncated a commit")
                del node.log[start:]
                node.log.extend(lead.log[start : start + step[2]])
                sid = bytes([j])
                state.subscribe(sid, sid, start)
                before = state.committed
                state.acked(sid, len(node.log))
                self.assertGreaterEqual(state.committed, before)
                for pos in range(state.committed):
                    committed.add((pos, lead.log[pos]))
                holders = sum(
                    1 for n in nodes if n.log[: state.committed] == lead.log[: state.committed]
                )
                self.assertGreaterEqual(holders, size // 2 + 1)


# --- The raw log hooks (IReplicableLog) on both logs -------------------------------------


def _new_event(i: int, size: int) -> dict[str, object]:
    return dict(
        stream=f"stream-{i % 3}",
        event_number=i // 3,
        event_id=i.to_bytes(16, "big"),
        event_type="type",
        flags=0,
        data=bytes([i % 256]) * size,
        metadata=b"",
        created=637000000000000000 + i,
    )


def _copy(source: object, target: object, batch: int) -> int:
    """
    Copy everything from C{source} to C{target} with L{read_raw} batches of
    about C{batch} bytes; return the number of batches.
    """
    count = 0
    while True:
        start, frames, _ = source.read_raw(target.pending_position, batch)  # type: ignore[attr-defined]
        if not frames:
            return count
        target.append_raw(start, frames)  # type: ignore[attr-defined]
        target.flush()  # type: ignore[attr-defined]
        count += 1


class RawLogTestsMixin:
    """
    Subclasses define C{make_log} (an empty, new log) and C{reopen}.
    """

    def make_log(self) -> object:
        raise NotImplementedError

    def reopen(self, log: object) -> object:
        raise NotImplementedError

    def test_interface(self: object) -> None:
        from zope.interface.verify import verifyObject

        from estwisted.core.interfaces import IReplicableLog

        self.assertTrue(verifyObject(IReplicableLog, self.make_log()))  # type: ignore[attr-defined]

    @settings(max_examples=30, suppress_health_check=[HealthCheck.differing_executors])
    @given(st.lists(st.integers(0, 3000), max_size=30), st.integers(1, 9000))
    def test_copy_is_identical(self: object, sizes: list[int], batch: int) -> None:
        """
        A log copied with read_raw/append_raw has the same records at the
        same positions and the same bytes, across chunk rollovers.
        """
        t: object = self
        leader = t.make_log()  # type: ignore[attr-defined]
        follower = t.make_log()  # type: ignore[attr-defined]
        follower.truncate(0)
        self_ = t
        for i, size in enumerate(sizes):
            leader.append(**_new_event(i, size))
        leader.flush()
        _copy(leader, follower, batch)
        self_.assertEqual(follower.end_position, leader.end_position)  # type: ignore[attr-defined]
        self_.assertEqual(  # type: ignore[attr-defined]
            follower.read_forward(0, 1000), leader.read_forward(0, 1000)
        )
        p = 0
        while p < leader.end_position:
            s1, f1, n1 = leader.read_raw(p, 1 << 30)
            s2, f2, n2 = follower.read_raw(p, 1 << 30)
            self_.assertEqual((s1, f1, n1), (s2, f2, n2))  # type: ignore[attr-defined]
            self_.assertGreater(n1, p)  # type: ignore[attr-defined]
            p = n1

    def test_read_raw_at_end(self: object) -> None:
        log = self.make_log()  # type: ignore[attr-defined]
        end = log.end_position
        t: Any = self
        t.assertEqual(log.read_raw(end, 100), (end, b"", end))

    def test_read_raw_one_record_at_least(self: object) -> None:
        log = self.make_log()  # type: ignore[attr-defined]
        position = log.append(**_new_event(1, 500))
        log.append(**_new_event(2, 500))
        log.flush()
        start, frames, after = log.read_raw(position, 1)
        self.assertEqual(start, position)  # type: ignore[attr-defined]
        self.assertEqual(after, log.read(position).next_position)  # type: ignore[attr-defined]
        from estwisted.storage.records import decode, frame_at

        record = decode(frames, 0, len(frames), position)
        stored = log.read(position)
        self.assertEqual(  # type: ignore[attr-defined]
            (record.position, record.event_id, record.data),
            (position, stored.event_id, stored.data),
        )
        self.assertEqual(frame_at(frames, 0, len(frames), position), len(frames))  # type: ignore[attr-defined]

    def test_damaged_frame_refused(self: object) -> None:
        from estwisted.core.errors import CorruptRecord

        leader = self.make_log()  # type: ignore[attr-defined]
        follower = self.make_log()  # type: ignore[attr-defined]
        position = leader.append(**_new_event(1, 100))
        leader.flush()
        start, frames, _ = leader.read_raw(position, 1000)
        self.assertEqual(follower.pending_position, start)  # type: ignore[attr-defined]
        damaged = bytearray(frames)
        damaged[70] ^= 0xFF
        before = follower.pending_position
        self.assertRaises(CorruptRecord, follower.append_raw, start, bytes(damaged))  # type: ignore[attr-defined]
        self.assertRaises(CorruptRecord, follower.append_raw, start, frames[:-1])  # type: ignore[attr-defined]
        self.assertRaises(CorruptRecord, follower.append_raw, start + 1, frames)  # type: ignore[attr-defined]
        self.assertEqual(follower.pending_position, before)  # type: ignore[attr-defined]
        follower.append_raw(start, frames)
        follower.flush()
        self.assertEqual(follower.read(start), leader.read(start))  # type: ignore[attr-defined]

    def test_truncate(self: object) -> None:
        log = self.make_log()  # type: ignore[attr-defined]
        positions = [log.append(**_new_event(i, 900)) for i in range(30)]
        log.flush()
        cut = positions[17]
        log.append(**_new_event(99, 10))
        log.truncate(cut)
        self.assertEqual(log.end_position, cut)  # type: ignore[attr-defined]
        self.assertEqual(log.pending_position, cut)  # type: ignore[attr-defined]
        self.assertEqual(len(log.read_forward(0, 100)), 17)  # type: ignore[attr-defined]
        again = self.reopen(log)  # type: ignore[attr-defined]
        if again is not None:
            log = again
            self.assertEqual(log.end_position, cut)  # type: ignore[attr-defined]
        p = log.append(**_new_event(50, 10))
        log.flush()
        self.assertEqual(p, cut)  # type: ignore[attr-defined]
        records = log.read_forward(0, 100)
        self.assertEqual(len(records), 18)  # type: ignore[attr-defined]
        self.assertEqual(records[-1].event_id, (50).to_bytes(16, "big"))  # type: ignore[attr-defined]


class MemoryRawLogTests(RawLogTestsMixin, SynchronousTestCase):
    def make_log(self) -> object:
        from estwisted.storage.memory import MemoryLog

        return MemoryLog()

    def reopen(self, log: object) -> object:
        return None


class ChunkedRawLogTests(RawLogTestsMixin, SynchronousTestCase):
    def make_log(self) -> object:
        import shutil
        import tempfile

        from estwisted.storage.log import ChunkedLog

        path = tempfile.mkdtemp(prefix="estw-repl-")
        self.addCleanup(shutil.rmtree, path, True)
        log = ChunkedLog(path, chunk_size=8192)
        self.addCleanup(log.close)
        return log

    def reopen(self, log: object) -> object:
        from estwisted.storage.log import ChunkedLog

        log.close()  # type: ignore[attr-defined]
        again = ChunkedLog(log.path, chunk_size=8192)  # type: ignore[attr-defined]
        self.addCleanup(again.close)
        return again
