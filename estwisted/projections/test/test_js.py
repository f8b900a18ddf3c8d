"""
Tests for L{estwisted.projections._js}: the v5 projection API in V8.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.projections._js import JsProjection, ProjectionFault


def event(n: int, body: Any, stream: str = "a-1", event_type: str = "T",
          metadata: str = "", link_metadata: Any = None) -> dict[str, Any]:
    return {"s": stream, "n": n, "t": event_type, "d": json.dumps(body), "m": metadata,
            "lm": link_metadata, "j": True, "id": "00000000-0000-0000-0000-000000000000",
            "c": stream.partition("-")[0], "del": False}


class EngineTests(SynchronousTestCase):
    def engine(self, query: str) -> JsProjection:
        p = JsProjection(query, timeout=0.5)
        self.addCleanup(p.close)
        return p

    def test_sources(self) -> None:
        p = self.engine("options({resultStreamName: 'r', $includeLinks: true});"
                        "fromCategory('order').foreachStream().when({Placed: function(){}})"
                        ".outputState()")
        s = p.sources
        self.assertEqual(s.categories, ("order",))
        self.assertTrue(s.by_streams and s.include_links and s.produces_results)
        self.assertEqual(s.result_stream_name, "r")
        self.assertEqual(s.events, frozenset({"Placed"}))
        self.assertFalse(s.all_events)
        self.assertTrue(p.handles("Placed"))
        self.assertFalse(p.handles("Other"))
        streams = self.engine("fromStreams(['a', 'b']).when({$any: function(){}})").sources
        self.assertEqual(streams.streams, ("a", "b"))

    def test_envelope_shape(self) -> None:
        p = self.engine("fromAll().when({$any: function (s, e) { return {"
                        "streamId: e.streamId, eventType: e.eventType, n: e.sequenceNumber,"
                        "body: e.body, data: e.data, meta: e.metadata, link: e.linkMetadata,"
                        "isJson: e.isJson, partition: e.partition, category: e.category}; }})")
        p.process([event(3, {"x": 1}, metadata='{"k":2}', link_metadata='{"l":3}')], [""])
        state = json.loads(str(p.states([""])[""]))
        self.assertEqual(state, {
            "streamId": "a-1", "eventType": "T", "n": 3, "body": {"x": 1}, "data": {"x": 1},
            "meta": {"k": 2}, "link": {"l": 3}, "isJson": True, "partition": "",
            "category": "a"})

    def test_emit_link_copy(self) -> None:
        p = self.engine("fromAll().when({$any: function (s, e) {"
                        "emit('o', 'E', {v: e.body.v}, {m: 1}); linkTo('l', e);"
                        "copyTo('c', e, {$x: 1, y: 2}); }})")
        out = p.process([event(0, {"v": 7}, metadata='{"$correlationId":"c","$z":1,"a":1}')],
                        [""])
        emitted = out.emits[0]
        self.assertEqual([(e.stream, e.event_type) for e in emitted],
                         [("o", "E"), ("l", "$>"), ("c", "T")])
        self.assertEqual(json.loads(emitted[0].data), {"v": 7})
        self.assertEqual(emitted[1].data, b"0@a-1")
        self.assertEqual(emitted[2].metadata, {"$correlationId": "c", "a": 1, "y": 2})

    def test_partition_by_and_transform(self) -> None:
        p = self.engine("fromAll().partitionBy(function (e) { return e.body.k; }).when({"
                        "$init: function () { return {n: 0}; },"
                        "$any: function (s, e) { s.n += 1; }})"
                        ".transformBy(function (s) { return {twice: s.n * 2}; })"
                        ".filterBy(function (s) { return s.twice > 4; })")
        events = [event(i, {"k": "x" if i % 3 else "y"}) for i in range(6)]
        parts = p.partitions(events)
        self.assertEqual(parts, ["y", "x", "x", "y", "x", "x"])
        p.process(events, parts)
        self.assertEqual(p.results(["x", "y"]), {"x": '{"twice":8}', "y": None})

    def test_bi_state(self) -> None:
        p = self.engine("fromAll().foreachStream().when({"
                        "$init: function () { return {n: 0}; },"
                        "$initShared: function () { return {total: 0}; },"
                        "$any: function (s, e) { s[0].n += 1; s[1].total += 1; return s; }})")
        self.assertTrue(p.sources.bi_state)
        p.load_shared(None)
        p.process([event(0, {}, "a-1"), event(0, {}, "b-1")], ["a-1", "b-1"])
        self.assertEqual(p.states(["a-1"]), {"a-1": '{"n":1}'})
        self.assertEqual(p.shared(), '{"total":2}')

    def test_deleted(self) -> None:
        p = self.engine("fromAll().foreachStream().when({$any: function (s) { s.n = 1; },"
                        "$deleted: function (s, e) { return {gone: e.partition}; }})")
        gone = dict(event(1, {}), t="$streamDeleted", d="", j=False)
        gone["del"] = True
        p.process([event(0, {}), gone], ["a-1", "a-1"])
        self.assertEqual(p.states(["a-1"]), {"a-1": '{"gone":"a-1"}'})

    def test_faults(self) -> None:
        self.assertRaises(ProjectionFault, JsProjection, "fromAll(")
        self.assertRaises(ProjectionFault, JsProjection, "var x = 1;")
        self.assertRaises(ProjectionFault, JsProjection, "options({nope: 1}); fromAll()")
        p = self.engine("fromAll().when({$any: function (s, e) { if (e.sequenceNumber > 0) "
                        "throw new Error('bad ' + e.sequenceNumber); }})")
        with self.assertRaises(ProjectionFault) as caught:
            p.process([event(0, {}), event(1, {})], ["", ""])
        self.assertEqual(caught.exception.index, 1)
        self.assertIn("bad 1", caught.exception.message)
        loop = self.engine("fromAll().when({$any: function () { for (;;) {} }})")
        with self.assertRaises(ProjectionFault) as timed:
            loop.process([event(0, {})], [""])
        self.assertTrue(timed.exception.timed_out)

    def test_memory_limit(self) -> None:
        p = JsProjection("fromAll().when({$any: function (s) { var a = [];"
                         "for (;;) a.push(new Array(100000).fill(1)); }})",
                         timeout=10, max_memory=64 * 1024 * 1024)
        self.addCleanup(p.close)
        with self.assertRaises(ProjectionFault) as caught:
            p.process([event(0, {})], [""])
        self.assertIn("memory", caught.exception.message)

    @settings(max_examples=20, deadline=None)
    @given(st.lists(st.integers(-1000, 1000), max_size=40), st.integers(1, 7))
    def test_batching_is_invisible(self, values: list[int], size: int) -> None:
        """
        Any split of the events into batches gives the same state and
        the same emits as one batch.
        """
        query = ("fromAll().when({$init: function () { return {sum: 0}; },"
                 "$any: function (s, e) { s.sum += e.body.v; "
                 "if (e.body.v % 3 === 0) emit('o', 'E', {sum: s.sum}); }})")
        events = [event(i, {"v": v}) for i, v in enumerate(values)]
        whole = JsProjection(query)
        split = JsProjection(query)
        try:
            one = whole.process(events, [""] * len(events)).emits
            many: list[Any] = []
            for i in range(0, len(events), size):
                part = events[i:i + size]
                many += split.process(part, [""] * len(part)).emits
            self.assertEqual(list(one), many)
            self.assertEqual(whole.states([""]), split.states([""]))
        finally:
            whole.close()
            split.close()
