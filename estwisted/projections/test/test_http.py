"""
Tests for the projections routes of L{estwisted.http} (issue 16): the
standard projections listed, their statistics, query, config, state, and
enable/disable commands, through C{StubTreq}.
"""

from __future__ import annotations

from typing import Any

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


COUNT = ("fromAll().foreachStream().when({$init: function () { return {n: 0}; },"
         " $any: function (s, e) { s.n += 1; }}).outputState()")


class UserProjectionsApiTests(ApiTestMixin, SynchronousTestCase):
    """
    The user projections' routes, with V8 running on the test's thread.
    """

    def setUp(self) -> None:
        from twisted.internet.defer import maybeDeferred

        from estwisted.projections import UserProjectionsService

        super().setUp()
        self.service = SystemProjectionsService(self.store, self.clock, enabled=False)
        self.service.user = UserProjectionsService(
            self.store, self.clock, lambda f, *a: maybeDeferred(f, *a), timeout=0.5,
            reserved=lambda name: name in self.service.runners)
        self.api.node_info = NodeInfo(projections=self.service)
        self.service.startService()
        self.service.user.startService()

    def tearDown(self) -> None:
        self.successResultOf(self.service.user.stopService())
        self.successResultOf(self.service.stopService())

    def create(self, query: str = COUNT, params: str = "name=p&emit=no",
               mode: str = "continuous") -> Any:
        reply = self.request("POST", f"/projections/{mode}?{params}", ADMIN, query.encode())
        for _ in range(3):
            self.pump()
        return reply

    def test_create_and_read(self) -> None:
        self.write("a-1", {"x": 1}, {"x": 2})
        reply = self.create()
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.json(), {"name": "p"})
        self.assertTrue(reply.headers.getRawHeaders("location")[0].endswith("/projection/p"))
        stats = self.get("/projection/p").json()
        self.assertEqual((stats["status"], stats["mode"]), ("Running", "Continuous"))
        self.assertEqual(self.get("/projection/p/state?partition=a-1").json(), {"n": 2})
        self.assertEqual(self.get("/projection/p/result?partition=a-1").json(), {"n": 2})
        self.assertEqual(self.get("/projection/p/state?partition=zz").body, b"")
        self.assertEqual(self.get("/projection/p/query").body, COUNT.encode())
        definition = self.get("/projection/p/query?config=yes").json()["definition"]
        self.assertTrue(definition["byStreams"])
        names = [p["name"] for p in self.get("/projections/continuous").json()["projections"]]
        self.assertIn("p", names)
        self.assertNotIn("p", [p["name"] for p in
                               self.get("/projections/onetime").json()["projections"]])

    def test_bad_requests(self) -> None:
        self.assertEqual(self.create().code, 201)
        self.assertEqual(self.create().code, 409)
        self.assertEqual(self.create(params="name=$streams").code, 409)
        self.assertEqual(self.create(params="name=q&emit=perhaps").code, 400)
        self.assertEqual(self.create(params="name=q&type=native").code, 400)
        self.assertEqual(self.create(query=" ", params="name=q").code, 400)
        self.assertEqual(self.create(params="").code, 400)
        self.assertEqual(self.create(params="name=q&emit=yes", mode="transient").code, 400)
        self.assertEqual(self.create(mode="forever").code, 404)
        reply = self.request("POST", "/projections/continuous?name=r", {}, COUNT.encode())
        self.assertEqual(reply.code, 401)
        self.assertEqual(self.request("DELETE", "/projection/p", ADMIN).code, 400)
        self.assertEqual(self.request("DELETE", "/projection/$streams", ADMIN).code, 400)
        self.assertEqual(self.request("PUT", "/projection/nope/query", ADMIN, b"x").code, 404)
        self.assertEqual(
            self.request("PUT", "/projection/p/config", ADMIN, b'{"emitEnabled": 1}').code, 400)

    def test_update_config_commands_delete(self) -> None:
        self.write("a-1", {"x": 1})
        self.create()
        reply = self.request("PUT", "/projection/p/config", ADMIN,
                             b'{"emitEnabled": true, "checkpointHandledThreshold": 10}')
        self.assertEqual(reply.code, 200)
        self.pump()
        config = self.get("/projection/p/config").json()
        self.assertEqual((config["emitEnabled"], config["checkpointHandledThreshold"]),
                         (True, 10))
        reply = self.request("PUT", "/projection/p/query?emit=no", ADMIN,
                             b"fromAll().when({$any: function (s) { s.z = 1; }})")
        self.assertEqual(reply.code, 200)
        for _ in range(3):
            self.pump()
        self.assertEqual(self.get("/projection/p/query").body,
                         b"fromAll().when({$any: function (s) { s.z = 1; }})")
        # it goes on from its checkpoint (whose root state is {n: 0})
        self.write("a-2", {"x": 2})
        for _ in range(3):
            self.pump()
        self.assertEqual(self.get("/projection/p/state").json(), {"n": 0, "z": 1})
        self.assertEqual(
            self.request("POST", "/projection/p/command/disable", ADMIN).code, 200)
        self.pump()
        self.assertEqual(self.get("/projection/p").json()["status"], "Stopped")
        self.assertGreaterEqual(self.store.last_event_number("$projections-p-a-1-state"), 0)
        reply = self.request(
            "DELETE", "/projection/p?deleteStateStream=yes&deleteCheckpointStream=yes", ADMIN)
        self.assertEqual(reply.code, 200)
        self.pump()
        self.assertEqual(self.get("/projection/p").code, 404)
        from estwisted.core.acl import SYSTEM_PRINCIPAL

        read = self.store.read_stream("$projections-p-checkpoint", 0, 10, True, False,
                                      SYSTEM_PRINCIPAL)
        self.assertEqual(list(read.events), [])
        read = self.store.read_stream("$projections-p-a-1-state", 0, 10, True, False,
                                      SYSTEM_PRINCIPAL)
        self.assertEqual(list(read.events), [])

    def test_one_time_without_name(self) -> None:
        self.write("a-1", {"x": 1})
        reply = self.create(params="type=JS", mode="onetime")
        self.assertEqual(reply.code, 201)
        name = reply.json()["name"]
        for _ in range(3):
            self.pump()
        stats = self.get(f"/projection/{name}").json()
        self.assertEqual((stats["mode"], stats["status"]), ("OneTime", "Completed/Stopped"))
