"""
Tests for L{estwisted.subscriptions.volatile}: volatile subscriptions to a stream and
to C{$all}, over the real L{StreamStore} on a L{MemoryLog}.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from estwisted.core.errors import AccessDenied
from estwisted.core.model import EXPECTED_ANY, NewEvent, Principal, ReadStatus, ResolvedEvent
from estwisted.core.streams import StreamStore
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.volatile import (
    DropReason,
    ISubscriber,
    SubscriptionHub,
    parse_link,
)

ADMIN = Principal("admin", frozenset({"$admins"}))


def make_store() -> tuple[StreamStore, Clock]:
    clock = Clock()
    store = StreamStore(MemoryLog(), StreamIndex(), clock)
    clock.advance(0)
    return store, clock


def new_event(i: int = 0, event_type: str = "type", data: Optional[bytes] = None) -> NewEvent:
    if data is None:
        data = json.dumps({"i": i}).encode()
    return NewEvent(uuid.uuid4().bytes, event_type, data, b"", True)


def write(store: StreamStore, stream: str, count: int = 1, flush: Optional[Clock] = None) -> Any:
    d = store.append(stream, EXPECTED_ANY, [new_event(i) for i in range(count)], None)
    if flush is not None:
        flush.advance(0)
    return d


@implementer(ISubscriber)
class RecordingSubscriber:
    """
    Records what a subscription pushes.
    """

    def __init__(self) -> None:
        self.events: list[tuple[ResolvedEvent, int]] = []
        self.drops: list[DropReason] = []

    def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
        self.events.append((event, commit_position))

    def dropped(self, reason: DropReason) -> None:
        self.drops.append(reason)

    def numbers(self) -> list[int]:
        return [e.original.event_number for e, _ in self.events]


class ParseLinkTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        C{"<n>@<stream>"} parses into its parts.
        """
        self.assertEqual(parse_link(b"12@some-stream"), (12, "some-stream"))
        self.assertEqual(parse_link(b"0@a@b"), (0, "a@b"))

    def test_invalid(self) -> None:
        """
        Anything else is not a link.
        """
        for data in (b"", b"x@s", b"12", b"12@", b"@s", b"\xff@s"):
            self.assertIsNone(parse_link(data), data)


class VolatileSubscriptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store, self.clock = make_store()
        self.hub = SubscriptionHub(self.store)

    def test_subscriber_interface(self) -> None:
        """
        The test double provides L{ISubscriber}.
        """
        self.assertTrue(verifyObject(ISubscriber, RecordingSubscriber()))

    def test_confirmation_values(self) -> None:
        """
        The subscription carries the store's last commit position and the
        stream's last event number (-1 for a missing stream).
        """
        write(self.store, "s", 3, self.clock)
        sub = self.hub.subscribe("s", False, None, RecordingSubscriber())
        self.assertEqual(sub.last_commit_position, self.store.last_commit_position)
        self.assertEqual(sub.last_event_number, 2)
        self.assertEqual(sub.stream, "s")
        other = self.hub.subscribe("missing", False, None, RecordingSubscriber())
        self.assertEqual(other.last_event_number, -1)

    def test_only_later_events_in_order(self) -> None:
        """
        Only events committed after the subscription are pushed, in order,
        each with its record position as commit position.
        """
        write(self.store, "s", 2, self.clock)
        subscriber = RecordingSubscriber()
        self.hub.subscribe("s", False, None, subscriber)
        self.assertEqual(subscriber.events, [])
        write(self.store, "s", 3, self.clock)
        write(self.store, "other", 2, self.clock)
        write(self.store, "s", 1, self.clock)
        self.assertEqual(subscriber.numbers(), [2, 3, 4, 5])
        for event, position in subscriber.events:
            self.assertEqual(position, event.original.position)
            self.assertEqual(event.original.stream, "s")
        positions = [p for _, p in subscriber.events]
        self.assertEqual(positions, sorted(positions))

    def test_all_stream(self) -> None:
        """
        C{""} and C{"$all"} subscribe to every event in commit order; the
        confirmation has no event number.
        """
        first, second = RecordingSubscriber(), RecordingSubscriber()
        sub = self.hub.subscribe("", False, ADMIN, first)
        self.hub.subscribe("$all", False, ADMIN, second)
        self.assertIsNone(sub.last_event_number)
        self.assertEqual(sub.stream, "")
        write(self.store, "a", 1, self.clock)
        write(self.store, "b", 2, self.clock)
        streams = [e.original.stream for e, _ in first.events]
        self.assertEqual(streams, ["a", "b", "b"])
        self.assertEqual([p for _, p in first.events], [p for _, p in second.events])

    def test_all_access_denied(self) -> None:
        """
        Anonymous users may not subscribe to C{$all}.
        """
        self.assertRaises(AccessDenied, self.hub.subscribe, "", False, None, RecordingSubscriber())
        self.assertRaises(
            AccessDenied, self.hub.subscribe, "$all", False, None, RecordingSubscriber()
        )
        self.assertEqual(self.hub.count, 0)

    def test_stream_acl(self) -> None:
        """
        A stream whose C{$r} ACL excludes the caller refuses the
        subscription; a member of the role may subscribe.
        """
        self.store.set_metadata(
            "secret", EXPECTED_ANY, json.dumps({"$acl": {"$r": "readers"}}).encode(), ADMIN
        )
        self.clock.advance(0)
        self.assertRaises(
            AccessDenied, self.hub.subscribe, "secret", False, None, RecordingSubscriber()
        )
        reader = Principal("bob", frozenset({"readers"}))
        subscriber = RecordingSubscriber()
        self.hub.subscribe("secret", False, reader, subscriber)
        write(self.store, "secret", 1, self.clock)
        self.assertEqual(subscriber.numbers(), [0])

    def test_system_stream_denied(self) -> None:
        """
        C{$}-streams need C{$admins} by default.
        """
        self.assertRaises(
            AccessDenied, self.hub.subscribe, "$system", False, None, RecordingSubscriber()
        )

    def _link(self) -> None:
        write(self.store, "target", 1, self.clock)
        self.store.append("links", EXPECTED_ANY, [new_event(0, "$>", b"0@target")], None)
        self.clock.advance(0)

    def test_resolve_links(self) -> None:
        """
        With resolve_links a C{$>} event is pushed as its target, with the
        link record as C{link}; the commit position is the link's.
        """
        subscriber = RecordingSubscriber()
        self.hub.subscribe("links", True, None, subscriber)
        self._link()
        [(event, position)] = subscriber.events
        assert event.event is not None and event.link is not None
        self.assertEqual(event.event.stream, "target")
        self.assertEqual(event.link.stream, "links")
        self.assertEqual(position, event.link.position)

    def test_links_unresolved(self) -> None:
        """
        Without resolve_links the link record itself is pushed.
        """
        subscriber = RecordingSubscriber()
        self.hub.subscribe("links", False, None, subscriber)
        self._link()
        [(event, _)] = subscriber.events
        assert event.event is not None
        self.assertIsNone(event.link)
        self.assertEqual(event.event.event_type, "$>")

    def test_broken_link(self) -> None:
        """
        A link to a missing event is pushed with no C{event} and the link.
        """
        subscriber = RecordingSubscriber()
        self.hub.subscribe("links", True, None, subscriber)
        self.store.append("links", EXPECTED_ANY, [new_event(0, "$>", b"5@nowhere")], None)
        self.clock.advance(0)
        [(event, _)] = subscriber.events
        self.assertIsNone(event.event)
        self.assertIsNotNone(event.link)

    def test_unsubscribe(self) -> None:
        """
        Unsubscribing sends C{UNSUBSCRIBED} once and stops pushes.
        """
        subscriber = RecordingSubscriber()
        sub = self.hub.subscribe("s", False, None, subscriber)
        sub.unsubscribe()
        sub.unsubscribe()
        write(self.store, "s", 1, self.clock)
        self.assertEqual(subscriber.drops, [DropReason.UNSUBSCRIBED])
        self.assertEqual(subscriber.events, [])
        self.assertEqual(self.hub.count, 0)

    def test_drop_silently(self) -> None:
        """
        A closed connection's subscription stops without a drop message.
        """
        subscriber = RecordingSubscriber()
        sub = self.hub.subscribe("", False, ADMIN, subscriber)
        sub.drop_silently()
        write(self.store, "s", 1, self.clock)
        self.assertEqual(subscriber.drops, [])
        self.assertEqual(subscriber.events, [])

    def test_close(self) -> None:
        """
        Server shutdown drops every subscription with C{UNSUBSCRIBED} and
        stops listening.
        """
        subscribers = [RecordingSubscriber() for _ in range(3)]
        self.hub.subscribe("a", False, None, subscribers[0])
        self.hub.subscribe("a", False, None, subscribers[1])
        self.hub.subscribe("", False, ADMIN, subscribers[2])
        self.hub.close()
        write(self.store, "a", 1, self.clock)
        for subscriber in subscribers:
            self.assertEqual(subscriber.drops, [DropReason.UNSUBSCRIBED])
            self.assertEqual(subscriber.events, [])
        self.assertEqual(self.hub.count, 0)

    def test_unsubscribe_during_delivery(self) -> None:
        """
        A subscriber that unsubscribes while handling an event receives
        nothing more, even from the same flush.
        """
        store, hub, clock = self.store, self.hub, self.clock

        @implementer(ISubscriber)
        class Once(RecordingSubscriber):
            sub: Any = None

            def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
                super().event_appeared(event, commit_position)
                self.sub.unsubscribe()

        once = Once()
        once.sub = hub.subscribe("s", False, None, once)
        write(store, "s", 3, clock)
        self.assertEqual(once.numbers(), [0])
        self.assertEqual(once.drops, [DropReason.UNSUBSCRIBED])

    def test_subscribe_during_delivery(self) -> None:
        """
        A subscription made while a flush is being delivered sees only
        later flushes: the current flush is covered by its confirmation.
        """
        hub = self.hub
        late = RecordingSubscriber()
        confirmations: list[Any] = []

        @implementer(ISubscriber)
        class Spawner(RecordingSubscriber):
            def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
                super().event_appeared(event, commit_position)
                if not confirmations:
                    confirmations.append(hub.subscribe("s", False, None, late))

        hub.subscribe("s", False, None, Spawner())
        write(self.store, "s", 3, self.clock)
        self.assertEqual(late.events, [])
        self.assertEqual(confirmations[0].last_event_number, 2)
        write(self.store, "s", 1, self.clock)
        self.assertEqual(late.numbers(), [3])

    def test_failing_subscriber(self) -> None:
        """
        A subscriber raising is logged and dropped; others still get events.
        """

        @implementer(ISubscriber)
        class Broken(RecordingSubscriber):
            def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
                raise RuntimeError("boom")

        good = RecordingSubscriber()
        self.hub.subscribe("s", False, None, Broken())
        self.hub.subscribe("s", False, None, good)
        write(self.store, "s", 2, self.clock)
        self.assertEqual(good.numbers(), [0, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.hub.count, 1)


class CatchUpHandoverTests(SynchronousTestCase):
    """
    Catch-up subscriptions are client-side read loops plus a volatile
    subscription; the server-side property that makes them exact is that
    the confirmation splits the stream: everything at or below it is
    readable, everything above it is pushed, and nothing is both.
    """

    @given(
        st.lists(
            st.tuples(st.integers(1, 4), st.sampled_from(["s", "t"]), st.booleans()),
            min_size=1,
            max_size=12,
        ),
        st.integers(0, 12),
    )
    def test_stream_handover_exactly_once(
        self, writes: list[tuple[int, str, bool]], subscribe_at: int
    ) -> None:
        """
        Writes (some flushed, some left pending in the group-commit batch)
        around the moment of subscribing: history read up to the
        confirmation's C{last_event_number} plus the pushed events give
        every event of the stream exactly once, in order.
        """
        store, clock = make_store()
        hub = SubscriptionHub(store)
        subscriber = RecordingSubscriber()
        sub = None
        for i, (count, stream, flush) in enumerate(writes):
            if i == subscribe_at:
                sub = hub.subscribe("s", False, None, subscriber)
            write(store, stream, count)
            if flush:
                clock.advance(0)
        if sub is None:
            sub = hub.subscribe("s", False, None, subscriber)
        # The client reads history after confirming, while more writes land.
        write(store, "s", 2)
        clock.advance(0)
        page = store.read_stream("s", 0, 4096, True, False, None)
        assert sub.last_event_number is not None
        history = [
            e.original.event_number
            for e in page.events
            if e.original.event_number <= sub.last_event_number
        ]
        pushed = subscriber.numbers()
        self.assertTrue(all(n > sub.last_event_number for n in pushed))
        total = sum(c for c, s, _ in writes if s == "s") + 2
        self.assertEqual(history + pushed, list(range(total)))

    @given(
        st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=10),
        st.integers(0, 10),
    )
    def test_all_handover_exactly_once(
        self, writes: list[tuple[int, bool]], subscribe_at: int
    ) -> None:
        """
        The same for C{$all}: C{$all} read up to the confirmation's
        C{last_commit_position} plus the pushes give every event once.
        """
        store, clock = make_store()
        hub = SubscriptionHub(store)
        subscriber = RecordingSubscriber()
        sub = None
        for i, (count, flush) in enumerate(writes):
            if i == subscribe_at:
                sub = hub.subscribe("", False, ADMIN, subscriber)
            write(store, f"s{i % 3}", count)
            if flush:
                clock.advance(0)
        if sub is None:
            sub = hub.subscribe("", False, ADMIN, subscriber)
        clock.advance(0)
        page = store.read_all(0, 4096, True, False, ADMIN)
        self.assertEqual(page.status, ReadStatus.SUCCESS)
        everything = [e.original.position for e in page.events]
        history = [p for p in everything if p <= sub.last_commit_position]
        pushed = [p for _, p in subscriber.events]
        self.assertTrue(all(p > sub.last_commit_position for p in pushed))
        self.assertEqual(history + pushed, everything)


