# -*- test-case-name: estwisted.test.test_elections -*-
"""
A deterministic in-memory cluster: N nodes, each running the pure gossip
machine (L{estwisted.gossip.GossipMachine}) and election machine
(L{estwisted.elections.ElectionMachine}) under the pure node controller
(L{estwisted.elections.NodeController}), connected by a simulated network
that can drop, duplicate, delay (and so reorder) messages and be
partitioned, all driven by one fake clock and one seeded L{random.Random}.
The same seed and the same calls give the same run.

The simulator plays storage and replication for the controller, crudely:

  - the chaser is always caught up (L{WaitForChaser} is answered at once),
    and writing an epoch bumps the epoch number and the log position;
  - a replica (or read-only replica) sends a heartbeat to its leader every
    L{ClusterSimulator.heartbeat_interval}; the first answer from a Master is
    the subscription (L{ReplicaSubscribed}, then L{SlaveAssigned} for a
    voting node); each answer carries the leader's log position and last
    epoch, which the replica takes over: that is all the "replication"
    there is;
  - a heartbeat unanswered for L{ClusterSimulator.heartbeat_timeout} is a
    lost link (L{LeaderLinkLost}); its L{ConfirmAlive} check is taken as
    failed, so the leader is marked dead, as v5's C{GET /gossip} on an
    unreachable node does;
  - an answer from a node that is no longer Master is L{LeaderNotLeading};
  - a Master that has heard from fewer than C{ClusterSize // 2} voting
    replicas in the last L{ClusterSimulator.no_quorum_timeout} seconds gets
    L{NoQuorum}.

Every decision is recorded in L{ClusterSimulator.decisions} so tests can
check safety (one leader per view) after the fact.
"""

from __future__ import annotations

import functools
import heapq
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Union

from attrs import define, evolve, field, frozen

from estwisted.elections import (
    Broadcast,
    ChaserCaughtUp,
    ConfirmAlive,
    ControllerInput,
    Effect,
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
    ScheduleTimeout,
    SendTo,
    SendViewChangeProof,
    SlaveAssigned,
    StartElections,
    StateChanged,
    StepDown,
    SubscribeTo,
    SystemStart,
    WaitForChaser,
    WriteEpoch,
)
from estwisted.gossip import (
    ClusterInfo,
    Endpoint,
    GossipMachine,
    GossipSettings,
    MemberInfo,
    VNodeState,
)
from estwisted.replication import NO_QUORUM_TIMEOUT

#: Start of simulated time (a plausible Unix time, so gossip timestamps look
#: real).
EPOCH = 1_700_000_000.0


