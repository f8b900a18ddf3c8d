# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OperationResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Success: _ClassVar[OperationResult]
    PrepareTimeout: _ClassVar[OperationResult]
    CommitTimeout: _ClassVar[OperationResult]
    ForwardTimeout: _ClassVar[OperationResult]
    WrongExpectedVersion: _ClassVar[OperationResult]
    StreamDeleted: _ClassVar[OperationResult]
    InvalidTransaction: _ClassVar[OperationResult]
    AccessDenied: _ClassVar[OperationResult]
Success: OperationResult
PrepareTimeout: OperationResult
CommitTimeout: OperationResult
ForwardTimeout: OperationResult
WrongExpectedVersion: OperationResult
StreamDeleted: OperationResult
InvalidTransaction: OperationResult
AccessDenied: OperationResult

class NewEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "data_content_type", "metadata_content_type", "data", "metadata")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    event_id: bytes
    event_type: str
    data_content_type: int
    metadata_content_type: int
    data: bytes
    metadata: bytes
    def __init__(self, event_id: _Optional[bytes] = ..., event_type: _Optional[str] = ..., data_content_type: _Optional[int] = ..., metadata_content_type: _Optional[int] = ..., data: _Optional[bytes] = ..., metadata: _Optional[bytes] = ...) -> None: ...

class EventRecord(_message.Message):
    __slots__ = ("event_stream_id", "event_number", "event_id", "event_type", "data_content_type", "metadata_content_type", "data", "metadata", "created", "created_epoch")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CREATED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    event_number: int
    event_id: bytes
    event_type: str
    data_content_type: int
    metadata_content_type: int
    data: bytes
    metadata: bytes
    created: int
    created_epoch: int
    def __init__(self, event_stream_id: _Optional[str] = ..., event_number: _Optional[int] = ..., event_id: _Optional[bytes] = ..., event_type: _Optional[str] = ..., data_content_type: _Optional[int] = ..., metadata_content_type: _Optional[int] = ..., data: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., created: _Optional[int] = ..., created_epoch: _Optional[int] = ...) -> None: ...

class ResolvedIndexedEvent(_message.Message):
    __slots__ = ("event", "link")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    event: EventRecord
    link: EventRecord
    def __init__(self, event: _Optional[_Union[EventRecord, _Mapping]] = ..., link: _Optional[_Union[EventRecord, _Mapping]] = ...) -> None: ...

class ResolvedEvent(_message.Message):
    __slots__ = ("event", "link", "commit_position", "prepare_position")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    event: EventRecord
    link: EventRecord
    commit_position: int
    prepare_position: int
    def __init__(self, event: _Optional[_Union[EventRecord, _Mapping]] = ..., link: _Optional[_Union[EventRecord, _Mapping]] = ..., commit_position: _Optional[int] = ..., prepare_position: _Optional[int] = ...) -> None: ...

class WriteEvents(_message.Message):
    __slots__ = ("event_stream_id", "expected_version", "events", "require_master")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    expected_version: int
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    require_master: bool
    def __init__(self, event_stream_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., require_master: _Optional[bool] = ...) -> None: ...

class WriteEventsCompleted(_message.Message):
    __slots__ = ("result", "message", "first_event_number", "last_event_number", "prepare_position", "commit_position", "current_version")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    result: OperationResult
    message: str
    first_event_number: int
    last_event_number: int
    prepare_position: int
    commit_position: int
    current_version: int
    def __init__(self, result: _Optional[_Union[OperationResult, str]] = ..., message: _Optional[str] = ..., first_event_number: _Optional[int] = ..., last_event_number: _Optional[int] = ..., prepare_position: _Optional[int] = ..., commit_position: _Optional[int] = ..., current_version: _Optional[int] = ...) -> None: ...

class DeleteStream(_message.Message):
    __slots__ = ("event_stream_id", "expected_version", "require_master", "hard_delete")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    HARD_DELETE_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    expected_version: int
    require_master: bool
    hard_delete: bool
    def __init__(self, event_stream_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., require_master: _Optional[bool] = ..., hard_delete: _Optional[bool] = ...) -> None: ...

class DeleteStreamCompleted(_message.Message):
    __slots__ = ("result", "message", "prepare_position", "commit_position")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    result: OperationResult
    message: str
    prepare_position: int
    commit_position: int
    def __init__(self, result: _Optional[_Union[OperationResult, str]] = ..., message: _Optional[str] = ..., prepare_position: _Optional[int] = ..., commit_position: _Optional[int] = ...) -> None: ...

