# -*- test-case-name: tests.test_projections -*-
"""
System tests of the standard projections (issue 16) on a real node:
C{$ce-}/C{$et-}/C{$streams} streams read with links resolved over HTTP
and over TCP (node-eventstore-client), catch-up of events written before
the projections ran, and no link twice across a restart.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import NodeProcess, start_node
from tests.test_node import http, write_event
from tests.test_tcp_clients import ClientScriptMixin

PROJECTIONS = ["--run-projections", "System", "--start-standard-projections", "true"]


def read_stream(node: NodeProcess, stream: str, resolve: bool = True) -> tuple[int, list[Any]]:
    """
    All entries of C{stream} over HTTP (atom JSON, bodies embedded), oldest
    first; C{(status, entries)}.
    """
    status, _, body = http(
        node,
        "GET",
        f"/streams/{stream}/0/forward/4000?embed=body",
        headers={
            "Accept": "application/vnd.eventstore.atom+json",
            "ES-ResolveLinkTos": "true" if resolve else "false",
        },
    )
    if status != 200:
        return status, []
    return status, list(json.loads(body)["entries"])


def wait_for_count(node: NodeProcess, stream: str, count: int, timeout: float = 20) -> list[Any]:
    entries: list[Any] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _, entries = read_stream(node, stream)
        if len(entries) >= count:
            return entries
        time.sleep(0.1)
    raise AssertionError(
        f"{stream} has {len(entries)} entries, wanted {count}\n{node.log()[-3000:]}"
    )


class StandardProjectionsTests(ClientScriptMixin, SynchronousTestCase):
    def test_catch_up_and_links_resolved_over_http(self) -> None:
        directory = self.mktemp()
        node = start_node(self, directory)
        # written before the projections run: they catch up from the start
        for n in range(2):
            write_event(node, "order-1", n)
        node.terminate()
        node.extra_args = PROJECTIONS
        node.start()
        write_event(node, "order-2", 2)
        write_event(node, "order-2", 3)
        entries = wait_for_count(node, "$ce-order", 4)
        self.assertEqual(len(entries), 4)
        self.assertEqual(
            sorted((e["streamId"], e["eventNumber"]) for e in entries),
            [("order-1", 0), ("order-1", 1), ("order-2", 0), ("order-2", 1)],
        )
        self.assertEqual(len(wait_for_count(node, "$et-counted", 4)), 4)
        self.assertEqual(
            sorted(e["streamId"] for e in wait_for_count(node, "$streams", 2))[:2],
            ["order-1", "order-2"],
        )
        _, unresolved = read_stream(node, "$ce-order", resolve=False)
        self.assertEqual({e["eventType"] for e in unresolved}, {"$>"})

    def test_ce_stream_resolved_over_tcp(self) -> None:
        """
        node-eventstore-client reads C{$ce-order} with resolveLinkTos.
        """
        node = start_node(self, extra_args=PROJECTIONS)
        for n in range(6):
            write_event(node, f"order-{n % 2}", n)
        self.run_js(node, "projections_read.js", "order", "6")

    def test_restart_emits_no_link_twice(self) -> None:
        node = start_node(self, extra_args=PROJECTIONS)
        for n in range(10):
            write_event(node, f"cart-{n % 3}", n)
        wait_for_count(node, "$ce-cart", 10)
        node.terminate()
        node.start()
        write_event(node, "cart-9", 10)
        entries = wait_for_count(node, "$ce-cart", 11)
        time.sleep(1.0)
        _, entries = read_stream(node, "$ce-cart")
        self.assertEqual(len(entries), 11)
        status, checkpoints = read_stream(node, "$projections-$by_category-checkpoint", False)
        self.assertEqual(status, 200)
        self.assertTrue(checkpoints)
        streams = [e["streamId"] for e in read_stream(node, "$streams")[1]]
        self.assertEqual(sorted(s for s in streams if s.startswith("cart-")),
                         ["cart-0", "cart-1", "cart-2", "cart-9"])

    def test_off_by_default(self) -> None:
        node = start_node(self)
        write_event(node, "order-1", 0)
        time.sleep(1.0)
        status, _ = read_stream(node, "$ce-order")
        self.assertEqual(status, 404)
