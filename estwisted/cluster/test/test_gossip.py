# -*- test-case-name: estwisted.cluster.test.test_gossip -*-
"""
Tests for L{estwisted.cluster.gossip}: member JSON, the member table's merge rules,
liveness and the gossip loop machine.
"""

from __future__ import annotations

import json
import random
import uuid

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.cluster.gossip import (
    ZERO_ID,
    ClusterInfo,
    ClusterView,
    Endpoint,
    GossipFormatError,
    GossipMachine,
    GossipSettings,
    MemberInfo,
    VNodeState,
    choose_gossip_target,
    decode_cluster_info,
    encode_cluster_info,
    format_timestamp,
    member_to_json,
    next_gossip_delay,
    parse_timestamp,
)
from estwisted.testing.cluster_sim import ClusterSimulator, Faults

NOW = 1_700_000_000.0

#: The member fields of http-api.md section 11.1, in order.
V5_FIELDS = [
    "instanceId",
    "timeStamp",
    "state",
    "isAlive",
    "internalTcpIp",
    "internalTcpPort",
    "internalSecureTcpPort",
    "externalTcpIp",
    "externalTcpPort",
    "externalSecureTcpPort",
    "internalHttpIp",
    "internalHttpPort",
    "externalHttpIp",
    "externalHttpPort",
    "lastCommitPosition",
    "writerCheckpoint",
    "chaserCheckpoint",
    "epochPosition",
    "epochNumber",
    "epochId",
    "nodePriority",
]


def node(
    n: int,
    *,
    state: VNodeState = VNodeState.Unknown,
    timestamp: float = NOW,
    alive: bool = True,
    epoch: int = 0,
    writer: int = 100,
    read_only: bool = False,
) -> MemberInfo:
    """
    Node C{n} of a test cluster: all its endpoints on 127.0.0.C{n}.
    """
    host = f"127.0.0.{n}"
    return MemberInfo(
        instance_id=uuid.UUID(int=n),
        timestamp=timestamp,
        state=state,
        is_alive=alive,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
        last_commit_position=writer,
        writer_checkpoint=writer,
        chaser_checkpoint=writer,
        epoch_position=0,
        epoch_number=epoch,
        epoch_id=uuid.UUID(int=1000 + epoch),
        is_read_only_replica=read_only,
    )


