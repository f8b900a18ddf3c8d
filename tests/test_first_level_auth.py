# -*- test-case-name: tests.test_first_level_auth -*-
"""
C{DisableFirstLevelHttpAuthorization} on a real node: anonymous HTTP
clients of the pre-5.0.2 era (as the C{geteventstore} PyPI package does:
one event posted as C{application/json} with C{ES-EventId} and
C{ES-EventType}, feeds read with feedparser's default C{Accept} header, no
credentials) work with it on and are refused without it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

from twisted.trial.unittest import TestCase

from tests.harness import NodeProcess, start_node

#: feedparser's default C{Accept} header.
FEEDPARSER_ACCEPT = (
    "application/atom+xml,application/rdf+xml,application/rss+xml,"
    "application/x-netcdf,application/xml;q=0.9,text/xml;q=0.2,*/*;q=0.1"
)


def anonymous(
    node: NodeProcess, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    request = urllib.request.Request(node.http_url + path, data=body, method=method)
    for k, v in headers.items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_single(node: NodeProcess, stream: str) -> int:
    status, _ = anonymous(
        node,
        "POST",
        f"/streams/{stream}",
        json.dumps({"n": 1}).encode(),
        {
            "Content-Type": "application/json",
            "ES-EventId": str(uuid.uuid4()),
            "ES-EventType": "legacy",
        },
    )
    return status


class FirstLevelAuthorizationTests(TestCase):
    timeout = 120

    def test_disabled(self) -> None:
        """
        With the switch on, anonymous writes and feed reads of an ordinary
        stream succeed; C{$all} still needs its ACL (admins).
        """
        node = start_node(
            self, mem_db=True, extra_args=["--disable-first-level-http-authorization"]
        )
        self.assertEqual(post_single(node, "legacy-stream"), 201)
        status, body = anonymous(
            node, "GET", "/streams/legacy-stream", None, {"Accept": FEEDPARSER_ACCEPT}
        )
        self.assertEqual(status, 200, body)
        self.assertIn(b"legacy-stream", body)
        status, _ = anonymous(node, "GET", "/streams/$all", None, {"Accept": FEEDPARSER_ACCEPT})
        self.assertEqual(status, 401)

    def test_default(self) -> None:
        """
        Without the switch (5.0.2+ default) anonymous writes and reads are
        refused.
        """
        node = start_node(self, mem_db=True)
        self.assertEqual(post_single(node, "legacy-stream"), 401)
        status, _ = anonymous(
            node, "GET", "/streams/legacy-stream", None, {"Accept": FEEDPARSER_ACCEPT}
        )
        self.assertEqual(status, 401)
