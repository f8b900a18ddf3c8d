# -*- test-case-name: estwisted.wire.test.test_atom -*-
"""
Pure rendering of the Event Store v5 AtomPub representations (http-api.md
sections 5.3-5.9 and 8): feeds and entries as JSON
(C{application/vnd.eventstore.atom+json}) and XML (C{application/atom+xml}),
paging links, C{embed} options, the stream description document, the
competing-consumer feed, and the 32-hex-digit C{$all} position encoding.

Everything here turns model values (L{StreamSlice}, L{AllSlice},
L{ResolvedEvent}, L{EventRecord}) into plain Python structures or bytes; no
I/O, no reactor, no Twisted.
"""

from __future__ import annotations

import enum
import json
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Optional
from urllib.parse import quote
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr as _xml_quoteattr

from attrs import frozen

from estwisted.core.model import AllSlice, EventRecord, ResolvedEvent, StreamSlice

# -- media types -------------------------------------------------------------

ATOM_JSON = "application/vnd.eventstore.atom+json"
ATOM_XML = "application/atom+xml"
JSON = "application/json"
TEXT_XML = "text/xml"
APP_XML = "application/xml"
EVENTS_JSON = "application/vnd.eventstore.events+json"
EVENTS_XML = "application/vnd.eventstore.events+xml"
EVENT_JSON = "application/vnd.eventstore.event+json"
EVENT_XML = "application/vnd.eventstore.event+xml"
STREAMDESC_JSON = "application/vnd.eventstore.streamdesc+json"
COMPETING_JSON = "application/vnd.eventstore.competingatom+json"
COMPETING_XML = "application/vnd.eventstore.competingatom+xml"
OCTET_STREAM = "application/octet-stream"
TEXT_HTML = "text/html"
TEXT_PLAIN = "text/plain"

#: Media types whose representation is JSON.
JSON_TYPES = frozenset({ATOM_JSON, JSON, EVENT_JSON, EVENTS_JSON, STREAMDESC_JSON, COMPETING_JSON})
#: Media types whose representation is XML.
XML_TYPES = frozenset({ATOM_XML, TEXT_XML, APP_XML, EVENT_XML, EVENTS_XML, COMPETING_XML})

ATOM_NS = "http://www.w3.org/2005/Atom"
EMPTY_UPDATED = "0001-01-01T00:00:00Z"
_AUTHOR = {"name": "EventStore"}


class Embed(enum.Enum):
    """
    The C{?embed=} option of feed routes.
    """

    NONE = "none"
    CONTENT = "content"
    RICH = "rich"
    BODY = "body"
    PRETTY = "pretty"
    TRYHARDER = "tryharder"

    @property
    def is_rich(self) -> bool:
        return self in (Embed.RICH, Embed.BODY, Embed.PRETTY, Embed.TRYHARDER)

    @property
    def has_body(self) -> bool:
        return self in (Embed.BODY, Embed.PRETTY, Embed.TRYHARDER)


def parse_embed(value: Optional[str]) -> Embed:
    """
    Parse an C{embed} query value, case-insensitively; unknown values (and
    C{prettybody}'s v5 spelling C{PrettyBody}) map as Event Store does.
    """
    if not value:
        return Embed.NONE
    v = value.lower()
    if v == "prettybody":
        return Embed.PRETTY
    try:
        return Embed(v)
    except ValueError:
        return Embed.NONE


# -- small encodings ---------------------------------------------------------


@lru_cache(maxsize=4096)
def escape_stream(name: str) -> str:
    """
    Percent-encode a stream (or group) name for a URL path segment with
    RFC 3986 rules: only unreserved characters stay as they are.
    """
    return quote(name, safe="")


