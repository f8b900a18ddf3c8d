# -*- test-case-name: estwisted.http.test.test_api -*-
"""
The request pipeline every resource of the HTTP API shares
(L{HttpBase}): running a handler with errors mapped to replies in one place,
timeouts, CORS, negotiation, authentication, base URLs, leader checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union
from urllib.parse import quote, unquote

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from estwisted.core.errors import (
    NotAuthenticated,
)
from estwisted.core.model import (
    EventRecord,
    Principal,
)
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.http.info import NodeInfo
from estwisted.http.parsing import (
    ALL_METHODS,
    CACHE_FOREVER,
    CORS_FIXED,
    CORS_RAW,
    FORMAT_PARAM,
    NO_CACHE,
    REQUEST_TIMEOUT,
    UNAUTHENTICATED,
    HttpError,
    basic_credentials,
    error_for,
    get_header,
    negotiate,
    parse_bool_header,
    parse_content_type,
    set_header,
    sized,
    unauthorized,
)
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.wire import atom

Handler = Callable[..., Union[bytes, Deferred[bytes]]]


class Waiters:
    """
    Long-poll waiters per stream (C{None} = any stream, for C{$all}),
    woken by the store's commit listener.
    """

    def __init__(self) -> None:
        self.by_stream: dict[Optional[str], list[Deferred[None]]] = {}

    def wait(self, stream: Optional[str]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.by_stream.setdefault(stream, []).append(d)
        return d

    def discard(self, stream: Optional[str], d: Deferred[None]) -> None:
        waiting = self.by_stream.get(stream)
        if waiting and d in waiting:
            waiting.remove(d)
            if not waiting:
                del self.by_stream[stream]

    def committed(self, records: Sequence[EventRecord]) -> None:
        if not self.by_stream:
            return
        woken: list[Deferred[None]] = []
        streams = {r.stream for r in records}
        for s in streams:
            woken.extend(self.by_stream.pop(s, ()))
        woken.extend(self.by_stream.pop(None, ()))
        for d in woken:
            if not d.called:
                d.callback(None)


def trusted_principal(header: str) -> Optional[Principal]:
    """
    The principal an C{ES-TrustedAuth} header names: C{"user"} or
    C{"user; group1, group2"} (Event Store v5's trusted intermediary
    format; the user's own name is one of its roles, as in v5).

    @return: C{None} when the header is malformed (more than one C{;}, or
        no user name): the request is refused with 401, as in v5.
    """
    parts = header.split(";")
    if len(parts) > 2:
        return None
    login = parts[0].strip()
    if not login:
        return None
    groups = parts[1].split(",") if len(parts) == 2 else []
    return Principal(login, frozenset(g.strip() for g in groups if g.strip()))


class HttpBase:
    """
    The request pipeline of the HTTP API, shared by its resources (each a
    subclass in its own module; L{estwisted.http.api.HttpApi} combines
    them).

    @param store: the L{StreamStore}.
    @param hub: the volatile subscription hub (unused over HTTP; kept for
        symmetry with the TCP edge).
    @param persistent: the L{PersistentSubscriptions}.
    @param clock: timers for long polls and stats.
    @param node_info: addresses and hooks, see L{NodeInfo}.
    @param users: the L{UserManager} that authenticates callers and
        serves C{/users}; a new one over C{store} if C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        store: StreamStore,
        hub: SubscriptionHub,
        persistent: PersistentSubscriptions,
        clock: IReactorTime,
        node_info: Optional[NodeInfo] = None,
        users: Optional[UserManager] = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.persistent = persistent
        self.clock = clock
        self.node_info = node_info or NodeInfo()
        self.users = users if users is not None else UserManager(store)
        self._waiters = Waiters()
        self._listening = False
        self._scavenges: dict[str, Any] = {}
        self._started = clock.seconds()
        self._negotiated: dict[tuple[Optional[str], tuple[str, ...]], Any] = {}
        self._entry_cache = atom.EntryCache()
        self._base_urls: dict[tuple[Any, ...], str] = {}
        self._pages: dict[tuple[Any, ...], tuple[bytes, bool, int]] = {}
        self._pages_bytes = 0
        #: Serves C{/}, C{/web/...} and C{/metrics} when set
        #: (L{estwisted.web.WebResource}).
        self.web: Optional[Resource] = None
        #: Times requests when set (L{estwisted.web.metrics.NodeMetrics}).
        self.metrics: Any = None

    # -- the request pipeline ------------------------------------------------

    def _run(self, request: Any, handler: Handler, *args: Any) -> Union[bytes, Deferred[bytes]]:
        """
        Run a handler, mapping every error to a reply; never raises.
        """
        self._cors(request)
        try:
            result = handler(request, *args)
        except BaseException as e:  # noqa: B036 - everything becomes a reply
            return sized(self._failed(request, Failure(e)), request)
        if isinstance(result, Deferred):
            seconds = getattr(request, "_estwisted_timeout", REQUEST_TIMEOUT)
            return (
                self._timed(request, result, seconds)
                .addErrback(lambda f: self._failed(request, f))
                .addCallback(sized, request)
            )
        return sized(result, request)

    def _timed(self, request: Any, d: Deferred[bytes], seconds: float) -> Deferred[bytes]:
        """
        Answer 408 when C{d} has not fired after C{seconds} (http-api.md
        1.2 step 8); C{d} is cancelled.
        """
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        call = self.clock.callLater(seconds, expire)

        def done(result: Any) -> Any:
            if call.active():
                call.cancel()
            if expired and isinstance(result, Failure) and result.check(CancelledError):
                raise HttpError(408, "Server was unable to handle request in time")
            return result

        return d.addBoth(done)

    def _failed(self, request: Any, failure: Failure) -> bytes:
        if failure.check(CancelledError):
            return b""
        error = error_for(failure.value)  # type: ignore[arg-type]
        if error is None:
            self._log.failure(
                "Error handling {method} {path}",
                failure,
                method=request.method,
                path=request.uri,
            )
            error = HttpError(500, "Internal Server Error")
        return self._reply_error(request, error)

    def _reply_error(self, request: Any, error: HttpError) -> bytes:
        reason = error.reason.replace("\r", " ").replace("\n", " ")
        request.setResponseCode(error.code, reason.encode("utf-8", "replace"))
        for name, value in error.headers.items():
            request.setHeader(name, value)
        if error.content_type is not None:
            set_header(request, b"content-type", error.content_type.encode() + b"; charset=utf-8")
        elif request.responseHeaders.hasHeader(b"content-type"):
            request.responseHeaders.removeHeader(b"content-type")
        return error.body

    def _cors(self, request: Any, methods: bytes = ALL_METHODS) -> None:
        raw = getattr(request.responseHeaders, "_rawHeaders", None)
        if raw is not None and methods is ALL_METHODS:
            # The value lists are shared constants: nothing appends to
            # these headers.
            raw.update(CORS_RAW)
            return
        set_header(request, b"access-control-allow-methods", methods)
        for name, value in CORS_FIXED:
            set_header(request, name, value)

    @staticmethod
    def _header(request: Any, name: bytes) -> Optional[str]:
        return get_header(request, name)

    @staticmethod
    def _query(request: Any, name: bytes) -> Optional[str]:
        values = request.args.get(name) if request.args else None
        if not values:
            return None
        return values[0].decode("utf-8", "replace")  # type: ignore[no-any-return]

    def _negotiate(
        self, request: Any, offered: tuple[str, ...]
    ) -> tuple[str, bool, bool]:
        """
        @return: C{(media type, explicitly requested, an Accept was sent)}.
        @raise HttpError: 406 when nothing offered is acceptable.
        """
        fmt = self._query(request, b"format")
        if fmt is not None:
            chosen = FORMAT_PARAM.get(fmt.lower())
            if chosen is None:
                raise HttpError(400, f"Unknown format: {fmt}")
            if chosen not in offered:
                raise HttpError(406, "Requested URI is not available in requested format")
            return chosen, True, True
        accept = self._header(request, b"accept")
        key = (accept, offered)
        cached: Any = self._negotiated.get(key)
        if cached is None:
            cached = negotiate(accept, offered) or False
            if len(self._negotiated) < 1000:
                self._negotiated[key] = cached
        if cached is False:
            raise HttpError(406, "Requested URI is not available in requested format")
        return cached[0], cached[1], accept is not None

    def _body_type(self, request: Any, accepted: tuple[str, ...]) -> str:
        media = parse_content_type(self._header(request, b"content-type"))
        if media is None or media not in accepted:
            raise HttpError(415, "Invalid or missing Content-Type")
        return media

    def authenticate(self, request: Any) -> Optional[Principal]:
        """
        The request's principal (C{None}: anonymous) from Basic credentials,
        checked by the store, or else, with C{EnableTrustedAuth}, from the
        C{ES-TrustedAuth} header a trusted intermediary set (as Event Store
        v5: Basic first, then the trusted header, then anonymous).  Without
        the option the header is ignored.

        @raise HttpError: 401 for wrong or malformed credentials.
        """
        auth = self._header(request, b"authorization")
        if auth is not None:
            login, password = basic_credentials(auth)
            try:
                return self.users.authenticate(login, password)
            except NotAuthenticated:
                raise unauthorized() from None
        if self.node_info.enable_trusted_auth:
            trusted = self._header(request, b"es-trustedauth")
            if trusted:
                principal = trusted_principal(trusted)
                if principal is None:
                    raise unauthorized()
                return principal
        return None

    def _cache_control(self, value: bytes) -> bytes:
        """
        C{value}, or C{no-cache} when C{DisableHttpCaching} is set (Event
        Store v5 then sends C{max-age=0, no-cache, must-revalidate} on every
        response that would be cacheable).
        """
        return NO_CACHE if self.node_info.disable_http_caching else value

    def _principal(self, request: Any, level: str = "user") -> Optional[Principal]:
        """
        Authenticate the request and check the route's level (http-api.md
        2.2): C{none}, C{user}, C{ops} or C{admin}.
        """
        principal = getattr(request, "_estwisted_principal", UNAUTHENTICATED)
        if principal is UNAUTHENTICATED:
            principal = self.authenticate(request)
        if not self.node_info.first_level_auth or level == "none":
            return principal  # type: ignore[no-any-return]
        if principal is None:
            raise unauthorized()
        if level == "ops" and not principal.is_ops:
            raise unauthorized()
        if level == "admin" and not principal.is_admin:
            raise unauthorized()
        return principal  # type: ignore[no-any-return]

    def base_url(self, request: Any) -> str:
        """
        Scheme, host and port for URLs in bodies, honouring the advertised
        address and C{X-Forwarded-*} (http-api.md 1.5).
        """
        key = (
            request.isSecure(),
            self._header(request, b"host"),
            self._header(request, b"x-forwarded-proto"),
            self._header(request, b"x-forwarded-host"),
            self._header(request, b"x-forwarded-port"),
            self._header(request, b"x-forwarded-prefix"),
        )
        cached = self._base_urls.get(key)
        if cached is None:
            cached = self._compute_base_url(*key)
            if len(self._base_urls) >= 1000:
                self._base_urls.clear()
            self._base_urls[key] = cached
        return cached

    def _compute_base_url(
        self,
        secure: bool,
        host: Optional[str],
        fproto: Optional[str],
        fhost: Optional[str],
        fport: Optional[str],
        prefix: Optional[str],
    ) -> str:
        scheme = "https" if secure else "http"
        info = self.node_info
        if info.advertise_host:
            port = info.advertise_port or info.ext_http_port
            host = f"{info.advertise_host}:{port}"
        if not host:
            host = f"{info.ext_ip}:{info.ext_http_port}"
        if fproto:
            scheme = fproto.split(",")[0].strip() or scheme
        if scheme not in ("http", "https"):
            scheme = "http"
        if fhost:
            host = fhost.split(",")[0].strip() or host
        if fport and fport.strip().isdigit():
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            host = f"{host}:{fport.strip()}"
        prefix = (prefix or "").strip("/")
        prefix = "/" + quote(prefix, safe="/-._~") if prefix else ""
        host = "".join(
            c for c in host if c.isascii() and c.isprintable() and c not in '<>"\\ /'
        )
        return f"{scheme}://{host}{prefix}"

    def _urls(self, request: Any) -> atom.Urls:
        return atom.Urls(self.base_url(request))

    @staticmethod
    def _stream_name(raw: str) -> str:
        try:
            name = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            raise HttpError(400, "Invalid stream name encoding.") from None
        if not name:
            raise HttpError(400, "Invalid request. Stream must be non-empty string")
        return name

    @staticmethod
    def _ok(
        request: Any,
        body: bytes,
        media_type: Optional[str],
        code: int = 200,
        reason: bytes = b"OK",
    ) -> bytes:
        request.setResponseCode(code, reason)
        if media_type is not None:
            set_header(request, b"content-type", media_type.encode() + b"; charset=utf-8")
        return body

    def _require_master(self, request: Any, always: bool = False) -> None:
        """
        C{ES-RequireMaster: True} on a node that is not the master: 307 to
        the same URL on the master's external HTTP address, 503 when no
        master is known (http-api.md 12).

        @param always: the request is served by the leader only, whatever
            its header says (persistent subscriptions: a follower's groups
            are not the ones consumers ack to; the HTTP edge forwards such
            requests, so this answers only what could not be forwarded).
        """
        required = always or parse_bool_header(
            self._header(request, b"es-requiremaster"), "ES-RequireMaster", False
        )
        leadership = self.node_info.leadership
        if not required or leadership is None:
            return
        view = leadership.view
        if view.takes_writes:
            return
        master = view.leader_external_http
        if master is None:
            raise HttpError(503, "Server Is Not Ready")
        host, port = master.host, master.port
        scheme = "https" if request.isSecure() else "http"
        location = f"{scheme}://{host}:{port}{request.uri.decode('ascii', 'replace')}"
        raise HttpError(307, "Temporary Redirect", {"Location": location})

    def _state(self) -> str:
        if self.node_info.leadership is not None:
            return self.node_info.leadership.view.v5_state
        return self.node_info.state

    def _resolve_links(self, request: Any) -> bool:
        return parse_bool_header(
            self._header(request, b"es-resolvelinktos"), "ES-ResolveLinkTos", True
        )

    def _redirect_slash(self, request: Any) -> bytes:
        path = request.path.rstrip(b"/")
        request.setResponseCode(307, b"Moved Permanently")
        set_header(request, b"location", path or b"/")
        set_header(request, b"cache-control", self._cache_control(CACHE_FOREVER))
        return b""

