# -*- test-case-name: estwisted.client.test.test_testing -*-
"""
Tests for L{estwisted.client.testing}: the in-memory node passes the same
suite as a real node (L{estwisted.client.test.suite}), driven by a
L{Clock}, and simulates lost connections and a node that is not ready.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.client import ConnectionSettings, EventStoreConnection, ExpectedVersion
from estwisted.client.test.suite import (
    ADMIN,
    event,
    handlers_suite,
    operations_suite,
    subscriptions_suite,
)
from estwisted.client.testing import MemoryEventStore


class MemoryNodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = MemoryEventStore(self.clock)
        self.connection = self.node.connection(
            ConnectionSettings(default_user_credentials=ADMIN, reconnection_delay=0.1)
        )

    def tearDown(self) -> None:
        self.connection.close()
        self.node.stop()
        self.clock.advance(60)

    def drive(self, coroutine: Coroutine[Any, Any, Any], seconds: float = 30.0) -> Any:
        """
        Run C{coroutine} to its end, advancing the clock 10 ms at a time.
        """
        d = Deferred.fromCoroutine(coroutine)
        for _ in range(int(seconds * 100)):
            if d.called:
                break
            self.clock.advance(0.01)
        return self.successResultOf(d)

    async def connected(self, suite: Any, *args: Any) -> None:
        await self.connection.connect()
        await suite(self, self.connection, *args)

    def test_operations(self) -> None:
        """
        The operations suite passes against the in-memory node.
        """
        self.drive(self.connected(operations_suite))

    def test_subscriptions(self) -> None:
        """
        The subscriptions suite passes against the in-memory node.
        """
        self.drive(self.connected(subscriptions_suite, self.clock))

    def test_handlers(self) -> None:
        """
        The suite of handlers returning Deferreds passes against the
        in-memory node.
        """
        self.drive(self.connected(handlers_suite, self.clock))

    def test_drop_connections(self) -> None:
        """
        After L{MemoryEventStore.drop_connections} the client reconnects
        and an append in flight is retried.
        """

        async def scenario(connection: EventStoreConnection) -> None:
            await connection.connect()
            d = connection.append_to_stream("s", ExpectedVersion.ANY, [event(0)])
            self.node.drop_connections()
            result = await d
            self.assertEqual(result.next_expected_version, 0)
            self.assertTrue(connection.is_connected)

        self.drive(scenario(self.connection))

    def test_not_ready(self) -> None:
        """
        While the node is not ready operations are retried; they complete
        once it is.
        """

        async def scenario(connection: EventStoreConnection) -> None:
            await connection.connect()
            self.node.set_ready(False)
            d = connection.append_to_stream("s", ExpectedVersion.ANY, [event(0)])
            self.clock.callLater(0.5, self.node.set_ready, True)
            await d

        self.drive(scenario(self.connection))
