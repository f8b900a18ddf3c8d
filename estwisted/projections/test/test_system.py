"""
Tests for L{estwisted.projections._system}: what each standard projection
emits, link metadata, and the L{Projector} state machine (exactly once
across batches and restarts from any older checkpoint).
"""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.metadata import LINK_EVENT_TYPE, TOMBSTONE_EVENT_TYPE, parse_link
from estwisted.core.model import DELETED_STREAM, EventRecord
from estwisted.projections import (
    STREAM_REFERENCE_EVENT_TYPE,
    Projector,
    SystemProjection,
    category_of,
    checkpoint_event,
    checkpoint_stream,
    emit_for,
    parse_checkpoint,
    source_position_of,
)


def record(
    position: int, stream: str, number: int, event_type: str = "ev", data: bytes = b"{}"
) -> EventRecord:
    return EventRecord(
        position, position + 100, stream, number, uuid.uuid4().bytes, event_type, 1, data, b"", 0
    )


class EmitTests(SynchronousTestCase):
    def test_category(self) -> None:
        self.assertEqual(category_of("order-1-a"), "order")
        self.assertIsNone(category_of("order"))
        self.assertEqual(category_of("a.b", "."), "a")

    def test_by_category_link(self) -> None:
        r = record(300, "order-12", 4, "Placed")
        e = emit_for(SystemProjection.BY_CATEGORY, r)
        assert e is not None
        self.assertEqual((e.stream, e.event_type, e.data), ("$ce-order", "$>", b"4@order-12"))
        meta = json.loads(e.metadata())
        self.assertEqual(meta["$c"], 300)
        self.assertEqual(meta["$p"], 300)
        self.assertEqual(meta["$o"], "order-12")
        self.assertEqual(meta["$causedBy"], str(uuid.UUID(bytes=r.event_id)))
        self.assertIn("$v", meta)
        self.assertEqual(parse_link(e.data), (4, "order-12"))

    def test_by_category_of_a_link_points_at_the_original(self) -> None:
        r = record(5, "copy-1", 0, LINK_EVENT_TYPE, b"7@order-3")
        e = emit_for(SystemProjection.BY_CATEGORY, r)
        assert e is not None
        self.assertEqual((e.stream, e.data), ("$ce-copy", b"7@order-3"))
        self.assertIsNone(emit_for(SystemProjection.BY_EVENT_TYPE, r))

    def test_by_event_type(self) -> None:
        e = emit_for(SystemProjection.BY_EVENT_TYPE, record(9, "plain", 2, "Shipped"))
        assert e is not None
        self.assertEqual((e.stream, e.event_type, e.data), ("$et-Shipped", "$>", b"2@plain"))

    def test_stream_by_category(self) -> None:
        e = emit_for(SystemProjection.STREAM_BY_CATEGORY, record(9, "user-7", 0))
        assert e is not None
        self.assertEqual(
            (e.stream, e.event_type, e.data),
            ("$category-user", STREAM_REFERENCE_EVENT_TYPE, b"user-7"),
        )
        self.assertIsNone(emit_for(SystemProjection.STREAM_BY_CATEGORY, record(9, "user-7", 1)))
        self.assertIsNone(emit_for(SystemProjection.STREAM_BY_CATEGORY, record(9, "user", 0)))

    def test_streams(self) -> None:
        e = emit_for(SystemProjection.STREAMS, record(9, "user", 0))
        assert e is not None
        self.assertEqual((e.stream, e.data), ("$streams", b"0@user"))
        self.assertIsNone(emit_for(SystemProjection.STREAMS, record(9, "user", 3)))

    def test_system_streams_and_tombstones_are_not_projected(self) -> None:
        for p in SystemProjection:
            self.assertIsNone(emit_for(p, record(1, "$ce-order", 0, LINK_EVENT_TYPE, b"0@order-1")))
            self.assertIsNone(emit_for(p, record(1, "$$order-1", 0, "$metadata")))
            self.assertIsNone(emit_for(p, record(1, "order-1", 0, TOMBSTONE_EVENT_TYPE)))

    def test_event_ids_are_deterministic(self) -> None:
        r = record(300, "order-12", 4)
        a = emit_for(SystemProjection.BY_CATEGORY, r)
        b = emit_for(SystemProjection.BY_CATEGORY, r)
        assert a is not None and b is not None
        self.assertEqual(a.new_event("$by_category").event_id, b.new_event("$by_category").event_id)
        self.assertNotEqual(a.new_event("$by_category").event_id, a.new_event("x").event_id)

    def test_checkpoint(self) -> None:
        self.assertEqual(checkpoint_stream("$by_category"), "$projections-$by_category-checkpoint")
        event = checkpoint_event("$by_category", 1234)
        self.assertEqual(event.event_type, "$ProjectionCheckpoint")
        self.assertEqual(parse_checkpoint(event.metadata), 1234)
        self.assertEqual(source_position_of(b"nope"), -1)
        self.assertEqual(source_position_of(b'{"$c": true}'), -1)