_OPS = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(["a", "b"]), st.integers(1, 3)),
    st.tuples(st.just("flush"), st.just(""), st.just(0)),
    st.tuples(st.just("subscribe"), st.sampled_from(["a", "b", ""]), st.just(0)),
    st.tuples(st.just("unsubscribe"), st.just(""), st.integers(0, 9)),
)


class HubPropertyTests(SynchronousTestCase):
    @given(st.lists(_OPS, max_size=30))
    def test_each_subscription_gets_exactly_its_window(
        self, ops: list[tuple[str, str, int]]
    ) -> None:
        """
        With random writes, flushes, subscriptions and unsubscriptions,
        every subscription receives exactly the events of its stream (or of
        every stream) committed after its confirmation and before it ended,
        in log order.
        """
        store, clock = make_store()
        hub = SubscriptionHub(store)
        subs: list[tuple[Any, RecordingSubscriber, int]] = []
        ended: dict[int, int] = {}
        for op, stream, n in ops:
            if op == "write":
                write(store, stream, n)
            elif op == "flush":
                clock.advance(0)
            elif op == "subscribe":
                subscriber = RecordingSubscriber()
                sub = hub.subscribe(stream, False, ADMIN, subscriber)
                subs.append((sub, subscriber, len(subs)))
            elif subs:
                sub, _, i = subs[n % len(subs)]
                if sub.active:
                    sub.unsubscribe()
                    ended[i] = store.last_commit_position
        clock.advance(0)
        page = store.read_all(0, 4096, True, False, ADMIN)
        for sub, subscriber, i in subs:
            end = ended.get(i, store.last_commit_position)
            expected = [
                e.original.position
                for e in page.events
                if sub.last_commit_position < e.original.position <= end
                and (sub.stream == "" or e.original.stream == sub.stream)
            ]
            self.assertEqual([p for _, p in subscriber.events], expected)
            self.assertEqual(subscriber.drops, [DropReason.UNSUBSCRIBED] if i in ended else [])
