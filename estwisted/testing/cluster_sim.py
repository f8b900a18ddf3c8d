# -*- test-case-name: estwisted.cluster.test.test_elections -*-
"""
A deterministic in-memory cluster: N nodes, each running the production
node machine (L{estwisted.cluster.controller.NodeMachine}: gossip, elections, leader
probes and the node role machine), connected by a simulated network that
can drop, duplicate, delay (and so reorder) messages and be partitioned,
all driven by one fake clock and one seeded L{random.Random}.  The same seed
and the same calls give the same run.

The simulator drives each machine as its Twisted controller
(L{estwisted.cluster.controller.ClusterController}) would, and plays replication for
it with the inputs real replication (L{estwisted.replication}) reports;
see L{ClusterSimulator}.  Every election decision is recorded in
L{ClusterSimulator.decisions} so tests can check safety (one leader per
view) after the fact.
"""

from __future__ import annotations

import functools
import heapq
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

from attrs import define, field, frozen

from estwisted.cluster.controller import (
    ClusterSettings,
    EpochWritten,
    Follow,
    GossipTo,
    Lead,
    NodeMachine,
    StandBy,
    StorageFreed,
    StorageFull,
)
from estwisted.cluster.elections import (
    Broadcast,
    Effect,
    ElectionMachine,
    LeaderElected,
    LeaderLinkLost,
    NoQuorum,
    ReplicaSubscribed,
    ScheduleTimeout,
    SendTo,
    SlaveAssigned,
)
from estwisted.cluster.gossip import ClusterInfo, Endpoint, MemberInfo, VNodeState
from estwisted.replication.state import NO_QUORUM_TIMEOUT, no_quorum_timing

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
class Decision:
    """
    Node C{node} decided C{leader} in C{view} at C{time}.
    """

    time: float
    node: uuid.UUID
    view: int
    leader: uuid.UUID


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


# --- The simulator ---------------------------------------------------------


class _RecordingElections(ElectionMachine):
    """
    An election machine that also reports its decisions to the simulator
    (C{recorder}, set after construction).
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
    The replication stand-in of one node of L{ClusterSimulator}
    (what L{estwisted.replication.node.NodeReplication} does for a real node),
    told what to do by the machine's L{estwisted.cluster.controller.Lead},
    L{estwisted.cluster.controller.Follow} and L{estwisted.cluster.controller.StandBy} effects.

    @ivar linked: our replication link to C{following} is up (subscribed).
    @ivar short_since: when, leading, we last had a quorum of linked
        followers (the last tick that saw one, or when we began to lead;
        as the real leader counts from the moment it last heard a quorum).
    """

    leading: bool = False
    following: Optional[MemberInfo] = None
    linked: bool = False
    short_since: Optional[float] = None
    reported: bool = False
    disk_full: bool = False
    had_quorum: bool = False