@frozen
class Faults:
    """
    How the network misbehaves.  Every message is dropped with probability
    C{drop}; a message that gets through is delivered once more with
    probability C{duplicate}; each delivery is delayed uniformly between
    C{min_delay} and C{max_delay} seconds, so messages overtake each other.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: float = 0.001
    max_delay: float = 0.02


#: A well-behaved network.
RELIABLE = Faults()


@frozen
class GossipRequest:
    info: ClusterInfo


@frozen
class GossipReply:
    info: ClusterInfo


@frozen
class Heartbeat:
    """
    Replica to leader over the (simulated) replication link.
    """

    sent_at: float


@frozen
class HeartbeatReply:
    """
    The leader's answer, with its log position and last epoch: the replica
    "replicates" by taking them over (the simulation has no log).
    """

    sent_at: float
    leader: MemberInfo


Payload = Union[GossipRequest, GossipReply, Heartbeat, HeartbeatReply, Message]


@frozen
class Decision:
    """
    Node C{node} decided C{leader} in C{view} at C{time}.
    """

    time: float
    node: uuid.UUID
    view: int
    leader: uuid.UUID


@define
class SimNode:
    """
    One simulated node.

    @ivar heartbeats: when each voting replica last reached this node while
        it was Master.
    """

    own: MemberInfo
    gossip: GossipMachine
    elections: Optional[ElectionMachine]
    controller: NodeController
    crashed: bool = False
    pending_heartbeat: Optional[float] = None
    heartbeats: dict[uuid.UUID, float] = field(factory=dict)
    master_since: Optional[float] = None
    had_quorum_at: float = 0.0

    @property
    def instance_id(self) -> uuid.UUID:
        return self.own.instance_id

    @property
    def state(self) -> VNodeState:
        """
        The controller's node state.
        """
        return self.controller.state

    @property
    def leader_id(self) -> Optional[uuid.UUID]:
        """
        The leader this node follows (or itself when leading).
        """
        return self.controller.leader_id

    @property
    def endpoint(self) -> Endpoint:
        return self.own.internal_http

    @property
    def is_read_only(self) -> bool:
        return self.own.is_read_only_replica


def make_member(
    index: int,
    instance_id: uuid.UUID,
    *,
    read_only: bool = False,
    epoch_number: int = 0,
    writer_checkpoint: int = 0,
    last_commit_position: Optional[int] = None,
    node_priority: int = 0,
) -> MemberInfo:
    """
    The record of simulated node C{index}: every endpoint on 127.0.0.C{index+1}
    with the default ports.
    """
    host = f"127.0.0.{index + 1}"
    commit = writer_checkpoint if last_commit_position is None else last_commit_position
    return MemberInfo(
        instance_id=instance_id,
        timestamp=EPOCH,
        state=VNodeState.Initializing,
        is_alive=True,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
        last_commit_position=commit,
        writer_checkpoint=writer_checkpoint,
        chaser_checkpoint=writer_checkpoint,
        epoch_position=max(writer_checkpoint - 100, -1) if epoch_number >= 0 else -1,
        epoch_number=epoch_number,
        epoch_id=uuid.UUID(int=epoch_number + 1) if epoch_number >= 0 else uuid.UUID(int=0),
        node_priority=node_priority,
        is_read_only_replica=read_only,
    )


@define
class ClusterSimulator:
    """
    N nodes, one network, one clock.

    Build with L{ClusterSimulator.build}, then L{start} and L{run_for};
    change the network with L{set_faults}, L{partition}, L{heal}, L{crash}.
    """

    cluster_size: int
    rng: random.Random
    gossip_settings: GossipSettings = GossipSettings()
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 1.0
    no_quorum_timeout: float = NO_QUORUM_TIMEOUT
    now: float = EPOCH
    faults: Faults = RELIABLE
    nodes: list[SimNode] = field(factory=list)
    decisions: list[Decision] = field(factory=list)
    delivered: int = 0
    _groups: Optional[dict[Endpoint, int]] = None
    _queue: list[tuple[float, int, str, Any]] = field(factory=list)
    _seq: int = 0

    @classmethod
    def build(
        cls,
        members: Sequence[MemberInfo],
        *,
        cluster_size: Optional[int] = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> ClusterSimulator:
        """
        A cluster of the given members; every node has every other node as
        a gossip seed.  C{cluster_size} defaults to the number of voting
        (not read-only) members.
        """
        voters = sum(1 for m in members if not m.is_read_only_replica)
        sim = cls(cluster_size=cluster_size or voters, rng=random.Random(seed), **kwargs)
        seeds = [m.internal_http for m in members]
        for m in members:
            own = evolve(m, state=VNodeState.Initializing, timestamp=sim.now)
            gossip = GossipMachine.start(
                own, [s for s in seeds if s != own.internal_http], sim.now, sim.gossip_settings
            )
            elections = None
            if not m.is_read_only_replica:
                elections = ElectionMachine(
                    own=own, cluster_size=sim.cluster_size, timeout=sim.election_timeout
                )
            controller = NodeController(own.instance_id, read_only=own.is_read_only_replica)
            sim.nodes.append(SimNode(own, gossip, elections, controller))
        return sim

    @classmethod
    def random_cluster(
        cls, voters: int, read_only: int = 0, *, seed: int = 0, **kwargs: Any
    ) -> ClusterSimulator:
        """
        C{voters} voting nodes with random data (epoch 0-2, positions,
        priorities) and C{read_only} read-only replicas.
        """
        rng = random.Random(seed ^ 0x5EED)
        members = []
        for i in range(voters + read_only):
            writer = rng.randrange(0, 5) * 1000
            members.append(
                make_member(
                    i,
                    uuid.UUID(int=rng.getrandbits(128)),
                    read_only=i >= voters,
                    epoch_number=rng.randrange(0, 3),
                    writer_checkpoint=writer,
                    node_priority=rng.randrange(0, 2),
                )
            )
        return cls.build(members, cluster_size=voters, seed=seed, **kwargs)

    # -- the world --

    def node(self, key: Union[int, uuid.UUID, Endpoint]) -> SimNode:
        if isinstance(key, int):
            return self.nodes[key]
        for n in self.nodes:
            if n.instance_id == key or n.endpoint == key:
                return n
        raise KeyError(key)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """
        Only nodes in the same group can talk; nodes in no group talk to
        nobody.  Messages in flight across the cut are lost.
        """
        self._groups = {}
        for g, members in enumerate(groups):
            for i in members:
                self._groups[self.nodes[i].endpoint] = g

    def heal(self) -> None:
        self._groups = None

    def crash(self, index: int) -> None:
        """
        Stop a node for good: it handles nothing more and sends nothing.
        """
        self.nodes[index].crashed = True

    def is_crashed(self, index: int) -> bool:
        return self.nodes[index].crashed

    def instance_ids(self) -> list[uuid.UUID]:
        return [n.instance_id for n in self.nodes]

    def can_talk(self, a: Endpoint, b: Endpoint) -> bool:
        if self._groups is None:
            return True
        ga, gb = self._groups.get(a), self._groups.get(b)
        return ga is not None and ga == gb

    def _push(self, at: float, kind: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, data))

    def send(self, src: Endpoint, dst: Endpoint, payload: Payload) -> None:
        """
        Put a message on the network, subject to the current faults.
        """
        if not self.can_talk(src, dst) or self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            delay = self.rng.uniform(self.faults.min_delay, self.faults.max_delay)
            self._push(self.now + delay, "deliver", (src, dst, payload))

    # -- running --

    def start(self) -> None:
        """
        Start every node: gossip rounds begin at a random offset and the
        controllers get L{SystemStart} (voting nodes start elections).
        """
        for i in range(len(self.nodes)):
            self._push(self.now + self.rng.uniform(0, 0.1), "gossip", i)
            self._push(self.now + self.rng.uniform(0, self.heartbeat_interval), "controller", i)
            self._control(i, SystemStart())

    def run_until(self, t: float) -> None:
        """
        Process everything due up to time C{t} (absolute), then set the clock
        to C{t}.
        """
        while self._queue and self._queue[0][0] <= t:
            at, _, kind, data = heapq.heappop(self._queue)
            self.now = at
            getattr(self, "_do_" + kind)(data)
        self.now = t

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # -- handlers --

    def _do_deliver(self, data: tuple[Endpoint, Endpoint, Payload]) -> None:
        src, dst, payload = data
        if not self.can_talk(src, dst):
            return
        try:
            target = self.node(dst)
        except KeyError:
            return  # nobody listens there (a seed outside the cluster)
        if target.crashed:
            return
        self.delivered += 1
        i = self.nodes.index(target)
        if isinstance(payload, GossipRequest):
            reply, result = target.gossip.on_gossip(payload.info, self.now)
            if result.rejected is None:
                self.send(dst, src, GossipReply(reply))
            self._gossip_changed(i)
        elif isinstance(payload, GossipReply):
            target.gossip.on_response(src, payload.info, self.now)
            self._gossip_changed(i)
        elif isinstance(payload, Heartbeat):
            if target.state is VNodeState.Master:
                sender = self.node(src)
                if not sender.is_read_only:
                    target.heartbeats[sender.instance_id] = self.now
            self.send(dst, src, HeartbeatReply(payload.sent_at, target.own))
        elif isinstance(payload, HeartbeatReply):
            if target.pending_heartbeat != payload.sent_at:
                return
            target.pending_heartbeat = None
            if target.leader_id != payload.leader.instance_id:
                return
            if payload.leader.state is not VNodeState.Master:
                # Reachable but no longer leading: the subscription is
                # refused; the node is not dead.
                self._control(i, LeaderNotLeading())
                return
            self._replicate(i, payload.leader)
            if target.state in (VNodeState.PreReplica, VNodeState.PreReadOnlyReplica):
                self._control(i, ReplicaSubscribed())
            if target.state is VNodeState.CatchingUp:
                self._control(i, SlaveAssigned())
        elif target.elections is not None:
            self._run_effects(i, target.elections.handle(payload, self.now))

    def _do_gossip(self, i: int) -> None:
        n = self.nodes[i]
        if n.crashed:
            return
        n.gossip.check_timeouts(self.now)
        send, delay = n.gossip.tick(self.now, self.rng)
        if send is not None:
            self.send(n.endpoint, send.target, GossipRequest(send.info))
            self._push(self.now + self.gossip_settings.timeout, "gossip_timeouts", i)
        self._push(self.now + delay, "gossip", i)
        self._gossip_changed(i)

    def _do_gossip_timeouts(self, i: int) -> None:
        n = self.nodes[i]
        if not n.crashed and n.gossip.check_timeouts(self.now):
            self._gossip_changed(i)

    def _do_timer(self, data: tuple[int, Union[ElectionsTimedOut, SendViewChangeProof]]) -> None:
        i, event = data
        n = self.nodes[i]
        if n.crashed or n.elections is None:
            return
        self._run_effects(i, n.elections.handle(event, self.now))

    def _do_controller(self, i: int) -> None:
        """
        The periodic part of the controller: replication-link heartbeats and
        the leader's no-quorum check.
        """
        n = self.nodes[i]
        if n.crashed:
            return
        self._push(self.now + self.heartbeat_interval, "controller", i)
        following = (
            VNodeState.PreReplica,
            VNodeState.CatchingUp,
            VNodeState.Clone,
            VNodeState.Slave,
            VNodeState.PreReadOnlyReplica,
            VNodeState.ReadOnlyReplica,
        )
        if n.leader_id is not None and n.state in following:
            leader = n.controller.leader
            assert leader is not None
            if n.pending_heartbeat is not None and (
                self.now - n.pending_heartbeat >= self.heartbeat_timeout
            ):
                n.pending_heartbeat = None
                self._control(i, LeaderLinkLost())
            elif n.pending_heartbeat is None:
                n.pending_heartbeat = self.now
                self.send(n.endpoint, leader.internal_http, Heartbeat(self.now))
        if n.state is VNodeState.Master:
            recent = sum(
                1
                for t in n.heartbeats.values()
                if self.now - t <= self.heartbeat_timeout + self.heartbeat_interval
            )
            if recent >= self.cluster_size // 2:
                n.had_quorum_at = self.now
            elif self.now - n.had_quorum_at >= self.no_quorum_timeout:
                self._control(i, NoQuorum())

    # -- the controller and its collaborators --

    def _control(self, i: int, event: ControllerInput) -> None:
        """
        Feed the node's controller and perform its effects.
        """
        n = self.nodes[i]
        for effect in n.controller.handle(event):
            if isinstance(effect, StateChanged):
                self._state_changed(i, effect)
            elif isinstance(effect, StartElections):
                if n.elections is not None:
                    self._run_effects(i, n.elections.handle(effect, self.now))
            elif isinstance(effect, WaitForChaser):
                self._control(i, ChaserCaughtUp())
            elif isinstance(effect, WriteEpoch):
                self._write_epoch(i)
            elif isinstance(effect, SubscribeTo):
                n.pending_heartbeat = None
            elif isinstance(effect, ConfirmAlive):
                n.gossip.view = n.gossip.view.mark_dead(effect.member.key, self.now)
                self._gossip_changed(i)

    def _state_changed(self, i: int, effect: StateChanged) -> None:
        n = self.nodes[i]
        n.pending_heartbeat = None
        n.own = evolve(n.own, state=effect.state)
        self._own_changed(i)
        if effect.state is VNodeState.Master:
            n.heartbeats.clear()
            n.had_quorum_at = self.now
            n.master_since = self.now
        else:
            n.master_since = None

    def _own_changed(self, i: int) -> None:
        n = self.nodes[i]
        leader_id = n.leader_id
        n.gossip.leader_id = None if leader_id == n.instance_id else leader_id
        n.gossip.update_own(n.own, self.now)
        if n.elections is not None:
            n.elections.own = n.own

    def _gossip_changed(self, i: int) -> None:
        n = self.nodes[i]
        members = n.gossip.view.members
        if n.elections is not None:
            n.elections.handle(GossipUpdated(members), self.now)
        self._control(i, GossipChanged(members))

    def _run_effects(self, i: int, effects: list[Effect]) -> None:
        n = self.nodes[i]
        for effect in effects:
            if isinstance(effect, SendTo):
                self.send(n.endpoint, effect.target, effect.message)
            elif isinstance(effect, Broadcast):
                for target in effect.targets:
                    self.send(n.endpoint, target, effect.message)
            elif isinstance(effect, ScheduleTimeout):
                self._push(self.now + effect.delay, "timer", (i, effect.event))
            elif isinstance(effect, LeaderElected):
                self.decisions.append(
                    Decision(self.now, n.instance_id, effect.view, effect.leader.instance_id)
                )
                n.gossip.elected(effect.leader.instance_id, self.now)
                self._control(i, effect)
            elif isinstance(effect, StepDown):
                self._control(i, NoQuorum())

    def _replicate(self, i: int, leader: MemberInfo) -> None:
        n = self.nodes[i]
        n.own = evolve(
            n.own,
            epoch_number=leader.epoch_number,
            epoch_position=leader.epoch_position,
            epoch_id=leader.epoch_id,
            writer_checkpoint=leader.writer_checkpoint,
            chaser_checkpoint=leader.chaser_checkpoint,
            last_commit_position=leader.last_commit_position,
        )
        self._own_changed(i)

    def _write_epoch(self, i: int) -> None:
        """
        Write the next epoch at the end of the log.
        """
        n = self.nodes[i]
        position = n.own.writer_checkpoint
        n.own = evolve(
            n.own,
            epoch_number=n.own.epoch_number + 1,
            epoch_position=position,
            epoch_id=uuid.UUID(int=self.rng.getrandbits(128)),
            writer_checkpoint=position + 100,
            chaser_checkpoint=position + 100,
            last_commit_position=position,
        )
        self._own_changed(i)

    # -- observations --

    def leaders(self) -> list[SimNode]:
        """
        Running nodes that are Master now.
        """
        return [n for n in self.nodes if not n.crashed and n.state is VNodeState.Master]

    def stable_leader(self, indexes: Iterable[int]) -> Optional[SimNode]:
        """
        The node among C{indexes} that is Master and followed by every other
        voting node among them, if there is one.
        """
        group = [self.nodes[i] for i in indexes]
        masters = [n for n in group if n.state is VNodeState.Master]
        if len(masters) != 1:
            return None
        leader = masters[0]
        for n in group:
            if n is leader or n.is_read_only:
                continue
            if n.state is not VNodeState.Slave or n.leader_id != leader.instance_id:
                return None
        return leader

    def leaders_by_view(self) -> dict[int, set[uuid.UUID]]:
        """
        Every leader decided in each view, by any node.
        """
        result: dict[int, set[uuid.UUID]] = {}
        for d in self.decisions:
            result.setdefault(d.view, set()).add(d.leader)
        return result


# --- A sweep over random scenarios (python -m estwisted.testing.cluster_sim) ---


@frozen
class SweepResult:
    """
    Outcome of one random scenario of L{run_scenario}.

    @ivar safe: no two leaders were decided for one view.
    @ivar time_to_leader: seconds from the heal to a stable leader that
        lasted to the end, or C{None} if there was none at the end.
    """

    seed: int
    voters: int
    read_only: int
    safe: bool
    read_only_never_led: bool
    time_to_leader: Optional[float]


def run_scenario(
    seed: int, heal_seconds: float = 60.0, machine: bool = False
) -> Optional[SweepResult]:
    """
    One random scenario: 3 or 5 voters (plus maybe a read-only replica),
    1-7 chaos phases of up to 70 % loss, 50 % duplication, 3 s delays, 3-way
    partitions and crashes, then a random quorum of the survivors healed
    (reliable, 50 ms delays) for C{heal_seconds}.

    @param machine: drive the production L{estwisted.cluster.NodeMachine}
        (L{MachineClusterSimulator}) instead of the model controller.
    @return: the result, or C{None} if too many nodes crashed to leave a
        quorum.
    """
    r = random.Random(seed)
    voters = r.choice([3, 5])
    read_only = r.choice([0, 1])
    n = voters + read_only
    sim: Any
    if machine:
        sim = MachineClusterSimulator.random_cluster(voters, read_only, seed=seed)
    else:
        sim = ClusterSimulator.random_cluster(voters, read_only, seed=seed)
    sim.start()
    for _ in range(r.randrange(1, 8)):
        sim.set_faults(
            Faults(
                drop=r.uniform(0, 0.7),
                duplicate=r.uniform(0, 0.5),
                max_delay=r.uniform(0.01, 3),
            )
        )
        if r.random() < 0.6:
            groups: list[list[int]] = [[], [], []]
            for i in range(n):
                groups[r.randrange(3)].append(i)
            sim.partition(groups)
        else:
            sim.heal()
        sim.run_for(r.uniform(0.5, 10))
        if r.random() < 0.1:
            sim.crash(r.randrange(n))
    alive = [i for i in range(voters) if not sim.is_crashed(i)]
    if len(alive) < voters // 2 + 1:
        return None
    group = r.sample(alive, r.randrange(voters // 2 + 1, len(alive) + 1))
    group += [i for i in range(voters, n) if not sim.is_crashed(i)]
    sim.partition([group])
    sim.set_faults(Faults(max_delay=0.05))
    stable_since: Optional[float] = None
    healed_at = sim.now
    for _ in range(int(heal_seconds * 10)):
        sim.run_for(0.1)
        if sim.stable_leader(group) is None:
            stable_since = None
        elif stable_since is None:
            stable_since = sim.now - healed_at
    read_only_ids = set(sim.instance_ids()[voters:])
    return SweepResult(
        seed=seed,
        voters=voters,
        read_only=read_only,
        safe=all(len(s) <= 1 for s in sim.leaders_by_view().values()),
        read_only_never_led=not any(d.leader in read_only_ids for d in sim.decisions),
        time_to_leader=stable_since,
    )


def main(argv: Optional[Sequence[str]] = None, out: Callable[[str], object] = print) -> int:
    """
    C{python -m estwisted.testing.cluster_sim [--machine] [FIRST_SEED
    [COUNT]]}: run random scenarios and print one line per problem and a
    summary.  C{--machine} drives the production node machine.

    @return: 1 if any scenario was unsafe or ended without a leader.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    machine = "--machine" in args
    args = [a for a in args if a != "--machine"]
    first = int(args[0]) if args else 0
    count = int(args[1]) if len(args) > 1 else 100
    times: list[float] = []
    bad = 0
    skipped = 0
    for seed in range(first, first + count):
        result = run_scenario(seed, machine=machine)
        if result is None:
            skipped += 1
            continue
        if not (result.safe and result.read_only_never_led) or result.time_to_leader is None:
            bad += 1
            out(f"problem: {result}")
        else:
            times.append(result.time_to_leader)
    times.sort()
    if times:
        median = times[len(times) // 2]
        out(
            f"{len(times) + bad} scenarios ({skipped} skipped: no quorum left), {bad} bad; "
            f"time to a stable leader after the heal: median {median:.1f} s, "
            f"max {times[-1]:.1f} s"
        )
    return 1 if bad else 0


# --- Driving the production node machine (estwisted.cluster.NodeMachine) ------


@define
class _RecordingElections(ElectionMachine):
    """
    An election machine that also reports its decisions to the simulator.
    """

    recorder: Optional[Callable[[LeaderElected], None]] = None

    def handle(self, event: Any, now: float) -> list[Effect]:
        effects = super().handle(event, now)
        if self.recorder is not None:
            for e in effects:
                if isinstance(e, LeaderElected):
                    self.recorder(e)
        return effects


@frozen
class _MachineGossip:
    request: int
    info: ClusterInfo
    probe: bool


@frozen
class _MachineReply:
    request: int
    info: ClusterInfo


@define
class _SimReplication:
    """
    The replication stand-in of one node of L{MachineClusterSimulator}
    (what L{estwisted.replprotocol.NodeReplication} does for a real node),
    told what to do by the machine's L{estwisted.cluster.Lead},
    L{estwisted.cluster.Follow} and L{estwisted.cluster.StandBy} effects.

    @ivar linked: our replication link to C{following} is up (subscribed).
    @ivar short_since: when, leading, we last had a quorum of linked
        followers (C{None}: we have one).
    """

    leading: bool = False
    following: Optional[MemberInfo] = None
    linked: bool = False
    short_since: Optional[float] = None
    reported: bool = False


@define
class MachineClusterSimulator:
    """
    The same network, clock and fault model as L{ClusterSimulator}, driving
    the production node machine L{estwisted.cluster.NodeMachine} (gossip,
    elections, leader probes, the role machine), as its Twisted controller
    would: a tick every C{settings.tick}, every gossip post answered or
    failed (timeout C{GossipTimeoutMs}; a crashed node refuses at once, a
    partition stays silent), election timers fed back.

    Replication is played on every tick, reporting to the machine what real
    replication reports: a follower's link to its leader is up while the
    leader runs, can be reached and leads (L{ReplicaSubscribed}, then
    L{SlaveAssigned} for a voting node; the follower takes over the
    leader's epoch), and is lost when that stops (L{LeaderLinkLost}); a
    leader writes its epoch when told to lead, and one with fewer than
    C{ClusterSize // 2} voting followers linked for longer than
    C{no_quorum_timeout} gets L{NoQuorum}.

    Decisions are recorded as in L{ClusterSimulator}, so the same
    properties can be checked.
    """

    cluster_size: int
    rng: random.Random
    machines: list[Any] = field(factory=list)
    crashed: set[int] = field(factory=set)
    now: float = EPOCH
    faults: Faults = RELIABLE
    decisions: list[Decision] = field(factory=list)
    _groups: Optional[dict[Endpoint, int]] = None
    _queue: list[tuple[float, int, str, Any]] = field(factory=list)
    _seq: int = 0
    _outstanding: dict[int, tuple[int, Endpoint, bool]] = field(factory=dict)
    replication: list[_SimReplication] = field(factory=list)
    no_quorum_timeout: float = NO_QUORUM_TIMEOUT

    @classmethod
    def random_cluster(
        cls, voters: int, read_only: int = 0, *, seed: int = 0
    ) -> MachineClusterSimulator:
        from estwisted.cluster import ClusterSettings, NodeMachine

        template = ClusterSimulator.random_cluster(voters, read_only, seed=seed)
        sim = cls(cluster_size=voters, rng=random.Random(seed))
        seeds = [n.endpoint for n in template.nodes]
        for i, n in enumerate(template.nodes):
            settings = ClusterSettings(cluster_size=voters, read_only=n.is_read_only)
            m = NodeMachine.create(
                n.own,
                [s for s in seeds if s != n.endpoint],
                settings,
                sim.now,
                random.Random(seed * 1000 + i),
            )
            if m.elections is not None:
                m.elections = _RecordingElections(
                    own=m.elections.own,
                    cluster_size=voters,
                    timeout=settings.election_timeout,
                    recorder=functools.partial(sim._record, i),
                )
            sim.machines.append(m)
            sim.replication.append(_SimReplication())
        return sim

    def _record(self, i: int, e: LeaderElected) -> None:
        node = self.machines[i].own.instance_id
        self.decisions.append(Decision(self.now, node, e.view, e.leader.instance_id))

    # -- the network (same rules as ClusterSimulator) --

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        self._groups = {}
        for g, members in enumerate(groups):
            for i in members:
                self._groups[self.machines[i].own.key] = g

    def heal(self) -> None:
        self._groups = None

    def crash(self, index: int) -> None:
        self.crashed.add(index)

    def is_crashed(self, index: int) -> bool:
        return index in self.crashed

    def instance_ids(self) -> list[uuid.UUID]:
        return [m.own.instance_id for m in self.machines]

    def can_talk(self, a: Endpoint, b: Endpoint) -> bool:
        if self._groups is None:
            return True
        ga, gb = self._groups.get(a), self._groups.get(b)
        return ga is not None and ga == gb

    def _index(self, endpoint: Endpoint) -> Optional[int]:
        for i, m in enumerate(self.machines):
            if m.own.key == endpoint:
                return i
        return None

    def _push(self, at: float, kind: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, data))

    def _send(self, src: Endpoint, dst: Endpoint, payload: Any) -> None:
        if not self.can_talk(src, dst) or self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            delay = self.rng.uniform(self.faults.min_delay, self.faults.max_delay)
            self._push(self.now + delay, "deliver", (src, dst, payload))

    # -- running --

    def start(self) -> None:
        for i, m in enumerate(self.machines):
            self._perform(i, m.start(self.now))
            self._push(self.now + self.rng.uniform(0, m.settings.tick), "tick", i)

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self._queue and self._queue[0][0] <= end:
            at, _, kind, data = heapq.heappop(self._queue)
            self.now = at
            getattr(self, "_do_" + kind)(data)
        self.now = end

    def _do_tick(self, i: int) -> None:
        if i in self.crashed:
            return
        m = self.machines[i]
        self._perform(i, m.tick(self.now))
        self._replicate(i)
        self._push(self.now + m.settings.tick, "tick", i)

    def _reaches(self, i: int, j: int) -> bool:
        return j not in self.crashed and self.can_talk(
            self.machines[i].own.key, self.machines[j].own.key
        )

    def _replicate(self, i: int) -> None:
        """
        Play node C{i}'s replication (see the class docstring).
        """
        m, r = self.machines[i], self.replication[i]
        if r.following is not None:
            j = next(
                (
                    j
                    for j, other in enumerate(self.machines)
                    if other.own.instance_id == r.following.instance_id
                ),
                None,
            )
            up = j is not None and self.replication[j].leading and self._reaches(i, j)
            if up and j is not None:
                leader = self.machines[j].own
                m.set_epoch(leader.epoch_position, leader.epoch_number, leader.epoch_id, self.now)
            if up and not r.linked:
                r.linked = True
                self._perform(i, m.on_replication(ReplicaSubscribed(), self.now))
                if not m.settings.read_only:
                    self._perform(i, m.on_replication(SlaveAssigned(), self.now))
            elif not up and r.linked:
                r.linked = False
                self._perform(i, m.on_replication(LeaderLinkLost(), self.now))
        if r.leading:
            voters = sum(
                1
                for j, other in enumerate(self.replication)
                if j != i
                and other.linked
                and other.following is not None
                and other.following.instance_id == m.own.instance_id
                and not self.machines[j].settings.read_only
                and self._reaches(i, j)
            )
            if voters >= self.cluster_size // 2:
                r.short_since, r.reported = None, False
            elif r.short_since is None:
                r.short_since = self.now
            elif self.now - r.short_since > self.no_quorum_timeout and not r.reported:
                r.reported = True
                self._perform(i, m.on_replication(NoQuorum(), self.now))

    def _do_timer(self, data: tuple[int, Any]) -> None:
        i, event = data
        if i not in self.crashed:
            self._perform(i, self.machines[i].on_timer(event, self.now))

    def _do_gossip_timeout(self, request: int) -> None:
        pending = self._outstanding.pop(request, None)
        if pending is None:
            return
        i, peer, probe = pending
        if i not in self.crashed:
            self._perform(
                i,
                self.machines[i].on_gossip_failure(peer, self.now, probe=probe, reason="timeout"),
            )

    def _do_refused(self, request: int) -> None:
        pending = self._outstanding.pop(request, None)
        if pending is None:
            return
        i, peer, probe = pending
        if i not in self.crashed:
            self._perform(
                i, self.machines[i].on_gossip_failure(peer, self.now, refused=True, probe=probe)
            )

    def _do_deliver(self, data: tuple[Endpoint, Endpoint, Any]) -> None:
        src, dst, payload = data
        if not self.can_talk(src, dst):
            return
        target = self._index(dst)
        sender = self._index(src)
        if target is None or sender is None or sender in self.crashed:
            return
        if target in self.crashed:
            # A killed process refuses connections at once.
            if isinstance(payload, _MachineGossip):
                self._push(self.now, "refused", payload.request)
            elif not isinstance(payload, _MachineReply):
                self._perform(sender, self.machines[sender].on_peer_refused(dst, self.now))
            return
        m = self.machines[target]
        if isinstance(payload, _MachineGossip):
            reply, effects = m.on_gossip_request(payload.info, self.now)
            if reply is not None:
                self._send(dst, src, _MachineReply(payload.request, reply))
            self._perform(target, effects)
        elif isinstance(payload, _MachineReply):
            pending = self._outstanding.pop(payload.request, None)
            if pending is not None:
                _, peer, probe = pending
                self._perform(
                    target, m.on_gossip_response(peer, payload.info, self.now, probe=probe)
                )
        else:
            self._perform(target, m.on_election_message(payload, self.now))

    def _perform(self, i: int, effects: list[Any]) -> None:
        from estwisted.cluster import EpochWritten, Follow, GossipTo, Lead, StandBy

        m = self.machines[i]
        r = self.replication[i]
        for e in effects:
            if isinstance(e, Lead):
                r.following, r.linked = None, False
                if not r.leading:
                    r.leading, r.short_since, r.reported = True, None, False
                    epoch_id = uuid.UUID(int=m.own.instance_id.int ^ e.epoch_number)
                    position = max(m.own.writer_checkpoint, 0)
                    written = EpochWritten(position, e.epoch_number, epoch_id)
                    self._perform(i, m.on_replication(written, self.now))
            elif isinstance(e, Follow):
                r.leading = False
                if r.following is None or r.following.instance_id != e.leader.instance_id:
                    r.following, r.linked = e.leader, False
            elif isinstance(e, StandBy):
                r.leading, r.following, r.linked = False, None, False
            if isinstance(e, GossipTo):
                self._seq += 1
                request = self._seq
                self._outstanding[request] = (i, e.target, e.probe)
                self._push(self.now + m.settings.gossip.timeout, "gossip_timeout", request)
                self._send(m.own.key, e.target, _MachineGossip(request, e.info, e.probe))
            elif isinstance(e, SendTo):
                self._send(m.own.key, e.target, e.message)
            elif isinstance(e, Broadcast):
                for t in e.targets:
                    self._send(m.own.key, t, e.message)
            elif isinstance(e, ScheduleTimeout):
                self._push(self.now + e.delay, "timer", (i, e.event))

    # -- observations --

    def stable_leader(self, indexes: Iterable[int]) -> Optional[Any]:
        group = [self.machines[i] for i in indexes]
        masters = [m for m in group if m.state is VNodeState.Master]
        if len(masters) != 1:
            return None
        leader = masters[0]
        for m in group:
            if m is leader or m.settings.read_only:
                continue
            if m.state is not VNodeState.Slave or m.leader_id != leader.own.instance_id:
                return None
        return leader

    def leaders_by_view(self) -> dict[int, set[uuid.UUID]]:
        result: dict[int, set[uuid.UUID]] = {}
        for d in self.decisions:
            result.setdefault(d.view, set()).add(d.leader)
        return result


if __name__ == "__main__":
    raise SystemExit(main())
