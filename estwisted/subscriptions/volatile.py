# -*- test-case-name: estwisted.subscriptions.test.test_volatile -*-
"""
Volatile subscriptions to one stream or to C{$all} (tcp-protocol.md 5.5,
6.8).

API used by the edges (TCP protocol, HTTP long-poll):

  - L{SubscriptionHub} is built once per node over the L{StreamStore}; it
    registers a single commit listener and fans every flushed record out to
    the subscriptions interested in it (a dict by stream name plus a list of
    C{$all} subscriptions, so the cost per record does not grow with the
    number of stream subscriptions).
  - L{SubscriptionHub.subscribe} checks read access (C{$all} for the empty
    stream name or C{"$all"}), raises L{AccessDenied} when refused, and
    otherwise returns a L{VolatileSubscription} whose
    C{last_commit_position} / C{last_event_number} are what the edge puts in
    its confirmation (C{SubscriptionConfirmation}).
  - Every record of a flush that completes I{after} C{subscribe} returned is
    pushed to the L{ISubscriber} with C{event_appeared(resolved_event,
    commit_position)}, in commit (log) order; links (C{$>}) are resolved when
    asked.  Nothing flushed before the confirmation is ever pushed, so a
    client's catch-up read up to C{last_event_number} (or
    C{last_commit_position} for C{$all}) plus the pushes deliver each event
    exactly once.
  - L{VolatileSubscription.unsubscribe} (client's C{UnsubscribeFromStream})
    sends C{dropped(UNSUBSCRIBED)}; L{VolatileSubscription.drop_silently} is
    for a closed connection; L{SubscriptionHub.close} drops every
    subscription with C{UNSUBSCRIBED} (server shutdown).

Over TCP an event's commit and prepare positions are both its record
position (see L{estwisted.core.model}); C{commit_position} passed to
C{event_appeared} is the position of the record read from the subscribed
stream (the link record when a link was resolved).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Optional

from twisted.logger import Logger
from zope.interface import Interface

from estwisted.core.errors import AccessDenied
from estwisted.core.metadata import LINK_EVENT_TYPE, parse_link
from estwisted.core.model import (
    FLAG_SYSTEM,
    EventRecord,
    Principal,
    ReadStatus,
    ResolvedEvent,
)
from estwisted.core.streams import StreamStore

__all__ = [
    "ALL_STREAM",
    "LINK_EVENT_TYPE",
    "DropReason",
    "ISubscriber",
    "SubscriptionHub",
    "VolatileSubscription",
    "parse_link",
    "resolve_record",
]

#: The name of the all-events "stream".
ALL_STREAM = "$all"

_log = Logger()


class DropReason(enum.IntEnum):
    """
    Why a subscription ended (C{SubscriptionDropped.SubscriptionDropReason}).
    """

    UNSUBSCRIBED = 0
    ACCESS_DENIED = 1
    NOT_FOUND = 2
    PERSISTENT_SUBSCRIPTION_DELETED = 3
    SUBSCRIBER_MAX_COUNT_REACHED = 4


class ISubscriber(Interface):
    """
    The receiving end of a volatile subscription (a TCP connection's
    subscription entry or an HTTP long poll).
    """

    def event_appeared(event: ResolvedEvent, commit_position: int) -> None:  # noqa: N805
        """
        A new event was committed.

        @param commit_position: the log position of C{event.original}.
        """

    def dropped(reason: DropReason) -> None:  # noqa: N805
        """
        The subscription ended; nothing more will be pushed.
        """


def resolve_record(
    store: StreamStore,
    record: EventRecord,
    resolve_links: bool,
    principal: Optional[Principal],
) -> ResolvedEvent:
    """
    Turn a record read from a stream into a L{ResolvedEvent}, following a
    C{$>} link when C{resolve_links} is true (tcp-protocol.md 6.6): the
    target becomes C{event} and the link C{link}; an unreadable target
    leaves C{event} absent; an unparseable link is returned as a plain
    event.
    """
    if not resolve_links or record.event_type != LINK_EVENT_TYPE:
        return ResolvedEvent(event=record)
    target = parse_link(record.data)
    if target is None:
        return ResolvedEvent(event=record)
    number, stream = target
    result = store.read_event(stream, number, False, principal)
    if result.status == ReadStatus.SUCCESS and result.event is not None:
        return ResolvedEvent(event=result.event.original, link=record)
    return ResolvedEvent(event=None, link=record)


def _is_all(stream: str) -> bool:
    return stream == "" or stream == ALL_STREAM


class VolatileSubscription:
    """
    One live subscription.

    @ivar stream: the subscribed stream, C{""} for C{$all}.
    @ivar resolve_links: whether links are resolved.
    @ivar last_commit_position: the store's last commit position when the
        subscription was made (for the confirmation).
    @ivar last_event_number: the stream's last event number then (-1 none,
        L{DELETED_STREAM} hard-deleted); C{None} for C{$all}.
    @ivar active: false once dropped.
    """

    def __init__(
        self,
        hub: SubscriptionHub,
        stream: str,
        resolve_links: bool,
        principal: Optional[Principal],
        subscriber: ISubscriber,
        last_commit_position: int,
        last_event_number: Optional[int],
        generation: int,
    ) -> None:
        self._hub = hub
        self.stream = stream
        self.resolve_links = resolve_links
        self.principal = principal
        self.subscriber = subscriber
        self.last_commit_position = last_commit_position
        self.last_event_number = last_event_number
        self.active = True
        self._generation = generation

    @property
    def is_all(self) -> bool:
        return self.stream == ""

    def unsubscribe(self) -> None:
        """
        The client asked to stop: remove and tell it C{UNSUBSCRIBED}.
        """
        if self.active:
            self._hub._remove(self)
            self.subscriber.dropped(DropReason.UNSUBSCRIBED)

    def drop_silently(self) -> None:
        """
        The connection closed: remove without telling anybody.
        """
        if self.active:
            self._hub._remove(self)

    def drop(self, reason: DropReason) -> None:
        """
        Remove and tell the subscriber C{reason}.
        """
        if self.active:
            self._hub._remove(self)
            self.subscriber.dropped(reason)

    def _deliver(self, record: EventRecord, plain: ResolvedEvent) -> None:
        """
        Push one record; C{plain} is the record as an unresolved event,
        shared by every subscription that gets it as it is.
        """
        if self.resolve_links and record.event_type == LINK_EVENT_TYPE:
            event = resolve_record(self._hub.store, record, True, self.principal)
        else:
            event = plain
        try:
            self.subscriber.event_appeared(event, record.position)
        except Exception:
            _log.failure(
                "subscriber of {stream!r} failed on an event; dropping it",
                stream=self.stream or ALL_STREAM,
            )
            self.drop_silently()


class SubscriptionHub:
    """
    Every volatile subscription of a node, fed by one commit listener of
    C{store}.  See the module docstring.
    """

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self._by_stream: dict[str, list[VolatileSubscription]] = {}
        self._all: list[VolatileSubscription] = []
        self._generation = 0
        self._remove_listener: Optional[Callable[[], None]] = store.add_commit_listener(
            self._on_commit
        )

    @property
    def count(self) -> int:
        """
        Number of live subscriptions.
        """
        return len(self._all) + sum(len(subs) for subs in self._by_stream.values())

    def subscribe(
        self,
        stream: str,
        resolve_links: bool,
        principal: Optional[Principal],
        subscriber: ISubscriber,
    ) -> VolatileSubscription:
        """
        Subscribe C{subscriber} to C{stream} (C{""} or C{"$all"}: every
        event).

        @raise AccessDenied: C{principal} may not read the stream.
        """
        is_all = _is_all(stream)
        checked = ALL_STREAM if is_all else stream
        if not self.store.check_access(principal, checked, "$r"):
            raise AccessDenied(f"Read access denied for stream '{checked}'.")
        last_event_number: Optional[int]
        if is_all:
            last_event_number = None
        else:
            last_event_number = self.store.last_event_number(stream)
        subscription = VolatileSubscription(
            self,
            "" if is_all else stream,
            resolve_links,
            principal,
            subscriber,
            self.store.last_commit_position,
            last_event_number,
            self._generation,
        )
        if is_all:
            self._all.append(subscription)
        else:
            self._by_stream.setdefault(stream, []).append(subscription)
        return subscription

    def close(self) -> None:
        """
        Server shutdown: drop every subscription with C{UNSUBSCRIBED} and
        stop listening to commits.
        """
        subscriptions = list(self._all)
        for subs in self._by_stream.values():
            subscriptions.extend(subs)
        for subscription in subscriptions:
            subscription.drop(DropReason.UNSUBSCRIBED)
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def _remove(self, subscription: VolatileSubscription) -> None:
        subscription.active = False
        if subscription.is_all:
            self._all = [s for s in self._all if s is not subscription]
            return
        subs = self._by_stream.get(subscription.stream)
        if subs is None:
            return
        remaining = [s for s in subs if s is not subscription]
        if remaining:
            self._by_stream[subscription.stream] = remaining
        else:
            del self._by_stream[subscription.stream]

    def _on_commit(self, records: Sequence[EventRecord]) -> None:
        """
        Fan out one flush.  Subscriptions made while this runs (by a
        subscriber reacting to an event) only see later flushes: the records
        of this flush are already covered by their confirmation.
        """
        generation = self._generation
        self._generation += 1
        all_subscriptions = self._all
        by_stream = self._by_stream
        if not all_subscriptions and not by_stream:
            return
        for record in records:
            if record.flags & FLAG_SYSTEM:
                continue
            subs = by_stream.get(record.stream)
            if not subs and not all_subscriptions:
                continue
            plain = ResolvedEvent(record)
            if subs:
                for subscription in subs:
                    if subscription.active and subscription._generation <= generation:
                        subscription._deliver(record, plain)
            if all_subscriptions:
                for subscription in all_subscriptions:
                    if subscription.active and subscription._generation <= generation:
                        subscription._deliver(record, plain)
