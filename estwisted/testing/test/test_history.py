"""
Tests for L{estwisted.testing.history}: correct hand-made histories pass,
and lost, duplicated, reordered writes, expected-version conflicts and split
brain are each found.
"""
# -*- test-case-name: estwisted.testing.test.test_history -*-

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.testing.history import ANY, LeaderClaim, WriteRecord, check_history


@st.composite
def histories(draw: Any) -> tuple[list[WriteRecord], dict[str, dict[str, list[str]]]]:
    """
    A correct history: sequential writers (each sends its next event only
    after the previous one was acknowledged or given up), some of whose
    unacknowledged writes were stored anyway, and three nodes storing the
    same streams in an order consistent with real time.
    """
    writers = draw(st.integers(1, 4))
    streams = draw(st.integers(1, 3))
    steps = draw(st.lists(st.tuples(st.integers(0, writers - 1), st.booleans(),
                                     st.booleans()), min_size=1, max_size=40))
    clock = 0
    records: list[WriteRecord] = []
    stored: dict[str, list[str]] = {f"s{i}": [] for i in range(streams)}
    for n, (writer, acked, kept) in enumerate(steps):
        stream = f"s{writer % streams}"
        clock += 1
        sent = clock
        clock += 1
        event_id = f"e{n}"
        # An unacknowledged write is stored (or not) at once: storing it
        # later could only put it after events sent later, which is fine,
        # but keeping this simple keeps real-time order obvious.
        if acked or kept:
            stored[stream].append(event_id)
        records.append(WriteRecord(
            writer=f"w{writer}", stream=stream, event_id=event_id, sent=sent,
            acked=clock if acked else None,
        ))
    nodes = {f"n{i}": {s: list(ids) for s, ids in stored.items()} for i in range(3)}
    return records, nodes


def acked_ids(records: list[WriteRecord]) -> list[WriteRecord]:
    return [r for r in records if r.acked is not None]


