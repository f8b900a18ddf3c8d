# -*- test-case-name: estwisted.http.test.test_api -*-
"""
Persistent subscriptions over HTTP (http-api.md 8): groups, competing
feeds, acks and nacks, parked messages; served by the leader only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Optional, Union
from urllib.parse import unquote

from twisted.internet.defer import Deferred

from estwisted.core.model import (
    DELETED_STREAM,
)
from estwisted.http.base import HttpBase
from estwisted.http.parsing import (
    COMPETING_TYPES,
    JSON_ONLY,
    NO_CACHE,
    HttpError,
    parse_guid,
    set_header,
)
from estwisted.wire import atom


class SubscriptionRoutes(HttpBase):
    """
    The C{/subscriptions/...} handlers.
    """

    # -- persistent subscriptions ------------------------------------------------

    def _subscription_names(self, raw_stream: str, raw_group: str) -> tuple[str, str]:
        stream = self._stream_name(raw_stream)
        group = unquote(raw_group)
        if not group:
            raise HttpError(400, "Group name must be non-empty")
        return stream, group

    def _settings_from_body(self, request: Any) -> Any:
        from estwisted.subscriptions.persistent import STRATEGIES, PersistentSettings

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
        set_header(request, b"cache-control", NO_CACHE)
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
        set_header(request, b"cache-control", NO_CACHE)
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
        set_header(request, b"cache-control", NO_CACHE)
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
        acked = self.persistent.ack_ids(stream, group, ids, principal)
        return acked.addCallback(accepted)

    def nack_messages(
        self, request: Any, raw_stream: str, raw_group: str, raw_id: Optional[str] = None
    ) -> bytes:
        """
        C{POST /subscriptions/{s}/{g}/nack/{id}} and C{.../nack?ids=...}.
        """
        self._require_master(request, always=True)
        from estwisted.subscriptions.persistent import NakAction

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