def encode_position(commit: int, prepare: int) -> str:
    """
    Encode a C{$all} position as 32 upper-case hex digits: 16 of the commit
    position followed by 16 of the prepare position (two's complement for
    negative values, as .NET's C{ToString("X16")} does).
    """
    return f"{commit & 0xFFFFFFFFFFFFFFFF:016X}{prepare & 0xFFFFFFFFFFFFFFFF:016X}"


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def decode_position(text: str) -> tuple[int, int]:
    """
    Decode a 32-hex-digit C{$all} position (any case).

    @raise ValueError: not exactly 32 hex digits.
    """
    if len(text) != 32 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"Invalid position argument: {text}")
    return _signed64(int(text[:16], 16)), _signed64(int(text[16:], 16))


_TICKS_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def format_ticks(ticks: int) -> str:
    """
    Format .NET ticks as ISO-8601 UTC with C{Z}, up to 7 fraction digits,
    trailing zeros removed.
    """
    if ticks <= 0:
        return EMPTY_UPDATED
    seconds, frac = divmod(ticks, 10_000_000)
    text = _format_seconds(seconds)
    if frac:
        text += "." + f"{frac:07d}".rstrip("0")
    return text + "Z"


@lru_cache(maxsize=1024)
def _format_seconds(seconds: int) -> str:
    try:
        moment = _TICKS_EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return EMPTY_UPDATED[:-1]
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


def format_uuid(raw: bytes) -> str:
    """
    Hyphenated lower-case form of a 16-byte RFC 4122 event id.
    """
    if len(raw) != 16:
        return "00000000-0000-0000-0000-000000000000"
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def media_type_hash(media_type: str) -> int:
    """
    A stable signed 32-bit hash of a media type, used in ETags.
    """
    value = zlib.crc32(media_type.encode("ascii", "replace"))
    return value - (1 << 32) if value >= (1 << 31) else value


def make_etag(version: int, media_type: str) -> str:
    """
    The ETag value (without quotes) Event Store uses: C{<version>;<hash>}.
    """
    return f"{version};{media_type_hash(media_type)}"


def decode_text(data: bytes) -> str:
    """
    Stored bytes as text (invalid UTF-8 replaced).
    """
    return data.decode("utf-8", "replace")


def parse_json_or_text(data: bytes) -> Any:
    """
    The parsed JSON value of C{data}, or its text if it is not JSON.
    """
    text = decode_text(data)
    try:
        return json.loads(text)
    except ValueError:
        return text


def dumps(obj: Any) -> bytes:
    """
    Serialise a representation as compact UTF-8 JSON.
    """
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- entries -----------------------------------------------------------------


@frozen
class Urls:
    """
    Builds the absolute URLs that appear in bodies.

    @ivar base: scheme, host and port (and any forwarded prefix), no
        trailing slash, e.g. C{http://127.0.0.1:2113}.
    """

    base: str

    def stream(self, stream: str) -> str:
        return f"{self.base}/streams/{escape_stream(stream)}"

    def event(self, stream: str, number: int) -> str:
        return f"{self.base}/streams/{escape_stream(stream)}/{number}"

    def subscription(self, stream: str, group: str) -> str:
        return f"{self.base}/subscriptions/{escape_stream(stream)}/{escape_stream(group)}"


def event_content(record: EventRecord) -> dict[str, Any]:
    """
    The C{content} object of an entry and the body of an
    C{application/vnd.eventstore.event+json} single-event read.
    """
    return {
        "eventStreamId": record.stream,
        "eventNumber": record.event_number,
        "eventType": record.event_type,
        "eventId": format_uuid(record.event_id),
        "data": parse_json_or_text(record.data),
        "metadata": parse_json_or_text(record.metadata) if record.metadata else "",
    }


