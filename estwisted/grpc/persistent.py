# -*- test-case-name: estwisted.grpc.test.test_protocol -*-
"""
C{event_store.client.persistent_subscriptions.PersistentSubscriptions} over
L{estwisted.subscriptions.persistent.PersistentSubscriptions}: the same groups, settings,
checkpoints and parked streams the v5 TCP and HTTP APIs manage.

Groups on streams and on C{$all} (EventStoreDB 21.10+: C{AllOptions} with
a start position and a stream-name or event-type filter; positions shown
as C{"C:<commit>/P:<prepare>"}).  C{Read} is bidirectional: the options,
then acks and nacks (park, retry, skip, stop) by event id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.core.errors import AlreadyExists, BadRequest, NotFound
from estwisted.core.model import Principal, ResolvedEvent
from estwisted.grpc import codec
from estwisted.grpc.framing import OK, GrpcStatus, StatusCode
from estwisted.grpc.protocol import ServerCall
from estwisted.grpc.protos import persistent_pb2, shared_pb2
from estwisted.subscriptions.persistent import (
    ALL_STREAM,
    AllFilter,
    GroupInfo,
    IPersistentSubscriber,
    NakAction,
    PersistentSettings,
    PersistentSubscriptions,
    SubscriberMaxCountReached,
    all_filter,
    all_position_text,
)
from estwisted.subscriptions.volatile import DropReason

_log = Logger()

SERVICE = "event_store.client.persistent_subscriptions.PersistentSubscriptions"

_STRATEGIES = {0: "DispatchToSingle", 1: "RoundRobin", 2: "Pinned"}
_TICKS_PER_MS = 10_000


def _signed(revision: int) -> int:
    """
    A uint64 revision as the signed number the store uses
    (C{18446744073709551615}, the end, is C{-1}).
    """
    return revision - (1 << 64) if revision >= 1 << 63 else revision


def restart_subsystem(call: ServerCall, persistent: PersistentSubscriptions,
                      principal: Optional[Principal]) -> None:
    """
    C{RestartSubsystem} and C{Operations.RestartPersistentSubscriptions}:
    members of C{$ops} or C{$admins} only; answered once the groups are
    loaded again (their consumers were dropped and reconnect).
    """
    if principal is None or not principal.is_ops:
        raise codec.access_denied_status()

    def done(_: object) -> None:
        if not call.finished:
            call.send(shared_pb2.Empty())
            call.finish(OK)

    def failed(f: Failure) -> None:
        _log.failure("Restarting the persistent subscriptions failed", f)
        call.finish(GrpcStatus(StatusCode.INTERNAL, "Restarting the subsystem failed"))

    persistent.restart().addCallbacks(done, failed)


def settings_of(options: Any, creating: bool) -> PersistentSettings:
    """
    The store's settings from C{CreateReq.Options} or C{UpdateReq.Options}.
    """
    s = options.settings
    start_from = -1
    which = options.WhichOneof("stream_option")
    if which == "stream":
        revision = options.stream.WhichOneof("revision_option")
        if revision == "revision":
            start_from = _signed(int(options.stream.revision))
        elif revision == "start":
            start_from = 0
    elif which == "all":
        position = options.all.WhichOneof("all_option")
        if position == "position":
            start_from = _signed(int(options.all.position.commit_position))
        elif position == "start":
            start_from = 0
    elif which is None:
        # 20.10 clients: the stream and a start revision in the settings;
        # the end is UInt64.MaxValue (EventStoreDB reads it as -1).
        start_from = _signed(int(s.revision))
    if s.WhichOneof("message_timeout") == "message_timeout_ticks":
        timeout_ms = s.message_timeout_ticks // _TICKS_PER_MS
    else:
        timeout_ms = s.message_timeout_ms
    if s.WhichOneof("checkpoint_after") == "checkpoint_after_ticks":
        checkpoint_ms = s.checkpoint_after_ticks // _TICKS_PER_MS
    else:
        checkpoint_ms = s.checkpoint_after_ms
    strategy = getattr(s, "consumer_strategy", "") if creating else ""
    if not strategy:
        strategy = _STRATEGIES.get(int(s.named_consumer_strategy), "RoundRobin")
    return PersistentSettings(
        resolve_link_tos=s.resolve_links,
        start_from=start_from,
        message_timeout_ms=int(timeout_ms),
        record_statistics=s.extra_statistics,
        live_buffer_size=s.live_buffer_size or 500,
        read_batch_size=s.read_batch_size or 20,
        buffer_size=s.history_buffer_size or 500,
        max_retry_count=s.max_retry_count,
        prefer_round_robin=strategy == "RoundRobin",
        checkpoint_after_ms=int(checkpoint_ms),
        checkpoint_max_count=s.max_checkpoint_count or 1000,
        checkpoint_min_count=s.min_checkpoint_count or 10,
        subscriber_max_count=s.max_subscriber_count,
        named_consumer_strategy=strategy,
        filter=_filter_of(options) if creating and which == "all" else None,
    )


def _filter_of(options: Any) -> Optional[AllFilter]:
    """
    The filter of C{CreateReq.AllOptions}, C{None} for none.

    @raise GrpcStatus: C{INVALID_ARGUMENT} for a bad expression.
    """
    all_options = options.all
    if all_options.WhichOneof("filter_option") != "filter":
        return None
    which = all_options.filter.WhichOneof("filter")
    if which is None:
        return None
    expression = getattr(all_options.filter, which)
    try:
        return all_filter(which == "stream_identifier", list(expression.prefix), expression.regex)
    except BadRequest as e:
        raise codec.bad_argument(str(e)) from None


def _stream_of(options: Any, field: str = "stream_identifier") -> str:
    which = options.WhichOneof("stream_option")
    if which == "all":
        return ALL_STREAM
    if which == "stream":
        return codec.stream_name(options.stream.stream_identifier)
    if which is None and not options.HasField(field):
        raise codec.bad_argument("a stream is required")
    return codec.stream_name(getattr(options, field))


def _status(error: BaseException, stream: str, group: str) -> GrpcStatus:
    if isinstance(error, NotFound):
        return GrpcStatus(
            StatusCode.NOT_FOUND,
            f"Subscription group '{group}' on stream '{stream}' does not exist.",
            (("exception", "persistent-subscription-does-not-exist"),
             ("stream-name", stream), ("group-name", group)),
        )
    if isinstance(error, AlreadyExists):
        return GrpcStatus(
            StatusCode.ALREADY_EXISTS,
            f"Subscription group {group} on stream {stream} exists.",
            (("exception", "persistent-subscription-exists"),
             ("stream-name", stream), ("group-name", group)),
        )
    if isinstance(error, SubscriberMaxCountReached):
        return GrpcStatus(
            StatusCode.FAILED_PRECONDITION,
            f"Maximum subscriptions reached for subscription group '{group}' on stream "
            f"'{stream}.'",
            (("exception", "maximum-subscribers-reached"),
             ("stream-name", stream), ("group-name", group)),
        )
    return codec.status_of(error, stream)


def info_message(info: GroupInfo) -> persistent_pb2.SubscriptionInfo:
    s = info.settings
    show: Callable[[int], str] = str
    if info.stream == ALL_STREAM:
        show = all_position_text
    out = persistent_pb2.SubscriptionInfo(
        event_source=info.stream,
        group_name=info.group,
        status=info.status,
        average_per_second=int(info.average_items_per_second),
        total_items=info.total_items_processed,
        count_since_last_measurement=info.count_since_last_measurement,
        last_checkpointed_event_position=show(info.last_processed_event_number),
        last_known_event_position=show(info.last_known_event_number),
        resolve_link_tos=s.resolve_link_tos,
        start_from=show(s.start_from),
        message_timeout_milliseconds=s.message_timeout_ms,
        extra_statistics=s.record_statistics,
        max_retry_count=s.max_retry_count,
        live_buffer_size=s.live_buffer_size,
        buffer_size=s.buffer_size,
        read_batch_size=s.read_batch_size,
        check_point_after_milliseconds=s.checkpoint_after_ms,
        min_check_point_count=s.checkpoint_min_count,
        max_check_point_count=s.checkpoint_max_count,
        read_buffer_count=info.read_buffer_count,
        live_buffer_count=info.live_buffer_count,
        retry_buffer_count=info.retry_buffer_count,
        total_in_flight_messages=info.total_in_flight_messages,
        outstanding_messages_count=info.outstanding_messages_count,
        named_consumer_strategy=s.named_consumer_strategy,
        max_subscriber_count=s.subscriber_max_count,
    )
    for c in info.connections:
        out.connections.add(
            username=c.username,
            average_items_per_second=int(c.average_items_per_second),
            total_items=c.total_items_processed,
            count_since_last_measurement=c.count_since_last_measurement,
            available_slots=c.available_slots,
            in_flight_messages=c.in_flight_messages,
            **{"from": c.from_address},
        )
    return out


class PersistentService:
    """
    The methods, for L{estwisted.grpc.services.GrpcServer}'s routing.
    """

    def __init__(self, persistent: PersistentSubscriptions, unary: Callable[..., None]) -> None:
        self.persistent = persistent
        self._unary = unary

    def methods(self) -> dict[tuple[str, str], Callable[[ServerCall, Optional[Principal]], None]]:
        return {
            (SERVICE, "Create"): self._create,
            (SERVICE, "Update"): self._update,
            (SERVICE, "Delete"): self._delete,
            (SERVICE, "Read"): self._read,
            (SERVICE, "GetInfo"): self._get_info,
            (SERVICE, "List"): self._list,
            (SERVICE, "ReplayParked"): self._replay_parked,
            (SERVICE, "RestartSubsystem"): self._restart,
        }

    def _restart(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            restart_subsystem(call, self.persistent, principal)

        self._unary(call, shared_pb2.Empty, go)

    def _answer(self, call: ServerCall, d: Deferred[Any], response: Any, stream: str,
                group: str) -> None:
        def ok(_: Any) -> None:
            if not call.finished:
                call.send(response)
                call.finish(OK)

        def failed(f: Failure) -> None:
            assert f.value is not None
            status = _status(f.value, stream, group)
            if status.code is StatusCode.UNKNOWN:
                _log.failure("A gRPC persistent subscription call failed", f)
            call.finish(status)

        d.addCallbacks(ok, failed).addErrback(
            lambda f: _log.failure("Answering a gRPC persistent call failed", f)
        )

    def _create(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            options = request.options
            stream = _stream_of(options)
            group = options.group_name
            d = self.persistent.create(
                stream, group, settings_of(options, True), principal, allow_all=True
            )
            self._answer(call, d, persistent_pb2.CreateResp(), stream, group)

        self._unary(call, persistent_pb2.CreateReq, go)

    def _update(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            options = request.options
            stream = _stream_of(options)
            group = options.group_name
            d = self.persistent.update(
                stream, group, settings_of(options, False), principal, allow_all=True
            )
            self._answer(call, d, persistent_pb2.UpdateResp(), stream, group)

        self._unary(call, persistent_pb2.UpdateReq, go)

    def _delete(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            options = request.options
            stream = _stream_of(options)
            group = options.group_name
            d = self.persistent.delete(stream, group, principal)
            self._answer(call, d, persistent_pb2.DeleteResp(), stream, group)

        self._unary(call, persistent_pb2.DeleteReq, go)

    def _replay_parked(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            options = request.options
            stream = _stream_of(options)
            group = options.group_name
            stop_at: Optional[int] = None
            if options.WhichOneof("stop_at_option") == "stop_at":
                if options.stop_at < 0:
                    raise codec.bad_argument("stop_at must be >= 0")
                stop_at = int(options.stop_at)
            d = self.persistent.replay_parked(stream, group, principal, stop_at)
            self._answer(call, d, persistent_pb2.ReplayParkedResp(), stream, group)

        self._unary(call, persistent_pb2.ReplayParkedReq, go)

    def _get_info(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            options = request.options
            stream = _stream_of(options)
            group = options.group_name
            try:
                info = self.persistent.get_group(stream, group)
            except NotFound as e:
                raise _status(e, stream, group) from None
            call.send(persistent_pb2.GetInfoResp(subscription_info=info_message(info)))
            call.finish(OK)

        self._unary(call, persistent_pb2.GetInfoReq, go)

    def _list(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            options = request.options
            stream: Optional[str] = None
            if options.WhichOneof("list_option") == "list_for_stream":
                which = options.list_for_stream.WhichOneof("stream_option")
                if which == "all":
                    stream = ALL_STREAM
                else:
                    stream = codec.stream_name(options.list_for_stream.stream)
            groups = self.persistent.list_groups(stream)
            if stream is not None and not groups:
                raise GrpcStatus(StatusCode.NOT_FOUND, f"No subscriptions on stream '{stream}'")
            response = persistent_pb2.ListResp()
            for info in groups:
                response.subscriptions.append(info_message(info))
            call.send(response)
            call.finish(OK)

        self._unary(call, persistent_pb2.ListReq, go)

    def _read(self, call: ServerCall, principal: Optional[Principal]) -> None:
        Consumer(self.persistent, call, principal)


@implementer(IPersistentSubscriber)
class Consumer:
    """
    One C{PersistentSubscriptions.Read} call: a consumer of its group.
    """

    def __init__(
        self, persistent: PersistentSubscriptions, call: ServerCall, principal: Optional[Principal]
    ) -> None:
        self.persistent = persistent
        self.call = call
        self.principal = principal
        self.connection: Any = None
        self.structured = False
        self.stream = ""
        self.group = ""
        call.on_message = self._message
        call.on_end = self._end
        call.on_cancel = self._cancel

    def _message(self, data: bytes) -> None:
        request = persistent_pb2.ReadReq()
        try:
            request.ParseFromString(data)
        except Exception:
            raise codec.bad_argument("malformed ReadReq message") from None
        which = request.WhichOneof("content")
        if self.connection is None:
            if which != "options":
                raise codec.bad_argument("a persistent read starts with its options")
            self._connect(request.options)
            return
        if which == "ack":
            ids = [codec.uuid_bytes(i) for i in request.ack.ids]
            self.connection.ack(ids).addErrback(
                lambda f: _log.failure("A gRPC ack failed", f)
            )
        elif which == "nack":
            ids = [codec.uuid_bytes(i) for i in request.nack.ids]
            action = NakAction(int(request.nack.action)) if 0 <= request.nack.action <= 4 else (
                NakAction.UNKNOWN
            )
            self.connection.nak(ids, action, request.nack.reason)
        else:
            raise codec.bad_argument("options may only come first")

    def _connect(self, options: Any) -> None:
        self.stream = _stream_of(options)
        self.group = options.group_name
        self.structured = options.uuid_option.WhichOneof("content") == "structured"
        try:
            self.connection = self.persistent.connect(
                self.stream, self.group, self.principal, max(1, options.buffer_size), self,
                self.call.head.get("connection-name"),
            )
        except Exception as e:
            raise _status(e, self.stream, self.group) from None
        response = persistent_pb2.ReadResp()
        response.subscription_confirmation.subscription_id = self.connection.subscription_id
        self.call.send(response)

    def _end(self) -> None:
        self._cancel()
        self.call.finish(OK)

    def _cancel(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.drop_silently()

    # IPersistentSubscriber

    def event_appeared(self, event: ResolvedEvent, retry_count: int) -> None:
        response = persistent_pb2.ReadResp()
        read = response.event
        if event.event is not None:
            codec.fill_recorded(read.event, event.event, self.structured)
        if event.link is not None:
            codec.fill_recorded(read.link, event.link, self.structured)
        read.commit_position = event.original.position
        read.retry_count = retry_count
        self.call.send(response)

    def dropped(self, reason: DropReason) -> None:
        self.connection = None
        if reason is DropReason.ACCESS_DENIED:
            self.call.finish(codec.access_denied_status())
        elif reason is DropReason.PERSISTENT_SUBSCRIPTION_DELETED:
            self.call.finish(GrpcStatus(StatusCode.CANCELLED, "Persistent subscription deleted"))
        else:
            self.call.finish(GrpcStatus(StatusCode.CANCELLED, "Persistent subscription dropped"))


