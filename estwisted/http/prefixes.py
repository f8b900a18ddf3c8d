# -*- test-case-name: estwisted.http.test.test_v5_options -*-
"""
C{ExtHttpPrefixes} / C{IntHttpPrefixes}: the host names and paths an HTTP
listener answers.

In Event Store v5 these were HttpListener prefixes (C{http://*:2113/},
C{http://node1.example:2113/es/}): the listener answered only requests
whose C{Host} and path matched one, and always added its interface
prefixes (C{http://<ip>:<port>/}, C{http://localhost:<port>/} on a
loopback address, C{http://*:<port>/} on 0.0.0.0).  A Twisted listener is
bound to its address and port already, so here a prefix keeps its other
two meanings:

  - the C{Host} names accepted: when the option lists prefixes, a request
    whose C{Host} matches no prefix nor an interface prefix is refused
    with 400 ("Invalid Hostname", as http.sys answers); C{*} and C{+}
    accept any host;
  - a path below which the API is also served: C{http://*:2113/es/} serves
    C{/es/streams/foo} as C{/streams/foo}, and the URLs in its bodies
    carry C{/es} (as with C{X-Forwarded-Prefix}).

A prefix must name the listener's own port (checked when the
configuration loads).  With no prefixes configured nothing is checked
(every C{Host} is answered, as before).  The gRPC API shares the external
port but is HTTP/2, sniffed before this resource: prefixes do not apply
to it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Optional, Union

from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Site

from estwisted.node.config import NodeConfig
from estwisted.node.options import HttpPrefix, parse_http_prefix

#: Answer when no prefix names the request's host.
BAD_HOST = (400, b"Bad Request - Invalid Hostname")
#: Answer when a prefix names the host but none covers the path.
NO_PATH = (404, b"Not Found")


def interface_prefixes(ip: str, port: int) -> list[HttpPrefix]:
    """
    The prefixes a listener on C{ip:port} always answers (as v5 adds them):
    its address, C{localhost} on a loopback address, any host on an
    unspecified one; for both schemes (the listener decides TLS).
    """
    import ipaddress

    address = ipaddress.ip_address(ip)
    hosts: list[Optional[str]] = []
    if address.is_unspecified:
        hosts.append(None)
    else:
        hosts.append(str(address))
        if address.is_loopback:
            hosts.append("localhost")
    return [HttpPrefix(scheme, host, port, "/") for host in hosts for scheme in ("http", "https")]


def request_host(host_header: Optional[str]) -> Optional[str]:
    """
    The host part of a C{Host} header, lower case, without port or IPv6
    brackets; C{None} when there is none.
    """
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        inside, bracket, _ = host[1:].partition("]")
        return inside if bracket else None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host or None


def match_prefix(
    prefixes: Sequence[HttpPrefix],
    secure: bool,
    host: Optional[str],
    port: int,
    path: bytes,
) -> Union[HttpPrefix, tuple[int, bytes]]:
    """
    The prefix that serves a request, or the refusal (C{(code, phrase)}).

    A prefix matches when its scheme is the request's, its port the
    listener's, its host the request's host (or a wildcard) and its path
    covers the request path (C{/es} is covered by C{/es/}).  The longest
    path wins; among equal paths a named host beats a wildcard.

    @param host: the request's host (L{request_host}); C{None} matches only
        wildcards.
    """
    scheme = "https" if secure else "http"
    text = path.decode("utf-8", "replace")
    host_matched = False
    best: Optional[HttpPrefix] = None
    for prefix in prefixes:
        if prefix.scheme != scheme or prefix.port != port:
            continue
        if prefix.host is not None and prefix.host != host:
            continue
        host_matched = True
        if not (text.startswith(prefix.path) or text + "/" == prefix.path):
            continue
        if (
            best is None
            or len(prefix.path) > len(best.path)
            or (len(prefix.path) == len(best.path) and best.host is None)
        ):
            best = prefix
    if best is not None:
        return best
    return NO_PATH if host_matched else BAD_HOST


class PrefixedResource(Resource):
    """
    Serve C{inner} only for requests an L{HttpPrefix} matches, below the
    prefix's path.
    """

    isLeaf = True

    def __init__(self, inner: Resource, prefixes: Sequence[HttpPrefix]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner = inner
        self.prefixes = tuple(prefixes)

    def render(self, request: Any) -> Any:
        host_header = request.getHeader(b"host")
        host = request_host(host_header.decode("latin-1") if host_header else None)
        port = request.getHost().port
        found = match_prefix(self.prefixes, request.isSecure(), host, port, request.path)
        if not isinstance(found, HttpPrefix):
            code, phrase = found
            request.setResponseCode(code, phrase)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            body = phrase + b"\n"
            request.setHeader(b"content-length", str(len(body)).encode("ascii"))
            return body
        if found.path != "/":
            self._strip(request, found.path.rstrip("/").encode("utf-8"))
        return getChildForRequest(self.inner, request).render(request)

    @staticmethod
    def _strip(request: Any, below: bytes) -> None:
        """
        Serve the request as if its path did not start with C{below}; the
        URLs in bodies keep it (through C{X-Forwarded-Prefix}).
        """
        from urllib.parse import unquote_to_bytes

        path = request.path[len(below):] or b"/"
        request.path = path
        request.uri = request.uri[len(below):] or b"/"
        request.prepath = []
        request.postpath = [unquote_to_bytes(p) for p in path[1:].split(b"/")]
        outer = request.getHeader(b"x-forwarded-prefix")
        combined = (outer.rstrip(b"/") if outer else b"") + below
        request.requestHeaders.setRawHeaders(b"x-forwarded-prefix", [combined])


def prefixes_for(configured: Sequence[str], ip: str, port: int) -> list[HttpPrefix]:
    """
    The configured prefixes (already checked by the configuration) plus the
    listener's interface prefixes; empty when none is configured.
    """
    if not configured:
        return []
    return [parse_http_prefix(text) for text in configured] + interface_prefixes(ip, port)


def prefixed_site(site: IProtocolFactory, prefixes: Sequence[HttpPrefix]) -> IProtocolFactory:
    """
    A C{Site} like C{site} (same request factory and settings) whose root
    answers only what C{prefixes} match; C{site} itself when there are none.

    @raise TypeError: C{site} is not a C{Site} but prefixes are asked for.
    """
    if not prefixes:
        return site
    if not isinstance(site, Site):
        raise TypeError(f"HTTP prefixes need a twisted.web Site, not {site!r}")
    wrapped = copy.copy(site)
    wrapped.resource = PrefixedResource(site.resource, prefixes)
    return wrapped


def prefixed_sites(
    config: NodeConfig, site: IProtocolFactory, int_site: IProtocolFactory
) -> tuple[IProtocolFactory, IProtocolFactory]:
    """
    The external and internal sites with C{ExtHttpPrefixes} and
    C{IntHttpPrefixes} applied (the node's wiring calls this once).
    """
    ext = prefixes_for(config.ext_http_prefixes, config.ext_ip, config.ext_http_port)
    internal = prefixes_for(config.int_http_prefixes, config.int_ip, config.int_http_port)
    return prefixed_site(site, ext), prefixed_site(int_site, internal)
