"""
Tests for L{estwisted.projections._user}: definitions, stream names, and
L{EmitPlanner}'s exactly-once property.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import DELETED_STREAM
from estwisted.projections._user import (
    Definition,
    EmitPlanner,
    Mode,
    Output,
    parse_definition,
    parse_link,
    parse_tag,
    result_stream,
    state_stream,
)


class DefinitionTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        d = Definition("p", "fromAll()", Mode.ONE_TIME, enabled=False, emit_enabled=True,
                       checkpoints_enabled=False, track_emitted_streams=True, epoch=3)
        event = d.event(b"\x01" * 16)
        self.assertEqual(event.event_type, "$ProjectionUpdated")
        body = json.loads(event.data)
        self.assertEqual((body["handlerType"], body["mode"], body["checkpointsDisabled"]),
                         ("JS", "OneTime", True))
        self.assertEqual(parse_definition("p", event.data), d)

    def test_unreadable(self) -> None:
        self.assertIsNone(parse_definition("p", b"nope"))
        self.assertIsNone(parse_definition("p", b'{"handlerType": "native:x"}'))
        self.assertIsNone(parse_definition("p", b'{"handlerType": "JS", "mode": "Weird"}'))

    def test_modes(self) -> None:
        self.assertIs(Mode.from_path("OneTime"), Mode.ONE_TIME)
        self.assertIs(Mode.from_path("continuous"), Mode.CONTINUOUS)
        self.assertRaises(ValueError, Mode.from_path, "forever")

    def test_names(self) -> None:
        self.assertEqual(state_stream("p", ""), "$projections-p-state")
        self.assertEqual(state_stream("p", "a-1"), "$projections-p-a-1-state")
        self.assertEqual(result_stream("p", ""), "$projections-p-result")
        self.assertEqual(result_stream("p", "", "mine"), "mine")
        self.assertEqual(result_stream("p", "x"), "$projections-p-x-result")
        self.assertEqual(parse_tag(b'{"$c": 5, "$epoch": 2}'), (5, 2))
        self.assertEqual(parse_tag(b"[]"), (-1, 0))
        self.assertEqual(parse_link(b"3@a-1"), ("a-1", 3))
        self.assertIsNone(parse_link(b"x@a"))


def output(stream: str, source: int, n: int = 0) -> Output:
    return Output(stream, "E", str(n).encode(), None, True, source, "")


outputs_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 3)), max_size=30
).map(lambda items: [
    output(stream, position, k)
    for position, (stream, copies) in enumerate(items)
    for k in range(copies)
])


class PlannerTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(outputs_strategy, st.lists(st.integers(1, 10), min_size=1, max_size=10),
           st.lists(st.integers(0, 30), max_size=4))
    def test_exactly_once(self, outputs: list[Output], sizes: list[int],
                          restarts: list[int]) -> None:
        """
        Whatever the batches, and however often the projection restarts
        from an earlier position (its checkpoint, or the log start) with
        a new planner that loads the streams' state, the streams end up
        with exactly the events of one uninterrupted pass.
        """
        streams: dict[str, list[tuple[int, bytes]]] = {}

        def apply(planner: EmitPlanner, batch: list[Output]) -> None:
            for s in planner.unknown(batch):
                held = streams.get(s, [])
                planner.load(s, len(held) - 1, held[-1][0] if held else -1)
            for write in planner.plan(batch):
                held = streams.setdefault(write.stream, [])
                self.assertEqual(write.expected_version, len(held) - 1)
                held.extend((json.loads(e.metadata)["$c"], e.event_id) for e in write.events)

        expected: dict[str, list[int]] = {}
        for o in outputs:
            expected.setdefault(o.stream, []).append(o.source)
        # the runner batches whole source records: group by source
        groups: list[list[Output]] = []
        for o in outputs:
            if groups and groups[-1][0].source == o.source:
                groups[-1].append(o)
            else:
                groups.append([o])
        pending = sorted(set(restarts))
        position = 0
        planner = EmitPlanner("p")
        i = 0
        while position < len(groups):
            size = sizes[i % len(sizes)]
            i += 1
            apply(planner, [o for g in groups[position:position + size] for o in g])
            position += size
            if pending and pending[0] <= position:
                # a crash: back to an earlier checkpoint, with a new planner
                position = min(pending.pop(0), position) // 2
                planner = EmitPlanner("p")
        self.assertEqual({s: [c for c, _ in held] for s, held in streams.items()}, expected)
        ids = [i for held in streams.values() for _, i in held]
        self.assertEqual(len(ids), len(set(ids)))

    def test_deleted_stream_dropped(self) -> None:
        planner = EmitPlanner("p")
        planner.load("a", DELETED_STREAM, -1)
        self.assertEqual(planner.plan([output("a", 1)]), [])
