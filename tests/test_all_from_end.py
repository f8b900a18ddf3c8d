# -*- test-case-name: tests.test_all_from_end -*-
"""
A catch-up subscription to C{$all} from the end, with real clients
(node-eventstore-client, both generations): no history, then live events
(issue 15).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import start_node
from tests.test_tcp_clients import ClientScriptMixin


class AllFromEndTests(ClientScriptMixin, SynchronousTestCase):
    js_client = "node-eventstore-client"

    def test_subscribe_to_all_from_end(self) -> None:
        """
        C{subscribeToAllFrom(positions.end)} delivers no historical event,
        goes live, and then gets exactly the new events.
        """
        node = start_node(self, mem_db=True)
        result = self.run_js(node, "catchup_end.js")
        self.assertEqual(result["historical"], 0)
        self.assertEqual(result["seen"], 5)


class AllFromEndClient21Tests(AllFromEndTests):
    js_client = "node-eventstore-client-21"
