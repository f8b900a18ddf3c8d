# -*- test-case-name: estwisted.grpc.test.test_protocol -*-
"""
The administrative gRPC services over the node's own parts:
C{event_store.client.users.Users} over L{estwisted.users.UserManager} (the
same accounts as v5 HTTP C{/users}), C{event_store.client.operations.Operations}
(scavenge start and stop over L{estwisted.core.scavenger.Scavenger}, shutdown,
merge indexes) and C{event_store.client.monitoring.Monitoring} (C{Stats}).
"""

from __future__ import annotations

import datetime
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.core.errors import NotAuthenticated, NotFound
from estwisted.core.model import UNIX_EPOCH_TICKS, Principal
from estwisted.grpc import codec
from estwisted.grpc.framing import OK, GrpcStatus, StatusCode
from estwisted.grpc.protocol import ServerCall
from estwisted.grpc.protos import monitoring_pb2, operations_pb2, shared_pb2, users_pb2

if TYPE_CHECKING:
    from estwisted.core.scavenger import Scavenger
    from estwisted.core.streams import StreamStore
    from estwisted.core.users import UserManager
    from estwisted.subscriptions.persistent import PersistentSubscriptions
    from estwisted.subscriptions.volatile import SubscriptionHub

_log = Logger()

USERS = "event_store.client.users.Users"
OPERATIONS = "event_store.client.operations.Operations"
MONITORING = "event_store.client.monitoring.Monitoring"

Unary = Callable[[ServerCall, Any, Callable[[Any], None]], None]
Method = Callable[[ServerCall, Optional[Principal]], None]


def _user_status(error: BaseException, login: str) -> GrpcStatus:
    if isinstance(error, NotFound):
        return GrpcStatus(
            StatusCode.NOT_FOUND, f"User '{login}' is not found.",
            (("exception", "user-not-found"), ("login-name", login)),
        )
    if isinstance(error, NotAuthenticated):
        return GrpcStatus(StatusCode.PERMISSION_DENIED, "Access Denied",
                          (("exception", "access-denied"),))
    return codec.status_of(error)


def _ticks_since_epoch(iso: str) -> int:
    if not iso:
        return 0
    try:
        moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 10_000_000)


def _answer(call: ServerCall, d: Deferred[Any], response: Any,
            status_of: Callable[[BaseException], GrpcStatus]) -> None:
    def ok(_: Any) -> None:
        if not call.finished:
            call.send(response)
            call.finish(OK)

    def failed(f: Failure) -> None:
        assert f.value is not None
        status = status_of(f.value)
        if status.code is StatusCode.UNKNOWN:
            _log.failure("A gRPC administrative call failed", f)
        call.finish(status)

    d.addCallbacks(ok, failed).addErrback(
        lambda f: _log.failure("Answering a gRPC administrative call failed", f)
    )


