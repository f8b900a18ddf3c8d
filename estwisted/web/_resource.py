# -*- test-case-name: estwisted.web.test.test_resource -*-
"""
A thin resource serving the UI's static files, the C{/} redirect,
C{/metrics} and C{/progress}.  The files are read once, when the resource is built.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Optional

from twisted.logger import Logger
from twisted.web.resource import Resource

#: File name to media type of everything served under C{/web/}.
STATIC_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

#: Headers on every UI file: no framing, nothing loaded from elsewhere.
_UI_HEADERS = {
    b"content-security-policy": (
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self' http: https:; frame-ancestors 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


def is_web_path(path: bytes) -> bool:
    """
    Whether L{WebResource} answers C{path} (C{/}, C{/web...}, C{/metrics},
    C{/progress}).
    """
    return (
        path in (b"/", b"/metrics", b"/progress", b"/web") or path.startswith(b"/web/")
    )


def _load_static() -> dict[str, bytes]:
    folder = resources.files("estwisted.web").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}


class WebResource(Resource):
    """
    Answers the paths L{is_web_path} accepts; the HTTP API's root resource
    hands those requests here.

    @param metrics: the node's L{estwisted.web.metrics.NodeMetrics}; C{None}
        answers C{/metrics} with 404.
    @param files: file name to content (defaults to the package's files).
    @param board: the L{estwisted.core.progress.ProgressBoard} of
        C{/progress} (defaults to the process's).
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self, metrics: Any = None, files: Optional[dict[str, bytes]] = None, board: Any = None
    ) -> None:
        from estwisted.core.progress import BOARD

        super().__init__()  # type: ignore[no-untyped-call]
        self.metrics = metrics
        self.files = files if files is not None else _load_static()
        self.board = board if board is not None else BOARD

    def render(self, request: Any) -> bytes:
        path: bytes = request.path
        method: bytes = request.method
        if method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self._reply(request, 405, b"Method Not Allowed", b"Method Not Allowed\n")
        if path == b"/":
            return self._redirect(request, b"/web/index.html")
        if path == b"/web":
            return self._redirect(request, b"/web/")
        if path == b"/metrics":
            return self._metrics(request)
        if path == b"/progress":
            return self._progress(request)
        name = path[len(b"/web/"):].decode("latin-1") or "index.html"
        body = self.files.get(name)
        media = STATIC_FILES.get(name)
        if body is None or media is None:
            return self._reply(request, 404, b"Not Found", b"Not Found\n")
        for header, value in _UI_HEADERS.items():
            request.setHeader(header, value)
        request.setHeader(b"content-type", media.encode("ascii"))
        return self._reply(request, 200, b"OK", body)

    def _metrics(self, request: Any) -> bytes:
        if self.metrics is None:
            return self._reply(request, 404, b"Not Found", b"Not Found\n")
        try:
            body = self.metrics.render()
        except Exception:
            self._log.failure("Rendering /metrics failed")
            return self._reply(request, 500, b"Internal Server Error", b"metrics unavailable\n")
        from estwisted.web.metrics import CONTENT_TYPE

        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-cache")
        return self._reply(request, 200, b"OK", body)

    def _progress(self, request: Any) -> bytes:
        """
        C{GET /progress}: long tasks running and recently finished
        (L{estwisted.core.progress}), as JSON.
        """
        body = json.dumps({"tasks": self.board.snapshot()}, allow_nan=False).encode() + b"\n"
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self._reply(request, 200, b"OK", body)

    def _redirect(self, request: Any, location: bytes) -> bytes:
        request.setHeader(b"location", location)
        return self._reply(request, 302, b"Found", b"")

    @staticmethod
    def _reply(request: Any, code: int, phrase: bytes, body: bytes) -> bytes:
        request.setResponseCode(code, phrase)
        if not request.responseHeaders.hasHeader(b"content-type"):
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
        if request.method == b"HEAD":
            return b""
        return body
