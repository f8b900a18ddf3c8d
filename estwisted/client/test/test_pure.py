# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
Tests for the pure parts of L{estwisted.client}: settings and connection
strings, node selection from gossip, the connection state machine, answer
decisions, delivery tracking and metadata values.
"""

from __future__ import annotations

import random
import uuid

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import estwisted.client
from estwisted.client import (
    ClusterSettings,
    ConnectionSettings,
    EventData,
    NodeEndpoints,
    NodePreference,
    Position,
    ResolvedEvent,
    SingleNode,
    StreamAcl,
    StreamMetadata,
    UserCredentials,
    WrongExpectedVersion,
    choose_node,
    parse_connection_string,
)
from estwisted.client._machine import (
    ConnectionMachine,
    ConnectTcp,
    Discover,
    DropTcp,
    NotifyClosed,
    NotifyConnected,
    Phase,
    Schedule,
    SendIdentify,
    backoff_delay,
)
from estwisted.client._operations import (
    AppendToStream,
    Complete,
    Fail,
    Reconnect,
    Retry,
    can_retry,
)
from estwisted.client._tracking import AllTracker, HandledSet, StreamTracker
from estwisted.client._values import RecordedEvent
from estwisted.cluster.gossip import Endpoint, MemberInfo, VNodeState
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import TcpCommand, TcpPackage

NODE = NodeEndpoints("10.0.0.1", 1113)


class ExportTests(SynchronousTestCase):
    def test_public_names(self) -> None:
        """
        The names the issue's example imports are public.
        """
        for name in (
            "EventStoreConnection", "ConnectionSettings", "ClusterSettings", "EventData",
            "ExpectedVersion", "UserCredentials",
        ):
            self.assertIn(name, estwisted.client.__all__)
            self.assertTrue(hasattr(estwisted.client, name))


class SettingsTests(SynchronousTestCase):
    def test_bad_settings_name_themselves(self) -> None:
        """
        A bad value raises L{ValueError} naming the setting.
        """
        cases = [
            (lambda: ConnectionSettings(operation_timeout=0), "operation_timeout"),
            (lambda: ConnectionSettings(max_retries=-2), "max_retries"),
            (lambda: ConnectionSettings(max_queue_size=0), "max_queue_size"),
            (lambda: ConnectionSettings(heartbeat_interval=-1), "heartbeat_interval"),
            (lambda: ConnectionSettings(use_tls=True), "target_host"),
            (lambda: ClusterSettings(), "gossip_seeds"),
            (lambda: ClusterSettings(gossip_seeds=[("h", 0)]), "gossip_seeds"),
            (lambda: ClusterSettings(cluster_dns="x", gossip_timeout=0), "gossip_timeout"),
            (lambda: ClusterSettings(cluster_dns="x", max_discover_attempts=0),
             "max_discover_attempts"),
            (lambda: SingleNode("h", 70000), "port"),
        ]
        for build, name in cases:
            e = self.assertRaises(ValueError, build)
            self.assertIn(name, str(e))

    def test_tcp_connection_string(self) -> None:
        """
        C{tcp://user:pass@host:port?key=value} gives one node, credentials
        and settings (milliseconds for times).
        """
        settings, target = parse_connection_string(
            "tcp://admin:changeit@10.0.0.1:1114?maxRetries=5&operationTimeout=2500"
            "&keepReconnecting=true"
        )
        self.assertEqual(target, SingleNode("10.0.0.1", 1114))
        self.assertEqual(settings.default_user_credentials, UserCredentials("admin", "changeit"))
        self.assertEqual(settings.max_retries, 5)
        self.assertEqual(settings.operation_timeout, 2.5)
        self.assertTrue(settings.keep_reconnecting)

    def test_discover_connection_string(self) -> None:
        """
        C{discover://name:port} is a cluster DNS name; an IP is a seed;
        C{gossipSeeds} lists seeds.
        """
        _, target = parse_connection_string("discover://cluster.example:2114?gossipTimeout=500")
        assert isinstance(target, ClusterSettings)
        self.assertEqual((target.cluster_dns, target.gossip_port), ("cluster.example", 2114))
        self.assertEqual(target.gossip_timeout, 0.5)
        _, target = parse_connection_string("discover://10.0.0.1:2113?nodePreference=follower")
        assert isinstance(target, ClusterSettings)
        self.assertEqual(target.gossip_seeds, (("10.0.0.1", 2113),))
        self.assertIs(target.node_preference, NodePreference.FOLLOWER)
        _, target = parse_connection_string(
            "discover://x?gossipSeeds=10.0.0.1:2113,10.0.0.2:2113"
        )
        assert isinstance(target, ClusterSettings)
        self.assertEqual(len(target.gossip_seeds), 2)

    def test_bad_connection_strings(self) -> None:
        """
        An unknown scheme, key or bad value raises naming it.
        """
        for text, name in [
            ("http://x", "scheme"),
            ("tcp://x?bogus=1", "bogus"),
            ("tcp://x?maxRetries=many", "maxRetries"),
            ("tcp://x?requireMaster=maybe", "requireMaster"),
        ]:
            self.assertIn(name, str(self.assertRaises(ValueError, parse_connection_string, text)))

    def test_event_data(self) -> None:
        """
        L{EventData} wants a UUID and a type; text data is encoded.
        """
        self.assertEqual(EventData(uuid.uuid4(), "t", "é").data, "é".encode())
        self.assertRaises(TypeError, EventData, "not-a-uuid", "t")
        self.assertRaises(ValueError, EventData, uuid.uuid4(), "")


def member(host: str, state: VNodeState, alive: bool = True) -> MemberInfo:
    return MemberInfo(
        instance_id=uuid.uuid4(),
        timestamp=0.0,
        state=state,
        is_alive=alive,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
    )


states = st.sampled_from(list(VNodeState))


class ChooseNodeTests(SynchronousTestCase):
    def test_leader_preferred(self) -> None:
        """
        The alive Master wins; dead members and managers never.
        """
        members = [
            member("a", VNodeState.Slave),
            member("b", VNodeState.Master, alive=False),
            member("c", VNodeState.Manager),
            member("d", VNodeState.Master),
        ]
        chosen = choose_node(members, NodePreference.LEADER, random.Random(0))
        assert chosen is not None
        self.assertEqual(chosen.external_tcp.host, "d")

    def test_follower_preferred(self) -> None:
        chosen = choose_node(
            [member("a", VNodeState.Master), member("b", VNodeState.Slave)],
            NodePreference.FOLLOWER,
            random.Random(0),
        )
        assert chosen is not None
        self.assertEqual(chosen.external_tcp.host, "b")

    @given(st.lists(st.tuples(states, st.booleans()), max_size=6), st.sampled_from(
        list(NodePreference)), st.integers(0, 1000))
    def test_never_excluded(
        self, spec: list[tuple[VNodeState, bool]], preference: NodePreference, seed: int
    ) -> None:
        """
        Whatever the members, the choice is alive and not a manager or
        shutting down; with the leader preference an alive Master is
        chosen whenever there is one.
        """
        members = [member(f"10.0.0.{i}", s, a) for i, (s, a) in enumerate(spec)]
        chosen = choose_node(members, preference, random.Random(seed))
        eligible = [
            m for m in members
            if m.is_alive and m.state not in
            (VNodeState.Manager, VNodeState.ShuttingDown, VNodeState.Shutdown)
        ]
        if not eligible:
            self.assertIsNone(chosen)
            return
        assert chosen is not None
        self.assertIn(chosen, eligible)
        if preference is NodePreference.LEADER and any(
            m.state is VNodeState.Master for m in eligible
        ):
            self.assertIs(chosen.state, VNodeState.Master)


class MachineTests(SynchronousTestCase):
    def machine(self, keep: bool = False, max_reconnections: int = 2) -> ConnectionMachine:
        return ConnectionMachine(keep, max_reconnections, 0.1, 1.0)

    def test_happy_path(self) -> None:
        m = self.machine()
        self.assertEqual(m.start(), [Discover(None)])
        self.assertEqual(m.discovered(NODE), [ConnectTcp(NODE)])
        self.assertEqual(m.tcp_connected(), [SendIdentify()])
        self.assertEqual(m.identified(), [NotifyConnected(NODE)])
        self.assertIs(m.phase, Phase.CONNECTED)

    def test_reconnect_to(self) -> None:
        """
        C{NotMaster} with a leader endpoint drops the connection and
        connects there without discovery.
        """
        m = self.machine()
        m.start(), m.discovered(NODE), m.tcp_connected(), m.identified()
        leader = NodeEndpoints("10.0.0.2", 1113)
        effects = m.reconnect_to(leader)
        self.assertEqual(effects[0], DropTcp())
        self.assertEqual(effects[-1], ConnectTcp(leader))

    def test_backoff(self) -> None:
        self.assertEqual([backoff_delay(n, 0.1, 1.0) for n in range(1, 7)],
                         [0.1, 0.2, 0.4, 0.8, 1.0, 1.0])

    @given(
        st.lists(st.sampled_from(["fail", "connect", "lost", "timer", "not_master"]),
                 max_size=60),
        st.booleans(),
        st.integers(-1, 5),
    )
    def test_gives_up_only_when_allowed(
        self, inputs: list[str], keep: bool, max_reconnections: int
    ) -> None:
        """
        Whatever happens, the machine closes by itself only without
        C{keep_reconnecting} and after more than C{max_reconnections}
        failures in a row; every failure that does not close it schedules
        exactly one timer; once closed it does nothing.
        """
        m = ConnectionMachine(keep, max_reconnections, 0.1, 1.0)
        m.start()
        for step in inputs:
            before = m.phase
            if step == "fail":
                effects = m.discovery_failed() + m.tcp_failed()
            elif step == "connect":
                effects = m.discovered(NODE) + m.tcp_connected() + m.identified()
            elif step == "lost":
                effects = m.connection_lost()
            elif step == "timer":
                effects = m.timer_fired()
            else:
                effects = m.reconnect_to(NodeEndpoints("10.0.0.2", 1113))
            closes = [e for e in effects if isinstance(e, NotifyClosed)]
            if before is Phase.CLOSED:
                self.assertEqual(effects, [])
            if closes:
                self.assertFalse(keep)
                self.assertGreaterEqual(max_reconnections, 0)
                self.assertGreater(m.failures, max_reconnections)
                self.assertIs(m.phase, Phase.CLOSED)
            schedules = [e for e in effects if isinstance(e, Schedule)]
            self.assertLessEqual(len(schedules), 1)
            if schedules:
                self.assertIs(m.phase, Phase.WAITING)
                self.assertLessEqual(schedules[0].delay, 1.0)


def package(command: int, message: object) -> TcpPackage:
    return TcpPackage(command, 0, b"c" * 16, message.SerializeToString())  # type: ignore[attr-defined]


class DecisionTests(SynchronousTestCase):
    def append(self) -> AppendToStream:
        return AppendToStream("s", -2, [EventData(uuid.uuid4(), "t")], True, None)

    @given(st.integers(-1, 20), st.integers(1, 40))
    def test_can_retry(self, max_retries: int, attempts: int) -> None:
        """
        An operation is sent at most C{max_retries + 1} times (forever for
        -1).
        """
        sends = 1
        while sends < attempts and can_retry(sends, max_retries):
            sends += 1
        if max_retries < 0:
            self.assertEqual(sends, attempts)
        else:
            self.assertEqual(sends, min(attempts, max_retries + 1))

    def test_not_master(self) -> None:
        info = pb.NotHandled.MasterInfo(
            external_tcp_address="10.0.0.2", external_tcp_port=1113,
            external_http_address="10.0.0.2", external_http_port=2113,
        )
        decision = self.append().decide(
            package(TcpCommand.NotHandled, pb.NotHandled(
                reason=pb.NotHandled.NotMaster, additional_info=info.SerializeToString()))
        )
        self.assertEqual(decision, Reconnect(NodeEndpoints("10.0.0.2", 1113), "NotMaster"))

    def test_retryable(self) -> None:
        for message in (
            pb.NotHandled(reason=pb.NotHandled.NotReady),
            pb.NotHandled(reason=pb.NotHandled.TooBusy),
        ):
            self.assertIsInstance(
                self.append().decide(package(TcpCommand.NotHandled, message)), Retry
            )
        for result in (pb.PrepareTimeout, pb.CommitTimeout, pb.ForwardTimeout):
            completed = pb.WriteEventsCompleted(
                result=result, first_event_number=-1, last_event_number=-1
            )
            self.assertIsInstance(
                self.append().decide(package(TcpCommand.WriteEventsCompleted, completed)), Retry
            )

    def test_write_results(self) -> None:
        ok = self.append().decide(package(TcpCommand.WriteEventsCompleted, pb.WriteEventsCompleted(
            result=pb.Success, first_event_number=3, last_event_number=4,
            prepare_position=9, commit_position=9)))
        assert isinstance(ok, Complete)
        self.assertEqual(ok.value.next_expected_version, 4)
        self.assertEqual(ok.value.log_position, Position(9, 9))
        wrong = self.append().decide(package(TcpCommand.WriteEventsCompleted,
                                             pb.WriteEventsCompleted(
            result=pb.WrongExpectedVersion, first_event_number=-1, last_event_number=-1)))
        assert isinstance(wrong, Fail)
        self.assertIsInstance(wrong.error, WrongExpectedVersion)

    def test_same_payload(self) -> None:
        """
        Every attempt of an append sends the same bytes.
        """
        op = self.append()
        self.assertEqual(op.payload(), op.payload())


def resolved(number: int) -> ResolvedEvent:
    return ResolvedEvent(
        RecordedEvent("s", number, uuid.uuid4(), "t", b"", b"", False, 0),
        None,
        Position(number * 10, number * 10),
    )


class TrackingTests(SynchronousTestCase):
    @given(st.lists(st.integers(0, 50), max_size=100), st.none() | st.integers(-1, 10))
    def test_stream_tracker(self, numbers: list[int], start: int | None) -> None:
        """
        Whatever order and repetitions events arrive in, what is accepted is
        strictly increasing and past the starting checkpoint.
        """
        tracker = StreamTracker(start)
        accepted = [n for n in numbers if tracker.accept(resolved(n))]
        self.assertEqual(accepted, sorted(set(accepted)))
        if start is not None:
            self.assertTrue(all(n > start for n in accepted))
        if accepted:
            self.assertEqual(tracker.last, accepted[-1])

    @given(st.lists(st.integers(0, 50), max_size=100))
    def test_all_tracker(self, numbers: list[int]) -> None:
        tracker = AllTracker()
        accepted = [n for n in numbers if tracker.accept(resolved(n))]
        self.assertEqual(accepted, sorted(set(accepted)))

    @given(st.lists(st.integers(0, 20), max_size=100))
    def test_handled_set(self, picks: list[int]) -> None:
        """
        Each id is let through once (within capacity).
        """
        ids = [uuid.UUID(int=i) for i in range(21)]
        handled = HandledSet(capacity=100)
        through = [i for i in picks if handled.add(ids[i])]
        self.assertEqual(sorted(through), sorted(set(picks)))
        self.assertEqual(len(through), len(set(through)))

    def test_handled_set_forgets_oldest(self) -> None:
        handled = HandledSet(capacity=2)
        a, b, c = (uuid.uuid4() for _ in range(3))
        handled.add(a), handled.add(b), handled.add(c)
        self.assertNotIn(a, handled)
        self.assertIn(c, handled)
        handled.forget(c)
        self.assertTrue(handled.add(c))


class MetadataTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        metadata = StreamMetadata(
            max_count=5, max_age=60, truncate_before=2, cache_control=10,
            acl=StreamAcl(read_roles=("a",), write_roles=("b", "c")), custom={"x": [1]},
        )
        self.assertEqual(StreamMetadata.from_json(metadata.to_json()), metadata)
        self.assertEqual(StreamMetadata.from_json(b""), StreamMetadata())

    def test_custom_cannot_shadow(self) -> None:
        self.assertRaises(ValueError, StreamMetadata(max_count=1, custom={"$maxCount": 2}).to_json)
