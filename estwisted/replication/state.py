# -*- test-case-name: estwisted.replication.test.test_replication -*-
"""
Quorum replication: the pure decisions (cluster.md sections 4 and 5).

Nothing here does I/O or knows a reactor; every function and machine
takes plain values (positions, epochs, "now") and returns data.  The
wire protocol and the Twisted runners are in the other modules of
L{estwisted.replication}.

Pieces, bottom to top:

  - L{Epoch} and its record codec (L{epoch_record_fields},
    L{parse_epoch}): an epoch is a C{FLAG_SYSTEM} record of type
    C{$epoch} whose data holds the epoch number, id and the position of the
    previous epoch record.  Readers skip system records, so clients never
    see them.
  - L{decide_start}: the leader's answer to a replica that subscribes with
    its log position and its newest epochs (section 5.3): where the replica
    continues from.  A start below the replica's end means the replica
    diverged and must truncate to the start.
  - L{LeaderState}: per-replica cursors (sent, acked), the quorum commit
    position (21.x rule, section 5.6: the leader's durable end capped by
    the (quorum-1)-th highest promotable replica ack; it never decreases),
    role assignment (followers and clones, section 5.7) and no-quorum
    detection (section 5.8).
  - L{CommitWaiters}: writes waiting for the commit position to pass
    their end; released in order, or all failed when the leader loses its
    quorum or steps down (never completed as if replicated).
  - L{FollowerState}: the replica side (section 5.5): what to do with
    C{ReplicaSubscribed}, whether a data bulk continues the stream, and
    when to acknowledge.
"""

from __future__ import annotations

import enum
import heapq
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Optional, TypeVar, Union

from attrs import define, field, frozen

from estwisted.core.model import FLAG_SYSTEM, EventRecord

#: Event type of an epoch record.
EPOCH_EVENT_TYPE = "$epoch"
#: How many of its newest epochs a replica sends when subscribing.
LAST_EPOCHS = 20
#: A catching-up replica this close to the leader's end becomes a clone.
CLONE_THRESHOLD = 1024
#: A follower this far behind (twice in a row) may be swapped for a clone.
FOLLOWER_LAG = 256 * 1024
#: Seconds without enough replicas before a leader reports no quorum, by
#: default (the node derives it from C{LeaderElectionTimeoutMs}:
#: L{no_quorum_timing}).
NO_QUORUM_TIMEOUT = 3.0
#: Send window: unacknowledged bytes in flight per replica.
SEND_WINDOW = 16 * 1024 * 1024
#: Bytes read from the log per bulk.
BULK_SIZE = 64 * 1024

_EPOCH_DATA = struct.Struct("<iq16s")


# --- Epochs -----------------------------------------------------------------------------


@frozen(order=True)
class Epoch:
    """
    One leadership term, as recorded in the log.

    @ivar position: log position of the epoch record itself.
    @ivar number: grows with every leadership change.
    @ivar epoch_id: 16 random bytes.
    """

    position: int
    number: int
    epoch_id: bytes


def epoch_record_fields(number: int, epoch_id: bytes, previous_position: int) -> dict[str, Any]:
    """
    The keyword arguments of C{IEventLog.append} that write an epoch record.
    """
    if len(epoch_id) != 16:
        raise ValueError("epoch id must be 16 bytes")
    return {
        "stream": "",
        "event_number": -1,
        "event_id": epoch_id,
        "event_type": EPOCH_EVENT_TYPE,
        "flags": FLAG_SYSTEM,
        "data": _EPOCH_DATA.pack(number, previous_position, epoch_id),
        "metadata": b"",
        "created": 0,
    }


def parse_epoch(record: EventRecord) -> Optional[Epoch]:
    """
    The epoch a record holds, or C{None} when it is not an epoch record
    (including the empty system record that starts every log).
    """
    if not record.flags & FLAG_SYSTEM or record.event_type != EPOCH_EVENT_TYPE:
        return None
    if len(record.data) != _EPOCH_DATA.size:
        return None
    number, _, epoch_id = _EPOCH_DATA.unpack(record.data)
    return Epoch(record.position, number, epoch_id)


