"""
Persistent subscription groups on C{$all} with a server-side filter.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from attrs import evolve
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import BadRequest
from estwisted.core.model import EXPECTED_ANY, EventRecord, Principal, ReadStatus
from estwisted.subscriptions.persistent import (
    ALL_STREAM,
    AllFilter,
    NakAction,
    PersistentSettings,
    PersistentSubscriptions,
    all_filter,
    all_position_text,
    checkpoint_stream,
    filter_from_json,
    is_checkpoint_stream,
    parked_stream,
    parse_all_position,
    settings_from_json,
    settings_to_json,
)
from estwisted.subscriptions.test.test_persistent import Consumer, make_store, new_event

ADMIN = Principal("admin", frozenset({"$admins"}))

_names = st.text(alphabet="abcx-$", min_size=1, max_size=6)


def record(stream: str, event_type: str) -> EventRecord:
    return EventRecord(0, 1, stream, 0, b"\0" * 16, event_type, 0, b"", b"", 0)


def settings(**changes: Any) -> PersistentSettings:
    return evolve(PersistentSettings(start_from=0, checkpoint_after_ms=0), **changes)


def on_stream_prefix(*prefixes: str) -> AllFilter:
    return all_filter(True, prefixes)


class FilterTests(SynchronousTestCase):
    @given(
        on_stream=st.booleans(),
        prefixes=st.lists(_names, max_size=3),
        stream=_names,
        event_type=_names,
    )
    def test_prefix_filter(
        self, on_stream: bool, prefixes: list[str], stream: str, event_type: str
    ) -> None:
        """
        A prefix filter matches when the stream name (or event type) starts
        with any prefix; no prefix matches everything.
        """
        value = stream if on_stream else event_type
        expected = not prefixes or any(value.startswith(p) for p in prefixes)
        chosen = all_filter(on_stream, prefixes)
        self.assertEqual(chosen.matches(record(stream, event_type)), expected)

    @given(
        on_stream=st.booleans(),
        regex=st.sampled_from(["^a", "b$", "x+", "^(?!\\$)", "a|c"]),
        stream=_names,
        event_type=_names,
    )
    def test_regex_filter(self, on_stream: bool, regex: str, stream: str, event_type: str) -> None:
        """
        A regular expression is searched in the value, as .NET's IsMatch.
        """
        value = stream if on_stream else event_type
        chosen = all_filter(on_stream, (), regex)
        self.assertEqual(
            chosen.matches(record(stream, event_type)), re.search(regex, value) is not None
        )

    @given(
        on_stream=st.booleans(),
        prefixes=st.lists(_names, max_size=3),
        regex=st.sampled_from(["", "^a", "x+"]),
    )
    def test_json_round_trip(self, on_stream: bool, prefixes: list[str], regex: str) -> None:
        """
        A filter survives its stored form, and so do settings carrying it.
        """
        chosen = all_filter(on_stream, prefixes, regex)
        self.assertEqual(filter_from_json(json.loads(json.dumps(chosen.to_json()))), chosen)
        stored = settings_to_json(settings(filter=chosen))
        self.assertEqual(settings_from_json(json.loads(json.dumps(stored))).filter, chosen)

    def test_bad_regex(self) -> None:
        """
        An expression that does not compile is a L{BadRequest}; a stored one
        is ignored rather than loaded.
        """
        self.assertRaises(BadRequest, all_filter, True, (), "(")
        self.assertIsNone(filter_from_json({"type": "eventType", "prefixes": [], "regex": "("}))
        self.assertIsNone(filter_from_json({"type": "other"}))
        self.assertIsNone(filter_from_json([1]))

    @given(st.integers(-1, 1 << 62))
    def test_position_text(self, position: int) -> None:
        """
        C{"C:<p>/P:<p>"} round-trips; anything else parses to C{None}.
        """
        self.assertEqual(parse_all_position(all_position_text(position)), position)

    @given(st.text(max_size=12))
    def test_position_text_garbage(self, text: str) -> None:
        if re.fullmatch(r"C:-?\d{1,20}/P:-?\d{1,20}", text) is None:
            self.assertIsNone(parse_all_position(text))


class AllGroupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store, self.clock = make_store()
        self.subs = PersistentSubscriptions(self.store, self.clock)
        self.successResultOf(self.subs.start())

    def write(self, stream: str, count: int = 1, event_type: str = "type") -> None:
        events = [new_event(i, event_type) for i in range(count)]
        self.store.append(stream, EXPECTED_ANY, events, None)
        self.clock.advance(0)

    def create(
        self,
        chosen: Optional[PersistentSettings] = None,
        subs: Optional[PersistentSubscriptions] = None,
    ) -> None:
        d = (subs or self.subs).create(
            ALL_STREAM, "g", chosen or settings(filter=on_stream_prefix("order-")), ADMIN, True
        )
        self.clock.advance(0)
        self.successResultOf(d)

    def connect(self, subs: Optional[PersistentSubscriptions] = None,
                auto_ack: bool = False, window: int = 10) -> Consumer:
        consumer = Consumer(auto_ack)
        consumer.connection = (subs or self.subs).connect(
            ALL_STREAM, "g", ADMIN, window, consumer
        )
        self.clock.advance(0)
        return consumer

    def streams(self, consumer: Consumer) -> list[str]:
        return [e.original.stream for e, _ in consumer.events]

    def test_v5_edges_refuse_all(self) -> None:
        """
        Without C{allow_all} (the v5 TCP and HTTP edges) C{$all} is still a
        bad stream name; a filter on a stream group is refused.
        """
        self.failureResultOf(
            self.subs.create(ALL_STREAM, "g", settings(), ADMIN), BadRequest
        )
        self.failureResultOf(
            self.subs.create("s", "g", settings(filter=on_stream_prefix("a")), ADMIN, True),
            BadRequest,
        )

    def test_filtered_history_then_live(self) -> None:
        """
        The group reads C{$all} in log order, delivering only what the
        filter matches, history first and then live events; its id is
        C{$all::<group>}.
        """
        self.write("order-1", 2)
        self.write("other", 3)
        self.write("order-2")
        self.create()
        consumer = self.connect()
        assert consumer.connection is not None
        self.assertEqual(consumer.connection.subscription_id, "$all::g")
        self.assertEqual(self.streams(consumer), ["order-1", "order-1", "order-2"])
        self.write("other")
        self.write("order-3")
        self.assertEqual(self.streams(consumer), ["order-1"] * 2 + ["order-2", "order-3"])
        positions = [e.original.position for e, _ in consumer.events]
        self.assertEqual(positions, sorted(positions))
        info = self.subs.get_group(ALL_STREAM, "g")
        self.assertEqual(info.stream, ALL_STREAM)
        self.assertEqual(info.last_known_event_number, self.store.last_commit_position)

    def test_event_type_regex(self) -> None:
        """
        An event-type regular expression.
        """
        self.write("a", event_type="Paid")
        self.write("b", event_type="Shipped")
        self.write("c", event_type="PaidBack")
        self.create(settings(filter=all_filter(False, (), "^Paid")))
        consumer = self.connect()
        self.assertEqual(self.streams(consumer), ["a", "c"])

    def test_from_end(self) -> None:
        """
        C{start_from} -1: only events written after the group was created.
        """
        self.write("order-1")
        self.create(settings(start_from=-1, filter=on_stream_prefix("order-")))
        consumer = self.connect()
        self.assertEqual(consumer.events, [])
        self.write("order-2")
        self.assertEqual(self.streams(consumer), ["order-2"])

    def test_from_position(self) -> None:
        """
        C{start_from} a position: that event and the later ones.
        """
        self.write("order-1")
        self.write("order-2")
        page = self.store.read_all(0, 4096, True, False, ADMIN)
        second = [e.original for e in page.events if e.original.stream == "order-2"][0]
        self.create(settings(start_from=second.position, filter=on_stream_prefix("order-")))
        self.assertEqual(self.streams(self.connect()), ["order-2"])

    def test_no_filter_skips_checkpoints(self) -> None:
        """
        Without a filter every event comes, except the checkpoint events of
        persistent subscriptions (acks write them: the group would feed
        itself); bounded work for a consumer acking everything at once.
        """
        self.write("a")
        self.create(settings(filter=None, checkpoint_max_count=1))
        consumer = self.connect(auto_ack=True)
        for _ in range(10):
            self.clock.advance(0)
        delivered = self.streams(consumer)
        self.assertIn("a", delivered)
        self.assertFalse([s for s in delivered if s.endswith("-checkpoint")])
        self.assertTrue(self.checkpoint_values())

    def checkpoint_values(self) -> list[Any]:
        page = self.store.read_stream(
            checkpoint_stream(ALL_STREAM, "g"), 0, 4096, True, False, ADMIN
        )
        if page.status != ReadStatus.SUCCESS:
            return []
        return [json.loads(e.original.data) for e in page.events]

    def test_checkpoint_and_restart(self) -> None:
        """
        Checkpoints are C{"C:<p>/P:<p>"}; a restart resumes after what was
        acked (acks above an unacked event are not delivered again).
        """
        for i in range(5):
            self.write(f"order-{i}")
            self.write("noise")
        self.create(settings(filter=on_stream_prefix("order-"), max_retry_count=3))
        consumer = self.connect()
        assert consumer.connection is not None
        ids = consumer.ids()
        consumer.connection.ack([ids[0], ids[1], ids[3]])
        self.clock.advance(0)
        values = self.checkpoint_values()
        self.assertTrue(values)
        self.assertTrue(all(parse_all_position(v) is not None for v in values))
        stopped = self.subs.stop()
        self.clock.advance(0)
        self.successResultOf(stopped)
        restarted = PersistentSubscriptions(self.store, self.clock)
        self.successResultOf(restarted.start())
        info = restarted.get_group(ALL_STREAM, "g")
        self.assertEqual(info.settings.filter, on_stream_prefix("order-"))
        again = self.connect(subs=restarted)
        self.assertEqual(self.streams(again), ["order-2", "order-4"])

    def test_park_retry_and_replay(self) -> None:
        """
        A nack Retry redelivers with a higher retry count; Park writes the
        link to C{$persistentsubscription-$all::g-parked}; replaying parked
        messages delivers them again.
        """
        self.write("order-1")
        self.write("order-2")
        self.create()
        consumer = self.connect()
        assert consumer.connection is not None
        first, second = consumer.ids()
        consumer.connection.nak([first], NakAction.RETRY)
        self.clock.advance(0)
        self.assertEqual(consumer.retries(), [0, 0, 1])
        consumer.connection.nak([second], NakAction.PARK, "bad")
        self.clock.advance(0)
        parked = self.store.read_stream(
            parked_stream(ALL_STREAM, "g"), 0, 10, True, False, ADMIN
        )
        self.assertEqual(parked_stream(ALL_STREAM, "g"), "$persistentsubscription-$all::g-parked")
        self.assertEqual([e.original.data for e in parked.events], [b"0@order-2"])
        replayed = self.subs.replay_parked(ALL_STREAM, "g", ADMIN)
        self.clock.advance(0)
        self.successResultOf(replayed)
        self.assertEqual(consumer.ids()[-1], second)

    def test_update_keeps_filter(self) -> None:
        """
        An update without a filter keeps the group's filter and resumes
        where everything was acked.
        """
        self.write("order-1")
        self.write("x")
        self.create()
        consumer = self.connect()
        assert consumer.connection is not None
        consumer.connection.ack(consumer.ids())
        self.clock.advance(0)
        d = self.subs.update(ALL_STREAM, "g", settings(max_retry_count=1), ADMIN, True)
        self.clock.advance(0)
        self.successResultOf(d)
        info = self.subs.get_group(ALL_STREAM, "g")
        self.assertEqual(info.settings.filter, on_stream_prefix("order-"))
        self.assertEqual(info.settings.max_retry_count, 1)
        again = self.connect()
        self.write("order-2")
        self.assertEqual(self.streams(again), ["order-2"])

    @hypothesis_settings(max_examples=40, deadline=None)
    @given(
        writes=st.lists(
            st.tuples(st.sampled_from(["a-1", "a-2", "b", "$x"]), st.sampled_from(["T", "U"])),
            min_size=1,
            max_size=25,
        ),
        prefixes=st.lists(st.sampled_from(["a-", "b", "$", "zz"]), max_size=2),
        on_stream=st.booleans(),
        acks=st.lists(st.integers(0, 30), max_size=30),
        restart_at=st.integers(0, 25),
    )
    def test_delivers_matching_once_acked(
        self,
        writes: list[tuple[str, str]],
        prefixes: list[str],
        on_stream: bool,
        acks: list[int],
        restart_at: int,
    ) -> None:
        """
        Whatever the writes, the filter and the acks before a restart
        (stop, a new instance over the same store): the matching events
        come in position order; none acked before the restart comes again
        after it; every matching event is delivered at least once.
        """
        store, clock = make_store()
        subs = PersistentSubscriptions(store, clock)
        subs.start()
        chosen = all_filter(on_stream, prefixes)
        d = subs.create(ALL_STREAM, "g", settings(filter=chosen, buffer_size=4,
                                                    read_batch_size=3), ADMIN, True)
        clock.advance(0)
        self.successResultOf(d)

        def write(stream: str, event_type: str) -> None:
            store.append(stream, EXPECTED_ANY, [new_event(0, event_type)], ADMIN)
            clock.advance(0)

        for stream, event_type in writes[:restart_at]:
            write(stream, event_type)
        consumer = Consumer()
        consumer.connection = subs.connect(ALL_STREAM, "g", ADMIN, 100, consumer)
        clock.advance(0)
        ids = consumer.ids()
        acked = {ids[i] for i in acks if i < len(ids)}
        consumer.connection.ack(list(acked))
        clock.advance(0)
        stopped = subs.stop()
        clock.advance(0)
        self.successResultOf(stopped)
        again = PersistentSubscriptions(store, clock)
        again.start()
        later = Consumer()
        later.connection = again.connect(ALL_STREAM, "g", ADMIN, 100, later)
        clock.advance(0)
        for stream, event_type in writes[restart_at:]:
            write(stream, event_type)
        self.assertFalse(acked & set(later.ids()))
        for c in (consumer, later):
            positions = [e.original.position for e, _ in c.events]
            self.assertEqual(positions, sorted(positions))
        page = store.read_all(0, 4096, True, False, ADMIN)
        expected = [
            e.original.event_id
            for e in page.events
            if chosen.matches(e.original) and not is_checkpoint_stream(e.original.stream)
        ]
        self.assertEqual(set(consumer.ids()) | set(later.ids()), set(expected))
        stopped = again.stop()
        clock.advance(0)
        self.successResultOf(stopped)

    def test_replay_stop_at(self) -> None:
        """
        C{stop_at}: only the first parked messages come back; the others
        stay parked.
        """
        self.write("order-1")
        self.write("order-2")
        self.create()
        consumer = self.connect()
        assert consumer.connection is not None
        first, second = consumer.ids()
        consumer.connection.nak([first, second], NakAction.PARK, "bad")
        self.clock.advance(0)
        replayed = self.subs.replay_parked(ALL_STREAM, "g", ADMIN, stop_at=1)
        self.clock.advance(0)
        self.successResultOf(replayed)
        self.assertEqual(consumer.ids(), [first, second, first])
        parked = self.store.read_stream(
            parked_stream(ALL_STREAM, "g"), 0, 10, True, False, ADMIN
        )
        self.assertEqual([e.original.data for e in parked.events], [b"0@order-2"])
