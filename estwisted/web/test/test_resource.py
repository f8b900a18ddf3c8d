"""
Tests for L{estwisted.web.WebResource} served through the HTTP API's root
(L{estwisted.http.api.ApiRoot}), with C{StubTreq}.
"""

from __future__ import annotations

import base64
from typing import Any, Optional

import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.http.api import HttpApi
from estwisted.http.info import NodeInfo
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.web import STATIC_FILES, WebResource, is_web_path
from estwisted.web.metrics import NodeMetrics, NodeSources

BASE = "http://127.0.0.1:2113"


class WebResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = StreamStore(MemoryLog(), StreamIndex(), self.clock)
        users = UserManager(self.store, iterations=10)
        users.ensure_default_users()
        for _ in range(5):
            self.clock.advance(0)
        self.api = HttpApi(
            self.store,
            SubscriptionHub(self.store),
            PersistentSubscriptions(self.store, self.clock),
            self.clock,
            NodeInfo(),
            users=users,
        )
        self.metrics = NodeMetrics(NodeSources(store=self.store, http_api=self.api), process=False)
        self.api.web = WebResource(self.metrics)
        self.api.metrics = self.metrics
        self.stub = StubTreq(self.api.resource())

    def request(
        self, method: str, path: str, headers: Optional[dict[str, str]] = None
    ) -> tuple[Any, bytes]:
        d = self.stub.request(  # type: ignore[attr-defined]
            method, BASE + path, headers=headers or {}, allow_redirects=False
        )
        for _ in range(3):
            self.stub.flush()
            self.clock.advance(0)
        response = self.successResultOf(d)
        body = treq.content(response)
        self.stub.flush()
        return response, self.successResultOf(body)

    def test_root_redirects(self) -> None:
        response, _ = self.request("GET", "/")
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/web/index.html"])
        response, _ = self.request("GET", "/web")
        self.assertEqual(response.headers.getRawHeaders("location"), ["/web/"])

    def test_files(self) -> None:
        """
        Every shipped file is served, anonymously, with its media type and a
        policy that loads nothing from elsewhere.
        """
        for name, media in STATIC_FILES.items():
            response, body = self.request("GET", f"/web/{name}")
            self.assertEqual(response.code, 200, name)
            self.assertEqual(response.headers.getRawHeaders("content-type"), [media])
            self.assertTrue(body, name)
            policy = response.headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("default-src 'self'", policy)
        _, index = self.request("GET", "/web/")
        self.assertIn(b'<script type="module" src="app.js">', index)

    def test_no_external_references(self) -> None:
        """
        No file refers to another host (no CDN).
        """
        for name in STATIC_FILES:
            _, body = self.request("GET", f"/web/{name}")
            self.assertNotIn(b"//cdn", body)
            self.assertNotIn(b"https://", body, name)

    def test_unknown_file(self) -> None:
        for path in ("/web/nope.js", "/web/../setup.py", "/web/static/app.js"):
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 404, path)

    def test_methods(self) -> None:
        response, _ = self.request("POST", "/web/index.html")
        self.assertEqual(response.code, 405)
        response, body = self.request("HEAD", "/web/index.html")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")

    def test_metrics(self) -> None:
        response, body = self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        self.assertIn(b"estore_writer_checkpoint_bytes", body)
        # The scrape itself was timed.
        _, body = self.request("GET", "/metrics")
        self.assertIn(b'estore_http_request_duration_seconds_count{kind="metrics"} 1.0', body)

    def test_wrong_credentials(self) -> None:
        """
        Wrong credentials are refused as everywhere in the API.
        """
        bad = "Basic " + base64.b64encode(b"admin:wrong").decode()
        response, _ = self.request("GET", "/metrics", {"Authorization": bad})
        self.assertEqual(response.code, 401)

    def test_api_untouched(self) -> None:
        response, _ = self.request("GET", "/ping", {"Accept": "application/json"})
        self.assertEqual(response.code, 200)

    def test_without_metrics(self) -> None:
        self.api.web = WebResource(None)
        response, _ = self.request("GET", "/metrics")
        self.assertEqual(response.code, 404)

    def test_is_web_path(self) -> None:
        for path in (b"/", b"/web", b"/web/", b"/web/app.js", b"/metrics"):
            self.assertTrue(is_web_path(path), path)
        for path in (b"/webx", b"/metrics/x", b"/streams/web", b"//"):
            self.assertFalse(is_web_path(path), path)

    def test_progress(self) -> None:
        """
        C{GET /progress} lists the board's tasks as JSON, anonymously.
        """
        import json

        from estwisted.core.progress import ProgressBoard

        board = ProgressBoard()
        task = board.start("scavenge", "s-1", 4, now=10.0, unit="chunks", log=False)
        task.advance(1, now=12.0)
        board.start("index-rebuild", "stream index", 100, now=0.0, log=False).finish(1.0)
        self.api.web = WebResource(self.metrics, board=board)
        response, body = self.request("GET", "/progress")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"]
        )
        tasks = json.loads(body)["tasks"]
        self.assertEqual([(t["kind"], t["percentage"], t["running"]) for t in tasks],
                         [("scavenge", 25.0, True), ("index-rebuild", 100.0, False)])
        self.assertEqual((tasks[0]["rate"], tasks[0]["etaSeconds"]), (0.5, 6.0))
        self.assertTrue(is_web_path(b"/progress"))
        self.assertFalse(is_web_path(b"/progress/x"))