def _pretty(text: str) -> Optional[str]:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def entry_json(
    resolved: ResolvedEvent,
    urls: Urls,
    embed: Embed,
    with_content: bool = False,
) -> dict[str, Any]:
    """
    One Atom entry as JSON (http-api.md 5.4).

    @param with_content: add C{content} for JSON events (single-event reads
        and C{embed=content} feeds).
    """
    link = resolved.link
    event = resolved.event if resolved.event is not None else resolved.original
    original = resolved.original
    from_link = link is not None and resolved.event is not None
    entry: dict[str, Any] = {}
    if embed.is_rich:
        entry["eventId"] = format_uuid(event.event_id)
        entry["eventType"] = event.event_type
        entry["eventNumber"] = event.event_number
        is_json = event.is_json
        if embed.has_body:
            text = decode_text(event.data)
            if embed is Embed.TRYHARDER:
                pretty = _pretty(text)
                if pretty is not None and text.lstrip().startswith("{"):
                    entry["data"] = pretty
                    is_json = True
                else:
                    entry["data"] = text
            elif is_json:
                if embed is Embed.PRETTY:
                    pretty = _pretty(text)
                    entry["data"] = pretty if pretty is not None else text
                else:
                    entry["data"] = text
            if event.metadata:
                entry["metaData"] = decode_text(event.metadata)
            if from_link and link is not None and link.metadata:
                entry["linkMetaData"] = decode_text(link.metadata)
        entry["streamId"] = event.stream
        entry["isJson"] = is_json
        entry["isMetaData"] = bool(event.metadata)
        entry["isLinkMetaData"] = bool(from_link and link is not None and link.metadata)
        entry["positionEventNumber"] = original.event_number
        entry["positionStreamId"] = original.stream
    uri = urls.event(event.stream, event.event_number)
    entry["title"] = f"{event.event_number}@{event.stream}"
    entry["id"] = uri
    entry["updated"] = format_ticks(original.created)
    entry["author"] = _AUTHOR
    entry["summary"] = "$>" if from_link else event.event_type
    if with_content and event.is_json:
        entry["content"] = event_content(event)
    entry["links"] = [
        {"uri": uri, "relation": "edit"},
        {"uri": uri, "relation": "alternate"},
    ]
    return entry


# -- feeds -------------------------------------------------------------------


def _link(uri: str, relation: str) -> dict[str, str]:
    return {"uri": uri, "relation": relation}


def _entries(
    events: Iterable[ResolvedEvent], urls: Urls, embed: Embed
) -> list[dict[str, Any]]:
    with_content = embed is Embed.CONTENT
    return [entry_json(e, urls, embed, with_content) for e in events]


@frozen
class FeedPage:
    """
    A feed page: C{feed} holds every field but C{entries}, built from
    C{events} (newest first) when rendered; C{cacheable} and C{version}
    tell the HTTP edge which caching headers to set.

    @ivar cacheable: the page can no longer change.
    @ivar version: the version used in the ETag of a non-cacheable page.
    """

    feed: dict[str, Any]
    cacheable: bool
    version: int
    events: Sequence[ResolvedEvent] = ()
    embed: Embed = Embed.NONE

    def with_entries(self, urls: Urls) -> dict[str, Any]:
        """
        The whole feed as a JSON-able dict.
        """
        feed = dict(self.feed)
        feed["entries"] = _entries(self.events, urls, self.embed)
        return feed

    def render(self, media_type: str, urls: Urls, cache: Optional[EntryCache] = None) -> bytes:
        """
        Serialise for a media type; JSON entries come from C{cache} when
        one is given (entries of a record never change).
        """
        if media_type in XML_TYPES or cache is None:
            return render_feed(self.with_entries(urls), media_type)
        with_content = self.embed is Embed.CONTENT
        entries = [cache.entry(e, urls, self.embed, with_content) for e in self.events]
        head = dumps(self.feed)
        return head[:-1] + b',"entries":[' + b",".join(entries) + b"]}"


class EntryCache:
    """
    Serialised JSON entries by record: an entry depends only on the
    (immutable) records it shows, the base URL and the embed mode.

    @ivar size: entries kept; the cache is emptied when it fills up.
    """

    def __init__(self, size: int = 20000) -> None:
        self.size = size
        self._entries: dict[tuple[Any, ...], bytes] = {}

    def entry(
        self, resolved: ResolvedEvent, urls: Urls, embed: Embed, with_content: bool
    ) -> bytes:
        original = resolved.original
        target = resolved.event
        key = (
            original.position,
            original.event_id,
            -1 if target is None or target is original else target.position,
            urls.base,
            embed,
            with_content,
        )
        cached = self._entries.get(key)
        if cached is None:
            cached = dumps(entry_json(resolved, urls, embed, with_content))
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = cached
        return cached