class UsersService:
    def __init__(self, users: UserManager, unary: Unary) -> None:
        self.users = users
        self._unary = unary

    def methods(self) -> dict[tuple[str, str], Method]:
        return {
            (USERS, "Create"): self._create,
            (USERS, "Update"): self._update,
            (USERS, "Delete"): self._simple(users_pb2.DeleteReq, users_pb2.DeleteResp,
                                            "delete_user"),
            (USERS, "Enable"): self._simple(users_pb2.EnableReq, users_pb2.EnableResp,
                                            "enable_user"),
            (USERS, "Disable"): self._simple(users_pb2.DisableReq, users_pb2.DisableResp,
                                             "disable_user"),
            (USERS, "Details"): self._details,
            (USERS, "ChangePassword"): self._change_password,
            (USERS, "ResetPassword"): self._reset_password,
        }

    def _create(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            o = request.options
            if not o.login_name or not o.password:
                raise codec.bad_argument("a login name and a password are required")
            d = self.users.create_user(o.login_name, o.full_name, list(o.groups), o.password,
                                       principal)
            _answer(call, d, users_pb2.CreateResp(), lambda e: _user_status(e, o.login_name))

        self._unary(call, users_pb2.CreateReq, go)

    def _update(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            o = request.options
            d = self.users.update_user(o.login_name, o.full_name, list(o.groups), principal)
            if o.password:
                d.addCallback(
                    lambda _: self.users.reset_password(o.login_name, o.password, principal)
                )
            _answer(call, d, users_pb2.UpdateResp(), lambda e: _user_status(e, o.login_name))

        self._unary(call, users_pb2.UpdateReq, go)

    def _simple(self, request_type: Any, response_type: Any, name: str) -> Method:
        def method(call: ServerCall, principal: Optional[Principal]) -> None:
            def go(request: Any) -> None:
                login = request.options.login_name
                d = getattr(self.users, name)(login, principal)
                _answer(call, d, response_type(), lambda e: _user_status(e, login))

            self._unary(call, request_type, go)

        return method

    def _change_password(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            o = request.options
            d = self.users.change_password(o.login_name, o.current_password, o.new_password,
                                           principal)
            _answer(call, d, users_pb2.ChangePasswordResp(),
                    lambda e: _user_status(e, o.login_name))

        self._unary(call, users_pb2.ChangePasswordReq, go)

    def _reset_password(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            o = request.options
            d = self.users.reset_password(o.login_name, o.new_password, principal)
            _answer(call, d, users_pb2.ResetPasswordResp(),
                    lambda e: _user_status(e, o.login_name))

        self._unary(call, users_pb2.ResetPasswordReq, go)

    def _details(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            login = request.options.login_name
            try:
                if login:
                    records = [self.users.get_user(login, principal)]
                else:
                    records = self.users.list_users(principal)
            except Exception as e:
                raise _user_status(e, login) from None
            for record in records:
                response = users_pb2.DetailsResp()
                details = response.user_details
                details.login_name = record.login
                details.full_name = record.full_name
                details.groups.extend(record.groups)
                details.disabled = record.disabled
                details.last_updated.ticks_since_epoch = _ticks_since_epoch(
                    record.date_last_updated
                )
                call.send(response)
            call.finish(OK)

        self._unary(call, users_pb2.DetailsReq, go)


#: C{(resign, set_node_priority)} of L{OperationsService}.
NodeControl = tuple[Callable[[], None], Callable[[int], None]]


def _require_ops(principal: Optional[Principal]) -> None:
    if principal is None or not principal.is_ops:
        raise codec.access_denied_status()


class OperationsService:
    """
    @param store: for its scavenger (C{None} in memory: scavenges start and
        end at once, as v5 HTTP answers).
    @param shutdown: stops the node.
    @param node_control: C{(resign, set_node_priority)}: make this node
        step down if it leads, and gossip a new node priority (both do
        nothing on a single node, which answers success as EventStoreDB
        does).
    """

    def __init__(self, store: StreamStore, shutdown: Optional[Callable[[], None]], unary: Unary,
                 clock: IReactorTime,
                 persistent: Optional[PersistentSubscriptions] = None,
                 node_control: Optional[NodeControl] = None) -> None:
        self.node_control = node_control
        self.persistent = persistent
        self.store = store
        self.shutdown = shutdown
        self.clock = clock
        self._unary = unary

    def methods(self) -> dict[tuple[str, str], Method]:
        out: dict[tuple[str, str], Method] = {
            (OPERATIONS, "StartScavenge"): self._start,
            (OPERATIONS, "StopScavenge"): self._stop,
            (OPERATIONS, "MergeIndexes"): self._merge,
        }
        if self.shutdown is not None:
            out[(OPERATIONS, "Shutdown")] = self._shutdown
        if self.persistent is not None:
            out[(OPERATIONS, "RestartPersistentSubscriptions")] = self._restart_persistent
        if self.node_control is not None:
            out[(OPERATIONS, "ResignNode")] = self._resign
            out[(OPERATIONS, "SetNodePriority")] = self._set_priority
        return out

    def _resign(self, call: ServerCall, principal: Optional[Principal]) -> None:
        control = self.node_control
        assert control is not None

        def go(request: Any) -> None:
            _require_ops(principal)
            call.send(shared_pb2.Empty())
            call.finish(OK)
            # After the answer: stepping down may end this call's leadership.
            self.clock.callLater(0, control[0])

        self._unary(call, shared_pb2.Empty, go)

    def _set_priority(self, call: ServerCall, principal: Optional[Principal]) -> None:
        control = self.node_control
        assert control is not None

        def go(request: Any) -> None:
            _require_ops(principal)
            control[1](int(request.priority))
            call.send(shared_pb2.Empty())
            call.finish(OK)

        self._unary(call, operations_pb2.SetNodePriorityReq, go)

    def _restart_persistent(self, call: ServerCall, principal: Optional[Principal]) -> None:
        from estwisted.grpc.persistent import restart_subsystem

        persistent = self.persistent
        assert persistent is not None

        def go(request: Any) -> None:
            restart_subsystem(call, persistent, principal)

        self._unary(call, shared_pb2.Empty, go)

    def _scavenger(self) -> Optional[Scavenger]:
        return self.store.scavenger()

    def _start(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            _require_ops(principal)
            o = request.options
            if o.thread_count < 0 or o.start_from_chunk < 0:
                raise codec.bad_argument("thread_count and start_from_chunk must be >= 0")
            response = operations_pb2.ScavengeResp()
            scavenger = self._scavenger()
            if scavenger is None:
                import uuid

                response.scavenge_id = str(uuid.uuid4())
                response.scavenge_result = operations_pb2.ScavengeResp.Started
            else:
                from estwisted.core.scavenger import ScavengeInProgress

                try:
                    scavenge_id, done = scavenger.start(o.start_from_chunk)
                    done.addErrback(lambda f: _log.failure("Scavenge failed", f))
                    response.scavenge_result = operations_pb2.ScavengeResp.Started
                except ScavengeInProgress:
                    scavenge_id = scavenger.current or ""
                    response.scavenge_result = operations_pb2.ScavengeResp.InProgress
                response.scavenge_id = scavenge_id
            call.send(response)
            call.finish(OK)

        self._unary(call, operations_pb2.StartScavengeReq, go)

    def _stop(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            _require_ops(principal)
            scavenge_id = request.options.scavenge_id
            scavenger = self._scavenger()
            if scavenger is None or not scavenger.stop(scavenge_id):
                raise GrpcStatus(
                    StatusCode.NOT_FOUND, f"Scavenge '{scavenge_id}' is not running.",
                    (("exception", "scavenge-not-found"), ("scavenge-id", scavenge_id)),
                )
            call.send(operations_pb2.ScavengeResp(
                scavenge_id=scavenge_id, scavenge_result=operations_pb2.ScavengeResp.Stopped))
            call.finish(OK)

        self._unary(call, operations_pb2.StopScavengeReq, go)

    def _merge(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            _require_ops(principal)
            # The index needs no merging here (as v5 HTTP answers).
            call.send(shared_pb2.Empty())
            call.finish(OK)

        self._unary(call, shared_pb2.Empty, go)

    def _shutdown(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            _require_ops(principal)
            call.send(shared_pb2.Empty())
            call.finish(OK)
            assert self.shutdown is not None
            # Let the answer go out first.
            self.clock.callLater(0.1, self.shutdown)

        self._unary(call, shared_pb2.Empty, go)


class MonitoringService:
    """
    C{Stats}: a map of node statistics now and every
    C{refresh_time_period_in_ms} until the client cancels.
    """

    def __init__(
        self, store: StreamStore, hub: SubscriptionHub, clock: IReactorTime, unary: Unary
    ) -> None:
        self.store = store
        self.hub = hub
        self.clock = clock
        self._unary = unary
        self._started = clock.seconds()

    def methods(self) -> dict[tuple[str, str], Method]:
        return {(MONITORING, "Stats"): self._stats}

    def stats(self) -> dict[str, str]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = datetime.datetime.fromtimestamp(self._started, datetime.UTC)
        return {
            "proc-id": str(os.getpid()),
            "proc-startTime": started.isoformat().replace("+00:00", "Z"),
            "proc-mem": str(usage.ru_maxrss * 1024),
            "proc-cpu-user-seconds": f"{usage.ru_utime:.3f}",
            "proc-cpu-system-seconds": f"{usage.ru_stime:.3f}",
            "es-writer-lastCommitPosition": str(self.store.last_commit_position),
            "es-subscriptions-volatile": str(self.hub.count),
            "sys-time-ticks": str(UNIX_EPOCH_TICKS + int(self.clock.seconds() * 10_000_000)),
        }

    def _stats(self, call: ServerCall, principal: Optional[Principal]) -> None:
        def go(request: Any) -> None:
            period = max(0.1, request.refresh_time_period_in_ms / 1000.0 or 1.0)
            timer: list[Any] = [None]

            def tick() -> None:
                timer[0] = None
                if call.finished:
                    return
                response = monitoring_pb2.StatsResp()
                response.stats.update(self.stats())
                call.send(response)
                timer[0] = self.clock.callLater(period, tick)

            def cancel() -> None:
                if timer[0] is not None and timer[0].active():
                    timer[0].cancel()
                timer[0] = None

            call.on_cancel = cancel
            tick()

        self._unary(call, monitoring_pb2.StatsReq, go)
