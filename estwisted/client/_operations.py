# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
Operations as pure request/answer objects: each one knows the package it
sends and turns the server's answer into a L{Decision} (complete, fail,
retry on this or another connection, or reconnect to the leader).  No
reactor and no connection here; L{estwisted.client._connection} sends them,
times them out and retries them.

An append keeps its event ids across attempts, so a retried append is
recognised by the server (idempotent writes).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Optional, Union

from attrs import frozen

import estwisted.client._errors as errors
from estwisted.client._discovery import NodeEndpoints
from estwisted.client._values import (
    AllEventsSlice,
    DeleteResult,
    EventData,
    EventReadResult,
    EventReadStatus,
    Position,
    ReadDirection,
    RecordedEvent,
    ResolvedEvent,
    SliceReadStatus,
    StreamEventsSlice,
    UserCredentials,
    WriteResult,
)
from estwisted.core.model import UNIX_EPOCH_TICKS
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import PayloadError, TcpCommand, TcpPackage, parse

_C = TcpCommand


# -- decisions -----------------------------------------------------------------


@frozen
class Complete:
    """
    The operation succeeded with C{value}.
    """

    value: Any


@frozen
class Fail:
    """
    The operation failed for good with C{error}.
    """

    error: Exception


@frozen
class Retry:
    """
    Send again (counts as a retry), on the current or the next connection.
    """

    reason: str


@frozen
class Reconnect:
    """
    The node is not the leader: reconnect (to C{endpoints} when known,
    else through discovery) and send again.
    """

    endpoints: Optional[NodeEndpoints]
    reason: str


Decision = Union[Complete, Fail, Retry, Reconnect]


def not_resendable_error(operation: Operation, why: str) -> Exception:
    """
    The error of a transaction write or commit that cannot be sent again
    (C{why}: what happened to it).
    """
    if isinstance(operation, TransactionCommit):
        return errors.TransactionCommitUnknown(
            f"transaction {operation.transaction_id}: {why} after the commit was sent; "
            "it may or may not be committed (all of its events or none), and is not sent again",
            operation.transaction_id,
            operation.stream,
            operation.expected_version,
            operation.events,
        )
    transaction_id = getattr(operation, "transaction_id", -1)
    return errors.TransactionLost(
        f"transaction {transaction_id}: {why}; the transaction is abandoned"
        " (nothing of it is committed)",
        transaction_id,
    )


def can_retry(attempts: int, max_retries: int) -> bool:
    """
    Whether an operation sent C{attempts} times may be sent once more.
    C{max_retries} counts the attempts after the first; -1 is unlimited.
    """
    return max_retries < 0 or attempts <= max_retries


def decide_common(package: TcpPackage) -> Optional[Decision]:
    """
    The answers every operation treats alike: C{NotHandled}, C{BadRequest},
    C{NotAuthenticated}.

    @return: C{None} for any other command.
    """
    command = package.command
    if command == _C.NotHandled:
        try:
            message = parse(pb.NotHandled, package.data)
        except PayloadError as e:
            return Fail(errors.ServerError(f"Bad NotHandled answer: {e}"))
        if message.reason == pb.NotHandled.NotMaster:
            endpoints = None
            if message.HasField("additional_info"):
                try:
                    info = parse(pb.NotHandled.MasterInfo, message.additional_info)
                    endpoints = NodeEndpoints(
                        info.external_tcp_address,
                        info.external_tcp_port,
                        info.external_secure_tcp_port
                        if info.HasField("external_secure_tcp_port")
                        else 0,
                    )
                except PayloadError:
                    endpoints = None
            return Reconnect(endpoints, "NotMaster")
        if message.reason == pb.NotHandled.TooBusy:
            return Retry("TooBusy")
        return Retry("NotReady")
    if command == _C.BadRequest:
        return Fail(errors.ServerError(package.data.decode("utf-8", "replace")))
    if command == _C.NotAuthenticated:
        return Fail(errors.NotAuthenticated(package.data.decode("utf-8", "replace")))
    return None


