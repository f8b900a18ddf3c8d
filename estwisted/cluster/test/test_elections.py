# -*- test-case-name: estwisted.cluster.test.test_elections -*-
"""
Tests for L{estwisted.cluster.elections} (the election state machine and its JSON)
and for the cluster simulator in L{estwisted.testing.cluster_sim} that
drives it with faults.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.elections import (
    Accept,
    BecomeLeader,
    Broadcast,
    Candidate,
    ChaserCaughtUp,
    CloneAssigned,
    ConfirmAlive,
    Effect,
    ElectionMachine,
    ElectionState,
    ElectionsTimedOut,
    GossipChanged,
    GossipUpdated,
    LeaderElected,
    LeaderIsResigning,
    LeaderIsResigningOk,
    LeaderLinkLost,
    LeaderNotLeading,
    Message,
    NodeController,
    NoQuorum,
    Prepare,
    PrepareOk,
    Proposal,
    ReadOnlyReplicaError,
    ReplicaSubscribed,
    Resign,
    ScheduleTimeout,
    SendTo,
    SendViewChangeProof,
    Shutdown,
    ShutdownComplete,
    ShutdownRequested,
    SlaveAssigned,
    StartElections,
    StateChanged,
    StepDown,
    SubscribeTo,
    SystemStart,
    ViewChange,
    ViewChangeProof,
    WaitForChaser,
    WriteEpoch,
    best_candidate,
    decode_message,
    encode_message,
    needs_election,
    quorum,
)
from estwisted.cluster.gossip import Endpoint, GossipFormatError, MemberInfo, VNodeState
from estwisted.testing.cluster_sim import (
    ClusterSimulator,
    Faults,
    main,
    make_member,
    run_scenario,
)

NOW = 1_700_000_000.0


def member(
    n: int,
    *,
    epoch: int = 1,
    writer: int = 1000,
    commit: Optional[int] = None,
    priority: int = 0,
    state: VNodeState = VNodeState.Unknown,
    alive: bool = True,
    read_only: bool = False,
) -> MemberInfo:
    """
    Node C{n}: instance id C{n}, endpoints on 127.0.0.C{n}.
    """
    m = make_member(
        n - 1,
        uuid.UUID(int=n),
        epoch_number=epoch,
        writer_checkpoint=writer,
        last_commit_position=commit,
        node_priority=priority,
        read_only=read_only,
    )
    return evolve(m, state=state, is_alive=alive, timestamp=NOW)


def machine(
    n: int, members: list[MemberInfo], cluster_size: Optional[int] = None
) -> ElectionMachine:
    """
    The election machine of node C{n} of C{members}, with the electorate
    known from gossip.
    """
    own = next(m for m in members if m.instance_id.int == n)
    m = ElectionMachine(own=own, cluster_size=cluster_size or len(members))
    m.handle(GossipUpdated(tuple(members)), NOW)
    return m


def ok_from(m: MemberInfo, view: int) -> PrepareOk:
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
    )


def proposal(proposer: MemberInfo, candidate: MemberInfo, view: int) -> Proposal:
    return Proposal(
        proposer.instance_id,
        proposer.internal_http,
        candidate.instance_id,
        candidate.internal_http,
        view,
        candidate.epoch_number,
        candidate.epoch_position,
        candidate.epoch_id,
        candidate.last_commit_position,
        candidate.writer_checkpoint,
        candidate.chaser_checkpoint,
    )


def messages(effects: list[Effect]) -> list[Message]:
    result: list[Message] = []
    for e in effects:
        if isinstance(e, (SendTo, Broadcast)):
            result.append(e.message)
    return result


def of_type(effects: list[Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


class QuorumTests(SynchronousTestCase):
    def test_quorum(self) -> None:
        """
        Quorum is C{ClusterSize // 2 + 1}.
        """
        self.assertEqual([quorum(n) for n in range(1, 8)], [1, 2, 2, 3, 3, 4, 4])


class SingleNodeTests(SynchronousTestCase):
    def test_electsItself(self) -> None:
        """
        A one-node cluster elects itself at once when elections start, and
        arms the proof timer and the view timeout.
        """
        own = member(1, epoch=4)
        m = ElectionMachine(own=own, cluster_size=1)
        effects = m.handle(StartElections(), NOW)
        self.assertEqual(of_type(effects, LeaderElected), [LeaderElected(0, own)])
        self.assertEqual(of_type(effects, BecomeLeader), [BecomeLeader(0, 5)])
        self.assertEqual(of_type(effects, Broadcast), [])
        self.assertIn(ScheduleTimeout(5.0, SendViewChangeProof()), effects)
        self.assertIn(ScheduleTimeout(1.0, ElectionsTimedOut(0)), effects)
        self.assertEqual(m.last_elected_leader, own.instance_id)


class ViewChangeTests(SynchronousTestCase):
    """
    ViewChange: starting and joining views; the view leader's prepare phase.
    """

    def setUp(self) -> None:
        self.members = [member(1), member(2), member(3)]

    def test_startBroadcastsViewChange(self) -> None:
        """
        Starting elections sends ViewChange for view 0 to every other member
        and schedules the view timeout.
        """
        m = machine(1, self.members)
        effects = m.handle(StartElections(), NOW)
        [bc] = of_type(effects, Broadcast)
        self.assertEqual(set(bc.targets), {member(2).key, member(3).key})
        self.assertEqual(bc.message, ViewChange(uuid.UUID(int=1), member(1).key, 0))
        self.assertIn(ScheduleTimeout(1.0, ElectionsTimedOut(0)), effects)
        self.assertEqual(m.state, ElectionState.ElectingLeader)

    def test_secondStartIgnored(self) -> None:
        """
        StartElections while electing does nothing.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        self.assertEqual(m.handle(StartElections(), NOW), [])
        self.assertEqual(m.last_attempted_view, 0)

    def test_idleIgnoresViewChange(self) -> None:
        """
        Before elections start the machine ignores ViewChange.
        """
        m = machine(1, self.members)
        self.assertEqual(m.handle(ViewChange(uuid.UUID(int=2), member(2).key, 4), NOW), [])
        self.assertEqual(m.last_attempted_view, -1)

    def test_higherViewDrags(self) -> None:
        """
        A ViewChange for a higher view moves us to that view: we broadcast
        our own ViewChange for it.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        effects = m.handle(ViewChange(uuid.UUID(int=2), member(2).key, 3), NOW)
        self.assertEqual(m.last_attempted_view, 3)
        self.assertIn(ViewChange(uuid.UUID(int=1), member(1).key, 3), messages(effects))
        self.assertIn(ScheduleTimeout(1.0, ElectionsTimedOut(3)), effects)

    def test_viewLeaderPrepares(self) -> None:
        """
        The view leader (C{servers[view % n]}, servers sorted descending)
        sends Prepare once a quorum of ViewChanges arrived, counting each
        sender once.
        """
        # Descending order: 127.0.0.3, .2, .1 -> view 1's leader is node 2.
        m = machine(2, self.members)
        self.assertEqual(m.view_leader(1).instance_id.int, 2)
        m.handle(StartElections(), NOW)
        effects = m.handle(ViewChange(uuid.UUID(int=1), member(1).key, 1), NOW)
        self.assertEqual(m.last_attempted_view, 1)
        [bc] = [e for e in of_type(effects, Broadcast) if isinstance(e.message, Prepare)]
        self.assertEqual(bc.message, Prepare(uuid.UUID(int=2), member(2).key, 1))
        self.assertEqual(m.last_installed_view, 1)
        again = m.handle(ViewChange(uuid.UUID(int=3), member(3).key, 1), NOW)
        self.assertEqual([x for x in messages(again) if isinstance(x, Prepare)], [])

    def test_notViewLeaderWaits(self) -> None:
        """
        A node that is not the view leader never sends Prepare.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        effects = m.handle(ViewChange(uuid.UUID(int=2), member(2).key, 0), NOW)
        effects += m.handle(ViewChange(uuid.UUID(int=3), member(3).key, 0), NOW)
        self.assertEqual([x for x in messages(effects) if isinstance(x, Prepare)], [])

    def test_minorityNeverPrepares(self) -> None:
        """
        In a five-node cluster two ViewChanges (ours and one more) are not a
        quorum.
        """
        members = [member(i) for i in range(1, 6)]
        m = machine(5, members)
        self.assertEqual(m.view_leader(0).instance_id.int, 5)
        effects = m.handle(StartElections(), NOW)
        effects += m.handle(ViewChange(uuid.UUID(int=4), member(4).key, 0), NOW)
        effects += m.handle(ViewChange(uuid.UUID(int=4), member(4).key, 0), NOW)
        self.assertEqual([x for x in messages(effects) if isinstance(x, Prepare)], [])
        effects = m.handle(ViewChange(uuid.UUID(int=3), member(3).key, 0), NOW)
        self.assertEqual(len([x for x in messages(effects) if isinstance(x, Prepare)]), 1)


class PrepareTests(SynchronousTestCase):
    """
    Prepare and PrepareOk; choosing the candidate.
    """

    def setUp(self) -> None:
        self.members = [member(1, writer=500), member(2, writer=900), member(3, writer=700)]

    def test_prepareAnswered(self) -> None:
        """
        An acceptor answers Prepare for its attempted view with its data, to
        the sender only, and installs the view.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        effects = m.handle(Prepare(uuid.UUID(int=3), member(3).key, 0), NOW)
        self.assertEqual(effects, [SendTo(member(3).key, ok_from(member(1, writer=500), 0))])
        self.assertEqual(m.state, ElectionState.NonLeader)
        self.assertEqual(m.last_installed_view, 0)

    def test_prepareIgnored(self) -> None:
        """
        Prepare for another view, or from a node outside the electorate, is
        ignored.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        self.assertEqual(m.handle(Prepare(uuid.UUID(int=3), member(3).key, 5), NOW), [])
        self.assertEqual(m.handle(Prepare(uuid.UUID(int=9), member(9).key, 0), NOW), [])
        self.assertEqual(m.state, ElectionState.ElectingLeader)

    def test_quorumOfOksProposesBest(self) -> None:
        """
        On a quorum of PrepareOks (its own included) the view leader proposes
        the best candidate among them to everyone and counts its own Accept.
        """
        m = machine(3, self.members)
        m.handle(StartElections(), NOW)
        m.handle(ViewChange(uuid.UUID(int=2), member(2).key, 0), NOW)
        self.assertEqual(m.last_installed_view, 0)
        effects = m.handle(ok_from(self.members[1], 0), NOW)
        self.assertEqual(m.state, ElectionState.Leader)
        [p] = [x for x in messages(effects) if isinstance(x, Proposal)]
        self.assertEqual(p, proposal(self.members[2], self.members[1], 0))
        self.assertEqual(m.accepts_received, {uuid.UUID(int=3)})
        self.assertEqual(m.handle(ok_from(self.members[0], 0), NOW), [])

    def test_rank(self) -> None:
        """
        Candidates rank by epoch number, then last commit position, writer
        checkpoint, node priority, and instance id.
        """

        def best(*ms: MemberInfo) -> int:
            c = best_candidate(ok_from(m, 0) for m in ms)
            assert c is not None
            return c.instance_id.int

        self.assertEqual(best(member(1, epoch=3, writer=1), member(2, epoch=2, writer=9)), 1)
        self.assertEqual(best(member(1, commit=50, writer=100), member(2, commit=60, writer=60)), 2)
        self.assertEqual(best(member(1, writer=70), member(2, writer=60)), 1)
        self.assertEqual(best(member(1, priority=0), member(2, priority=5)), 2)
        self.assertEqual(best(member(1), member(2)), 2)
        self.assertIsNone(best_candidate([]))

    def test_stickiness(self) -> None:
        """
        The last elected leader is proposed again if it answered, even with
        less data.
        """
        m = machine(3, self.members)
        m.last_elected_leader = uuid.UUID(int=1)
        m.handle(StartElections(), NOW)
        m.handle(ViewChange(uuid.UUID(int=1), member(1).key, 0), NOW)
        effects = m.handle(ok_from(self.members[0], 0), NOW)
        [p] = [x for x in messages(effects) if isinstance(x, Proposal)]
        self.assertEqual(p.leader_id, uuid.UUID(int=1))


class AcceptTests(SynchronousTestCase):
    """
    Proposal, legitimacy, Accept and the decision.
    """

    def setUp(self) -> None:
        self.members = [member(1, writer=500), member(2, writer=900), member(3, writer=700)]

    def acceptor(self, n: int = 1) -> ElectionMachine:
        m = machine(n, self.members)
        m.handle(StartElections(), NOW)
        m.handle(Prepare(uuid.UUID(int=3), member(3).key, 0), NOW)
        return m

    def test_acceptAndDecide(self) -> None:
        """
        A legitimate proposal is accepted (Accept broadcast); the proposer's
        implicit accept and ours make a quorum of three, so we decide.
        """
        m = self.acceptor()
        effects = m.handle(proposal(self.members[2], self.members[1], 0), NOW)
        [bc] = of_type(effects, Broadcast)
        self.assertEqual(
            bc.message,
            Accept(uuid.UUID(int=1), member(1).key, uuid.UUID(int=2), member(2).key, 0),
        )
        [done] = of_type(effects, LeaderElected)
        self.assertEqual((done.view, done.leader.instance_id), (0, uuid.UUID(int=2)))
        self.assertEqual(of_type(effects, BecomeLeader), [])
        self.assertEqual(m.last_elected_leader, uuid.UUID(int=2))

    def test_winnerBecomesLeader(self) -> None:
        """
        The node that is decided on also gets L{BecomeLeader} with its next
        epoch number.
        """
        m = self.acceptor(2)
        effects = m.handle(proposal(self.members[2], self.members[1], 0), NOW)
        self.assertEqual(of_type(effects, BecomeLeader), [BecomeLeader(0, 2)])

    def test_decideOnce(self) -> None:
        """
        Accepts beyond the quorum, and duplicates, decide nothing more.
        """
        m = self.acceptor()
        m.handle(proposal(self.members[2], self.members[1], 0), NOW)
        late = Accept(uuid.UUID(int=2), member(2).key, uuid.UUID(int=2), member(2).key, 0)
        self.assertEqual(m.handle(late, NOW), [])
        self.assertEqual(m.handle(late, NOW), [])

    def test_illegitimateRejected(self) -> None:
        """
        With no live leader, a candidate with less data than us is not
        accepted.
        """
        m = self.acceptor(2)
        effects = m.handle(proposal(self.members[2], self.members[0], 0), NOW)
        self.assertEqual(effects, [])
        self.assertIsNone(m.leader_proposal)

    def test_oneCandidatePerView(self) -> None:
        """
        Once a candidate is adopted in a view, a proposal for another one is
        ignored.
        """
        m = self.acceptor()
        m.handle(proposal(self.members[2], self.members[2], 0), NOW)
        effects = m.handle(proposal(self.members[1], self.members[1], 0), NOW)
        self.assertEqual(effects, [])
        assert m.leader_proposal is not None
        self.assertEqual(m.leader_proposal.instance_id, uuid.UUID(int=3))

    def test_liveLeaderProtected(self) -> None:
        """
        While the leader we elected is alive and Master, only it or a
        candidate with a newer epoch is accepted.
        """
        members = [
            member(1, writer=500),
            member(2, writer=900, epoch=1, state=VNodeState.Master),
            member(3, writer=9999, epoch=1),
        ]
        m = machine(1, members)
        m.last_elected_leader = uuid.UUID(int=2)
        leader = Candidate.from_member(members[1])
        self.assertTrue(m.is_legitimate(leader))
        self.assertFalse(m.is_legitimate(Candidate.from_member(members[2])))
        newer = Candidate.from_member(evolve(members[2], epoch_number=2))
        self.assertTrue(m.is_legitimate(newer))
        forked = Candidate.from_member(evolve(members[2], epoch_id=uuid.UUID(int=77)))
        self.assertTrue(m.is_legitimate(forked))

    def test_proposalFromStranger(self) -> None:
        """
        Proposals whose proposer or candidate is outside the electorate are
        ignored.
        """
        m = self.acceptor()
        stranger = member(9, writer=10**6)
        self.assertEqual(m.handle(proposal(stranger, self.members[1], 0), NOW), [])
        self.assertEqual(m.handle(proposal(self.members[2], stranger, 0), NOW), [])


class TimeoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.members = [member(1), member(2), member(3)]

    def test_timeoutMovesOn(self) -> None:
        """
        A view that times out without a decision is followed by the next
        view; a stale timeout is ignored.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        effects = m.handle(ElectionsTimedOut(0), NOW + 1)
        self.assertEqual(m.last_attempted_view, 1)
        self.assertIn(ViewChange(uuid.UUID(int=1), member(1).key, 1), messages(effects))
        self.assertEqual(m.handle(ElectionsTimedOut(0), NOW + 2), [])

    def test_timeoutAfterDecision(self) -> None:
        """
        Once a leader is decided, the view's timeout does nothing.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        m.handle(Prepare(uuid.UUID(int=3), member(3).key, 0), NOW)
        m.handle(proposal(member(3), member(3), 0), NOW)
        self.assertEqual(m.leader, uuid.UUID(int=3))
        self.assertEqual(m.handle(ElectionsTimedOut(0), NOW + 1), [])

    def test_proofTimer(self) -> None:
        """
        Every proof period the installed view is sent to everyone, and the
        timer is re-armed.
        """
        m = machine(1, self.members)
        self.assertEqual(
            m.handle(SendViewChangeProof(), NOW), [ScheduleTimeout(5.0, SendViewChangeProof())]
        )
        m.handle(StartElections(), NOW)
        m.handle(Prepare(uuid.UUID(int=3), member(3).key, 0), NOW)
        effects = m.handle(SendViewChangeProof(), NOW)
        self.assertIn(ViewChangeProof(uuid.UUID(int=1), member(1).key, 0), messages(effects))

    def test_proofJumps(self) -> None:
        """
        A proof of a higher installed view moves a late node there as an
        acceptor, without votes from skipped views.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        effects = m.handle(ViewChangeProof(uuid.UUID(int=2), member(2).key, 7), NOW)
        self.assertEqual((m.last_attempted_view, m.last_installed_view), (7, 7))
        self.assertEqual(m.state, ElectionState.NonLeader)
        self.assertEqual(m.accepts_received, set())
        self.assertIn(ScheduleTimeout(1.0, ElectionsTimedOut(7)), effects)
        self.assertEqual(m.handle(ViewChangeProof(uuid.UUID(int=2), member(2).key, 7), NOW), [])

    def test_decisionViewAcrossProofJump(self) -> None:
        """
        A leader decided in view 0 is kept when a proof moves us to view
        7, but C{leader_view} no longer names a view: view 7's decision
        (which we missed) may be another node, and two leaders must never
        be decided in one view.  A leader adopted from gossip names no
        view either.
        """
        m = machine(1, self.members)
        m.handle(StartElections(), NOW)
        m.handle(Prepare(uuid.UUID(int=3), member(3).key, 0), NOW)
        m.handle(proposal(member(3), member(3), 0), NOW)
        self.assertEqual((m.leader, m.leader_view), (uuid.UUID(int=3), 0))
        m.handle(ViewChangeProof(uuid.UUID(int=2), member(2).key, 7), NOW)
        self.assertEqual((m.leader, m.leader_view, m.last_installed_view),
                         (uuid.UUID(int=3), None, 7))
        self.assertEqual(m.handle(ElectionsTimedOut(7), NOW + 1), [])
        idle = machine(2, self.members)
        idle.adopt_leader(uuid.UUID(int=3))
        self.assertEqual((idle.state, idle.leader, idle.leader_view),
                         (ElectionState.NonLeader, uuid.UUID(int=3), None))
        busy = machine(3, self.members)
        busy.handle(StartElections(), NOW)
        busy.adopt_leader(uuid.UUID(int=1))
        self.assertEqual((busy.state, busy.leader), (ElectionState.ElectingLeader, None))

    def test_shutdown(self) -> None:
        """
        After Shutdown every input is ignored.
        """
        m = machine(1, self.members)
        m.handle(Shutdown(), NOW)
        self.assertEqual(m.handle(StartElections(), NOW), [])
        self.assertEqual(m.state, ElectionState.Shutdown)


class ReadOnlyTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        A read-only replica cannot have an election machine.
        """
        self.assertRaises(
            ReadOnlyReplicaError,
            ElectionMachine,
            own=member(4, read_only=True),
            cluster_size=3,
        )

    def test_notInElectorate(self) -> None:
        """
        Read-only replicas, managers and dead members are not in the
        electorate, so they are never view leader nor sent messages.
        """
        members = [
            member(1),
            member(2),
            member(3, alive=False),
            member(4, read_only=True, state=VNodeState.ReadOnlyReplica),
            member(5, state=VNodeState.Manager),
        ]
        m = machine(1, members, cluster_size=3)
        self.assertEqual([s.instance_id.int for s in m.servers], [2, 1])
        [bc] = of_type(m.handle(StartElections(), NOW), Broadcast)
        self.assertEqual(bc.targets, (member(2).key,))


class ResignTests(SynchronousTestCase):
    def test_resign(self) -> None:
        """
        A leader that resigns tells everyone; a quorum of acknowledgements
        makes it step down, and it is no longer proposed by stickiness.
        """
        members = [member(1), member(2), member(3)]
        m = machine(1, members)
        m.leader = m.last_elected_leader = uuid.UUID(int=1)
        effects = m.handle(Resign(), NOW)
        [bc] = of_type(effects, Broadcast)
        self.assertEqual(bc.message, LeaderIsResigning(uuid.UUID(int=1), member(1).key))
        other = machine(2, members)
        [reply] = other.handle(bc.message, NOW)
        assert isinstance(reply, SendTo)
        self.assertEqual(other.resigning_leader, uuid.UUID(int=1))
        self.assertEqual(m.handle(reply.message, NOW), [StepDown()])
        self.assertEqual(m.handle(reply.message, NOW), [])

    def test_resignNotLeader(self) -> None:
        """
        Resigning a node that is not leader does nothing.
        """
        m = machine(1, [member(1), member(2), member(3)])
        self.assertEqual(m.handle(Resign(), NOW), [])


class NeedsElectionTests(SynchronousTestCase):
    def test_replicaLosesLeader(self) -> None:
        """
        A replica wants an election when its leader is dead or missing.
        """
        own = member(1, state=VNodeState.Slave)
        leader = member(2, state=VNodeState.Master)
        lid = leader.instance_id
        self.assertFalse(needs_election([own, leader], own, VNodeState.Slave, lid))
        dead = evolve(leader, is_alive=False)
        self.assertTrue(needs_election([own, dead], own, VNodeState.Slave, lid))
        self.assertTrue(needs_election([own], own, VNodeState.CatchingUp, lid))

    def test_twoMasters(self) -> None:
        """
        A leader that sees another alive Master wants an election.
        """
        own = member(1, state=VNodeState.Master)
        other = member(2, state=VNodeState.Master)
        self.assertTrue(needs_election([own, other], own, VNodeState.Master, None))
        gone = evolve(other, is_alive=False)
        self.assertFalse(needs_election([own, gone], own, VNodeState.Master, None))
        self.assertFalse(needs_election([own, other], own, VNodeState.Unknown, None))


ids = st.uuids()
eps = st.builds(Endpoint, st.sampled_from(["127.0.0.1", "10.1.2.3"]), st.integers(1, 65535))
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-1, 2**63 - 1)
election_messages = st.one_of(
    st.builds(ViewChange, ids, eps, i32),
    st.builds(ViewChangeProof, ids, eps, i32),
    st.builds(Prepare, ids, eps, i32),
    st.builds(PrepareOk, ids, eps, i32, i32, i64, ids, i64, i64, i64, i32, st.booleans()),
    st.builds(Proposal, ids, eps, ids, eps, i32, i32, i64, ids, i64, i64, i64),
    st.builds(Accept, ids, eps, ids, eps, i32),
    st.builds(LeaderIsResigning, ids, eps),
    st.builds(LeaderIsResigningOk, ids, eps, ids, eps),
)


