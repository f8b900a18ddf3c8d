# -*- test-case-name: estwisted.test.test_httpapi -*-
"""
The external HTTP API (http-api.md): AtomPub/JSON over the same
L{StreamStore} the TCP protocol uses.

Layout:

  - pure helpers at the top: content negotiation, header parsing, write-body
    parsing (no Twisted);
  - L{HttpApi}: holds the store, persistent subscriptions, users, clock and
    L{NodeInfo}; its Klein C{app} (a class attribute) routes every request
    to a handler method;
  - L{ApiRoot}: the resource served under C{Site}; it sends the hot routes
    (appends, single-event and feed reads of C{/streams/...}) straight to the
    handlers and everything else through Klein;
  - L{LimitedRequest}: a request class that refuses bodies over the limit
    from the C{Content-Length} header (or while a chunked body arrives),
    before anything is buffered.  L{HttpApi.site} builds a C{Site} with it.

Every handler goes through L{HttpApi._run}, which maps errors to statuses in
one place (L{error_for}): expected errors become 4xx/5xx replies with the
reason in the status line, anything else is logged and answered with 500.
Credentials are checked once per request, before routing, by the store
(L{StreamStore.authenticate}); the route's level (user/ops/admin,
http-api.md 2.2) is checked by the handler, and stream ACLs by the store.

Long polls hang off the store's commit listener and the injected clock.
Replies always carry Content-Length; bodies of 1 KiB or more are gzipped for
clients that accept it.

Wiring: C{HttpApi(store, hub, persistent, clock, node_info).site()} gives a
ready C{Site} (body limit, no per-request access log, no HTML form
parsing); C{.resource()} gives the bare root resource.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any, Optional, Union
from urllib.parse import quote, unquote
from xml.etree import ElementTree

import attrs
from attrs import field, frozen
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from estwisted import atom
from estwisted.errors import (
    AccessDenied,
    AlreadyExists,
    BadRequest,
    CommitTimeout,
    DiskFull,
    InvalidTransaction,
    NotAuthenticated,
    NotFound,
    NotReady,
    OperationError,
    StorageError,
    StreamDeleted,
    WrongExpectedVersion,
)
from estwisted.leadership import Leadership
from estwisted.model import (
    DELETED_STREAM,
    MAX_READ_COUNT,
    EventRecord,
    NewEvent,
    Principal,
    ReadStatus,
    ResolvedEvent,
)
from estwisted.web import is_web_path

#: Largest request body accepted (bytes); larger ones get 413 before they
#: are read.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
#: Largest event (data + metadata) accepted.
MAX_HTTP_EVENT_SIZE = 4 * 1024 * 1024
#: Bytes of rendered feed pages kept (the cache is emptied when full).
PAGE_CACHE_BYTES = 32 * 1024 * 1024
#: Seconds a request may take before it is answered with 408.
REQUEST_TIMEOUT = 10.0
#: Longest long poll honoured, in seconds.
MAX_LONG_POLL = 3600

ES_VERSION = "5.0.9.0"

# -- media type lists per route (http-api.md 1.3) ------------------------------

WRITE_TYPES: tuple[str, ...] = (
    atom.STREAMDESC_JSON,
    atom.ATOM_XML,
    atom.ATOM_JSON,
    atom.TEXT_XML,
    atom.APP_XML,
    atom.JSON,
    atom.EVENT_XML,
    atom.EVENT_JSON,
    atom.EVENTS_XML,
    atom.EVENTS_JSON,
    atom.OCTET_STREAM,
)
INCOMING_TYPES: tuple[str, ...] = (
    atom.ATOM_XML,
    atom.ATOM_JSON,
    atom.TEXT_XML,
    atom.APP_XML,
    atom.JSON,
)
FEED_TYPES: tuple[str, ...] = (
    atom.STREAMDESC_JSON,
    atom.ATOM_XML,
    atom.ATOM_JSON,
    atom.TEXT_XML,
    atom.APP_XML,
    atom.JSON,
    atom.EVENT_XML,
    atom.EVENT_JSON,
    atom.EVENTS_XML,
    atom.EVENTS_JSON,
    atom.TEXT_HTML,
)
EVENT_TYPES: tuple[str, ...] = (
    atom.ATOM_XML,
    atom.ATOM_JSON,
    atom.TEXT_XML,
    atom.APP_XML,
    atom.JSON,
    atom.EVENT_XML,
    atom.EVENT_JSON,
    atom.OCTET_STREAM,
    atom.TEXT_HTML,
)
JSON_ONLY: tuple[str, ...] = (atom.JSON,)
SIMPLE_TYPES: tuple[str, ...] = (atom.JSON, atom.TEXT_XML, atom.APP_XML, atom.TEXT_PLAIN)
GOSSIP_TYPES: tuple[str, ...] = (atom.JSON, atom.APP_XML, atom.TEXT_XML, atom.TEXT_PLAIN)
COMPETING_TYPES: tuple[str, ...] = (atom.COMPETING_JSON, atom.COMPETING_XML)
USER_BODY_TYPES: tuple[str, ...] = (atom.JSON, atom.TEXT_XML)

#: Request types whose body carries event ids (no redirect needed).
_ARRAY_JSON = frozenset({atom.EVENTS_JSON, atom.EVENT_JSON})
_ARRAY_XML = frozenset({atom.EVENTS_XML, atom.EVENT_XML})
#: Request types whose body is one raw event.
_RAW_JSON = frozenset({atom.JSON})
_RAW_OTHER = frozenset({atom.TEXT_XML, atom.APP_XML, atom.OCTET_STREAM})
#: Types that carry neither ids nor types in v5's eyes.
_NO_ID_TYPES = frozenset(
    {atom.JSON, atom.TEXT_XML, atom.APP_XML, atom.OCTET_STREAM, atom.ATOM_XML, atom.ATOM_JSON}
)

_FORMAT_PARAM = {
    "json": atom.JSON,
    "text": atom.TEXT_PLAIN,
    "xml": atom.TEXT_XML,
    "atom": atom.ATOM_XML,
    "atomxj": atom.ATOM_JSON,
    "atomsvc": "application/atomsvc+xml",
    "atomsvcxj": "application/vnd.eventstore.atomsvc+json",
}

_CORS_HEADERS = (
    b"Content-Type, X-Requested-With, X-Forwarded-Host, X-Forwarded-Prefix, X-PINGOTHER, "
    b"Authorization, ES-LongPoll, ES-ExpectedVersion, ES-EventId, ES-EventType, "
    b"ES-RequiresMaster, ES-HardDelete, ES-ResolveLinkTos"
)
_CORS_EXPOSE = b"Location, ES-Position, ES-CurrentVersion"
_CORS_FIXED = (
    (b"access-control-allow-headers", _CORS_HEADERS),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", _CORS_EXPOSE),
)
_CACHE_FOREVER = b"max-age=31536000, public"
_CACHE_PRIVATE = b"max-age=31536000, private"
_NO_CACHE = b"max-age=0, no-cache, must-revalidate"

# -- errors --------------------------------------------------------------------


class HttpError(Exception):
    """
    A reply other than success, raised by handlers and validation.

    @ivar code: the status code.
    @ivar reason: the reason phrase (the short explanation).
    @ivar headers: extra response headers.
    @ivar body: the body (usually empty).
    @ivar content_type: the body's media type, if any.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        headers: Optional[dict[str, str]] = None,
        body: bytes = b"",
        content_type: Optional[str] = None,
    ) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.headers = headers or {}
        self.body = body
        self.content_type = content_type


def error_for(error: BaseException) -> Optional[HttpError]:
    """
    Map an expected error to its HTTP reply; C{None} for unexpected errors
    (bugs), which the caller logs and answers with 500.
    """
    if isinstance(error, HttpError):
        return error
    if isinstance(error, WrongExpectedVersion):
        return HttpError(400, "Wrong expected EventNumber")
    if isinstance(error, StreamDeleted):
        return HttpError(410, "Stream deleted")
    if isinstance(error, (AccessDenied, NotAuthenticated)):
        return unauthorized()
    if isinstance(error, BadRequest):
        return HttpError(400, str(error) or "Bad Request")
    if isinstance(error, NotFound):
        return HttpError(404, "Not Found")
    if isinstance(error, AlreadyExists):
        return HttpError(409, "Conflict")
    if isinstance(error, CommitTimeout):
        return HttpError(500, "Write timeout")
    if isinstance(error, InvalidTransaction):
        return HttpError(500, "Invalid transaction")
    if isinstance(error, NotReady):
        return HttpError(503, "Server Is Not Ready")
    if isinstance(error, DiskFull):
        return HttpError(507, "Insufficient Storage: the node's disk is full; reads still work")
    if isinstance(error, StorageError):
        return HttpError(500, "Storage error")
    if isinstance(error, OperationError):
        return HttpError(400, str(error) or "Bad Request")
    return None


def unauthorized() -> HttpError:
    return HttpError(401, "Unauthorized", {"WWW-Authenticate": 'BasicCustom realm="ES"'})


# -- pure helpers ----------------------------------------------------------------


def _parse_media_range(text: str) -> tuple[str, float]:
    parts = text.split(";")
    media = parts[0].strip().lower()
    q = 1.0
    for p in parts[1:]:
        name, _, value = p.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                q = 0.0
            if not 0.0 <= q <= 1.0:
                q = 0.0
    return media, q


def negotiate(accept: Optional[str], offered: Sequence[str]) -> Optional[tuple[str, bool]]:
    """
    Choose the response media type the way Event Store does (http-api.md
    1.3): media ranges by C{q} (stable for ties); for each, the first offered
    type it matches.

    @return: C{(media type, explicitly named)} or C{None} when nothing
        offered is acceptable.
    """
    if accept is None or not accept.strip():
        return offered[0], False
    ranges = []
    for i, item in enumerate(accept.split(",")):
        if not item.strip():
            continue
        media, q = _parse_media_range(item)
        if q > 0:
            ranges.append((-q, i, media))
    ranges.sort()
    for _, _, media in ranges:
        if media == "*/*" or media == "*":
            return offered[0], False
        if media.endswith("/*"):
            prefix = media[:-1]
            for t in offered:
                if t.startswith(prefix):
                    return t, False
            continue
        for t in offered:
            if t == media:
                return t, True
    return None


def parse_content_type(value: Optional[str]) -> Optional[str]:
    """
    The media type of a C{Content-Type} header, or C{None} when it is
    missing or names a charset other than UTF-8.
    """
    if not value:
        return None
    parts = value.split(";")
    media = parts[0].strip()
    for p in parts[1:]:
        name, _, v = p.partition("=")
        if name.strip().lower() == "charset" and v.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return None
    return media


def parse_expected_version(value: Optional[str]) -> int:
    """
    C{ES-ExpectedVersion}: absent means any (-2).

    @raise HttpError: not an integer or below -4.
    """
    if value is None:
        return -2
    try:
        v = int(value.strip())
    except ValueError:
        raise HttpError(400, "ES-ExpectedVersion header in wrong format.") from None
    if v < -4 or v > DELETED_STREAM:
        raise HttpError(400, "ES-ExpectedVersion header in wrong format.")
    return v


def parse_bool_header(value: Optional[str], name: str, default: bool) -> bool:
    """
    A C{True}/C{False} header, case-insensitive.

    @raise HttpError: any other value.
    """
    if value is None:
        return default
    v = value.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise HttpError(400, f"{name} header in wrong format.")