class TransactionStart(_message.Message):
    __slots__ = ("event_stream_id", "expected_version", "require_master")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    expected_version: int
    require_master: bool
    def __init__(self, event_stream_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., require_master: _Optional[bool] = ...) -> None: ...

class TransactionStartCompleted(_message.Message):
    __slots__ = ("transaction_id", "result", "message")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    result: OperationResult
    message: str
    def __init__(self, transaction_id: _Optional[int] = ..., result: _Optional[_Union[OperationResult, str]] = ..., message: _Optional[str] = ...) -> None: ...

class TransactionWrite(_message.Message):
    __slots__ = ("transaction_id", "events", "require_master")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    require_master: bool
    def __init__(self, transaction_id: _Optional[int] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., require_master: _Optional[bool] = ...) -> None: ...

class TransactionWriteCompleted(_message.Message):
    __slots__ = ("transaction_id", "result", "message")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    result: OperationResult
    message: str
    def __init__(self, transaction_id: _Optional[int] = ..., result: _Optional[_Union[OperationResult, str]] = ..., message: _Optional[str] = ...) -> None: ...

class TransactionCommit(_message.Message):
    __slots__ = ("transaction_id", "require_master")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    require_master: bool
    def __init__(self, transaction_id: _Optional[int] = ..., require_master: _Optional[bool] = ...) -> None: ...

class TransactionCommitCompleted(_message.Message):
    __slots__ = ("transaction_id", "result", "message", "first_event_number", "last_event_number", "prepare_position", "commit_position")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    transaction_id: int
    result: OperationResult
    message: str
    first_event_number: int
    last_event_number: int
    prepare_position: int
    commit_position: int
    def __init__(self, transaction_id: _Optional[int] = ..., result: _Optional[_Union[OperationResult, str]] = ..., message: _Optional[str] = ..., first_event_number: _Optional[int] = ..., last_event_number: _Optional[int] = ..., prepare_position: _Optional[int] = ..., commit_position: _Optional[int] = ...) -> None: ...

class ReadEvent(_message.Message):
    __slots__ = ("event_stream_id", "event_number", "resolve_link_tos", "require_master")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_LINK_TOS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    event_number: int
    resolve_link_tos: bool
    require_master: bool
    def __init__(self, event_stream_id: _Optional[str] = ..., event_number: _Optional[int] = ..., resolve_link_tos: _Optional[bool] = ..., require_master: _Optional[bool] = ...) -> None: ...