class JsonTests(SynchronousTestCase):
    """
    Election message bodies of http-api.md section 11.3.
    """

    def test_fieldNames(self) -> None:
        """
        Each message uses its route and the v5 camelCase field names.
        """
        a, b = uuid.UUID(int=1), uuid.UUID(int=2)
        e = Endpoint("127.0.0.1", 2112)
        expected: dict[Message, tuple[str, list[str]]] = {
            ViewChange(a, e, 3): (
                "viewchange",
                [
                    "serverId",
                    "serverInternalHttpAddress",
                    "serverInternalHttpPort",
                    "attemptedView",
                ],
            ),
            ViewChangeProof(a, e, 3): (
                "viewchangeproof",
                [
                    "serverId",
                    "serverInternalHttpAddress",
                    "serverInternalHttpPort",
                    "installedView",
                ],
            ),
            Prepare(a, e, 3): (
                "prepare",
                ["serverId", "serverInternalHttpAddress", "serverInternalHttpPort", "view"],
            ),
            PrepareOk(a, e, 3, 1, 2, b, 4, 5, 6, 7): (
                "prepareok",
                [
                    "serverId",
                    "serverInternalHttpAddress",
                    "serverInternalHttpPort",
                    "view",
                    "epochNumber",
                    "epochPosition",
                    "epochId",
                    "lastCommitPosition",
                    "writerCheckpoint",
                    "chaserCheckpoint",
                    "nodePriority",
                ],
            ),
            Proposal(a, e, b, e, 3, 1, 2, b, 4, 5, 6): (
                "proposal",
                [
                    "serverId",
                    "masterId",
                    "serverInternalHttpAddress",
                    "serverInternalHttpPort",
                    "masterInternalHttpAddress",
                    "masterInternalHttpPort",
                    "view",
                    "lastCommitPosition",
                    "writerCheckpoint",
                    "chaserCheckpoint",
                    "epochNumber",
                    "epochPosition",
                    "epochId",
                ],
            ),
            Accept(a, e, b, e, 3): (
                "accept",
                [
                    "serverId",
                    "masterId",
                    "serverInternalHttpAddress",
                    "serverInternalHttpPort",
                    "masterInternalHttpAddress",
                    "masterInternalHttpPort",
                    "view",
                ],
            ),
        }
        for msg, (route, fields) in expected.items():
            got_route, body = encode_message(msg)
            self.assertEqual(got_route, route)
            self.assertEqual(list(json.loads(body)), fields)
        _, body = encode_message(Accept(a, e, b, e, 3))
        self.assertEqual(json.loads(body)["masterId"], "00000000-0000-0000-0000-000000000002")

    @given(election_messages)
    def test_roundTrip(self, msg: Message) -> None:
        """
        Every message decodes to itself.
        """
        route, body = encode_message(msg)
        self.assertEqual(decode_message(route, body), msg)

    def test_rejects(self) -> None:
        """
        Unknown routes, non-JSON bodies and wrong fields are errors.
        """
        route, body = encode_message(Prepare(uuid.UUID(int=1), Endpoint("a", 1), 3))
        self.assertRaises(GossipFormatError, decode_message, "nonsense", body)
        self.assertRaises(GossipFormatError, decode_message, route, b"{")
        self.assertRaises(GossipFormatError, decode_message, route, b"[]")
        bad = json.loads(body) | {"view": "3"}
        self.assertRaises(GossipFormatError, decode_message, route, json.dumps(bad).encode())
        del bad["serverId"]
        self.assertRaises(GossipFormatError, decode_message, route, json.dumps(bad).encode())