hosts = st.sampled_from(["127.0.0.1", "127.0.0.2", "10.0.0.7", "::1", "node-a"])
endpoints = st.builds(Endpoint, hosts, st.integers(1, 65535))
# Realistic clocks between 2001 and 2096, to the microsecond (a float of Unix
# seconds cannot hold every 100 ns tick; microseconds survive exactly).
timestamps = st.integers(10**9 * 10**6, 4 * 10**9 * 10**6).map(lambda t: t / 10**6)
int64 = st.integers(-1, 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def members(draw: st.DrawFn) -> MemberInfo:
    read_only = draw(st.booleans())
    if read_only:
        state = draw(
            st.sampled_from(
                [
                    VNodeState.Initializing,
                    VNodeState.ReadOnlyLeaderless,
                    VNodeState.PreReadOnlyReplica,
                    VNodeState.ReadOnlyReplica,
                    VNodeState.ShuttingDown,
                    VNodeState.Shutdown,
                ]
            )
        )
    else:
        state = draw(st.sampled_from([s for s in VNodeState if s.value == s.v5_name]))
    return MemberInfo(
        instance_id=draw(st.uuids()),
        timestamp=draw(timestamps),
        state=state,
        is_alive=draw(st.booleans()),
        internal_tcp=draw(endpoints),
        external_tcp=draw(endpoints),
        internal_http=draw(endpoints),
        external_http=draw(endpoints),
        internal_secure_tcp_port=draw(st.integers(0, 65535)),
        external_secure_tcp_port=draw(st.integers(0, 65535)),
        last_commit_position=draw(int64),
        writer_checkpoint=draw(int64),
        chaser_checkpoint=draw(int64),
        epoch_position=draw(int64),
        epoch_number=draw(int32),
        epoch_id=draw(st.uuids()),
        node_priority=draw(int32),
        is_read_only_replica=read_only,
    )


class EndpointTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        C{ip:port} and C{[v6]:port} parse; anything else is a ValueError.
        """
        self.assertEqual(Endpoint.parse("127.0.0.1:2112"), Endpoint("127.0.0.1", 2112))
        self.assertEqual(Endpoint.parse("[::1]:2112"), Endpoint("::1", 2112))
        self.assertEqual(str(Endpoint("10.0.0.2", 2113)), "10.0.0.2:2113")
        for bad in ["127.0.0.1", ":2112", "host:", "host:0", "host:65536", "host:x"]:
            self.assertRaises(ValueError, Endpoint.parse, bad)


class TimestampTests(SynchronousTestCase):
    """
    The Newtonsoft ISO-8601 form of gossip timestamps.
    """

    def test_format(self) -> None:
        """
        Seven fraction digits at most, trailing zeros dropped, C{Z}.
        """
        self.assertEqual(format_timestamp(1629209736.123456), "2021-08-17T14:15:36.123456Z")
        self.assertEqual(format_timestamp(1629209736.0000002), "2021-08-17T14:15:36.0000002Z")
        self.assertEqual(format_timestamp(1629209736.5), "2021-08-17T14:15:36.5Z")
        self.assertEqual(format_timestamp(1629209736.0), "2021-08-17T14:15:36Z")

    def test_parse(self) -> None:
        """
        Fractions of any length up to seven digits, C{Z}, offsets, or no
        suffix.
        """
        self.assertAlmostEqual(
            parse_timestamp("2021-08-17T14:15:36.1234567Z"), 1629209736.1234567, places=6
        )
        self.assertEqual(parse_timestamp("2021-08-17T14:15:36.12Z"), 1629209736.12)
        self.assertEqual(parse_timestamp("2021-08-17T14:15:36"), 1629209736.0)
        self.assertEqual(parse_timestamp("2021-08-17T16:15:36+02:00"), 1629209736.0)

    def test_parseRejects(self) -> None:
        """
        Anything else is a L{GossipFormatError}.
        """
        for bad in ["", "yesterday", "2021-13-01T00:00:00Z", "2021-08-17 14:15:36Z", 12]:
            self.assertRaises(GossipFormatError, parse_timestamp, bad)  # type: ignore[arg-type]

    @given(timestamps)
    def test_roundTrip(self, t: float) -> None:
        """
        Parsing a formatted timestamp gives it back.
        """
        self.assertEqual(parse_timestamp(format_timestamp(t)), t)


class MemberJsonTests(SynchronousTestCase):
    """
    The v5 gossip JSON of http-api.md section 11.1.
    """

    def test_fieldsInOrder(self) -> None:
        """
        An ordinary member has exactly the v5 fields in the v5 order, with
        the state as a name and GUIDs as lowercase hyphenated text.
        """
        obj = member_to_json(node(1, state=VNodeState.Master))
        self.assertEqual(list(obj), V5_FIELDS)
        self.assertEqual(obj["state"], "Master")
        self.assertEqual(obj["instanceId"], "00000000-0000-0000-0000-000000000001")
        self.assertEqual(obj["internalHttpPort"], 2112)
        self.assertIs(obj["isAlive"], True)

    def test_document(self) -> None:
        """
        The document has C{members}, C{serverIp} and C{serverPort}; members
        are parsed back into equal records.
        """
        info = ClusterInfo((node(2), node(1)), Endpoint("127.0.0.2", 2112))
        obj = json.loads(encode_cluster_info(info))
        self.assertEqual(list(obj), ["members", "serverIp", "serverPort"])
        self.assertEqual((obj["serverIp"], obj["serverPort"]), ("127.0.0.2", 2112))
        self.assertEqual(decode_cluster_info(encode_cluster_info(info)), info)

    def test_readOnlyReplica(self) -> None:
        """
        A read-only replica carries a trailing C{isReadOnlyReplica} and a v5
        state name; both come back as the read-only state.
        """
        member = node(3, state=VNodeState.ReadOnlyReplica, read_only=True)
        obj = member_to_json(member)
        self.assertEqual(list(obj), V5_FIELDS + ["isReadOnlyReplica"])
        self.assertEqual(obj["state"], "CatchingUp")
        decoded = decode_cluster_info(encode_cluster_info(ClusterInfo((member,))))
        self.assertEqual(decoded.members[0].state, VNodeState.ReadOnlyReplica)

    def test_photonPumpSample(self) -> None:
        """
        A document in the shape real v5 nodes send (optional numbers
        missing, no serverIp) is parsed with v5 defaults.
        """
        body = json.dumps(
            {
                "members": [
                    {
                        "instanceId": "3c4a6d2a-8a33-4bd5-8f6c-0e3c5a1c9d1e",
                        "timeStamp": "2018-01-04T16:46:30.1871289Z",
                        "state": "Slave",
                        "isAlive": True,
                        "internalTcpIp": "172.17.0.2",
                        "internalTcpPort": 1112,
                        "externalTcpIp": "172.17.0.2",
                        "externalTcpPort": 1113,
                        "internalHttpIp": "172.17.0.2",
                        "internalHttpPort": 2112,
                        "externalHttpIp": "172.17.0.2",
                        "externalHttpPort": 2113,
                    }
                ]
            }
        ).encode()
        info = decode_cluster_info(body)
        self.assertIsNone(info.server)
        [m] = info.members
        self.assertEqual(m.state, VNodeState.Slave)
        self.assertEqual(m.external_tcp, Endpoint("172.17.0.2", 1113))
        self.assertEqual((m.epoch_number, m.epoch_id, m.node_priority), (-1, ZERO_ID, 0))

    def test_rejects(self) -> None:
        """
        Bodies that are not gossip documents raise L{GossipFormatError}.
        """
        good = member_to_json(node(1))
        bad_bodies = [
            b"not json",
            b"[]",
            b'{"members": 3}',
            json.dumps({"members": [dict(good, state="Leader")]}).encode(),
            json.dumps({"members": [dict(good, isAlive="yes")]}).encode(),
            json.dumps({"members": [dict(good, internalHttpPort="2112")]}).encode(),
            json.dumps({"members": [dict(good, instanceId="nope")]}).encode(),
            json.dumps({"members": [{k: v for k, v in good.items() if k != "state"}]}).encode(),
        ]
        for body in bad_bodies:
            self.assertRaises(GossipFormatError, decode_cluster_info, body)

    @given(st.lists(members(), max_size=5), st.none() | endpoints)
    def test_roundTrip(self, ms: list[MemberInfo], server: Endpoint | None) -> None:
        """
        Any member list survives encoding and decoding unchanged.
        """
        info = ClusterInfo(tuple(ms), server)
        self.assertEqual(decode_cluster_info(encode_cluster_info(info)), info)


class ClusterViewTests(SynchronousTestCase):
    """
    The member table and the v5 merge rules.
    """

    def test_sortedDescending(self) -> None:
        """
        Members are kept descending by internal HTTP endpoint.
        """
        view = ClusterView((node(1), node(3), node(2)))
        self.assertEqual([m.instance_id.int for m in view.members], [3, 2, 1])

    def test_initialWithSeeds(self) -> None:
        """
        The initial table holds our record and one Manager placeholder per
        seed, but not a seed that is one of our own endpoints.
        """
        own = node(1)
        seeds = [Endpoint("127.0.0.2", 2112), own.internal_http, Endpoint("127.0.0.3", 2112)]
        view = ClusterView.initial(own, seeds, NOW)
        self.assertEqual(len(view.members), 3)
        placeholder = view.get(Endpoint("127.0.0.2", 2112))
        assert placeholder is not None
        self.assertTrue(placeholder.is_seed_placeholder)
        self.assertTrue(placeholder.is_alive)
        self.assertEqual(view.electorate(), (own,))

    def test_placeholderReplaced(self) -> None:
        """
        When the node at a seed endpoint gossips about itself, its record
        replaces the placeholder.
        """
        own = node(1)
        view = ClusterView.initial(own, [Endpoint("127.0.0.2", 2112)], NOW)
        peer = node(2, timestamp=NOW + 1)
        result = view.merge(own, [peer], NOW + 1, peer=peer.internal_http)
        self.assertEqual(result.view.get(peer.key), peer)
        self.assertTrue(result.changed)

    def test_selfIgnored(self) -> None:
        """
        Information about us from others is ignored: we know ourselves best.
        """
        own = node(1, epoch=3)
        view = ClusterView((own,))
        fake = evolve(own, state=VNodeState.Master, epoch_number=9, timestamp=NOW + 5)
        result = view.merge(own, [fake], NOW)
        self.assertEqual(result.view.members, (own,))
        self.assertFalse(result.changed)

    def test_peerTakenAsIs(self) -> None:
        """
        The sender's own record replaces ours even if it looks older.
        """
        own = node(1)
        old = node(2, epoch=5, timestamp=NOW)
        view = ClusterView((own, old))
        fresh = node(2, epoch=1, timestamp=NOW - 10, state=VNodeState.Slave)
        result = view.merge(own, [fresh], NOW, peer=fresh.internal_http)
        self.assertEqual(result.view.get(fresh.key), fresh)

    def test_thirdPartyOrder(self) -> None:
        """
        Third-party information replaces a record only if it has a higher
        epoch number, else a higher writer checkpoint, else a newer
        timestamp.
        """
        own = node(1)
        existing = node(3, epoch=2, writer=500, timestamp=NOW)
        view = ClusterView((own, existing))
        cases = [
            (node(3, epoch=3, writer=1, timestamp=NOW - 100), True),
            (node(3, epoch=1, writer=9999, timestamp=NOW + 100), False),
            (node(3, epoch=2, writer=501, timestamp=NOW - 100), True),
            (node(3, epoch=2, writer=499, timestamp=NOW + 100), False),
            (node(3, epoch=2, writer=500, timestamp=NOW + 1), True),
            (node(3, epoch=2, writer=500, timestamp=NOW - 1), False),
        ]
        for received, taken in cases:
            result = view.merge(own, [received], NOW, peer=node(2).internal_http)
            self.assertEqual(result.view.get(existing.key), received if taken else existing)

    def test_leaderLivenessKept(self) -> None:
        """
        Newer third-party news about our current leader does not change its
        liveness or state here.
        """
        own = node(1, state=VNodeState.Slave)
        leader = node(3, state=VNodeState.Master, timestamp=NOW)
        view = ClusterView((own, leader))
        news = node(3, state=VNodeState.Unknown, alive=False, writer=900, timestamp=NOW + 1)
        result = view.merge(own, [news], NOW + 1, leader_id=leader.instance_id)
        merged = result.view.get(leader.key)
        assert merged is not None
        self.assertEqual((merged.state, merged.is_alive), (VNodeState.Master, True))
        self.assertEqual(merged.writer_checkpoint, 900)

    def test_clockSkewRejected(self) -> None:
        """
        Gossip whose sender's clock is off by more than the allowed
        difference is rejected whole, with the reason.
        """
        own = node(1)
        view = ClusterView((own,))
        settings = GossipSettings(allowed_difference=60.0)
        skewed = node(2, timestamp=NOW + 61)
        third = node(3)
        result = view.merge(own, [skewed, third], NOW, peer=skewed.key, settings=settings)
        self.assertIs(result.view, view)
        assert result.rejected is not None
        self.assertEqual(result.rejected.peer, skewed.key)
        self.assertAlmostEqual(result.rejected.difference, 61.0)
        ok = node(2, timestamp=NOW - 59)
        self.assertIsNone(view.merge(own, [ok], NOW, peer=ok.key, settings=settings).rejected)

    def test_markDead(self) -> None:
        """
        A failed gossip marks the member dead with the time of the failure,
        unless it is our current leader.
        """
        own = node(1)
        view = ClusterView((own, node(2), node(3)))
        dead = view.mark_dead(node(2).key, NOW + 3)
        m = dead.get(node(2).key)
        assert m is not None
        self.assertEqual((m.is_alive, m.timestamp), (False, NOW + 3))
        self.assertIs(view.mark_dead(node(3).key, NOW, leader_id=uuid.UUID(int=3)), view)
        self.assertEqual([x.instance_id.int for x in dead.electorate()], [3, 1])
        revived = dead.mark_alive(node(2).key, NOW + 4)
        self.assertTrue(revived.get(node(2).key).is_alive)  # type: ignore[union-attr]

    def test_deadRemovedAfterPeriod(self) -> None:
        """
        Dead members are dropped once their record is older than the removal
        period; alive ones never are.
        """
        own = node(1)
        view = ClusterView((own, node(2, alive=False, timestamp=NOW), node(3, timestamp=NOW)))
        settings = GossipSettings(dead_member_removal=1800)
        kept = view.merge(own, [], NOW + 1800, settings=settings).view
        self.assertEqual(len(kept.members), 3)
        gone = view.merge(own, [], NOW + 1800.5, settings=settings).view
        self.assertEqual([m.instance_id.int for m in gone.members], [3, 1])

    def test_elected(self) -> None:
        """
        After an election the leader's record says Master and other nodes
        Unknown; our record and seed placeholders are untouched.
        """
        own = node(1, state=VNodeState.Slave)
        seed = MemberInfo.seed(Endpoint("127.0.0.9", 2112), NOW)
        view = ClusterView((own, node(2, state=VNodeState.Master), node(3), seed))
        after = view.elected(uuid.UUID(int=3), own.instance_id)
        states = {m.key: m.state for m in after.members}
        self.assertEqual(states[node(3).key], VNodeState.Master)
        self.assertEqual(states[node(2).key], VNodeState.Unknown)
        self.assertEqual(states[own.key], VNodeState.Slave)
        self.assertEqual(states[seed.key], VNodeState.Manager)
        self.assertEqual([m.instance_id.int for m in after.alive_leaders()], [3])

    @given(st.lists(members(), max_size=6), st.lists(members(), max_size=6), st.booleans())
    def test_mergeIdempotent(
        self, mine: list[MemberInfo], received: list[MemberInfo], with_peer: bool
    ) -> None:
        """
        Merging the same gossip twice at the same time changes nothing the
        second time.
        """
        own = node(1)
        view = ClusterView.initial(own, [], NOW)
        view = view.merge(own, mine, NOW).view
        peer = received[0].internal_http if received and with_peer else None
        settings = GossipSettings(allowed_difference=10**12)
        once = view.merge(own, received, NOW, peer=peer, settings=settings)
        twice = once.view.merge(own, received, NOW, peer=peer, settings=settings)
        self.assertEqual(twice.view, once.view)
        self.assertFalse(twice.changed)

    @given(st.lists(members(), max_size=6), st.lists(members(), max_size=6))
    def test_newestWins(self, mine: list[MemberInfo], received: list[MemberInfo]) -> None:
        """
        For third-party information each member's merged record is the more
        up to date of ours and theirs (epoch, writer checkpoint, timestamp);
        our own record is always ours, refreshed; keys stay unique.
        """
        own = node(1)
        view = ClusterView.initial(own, [], NOW).merge(own, mine, NOW).view
        merged = view.merge(own, received, NOW + 1).view
        keys = [m.key for m in merged.members]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(merged.get(own.key), evolve(own, timestamp=NOW + 1))
        for m in merged.members:
            if m.key == own.key:
                continue
            before = view.get(m.key)
            offered = [r for r in received if r.key == m.key and not r.is_same_node(own)]
            candidates = ([before] if before is not None else []) + offered
            self.assertIn(m, candidates)
            if before is not None:
                self.assertGreaterEqual(m.data_key(), before.data_key())


class DecideTests(SynchronousTestCase):
    """
    Choosing the next gossip target and the round timing.
    """

    def test_neverSelf(self) -> None:
        """
        The target is a member or a seed, never ourselves; dead members and
        seeds missing from the table are eligible.
        """
        own = node(1)
        view = ClusterView((own, node(2, alive=False)))
        seed = Endpoint("127.0.0.5", 2112)
        rng = random.Random(7)
        picks = {choose_gossip_target(view, own, [seed], rng) for _ in range(200)}
        self.assertLessEqual({node(2).key, seed}, picks)
        self.assertNotIn(own.key, picks)

    def test_aloneChoosesNobody(self) -> None:
        """
        With nobody else known there is no target.
        """
        own = node(1)
        view = ClusterView((own,))
        self.assertIsNone(choose_gossip_target(view, own, [], random.Random(1)))

    def test_settingsFromOptions(self) -> None:
        """
        Options in milliseconds (and seconds for dead member removal) become
        seconds.
        """
        self.assertEqual(GossipSettings.from_options(), GossipSettings())
        self.assertEqual(
            GossipSettings.from_options(100, 500, 500, 60),
            GossipSettings(
                interval=0.1, timeout=0.5, allowed_difference=0.5, dead_member_removal=60
            ),
        )

    def test_delay(self) -> None:
        """
        Twenty quick 100 ms rounds, then the gossip interval.
        """
        settings = GossipSettings(interval=1.0)
        self.assertEqual(next_gossip_delay(0, settings), 0.1)
        self.assertEqual(next_gossip_delay(19, settings), 0.1)
        self.assertEqual(next_gossip_delay(20, settings), 1.0)


class GossipMachineTests(SynchronousTestCase):
    """
    The gossip loop without I/O.
    """

    def test_roundAndReply(self) -> None:
        """
        A round sends our whole table with our endpoint as sender; the
        receiver merges it and replies with its merged table, which the
        sender merges in turn.
        """
        a = GossipMachine.start(node(1), [node(2).key], NOW)
        b = GossipMachine.start(node(2), [node(1).key], NOW)
        send, delay = a.tick(NOW + 0.1, random.Random(3))
        assert send is not None
        self.assertEqual((send.target, send.info.server, delay), (node(2).key, node(1).key, 0.1))
        reply, result = b.on_gossip(send.info, NOW + 0.15)
        self.assertTrue(result.changed)
        self.assertEqual(b.view.get(node(1).key), evolve(node(1), timestamp=NOW + 0.1))
        a.on_response(send.target, reply, NOW + 0.2)
        self.assertEqual(a.pending, {})
        self.assertEqual(
            [m.instance_id for m in a.view.members], [m.instance_id for m in b.view.members]
        )

    def test_silentSeeds(self) -> None:
        """
        A seed is silent until it answers us or gossips to us.
        """
        seeds = [node(2).key, node(3).key, Endpoint("10.9.9.9", 2112)]
        a = GossipMachine.start(node(1), seeds, NOW)
        self.assertEqual(a.silent_seeds(), tuple(seeds))
        a.on_response(node(2).key, ClusterInfo((node(2),), node(2).key), NOW)
        a.on_gossip(ClusterInfo((node(3),), node(3).key), NOW)
        self.assertEqual(a.silent_seeds(), (Endpoint("10.9.9.9", 2112),))

    def test_unansweredMarkedDead(self) -> None:
        """
        A peer that does not answer within the gossip timeout is marked
        dead; one that answers in time is not.
        """
        settings = GossipSettings(timeout=0.5)
        a = GossipMachine.start(node(1), [], NOW, settings)
        a.view = ClusterView((node(1), node(2)))
        send, _ = a.tick(NOW, random.Random(1))
        assert send is not None
        self.assertEqual(a.check_timeouts(NOW + 0.49), [])
        self.assertTrue(a.view.get(node(2).key).is_alive)  # type: ignore[union-attr]
        self.assertEqual(a.check_timeouts(NOW + 0.5), [node(2).key])
        self.assertFalse(a.view.get(node(2).key).is_alive)  # type: ignore[union-attr]

    def test_heardSinceNotMarkedDead(self) -> None:
        """
        A request that times out (or fails) after the peer posted its own
        gossip to us does not mark it dead (a request held up by a healed
        partition); without that post it does.
        """
        settings = GossipSettings(timeout=0.5)
        a = GossipMachine.start(node(1), [], NOW, settings)
        a.view = ClusterView((node(1), node(2)))
        send, _ = a.tick(NOW, random.Random(1))
        assert send is not None
        a.on_gossip(ClusterInfo((node(2, timestamp=NOW + 0.3),), node(2).key), NOW + 0.3)
        self.assertEqual(a.check_timeouts(NOW + 0.5), [node(2).key])
        self.assertTrue(a.view.get(node(2).key).is_alive)  # type: ignore[union-attr]
        self.assertEqual(a.pending, {})
        # a failure long after the last contact marks it dead
        self.assertTrue(a.on_failure(node(2).key, NOW + 5))
        self.assertFalse(a.view.get(node(2).key).is_alive)  # type: ignore[union-attr]

    def test_failureOfLeaderOnlyLogged(self) -> None:
        """
        A failed gossip to our current leader does not mark it dead.
        """
        a = GossipMachine.start(node(1), [], NOW)
        a.view = ClusterView((node(1), node(2, state=VNodeState.Master)))
        a.elected(uuid.UUID(int=2), NOW)
        self.assertFalse(a.on_failure(node(2).key, NOW + 1))
        self.assertTrue(a.view.get(node(2).key).is_alive)  # type: ignore[union-attr]

    def test_skewRecorded(self) -> None:
        """
        Rejected gossip is recorded for the edge to log.
        """
        b = GossipMachine.start(node(2), [], NOW)
        info = ClusterInfo((node(1, timestamp=NOW + 3600),), node(1).key)
        _, result = b.on_gossip(info, NOW)
        self.assertIsNotNone(result.rejected)
        self.assertEqual(b.rejected, [result.rejected])
        self.assertIsNone(b.view.get(node(1).key))


class GossipConvergenceTests(SynchronousTestCase):
    """
    Gossip among simulated nodes (L{estwisted.testing.cluster_sim}).
    """

    @settings(max_examples=25)
    @given(
        st.sampled_from([3, 5]),
        st.integers(0, 2**32),
        st.sampled_from([0.0, 0.2, 0.5]),
        st.sampled_from([0.0, 0.3]),
    )
    def test_converges(self, voters: int, seed: int, drop: float, duplicate: float) -> None:
        """
        After a partition and a lossy period, once the network is healthy
        every node's table lists every node, alive, and agrees on who is
        Master; a crashed node is marked dead by all the others.
        """
        sim = ClusterSimulator.random_cluster(voters, 1, seed=seed)
        sim.start()
        sim.partition([[0], list(range(1, voters + 1))])
        sim.set_faults(Faults(drop=drop, duplicate=duplicate, max_delay=0.3))
        sim.run_for(5)
        sim.heal()
        sim.set_faults(Faults())
        sim.run_for(20)
        everyone = set(sim.instance_ids())
        for n in sim.machines:
            view = n.gossip.view
            self.assertEqual({m.instance_id for m in view.members}, everyone)
            self.assertTrue(all(m.is_alive for m in view.members))
            masters = {m.instance_id for m in view.alive_leaders()}
            self.assertEqual(masters, {m.own.instance_id for m in sim.leaders()})
        sim.crash(1)
        sim.run_for(10)
        for i, n in enumerate(sim.machines):
            if i != 1:
                gone = n.gossip.view.by_instance(sim.machines[1].own.instance_id)
                assert gone is not None
                self.assertFalse(gone.is_alive)
