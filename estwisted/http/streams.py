# -*- test-case-name: estwisted.http.test.test_api -*-
"""
Streams over HTTP (http-api.md 3-6): appends (one event or a batch, the
C{incoming} redirect target), metadata, deletes, single events, feed pages
of a stream and of C{$all} with caching and long polls.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Optional, Union
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from estwisted.core.errors import (
    WrongExpectedVersion,
)
from estwisted.core.model import (
    DELETED_STREAM,
    MAX_READ_COUNT,
    NewEvent,
    Principal,
    ReadStatus,
    ResolvedEvent,
)
from estwisted.http.base import HttpBase
from estwisted.http.parsing import (
    ARRAY_JSON,
    ARRAY_XML,
    CACHE_FOREVER,
    CACHE_PRIVATE,
    DATA_ONLY,
    EVENT_TYPES,
    FEED_TYPES,
    INCOMING_TYPES,
    NO_CACHE,
    NO_ID_TYPES,
    NO_URLS,
    PAGE_CACHE_BYTES,
    RAW_JSON,
    REQUEST_TIMEOUT,
    WRITE_TYPES,
    HttpError,
    check_size,
    decoded,
    feed_type,
    parse_bool_header,
    parse_count,
    parse_event_id_header,
    parse_event_number,
    parse_events_json,
    parse_events_xml,
    parse_expected_version,
    parse_guid,
    parse_long_poll,
    set_header,
    unauthorized,
)
from estwisted.wire import atom


class StreamRoutes(HttpBase):
    """
    The C{/streams/...} handlers.
    """

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
        if media in NO_ID_TYPES:
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
        if media in ARRAY_JSON or media == atom.ATOM_JSON:
            return parse_events_json(body)
        if media in ARRAY_XML or media == atom.ATOM_XML:
            return parse_events_xml(body)
        if header_id is None or not header_type:
            raise HttpError(400, "Empty eventId provided.")
        check_size(body, b"")
        return [NewEvent(header_id, header_type, body, b"", media in RAW_JSON)]

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
            check_size(body, b"")
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
        if media in ARRAY_JSON or media == atom.ATOM_JSON:
            events = parse_events_json(body)
        elif media in ARRAY_XML or media == atom.ATOM_XML:
            events = parse_events_xml(body)
        else:
            if header_id is None:
                raise HttpError(400, "Empty eventId provided.")
            check_size(body, b"")
            events = [NewEvent(header_id, "$metadata", body, b"", media in RAW_JSON)]
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
            set_header(
                request,
                b"cache-control",
                self._cache_control(CACHE_FOREVER if public else CACHE_PRIVATE),
            )
            return False
        etag = atom.make_etag(version, media)
        set_header(request, b"etag", f'"{etag}"'.encode("ascii"))
        set_header(request, b"cache-control", self._cache_control(self._head_cache_control(stream)))
        inm = self._header(request, b"if-none-match")
        return inm is not None and inm.strip().strip('"') == etag

    def _head_cache_control(self, stream: str) -> bytes:
        """
        C{Cache-Control} of a page that may still change: no caching unless
        the stream's metadata sets C{$cacheControl} (seconds).
        """
        if stream == "$all" or stream.startswith("$$"):
            return NO_CACHE
        seconds = self.store.stream_metadata(stream).cache_control
        if not seconds:
            return NO_CACHE
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
            set_header(request, b"cache-control", NO_CACHE)
            return self._ok(request, b"{}" if media in atom.JSON_TYPES else b"", media)
        if resolved.event is None:
            raise HttpError(404, "Not Found")
        if number is None:
            version = resolved.original.event_number
            if self._cache(request, False, version, media, stream):
                return self._not_modified(request)
        else:
            self._cache(request, True, 0, media, stream)
        urls = NO_URLS if media in DATA_ONLY else self._urls(request)
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
            set_header(request, b"cache-control", NO_CACHE)
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
        set_header(request, b"cache-control", NO_CACHE)
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
            return self._ok(request, body, feed_type(media))

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
        if stream.startswith("$$"):
            return None
        metadata = self.store.stream_metadata(stream)
        if metadata.max_age is not None:
            return None
        last = self.store.last_event_number(stream)
        version = metadata.version
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
                commit, prepare = atom.decode_position(raw_position)
            except ValueError:
                raise HttpError(400, f"Invalid position argument: {raw_position}") from None
            if commit < 0 or prepare < 0:
                # v5 refuses negative positions (ffff...: Position.End over
                # TCP); the end is "head", backwards only.
                raise HttpError(400, f"Invalid position argument: {raw_position}")
            position = commit
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
            return self._ok(request, body, feed_type(media))

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


    def _feed_dir(
        self, request: Any, stream: str, event: str, direction: str, count: str, meta: bool
    ) -> Union[bytes, Deferred[bytes]]:
        if direction not in ("forward", "backward"):
            raise HttpError(404, "Not Found")
        return self.read_feed(request, stream, event, count, direction, meta)

    def _event_or_all(self, request: Any, stream: str, event: str) -> Any:
        if decoded(stream) == "$all":
            raise HttpError(404, "Not Found")
        return self.read_event(request, stream, event)

