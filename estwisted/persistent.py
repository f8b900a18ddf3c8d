# -*- test-case-name: estwisted.test.test_persistent -*-
"""
Persistent (competing-consumer) subscriptions: tcp-protocol.md 5.6 and 6.9,
http-api.md 8.

API used by the edges:

  - L{PersistentSubscriptions} (one per node, over the L{StreamStore} and an
    injected clock).  C{start()} loads the groups from
    C{$persistentSubscriptionConfig} and their checkpoints; C{stop()} writes
    checkpoints and drops consumers.
  - C{create} / C{update} / C{delete} return Deferreds failing with
    L{AccessDenied} (not C{$admins}/C{$ops}), L{AlreadyExists},
    L{NotFound}, or L{BadRequest} (C{"Bad stream name."}, unknown strategy).
  - C{connect(...)} returns a L{PersistentConnection} (push mode, TCP) or
    raises L{AccessDenied} / L{NotFound} / L{SubscriberMaxCountReached}
    (the edge maps them to C{SubscriptionDropped} reasons with
    L{drop_reason_for}).  Its C{subscription_id} is C{"<stream>::<group>"}.
    Messages go to the L{IPersistentSubscriber} with
    C{event_appeared(event, retry_count)}; the client answers with
    C{connection.ack(ids)} / C{connection.nak(ids, action, message)}; event
    ids are the 16-byte RFC-order ids of the I{original} event (the link's
    when a link was resolved).
  - HTTP pull mode: C{pull(...)} hands out messages (kept in flight until
    acked/nacked or timed out), C{ack_ids} / C{nak_ids},
    C{replay_parked}; C{list_groups} / C{get_group} give L{GroupInfo} for
    C{/subscriptions}.

Stored state (so groups survive a restart):

  - C{$persistentSubscriptionConfig}: the latest event (type
    C{PersistentConfig1}) holds every group's settings as JSON.
  - C{$persistentsubscription-<stream>::<group>-checkpoint}: events of type
    C{SubscriptionCheckpoint} whose data is the JSON number of the highest
    event number below which (inclusive) every message was acked, skipped
    or parked.  A restart resumes at checkpoint + 1.
  - C{$persistentsubscription-<stream>::<group>-parked}: C{$>} links
    (C{"<n>@<stream>"}) to parked messages.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Optional

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

from estwisted.errors import OperationError
from estwisted.model import Principal, ResolvedEvent
from estwisted.streams import StreamStore
from estwisted.subscriptions import DropReason

_log = Logger()

#: Stream holding the group configuration.
CONFIG_STREAM = "$persistentSubscriptionConfig"
CONFIG_EVENT_TYPE = "PersistentConfig1"
CHECKPOINT_EVENT_TYPE = "SubscriptionCheckpoint"

STRATEGIES = ("RoundRobin", "DispatchToSingle", "Pinned")


class SubscriberMaxCountReached(OperationError):  # noqa: N818
    """
    The group has C{subscriber_max_count} consumers already.
    """


def group_key(stream: str, group: str) -> str:
    """
    The subscription id C{"<stream>::<group>"}.
    """
    return f"{stream}::{group}"


def checkpoint_stream(stream: str, group: str) -> str:
    return f"$persistentsubscription-{group_key(stream, group)}-checkpoint"


def parked_stream(stream: str, group: str) -> str:
    return f"$persistentsubscription-{group_key(stream, group)}-parked"


@frozen
class PersistentSettings:
    """
    A group's settings; defaults are the .NET client's (tcp-protocol.md
    5.6).  C{start_from} -1 means "from the end at creation".
    """

    resolve_link_tos: bool = False
    start_from: int = -1
    message_timeout_ms: int = 30000
    record_statistics: bool = False
    live_buffer_size: int = 500
    read_batch_size: int = 20
    buffer_size: int = 500
    max_retry_count: int = 10
    prefer_round_robin: bool = True
    checkpoint_after_ms: int = 2000
    checkpoint_max_count: int = 1000
    checkpoint_min_count: int = 10
    subscriber_max_count: int = 0
    named_consumer_strategy: str = "RoundRobin"


class NakAction(enum.IntEnum):
    UNKNOWN = 0
    PARK = 1
    RETRY = 2
    SKIP = 3
    STOP = 4


class IPersistentSubscriber(Interface):
    """
    A consumer of a persistent subscription group (push mode).
    """

    def event_appeared(event: ResolvedEvent, retry_count: int) -> None:  # noqa: N805
        """
        A message for this consumer; ack or nak it by
        C{event.original.event_id}.
        """

    def dropped(reason: DropReason) -> None:  # noqa: N805
        """
        The consumer was disconnected by the server.
        """


@frozen
class ConnectionInfo:
    from_address: str
    username: str
    total_items_processed: int
    available_slots: int
    in_flight_messages: int


@frozen
class GroupInfo:
    """
    A group's state for C{GET /subscriptions...}.
    """

    stream: str
    group: str
    settings: PersistentSettings
    status: str
    total_items_processed: int
    last_processed_event_number: int
    last_known_event_number: int
    connection_count: int
    total_in_flight_messages: int
    read_buffer_count: int
    live_buffer_count: int
    retry_buffer_count: int
    outstanding_messages_count: int
    connections: tuple[ConnectionInfo, ...]


class PersistentConnection:
    """
    One consumer connected to a group (push mode).

    @ivar subscription_id: C{"<stream>::<group>"}.
    @ivar last_commit_position: store's last commit position at connect.
    @ivar last_event_number: the stream's last event number at connect.
    """

    subscription_id: str
    last_commit_position: int
    last_event_number: int

    def ack(self, event_ids: Sequence[bytes]) -> None:
        raise NotImplementedError

    def nak(self, event_ids: Sequence[bytes], action: NakAction, message: str = "") -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        """
        Client unsubscribed: C{dropped(UNSUBSCRIBED)}, in-flight retried.
        """
        raise NotImplementedError

    def drop_silently(self) -> None:
        """
        Connection closed: in-flight messages go to the other consumers.
        """
        raise NotImplementedError


def drop_reason_for(error: Exception) -> DropReason:
    """
    The C{SubscriptionDropped} reason for an exception raised by
    L{PersistentSubscriptions.connect}.
    """
    from estwisted.errors import AccessDenied, NotFound

    if isinstance(error, AccessDenied):
        return DropReason.ACCESS_DENIED
    if isinstance(error, NotFound):
        return DropReason.NOT_FOUND
    if isinstance(error, SubscriberMaxCountReached):
        return DropReason.SUBSCRIBER_MAX_COUNT_REACHED
    return DropReason.UNSUBSCRIBED


class PersistentSubscriptions:
    """
    Every persistent subscription group of a node.  See the module
    docstring.
    """

    def __init__(self, store: StreamStore, clock: IReactorTime) -> None:
        self.store = store
        self.clock = clock

    def start(self) -> Deferred[None]:
        raise NotImplementedError

    def stop(self) -> Deferred[None]:
        raise NotImplementedError

    def create(
        self,
        stream: str,
        group: str,
        settings: PersistentSettings,
        principal: Optional[Principal],
    ) -> Deferred[None]:
        raise NotImplementedError

    def update(
        self,
        stream: str,
        group: str,
        settings: PersistentSettings,
        principal: Optional[Principal],
    ) -> Deferred[None]:
        raise NotImplementedError

    def delete(self, stream: str, group: str, principal: Optional[Principal]) -> Deferred[None]:
        raise NotImplementedError

    def connect(
        self,
        stream: str,
        group: str,
        principal: Optional[Principal],
        allowed_in_flight: int,
        subscriber: IPersistentSubscriber,
        from_address: str = "",
    ) -> PersistentConnection:
        raise NotImplementedError

    def list_groups(self, stream: Optional[str] = None) -> list[GroupInfo]:
        raise NotImplementedError

    def get_group(self, stream: str, group: str) -> GroupInfo:
        """
        @raise NotFound: no such group.
        """
        raise NotImplementedError

    def pull(
        self, stream: str, group: str, count: int, principal: Optional[Principal]
    ) -> list[tuple[ResolvedEvent, int]]:
        raise NotImplementedError

    def ack_ids(
        self, stream: str, group: str, event_ids: Sequence[bytes], principal: Optional[Principal]
    ) -> None:
        raise NotImplementedError

    def nak_ids(
        self,
        stream: str,
        group: str,
        event_ids: Sequence[bytes],
        action: NakAction,
        principal: Optional[Principal],
    ) -> None:
        raise NotImplementedError

    def replay_parked(
        self, stream: str, group: str, principal: Optional[Principal]
    ) -> Deferred[None]:
        raise NotImplementedError