def _unexpected(package: TcpPackage, expected: int) -> Fail:
    return Fail(
        errors.ServerError(
            f"Expected {TcpCommand(expected).name}, got command 0x{package.command:02X}"
        )
    )


# -- conversions -------------------------------------------------------------------


def recorded_event_from_proto(message: pb.EventRecord) -> RecordedEvent:
    if message.HasField("created_epoch"):
        created = message.created_epoch
    elif message.HasField("created"):
        created = (message.created - UNIX_EPOCH_TICKS) // 10_000
    else:
        created = 0
    return RecordedEvent(
        event_stream_id=message.event_stream_id,
        event_number=message.event_number,
        event_id=uuid.UUID(bytes_le=bytes(message.event_id)),
        event_type=message.event_type,
        data=bytes(message.data),
        metadata=bytes(message.metadata),
        is_json=message.data_content_type == 1,
        created=created,
    )


def resolved_from_proto(
    message: Union[pb.ResolvedIndexedEvent, pb.ResolvedEvent],
) -> ResolvedEvent:
    """
    A resolved event (with its position when the message carries one).
    """
    event = recorded_event_from_proto(message.event) if message.HasField("event") else None
    link = recorded_event_from_proto(message.link) if message.HasField("link") else None
    position = None
    if isinstance(message, pb.ResolvedEvent):
        position = Position(message.commit_position, message.prepare_position)
    return ResolvedEvent(event, link, position)


def new_event_to_proto(event: EventData, out: pb.NewEvent) -> None:
    out.event_id = event.event_id.bytes_le
    out.event_type = event.type
    out.data_content_type = 1 if event.is_json else 0
    out.metadata_content_type = 1 if event.is_json else 0
    out.data = event.data
    out.metadata = event.metadata


def _write_error(result: int, message: str, current_version: Optional[int]) -> Decision:
    if result in (pb.PrepareTimeout, pb.CommitTimeout, pb.ForwardTimeout):
        return Retry(pb.OperationResult.Name(result))
    if result == pb.WrongExpectedVersion:
        return Fail(
            errors.WrongExpectedVersion(message or "Wrong expected version.", current_version)
        )
    if result == pb.StreamDeleted:
        return Fail(errors.StreamDeleted(message or "Stream deleted."))
    if result == pb.InvalidTransaction:
        return Fail(errors.InvalidTransaction(message or "Invalid transaction."))
    if result == pb.AccessDenied:
        return Fail(errors.AccessDenied(message or "Access denied."))
    return Fail(errors.ServerError(f"Unexpected operation result {result}: {message}"))


# -- operations ----------------------------------------------------------------


class Operation:
    """
    One request.  C{command} and C{payload()} make the package;
    C{decide(package)} judges the answer.
    """

    command: int = 0
    reply: int = 0
    credentials: Optional[UserCredentials] = None
    name: str = "operation"
    #: whether the operation may be sent again once it may have reached the
    #: node (after a lost connection or a timeout): not for transaction
    #: writes and commits, which are bound to one node's memory
    resend_safe: bool = True
    #: the connection session it must be sent on (C{None}: any)
    session: Optional[int] = None

    def payload(self) -> bytes:
        raise NotImplementedError

    def decide(self, package: TcpPackage) -> Decision:
        if package.command == self.reply:
            try:
                return self.inspect(package.data)
            except PayloadError as e:
                return Fail(errors.ServerError(f"Bad {self.name} answer: {e}"))
        common = decide_common(package)
        if common is not None:
            return common
        return _unexpected(package, self.reply)

    def inspect(self, data: bytes) -> Decision:
        raise NotImplementedError


