# -*- test-case-name: estwisted.http.test.test_api -*-
"""
Content negotiation and request parsing of the HTTP API (http-api.md 1.3):
media types per route, C{Accept} negotiation, header and body parsing
(events as JSON or XML, credentials, versions, ids), the error-to-status
map (L{error_for}) and reply sizing (C{Content-Length}, gzip).  Plain
functions over values and request objects; no routing, no core.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Optional, Union
from urllib.parse import unquote
from xml.etree import ElementTree

from twisted.web.http_headers import Headers

from estwisted.core.errors import (
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
from estwisted.core.model import (
    DELETED_STREAM,
    MAX_READ_COUNT,
    NewEvent,
)
from estwisted.wire import atom

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
ARRAY_JSON = frozenset({atom.EVENTS_JSON, atom.EVENT_JSON})
ARRAY_XML = frozenset({atom.EVENTS_XML, atom.EVENT_XML})
#: Request types whose body is one raw event.
RAW_JSON = frozenset({atom.JSON})
RAW_OTHER = frozenset({atom.TEXT_XML, atom.APP_XML, atom.OCTET_STREAM})
#: Types that carry neither ids nor types in v5's eyes.
NO_ID_TYPES = frozenset(
    {atom.JSON, atom.TEXT_XML, atom.APP_XML, atom.OCTET_STREAM, atom.ATOM_XML, atom.ATOM_JSON}
)

FORMAT_PARAM = {
    "json": atom.JSON,
    "text": atom.TEXT_PLAIN,
    "xml": atom.TEXT_XML,
    "atom": atom.ATOM_XML,
    "atomxj": atom.ATOM_JSON,
    "atomsvc": "application/atomsvc+xml",
    "atomsvcxj": "application/vnd.eventstore.atomsvc+json",
}

CORS_HEADERS = (
    b"Content-Type, X-Requested-With, X-Forwarded-Host, X-Forwarded-Prefix, X-PINGOTHER, "
    b"Authorization, ES-LongPoll, ES-ExpectedVersion, ES-EventId, ES-EventType, "
    b"ES-RequiresMaster, ES-HardDelete, ES-ResolveLinkTos"
)
CORS_EXPOSE = b"Location, ES-Position, ES-CurrentVersion"
CORS_FIXED = (
    (b"access-control-allow-headers", CORS_HEADERS),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", CORS_EXPOSE),
)
CACHE_FOREVER = b"max-age=31536000, public"
CACHE_PRIVATE = b"max-age=31536000, private"
NO_CACHE = b"max-age=0, no-cache, must-revalidate"

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


def json_body(value: Any) -> tuple[bytes, bool]:
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


def check_size(data: bytes, metadata: bytes) -> None:
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
        data, data_json = json_body(fields.get("data"))
        metadata, meta_json = json_body(fields.get("metadata"))
        check_size(data, metadata)
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
            parts.append(json_body(_xml_to_json(el)) if el is not None else (b"", False))
        (data, dj), (metadata, mj) = parts
        check_size(data, metadata)
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


def iso_now(seconds: float) -> str:
    t = time.gmtime(seconds)
    micro = int((seconds % 1) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{micro:06d}Z"


_canonical_names: dict[bytes, bytes] = {}


def canonical_header(name: bytes) -> bytes:
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
        values = headers.getRawHeaders(canonical_header(name))
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
    raw[key if key is not None else canonical_header(name)] = [value]


ALL_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
CORS_RAW = {
    canonical_header(name): [value]
    for name, value in ((b"access-control-allow-methods", ALL_METHODS), *CORS_FIXED)
}
for _name in (
    b"host", b"accept", b"authorization", b"content-type", b"es-expectedversion",
    b"es-requiremaster", b"es-eventid", b"es-eventtype", b"es-trustedauth",
    b"es-resolvelinktos", b"es-longpoll", b"es-harddelete", b"if-none-match",
    b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-prefix",
):
    canonical_header(_name)


UNAUTHENTICATED: Any = object()

#: First path segments of L{estwisted.web.WebResource}'s paths.
WEB_SEGMENTS = frozenset({b"", b"web", b"metrics", b"progress"})

#: Single-event media types whose body has no URLs in it.
DATA_ONLY = frozenset(
    {atom.JSON, atom.OCTET_STREAM, atom.EVENT_JSON, atom.TEXT_XML, atom.APP_XML, atom.EVENT_XML}
)
NO_URLS = atom.Urls("")


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


def sized(body: bytes, request: Any) -> bytes:
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


def decoded(raw: str) -> str:
    return unquote(raw) if "%" in raw else raw


def feed_type(media: str) -> str:
    """
    The Content-Type of a feed reply for the negotiated type.
    """
    if media in (atom.EVENT_JSON, atom.EVENTS_JSON):
        return atom.ATOM_JSON
    if media in (atom.EVENT_XML, atom.EVENTS_XML, atom.TEXT_HTML):
        return atom.ATOM_XML
    return media


