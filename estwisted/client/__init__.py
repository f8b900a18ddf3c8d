# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
A Twisted client of Event Store v5 nodes and clusters (and of estwisted).

    connection = EventStoreConnection.create(
        reactor, ConnectionSettings(keep_reconnecting=True),
        ClusterSettings(gossip_seeds=[("127.0.0.1", 2113)]))
    await connection.connect()
    await connection.append_to_stream("orders-1", ExpectedVersion.ANY,
                                      [EventData(uuid4(), "placed", b'{}')])

See C{docs/client.md}.
"""

from estwisted.client._connection import (
    CONNECTION_EVENTS,
    EventStoreConnection,
    EventStoreTransaction,
)
from estwisted.client._discovery import NodeEndpoints, choose_node
from estwisted.client._errors import (
    AccessDenied,
    CannotEstablishConnection,
    ConnectionClosed,
    EventStoreClientError,
    InvalidTransaction,
    NotAuthenticated,
    OperationTimedOut,
    PersistentSubscriptionError,
    QueueFull,
    RetriesLimitReached,
    ServerError,
    StreamDeleted,
    SubscriptionDropped,
    TransactionCommitUnknown,
    TransactionLost,
    WrongExpectedVersion,
)
from estwisted.client._operations import PersistentSubscriptionSettings
from estwisted.client._settings import (
    ClusterSettings,
    ConnectionSettings,
    NodePreference,
    SingleNode,
    parse_connection_string,
)
from estwisted.client._subscriptions import (
    CatchUpSubscription,
    NakAction,
    PersistentSubscription,
    VolatileSubscription,
)
from estwisted.client._values import (
    AllEventsSlice,
    DeleteResult,
    EventData,
    EventReadResult,
    EventReadStatus,
    ExpectedVersion,
    Position,
    RawStreamMetadataResult,
    ReadDirection,
    RecordedEvent,
    ResolvedEvent,
    SliceReadStatus,
    StreamAcl,
    StreamEventsSlice,
    StreamMetadata,
    StreamMetadataResult,
    StreamPosition,
    UserCredentials,
    WriteResult,
)

__all__ = [
    "CONNECTION_EVENTS",
    "AccessDenied",
    "AllEventsSlice",
    "CannotEstablishConnection",
    "CatchUpSubscription",
    "ClusterSettings",
    "ConnectionClosed",
    "ConnectionSettings",
    "DeleteResult",
    "EventData",
    "EventReadResult",
    "EventReadStatus",
    "EventStoreClientError",
    "EventStoreConnection",
    "EventStoreTransaction",
    "ExpectedVersion",
    "InvalidTransaction",
    "NakAction",
    "NodeEndpoints",
    "NodePreference",
    "NotAuthenticated",
    "OperationTimedOut",
    "PersistentSubscription",
    "PersistentSubscriptionError",
    "PersistentSubscriptionSettings",
    "Position",
    "QueueFull",
    "TransactionCommitUnknown",
    "TransactionLost",
    "RawStreamMetadataResult",
    "ReadDirection",
    "RecordedEvent",
    "ResolvedEvent",
    "RetriesLimitReached",
    "ServerError",
    "SingleNode",
    "SliceReadStatus",
    "StreamAcl",
    "StreamDeleted",
    "StreamEventsSlice",
    "StreamMetadata",
    "StreamMetadataResult",
    "StreamPosition",
    "SubscriptionDropped",
    "UserCredentials",
    "VolatileSubscription",
    "WriteResult",
    "WrongExpectedVersion",
    "choose_node",
    "parse_connection_string",
]
