# -*- test-case-name: estwisted.cluster.test.test_leadership -*-
"""
Tests for L{estwisted.cluster.leadership}: the leadership view and its publisher,
and the view the production node machine publishes whatever replication
reports.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.controller import ClusterSettings, EpochWritten, NodeMachine, StateChanged
from estwisted.cluster.elections import (
    CloneAssigned,
    LeaderLinkLost,
    NoQuorum,
    ReplicaSubscribed,
    SlaveAssigned,
)
from estwisted.cluster.gossip import ClusterInfo, Endpoint, MemberInfo, VNodeState
from estwisted.cluster.leadership import (
    STANDALONE,
    LeaderLease,
    Leadership,
    LeadershipView,
    lease_duration,
)
from estwisted.core.errors import NotLeader, NotReady


def member(index: int, state: VNodeState = VNodeState.Unknown, ts: float = 1000.0) -> MemberInfo:
    host = f"127.0.0.{index + 1}"
    return MemberInfo(
        instance_id=uuid.UUID(int=index + 1),
        timestamp=ts,
        state=state,
        is_alive=True,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
    )


class ViewTests(SynchronousTestCase):
    def test_standalone(self) -> None:
        """
        A single node takes writes: nothing is refused or forwarded.
        """
        self.assertTrue(STANDALONE.takes_writes)
        self.assertIsNone(STANDALONE.refusal())
        self.assertIsNone(STANDALONE.forward_http())
        self.assertEqual(STANDALONE.v5_state, "Master")

    def test_of(self) -> None:
        """
        Taking writes, the leader is ourselves; following, the leader's
        endpoints are named in the refusal and used for forwarding; with
        neither, writes are not ready.
        """
        own, leader = member(0), member(1)
        lead = LeadershipView.of(own, VNodeState.Master, None, True)
        self.assertEqual((lead.leader_id, lead.refusal(), lead.forward_http()),
                         (own.instance_id, None, None))
        follow = LeadershipView.of(own, VNodeState.Slave, leader, False)
        refusal = follow.refusal()
        assert isinstance(refusal, NotLeader)
        self.assertEqual((refusal.tcp, refusal.http), (("127.0.0.2", 1113), ("127.0.0.2", 2113)))
        self.assertEqual(follow.forward_http(), ("127.0.0.2", 2113))
        self.assertEqual(follow.leader_internal_tcp, leader.internal_tcp)
        none = LeadershipView.of(own, VNodeState.Unknown, None, False)
        self.assertIsInstance(none.refusal(), NotReady)
        self.assertNotIsInstance(none.refusal(), NotLeader)
        self.assertIsNone(none.forward_http())
        starting = LeadershipView(VNodeState.Initializing)
        self.assertIn("not joined", str(starting.refusal()))

    def test_publish(self) -> None:
        """
        Listeners hear each new view once, in order; an equal view is not
        published again.
        """
        leadership = Leadership(LeadershipView(VNodeState.Initializing))
        seen: list[LeadershipView] = []
        leadership.subscribe(seen.append)
        unknown = LeadershipView(VNodeState.Unknown)
        leadership.publish(unknown)
        leadership.publish(LeadershipView(VNodeState.Unknown))
        leadership.publish(STANDALONE)
        self.assertEqual(seen, [unknown, STANDALONE])
        self.assertIs(leadership.view, STANDALONE)


_events = st.lists(
    st.sampled_from(
        [
            "subscribed",
            "clone",
            "slave",
            "link_lost",
            "no_quorum",
            "epoch",
            "leader_seen",
            "tick",
        ]
    ),
    max_size=40,
)


class MachineViewProperties(SynchronousTestCase):
    """
    Whatever replication reports and whenever, the production node
    machine's published view is consistent with its state.
    """

    @settings(max_examples=60)
    @given(events=_events, alone=st.booleans(), seed=st.integers(0, 1000))
    def test_view_consistent(self, events: list[str], alone: bool, seed: int) -> None:
        """
        Only a Master takes writes, and only after replication reported its
        epoch written since it last became Master; a node that does not
        take writes refuses them (naming the leader exactly when it follows
        one, or, neither leading nor following, when gossip shows one alive
        leader); the view's epoch is the one in our gossip record.
        """
        size = 1 if alone else 3
        seeds = [] if alone else [member(1).internal_http, member(2).internal_http]
        m = NodeMachine.create(
            member(0), seeds, ClusterSettings(cluster_size=size), 1000.0, random.Random(seed)
        )
        now = 1000.0
        m.start(now)
        epoch = 0
        written_since_master = False
        last_state = m.state
        for name in events:
            now += 0.5
            event: Any = None
            if name == "subscribed":
                event = ReplicaSubscribed()
            elif name == "clone":
                event = CloneAssigned()
            elif name == "slave":
                event = SlaveAssigned()
            elif name == "link_lost":
                event = LeaderLinkLost()
            elif name == "no_quorum":
                event = NoQuorum()
            elif name == "epoch":
                epoch += 1
                event = EpochWritten(epoch * 100, epoch, uuid.UUID(int=epoch))
            if event is not None:
                effects = m.on_replication(event, now)
            elif name == "leader_seen":
                leader = member(1, VNodeState.Master, now)
                effects = m.on_gossip_response(
                    leader.internal_http, ClusterInfo((leader,), leader.internal_http), now
                )
            else:
                effects = m.tick(now)
            # (re)became Master in this step: a new epoch must be written
            became = any(
                isinstance(e, StateChanged) and e.new is VNodeState.Master for e in effects
            )
            if m.state is not VNodeState.Master or became:
                written_since_master = False
            elif last_state is not VNodeState.Master:
                written_since_master = name == "epoch"
            elif name == "epoch":
                written_since_master = True
            last_state = m.state
            view = m.leadership()
            self.assertEqual(view.state, m.state)
            self.assertEqual(
                (view.epoch_number, view.epoch_position, view.epoch_id),
                (m.own.epoch_number, m.own.epoch_position, m.own.epoch_id),
            )
            self.assertEqual(view.takes_writes, written_since_master)
            if view.takes_writes:
                self.assertIsNone(view.refusal())
                self.assertEqual(view.leader_id, m.own.instance_id)
            else:
                refusal = view.refusal()
                self.assertIsInstance(refusal, NotReady)
                follows = isinstance(refusal, NotLeader)
                self.assertEqual(follows, view.forward_http() is not None)
                hint = m.leader_in_gossip()
                if follows:
                    self.assertNotEqual(view.leader_id, m.own.instance_id)
                    self.assertNotEqual(view.state, VNodeState.Master)
                    if view.state is VNodeState.Unknown:
                        # neither leading nor following: the leader gossip shows
                        assert hint is not None
                        self.assertEqual(view.leader_id, hint.instance_id)
                elif view.state is VNodeState.Unknown:
                    self.assertIsNone(hint)


class ExportTests(SynchronousTestCase):
    def test_names(self) -> None:
        from estwisted.cluster import leadership

        expected = [
            "LeaderLease", "Leadership", "LeadershipView", "NO_EPOCH_ID", "STANDALONE",
            "lease_duration",
        ]
        self.assertEqual(sorted(leadership.__all__), expected)
        self.assertEqual(evolve(STANDALONE).takes_writes, True)


class LeaderLeaseTests(SynchronousTestCase):
    """
    L{LeaderLease}: held for its duration after a quorum was last heard.
    """

    def test_not_held_before_renewal(self) -> None:
        self.assertFalse(LeaderLease(0.4).holds(0.0))

    def test_held_then_lapsed(self) -> None:
        lease = LeaderLease(0.4)
        lease.renew(10.0)
        self.assertTrue(lease.holds(10.39))
        self.assertFalse(lease.holds(10.4))

    def test_late_report_does_not_shorten(self) -> None:
        lease = LeaderLease(0.4)
        lease.renew(10.0)
        lease.renew(9.0)
        self.assertTrue(lease.holds(10.3))

    def test_release(self) -> None:
        lease = LeaderLease(0.4)
        lease.renew(10.0)
        lease.release()
        self.assertFalse(lease.holds(10.1))

    def test_duration_checked(self) -> None:
        self.assertRaises(ValueError, LeaderLease, 0)

    def test_duration_shorter_than_election_timeout(self) -> None:
        self.assertEqual(lease_duration(1.0), 0.4)
        self.assertEqual(lease_duration(0.5), 0.2)
        self.assertEqual(lease_duration(1.0, 0.5), 0.4)
        self.assertEqual(lease_duration(0.5, 0.5), 0.2)
        self.assertEqual(lease_duration(2.0, 0.25), 0.2)

    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("renew"), st.floats(0, 100)),
                st.tuples(st.just("release"), st.just(0.0)),
            ),
            max_size=30,
        ),
        st.floats(0, 120),
    )
    def test_holds_iff_renewed_recently(self, steps: list[tuple[str, float]], now: float) -> None:
        """
        The lease holds at C{now} exactly when, since the last release, some
        renewal was heard less than the duration before C{now}.
        """
        lease = LeaderLease(0.5)
        heard: list[float] = []
        for kind, at in steps:
            if kind == "renew":
                lease.renew(at)
                heard.append(at)
            else:
                lease.release()
                heard = []
        self.assertEqual(lease.holds(now), any(now < at + 0.5 for at in heard))
