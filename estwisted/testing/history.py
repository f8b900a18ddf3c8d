"""
A pure checker of client histories against what cluster nodes stored.

A fault-injection run (L{estwisted.testing.chaos}) records, for every write
a client attempted, when it was first sent and whether (and when) it was
acknowledged; afterwards it reads every stream back from every node and
polls who claimed leadership in which epoch.  This module decides, with no
I/O and no clock, whether that history keeps the cluster's promises:

  - B{lost}: an acknowledged event missing from a node;
  - B{duplicated}: an event id stored more than once in a stream on a node;
  - B{reordered}: an event that was acknowledged before another event of
    the same stream was first sent, stored after it (this covers "in
    acknowledgement order per writer" and real-time order across writers);
  - B{expected-version conflicts}: two acknowledged writes with the same
    expected version of a stream, or one not stored at C{expected + 1};
  - B{split brain}: two nodes claiming leadership in the same epoch (the
    same epoch number and id: a new leader may reuse the number of an
    epoch its dead predecessor never replicated, with a new id);
  - B{divergence}: nodes disagreeing about a stream's contents after the
    faults stopped;
  - B{phantoms}: stored events of a checked stream that no client sent.

Times are abstract, totally ordered numbers (the chaos runner uses a global
sequence counter), so hand-made histories are easy to write in tests.
"""
# -*- test-case-name: estwisted.testing.test.test_history -*-

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from attrs import field, frozen

__all__ = [
    "ANY",
    "CheckResult",
    "LeaderClaim",
    "WriteRecord",
    "check_history",
]

#: Expected version "any" (no optimistic concurrency check), as on the wire.
ANY = -2

#: Most examples kept per kind of violation in a L{CheckResult}.
MAX_EXAMPLES = 10


@frozen
class WriteRecord:
    """
    One event a client tried to write (all attempts with the same event id
    are one record).

    @ivar writer: the client's name.
    @ivar stream: the stream written to.
    @ivar event_id: the event id, as text.
    @ivar sent: when the first attempt was sent.
    @ivar acked: when the first success answer arrived, or C{None} if the
        client never got one.
    @ivar expected_version: the expected version sent (L{ANY}, C{-1} for
        no stream, or a version C{>= 0}).
    @ivar acked_by: the node that answered success, if any.
    """

    writer: str
    stream: str
    event_id: str
    sent: float
    acked: Optional[float] = None
    expected_version: int = ANY
    acked_by: Optional[str] = None


@frozen
class LeaderClaim:
    """
    A node said it was the leader (gossip C{Master} state for itself).

    @ivar node: the node's name.
    @ivar epoch_number: the epoch it led.
    @ivar at: when it was seen.
    @ivar epoch_id: the epoch's id, if known (claims are grouped by number
        and id).
    """

    node: str
    epoch_number: int
    at: float
    epoch_id: str = ""


@frozen
class CheckResult:
    """
    Counts and a few examples of every kind of violation.
    """

    acknowledged: int
    attempted: int
    lost: int
    lost_everywhere: int
    duplicated: int
    reordered: int
    ev_conflicts: int
    ev_misplaced: int
    split_brain: int
    divergent_streams: int
    phantoms: int
    unacked_present: int
    examples: Mapping[str, Sequence[Any]] = field(factory=dict)

    @property
    def violations(self) -> int:
        """
        The total count of violations (phantoms included; unacknowledged
        events that are present are allowed and not counted).
        """
        return (
            self.lost
            + self.duplicated
            + self.reordered
            + self.ev_conflicts
            + self.ev_misplaced
            + self.split_brain
            + self.divergent_streams
            + self.phantoms
        )

    def counts(self) -> dict[str, int]:
        """
        The counts as a JSON-able dictionary.
        """
        return {
            "acknowledged": self.acknowledged,
            "attempted": self.attempted,
            "lost": self.lost,
            "lost_everywhere": self.lost_everywhere,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "ev_conflicts": self.ev_conflicts,
            "ev_misplaced": self.ev_misplaced,
            "split_brain": self.split_brain,
            "divergent_streams": self.divergent_streams,
            "phantoms": self.phantoms,
            "unacked_present": self.unacked_present,
            "violations": self.violations,
        }


class _Examples:
    def __init__(self) -> None:
        self.kept: dict[str, list[Any]] = defaultdict(list)

    def add(self, kind: str, example: Any) -> None:
        if len(self.kept[kind]) < MAX_EXAMPLES:
            self.kept[kind].append(example)