# --- The simulator ---------------------------------------------------------------


def safe(sim: ClusterSimulator) -> bool:
    return all(len(leaders) <= 1 for leaders in sim.leaders_by_view().values())


class SimulatorTests(SynchronousTestCase):
    """
    The simulator itself, and example scenarios.
    """

    def test_deterministic(self) -> None:
        """
        The same seed gives the same run.
        """

        def run() -> list[Any]:
            sim = ClusterSimulator.random_cluster(5, seed=42)
            sim.set_faults(Faults(drop=0.2, duplicate=0.2, max_delay=0.5))
            sim.start()
            sim.run_for(40)
            return sim.decisions

        first = run()
        self.assertTrue(first)
        self.assertEqual(run(), first)

    def test_faults(self) -> None:
        """
        C{drop=1} loses everything, C{duplicate=1} delivers everything
        twice, and a partition cuts messages between groups.
        """
        sim = ClusterSimulator.random_cluster(3, seed=1)
        a, b = sim.machines[0].own.key, sim.machines[1].own.key
        message = object()
        sim.set_faults(Faults(drop=1.0))
        sim.send(a, b, message)
        sim.set_faults(Faults(duplicate=1.0))
        sim.send(a, b, message)
        sim.partition([[0], [1, 2]])
        sim.send(a, b, message)
        queued = [data for _, _, kind, data in sim._queue if kind == "deliver"]
        self.assertEqual(queued, [(a, b, message), (a, b, message)])
        sim.heal()
        sim.set_faults(Faults())
        sim.send(a, b, message)
        self.assertEqual(len(sim._queue), 3)

    def test_electsAndFollows(self) -> None:
        """
        A healthy 3-node cluster elects one leader that the others follow,
        within a few seconds.
        """
        sim = ClusterSimulator.random_cluster(3, seed=3)
        sim.start()
        sim.run_for(5)
        leader = sim.stable_leader(range(3))
        assert leader is not None
        views = sim.leaders_by_view()
        self.assertEqual(set().union(*views.values()), {leader.own.instance_id})

    def test_leaderKilled(self) -> None:
        """
        When the leader crashes the others elect a new one.
        """
        sim = ClusterSimulator.random_cluster(3, seed=4)
        sim.start()
        sim.run_for(5)
        first = sim.stable_leader(range(3))
        assert first is not None
        i = sim.machines.index(first)
        sim.crash(i)
        sim.run_for(10)
        rest = [j for j in range(3) if j != i]
        second = sim.stable_leader(rest)
        assert second is not None
        self.assertNotEqual(second.own.instance_id, first.own.instance_id)
        self.assertTrue(safe(sim))

    def test_twoLeadersResolve(self) -> None:
        """
        An old leader cut off from the others (and configured never to give
        up on its own) keeps leading; when it meets the new leader a new
        election runs and the one with less data (the old leader, which
        missed an epoch) steps down.
        """
        sim = ClusterSimulator.random_cluster(3, seed=5, no_quorum_timeout=10**6)
        sim.start()
        sim.run_for(5)
        old = sim.stable_leader(range(3))
        assert old is not None
        i = sim.machines.index(old)
        rest = [j for j in range(3) if j != i]
        sim.partition([[i], rest])
        sim.run_for(10)
        new = sim.stable_leader(rest)
        assert new is not None
        self.assertEqual(len(sim.leaders()), 2)
        self.assertGreater(new.own.epoch_number, old.own.epoch_number)
        sim.heal()
        sim.run_for(10)
        final = sim.stable_leader(range(3))
        assert final is not None
        self.assertEqual(final.own.instance_id, new.own.instance_id)
        self.assertEqual(old.state, VNodeState.Slave)
        self.assertTrue(safe(sim))

    def test_readOnlyReplicaFollows(self) -> None:
        """
        A read-only replica follows the elected leader and never votes.
        """
        sim = ClusterSimulator.random_cluster(3, 1, seed=6)
        sim.start()
        sim.run_for(5)
        leader = sim.stable_leader(range(4))
        assert leader is not None
        ro = sim.machines[3]
        self.assertIsNone(ro.elections)
        self.assertEqual(
            (ro.state, ro.leader_id), (VNodeState.ReadOnlyReplica, leader.own.instance_id)
        )