class ReadEventCompleted(_message.Message):
    __slots__ = ("result", "event", "error")
    class ReadEventResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Success: _ClassVar[ReadEventCompleted.ReadEventResult]
        NotFound: _ClassVar[ReadEventCompleted.ReadEventResult]
        NoStream: _ClassVar[ReadEventCompleted.ReadEventResult]
        StreamDeleted: _ClassVar[ReadEventCompleted.ReadEventResult]
        Error: _ClassVar[ReadEventCompleted.ReadEventResult]
        AccessDenied: _ClassVar[ReadEventCompleted.ReadEventResult]
    Success: ReadEventCompleted.ReadEventResult
    NotFound: ReadEventCompleted.ReadEventResult
    NoStream: ReadEventCompleted.ReadEventResult
    StreamDeleted: ReadEventCompleted.ReadEventResult
    Error: ReadEventCompleted.ReadEventResult
    AccessDenied: ReadEventCompleted.ReadEventResult
    RESULT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: ReadEventCompleted.ReadEventResult
    event: ResolvedIndexedEvent
    error: str
    def __init__(self, result: _Optional[_Union[ReadEventCompleted.ReadEventResult, str]] = ..., event: _Optional[_Union[ResolvedIndexedEvent, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class ReadStreamEvents(_message.Message):
    __slots__ = ("event_stream_id", "from_event_number", "max_count", "resolve_link_tos", "require_master")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_LINK_TOS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    from_event_number: int
    max_count: int
    resolve_link_tos: bool
    require_master: bool
    def __init__(self, event_stream_id: _Optional[str] = ..., from_event_number: _Optional[int] = ..., max_count: _Optional[int] = ..., resolve_link_tos: _Optional[bool] = ..., require_master: _Optional[bool] = ...) -> None: ...

class ReadStreamEventsCompleted(_message.Message):
    __slots__ = ("events", "result", "next_event_number", "last_event_number", "is_end_of_stream", "last_commit_position", "error")
    class ReadStreamResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Success: _ClassVar[ReadStreamEventsCompleted.ReadStreamResult]
        NoStream: _ClassVar[ReadStreamEventsCompleted.ReadStreamResult]
        StreamDeleted: _ClassVar[ReadStreamEventsCompleted.ReadStreamResult]
        NotModified: _ClassVar[ReadStreamEventsCompleted.ReadStreamResult]
        Error: _ClassVar[ReadStreamEventsCompleted.ReadStreamResult]
        AccessDenied: _ClassVar[ReadStreamEventsCompleted.ReadStreamResult]
    Success: ReadStreamEventsCompleted.ReadStreamResult
    NoStream: ReadStreamEventsCompleted.ReadStreamResult
    StreamDeleted: ReadStreamEventsCompleted.ReadStreamResult
    NotModified: ReadStreamEventsCompleted.ReadStreamResult
    Error: ReadStreamEventsCompleted.ReadStreamResult
    AccessDenied: ReadStreamEventsCompleted.ReadStreamResult
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NEXT_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IS_END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ResolvedIndexedEvent]
    result: ReadStreamEventsCompleted.ReadStreamResult
    next_event_number: int
    last_event_number: int
    is_end_of_stream: bool
    last_commit_position: int
    error: str
    def __init__(self, events: _Optional[_Iterable[_Union[ResolvedIndexedEvent, _Mapping]]] = ..., result: _Optional[_Union[ReadStreamEventsCompleted.ReadStreamResult, str]] = ..., next_event_number: _Optional[int] = ..., last_event_number: _Optional[int] = ..., is_end_of_stream: _Optional[bool] = ..., last_commit_position: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ReadAllEvents(_message.Message):
    __slots__ = ("commit_position", "prepare_position", "max_count", "resolve_link_tos", "require_master")
    COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_LINK_TOS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_MASTER_FIELD_NUMBER: _ClassVar[int]
    commit_position: int
    prepare_position: int
    max_count: int
    resolve_link_tos: bool
    require_master: bool
    def __init__(self, commit_position: _Optional[int] = ..., prepare_position: _Optional[int] = ..., max_count: _Optional[int] = ..., resolve_link_tos: _Optional[bool] = ..., require_master: _Optional[bool] = ...) -> None: ...

class ReadAllEventsCompleted(_message.Message):
    __slots__ = ("commit_position", "prepare_position", "events", "next_commit_position", "next_prepare_position", "result", "error")
    class ReadAllResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Success: _ClassVar[ReadAllEventsCompleted.ReadAllResult]
        NotModified: _ClassVar[ReadAllEventsCompleted.ReadAllResult]
        Error: _ClassVar[ReadAllEventsCompleted.ReadAllResult]
        AccessDenied: _ClassVar[ReadAllEventsCompleted.ReadAllResult]
    Success: ReadAllEventsCompleted.ReadAllResult
    NotModified: ReadAllEventsCompleted.ReadAllResult
    Error: ReadAllEventsCompleted.ReadAllResult
    AccessDenied: ReadAllEventsCompleted.ReadAllResult
    COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PREPARE_POSITION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    commit_position: int
    prepare_position: int
    events: _containers.RepeatedCompositeFieldContainer[ResolvedEvent]
    next_commit_position: int
    next_prepare_position: int
    result: ReadAllEventsCompleted.ReadAllResult
    error: str
    def __init__(self, commit_position: _Optional[int] = ..., prepare_position: _Optional[int] = ..., events: _Optional[_Iterable[_Union[ResolvedEvent, _Mapping]]] = ..., next_commit_position: _Optional[int] = ..., next_prepare_position: _Optional[int] = ..., result: _Optional[_Union[ReadAllEventsCompleted.ReadAllResult, str]] = ..., error: _Optional[str] = ...) -> None: ...

class CreatePersistentSubscription(_message.Message):
    __slots__ = ("subscription_group_name", "event_stream_id", "resolve_link_tos", "start_from", "message_timeout_milliseconds", "record_statistics", "live_buffer_size", "read_batch_size", "buffer_size", "max_retry_count", "prefer_round_robin", "checkpoint_after_time", "checkpoint_max_count", "checkpoint_min_count", "subscriber_max_count", "named_consumer_strategy")
    SUBSCRIPTION_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_LINK_TOS_FIELD_NUMBER: _ClassVar[int]
    START_FROM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TIMEOUT_MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    LIVE_BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    READ_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREFER_ROUND_ROBIN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_AFTER_TIME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    NAMED_CONSUMER_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    subscription_group_name: str
    event_stream_id: str
    resolve_link_tos: bool
    start_from: int
    message_timeout_milliseconds: int
    record_statistics: bool
    live_buffer_size: int
    read_batch_size: int
    buffer_size: int
    max_retry_count: int
    prefer_round_robin: bool
    checkpoint_after_time: int
    checkpoint_max_count: int
    checkpoint_min_count: int
    subscriber_max_count: int
    named_consumer_strategy: str
    def __init__(self, subscription_group_name: _Optional[str] = ..., event_stream_id: _Optional[str] = ..., resolve_link_tos: _Optional[bool] = ..., start_from: _Optional[int] = ..., message_timeout_milliseconds: _Optional[int] = ..., record_statistics: _Optional[bool] = ..., live_buffer_size: _Optional[int] = ..., read_batch_size: _Optional[int] = ..., buffer_size: _Optional[int] = ..., max_retry_count: _Optional[int] = ..., prefer_round_robin: _Optional[bool] = ..., checkpoint_after_time: _Optional[int] = ..., checkpoint_max_count: _Optional[int] = ..., checkpoint_min_count: _Optional[int] = ..., subscriber_max_count: _Optional[int] = ..., named_consumer_strategy: _Optional[str] = ...) -> None: ...

class DeletePersistentSubscription(_message.Message):
    __slots__ = ("subscription_group_name", "event_stream_id")
    SUBSCRIPTION_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_group_name: str
    event_stream_id: str
    def __init__(self, subscription_group_name: _Optional[str] = ..., event_stream_id: _Optional[str] = ...) -> None: ...

class UpdatePersistentSubscription(_message.Message):
    __slots__ = ("subscription_group_name", "event_stream_id", "resolve_link_tos", "start_from", "message_timeout_milliseconds", "record_statistics", "live_buffer_size", "read_batch_size", "buffer_size", "max_retry_count", "prefer_round_robin", "checkpoint_after_time", "checkpoint_max_count", "checkpoint_min_count", "subscriber_max_count", "named_consumer_strategy")
    SUBSCRIPTION_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_LINK_TOS_FIELD_NUMBER: _ClassVar[int]
    START_FROM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TIMEOUT_MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    LIVE_BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    READ_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREFER_ROUND_ROBIN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_AFTER_TIME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    NAMED_CONSUMER_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    subscription_group_name: str
    event_stream_id: str
    resolve_link_tos: bool
    start_from: int
    message_timeout_milliseconds: int
    record_statistics: bool
    live_buffer_size: int
    read_batch_size: int
    buffer_size: int
    max_retry_count: int
    prefer_round_robin: bool
    checkpoint_after_time: int
    checkpoint_max_count: int
    checkpoint_min_count: int
    subscriber_max_count: int
    named_consumer_strategy: str
    def __init__(self, subscription_group_name: _Optional[str] = ..., event_stream_id: _Optional[str] = ..., resolve_link_tos: _Optional[bool] = ..., start_from: _Optional[int] = ..., message_timeout_milliseconds: _Optional[int] = ..., record_statistics: _Optional[bool] = ..., live_buffer_size: _Optional[int] = ..., read_batch_size: _Optional[int] = ..., buffer_size: _Optional[int] = ..., max_retry_count: _Optional[int] = ..., prefer_round_robin: _Optional[bool] = ..., checkpoint_after_time: _Optional[int] = ..., checkpoint_max_count: _Optional[int] = ..., checkpoint_min_count: _Optional[int] = ..., subscriber_max_count: _Optional[int] = ..., named_consumer_strategy: _Optional[str] = ...) -> None: ...

class UpdatePersistentSubscriptionCompleted(_message.Message):
    __slots__ = ("result", "reason")
    class UpdatePersistentSubscriptionResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Success: _ClassVar[UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult]
        DoesNotExist: _ClassVar[UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult]
        Fail: _ClassVar[UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult]
        AccessDenied: _ClassVar[UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult]
    Success: UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult
    DoesNotExist: UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult
    Fail: UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult
    AccessDenied: UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    result: UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult
    reason: str
    def __init__(self, result: _Optional[_Union[UpdatePersistentSubscriptionCompleted.UpdatePersistentSubscriptionResult, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CreatePersistentSubscriptionCompleted(_message.Message):
    __slots__ = ("result", "reason")
    class CreatePersistentSubscriptionResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Success: _ClassVar[CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult]
        AlreadyExists: _ClassVar[CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult]
        Fail: _ClassVar[CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult]
        AccessDenied: _ClassVar[CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult]
    Success: CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult
    AlreadyExists: CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult
    Fail: CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult
    AccessDenied: CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    result: CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult
    reason: str
    def __init__(self, result: _Optional[_Union[CreatePersistentSubscriptionCompleted.CreatePersistentSubscriptionResult, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class DeletePersistentSubscriptionCompleted(_message.Message):
    __slots__ = ("result", "reason")
    class DeletePersistentSubscriptionResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Success: _ClassVar[DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult]
        DoesNotExist: _ClassVar[DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult]
        Fail: _ClassVar[DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult]
        AccessDenied: _ClassVar[DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult]
    Success: DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult
    DoesNotExist: DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult
    Fail: DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult
    AccessDenied: DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    result: DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult
    reason: str
    def __init__(self, result: _Optional[_Union[DeletePersistentSubscriptionCompleted.DeletePersistentSubscriptionResult, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ConnectToPersistentSubscription(_message.Message):
    __slots__ = ("subscription_id", "event_stream_id", "allowed_in_flight_messages")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IN_FLIGHT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    event_stream_id: str
    allowed_in_flight_messages: int
    def __init__(self, subscription_id: _Optional[str] = ..., event_stream_id: _Optional[str] = ..., allowed_in_flight_messages: _Optional[int] = ...) -> None: ...

class PersistentSubscriptionAckEvents(_message.Message):
    __slots__ = ("subscription_id", "processed_event_ids")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    processed_event_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, subscription_id: _Optional[str] = ..., processed_event_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PersistentSubscriptionNakEvents(_message.Message):
    __slots__ = ("subscription_id", "processed_event_ids", "message", "action")
    class NakAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Unknown: _ClassVar[PersistentSubscriptionNakEvents.NakAction]
        Park: _ClassVar[PersistentSubscriptionNakEvents.NakAction]
        Retry: _ClassVar[PersistentSubscriptionNakEvents.NakAction]
        Skip: _ClassVar[PersistentSubscriptionNakEvents.NakAction]
        Stop: _ClassVar[PersistentSubscriptionNakEvents.NakAction]
    Unknown: PersistentSubscriptionNakEvents.NakAction
    Park: PersistentSubscriptionNakEvents.NakAction
    Retry: PersistentSubscriptionNakEvents.NakAction
    Skip: PersistentSubscriptionNakEvents.NakAction
    Stop: PersistentSubscriptionNakEvents.NakAction
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    processed_event_ids: _containers.RepeatedScalarFieldContainer[bytes]
    message: str
    action: PersistentSubscriptionNakEvents.NakAction
    def __init__(self, subscription_id: _Optional[str] = ..., processed_event_ids: _Optional[_Iterable[bytes]] = ..., message: _Optional[str] = ..., action: _Optional[_Union[PersistentSubscriptionNakEvents.NakAction, str]] = ...) -> None: ...

class PersistentSubscriptionConfirmation(_message.Message):
    __slots__ = ("last_commit_position", "subscription_id", "last_event_number")
    LAST_COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    last_commit_position: int
    subscription_id: str
    last_event_number: int
    def __init__(self, last_commit_position: _Optional[int] = ..., subscription_id: _Optional[str] = ..., last_event_number: _Optional[int] = ...) -> None: ...

class PersistentSubscriptionStreamEventAppeared(_message.Message):
    __slots__ = ("event", "retryCount")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RETRYCOUNT_FIELD_NUMBER: _ClassVar[int]
    event: ResolvedIndexedEvent
    retryCount: int
    def __init__(self, event: _Optional[_Union[ResolvedIndexedEvent, _Mapping]] = ..., retryCount: _Optional[int] = ...) -> None: ...

class SubscribeToStream(_message.Message):
    __slots__ = ("event_stream_id", "resolve_link_tos")
    EVENT_STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_LINK_TOS_FIELD_NUMBER: _ClassVar[int]
    event_stream_id: str
    resolve_link_tos: bool
    def __init__(self, event_stream_id: _Optional[str] = ..., resolve_link_tos: _Optional[bool] = ...) -> None: ...

class SubscriptionConfirmation(_message.Message):
    __slots__ = ("last_commit_position", "last_event_number")
    LAST_COMMIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    last_commit_position: int
    last_event_number: int
    def __init__(self, last_commit_position: _Optional[int] = ..., last_event_number: _Optional[int] = ...) -> None: ...

class StreamEventAppeared(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: ResolvedEvent
    def __init__(self, event: _Optional[_Union[ResolvedEvent, _Mapping]] = ...) -> None: ...

class UnsubscribeFromStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscriptionDropped(_message.Message):
    __slots__ = ("reason",)
    class SubscriptionDropReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Unsubscribed: _ClassVar[SubscriptionDropped.SubscriptionDropReason]
        AccessDenied: _ClassVar[SubscriptionDropped.SubscriptionDropReason]
        NotFound: _ClassVar[SubscriptionDropped.SubscriptionDropReason]
        PersistentSubscriptionDeleted: _ClassVar[SubscriptionDropped.SubscriptionDropReason]
        SubscriberMaxCountReached: _ClassVar[SubscriptionDropped.SubscriptionDropReason]
    Unsubscribed: SubscriptionDropped.SubscriptionDropReason
    AccessDenied: SubscriptionDropped.SubscriptionDropReason
    NotFound: SubscriptionDropped.SubscriptionDropReason
    PersistentSubscriptionDeleted: SubscriptionDropped.SubscriptionDropReason
    SubscriberMaxCountReached: SubscriptionDropped.SubscriptionDropReason
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: SubscriptionDropped.SubscriptionDropReason
    def __init__(self, reason: _Optional[_Union[SubscriptionDropped.SubscriptionDropReason, str]] = ...) -> None: ...

class NotHandled(_message.Message):
    __slots__ = ("reason", "additional_info")
    class NotHandledReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NotReady: _ClassVar[NotHandled.NotHandledReason]
        TooBusy: _ClassVar[NotHandled.NotHandledReason]
        NotMaster: _ClassVar[NotHandled.NotHandledReason]
    NotReady: NotHandled.NotHandledReason
    TooBusy: NotHandled.NotHandledReason
    NotMaster: NotHandled.NotHandledReason
    class MasterInfo(_message.Message):
        __slots__ = ("external_tcp_address", "external_tcp_port", "external_http_address", "external_http_port", "external_secure_tcp_address", "external_secure_tcp_port")
        EXTERNAL_TCP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
        EXTERNAL_TCP_PORT_FIELD_NUMBER: _ClassVar[int]
        EXTERNAL_HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
        EXTERNAL_HTTP_PORT_FIELD_NUMBER: _ClassVar[int]
        EXTERNAL_SECURE_TCP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
        EXTERNAL_SECURE_TCP_PORT_FIELD_NUMBER: _ClassVar[int]
        external_tcp_address: str
        external_tcp_port: int
        external_http_address: str
        external_http_port: int
        external_secure_tcp_address: str
        external_secure_tcp_port: int
        def __init__(self, external_tcp_address: _Optional[str] = ..., external_tcp_port: _Optional[int] = ..., external_http_address: _Optional[str] = ..., external_http_port: _Optional[int] = ..., external_secure_tcp_address: _Optional[str] = ..., external_secure_tcp_port: _Optional[int] = ...) -> None: ...
    REASON_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_INFO_FIELD_NUMBER: _ClassVar[int]
    reason: NotHandled.NotHandledReason
    additional_info: bytes
    def __init__(self, reason: _Optional[_Union[NotHandled.NotHandledReason, str]] = ..., additional_info: _Optional[bytes] = ...) -> None: ...

class ScavengeDatabase(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScavengeDatabaseResponse(_message.Message):
    __slots__ = ("result", "scavengeId")
    class ScavengeResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        Started: _ClassVar[ScavengeDatabaseResponse.ScavengeResult]
        InProgress: _ClassVar[ScavengeDatabaseResponse.ScavengeResult]
        Unauthorized: _ClassVar[ScavengeDatabaseResponse.ScavengeResult]
    Started: ScavengeDatabaseResponse.ScavengeResult
    InProgress: ScavengeDatabaseResponse.ScavengeResult
    Unauthorized: ScavengeDatabaseResponse.ScavengeResult
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SCAVENGEID_FIELD_NUMBER: _ClassVar[int]
    result: ScavengeDatabaseResponse.ScavengeResult
    scavengeId: str
    def __init__(self, result: _Optional[_Union[ScavengeDatabaseResponse.ScavengeResult, str]] = ..., scavengeId: _Optional[str] = ...) -> None: ...

class IdentifyClient(_message.Message):
    __slots__ = ("version", "connection_name")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_NAME_FIELD_NUMBER: _ClassVar[int]
    version: int
    connection_name: str
    def __init__(self, version: _Optional[int] = ..., connection_name: _Optional[str] = ...) -> None: ...

class ClientIdentified(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