class CheckHistoryTests(SynchronousTestCase):
    """
    Tests for L{check_history}.
    """

    @given(histories())
    def test_correct_history_passes(self, history: Any) -> None:
        """
        A history consistent with the promises has no violation.
        """
        records, nodes = history
        result = check_history(records, nodes)
        self.assertEqual(result.violations, 0, result.examples)
        self.assertEqual(result.acknowledged, len(acked_ids(records)))

    @given(histories(), st.data())
    def test_lost(self, history: Any, data: Any) -> None:
        """
        An acknowledged event missing from one node is lost on that node;
        missing from every node it is also lost everywhere.
        """
        records, nodes = history
        acked = acked_ids(records)
        if not acked:
            return
        victim = data.draw(st.sampled_from(acked))
        nodes["n1"][victim.stream].remove(victim.event_id)
        result = check_history(records, nodes)
        self.assertEqual((result.lost, result.lost_everywhere), (1, 0))
        for node in ("n0", "n2"):
            nodes[node][victim.stream].remove(victim.event_id)
        result = check_history(records, nodes)
        self.assertEqual((result.lost, result.lost_everywhere), (3, 1))
        self.assertEqual(result.examples["lost"][0]["event_id"], victim.event_id)

    @given(histories(), st.data())
    def test_duplicated(self, history: Any, data: Any) -> None:
        """
        An event stored twice on a node is a duplicate, wherever the second
        copy is.
        """
        records, nodes = history
        candidates = [(s, e) for s, ids in nodes["n0"].items() for e in ids]
        if not candidates:
            return
        stream, event_id = data.draw(st.sampled_from(candidates))
        ids = nodes["n0"][stream]
        ids.insert(data.draw(st.integers(0, len(ids))), event_id)
        result = check_history(records, nodes)
        self.assertEqual(result.duplicated, 1)
        self.assertEqual(result.lost, 0)
        self.assertGreaterEqual(result.divergent_streams, 1)

    @given(histories(), st.data())
    def test_reordered(self, history: Any, data: Any) -> None:
        """
        Two events of one stream, the first acknowledged before the second
        was sent, stored the other way round, are reordered.
        """
        records, nodes = history
        by_id = {r.event_id: r for r in records}
        pairs = []
        for stream, ids in nodes["n2"].items():
            for i, first in enumerate(ids):
                for j in range(i + 1, len(ids)):
                    a, b = by_id[first], by_id[ids[j]]
                    if a.acked is not None and a.acked < b.sent:
                        pairs.append((stream, i, j))
        if not pairs:
            return
        stream, i, j = data.draw(st.sampled_from(pairs))
        ids = nodes["n2"][stream]
        ids[i], ids[j] = ids[j], ids[i]
        result = check_history(records, nodes)
        self.assertGreaterEqual(result.reordered, 1)
        self.assertEqual((result.lost, result.duplicated), (0, 0))

    def test_reordered_same_writer(self) -> None:
        """
        A writer's second event stored before its first, which was
        acknowledged before the second was sent, is reordered; the same
        order is fine when the two writes overlapped.
        """
        e1 = WriteRecord("w", "s", "e1", sent=1, acked=2)
        e2 = WriteRecord("w", "s", "e2", sent=3, acked=4)
        nodes = {"n": {"s": ["e2", "e1"]}}
        self.assertEqual(check_history([e1, e2], nodes).reordered, 1)
        overlapping = WriteRecord("w", "s", "e2", sent=1.5, acked=4)
        self.assertEqual(check_history([e1, overlapping], nodes).reordered, 0)

    def test_unacknowledged_and_phantom(self) -> None:
        """
        An unacknowledged event that was stored is allowed (counted, not a
        violation); an event no client sent is a phantom.
        """
        records = [WriteRecord("w", "s", "e1", sent=1)]
        result = check_history(records, {"n": {"s": ["e1", "zz"]}})
        self.assertEqual((result.unacked_present, result.phantoms), (1, 1))
        self.assertEqual(result.violations, 1)

    def test_expected_version_conflict(self) -> None:
        """
        Two writes both acknowledged for expected version 0 of a stream
        conflict; the one not stored at version 1 is misplaced.
        """
        records = [
            WriteRecord("a", "s", "e0", sent=1, acked=2, expected_version=-1),
            WriteRecord("a", "s", "e1", sent=3, acked=4, expected_version=0),
            WriteRecord("b", "s", "e2", sent=3, acked=5, expected_version=0),
        ]
        result = check_history(records, {"n": {"s": ["e0", "e1", "e2"]}})
        self.assertEqual((result.ev_conflicts, result.ev_misplaced), (1, 1))
        fine = records[:2] + [WriteRecord("b", "s", "e2", sent=3, acked=5, expected_version=1)]
        result = check_history(fine, {"n": {"s": ["e0", "e1", "e2"]}})
        self.assertEqual(result.violations, 0)
        any_version = records[:2] + [WriteRecord("b", "s", "e2", sent=3, acked=5,
                                                 expected_version=ANY)]
        self.assertEqual(check_history(any_version, {"n": {"s": ["e0", "e1", "e2"]}})
                         .violations, 0)

    @given(st.lists(st.tuples(st.sampled_from(["n0", "n1", "n2"]), st.integers(0, 5)),
                    min_size=1, max_size=30))
    def test_split_brain(self, raw: list[tuple[str, int]]) -> None:
        """
        Split brain is counted once per epoch claimed by more than one node,
        and never when each epoch has one leader.
        """
        claims = [LeaderClaim(node, epoch, at=i, epoch_id=f"id{epoch}")
                  for i, (node, epoch) in enumerate(raw)]
        expected = sum(
            1 for epoch in {e for _, e in raw} if len({n for n, e in raw if e == epoch}) > 1
        )
        result = check_history([], {"n0": {}}, claims)
        self.assertEqual(result.split_brain, expected)

    def test_epoch_number_reused_with_new_id(self) -> None:
        """
        A new leader reusing the number of an epoch its dead predecessor did
        not replicate (a new epoch id) is not split brain.
        """
        claims = [LeaderClaim("n0", 3, at=1, epoch_id="a"),
                  LeaderClaim("n1", 3, at=5, epoch_id="b")]
        self.assertEqual(check_history([], {"n0": {}}, claims).split_brain, 0)

    def test_divergence(self) -> None:
        """
        Nodes that store different contents for a stream diverge, even when
        nothing acknowledged is missing.
        """
        records = [WriteRecord("w", "s", "e1", sent=1)]
        result = check_history(records, {"a": {"s": ["e1"]}, "b": {"s": []}})
        self.assertEqual((result.divergent_streams, result.lost), (1, 0))