@st.composite
def chaos_phases(
    draw: st.DrawFn, nodes: int
) -> list[tuple[Faults, Optional[list[list[int]]], float]]:
    """
    A list of (faults, partition or None, duration) phases.
    """
    phases = []
    for _ in range(draw(st.integers(1, 5))):
        faults = Faults(
            drop=draw(st.sampled_from([0.0, 0.1, 0.3, 0.6])),
            duplicate=draw(st.sampled_from([0.0, 0.1, 0.5])),
            max_delay=draw(st.sampled_from([0.01, 0.2, 0.8, 2.0])),
        )
        groups: Optional[list[list[int]]] = None
        if draw(st.booleans()):
            sides = draw(st.lists(st.integers(0, 2), min_size=nodes, max_size=nodes))
            groups = [[i for i in range(nodes) if sides[i] == g] for g in range(3)]
        phases.append((faults, groups, draw(st.floats(0.5, 8.0))))
    return phases


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    voters = draw(st.sampled_from([3, 5]))
    read_only = draw(st.integers(0, 1))
    nodes = voters + read_only
    heal_size = draw(st.integers(quorum(voters), voters))
    healed = sorted(draw(st.permutations(range(voters)))[:heal_size])
    return dict(
        voters=voters,
        read_only=read_only,
        seed=draw(st.integers(0, 2**32)),
        phases=draw(chaos_phases(nodes)),
        healed=healed + list(range(voters, nodes)),
    )


