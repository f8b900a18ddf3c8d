# -*- test-case-name: estwisted.cluster.test.test_faults -*-
"""
The cluster under the faults of issue 11 item 6, on the production node
machine (L{estwisted.cluster.controller.NodeMachine}) in the deterministic
simulator (L{estwisted.testing.cluster_sim}) and alone: a leader cut off
steps down within the election timeout; a node that neither leads nor
follows sends its clients to the leader gossip shows; a leader whose disk
is full hands leadership over and is not elected until the disk has room.
"""

from __future__ import annotations

import random
import uuid
from typing import Optional

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.controller import (
    ClusterSettings,
    LogLine,
    NodeMachine,
    StorageFreed,
    StorageFull,
)
from estwisted.cluster.elections import (
    Broadcast,
    Candidate,
    ElectionMachine,
    GossipUpdated,
    PrepareOk,
    Proposal,
    SendTo,
    StartElections,
    ViewChange,
    best_candidate,
    decode_message,
    encode_message,
)
from estwisted.cluster.gossip import ClusterInfo, MemberInfo, VNodeState
from estwisted.core.errors import NotLeader, NotReady
from estwisted.testing.cluster_sim import EPOCH, ClusterSimulator, make_member

_REPLICA_STATES = (VNodeState.Slave, VNodeState.Clone, VNodeState.CatchingUp)


def _member(
    n: int,
    state: VNodeState = VNodeState.Unknown,
    *,
    epoch_number: int = 0,
    writer_checkpoint: int = 0,
    last_commit_position: Optional[int] = None,
) -> MemberInfo:
    m = make_member(
        n - 1,
        uuid.UUID(int=n),
        epoch_number=epoch_number,
        writer_checkpoint=writer_checkpoint,
        last_commit_position=last_commit_position,
    )
    return evolve(m, state=state, timestamp=EPOCH)


def _ok(m: MemberInfo, view: int, can_lead: bool = True) -> PrepareOk:
    return PrepareOk(
        m.instance_id,
        m.internal_http,
        view,
        m.epoch_number,
        m.epoch_position,
        m.epoch_id,
        m.last_commit_position,
        m.writer_checkpoint,
        m.chaser_checkpoint,
        m.node_priority,
        can_lead,
    )


def _stable(sim: ClusterSimulator, seconds: float = 5.0) -> tuple[NodeMachine, int]:
    sim.start()
    sim.run_for(seconds)
    leader = sim.stable_leader(range(len(sim.machines)))
    assert leader is not None
    return leader, sim.machines.index(leader)


class CutLeaderTests(SynchronousTestCase):
    """
    A leader cut off from both followers (messages silently dropped).
    """

    def test_steps_down_within_election_timeout(self) -> None:
        """
        It steps down within C{LeaderElectionTimeoutMs} of the cut (the
        simulator counts, as the real leader does, from the last tick that
        saw a quorum); while cut off it knows no leader and refuses writes
        with L{NotReady} (no leader named, nothing forwarded); once the
        cut heals and gossip shows the new leader it names that leader
        (TCP C{NotMaster}, HTTP forwarding) and then follows it.
        """
        for seed in (7, 17, 27):
            sim = ClusterSimulator.random_cluster(3, seed=seed)
            old, i = _stable(sim)
            rest = [j for j in range(3) if j != i]
            sim.partition([[i], rest])
            cut = sim.now
            stepped = None
            for _ in range(300):
                sim.run_for(0.01)
                if old.state is not VNodeState.Master:
                    stepped = sim.now - cut
                    break
            assert stepped is not None
            self.assertLessEqual(stepped, old.settings.election_timeout + 1e-6)
            self.assertGreater(stepped, old.settings.election_timeout / 2)
            view = old.leadership()
            refusal = view.refusal()
            self.assertIsInstance(refusal, NotReady)
            self.assertNotIsInstance(refusal, NotLeader)
            self.assertIsNone(view.forward_http())
            sim.run_for(5)
            new = sim.stable_leader(rest)
            assert new is not None
            sim.heal()
            named = None
            for _ in range(200):
                sim.run_for(0.05)
                refusal = old.leadership().refusal()
                if isinstance(refusal, NotLeader):
                    named = refusal
                    break
            assert named is not None
            ext_tcp, ext_http = new.own.external_tcp, new.own.external_http
            self.assertEqual(named.tcp, (ext_tcp.host, ext_tcp.port))
            self.assertEqual(named.http, (ext_http.host, ext_http.port))
            sim.run_for(10)
            final = sim.stable_leader(range(3))
            assert final is not None
            self.assertEqual(final.own.instance_id, new.own.instance_id)
            self.assertIn(old.state, _REPLICA_STATES)
            self.assertTrue(all(len(v) <= 1 for v in sim.leaders_by_view().values()))

    def test_unknown_names_leader_in_gossip(self) -> None:
        """
        A node in C{Unknown} (elections under way, say after it was
        deposed) whose gossip shows one alive Master with an epoch at least
        ours refuses writes naming it; two Masters, or one with an older
        epoch, name nobody.
        """
        own = _member(1, epoch_number=2)
        m = NodeMachine.create(
            own, [_member(2).internal_http], ClusterSettings(cluster_size=3), EPOCH,
            random.Random(0),
        )
        m.start(EPOCH)
        m.tick(EPOCH + 10)  # discovery over: elections, Unknown
        self.assertEqual(m.state, VNodeState.Unknown)
        self.assertNotIsInstance(m.leadership().refusal(), NotLeader)
        leader = evolve(_member(2, VNodeState.Master, epoch_number=3), timestamp=EPOCH + 10)
        m.on_gossip_response(leader.internal_http, ClusterInfo((leader,), leader.internal_http),
                             EPOCH + 10)
        self.assertEqual(m.state, VNodeState.Unknown)
        view = m.leadership()
        refusal = view.refusal()
        assert isinstance(refusal, NotLeader)
        self.assertEqual(refusal.tcp, ("127.0.0.2", 1113))
        self.assertEqual(view.forward_http(), ("127.0.0.2", 2113))
        self.assertFalse(view.takes_writes)
        stale = evolve(leader, epoch_number=1, timestamp=EPOCH + 11)
        m.on_gossip_response(stale.internal_http, ClusterInfo((stale,), stale.internal_http),
                             EPOCH + 11)
        self.assertIsNone(m.leader_in_gossip())