def parse_long_poll(value: Optional[str]) -> Optional[int]:
    """
    C{ES-LongPoll} seconds, or C{None} when absent.
    """
    if value is None:
        return None
    try:
        v = int(value.strip())
    except ValueError:
        raise HttpError(400, "Invalid ES-LongPoll header.") from None
    if v <= 0 or v > MAX_LONG_POLL:
        raise HttpError(400, "Invalid ES-LongPoll header.")
    return v


def parse_guid(text: str) -> bytes:
    """
    Parse a GUID in any of the usual forms.

    @raise ValueError: not a GUID.
    """
    if (
        len(text) == 36
        and text[8] == "-"
        and text[13] == "-"
        and text[18] == "-"
        and text[23] == "-"
        and text.isascii()
    ):
        compact = text[:8] + text[9:13] + text[14:18] + text[19:23] + text[24:]
        if compact.isalnum():
            return bytes.fromhex(compact)
    t = text.strip()
    if t.startswith("(") and t.endswith(")"):
        t = t[1:-1]
    return uuid.UUID(t).bytes


def parse_event_id_header(value: Optional[str]) -> Optional[bytes]:
    if value is None:
        return None
    try:
        raw = parse_guid(value)
    except ValueError:
        raise HttpError(400, "ES-EventId header in wrong format.") from None
    if raw == bytes(16):
        raise HttpError(400, "ES-EventId header in wrong format.")
    return raw


def parse_event_number(text: str, allow_head: bool = True) -> Optional[int]:
    """
    An event number from a URL segment; C{None} for C{head}.
    """
    if allow_head and text == "head":
        return None
    if text.isdigit() and text.isascii():
        n = int(text)
        if n <= DELETED_STREAM:
            return n
    raise HttpError(400, f"'{text}' is not valid event number")


def parse_count(text: str) -> int:
    if text.isdigit() and text.isascii():
        n = int(text)
        if n > MAX_READ_COUNT:
            raise HttpError(400, f"Read size too big, should be less than {MAX_READ_COUNT} items")
        if n > 0:
            return n
    raise HttpError(400, f"'{text}' is not valid count. Should be positive integer")


def _json_body(value: Any) -> tuple[bytes, bool]:
    """
    Turn the C{data} or C{metadata} member of a written event into stored
    bytes and a JSON flag (http-api.md 4.2).
    """
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False).encode("utf-8"), True
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                parsed = json.loads(stripped)
            except ValueError:
                parsed = None
            if isinstance(parsed, (dict, list)):
                return value.encode("utf-8"), True
        return value.encode("utf-8", "surrogatepass"), False
    return b"", False


def _check_size(data: bytes, metadata: bytes) -> None:
    if len(data) + len(metadata) > MAX_HTTP_EVENT_SIZE:
        raise HttpError(413, "Too large events received. Limit is 4mb")


def parse_events_json(body: bytes) -> list[NewEvent]:
    """
    Parse an C{application/vnd.eventstore.events+json} body.

    @raise HttpError: the body is not a non-empty array of valid events.
    """
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HttpError(400, "Write request body invalid.") from None
    if not isinstance(value, list) or not value:
        raise HttpError(400, "Write request body invalid.")
    events = []
    for item in value:
        if not isinstance(item, dict):
            raise HttpError(400, "Write request body invalid.")
        if "eventId" in item and "eventType" in item:
            fields = {
                "eventid": item["eventId"],
                "eventtype": item["eventType"],
                "data": item.get("data"),
                "metadata": item.get("metadata"),
            }
            if len(item) > 2 + ("data" in item) + ("metadata" in item):
                fields = {str(k).lower(): v for k, v in item.items()}
        else:
            fields = {str(k).lower(): v for k, v in item.items()}
        event_id = fields.get("eventid")
        if not event_id:
            raise HttpError(400, "Empty eventId provided.")
        if not isinstance(event_id, str):
            raise HttpError(400, "Write request body invalid.")
        try:
            raw_id = parse_guid(event_id)
        except ValueError:
            raise HttpError(400, "Write request body invalid.") from None
        event_type = fields.get("eventtype")
        if not event_type:
            raise HttpError(400, "Empty eventType provided.")
        if not isinstance(event_type, str):
            raise HttpError(400, "Write request body invalid.")
        data, data_json = _json_body(fields.get("data"))
        metadata, meta_json = _json_body(fields.get("metadata"))
        _check_size(data, metadata)
        events.append(NewEvent(raw_id, event_type, data, metadata, data_json or meta_json))
    return events


def _xml_to_json(element: ElementTree.Element) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    out: dict[str, Any] = {}
    for child in children:
        tag = child.tag.rpartition("}")[2]
        value = _xml_to_json(child)
        if tag in out:
            if not isinstance(out[tag], list):
                out[tag] = [out[tag]]
            out[tag].append(value)
        else:
            out[tag] = value
    return out


def parse_events_xml(body: bytes) -> list[NewEvent]:
    """
    Parse an C{application/vnd.eventstore.events+xml} body:
    C{<Events><event><eventId/><eventType/><data/><metadata/></event></Events>}.
    """
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, ValueError, RecursionError):
        raise HttpError(400, "Write request body invalid.") from None
    events = []
    for element in list(root):
        fields = {c.tag.rpartition("}")[2].lower(): c for c in element}
        id_el = fields.get("eventid")
        if id_el is None or not (id_el.text or "").strip():
            raise HttpError(400, "Empty eventId provided.")
        try:
            raw_id = parse_guid(id_el.text or "")
        except ValueError:
            raise HttpError(400, "Write request body invalid.") from None
        type_el = fields.get("eventtype")
        if type_el is None or not (type_el.text or "").strip():
            raise HttpError(400, "Empty eventType provided.")
        parts = []
        for name in ("data", "metadata"):
            el = fields.get(name)
            parts.append(_json_body(_xml_to_json(el)) if el is not None else (b"", False))
        (data, dj), (metadata, mj) = parts
        _check_size(data, metadata)
        events.append(NewEvent(raw_id, (type_el.text or "").strip(), data, metadata, dj or mj))
    if not events:
        raise HttpError(400, "Write request body invalid.")
    return events


def basic_credentials(value: str) -> tuple[str, str]:
    """
    Decode an C{Authorization: Basic} header.

    @raise HttpError: 401 for anything malformed.
    """
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise unauthorized()
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise unauthorized() from None
    login, sep, password = decoded.partition(":")
    if not sep:
        raise unauthorized()
    return login, password