class SimulatedElectionProperties(SynchronousTestCase):
    """
    Hypothesis drives 3- and 5-node clusters (sometimes with a read-only
    replica) through random message drops, duplicates, delays (so
    reorderings) and partitions.
    """

    def check_read_only(self, sim: ClusterSimulator, voters: int) -> None:
        read_only = set(sim.instance_ids()[voters:])
        self.assertFalse([d for d in sim.decisions if d.leader in read_only])
        for n in sim.machines[voters:]:
            self.assertIsNot(n.state, VNodeState.Master)

    @settings(max_examples=40)
    @given(scenarios())
    def test_safeAndLive(self, scenario: dict[str, Any]) -> None:
        """
        (a) At every moment no two nodes decided different leaders for the
        same view; (b) once a quorum can talk reliably for long enough it
        has exactly one leader that all its members follow; (d) read-only
        replicas never lead.
        """
        voters = scenario["voters"]
        sim = ClusterSimulator.random_cluster(voters, scenario["read_only"], seed=scenario["seed"])
        sim.start()
        for faults, groups, duration in scenario["phases"]:
            sim.set_faults(faults)
            if groups is None:
                sim.heal()
            else:
                sim.partition(groups)
            sim.run_for(duration)
            self.assertTrue(safe(sim), sim.leaders_by_view())
        sim.partition([scenario["healed"]])
        sim.set_faults(Faults(max_delay=0.05))
        sim.run_for(30)
        self.assertTrue(safe(sim), sim.leaders_by_view())
        self.assertIsNotNone(sim.stable_leader(scenario["healed"]))
        self.check_read_only(sim, voters)

    @settings(max_examples=30)
    @given(
        st.sampled_from([3, 5]),
        st.integers(0, 2**32),
        st.data(),
    )
    def test_minorityNeverElects(self, voters: int, seed: int, data: st.DataObject) -> None:
        """
        (c) Nodes cut off in a minority from the start never decide a
        leader and never lead, whatever the network does inside each side;
        the majority side elects one of its own.
        """
        minority = data.draw(
            st.lists(
                st.integers(0, voters - 1), min_size=1, max_size=quorum(voters) - 1, unique=True
            )
        )
        majority = [i for i in range(voters) if i not in minority]
        sim = ClusterSimulator.random_cluster(voters, 1, seed=seed)
        sim.partition([minority, majority + [voters]])
        sim.start()
        for faults, _, duration in data.draw(chaos_phases(voters + 1)):
            sim.set_faults(faults)
            sim.run_for(duration)
        sim.set_faults(Faults(max_delay=0.05))
        sim.run_for(20)
        cut = {sim.machines[i].own.instance_id for i in minority}
        self.assertFalse([d for d in sim.decisions if d.node in cut or d.leader in cut])
        for i in minority:
            self.assertIsNot(sim.machines[i].state, VNodeState.Master)
        self.assertIsNotNone(sim.stable_leader(majority + [voters]))
        self.assertTrue(safe(sim))
        self.check_read_only(sim, voters)