class AppendToStream(Operation):
    command = _C.WriteEvents
    reply = _C.WriteEventsCompleted
    name = "append"

    def __init__(
        self,
        stream: str,
        expected_version: int,
        events: Sequence[EventData],
        require_master: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        self.stream = stream
        self.expected_version = expected_version
        self.events = tuple(events)
        self.require_master = require_master
        self.credentials = credentials
        message = pb.WriteEvents(
            event_stream_id=stream, expected_version=expected_version,
            require_master=require_master,
        )
        for event in self.events:
            new_event_to_proto(event, message.events.add())
        # Built once: every attempt sends the same bytes (the same event ids).
        self._payload = message.SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.WriteEventsCompleted, data)
        if message.result == pb.Success:
            return Complete(
                WriteResult(
                    message.last_event_number,
                    Position(
                        message.commit_position if message.HasField("commit_position") else -1,
                        message.prepare_position if message.HasField("prepare_position") else -1,
                    ),
                )
            )
        current = message.current_version if message.HasField("current_version") else None
        return _write_error(message.result, message.message, current)


class DeleteStream(Operation):
    command = _C.DeleteStream
    reply = _C.DeleteStreamCompleted
    name = "delete"

    def __init__(
        self,
        stream: str,
        expected_version: int,
        hard_delete: bool,
        require_master: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        self.credentials = credentials
        self._payload = pb.DeleteStream(
            event_stream_id=stream,
            expected_version=expected_version,
            require_master=require_master,
            hard_delete=hard_delete,
        ).SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.DeleteStreamCompleted, data)
        if message.result == pb.Success:
            return Complete(
                DeleteResult(
                    Position(
                        message.commit_position if message.HasField("commit_position") else -1,
                        message.prepare_position if message.HasField("prepare_position") else -1,
                    )
                )
            )
        return _write_error(message.result, message.message, None)


class ReadEvent(Operation):
    command = _C.ReadEvent
    reply = _C.ReadEventCompleted
    name = "read event"

    def __init__(
        self,
        stream: str,
        event_number: int,
        resolve_link_tos: bool,
        require_master: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        self.stream = stream
        self.event_number = event_number
        self.credentials = credentials
        self._payload = pb.ReadEvent(
            event_stream_id=stream,
            event_number=event_number,
            resolve_link_tos=resolve_link_tos,
            require_master=require_master,
        ).SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.ReadEventCompleted, data)
        r = pb.ReadEventCompleted
        statuses = {
            r.Success: EventReadStatus.SUCCESS,
            r.NotFound: EventReadStatus.NOT_FOUND,
            r.NoStream: EventReadStatus.NO_STREAM,
            r.StreamDeleted: EventReadStatus.STREAM_DELETED,
        }
        if message.result in statuses:
            status = statuses[message.result]
            event = None
            if status is EventReadStatus.SUCCESS and message.HasField("event"):
                event = resolved_from_proto(message.event)
            number = self.event_number
            if event is not None and number < 0:
                number = event.original_event_number
            return Complete(EventReadResult(status, self.stream, number, event))
        if message.result == r.AccessDenied:
            return Fail(errors.AccessDenied(f"Read access denied for stream {self.stream!r}."))
        return Fail(errors.ServerError(message.error or "Read error."))


class ReadStreamEvents(Operation):
    name = "read stream"

    def __init__(
        self,
        stream: str,
        start: int,
        count: int,
        forward: bool,
        resolve_link_tos: bool,
        require_master: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        self.stream = stream
        self.start = start
        self.forward = forward
        self.credentials = credentials
        if forward:
            self.command = _C.ReadStreamEventsForward
            self.reply = _C.ReadStreamEventsForwardCompleted
        else:
            self.command, self.reply = (
                _C.ReadStreamEventsBackward,
                _C.ReadStreamEventsBackwardCompleted,
            )
        self._payload = pb.ReadStreamEvents(
            event_stream_id=stream,
            from_event_number=start,
            max_count=count,
            resolve_link_tos=resolve_link_tos,
            require_master=require_master,
        ).SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.ReadStreamEventsCompleted, data)
        r = pb.ReadStreamEventsCompleted
        statuses = {
            r.Success: SliceReadStatus.SUCCESS,
            r.NotModified: SliceReadStatus.SUCCESS,
            r.NoStream: SliceReadStatus.STREAM_NOT_FOUND,
            r.StreamDeleted: SliceReadStatus.STREAM_DELETED,
        }
        if message.result in statuses:
            return Complete(
                StreamEventsSlice(
                    status=statuses[message.result],
                    stream=self.stream,
                    from_event_number=self.start,
                    read_direction=_direction(self.forward),
                    events=tuple(resolved_from_proto(e) for e in message.events),
                    next_event_number=message.next_event_number,
                    last_event_number=message.last_event_number,
                    is_end_of_stream=message.is_end_of_stream,
                )
            )
        if message.result == r.AccessDenied:
            return Fail(errors.AccessDenied(f"Read access denied for stream {self.stream!r}."))
        return Fail(errors.ServerError(message.error or "Read error."))