def stream_feed(
    slice_: StreamSlice,
    stream: str,
    urls: Urls,
    from_event: Optional[int],
    count: int,
    forward: bool,
    embed: Embed,
    etag_media_type: str = ATOM_JSON,
) -> FeedPage:
    """
    A stream feed page (http-api.md 5.3).

    @param from_event: the requested start, C{None} for C{head}.
    @param count: the requested page size.
    """
    last = slice_.last_event_number
    events = list(slice_.events)
    if forward:
        events.reverse()
    start = last if from_event is None else from_event
    s = urls.stream(stream)
    eos = slice_.is_end_of_stream
    links = [_link(s, "self"), _link(f"{s}/head/backward/{count}", "first")]
    if forward:
        if start - 1 >= 0:
            links.append(_link(f"{s}/0/forward/{count}", "last"))
            links.append(_link(f"{s}/{start - 1}/backward/{count}", "next"))
        if not eos or events:
            links.append(
                _link(f"{s}/{min(start + count - 1, last) + 1}/forward/{count}", "previous")
            )
    else:
        if not eos:
            links.append(_link(f"{s}/0/forward/{count}", "last"))
            links.append(_link(f"{s}/{start - count}/backward/{count}", "next"))
        links.append(_link(f"{s}/{min(start, last) + 1}/forward/{count}", "previous"))
    links.append(_link(f"{s}/metadata", "metadata"))
    if events:
        newest_or_oldest = events[-1] if forward else events[0]
        updated = format_ticks(newest_or_oldest.original.created)
    else:
        updated = EMPTY_UPDATED
    feed: dict[str, Any] = {
        "title": f"Event stream '{stream}'",
        "id": s,
        "updated": updated,
        "streamId": stream,
        "author": _AUTHOR,
        "headOfStream": eos if forward else from_event is None,
    }
    if not forward:
        feed["selfUrl"] = s
        if from_event is None:
            feed["eTag"] = make_etag(last, etag_media_type)
    feed["links"] = links
    if forward:
        cacheable = len(events) == count
    else:
        cacheable = from_event is not None and from_event <= last
    return FeedPage(feed, cacheable, last, events, embed)


def all_feed(
    slice_: AllSlice,
    urls: Urls,
    from_position: Optional[int],
    count: int,
    forward: bool,
    embed: Embed,
    last_commit_position: int,
) -> FeedPage:
    """
    A C{$all} feed page (http-api.md 5.3).  A log position is both the
    commit and the prepare position of a record.

    @param from_position: the requested position, C{None} for C{head}.
    """
    events = list(slice_.events)
    if forward:
        events.reverse()
    s = f"{urls.base}/streams/%24all"
    full = len(events) == count
    links = [_link(s, "self"), _link(f"{s}/head/backward/{count}", "first")]
    zero = encode_position(0, 0)
    if forward:
        requested = slice_.position if from_position is None else from_position
        if requested != 0:
            links.append(_link(f"{s}/{zero}/forward/{count}", "last"))
            p = encode_position(requested, requested)
            links.append(_link(f"{s}/{p}/backward/{count}", "next"))
        if events:
            n = slice_.next_position
            links.append(_link(f"{s}/{encode_position(n, n)}/forward/{count}", "previous"))
    else:
        if full:
            links.append(_link(f"{s}/{zero}/forward/{count}", "last"))
            n = slice_.next_position
            links.append(_link(f"{s}/{encode_position(n, n)}/backward/{count}", "next"))
        if events:
            after = events[0].original.next_position
        else:
            after = slice_.position
        links.append(_link(f"{s}/{encode_position(after, after)}/forward/{count}", "previous"))
    links.append(_link(f"{s}/metadata", "metadata"))
    feed: dict[str, Any] = {
        "title": "All events",
        "id": s,
        "updated": format_ticks(events[0].original.created) if events else EMPTY_UPDATED,
        "author": _AUTHOR,
        "headOfStream": False,
        "links": links,
    }
    if forward:
        cacheable = full
    else:
        cacheable = from_position is not None and from_position <= last_commit_position
    return FeedPage(feed, cacheable, last_commit_position, events, embed)


