# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
What a subscription already handed to the application, so that a
resubscription after a failover (or the overlap between the catch-up read
and the live push) never hands it an event twice.

L{StreamTracker} and L{AllTracker} keep the last delivered event number or
C{$all} position: an event is new only if it is past it, so deliveries are
also in order.  L{HandledSet} keeps the ids of the events a persistent
subscription handed over (bounded, oldest forgotten first): the server
redelivers what was acknowledged since its last checkpoint when the group
moves to a new leader, and those are acknowledged again without reaching
the handler.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Optional

from estwisted.client._values import Position, ResolvedEvent


class StreamTracker:
    """
    @ivar last: the last event number delivered (C{None}: none yet).
    """

    def __init__(self, last: Optional[int] = None) -> None:
        self.last = last

    def accept(self, event: ResolvedEvent) -> bool:
        """
        Whether C{event} is new; if so it becomes the last delivered.
        """
        number = event.original_event_number
        if self.last is not None and number <= self.last:
            return False
        self.last = number
        return True

    @property
    def next_to_read(self) -> int:
        return 0 if self.last is None else self.last + 1


class AllTracker:
    """
    @ivar last: the C{$all} position of the last event delivered.
    """

    def __init__(self, last: Optional[Position] = None) -> None:
        self.last = last

    def accept(self, event: ResolvedEvent) -> bool:
        position = event.position
        if position is None:
            return False
        if self.last is not None and position <= self.last:
            return False
        self.last = position
        return True

    @property
    def next_to_read(self) -> Position:
        return Position(0, 0) if self.last is None else self.last


class HandledSet:
    """
    Ids of the events handed over, bounded to C{capacity} (oldest first
    out).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._ids: OrderedDict[uuid.UUID, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: uuid.UUID) -> bool:
        """
        Record C{event_id}; C{False} if it was already there.
        """
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, event_id: uuid.UUID) -> None:
        """
        Let C{event_id} through again (it was nak'ed for a retry).
        """
        self._ids.pop(event_id, None)