class ReadAllEvents(Operation):
    name = "read all"

    def __init__(
        self,
        position: Position,
        count: int,
        forward: bool,
        resolve_link_tos: bool,
        require_master: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        self.position = position
        self.forward = forward
        self.credentials = credentials
        if forward:
            self.command, self.reply = _C.ReadAllEventsForward, _C.ReadAllEventsForwardCompleted
        else:
            self.command, self.reply = _C.ReadAllEventsBackward, _C.ReadAllEventsBackwardCompleted
        self._payload = pb.ReadAllEvents(
            commit_position=position.commit_position,
            prepare_position=position.prepare_position,
            max_count=count,
            resolve_link_tos=resolve_link_tos,
            require_master=require_master,
        ).SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.ReadAllEventsCompleted, data)
        r = pb.ReadAllEventsCompleted
        if message.result in (r.Success, r.NotModified):
            return Complete(
                AllEventsSlice(
                    read_direction=_direction(self.forward),
                    from_position=Position(message.commit_position, message.prepare_position),
                    next_position=Position(
                        message.next_commit_position, message.next_prepare_position
                    ),
                    events=tuple(resolved_from_proto(e) for e in message.events),
                )
            )
        if message.result == r.AccessDenied:
            return Fail(errors.AccessDenied("Read access denied for $all."))
        return Fail(errors.ServerError(message.error or "Read error."))


@frozen
class PersistentSubscriptionSettings:
    """
    Settings of a persistent subscription group (times in milliseconds, as
    on the wire).  C{start_from} is an event number, -1 meaning "from now".
    """

    resolve_link_tos: bool = False
    start_from: int = -1
    message_timeout_ms: int = 30_000
    extra_statistics: bool = False
    live_buffer_size: int = 500
    read_batch_size: int = 20
    history_buffer_size: int = 500
    max_retry_count: int = 10
    prefer_round_robin: bool = True
    checkpoint_after_ms: int = 2_000
    checkpoint_max_count: int = 1_000
    checkpoint_min_count: int = 10
    max_subscriber_count: int = 0
    named_consumer_strategy: str = "RoundRobin"