def _reorderings(
    stored: Sequence[str], by_id: Mapping[str, WriteRecord]
) -> list[tuple[str, str]]:
    """
    Pairs C{(later, earlier)} where C{earlier} is stored before C{later}
    although C{later} was acknowledged before C{earlier} was first sent.
    One pair per offending stored event, found in one backward sweep.
    """
    found = []
    best_ack: Optional[float] = None  # smallest ack time among later positions
    best_id = ""
    for event_id in reversed(stored):
        record = by_id.get(event_id)
        if record is None:
            continue
        if best_ack is not None and best_ack < record.sent:
            found.append((best_id, event_id))
        if record.acked is not None and (best_ack is None or record.acked < best_ack):
            best_ack = record.acked
            best_id = event_id
    return found


def check_history(
    writes: Iterable[WriteRecord],
    stored: Mapping[str, Mapping[str, Sequence[str]]],
    claims: Iterable[LeaderClaim] = (),
) -> CheckResult:
    """
    Check a history.

    @param writes: every event clients tried to write.
    @param stored: for every node, for every stream written, the event ids
        the node stores, in stream order.  A stream a node lacks counts as
        empty.
    @param claims: leadership claims seen during the run.
    @return: the counts and examples.
    """
    records = list(writes)
    by_id: dict[str, WriteRecord] = {}
    for r in records:
        by_id.setdefault(r.event_id, r)
    acked = [r for r in records if r.acked is not None]
    streams = sorted({r.stream for r in records})
    examples = _Examples()

    lost = lost_everywhere = duplicated = reordered = ev_misplaced = 0
    phantoms = unacked_present = divergent = 0

    nodes = sorted(stored)
    present_anywhere: set[tuple[str, str]] = set()
    for node in nodes:
        for stream in streams:
            for event_id in stored[node].get(stream, ()):
                present_anywhere.add((stream, event_id))

    for node in nodes:
        per_stream = stored[node]
        positions: dict[str, dict[str, int]] = {}
        for stream in streams:
            ids = list(per_stream.get(stream, ()))
            counts = Counter(ids)
            for event_id, n in counts.items():
                if n > 1:
                    duplicated += n - 1
                    examples.add("duplicated", {"node": node, "stream": stream,
                                                "event_id": event_id, "copies": n})
                record = by_id.get(event_id)
                if record is None or record.stream != stream:
                    phantoms += 1
                    examples.add("phantoms", {"node": node, "stream": stream,
                                              "event_id": event_id})
                elif record.acked is None:
                    unacked_present += 1
            first: dict[str, int] = {}
            for i, event_id in enumerate(ids):
                first.setdefault(event_id, i)
            positions[stream] = first
            for later, earlier in _reorderings(ids, by_id):
                reordered += 1
                examples.add("reordered", {"node": node, "stream": stream,
                                           "acked_first": later, "stored_first": earlier})
        for r in acked:
            where = positions.get(r.stream, {})
            if r.event_id not in where:
                lost += 1
                examples.add("lost", {"node": node, "stream": r.stream,
                                      "event_id": r.event_id, "writer": r.writer,
                                      "acked_by": r.acked_by})
            elif r.expected_version >= -1 and where[r.event_id] != r.expected_version + 1:
                ev_misplaced += 1
                examples.add("ev_misplaced", {"node": node, "stream": r.stream,
                                              "event_id": r.event_id,
                                              "expected_version": r.expected_version,
                                              "stored_at": where[r.event_id]})

    for r in acked:
        if (r.stream, r.event_id) not in present_anywhere:
            lost_everywhere += 1

    by_version: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in acked:
        if r.expected_version >= -1:
            by_version[(r.stream, r.expected_version)].append(r.event_id)
    ev_conflicts = 0
    for (stream, version), ids in sorted(by_version.items()):
        if len(set(ids)) > 1:
            ev_conflicts += len(set(ids)) - 1
            examples.add("ev_conflicts", {"stream": stream, "expected_version": version,
                                          "event_ids": sorted(set(ids))})

    for stream in streams:
        contents = {tuple(stored[node].get(stream, ())) for node in nodes}
        if len(contents) > 1:
            divergent += 1
            examples.add("divergent_streams", {
                "stream": stream,
                "lengths": {node: len(stored[node].get(stream, ())) for node in nodes},
            })

    leaders: dict[tuple[int, str], set[str]] = defaultdict(set)
    for claim in claims:
        leaders[(claim.epoch_number, claim.epoch_id)].add(claim.node)
    split_brain = 0
    for (number, epoch_id), who in sorted(leaders.items()):
        if len(who) > 1:
            split_brain += 1
            examples.add("split_brain", {"epoch_number": number, "epoch_id": epoch_id,
                                         "nodes": sorted(who)})

    return CheckResult(
        acknowledged=len(acked),
        attempted=len(records),
        lost=lost,
        lost_everywhere=lost_everywhere,
        duplicated=duplicated,
        reordered=reordered,
        ev_conflicts=ev_conflicts,
        ev_misplaced=ev_misplaced,
        split_brain=split_brain,
        divergent_streams=divergent,
        phantoms=phantoms,
        unacked_present=unacked_present,
        examples=dict(examples.kept),
    )