class AdversarialSchedulingTests(SynchronousTestCase):
    """
    Pure election machines (no gossip, no simulator) with hypothesis as the
    network: it picks which message in flight is delivered next, which are
    duplicated or lost, and when timers fire.  Nodes may even disagree on
    the electorate (so on who leads each view).
    """

    @settings(max_examples=150)
    @given(st.sampled_from([3, 5]), st.data())
    def test_oneLeaderPerView(self, size: int, data: st.DataObject) -> None:
        """
        Whatever the order, no two nodes ever decide different leaders for
        one view, and every decision is for a member of the cluster.
        """
        members = [member(i, writer=data.draw(st.integers(0, 3)) * 100) for i in range(1, size + 1)]
        machines = []
        for m in members:
            others = [x for x in members if x is not m]
            seen = others
            if data.draw(st.booleans()):
                seen = data.draw(st.lists(st.sampled_from(others), unique=True))
            machine_ = ElectionMachine(own=m, cluster_size=size)
            machine_.handle(GossipUpdated(tuple([m] + seen)), NOW)
            machines.append(machine_)
        by_endpoint = {m.key: i for i, m in enumerate(members)}
        flight: list[tuple[int, Message]] = []
        timers: list[tuple[int, Any]] = []
        decided: dict[int, set[uuid.UUID]] = {}

        def run(i: int, effects: list[Effect]) -> None:
            for e in effects:
                if isinstance(e, SendTo):
                    flight.append((by_endpoint[e.target], e.message))
                elif isinstance(e, Broadcast):
                    flight.extend((by_endpoint[t], e.message) for t in e.targets)
                elif isinstance(e, ScheduleTimeout):
                    timers.append((i, e.event))
                elif isinstance(e, LeaderElected):
                    decided.setdefault(e.view, set()).add(e.leader.instance_id)

        for i, machine_ in enumerate(machines):
            run(i, machine_.handle(StartElections(), NOW))
        # Actions: mostly deliver the oldest message (a roughly fair
        # network), sometimes any message, duplicate one, lose one, or fire
        # a timer (always a timer when nothing is in flight).
        actions = st.sampled_from(["oldest"] * 6 + ["any", "any", "dup", "drop", "timer", "timer"])
        for _ in range(data.draw(st.integers(50, 400))):
            if not flight and not timers:
                break
            action = data.draw(actions) if flight else "timer"
            if action == "timer" and timers:
                i, event = timers.pop(data.draw(st.integers(0, len(timers) - 1)))
                run(i, machines[i].handle(event, NOW))
                continue
            if not flight:
                continue
            k = 0 if action in ("oldest", "timer") else data.draw(st.integers(0, len(flight) - 1))
            target, msg = flight[k] if action == "dup" else flight.pop(k)
            if action != "drop":
                run(target, machines[target].handle(msg, NOW))
            for view, leaders in decided.items():
                self.assertLessEqual(len(leaders), 1, f"view {view}: {leaders}")
        ids = {m.instance_id for m in members}
        for leaders in decided.values():
            self.assertLessEqual(leaders, ids)


