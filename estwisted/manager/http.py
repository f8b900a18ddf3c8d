# -*- test-case-name: estwisted.manager.test.test_http -*-
"""
The manager's HTTP interface, the same on its internal and external ports:

  - C{GET /gossip}: the whole cluster in the v5 C{ClusterInfoDto} JSON shape
    (the managers in state C{Manager}, the database nodes as they gossip),
    the known endpoint for clients;
  - C{POST /gossip}: a manager or database node posts its table and gets
    the merged one back (as on a database node's internal port);
  - C{GET /watchdog}: the supervised nodes: command, pid, state, restarts,
    recent failures, last exit status and time;
  - C{GET /ping}: C{{"text": "Ping request successfully handled"}}.

Anything else is 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource

from estwisted.cluster.gossip import GossipFormatError, decode_cluster_info, encode_cluster_info
from estwisted.manager.gossip import ManagerGossip

__all__ = ["ManagerResource"]

_JSON = b"application/json; charset=utf-8"
_NO_CACHE = b"max-age=0, no-cache, must-revalidate"


class ManagerResource(Resource):
    """
    @param gossip: the manager's gossip.
    @param watchdog_status: returns the status list of C{GET /watchdog}.
    """

    isLeaf = True

    def __init__(self, gossip: ManagerGossip, watchdog_status: Callable[[], Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gossip = gossip
        self.watchdog_status = watchdog_status

    def render(self, request: Any) -> bytes:
        path: bytes = request.path.rstrip(b"/") or b"/"
        method: bytes = request.method
        request.responseHeaders.setRawHeaders(b"access-control-allow-origin", [b"*"])
        if path == b"/gossip":
            if method in (b"GET", b"HEAD"):
                return self._json(request, encode_cluster_info(self.gossip.cluster_info()))
            if method == b"POST":
                return self._post_gossip(request)
            return self._not_allowed(request, b"GET, POST")
        if path == b"/watchdog":
            if method in (b"GET", b"HEAD"):
                body = json.dumps({"nodes": self.watchdog_status()}, indent=2).encode()
                return self._json(request, body)
            return self._not_allowed(request, b"GET")
        if path == b"/ping" and method in (b"GET", b"HEAD"):
            return self._json(request, b'{"text": "Ping request successfully handled"}')
        request.setResponseCode(404, b"Not Found")
        return b""

    def _json(self, request: Any, body: bytes) -> bytes:
        request.responseHeaders.setRawHeaders(b"content-type", [_JSON])
        request.responseHeaders.setRawHeaders(b"cache-control", [_NO_CACHE])
        return body

    def _not_allowed(self, request: Any, allowed: bytes) -> bytes:
        request.responseHeaders.setRawHeaders(b"allow", [allowed])
        request.setResponseCode(405, b"Method Not Allowed")
        return b""

    def _post_gossip(self, request: Any) -> bytes:
        body = request.content.read() if request.content is not None else b""
        try:
            info = decode_cluster_info(body)
        except GossipFormatError as e:
            text = "".join(c if 32 <= ord(c) < 127 else "?" for c in str(e))[:200]
            request.setResponseCode(400, text.encode("ascii"))
            return b""
        reply = self.gossip.handle_gossip(info)
        if reply is None:
            request.setResponseCode(409, b"Clock difference too large")
            return b""
        return self._json(request, encode_cluster_info(reply))
