# -*- test-case-name: estwisted.client.test.test_testing -*-
"""
Tests shared by the real client against a real node (C{tests.test_client})
and against the in-memory node of L{estwisted.client.testing}
(L{estwisted.client.test.test_testing}): both must pass the same suite.

Each suite is a coroutine taking the test case (for assertions) and a
connected L{EventStoreConnection} whose default credentials are admin's.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from estwisted.client import (
    AccessDenied,
    EventData,
    EventReadStatus,
    EventStoreConnection,
    ExpectedVersion,
    NotAuthenticated,
    PersistentSubscriptionSettings,
    Position,
    ResolvedEvent,
    SliceReadStatus,
    StreamAcl,
    StreamDeleted,
    StreamMetadata,
    UserCredentials,
    WrongExpectedVersion,
)

ADMIN = UserCredentials("admin", "changeit")


def event(n: int, event_type: str = "test") -> EventData:
    return EventData(uuid.uuid4(), event_type, f'{{"n": {n}}}'.encode())


async def wait_until(clock: IReactorTime, predicate: Any, timeout: float, what: str) -> None:
    """
    Poll C{predicate} every 50 ms of C{clock} time, at most C{timeout}
    seconds.
    """
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await deferLater(clock, 0.05, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


async def operations_suite(self: Any, c: EventStoreConnection) -> None:
    """
    Append, read one event, read forward and backward, read $all,
    expected-version errors, credentials, soft and hard delete, metadata.
    """
    events = [event(i) for i in range(5)]
    result = await c.append_to_stream("orders-1", ExpectedVersion.NO_STREAM, events)
    self.assertEqual(result.next_expected_version, 4)
    self.assertGreaterEqual(result.log_position.commit_position, 0)

    # The same events again (the same ids): an idempotent repeat.
    again = await c.append_to_stream("orders-1", ExpectedVersion.NO_STREAM, events)
    self.assertEqual(again.next_expected_version, 4)

    with self.assertRaises(WrongExpectedVersion):
        await c.append_to_stream("orders-1", 1, [event(9)])

    read = await c.read_event("orders-1", 2)
    self.assertEqual(read.status, EventReadStatus.SUCCESS)
    assert read.event is not None
    self.assertEqual(read.event.original_event.event_id, events[2].event_id)
    self.assertEqual(read.event.original_event.data, b'{"n": 2}')
    self.assertTrue(read.event.original_event.is_json)
    last = await c.read_event("orders-1", -1)
    self.assertEqual(last.event_number, 4)
    missing = await c.read_event("orders-1", 99)
    self.assertEqual(missing.status, EventReadStatus.NOT_FOUND)
    nostream = await c.read_event("nothing-here", 0)
    self.assertEqual(nostream.status, EventReadStatus.NO_STREAM)

    forward = await c.read_stream_events_forward("orders-1", 1, 3)
    self.assertEqual([e.original_event_number for e in forward.events], [1, 2, 3])
    self.assertFalse(forward.is_end_of_stream)
    self.assertEqual(forward.next_event_number, 4)
    backward = await c.read_stream_events_backward("orders-1", -1, 10)
    self.assertEqual([e.original_event_number for e in backward.events], [4, 3, 2, 1, 0])
    self.assertTrue(backward.is_end_of_stream)
    empty = await c.read_stream_events_forward("nothing-here", 0, 10)
    self.assertEqual(empty.status, SliceReadStatus.STREAM_NOT_FOUND)

    all_forward = await c.read_all_events_forward(Position.start(), 4096)
    ids = [e.original_event.event_id for e in all_forward.events]
    for e in events:
        self.assertIn(e.event_id, ids)
    all_backward = await c.read_all_events_backward(Position.end(), 2)
    self.assertEqual(len(all_backward.events), 2)
    self.assertEqual(all_backward.events[0].original_event.event_id, events[4].event_id)

    # metadata, structured and raw
    metadata = StreamMetadata(
        max_count=10, acl=StreamAcl(read_roles=("$admins",)), custom={"owner": "me"}
    )
    await c.set_stream_metadata("orders-1", ExpectedVersion.ANY, metadata)
    got = await c.get_stream_metadata("orders-1")
    self.assertEqual(got.metastream_version, 0)
    self.assertEqual(got.stream_metadata.max_count, 10)
    self.assertEqual(got.stream_metadata.custom, {"owner": "me"})
    assert got.stream_metadata.acl is not None
    self.assertEqual(got.stream_metadata.acl.read_roles, ("$admins",))
    raw = await c.get_stream_metadata_as_raw_bytes("no-metadata")
    self.assertEqual(raw.metastream_version, -1)

    # The ACL now refuses a user that is not an admin.
    with self.assertRaises((AccessDenied, NotAuthenticated)):
        await c.read_event("orders-1", 0, credentials=UserCredentials("ops", "changeit"))
    with self.assertRaises(NotAuthenticated):
        await c.read_event("orders-1", 0, credentials=UserCredentials("admin", "wrong"))

    # a transaction
    transaction = await c.start_transaction("tx", ExpectedVersion.NO_STREAM)
    await transaction.write([event(0), event(1)])
    await c.continue_transaction(transaction.transaction_id).write([event(2)])
    committed = await transaction.commit()
    self.assertEqual(committed.next_expected_version, 2)
    tx_read = await c.read_stream_events_forward("tx", 0, 10)
    self.assertEqual(len(tx_read.events), 3)

    # soft delete: the stream can be written again; hard delete: not.
    await c.append_to_stream("soft", ExpectedVersion.ANY, [event(0)])
    await c.delete_stream("soft", ExpectedVersion.ANY)
    gone = await c.read_stream_events_forward("soft", 0, 10)
    self.assertEqual(gone.status, SliceReadStatus.STREAM_NOT_FOUND)
    await c.append_to_stream("hard", ExpectedVersion.ANY, [event(0)])
    await c.delete_stream("hard", ExpectedVersion.ANY, hard_delete=True)
    with self.assertRaises(StreamDeleted):
        await c.append_to_stream("hard", ExpectedVersion.ANY, [event(1)])
    deleted = await c.read_event("hard", 0)
    self.assertEqual(deleted.status, EventReadStatus.STREAM_DELETED)


async def subscriptions_suite(self: Any, c: EventStoreConnection, clock: IReactorTime) -> None:
    """
    A volatile, a catch-up (stream and $all) and a persistent subscription
    each see every event once, in order.
    """
    first = [event(i) for i in range(30)]
    await c.append_to_stream("subs", ExpectedVersion.ANY, first)
    await c.create_persistent_subscription(
        "subs", "group", PersistentSubscriptionSettings(start_from=0)
    )

    volatile: list[uuid.UUID] = []
    catch_up: list[uuid.UUID] = []
    catch_up_all: list[uuid.UUID] = []
    persistent: list[uuid.UUID] = []

    def on_volatile(sub: object, e: ResolvedEvent) -> None:
        volatile.append(e.original_event.event_id)

    def on_catch_up(sub: object, e: ResolvedEvent) -> None:
        catch_up.append(e.original_event.event_id)

    def on_all(sub: object, e: ResolvedEvent) -> None:
        if e.original_stream_id == "subs":
            catch_up_all.append(e.original_event.event_id)

    def on_persistent(sub: object, e: ResolvedEvent, retry_count: int) -> None:
        persistent.append(e.original_event.event_id)

    await c.subscribe_to_stream("subs", on_volatile)
    cu = c.subscribe_to_stream_from("subs", None, on_catch_up, read_batch_size=7)
    cu_all = c.subscribe_to_all_from(None, on_all, read_batch_size=50)
    ps = await c.connect_to_persistent_subscription("subs", "group", on_persistent)
    second = [event(i) for i in range(30, 60)]
    for e in second:
        await c.append_to_stream("subs", ExpectedVersion.ANY, [e])
    await cu.live
    await cu_all.live
    everything = [e.event_id for e in first + second]
    await wait_until(
        clock,
        lambda: len(catch_up) >= 60 and len(persistent) >= 60 and len(catch_up_all) >= 60,
        20,
        "subscribers",
    )
    self.assertEqual(volatile, [e.event_id for e in second])
    self.assertEqual(catch_up, everything)
    self.assertEqual(catch_up_all, everything)
    self.assertEqual(sorted(persistent), sorted(everything))
    self.assertEqual(len(persistent), len(set(persistent)))
    self.assertEqual(cu.last_processed_event_number, 59)
    reason, _ = await cu.stop()
    self.assertEqual(reason, "Unsubscribed")
    await ps.stop()
    await c.delete_persistent_subscription("subs", "group")


async def handlers_suite(self: Any, c: EventStoreConnection, clock: IReactorTime) -> None:
    """
    Handlers that return Deferreds or are coroutines: a catch-up, a
    volatile and a persistent subscription see every event once, in order,
    one at a time; a persistent handler's failing Deferred parks its event
    (C{handler_error_action=PARK}) and the others are acknowledged.
    """
    from twisted.internet.defer import Deferred, fail

    from estwisted.client import NakAction

    stream = f"slow-{uuid.uuid4().hex[:8]}"
    history = 120
    live = 30
    await c.append_to_stream(stream, ExpectedVersion.ANY, [event(i) for i in range(history)])
    await c.create_persistent_subscription(
        stream, "group", PersistentSubscriptionSettings(start_from=0, max_retry_count=0)
    )
    active = {"catch-up": 0, "volatile": 0, "persistent": 0}
    most = dict(active)
    catch_up: list[int] = []
    volatile: list[int] = []
    persistent: list[int] = []
    failing = {n for n in range(history + live) if n % 25 == 3}

    def enter(name: str) -> None:
        active[name] += 1
        most[name] = max(most[name], active[name])

    async def on_catch_up(sub: object, e: ResolvedEvent) -> None:
        enter("catch-up")
        catch_up.append(e.original_event_number)
        # every tenth handler takes a while; the others pass at once
        await deferLater(clock, 0.002 if e.original_event_number % 10 == 0 else 0, lambda: None)
        active["catch-up"] -= 1

    def on_volatile(sub: object, e: ResolvedEvent) -> Deferred[None]:
        enter("volatile")
        volatile.append(e.original_event_number)

        def done() -> None:
            active["volatile"] -= 1

        return deferLater(clock, 0.001, done)

    def on_persistent(sub: object, e: ResolvedEvent, retry_count: int) -> Deferred[None]:
        enter("persistent")
        number = e.original_event_number
        persistent.append(number)
        active["persistent"] -= 1
        if number in failing:
            return fail(ValueError(f"cannot handle {number}"))
        return deferLater(clock, 0.001, lambda: None)

    cu = c.subscribe_to_stream_from(stream, None, on_catch_up, read_batch_size=16)
    vs = await c.subscribe_to_stream(stream, on_volatile)
    ps = await c.connect_to_persistent_subscription(
        stream, "group", on_persistent, buffer_size=5, handler_error_action=NakAction.PARK
    )
    await cu.live
    self.assertEqual(catch_up, list(range(history)))
    for i in range(history, history + live):
        await c.append_to_stream(stream, ExpectedVersion.ANY, [event(i)])
    total = history + live
    await wait_until(
        clock,
        lambda: len(catch_up) >= total and len(volatile) >= live and len(persistent) >= total,
        30,
        "every handler to see every event",
    )
    self.assertEqual(catch_up, list(range(total)))
    self.assertEqual(volatile, list(range(history, total)))
    self.assertEqual(sorted(persistent), list(range(total)))
    self.assertEqual(len(persistent), len(set(persistent)))
    self.assertEqual(most["catch-up"], 1)
    self.assertEqual(most["volatile"], 1)

    parked_stream = f"$persistentsubscription-{stream}::group-parked"
    parked: list[int] = []

    async def read_parked() -> None:
        del parked[:]
        page = await c.read_stream_events_forward(parked_stream, 0, 4096, resolve_link_tos=True)
        parked.extend(e.event.event_number for e in page.events if e.event is not None)

    for _ in range(100):
        await read_parked()
        if len(parked) >= len(failing):
            break
        await deferLater(clock, 0.05, lambda: None)
    self.assertEqual(sorted(parked), sorted(failing))
    self.assertFalse(ps.is_dropped)
    for s in (cu, vs, ps):
        await s.stop()
    self.flushLoggedErrors(ValueError)