# --- The leader's answer to a subscription ------------------------------------------------


@frozen
class StartAt:
    """
    The replica continues from C{position}: it truncates its log there first
    when its end is above.
    """

    position: int


@frozen
class Refuse:
    """
    The subscription cannot be served (bad request).
    """

    reason: str


def decide_start(
    leader_epochs: Sequence[Epoch],
    leader_end: int,
    replica_position: int,
    replica_epochs: Sequence[Epoch],
) -> Union[StartAt, Refuse]:
    """
    Where a subscribing replica continues (cluster.md 5.3).

    @param leader_epochs: every epoch of the leader's log, oldest first.
    @param leader_end: the leader's durable log end.
    @param replica_position: the replica's log end.
    @param replica_epochs: the replica's newest epochs, newest first.
    """
    if not replica_epochs:
        # a replica without epochs holds at most the log's first system
        # record: it gets everything again from 0.
        return StartAt(0)
    known = {(e.position, e.number, e.epoch_id): i for i, e in enumerate(leader_epochs)}
    common_index = -1
    after: Optional[Epoch] = None
    for epoch in replica_epochs:
        i = known.get((epoch.position, epoch.number, epoch.epoch_id))
        if i is not None:
            common_index = i
            break
        after = epoch
    if common_index < 0:
        return StartAt(0)
    replica_pos = after.position if after is not None else replica_position
    if common_index == len(leader_epochs) - 1:
        return StartAt(min(replica_pos, leader_end))
    return StartAt(min(replica_pos, leader_epochs[common_index + 1].position))


# --- The leader's view of its replicas ---------------------------------------------------


class ReplicaRole(enum.Enum):
    """
    What the leader made of a subscription.
    """

    CatchingUp = "CatchingUp"
    Clone = "Clone"
    Follower = "Follower"
    ReadOnly = "ReadOnly"


@define
class ReplicaCursor:
    """
    One subscription as the leader tracks it.

    @ivar sent: position up to which records were sent.
    @ivar acked: position the replica says it has durable.
    @ivar promotable: a voting member (read-only replicas are not).
    @ivar heard_at: when the leader last received anything from it (C{None}:
        not reported; counted as heard now).
    """

    subscription_id: bytes
    node_id: bytes
    promotable: bool
    sent: int
    acked: int
    role: ReplicaRole = ReplicaRole.CatchingUp
    lag_count: int = 0
    heard_at: Optional[float] = None


@frozen
class Assign:
    """
    Effect: tell a replica its role.
    """

    subscription_id: bytes
    role: ReplicaRole


@frozen
class NoQuorum:
    """
    Effect: the leader has had too few replicas for too long.

    @ivar silent: seconds since a quorum was last heard (for the log; not
        compared).
    """

    silent: float = field(default=0.0, eq=False)


@frozen
class NoQuorumTiming:
    """
    How a leader notices that it lost its quorum within the election
    timeout.

    @ivar timeout: seconds since a quorum was last heard after which the
        leader reports L{NoQuorum}.
    @ivar tick: period of the check; the report comes at most C{timeout +
        tick} after the quorum was last heard.
    @ivar heartbeat_interval: silence (nothing sent, or nothing received)
        after which the leader's replication links send a heartbeat: each
        replica answers it, so a healthy idle replica is heard at least
        every C{1.5 * heartbeat_interval} plus a round trip.
    """

    timeout: float
    tick: float
    heartbeat_interval: float


def no_quorum_timing(election_timeout: float) -> NoQuorumTiming:
    """
    The no-quorum timing of a leader whose cluster elects with
    C{election_timeout} (C{LeaderElectionTimeoutMs}): it steps down within
    the election timeout of the moment it last heard a quorum (at most
    C{timeout + tick}, one more tick of margin for a late timer:
    C{timeout + 2 * tick = election_timeout}).  Its links heartbeat four
    times per timeout, so a healthy idle replica is heard at least every
    C{0.375 * timeout} (plus a round trip): a busy cluster keeps more than
    half the timeout as margin for a slow answer.
    """
    tick = min(0.1, election_timeout / 10)
    timeout = election_timeout - 2 * tick
    return NoQuorumTiming(timeout, tick, timeout / 4)