class PersistentGroupOperation(Operation):
    """
    Create, update or delete a persistent subscription group.
    """

    def __init__(
        self,
        kind: str,
        stream: str,
        group: str,
        settings: Optional[PersistentSubscriptionSettings],
        credentials: Optional[UserCredentials],
    ) -> None:
        self.kind = kind
        self.name = f"{kind} persistent subscription"
        self.credentials = credentials
        self.stream = stream
        self.group = group
        if kind == "delete":
            self.command = _C.DeletePersistentSubscription
            self.reply = _C.DeletePersistentSubscriptionCompleted
            self._payload = pb.DeletePersistentSubscription(
                subscription_group_name=group, event_stream_id=stream
            ).SerializeToString()
            self._result_type: Any = pb.DeletePersistentSubscriptionCompleted
            return
        assert settings is not None
        fields: dict[str, Any] = dict(
            subscription_group_name=group,
            event_stream_id=stream,
            resolve_link_tos=settings.resolve_link_tos,
            start_from=settings.start_from,
            message_timeout_milliseconds=settings.message_timeout_ms,
            record_statistics=settings.extra_statistics,
            live_buffer_size=settings.live_buffer_size,
            read_batch_size=settings.read_batch_size,
            buffer_size=settings.history_buffer_size,
            max_retry_count=settings.max_retry_count,
            prefer_round_robin=settings.prefer_round_robin,
            checkpoint_after_time=settings.checkpoint_after_ms,
            checkpoint_max_count=settings.checkpoint_max_count,
            checkpoint_min_count=settings.checkpoint_min_count,
            subscriber_max_count=settings.max_subscriber_count,
            named_consumer_strategy=settings.named_consumer_strategy,
        )
        if kind == "create":
            self.command = _C.CreatePersistentSubscription
            self.reply = _C.CreatePersistentSubscriptionCompleted
            self._payload = pb.CreatePersistentSubscription(**fields).SerializeToString()
            self._result_type = pb.CreatePersistentSubscriptionCompleted
        else:
            self.command = _C.UpdatePersistentSubscription
            self.reply = _C.UpdatePersistentSubscriptionCompleted
            self._payload = pb.UpdatePersistentSubscription(**fields).SerializeToString()
            self._result_type = pb.UpdatePersistentSubscriptionCompleted

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(self._result_type, data)
        if message.result == 0:
            return Complete(None)
        name = self._result_type.DESCRIPTOR.fields_by_name["result"].enum_type.values_by_number[
            message.result
        ].name
        text = message.reason or f"{self.name} {self.stream}::{self.group}: {name}"
        if name == "AccessDenied":
            return Fail(errors.AccessDenied(text))
        return Fail(errors.PersistentSubscriptionError(text, name))


def _direction(forward: bool) -> ReadDirection:
    return ReadDirection.FORWARD if forward else ReadDirection.BACKWARD


class TransactionStart(Operation):
    command = _C.TransactionStart
    reply = _C.TransactionStartCompleted
    name = "start transaction"

    def __init__(
        self,
        stream: str,
        expected_version: int,
        require_master: bool,
        credentials: Optional[UserCredentials],
    ) -> None:
        self.credentials = credentials
        self._payload = pb.TransactionStart(
            event_stream_id=stream, expected_version=expected_version,
            require_master=require_master,
        ).SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.TransactionStartCompleted, data)
        if message.result == pb.Success:
            return Complete(message.transaction_id)
        return _write_error(message.result, message.message, None)


class TransactionWrite(Operation):
    command = _C.TransactionWrite
    reply = _C.TransactionWriteCompleted
    name = "transaction write"
    resend_safe = False

    def __init__(
        self,
        transaction_id: int,
        events: Sequence[EventData],
        require_master: bool,
        credentials: Optional[UserCredentials],
        session: Optional[int] = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.session = session
        self.credentials = credentials
        message = pb.TransactionWrite(transaction_id=transaction_id, require_master=require_master)
        for event in events:
            new_event_to_proto(event, message.events.add())
        self._payload = message.SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.TransactionWriteCompleted, data)
        if message.result == pb.Success:
            return Complete(None)
        return _write_error(message.result, message.message, None)


class TransactionCommit(Operation):
    command = _C.TransactionCommit
    reply = _C.TransactionCommitCompleted
    name = "transaction commit"
    resend_safe = False

    def __init__(
        self,
        transaction_id: int,
        require_master: bool,
        credentials: Optional[UserCredentials],
        session: Optional[int] = None,
        stream: Optional[str] = None,
        expected_version: Optional[int] = None,
        events: Sequence[EventData] = (),
    ) -> None:
        self.transaction_id = transaction_id
        self.session = session
        self.stream = stream
        self.expected_version = expected_version
        self.events = tuple(events)
        self.credentials = credentials
        self._payload = pb.TransactionCommit(
            transaction_id=transaction_id, require_master=require_master
        ).SerializeToString()

    def payload(self) -> bytes:
        return self._payload

    def inspect(self, data: bytes) -> Decision:
        message = parse(pb.TransactionCommitCompleted, data)
        if message.result == pb.Success:
            return Complete(
                WriteResult(
                    message.last_event_number,
                    Position(
                        message.commit_position if message.HasField("commit_position") else -1,
                        message.prepare_position if message.HasField("prepare_position") else -1,
                    ),
                )
            )
        return _write_error(message.result, message.message, None)