class NodeControllerTests(SynchronousTestCase):
    """
    The node role machine (cluster.md sections 1.4, 1.5).
    """

    def started(self, n: int = 1, read_only: bool = False) -> NodeController:
        c = NodeController(uuid.UUID(int=n), read_only=read_only)
        c.handle(SystemStart())
        return c

    def test_start(self) -> None:
        """
        Initializing becomes Unknown and starts elections; a read-only
        replica becomes ReadOnlyLeaderless and does not.
        """
        c = NodeController(uuid.UUID(int=1))
        self.assertEqual(
            c.handle(SystemStart()),
            [StateChanged(VNodeState.Initializing, VNodeState.Unknown), StartElections()],
        )
        ro = NodeController(uuid.UUID(int=4), read_only=True)
        self.assertEqual(
            ro.handle(SystemStart()),
            [StateChanged(VNodeState.Initializing, VNodeState.ReadOnlyLeaderless)],
        )
        self.assertEqual(ro.handle(LeaderElected(0, member(4))), [])

    def test_electedSelf(self) -> None:
        """
        Elected: PreMaster until the chaser caught up, then Master with a new
        epoch; re-elected as Master: another epoch, same state.
        """
        c = self.started()
        effects = c.handle(LeaderElected(0, member(1)))
        self.assertEqual(
            effects, [StateChanged(VNodeState.Unknown, VNodeState.PreMaster), WaitForChaser()]
        )
        self.assertEqual(
            c.handle(ChaserCaughtUp()),
            [StateChanged(VNodeState.PreMaster, VNodeState.Master), WriteEpoch()],
        )
        self.assertEqual(c.handle(LeaderElected(1, member(1))), [WriteEpoch()])
        self.assertEqual(c.leader_id, uuid.UUID(int=1))

    def test_replicaLifecycle(self) -> None:
        """
        Another leader: PreReplica and subscribe; then CatchingUp, Clone,
        Slave as the replication service reports; the same leader elected
        again changes nothing.
        """
        c = self.started()
        leader = member(2)
        self.assertEqual(
            c.handle(LeaderElected(0, leader)),
            [StateChanged(VNodeState.Unknown, VNodeState.PreReplica), SubscribeTo(leader)],
        )
        c.handle(ReplicaSubscribed())
        self.assertEqual(c.state, VNodeState.CatchingUp)
        c.handle(CloneAssigned())
        self.assertEqual(c.state, VNodeState.Clone)
        c.handle(SlaveAssigned())
        self.assertEqual(c.state, VNodeState.Slave)
        self.assertEqual(c.handle(LeaderElected(1, leader)), [])
        c.handle(CloneAssigned())
        self.assertEqual(c.state, VNodeState.Clone)

    def test_linkLost(self) -> None:
        """
        Losing the link to the leader: PreReplica, check the leader with a
        gossip read, resubscribe after 500 ms.
        """
        c = self.started()
        leader = member(2)
        c.handle(LeaderElected(0, leader))
        c.handle(ReplicaSubscribed())
        self.assertEqual(
            c.handle(LeaderLinkLost()),
            [
                StateChanged(VNodeState.CatchingUp, VNodeState.PreReplica),
                ConfirmAlive(leader),
                SubscribeTo(leader, 0.5),
            ],
        )

    def test_leaderChangesAndStepsDown(self) -> None:
        """
        A Master that learns another node was elected steps down to
        PreReplica; a Master without quorum becomes Unknown and starts
        elections.
        """
        c = self.started()
        c.handle(LeaderElected(0, member(1)))
        c.handle(ChaserCaughtUp())
        effects = c.handle(LeaderElected(1, member(2)))
        self.assertEqual(effects[0], StateChanged(VNodeState.Master, VNodeState.PreReplica))
        d = self.started(3)
        d.handle(LeaderElected(0, member(3)))
        d.handle(ChaserCaughtUp())
        self.assertEqual(
            d.handle(NoQuorum()),
            [StateChanged(VNodeState.Master, VNodeState.Unknown), StartElections()],
        )
        self.assertIsNone(d.leader_id)

    def test_gossipTriggers(self) -> None:
        """
        Gossip starts elections when the leader is dead (replica), when
        another Master is alive (leader), and when a followed node no
        longer leads.
        """
        c = self.started()
        c.handle(LeaderElected(0, member(2)))
        own = member(1, state=VNodeState.PreReplica)
        alive = member(2, state=VNodeState.Master)
        self.assertEqual(c.handle(GossipChanged((own, alive))), [])
        dead = evolve(alive, is_alive=False)
        self.assertEqual(c.handle(GossipChanged((own, dead))), [StartElections()])
        self.assertEqual(c.handle(LeaderNotLeading()), [StartElections()])
        m = self.started(3)
        m.handle(LeaderElected(0, member(3)))
        m.handle(ChaserCaughtUp())
        me = member(3, state=VNodeState.Master)
        self.assertEqual(m.handle(GossipChanged((me, alive))), [StartElections()])

    def test_readOnlyFollowsGossip(self) -> None:
        """
        A read-only replica follows the single alive Master in gossip, and
        becomes leaderless when that leader is gone.
        """
        ro = self.started(4, read_only=True)
        leader = member(2, state=VNodeState.Master)
        effects = ro.handle(GossipChanged((leader, member(1))))
        self.assertEqual(
            effects,
            [
                StateChanged(VNodeState.ReadOnlyLeaderless, VNodeState.PreReadOnlyReplica),
                SubscribeTo(leader),
            ],
        )
        ro.handle(ReplicaSubscribed())
        self.assertEqual(ro.state, VNodeState.ReadOnlyReplica)
        two = (leader, member(3, state=VNodeState.Master))
        self.assertEqual(ro.handle(GossipChanged(two)), [])
        self.assertEqual(
            ro.handle(GossipChanged((evolve(leader, is_alive=False),))),
            [StateChanged(VNodeState.ReadOnlyReplica, VNodeState.ReadOnlyLeaderless)],
        )

    def test_shutdown(self) -> None:
        """
        ShuttingDown, then Shutdown, after which nothing happens.
        """
        c = self.started()
        c.handle(ShutdownRequested())
        self.assertEqual(c.state, VNodeState.ShuttingDown)
        self.assertEqual(c.handle(LeaderElected(0, member(1))), [])
        c.handle(ShutdownComplete())
        self.assertEqual(c.state, VNodeState.Shutdown)
        self.assertEqual(c.handle(SystemStart()), [])


class SweepTests(SynchronousTestCase):
    def test_scenario(self) -> None:
        """
        L{run_scenario} reports a safe run that ends with a stable leader
        (seed 7: 3 voters and a read-only replica), and L{main} prints a
        summary and exits 0 when every scenario is fine.
        """
        result = run_scenario(7, heal_seconds=20)
        assert result is not None
        self.assertTrue(result.safe)
        self.assertTrue(result.read_only_never_led)
        self.assertIsNotNone(result.time_to_leader)
        lines: list[str] = []
        self.assertEqual(main(["7", "1"], lines.append), 0)
        [summary] = lines
        self.assertIn("1 scenarios (0 skipped: no quorum left), 0 bad", summary)