class ProjectorTests(SynchronousTestCase):
    def test_plan_groups_by_stream_with_expected_versions(self) -> None:
        p = Projector(SystemProjection.BY_CATEGORY)
        records = [record(0, "a-1", 0), record(100, "b-1", 0), record(200, "a-2", 0)]
        self.assertEqual(p.unknown_outputs(records), ["$ce-a", "$ce-b"])
        p.load_output("$ce-a", -1, -1)
        p.load_output("$ce-b", 4, 50)
        writes = p.plan(records)
        self.assertEqual([(w.stream, w.expected_version, len(w.events)) for w in writes],
                         [("$ce-a", -1, 2), ("$ce-b", 4, 1)])
        self.assertEqual(p.position, 200)
        self.assertEqual(p.unknown_outputs([record(300, "a-3", 0)]), [])
        [w] = p.plan([record(300, "a-3", 0)])
        self.assertEqual(w.expected_version, 1)

    def test_skips_what_the_output_holds(self) -> None:
        p = Projector(SystemProjection.BY_CATEGORY)
        p.load_output("$ce-a", 1, 100)
        self.assertEqual(p.plan([record(0, "a-1", 0), record(100, "a-1", 1)]), [])
        [w] = p.plan([record(200, "a-1", 2)])
        self.assertEqual(w.expected_version, 1)

    def test_deleted_output_is_dropped(self) -> None:
        p = Projector(SystemProjection.BY_CATEGORY)
        p.load_output("$ce-a", DELETED_STREAM, -1)
        self.assertEqual(p.plan([record(0, "a-1", 0)]), [])

    def test_plan_needs_loaded_outputs(self) -> None:
        p = Projector(SystemProjection.BY_CATEGORY)
        self.assertRaises(KeyError, p.plan, [record(0, "a-1", 0)])


_streams = st.sampled_from(["a-1", "a-2", "b-1", "plain", "$sys", "c-x-y"])
_types = st.sampled_from(["T1", "T2", LINK_EVENT_TYPE])


def _log(draws: list[tuple[str, str]]) -> list[EventRecord]:
    numbers: dict[str, int] = {}
    out = []
    for i, (stream, event_type) in enumerate(draws):
        n = numbers.get(stream, -1) + 1
        numbers[stream] = n
        data = b"0@a-1" if event_type == LINK_EVENT_TYPE else b"{}"
        out.append(record(i * 10, stream, n, event_type, data))
    return out


class ProjectorProperties(SynchronousTestCase):
    @given(
        st.lists(st.tuples(_streams, _types), max_size=40),
        st.lists(st.integers(1, 7), min_size=1, max_size=10),
        st.sampled_from(list(SystemProjection)),
        st.data(),
    )
    def test_exactly_once_across_restarts(
        self,
        draws: list[tuple[str, str]],
        batches: list[int],
        projection: SystemProjection,
        data: st.DataObject,
    ) -> None:
        """
        Whatever the batching, and however often the projection restarts
        from any checkpoint not after its position, each output stream gets
        exactly the events of one uninterrupted pass, once, in log order.
        """
        log = _log(draws)
        expected: dict[str, list[bytes]] = {}
        for r in log:
            e = emit_for(projection, r)
            if e is not None:
                expected.setdefault(e.stream, []).append(e.data)
        outputs: dict[str, list[tuple[bytes, int]]] = {}

        def run(p: Projector, batch: list[EventRecord]) -> None:
            for stream in p.unknown_outputs(batch):
                held = outputs.get(stream, [])
                p.load_output(stream, len(held) - 1, held[-1][1] if held else -1)
            for w in p.plan(batch):
                held = outputs.setdefault(w.stream, [])
                self.assertEqual(w.expected_version, len(held) - 1)
                held.extend((ev.data, source_position_of(ev.metadata)) for ev in w.events)

        checkpoints = [-1]
        p = Projector(projection)
        i = 0
        for size in batches * 10:
            if i >= len(log):
                break
            if data.draw(st.booleans()):
                # restart from some checkpoint written earlier
                p = Projector(projection, data.draw(st.sampled_from(checkpoints)))
                i = next((k for k, r in enumerate(log) if r.position > p.position), len(log))
            batch = log[i:i + size]
            run(p, batch)
            i += size
            checkpoints.append(p.position)
        run(p, log[i:])
        self.assertEqual({k: [d for d, _ in v] for k, v in outputs.items() if v}, expected)
