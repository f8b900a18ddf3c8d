# -*- test-case-name: estwisted.http.test.test_api -*-
"""
The C{Site} of the HTTP API: requests that refuse oversized bodies before
buffering them (L{LimitedRequest}), a site without a per-request access log
(L{QuietSite}), and finishing a request from a handler's result.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Optional, Union

from twisted.internet.defer import Deferred
from twisted.web.server import NOT_DONE_YET, Request, Site

from estwisted.http.parsing import DEFAULT_MAX_BODY


class LimitedRequest(Request):
    """
    A request that refuses a body larger than C{max_body} as soon as the
    headers announce it (or as soon as a chunked body exceeds it): the
    client gets 413 and the connection is closed; nothing is buffered and
    no resource is rendered.
    """

    max_body = DEFAULT_MAX_BODY
    _rejected = False
    _received = 0

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > self.max_body:
            self._reject()
            return
        if length is None or length <= 100_000:
            self.content = BytesIO()
        else:
            super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._reject()
            return
        content: Any = self.content
        content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._rejected:
            return
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _reject(self) -> None:
        self._rejected = True
        self.content = BytesIO()
        channel: Any = self.channel
        transport = channel.transport if channel is not None else None
        if transport is not None:
            transport.write(
                b"HTTP/1.1 413 Request body too large\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        if channel is not None:
            channel.loseConnection()


def limited_request_factory(max_body: int) -> type[LimitedRequest]:
    """
    A L{LimitedRequest} subclass with the given limit.
    """
    return type("LimitedRequest", (LimitedRequest,), {"max_body": max_body})


class QuietSite(Site):
    """
    A C{Site} that writes no access-log line per request (Event Store does
    not log every request either; at thousands of requests a second the
    lines cost more than the requests).
    """

    def log(self, request: Any) -> None:
        pass




def finish(request: Any, result: Union[bytes, Deferred[bytes]]) -> Any:
    if not isinstance(result, Deferred):
        return result

    def write(body: bytes) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        if body:
            request.write(body)
        request.finish()

    result.addCallback(write)
    request.notifyFinish().addErrback(lambda _: result.cancel())
    return NOT_DONE_YET

