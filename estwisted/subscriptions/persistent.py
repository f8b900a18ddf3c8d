# -*- test-case-name: estwisted.subscriptions.test.test_persistent -*-
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
    event number at or below which every message was acked, skipped or
    parked.  A restart resumes at checkpoint + 1.  The event's metadata
    C{{"done": [[first, last], ...]}} lists ranges above the checkpoint
    that are processed already (acked while an earlier message was still
    out), so a clean restart never delivers an acked message again; after
    a crash, what was acked since the last checkpoint may come again
    (at-least-once).  Checkpoints are written after C{checkpoint_max_count}
    processed messages, after C{checkpoint_after_ms} when at least
    C{checkpoint_min_count} were processed, at group creation (so "from the
    end" survives a crash) and at C{stop()}.

Semantics in short: delivery in event-number order from C{start_from} (or
the checkpoint), retries first; strategies RoundRobin, DispatchToSingle
and Pinned (by the source stream of a resolved link); nak Retry/Unknown and
message timeouts redeliver with C{retry_count + 1} until
C{max_retry_count}, then park; Park writes the C{$>} link at once; Skip
counts as acked; Stop does nothing (v5).  An ack finishes a message
wherever it is (in flight with any consumer or waiting for a retry).  A
consumer that leaves has its in-flight messages retried to the others.
Update and delete drop consumers with C{UNSUBSCRIBED}; update resumes from
what was acked.  Only the injected clock is used (C{callLater}).
  - C{$persistentsubscription-<stream>::<group>-parked}: C{$>} links
    (C{"<n>@<stream>"}) to parked messages.

Groups on C{$all} (EventStoreDB 21.10+, served over gRPC only: the v5
edges pass no C{allow_all} and get C{"Bad stream name."}) read C{$all} in
log order with an optional L{AllFilter} (stream-name or event-type
prefixes or a regular expression) kept in the settings.  Their
"event numbers" are C{$all} positions: the checkpoint is the highest
position at or below which every matching event is done (stored as the
string C{"C:<p>/P:<p>"}, EventStoreDB's form), a restart resumes at the
first record at or after checkpoint + 1, and C{start_from} is a position
(-1 the end, 0 the start).  They never deliver the checkpoint events of
persistent subscriptions (an ack writes one: a group without a filter
would otherwise feed itself).  Parking, retries, acks and nacks by event
id work as for a stream; the parked stream is
C{$persistentsubscription-$all::<group>-parked}.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Optional

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from estwisted.core.acl import SYSTEM_PRINCIPAL
from estwisted.core.errors import (
    AccessDenied,
    AlreadyExists,
    BadRequest,
    NotFound,
    NotReady,
    OperationError,
)
from estwisted.core.model import (
    DELETED_STREAM,
    EXPECTED_ANY,
    EventRecord,
    NewEvent,
    Principal,
    ReadStatus,
    ResolvedEvent,
)
from estwisted.core.streams import StreamStore
from estwisted.subscriptions.volatile import LINK_EVENT_TYPE, DropReason, parse_link, resolve_record

_log = Logger()

#: Stream holding the group configuration.
CONFIG_STREAM = "$persistentSubscriptionConfig"
CONFIG_EVENT_TYPE = "PersistentConfig1"
CHECKPOINT_EVENT_TYPE = "SubscriptionCheckpoint"

#: How many event ids acked before they were handed out are remembered.
EARLY_ACKS = 10_000

#: How far past what a group has read an ack of a message it never handed
#: out is looked for in the stream (events).
ACK_LOOK_AHEAD = 10_000

#: Seconds between tries to hand out messages while the node's leader
#: lease has lapsed.
HOLD_RETRY = 0.05

STRATEGIES = ("RoundRobin", "DispatchToSingle", "Pinned")

#: The stream name of a group on every stream.
ALL_STREAM = "$all"

_CHECKPOINT_PREFIX = "$persistentsubscription-"
_CHECKPOINT_SUFFIX = "-checkpoint"


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


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@frozen
class AllFilter:
    """
    The server-side filter of a C{$all} group: on the stream name
    (C{on_stream}) or the event type, by prefixes (any of them) or a regular
    expression (searched, as .NET's C{Regex.IsMatch}); neither matches
    everything.  Build it with L{all_filter} to have the expression checked.
    """

    on_stream: bool
    prefixes: tuple[str, ...] = ()
    regex: str = ""

    def matches(self, record: EventRecord) -> bool:
        value = record.stream if self.on_stream else record.event_type
        if self.prefixes:
            return value.startswith(self.prefixes)
        if self.regex:
            return _compiled(self.regex).search(value) is not None
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "streamName" if self.on_stream else "eventType",
            "prefixes": list(self.prefixes),
            "regex": self.regex,
        }


def all_filter(on_stream: bool, prefixes: Sequence[str] = (), regex: str = "") -> AllFilter:
    """
    A checked L{AllFilter}.

    @raise BadRequest: the regular expression does not compile.
    """
    if not prefixes and regex:
        try:
            _compiled(regex)
        except (re.error, OverflowError, RecursionError) as e:
            raise BadRequest(f"Bad filter expression: {e}") from None
    return AllFilter(on_stream, tuple(prefixes), "" if prefixes else regex)


def filter_from_json(value: object) -> Optional[AllFilter]:
    """
    Inverse of L{AllFilter.to_json}; C{None} for anything else.
    """
    if not isinstance(value, dict):
        return None
    kind, prefixes, regex = value.get("type"), value.get("prefixes", []), value.get("regex", "")
    if kind not in ("streamName", "eventType") or not isinstance(regex, str):
        return None
    if not isinstance(prefixes, list) or not all(isinstance(x, str) for x in prefixes):
        return None
    try:
        return all_filter(kind == "streamName", prefixes, regex)
    except BadRequest:
        return None


def is_checkpoint_stream(stream: str) -> bool:
    """
    Whether C{stream} is a persistent subscription's checkpoint stream.
    """
    return stream.startswith(_CHECKPOINT_PREFIX) and stream.endswith(_CHECKPOINT_SUFFIX)


def all_position_text(position: int) -> str:
    """
    A C{$all} position as EventStoreDB shows it: C{"C:<commit>/P:<prepare>"}
    (one number here: a record's commit and prepare positions are equal).
    """
    return f"C:{position}/P:{position}"


def parse_all_position(text: str) -> Optional[int]:
    """
    The commit position of C{"C:<commit>/P:<prepare>"}; C{None} when
    malformed.
    """
    match = re.fullmatch(r"C:(-?\d{1,20})/P:(-?\d{1,20})", text)
    return int(match.group(1)) if match else None


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
    #: A C{$all} group's filter (C{None}: every event).
    filter: Optional[AllFilter] = None


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
    #: Since the previous look at this connection's statistics (as v5).
    average_items_per_second: float = 0.0
    count_since_last_measurement: int = 0


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
    #: Since the previous look at this group's statistics (as v5).
    average_items_per_second: float = 0.0
    count_since_last_measurement: int = 0


#: The identity under which the subscription machinery reads and writes
#: (system streams need C{$admins}).

# Message states.
_BUFFERED = 0
_RETRY = 1
_IN_FLIGHT = 2
_PARKING = 3
_DONE = 4


class _Message:
    """
    One message of a group.

    @ivar sequence: event number of the original record in the subscribed
        stream; C{None} for a replayed parked message (not checkpointed).
    """

    __slots__ = ("event", "event_id", "sequence", "retry_count", "state", "owner", "deadline")

    def __init__(self, event: ResolvedEvent, sequence: Optional[int]) -> None:
        self.event = event
        self.event_id = event.original.event_id
        self.sequence = sequence
        self.retry_count = 0
        self.state = _BUFFERED
        self.owner: Optional[_Consumer] = None
        self.deadline = 0.0


class _Consumer:
    """
    Something messages are handed to: a push connection or the HTTP pull
    side.
    """

    allowed_in_flight: int

    def __init__(self) -> None:
        self.in_flight: dict[bytes, _Message] = {}
        self.total_items_processed = 0
        self.measured: Optional[tuple[float, int]] = None

    @property
    def available(self) -> int:
        return self.allowed_in_flight - len(self.in_flight)


class _PullConsumer(_Consumer):
    allowed_in_flight = 1 << 62


class PersistentConnection(_Consumer):
    """
    One consumer connected to a group (push mode).

    @ivar subscription_id: C{"<stream>::<group>"}.
    @ivar last_commit_position: store's last commit position at connect.
    @ivar last_event_number: the stream's last event number at connect.
    @ivar active: false once disconnected or dropped.
    """

    def __init__(
        self,
        group: _Group,
        subscriber: IPersistentSubscriber,
        allowed_in_flight: int,
        principal: Optional[Principal],
        from_address: str,
        last_commit_position: int,
        last_event_number: int,
    ) -> None:
        super().__init__()
        self._group = group
        self.subscriber = subscriber
        self.allowed_in_flight = max(1, allowed_in_flight)
        self.principal = principal
        self.from_address = from_address
        self.subscription_id = group.key
        self.last_commit_position = last_commit_position
        self.last_event_number = last_event_number
        self.active = True

    def ack(self, event_ids: Sequence[bytes]) -> Deferred[None]:
        """
        The messages were processed: they are never delivered again.

        @return: fires once the acknowledgement is durable (in the group's
            checkpoint, on a quorum in a cluster).
        """
        if self.active:
            return self._group.ack(event_ids, self)
        return succeed(None)

    def nak(self, event_ids: Sequence[bytes], action: NakAction, message: str = "") -> None:
        """
        The messages failed: retry (C{RETRY}, C{UNKNOWN}), park, skip, or
        nothing (C{STOP}).
        """
        if self.active:
            self._group.nak(event_ids, action, self, message)

    def disconnect(self) -> None:
        """
        Client unsubscribed: C{dropped(UNSUBSCRIBED)}, in-flight retried.
        """
        if self.active:
            self._group.remove_consumer(self)
            self.subscriber.dropped(DropReason.UNSUBSCRIBED)

    def drop_silently(self) -> None:
        """
        Connection closed: in-flight messages go to the other consumers.
        """
        if self.active:
            self._group.remove_consumer(self)

    def _drop(self, reason: DropReason) -> None:
        # The group is going away: no retry, just tell the consumer.
        self.active = False
        self.in_flight.clear()
        try:
            self.subscriber.dropped(reason)
        except Exception:
            _log.failure("consumer failed while being dropped")


def drop_reason_for(error: Exception) -> DropReason:
    """
    The C{SubscriptionDropped} reason for an exception raised by
    L{PersistentSubscriptions.connect}.
    """
    if isinstance(error, AccessDenied):
        return DropReason.ACCESS_DENIED
    if isinstance(error, NotFound):
        return DropReason.NOT_FOUND
    if isinstance(error, SubscriberMaxCountReached):
        return DropReason.SUBSCRIBER_MAX_COUNT_REACHED
    return DropReason.UNSUBSCRIBED


def _source_stream(event: ResolvedEvent) -> str:
    if event.event is not None:
        return event.event.stream
    return event.original.stream


class _Group:
    """
    The state machine of one group: reads the stream in event-number order
    into a bounded buffer, hands messages to consumers per the strategy,
    tracks in-flight messages with their deadlines, retries, parks and
    checkpoints.

    Every read goes through L{StreamStore.read_stream} from C{next_read}, so
    history and live events come from the same ordered source: a write
    arriving while the group reads history is simply read later, never
    twice and never skipped.
    """

    def __init__(
        self,
        owner: PersistentSubscriptions,
        stream: str,
        name: str,
        settings: PersistentSettings,
        next_read: int,
        last_checkpoint: Optional[int],
        done: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.owner = owner
        self.store = owner.store
        self.clock = owner.clock
        self.stream = stream
        self.name = name
        self.key = group_key(stream, name)
        self.settings = settings
        self.is_all = stream == ALL_STREAM
        self.next_read = next_read
        self.caught_up = False
        self.buffer: deque[_Message] = deque()
        self.retry: deque[_Message] = deque()
        self.retry_by_id: dict[bytes, _Message] = {}
        #: Everything handed out and not answered, in hand-out (deadline) order.
        self.in_flight: dict[bytes, _Message] = {}
        #: Every read message not yet acked/skipped/parked, by event number
        #: (inserted in increasing order, so the first key is the minimum).
        self.outstanding: dict[int, _Message] = {}
        self.consumers: list[PersistentConnection] = []
        self.pull_consumer = _PullConsumer()
        self.active = True
        self.total_processed = 0
        self.last_checkpoint = last_checkpoint
        #: Ranges of event numbers above the checkpoint that were already
        #: processed before a restart (from the checkpoint's metadata).
        self._skip: deque[tuple[int, int]] = deque(sorted(done))
        self._changed = False
        self._parks_pending = 0
        self._parks_waiters: list[Deferred[None]] = []
        self._processed_since_checkpoint = 0
        self._checkpoint_writing = False
        #: checkpoint writes that failed (an ack waiting on one fails too)
        self.checkpoint_failures = 0
        #: ids acked before this node handed them out (a consumer acking
        #: what an earlier leader sent it): finished when they come up
        self._early_acks: dict[bytes, None] = {}
        self._checkpoint_again = False
        self._checkpoint_waiters: list[Deferred[None]] = []
        self._timer: Optional[IDelayedCall] = None
        self._checkpoint_timer: Optional[IDelayedCall] = None
        self._pump_call: Optional[IDelayedCall] = None
        self._pumping = False
        self._again = False
        self._rr = 0
        self._sent = 0
        self._measured: Optional[tuple[float, int]] = None
        self._timeout = settings.message_timeout_ms / 1000.0

    # -- reading and dispatch -----------------------------------------------

    def checkpoint_value(self) -> int:
        """
        The highest event number at or below which everything is done.
        """
        for sequence in self.outstanding:
            return sequence - 1
        return self.next_read - 1

    def schedule_pump(self) -> None:
        """
        Pump on the next reactor turn (after the edge has confirmed).
        """
        if self._pump_call is None and self.active:
            self._pump_call = self.clock.callLater(0, self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_call = None
        self.pump()

    def pump(self) -> None:
        """
        Read what there is room for, hand out what consumers have room for.
        Re-entrant calls (a consumer acking from inside C{event_appeared})
        just ask for another round.
        """
        if not self.active:
            return
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            for _ in range(64):
                self._again = False
                sent = self._sent
                self._fill()
                self._dispatch()
                if not self.active:
                    return
                if self._again:
                    continue
                if self._sent == sent or self.caught_up or self.buffer:
                    # Nothing moved, nothing more to read, or the
                    # consumers are full: wait for the next event or answer.
                    return
            # Bounded work per reactor turn; carry on at the next one.
            self.schedule_pump()
        finally:
            self._pumping = False

    def _fill(self) -> None:
        settings = self.settings
        buffer_size = max(1, settings.buffer_size)
        batch = max(1, settings.read_batch_size)
        room = buffer_size - len(self.buffer)
        if self.buffer and room < min(batch, buffer_size):
            # Read in batches, not one event per freed slot.
            return
        guard = 0
        while room > 0 and not self.caught_up:
            guard += 1
            if guard > 1000:
                # Bounded work per turn; carry on at the next one.
                self.schedule_pump()
                return
            if self._skip and self._skipped(self.next_read):
                # Processed before a restart: jump over the whole range.
                self.next_read = self._skip[0][1] + 1
                continue
            count = min(batch, room)
            read = self._read_page(self.next_read, count)
            if read is None:
                self.caught_up = True
                return
            events, next_start, end = read
            for sequence, event in events:
                if sequence < self.next_read:
                    continue
                if self._skip and self._skipped(sequence):
                    self.next_read = sequence + 1
                    continue
                message = _Message(event, sequence)
                self.buffer.append(message)
                self.outstanding[sequence] = message
                self.next_read = sequence + 1
                room -= 1
            if end:
                if self.is_all:
                    self.next_read = max(self.next_read, next_start)
                self.caught_up = True
                return
            if next_start > self.next_read:
                self.next_read = next_start
            elif not events:
                self.caught_up = True
                return

    def _wanted(self, event: ResolvedEvent) -> bool:
        """
        Whether a record read from C{$all} is for this group: it passes the
        filter and is no persistent subscription's checkpoint.
        """
        record = event.original
        if is_checkpoint_stream(record.stream):
            return False
        wanted = self.settings.filter
        return wanted is None or wanted.matches(record)

    def _read_page(
        self, start: int, count: int
    ) -> Optional[tuple[list[tuple[int, ResolvedEvent]], int, bool]]:
        """
        Up to C{count} records from C{start} (an event number, or a C{$all}
        position for a C{$all} group) with their sequence numbers, the
        filtered-out ones dropped; where to read next; whether this was the
        end.  C{None} when the source cannot be read (no stream, deleted).
        """
        resolve = self.settings.resolve_link_tos
        if self.is_all:
            all_page = self.store.read_all(start, count, True, resolve, SYSTEM_PRINCIPAL)
            if all_page.status != ReadStatus.SUCCESS:
                return None
            found = [(e.original.position, e) for e in all_page.events if self._wanted(e)]
            end = len(all_page.events) < count or all_page.next_position <= start
            return found, all_page.next_position, end
        page = self.store.read_stream(self.stream, start, count, True, resolve, SYSTEM_PRINCIPAL)
        if page.status != ReadStatus.SUCCESS:
            return None
        events = [(e.original.event_number, e) for e in page.events]
        return events, page.next_event_number, page.is_end_of_stream

    def _skipped(self, sequence: int) -> bool:
        skip = self._skip
        while skip and skip[0][1] < sequence:
            skip.popleft()
        return bool(skip) and skip[0][0] <= sequence

    def done_intervals(self) -> list[tuple[int, int]]:
        """
        Ranges of event numbers above the checkpoint that are processed
        (acked, skipped or parked) while something below them is not.
        Stored with the checkpoint so that a restart does not deliver them
        again.
        """
        intervals: list[tuple[int, int]] = []
        previous: Optional[int] = None
        for sequence in self.outstanding:
            if previous is not None and sequence > previous + 1:
                intervals.append((previous + 1, sequence - 1))
            previous = sequence
        if previous is not None and self.next_read - 1 > previous:
            intervals.append((previous + 1, self.next_read - 1))
        for first, last in self._skip:
            if last >= self.next_read:
                intervals.append((max(first, self.next_read), last))
        return intervals

    def _choose(self) -> Optional[_Consumer]:
        consumers = self.consumers
        n = len(consumers)
        if not n:
            return None
        if self.settings.named_consumer_strategy == "DispatchToSingle":
            for consumer in consumers:
                if consumer.available > 0:
                    return consumer
            return None
        start = self._rr % n
        for i in range(n):
            consumer = consumers[(start + i) % n]
            if consumer.available > 0:
                self._rr = start + i + 1
                return consumer
        return None

    def _dispatch(self) -> None:
        if not self.consumers or not self._may_deliver():
            return
        if self.settings.named_consumer_strategy == "Pinned":
            self.retry = self._dispatch_pinned(self.retry)
            self.buffer = self._dispatch_pinned(self.buffer)
            return
        for queue in (self.retry, self.buffer):
            while queue and self.active:
                head = queue[0]
                if head.state == _DONE or (self._early_acks and self._acked_early(head)):
                    queue.popleft()
                    continue
                if head.event_id in self.in_flight:
                    # The same event id twice in the stream: one at a time.
                    break
                consumer = self._choose()
                if consumer is None:
                    return
                queue.popleft()
                self._send(head, consumer)
                if not self.consumers:
                    return
            # fall through from retries to fresh messages

    def _dispatch_pinned(self, queue: deque[_Message]) -> deque[_Message]:
        kept: deque[_Message] = deque()
        while queue and self.active:
            consumers = self.consumers
            if not any(c.available > 0 for c in consumers):
                break
            message = queue.popleft()
            if message.state == _DONE or (self._early_acks and self._acked_early(message)):
                continue
            if message.event_id in self.in_flight:
                kept.append(message)
                continue
            key = _source_stream(message.event).encode("utf-8")
            consumer = consumers[zlib.crc32(key) % len(consumers)]
            if consumer.available > 0:
                self._send(message, consumer)
            else:
                kept.append(message)
        kept.extend(queue)
        return kept

    def _send(self, message: _Message, consumer: _Consumer) -> None:
        if message.state == _RETRY:
            self.retry_by_id.pop(message.event_id, None)
        message.state = _IN_FLIGHT
        message.owner = consumer
        self._sent += 1
        event_id = message.event_id
        self.in_flight[event_id] = message
        consumer.in_flight[event_id] = message
        if self._timeout > 0:
            message.deadline = self.clock.seconds() + self._timeout
            if self._timer is None:
                self._timer = self.clock.callLater(self._timeout, self._on_timer)
        if isinstance(consumer, PersistentConnection):
            try:
                consumer.subscriber.event_appeared(message.event, message.retry_count)
            except Exception:
                _log.failure("consumer of {key} failed on a message; dropping it", key=self.key)
                consumer.drop_silently()

    # -- answers ------------------------------------------------------------

    def _remember_early_ack(self, event_id: bytes) -> None:
        early = self._early_acks
        early[event_id] = None
        if len(early) > EARLY_ACKS:
            del early[next(iter(early))]

    def _finish_unsent(self, event_ids: Sequence[bytes]) -> bool:
        """
        Acks of messages this node has not handed out (the consumer got
        them from an earlier leader).  One already read into the buffer is
        finished there; one further ahead in the stream (up to
        L{ACK_LOOK_AHEAD} events past what was read) is marked processed by
        its event number.  Either way the checkpoint written before the ack
        is answered carries it, so neither this node nor a later leader
        hands it out again (issue 11).  An id found nowhere is only
        remembered here.

        @return: whether anything was marked processed.
        """
        wanted = set(event_ids)
        changed = False
        for message in self.buffer:
            if message.event_id in wanted and message.state != _DONE:
                wanted.discard(message.event_id)
                self._finish(message)
                changed = True
        if wanted:
            ahead = self._look_ahead(wanted)
            if ahead:
                self._mark_processed(ahead)
                changed = True
        for event_id in wanted:
            self._remember_early_ack(event_id)
        return changed

    def _look_ahead(self, wanted: set[bytes]) -> list[int]:
        """
        The event numbers, at or past C{next_read}, of the events in
        C{wanted} (found ones are removed from it).
        """
        found: list[int] = []
        start = self.next_read
        # (a $all position counts bytes: there the page count bounds it)
        limit = start + (ACK_LOOK_AHEAD if not self.is_all else 1 << 62)
        for _ in range(ACK_LOOK_AHEAD // 500 + 1):
            if not wanted or start >= limit:
                break
            read = self._read_page(start, min(500, limit - start))
            if read is None:
                break
            events, next_start, end = read
            for sequence, event in events:
                event_id = event.original.event_id  # as a _Message has it
                if sequence >= start and event_id in wanted:
                    wanted.discard(event_id)
                    found.append(sequence)
            if end or next_start <= start:
                break
            start = next_start
        return found

    def _mark_processed(self, sequences: Sequence[int]) -> None:
        """
        Add not-yet-read event numbers to the processed ranges that reads
        jump over and the checkpoint records.
        """
        ranges = sorted(list(self._skip) + [(n, n) for n in sequences])
        merged: list[tuple[int, int]] = []
        for first, last in ranges:
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        self._skip = deque(merged)
        self.total_processed += len(sequences)
        self._changed = True

    def _acked_early(self, message: _Message) -> bool:
        """
        Whether C{message} was acked before it was handed out here; it is
        then finished instead of sent.
        """
        if message.event_id not in self._early_acks:
            return False
        del self._early_acks[message.event_id]
        self._finish(message)
        return True

    def _take(self, event_id: bytes) -> Optional[_Message]:
        """
        Remove a handed-out message from in-flight (or the retry queue).
        """
        message = self.in_flight.pop(event_id, None)
        if message is not None:
            owner = message.owner
            if owner is not None:
                owner.in_flight.pop(event_id, None)
            message.owner = None
            return message
        message = self.retry_by_id.pop(event_id, None)
        if message is not None:
            return message
        return None

    def ack(self, event_ids: Sequence[bytes], consumer: Optional[_Consumer]) -> Deferred[None]:
        """
        Finish the messages, wherever they are (in flight with any consumer
        or waiting for a retry): an acked message never comes back, not even
        after a crash or a failover, since the checkpoint (with the done
        ranges) is written before the returned Deferred fires (issue 11:
        a subscriber never receives an event it already acked).  Checkpoint
        writes are coalesced (one in flight per group), so acks arriving
        together share one.
        """
        if not self.active:
            return succeed(None)
        finished = False
        unsent: list[bytes] = []
        for event_id in event_ids:
            message = self._take(event_id)
            if message is None:
                unsent.append(event_id)
                continue
            if consumer is not None:
                consumer.total_items_processed += 1
            self._finish(message)
            finished = True
        if unsent and self._finish_unsent(unsent):
            finished = True
        self.pump()
        if not (finished or self._changed):
            return succeed(None)
        failures = self.checkpoint_failures

        def check(_: object) -> None:
            if self.checkpoint_failures != failures:
                raise NotReady("The acknowledgement could not be made durable; ack again")

        return self.write_checkpoint().addCallback(check)

    def nak(
        self,
        event_ids: Sequence[bytes],
        action: NakAction,
        consumer: Optional[_Consumer],
        reason: str = "",
    ) -> None:
        """
        Act on messages that C{consumer} holds (any holder when C{None}).
        """
        if not self.active or action == NakAction.STOP:
            return
        for event_id in event_ids:
            message = self.in_flight.get(event_id)
            if message is None or (consumer is not None and message.owner is not consumer):
                continue
            self._take(event_id)
            if action == NakAction.SKIP:
                self._finish(message)
            elif action == NakAction.PARK:
                self._park(message, reason or "Client explicitly NAK'ed message.")
            else:
                self._retry_or_park(message, "Max retry count reached.")
        self.pump()

    def _retry_or_park(self, message: _Message, reason: str) -> None:
        if message.retry_count >= self.settings.max_retry_count:
            self._park(message, reason)
            return
        message.retry_count += 1
        message.state = _RETRY
        self._add_retry(message)

    def _add_retry(self, message: _Message) -> None:
        """
        Queue a message for redelivery before any queued one with a higher
        event number, as Event Store's retry buffer does (so redelivery is
        in stream order whatever order the messages were nacked or timed out
        in); replayed parked messages (no event number) go last.
        """
        self.retry_by_id[message.event_id] = message
        sequence = message.sequence
        retry = self.retry
        if sequence is not None:
            for i, queued in enumerate(retry):
                if queued.sequence is not None and sequence < queued.sequence:
                    retry.insert(i, message)
                    return
        retry.append(message)

    def _park(self, message: _Message, reason: str) -> None:
        message.state = _PARKING
        original = message.event.original
        link = NewEvent(
            event_id=uuid.uuid4().bytes,
            event_type=LINK_EVENT_TYPE,
            data=f"{original.event_number}@{original.stream}".encode(),
            metadata=json.dumps({"reason": reason}).encode("utf-8"),
            is_json=False,
        )
        try:
            written = self.store.append(
                parked_stream(self.stream, self.name), EXPECTED_ANY, [link], SYSTEM_PRINCIPAL
            )
        except Exception:
            written = fail()
        self._parks_pending += 1

        def parked(_: object) -> None:
            if message.state == _PARKING:
                self._finish(message)
                if self.active:
                    self.pump()

        def not_parked(failure: Failure) -> None:
            _log.failure("could not park a message of {key}; retrying it", failure, key=self.key)
            if self.active and message.state == _PARKING:
                message.state = _RETRY
                self._add_retry(message)
                self.schedule_pump()

        def settled(_: object) -> None:
            self._parks_pending -= 1
            if not self._parks_pending:
                waiters, self._parks_waiters = self._parks_waiters, []
                for waiter in waiters:
                    waiter.callback(None)

        written.addCallbacks(parked, not_parked)
        written.addBoth(settled)

    def parks_settled(self) -> Deferred[None]:
        """
        Fires when no park write is under way any more.
        """
        if not self._parks_pending:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._parks_waiters.append(waiter)
        return waiter

    def _finish(self, message: _Message) -> None:
        message.state = _DONE
        message.owner = None
        self.total_processed += 1
        if message.sequence is None:
            return
        if self.outstanding.pop(message.sequence, None) is None:
            return
        self._changed = True
        self._processed_since_checkpoint += 1
        if not self.active:
            return
        settings = self.settings
        if self._processed_since_checkpoint >= max(1, settings.checkpoint_max_count):
            self.write_checkpoint()
        elif settings.checkpoint_after_ms > 0 and self._checkpoint_timer is None:
            self._checkpoint_timer = self.clock.callLater(
                settings.checkpoint_after_ms / 1000.0, self._on_checkpoint_timer
            )

    # -- consumers ----------------------------------------------------------

    def add_consumer(self, consumer: PersistentConnection) -> None:
        self.consumers = self.consumers + [consumer]
        self.schedule_pump()

    def remove_consumer(self, consumer: PersistentConnection) -> None:
        """
        The consumer left: its in-flight messages are retried to the others.
        """
        consumer.active = False
        self.consumers = [c for c in self.consumers if c is not consumer]
        held = sorted(
            consumer.in_flight.values(),
            key=lambda m: -1 if m.sequence is None else m.sequence,
        )
        for message in held:
            if message.state == _IN_FLIGHT and message.owner is consumer:
                self._take(message.event_id)
                self._retry_or_park(message, "Max retry count reached.")
        consumer.in_flight.clear()
        if self.active:
            self.pump()

    def _may_deliver(self) -> bool:
        """
        Whether messages may be handed out now (the node's leader lease
        holds); if not, try again in L{HOLD_RETRY} seconds.
        """
        if self.owner.may_deliver():
            return True
        if self._pump_call is None and self.active:
            self._pump_call = self.clock.callLater(HOLD_RETRY, self._scheduled_pump)
        return False

    def pull(self, count: int) -> list[tuple[ResolvedEvent, int]]:
        """
        Hand up to C{count} messages to the HTTP side, keeping them in
        flight until answered or timed out (none while the node's leader
        lease has lapsed).
        """
        self.pump()
        if not self._may_deliver():
            return []
        handed: list[tuple[ResolvedEvent, int]] = []
        consumer = self.pull_consumer
        for _ in range(2):
            for queue in (self.retry, self.buffer):
                while queue and len(handed) < count:
                    message = queue.popleft()
                    if message.state == _DONE or (
                        self._early_acks and self._acked_early(message)
                    ):
                        continue
                    if message.event_id in self.in_flight:
                        queue.appendleft(message)
                        break
                    self._send(message, consumer)
                    handed.append((message.event, message.retry_count))
            if len(handed) >= count:
                break
            self._fill()
        return handed

    # -- timers -------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if not self.active:
            return
        now = self.clock.seconds()
        expired: list[_Message] = []
        next_deadline: Optional[float] = None
        for message in self.in_flight.values():
            if message.deadline <= now:
                expired.append(message)
            else:
                next_deadline = message.deadline
                break
        for message in expired:
            self._take(message.event_id)
            self._retry_or_park(message, "Max retry count reached.")
        if next_deadline is None:
            for message in self.in_flight.values():
                next_deadline = message.deadline
                break
        if next_deadline is not None:
            self._timer = self.clock.callLater(max(0.0, next_deadline - now), self._on_timer)
        if expired:
            self.pump()

    def _on_checkpoint_timer(self) -> None:
        self._checkpoint_timer = None
        if self.active and self._processed_since_checkpoint >= self.settings.checkpoint_min_count:
            self.write_checkpoint()

    def write_checkpoint(self) -> Deferred[None]:
        """
        Append the current checkpoint to the checkpoint stream if it moved.
        One write at a time: a request during a write is served by one more
        write after it, and the returned Deferred fires when that is done.
        """
        self._processed_since_checkpoint = 0
        if self._checkpoint_writing:
            self._checkpoint_again = True
            waiter: Deferred[None] = Deferred()
            self._checkpoint_waiters.append(waiter)
            return waiter
        value = self.checkpoint_value()
        if not self._changed and self.last_checkpoint is not None and value <= self.last_checkpoint:
            return succeed(None)
        self._changed = False
        self._checkpoint_writing = True
        written = self.owner._write_checkpoint(self.stream, self.name, value, self.done_intervals())

        def done(_: object) -> None:
            if self.last_checkpoint is None or value > self.last_checkpoint:
                self.last_checkpoint = value

        def failed(failure: Failure) -> None:
            # written again by the next acknowledgement or timer
            self._changed = True
            self.checkpoint_failures += 1
            _log.failure("could not write the checkpoint of {key}", failure, key=self.key)

        def release(_: object, waiter: Deferred[None]) -> None:
            waiter.callback(None)

        def finally_(_: object) -> None:
            self._checkpoint_writing = False
            waiters, self._checkpoint_waiters = self._checkpoint_waiters, []
            if self._checkpoint_again:
                self._checkpoint_again = False
                follow_up = self.write_checkpoint()
            else:
                follow_up = succeed(None)
            for waiter in waiters:
                follow_up.addBoth(release, waiter)

        written.addCallbacks(done, failed)
        written.addBoth(finally_)
        return written

    def abandon_checkpoints(self) -> None:
        """
        The group was deleted or replaced: no follow-up checkpoint write may
        land after its successor's.
        """
        self._checkpoint_again = False
        waiters, self._checkpoint_waiters = self._checkpoint_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self, reason: DropReason) -> None:
        """
        The group goes away (delete, update, shutdown): stop timers, drop
        every consumer with C{reason}.
        """
        self.active = False
        for call in (self._timer, self._checkpoint_timer, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._checkpoint_timer = self._pump_call = None
        consumers, self.consumers = self.consumers, []
        for consumer in consumers:
            consumer._drop(reason)

    def _rate(self, total: int, measured: Optional[tuple[float, int]]) -> tuple[float, int]:
        if measured is None:
            return 0.0, 0
        then, count = measured
        elapsed = self.clock.seconds() - then
        since = total - count
        return (since / elapsed if elapsed > 0 else 0.0), since

    def info(self) -> GroupInfo:
        """
        The group's state; rates are over the time since the previous call
        (the first call only starts measuring).
        """
        now = self.clock.seconds()
        connections = []
        for c in self.consumers:
            rate, since = self._rate(c.total_items_processed, c.measured)
            c.measured = (now, c.total_items_processed)
            connections.append(
                ConnectionInfo(
                    from_address=c.from_address,
                    username=c.principal.login if c.principal is not None else "",
                    total_items_processed=c.total_items_processed,
                    available_slots=max(0, c.available),
                    in_flight_messages=len(c.in_flight),
                    average_items_per_second=rate,
                    count_since_last_measurement=since,
                )
            )
        rate, since = self._rate(self.total_processed, self._measured)
        self._measured = (now, self.total_processed)
        retry_count = sum(1 for m in self.retry if m.state == _RETRY)
        return GroupInfo(
            stream=self.stream,
            group=self.name,
            settings=self.settings,
            status="Live" if self.caught_up else "Behind",
            total_items_processed=self.total_processed,
            last_processed_event_number=self.checkpoint_value(),
            last_known_event_number=(
                self.store.last_commit_position
                if self.is_all
                else self.store.last_event_number(self.stream)
            ),
            connection_count=len(self.consumers),
            total_in_flight_messages=len(self.in_flight),
            read_buffer_count=len(self.buffer),
            live_buffer_count=0,
            retry_buffer_count=retry_count,
            outstanding_messages_count=len(self.in_flight),
            connections=tuple(connections),
            average_items_per_second=rate,
            count_since_last_measurement=since,
        )


_CONFIG_KEYS = (
    ("resolve_link_tos", "resolveLinkTos", bool),
    ("start_from", "startFrom", int),
    ("message_timeout_ms", "messageTimeout", int),
    ("record_statistics", "extraStatistics", bool),
    ("live_buffer_size", "liveBufferSize", int),
    ("read_batch_size", "readBatchSize", int),
    ("buffer_size", "historyBufferSize", int),
    ("max_retry_count", "maxRetryCount", int),
    ("prefer_round_robin", "preferRoundRobin", bool),
    ("checkpoint_after_ms", "checkPointAfter", int),
    ("checkpoint_max_count", "maxCheckPointCount", int),
    ("checkpoint_min_count", "minCheckPointCount", int),
    ("subscriber_max_count", "maxSubscriberCount", int),
    ("named_consumer_strategy", "namedConsumerStrategy", str),
)


def settings_to_json(settings: PersistentSettings) -> dict[str, Any]:
    """
    The stored form of C{settings} (keys as in Event Store's config; a
    C{$all} group's filter under C{"filter"}).
    """
    stored = {key: getattr(settings, name) for name, key, _ in _CONFIG_KEYS}
    if settings.filter is not None:
        stored["filter"] = settings.filter.to_json()
    return stored


def settings_from_json(entry: dict[str, Any]) -> PersistentSettings:
    """
    Inverse of L{settings_to_json}; absent or mistyped keys take defaults.
    """
    values: dict[str, Any] = {}
    for name, key, kind in _CONFIG_KEYS:
        if key in entry:
            value = entry[key]
            if kind is bool and isinstance(value, bool):
                values[name] = value
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                values[name] = value
            elif kind is str and isinstance(value, str):
                values[name] = value
    values["filter"] = filter_from_json(entry.get("filter"))
    return PersistentSettings(**values)


def normalize_settings(settings: PersistentSettings) -> PersistentSettings:
    """
    Apply the legacy C{prefer_round_robin} rule to an empty strategy.

    @raise BadRequest: unknown strategy.
    """
    strategy = settings.named_consumer_strategy
    if not strategy:
        strategy = "RoundRobin" if settings.prefer_round_robin else "DispatchToSingle"
        settings = evolve(settings, named_consumer_strategy=strategy)
    if strategy not in STRATEGIES:
        raise BadRequest(f"Unknown named consumer strategy '{strategy}'.")
    return settings


def _write_group_checkpoint(_: object, group: _Group) -> Deferred[None]:
    return group.write_checkpoint()


class PersistentSubscriptions:
    """
    Every persistent subscription group of a node.  See the module
    docstring.
    """

    def __init__(
        self,
        store: StreamStore,
        clock: IReactorTime,
        may_deliver: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.clock = clock
        #: Whether messages may be handed to consumers now: in a cluster,
        #: whether this leader's lease holds
        #: (L{estwisted.cluster.leadership.LeaderLease}).  A leader cut
        #: off from its followers stops handing out messages before a new
        #: leader can take acknowledgements for them.
        self.may_deliver = may_deliver
        self._groups: dict[str, _Group] = {}
        self._by_stream: dict[str, list[_Group]] = {}
        self._started = False
        self._remove_listener = store.add_commit_listener(self._on_commit)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Load the groups from C{$persistentSubscriptionConfig} and resume
        each at its checkpoint.  Synchronous underneath (store reads are);
        the Deferred has fired on return.
        """
        if self._started:
            return succeed(None)
        self._started = True
        try:
            entries = self._load_config()
        except Exception:
            _log.failure("could not load the persistent subscription configuration")
            return succeed(None)
        for stream, name, settings in entries:
            key = group_key(stream, name)
            if key in self._groups:
                continue
            checkpoint, done = self._load_checkpoint(stream, name)
            if checkpoint is not None:
                next_read = checkpoint + 1
            else:
                next_read = self._resolve_start(stream, settings.start_from)
            self._add_group(_Group(self, stream, name, settings, next_read, checkpoint, done))
        for group in list(self._groups.values()):
            group.pump()
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """
        Drop every group's consumers (C{UNSUBSCRIBED}), let park writes
        under way finish, then write every group's checkpoint.
        """
        writes: list[Deferred[None]] = []
        for group in list(self._groups.values()):
            group.close(DropReason.UNSUBSCRIBED)
            writes.append(group.parks_settled().addCallback(_write_group_checkpoint, group))
        self._groups.clear()
        self._by_stream.clear()
        self._remove_listener()
        self._remove_listener = lambda: None
        done: Deferred[Any] = DeferredList(writes, consumeErrors=True)
        return done.addCallback(lambda _: None)

    def restart(self) -> Deferred[None]:
        """
        Restart the subsystem (C{RestartPersistentSubscriptions}): L{stop}
        (consumers dropped with C{UNSUBSCRIBED}, checkpoints written), then
        listen for commits again and L{start} (groups loaded from the store,
        resuming at their checkpoints).
        """

        def again(_: object) -> None:
            self._started = False
            self._remove_listener = self.store.add_commit_listener(self._on_commit)
            self.start()

        return self.stop().addCallback(again)

    def reload(self) -> None:
        """
        Leadership moved to this cluster node: forget the groups (their
        consumers are dropped, no checkpoint is written) and load them again
        from the replicated C{$persistentSubscriptionConfig} and checkpoint
        streams, as L{start} does.
        """
        for group in list(self._groups.values()):
            group.close(DropReason.UNSUBSCRIBED)
        self._groups.clear()
        self._by_stream.clear()
        self._started = False
        self.start()

    # -- management ---------------------------------------------------------

    def create(
        self,
        stream: str,
        group: str,
        settings: PersistentSettings,
        principal: Optional[Principal],
        allow_all: bool = False,
    ) -> Deferred[None]:
        """
        Create a group.  Fails with L{AccessDenied}, L{BadRequest} or
        L{AlreadyExists}.

        @param allow_all: whether C{stream} may be C{$all} (the gRPC edge);
            the filter of C{settings} is for C{$all} groups only.
        """
        try:
            self._check_ops(principal, "create")
            self._check_names(stream, group, allow_all)
            if stream != ALL_STREAM and settings.filter is not None:
                raise BadRequest("A filter is for groups on $all only.")
            settings = normalize_settings(settings)
        except OperationError as e:
            return fail(e)
        key = group_key(stream, group)
        if key in self._groups:
            return fail(AlreadyExists(f"Group '{group}' already exists."))
        next_read = self._resolve_start(stream, settings.start_from)
        new = _Group(self, stream, group, settings, next_read, next_read - 1)
        self._add_group(new)
        # Checkpoint first, config second: a crash in between leaves no group
        # rather than a group resuming from a stale checkpoint.
        writes = [
            self._write_checkpoint(stream, group, next_read - 1),
            self._write_config(principal),
        ]
        new.pump()

        def failed(failure: Failure) -> Failure:
            if self._groups.get(key) is new:
                self._remove_group(new)
                new.close(DropReason.UNSUBSCRIBED)
            return failure

        return self._all_of(writes).addErrback(failed)

    def update(
        self,
        stream: str,
        group: str,
        settings: PersistentSettings,
        principal: Optional[Principal],
        allow_all: bool = False,
    ) -> Deferred[None]:
        """
        Replace a group's settings: consumers are dropped (C{UNSUBSCRIBED})
        and the group resumes from where everything was acked.  A C{$all}
        group given no filter keeps its filter (gRPC's C{UpdateReq} has
        none).
        """
        try:
            self._check_ops(principal, "update")
            self._check_names(stream, group, allow_all)
            settings = normalize_settings(settings)
        except OperationError as e:
            return fail(e)
        old = self._groups.get(group_key(stream, group))
        if old is None:
            return fail(
                NotFound(f"Subscription group '{group}' on stream '{stream}' does not exist.")
            )
        if settings.filter is None and old.settings.filter is not None:
            settings = evolve(settings, filter=old.settings.filter)
        resume = old.checkpoint_value()
        done = old.done_intervals()
        self._remove_group(old)
        old.close(DropReason.UNSUBSCRIBED)
        old.abandon_checkpoints()
        new = _Group(self, stream, group, settings, resume + 1, resume, done)
        self._add_group(new)
        writes = [
            self._write_checkpoint(stream, group, resume, done),
            self._write_config(principal),
        ]
        new.pump()
        return self._all_of(writes)

    def delete(self, stream: str, group: str, principal: Optional[Principal]) -> Deferred[None]:
        """
        Remove a group; its consumers are dropped (C{UNSUBSCRIBED}).
        """
        try:
            self._check_ops(principal, "delete")
        except OperationError as e:
            return fail(e)
        old = self._groups.get(group_key(stream, group))
        if old is None:
            return fail(
                NotFound(f"Subscription group '{group}' on stream '{stream}' does not exist.")
            )
        self._remove_group(old)
        old.close(DropReason.UNSUBSCRIBED)
        old.abandon_checkpoints()
        return self._write_config(principal)

    # -- consumers ----------------------------------------------------------

    def connect(
        self,
        stream: str,
        group: str,
        principal: Optional[Principal],
        allowed_in_flight: int,
        subscriber: IPersistentSubscriber,
        from_address: str = "",
    ) -> PersistentConnection:
        """
        Add a consumer.  Messages start flowing on the next reactor turn, so
        the edge can send its confirmation first.

        @raise AccessDenied: no read access to C{stream}.
        @raise NotFound: no such group.
        @raise SubscriberMaxCountReached: the group is full.
        """
        if not self.store.check_access(principal, stream, "$r"):
            raise AccessDenied(f"Read access denied for stream '{stream}'.")
        found = self._group(stream, group)
        maximum = found.settings.subscriber_max_count
        if maximum > 0 and len(found.consumers) >= maximum:
            raise SubscriberMaxCountReached(f"Maximum subscriber count reached for '{found.key}'.")
        connection = PersistentConnection(
            found,
            subscriber,
            allowed_in_flight,
            principal,
            from_address,
            self.store.last_commit_position,
            self.store.last_event_number(stream),
        )
        found.add_consumer(connection)
        return connection

    def pull(
        self, stream: str, group: str, count: int, principal: Optional[Principal]
    ) -> list[tuple[ResolvedEvent, int]]:
        """
        HTTP pull: up to C{count} messages with their retry counts; each
        stays in flight until acked/nacked or timed out.
        """
        found = self._checked_group(stream, group, principal)
        return found.pull(max(0, count))

    def ack_ids(
        self, stream: str, group: str, event_ids: Sequence[bytes], principal: Optional[Principal]
    ) -> Deferred[None]:
        """
        Acknowledge over HTTP; the Deferred fires once the acknowledgement
        is durable.
        """
        found = self._checked_group(stream, group, principal)
        return found.ack(event_ids, found.pull_consumer)

    def nak_ids(
        self,
        stream: str,
        group: str,
        event_ids: Sequence[bytes],
        action: NakAction,
        principal: Optional[Principal],
    ) -> None:
        found = self._checked_group(stream, group, principal)
        found.nak(event_ids, action, found.pull_consumer, "Client explicitly NAK'ed message.")

    def replay_parked(
        self, stream: str, group: str, principal: Optional[Principal],
        stop_at: Optional[int] = None,
    ) -> Deferred[None]:
        """
        Put every parked message (the first C{stop_at} ones when given)
        back into the group's retry queue (retry count 0) and truncate the
        parked stream past them.
        """
        try:
            found = self._checked_group(stream, group, principal)
        except OperationError as e:
            return fail(e)
        parked = parked_stream(stream, group)
        position = 0
        last = -1
        replayed = 0
        for _ in range(100000):
            if stop_at is not None and replayed >= stop_at:
                break
            page = self.store.read_stream(parked, position, 500, True, False, SYSTEM_PRINCIPAL)
            if page.status != ReadStatus.SUCCESS:
                break
            for item in page.events:
                if stop_at is not None and replayed >= stop_at:
                    break
                replayed += 1
                record = item.original
                last = max(last, record.event_number)
                target = parse_link(record.data) if record.event_type == LINK_EVENT_TYPE else None
                if target is None:
                    continue
                number, source = target
                result = self.store.read_event(source, number, False, SYSTEM_PRINCIPAL)
                if result.status != ReadStatus.SUCCESS or result.event is None:
                    continue
                event = resolve_record(
                    self.store,
                    result.event.original,
                    found.settings.resolve_link_tos,
                    SYSTEM_PRINCIPAL,
                )
                if event.original.event_id in found.in_flight:
                    continue
                message = _Message(event, None)
                message.state = _RETRY
                found.retry.append(message)
                found.retry_by_id[message.event_id] = message
            if page.is_end_of_stream or not page.events:
                break
            position = page.next_event_number
        found.schedule_pump()
        if last < 0:
            return succeed(None)
        written = self.store.set_metadata(
            parked,
            EXPECTED_ANY,
            json.dumps({"$tb": last + 1}).encode("utf-8"),
            SYSTEM_PRINCIPAL,
        )
        return written.addCallback(lambda _: None)

    # -- inspection -----------------------------------------------------------

    def list_groups(self, stream: Optional[str] = None) -> list[GroupInfo]:
        """
        Every group (of C{stream} when given).
        """
        groups = self._by_stream.get(stream, []) if stream is not None else self._groups.values()
        return [group.info() for group in groups]

    def get_group(self, stream: str, group: str) -> GroupInfo:
        """
        @raise NotFound: no such group.
        """
        return self._group(stream, group).info()

    # -- internals ----------------------------------------------------------

    def _group(self, stream: str, group: str) -> _Group:
        found = self._groups.get(group_key(stream, group))
        if found is None:
            raise NotFound(f"Subscription group '{group}' on stream '{stream}' does not exist.")
        return found

    def _checked_group(self, stream: str, group: str, principal: Optional[Principal]) -> _Group:
        found = self._group(stream, group)
        if not self.store.check_access(principal, stream, "$r"):
            raise AccessDenied(f"Read access denied for stream '{stream}'.")
        return found

    @staticmethod
    def _check_ops(principal: Optional[Principal], verb: str) -> None:
        if principal is None or not principal.is_ops:
            raise AccessDenied(f"You do not have permissions to {verb} persistent subscriptions.")

    @staticmethod
    def _check_names(stream: str, group: str, allow_all: bool = False) -> None:
        if not stream or (stream == ALL_STREAM and not allow_all):
            raise BadRequest("Bad stream name.")
        if not group:
            raise BadRequest("Bad group name.")

    def _resolve_start(self, stream: str, start_from: int) -> int:
        if start_from >= 0:
            return start_from
        if stream == ALL_STREAM:
            # just past the last committed record
            return self.store.read_all(-1, 0, True, False, SYSTEM_PRINCIPAL).position
        last = self.store.last_event_number(stream)
        if last == DELETED_STREAM:
            return last
        return max(0, last + 1)

    def _add_group(self, group: _Group) -> None:
        self._groups[group.key] = group
        self._by_stream.setdefault(group.stream, []).append(group)

    def _remove_group(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        remaining = [g for g in self._by_stream.get(group.stream, []) if g is not group]
        if remaining:
            self._by_stream[group.stream] = remaining
        else:
            self._by_stream.pop(group.stream, None)

    def _on_commit(self, records: Sequence[Any]) -> None:
        by_stream = self._by_stream
        if not by_stream:
            return
        touched: list[_Group] = []
        on_all = by_stream.get(ALL_STREAM)
        for record in records:
            if on_all:
                for group in on_all:
                    if group not in touched and group._wanted(ResolvedEvent(record)):
                        touched.append(group)
            groups = by_stream.get(record.stream)
            if groups:
                for group in groups:
                    if group not in touched:
                        touched.append(group)
        for group in touched:
            group.caught_up = False
            group.pump()

    @staticmethod
    def _all_of(writes: list[Deferred[Any]]) -> Deferred[None]:
        result: Deferred[Any] = DeferredList(writes, fireOnOneErrback=True, consumeErrors=True)

        def unwrap(failure: Failure) -> Failure:
            inner = failure.value
            sub = getattr(inner, "subFailure", None)
            return sub if isinstance(sub, Failure) else failure

        return result.addCallbacks(lambda _: None, unwrap)

    def _append(
        self, stream: str, event_type: str, data: bytes, metadata: bytes = b""
    ) -> Deferred[None]:
        event = NewEvent(
            event_id=uuid.uuid4().bytes,
            event_type=event_type,
            data=data,
            metadata=metadata,
            is_json=True,
        )
        try:
            written = self.store.append(stream, EXPECTED_ANY, [event], SYSTEM_PRINCIPAL)
        except Exception:
            return fail()
        return written.addCallback(lambda _: None)

    def _write_checkpoint(
        self, stream: str, group: str, value: int, done: Sequence[tuple[int, int]] = ()
    ) -> Deferred[None]:
        """
        Data: the checkpoint as a JSON number (as Event Store writes it);
        metadata: C{{"done": [[first, last], ...]}} for ranges above it that
        are processed already.
        """
        metadata = json.dumps({"done": [list(r) for r in done]}).encode() if done else b""
        stored: object = all_position_text(value) if stream == ALL_STREAM else value
        return self._append(
            checkpoint_stream(stream, group),
            CHECKPOINT_EVENT_TYPE,
            json.dumps(stored).encode(),
            metadata,
        )

    def _write_config(self, principal: Optional[Principal]) -> Deferred[None]:
        entries = []
        for group in self._groups.values():
            entry: dict[str, Any] = {"stream": group.stream, "group": group.name}
            entry.update(settings_to_json(group.settings))
            entries.append(entry)
        document = {
            "version": "2",
            "updatedBy": principal.login if principal is not None else "",
            "entries": entries,
        }
        return self._append(CONFIG_STREAM, CONFIG_EVENT_TYPE, json.dumps(document).encode("utf-8"))

    def _read_last(self, stream: str) -> Optional[EventRecord]:
        last = self.store.last_event_number(stream)
        if last < 0 or last == DELETED_STREAM:
            return None
        result = self.store.read_event(stream, last, False, SYSTEM_PRINCIPAL)
        if result.status != ReadStatus.SUCCESS or result.event is None:
            return None
        return result.event.original

    def _load_config(self) -> list[tuple[str, str, PersistentSettings]]:
        record = self._read_last(CONFIG_STREAM)
        if record is None:
            return []
        document = json.loads(record.data)
        entries: list[tuple[str, str, PersistentSettings]] = []
        for entry in document.get("entries", []):
            if not isinstance(entry, dict):
                continue
            stream, name = entry.get("stream"), entry.get("group")
            if not isinstance(stream, str) or not isinstance(name, str):
                continue
            try:
                settings = normalize_settings(settings_from_json(entry))
            except BadRequest:
                _log.warn(
                    "ignoring group {stream}::{group} with a bad strategy",
                    stream=stream,
                    group=name,
                )
                continue
            entries.append((stream, name, settings))
        return entries

    def _load_checkpoint(
        self, stream: str, group: str
    ) -> tuple[Optional[int], list[tuple[int, int]]]:
        """
        The last checkpoint of a group and the processed ranges above it.
        """
        record = self._read_last(checkpoint_stream(stream, group))
        if record is None:
            return None, []
        try:
            value = json.loads(record.data)
        except ValueError:
            return None, []
        if stream == ALL_STREAM and isinstance(value, str):
            value = parse_all_position(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return None, []
        done: list[tuple[int, int]] = []
        try:
            extra = json.loads(record.metadata) if record.metadata else {}
        except ValueError:
            extra = {}
        ranges = extra.get("done", []) if isinstance(extra, dict) else []
        for item in ranges if isinstance(ranges, list) else []:
            if (
                isinstance(item, list)
                and len(item) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in item)
                and value < item[0] <= item[1]
            ):
                done.append((item[0], item[1]))
        return value, sorted(done)
