# -*- test-case-name: estwisted.cluster.test.test_gossiphttp -*-
"""
Gossip and elections over HTTP (http-api.md section 11): the client that
posts to peers' internal HTTP endpoints, and the resource that serves
C{/gossip} and C{/elections/*} in front of the HTTP API.

  - L{HttpPeerTransport}: a treq L{HTTPClient} over an injected agent;
    C{POST /gossip} with our table (answer: the peer's merged table),
    C{POST /elections/<route>} with an election message (answer ignored).
    A refused connection fails with L{estwisted.cluster.controller.PeerRefusedError}.
  - L{ClusterResource}: wraps the HTTP API root.  C{GET /gossip} (and
    C{?format=json}) answers the member table whatever the C{Host} header
    says (the addresses in it are the advertised ones, never taken from
    the request); on the internal port it also takes C{POST /gossip} and
    C{POST /elections/...}.  Every other request goes to the wrapped root.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Site
from zope.interface import implementer

from estwisted.cluster.controller import ClusterController, IPeerTransport, PeerRefusedError
from estwisted.cluster.elections import ROUTES, Message, decode_message, encode_message
from estwisted.cluster.gossip import (
    ClusterInfo,
    Endpoint,
    GossipFormatError,
    cluster_to_json,
    decode_cluster_info,
    encode_cluster_info,
)
from estwisted.wire import atom

#: v5's HTTP timeout of election posts.
ELECTION_TIMEOUT = 2.0

#: v5 names of the resignation routes (we also answer these).
_ROUTE_ALIASES = {
    "masterisresigning": "leaderisresigning",
    "masterisresigningok": "leaderisresigningok",
}
_ELECTION_ROUTES = frozenset(ROUTES.values()) | frozenset(_ROUTE_ALIASES)
_NO_CACHE = b"max-age=0, no-cache, must-revalidate"
_JSON = b"application/json; charset=utf-8"


class PeerError(Exception):
    """
    A peer answered, but not with what we asked for (status, body).
    """


def _url(scheme: str, target: Endpoint, path: str) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{scheme}://{host}:{target.port}{path}"


@implementer(IPeerTransport)
class HttpPeerTransport:
    """
    Gossip and election posts over HTTP(S) with treq.

    @ivar client: a C{treq} L{HTTPClient} (or L{treq.testing.StubTreq}).
    @ivar timeout: seconds for a gossip request (C{GossipTimeoutMs}).
    """

    def __init__(
        self,
        client: Any,
        timeout: float,
        scheme: str = "http",
        election_timeout: float = ELECTION_TIMEOUT,
        pool: Optional[HTTPConnectionPool] = None,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.scheme = scheme
        self.election_timeout = election_timeout
        self.clock = clock
        self._pool = pool

    @classmethod
    def create(
        cls,
        reactor: Any,
        timeout: float,
        https_policy: Optional[IPolicyForHTTPS] = None,
    ) -> HttpPeerTransport:
        """
        A transport on C{reactor} with a small persistent connection pool;
        HTTPS with C{https_policy} when given.
        """
        from treq.client import HTTPClient

        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 2
        pool.cachedConnectionTimeout = 30
        pool.retryAutomatically = False
        factory = PeerEndpointFactory(reactor, max(timeout, 0.1), https_policy)
        agent = Agent.usingEndpointFactory(reactor, factory, pool=pool)
        scheme = "https" if https_policy is not None else "http"
        return cls(HTTPClient(agent), timeout, scheme, pool=pool, clock=reactor)

    async def _post(self, target: Endpoint, path: str, body: bytes, timeout: float) -> bytes:
        kwargs: dict[str, Any] = {"timeout": timeout}
        if self.clock is not None:
            kwargs["reactor"] = self.clock
        try:
            response = await self.client.post(
                _url(self.scheme, target, path),
                data=body,
                headers={b"Content-Type": [b"application/json"], b"Accept": [b"application/json"]},
                **kwargs,
            )
        except ConnectionRefusedError as e:
            raise PeerRefusedError(f"connection to {target} refused") from e
        content = await response.content()
        if response.code != 200:
            phrase = getattr(response, "phrase", b"") or b""
            raise PeerError(
                f"{target} answered {response.code} {phrase.decode('latin-1', 'replace')}"
            )
        return bytes(content)

    def post_gossip(self, target: Endpoint, info: ClusterInfo) -> Deferred[ClusterInfo]:
        async def go() -> ClusterInfo:
            body = await self._post(target, "/gossip", encode_cluster_info(info), self.timeout)
            try:
                return decode_cluster_info(body)
            except GossipFormatError as e:
                raise PeerError(f"{target} sent an unreadable gossip answer: {e}") from e

        return Deferred.fromCoroutine(go())

    def post_election(self, target: Endpoint, message: Message) -> Deferred[None]:
        route, body = encode_message(message)

        async def go() -> None:
            await self._post(target, "/elections/" + route, body, self.election_timeout)

        return Deferred.fromCoroutine(go())

    def close(self) -> Deferred[None]:
        """
        Close the cached connections.
        """
        if self._pool is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        return self._pool.closeCachedConnections()  # type: ignore[no-any-return]


@implementer(IAgentEndpointFactory)
class PeerEndpointFactory:
    """
    Endpoints for the agent: a plain TCP endpoint for an IP address (a
    refused connection fails at once, where C{HostnameEndpoint} would wait
    for its next attempt, 0.3 s later), TLS around it for C{https}.
    """

    def __init__(
        self, reactor: Any, timeout: float, https_policy: Optional[IPolicyForHTTPS] = None
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.https_policy = https_policy

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else uri.host
        endpoint: IStreamClientEndpoint
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            endpoint = HostnameEndpoint(self.reactor, host, uri.port, timeout=self.timeout)
        else:
            kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
            endpoint = kind(self.reactor, host, uri.port, timeout=self.timeout)
        if uri.scheme == b"https" and self.https_policy is not None:
            creator = self.https_policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


def _set(request: Any, name: bytes, value: bytes) -> None:
    request.responseHeaders.setRawHeaders(name, [value])


def _wants_xml(request: Any) -> bool:
    fmt = (request.args or {}).get(b"format")
    if fmt:
        return bool(fmt[0].lower() == b"xml")
    accept = (request.getHeader(b"accept") or b"").lower()
    first = accept.split(b",")[0].split(b";")[0].strip()
    return first in (b"application/xml", b"text/xml")


class ClusterResource(Resource):
    """
    C{/gossip} and C{/elections/*} in front of C{inner} (see the module
    docstring).

    @param internal: this is the internal HTTP port (gossip POST and
        elections are served only there).
    @param gossip: serve C{GET /gossip} (C{GossipOnExt} on the external
        port); when off C{/gossip} is 404.
    """

    isLeaf = True

    def __init__(
        self,
        inner: IResource,
        controller: ClusterController,
        internal: bool,
        gossip: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner = inner
        self.controller = controller
        self.internal = internal
        self.gossip = gossip or internal

    def render(self, request: Any) -> Any:
        path: bytes = request.path
        method: bytes = request.method
        if path in (b"/gossip", b"/gossip/") and method != b"OPTIONS":
            if not self.gossip:
                # GossipOnExt off: not served here (the API's own single-node
                # answer would be wrong for a cluster).
                return self._reply(request, 404, b"Not Found")
            if method in (b"GET", b"HEAD"):
                return self._get_gossip(request)
            if method == b"POST" and self.internal:
                return self._post_gossip(request)
            allowed = b"GET, POST" if self.internal else b"GET"
            _set(request, b"allow", allowed)
            request.setResponseCode(405, b"Method Not Allowed")
            return b""
        if self.internal and path.startswith(b"/elections/") and method == b"POST":
            return self._post_election(request, path[len(b"/elections/") :])
        return self._delegate(request)

    def _delegate(self, request: Any) -> Any:
        inner = self.inner
        if getattr(inner, "isLeaf", False):
            return inner.render(request)
        return getChildForRequest(inner, request).render(request)

    def _reply(self, request: Any, code: int, phrase: bytes, body: bytes = b"") -> bytes:
        request.setResponseCode(code, phrase)
        _set(request, b"access-control-allow-origin", b"*")
        return body

    def _get_gossip(self, request: Any) -> bytes:
        info = self.controller.cluster_info()
        _set(request, b"cache-control", _NO_CACHE)
        if _wants_xml(request):
            doc = cluster_to_json(info)
            members = "".join(atom.json_to_xml("MemberInfoDto", m) for m in doc["members"])
            xml = (
                f"<ClusterInfoDto><members>{members}</members>"
                f"<serverIp>{doc['serverIp']}</serverIp>"
                f"<serverPort>{doc['serverPort']}</serverPort></ClusterInfoDto>"
            )
            _set(request, b"content-type", b"application/xml; charset=utf-8")
            return self._reply(request, 200, b"OK", atom.xml_document(xml))
        _set(request, b"content-type", _JSON)
        return self._reply(request, 200, b"OK", encode_cluster_info(info))

    def _post_gossip(self, request: Any) -> bytes:
        body = request.content.read() if request.content is not None else b""
        try:
            info = decode_cluster_info(body)
        except GossipFormatError as e:
            return self._reply(request, 400, _phrase(str(e)))
        reply = self.controller.handle_gossip(info)
        if reply is None:
            return self._reply(request, 409, b"Clock difference too large")
        _set(request, b"content-type", _JSON)
        _set(request, b"cache-control", _NO_CACHE)
        return self._reply(request, 200, b"OK", encode_cluster_info(reply))

    def _post_election(self, request: Any, route_bytes: bytes) -> Any:
        route = route_bytes.decode("ascii", "replace").strip("/").lower()
        if route not in _ELECTION_ROUTES:
            return self._delegate(request)
        route = _ROUTE_ALIASES.get(route, route)
        body = request.content.read() if request.content is not None else b""
        try:
            message = decode_message(route, body)
        except GossipFormatError as e:
            return self._reply(request, 400, _phrase(str(e)))
        self.controller.handle_election(message)
        return self._reply(request, 200, b"OK")


class ClusterSite(Site):
    """
    A C{Site} that writes no access-log line for gossip and election
    requests (several a second on every node) but logs the others as a
    plain C{Site} does.
    """

    displayTracebacks = False

    def log(self, request: Any) -> None:
        path = getattr(request, "path", b"") or b""
        if path.startswith(b"/gossip") or path.startswith(b"/elections/"):
            return
        super().log(request)


def _phrase(text: str) -> bytes:
    """
    A reason phrase: one line of printable ASCII.
    """
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean[:200].encode("ascii")


__all__ = ["ClusterResource", "ClusterSite", "HttpPeerTransport", "PeerError"]
