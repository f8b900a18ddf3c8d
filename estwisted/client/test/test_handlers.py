# -*- test-case-name: estwisted.client.test.test_handlers -*-
"""
Tests for subscription handlers that return Deferreds (or are C{async
def}): events reach the handler one at a time and in order, a catch-up
subscription reads on once the handlers are done, a persistent one
acknowledges once the Deferred fired, and a failing Deferred is a handler
error.  A L{Clock} and in-memory transports.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from estwisted.client import ConnectionSettings, NakAction, ResolvedEvent
from estwisted.client.test.fakes import FakeServerConnection
from estwisted.client.test.test_connection import (
    answer_read,
    confirm_subscription,
    make,
    push,
    reads,
    record,
)
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import TcpCommand


class SlowHandler:
    """
    A handler that returns a new unfired Deferred for each event.
    """

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.waiting: list[Deferred[None]] = []

    def __call__(self, subscription: Any, event: ResolvedEvent, *rest: Any) -> Deferred[None]:
        self.seen.append(event.original_event_number)
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def finish(self) -> None:
        self.waiting.pop(0).callback(None)

    def fail(self, error: Exception) -> None:
        self.waiting.pop(0).errback(error)


def connected() -> tuple[Any, Any, Any]:
    connection, clock, network = make(ConnectionSettings(reconnection_delay=0.1))
    connection.connect()
    network.last.identify()
    return connection, clock, network


class VolatileHandlerTests(SynchronousTestCase):
    def test_one_at_a_time_in_order(self) -> None:
        """
        While the handler's Deferred has not fired, later events wait, in
        order.
        """
        connection, clock, network = connected()
        handler = SlowHandler()
        d = connection.subscribe_to_stream("s", handler)
        request = confirm_subscription(network.last, 0)
        subscription = self.successResultOf(d)
        for n in (1, 2, 3):
            push(network.last, request.correlation_id, n, uuid.uuid4())
        self.assertEqual(handler.seen, [1])
        self.assertEqual(subscription.pending_events, 2)
        handler.finish()
        self.assertEqual(handler.seen, [1, 2])
        handler.finish()
        handler.finish()
        self.assertEqual(handler.seen, [1, 2, 3])
        self.assertEqual(subscription.pending_events, 0)

    def test_coroutine_handler(self) -> None:
        """
        An C{async def} handler is run with C{ensureDeferred}: the next
        event waits until the coroutine returned.
        """
        connection, clock, network = connected()
        gates: list[Deferred[None]] = []
        seen: list[tuple[str, int]] = []

        async def handler(subscription: Any, event: ResolvedEvent) -> None:
            seen.append(("start", event.original_event_number))
            gate: Deferred[None] = Deferred()
            gates.append(gate)
            await gate
            seen.append(("end", event.original_event_number))

        connection.subscribe_to_stream("s", handler)
        request = confirm_subscription(network.last, 0)
        push(network.last, request.correlation_id, 1, uuid.uuid4())
        push(network.last, request.correlation_id, 2, uuid.uuid4())
        self.assertEqual(seen, [("start", 1)])
        gates[0].callback(None)
        self.assertEqual(seen, [("start", 1), ("end", 1), ("start", 2)])
        gates[1].callback(None)
        self.assertEqual(seen[-1], ("end", 2))

    def test_fired_deferred_goes_on_at_once(self) -> None:
        """
        A Deferred that has already fired does not hold anything up.
        """
        connection, clock, network = connected()
        seen: list[int] = []

        def handler(subscription: Any, event: ResolvedEvent) -> Deferred[None]:
            seen.append(event.original_event_number)
            return succeed(None)

        connection.subscribe_to_stream("s", handler)
        request = confirm_subscription(network.last, 0)
        for n in (1, 2, 3):
            push(network.last, request.correlation_id, n, uuid.uuid4())
        self.assertEqual(seen, [1, 2, 3])

    def test_failed_deferred_drops(self) -> None:
        """
        A failing Deferred drops the subscription with
        C{EventHandlerException} and the error; waiting events are not
        handed over.
        """
        connection, clock, network = connected()
        handler = SlowHandler()
        dropped: list[tuple[str, Any]] = []
        connection.subscribe_to_stream(
            "s", handler, lambda sub, reason, error: dropped.append((reason, error))
        )
        request = confirm_subscription(network.last, 0)
        push(network.last, request.correlation_id, 1, uuid.uuid4())
        push(network.last, request.correlation_id, 2, uuid.uuid4())
        error = ValueError("bad event")
        handler.fail(error)
        self.assertEqual(dropped, [("EventHandlerException", error)])
        self.assertEqual(handler.seen, [1])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class CatchUpHandlerTests(SynchronousTestCase):
    def test_back_pressure_and_order(self) -> None:
        """
        The next slice is read only once the handlers of the last one are
        done; live events pushed meanwhile are handled after the history,
        and C{live} fires once every one of them was handled.
        """
        connection, clock, network = connected()
        handler = SlowHandler()
        ids = [uuid.uuid4() for _ in range(6)]
        subscription = connection.subscribe_to_stream_from("s", None, handler, read_batch_size=2)
        request = confirm_subscription(network.last, 3)
        (read,) = reads(network.last)
        answer_read(network.last, read, ids[0:2], 0, False)
        self.assertEqual(handler.seen, [0])
        self.assertEqual(reads(network.last), [])  # not before the handlers are done
        handler.finish()
        self.assertEqual(reads(network.last), [])
        handler.finish()
        (read,) = reads(network.last)
        push(network.last, request.correlation_id, 4, ids[4])  # buffered
        answer_read(network.last, read, ids[2:4], 2, True)
        handler.finish()
        push(network.last, request.correlation_id, 5, ids[5])  # buffered too
        handler.finish()
        self.assertEqual(handler.seen, [0, 1, 2, 3, 4])
        self.assertNoResult(subscription.live)
        handler.finish()
        self.assertNoResult(subscription.live)
        handler.finish()
        self.successResultOf(subscription.live)
        self.assertEqual(handler.seen, [0, 1, 2, 3, 4, 5])
        self.assertTrue(subscription.is_live)

    def test_reconnect_while_handling(self) -> None:
        """
        Events accepted before a reconnection are still handled, before
        those read after it, and none twice.
        """
        connection, clock, network = connected()
        handler = SlowHandler()
        ids = [uuid.uuid4() for _ in range(5)]
        subscription = connection.subscribe_to_stream_from("s", None, handler, read_batch_size=10)
        confirm_subscription(network.last, 2)
        (read,) = reads(network.last)
        answer_read(network.last, read, ids[0:3], 0, True)
        self.assertEqual(handler.seen, [0])
        network.last.drop()
        clock.advance(0.1)
        network.last.identify()
        confirm_subscription(network.last, 4)
        (read,) = reads(network.last)
        self.assertEqual(pb.ReadStreamEvents.FromString(read.data).from_event_number, 3)
        answer_read(network.last, read, ids[3:5], 3, True)
        for _ in range(5):
            handler.finish()
        self.assertEqual(handler.seen, [0, 1, 2, 3, 4])
        self.successResultOf(subscription.live)

    def test_failed_deferred_during_catch_up(self) -> None:
        connection, clock, network = connected()
        handler = SlowHandler()
        subscription = connection.subscribe_to_stream_from("s", None, handler)
        confirm_subscription(network.last, 1)
        (read,) = reads(network.last)
        answer_read(network.last, read, [uuid.uuid4(), uuid.uuid4()], 0, True)
        handler.fail(RuntimeError("no"))
        failure = self.failureResultOf(subscription.live, RuntimeError)
        self.assertEqual(str(failure.value), "no")
        self.assertTrue(subscription.is_dropped)
        self.assertEqual(handler.seen, [0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


def persistent_session(server: FakeServerConnection, ids: list[uuid.UUID]) -> bytes:
    (request,) = [
        p for p in server.packages() if p.command == TcpCommand.ConnectToPersistentSubscription
    ]
    server.send(
        TcpCommand.PersistentSubscriptionConfirmation,
        request.correlation_id,
        pb.PersistentSubscriptionConfirmation(
            last_commit_position=0, subscription_id="s::g"
        ).SerializeToString(),
    )
    for n, event_id in enumerate(ids):
        server.send(
            TcpCommand.PersistentSubscriptionStreamEventAppeared,
            request.correlation_id,
            pb.PersistentSubscriptionStreamEventAppeared(
                event=pb.ResolvedIndexedEvent(event=record("s", n, event_id)), retryCount=0
            ).SerializeToString(),
        )
    return bytes(request.correlation_id)


def settled(server: FakeServerConnection) -> list[tuple[str, list[uuid.UUID], int]]:
    out = []
    for p in server.packages():
        if p.command == TcpCommand.PersistentSubscriptionAckEvents:
            message = pb.PersistentSubscriptionAckEvents.FromString(p.data)
            out.append(("ack", [uuid.UUID(bytes_le=i) for i in message.processed_event_ids], 0))
        elif p.command == TcpCommand.PersistentSubscriptionNakEvents:
            nak = pb.PersistentSubscriptionNakEvents.FromString(p.data)
            out.append(
                ("nak", [uuid.UUID(bytes_le=i) for i in nak.processed_event_ids], nak.action)
            )
    return out


class PersistentHandlerTests(SynchronousTestCase):
    def test_auto_ack_after_deferred(self) -> None:
        """
        With C{auto_ack} an event is acknowledged once the handler's
        Deferred fired, not before; the next event waits for it.
        """
        connection, clock, network = connected()
        handler = SlowHandler()
        connection.connect_to_persistent_subscription("s", "g", handler)
        ids = [uuid.uuid4() for _ in range(2)]
        persistent_session(network.last, ids)
        self.assertEqual(settled(network.last), [])
        self.assertEqual(handler.seen, [0])
        handler.finish()
        self.assertEqual(settled(network.last), [("ack", [ids[0]], 0)])
        self.assertEqual(handler.seen, [0, 1])
        handler.finish()
        self.assertEqual(settled(network.last), [("ack", [ids[1]], 0)])

    def test_failed_deferred_drops_by_default(self) -> None:
        connection, clock, network = connected()
        handler = SlowHandler()
        dropped: list[str] = []
        connection.connect_to_persistent_subscription(
            "s", "g", handler, lambda sub, reason, error: dropped.append(reason)
        )
        persistent_session(network.last, [uuid.uuid4(), uuid.uuid4()])
        handler.fail(KeyError("x"))
        self.assertEqual(dropped, ["EventHandlerException"])
        self.assertEqual(settled(network.last), [])
        self.assertEqual(handler.seen, [0])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_failed_deferred_parks(self) -> None:
        """
        With C{handler_error_action=PARK} a failing Deferred (or an
        exception) parks the event and the next one is handled.
        """
        connection, clock, network = connected()
        handler = SlowHandler()
        d = connection.connect_to_persistent_subscription(
            "s", "g", handler, handler_error_action=NakAction.PARK
        )
        ids = [uuid.uuid4() for _ in range(2)]
        persistent_session(network.last, ids)
        subscription = self.successResultOf(d)
        handler.fail(KeyError("x"))
        self.assertEqual(settled(network.last), [("nak", [ids[0]], NakAction.PARK)])
        self.assertEqual(handler.seen, [0, 1])
        handler.finish()
        self.assertEqual(settled(network.last), [("ack", [ids[1]], 0)])
        self.assertFalse(subscription.is_dropped)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_bad_handler_error_action(self) -> None:
        connection, clock, network = connected()
        with self.assertRaises(ValueError):
            connection.connect_to_persistent_subscription(
                "s", "g", SlowHandler(), handler_error_action=9
            )


class OrderProperty(SynchronousTestCase):
    @given(st.lists(st.sampled_from(["push", "finish", "sync"]), max_size=60))
    def test_serial_in_order(self, steps: list[str]) -> None:
        """
        Whatever the interleaving of pushes and handler completions (some
        handlers finishing synchronously), the handler sees the pushed
        events in order, never two at once, and each once.
        """
        connection, clock, network = connected()
        outstanding: list[Deferred[None]] = []
        seen: list[int] = []
        sync_next = [False]
        concurrent = [0]

        def handler(subscription: Any, event: ResolvedEvent) -> Any:
            seen.append(event.original_event_number)
            self.assertEqual(outstanding, [])
            if sync_next[0]:
                return None
            d: Deferred[None] = Deferred()
            outstanding.append(d)
            concurrent[0] = max(concurrent[0], len(outstanding))
            return d

        connection.subscribe_to_stream("s", handler)
        request = confirm_subscription(network.last, 0)
        pushed = 0
        for step in steps:
            if step == "push":
                pushed += 1
                push(network.last, request.correlation_id, pushed, uuid.uuid4())
            elif step == "sync":
                sync_next[0] = not sync_next[0]
            elif outstanding:
                outstanding.pop(0).callback(None)
        sync_next[0] = True
        while outstanding:
            outstanding.pop(0).callback(None)
        self.assertEqual(seen, list(range(1, pushed + 1)))
        self.assertLessEqual(concurrent[0], 1)