@define
class ClusterSimulator:
    """
    N nodes, one network, one clock, driving
    the production node machine L{estwisted.cluster.controller.NodeMachine} (gossip,
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

    Build with L{random_cluster}, then L{start} and L{run_for}; change the
    network with L{set_faults}, L{partition}, L{heal}, L{crash}.
    """

    cluster_size: int
    rng: random.Random
    machines: list[NodeMachine] = field(factory=list)
    crashed: set[int] = field(factory=set)
    now: float = EPOCH
    faults: Faults = RELIABLE
    decisions: list[Decision] = field(factory=list)
    _groups: Optional[dict[Endpoint, int]] = None
    _queue: list[tuple[float, int, str, Any]] = field(factory=list)
    _seq: int = 0
    _outstanding: dict[int, tuple[int, Endpoint, bool]] = field(factory=dict)
    replication: list[_SimReplication] = field(factory=list)
    no_quorum_timeout: float = no_quorum_timing(1.0).timeout
    #: messages delivered (after drops, counting duplicates)
    delivered: int = 0

    @classmethod
    def random_cluster(
        cls,
        voters: int,
        read_only: int = 0,
        *,
        seed: int = 0,
        no_quorum_timeout: Optional[float] = None,
    ) -> ClusterSimulator:
        """
        C{voters} voting nodes with random data (epoch 0-2, positions,
        priorities) and C{read_only} read-only replicas; every node has
        every other as a gossip seed.
        """
        rng = random.Random(seed ^ 0x5EED)
        members = []
        for i in range(voters + read_only):
            members.append(
                make_member(
                    i,
                    uuid.UUID(int=rng.getrandbits(128)),
                    read_only=i >= voters,
                    epoch_number=rng.randrange(0, 3),
                    writer_checkpoint=rng.randrange(0, 5) * 1000,
                    node_priority=rng.randrange(0, 2),
                )
            )
        if no_quorum_timeout is None:
            no_quorum_timeout = no_quorum_timing(ClusterSettings(voters).election_timeout).timeout
        sim = cls(
            cluster_size=voters, rng=random.Random(seed), no_quorum_timeout=no_quorum_timeout
        )
        seeds = [m.internal_http for m in members]
        for i, own in enumerate(members):
            settings = ClusterSettings(cluster_size=voters, read_only=own.is_read_only_replica)
            m = NodeMachine.create(
                own,
                [s for s in seeds if s != own.internal_http],
                settings,
                sim.now,
                random.Random(seed * 1000 + i),
            )
            if m.elections is not None:
                recording = _RecordingElections(
                    own=m.elections.own, cluster_size=voters, timeout=settings.election_timeout
                )
                recording.recorder = functools.partial(sim._record, i)
                m.elections = recording
            sim.machines.append(m)
            sim.replication.append(_SimReplication())
        return sim

    def _record(self, i: int, e: LeaderElected) -> None:
        node = self.machines[i].own.instance_id
        self.decisions.append(Decision(self.now, node, e.view, e.leader.instance_id))

    # -- the network --

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

    def disk_full(self, index: int) -> None:
        """
        Node C{index}'s disk fills: a write fails, its replication reports
        L{StorageFull}.
        """
        self.replication[index].disk_full = True
        self._perform(
            index, self.machines[index].on_replication(StorageFull("simulated"), self.now)
        )

    def disk_freed(self, index: int) -> None:
        """
        Node C{index}'s disk has room again (L{StorageFreed}).
        """
        self.replication[index].disk_full = False
        self._perform(index, self.machines[index].on_replication(StorageFreed(), self.now))

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

    def send(self, src: Endpoint, dst: Endpoint, payload: Any) -> None:
        """
        Put C{payload} on the network from C{src} to C{dst}, under the
        current faults and partition.
        """
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
            limit = self.no_quorum_timeout
            if not r.had_quorum:
                # the real leader's start grace (LeaderState.start_grace)
                limit = max(limit, NO_QUORUM_TIMEOUT)
            if voters >= self.cluster_size // 2:
                r.short_since, r.reported, r.had_quorum = self.now, False, True
            elif r.short_since is None:
                r.short_since = self.now
            elif self.now - r.short_since > limit and not r.reported:
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
        self.delivered += 1
        m = self.machines[target]
        if isinstance(payload, _MachineGossip):
            reply, effects = m.on_gossip_request(payload.info, self.now)
            if reply is not None:
                self.send(dst, src, _MachineReply(payload.request, reply))
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
        m = self.machines[i]
        r = self.replication[i]
        for e in effects:
            if isinstance(e, Lead):
                r.following, r.linked = None, False
                if r.disk_full:
                    # no room for the epoch (NodeReplication.lead)
                    self._perform(i, m.on_replication(StorageFull("epoch"), self.now))
                elif not r.leading:
                    r.leading, r.short_since, r.reported = True, self.now, False
                    r.had_quorum = False
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
                self.send(m.own.key, e.target, _MachineGossip(request, e.info, e.probe))
            elif isinstance(e, SendTo):
                self.send(m.own.key, e.target, e.message)
            elif isinstance(e, Broadcast):
                for t in e.targets:
                    self.send(m.own.key, t, e.message)
            elif isinstance(e, ScheduleTimeout):
                self._push(self.now + e.delay, "timer", (i, e.event))

    # -- observations --

    def leaders(self) -> list[NodeMachine]:
        """
        Running nodes that are Master now.
        """
        return [
            m
            for i, m in enumerate(self.machines)
            if i not in self.crashed and m.state is VNodeState.Master
        ]

    def stable_leader(self, indexes: Iterable[int]) -> Optional[NodeMachine]:
        """
        The node among C{indexes} that is Master and followed by every other
        voting node among them, if there is one.
        """
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


def run_scenario(seed: int, heal_seconds: float = 60.0) -> Optional[SweepResult]:
    """
    One random scenario: 3 or 5 voters (plus maybe a read-only replica),
    1-7 chaos phases of up to 70 % loss, 50 % duplication, 3 s delays, 3-way
    partitions and crashes, then a random quorum of the survivors healed
    (reliable, 50 ms delays) for C{heal_seconds}.

    @return: the result, or C{None} if too many nodes crashed to leave a
        quorum.
    """
    r = random.Random(seed)
    voters = r.choice([3, 5])
    read_only = r.choice([0, 1])
    n = voters + read_only
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
    C{python -m estwisted.testing.cluster_sim [FIRST_SEED [COUNT]]}: run
    random scenarios and print one line per problem and a summary.

    @return: 1 if any scenario was unsafe or ended without a leader.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    first = int(args[0]) if args else 0
    count = int(args[1]) if len(args) > 1 else 100
    times: list[float] = []
    bad = 0
    skipped = 0
    for seed in range(first, first + count):
        result = run_scenario(seed)
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


if __name__ == "__main__":
    raise SystemExit(main())
