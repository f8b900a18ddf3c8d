# -*- test-case-name: estwisted.http.test.test_api -*-
"""
The external HTTP API (http-api.md): AtomPub/JSON over the same
L{StreamStore} the TCP protocol uses.

  - L{ROUTES}: the one route table (rule, method, handler, fixed
    arguments).  L{HttpApi} builds its Klein app from it, and
    L{ApiRoot} compiles the C{/streams/...} part of the same table into a
    per-segment index, so the hot routes skip Klein's per-request routing
    cost without a second, hand-written router;
  - L{HttpApi}: the resources (L{StreamRoutes}, L{SubscriptionRoutes},
    L{UserRoutes}, L{AdminRoutes}, L{ProjectionRoutes}, one module each)
    over the shared pipeline L{HttpBase};
  - L{ApiRoot}: the resource served under the C{Site}.

Every handler goes through L{HttpBase._run}, which maps errors to statuses
in one place (L{error_for}).  Credentials are checked once per request,
before routing (L{StreamStore.authenticate}); the route's level
(user/ops/admin, http-api.md 2.2) is checked by the handler, and stream
ACLs by the store.

Wiring: C{HttpApi(store, hub, persistent, clock, node_info).site()} gives a
ready C{Site} (body limit, no per-request access log, no HTML form
parsing); C{.resource()} gives the bare root resource.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Optional

from attrs import frozen
from klein import Klein
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from estwisted.http.admin import AdminRoutes
from estwisted.http.parsing import WEB_SEGMENTS, HttpError, sized
from estwisted.http.projections import ProjectionRoutes
from estwisted.http.site import QuietSite, finish, limited_request_factory
from estwisted.http.streams import StreamRoutes
from estwisted.http.subscriptions import SubscriptionRoutes
from estwisted.http.users import UserRoutes
from estwisted.web import is_web_path


@frozen
class Route:
    """
    One route: a Werkzeug rule, its method, the name of the L{HttpApi}
    handler method, and the arguments passed after the rule's parameters.
    """

    rule: str
    method: str
    handler: str
    fixed: tuple[object, ...] = ()

    @property
    def parameters(self) -> tuple[str, ...]:
        """
        The rule's parameter names, in order.
        """
        return tuple(re.findall(r"<(?:\w+:)?(\w+)>", self.rule))


#: The one route table of the HTTP API.
ROUTES: tuple[Route, ...] = (
    # streams
    Route("/streams/<stream>", "POST", "write_events"),
    Route("/streams/<stream>", "GET", "read_feed"),
    Route("/streams/<stream>", "DELETE", "delete_stream"),
    Route("/streams/<stream>/incoming/<guid>", "POST", "write_incoming"),
    Route("/streams/<stream>/metadata", "POST", "write_metadata"),
    Route("/streams/<stream>/metadata", "GET", "read_metadata"),
    Route("/streams/<stream>/metadata/<event>", "GET", "read_event", (True,)),
    Route("/streams/<stream>/metadata/<event>/<count>", "GET", "read_feed", ("backward", True)),
    Route("/streams/<stream>/metadata/<event>/<direction>/<count>", "GET", "_feed_dir", (True,)),
    Route("/streams/<stream>/<event>", "GET", "_event_or_all"),
    Route("/streams/<stream>/<event>/<count>", "GET", "read_feed", ("backward",)),
    Route("/streams/<stream>/<event>/<direction>/<count>", "GET", "_feed_dir", (False,)),
    # persistent subscriptions
    Route("/subscriptions", "GET", "list_subscriptions"),
    Route("/subscriptions/", "GET", "list_subscriptions"),
    Route("/subscriptions/<stream>", "GET", "list_subscriptions"),
    Route("/subscriptions/<stream>/<group>", "PUT", "create_subscription"),
    Route("/subscriptions/<stream>/<group>", "POST", "update_subscription"),
    Route("/subscriptions/<stream>/<group>", "DELETE", "delete_subscription"),
    Route("/subscriptions/<stream>/<group>", "GET", "subscription_messages"),
    Route("/subscriptions/<stream>/<group>/info", "GET", "subscription_info"),
    Route("/subscriptions/<stream>/<group>/replayParked", "POST", "replay_parked"),
    Route("/subscriptions/<stream>/<group>/ack", "POST", "ack_messages"),
    Route("/subscriptions/<stream>/<group>/nack", "POST", "nack_messages"),
    Route("/subscriptions/<stream>/<group>/ack/<event_id>", "POST", "ack_messages"),
    Route("/subscriptions/<stream>/<group>/nack/<event_id>", "POST", "nack_messages"),
    Route("/subscriptions/<stream>/<group>/<count>", "GET", "subscription_messages"),
    # users
    Route("/users", "GET", "list_users"),
    Route("/users/", "GET", "list_users"),
    Route("/users", "POST", "create_user"),
    Route("/users/", "POST", "create_user"),
    Route("/users/<login>", "GET", "get_user"),
    Route("/users/<login>", "PUT", "update_user"),
    Route("/users/<login>", "DELETE", "delete_user"),
    Route("/users/<login>/command/<command>", "POST", "user_command"),
    # operational
    Route("/ping", "GET", "ping"),
    Route("/info", "GET", "info"),
    Route("/stats", "GET", "stats"),
    Route("/stats/<path:path>", "GET", "stats"),
    Route("/gossip", "GET", "gossip"),
    Route("/admin/shutdown", "POST", "shutdown"),
    Route("/admin/reloadcertificates", "POST", "reload_certificates"),
    Route("/admin/scavenge", "POST", "scavenge"),
    Route("/admin/mergeindexes", "POST", "merge_indexes"),
    Route("/info/options", "GET", "info_options"),
    Route("/admin/scavenge/<scavenge_id>", "DELETE", "stop_scavenge"),
    # projections (issue 16): the standard projections' part of the v5 API
    Route("/projections/<kind>", "GET", "list_projections"),
    Route("/projection/<name>", "GET", "projection_part", ("",)),
    Route("/projection/<name>/<part>", "GET", "projection_part"),
    Route("/projection/<name>/command/<command>", "POST", "projection_command"),
    # user (JavaScript) projections
    Route("/projections/<mode>", "POST", "create_projection"),
    Route("/projection/<name>/query", "PUT", "update_query"),
    Route("/projection/<name>/config", "PUT", "update_config"),
    Route("/projection/<name>", "DELETE", "delete_projection"),
)


class HttpApi(StreamRoutes, SubscriptionRoutes, UserRoutes, AdminRoutes, ProjectionRoutes):
    """
    The HTTP API of one node: its resources over the shared pipeline
    (L{HttpBase}), routed by L{ROUTES}.

    @param store: the L{StreamStore}.
    @param hub: the volatile subscription hub (unused over HTTP; kept for
        symmetry with the TCP edge).
    @param persistent: the L{PersistentSubscriptions}.
    @param clock: timers for long polls and stats.
    @param node_info: addresses and hooks, see L{NodeInfo}.
    @param users: the L{estwisted.core.users.UserManager}; a new one over
        C{store} if C{None}.
    """

    @functools.cached_property
    def app(self) -> Klein:
        """
        Klein routing of every route in L{ROUTES}, built on first use.
        """
        app = Klein()
        for route in ROUTES:
            app.route(
                route.rule, methods=[route.method], endpoint=f"{route.method} {route.rule}"
            )(self._endpoint(route))
        app.handle_errors(Exception)(self._route_error)
        return app

    def _endpoint(self, route: Route) -> Callable[..., Any]:
        handler = getattr(self, route.handler)
        names = route.parameters
        fixed = route.fixed

        def serve(request: Any, **values: str) -> Any:
            return self._run(request, handler, *[values[n] for n in names], *fixed)

        return serve

    def resource(self) -> Resource:
        """
        The root resource to serve under a C{Site}.
        """
        return ApiRoot(self)

    def site(self) -> Site:
        """
        A C{Site} serving L{resource} whose requests refuse oversized bodies
        before buffering them.
        """
        site = QuietSite(  # type: ignore[no-untyped-call]
            self.resource(),
            requestFactory=limited_request_factory(self.node_info.max_body_size),
            # No route takes HTML form bodies; not checking for them saves a
            # Content-Type parse through the email package on every POST.
            parsePOSTFormSubmission=False,
        )
        site.displayTracebacks = False
        return site

    def _route_error(self, request: Any, failure: Failure) -> bytes:
        from werkzeug.exceptions import HTTPException

        self._cors(request)
        if failure.check(HTTPException):
            code = failure.value.code or 500  # type: ignore[union-attr]
            if code == 405:
                return self._reply_error(request, HttpError(405, "Method Not Allowed"))
            if code >= 500:
                code = 404
            return self._reply_error(request, HttpError(code, "Not Found"))
        return self._failed(request, failure)



class _SegmentIndex:
    """
    The routes of L{ROUTES} under one first segment, compiled for matching
    raw path segments without Klein: a static segment beats a parameter
    (as Werkzeug matches), parameters are never empty.
    """

    def __init__(self, api: HttpApi, prefix: str) -> None:
        shapes: dict[tuple[bytes, int], list[tuple[tuple[Optional[str], ...], Any, Route]]] = {}
        for route in ROUTES:
            parts = route.rule.strip("/").split("/")
            if parts[0] != prefix or any(":" in p for p in parts):
                continue
            pattern = tuple(None if p.startswith("<") else p for p in parts[1:])
            key = (route.method.encode("ascii"), len(pattern))
            shapes.setdefault(key, []).append((pattern, getattr(api, route.handler), route))
        for entries in shapes.values():
            # the most static segments first, earliest static segment first
            entries.sort(key=lambda e: [p is None for p in e[0]])
        self._shapes = shapes

    def match(
        self, method: bytes, segments: list[str]
    ) -> Optional[tuple[Route, Any, list[object]]]:
        """
        The route, its handler and the handler's arguments for a request, or
        C{None}.
        """
        for pattern, handler, route in self._shapes.get((method, len(segments)), ()):
            if all(p is None or p == s for p, s in zip(pattern, segments, strict=True)):
                values = [s for p, s in zip(pattern, segments, strict=True) if p is None]
                return route, handler, [*values, *route.fixed]
        return None


class ApiRoot(Resource):
    """
    The root resource: the C{/streams/...} routes go straight to their
    handlers through the compiled part of L{ROUTES} (skipping Klein's
    per-request routing cost); everything else goes through the Klein app
    built from the same table.
    """

    isLeaf = True

    def __init__(self, api: HttpApi) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._api = api
        self._klein = api.app.resource()
        self._streams = _SegmentIndex(api, "streams")

    def render(self, request: Any) -> Any:
        metrics = self._api.metrics
        if metrics is not None:
            request.notifyFinish().addBoth(metrics.http_request(request.method, request.path))
        return self._render(request)

    def _render(self, request: Any) -> Any:
        api = self._api
        path: bytes = request.path
        method: bytes = request.method
        # Wrong credentials are refused before routing, whatever the URL.
        try:
            request._estwisted_principal = api.authenticate(request)
        except Exception as e:
            api._cors(request)
            return sized(api._failed(request, Failure(e)), request)
        parts = path.split(b"/")
        # parts[0] is "" for "/streams/..."
        if len(parts) >= 3 and parts[1] == b"streams":
            if all(parts[2:]):
                result = self._fast(request, method, parts)
                if result is not None:
                    return finish(request, result)
            elif parts[-1] == b"" and all(parts[2:-1]) and method != b"OPTIONS":
                tail = parts[3:-1]
                if (not tail and method in (b"GET", b"POST", b"DELETE")) or (
                    tail == [b"metadata"] and method in (b"GET", b"POST")
                ):
                    return api._run(request, api._redirect_slash)
        if api.web is not None and parts[1] in WEB_SEGMENTS and is_web_path(path):
            # The admin UI and /metrics (estwisted.web): anonymous, as /stats.
            return api.web.render(request)
        if method == b"OPTIONS":
            return self._options(request)
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            api._cors(request)
            error = HttpError(400, "Invalid URL encoding.")
            return sized(api._reply_error(request, error), request)
        # Route on the raw segments (as Event Store does: an encoded "/"
        # stays inside its segment); handlers percent-decode parameters
        # exactly once.
        request.postpath = path[1:].split(b"/")
        return self._klein.render(request)

    def _fast(self, request: Any, method: bytes, parts: list[bytes]) -> Any:
        try:
            segments = [p.decode("utf-8") for p in parts[2:]]
        except UnicodeDecodeError:
            return None
        found = self._streams.match(method, segments)
        if found is None:
            return None
        _, handler, args = found
        return self._api._run(request, handler, *args)

    def _options(self, request: Any) -> bytes:
        """
        C{OPTIONS}: 200 with the CORS headers naming the methods of every
        route matching the URL; 404 when none does.
        """
        api = self._api
        try:
            path = request.path.decode("utf-8")
        except UnicodeDecodeError:
            path = ""
        methods: set[str] = set()
        if path:
            adapter = api.app.url_map.bind("localhost", path_info=path)
            try:
                methods = set(adapter.allowed_methods())
            except Exception:
                methods = set()
        methods.discard("HEAD")
        methods.discard("OPTIONS")
        if path.startswith("/streams/") and path.count("/") == 2:
            methods.update({"GET", "POST", "DELETE"})
        if not methods:
            api._cors(request)
            return api._reply_error(request, HttpError(404, "Not Found"))
        listed = ", ".join(sorted(methods)) + ", OPTIONS"
        api._cors(request, listed.encode("ascii"))
        request.setResponseCode(200, b"OK")
        return b""


