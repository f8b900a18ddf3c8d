"""
Tests for the projections routes of L{estwisted.http} (issue 16): the
standard projections listed, their statistics, query, config, state, and
enable/disable commands, through C{StubTreq}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from estwisted.http.info import NodeInfo
from estwisted.http.test.test_api import ADMIN, ApiTestMixin, make_node
from estwisted.projections import SystemProjectionsService


class ProjectionsApiTests(ApiTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.service = SystemProjectionsService(self.store, self.clock, enabled=False)
        self.api.node_info = NodeInfo(projections=self.service)
        self.service.startService()

    def tearDown(self) -> None:
        self.successResultOf(self.service.stopService())

    def test_lists(self) -> None:
        for kind in ("any", "all-non-transient", "continuous"):
            reply = self.get(f"/projections/{kind}")
            self.assertEqual(reply.code, 200)
            names = sorted(p["name"] for p in reply.json()["projections"])
            self.assertEqual(
                names, ["$by_category", "$by_event_type", "$stream_by_category", "$streams"]
            )
        self.assertEqual(self.get("/projections/onetime").json(), {"projections": []})
        self.assertEqual(self.get("/projections/nonsense").code, 404)

    def test_one(self) -> None:
        stats = self.get("/projection/$by_category").json()
        self.assertEqual(stats["name"], "$by_category")
        self.assertEqual(stats["mode"], "Continuous")
        self.assertEqual(stats["status"], "Stopped")
        self.assertTrue(stats["statusUrl"].endswith("/projection/$by_category"))
        wrapped = self.get("/projection/$by_category/statistics").json()
        self.assertEqual(wrapped["projections"][0]["name"], "$by_category")
        self.assertEqual(self.get("/projection/$by_category/state").json(), {})
        self.assertEqual(self.get("/projection/$by_category/result").json(), {})
        self.assertEqual(self.get("/projection/$by_category/query").body, b"first\r\n-")
        self.assertIn("emitEnabled", self.get("/projection/$by_category/config").json())
        self.assertEqual(self.get("/projection/nope").code, 404)
        self.assertEqual(self.get("/projection/$by_category/nope").code, 404)

    def test_enable_disable(self) -> None:
        self.write("order-1", {"a": 1})
        reply = self.request("POST", "/projection/$by_category/command/enable", ADMIN)
        self.assertEqual(reply.code, 200)
        self.pump()
        self.pump()
        self.assertEqual(self.get("/projection/$by_category").json()["status"], "Running")
        self.assertEqual(self.store.last_event_number("$ce-order"), 0)
        reply = self.request("POST", "/projection/$by_category/command/disable", ADMIN)
        self.assertEqual(reply.code, 200)
        self.assertEqual(self.get("/projection/$by_category").json()["status"], "Stopped")
        self.assertEqual(
            self.request("POST", "/projection/$by_category/command/nonsense", ADMIN).code, 404
        )

    def test_reset_emits_nothing_twice(self) -> None:
        self.write("order-1", {"a": 1})
        self.request("POST", "/projection/$by_category/command/enable", ADMIN)
        self.pump()
        self.pump()
        reply = self.request("POST", "/projection/$by_category/command/reset", ADMIN)
        self.assertEqual(reply.code, 200)
        for _ in range(5):
            self.pump()
        self.write("order-1", {"a": 2})
        for _ in range(5):
            self.pump()
        self.assertEqual(self.store.last_event_number("$ce-order"), 1)
        self.assertEqual(self.get("/projection/$by_category").json()["status"], "Running")

    def test_commands_need_ops(self) -> None:
        reply = self.request("POST", "/projection/$by_category/command/enable")
        self.assertEqual(reply.code, 401)


class NoProjectionsTests(SynchronousTestCase):
    def test_not_found_when_not_run(self) -> None:
        from treq.testing import StubTreq
        from twisted.internet.task import Clock

        clock = Clock()
        _, _, api = make_node(clock)
        stub = StubTreq(api.resource())
        d = stub.get(  # type: ignore[attr-defined]
            "http://127.0.0.1:2113/projections/any", headers=ADMIN
        )
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 404)