def competing_feed(
    events: Sequence[ResolvedEvent],
    stream: str,
    group: str,
    urls: Urls,
    count: int,
    embed: Embed,
) -> dict[str, Any]:
    """
    The persistent-subscription feed (http-api.md 8): C{events} are the
    messages handed out, oldest first; entries are newest first and carry
    C{ack}/C{nack} links named by the original event id.
    """
    s = urls.subscription(stream, group)
    ordered = list(reversed(events))
    ids = [format_uuid(e.original.event_id) for e in ordered]
    links = []
    if ordered:
        # ackAll/nackAll list the ids in the order handed out (as v5 does),
        # the entries are newest first
        joined = ",".join(reversed(ids))
        links.append(_link(f"{s}/ack?ids={joined}", "ackAll"))
        links.append(_link(f"{s}/nack?ids={joined}", "nackAll"))
    links.append(_link(f"{s}/{count}", "previous"))
    links.append(_link(s, "self"))
    entries = []
    for resolved, event_id in zip(ordered, ids, strict=True):
        entry = entry_json(resolved, urls, embed, embed is Embed.CONTENT)
        entry["links"] = entry["links"] + [
            _link(f"{s}/ack/{event_id}", "ack"),
            _link(f"{s}/nack/{event_id}", "nack"),
        ]
        entries.append(entry)
    return {
        "title": f"Messages for '{stream}/{group}'",
        "id": s,
        "updated": format_ticks(ordered[0].original.created) if ordered else EMPTY_UPDATED,
        "author": _AUTHOR,
        "headOfStream": False,
        "links": links,
        "entries": entries,
    }


def description_document(stream: str, groups: Sequence[str] = ()) -> dict[str, Any]:
    """
    The stream description document (http-api.md 5.9).
    """
    path = f"/streams/{escape_stream(stream)}"
    links: dict[str, Any] = {
        "self": {"href": path, "supportedContentTypes": [STREAMDESC_JSON]},
        "stream": {"href": path, "supportedContentTypes": [ATOM_XML, ATOM_JSON]},
    }
    if groups:
        links["streamSubscription"] = [
            {
                "href": f"/subscriptions/{escape_stream(stream)}/{escape_stream(g)}",
                "supportedContentTypes": [COMPETING_XML, COMPETING_JSON],
            }
            for g in groups
        ]
    return {
        "title": f"Description document for '{stream}'",
        "description": (
            "The description document will be presented when no accept header is "
            "present or it was requested"
        ),
        "_links": links,
    }


# -- single events -----------------------------------------------------------


def single_event_body(
    resolved: ResolvedEvent, media_type: str, urls: Urls, embed: Embed
) -> bytes:
    """
    The body of a single-event read for a chosen media type (http-api.md 5.5).
    """
    event = resolved.event if resolved.event is not None else resolved.original
    if media_type == ATOM_JSON:
        return dumps(entry_json(resolved, urls, embed, with_content=True))
    if media_type == ATOM_XML:
        return xml_document(entry_xml(entry_json(resolved, urls, embed, with_content=True)))
    if media_type == JSON:
        if event.is_json:
            return event.data or b"{}"
        return dumps(decode_text(event.data))
    if media_type == EVENT_JSON:
        return dumps(event_content(event))
    if media_type in (TEXT_XML, APP_XML):
        value = parse_json_or_text(event.data) if event.is_json else decode_text(event.data)
        return xml_document(json_to_xml("data", value))
    if media_type == EVENT_XML:
        return xml_document(json_to_xml("event", event_content(event)))
    if media_type == TEXT_HTML:
        uri = urls.event(event.stream, event.event_number)
        return (
            "<!DOCTYPE html><html><head><title>"
            + _xml_escape(f"{event.event_number}@{event.stream}")
            + "</title></head><body><a href="
            + _xml_quoteattr(uri)
            + ">"
            + _xml_escape(uri)
            + "</a></body></html>"
        ).encode("utf-8")
    return bytes(event.data)