class FullDiskElectionTests(SynchronousTestCase):
    """
    The election machine of a node that cannot lead (full disk).
    """

    def test_prepare_ok_codec(self) -> None:
        """
        C{can_lead=False} goes on the wire as C{"cannotLead": true} and
        comes back; an ordinary PrepareOk has no such field (the v5 shape).
        """
        m = _member(1)
        route, body = encode_message(_ok(m, 3, False))
        self.assertIn(b'"cannotLead": true', body)
        self.assertEqual(decode_message(route, body), _ok(m, 3, False))
        route, body = encode_message(_ok(m, 3))
        self.assertNotIn(b"cannotLead", body)
        self.assertTrue(decode_message(route, body).can_lead)  # type: ignore[union-attr]

    def test_never_chosen(self) -> None:
        """
        The best candidate is the best of those that can lead, even if one
        that cannot has more data; none at all when none can.
        """
        rich, poor = _member(1, writer_checkpoint=9000), _member(2, writer_checkpoint=10)
        best = best_candidate([_ok(rich, 0, False), _ok(poor, 0)])
        assert best is not None
        self.assertEqual(best.instance_id, poor.instance_id)
        self.assertIsNone(best_candidate([_ok(rich, 0, False)]))

    def test_does_not_propose_or_accept_itself(self) -> None:
        """
        As view leader it proposes another node, never itself (it says it
        cannot lead in its own PrepareOk), and it rejects a proposal of
        itself; it accepts a candidate with its epoch and commit position
        even if that candidate lacks its uncommitted tail.
        """
        members = [
            _member(1, epoch_number=4, writer_checkpoint=5000, last_commit_position=4000),
            _member(2, epoch_number=4, writer_checkpoint=4500, last_commit_position=4000),
            _member(3, epoch_number=4, writer_checkpoint=4000, last_commit_position=3000),
        ]
        # servers sorted descending by address: 127.0.0.3, .2, .1; view 2 -> node 1
        m = ElectionMachine(own=members[0], cluster_size=3, can_lead=False)
        m.handle(GossipUpdated(tuple(members)), EPOCH)
        m.last_attempted_view = 1
        m.handle(StartElections(), EPOCH)
        self.assertEqual(m.last_attempted_view, 2)
        effects = m.handle(ViewChange(members[1].instance_id, members[1].internal_http, 2), EPOCH)
        self.assertEqual(m.last_installed_view, 2)
        effects = m.handle(_ok(members[1], 2), EPOCH)
        proposals = [
            e.message
            for e in effects
            if isinstance(e, (SendTo, Broadcast)) and isinstance(e.message, Proposal)
        ]
        self.assertEqual([p.leader_id for p in proposals], [members[1].instance_id])
        # an acceptor that cannot lead: never itself, relaxed data check
        acceptor = ElectionMachine(own=members[0], cluster_size=3, can_lead=False)
        acceptor.handle(GossipUpdated(tuple(members)), EPOCH)
        self.assertFalse(acceptor.is_legitimate(Candidate.from_member(members[0])))
        self.assertTrue(acceptor.is_legitimate(Candidate.from_member(members[1])))
        self.assertFalse(acceptor.is_legitimate(Candidate.from_member(members[2])))
        acceptor.can_lead = True
        self.assertFalse(acceptor.is_legitimate(Candidate.from_member(members[1])))


