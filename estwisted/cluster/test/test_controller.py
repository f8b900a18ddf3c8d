# -*- test-case-name: estwisted.cluster.test.test_controller -*-
"""
Tests for L{estwisted.cluster.controller}: the node controller driven by a fake clock
over an in-memory network of L{ClusterController}s (delivery with delays,
refused connections for killed nodes, silent partitions), plus the pure
L{NodeMachine} rules (clock skew, discovery, read-only replicas).
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Optional

from attrs import evolve
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import TimeoutError
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from estwisted.cluster.controller import (
    SEED_LOG_PERIOD,
    ClusterController,
    ClusterSettings,
    EpochWritten,
    Follow,
    GossipTo,
    IPeerTransport,
    IRoleReplication,
    Lead,
    LogLine,
    NodeMachine,
    PeerRefusedError,
    StandBy,
    StateChanged,
    own_member_from_config,
)
from estwisted.cluster.elections import (
    LeaderLinkLost,
    Message,
    NoQuorum,
    ReplicaSubscribed,
    SlaveAssigned,
    ViewChange,
)
from estwisted.cluster.gossip import (
    ClusterInfo,
    Endpoint,
    GossipSettings,
    MemberInfo,
    VNodeState,
)
from estwisted.cluster.leadership import LeadershipView
from estwisted.replication.state import NO_QUORUM_TIMEOUT

FAST = ClusterSettings(
    cluster_size=3,
    gossip=GossipSettings(interval=0.1, timeout=0.5, allowed_difference=60.0),
    election_timeout=0.5,
    probe_interval=0.1,
)


_ids = random.Random(5)


def member(
    index: int,
    *,
    read_only: bool = False,
    priority: int = 0,
    ids: Optional[random.Random] = None,
) -> MemberInfo:
    """
    The member at 127.0.0.{index + 1}, its instance id drawn from C{ids}
    (a cluster's own generator, so a seeded example replays exactly).
    """
    host = f"127.0.0.{index + 1}"
    return MemberInfo(
        instance_id=uuid.UUID(int=(ids or _ids).getrandbits(128), version=4),
        timestamp=0.0,
        state=VNodeState.Initializing,
        is_alive=True,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
        node_priority=priority,
        is_read_only_replica=read_only,
    )


class MemoryNetwork:
    """
    Delivers gossip and election posts between controllers on one clock.
    A node in C{down} refuses connections; a request across a partition
    gets no answer and fails after the transport timeout.
    """

    def __init__(self, clock: Clock, delay: float = 0.002) -> None:
        self.clock = clock
        self.delay = delay
        self.controllers: dict[Endpoint, ClusterController] = {}
        self.down: set[Endpoint] = set()
        self.groups: Optional[list[set[Endpoint]]] = None
        self.delivered = 0
        #: Faults: each request is lost with probability C{drop} (the
        #: sender times out), delivered twice with probability
        #: C{duplicate}, and delayed up to C{max_delay}.
        self.rng = random.Random(0)
        self.drop = 0.0
        self.duplicate = 0.0
        self.max_delay = delay

    def latency(self) -> float:
        return self.rng.uniform(self.delay, max(self.delay, self.max_delay))

    def can_talk(self, a: Endpoint, b: Endpoint) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def transport(self, source: Endpoint, timeout: float) -> MemoryTransport:
        return MemoryTransport(self, source, timeout)


def _fire(d: Deferred[Any], result: Any) -> None:
    if not d.called:
        d.callback(result)


@implementer(IPeerTransport)
class MemoryTransport:
    def __init__(self, network: MemoryNetwork, source: Endpoint, timeout: float) -> None:
        self.network = network
        self.source = source
        self.timeout = timeout

    def _call(self, target: Endpoint, deliver: Any) -> Deferred[Any]:
        net = self.network
        d: Deferred[Any] = Deferred()
        if target not in net.controllers or target in net.down:
            net.clock.callLater(net.delay, d.errback, PeerRefusedError(f"{target} refused"))
        elif not net.can_talk(self.source, target) or net.rng.random() < net.drop:
            net.clock.callLater(self.timeout, d.errback, TimeoutError())
        else:

            def arrive(first: bool) -> None:
                if d.called:
                    if not first:
                        deliver(net.controllers[target])  # a duplicate: answer lost
                    return
                if target in net.down or not net.can_talk(self.source, target):
                    d.errback(TimeoutError())
                    return
                net.delivered += 1
                try:
                    result = deliver(net.controllers[target])
                except Exception as e:
                    d.errback(e)
                    return
                net.clock.callLater(net.latency(), _fire, d, result)

            net.clock.callLater(net.latency(), arrive, True)
            if net.rng.random() < net.duplicate:
                net.clock.callLater(net.latency(), arrive, False)
        return d

    def post_gossip(self, target: Endpoint, info: ClusterInfo) -> Deferred[ClusterInfo]:
        def deliver(c: ClusterController) -> ClusterInfo:
            reply = c.handle_gossip(info)
            if reply is None:
                raise ValueError("rejected")
            return reply

        return self._call(target, deliver)

    def post_election(self, target: Endpoint, message: Message) -> Deferred[None]:
        return self._call(target, lambda c: c.handle_election(message))


@implementer(IRoleReplication)
class MemoryReplication:
    """
    Plays replication for one controller of a L{Cluster}, reporting what
    real replication would to the controller: a link to the followed leader
    is up while the leader's node runs, can be reached and leads
    (L{ReplicaSubscribed}, then L{SlaveAssigned} for a voting node), and is
    lost when that stops (L{LeaderLinkLost}).  Leading writes an epoch
    (L{EpochWritten}); a leader with fewer than
    C{ClusterSize // 2} voting followers linked for longer than
    C{no_quorum_timeout} reports L{NoQuorum} once.
    """

    def __init__(
        self, cluster: Cluster, controller: ClusterController, no_quorum_timeout: float
    ) -> None:
        self.cluster = cluster
        self.controller = controller
        self.no_quorum_timeout = no_quorum_timeout
        self.running = True
        self.leading = False
        self.following: Optional[MemberInfo] = None
        self.linked = False
        self.short_since: Optional[float] = None
        self.reported = False
        self.loop = LoopingCall(self.check)
        self.loop.clock = cluster.clock
        self.loop.start(0.05, now=False)

    @property
    def endpoint(self) -> Endpoint:
        return self.controller.machine.own.internal_http

    @property
    def instance_id(self) -> uuid.UUID:
        return self.controller.machine.own.instance_id

    def lead(self, epoch_number: int) -> None:
        self.following, self.linked = None, False
        if self.leading:
            return
        self.leading, self.short_since, self.reported = True, None, False
        own = self.controller.machine.own
        epoch_id = uuid.UUID(int=own.instance_id.int ^ epoch_number)
        position = max(own.writer_checkpoint, 0)
        self.controller.replication_event(EpochWritten(position, epoch_number, epoch_id))

    def follow(self, leader: MemberInfo) -> None:
        self.leading = False
        if self.following is None or self.following.instance_id != leader.instance_id:
            self.following, self.linked = leader, False

    def stand_by(self) -> None:
        self.leading, self.following, self.linked = False, None, False

    def crash(self) -> None:
        self.running = False
        self.stand_by()
        if self.loop.running:
            self.loop.stop()

    def _reaches(self, other: MemoryReplication) -> bool:
        net = self.cluster.network
        return (
            other.running
            and other.endpoint not in net.down
            and net.can_talk(self.endpoint, other.endpoint)
        )

    def check(self) -> None:
        following = self.following
        if following is not None:
            leader = next(
                (
                    r
                    for r in self.cluster.replications
                    if r.instance_id == following.instance_id and r.running
                ),
                None,
            )
            up = leader is not None and leader.leading and self._reaches(leader)
            if up and not self.linked:
                self.linked = True
                self.controller.replication_event(ReplicaSubscribed())
                if not self.controller.machine.settings.read_only:
                    self.controller.replication_event(SlaveAssigned())
            elif not up and self.linked:
                self.linked = False
                self.controller.replication_event(LeaderLinkLost())
        if self.leading:
            settings = self.controller.machine.settings
            voters = sum(
                1
                for r in self.cluster.replications
                if r is not self
                and r.linked
                and r.following is not None
                and r.following.instance_id == self.instance_id
                and not r.controller.machine.settings.read_only
                and self._reaches(r)
            )
            now = self.cluster.clock.seconds()
            if voters >= settings.cluster_size // 2:
                self.short_since, self.reported = None, False
            elif self.short_since is None:
                self.short_since = now
            elif now - self.short_since > self.no_quorum_timeout and not self.reported:
                self.reported = True
                self.controller.replication_event(NoQuorum())


class Cluster:
    """
    N controllers on one clock and one memory network, each driving a
    L{MemoryReplication}.
    """

    def __init__(
        self,
        size: int,
        *,
        settings: ClusterSettings = FAST,
        read_only: tuple[int, ...] = (),
        cluster_size: Optional[int] = None,
        seed: int = 0,
        no_quorum_timeout: float = NO_QUORUM_TIMEOUT,
    ) -> None:
        self.seed = seed
        self.no_quorum_timeout = no_quorum_timeout
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.network = MemoryNetwork(self.clock)
        self.settings = settings
        self.cluster_size = cluster_size or size - len(read_only)
        self.read_only = read_only
        #: Instance ids come from the seed, so an example replays exactly
        #: whatever ran before it.
        self.ids = random.Random(seed)
        self.members = [member(i, read_only=i in read_only, ids=self.ids) for i in range(size)]
        self.positions = {m.internal_http: (0, 0) for m in self.members}
        self.controllers: list[ClusterController] = []
        self.replications: list[MemoryReplication] = []
        self.states: list[StateChanged] = []
        for i in range(size):
            self.controllers.append(self._make(i))

    def _make(self, i: int, own: Optional[MemberInfo] = None) -> ClusterController:
        own = own or self.members[i]
        ep = own.internal_http
        settings = ClusterSettings(
            cluster_size=self.cluster_size,
            gossip=self.settings.gossip,
            election_timeout=self.settings.election_timeout,
            probe_interval=self.settings.probe_interval,
            discover_window=self.settings.discover_window,
            read_only=i in self.read_only,
        )
        seeds = [m.internal_http for m in self.members if m.internal_http != ep]
        machine = NodeMachine.create(
            own, seeds, settings, self.clock.seconds(), random.Random(self.seed * 100 + i)
        )
        controller = ClusterController(
            machine,
            self.network.transport(ep, settings.gossip.timeout),
            self.clock,
            positions=lambda: self.positions[ep],
            on_state=self.states.append,
        )
        replication = MemoryReplication(self, controller, self.no_quorum_timeout)
        controller.drive(replication)
        if i < len(self.replications):
            self.replications[i] = replication
        else:
            self.replications.append(replication)
        self.network.controllers[ep] = controller
        return controller

    def start(self, *indexes: int) -> None:
        for i in indexes or range(len(self.controllers)):
            self.controllers[i].startService()

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def endpoint(self, i: int) -> Endpoint:
        return self.members[i].internal_http

    def crash(self, i: int) -> None:
        """
        SIGKILL: the node stops at once and refuses connections.
        """
        c = self.controllers[i]
        c.machine.stopped = True
        if c._loop.running:
            c._loop.stop()
        self.replications[i].crash()
        self.network.down.add(self.endpoint(i))

    def restart(self, i: int) -> None:
        """
        A new process at the same address: a new instance id.
        """
        self.members[i] = own = member(i, read_only=i in self.read_only, ids=self.ids)
        self.controllers[i] = self._make(i, own)
        self.network.down.discard(self.endpoint(i))
        self.controllers[i].startService()

    def alive(self) -> list[int]:
        down = self.network.down
        return [i for i in range(len(self.controllers)) if self.endpoint(i) not in down]

    def masters(self) -> list[int]:
        return [
            i for i in self.alive() if self.controllers[i].state is VNodeState.Master
        ]

    def leader(self, among: Optional[list[int]] = None) -> Optional[int]:
        """
        The agreed leader among C{among} (default: every running node):
        one Master, every other voting node Slave of it.
        """
        group = self.alive() if among is None else among
        masters = [i for i in group if self.controllers[i].state is VNodeState.Master]
        if len(masters) != 1:
            return None
        leader_id = self.controllers[masters[0]].machine.own.instance_id
        for i in group:
            m = self.controllers[i].machine
            if i == masters[0]:
                continue
            if i in self.read_only:
                if m.state is not VNodeState.ReadOnlyReplica or m.leader_id != leader_id:
                    return None
            elif m.state is not VNodeState.Slave or m.leader_id != leader_id:
                return None
        return masters[0]

    def wait_leader(self, limit: float, among: Optional[list[int]] = None) -> Optional[int]:
        waited = 0.0
        while waited < limit:
            leader = self.leader(among)
            if leader is not None:
                return leader
            self.run(0.05)
            waited += 0.05
        return None


def _elections(c: Cluster, i: int) -> Any:
    machine = c.controllers[i].machine.elections
    assert machine is not None
    return machine


class ControllerTests(SynchronousTestCase):
    def test_transport_interface(self) -> None:
        """
        The in-memory transport used here has the shape of the real one.
        """
        net = MemoryNetwork(Clock())
        self.assertTrue(verifyObject(IPeerTransport, net.transport(Endpoint("h", 1), 0.5)))

    def test_three_nodes_elect_one_leader(self) -> None:
        """
        Three fresh nodes elect exactly one leader within a few gossip
        intervals, and the others follow it.
        """
        c = Cluster(3)
        c.start()
        leader = c.wait_leader(3.0)
        self.assertIsNotNone(leader)
        c.run(2.0)
        self.assertEqual(c.leader(), leader)
        states = [s.new for s in c.states]
        self.assertIn(VNodeState.PreMaster, states)

    def test_leader_killed_new_leader(self) -> None:
        """
        A killed leader (connections refused) is replaced within about a
        second with fast settings.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        c.crash(first)
        second = c.wait_leader(1.5)
        self.assertIsNotNone(second)
        self.assertNotEqual(second, first)

    def test_silent_leader_new_leader(self) -> None:
        """
        A leader cut off without refusing (no answers at all) is replaced
        too: the followers' probes time out.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        others = [i for i in range(3) if i != first]
        c.network.groups = [{c.endpoint(first)}, {c.endpoint(i) for i in others}]
        second = c.wait_leader(5.0, among=others)
        self.assertIn(second, others)

    def test_minority_never_elects(self) -> None:
        """
        With two of three nodes down the survivor does not lead (a leader
        steps down after the no-quorum timeout), and it stays so.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        follower = next(i for i in range(3) if i != first)
        c.crash(follower)
        c.run(1.0)
        self.assertEqual(c.leader(), first)
        c.crash(next(i for i in range(3) if i not in (first, follower)))
        c.run(NO_QUORUM_TIMEOUT + 2.0)
        self.assertEqual(c.masters(), [])
        c.run(5.0)
        self.assertEqual(c.masters(), [])
        self.assertEqual(c.controllers[first].state, VNodeState.Unknown)

    def test_restarted_node_follows_existing_leader(self) -> None:
        """
        A node that restarts while the cluster has a leader finds it in
        gossip and follows it without an election.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        follower = next(i for i in range(3) if i != first)
        views = [_elections(c, i).last_installed_view for i in range(3)]
        c.crash(follower)
        c.run(0.5)
        c.restart(follower)
        self.assertEqual(c.wait_leader(2.0), first)
        machine = c.controllers[follower].machine
        path = [(s.old, s.new) for s in c.states[-3:]]
        self.assertEqual(
            path,
            [
                (VNodeState.Unknown, VNodeState.PreReplica),
                (VNodeState.PreReplica, VNodeState.CatchingUp),
                (VNodeState.CatchingUp, VNodeState.Slave),
            ],
        )
        self.assertEqual(machine.leader_id, c.controllers[first].machine.own.instance_id)
        leader_view = _elections(c, first).last_installed_view
        self.assertEqual(leader_view, views[first])

    def test_rejoin_after_quorum_loss(self) -> None:
        """
        Two nodes down then back: a leader again.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        down = [i for i in range(3) if i != first]
        for i in down:
            c.crash(i)
        c.run(5.0)
        self.assertEqual(c.masters(), [])
        for i in down:
            c.restart(i)
        self.assertIsNotNone(c.wait_leader(5.0))

    def test_five_nodes_two_down(self) -> None:
        c = Cluster(5)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        other = next(i for i in range(5) if i != first)
        c.crash(first)
        c.crash(other)
        second = c.wait_leader(3.0)
        self.assertNotIn(second, (None, first, other))

    def test_read_only_replica_never_leads(self) -> None:
        """
        A read-only replica follows the leader (ReadOnlyReplica), is never
        elected, and its vote never makes a quorum.
        """
        c = Cluster(4, read_only=(3,))
        c.start()
        first = c.wait_leader(3.0)
        self.assertNotIn(first, (None, 3))
        self.assertEqual(c.controllers[3].state, VNodeState.ReadOnlyReplica)
        self.assertIsNone(c.controllers[3].machine.elections)
        # Two voters down: the voter left and the replica are no quorum.
        for i in [i for i in range(3) if i != first][:2]:
            c.crash(i)
        if first is not None:
            c.crash(first)
        c.run(5.0)
        self.assertEqual(c.masters(), [])

    def test_two_leaders_less_data_steps_down(self) -> None:
        """
        An old leader cut off with its no-quorum check out of play while
        the majority elects another leader with more data: once they see
        each other, a new election keeps the one with more data and the
        other becomes its follower.
        """
        settings = ClusterSettings(
            cluster_size=3,
            gossip=FAST.gossip,
            election_timeout=0.5,
            probe_interval=0.1,
        )
        c = Cluster(3, settings=settings, no_quorum_timeout=1000.0)
        c.start()
        old = c.wait_leader(3.0)
        assert old is not None
        c.run(1.0)  # the followers learn the leader's epoch from its gossip
        others = [i for i in range(3) if i != old]
        c.network.groups = [{c.endpoint(old)}, {c.endpoint(i) for i in others}]
        new = c.wait_leader(5.0, among=others)
        assert new is not None
        self.assertEqual(len(c.masters()), 2)
        c.positions[c.endpoint(new)] = (5000, 5100)
        for i in others:
            c.positions[c.endpoint(i)] = (5000, 5100)
        c.run(0.5)
        c.network.groups = None
        self.assertEqual(c.wait_leader(5.0), new)
        self.assertEqual(c.controllers[old].state, VNodeState.Slave)

    def test_shutdown_announced(self) -> None:
        """
        A leader that stops cleanly tells the others (ShuttingDown), and
        they elect a new leader without waiting for timeouts.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        d = c.controllers[first].stopService()
        c.run(0.1)
        self.assertIsNone(self.successResultOf(d))
        c.network.down.add(c.endpoint(first))
        others = [i for i in range(3) if i != first]
        for i in others:
            record = c.controllers[i].machine.view.get(c.endpoint(first))
            assert record is not None
            self.assertEqual(record.state, VNodeState.ShuttingDown)
        self.assertIsNotNone(c.wait_leader(2.0, among=others))

    def test_tick_errors_do_not_stop_gossip(self) -> None:
        """
        A tick that fails (here: the store positions raise) is logged, and
        gossip goes on.
        """
        c = Cluster(3)

        def broken() -> tuple[int, int]:
            raise RuntimeError("disk on fire")

        c.controllers[0].positions = broken
        with capturedLogs() as events:
            c.start()
            c.run(1.0)
        self.assertTrue(any("store positions" in formatEvent(e) for e in events))
        before = c.network.delivered
        c.run(1.0)
        self.assertGreater(c.network.delivered, before)
        self.assertTrue(c.controllers[0]._loop.running)
        self.assertTrue(self.flushLoggedErrors(RuntimeError))

    def test_transport_raising_is_logged(self) -> None:
        """
        A transport that raises instead of failing its Deferred does not
        stop the loop.
        """
        c = Cluster(3)

        class Broken:
            timeout = 0.5

            def post_gossip(self, target: Endpoint, info: ClusterInfo) -> Any:
                raise RuntimeError("boom")

            def post_election(self, target: Endpoint, message: Message) -> Any:
                return fail(RuntimeError("boom"))

        c.controllers[0].transport = Broken()
        with capturedLogs() as events:
            c.start()
            c.run(1.0)
        self.assertTrue(any("boom" in str(e.get("log_failure", "")) for e in events))
        self.assertTrue(self.flushLoggedErrors(RuntimeError))
        self.assertTrue(c.controllers[0]._loop.running)

    def test_state_changes_logged(self) -> None:
        c = Cluster(3)
        with capturedLogs() as events:
            c.start()
            c.wait_leader(3.0)
        text = [formatEvent(e) for e in events]
        self.assertIn("Node state Initializing -> Unknown", text)
        self.assertIn("Node state PreMaster -> Master", text)

    def test_leadership_view_published(self) -> None:
        """
        Every controller publishes its role machine's leadership view: our
        state and epoch, the leader's endpoints, whether we take writes (the
        leader once replication wrote its epoch); followers are refused
        with the leader named.  C{gossip_document()} gives the /gossip JSON.
        """
        from estwisted.core.errors import NotLeader, NotReady

        c = Cluster(3)
        views: list[LeadershipView] = []
        c.controllers[0].leadership.subscribe(views.append)
        c.start()
        view = c.controllers[0].leadership.view
        self.assertEqual((view.v5_state, view.takes_writes, view.forward_http()),
                         ("Unknown", False, None))
        self.assertIsInstance(view.refusal(), NotReady)
        leader = c.wait_leader(3.0)
        assert leader is not None
        follower = next(i for i in range(3) if i != leader)
        m = c.members[leader]
        mine = c.controllers[leader].leadership.view
        self.assertEqual((mine.v5_state, mine.takes_writes, mine.refusal()), ("Master", True, None))
        self.assertEqual(mine.leader_id, m.instance_id)
        own = c.controllers[leader].machine.own
        self.assertEqual((mine.epoch_number, mine.epoch_id), (own.epoch_number, own.epoch_id))
        theirs = c.controllers[follower].leadership.view
        self.assertEqual((theirs.v5_state, theirs.takes_writes), ("Slave", False))
        self.assertEqual(
            (theirs.leader_internal_tcp, theirs.leader_internal_http,
             theirs.leader_external_tcp, theirs.leader_external_http),
            (m.internal_tcp, m.internal_http, m.external_tcp, m.external_http),
        )
        self.assertEqual(theirs.forward_http(), (m.external_http.host, m.external_http.port))
        refusal = theirs.refusal()
        assert isinstance(refusal, NotLeader)
        self.assertEqual(refusal.tcp, (m.external_tcp.host, m.external_tcp.port))
        self.assertEqual(views[-1], c.controllers[0].leadership.view)
        doc = c.controllers[follower].gossip_document()
        self.assertEqual(doc["serverIp"], c.endpoint(follower).host)
        self.assertEqual(len(doc["members"]), 3)

    def test_resign_gives_another_leader(self) -> None:
        """
        C{resign} on the leader (C{Operations.ResignNode}) makes it step
        down once a quorum acknowledged, and another node leads; on a
        follower it does nothing.
        """
        c = Cluster(3)
        c.start()
        first = c.wait_leader(3.0)
        assert first is not None
        follower = next(i for i in range(3) if i != first)
        c.controllers[follower].resign()
        c.run(1.0)
        self.assertEqual(c.leader(), first)
        c.controllers[first].resign()
        c.run(0.5)
        second = c.wait_leader(3.0)
        self.assertIsNotNone(second)
        self.assertNotEqual(second, first)

    def test_node_priority_reaches_gossip(self) -> None:
        """
        C{set_node_priority} (C{Operations.SetNodePriority}) changes our
        own record at once, and peers see it through gossip.
        """
        c = Cluster(3)
        c.start()
        c.run(1.0)
        c.controllers[0].set_node_priority(7)
        self.assertEqual(c.controllers[0].machine.own.node_priority, 7)
        c.run(1.0)
        record = c.controllers[1].machine.view.get(c.endpoint(0))
        assert record is not None
        self.assertEqual(record.node_priority, 7)

    def test_positions_reach_gossip(self) -> None:
        c = Cluster(3)
        c.positions[c.endpoint(0)] = (1234, 2345)
        c.start()
        c.run(1.0)
        record = c.controllers[1].machine.view.get(c.endpoint(0))
        assert record is not None
        self.assertEqual((record.last_commit_position, record.writer_checkpoint), (1234, 2345))

    def test_epoch_reaches_gossip(self) -> None:
        """
        C{set_epoch} puts the log's newest epoch in our own record, and
        peers see it through gossip; C{(-1, -1, zero id)} clears it.
        """
        c = Cluster(3)
        c.start()
        leader = c.wait_leader(3.0)
        assert leader is not None
        # A follower: a leader writes its own epochs on election.
        node = next(i for i in range(3) if i != leader)
        epoch_id = uuid.UUID(int=7, version=4)
        c.controllers[node].set_epoch(4096, 3, epoch_id)
        own = c.controllers[node].machine.own
        self.assertEqual((own.epoch_position, own.epoch_number, own.epoch_id), (4096, 3, epoch_id))
        c.run(1.0)
        record = c.controllers[leader].machine.view.get(c.endpoint(node))
        assert record is not None
        self.assertEqual(
            (record.epoch_position, record.epoch_number, record.epoch_id), (4096, 3, epoch_id)
        )
        c.controllers[node].set_epoch(-1, -1, uuid.UUID(int=0))
        own = c.controllers[node].machine.own
        self.assertEqual(
            (own.epoch_position, own.epoch_number, own.epoch_id), (-1, -1, uuid.UUID(int=0))
        )

    @settings(max_examples=40)
    @given(
        size=st.sampled_from([3, 5]),
        ops=st.lists(
            st.tuples(st.sampled_from(["crash", "restart", "run"]), st.integers(0, 4),
                      st.floats(0.05, 1.5)),
            max_size=8,
        ),
    )
    def test_crashes_and_restarts(self, size: int, ops: list[tuple[str, int, float]]) -> None:
        """
        Under random crashes and restarts there is never more than one
        Master among running nodes (crash faults only: nobody is cut off
        while still running), and once every node is back a single leader
        is agreed on.
        """
        c = Cluster(size)
        c.start()
        for op, index, t in ops:
            i = index % size
            if op == "crash" and i in c.alive():
                c.crash(i)
            elif op == "restart" and i not in c.alive():
                c.restart(i)
            for _ in range(round(t / 0.05)):
                c.run(0.05)
                self.assertLessEqual(len(c.masters()), 1)
        for i in range(size):
            if i not in c.alive():
                c.restart(i)
        self.assertIsNotNone(c.wait_leader(10.0))


class FaultyNetworkTests(SynchronousTestCase):
    @settings(max_examples=25)
    # CI's failure: a node that adopted a leader from gossip and then
    # jumped to view 1 on a proof was counted as deciding that leader in
    # view 1, beside the leader view 1 really decided.
    @example(size=5, seed=13, drop=0.0, duplicate=0.0, max_delay=0.002,
             phases=[([0, 3, 0, 0], 1.625), ([1, 0, 0], 2.9375), ([1, 2, 1], 1.0)])
    @given(
        size=st.sampled_from([3, 5]),
        seed=st.integers(0, 2**16),
        drop=st.sampled_from([0.0, 0.1, 0.3]),
        duplicate=st.sampled_from([0.0, 0.2]),
        max_delay=st.sampled_from([0.002, 0.05, 0.2]),
        phases=st.lists(
            st.tuples(st.lists(st.integers(0, 4), max_size=5), st.floats(0.2, 3.0)),
            max_size=4,
        ),
    )
    def test_one_leader_per_view_and_recovery(
        self,
        size: int,
        seed: int,
        drop: float,
        duplicate: float,
        max_delay: float,
        phases: list[tuple[list[int], float]],
    ) -> None:
        """
        Messages lost, duplicated, delayed and reordered, the cluster cut
        in two for a while (one side given by C{phases}): no view ever has
        two leaders, and once the network is healthy a single leader is
        agreed on.
        """
        c = Cluster(size, seed=seed)
        net = c.network
        net.rng = random.Random(seed)
        net.drop, net.duplicate, net.max_delay = drop, duplicate, max_delay
        decided: dict[int, set[uuid.UUID]] = {}

        def observe() -> None:
            for ctrl in c.controllers:
                machine = ctrl.machine.elections
                if machine is not None and machine.leader is not None:
                    view = machine.leader_view
                    if view is not None:
                        decided.setdefault(view, set()).add(machine.leader)
                        self.assertLessEqual(len(decided[view]), 1, decided)

        c.start()
        for side, seconds in phases:
            group = {c.endpoint(i % size) for i in side}
            rest = {c.endpoint(i) for i in range(size)} - group
            net.groups = [group, rest]
            for _ in range(round(seconds / 0.05)):
                c.run(0.05)
                observe()
        net.groups = None
        net.drop = net.duplicate = 0.0
        net.max_delay = net.delay
        leader = c.wait_leader(15.0)
        observe()
        self.assertIsNotNone(leader)


class MachineTests(SynchronousTestCase):
    def machine(self, i: int = 0, **kw: Any) -> NodeMachine:
        seeds = [member(j).internal_http for j in range(3) if j != i]
        kw.setdefault("rng", random.Random(i))
        m = NodeMachine.create(member(i), seeds, FAST, 1000.0, **kw)
        m.start(1000.0)
        return m

    def test_clock_skew_rejected_and_logged(self) -> None:
        """
        Gossip whose sender's own record is further from our clock than
        GossipAllowedDifferenceMs is rejected (no reply, table unchanged)
        with one error line naming the peer and both clocks, repeated at
        most every SEED_LOG_PERIOD while the skew lasts.
        """
        m = self.machine()
        peer = member(1)
        skewed = evolve(peer, timestamp=1000.0 + 61, state=VNodeState.Unknown)
        before = m.view
        reply, effects = m.on_gossip_request(ClusterInfo((skewed,), peer.internal_http), 1000.0)
        self.assertIsNone(reply)
        self.assertEqual(m.view, before)
        (line,) = [e for e in effects if isinstance(e, LogLine)]
        self.assertEqual(line.level, "error")
        self.assertEqual(
            line.text,
            "Refused 127.0.0.2:2112 as a cluster member: its clock says "
            "1970-01-01T00:17:41.000Z, ours says 1970-01-01T00:16:40.000Z (61,000 ms apart, "
            "more than the allowed 60,000 ms of GossipAllowedDifferenceMs)",
        )
        again = evolve(peer, timestamp=1001.0 + 61, state=VNodeState.Unknown)
        _, effects = m.on_gossip_request(ClusterInfo((again,), peer.internal_http), 1001.0)
        self.assertEqual([e for e in effects if isinstance(e, LogLine)], [])
        later = 1000.0 + SEED_LOG_PERIOD
        late = evolve(peer, timestamp=later + 61, state=VNodeState.Unknown)
        _, effects = m.on_gossip_request(ClusterInfo((late,), peer.internal_http), later)
        self.assertEqual(len([e for e in effects if isinstance(e, LogLine)]), 1)

    def test_skew_within_limit_accepted(self) -> None:
        m = self.machine()
        peer = member(1)
        ok = evolve(peer, timestamp=1000.0 + 59, state=VNodeState.Unknown)
        reply, _ = m.on_gossip_request(ClusterInfo((ok,), peer.internal_http), 1000.0)
        self.assertIsNotNone(reply)
        self.assertIsNotNone(m.view.get(peer.internal_http))

    def test_discovery_follows_single_leader(self) -> None:
        """
        While discovering, a table with exactly one alive Master makes the
        node its follower at once (PreReplica, replication told to follow
        it); replication's reports make it CatchingUp then Slave.
        """
        m = self.machine()
        leader = evolve(member(1), timestamp=1000.0, state=VNodeState.Master)
        effects = m.on_gossip_response(
            leader.internal_http, ClusterInfo((leader,), leader.internal_http), 1000.1
        )
        self.assertEqual(m.state, VNodeState.PreReplica)
        self.assertEqual(m.leader_id, leader.instance_id)
        record = m.view.get(leader.internal_http)
        assert record is not None
        self.assertEqual(
            [e for e in effects if isinstance(e, (StateChanged, Follow, StandBy, Lead))],
            [StateChanged(VNodeState.Unknown, VNodeState.PreReplica, record), Follow(record)],
        )
        effects = m.on_replication(ReplicaSubscribed(), 1000.2)
        effects += m.on_replication(SlaveAssigned(), 1000.2)
        self.assertEqual(
            [e for e in effects if isinstance(e, StateChanged)],
            [
                StateChanged(VNodeState.PreReplica, VNodeState.CatchingUp, record),
                StateChanged(VNodeState.CatchingUp, VNodeState.Slave, record),
            ],
        )

    def test_leading_asks_replication_for_an_epoch(self) -> None:
        """
        Elected, the node asks replication to lead with an epoch above any
        seen; the epoch in its gossip record only changes when replication
        reports the one it wrote (L{EpochWritten}), and only then does it
        take writes.  Replication's L{NoQuorum} makes it Unknown and
        replication stands by (alone, it is elected again, and does not take
        writes until replication writes a new epoch).
        """
        m = NodeMachine.create(member(0), [], evolve(FAST, cluster_size=1), 1000.0,
                               random.Random(0))
        m.set_epoch(100, 4, uuid.UUID(int=9), 1000.0)
        effects = m.start(1000.0)
        effects += m.tick(1000.0 + FAST.discover_window)
        self.assertEqual(m.state, VNodeState.Master)
        self.assertEqual([e for e in effects if isinstance(e, Lead)], [Lead(5)])
        self.assertEqual(m.own.epoch_number, 4)
        self.assertFalse(m.leadership().takes_writes)
        self.assertEqual(m.on_replication(EpochWritten(200, 5, uuid.UUID(int=10)), 1004.0), [])
        self.assertEqual(
            (m.own.epoch_position, m.own.epoch_number, m.own.epoch_id), (200, 5, uuid.UUID(int=10))
        )
        view = m.leadership()
        self.assertTrue(view.takes_writes)
        self.assertEqual((view.epoch_number, view.leader_id), (5, m.own.instance_id))
        effects = m.on_replication(NoQuorum(), 1005.0)
        changes = [e for e in effects if isinstance(e, StateChanged)]
        self.assertEqual((changes[0].old, changes[0].new), (VNodeState.Master, VNodeState.Unknown))
        self.assertEqual(effects[effects.index(changes[0]) + 1], StandBy())
        self.assertFalse(m.leadership().takes_writes)
        self.assertTrue(
            any(isinstance(e, LogLine) and "stepping down" in e.text for e in effects)
        )

    def test_discovery_times_out_into_elections(self) -> None:
        m = self.machine()
        self.assertTrue(m.discovering)
        effects = m.tick(1000.0 + FAST.discover_window)
        self.assertFalse(m.discovering)
        lines = [e.text for e in effects if isinstance(e, LogLine)]
        self.assertTrue(any("Starting elections" in t for t in lines))

    def test_gossip_goes_to_peers(self) -> None:
        m = self.machine()
        effects = m.tick(1000.0)
        sends = [e for e in effects if isinstance(e, GossipTo)]
        self.assertEqual(len(sends), 1)
        self.assertNotEqual(sends[0].target, m.own.internal_http)
        self.assertEqual(sends[0].info.server, m.own.internal_http)

    def test_seed_silence_logged_once_per_period(self) -> None:
        m = self.machine()
        seed = member(1).internal_http
        first = m.on_gossip_failure(seed, 1000.0, refused=True, reason="refused")
        again = m.on_gossip_failure(seed, 1001.0, refused=True, reason="refused")
        lines = [e for e in first if isinstance(e, LogLine)]
        self.assertEqual(len(lines), 1)
        self.assertIn("Gossip seed 127.0.0.2:2112 does not answer", lines[0].text)
        self.assertFalse([e for e in again if isinstance(e, LogLine)])

    def test_refused_marks_dead(self) -> None:
        m = self.machine()
        peer = evolve(member(1), timestamp=1000.0, state=VNodeState.Unknown)
        m.on_gossip_response(peer.internal_http, ClusterInfo((peer,), peer.internal_http), 1000.0)
        self.assertTrue(m.view.get(peer.internal_http).is_alive)  # type: ignore[union-attr]
        m.on_gossip_failure(peer.internal_http, 1000.2, refused=True)
        self.assertFalse(m.view.get(peer.internal_http).is_alive)  # type: ignore[union-attr]

    def test_shutdown_tells_alive_members(self) -> None:
        m = self.machine()
        peer = evolve(member(1), timestamp=1000.0, state=VNodeState.Unknown)
        m.on_gossip_response(peer.internal_http, ClusterInfo((peer,), peer.internal_http), 1000.0)
        effects = m.shutdown(1000.5)
        self.assertEqual(m.state, VNodeState.ShuttingDown)
        sends = [e for e in effects if isinstance(e, GossipTo)]
        self.assertEqual([s.target for s in sends], [peer.internal_http])
        self.assertEqual(m.tick(1001.0), [])


class ConfigTests(SynchronousTestCase):
    def test_settings_and_own_record_from_config(self) -> None:
        """
        Timings come from the *Ms options; the own record advertises the
        ...AdvertiseAs addresses, not the bound ones.
        """
        from estwisted.node.config import load_config

        config = load_config(
            {
                "ClusterSize": "3",
                "DiscoverViaDns": "false",
                "GossipSeed": "127.0.0.1:2113",
                "GossipIntervalMs": "200",
                "GossipTimeoutMs": "300",
                "LeaderElectionTimeoutMs": "700",
                "IntIp": "127.0.0.1",
                "IntIpAdvertiseAs": "10.1.2.3",
                "ExtHttpPortAdvertiseAs": "8080",
                "NodePriority": "5",
            }
        )
        s = ClusterSettings.from_config(config)
        self.assertEqual((s.gossip.interval, s.gossip.timeout, s.election_timeout), (0.2, 0.3, 0.7))
        self.assertEqual(s.probe_interval, 0.2)
        self.assertEqual(s.quorum, 2)
        own = own_member_from_config(config)
        self.assertEqual(own.internal_http, Endpoint("10.1.2.3", 2112))
        self.assertEqual(own.external_http.port, 8080)
        self.assertEqual(own.node_priority, 5)


class HoldTests(SynchronousTestCase):
    """
    A follower asked into an election by a peer checks its leader first.
    """

    def follower(self) -> tuple[NodeMachine, MemberInfo]:
        seeds = [member(j).internal_http for j in range(1, 3)]
        m = NodeMachine.create(member(0), seeds, FAST, 1000.0, random.Random(1))
        m.start(1000.0)
        leader = evolve(member(1), timestamp=1000.0, state=VNodeState.Master)
        m.on_gossip_response(leader.internal_http, ClusterInfo((leader,), leader.internal_http),
                             1000.0)
        m.on_replication(ReplicaSubscribed(), 1000.0)
        m.on_replication(SlaveAssigned(), 1000.0)
        self.assertEqual(m.state, VNodeState.Slave)
        return m, leader

    def test_view_change_waits_for_probe(self) -> None:
        m, leader = self.follower()
        peer = member(2)
        vc = ViewChange(peer.instance_id, peer.internal_http, 7)
        effects = m.on_election_message(vc, 1000.1)
        self.assertEqual(
            [(e.target, e.probe) for e in effects if isinstance(e, GossipTo)],
            [(leader.internal_http, True)],
        )
        elections = m.elections
        assert elections is not None
        self.assertLess(elections.last_attempted_view, 7)
        self.assertEqual(m.held, [vc])
        # The leader refuses: it is dead, and the held message is fed.
        m.on_gossip_failure(leader.internal_http, 1000.11, refused=True, probe=True)
        self.assertEqual(m.held, [])
        self.assertEqual(elections.last_attempted_view, 7)
        self.assertNotIn(leader.instance_id, [s.instance_id for s in elections.servers])

    def test_held_messages_released_on_timeout(self) -> None:
        m, leader = self.follower()
        peer = member(2)
        m.on_election_message(ViewChange(peer.instance_id, peer.internal_http, 3), 1000.1)
        m.tick(1000.1 + FAST.gossip.timeout)
        self.assertEqual(m.held, [])
        elections = m.elections
        assert elections is not None
        self.assertEqual(elections.last_attempted_view, 3)

    def test_no_hold_without_leader(self) -> None:
        seeds = [member(j).internal_http for j in range(1, 3)]
        m = NodeMachine.create(member(0), seeds, FAST, 1000.0, random.Random(1))
        m.start(1000.0)
        peer = member(2)
        m.on_election_message(ViewChange(peer.instance_id, peer.internal_http, 0), 1000.1)
        self.assertEqual(m.held, [])



class WiringTests(SynchronousTestCase):
    def test_make_cluster_service(self) -> None:
        """
        L{make_cluster_service} builds the controller from the config and
        the store's positions, the two wrapped roots, and a service that
        gossips to the seeds over TCP on the given reactor.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.resource import Resource

        from estwisted.cluster.gossiphttp import ClusterResource
        from estwisted.cluster.wiring import make_cluster_service
        from estwisted.node.config import load_config

        config = load_config(
            {
                "ClusterSize": "3",
                "DiscoverViaDns": "false",
                "GossipSeed": "127.0.0.2:2112,127.0.0.3:2112",
            }
        )

        class Store:
            last_commit_position = 4000
            writer_position = 4096

        reactor = MemoryReactorClock()
        reactor.advance(NOW)
        changes: list[StateChanged] = []
        root = Resource()
        wiring = make_cluster_service(config, reactor, Store(), root, on_state=changes.append)
        self.assertIsInstance(wiring.external_root, ClusterResource)
        self.assertFalse(wiring.external_root.internal)
        self.assertTrue(wiring.internal_root.internal)
        self.assertIs(wiring.internal_root.inner, root)
        with capturedLogs():
            wiring.service.startService()
            reactor.advance(0.1)
        own = wiring.controller.machine.own
        self.assertEqual((own.last_commit_position, own.writer_checkpoint), (4000, 4096))
        self.assertEqual(own.internal_http, Endpoint("127.0.0.1", 2112))
        self.assertEqual(changes[0].new, VNodeState.Unknown)
        targets = {(host, port) for host, port, *_ in reactor.tcpClients}
        self.assertTrue(targets <= {("127.0.0.2", 2112), ("127.0.0.3", 2112)})
        self.assertTrue(targets)
        with capturedLogs():
            d = wiring.service.stopService()
            reactor.advance(1.0)
        self.successResultOf(d)
        self.assertEqual(wiring.controller.state, VNodeState.ShuttingDown)


NOW = 1_700_000_000.0


class StaleRecordTests(SynchronousTestCase):
    def test_former_process_record_does_not_replace_new_one(self) -> None:
        """
        A third party's record of the node's previous run (more data, a
        higher epoch, dead) does not replace the record of the process now
        running at that address; the new process's own gossip is taken.
        """
        seeds = [member(j).internal_http for j in range(1, 3)]
        m = NodeMachine.create(member(0), seeds, FAST, 1000.0, random.Random(1))
        m.start(1000.0)
        restarted = evolve(member(2), timestamp=1000.0, state=VNodeState.Unknown)
        m.on_gossip_response(
            restarted.internal_http, ClusterInfo((restarted,), restarted.internal_http), 1000.0
        )
        old = evolve(
            restarted,
            instance_id=uuid.uuid4(),
            timestamp=999.0,
            is_alive=False,
            state=VNodeState.Master,
            epoch_number=4,
            writer_checkpoint=10_000,
        )
        third = evolve(member(1), timestamp=1000.1, state=VNodeState.Unknown)
        m.on_gossip_request(ClusterInfo((third, old), third.internal_http), 1000.1)
        record = m.view.get(restarted.internal_http)
        assert record is not None
        self.assertEqual(record.instance_id, restarted.instance_id)
        self.assertTrue(record.is_alive)

