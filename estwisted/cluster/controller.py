# -*- test-case-name: estwisted.cluster.test.test_controller -*-
"""
Cluster membership of one node: the node controller (node states, leader
discovery, failure detection, no-quorum) as a pure machine, and the Twisted
service that drives it with a clock and a peer transport.

Layers, bottom to top:

  - L{NodeMachine} (pure): owns a L{GossipMachine}, an L{ElectionMachine}
    and the node role machine L{estwisted.cluster.elections.NodeController}, which
    decides the node state (cluster.md sections 1.4, 1.5):
    C{Initializing} -> C{Unknown} (first discovering: listening to gossip
    for an existing leader, 20.6+) -> elections -> C{PreMaster} ->
    C{Master}, or C{PreReplica} -> C{CatchingUp} -> C{Slave} of another
    leader; read-only replicas go C{ReadOnlyLeaderless} ->
    C{PreReadOnlyReplica} -> C{ReadOnlyReplica}; C{ShuttingDown} on stop.
    NodeMachine adds what the network needs around it: discovery, seeds,
    failure detection, no-quorum timing, and performing the role effects.
    Every input takes C{now} and returns effects (data).
  - L{ClusterController} (Twisted service): a L{LoopingCall} on an injected
    L{IReactorTime} ticks the machine; it performs the effects through an
    L{IPeerTransport} (HTTP in L{estwisted.cluster.gossiphttp}, in-memory in tests)
    and feeds results back.  A failing tick or callback is logged and never
    stops the loop.
  - L{estwisted.cluster.wiring.make_cluster_service}: the wiring entry
    point for L{estwisted.node.service} (with the HTTP edge of
    L{estwisted.cluster.gossiphttp}, which imports this module).

Failure detection.  Replication decides: a follower's replication
link reports L{LeaderLinkLost} when it closes, and the leader's replication
detector reports L{NoQuorum} when it heard too few replicas for almost
the election timeout (L{estwisted.replication.state.no_quorum_timing}).
A full disk (L{StorageFull}) makes a leader hand leadership over, and
keeps the node from being elected until L{StorageFreed}.  A node that
neither leads nor follows names the leader gossip shows in its
L{LeadershipView}, so that its clients go there.  Besides, a follower probes
its leader: every C{probe_interval} it posts its gossip straight to the
leader; a refused connection, an error or no answer within
C{GossipTimeoutMs} marks the leader dead, and a leader whose own record no
longer says Master makes the follower start elections.  Any refused
connection (a killed peer refuses at once) marks that peer dead at once,
even our leader.

Replication.  The role machine's decisions reach replication as effects
(L{Lead}, L{Follow}, L{StandBy}), performed by the controller through an
L{IRoleReplication} (L{estwisted.replication.node.NodeReplication}); what
replication observes comes back as role inputs through
L{ClusterController.replication_event}: L{ReplicaSubscribed} (the leader
accepted our subscription), L{CloneAssigned} and L{SlaveAssigned} (the
leader's role assignments), L{LeaderLinkLost} and L{NoQuorum}.  The epoch
in our gossip record is the one the replication leader wrote in the log
(L{ClusterController.set_epoch}), never made up here.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Union

from attrs import define, evolve, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from estwisted.cluster.elections import (
    BecomeLeader,
    Broadcast,
    ChaserCaughtUp,
    CloneAssigned,
    ConfirmAlive,
    ElectionMachine,
    ElectionsTimedOut,
    GossipChanged,
    GossipUpdated,
    LeaderElected,
    LeaderLinkLost,
    LeaderNotLeading,
    Message,
    NodeController,
    NoQuorum,
    ReplicaSubscribed,
    Resign,
    ScheduleTimeout,
    SendTo,
    SendViewChangeProof,
    ShutdownRequested,
    SlaveAssigned,
    StartElections,
    StepDown,
    SubscribeTo,
    SystemStart,
    ViewChange,
    WaitForChaser,
    WriteEpoch,
)
from estwisted.cluster.elections import Effect as ElectionEffect
from estwisted.cluster.elections import Shutdown as ElectionShutdown
from estwisted.cluster.elections import StateChanged as RoleChanged
from estwisted.cluster.gossip import (
    ClusterInfo,
    ClusterView,
    Endpoint,
    GossipMachine,
    GossipSettings,
    MemberInfo,
    VNodeState,
)
from estwisted.cluster.leadership import Leadership, LeadershipView

#: 20.6+: how long a starting node listens to gossip for an existing leader
#: before it runs elections (it stops listening earlier once a quorum of
#: voting members is known alive and none of them leads).
DISCOVER_WINDOW = 3.0
#: Longest period of the controller tick.
MAX_TICK = 0.1
#: How often a seed that never answered is reported again in the log.
SEED_LOG_PERIOD = 30.0

_FOLLOWER_STATES = frozenset(
    {
        VNodeState.PreReplica,
        VNodeState.CatchingUp,
        VNodeState.Clone,
        VNodeState.Slave,
        VNodeState.PreReadOnlyReplica,
        VNodeState.ReadOnlyReplica,
    }
)
_LEADING_STATES = frozenset({VNodeState.PreMaster, VNodeState.Master})
#: Neither leading nor following: a client is sent to the leader gossip shows.
_ELECTING_STATES = frozenset({VNodeState.Unknown, VNodeState.ReadOnlyLeaderless})


# --- Settings --------------------------------------------------------------------


@frozen
class ClusterSettings:
    """
    Timings and sizes of the cluster machinery, in seconds.

    @ivar probe_interval: period of a follower's direct gossip to its leader
        (the stand-in for the replication heartbeat).
    @ivar tick: period of the controller tick.
    """

    cluster_size: int
    gossip: GossipSettings = GossipSettings()
    election_timeout: float = 1.0
    probe_interval: float = 0.7
    discover_window: float = DISCOVER_WINDOW
    read_only: bool = False

    @property
    def tick(self) -> float:
        return min(MAX_TICK, self.gossip.interval, self.probe_interval)

    @property
    def quorum(self) -> int:
        return self.cluster_size // 2 + 1

    @classmethod
    def from_config(cls, config: Any) -> ClusterSettings:
        """
        From a L{estwisted.node.config.NodeConfig}: C{GossipIntervalMs},
        C{GossipTimeoutMs}, C{GossipAllowedDifferenceMs},
        C{DeadMemberRemovalPeriodSec}, C{LeaderElectionTimeoutMs},
        C{IntTcpHeartbeatInterval} (the probe period is the smaller of it and
        the gossip interval), C{ClusterSize}, C{ReadOnlyReplica}.
        """
        interval = config.gossip_interval_ms / 1000.0
        return cls(
            cluster_size=config.cluster_size,
            gossip=GossipSettings(
                interval=interval,
                timeout=config.gossip_timeout_ms / 1000.0,
                allowed_difference=config.gossip_allowed_difference_ms / 1000.0,
                dead_member_removal=float(config.dead_member_removal_period_sec),
            ),
            election_timeout=config.leader_election_timeout_ms / 1000.0,
            probe_interval=min(interval, config.int_tcp_heartbeat_interval / 1000.0),
            read_only=bool(config.read_only_replica),
        )


def own_member_from_config(config: Any, instance_id: Optional[uuid.UUID] = None) -> MemberInfo:
    """
    This node's gossip record from its configuration: the advertised
    addresses (C{...AdvertiseAs}) and not the bound ones, so that clients
    behind NAT or in containers get addresses they can reach.
    """
    return MemberInfo(
        instance_id=instance_id or uuid.uuid4(),
        timestamp=0.0,
        state=VNodeState.Initializing,
        is_alive=True,
        internal_tcp=Endpoint(config.advertised_int_ip, config.advertised_int_tcp_port),
        external_tcp=Endpoint(config.advertised_ext_ip, config.advertised_ext_tcp_port),
        internal_http=Endpoint(config.advertised_int_ip, config.advertised_int_http_port),
        external_http=Endpoint(config.advertised_ext_ip, config.advertised_ext_http_port),
        internal_secure_tcp_port=config.advertised_int_secure_tcp_port,
        external_secure_tcp_port=config.advertised_ext_secure_tcp_port,
        node_priority=config.node_priority,
        is_read_only_replica=bool(config.read_only_replica),
    )


# --- Effects of the node machine ------------------------------------------------


@frozen
class GossipTo:
    """
    POST our table to C{target}; report the answer with
    L{NodeMachine.on_gossip_response} or L{NodeMachine.on_gossip_failure}
    (passing C{probe} back).

    @ivar probe: this is a follower's probe of its leader.
    """

    target: Endpoint
    info: ClusterInfo
    probe: bool = False


@frozen
class StateChanged:
    """
    The node state changed (for the log and for whoever shows the state).
    """

    old: VNodeState
    new: VNodeState
    leader: Optional[MemberInfo] = None


@frozen
class LogLine:
    """
    Something worth a line in the log.  C{level} is C{"info"}, C{"warn"} or
    C{"error"}.
    """

    level: str
    text: str


@frozen
class Lead:
    """
    The role machine made us leader: replication writes a new epoch
    numbered C{epoch_number} (or higher, after the log's newest) at the end
    of the log and starts serving replicas.
    """

    epoch_number: int


@frozen
class Follow:
    """
    The role machine wants us to replicate from C{leader} (a no-op when we
    already follow it: the link reconnects by itself).
    """

    leader: MemberInfo


@frozen
class StandBy:
    """
    Neither lead nor follow (no leader known, or elections, or stopping):
    replication stops; writes waiting for the quorum fail.
    """


ReplicationEffect = Union[Lead, Follow, StandBy]


@frozen
class EpochWritten:
    """
    Replication, told to L{Lead}, wrote and flushed the epoch record
    C{number} at C{position} and gates writes on the quorum: this node
    takes writes now.
    """

    position: int
    number: int
    epoch_id: uuid.UUID


@frozen
class StorageFull:
    """
    The node's disk is full (a write, a flush or an epoch failed with
    L{estwisted.core.errors.DiskFull}): it cannot lead.  A leader hands
    leadership over: it steps down, and elections never choose it until
    L{StorageFreed}.

    @ivar reason: the error, for the log.
    """

    reason: str = ""


@frozen
class StorageFreed:
    """
    The disk has room again: the node may lead again.
    """


#: What replication reports to the role machine (L{NodeMachine.on_replication}).
ReplicationEvent = Union[
    ReplicaSubscribed,
    CloneAssigned,
    SlaveAssigned,
    LeaderLinkLost,
    NoQuorum,
    EpochWritten,
    StorageFull,
    StorageFreed,
]

NodeEffect = Union[
    SendTo, Broadcast, ScheduleTimeout, GossipTo, StateChanged, LogLine, Lead, Follow, StandBy
]


# --- The pure node machine -------------------------------------------------------


def _utc(seconds: float) -> str:
    """
    A Unix time as an ISO 8601 UTC timestamp with milliseconds.
    """
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@define
class NodeMachine:
    """
    The cluster side of one node, without I/O (see the module docstring).

    @ivar roles: the node role machine (L{estwisted.cluster.elections.NodeController}):
        it decides the node state; this machine feeds it and performs its
        effects.
    @ivar discovering: still listening for an existing leader.
    @ivar answered: seeds and members that answered at least once.
    @ivar writable: replication reported our epoch written
        (L{EpochWritten}) since we last became Master.
    @ivar can_lead: C{False} between L{StorageFull} and L{StorageFreed}.
    """

    settings: ClusterSettings
    own: MemberInfo
    gossip: GossipMachine
    elections: Optional[ElectionMachine]
    rng: random.Random
    roles: NodeController
    discovering: bool = False
    discover_until: float = 0.0
    next_gossip_at: float = 0.0
    next_probe_at: float = 0.0
    probe_pending: bool = False
    followed_at: float = 0.0
    answered: set[Endpoint] = field(factory=set)
    seed_logged: dict[Endpoint, float] = field(factory=dict)
    skew_logged: dict[Endpoint, float] = field(factory=dict)
    held: list[Message] = field(factory=list)
    held_until: float = 0.0
    stopped: bool = False
    writable: bool = False
    can_lead: bool = True
    #: elections this node started (for C{/metrics})
    elections_started: int = 0
    _followed: Optional[uuid.UUID] = None

    @classmethod
    def create(
        cls,
        own: MemberInfo,
        seeds: Sequence[Endpoint],
        settings: ClusterSettings,
        now: float,
        rng: Optional[random.Random] = None,
    ) -> NodeMachine:
        own = evolve(own, timestamp=now, is_read_only_replica=settings.read_only)
        gossip = GossipMachine.start(own, seeds, now, settings.gossip)
        elections = None
        if not settings.read_only:
            elections = ElectionMachine(
                own=own, cluster_size=settings.cluster_size, timeout=settings.election_timeout
            )
        return cls(
            settings=settings,
            own=own,
            gossip=gossip,
            elections=elections,
            rng=rng or random.Random(),
            roles=NodeController(own_id=own.instance_id, read_only=settings.read_only),
        )

    # -- queries --

    @property
    def view(self) -> ClusterView:
        return self.gossip.view

    @property
    def state(self) -> VNodeState:
        return self.roles.state

    @property
    def leader_id(self) -> Optional[uuid.UUID]:
        """
        The leader this node follows (C{None} while it leads or knows none).
        """
        if self.roles.state in _LEADING_STATES:
            return None
        return self.roles.leader_id

    def leadership(self) -> LeadershipView:
        """
        The read model of our role: state, epoch, the leader's endpoints,
        whether we take writes (Master, and replication wrote our epoch).
        A node that neither leads nor follows (a deposed leader, elections
        under way) names the leader gossip shows (L{leader_in_gossip}), so
        that its clients are sent there.
        """
        takes_writes = self.writable and self.state is VNodeState.Master
        leader = None
        if not takes_writes and self.state in _FOLLOWER_STATES:
            leader = self.roles.leader
        elif not takes_writes and self.state in _ELECTING_STATES:
            leader = self.leader_in_gossip()
        return LeadershipView.of(self.own, self.state, leader, takes_writes)

    def leader_in_gossip(self) -> Optional[MemberInfo]:
        """
        The other member gossip shows as the one alive leader (C{Master},
        not a read-only replica), with an epoch at least ours; C{None} if
        there is none or more than one.
        """
        leaders = [
            m
            for m in self.view.alive_leaders()
            if m.instance_id != self.own.instance_id
            and not m.is_read_only_replica
            and m.epoch_number >= self.own.epoch_number
        ]
        return leaders[0] if len(leaders) == 1 else None

    def cluster_info(self) -> ClusterInfo:
        """
        The table as served by C{GET /gossip}.
        """
        return ClusterInfo(self.gossip.view.members, self.own.key)

    def leader(self) -> Optional[MemberInfo]:
        """
        The member this node currently believes leads (itself included).
        """
        if self.state in _LEADING_STATES:
            return self.own
        if self.leader_id is None:
            return None
        return self.view.by_instance(self.leader_id)

    # -- own record --

    def _set_own(self, own: MemberInfo, now: float) -> None:
        self.own = own
        self.gossip.update_own(own, now)
        if self.elections is not None:
            self.elections.own = own

    def update_positions(self, last_commit: int, writer: int, now: float) -> None:
        """
        The store moved: refresh the positions in our record.
        """
        o = self.own
        if (o.last_commit_position, o.writer_checkpoint) == (last_commit, writer):
            return
        self._set_own(
            evolve(
                o, last_commit_position=last_commit, writer_checkpoint=writer,
                chaser_checkpoint=writer,
            ),
            now,
        )

    def set_epoch(self, position: int, number: int, epoch_id: uuid.UUID, now: float) -> None:
        """
        The log's newest epoch changed (written here or replicated from the
        leader): advertise it in our gossip record, which elections compare
        first (cluster.md 3.4).  C{(-1, -1, UUID(int=0))} means no epoch.
        """
        o = self.own
        if (o.epoch_position, o.epoch_number, o.epoch_id) == (position, number, epoch_id):
            return
        self._set_own(
            evolve(o, epoch_number=number, epoch_position=position, epoch_id=epoch_id), now
        )

    def _feed(self, event: Any, now: float) -> list[NodeEffect]:
        """
        Give the role machine one input and perform what it asks.
        """
        if self.stopped:
            return []
        effects: list[NodeEffect] = []
        for effect in self.roles.handle(event):
            if isinstance(effect, RoleChanged):
                effects += self._state_changed(effect.previous, effect.state, now)
            elif isinstance(effect, StartElections):
                if not self.discovering:
                    effects += self._start_elections(now)
            elif isinstance(effect, WaitForChaser):
                # One process, one log: nothing to chase.
                effects += self._feed(ChaserCaughtUp(), now)
            elif isinstance(effect, WriteEpoch):
                effects.append(self._lead(now))
            elif isinstance(effect, SubscribeTo):
                # The link reconnects by itself after a loss (its own delay).
                effects.append(Follow(effect.leader))
            elif isinstance(effect, ConfirmAlive):
                effects += self._probe(now, at_once=True)
        return effects

    def on_replication(self, event: ReplicationEvent, now: float) -> list[NodeEffect]:
        """
        Replication observed something the role machine decides on: the
        leader accepted our subscription (L{ReplicaSubscribed}), assigned
        us a role (L{CloneAssigned}, L{SlaveAssigned}), our link to it
        closed (L{LeaderLinkLost}), or, leading, we kept too few replicas
        for too long (L{NoQuorum}) or wrote our epoch (L{EpochWritten}).
        """
        if isinstance(event, EpochWritten):
            self.set_epoch(event.position, event.number, event.epoch_id, now)
            if self.state is VNodeState.Master and not self.stopped:
                self.writable = True
            return []
        if isinstance(event, StorageFull):
            return self._storage_full(event, now)
        if isinstance(event, StorageFreed):
            return self._storage_freed(now)
        effects: list[NodeEffect] = []
        if isinstance(event, NoQuorum) and self.state is VNodeState.Master:
            effects.append(
                LogLine("warn", f"Leader without a quorum of {self.settings.quorum} nodes; "
                        "stepping down")
            )
        return effects + self._feed(event, now)

    def _set_can_lead(self, can_lead: bool) -> None:
        self.can_lead = can_lead
        if self.elections is not None:
            self.elections.can_lead = can_lead

    def _storage_full(self, event: StorageFull, now: float) -> list[NodeEffect]:
        """
        The disk is full: we cannot lead.  A leader hands over: it steps
        down (as without a quorum: Unknown, elections) and is never chosen
        until the disk has room (L{StorageFreed}); its clients are sent to
        the next leader as soon as gossip shows it.
        """
        if self.stopped:
            return []
        first = self.can_lead
        self._set_can_lead(False)
        effects: list[NodeEffect] = []
        if self.state is VNodeState.Master:
            effects.append(
                LogLine(
                    "error",
                    f"The disk is full ({event.reason or 'no space'}): resigning leadership; "
                    "reads are still served, writes go to the next leader",
                )
            )
            effects += self._feed(NoQuorum(), now)
        elif first:
            effects.append(
                LogLine(
                    "error",
                    f"The disk is full ({event.reason or 'no space'}): this node will not "
                    "lead until space is freed; reads are still served",
                )
            )
        return effects

    def _storage_freed(self, now: float) -> list[NodeEffect]:
        if self.can_lead or self.stopped:
            return []
        self._set_can_lead(True)
        return [LogLine("info", "The disk has room again: this node may lead again")]

    def _state_changed(self, old: VNodeState, state: VNodeState, now: float) -> list[NodeEffect]:
        following = self.leader_id
        self.gossip.leader_id = following
        if following != self._followed:
            self._followed = following
            self.followed_at = now
            self.probe_pending = False
            self.next_probe_at = now
        self.writable = False
        self._set_own(evolve(self.own, state=state), now)
        leader = self.view.by_instance(following) if following is not None else None
        effects: list[NodeEffect] = [StateChanged(old, state, leader)]
        if state is not VNodeState.Master and state not in _FOLLOWER_STATES:
            effects.append(StandBy())
        return effects

    def _lead(self, now: float) -> Lead:
        """
        We lead: replication writes a new epoch at the end of our log (and
        reports it back through L{set_epoch}).  Epoch numbers grow with
        every leadership: the next one is above ours and above the highest
        seen in gossip, so a later leader always has a higher epoch than an
        earlier one.
        """
        seen = max((m.epoch_number for m in self.view.members), default=-1)
        self.gossip.elected(self.own.instance_id, now)
        return Lead(max(self.own.epoch_number, seen) + 1)

    # -- start and stop --

    def start(self, now: float) -> list[NodeEffect]:
        """
        Storage is open: leave C{Initializing} and start listening for a
        leader.
        """
        self.next_gossip_at = now
        self.discovering = True
        self.discover_until = now + self.settings.discover_window
        return self._feed(SystemStart(), now) + self._gossip_changed(now)

    def shutdown(self, now: float) -> list[NodeEffect]:
        """
        The node is stopping: tell every alive member once (so that its
        followers elect a new leader at once), then ignore everything.
        """
        if self.stopped:
            return []
        effects = self._feed(ShutdownRequested(), now)
        self.stopped = True
        if self.elections is not None:
            self.elections.handle(ElectionShutdown(), now)
        info = self.cluster_info()
        for m in self.view.members:
            if m.key != self.own.key and m.is_alive and not m.is_seed_placeholder:
                effects.append(GossipTo(m.key, info))
        return effects

    def resign(self, now: float) -> list[NodeEffect]:
        """
        An operator asked this node to step down if it leads (20.6+
        C{ResignNode}): the election machine's L{Resign}, which tells the
        others and steps down once a quorum acknowledged; they then elect
        another leader.  Nothing happens on a node that does not lead.
        """
        if self.elections is None or self.stopped:
            return []
        return self._election_effects(self.elections.handle(Resign(), now), now)

    def set_node_priority(self, priority: int, now: float) -> None:
        """
        Change our gossiped C{node_priority} at run time (20.6+
        C{SetNodePriority}); later elections compare it.
        """
        if self.own.node_priority != priority:
            self._set_own(evolve(self.own, node_priority=priority), now)

    def add_seeds(self, seeds: Iterable[Endpoint], now: float) -> list[NodeEffect]:
        """
        Seeds found late (DNS): add placeholders for the new ones.
        """
        new = [s for s in seeds if s not in self.gossip.seeds and s not in self.own.endpoints()]
        if not new:
            return []
        self.gossip.seeds = self.gossip.seeds + tuple(new)
        members = list(self.view.members)
        known = {m.key for m in members}
        members += [MemberInfo.seed(s, now) for s in new if s not in known]
        self.gossip.view = ClusterView(tuple(members))
        return self._gossip_changed(now)

    # -- time --

    def tick(self, now: float) -> list[NodeEffect]:
        """
        The periodic part: gossip rounds, the end of discovery, probes of
        the leader and overdue gossip answers.
        """
        if self.stopped or self.state is VNodeState.Initializing:
            return []
        effects: list[NodeEffect] = []
        late = self.gossip.check_timeouts(now)
        for peer in late:
            line = self._seed_silent(peer, "no answer in time", now)
            if line is not None:
                effects.append(line)
        if late:
            effects += self._gossip_changed(now)
        if now >= self.next_gossip_at:
            send, delay = self.gossip.tick(now, self.rng)
            self.next_gossip_at = now + delay
            if send is not None:
                effects.append(GossipTo(send.target, send.info))
        if self.discovering and now >= self.discover_until:
            effects += self._end_discovery(now, "no leader seen in gossip")
        effects += self._probe(now)
        if self.held and (now >= self.held_until or not self.probe_pending):
            effects += self._release(now)
        return effects

    def _probe(self, now: float, at_once: bool = False) -> list[NodeEffect]:
        if self.leader_id is None or self.state not in _FOLLOWER_STATES:
            return []
        if self.probe_pending or (now < self.next_probe_at and not at_once):
            return []
        leader = self.view.by_instance(self.leader_id)
        if leader is None:
            return []
        self.probe_pending = True
        self.next_probe_at = now + self.settings.probe_interval
        self.gossip.view = self.view.refresh_own(self.own, now)
        return [GossipTo(leader.key, self.cluster_info(), probe=True)]

    # -- discovery --

    def _end_discovery(self, now: float, why: str) -> list[NodeEffect]:
        if not self.discovering:
            return []
        self.discovering = False
        if self.elections is None:
            return []
        return [LogLine("info", f"Starting elections: {why}")] + self._start_elections(now)

    def _follow(self, leader: MemberInfo, now: float) -> list[NodeEffect]:
        """
        Follow a leader found in gossip (20.6+ C{LeaderFound}): no election.
        """
        self.discovering = False
        machine = self.elections
        if machine is not None:
            machine.adopt_leader(leader.instance_id)
        return self._feed(LeaderElected(machine.last_installed_view if machine else -1, leader),
                          now)

    # -- gossip --

    def _seed_answered(self, peer: Endpoint) -> list[NodeEffect]:
        if peer in self.answered:
            return []
        self.answered.add(peer)
        if peer in self.gossip.seeds and peer in self.seed_logged:
            return [LogLine("info", f"Gossip seed {peer} answers now")]
        return []

    def _seed_silent(self, peer: Endpoint, reason: str, now: float) -> Optional[LogLine]:
        if peer in self.answered or peer not in self.gossip.seeds:
            return None
        last = self.seed_logged.get(peer)
        if last is not None and now - last < SEED_LOG_PERIOD:
            return None
        self.seed_logged[peer] = now
        return LogLine("warn", f"Gossip seed {peer} does not answer ({reason})")

    def on_gossip_request(
        self, info: ClusterInfo, now: float
    ) -> tuple[Optional[ClusterInfo], list[NodeEffect]]:
        """
        A peer posted its table (C{POST /gossip}).

        @return: the reply (our merged table), or C{None} when the gossip
            was rejected for clock difference; and the effects.
        """
        if self.stopped:
            return self.cluster_info(), []
        info = ClusterInfo(self._without_stale(info.members, info.server), info.server)
        reply, result = self.gossip.on_gossip(info, now)
        if result.rejected is not None:
            return None, self._skew_line(result.rejected, now)
        effects: list[NodeEffect] = []
        if info.server is not None:
            effects += self._seed_answered(info.server)
        return reply, effects + self._gossip_changed(now)

    def _without_stale(
        self, members: Sequence[MemberInfo], peer: Optional[Endpoint]
    ) -> tuple[MemberInfo, ...]:
        """
        Leave out third-party records of a I{former} process at an address
        where we know a different one at least as recent.  The merge rule
        ranks records by epoch and writer checkpoint first, which is right
        for one process but would let a stale record of a node's previous
        run (higher epoch, more data, perhaps dead) replace the record of
        the process now running there, again and again.  Between two
        processes at one address the newer record wins.
        """
        out = []
        for m in members:
            existing = self.view.get(m.key)
            if (
                existing is not None
                and not existing.is_seed_placeholder
                and existing.instance_id != m.instance_id
                and (peer is None or peer not in m.endpoints())
                and m.timestamp <= existing.timestamp
            ):
                continue
            out.append(m)
        return tuple(out)

    def _skew_line(self, skew: Any, now: float) -> list[NodeEffect]:
        """
        One error line per peer (again at most every L{SEED_LOG_PERIOD})
        naming both clocks, when gossip is refused for clock difference.
        """
        last = self.skew_logged.get(skew.peer)
        if last is not None and now - last < SEED_LOG_PERIOD:
            return []
        self.skew_logged[skew.peer] = now
        return [
            LogLine(
                "error",
                f"Refused {skew.peer} as a cluster member: its clock says "
                f"{_utc(skew.theirs)}, ours says {_utc(skew.ours)} "
                f"({abs(skew.difference) * 1000:,.0f} ms apart, more than the allowed "
                f"{self.settings.gossip.allowed_difference * 1000:,.0f} ms of "
                f"GossipAllowedDifferenceMs)",
            )
        ]

    def on_gossip_response(
        self, peer: Endpoint, info: ClusterInfo, now: float, probe: bool = False
    ) -> list[NodeEffect]:
        """
        The peer we posted to answered with its table.
        """
        if self.stopped:
            return []
        if probe:
            self.probe_pending = False
        info = ClusterInfo(self._without_stale(info.members, peer), info.server)
        result = self.gossip.on_response(peer, info, now)
        if result.rejected is not None:
            return self._skew_line(result.rejected, now)
        effects = self._seed_answered(peer)
        effects += self._gossip_changed(now)
        if probe and self.leader_id is not None and self.state in _FOLLOWER_STATES:
            leader = self.view.get(peer)
            grace = self.settings.election_timeout
            if (
                leader is not None
                and leader.instance_id == self.leader_id
                and leader.state not in _LEADING_STATES
                and now - self.followed_at >= grace
            ):
                effects.append(
                    LogLine("info", f"Leader {peer} is {leader.state.value} now; new election")
                )
                effects += self._feed(LeaderNotLeading(), now)
        if probe:
            effects += self._release(now)
        return effects

    def on_gossip_failure(
        self,
        peer: Endpoint,
        now: float,
        *,
        refused: bool = False,
        probe: bool = False,
        reason: str = "",
    ) -> list[NodeEffect]:
        """
        A gossip post to C{peer} failed: refused, timed out, error status or
        unreadable answer.  A refused connection or a failed probe marks
        C{peer} dead even if it is our leader.
        """
        if self.stopped:
            return []
        if probe:
            self.probe_pending = False
        effects: list[NodeEffect] = []
        line = self._seed_silent(peer, reason or ("refused" if refused else "failed"), now)
        if line is not None:
            effects.append(line)
        self.gossip.on_failure(peer, now)
        if refused or probe:
            member = self.view.get(peer)
            if member is not None and member.is_alive:
                self.gossip.view = self.view.mark_dead(peer, now)
            if probe and member is not None:
                effects.append(
                    LogLine("warn", f"Leader {peer} does not answer ({reason or 'failed'})")
                )
        effects += self._gossip_changed(now)
        if probe:
            effects += self._release(now)
        return effects

    def on_peer_refused(self, peer: Endpoint, now: float) -> list[NodeEffect]:
        """
        An election message to C{peer} was refused: it is dead.
        """
        if self.stopped:
            return []
        member = self.view.get(peer)
        if member is None or not member.is_alive:
            return []
        self.gossip.view = self.view.mark_dead(peer, now)
        return self._gossip_changed(now)

    def _gossip_changed(self, now: float) -> list[NodeEffect]:
        """
        React to the current table: electorate, discovery, followers of a
        lost leader, two leaders.
        """
        if self.stopped:
            return []
        view = self.view
        if self.settings.read_only:
            return self._feed(GossipChanged(view.members), now)
        assert self.elections is not None
        self.elections.handle(GossipUpdated(view.members), now)
        if self.discovering:
            leaders = [
                m
                for m in view.alive_leaders()
                if m.instance_id != self.own.instance_id and not m.is_read_only_replica
            ]
            if len(leaders) == 1:
                return [
                    LogLine("info", f"Found leader {leaders[0].internal_http} in gossip")
                ] + self._follow(leaders[0], now)
            voters = [
                m
                for m in view.electorate()
                if not m.is_seed_placeholder and m.state is not VNodeState.ShuttingDown
            ]
            if not leaders and len(voters) >= self.settings.quorum:
                return self._end_discovery(now, f"{len(voters)} nodes alive and no leader")
            return []
        return self._feed(GossipChanged(view.members), now)

    # -- elections --

    def _start_elections(self, now: float) -> list[NodeEffect]:
        if self.elections is None or self.stopped:
            return []
        self.elections_started += 1
        return self._election_effects(self.elections.handle(StartElections(), now), now)

    def on_election_message(self, message: Message, now: float) -> list[NodeEffect]:
        """
        A peer sent an election message.
        """
        if self.elections is None or self.stopped:
            return []
        if self.held or self._should_hold(message):
            # Someone starts an election while we think our leader is
            # fine: ask the leader first, so that we enter the election
            # with the same electorate as the sender (a killed leader
            # refuses at once).  Messages wait, in order, for the answer.
            if not self.held:
                self.held_until = now + self.settings.gossip.timeout
            self.held.append(message)
            return self._probe(now, at_once=True)
        return self._election_effects(self.elections.handle(message, now), now)

    def _should_hold(self, message: Message) -> bool:
        if not isinstance(message, ViewChange) or self.elections is None:
            return False
        if self.leader_id is None or self.state not in _FOLLOWER_STATES:
            return False
        if message.attempted_view <= self.elections.last_attempted_view:
            return False
        leader = self.view.by_instance(self.leader_id)
        return leader is not None and leader.is_alive

    def _release(self, now: float) -> list[NodeEffect]:
        """
        Feed the election messages held during a leader check.
        """
        held, self.held = self.held, []
        effects: list[NodeEffect] = []
        if self.elections is None or self.stopped:
            return effects
        for message in held:
            effects += self._election_effects(self.elections.handle(message, now), now)
        return effects

    def on_timer(
        self, event: Union[ElectionsTimedOut, SendViewChangeProof], now: float
    ) -> list[NodeEffect]:
        """
        A timer the election machine asked for (L{ScheduleTimeout}) fired.
        """
        if self.elections is None or self.stopped:
            return []
        return self._election_effects(self.elections.handle(event, now), now)

    def _election_effects(self, effects: list[ElectionEffect], now: float) -> list[NodeEffect]:
        out: list[NodeEffect] = []
        for effect in effects:
            if isinstance(effect, LeaderElected):
                out += self._elected(effect, now)
            elif isinstance(effect, BecomeLeader):
                out += self._become_leader(effect, now)
            elif isinstance(effect, StepDown):
                # Resigned with a quorum's consent: like a lost quorum, the
                # leader becomes Unknown and elections start.
                out += self._feed(NoQuorum(), now)
            else:
                out.append(effect)
        return out

    def _elected(self, effect: LeaderElected, now: float) -> list[NodeEffect]:
        leader = effect.leader
        if leader.instance_id == self.own.instance_id and not self.can_lead:
            # elections never choose a node that cannot lead; should a
            # stale vote do it anyway, it does not take the role
            return [
                LogLine("warn", f"Elected in view {effect.view} but the disk is full; "
                        "new election")
            ] + self._start_elections(now)
        self.discovering = False
        self.gossip.elected(leader.instance_id, now)
        if leader.instance_id == self.own.instance_id:
            line = LogLine("info", f"Elected leader in view {effect.view}")
        else:
            line = LogLine(
                "info", f"Elections done in view {effect.view}: leader is {leader.internal_http}"
            )
        return [line] + self._feed(effect, now)

    def _become_leader(self, effect: BecomeLeader, now: float) -> list[NodeEffect]:
        """
        The election machine's word that we won: the role machine already
        made us PreMaster then Master and wrote the epoch on
        L{LeaderElected}; nothing more to do.
        """
        return []


# --- The transport seam -------------------------------------------------------------


class PeerRefusedError(Exception):
    """
    The peer refused the connection: nothing listens there (a killed node).
    """


class IPeerTransport(Interface):
    """
    How a node reaches its peers' internal HTTP endpoints.  Implemented over
    HTTP by L{estwisted.cluster.gossiphttp.HttpPeerTransport} and in memory by
    tests.
    """

    timeout = Attribute("Seconds after which a gossip request fails.")

    def post_gossip(target: Endpoint, info: ClusterInfo) -> Deferred[ClusterInfo]:  # noqa: N805
        """
        C{POST /gossip}: fires with the peer's table, or fails
        (L{PeerRefusedError} when the connection was refused).
        """

    def post_election(target: Endpoint, message: Message) -> Deferred[None]:  # noqa: N805
        """
        C{POST /elections/<route>}: fires when the peer took it, or fails
        (L{PeerRefusedError} when the connection was refused).
        """


class IRoleReplication(Interface):
    """
    What the node controller asks of replication (the L{Lead}, L{Follow}
    and L{StandBy} effects).  Implemented by
    L{estwisted.replication.node.NodeReplication}; replication reports back
    through L{ClusterController.replication_event} and
    L{ClusterController.set_epoch}.
    """

    def lead(epoch_number: int) -> None:  # noqa: N805
        """
        Write a new epoch (numbered at least C{epoch_number}) and serve
        replicas; a no-op while already leading.
        """

    def follow(leader: MemberInfo) -> None:  # noqa: N805
        """
        Stop leading (failing writes that wait for the quorum) and
        replicate from C{leader}; a no-op while already following it.
        """

    def stand_by() -> None:  # noqa: N805
        """
        Neither lead nor follow.
        """


# --- The Twisted driver -----------------------------------------------------------------


class ClusterController(Service):
    """
    Drives a L{NodeMachine}: ticks it on C{clock} with a L{LoopingCall},
    performs its effects through C{transport}, feeds answers back, and
    serves the HTTP edge (L{estwisted.cluster.gossiphttp.ClusterResource}).

    @ivar positions: returns C{(last_commit_position, writer_checkpoint)}
        of the local store; read on every tick.
    @ivar on_state: called with every L{StateChanged}.
    @ivar replication: performs the L{Lead}, L{Follow} and L{StandBy}
        effects (see L{drive}); without one they are dropped.
    @ivar leadership: where the machine's L{LeadershipView} is published
        after every change, for the edges and replication to read.
    """

    _log = Logger()

    def __init__(
        self,
        machine: NodeMachine,
        transport: Any,
        clock: IReactorTime,
        positions: Optional[Callable[[], tuple[int, int]]] = None,
        on_state: Optional[Callable[[StateChanged], None]] = None,
        leadership: Optional[Leadership] = None,
    ) -> None:
        self.machine = machine
        self.leadership = leadership or Leadership(machine.leadership())
        self.leadership.publish(machine.leadership())
        self.transport = transport
        self.clock = clock
        self.positions = positions
        self.on_state = on_state
        self.replication: Optional[IRoleReplication] = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._timers: set[IDelayedCall] = set()
        self._in_flight: set[Deferred[Any]] = set()

    # -- queries for the HTTP edge --

    @property
    def state(self) -> VNodeState:
        return self.machine.state

    def cluster_info(self) -> ClusterInfo:
        self._refresh()
        return self.machine.cluster_info()

    def gossip_document(self) -> dict[str, Any]:
        """
        The C{/gossip} document as a JSON-ready dict
        (L{estwisted.http.info.NodeInfo.gossip_view}).
        """
        from estwisted.cluster.gossip import cluster_to_json

        return cluster_to_json(self.cluster_info())

    def handle_gossip(self, info: ClusterInfo) -> Optional[ClusterInfo]:
        """
        C{POST /gossip}: merge and return our table (C{None}: rejected).
        """
        self._refresh()
        reply, effects = self.machine.on_gossip_request(info, self.clock.seconds())
        self._run(effects)
        return reply

    def handle_election(self, message: Message) -> None:
        """
        C{POST /elections/<route>}.
        """
        self._run(self.machine.on_election_message(message, self.clock.seconds()))

    def set_epoch(self, position: int, number: int, epoch_id: uuid.UUID) -> None:
        """
        Advertise the log's newest epoch in our gossip record (see
        L{NodeMachine.set_epoch}).
        """
        self.machine.set_epoch(position, number, epoch_id, self.clock.seconds())
        self._publish()

    def add_seeds(self, seeds: Iterable[Endpoint]) -> None:
        self._run(self.machine.add_seeds(seeds, self.clock.seconds()))

    def resign(self) -> None:
        """
        Step down if leading (see L{NodeMachine.resign}).
        """
        self._run(self.machine.resign(self.clock.seconds()))

    def set_node_priority(self, priority: int) -> None:
        """
        Gossip C{priority} as our node priority from now on.
        """
        self.machine.set_node_priority(priority, self.clock.seconds())
        self._publish()

    # -- replication --

    def drive(self, replication: IRoleReplication) -> None:
        """
        Perform the role machine's replication effects with
        C{replication} from now on (set once, before L{startService}).
        """
        self.replication = replication

    def replication_event(self, event: ReplicationEvent) -> None:
        """
        Replication observed C{event} (see L{NodeMachine.on_replication}).
        """
        self._guard(self.machine.on_replication, event, self.clock.seconds())

    # -- lifecycle --

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._refresh()
        self._run(self.machine.start(self.clock.seconds()))
        d = self._loop.start(self.machine.settings.tick, now=True)
        d.addErrback(lambda f: self._log.failure("Cluster tick loop stopped", f))

    def stopService(self) -> Deferred[None]:
        """
        Announce C{ShuttingDown} to the alive members (waiting at most the
        gossip timeout), stop ticking and cancel timers.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        sends = self._run(self.machine.shutdown(self.clock.seconds()))
        done: Deferred[None] = Deferred()
        if not sends:
            done.callback(None)
            return done
        timeout = self.clock.callLater(self.machine.settings.gossip.timeout, self._finish, done)
        all_sent = DeferredList(sends, consumeErrors=True)

        def finished(_: object) -> None:
            if timeout.active():
                timeout.cancel()
            self._finish(done)

        all_sent.addBoth(finished)
        return done

    @staticmethod
    def _finish(done: Deferred[None]) -> None:
        if not done.called:
            done.callback(None)

    # -- the loop --

    def _refresh(self) -> None:
        if self.positions is None:
            return
        try:
            commit, writer = self.positions()
        except Exception:
            self._log.failure("Could not read the store positions")
            return
        self.machine.update_positions(commit, writer, self.clock.seconds())

    def _tick(self) -> None:
        try:
            self._refresh()
            self._run(self.machine.tick(self.clock.seconds()))
        except Exception:
            self._log.failure("Cluster tick failed; continuing")

    def _guard(self, f: Callable[..., list[NodeEffect]], *args: Any, **kw: Any) -> None:
        try:
            self._run(f(*args, **kw))
        except Exception:
            self._log.failure("Cluster callback failed; continuing")

    def _run(self, effects: list[NodeEffect]) -> list[Deferred[Any]]:
        """
        Perform effects.

        @return: the Deferreds of the gossip posts started.
        """
        started: list[Deferred[Any]] = []
        for effect in effects:
            try:
                d = self._perform(effect)
            except Exception:
                self._log.failure("Cluster effect {effect!r} failed", effect=effect)
                continue
            if d is not None:
                started.append(d)
        self._publish()
        return started

    def _publish(self) -> None:
        try:
            self.leadership.publish(self.machine.leadership())
        except Exception:
            self._log.failure("Publishing the leadership view failed")

    def _perform(self, effect: NodeEffect) -> Optional[Deferred[Any]]:
        if isinstance(effect, GossipTo):
            return self._send_gossip(effect)
        if isinstance(effect, SendTo):
            self._send_election(effect.target, effect.message)
        elif isinstance(effect, Broadcast):
            for target in effect.targets:
                self._send_election(target, effect.message)
        elif isinstance(effect, ScheduleTimeout):
            self._schedule(effect.delay, effect.event)
        elif isinstance(effect, StateChanged):
            self._state_changed(effect)
        elif isinstance(effect, LogLine):
            emit = getattr(self._log, effect.level, self._log.info)
            emit("{text}", text=effect.text)
        elif self.replication is not None:
            if isinstance(effect, Lead):
                self.replication.lead(effect.epoch_number)
            elif isinstance(effect, Follow):
                self.replication.follow(effect.leader)
            elif isinstance(effect, StandBy):
                self.replication.stand_by()
        return None

    def _state_changed(self, effect: StateChanged) -> None:
        leader = ""
        if effect.leader is not None:
            leader = f" (leader {effect.leader.internal_http})"
        self._log.info(
            "Node state {old} -> {new}{leader}",
            old=effect.old.value,
            new=effect.new.value,
            leader=leader,
        )
        if self.on_state is not None:
            self.on_state(effect)

    def _schedule(self, delay: float, event: Union[ElectionsTimedOut, SendViewChangeProof]) -> None:
        call: Optional[IDelayedCall] = None

        def fire() -> None:
            if call is not None:
                self._timers.discard(call)
            self._guard(self.machine.on_timer, event, self.clock.seconds())

        call = self.clock.callLater(delay, fire)
        self._timers.add(call)

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._in_flight.add(d)

        def untrack(result: object) -> object:
            self._in_flight.discard(d)
            return result

        return d.addBoth(untrack)

    def _send_gossip(self, effect: GossipTo) -> Deferred[Any]:
        target, probe = effect.target, effect.probe
        d = self._track(self.transport.post_gossip(target, effect.info))

        def answered(info: ClusterInfo) -> None:
            self._refresh()
            self._guard(
                self.machine.on_gossip_response, target, info, self.clock.seconds(), probe
            )

        def failed(f: Failure) -> None:
            self._guard(
                self.machine.on_gossip_failure,
                target,
                self.clock.seconds(),
                refused=f.check(PeerRefusedError) is not None,
                probe=probe,
                reason=f.getErrorMessage() or f.type.__name__,  # type: ignore[union-attr]
            )

        d.addCallbacks(answered, failed)
        return d

    def _send_election(self, target: Endpoint, message: Message) -> None:
        d = self._track(self.transport.post_election(target, message))

        def failed(f: Failure) -> None:
            if f.check(PeerRefusedError):
                self._guard(self.machine.on_peer_refused, target, self.clock.seconds())

        d.addErrback(failed)


__all__ = [
    "ClusterController",
    "ClusterSettings",
    "Follow",
    "GossipTo",
    "IPeerTransport",
    "IRoleReplication",
    "Lead",
    "LogLine",
    "NodeMachine",
    "PeerRefusedError",
    "StandBy",
    "StateChanged",
    "StorageFreed",
    "StorageFull",
    "own_member_from_config",
]