class FullDiskTests(SynchronousTestCase):
    """
    A node whose disk fills, in the simulator.
    """

    def test_leader_hands_over(self) -> None:
        """
        A leader whose disk fills steps down at once (one log line saying
        why), another node is elected and the full node follows it; it is
        never elected again while full; once the disk has room it may
        lead again (here: after the new leader crashes).
        """
        for seed in (8, 18, 28):
            sim = ClusterSimulator.random_cluster(3, seed=seed)
            old, i = _stable(sim)
            # it holds the most data: without the rule it would win again
            o = old.own
            old.update_positions(
                o.last_commit_position + 10**6, o.writer_checkpoint + 10**6, sim.now
            )
            sim.run_for(1)
            full_at = sim.now
            lines: list[str] = []
            effects = old.on_replication(StorageFull("no space left on device"), sim.now)
            lines += [e.text for e in effects if isinstance(e, LogLine)]
            sim.replication[i].disk_full = True
            sim._perform(i, effects)
            self.assertEqual(old.state, VNodeState.Unknown)
            self.assertTrue(any("resigning leadership" in line for line in lines), lines)
            sim.run_for(10)
            new = sim.stable_leader(range(3))
            assert new is not None
            self.assertNotEqual(new.own.instance_id, old.own.instance_id)
            self.assertIn(old.state, _REPLICA_STATES)
            self.assertEqual(old.leader_id, new.own.instance_id)
            after = [d for d in sim.decisions if d.time > full_at]
            self.assertTrue(after)
            self.assertNotIn(old.own.instance_id, {d.leader for d in after})
            # freed: it may lead again
            sim.disk_freed(i)
            self.assertTrue(old.can_lead)
            assert old.elections is not None
            self.assertTrue(old.elections.can_lead)
            j = sim.machines.index(new)
            sim.crash(j)
            sim.run_for(15)
            rest = [k for k in range(3) if k != j]
            third = sim.stable_leader(rest)
            assert third is not None
            self.assertTrue(all(len(v) <= 1 for v in sim.leaders_by_view().values()))

    def test_full_follower_never_elected(self) -> None:
        """
        A follower whose disk is full is not elected when the leader dies:
        the third node is, even when the full one has more data.
        """
        sim = ClusterSimulator.random_cluster(3, seed=9)
        leader, i = _stable(sim)
        full = next(j for j in range(3) if j != i)
        f = sim.machines[full].own
        sim.machines[full].update_positions(
            f.last_commit_position + 10**6, f.writer_checkpoint + 10**6, sim.now
        )
        sim.disk_full(full)
        self.assertFalse(sim.machines[full].can_lead)
        self.assertIn(sim.machines[full].state, _REPLICA_STATES)
        sim.crash(i)
        sim.run_for(15)
        rest = [j for j in range(3) if j != i]
        new = sim.stable_leader(rest)
        assert new is not None
        self.assertNotEqual(new.own.instance_id, sim.machines[full].own.instance_id)

    def test_freed_logged_once(self) -> None:
        """
        L{StorageFull} on a node that does not lead is logged once;
        L{StorageFreed} gives it back the right to lead, once.
        """
        sim = ClusterSimulator.random_cluster(3, seed=10)
        leader, i = _stable(sim)
        j = next(k for k in range(3) if k != i)
        m = sim.machines[j]
        first = m.on_replication(StorageFull("x"), sim.now)
        self.assertEqual(len([e for e in first if isinstance(e, LogLine)]), 1)
        self.assertEqual(m.on_replication(StorageFull("x"), sim.now), [])
        self.assertEqual(len(m.on_replication(StorageFreed(), sim.now)), 1)
        self.assertEqual(m.on_replication(StorageFreed(), sim.now), [])
        self.assertTrue(m.can_lead)
