# -*- test-case-name: estwisted.grpc.test.test_protocol -*-
"""
The gRPC services over the one store: C{Streams}, C{Gossip} and
C{ServerFeatures} (docs/grpc.md lists what each method serves).

Every call is authenticated from its C{authorization: Basic ...} metadata
through L{StreamStore.authenticate} and checked by the store's ACLs, the
same as a v5 TCP or HTTP request; writes on a node that does not lead fail
with the store's L{NotLeader}, answered as C{not-leader} with the leader's
HTTP endpoint (where the gRPC API is).

Reads and subscriptions page through the store and pause while the call's
outbound buffer is above its high-water mark.  A subscription reads the
history page by page; the page that reaches the end subscribes to the
hub in the same reactor turn, so no commit falls between the two.  A live
subscription whose client does not keep up falls back to reading pages.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Optional, Protocol

from google.protobuf.message import DecodeError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

import estwisted
from estwisted.core.errors import NotAuthenticated, NotReady
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    MAX_READ_COUNT,
    Principal,
    ReadStatus,
    ResolvedEvent,
    WriteResult,
)
from estwisted.core.users import UserManager
from estwisted.grpc import codec
from estwisted.grpc.framing import OK, GrpcStatus, StatusCode
from estwisted.grpc.protocol import HIGH_WATER, ServerCall
from estwisted.grpc.protos import (
    gossip_pb2,
    serverfeatures_pb2,
    shared_pb2,
    status_pb2,
    streams_pb2,
)
from estwisted.subscriptions.volatile import DropReason, ISubscriber, SubscriptionHub

if TYPE_CHECKING:
    from estwisted.core.streams import StreamStore
    from estwisted.subscriptions.persistent import PersistentSubscriptions

_log = Logger()

#: Events read from the store per page.
PAGE = 512
#: The largest C{count} a read honours at once (uint64 max means "all").
_U64_MAX = 2**64 - 1

STREAMS = "event_store.client.streams.Streams"
GOSSIP = "event_store.client.gossip.Gossip"
SERVER_FEATURES = "event_store.client.server_features.ServerFeatures"
PERSISTENT_SERVICE = "event_store.client.persistent_subscriptions.PersistentSubscriptions"


#: Who an anonymous call is on an C{Insecure} node.
INSECURE_PRINCIPAL = Principal("$insecure", frozenset({"$admins", "$ops"}))

Handler = Callable[[ServerCall, Optional[Principal]], None]


def method_label(service: str, method: str) -> str:
    """
    The C{method} label of a call in the request metrics:
    C{"Streams/Append"} for C{event_store.client.streams.Streams/Append}.
    """
    return f"{service.rpartition('.')[2]}/{method}"


class GrpcRequestMeter(Protocol):
    """
    Counts every gRPC call and times a sample of them.

    @ivar counts: calls so far by method label (L{method_label}).
    @ivar sample_mask: a call is timed when its method's count has no bit
        of the mask set (15: one in sixteen), as the TCP edge samples.
    """

    counts: dict[str, int]
    sample_mask: int

    def observe(self, method: str, seconds: float) -> None:
        """
        A timed call of C{method} took C{seconds} (to its last trailers).
        """


class GrpcServer:
    """
    Routes calls to the services.

    @param store: the L{estwisted.core.streams.StreamStore}.
    @param hub: the L{estwisted.subscriptions.SubscriptionHub}.
    @param clock: for subscription timers.
    @param members: the cluster's members for C{Gossip.Read}, as
        C{(instance_id, unix_seconds, state_name, is_alive, http_host,
        http_port)} tuples.
    @param leader_refusal: returns the error a call with
        C{requires-leader: true} fails with, C{None} while we lead.
    @param persistent: the L{estwisted.subscriptions.persistent.PersistentSubscriptions}
        (C{None}: that service is not served).
    @param shutdown: stops the node (C{Operations.Shutdown}; C{None}: not
        served).
    @param node_control: C{(resign, set_node_priority)} for
        C{Operations.ResignNode} and C{SetNodePriority} (C{None}: not
        served).
    @ivar request_meter: counts every call and times a sample of them
        (L{GrpcRequestMeter}; the node's metrics,
        L{estwisted.web.metrics.GrpcRequestMeter}); C{None}: not metered.
    @param anonymous: the principal of a call without credentials: C{None}
        (the store's anonymous rights), or on an C{Insecure} node
        L{INSECURE_PRINCIPAL}, as EventStoreDB 20+ disables authorization
        in insecure mode (clients send no credentials without TLS).
    """

    def __init__(
        self,
        store: StreamStore,
        hub: SubscriptionHub,
        clock: IReactorTime,
        members: Callable[[], Sequence[tuple[uuid.UUID, float, str, bool, str, int]]],
        leader_refusal: Callable[[], Optional[Exception]] = lambda: None,
        anonymous: Optional[Principal] = None,
        persistent: Optional[PersistentSubscriptions] = None,
        shutdown: Optional[Callable[[], None]] = None,
        users: Optional[UserManager] = None,
        node_control: Optional[tuple[Callable[[], None], Callable[[int], None]]] = None,
    ) -> None:
        self.anonymous = anonymous
        self.store = store
        self.users = users if users is not None else UserManager(store)
        self.hub = hub
        self.clock = clock
        self.members = members
        self.leader_refusal = leader_refusal
        self.request_meter: Optional[GrpcRequestMeter] = None
        self.methods: dict[tuple[str, str], Handler] = {
            (STREAMS, "Read"): self._read,
            (STREAMS, "Append"): self._append,
            (STREAMS, "BatchAppend"): self._batch_append,
            (STREAMS, "Delete"): lambda call, p: self._delete(call, p, hard=False),
            (STREAMS, "Tombstone"): lambda call, p: self._delete(call, p, hard=True),
            (GOSSIP, "Read"): self._gossip,
            (SERVER_FEATURES, "GetSupportedMethods"): self._features,
        }
        if persistent is not None:
            from estwisted.grpc.persistent import PersistentService

            self.methods.update(PersistentService(persistent, self._unary).methods())
        from estwisted.grpc.admin import MonitoringService, OperationsService, UsersService

        self.methods.update(UsersService(self.users, self._unary).methods())
        self.methods.update(OperationsService(store, shutdown, self._unary, clock,
                                               persistent, node_control).methods())
        self.methods.update(MonitoringService(store, hub, clock, self._unary).methods())

    # -- dispatch -------------------------------------------------------------

    def start(self, call: ServerCall) -> None:
        head = call.head
        handler = self.methods.get((head.service, head.method))
        meter = self.request_meter
        if meter is not None:
            self._meter(meter, call, handler is not None)
        if handler is None:
            raise GrpcStatus(
                StatusCode.UNIMPLEMENTED, f"Method {head.service}/{head.method} is not implemented"
            )
        principal = self._principal(head.get("authorization"))
        if head.service not in _ANY_NODE and head.get("requires-leader").lower() == "true":
            refusal = self.leader_refusal()
            if refusal is not None:
                raise codec.status_of(refusal)
        handler(call, principal)

    @staticmethod
    def _meter(meter: GrpcRequestMeter, call: ServerCall, known: bool) -> None:
        """
        Count the call under C{"<Service>/<Method>"} (C{"other"} for an
        unknown method, so the label set stays bounded) and time it from
        here to its end when its count has no bit of the meter's
        C{sample_mask}.
        """
        head = call.head
        label = method_label(head.service, head.method) if known else "other"
        counts = meter.counts
        n = counts.get(label, 0)
        counts[label] = n + 1
        if not n & meter.sample_mask:
            started = perf_counter()

            def finished() -> None:
                meter.observe(label, perf_counter() - started)

            call.on_finish = finished

    def _principal(self, authorization: str) -> Optional[Principal]:
        if not authorization:
            return self.anonymous
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise GrpcStatus(StatusCode.UNAUTHENTICATED, "Only Basic authentication is served")
        try:
            text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise GrpcStatus(StatusCode.UNAUTHENTICATED, "Malformed Basic credentials") from None
        login, sep, password = text.partition(":")
        if not sep:
            raise GrpcStatus(StatusCode.UNAUTHENTICATED, "Malformed Basic credentials")
        try:
            principal: Principal = self.users.authenticate(login, password)
        except NotAuthenticated:
            raise GrpcStatus(StatusCode.UNAUTHENTICATED, "Bad credentials") from None
        return principal

    # -- helpers ----------------------------------------------------------------

    @staticmethod
    def _unary(call: ServerCall, request_type: Any, then: Callable[[Any], None]) -> None:
        """
        Wait for the one request message of a unary or server-streaming call.
        """
        got: list[Any] = []

        def message(data: bytes) -> None:
            if got:
                raise GrpcStatus(StatusCode.INVALID_ARGUMENT, "one request message expected")
            got.append(_parse(request_type, data))

        def end() -> None:
            if not got:
                raise GrpcStatus(StatusCode.INVALID_ARGUMENT, "a request message is required")
            then(got[0])

        call.on_message = message
        call.on_end = end

    @staticmethod
    def _finish_with(call: ServerCall, d: Deferred[Any], respond: Callable[[Any], Any],
                     stream: str = "", expected: int = EXPECTED_ANY) -> None:
        def ok(result: Any) -> None:
            if not call.finished:
                call.send(respond(result))
                call.finish(OK)

        def failed(f: Failure) -> None:
            status = codec.status_of(_error(f), stream, expected)
            if status.code is StatusCode.UNKNOWN:
                _log.failure("A gRPC call failed", f)
            call.finish(status)

        d.addCallbacks(ok, failed).addErrback(
            lambda f: _log.failure("Answering a gRPC call failed", f)
        )

    # -- Streams.Append -----------------------------------------------------------

    def _append(self, call: ServerCall, principal: Optional[Principal]) -> None:
        state: dict[str, Any] = {"options": None, "events": []}

        def message(data: bytes) -> None:
            request = _parse(streams_pb2.AppendReq, data)
            which = request.WhichOneof("content")
            if state["options"] is None:
                if which != "options":
                    raise codec.bad_argument("an append starts with its options")
                state["options"] = request.options
            elif which == "proposed_message":
                state["events"].append(codec.new_event(request.proposed_message))
            else:
                raise codec.bad_argument("options may only come first")

        def end() -> None:
            options = state["options"]
            if options is None:
                raise codec.bad_argument("an append needs its options")
            stream = codec.stream_name(options.stream_identifier)
            expected = codec.expected_version(options)
            d = self.store.append(stream, expected, state["events"], principal)

            def done(result: WriteResult) -> None:
                if not call.finished:
                    call.send(_append_success(result))
                    call.finish(OK)

            def failed(f: Failure) -> None:
                from estwisted.core.errors import WrongExpectedVersion

                if f.check(WrongExpectedVersion):
                    call.send(_append_wrong_version(_error(f).current_version, expected))
                    call.finish(OK)
                    return
                status = codec.status_of(_error(f), stream, expected)
                if status.code is StatusCode.UNKNOWN:
                    _log.failure("A gRPC append failed", f)
                call.finish(status)

            d.addCallbacks(done, failed).addErrback(
                lambda f: _log.failure("Answering a gRPC append failed", f)
            )

        call.on_message = message
        call.on_end = end

    # -- Streams.BatchAppend ------------------------------------------------------

    def _batch_append(self, call: ServerCall, principal: Optional[Principal]) -> None:
        batches: dict[bytes, dict[str, Any]] = {}
        outstanding = [0]

        def maybe_finish() -> None:
            if call.client_done and outstanding[0] == 0 and not call.finished:
                call.finish(OK)

        def message(data: bytes) -> None:
            request = _parse(streams_pb2.BatchAppendReq, data)
            key = request.correlation_id.SerializeToString()
            batch = batches.get(key)
            if batch is None:
                if not request.HasField("options"):
                    raise codec.bad_argument("a batch starts with its options")
                batch = batches[key] = {"options": request.options, "events": []}
            for proposed in request.proposed_messages:
                batch["events"].append(codec.new_event(proposed))
            if not request.is_final:
                return
            del batches[key]
            options = batch["options"]
            stream = codec.stream_name(options.stream_identifier)
            expected = codec.expected_version(options, "stream_position")
            outstanding[0] += 1
            d = self.store.append(stream, expected, batch["events"], principal)

            def answer(result: Any) -> None:
                outstanding[0] -= 1
                if isinstance(result, Failure) and result.check(NotReady):
                    # Not the leader (or none yet): the whole call ends with
                    # not-leader / server-not-ready, as EventStoreDB ends it,
                    # so the client reconnects instead of retrying here.
                    call.finish(codec.status_of(_error(result)))
                    return
                if call.finished:
                    return
                response = streams_pb2.BatchAppendResp(
                    correlation_id=request.correlation_id,
                    stream_identifier=options.stream_identifier,
                )
                codec.set_expected(response, expected, "stream_position", "any",
                                   "stream_exists", "no_stream")
                if isinstance(result, Failure):
                    response.error.CopyFrom(_batch_error(result, stream, expected))
                else:
                    success = response.success
                    _fill_success(success, result, position_type="all")
                call.send(response)
                maybe_finish()

            d.addBoth(answer).addErrback(
                lambda f: _log.failure("Answering a gRPC batch append failed", f)
            )

        call.on_message = message
        call.on_end = maybe_finish

    # -- Streams.Delete / Tombstone ---------------------------------------------

    def _delete(self, call: ServerCall, principal: Optional[Principal], hard: bool) -> None:
        request_type = streams_pb2.TombstoneReq if hard else streams_pb2.DeleteReq
        response_type = streams_pb2.TombstoneResp if hard else streams_pb2.DeleteResp

        def go(request: Any) -> None:
            options = request.options
            stream = codec.stream_name(options.stream_identifier)
            expected = codec.expected_version(options)
            d = self.store.delete_stream(stream, expected, hard, principal)

            def respond(result: WriteResult) -> Any:
                response = response_type()
                if result.position >= 0:
                    response.position.commit_position = result.position
                    response.position.prepare_position = result.position
                else:
                    response.no_position.SetInParent()
                return response

            self._finish_with(call, d, respond, stream, expected)

        self._unary(call, request_type, go)

    # -- Streams.Read -------------------------------------------------------------

    def _read(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: streams_pb2.ReadReq) -> None:
            options = request.options
            which = options.WhichOneof("stream_option")
            if which is None:
                raise codec.bad_argument("a read needs a stream or $all")
            if options.WhichOneof("count_option") == "subscription":
                Subscription(self, call, options, principal).start()
            else:
                Read(self, call, options, principal).start()

        self._unary(call, streams_pb2.ReadReq, go)

    # -- Gossip / ServerFeatures --------------------------------------------------

    def _gossip(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            info = gossip_pb2.ClusterInfo()
            for instance_id, seconds, state, alive, host, port in self.members():
                member = info.members.add()
                member.instance_id.string = str(instance_id)
                member.time_stamp = int(seconds * 10_000_000)
                member.state = _GOSSIP_STATES.get(state, gossip_pb2.MemberInfo.Unknown)
                member.is_alive = alive
                member.http_end_point.address = host
                member.http_end_point.port = port
            call.send(info)
            call.finish(OK)

        self._unary(call, shared_pb2.Empty, go)

    def _features(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            call.send(self.supported_methods())
            call.finish(OK)

        self._unary(call, shared_pb2.Empty, go)

    def supported_methods(self) -> serverfeatures_pb2.SupportedMethods:
        """
        Exactly the methods routed here, and what Read serves.
        """
        out = serverfeatures_pb2.SupportedMethods(
            event_store_server_version=f"estwisted {estwisted.__version__}"
        )
        for service, method in sorted(self.methods):
            entry = out.methods.add()
            entry.service_name = service.lower()
            entry.method_name = method.lower()
            if (service, method) == (STREAMS, "Read"):
                entry.features.extend(["position", "events", "all", "stream", "filtered"])
            elif service == PERSISTENT_SERVICE:
                # Groups on streams and on $all (the clients look for "all").
                entry.features.extend(["stream", "all"])
        return out


#: Services any node answers, whatever C{requires-leader} says (discovery
#: asks followers for the gossip with it set).
_ANY_NODE = frozenset({GOSSIP, SERVER_FEATURES, "event_store.client.monitoring.Monitoring"})

_GOSSIP_STATES = {
    "Initializing": gossip_pb2.MemberInfo.Initializing,
    "DiscoverLeader": gossip_pb2.MemberInfo.DiscoverLeader,
    "Unknown": gossip_pb2.MemberInfo.Unknown,
    "PreReplica": gossip_pb2.MemberInfo.PreReplica,
    "CatchingUp": gossip_pb2.MemberInfo.CatchingUp,
    "Clone": gossip_pb2.MemberInfo.Clone,
    "Slave": gossip_pb2.MemberInfo.Follower,
    "Follower": gossip_pb2.MemberInfo.Follower,
    "PreMaster": gossip_pb2.MemberInfo.PreLeader,
    "PreLeader": gossip_pb2.MemberInfo.PreLeader,
    "Master": gossip_pb2.MemberInfo.Leader,
    "Leader": gossip_pb2.MemberInfo.Leader,
    "Manager": gossip_pb2.MemberInfo.Manager,
    "ShuttingDown": gossip_pb2.MemberInfo.ShuttingDown,
    "Shutdown": gossip_pb2.MemberInfo.Shutdown,
    "ReadOnlyLeaderless": gossip_pb2.MemberInfo.ReadOnlyLeaderless,
    "PreReadOnlyReplica": gossip_pb2.MemberInfo.PreReadOnlyReplica,
    "ReadOnlyReplica": gossip_pb2.MemberInfo.ReadOnlyReplica,
    "ResigningLeader": gossip_pb2.MemberInfo.ResigningLeader,
}


def _error(f: Failure) -> Any:
    error = f.value
    assert error is not None
    return error


def _parse(message_type: Any, data: bytes) -> Any:
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        raise codec.bad_argument(f"malformed {message_type.__name__} message") from None
    return message


def _fill_success(success: Any, result: WriteResult, position_type: str) -> None:
    if result.last_event_number >= 0:
        success.current_revision = result.last_event_number
    else:
        success.no_stream.SetInParent()
    if result.position >= 0:
        success.position.commit_position = result.position
        success.position.prepare_position = result.position
    else:
        success.no_position.SetInParent()


def _append_success(result: WriteResult) -> streams_pb2.AppendResp:
    response = streams_pb2.AppendResp()
    _fill_success(response.success, result, position_type="append")
    return response


def _append_wrong_version(current: int, expected: int) -> streams_pb2.AppendResp:
    response = streams_pb2.AppendResp()
    wrong = response.wrong_expected_version
    if current < 0 or current == DELETED_STREAM:
        wrong.current_no_stream.SetInParent()
        wrong.no_stream_20_6_0.SetInParent()
    else:
        wrong.current_revision = current
        wrong.current_revision_20_6_0 = current
    codec.set_expected(wrong, expected, "expected_revision", "expected_any",
                       "expected_stream_exists", "expected_no_stream")
    codec.set_expected(wrong, expected, "expected_revision_20_6_0", "any_20_6_0",
                       "stream_exists_20_6_0", "any_20_6_0")
    return response


def _batch_error(f: Failure, stream: str, expected: int) -> status_pb2.Status:
    from estwisted.core.errors import WrongExpectedVersion

    status = codec.status_of(_error(f), stream, expected)
    if status.code is StatusCode.UNKNOWN:
        _log.failure("A gRPC batch append failed", f)
    out = status_pb2.Status(code=int(status.code), message=status.message)
    detail: Any = None
    if f.check(WrongExpectedVersion):
        detail = shared_pb2.WrongExpectedVersion()
        current = _error(f).current_version
        if current < 0 or current == DELETED_STREAM:
            detail.current_no_stream.SetInParent()
        else:
            detail.current_stream_revision = current
        codec.set_expected(detail, expected, "expected_stream_position", "expected_any",
                           "expected_stream_exists", "expected_no_stream")
    elif status.code is StatusCode.PERMISSION_DENIED:
        detail = shared_pb2.AccessDenied()
    elif any(k == "exception" and v == "stream-deleted" for k, v in status.metadata):
        detail = shared_pb2.StreamDeleted(stream_identifier=codec.stream_identifier(stream))
    elif status.code is StatusCode.DEADLINE_EXCEEDED:
        detail = shared_pb2.Timeout()
    else:
        detail = shared_pb2.Unknown()
    out.details.Pack(detail)
    return out


# -- reads ------------------------------------------------------------------------


class _Reader:
    """
    What reads and subscriptions share: the request's options, paging.
    """

    def __init__(self, server: GrpcServer, call: ServerCall, options: Any,
                 principal: Optional[Principal]) -> None:
        self.server = server
        self.store = server.store
        self.call = call
        self.options = options
        self.principal = principal
        self.forward = options.read_direction == streams_pb2.ReadReq.Options.Forwards
        self.resolve_links = options.resolve_links
        self.structured = options.uuid_option.WhichOneof("content") == "structured"
        self.is_all = options.WhichOneof("stream_option") == "all"
        self.filter = codec.event_filter(options) if self.is_all else None
        self.stream = "" if self.is_all else codec.stream_name(options.stream.stream_identifier)
        self.scanned = 0
        self.done = False
        if self.is_all:
            all_options = options.all
            which = all_options.WhichOneof("all_option")
            if which == "position":
                self.position = int(all_options.position.commit_position)
            elif which == "end":
                self.position = -1
            else:
                self.position = 0 if self.forward else -1
        else:
            stream_options = options.stream
            which = stream_options.WhichOneof("revision_option")
            if which == "revision":
                self.revision = int(stream_options.revision)
            elif which == "end":
                self.revision = -1
            else:
                self.revision = 0 if self.forward else -1

    def _event(self, resolved: ResolvedEvent) -> streams_pb2.ReadResp:
        return codec.read_event(resolved, self.structured, True)

    def read_all_page(self, limit: int) -> tuple[list[ResolvedEvent], bool]:
        """
        The next page of C{$all} (filtered), and whether it reached the end.
        """
        page = self.store.read_all(self.position, min(PAGE, MAX_READ_COUNT), self.forward,
                                   self.resolve_links, self.principal)
        if page.status is ReadStatus.ACCESS_DENIED:
            raise codec.access_denied_status()
        if page.status is not ReadStatus.SUCCESS:
            raise GrpcStatus(StatusCode.UNKNOWN, page.error or "read failed")
        events = []
        for resolved in page.events:
            self.scanned += 1
            if self.filter is None or self.filter.matches(resolved.original):
                events.append(resolved)
        at_end = not page.events or page.next_position == self.position
        self.position = page.next_position
        return events, at_end

    def read_stream_page(self) -> tuple[list[ResolvedEvent], bool]:
        """
        The next page of the stream, and whether it reached the end.

        @raise GrpcStatus: a deleted stream or no access.
        """
        page = self.store.read_stream(self.stream, self.revision, PAGE, self.forward,
                                      self.resolve_links, self.principal)
        status = page.status
        if status is ReadStatus.ACCESS_DENIED:
            raise codec.access_denied_status()
        if status is ReadStatus.STREAM_DELETED:
            raise codec.stream_deleted_status(self.stream)
        if status is ReadStatus.NO_STREAM:
            raise _NoStream()
        if status is not ReadStatus.SUCCESS:
            raise GrpcStatus(StatusCode.UNKNOWN, page.error or "read failed")
        events = list(page.events)
        self.revision = page.next_event_number
        return events, page.is_end_of_stream or not events or (
            not self.forward and page.next_event_number < 0
        )


class _NoStream(Exception):
    pass


class Read(_Reader):
    """
    A read of C{count} events of a stream or C{$all}.
    """

    def start(self) -> None:
        count = self.options.count
        self.remaining = count if count < _U64_MAX else _U64_MAX
        self.call.on_cancel = self._cancel
        self._pump()

    def _cancel(self) -> None:
        self.done = True

    def _pump(self) -> None:
        call = self.call
        try:
            while not self.done and call.writable:
                if self.remaining <= 0:
                    break
                if self.is_all:
                    if self.position < 0 and self.forward:
                        break
                    events, at_end = self.read_all_page(PAGE)
                else:
                    if self.forward and self.revision < 0:
                        break
                    events, at_end = self.read_stream_page()
                for resolved in events[: self.remaining]:
                    call.send(self._event(resolved), flush=False)
                call.flush()
                self.remaining -= min(len(events), self.remaining)
                if at_end:
                    break
            else:
                if not self.done and not call.finished:
                    call.on_drain = self._pump
                return
        except _NoStream:
            response = streams_pb2.ReadResp()
            response.stream_not_found.stream_identifier.CopyFrom(
                codec.stream_identifier(self.stream)
            )
            call.send(response)
        except GrpcStatus as status:
            self.done = True
            call.finish(status)
            return
        self.done = True
        call.finish(OK)


@implementer(ISubscriber)
class Subscription(_Reader):
    """
    A catch-up subscription: history page by page, then live from the hub;
    back to pages when the client falls behind.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._live: Any = None
        self._interval = codec.checkpoint_interval(self.options) if self.filter else 0
        self._since_checkpoint = 0
        self.forward = True

    def start(self) -> None:
        call = self.call
        call.on_cancel = self._cancel
        confirmation = streams_pb2.ReadResp()
        confirmation.confirmation.subscription_id = str(uuid.uuid4())
        if self.is_all:
            if self.position < 0:
                self.position = self._end_of_all()
        else:
            stream_options = self.options.stream
            which = stream_options.WhichOneof("revision_option")
            if which == "end":
                self.revision = self.store.last_event_number(self.stream) + 1
            elif which == "revision":
                # Subscriptions from a revision start after it.
                self.revision = int(stream_options.revision) + 1
            if not self.store.check_access(self.principal, self.stream, "$r"):
                raise codec.access_denied_status()
        if self.is_all and not self.store.check_access(self.principal, "$all", "$r"):
            raise codec.access_denied_status()
        call.send(confirmation)
        self._pump()

    def _end_of_all(self) -> int:
        page = self.store.read_all(-1, 0, True, False, self.principal)
        return int(page.next_position)

    def _cancel(self) -> None:
        self.done = True
        if self._live is not None:
            self._live.drop_silently()
            self._live = None

    def _checkpoint(self, position: int) -> None:
        response = streams_pb2.ReadResp()
        response.checkpoint.commit_position = position
        response.checkpoint.prepare_position = position
        self.call.send(response)

    def _pump(self) -> None:
        call = self.call
        try:
            while not self.done and call.writable:
                if self.is_all:
                    before = self.scanned
                    events, at_end = self.read_all_page(PAGE)
                    for resolved in events:
                        call.send(self._event(resolved), flush=False)
                    call.flush()
                    if self._interval:
                        self._since_checkpoint += self.scanned - before
                        if self._since_checkpoint >= self._interval:
                            self._since_checkpoint = 0
                            self._checkpoint(self.position)
                else:
                    try:
                        events, at_end = self.read_stream_page()
                    except _NoStream:
                        events, at_end = [], True
                        self.revision = max(self.revision, 0)
                    for resolved in events:
                        call.send(self._event(resolved), flush=False)
                    call.flush()
                if at_end:
                    self._go_live()
                    return
            if not self.done and not call.finished:
                call.on_drain = self._pump
        except GrpcStatus as status:
            self._cancel()
            call.finish(status)

    def _go_live(self) -> None:
        if self.options.control_option.compatibility >= 1:
            # Only clients that say so know CaughtUp (KurrentDB 24+).
            response = streams_pb2.ReadResp()
            response.caught_up.SetInParent()
            self.call.send(response)
        if self._interval:
            self._checkpoint(self.position)
        self._live = self.server.hub.subscribe(
            "$all" if self.is_all else self.stream, self.resolve_links, self.principal, self
        )

    # ISubscriber

    def event_appeared(self, event: ResolvedEvent, commit_position: int) -> None:
        if self.done:
            return
        record = event.original
        if self.is_all:
            if record.position < self.position:
                return
            self.position = record.next_position
            self.scanned += 1
            if self.filter is None or self.filter.matches(record):
                self.call.send(self._event(event))
            if self._interval:
                self._since_checkpoint += 1
                if self._since_checkpoint >= self._interval:
                    self._since_checkpoint = 0
                    self._checkpoint(self.position)
        else:
            if record.event_number < self.revision:
                return
            self.revision = record.event_number + 1
            self.call.send(self._event(event))
        if self.call.buffered >= 4 * HIGH_WATER and self._live is not None:
            # The client does not keep up: read pages again from here.
            self._live.drop_silently()
            self._live = None
            self.call.on_drain = self._pump

    def dropped(self, reason: DropReason) -> None:
        self._live = None
        if self.done:
            return
        self.done = True
        if reason is DropReason.ACCESS_DENIED:
            self.call.finish(codec.access_denied_status())
        else:
            self.call.finish(GrpcStatus(StatusCode.UNAVAILABLE, "Server shutting down"))



def node_members(
    config: Any, clock: IReactorTime, cluster: Callable[[], Any]
) -> Callable[[], list[tuple[uuid.UUID, float, str, bool, str, int]]]:
    """
    The members C{Gossip.Read} serves: the cluster's gossip table, or this
    single node as the leader.
    """
    own_id = uuid.uuid4()

    def members() -> list[tuple[uuid.UUID, float, str, bool, str, int]]:
        wiring = cluster()
        if wiring is None:
            return [
                (own_id, clock.seconds(), "Leader", True, config.advertised_ext_ip,
                 config.advertised_ext_http_port)
            ]
        info = wiring.controller.cluster_info()
        return [
            (m.instance_id, m.timestamp, m.state.value, m.is_alive, m.external_http.host,
             m.external_http.port)
            for m in info.members
        ]

    return members