def _iso_now(seconds: float) -> str:
    t = time.gmtime(seconds)
    micro = int((seconds % 1) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{micro:06d}Z"


# -- node information ------------------------------------------------------------


@frozen
class NodeInfo:
    """
    What the HTTP API tells about the node (C{/gossip}, C{/info}) and the
    hooks it calls (C{/admin/*}).

    @ivar shutdown: called by C{POST /admin/shutdown}.
    @ivar scavenge: called by C{POST /admin/scavenge}; may return a Deferred.
    @ivar reload_certificates: called by C{POST /admin/reloadcertificates};
        re-reads the node's certificate files and returns an object with
        C{ok} and C{message} (L{estwisted.tls.ReloadOutcome}); C{None} when
        the node has no TLS.
    @ivar first_level_auth: the 5.0.2+ route authorization levels
        (C{DisableFirstLevelHttpAuthorization} turns them off).
    @ivar leadership: in a cluster, the node's published
        L{estwisted.leadership.Leadership} (its view gives the state and
        the leader's external HTTP endpoint); C{None} means a single node,
        always C{state}.
    @ivar gossip_view: in a cluster, returns the C{/gossip} document
        (C{{"members", "serverIp", "serverPort"}}); C{None} answers the
        single-node view.
    """

    ext_ip: str = "127.0.0.1"
    int_ip: str = "127.0.0.1"
    ext_tcp_port: int = 1113
    int_tcp_port: int = 1112
    ext_http_port: int = 2113
    int_http_port: int = 2112
    ext_secure_tcp_port: int = 0
    int_secure_tcp_port: int = 0
    node_priority: int = 0
    instance_id: str = field(factory=lambda: str(uuid.uuid4()))
    state: str = "Master"
    projections_mode: str = "None"
    shutdown: Optional[Callable[[], Any]] = None
    scavenge: Optional[Callable[[], Any]] = None
    reload_certificates: Optional[Callable[[], Any]] = None
    first_level_auth: bool = True
    enable_trusted_auth: bool = False
    max_body_size: int = DEFAULT_MAX_BODY
    advertise_host: Optional[str] = None
    advertise_port: Optional[int] = None
    options: tuple[tuple[str, str], ...] = ()
    leadership: Optional[Leadership] = None
    gossip_view: Optional[Callable[[], dict[str, Any]]] = None
    #: The L{estwisted.projections.SystemProjectionsService} when
    #: C{RunProjections} is not None (the C{/projection(s)} routes).
    projections: Any = None

    @classmethod
    def from_config(
        cls, config: Any, shutdown: Optional[Callable[[], Any]] = None, **extra: Any
    ) -> NodeInfo:
        """
        Build from a node configuration object, reading the attributes it
        has (missing ones keep their defaults).
        """
        names = {
            "ext_ip": "advertised_ext_ip",
            "int_ip": "advertised_int_ip",
            "ext_tcp_port": "advertised_ext_tcp_port",
            "int_tcp_port": "advertised_int_tcp_port",
            "ext_http_port": "advertised_ext_http_port",
            "int_http_port": "advertised_int_http_port",
            "ext_secure_tcp_port": "advertised_ext_secure_tcp_port",
            "int_secure_tcp_port": "advertised_int_secure_tcp_port",
            "node_priority": "node_priority",
            "enable_trusted_auth": "enable_trusted_auth",
            "advertise_host": "ext_ip_advertise_as",
            "advertise_port": "ext_http_port_advertise_as",
        }
        kwargs: dict[str, Any] = {}
        for ours, theirs in names.items():
            value = getattr(config, theirs, None)
            if value is None:
                value = getattr(config, theirs.replace("advertised_", ""), None)
            if value is not None:
                kwargs[ours] = value
        if not kwargs.get("advertise_host"):
            kwargs.pop("advertise_host", None)
        if not kwargs.get("advertise_port"):
            kwargs.pop("advertise_port", None)
        disable = getattr(config, "disable_first_level_http_authorization", None)
        if disable is not None:
            kwargs["first_level_auth"] = not disable
        kwargs[ours] = value
        disable = getattr(config, "disable_first_level_http_authorization", None)
        if disable is not None:
            kwargs["first_level_auth"] = not disable
        kwargs["shutdown"] = shutdown
        if attrs.has(type(config)):
            kwargs["options"] = tuple(
                (f.name, str(getattr(config, f.name)))
                for f in attrs.fields(type(config))
                if not f.name.startswith("_") and f.name != "sources"
            )
        kwargs.update(extra)
        return cls(**kwargs)


# -- requests with a body limit ------------------------------------------------------


_canonical_names: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    """
    The key C{Headers} files a (lower-case) header name under.
    """
    key = _canonical_names.get(name)
    if key is None:
        probe = Headers()
        probe.setRawHeaders(name, [b"x"])
        key = next(iter(probe.getAllRawHeaders()))[0]
        _canonical_names[name] = key
    return key


def get_header(request: Any, name: bytes) -> Optional[str]:
    """
    The first value of request header C{name} (lower-case bytes) as text.
    Reads the header table directly: this runs several times per request.
    """
    headers = request.requestHeaders
    try:
        key = _canonical_names[name]
        values = headers._rawHeaders.get(key)
    except (KeyError, AttributeError):
        values = headers.getRawHeaders(_canonical(name))
    if not values:
        return None
    return values[0].decode("latin-1")  # type: ignore[no-any-return]


def set_header(request: Any, name: bytes, value: Union[bytes, str]) -> None:
    """
    Set response header C{name} (lower-case bytes) to one value.  Values
    built here never hold CR or LF; stray ones are replaced.
    """
    if isinstance(value, str):
        value = value.encode("utf-8")
    if b"\r" in value or b"\n" in value:
        value = value.replace(b"\r", b" ").replace(b"\n", b" ")
    headers = request.responseHeaders
    try:
        raw = headers._rawHeaders
    except AttributeError:
        headers.setRawHeaders(name, [value])
        return
    key = _canonical_names.get(name)
    raw[key if key is not None else _canonical(name)] = [value]


_ALL_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
_CORS_RAW = {
    _canonical(name): [value]
    for name, value in ((b"access-control-allow-methods", _ALL_METHODS), *_CORS_FIXED)
}
for _name in (
    b"host", b"accept", b"authorization", b"content-type", b"es-expectedversion",
    b"es-requiremaster", b"es-eventid", b"es-eventtype", b"es-trustedauth",
    b"es-resolvelinktos", b"es-longpoll", b"es-harddelete", b"if-none-match",
    b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-prefix",
):
    _canonical(_name)


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
            super().gotLength(length)

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
        super().requestReceived(command, path, version)

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


# -- the API -----------------------------------------------------------------------

Handler = Callable[..., Union[bytes, Deferred[bytes]]]


class _Waiters:
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


class HttpApi:
    """
    The HTTP API of one node.  C{app} routes; handlers are methods.

    @param store: the L{StreamStore}.
    @param hub: the volatile subscription hub (unused over HTTP; kept for
        symmetry with the TCP edge).
    @param persistent: the L{PersistentSubscriptions}.
    @param clock: timers for long polls and stats.
    @param node_info: addresses and hooks, see L{NodeInfo}.
    @param users: the user manager; defaults to C{store.users}.
    """

    app = Klein()
    _log = Logger()

    def __init__(
        self,
        store: Any,
        hub: Any,
        persistent: Any,
        clock: IReactorTime,
        node_info: Optional[NodeInfo] = None,
        users: Any = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.persistent = persistent
        self.clock = clock
        self.node_info = node_info or NodeInfo()
        self.users = users if users is not None else getattr(store, "users", None)
        self._waiters = _Waiters()
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
        #: Times requests when set (L{estwisted.metrics.NodeMetrics}).
        self.metrics: Any = None

    # -- serving -------------------------------------------------------------

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
        site = QuietSite(
            self.resource(),
            requestFactory=limited_request_factory(self.node_info.max_body_size),
            # No route takes HTML form bodies; not checking for them saves a
            # Content-Type parse through the email package on every POST.
            parsePOSTFormSubmission=False,
        )
        site.displayTracebacks = False
        return site

    # -- the request pipeline ------------------------------------------------

    def _run(self, request: Any, handler: Handler, *args: Any) -> Union[bytes, Deferred[bytes]]:
        """
        Run a handler, mapping every error to a reply; never raises.
        """
        self._cors(request)
        try:
            result = handler(request, *args)
        except BaseException as e:  # noqa: B036 - everything becomes a reply
            return _sized(self._failed(request, Failure(e)), request)
        if isinstance(result, Deferred):
            seconds = getattr(request, "_estwisted_timeout", REQUEST_TIMEOUT)
            return (
                self._timed(request, result, seconds)
                .addErrback(lambda f: self._failed(request, f))
                .addCallback(_sized, request)
            )
        return _sized(result, request)

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

    def _cors(self, request: Any, methods: bytes = _ALL_METHODS) -> None:
        raw = getattr(request.responseHeaders, "_rawHeaders", None)
        if raw is not None and methods is _ALL_METHODS:
            # The value lists are shared constants: nothing appends to
            # these headers.
            raw.update(_CORS_RAW)
            return
        set_header(request, b"access-control-allow-methods", methods)
        for name, value in _CORS_FIXED:
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
            chosen = _FORMAT_PARAM.get(fmt.lower())
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
        The request's principal (C{None}: anonymous) from Basic credentials
        (or C{ES-TrustedAuth} when enabled), checked by the store.

        @raise HttpError: 401 for wrong or malformed credentials.
        """
        principal: Optional[Principal] = None
        auth = self._header(request, b"authorization")
        if auth is not None:
            login, password = basic_credentials(auth)
            try:
                principal = self.store.authenticate(login, password)
            except NotAuthenticated:
                raise unauthorized() from None
        elif self.node_info.enable_trusted_auth:
            trusted = self._header(request, b"es-trustedauth")
            if trusted:
                login, _, groups = trusted.partition(";")
                principal = Principal(
                    login.strip(),
                    frozenset(g.strip() for g in groups.split(",") if g.strip()),
                )
        return principal

    def _principal(self, request: Any, level: str = "user") -> Optional[Principal]:
        """
        Authenticate the request and check the route's level (http-api.md
        2.2): C{none}, C{user}, C{ops} or C{admin}.
        """
        principal = getattr(request, "_estwisted_principal", _UNAUTHENTICATED)
        if principal is _UNAUTHENTICATED:
            principal = self.authenticate(request)
        if not self.node_info.first_level_auth or level == "none":
            return principal
        if principal is None:
            raise unauthorized()
        if level == "ops" and not principal.is_ops:
            raise unauthorized()
        if level == "admin" and not principal.is_admin:
            raise unauthorized()
        return principal

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
        set_header(request, b"cache-control", _CACHE_FOREVER)
        return b""

    # -- writes ----------------------------------------------------------------

    def write_events(self, request: Any, raw_stream: str) -> Union[bytes, Deferred[bytes]]:
        """
        C{POST /streams/{stream}}.
        """
        stream = self._stream_name(raw_stream)
        media = self._body_type(request, WRITE_TYPES)
        self._negotiate(request, WRITE_TYPES)
        principal = self._principal(request)
        expected = parse_expected_version(self._header(request, b"es-expectedversion"))
        self._require_master(request)
        body = request.content.read() if request.content is not None else b""
        header_id = parse_event_id_header(self._header(request, b"es-eventid"))
        header_type = self._header(request, b"es-eventtype")
        if media in _NO_ID_TYPES:
            if not header_type:
                raise HttpError(
                    400,
                    "Must include an event type with the request either in body or as "
                    "ES-EventType header.",
                )
            if header_id is None:
                location = (
                    self.base_url(request)
                    + "/streams/"
                    + atom.escape_stream(stream)
                    + "/incoming/"
                    + str(uuid.uuid4())
                )
                request.setResponseCode(307, b"Temporary Redirect")
                set_header(request, b"location", location.encode("ascii"))
                set_header(request, b"content-type", b"text/plain; charset=utf-8")
                return b"Forwarding to idempotent URI"
        events = self._events_from_body(media, body, header_id, header_type)
        return self._append(request, stream, expected, events, principal)

    def _events_from_body(
        self, media: str, body: bytes, header_id: Optional[bytes], header_type: Optional[str]
    ) -> list[NewEvent]:
        if media in _ARRAY_JSON or media == atom.ATOM_JSON:
            return parse_events_json(body)
        if media in _ARRAY_XML or media == atom.ATOM_XML:
            return parse_events_xml(body)
        if header_id is None or not header_type:
            raise HttpError(400, "Empty eventId provided.")
        _check_size(body, b"")
        return [NewEvent(header_id, header_type, body, b"", media in _RAW_JSON)]

    def _append(
        self,
        request: Any,
        stream: str,
        expected: int,
        events: list[NewEvent],
        principal: Optional[Principal],
    ) -> Deferred[bytes]:
        base = self.base_url(request)

        def written(result: Any) -> bytes:
            location = f"{base}/streams/{atom.escape_stream(stream)}/{result.first_event_number}"
            request.setResponseCode(201, b"Created")
            set_header(request, b"location", location.encode("ascii"))
            set_header(request, b"content-type", b"text/plain; charset=utf-8")
            return b""

        def failed(f: Failure) -> Failure:
            if f.check(WrongExpectedVersion):
                current = f.value.current_version  # type: ignore[union-attr]
                raise HttpError(
                    400,
                    "Wrong expected EventNumber",
                    {"ES-CurrentVersion": str(current)},
                )
            return f

        d: Deferred[Any] = self.store.append(stream, expected, events, principal)
        return d.addCallbacks(written, failed)

    def write_incoming(
        self, request: Any, raw_stream: str, guid: str
    ) -> Union[bytes, Deferred[bytes]]:
        """
        C{POST /streams/{stream}/incoming/{guid}}: the redirect target.
        """
        stream = self._stream_name(raw_stream)
        media = self._body_type(request, INCOMING_TYPES)
        self._negotiate(request, INCOMING_TYPES)
        principal = self._principal(request)
        expected = parse_expected_version(self._header(request, b"es-expectedversion"))
        self._require_master(request)
        try:
            event_id = parse_guid(unquote(guid))
        except ValueError:
            raise HttpError(400, "Invalid event id in URL.") from None
        event_type = self._header(request, b"es-eventtype")
        if not event_type:
            raise HttpError(
                400,
                "Must include an event type with the request either in body or as "
                "ES-EventType header.",
            )
        body = request.content.read() if request.content is not None else b""
        if media in (atom.ATOM_JSON, atom.ATOM_XML):
            events = self._events_from_body(media, body, event_id, event_type)
        else:
            _check_size(body, b"")
            events = [NewEvent(event_id, event_type, body, b"", media == atom.JSON)]
        return self._append(request, stream, expected, events, principal)

    def write_metadata(self, request: Any, raw_stream: str) -> Union[bytes, Deferred[bytes]]:
        """
        C{POST /streams/{stream}/metadata}.
        """
        stream = self._stream_name(raw_stream)
        if stream.startswith("$$"):
            raise HttpError(400, "Metastreams have no metadata.")
        media = self._body_type(request, WRITE_TYPES)
        self._negotiate(request, WRITE_TYPES)
        principal = self._principal(request)
        expected = parse_expected_version(self._header(request, b"es-expectedversion"))
        self._require_master(request)
        header_type = self._header(request, b"es-eventtype")
        if header_type and header_type != "$metadata":
            raise HttpError(400, "Bad Request. You should not include an event type for metadata.")
        header_id = parse_event_id_header(self._header(request, b"es-eventid"))
        body = request.content.read() if request.content is not None else b""
        if media in _ARRAY_JSON or media == atom.ATOM_JSON:
            events = parse_events_json(body)
        elif media in _ARRAY_XML or media == atom.ATOM_XML:
            events = parse_events_xml(body)
        else:
            if header_id is None:
                raise HttpError(400, "Empty eventId provided.")
            _check_size(body, b"")
            events = [NewEvent(header_id, "$metadata", body, b"", media in _RAW_JSON)]
        for event in events:
            if event.is_json:
                try:
                    parsed = json.loads(event.data)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    continue
            raise HttpError(400, "Invalid metadata: a JSON object is expected.")
        return self._append(request, "$$" + stream, expected, events, principal)

    def delete_stream(self, request: Any, raw_stream: str) -> Union[bytes, Deferred[bytes]]:
        """
        C{DELETE /streams/{stream}}.
        """
        stream = self._stream_name(raw_stream)
        self._negotiate(request, WRITE_TYPES)
        principal = self._principal(request)
        expected = parse_expected_version(self._header(request, b"es-expectedversion"))
        hard = parse_bool_header(self._header(request, b"es-harddelete"), "ES-HardDelete", False)
        self._require_master(request)

        def deleted(_: Any) -> bytes:
            request.setResponseCode(204, b"Stream deleted")
            return b""

        d: Deferred[Any] = self.store.delete_stream(stream, expected, hard, principal)
        return d.addCallback(deleted)

    # -- reads -------------------------------------------------------------------

    def _cache(
        self, request: Any, cacheable: bool, version: int, media: str, stream: str = "$all"
    ) -> bool:
        """
        Set caching headers: pages that can no longer change are cacheable
        for a year (publicly only when anonymous callers may read the
        stream); others carry an ETag.

        @return: whether the client's ETag matches.
        """
        set_header(request, b"vary", b"Accept")
        if cacheable:
            public = self.store.check_access(None, stream, "$r")
            set_header(request, b"cache-control", _CACHE_FOREVER if public else _CACHE_PRIVATE)
            return False
        etag = atom.make_etag(version, media)
        set_header(request, b"etag", f'"{etag}"'.encode("ascii"))
        set_header(request, b"cache-control", self._head_cache_control(stream))
        inm = self._header(request, b"if-none-match")
        return inm is not None and inm.strip().strip('"') == etag

    def _head_cache_control(self, stream: str) -> bytes:
        """
        C{Cache-Control} of a page that may still change: no caching unless
        the stream's metadata sets C{$cacheControl} (seconds).
        """
        if stream == "$all" or stream.startswith("$$"):
            return _NO_CACHE
        lookup = getattr(self.store, "stream_metadata", None)
        seconds = getattr(lookup(stream), "cache_control", None) if lookup else None
        if not seconds:
            return _NO_CACHE
        public = self.store.check_access(None, stream, "$r")
        return f"max-age={int(seconds)}, {'public' if public else 'private'}".encode("ascii")

    def _not_modified(self, request: Any) -> bytes:
        request.setResponseCode(304, b"Not Modified")
        return b""

    @staticmethod
    def _read_status(status: ReadStatus, error: str = "") -> None:
        if status == ReadStatus.SUCCESS:
            return
        if status in (ReadStatus.NO_STREAM, ReadStatus.NOT_FOUND):
            raise HttpError(404, "Not Found")
        if status == ReadStatus.STREAM_DELETED:
            raise HttpError(410, "Deleted")
        if status == ReadStatus.ACCESS_DENIED:
            raise unauthorized()
        raise HttpError(500, error or "Read error")

    def read_event(
        self, request: Any, raw_stream: str, raw_event: str, meta: bool = False
    ) -> bytes:
        """
        C{GET /streams/{stream}/{event}} (and the metastream's).
        """
        stream = self._stream_name(raw_stream)
        if meta:
            if stream.startswith("$$"):
                raise HttpError(400, "Metastreams have no metadata.")
            stream = "$$" + stream
        media, _, _ = self._negotiate(request, EVENT_TYPES)
        principal = self._principal(request)
        number = parse_event_number(raw_event)
        resolve = self._resolve_links(request)
        self._require_master(request)
        embed = atom.parse_embed(self._query(request, b"embed"))
        result = self.store.read_event(
            stream, -1 if number is None else number, resolve, principal
        )
        self._read_status(result.status, result.error)
        resolved: Optional[ResolvedEvent] = result.event
        if resolved is None:
            # The system-stream quirk: 200 with an empty body.
            set_header(request, b"vary", b"Accept")
            set_header(request, b"cache-control", _NO_CACHE)
            return self._ok(request, b"{}" if media in atom.JSON_TYPES else b"", media)
        if resolved.event is None:
            raise HttpError(404, "Not Found")
        if number is None:
            version = resolved.original.event_number
            if self._cache(request, False, version, media, stream):
                return self._not_modified(request)
        else:
            self._cache(request, True, 0, media, stream)
        urls = _NO_URLS if media in _DATA_ONLY else self._urls(request)
        body = atom.single_event_body(resolved, media, urls, embed)
        content_type = media
        if media == atom.OCTET_STREAM:
            set_header(request, b"content-type", b"application/octet-stream")
            request.setResponseCode(200, b"OK")
            return body
        return self._ok(request, body, content_type)

    def read_metadata(self, request: Any, raw_stream: str) -> bytes:
        """
        C{GET /streams/{stream}/metadata}.
        """
        stream = self._stream_name(raw_stream)
        if stream.startswith("$$"):
            raise HttpError(400, "Metastreams have no metadata.")
        media, _, _ = self._negotiate(request, EVENT_TYPES)
        principal = self._principal(request)
        self._resolve_links(request)
        self._require_master(request)
        if stream == "$all":
            meta = self.store.get_metadata(stream, principal)
            set_header(request, b"vary", b"Accept")
            set_header(request, b"cache-control", _NO_CACHE)
            return self._ok(request, meta.raw or b"{}", atom.JSON if media in atom.JSON_TYPES
                            else media)
        result = self.store.read_event("$$" + stream, -1, False, principal)
        if result.status == ReadStatus.SUCCESS and result.event is None:
            result_status = ReadStatus.SUCCESS
        else:
            result_status = result.status
        if result_status in (ReadStatus.NO_STREAM, ReadStatus.NOT_FOUND):
            last = self.store.last_event_number(stream)
            if last == DELETED_STREAM:
                raise HttpError(410, "Deleted")
            if last != -1:
                result_status = ReadStatus.SUCCESS
        self._read_status(result_status, result.error)
        set_header(request, b"vary", b"Accept")
        set_header(request, b"cache-control", _NO_CACHE)
        if result.event is None or result.event.event is None:
            if self.store.last_event_number(stream) == DELETED_STREAM:
                raise HttpError(410, "Deleted")
            return self._ok(request, b"{}" if media in atom.JSON_TYPES else b"", media)
        record = result.event.event
        if media == atom.JSON:
            return self._ok(request, bytes(record.data) or b"{}", media)
        embed = atom.parse_embed(self._query(request, b"embed"))
        body = atom.single_event_body(result.event, media, self._urls(request), embed)
        if media == atom.OCTET_STREAM:
            set_header(request, b"content-type", b"application/octet-stream")
            return body
        return self._ok(request, body, media)

    def _feed_media(self, request: Any, stream: str) -> str:
        media, explicit, had_accept = self._negotiate(request, FEED_TYPES)
        if media == atom.STREAMDESC_JSON:
            groups: list[str] = []
            if self.persistent is not None:
                try:
                    groups = [g.group for g in self.persistent.list_groups(stream)]
                except Exception:
                    groups = []
            body = atom.dumps(atom.description_document(stream, groups))
            if explicit:
                raise HttpError(200, "OK", body=body, content_type=atom.STREAMDESC_JSON)
            reason = (
                "Description Document"
                if had_accept
                else "We are unable to represent the stream in the format requested."
            )
            raise HttpError(406, reason, body=body, content_type=atom.STREAMDESC_JSON)
        return media

    def read_feed(
        self,
        request: Any,
        raw_stream: str,
        raw_event: str = "head",
        raw_count: str = "20",
        direction: str = "backward",
        meta: bool = False,
    ) -> Union[bytes, Deferred[bytes]]:
        """
        Stream feeds: C{GET /streams/{s}[/{event}[/backward|forward]/{count}]}.
        """
        stream = self._stream_name(raw_stream)
        if stream == "$all" and not meta:
            return self.read_all_feed(request, raw_event, raw_count, direction)
        if meta:
            if stream.startswith("$$"):
                raise HttpError(400, "Metastreams have no metadata.")
            stream = "$$" + stream
        forward = direction == "forward"
        media = self._feed_media(request, stream)
        principal = self._principal(request)
        number = parse_event_number(raw_event, allow_head=not forward)
        count = parse_count(raw_count)
        resolve = self._resolve_links(request)
        self._require_master(request)
        long_poll = parse_long_poll(self._header(request, b"es-longpoll")) if forward else None
        embed = atom.parse_embed(self._query(request, b"embed"))

        def execute() -> bytes:
            urls = self._urls(request)
            key = None if meta else self._page_key(stream, number, count, forward, resolve, embed,
                                                   media, urls.base)
            hit = self._pages.get(key) if key is not None else None
            if hit is not None:
                # Same stream version, same metadata, no links, no $maxAge:
                # the page is what a read would render; the ACL is still
                # checked for this caller.
                if not self.store.check_access(principal, stream, "$r"):
                    raise unauthorized()
                body, cacheable, version = hit
            else:
                if forward:
                    assert number is not None
                    sl = self.store.read_stream(stream, number, count, True, resolve, principal)
                else:
                    start = -1 if number is None else number
                    sl = self.store.read_stream(stream, start, count, False, resolve, principal)
                self._read_status(sl.status, sl.error)
                page = atom.stream_feed(sl, stream, urls, number, count, forward, embed)
                body = page.render(media, urls, self._entry_cache)
                cacheable, version = page.cacheable, page.version
                if key is not None and not any(
                    e.link is not None or e.original.event_type == "$>" for e in sl.events
                ):
                    self._remember_page(key, (body, cacheable, version))
            if self._cache(request, cacheable, version, media, stream):
                return self._not_modified(request)
            return self._ok(request, body, _feed_type(media))

        if long_poll is not None and number is not None:
            last = self.store.last_event_number(stream)
            if last != DELETED_STREAM and number > last:
                return self._long_poll(request, stream, long_poll, execute)
        return execute()

    def _page_key(
        self,
        stream: str,
        number: Optional[int],
        count: int,
        forward: bool,
        resolve: bool,
        embed: atom.Embed,
        media: str,
        base: str,
    ) -> Optional[tuple[Any, ...]]:
        """
        The rendered-page cache key, or C{None} when the page may change
        without the stream's last event number or metadata changing
        (C{$maxAge}) or the store cannot tell.
        """
        lookup = getattr(self.store, "stream_metadata", None)
        if lookup is None or stream.startswith("$$"):
            return None
        metadata = lookup(stream)
        if getattr(metadata, "max_age", None) is not None:
            return None
        last = self.store.last_event_number(stream)
        version = getattr(metadata, "version", None)
        return (stream, last, version, number, count, forward, resolve, embed, media, base)

    def _remember_page(self, key: tuple[Any, ...], page: tuple[bytes, bool, int]) -> None:
        size = len(page[0])
        if self._pages_bytes + size > PAGE_CACHE_BYTES:
            self._pages.clear()
            self._pages_bytes = 0
        self._pages[key] = page
        self._pages_bytes += size

    def read_all_feed(
        self,
        request: Any,
        raw_position: str = "head",
        raw_count: str = "20",
        direction: str = "backward",
    ) -> Union[bytes, Deferred[bytes]]:
        """
        C{$all} feeds.
        """
        forward = direction == "forward"
        media = self._feed_media(request, "$all")
        principal = self._principal(request)
        position: Optional[int]
        if raw_position == "head" and not forward:
            position = None
        else:
            try:
                position = atom.decode_position(raw_position)[0]
            except ValueError:
                raise HttpError(400, f"Invalid position argument: {raw_position}") from None
        if not (raw_count.isdigit() and raw_count.isascii()) or int(raw_count) <= 0:
            raise HttpError(400, f"Invalid count argument: {raw_count}")
        count = int(raw_count)
        if count > MAX_READ_COUNT:
            raise HttpError(400, f"Read size too big, should be less than {MAX_READ_COUNT} items")
        self._require_master(request)
        long_poll = parse_long_poll(self._header(request, b"es-longpoll")) if forward else None
        embed = atom.parse_embed(self._query(request, b"embed"))

        def execute() -> bytes:
            start = -1 if position is None else position
            sl = self.store.read_all(start, count, forward, False, principal)
            self._read_status(sl.status, sl.error)
            page = atom.all_feed(
                sl,
                self._urls(request),
                position,
                count,
                forward,
                embed,
                self.store.last_commit_position,
            )
            if self._cache(request, page.cacheable, page.version, media):
                return self._not_modified(request)
            body = page.render(media, self._urls(request), self._entry_cache)
            return self._ok(request, body, _feed_type(media))

        if long_poll is not None and position is not None:
            probe = self.store.read_all(position, 1, True, False, principal)
            if probe.status == ReadStatus.SUCCESS and not probe.events:
                return self._long_poll(request, None, long_poll, execute)
        return execute()

    def _long_poll(
        self,
        request: Any,
        stream: Optional[str],
        seconds: int,
        execute: Callable[[], bytes],
    ) -> Deferred[bytes]:
        """
        Hold the request until a commit touches C{stream} (any stream for
        C{None}) or C{seconds} pass, then run the read.
        """
        if not self._listening:
            self.store.add_commit_listener(self._waiters.committed)
            self._listening = True
        request._estwisted_timeout = seconds + REQUEST_TIMEOUT
        woken = self._waiters.wait(stream)
        timer: IDelayedCall = self.clock.callLater(seconds, woken.callback, None)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            self._waiters.discard(stream, woken)
            return result

        woken.addBoth(done)
        result: Deferred[bytes] = Deferred(lambda _: woken.cancel())

        def run(_: Any) -> None:
            if result.called:
                return
            try:
                result.callback(execute())
            except BaseException as e:  # noqa: B036
                result.errback(Failure(e))

        def cancelled(f: Failure) -> None:
            if not result.called:
                result.errback(f)

        woken.addCallbacks(run, cancelled)
        return result

    # -- persistent subscriptions ------------------------------------------------

    def _subscription_names(self, raw_stream: str, raw_group: str) -> tuple[str, str]:
        stream = self._stream_name(raw_stream)
        group = unquote(raw_group)
        if not group:
            raise HttpError(400, "Group name must be non-empty")
        return stream, group

    def _settings_from_body(self, request: Any) -> Any:
        from estwisted.persistent import STRATEGIES, PersistentSettings

        self._body_type(request, (atom.JSON,))
        body = request.content.read() if request.content is not None else b""
        if body.strip():
            try:
                value = json.loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise HttpError(400, "Invalid subscription settings body.") from None
        else:
            value = {}
        if not isinstance(value, dict):
            raise HttpError(400, "Invalid subscription settings body.")
        fields = {str(k).lower(): v for k, v in value.items()}

        def num(name: str, default: int) -> int:
            v = fields.get(name.lower())
            if v is None or v == 0 or v is False:
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
                raise HttpError(400, f"Invalid value for {name}.")
            if abs(int(v)) > DELETED_STREAM:
                raise HttpError(400, f"Invalid value for {name}.")
            return int(v)

        def flag(name: str) -> bool:
            v = fields.get(name.lower())
            if v is None:
                return False
            if not isinstance(v, bool):
                raise HttpError(400, f"Invalid value for {name}.")
            return v

        strategy = fields.get("namedconsumerstrategy") or ""
        if not isinstance(strategy, str):
            raise HttpError(400, "Invalid value for namedConsumerStrategy.")
        if not strategy:
            prefer = fields.get("preferroundrobin")
            strategy = "DispatchToSingle" if prefer is False else "RoundRobin"
        if strategy not in STRATEGIES:
            raise HttpError(400, f"Unknown named consumer strategy {strategy!r}.")
        settings = PersistentSettings(
            resolve_link_tos=flag("resolveLinktos"),
            start_from=num("startFrom", 0),
            message_timeout_ms=num("messageTimeoutMilliseconds", 10000),
            record_statistics=flag("extraStatistics"),
            live_buffer_size=num("liveBufferSize", 500),
            read_batch_size=num("readBatchSize", 20),
            buffer_size=num("bufferSize", 500),
            max_retry_count=num("maxRetryCount", 10),
            prefer_round_robin=strategy == "RoundRobin",
            checkpoint_after_ms=num("checkPointAfterMilliseconds", 1000),
            checkpoint_max_count=num("maxCheckPointCount", 500),
            checkpoint_min_count=num("minCheckPointCount", 10),
            subscriber_max_count=num("maxSubscriberCount", 10),
            named_consumer_strategy=strategy,
        )
        if settings.live_buffer_size <= 0 or settings.read_batch_size <= 0:
            raise HttpError(400, "Buffer sizes must be positive.")
        if settings.buffer_size <= settings.read_batch_size:
            raise HttpError(400, "bufferSize must be greater than readBatchSize.")
        if settings.message_timeout_ms < 0 or settings.max_retry_count < 0:
            raise HttpError(400, "Invalid subscription settings.")
        return settings

    def _subscription_reply(self, request: Any, code: int, reason: bytes, result: str) -> bytes:
        body = atom.dumps(
            {"correlationId": str(uuid.uuid4()), "reason": "", "result": result}
        )
        return self._ok(request, body, atom.JSON, code, reason)

    def create_subscription(
        self, request: Any, raw_stream: str, raw_group: str
    ) -> Deferred[bytes]:
        """
        C{PUT /subscriptions/{stream}/{group}}.
        """
        return self._save_subscription(
            request, raw_stream, raw_group, self.persistent.create, 201, b"Subscription Created"
        )

    def update_subscription(
        self, request: Any, raw_stream: str, raw_group: str
    ) -> Deferred[bytes]:
        """
        C{POST /subscriptions/{stream}/{group}}.
        """
        return self._save_subscription(
            request, raw_stream, raw_group, self.persistent.update, 200, b"Subscription Updated"
        )

    def _save_subscription(
        self,
        request: Any,
        raw_stream: str,
        raw_group: str,
        save: Callable[..., Deferred[Any]],
        code: int,
        reason: bytes,
    ) -> Deferred[bytes]:
        """
        Create or update a group from the request's settings body and answer
        with its location.
        """
        self._require_master(request, always=True)
        stream, group = self._subscription_names(raw_stream, raw_group)
        principal = self._principal(request, "ops")
        settings = self._settings_from_body(request)
        location = self._urls(request).subscription(stream, group)

        def saved(_: Any) -> bytes:
            set_header(request, b"location", location.encode("ascii"))
            return self._subscription_reply(request, code, reason, "Success")

        return save(stream, group, settings, principal).addCallback(saved)

    def delete_subscription(
        self, request: Any, raw_stream: str, raw_group: str
    ) -> Deferred[bytes]:
        """
        C{DELETE /subscriptions/{stream}/{group}}.
        """
        self._require_master(request, always=True)
        stream, group = self._subscription_names(raw_stream, raw_group)
        principal = self._principal(request, "ops")
        d: Deferred[Any] = self.persistent.delete(stream, group, principal)
        return d.addCallback(
            lambda _: self._subscription_reply(request, 200, b"Subscription Deleted", "Success")
        )

    def _summary(self, urls: atom.Urls, info: Any) -> dict[str, Any]:
        detail = urls.subscription(info.stream, info.group)
        return {
            "links": [{"href": f"{detail}/info", "rel": "detail"}],
            "eventStreamId": info.stream,
            "groupName": info.group,
            "parkedMessageUri": urls.stream(
                f"$persistentsubscription-{info.stream}::{info.group}-parked"
            ),
            "getMessagesUri": f"{detail}/1",
            "status": info.status,
            "averageItemsPerSecond": 0.0,
            "totalItemsProcessed": info.total_items_processed,
            "lastProcessedEventNumber": info.last_processed_event_number,
            "lastKnownEventNumber": info.last_known_event_number,
            "connectionCount": info.connection_count,
            "totalInFlightMessages": info.total_in_flight_messages,
        }

    def list_subscriptions(self, request: Any, raw_stream: Optional[str] = None) -> bytes:
        """
        C{GET /subscriptions} and C{GET /subscriptions/{stream}}.
        """
        self._require_master(request, always=True)
        stream = self._stream_name(raw_stream) if raw_stream is not None else None
        self._negotiate(request, JSON_ONLY)
        self._principal(request)
        groups = self.persistent.list_groups(stream)
        if stream is not None and not groups:
            raise HttpError(404, "Not Found")
        urls = self._urls(request)
        body = atom.dumps([self._summary(urls, g) for g in groups])
        set_header(request, b"cache-control", _NO_CACHE)
        return self._ok(request, body, atom.JSON)

    def subscription_info(self, request: Any, raw_stream: str, raw_group: str) -> bytes:
        """
        C{GET /subscriptions/{stream}/{group}/info}.
        """
        self._require_master(request, always=True)
        stream, group = self._subscription_names(raw_stream, raw_group)
        self._negotiate(request, JSON_ONLY)
        self._principal(request)
        info = self.persistent.get_group(stream, group)
        urls = self._urls(request)
        detail = urls.subscription(stream, group)
        s = info.settings
        summary = self._summary(urls, info)
        body = {
            "links": [
                {"href": f"{detail}/info", "rel": "detail"},
                {"href": f"{detail}/replayParked", "rel": "replayParked"},
            ],
            "config": {
                "resolveLinktos": s.resolve_link_tos,
                "startFrom": s.start_from,
                "messageTimeoutMilliseconds": s.message_timeout_ms,
                "extraStatistics": s.record_statistics,
                "maxRetryCount": s.max_retry_count,
                "liveBufferSize": s.live_buffer_size,
                "bufferSize": s.buffer_size,
                "readBatchSize": s.read_batch_size,
                "preferRoundRobin": s.prefer_round_robin,
                "checkPointAfterMilliseconds": s.checkpoint_after_ms,
                "minCheckPointCount": s.checkpoint_min_count,
                "maxCheckPointCount": s.checkpoint_max_count,
                "maxSubscriberCount": s.subscriber_max_count,
                "namedConsumerStrategy": s.named_consumer_strategy,
            },
            "eventStreamId": stream,
            "groupName": group,
            "status": info.status,
            "averageItemsPerSecond": 0.0,
            "parkedMessageUri": summary["parkedMessageUri"],
            "getMessagesUri": summary["getMessagesUri"],
            "totalItemsProcessed": info.total_items_processed,
            "countSinceLastMeasurement": 0,
            "lastProcessedEventNumber": info.last_processed_event_number,
            "lastKnownEventNumber": info.last_known_event_number,
            "readBufferCount": info.read_buffer_count,
            "liveBufferCount": info.live_buffer_count,
            "retryBufferCount": info.retry_buffer_count,
            "totalInFlightMessages": info.total_in_flight_messages,
            "outstandingMessagesCount": info.outstanding_messages_count,
            "connections": [
                {
                    "from": c.from_address,
                    "username": c.username,
                    "averageItemsPerSecond": 0.0,
                    "totalItemsProcessed": c.total_items_processed,
                    "countSinceLastMeasurement": 0,
                    "extraStatistics": [],
                    "availableSlots": c.available_slots,
                    "inFlightMessages": c.in_flight_messages,
                }
                for c in info.connections
            ],
        }
        set_header(request, b"cache-control", _NO_CACHE)
        return self._ok(request, atom.dumps(body), atom.JSON)

    def subscription_messages(
        self, request: Any, raw_stream: str, raw_group: str, raw_count: str = "1"
    ) -> bytes:
        """
        C{GET /subscriptions/{stream}/{group}[/{count}]}: a competing feed.
        """
        self._require_master(request, always=True)
        stream, group = self._subscription_names(raw_stream, raw_group)
        if not (raw_count.isdigit() and raw_count.isascii()) or not 1 <= int(raw_count) <= 100:
            raise HttpError(
                400, "Message count must be an integer between 1 and 100 (inclusive)."
            )
        count = int(raw_count)
        media, _, _ = self._negotiate(request, COMPETING_TYPES)
        principal = self._principal(request)
        embed = atom.parse_embed(self._query(request, b"embed"))
        pulled = self.persistent.pull(stream, group, count, principal)
        events = [event for event, _retry in pulled]
        feed = atom.competing_feed(events, stream, group, self._urls(request), count, embed)
        set_header(request, b"cache-control", _NO_CACHE)
        return self._ok(request, atom.render_feed(feed, media), media)

    def _ids(self, text: str) -> list[bytes]:
        try:
            return [parse_guid(unquote(t)) for t in text.split(",") if t.strip()]
        except ValueError:
            raise HttpError(400, "messageid should be a properly formed guid") from None

    def ack_messages(
        self, request: Any, raw_stream: str, raw_group: str, raw_id: Optional[str] = None
    ) -> Union[bytes, Deferred[bytes]]:
        """
        C{POST /subscriptions/{s}/{g}/ack/{id}} and C{.../ack?ids=...}.
        """
        self._require_master(request, always=True)
        stream, group = self._subscription_names(raw_stream, raw_group)
        principal = self._principal(request)
        text = raw_id if raw_id is not None else (self._query(request, b"ids") or "")
        ids = self._ids(text)

        def accepted(_: object) -> bytes:
            request.setResponseCode(202, b"Accepted")
            return b""

        if not ids:
            return accepted(None)
        # 202 once the acknowledgement is durable: a subscriber is never
        # sent an event again after its ack was accepted (issue 11)
        return self.persistent.ack_ids(stream, group, ids, principal).addCallback(accepted)

    def nack_messages(
        self, request: Any, raw_stream: str, raw_group: str, raw_id: Optional[str] = None
    ) -> bytes:
        """
        C{POST /subscriptions/{s}/{g}/nack/{id}} and C{.../nack?ids=...}.
        """
        self._require_master(request, always=True)
        from estwisted.persistent import NakAction

        stream, group = self._subscription_names(raw_stream, raw_group)
        principal = self._principal(request)
        text = raw_id if raw_id is not None else (self._query(request, b"ids") or "")
        ids = self._ids(text)
        action = {
            "park": NakAction.PARK,
            "retry": NakAction.RETRY,
            "skip": NakAction.SKIP,
            "stop": NakAction.STOP,
        }.get((self._query(request, b"action") or "").lower(), NakAction.UNKNOWN)
        if ids:
            self.persistent.nak_ids(stream, group, ids, action, principal)
        request.setResponseCode(202, b"Accepted")
        return b""

    def replay_parked(self, request: Any, raw_stream: str, raw_group: str) -> Deferred[bytes]:
        """
        C{POST /subscriptions/{s}/{g}/replayParked}.
        """
        self._require_master(request, always=True)
        stream, group = self._subscription_names(raw_stream, raw_group)
        principal = self._principal(request)
        d: Deferred[Any] = self.persistent.replay_parked(stream, group, principal)
        return d.addCallback(
            lambda _: self._subscription_reply(request, 200, b"OK", "Success")
        )

    # -- users ---------------------------------------------------------------------

    def _user_json(self, urls: atom.Urls, user: Any, links: bool = True) -> dict[str, Any]:
        login = user.login
        out: dict[str, Any] = {
            "loginName": login,
            "fullName": user.full_name,
            "groups": list(user.groups),
        }
        if not links:
            updated = getattr(user, "date_last_updated", None)
            if updated is not None:
                out["dateLastUpdated"] = updated
        out["disabled"] = bool(user.disabled)
        if links:
            u = f"{urls.base}/users/{quote(login, safe='')}"
            out["links"] = [
                {"href": f"{u}/command/reset-password", "rel": "reset-password"},
                {"href": f"{u}/command/change-password", "rel": "change-password"},
                {"href": u, "rel": "edit"},
                {"href": u, "rel": "delete"},
                (
                    {"href": f"{u}/command/enable", "rel": "enable"}
                    if user.disabled
                    else {"href": f"{u}/command/disable", "rel": "disable"}
                ),
            ]
        return out

    def _user_body(self, request: Any) -> dict[str, Any]:
        self._body_type(request, USER_BODY_TYPES)
        body = request.content.read() if request.content is not None else b""
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise HttpError(400, "Invalid request body.") from None
        if not isinstance(value, dict):
            raise HttpError(400, "Invalid request body.")
        return {str(k).lower(): v for k, v in value.items()}

    def _user_result(
        self, request: Any, d: Deferred[Any], login: str, code: int = 200
    ) -> Deferred[bytes]:
        def ok(_: Any) -> bytes:
            body = atom.dumps({"loginName": login, "success": True, "error": "Success"})
            return self._ok(request, body, atom.JSON, code, b"OK" if code == 200 else b"Created")

        def failed(f: Failure) -> Any:
            for error, status, reason, name in (
                (NotFound, 404, "Not Found", "NotFound"),
                (AlreadyExists, 409, "Conflict", "Conflict"),
                (AccessDenied, 401, "Unauthorized", "Unauthorized"),
                (NotAuthenticated, 401, "Unauthorized", "Unauthorized"),
            ):
                if f.check(error):
                    body = atom.dumps({"loginName": login, "success": False, "error": name})
                    headers = {}
                    if status == 401:
                        headers = {"WWW-Authenticate": 'BasicCustom realm="ES"'}
                    raise HttpError(status, reason, headers, body, atom.JSON)
            return f

        return d.addCallbacks(ok, failed)

    def _users_ready(self) -> Any:
        if self.users is None:
            raise HttpError(503, "Not yet ready.")
        return self.users

    def list_users(self, request: Any) -> bytes:
        """
        C{GET /users}.
        """
        self._negotiate(request, JSON_ONLY)
        principal = self._principal(request, "admin")
        users = self._users_ready().list_users(principal)
        urls = self._urls(request)
        body = {
            "data": [self._user_json(urls, u) for u in users],
            "success": True,
            "error": "Success",
        }
        return self._ok(request, atom.dumps(body), atom.JSON)

    def get_user(self, request: Any, raw_login: str) -> bytes:
        """
        C{GET /users/{login}} and C{GET /users/$current}.
        """
        login = unquote(raw_login)
        self._negotiate(request, JSON_ONLY)
        current = login == "$current"
        principal = self._principal(request, "user" if current else "admin")
        manager = self._users_ready()
        if current:
            assert principal is not None or not self.node_info.first_level_auth
            if principal is None:
                raise unauthorized()
            login = principal.login
        try:
            user = manager.get_user(login, principal)
        except NotFound:
            missing = atom.dumps({"loginName": login, "success": False, "error": "NotFound"})
            raise HttpError(404, "Not Found", body=missing, content_type=atom.JSON) from None
        data = self._user_json(self._urls(request), user, links=not current)
        reply = {"data": data, "success": True, "error": "Success"}
        return self._ok(request, atom.dumps(reply), atom.JSON)

    def create_user(self, request: Any) -> Deferred[bytes]:
        """
        C{POST /users}.
        """
        principal = self._principal(request, "admin")
        fields = self._user_body(request)
        login = fields.get("loginname")
        password = fields.get("password")
        full_name = fields.get("fullname") or ""
        groups = fields.get("groups") or []
        if not isinstance(login, str) or not login or not isinstance(password, str):
            raise HttpError(400, "loginName and password are required.")
        if not isinstance(full_name, str) or not isinstance(groups, list) or not all(
            isinstance(g, str) for g in groups
        ):
            raise HttpError(400, "Invalid request body.")
        manager = self._users_ready()
        location = f"{self.base_url(request)}/users/{quote(login, safe='')}"
        set_header(request, b"location", location.encode("ascii"))
        d = manager.create_user(login, full_name, groups, password, principal)
        return self._user_result(request, d, login, 201)

    def update_user(self, request: Any, raw_login: str) -> Deferred[bytes]:
        """
        C{PUT /users/{login}}.
        """
        login = unquote(raw_login)
        principal = self._principal(request, "admin")
        fields = self._user_body(request)
        full_name = fields.get("fullname") or ""
        groups = fields.get("groups") or []
        if not isinstance(full_name, str) or not isinstance(groups, list) or not all(
            isinstance(g, str) for g in groups
        ):
            raise HttpError(400, "Invalid request body.")
        d = self._users_ready().update_user(login, full_name, groups, principal)
        return self._user_result(request, d, login)

    def delete_user(self, request: Any, raw_login: str) -> Deferred[bytes]:
        """
        C{DELETE /users/{login}}.
        """
        login = unquote(raw_login)
        principal = self._principal(request, "admin")
        d = self._users_ready().delete_user(login, principal)
        return self._user_result(request, d, login)

    def user_command(self, request: Any, raw_login: str, command: str) -> Deferred[bytes]:
        """
        C{POST /users/{login}/command/{enable|disable|reset-password|change-password}}.
        """
        login = unquote(raw_login)
        manager = self._users_ready()
        if command in ("enable", "disable"):
            principal = self._principal(request, "admin")
            if command == "enable":
                d = manager.enable_user(login, principal)
            else:
                d = manager.disable_user(login, principal)
        elif command == "reset-password":
            principal = self._principal(request, "admin")
            fields = self._user_body(request)
            new = fields.get("newpassword")
            if not isinstance(new, str) or not new:
                raise HttpError(400, "newPassword is required.")
            d = manager.reset_password(login, new, principal)
        elif command == "change-password":
            principal = self._principal(request, "user")
            fields = self._user_body(request)
            current = fields.get("currentpassword")
            new = fields.get("newpassword")
            if not isinstance(current, str) or not isinstance(new, str) or not new:
                raise HttpError(400, "currentPassword and newPassword are required.")
            d = manager.change_password(login, current, new, principal)
        else:
            raise HttpError(404, "Not Found")
        return self._user_result(request, d, login)

    # -- operational -------------------------------------------------------------------

    def ping(self, request: Any) -> bytes:
        media, _, _ = self._negotiate(request, SIMPLE_TYPES)
        self._principal(request, "none")
        text = "Ping request successfully handled"
        if media == atom.TEXT_PLAIN:
            return self._ok(request, text.encode(), media)
        if media in atom.XML_TYPES:
            return self._ok(request, atom.xml_document(atom.json_to_xml("text", text)), media)
        return self._ok(request, atom.dumps({"text": text}), media)

    def info(self, request: Any) -> bytes:
        media, _, _ = self._negotiate(request, SIMPLE_TYPES)
        self._principal(request, "none")
        body = {
            "esVersion": ES_VERSION,
            "state": self._state().lower(),
            "projectionsMode": self.node_info.projections_mode,
        }
        if media in atom.XML_TYPES:
            return self._ok(request, atom.xml_document(atom.json_to_xml("info", body)), media)
        return self._ok(request, atom.dumps(body), atom.JSON if media == atom.TEXT_PLAIN
                        else media)

    def stats(self, request: Any, path: str = "") -> bytes:
        self._negotiate(request, SIMPLE_TYPES)
        self._principal(request, "none")
        now = self.clock.seconds()
        try:
            load = list(os.getloadavg())
        except OSError:
            load = []
        tree: dict[str, Any] = {
            "proc": {
                "startTime": _iso_now(self._started),
                "id": os.getpid(),
                "uptimeSeconds": max(0.0, now - self._started),
                "threadsCount": 1,
            },
            "sys": {"loadavg": load},
            "es": {
                "checksum": self.store.last_commit_position,
                "checksumNonFlushed": self.store.last_commit_position,
                "httpLongPollWaiters": sum(len(v) for v in self._waiters.by_stream.values()),
            },
        }
        node: Any = tree
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, dict) or part not in node:
                raise HttpError(404, "Not Found")
            node = node[part]
        set_header(request, b"cache-control", b"max-age=1, public")
        return self._ok(request, atom.dumps(node), atom.JSON)

    def gossip_document(self) -> dict[str, Any]:
        """
        The single-node cluster view (http-api.md 11.1).
        """
        info = self.node_info
        position = self.store.last_commit_position
        member = {
            "instanceId": info.instance_id,
            "timeStamp": _iso_now(self.clock.seconds()),
            "state": info.state,
            "isAlive": True,
            "internalTcpIp": info.int_ip,
            "internalTcpPort": info.int_tcp_port,
            "internalSecureTcpPort": info.int_secure_tcp_port,
            "externalTcpIp": info.ext_ip,
            "externalTcpPort": info.ext_tcp_port,
            "externalSecureTcpPort": info.ext_secure_tcp_port,
            "internalHttpIp": info.int_ip,
            "internalHttpPort": info.int_http_port,
            "externalHttpIp": info.ext_ip,
            "externalHttpPort": info.ext_http_port,
            "lastCommitPosition": position,
            "writerCheckpoint": position,
            "chaserCheckpoint": position,
            "epochPosition": 0,
            "epochNumber": 0,
            "epochId": str(uuid.UUID(int=0)),
            "nodePriority": info.node_priority,
        }
        return {"members": [member], "serverIp": info.int_ip, "serverPort": info.int_http_port}

    def gossip(self, request: Any) -> bytes:
        media, _, _ = self._negotiate(request, GOSSIP_TYPES)
        self._principal(request, "none")
        view = self.node_info.gossip_view
        doc = view() if view is not None else self.gossip_document()
        set_header(request, b"cache-control", _NO_CACHE)
        if media in atom.XML_TYPES:
            members = "".join(atom.json_to_xml("MemberInfoDto", m) for m in doc["members"])
            xml = (
                f"<ClusterInfoDto><members>{members}</members>"
                f"<serverIp>{doc['serverIp']}</serverIp>"
                f"<serverPort>{doc['serverPort']}</serverPort></ClusterInfoDto>"
            )
            return self._ok(request, atom.xml_document(xml), media)
        return self._ok(request, atom.dumps(doc), atom.JSON)

    def shutdown(self, request: Any) -> bytes:
        self._principal(request, "ops")
        hook = self.node_info.shutdown
        if hook is not None:
            self.clock.callLater(0, hook)
        request.setResponseCode(200, b"OK")
        return b""

    def reload_certificates(self, request: Any) -> bytes:
        """
        C{POST /admin/reloadcertificates} (ops): read the node's certificate
        files again, as SIGHUP does.  200 with the outcome's message when the
        new files are in use; 400 with the reason when they are broken (the
        node keeps its previous certificate) or when the node has no TLS.
        """
        self._principal(request, "ops")
        hook = self.node_info.reload_certificates
        if hook is None:
            message = "TLS is not configured on this node"
            raise HttpError(400, message, body=message.encode(), content_type=atom.TEXT_PLAIN)
        outcome = hook()
        body = str(outcome.message).encode("utf-8")
        if not outcome.ok:
            raise HttpError(
                400, "Certificate reload failed", body=body, content_type=atom.TEXT_PLAIN
            )
        return self._ok(request, body, atom.TEXT_PLAIN)

    def scavenge(self, request: Any) -> Union[bytes, Deferred[bytes]]:
        self._principal(request, "ops")
        for name in (b"startFromChunk", b"threads"):
            value = self._query(request, name)
            if value is not None:
                minimum = 0 if name == b"startFromChunk" else 1
                if not (value.isdigit() and value.isascii()) or int(value) < minimum:
                    raise HttpError(400, f"Invalid {name.decode()} parameter.")
        make = getattr(self.store, "scavenger", None)
        scavenger = make() if make is not None and self.node_info.scavenge is None else None
        if scavenger is not None:
            from estwisted.scavenger import ScavengeInProgress

            first = self._query(request, b"startFromChunk")
            try:
                scavenge_id, _ = scavenger.start(int(first) if first else 0)
            except ScavengeInProgress as e:
                raise HttpError(400, "Scavenge already running.") from e
            self._scavenges[scavenge_id] = scavenger
            return self._ok(request, atom.dumps({"scavengeId": scavenge_id}), atom.JSON)
        if any(v is not None for v in self._scavenges.values()):
            raise HttpError(400, "Scavenge already running.")
        scavenge_id = str(uuid.uuid4())
        hook = self.node_info.scavenge or getattr(self.store, "scavenge", None)
        if hook is not None:
            self._scavenges[scavenge_id] = True
            d: Deferred[Any] = Deferred.fromCoroutine(_maybe_await(hook))

            def finished(result: Any) -> None:
                self._scavenges[scavenge_id] = None
                if isinstance(result, Failure):
                    self._log.failure("Scavenge failed", result)

            d.addBoth(finished)
        else:
            self._scavenges[scavenge_id] = None
        return self._ok(request, atom.dumps({"scavengeId": scavenge_id}), atom.JSON)

    def merge_indexes(self, request: Any) -> bytes:
        """
        C{POST /admin/mergeindexes}: the index needs no merging here; the
        reply has the shape clients expect.
        """
        self._principal(request, "ops")
        return self._ok(request, atom.dumps({"mergeIndexesId": str(uuid.uuid4())}), atom.JSON)

    def info_options(self, request: Any) -> bytes:
        """
        C{GET /info/options}: the node's effective options (passwords
        blanked).
        """
        self._negotiate(request, JSON_ONLY)
        self._principal(request, "ops")
        body = [
            {
                "name": name,
                "description": "",
                "group": "",
                "value": "" if "password" in name.lower() else value,
                "possibleValues": None,
            }
            for name, value in self.node_info.options
        ]
        return self._ok(request, atom.dumps(body), atom.JSON)

    def stop_scavenge(self, request: Any, scavenge_id: str) -> bytes:
        self._principal(request, "ops")
        if scavenge_id not in self._scavenges:
            raise HttpError(404, "Not Found")
        running = self._scavenges[scavenge_id]
        if running is not None and hasattr(running, "stop"):
            running.stop(scavenge_id)
        return self._ok(request, atom.dumps(scavenge_id), atom.JSON)

    # -- Klein routes ------------------------------------------------------------------

    @app.handle_errors(Exception)
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

    # streams
    @app.route("/streams/<stream>", methods=["POST"])
    def _r_write(self, request: Any, stream: str) -> Any:
        return self._run(request, self.write_events, stream)

    @app.route("/streams/<stream>", methods=["GET"])
    def _r_feed_head(self, request: Any, stream: str) -> Any:
        return self._run(request, self.read_feed, stream)

    @app.route("/streams/<stream>", methods=["DELETE"])
    def _r_delete(self, request: Any, stream: str) -> Any:
        return self._run(request, self.delete_stream, stream)

    @app.route("/streams/<stream>/incoming/<guid>", methods=["POST"])
    def _r_incoming(self, request: Any, stream: str, guid: str) -> Any:
        return self._run(request, self.write_incoming, stream, guid)

    @app.route("/streams/<stream>/metadata", methods=["POST"])
    def _r_write_meta(self, request: Any, stream: str) -> Any:
        return self._run(request, self.write_metadata, stream)

    @app.route("/streams/<stream>/metadata", methods=["GET"])
    def _r_read_meta(self, request: Any, stream: str) -> Any:
        return self._run(request, self.read_metadata, stream)

    @app.route("/streams/<stream>/metadata/<event>", methods=["GET"])
    def _r_meta_event(self, request: Any, stream: str, event: str) -> Any:
        return self._run(request, self.read_event, stream, event, True)

    @app.route("/streams/<stream>/metadata/<event>/<count>", methods=["GET"])
    def _r_meta_feed(self, request: Any, stream: str, event: str, count: str) -> Any:
        return self._run(request, self.read_feed, stream, event, count, "backward", True)

    @app.route("/streams/<stream>/metadata/<event>/<direction>/<count>", methods=["GET"])
    def _r_meta_feed_dir(
        self, request: Any, stream: str, event: str, direction: str, count: str
    ) -> Any:
        return self._run(request, self._feed_dir, stream, event, direction, count, True)

    @app.route("/streams/<stream>/<event>", methods=["GET"])
    def _r_event(self, request: Any, stream: str, event: str) -> Any:
        return self._run(request, self._event_or_all, stream, event)

    @app.route("/streams/<stream>/<event>/<count>", methods=["GET"])
    def _r_feed(self, request: Any, stream: str, event: str, count: str) -> Any:
        return self._run(request, self.read_feed, stream, event, count, "backward")

    @app.route("/streams/<stream>/<event>/<direction>/<count>", methods=["GET"])
    def _r_feed_dir(self, request: Any, stream: str, event: str, direction: str, count: str) -> Any:
        return self._run(request, self._feed_dir, stream, event, direction, count, False)

    def _feed_dir(
        self, request: Any, stream: str, event: str, direction: str, count: str, meta: bool
    ) -> Union[bytes, Deferred[bytes]]:
        if direction not in ("forward", "backward"):
            raise HttpError(404, "Not Found")
        return self.read_feed(request, stream, event, count, direction, meta)

    def _event_or_all(self, request: Any, stream: str, event: str) -> Any:
        if _decoded(stream) == "$all":
            raise HttpError(404, "Not Found")
        return self.read_event(request, stream, event)

    # persistent subscriptions
    @app.route("/subscriptions", methods=["GET"])
    def _r_subs(self, request: Any) -> Any:
        return self._run(request, self.list_subscriptions)

    @app.route("/subscriptions/", methods=["GET"])
    def _r_subs_slash(self, request: Any) -> Any:
        return self._run(request, self.list_subscriptions)

    @app.route("/subscriptions/<stream>", methods=["GET"])
    def _r_subs_stream(self, request: Any, stream: str) -> Any:
        return self._run(request, self.list_subscriptions, stream)

    @app.route("/subscriptions/<stream>/<group>", methods=["PUT"])
    def _r_sub_create(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.create_subscription, stream, group)

    @app.route("/subscriptions/<stream>/<group>", methods=["POST"])
    def _r_sub_update(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.update_subscription, stream, group)

    @app.route("/subscriptions/<stream>/<group>", methods=["DELETE"])
    def _r_sub_delete(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.delete_subscription, stream, group)

    @app.route("/subscriptions/<stream>/<group>", methods=["GET"])
    def _r_sub_get(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.subscription_messages, stream, group)

    @app.route("/subscriptions/<stream>/<group>/info", methods=["GET"])
    def _r_sub_info(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.subscription_info, stream, group)

    @app.route("/subscriptions/<stream>/<group>/replayParked", methods=["POST"])
    def _r_sub_replay(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.replay_parked, stream, group)

    @app.route("/subscriptions/<stream>/<group>/ack", methods=["POST"])
    def _r_sub_ack_many(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.ack_messages, stream, group)

    @app.route("/subscriptions/<stream>/<group>/nack", methods=["POST"])
    def _r_sub_nack_many(self, request: Any, stream: str, group: str) -> Any:
        return self._run(request, self.nack_messages, stream, group)

    @app.route("/subscriptions/<stream>/<group>/ack/<event_id>", methods=["POST"])
    def _r_sub_ack(self, request: Any, stream: str, group: str, event_id: str) -> Any:
        return self._run(request, self.ack_messages, stream, group, event_id)

    @app.route("/subscriptions/<stream>/<group>/nack/<event_id>", methods=["POST"])
    def _r_sub_nack(self, request: Any, stream: str, group: str, event_id: str) -> Any:
        return self._run(request, self.nack_messages, stream, group, event_id)

    @app.route("/subscriptions/<stream>/<group>/<count>", methods=["GET"])
    def _r_sub_get_n(self, request: Any, stream: str, group: str, count: str) -> Any:
        return self._run(request, self.subscription_messages, stream, group, count)

    # users
    @app.route("/users", methods=["GET"])
    def _r_users(self, request: Any) -> Any:
        return self._run(request, self.list_users)

    @app.route("/users/", methods=["GET"])
    def _r_users_slash(self, request: Any) -> Any:
        return self._run(request, self.list_users)

    @app.route("/users", methods=["POST"])
    def _r_user_create(self, request: Any) -> Any:
        return self._run(request, self.create_user)

    @app.route("/users/", methods=["POST"])
    def _r_user_create_slash(self, request: Any) -> Any:
        return self._run(request, self.create_user)

    @app.route("/users/<login>", methods=["GET"])
    def _r_user(self, request: Any, login: str) -> Any:
        return self._run(request, self.get_user, login)

    @app.route("/users/<login>", methods=["PUT"])
    def _r_user_update(self, request: Any, login: str) -> Any:
        return self._run(request, self.update_user, login)

    @app.route("/users/<login>", methods=["DELETE"])
    def _r_user_delete(self, request: Any, login: str) -> Any:
        return self._run(request, self.delete_user, login)

    @app.route("/users/<login>/command/<command>", methods=["POST"])
    def _r_user_command(self, request: Any, login: str, command: str) -> Any:
        return self._run(request, self.user_command, login, command)

    # operational
    @app.route("/ping", methods=["GET"])
    def _r_ping(self, request: Any) -> Any:
        return self._run(request, self.ping)

    @app.route("/info", methods=["GET"])
    def _r_info(self, request: Any) -> Any:
        return self._run(request, self.info)

    @app.route("/stats", methods=["GET"])
    def _r_stats(self, request: Any) -> Any:
        return self._run(request, self.stats)

    @app.route("/stats/<path:path>", methods=["GET"])
    def _r_stats_path(self, request: Any, path: str) -> Any:
        return self._run(request, self.stats, path)

    @app.route("/gossip", methods=["GET"])
    def _r_gossip(self, request: Any) -> Any:
        return self._run(request, self.gossip)

    @app.route("/admin/shutdown", methods=["POST"])
    def _r_shutdown(self, request: Any) -> Any:
        return self._run(request, self.shutdown)

    @app.route("/admin/reloadcertificates", methods=["POST"])
    def _r_reload_certificates(self, request: Any) -> Any:
        return self._run(request, self.reload_certificates)

    @app.route("/admin/scavenge", methods=["POST"])
    def _r_scavenge(self, request: Any) -> Any:
        return self._run(request, self.scavenge)

    @app.route("/admin/mergeindexes", methods=["POST"])
    def _r_merge_indexes(self, request: Any) -> Any:
        return self._run(request, self.merge_indexes)

    @app.route("/info/options", methods=["GET"])
    def _r_info_options(self, request: Any) -> Any:
        return self._run(request, self.info_options)

    @app.route("/admin/scavenge/<scavenge_id>", methods=["DELETE"])
    def _r_stop_scavenge(self, request: Any, scavenge_id: str) -> Any:
        return self._run(request, self.stop_scavenge, scavenge_id)

    # projections (issue 16): the standard projections' part of the v5 API
    @app.route("/projections/<kind>", methods=["GET"])
    def _r_projections(self, request: Any, kind: str) -> Any:
        return self._run(request, self.list_projections, kind)

    @app.route("/projection/<name>", methods=["GET"])
    def _r_projection(self, request: Any, name: str) -> Any:
        return self._run(request, self.projection_part, name, "")

    @app.route("/projection/<name>/<part>", methods=["GET"])
    def _r_projection_part(self, request: Any, name: str, part: str) -> Any:
        return self._run(request, self.projection_part, name, part)

    @app.route("/projection/<name>/command/<command>", methods=["POST"])
    def _r_projection_command(self, request: Any, name: str, command: str) -> Any:
        return self._run(request, self.projection_command, name, command)

    def _projections(self, name: Optional[str] = None) -> Any:
        service = self.node_info.projections
        if service is None or (name is not None and name not in service.runners):
            raise HttpError(404, "Not Found")
        return service

    def list_projections(self, request: Any, kind: str) -> bytes:
        """
        C{GET /projections/{any|all-non-transient|continuous|onetime|transient}}.
        """
        from estwisted.projections import _status

        self._principal(request, "none")
        service = self._projections()
        if kind in _status.CONTINUOUS_LISTS:
            base = self.base_url(request)
            items = [service.statistics(name, base) for name in service.runners]
        elif kind in _status.OTHER_LISTS:
            items = []
        else:
            raise HttpError(404, "Not Found")
        return self._ok(request, atom.dumps({"projections": items}), atom.JSON)

    def projection_part(self, request: Any, name: str, part: str) -> bytes:
        """
        C{GET /projection/{name}} and its C{/statistics}, C{/state},
        C{/result}, C{/query} and C{/config}.
        """
        from estwisted.projections import _service, _status

        self._principal(request, "none")
        service = self._projections(name)
        if part == "":
            body = service.statistics(name, self.base_url(request))
        elif part == "statistics":
            body = {"projections": [service.statistics(name, self.base_url(request))]}
        elif part in ("state", "result"):
            # the standard projections keep no state
            body = {}
        elif part == "query":
            text = _status.SYSTEM_QUERIES.get(name, "")
            return self._ok(request, text.encode(), atom.TEXT_PLAIN)
        elif part == "config":
            body = _status.config(_service.CHECKPOINT_EVERY)
        else:
            raise HttpError(404, "Not Found")
        return self._ok(request, atom.dumps(body), atom.JSON)

    def projection_command(self, request: Any, name: str, command: str) -> Any:
        """
        C{POST /projection/{name}/command/{enable|disable|abort|reset}}
        ($ops).
        """
        self._principal(request, "ops")
        service = self._projections(name)
        body = atom.dumps({"name": name})
        if command == "enable":
            d = service.enable(name)
        elif command in ("disable", "abort"):
            d = service.disable(name)
        elif command == "reset":
            d = service.reset(name)
        else:
            raise HttpError(404, "Not Found")
        return d.addCallback(lambda _: self._ok(request, body, atom.JSON))



_UNAUTHENTICATED: Any = object()

#: First path segments of L{estwisted.web.WebResource}'s paths.
_WEB_SEGMENTS = frozenset({b"", b"web", b"metrics"})

#: Single-event media types whose body has no URLs in it.
_DATA_ONLY = frozenset(
    {atom.JSON, atom.OCTET_STREAM, atom.EVENT_JSON, atom.TEXT_XML, atom.APP_XML, atom.EVENT_XML}
)
_NO_URLS = atom.Urls("")


def accepts_gzip(accept_encoding: Optional[str]) -> bool:
    """
    Whether an C{Accept-Encoding} value allows gzip (C{q} > 0).
    """
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = 1.0
            for p in params.split(";"):
                key, _, value = p.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(value)
                    except ValueError:
                        q = 0.0
            return q > 0
    return False


#: Bodies at least this long are compressed for clients that accept gzip.
GZIP_MIN = 1024


def _sized(body: bytes, request: Any) -> bytes:
    """
    Set Content-Length so replies are not chunked; compress larger bodies
    for clients that accept gzip (http-api.md 1.4).
    """
    if len(body) >= GZIP_MIN and request.code == 200:
        if accepts_gzip(get_header(request, b"accept-encoding")):
            body = gzip.compress(body, compresslevel=1, mtime=0)
            set_header(request, b"content-encoding", b"gzip")
    if body or request.code not in (204, 304):
        set_header(request, b"content-length", b"%d" % len(body))
    return body


def _decoded(raw: str) -> str:
    return unquote(raw) if "%" in raw else raw


def _feed_type(media: str) -> str:
    """
    The Content-Type of a feed reply for the negotiated type.
    """
    if media in (atom.EVENT_JSON, atom.EVENTS_JSON):
        return atom.ATOM_JSON
    if media in (atom.EVENT_XML, atom.EVENTS_XML, atom.TEXT_HTML):
        return atom.ATOM_XML
    return media


async def _maybe_await(hook: Callable[[], Any]) -> Any:
    result = hook()
    if isinstance(result, Deferred):
        return await result
    return result


class ApiRoot(Resource):
    """
    The root resource: the hot C{/streams/...} routes go straight to the
    handlers (skipping Klein's per-request routing cost); everything else
    goes through the Klein app.
    """

    isLeaf = True

    def __init__(self, api: HttpApi) -> None:
        super().__init__()
        self._api = api
        self._klein = api.app.resource()

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
            return _sized(api._failed(request, Failure(e)), request)
        parts = path.split(b"/")
        # parts[0] is "" for "/streams/..."
        if len(parts) >= 3 and parts[1] == b"streams":
            if all(parts[2:]):
                result = self._fast(request, method, parts)
                if result is not None:
                    return _finish(request, result)
            elif parts[-1] == b"" and all(parts[2:-1]) and method != b"OPTIONS":
                tail = parts[3:-1]
                if (not tail and method in (b"GET", b"POST", b"DELETE")) or (
                    tail == [b"metadata"] and method in (b"GET", b"POST")
                ):
                    return api._run(request, api._redirect_slash)
        if api.web is not None and parts[1] in _WEB_SEGMENTS and is_web_path(path):
            # The admin UI and /metrics (estwisted.web): anonymous, as /stats.
            return api.web.render(request)
        if method == b"OPTIONS":
            return self._options(request)
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            api._cors(request)
            error = HttpError(400, "Invalid URL encoding.")
            return _sized(api._reply_error(request, error), request)
        # Route on the raw segments (as Event Store does: an encoded "/"
        # stays inside its segment); handlers percent-decode parameters
        # exactly once.
        request.postpath = path[1:].split(b"/")
        return self._klein.render(request)

    def _fast(self, request: Any, method: bytes, parts: list[bytes]) -> Any:
        api = self._api
        try:
            segments = [p.decode("utf-8") for p in parts[2:]]
        except UnicodeDecodeError:
            return None
        n = len(segments)
        if "metadata" in segments[1:] or "incoming" in segments[1:]:
            return None
        if method == b"POST" and n == 1:
            return api._run(request, api.write_events, segments[0])
        if method == b"GET" and n == 1:
            return api._run(request, api.read_feed, segments[0])
        if method == b"GET" and n == 2:
            return api._run(request, api._event_or_all, segments[0], segments[1])
        if method == b"GET" and n == 3:
            return api._run(request, api.read_feed, segments[0], segments[1], segments[2])
        if method == b"GET" and n == 4 and segments[2] in ("forward", "backward"):
            return api._run(
                request, api.read_feed, segments[0], segments[1], segments[3], segments[2]
            )
        return None

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


def _finish(request: Any, result: Union[bytes, Deferred[bytes]]) -> Any:
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


__all__ = [
    "ApiRoot",
    "HttpApi",
    "HttpError",
    "LimitedRequest",
    "NodeInfo",
    "QuietSite",
    "error_for",
    "limited_request_factory",
    "negotiate",
]