# -- XML ---------------------------------------------------------------------


def _xml_name(key: str) -> str:
    """
    A usable XML element name for a JSON key.
    """
    out = []
    for i, c in enumerate(key):
        if (c.isascii() and c.isalnum()) or c == "_" or (i > 0 and c in "-."):
            out.append(c)
        else:
            out.append("_")
    name = "".join(out) or "_"
    if name[0].isdigit() or name[0] in "-.":
        name = "_" + name
    return name


def _xml_text(value: str) -> str:
    # Characters XML 1.0 cannot carry at all are dropped.
    cleaned = "".join(
        c for c in value if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
        or c >= "\U00010000"
    )
    return _xml_escape(cleaned)


def json_to_xml(name: str, value: Any) -> str:
    """
    Convert a JSON value into an XML element named C{name}: objects become
    child elements, arrays repeated elements, scalars text.
    """
    tag = _xml_name(name)
    if isinstance(value, dict):
        inner = "".join(json_to_xml(str(k), v) for k, v in value.items())
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(value, list):
        return "".join(json_to_xml(name, v) for v in value) or f"<{tag} />"
    if value is None:
        return f"<{tag} />"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return f"<{tag}>{_xml_text(text)}</{tag}>"


def _links_xml(links: Iterable[dict[str, str]]) -> str:
    return "".join(
        f"<link href={_xml_quoteattr(link['uri'])} rel={_xml_quoteattr(link['relation'])} />"
        for link in links
    )


def entry_xml(entry: dict[str, Any], root: bool = True) -> str:
    """
    An Atom C{<entry>} from the JSON form of an entry.
    """
    ns = f' xmlns="{ATOM_NS}"' if root else ""
    parts = [
        f"<entry{ns}>",
        f"<title>{_xml_text(entry['title'])}</title>",
        f"<id>{_xml_text(entry['id'])}</id>",
        f"<updated>{entry['updated']}</updated>",
        "<author><name>EventStore</name></author>",
        f"<summary>{_xml_text(entry['summary'])}</summary>",
        _links_xml(entry["links"]),
    ]
    if "content" in entry:
        parts.append(
            '<content type="application/xml">'
            + json_to_xml("event", entry["content"])
            + "</content>"
        )
    parts.append("</entry>")
    return "".join(parts)


def feed_xml(feed: dict[str, Any]) -> bytes:
    """
    An Atom 1.0 C{<feed>} document from the JSON form of a feed.
    """
    parts = [
        f'<feed xmlns="{ATOM_NS}">',
        f"<title>{_xml_text(feed['title'])}</title>",
        f"<id>{_xml_text(feed['id'])}</id>",
        f"<updated>{feed['updated']}</updated>",
        "<author><name>EventStore</name></author>",
        _links_xml(feed["links"]),
    ]
    parts.extend(entry_xml(e, root=False) for e in feed["entries"])
    parts.append("</feed>")
    return xml_document("".join(parts))


def xml_document(element: str) -> bytes:
    """
    An XML document with its declaration, UTF-8 encoded.
    """
    return ('<?xml version="1.0" encoding="utf-8"?>' + element).encode("utf-8")


def render_feed(feed: dict[str, Any], media_type: str) -> bytes:
    """
    Serialise a feed for a chosen media type: XML for the XML types, JSON
    otherwise.
    """
    if media_type in XML_TYPES:
        return feed_xml(feed)
    return dumps(feed)
