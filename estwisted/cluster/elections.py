# -*- test-case-name: estwisted.cluster.test.test_elections -*-
"""
Leader election: the v5 Paxos-like protocol with rotating view leaders
(shared/spec/cluster.md section 3), as a pure state machine.

L{ElectionMachine.handle} takes one input (an election message from a peer,
a timer firing, a gossip update, a request to start elections) and returns
the list of effects to perform: L{SendTo} and L{Broadcast} carry messages,
L{ScheduleTimeout} asks for an input to be fed back after a delay, and
L{LeaderElected} (plus L{BecomeLeader} on the winner) reports a decision.
No reactor, no I/O: the edge performs the effects (messages travel as JSON
over internal HTTP, see L{encode_message}) and owns the clock.

Safety rests on three rules kept here exactly: every quorum is
C{cluster_size // 2 + 1} nodes counted once by instance id; a node accepts
at most one candidate per installed view; a node decides a leader only on a
quorum of accepts for its own proposal value.  Read-only replicas never run
this machine (the constructor refuses), are left out of the electorate and
so can never vote, propose or be chosen.

L{NodeController} is the node role machine around it (Initializing,
Unknown, PreMaster/Master, PreReplica/CatchingUp/Clone/Slave, read-only
replica states, shutting down): it turns election results, gossip changes
and replication events into state changes and effects, and asks the
election machine for elections.

docs/elections.md has the state diagrams and the mapping to the spec.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Union

from attrs import define, field, frozen

from estwisted.cluster.gossip import (
    Endpoint,
    GossipFormatError,
    MemberInfo,
    VNodeState,
    get_int,
    get_str,
    get_uuid,
    sort_members,
)

#: v5 view timeout (C{LeaderElectionProgressTimeout}, C{LeaderElectionTimeoutMs}).
ELECTION_TIMEOUT = 1.0
#: Period of ViewChangeProof broadcasts.
VIEW_CHANGE_PROOF_INTERVAL = 5.0


def quorum(cluster_size: int) -> int:
    """
    The majority of a cluster of C{cluster_size} voting nodes.
    """
    return cluster_size // 2 + 1


# --- Messages ----------------------------------------------------------------


@frozen
class ViewChange:
    server_id: uuid.UUID
    server_http: Endpoint
    attempted_view: int


@frozen
class ViewChangeProof:
    server_id: uuid.UUID
    server_http: Endpoint
    installed_view: int


@frozen
class Prepare:
    server_id: uuid.UUID
    server_http: Endpoint
    view: int


@frozen
class PrepareOk:
    """
    An acceptor's answer to L{Prepare}, with the data the proposer ranks
    candidates by.

    @ivar can_lead: C{False} when the sender cannot lead now (its disk is
        full): it is never proposed.  Not in v5; on the wire only when
        C{False} (C{"cannotLead": true}).
    """

    server_id: uuid.UUID
    server_http: Endpoint
    view: int
    epoch_number: int
    epoch_position: int
    epoch_id: uuid.UUID
    last_commit_position: int
    writer_checkpoint: int
    chaser_checkpoint: int
    node_priority: int
    can_lead: bool = True


@frozen
class Proposal:
    """
    The proposer's candidate (v5 calls it C{master}) for the installed view.
    """

    server_id: uuid.UUID
    server_http: Endpoint
    leader_id: uuid.UUID
    leader_http: Endpoint
    view: int
    epoch_number: int
    epoch_position: int
    epoch_id: uuid.UUID
    last_commit_position: int
    writer_checkpoint: int
    chaser_checkpoint: int


@frozen
class Accept:
    server_id: uuid.UUID
    server_http: Endpoint
    leader_id: uuid.UUID
    leader_http: Endpoint
    view: int


@frozen
class LeaderIsResigning:
    """
    (20.6+) The leader asks to step down.
    """

    leader_id: uuid.UUID
    leader_http: Endpoint


@frozen
class LeaderIsResigningOk:
    leader_id: uuid.UUID
    leader_http: Endpoint
    server_id: uuid.UUID
    server_http: Endpoint


Message = Union[
    ViewChange,
    ViewChangeProof,
    Prepare,
    PrepareOk,
    Proposal,
    Accept,
    LeaderIsResigning,
    LeaderIsResigningOk,
]


# --- Other inputs ---------------------------------------------------------------


@frozen
class StartElections:
    """
    The node controller wants a leader (node became Unknown, leader lost,
    two leaders seen).
    """


@frozen
class ElectionsTimedOut:
    """
    Timer: the view C{view} made no decision in time.
    """

    view: int


@frozen
class SendViewChangeProof:
    """
    Timer: time to tell everyone our installed view.
    """


@frozen
class GossipUpdated:
    """
    The member table changed: the electorate is its alive, non-manager,
    non-read-only members; our own record (matched by instance id) refreshes
    the data we answer L{Prepare} with.
    """

    members: tuple[MemberInfo, ...]


@frozen
class Resign:
    """
    (20.6+) An operator asked this node, if leader, to step down.
    """


@frozen
class Shutdown:
    """
    The node is stopping: every later input is ignored.
    """


Event = Union[
    Message,
    StartElections,
    ElectionsTimedOut,
    SendViewChangeProof,
    GossipUpdated,
    Resign,
    Shutdown,
]


# --- Effects -------------------------------------------------------------------


@frozen
class SendTo:
    target: Endpoint
    message: Message


@frozen
class Broadcast:
    """
    Send C{message} to each of C{targets} (every other member of the
    electorate at the time).
    """

    targets: tuple[Endpoint, ...]
    message: Message


@frozen
class ScheduleTimeout:
    """
    Feed C{event} back into the machine after C{delay} seconds.
    """

    delay: float
    event: Union[ElectionsTimedOut, SendViewChangeProof]


@frozen
class LeaderElected:
    """
    v5 C{ElectionsDone}: a quorum accepted C{leader} in C{view}.
    """

    view: int
    leader: MemberInfo


@frozen
class BecomeLeader:
    """
    We were elected: write epoch C{epoch_number} and lead.
    """

    view: int
    epoch_number: int


@frozen
class StepDown:
    """
    (20.6+) A quorum acknowledged our resignation: drain requests, become
    Unknown and start elections.
    """


Effect = Union[SendTo, Broadcast, ScheduleTimeout, LeaderElected, BecomeLeader, StepDown]


# --- The machine ----------------------------------------------------------------


class ElectionState(enum.Enum):
    """
    v5 election service states; C{Leader} means "proposer of the installed
    view", not cluster leader.
    """

    Idle = "Idle"
    ElectingLeader = "ElectingLeader"
    Leader = "Leader"
    NonLeader = "NonLeader"
    Shutdown = "Shutdown"


@frozen
class Candidate:
    """
    A possible leader and the data candidates are ranked by.
    """

    instance_id: uuid.UUID
    internal_http: Endpoint
    epoch_number: int
    epoch_position: int
    epoch_id: uuid.UUID
    last_commit_position: int
    writer_checkpoint: int
    chaser_checkpoint: int
    node_priority: int = 0

    @classmethod
    def from_prepare_ok(cls, ok: PrepareOk) -> Candidate:
        return cls(
            ok.server_id,
            ok.server_http,
            ok.epoch_number,
            ok.epoch_position,
            ok.epoch_id,
            ok.last_commit_position,
            ok.writer_checkpoint,
            ok.chaser_checkpoint,
            ok.node_priority,
        )

    @classmethod
    def from_member(cls, m: MemberInfo) -> Candidate:
        return cls(
            m.instance_id,
            m.internal_http,
            m.epoch_number,
            m.epoch_position,
            m.epoch_id,
            m.last_commit_position,
            m.writer_checkpoint,
            m.chaser_checkpoint,
            m.node_priority,
        )

    @classmethod
    def from_proposal(cls, p: Proposal) -> Candidate:
        return cls(
            p.leader_id,
            p.leader_http,
            p.epoch_number,
            p.epoch_position,
            p.epoch_id,
            p.last_commit_position,
            p.writer_checkpoint,
            p.chaser_checkpoint,
        )

    def rank(self) -> tuple[int, int, int, int, int, int]:
        """
        v5 C{GetBestMasterCandidate} order, all descending: epoch number,
        last commit position, writer checkpoint, node priority, chaser
        checkpoint, instance id.
        """
        return (
            self.epoch_number,
            self.last_commit_position,
            self.writer_checkpoint,
            self.node_priority,
            self.chaser_checkpoint,
            self.instance_id.int,
        )

    def data(self) -> tuple[int, int, int, int]:
        """
        The order of the legitimacy check: epoch number, last commit
        position, writer checkpoint, chaser checkpoint.
        """
        return (
            self.epoch_number,
            self.last_commit_position,
            self.writer_checkpoint,
            self.chaser_checkpoint,
        )


def best_candidate(oks: Iterable[PrepareOk]) -> Optional[Candidate]:
    """
    The best of the candidates that answered L{Prepare} and can lead, by
    L{Candidate.rank}.
    """
    candidates = [Candidate.from_prepare_ok(ok) for ok in oks if ok.can_lead]
    if not candidates:
        return None
    return max(candidates, key=Candidate.rank)


class ReadOnlyReplicaError(ValueError):
    """
    A read-only replica never runs elections.
    """


@define
class ElectionMachine:
    """
    The election service of one voting node (cluster.md section 3.3).

    @ivar own: this node's current member record.
    @ivar cluster_size: the configured C{ClusterSize} (voting nodes).
    @ivar servers: the electorate from the last gossip update, sorted
        descending by internal HTTP endpoint.
    @ivar leader: the leader we know of: decided by an election of ours,
        or found in gossip (L{adopt_leader}); kept when a
        L{ViewChangeProof} moves us to a view whose decision we missed.
    @ivar leader_view: the view whose election decided C{leader} (a quorum
        of L{Accept}s seen here), or C{None} when it was not decided by us
        in a view: found in gossip, or carried across a proof's jump.  At
        most one leader is ever decided per view.
    @ivar resigning_leader: a leader that announced it is stepping down; it
        gets no stickiness and no legitimacy protection.
    @ivar can_lead: C{False} while this node cannot lead (its disk is
        full): it says so in its L{PrepareOk}, never proposes or accepts
        itself, and accepts a candidate whose epoch and commit position are
        at least ours (the records it holds beyond its commit position were
        never committed, and it cannot take them anywhere).
    """

    own: MemberInfo = field()
    cluster_size: int
    timeout: float = ELECTION_TIMEOUT
    proof_interval: float = VIEW_CHANGE_PROOF_INTERVAL
    state: ElectionState = ElectionState.Idle
    last_attempted_view: int = -1
    last_installed_view: int = -1
    vc_received: set[uuid.UUID] = field(factory=set)
    prepare_ok_received: dict[uuid.UUID, PrepareOk] = field(factory=dict)
    accepts_received: set[uuid.UUID] = field(factory=set)
    leader_proposal: Optional[Candidate] = None
    leader: Optional[uuid.UUID] = None
    leader_view: Optional[int] = None
    last_elected_leader: Optional[uuid.UUID] = None
    servers: tuple[MemberInfo, ...] = ()
    resigning_leader: Optional[uuid.UUID] = None
    resign_oks: set[uuid.UUID] = field(factory=set)
    can_lead: bool = True

    @own.validator
    def _check_own(self, attribute: object, value: MemberInfo) -> None:
        if value.is_read_only_replica:
            raise ReadOnlyReplicaError("a read-only replica does not take part in elections")

    def __attrs_post_init__(self) -> None:
        if self.cluster_size < 1:
            raise ValueError(f"cluster size must be at least 1, not {self.cluster_size}")
        if not self.servers:
            self.servers = (self.own,)

    # -- helpers --

    @property
    def quorum(self) -> int:
        return quorum(self.cluster_size)

    @property
    def own_id(self) -> uuid.UUID:
        return self.own.instance_id

    def _server(self, instance_id: uuid.UUID) -> Optional[MemberInfo]:
        for m in self.servers:
            if m.instance_id == instance_id:
                return m
        return None

    def _others(self) -> tuple[Endpoint, ...]:
        return tuple(m.internal_http for m in self.servers if m.instance_id != self.own_id)

    def _broadcast(self, message: Message) -> list[Effect]:
        targets = self._others()
        return [Broadcast(targets, message)] if targets else []

    def view_leader(self, view: int) -> MemberInfo:
        """
        The proposer of C{view}: C{servers[view mod len(servers)]}.
        """
        return self.servers[view % len(self.servers)]

    def _is_view_leader(self, view: int) -> bool:
        return self.view_leader(view).instance_id == self.own_id

    def _own_prepare_ok(self, view: int) -> PrepareOk:
        o = self.own
        return PrepareOk(
            o.instance_id,
            o.internal_http,
            view,
            o.epoch_number,
            o.epoch_position,
            o.epoch_id,
            o.last_commit_position,
            o.writer_checkpoint,
            o.chaser_checkpoint,
            o.node_priority,
            self.can_lead,
        )

    def _accept(self, candidate: Candidate) -> Accept:
        return Accept(
            self.own_id,
            self.own.internal_http,
            candidate.instance_id,
            candidate.internal_http,
            self.last_installed_view,
        )

    # -- dispatch --

    def handle(self, event: Event, now: float) -> list[Effect]:
        """
        Feed one input.

        @param now: the current time (Unix seconds); the machine itself only
            uses relative delays, C{now} is there for the edge's logs and
            for symmetry with the other pure machines.
        @return: the effects to perform, in order.
        """
        if self.state is ElectionState.Shutdown:
            return []
        handler: Callable[[Any], list[Effect]] = getattr(self, "_on_" + type(event).__name__)
        return handler(event)

    def _on_Shutdown(self, event: Shutdown) -> list[Effect]:
        self.state = ElectionState.Shutdown
        return []

    def _on_GossipUpdated(self, event: GossipUpdated) -> list[Effect]:
        servers = []
        for m in event.members:
            if m.instance_id == self.own_id:
                self.own = m
                servers.append(m)
            elif m.is_alive and m.state is not VNodeState.Manager and not m.is_read_only_replica:
                servers.append(m)
        if all(m.instance_id != self.own_id for m in servers):
            servers.append(self.own)
        self.servers = sort_members(servers)
        return []

    def _on_StartElections(self, event: StartElections) -> list[Effect]:
        if self.state is ElectionState.ElectingLeader:
            return []
        effects: list[Effect] = []
        if self.state is ElectionState.Idle:
            effects.append(ScheduleTimeout(self.proof_interval, SendViewChangeProof()))
        return effects + self._shift_to_leader_election(self.last_attempted_view + 1)

    def _shift_to_leader_election(self, view: int) -> list[Effect]:
        self.state = ElectionState.ElectingLeader
        self.vc_received.clear()
        self.prepare_ok_received.clear()
        self.accepts_received.clear()
        self.leader_proposal = None
        self.leader = None
        self.leader_view = None
        self.last_attempted_view = view
        own_vc = ViewChange(self.own_id, self.own.internal_http, view)
        effects = self._broadcast(own_vc)
        effects += self._on_ViewChange(own_vc)
        effects.append(ScheduleTimeout(self.timeout, ElectionsTimedOut(view)))
        return effects

    def _on_ViewChange(self, msg: ViewChange) -> list[Effect]:
        if self.state is ElectionState.Idle:
            return []
        if msg.attempted_view <= self.last_installed_view:
            return []
        effects: list[Effect] = []
        if msg.attempted_view > self.last_attempted_view:
            effects += self._shift_to_leader_election(msg.attempted_view)
        if msg.attempted_view != self.last_attempted_view:
            return effects
        if msg.server_id in self.vc_received:
            return effects
        self.vc_received.add(msg.server_id)
        if len(self.vc_received) == self.quorum and self._is_view_leader(self.last_attempted_view):
            effects += self._shift_to_prepare_phase()
        return effects

    def _shift_to_prepare_phase(self) -> list[Effect]:
        self.last_installed_view = self.last_attempted_view
        self.prepare_ok_received.clear()
        effects = self._broadcast(
            Prepare(self.own_id, self.own.internal_http, self.last_installed_view)
        )
        effects += self._on_PrepareOk(self._own_prepare_ok(self.last_installed_view))
        return effects

    def _on_Prepare(self, msg: Prepare) -> list[Effect]:
        if msg.server_id == self.own_id or msg.view != self.last_attempted_view:
            return []
        if self._server(msg.server_id) is None:
            return []
        if self.state is ElectionState.ElectingLeader:
            self.state = ElectionState.NonLeader
            self.last_installed_view = self.last_attempted_view
        return [SendTo(msg.server_http, self._own_prepare_ok(msg.view))]

    def _on_PrepareOk(self, msg: PrepareOk) -> list[Effect]:
        if self.state is not ElectionState.ElectingLeader:
            return []
        if msg.view != self.last_attempted_view or msg.server_id in self.prepare_ok_received:
            return []
        self.prepare_ok_received[msg.server_id] = msg
        if len(self.prepare_ok_received) != self.quorum:
            return []
        self.state = ElectionState.Leader
        return self._send_proposal()

    def _choose_candidate(self) -> Optional[Candidate]:
        sticky = self.last_elected_leader
        if sticky is not None and sticky != self.resigning_leader:
            ok = self.prepare_ok_received.get(sticky)
            if ok is not None:
                if ok.can_lead:
                    return Candidate.from_prepare_ok(ok)
            else:
                member = self._server(sticky)
                if (
                    member is not None
                    and member.is_alive
                    and member.state is VNodeState.Master
                    and (self.can_lead or sticky != self.own_id)
                ):
                    return Candidate.from_member(member)
        oks = self.prepare_ok_received.values()
        if self.resigning_leader is not None:
            # A leader that resigned is not proposed while another can lead.
            others = [ok for ok in oks if ok.server_id != self.resigning_leader]
            return best_candidate(others) or best_candidate(oks)
        return best_candidate(oks)

    def _send_proposal(self) -> list[Effect]:
        candidate = self._choose_candidate()
        if candidate is None:
            return []
        self.leader_proposal = candidate
        self.accepts_received.clear()
        proposal = Proposal(
            self.own_id,
            self.own.internal_http,
            candidate.instance_id,
            candidate.internal_http,
            self.last_installed_view,
            candidate.epoch_number,
            candidate.epoch_position,
            candidate.epoch_id,
            candidate.last_commit_position,
            candidate.writer_checkpoint,
            candidate.chaser_checkpoint,
        )
        effects = self._broadcast(proposal)
        effects += self._on_Accept(self._accept(candidate))
        return effects

    def is_legitimate(self, candidate: Candidate) -> bool:
        """
        The acceptor's check of a proposed leader (cluster.md section 3.6):
        protect a live leader we elected, otherwise accept only a candidate
        with at least our data.
        """
        current = None
        for m in self.servers:
            if (
                m.instance_id == self.last_elected_leader
                and m.instance_id != self.resigning_leader
                and m.is_alive
                and m.state is VNodeState.Master
            ):
                current = m
        if current is not None:
            return (
                candidate.instance_id == current.instance_id
                or candidate.epoch_number > current.epoch_number
                or (
                    candidate.epoch_number == current.epoch_number
                    and candidate.epoch_id != current.epoch_id
                )
            )
        if candidate.instance_id == self.own_id:
            return self.can_lead
        ours = Candidate.from_member(self.own).data()
        if not self.can_lead:
            return candidate.data()[:2] >= ours[:2]
        return candidate.data() >= ours

    def _on_Proposal(self, msg: Proposal) -> list[Effect]:
        if msg.server_id == self.own_id or self.state is not ElectionState.NonLeader:
            return []
        if msg.view != self.last_installed_view:
            return []
        if self._server(msg.server_id) is None or self._server(msg.leader_id) is None:
            return []
        candidate = Candidate.from_proposal(msg)
        if not self.is_legitimate(candidate):
            return []
        if self.leader_proposal is None:
            self.leader_proposal = candidate
            self.accepts_received.clear()
        if self.leader_proposal.instance_id != candidate.instance_id:
            return []
        own_accept = self._accept(self.leader_proposal)
        effects = self._on_Accept(
            Accept(msg.server_id, msg.server_http, msg.leader_id, msg.leader_http, msg.view)
        )
        effects += self._on_Accept(own_accept)
        effects += self._broadcast(own_accept)
        return effects

    def _on_Accept(self, msg: Accept) -> list[Effect]:
        if msg.view != self.last_installed_view or self.leader_proposal is None:
            return []
        if msg.leader_id != self.leader_proposal.instance_id:
            return []
        if msg.server_id in self.accepts_received:
            return []
        self.accepts_received.add(msg.server_id)
        if len(self.accepts_received) != self.quorum:
            return []
        member = self._server(msg.leader_id)
        if member is None:
            return []
        self.leader = self.last_elected_leader = member.instance_id
        self.leader_view = self.last_installed_view
        self.resigning_leader = None
        effects: list[Effect] = [LeaderElected(self.last_installed_view, member)]
        if member.instance_id == self.own_id:
            effects.append(BecomeLeader(self.last_installed_view, self.own.epoch_number + 1))
        return effects

    def _on_ElectionsTimedOut(self, event: ElectionsTimedOut) -> list[Effect]:
        if event.view != self.last_attempted_view:
            return []
        if self.state is not ElectionState.ElectingLeader and self.leader is not None:
            return []
        return self._shift_to_leader_election(self.last_attempted_view + 1)

    def _on_SendViewChangeProof(self, event: SendViewChangeProof) -> list[Effect]:
        effects: list[Effect] = []
        if self.last_installed_view >= 0:
            effects += self._broadcast(
                ViewChangeProof(self.own_id, self.own.internal_http, self.last_installed_view)
            )
        effects.append(ScheduleTimeout(self.proof_interval, SendViewChangeProof()))
        return effects

    def _on_ViewChangeProof(self, msg: ViewChangeProof) -> list[Effect]:
        if self.state is ElectionState.Idle or msg.installed_view <= self.last_installed_view:
            return []
        # Jump to the view the rest of the cluster installed.  Votes of the
        # views we skip must not count in this one, so they are cleared.
        self.last_attempted_view = msg.installed_view
        self.vc_received.clear()
        self.prepare_ok_received.clear()
        self.accepts_received.clear()
        self.leader_proposal = None
        # A leader we know stays known (so a follower that joined a settled
        # cluster does not start elections on the timeout), but it was not
        # decided in the view we jump to.
        self.leader_view = None
        effects: list[Effect] = [
            ScheduleTimeout(self.timeout, ElectionsTimedOut(msg.installed_view))
        ]
        if self._is_view_leader(msg.installed_view):
            self.state = ElectionState.ElectingLeader
            effects += self._shift_to_prepare_phase()
        else:
            self.state = ElectionState.NonLeader
            self.last_installed_view = self.last_attempted_view
        return effects

    def adopt_leader(self, leader: uuid.UUID) -> None:
        """
        Follow C{leader}, found alive as Master in gossip while we were idle
        (20.6+ C{LeaderFound}): no election ran, so no view decided it.
        """
        if self.state is ElectionState.Idle:
            self.state = ElectionState.NonLeader
            self.leader = self.last_elected_leader = leader
            self.leader_view = None

    # -- 20.6+ resignation --

    def _on_Resign(self, event: Resign) -> list[Effect]:
        if self.leader != self.own_id:
            return []
        self.resigning_leader = self.own_id
        self.resign_oks = {self.own_id}
        effects = self._broadcast(LeaderIsResigning(self.own_id, self.own.internal_http))
        if len(self.resign_oks) == self.quorum:
            effects.append(StepDown())
        return effects

    def _on_LeaderIsResigning(self, msg: LeaderIsResigning) -> list[Effect]:
        self.resigning_leader = msg.leader_id
        ok = LeaderIsResigningOk(
            msg.leader_id, msg.leader_http, self.own_id, self.own.internal_http
        )
        return [SendTo(msg.leader_http, ok)]

    def _on_LeaderIsResigningOk(self, msg: LeaderIsResigningOk) -> list[Effect]:
        if msg.leader_id != self.own_id or self.resigning_leader != self.own_id:
            return []
        if msg.server_id in self.resign_oks:
            return []
        self.resign_oks.add(msg.server_id)
        return [StepDown()] if len(self.resign_oks) == self.quorum else []


def needs_election(
    members: Sequence[MemberInfo],
    own: MemberInfo,
    state: VNodeState,
    leader_id: Optional[uuid.UUID],
) -> bool:
    """
    The node controller's gossip triggers (cluster.md sections 1.4, 3.7):
    a replica whose leader is missing or dead, or a (pre-)leader that sees
    another alive Master, wants a new election.
    """
    if state in (VNodeState.PreReplica, VNodeState.CatchingUp, VNodeState.Clone, VNodeState.Slave):
        leader = next((m for m in members if m.instance_id == leader_id), None)
        return leader is None or not leader.is_alive
    if state in (VNodeState.PreMaster, VNodeState.Master):
        others = [
            m
            for m in members
            if m.is_alive and m.state is VNodeState.Master and m.instance_id != own.instance_id
        ]
        return bool(others)
    return False


# --- The node controller ------------------------------------------------------


@frozen
class SystemStart:
    """
    Storage is open (writer, chaser and reader initialized).
    """


@frozen
class ChaserCaughtUp:
    """
    The chaser checkpoint reached the writer checkpoint.
    """


@frozen
class ReplicaSubscribed:
    """
    The leader accepted our replication subscription.
    """


@frozen
class CloneAssigned:
    pass


@frozen
class SlaveAssigned:
    pass


@frozen
class LeaderLinkLost:
    """
    The replication connection to the leader closed.
    """


@frozen
class LeaderNotLeading:
    """
    The node we follow answered but is no longer leader (it refused our
    subscription).
    """


@frozen
class NoQuorum:
    """
    As leader, fewer than C{ClusterSize // 2} replicas were subscribed for
    the no-quorum period (3 s).
    """


@frozen
class GossipChanged:
    members: tuple[MemberInfo, ...]


@frozen
class ShutdownRequested:
    pass


@frozen
class ShutdownComplete:
    pass


ControllerInput = Union[
    SystemStart,
    LeaderElected,
    ChaserCaughtUp,
    ReplicaSubscribed,
    CloneAssigned,
    SlaveAssigned,
    LeaderLinkLost,
    LeaderNotLeading,
    NoQuorum,
    GossipChanged,
    ShutdownRequested,
    ShutdownComplete,
]


@frozen
class StateChanged:
    """
    Effect: the node state changed (refresh our gossip record).
    """

    previous: VNodeState
    state: VNodeState


@frozen
class WaitForChaser:
    """
    Effect: tell us (L{ChaserCaughtUp}) when the chaser has caught up.
    """


@frozen
class WriteEpoch:
    """
    Effect: write and flush a new epoch (last epoch number + 1): we lead.
    """


@frozen
class SubscribeTo:
    """
    Effect: open the replication link to C{leader} and subscribe (after
    C{delay} seconds), as promotable unless we are a read-only replica.
    """

    leader: MemberInfo
    delay: float = 0.0


@frozen
class ConfirmAlive:
    """
    Effect: C{GET /gossip} from C{member}; mark it dead if that fails (v5's
    answer to a lost replication link).
    """

    member: MemberInfo


ControllerEffect = Union[
    StateChanged, StartElections, WaitForChaser, WriteEpoch, SubscribeTo, ConfirmAlive
]

_REPLICA_OR_PRE = (
    VNodeState.PreReplica,
    VNodeState.CatchingUp,
    VNodeState.Clone,
    VNodeState.Slave,
)
_INACTIVE = (VNodeState.Initializing, VNodeState.ShuttingDown, VNodeState.Shutdown)

#: Delay before reconnecting to the leader after the link was lost.
RECONNECT_DELAY = 0.5


@define
class NodeController:
    """
    The node role state machine (cluster.md sections 1.4 and 1.5, the parts
    that concern roles; the replication service reports its events as
    inputs).  C{handle(input) -> [effects]}; L{StartElections} effects are to
    be fed to the node's L{ElectionMachine}, whose L{LeaderElected} effects
    come back here.

    @ivar leader: the leader we follow (replicas) or ourselves (leader).
    """

    own_id: uuid.UUID
    read_only: bool = False
    state: VNodeState = VNodeState.Initializing
    leader: Optional[MemberInfo] = None

    def handle(self, event: ControllerInput) -> list[ControllerEffect]:
        if self.state is VNodeState.Shutdown:
            return []
        handler: Callable[[Any], list[ControllerEffect]] = getattr(
            self, "_on_" + type(event).__name__
        )
        return handler(event)

    @property
    def leader_id(self) -> Optional[uuid.UUID]:
        return None if self.leader is None else self.leader.instance_id

    def _become(self, state: VNodeState) -> list[ControllerEffect]:
        if state is self.state:
            return []
        previous, self.state = self.state, state
        return [StateChanged(previous, state)]

    def _on_SystemStart(self, event: SystemStart) -> list[ControllerEffect]:
        if self.state is not VNodeState.Initializing:
            return []
        if self.read_only:
            return self._become(VNodeState.ReadOnlyLeaderless)
        return self._become(VNodeState.Unknown) + [StartElections()]

    def _on_LeaderElected(self, event: LeaderElected) -> list[ControllerEffect]:
        if self.state in _INACTIVE or self.read_only:
            return []
        leader = event.leader
        if leader.instance_id == self.own_id:
            self.leader = leader
            if self.state is VNodeState.Master:
                return [WriteEpoch()]
            return self._become(VNodeState.PreMaster) + [WaitForChaser()]
        if self.leader_id == leader.instance_id and self.state in _REPLICA_OR_PRE:
            return []
        self.leader = leader
        return self._become(VNodeState.PreReplica) + [SubscribeTo(leader)]

    def _on_ChaserCaughtUp(self, event: ChaserCaughtUp) -> list[ControllerEffect]:
        if self.state is not VNodeState.PreMaster:
            return []
        return self._become(VNodeState.Master) + [WriteEpoch()]

    def _on_ReplicaSubscribed(self, event: ReplicaSubscribed) -> list[ControllerEffect]:
        if self.state is VNodeState.PreReplica:
            return self._become(VNodeState.CatchingUp)
        if self.state is VNodeState.PreReadOnlyReplica:
            return self._become(VNodeState.ReadOnlyReplica)
        return []

    def _on_CloneAssigned(self, event: CloneAssigned) -> list[ControllerEffect]:
        if self.state in (VNodeState.CatchingUp, VNodeState.Slave):
            return self._become(VNodeState.Clone)
        return []

    def _on_SlaveAssigned(self, event: SlaveAssigned) -> list[ControllerEffect]:
        if self.state in (VNodeState.CatchingUp, VNodeState.Clone):
            return self._become(VNodeState.Slave)
        return []

    def _on_LeaderLinkLost(self, event: LeaderLinkLost) -> list[ControllerEffect]:
        if self.leader is None:
            return []
        if self.state in _REPLICA_OR_PRE:
            effects = self._become(VNodeState.PreReplica)
        elif self.state in (VNodeState.PreReadOnlyReplica, VNodeState.ReadOnlyReplica):
            effects = self._become(VNodeState.PreReadOnlyReplica)
        else:
            return []
        return effects + [
            ConfirmAlive(self.leader),
            SubscribeTo(self.leader, RECONNECT_DELAY),
        ]

    def _on_LeaderNotLeading(self, event: LeaderNotLeading) -> list[ControllerEffect]:
        if self.state in _REPLICA_OR_PRE:
            return [StartElections()]
        return []

    def _on_NoQuorum(self, event: NoQuorum) -> list[ControllerEffect]:
        if self.state is not VNodeState.Master:
            return []
        self.leader = None
        return self._become(VNodeState.Unknown) + [StartElections()]

    def _on_GossipChanged(self, event: GossipChanged) -> list[ControllerEffect]:
        if self.read_only:
            return self._read_only_gossip(event.members)
        if self.state in _INACTIVE:
            return []
        own = next((m for m in event.members if m.instance_id == self.own_id), None)
        if own is None:
            return []
        if needs_election(event.members, own, self.state, self.leader_id):
            return [StartElections()]
        return []

    def _read_only_gossip(self, members: Sequence[MemberInfo]) -> list[ControllerEffect]:
        if self.state in _INACTIVE:
            return []
        leaders = [
            m
            for m in members
            if m.is_alive and m.state is VNodeState.Master and not m.is_read_only_replica
        ]
        if self.leader is not None and any(m.instance_id == self.leader_id for m in leaders):
            return []
        if len(leaders) == 1:
            self.leader = leaders[0]
            return self._become(VNodeState.PreReadOnlyReplica) + [SubscribeTo(leaders[0])]
        self.leader = None
        return self._become(VNodeState.ReadOnlyLeaderless)

    def _on_ShutdownRequested(self, event: ShutdownRequested) -> list[ControllerEffect]:
        return self._become(VNodeState.ShuttingDown)

    def _on_ShutdownComplete(self, event: ShutdownComplete) -> list[ControllerEffect]:
        if self.state is not VNodeState.ShuttingDown:
            return []
        return self._become(VNodeState.Shutdown)


# --- JSON (http-api.md section 11.3) ------------------------------------------------

#: Route (last path segment under C{/elections/}) of each message type.
ROUTES: dict[type, str] = {
    ViewChange: "viewchange",
    ViewChangeProof: "viewchangeproof",
    Prepare: "prepare",
    PrepareOk: "prepareok",
    Proposal: "proposal",
    Accept: "accept",
    # Not in v5 (20.6+ uses gRPC); our own routes, same JSON conventions.
    LeaderIsResigning: "leaderisresigning",
    LeaderIsResigningOk: "leaderisresigningok",
}


def _server(msg: Any) -> dict[str, Any]:
    return {
        "serverId": str(msg.server_id),
        "serverInternalHttpAddress": msg.server_http.host,
        "serverInternalHttpPort": msg.server_http.port,
    }


def message_to_json(msg: Message) -> dict[str, Any]:
    """
    The camelCase JSON body of an election message.
    """
    if isinstance(msg, ViewChange):
        return _server(msg) | {"attemptedView": msg.attempted_view}
    if isinstance(msg, ViewChangeProof):
        return _server(msg) | {"installedView": msg.installed_view}
    if isinstance(msg, Prepare):
        return _server(msg) | {"view": msg.view}
    if isinstance(msg, PrepareOk):
        body = _server(msg) | {
            "view": msg.view,
            "epochNumber": msg.epoch_number,
            "epochPosition": msg.epoch_position,
            "epochId": str(msg.epoch_id),
            "lastCommitPosition": msg.last_commit_position,
            "writerCheckpoint": msg.writer_checkpoint,
            "chaserCheckpoint": msg.chaser_checkpoint,
            "nodePriority": msg.node_priority,
        }
        if not msg.can_lead:
            body["cannotLead"] = True
        return body
    if isinstance(msg, Proposal):
        return {
            "serverId": str(msg.server_id),
            "masterId": str(msg.leader_id),
            "serverInternalHttpAddress": msg.server_http.host,
            "serverInternalHttpPort": msg.server_http.port,
            "masterInternalHttpAddress": msg.leader_http.host,
            "masterInternalHttpPort": msg.leader_http.port,
            "view": msg.view,
            "lastCommitPosition": msg.last_commit_position,
            "writerCheckpoint": msg.writer_checkpoint,
            "chaserCheckpoint": msg.chaser_checkpoint,
            "epochNumber": msg.epoch_number,
            "epochPosition": msg.epoch_position,
            "epochId": str(msg.epoch_id),
        }
    if isinstance(msg, Accept):
        return {
            "serverId": str(msg.server_id),
            "masterId": str(msg.leader_id),
            "serverInternalHttpAddress": msg.server_http.host,
            "serverInternalHttpPort": msg.server_http.port,
            "masterInternalHttpAddress": msg.leader_http.host,
            "masterInternalHttpPort": msg.leader_http.port,
            "view": msg.view,
        }
    if isinstance(msg, LeaderIsResigning):
        return {
            "masterId": str(msg.leader_id),
            "masterInternalHttpAddress": msg.leader_http.host,
            "masterInternalHttpPort": msg.leader_http.port,
        }
    return _server(msg) | {
        "masterId": str(msg.leader_id),
        "masterInternalHttpAddress": msg.leader_http.host,
        "masterInternalHttpPort": msg.leader_http.port,
    }


def encode_message(msg: Message) -> tuple[str, bytes]:
    """
    @return: the route (C{POST /elections/<route>}) and the JSON body.
    """
    return ROUTES[type(msg)], json.dumps(message_to_json(msg)).encode("utf-8")


def _endpoint(obj: dict[str, Any], prefix: str) -> Endpoint:
    return Endpoint(get_str(obj, prefix + "Address"), get_int(obj, prefix + "Port"))


def message_from_json(route: str, obj: Any) -> Message:
    """
    @raise GossipFormatError: unknown route or body not of that message.
    """
    if not isinstance(obj, dict):
        raise GossipFormatError("election message is not an object")
    if route == "leaderisresigning":
        return LeaderIsResigning(get_uuid(obj, "masterId"), _endpoint(obj, "masterInternalHttp"))
    sid = get_uuid(obj, "serverId")
    shttp = _endpoint(obj, "serverInternalHttp")
    if route == "viewchange":
        return ViewChange(sid, shttp, get_int(obj, "attemptedView"))
    if route == "viewchangeproof":
        return ViewChangeProof(sid, shttp, get_int(obj, "installedView"))
    if route == "prepare":
        return Prepare(sid, shttp, get_int(obj, "view"))
    if route == "prepareok":
        return PrepareOk(
            sid,
            shttp,
            get_int(obj, "view"),
            get_int(obj, "epochNumber"),
            get_int(obj, "epochPosition"),
            get_uuid(obj, "epochId"),
            get_int(obj, "lastCommitPosition"),
            get_int(obj, "writerCheckpoint"),
            get_int(obj, "chaserCheckpoint"),
            get_int(obj, "nodePriority", 0),
            obj.get("cannotLead") is not True,
        )
    if route not in ("proposal", "accept", "leaderisresigningok"):
        raise GossipFormatError(f"unknown election message {route!r}")
    lid = get_uuid(obj, "masterId")
    lhttp = _endpoint(obj, "masterInternalHttp")
    if route == "accept":
        return Accept(sid, shttp, lid, lhttp, get_int(obj, "view"))
    if route == "leaderisresigningok":
        return LeaderIsResigningOk(lid, lhttp, sid, shttp)
    return Proposal(
        sid,
        shttp,
        lid,
        lhttp,
        get_int(obj, "view"),
        get_int(obj, "epochNumber"),
        get_int(obj, "epochPosition"),
        get_uuid(obj, "epochId"),
        get_int(obj, "lastCommitPosition"),
        get_int(obj, "writerCheckpoint"),
        get_int(obj, "chaserCheckpoint"),
    )


def decode_message(route: str, body: bytes) -> Message:
    """
    Parse the body of C{POST /elections/<route>}.

    @raise GossipFormatError: not JSON, unknown route, or wrong fields.
    """
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise GossipFormatError(f"election message is not JSON: {e}") from e
    return message_from_json(route, obj)