@define
class LeaderState:
    """
    The leader's replication bookkeeping.

    @ivar quorum: nodes (the leader included) that must hold a record
        durably before it is committed: C{max(commit count, ClusterSize/2+1)}.
    @ivar cluster_size: voting members.
    @ivar end: the leader's own durable log end.
    @ivar committed: the quorum commit position: every record ending at or
        below it is durable on C{quorum} nodes.  Never decreases.
    @ivar epoch_end: the end of this leader's own epoch record.  Nothing is
        committed before a quorum holds it: a replica that acknowledged
        older records without our epoch could still lose them to a rival
        with a newer epoch (Raft's "figure 8").
    """

    cluster_size: int
    quorum: int
    end: int
    committed: int = 0
    epoch_end: int = 0
    replicas: dict[bytes, ReplicaCursor] = field(factory=dict)
    no_quorum_timeout: float = NO_QUORUM_TIMEOUT
    start_grace: float = NO_QUORUM_TIMEOUT
    _quorum_at: Optional[float] = None
    _had_quorum: bool = False
    _no_quorum_sent: bool = False

    @classmethod
    def create(
        cls,
        cluster_size: int,
        end: int,
        commit_count: int = -1,
        committed: int = 0,
        epoch_end: int = 0,
        no_quorum_timeout: float = NO_QUORUM_TIMEOUT,
    ) -> LeaderState:
        """
        @param commit_count: the C{CommitCount}/C{PrepareCount} option; it
            can only raise the requirement above the majority.
        @param no_quorum_timeout: see L{check_quorum}.
        """
        quorum = max(commit_count, cluster_size // 2 + 1)
        quorum = min(quorum, cluster_size) if cluster_size > 0 else 1
        state = cls(
            cluster_size=cluster_size,
            quorum=quorum,
            end=end,
            committed=committed,
            epoch_end=epoch_end,
            no_quorum_timeout=no_quorum_timeout,
        )
        state._recompute()
        return state

    # -- inputs --

    def subscribe(
        self, subscription_id: bytes, node_id: bytes, start: int, promotable: bool = True
    ) -> list[Assign]:
        """
        A replica subscribed and was told to start at C{start}.  An older
        subscription of the same node is dropped.
        """
        for sid, cursor in list(self.replicas.items()):
            if cursor.node_id == node_id:
                del self.replicas[sid]
        role = ReplicaRole.CatchingUp if promotable else ReplicaRole.ReadOnly
        self.replicas[subscription_id] = ReplicaCursor(
            subscription_id, node_id, promotable, start, start, role
        )
        effects: list[Assign] = []
        if not promotable:
            effects.append(Assign(subscription_id, ReplicaRole.ReadOnly))
        return effects + self.assign_roles()

    def unsubscribe(self, subscription_id: bytes) -> None:
        """
        The replica's connection was lost.
        """
        self.replicas.pop(subscription_id, None)

    def flushed(self, end: int) -> Optional[int]:
        """
        The leader made its log durable up to C{end}.

        @return: the new commit position if it advanced, else C{None}.
        """
        if end > self.end:
            self.end = end
        return self._recompute()

    def sent(self, subscription_id: bytes, position: int) -> None:
        """
        Records up to C{position} were sent to a replica.
        """
        cursor = self.replicas.get(subscription_id)
        if cursor is not None and position > cursor.sent:
            cursor.sent = position

    def acked(self, subscription_id: bytes, position: int) -> Optional[int]:
        """
        A replica has its log durable up to C{position}.

        @return: the new commit position if it advanced, else C{None}.
        """
        cursor = self.replicas.get(subscription_id)
        if cursor is None:
            return None
        if position > cursor.acked:
            cursor.acked = position
            if position > cursor.sent:
                cursor.sent = position
        return self._recompute()

    def can_send(self, subscription_id: bytes) -> bool:
        """
        Whether the send window of a replica has room.
        """
        cursor = self.replicas.get(subscription_id)
        return cursor is not None and cursor.sent - cursor.acked < SEND_WINDOW

    # -- derived --

    def _recompute(self) -> Optional[int]:
        needed = self.quorum - 1
        if needed <= 0:
            candidate = self.end
        else:
            acks = [c.acked for c in self.replicas.values() if c.promotable]
            if len(acks) < needed:
                return None
            candidate = min(self.end, heapq.nlargest(needed, acks)[-1])
        if candidate < self.epoch_end:
            return None
        if candidate > self.committed:
            self.committed = candidate
            return candidate
        return None

    def voting_replicas(self) -> int:
        return sum(1 for c in self.replicas.values() if c.promotable)

    def heard(self, subscription_id: bytes, at: float) -> None:
        """
        Something arrived from a replica at C{at} (an ack, a heartbeat).
        """
        cursor = self.replicas.get(subscription_id)
        if cursor is not None and (cursor.heard_at is None or at > cursor.heard_at):
            cursor.heard_at = at

    def check_quorum(self, now: float) -> list[NoQuorum]:
        """
        No-quorum detection (cluster.md 5.8): fewer than C{ClusterSize/2}
        promotable replicas for more than C{no_quorum_timeout}, counted from
        the last moment a quorum was complete: a replica counts until it was
        last heard from (L{heard}), so a leader cut off silently (its
        connections still open, nothing arriving) steps down
        C{no_quorum_timeout} after it last heard a quorum, not only once its
        links time out and close.  Until it has had a quorum once (its
        replicas are still subscribing after an election, perhaps after a
        restart) the leader waits C{start_grace} (L{NO_QUORUM_TIMEOUT}, if
        longer): stepping down before the followers could even connect
        would only start another election.
        """
        needed = self.cluster_size // 2
        if needed <= 0:
            return []
        heard = sorted(
            (
                now if c.heard_at is None else c.heard_at
                for c in self.replicas.values()
                if c.promotable
            ),
            reverse=True,
        )
        if len(heard) >= needed:
            self._had_quorum = True
            # the last moment a quorum was complete
            complete = heard[needed - 1]
            if self._quorum_at is None or complete > self._quorum_at:
                self._quorum_at = complete
        elif self._quorum_at is None:
            # never had one: count from now
            self._quorum_at = now
        silent = now - self._quorum_at
        limit = self.no_quorum_timeout
        if not self._had_quorum:
            limit = max(limit, self.start_grace)
        if silent <= limit:
            if len(heard) >= needed:
                self._no_quorum_sent = False
            return []
        if self._no_quorum_sent:
            return []
        self._no_quorum_sent = True
        return [NoQuorum(silent)]

    def assign_roles(self) -> list[Assign]:
        """
        Role assignment (cluster.md 5.7): catching-up replicas within
        L{CLONE_THRESHOLD} of the end become clones; clones are promoted
        while there are fewer than C{ClusterSize - 1} followers; a lagging
        follower is swapped for a better clone.
        """
        effects: list[Assign] = []
        for c in self.replicas.values():
            if c.role is ReplicaRole.CatchingUp and self.end - c.sent <= CLONE_THRESHOLD:
                c.role = ReplicaRole.Clone
                effects.append(Assign(c.subscription_id, ReplicaRole.Clone))
        desired = max(0, self.cluster_size - 1)
        ranked = sorted(
            (
                c
                for c in self.replicas.values()
                if c.promotable and c.role in (ReplicaRole.Clone, ReplicaRole.Follower)
            ),
            key=lambda c: -c.sent,
        )
        followers = [c for c in ranked if c.role is ReplicaRole.Follower]
        for rank, c in enumerate(ranked):
            if c.role is ReplicaRole.Follower:
                if rank >= desired:
                    c.lag_count += 1
                else:
                    c.lag_count = 0
        clones = [c for c in ranked if c.role is ReplicaRole.Clone]
        while len(followers) < desired and clones:
            best = clones.pop(0)
            best.role = ReplicaRole.Follower
            best.lag_count = 0
            followers.append(best)
            effects.append(Assign(best.subscription_id, ReplicaRole.Follower))
        lagged = [c for c in followers if c.lag_count >= 2 and self.end - c.sent >= FOLLOWER_LAG]
        for worst in lagged:
            if not clones or clones[0].sent <= worst.sent:
                break
            best = clones.pop(0)
            worst.role = ReplicaRole.Clone
            worst.lag_count = 0
            best.role = ReplicaRole.Follower
            effects.append(Assign(worst.subscription_id, ReplicaRole.Clone))
            effects.append(Assign(best.subscription_id, ReplicaRole.Follower))
        return effects


# --- Writes waiting for the quorum --------------------------------------------------------

T = TypeVar("T")


class CommitWaiters(Generic[T]):
    """
    Tokens (Deferreds, in the runner) waiting for the commit position to
    reach a log position.  Pure: the caller fires what is returned.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, position: int, token: T) -> None:
        """
        C{token} waits until the commit position is at least C{position}.
        """
        self._seq += 1
        heapq.heappush(self._heap, (position, self._seq, token))

    def release(self, committed: int) -> list[T]:
        """
        Every token whose position is at or below C{committed}, in position
        (then arrival) order.
        """
        ready: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= committed:
            ready.append(heapq.heappop(heap)[2])
        return ready

    def fail_all(self) -> list[T]:
        """
        Every waiting token (to be failed), in position order.
        """
        tokens = [t for _, _, t in sorted(self._heap)]
        self._heap = []
        return tokens


# --- The replica side --------------------------------------------------------------------


@frozen
class Continue:
    """
    The replica's end equals the start: carry on receiving.
    """


@frozen
class Truncate:
    """
    The replica must cut its log at C{position} (and reopen storage) before
    subscribing again.
    """

    position: int


@frozen
class Fatal:
    """
    The leader asks for something impossible (start past our end).
    """

    reason: str


@define
class FollowerState:
    """
    A replica's receiving side.

    @ivar end: the local durable log end.
    @ivar position: where the next replicated byte is expected.
    @ivar acked: the last position acknowledged to the leader.
    """

    end: int
    position: int = -1
    acked: int = -1
    subscription_id: bytes = b""

    def subscribed(self, subscription_id: bytes, start: int) -> Union[Continue, Truncate, Fatal]:
        """
        The leader answered C{ReplicaSubscribed(start)}.
        """
        if start > self.end:
            return Fatal(f"leader starts us at {start}, past our end {self.end}")
        self.subscription_id = subscription_id
        if start < self.end:
            return Truncate(start)
        self.position = start
        self.acked = start
        return Continue()

    def accepts(self, subscription_id: bytes, position: int) -> bool:
        """
        Whether a bulk starting at C{position} may continue the stream: not
        an old one.  A bulk may start past our end only where the log starts
        a new chunk; the log's C{append_raw} checks that exactly.
        """
        return subscription_id == self.subscription_id and position >= self.position

    def written(self, end: int) -> Optional[int]:
        """
        The bulk was appended and flushed up to C{end}.

        @return: the position to acknowledge, if it advanced.
        """
        self.end = end
        self.position = end
        if end > self.acked:
            self.acked = end
            return end
        return None


def newest_epochs(epochs: Iterable[Epoch], count: int = LAST_EPOCHS) -> list[Epoch]:
    """
    The C{count} newest of C{epochs}, newest first (what a replica sends).
    """
    return sorted(epochs, key=lambda e: e.position, reverse=True)[:count]


__all__ = [
    "Assign",
    "CommitWaiters",
    "Continue",
    "Epoch",
    "Fatal",
    "FollowerState",
    "LeaderState",
    "NoQuorum",
    "NoQuorumTiming",
    "Refuse",
    "ReplicaCursor",
    "ReplicaRole",
    "StartAt",
    "Truncate",
    "decide_start",
    "epoch_record_fields",
    "newest_epochs",
    "no_quorum_timing",
    "parse_epoch",
]
