# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
HTTP writes (and persistent subscription requests) received by a
follower go to the leader (cluster.md 6.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from zope.interface import implementer

from estwisted.cluster.leadership import Leadership

_log = Logger()


FORWARDED_HEADER = b"x-estwisted-forwarded"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"content-length",
        b"host",
    }
)
_LOCAL_PREFIXES = (b"/gossip", b"/elections", b"/admin", b"/ping", b"/info")
#: Reads served by the leader only: persistent subscription groups run
#: there (a follower's copy would hand out what the leader's consumers
#: already acked).
_LEADER_ONLY_PREFIXES = (b"/subscriptions",)


@implementer(IResource)
class LeaderForwardingResource:
    """
    Wraps the HTTP API root (a leaf resource) of a cluster node: a write
    (any method but C{GET}/C{HEAD}/C{OPTIONS}) received while the node is a
    follower, and every persistent subscription request (their groups run
    on the leader), without C{ES-RequireMaster: True}, is sent to the leader's
    HTTP endpoint with the same method, path, query, headers and body, and
    answered as the leader answered (cluster.md 6.4), so a load balancer in
    front of every node works; when the leader cannot be reached the
    answer is C{307 Temporary Redirect} with the leader's C{Location}.
    Everything else is served locally.

    @param leader_http: returns the leader's external HTTP C{(host, port)}
        when this node follows a known leader, else C{None}.
    @param https_policy: in a TLS cluster, the node's peer policy
        (L{estwisted.tls.contexts.NodeTLS.https_policy}, the one gossip uses): the
        request goes to the leader over HTTPS and the leader's certificate
        is checked against the trusted roots and its SAN (issue 11 item 4).
        C{None}: plain HTTP.
    @param client: the treq L{HTTPClient} to send with (tests); by default
        one over L{estwisted.cluster.gossiphttp.PeerEndpointFactory}.
    """

    isLeaf = True

    def __init__(
        self,
        inner: Any,
        leader_http: Callable[[], Optional[tuple[str, int]]],
        reactor: Any,
        timeout: float = 10.0,
        https_policy: Optional[Any] = None,
        client: Optional[Any] = None,
    ) -> None:
        self.inner = inner
        self.leader_http = leader_http
        self.reactor = reactor
        self.timeout = timeout
        self.scheme = "https" if https_policy is not None else "http"
        if client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            from estwisted.cluster.gossiphttp import PeerEndpointFactory

            # a few kept-alive connections to the leader: forwarding does
            # not pay a (TLS) handshake per request
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 8
            pool.cachedConnectionTimeout = 30
            pool.retryAutomatically = False
            factory = PeerEndpointFactory(reactor, timeout, https_policy)
            client = HTTPClient(Agent.usingEndpointFactory(reactor, factory, pool=pool))
            self._pool: Optional[Any] = pool
        else:
            self._pool = None
        self.client = client

    def close(self) -> Deferred[None]:
        """
        Close the kept-alive connections to the leader.
        """
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()  # type: ignore[no-any-return]

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: bytes, child: Any) -> None:
        self.inner.putChild(path, child)

    def _should_forward(self, request: Any) -> Optional[tuple[str, int]]:
        if request.method in (b"GET", b"HEAD", b"OPTIONS") and not request.path.startswith(
            _LEADER_ONLY_PREFIXES
        ):
            return None
        if request.getHeader(FORWARDED_HEADER) is not None:
            return None
        if request.path.startswith(_LOCAL_PREFIXES):
            return None
        require = request.getHeader(b"es-requiremaster")
        if require is not None and require.strip().lower() == b"true":
            return None
        return self.leader_http()

    def render(self, request: Any) -> Any:
        target = self._should_forward(request)
        if target is None:
            return self.inner.render(request)
        return self._forward(request, target)

    def _forward(self, request: Any, target: tuple[str, int]) -> Any:
        import treq
        from twisted.web.server import NOT_DONE_YET

        host, port = target
        netloc = f"[{host}]" if ":" in host else host
        url = f"{self.scheme}://{netloc}:{port}{request.uri.decode('latin-1')}"
        from twisted.web.http_headers import Headers

        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                headers.setRawHeaders(name, list(values))
        forwarded_host = request.getHeader(b"host")
        if forwarded_host is not None:
            headers.setRawHeaders(b"X-Forwarded-Host", [forwarded_host])
        headers.setRawHeaders(FORWARDED_HEADER, [b"1"])
        body = request.content.read() if request.content is not None else b""
        d = self.client.request(
            request.method.decode("ascii"),
            url,
            headers=headers,
            data=body or None,
            timeout=self.timeout,
        )
        finished = {"done": False}
        request.notifyFinish().addBoth(lambda _: finished.update(done=True))

        def answered(response: Any) -> Any:
            def send(content: bytes) -> None:
                if finished["done"]:
                    return
                request.setResponseCode(response.code, response.phrase)
                for name, values in response.headers.getAllRawHeaders():
                    if name.lower() not in _HOP_BY_HOP:
                        request.responseHeaders.setRawHeaders(name, values)
                request.setHeader(b"content-length", str(len(content)).encode())
                request.write(content)
                request.finish()

            return treq.content(response).addCallback(send)

        def failed(failure: Failure) -> None:
            _log.info(
                "Forwarding {method} {path} to the leader failed: {reason}",
                method=request.method,
                path=request.path,
                reason=failure.getErrorMessage(),
            )
            if finished["done"]:
                return
            # the leader is known but we cannot reach it: send the client
            # there itself (as with ES-RequireMaster)
            request.setResponseCode(307, b"Temporary Redirect")
            request.setHeader(b"location", url.encode("latin-1"))
            request.setHeader(b"content-length", b"0")
            request.finish()

        d.addCallback(answered).addErrback(failed)
        return NOT_DONE_YET


def leader_http_of(leadership: Leadership) -> Callable[[], Optional[tuple[str, int]]]:
    """
    The leader's external HTTP endpoint while this node follows one, as the
    published leadership view tells it, for L{LeaderForwardingResource}.
    """

    def leader_http() -> Optional[tuple[str, int]]:
        return leadership.view.forward_http()

    return leader_http
