# -*- test-case-name: estwisted.wire.test.test_atom -*-
"""
Tests for L{estwisted.wire.atom}: positions, names, timestamps, entries, feeds
and their paging links, XML.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import (
    FLAG_JSON,
    UNIX_EPOCH_TICKS,
    AllSlice,
    EventRecord,
    ReadStatus,
    ResolvedEvent,
    StreamSlice,
)
from estwisted.wire import atom

URLS = atom.Urls("http://127.0.0.1:2113")
T0 = UNIX_EPOCH_TICKS + 15_000_000_000_000_000


def record(
    number: int,
    stream: str = "s",
    data: bytes = b'{"a":1}',
    flags: int = FLAG_JSON,
    event_type: str = "t",
    metadata: bytes = b"",
    position: int | None = None,
) -> EventRecord:
    pos = 100 + number * 10 if position is None else position
    return EventRecord(
        position=pos,
        next_position=pos + 10,
        stream=stream,
        event_number=number,
        event_id=uuid.UUID(int=number + 1).bytes,
        event_type=event_type,
        flags=flags,
        data=data,
        metadata=metadata,
        created=T0 + number * 10_000,
    )


def stream_slice(
    numbers: list[int], last: int, eos: bool, forward: bool
) -> StreamSlice:
    events = [ResolvedEvent(record(n)) for n in numbers]
    nxt = (numbers[-1] + 1 if forward else numbers[-1] - 1) if numbers else -1
    return StreamSlice(ReadStatus.SUCCESS, events, nxt, last, eos, 1000)


def rels(feed: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["uri"] for link in feed["links"]}


class PositionTests(SynchronousTestCase):
    """
    C{$all} positions in URLs.
    """

    @given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
    def test_roundTrip(self, commit: int, prepare: int) -> None:
        """
        Encoding then decoding gives the same pair; encodings are 32
        upper-case hex digits.
        """
        text = atom.encode_position(commit, prepare)
        self.assertEqual(len(text), 32)
        self.assertEqual(text, text.upper())
        self.assertEqual(atom.decode_position(text), (commit, prepare))
        self.assertEqual(atom.decode_position(text.lower()), (commit, prepare))

    def test_example(self) -> None:
        """
        The spec's example position.
        """
        self.assertEqual(
            atom.encode_position(0x1A2B, 0x1A2B), "0000000000001A2B0000000000001A2B"
        )

    @given(st.text(max_size=40))
    def test_rejectsGarbage(self, text: str) -> None:
        """
        Anything but 32 hex digits is refused with ValueError.
        """
        ok = len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text)
        if ok:
            atom.decode_position(text)
        else:
            self.assertRaises(ValueError, atom.decode_position, text)


class NameTests(SynchronousTestCase):
    """
    Stream names in URLs.
    """

    @given(st.text(min_size=1))
    def test_escapeRoundTrip(self, name: str) -> None:
        """
        An escaped name has no reserved characters and unquotes back.
        """
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return
        escaped = atom.escape_stream(name)
        self.assertFalse(set(escaped) & set("/?#$ :@&=+,;[]!'()*"))
        self.assertEqual(unquote(escaped), name)

    def test_dollar(self) -> None:
        """
        C{$} becomes C{%24}.
        """
        self.assertEqual(atom.escape_stream("$ce-user"), "%24ce-user")


class TimestampTests(SynchronousTestCase):
    """
    L{atom.format_ticks}.
    """

    def test_trailingZeros(self) -> None:
        """
        Fractions keep up to 7 digits with trailing zeros removed.
        """
        ticks = UNIX_EPOCH_TICKS + 1_513_228_198 * 10_000_000 + 8_160_790
        self.assertEqual(atom.format_ticks(ticks), "2017-12-14T05:09:58.816079Z")

    def test_noFraction(self) -> None:
        """
        Whole seconds carry no fraction.
        """
        self.assertEqual(atom.format_ticks(UNIX_EPOCH_TICKS), "1970-01-01T00:00:00Z")

    def test_zero(self) -> None:
        """
        Zero ticks is the empty-page timestamp.
        """
        self.assertEqual(atom.format_ticks(0), atom.EMPTY_UPDATED)

    @given(st.integers(1, 3_155_378_975_999_999_999))
    def test_parsesBack(self, ticks: int) -> None:
        """
        Every formatted time is ISO-8601 ending in Z with at most 7 digits.
        """
        text = atom.format_ticks(ticks)
        self.assertTrue(text.endswith("Z"))
        if "." in text:
            frac = text[text.index(".") + 1 : -1]
            self.assertTrue(1 <= len(frac) <= 7)
            self.assertFalse(frac.endswith("0"))


class EmbedTests(SynchronousTestCase):
    """
    L{atom.parse_embed}.
    """

    def test_values(self) -> None:
        """
        Known values in any case; unknown ones are none.
        """
        self.assertIs(atom.parse_embed("Body"), atom.Embed.BODY)
        self.assertIs(atom.parse_embed("TryHarder"), atom.Embed.TRYHARDER)
        self.assertIs(atom.parse_embed("PrettyBody"), atom.Embed.PRETTY)
        self.assertIs(atom.parse_embed("rich"), atom.Embed.RICH)
        self.assertIs(atom.parse_embed("content"), atom.Embed.CONTENT)
        self.assertIs(atom.parse_embed("nope"), atom.Embed.NONE)
        self.assertIs(atom.parse_embed(None), atom.Embed.NONE)


class EntryTests(SynchronousTestCase):
    """
    L{atom.entry_json}.
    """

    def test_plain(self) -> None:
        """
        A plain entry has title, id, updated, author, summary and links.
        """
        entry = atom.entry_json(ResolvedEvent(record(3)), URLS, atom.Embed.NONE)
        self.assertEqual(
            list(entry), ["title", "id", "updated", "author", "summary", "links"]
        )
        self.assertEqual(entry["title"], "3@s")
        self.assertEqual(entry["id"], "http://127.0.0.1:2113/streams/s/3")
        self.assertEqual(entry["summary"], "t")
        self.assertEqual(
            entry["links"],
            [
                {"uri": "http://127.0.0.1:2113/streams/s/3", "relation": "edit"},
                {"uri": "http://127.0.0.1:2113/streams/s/3", "relation": "alternate"},
            ],
        )

    def test_body(self) -> None:
        """
        C{embed=body} carries the data as a JSON string and the rich fields.
        """
        entry = atom.entry_json(
            ResolvedEvent(record(0, metadata=b'{"m":2}')), URLS, atom.Embed.BODY
        )
        self.assertEqual(json.loads(entry["data"]), {"a": 1})
        self.assertEqual(entry["metaData"], '{"m":2}')
        self.assertEqual(entry["eventId"], str(uuid.UUID(int=1)))
        self.assertEqual(entry["eventNumber"], 0)
        self.assertTrue(entry["isJson"])
        self.assertTrue(entry["isMetaData"])
        self.assertFalse(entry["isLinkMetaData"])
        self.assertEqual(entry["positionStreamId"], "s")
        self.assertEqual(list(entry)[0], "eventId")

    def test_bodyNonJson(self) -> None:
        """
        Non-JSON events carry no C{data} under C{body}, their text under
        C{tryharder}.
        """
        rec = record(0, data=b"hello", flags=0)
        self.assertNotIn("data", atom.entry_json(ResolvedEvent(rec), URLS, atom.Embed.BODY))
        entry = atom.entry_json(ResolvedEvent(rec), URLS, atom.Embed.TRYHARDER)
        self.assertEqual(entry["data"], "hello")
        self.assertFalse(entry["isJson"])
        rec2 = record(0, data=b'{"x": 1}', flags=0)
        entry = atom.entry_json(ResolvedEvent(rec2), URLS, atom.Embed.TRYHARDER)
        self.assertTrue(entry["isJson"])
        self.assertEqual(json.loads(entry["data"]), {"x": 1})

    def test_rich(self) -> None:
        """
        C{embed=rich} has rich fields but no C{data}.
        """
        entry = atom.entry_json(ResolvedEvent(record(0)), URLS, atom.Embed.RICH)
        self.assertNotIn("data", entry)
        self.assertIn("eventType", entry)

    def test_content(self) -> None:
        """
        With content, JSON events carry the parsed data.
        """
        entry = atom.entry_json(ResolvedEvent(record(0)), URLS, atom.Embed.NONE, True)
        self.assertEqual(entry["content"]["data"], {"a": 1})
        self.assertEqual(entry["content"]["metadata"], "")
        self.assertEqual(entry["content"]["eventStreamId"], "s")

    def test_link(self) -> None:
        """
        A resolved link points at its target; positions name the link.
        """
        target = record(5, stream="user-1")
        link = record(2, stream="$ce-user", data=b"5@user-1", flags=0, event_type="$>")
        entry = atom.entry_json(ResolvedEvent(target, link), URLS, atom.Embed.BODY)
        self.assertEqual(entry["title"], "5@user-1")
        self.assertEqual(entry["summary"], "$>")
        self.assertEqual(entry["positionEventNumber"], 2)
        self.assertEqual(entry["positionStreamId"], "$ce-user")
        self.assertEqual(entry["updated"], atom.format_ticks(link.created))


class StreamFeedTests(SynchronousTestCase):
    """
    L{atom.stream_feed} links and fields (http-api.md 5.3 examples).
    """

    def test_headBackward(self) -> None:
        """
        30 events, C{GET /streams/s}: entries 29..10 and the spec's links.
        """
        sl = stream_slice(list(range(29, 9, -1)), 29, False, False)
        page = atom.stream_feed(sl, "s", URLS, None, 20, False, atom.Embed.NONE)
        feed = page.with_entries(URLS)
        self.assertEqual([e["title"] for e in feed["entries"]][:2], ["29@s", "28@s"])
        b = "http://127.0.0.1:2113/streams/s"
        self.assertEqual(
            rels(feed),
            {
                "self": b,
                "first": b + "/head/backward/20",
                "last": b + "/0/forward/20",
                "next": b + "/9/backward/20",
                "previous": b + "/30/forward/20",
                "metadata": b + "/metadata",
            },
        )
        self.assertTrue(feed["headOfStream"])
        self.assertEqual(feed["selfUrl"], b)
        self.assertTrue(feed["eTag"].startswith("29;"))
        self.assertFalse(page.cacheable)
        self.assertEqual(feed["updated"], atom.format_ticks(record(29).created))

    def test_forwardFromZero(self) -> None:
        """
        C{0/forward/20} of 30 events: 19..0 newest first, only C{previous}.
        """
        sl = stream_slice(list(range(0, 20)), 29, False, True)
        page = atom.stream_feed(sl, "s", URLS, 0, 20, True, atom.Embed.NONE)
        feed = page.with_entries(URLS)
        self.assertEqual(feed["entries"][0]["title"], "19@s")
        self.assertEqual(feed["entries"][-1]["title"], "0@s")
        r = rels(feed)
        self.assertNotIn("last", r)
        self.assertNotIn("next", r)
        self.assertEqual(r["previous"], "http://127.0.0.1:2113/streams/s/20/forward/20")
        self.assertFalse(feed["headOfStream"])
        self.assertTrue(page.cacheable)
        self.assertNotIn("eTag", feed)
        self.assertEqual(feed["updated"], atom.format_ticks(record(0).created))

    def test_forwardAtEnd(self) -> None:
        """
        An empty forward page at the end has no C{previous} and is the head.
        """
        sl = stream_slice([], 29, True, True)
        page = atom.stream_feed(sl, "s", URLS, 30, 20, True, atom.Embed.NONE)
        self.assertNotIn("previous", rels(page.feed))
        self.assertTrue(page.feed["headOfStream"])
        self.assertFalse(page.cacheable)
        self.assertEqual(page.feed["updated"], atom.EMPTY_UPDATED)

    def test_escapedLinks(self) -> None:
        """
        Stream names are escaped in links, not in C{streamId}.
        """
        sl = StreamSlice(ReadStatus.SUCCESS, [], -1, -1, True, 0)
        feed = atom.stream_feed(sl, "$a b", URLS, None, 20, False, atom.Embed.NONE).feed
        self.assertEqual(feed["id"], "http://127.0.0.1:2113/streams/%24a%20b")
        self.assertEqual(feed["streamId"], "$a b")


class EntryCacheTests(SynchronousTestCase):
    """
    L{atom.EntryCache} and cached rendering.
    """

    @given(
        st.sampled_from(list(atom.Embed)),
        st.lists(st.integers(0, 50), max_size=8, unique=True),
    )
    def test_sameAsUncached(self, embed: atom.Embed, numbers: list[int]) -> None:
        """
        A page rendered with the cache is byte-for-byte the page rendered
        without it, twice in a row.
        """
        numbers.sort(reverse=True)
        sl = stream_slice(numbers, max(numbers, default=-1), True, False)
        page = atom.stream_feed(sl, "s", URLS, None, 20, False, embed)
        cache = atom.EntryCache(size=4)
        plain = page.render(atom.ATOM_JSON, URLS)
        self.assertEqual(page.render(atom.ATOM_JSON, URLS, cache), plain)
        self.assertEqual(page.render(atom.ATOM_JSON, URLS, cache), plain)
        self.assertEqual(json.loads(plain), json.loads(atom.dumps(page.with_entries(URLS))))

    def test_baseUrlInKey(self) -> None:
        """
        Entries rendered for another base URL are not reused.
        """
        cache = atom.EntryCache()
        ev = ResolvedEvent(record(1))
        a = cache.entry(ev, URLS, atom.Embed.NONE, False)
        b = cache.entry(ev, atom.Urls("http://other:1"), atom.Embed.NONE, False)
        self.assertIn(b"http://other:1/streams/s/1", b)
        self.assertNotEqual(a, b)


class AllFeedTests(SynchronousTestCase):
    """
    L{atom.all_feed}.
    """

    def test_backwardFull(self) -> None:
        """
        A full backward page links to older and newer pages by position.
        """
        events = [ResolvedEvent(record(n)) for n in (3, 2)]
        sl = AllSlice(ReadStatus.SUCCESS, events, 1000, 120)
        feed = atom.all_feed(sl, URLS, None, 2, False, atom.Embed.NONE, 1000).feed
        r = rels(feed)
        self.assertEqual(feed["title"], "All events")
        self.assertNotIn("streamId", feed)
        self.assertFalse(feed["headOfStream"])
        b = "http://127.0.0.1:2113/streams/%24all"
        self.assertEqual(r["next"], b + "/" + atom.encode_position(120, 120) + "/backward/2")
        self.assertEqual(r["previous"], b + "/" + atom.encode_position(140, 140) + "/forward/2")
        self.assertEqual(r["last"], b + "/" + "0" * 32 + "/forward/2")

    def test_forwardFromZero(self) -> None:
        """
        A forward page from 0 has no C{last}/C{next}; a full one is cacheable.
        """
        events = [ResolvedEvent(record(n)) for n in (0, 1)]
        sl = AllSlice(ReadStatus.SUCCESS, events, 0, 120)
        page = atom.all_feed(sl, URLS, 0, 2, True, atom.Embed.NONE, 1000)
        r = rels(page.feed)
        self.assertNotIn("last", r)
        self.assertIn("previous", r)
        self.assertEqual(page.with_entries(URLS)["entries"][0]["title"], "1@s")
        self.assertTrue(page.cacheable)


class OtherDocumentTests(SynchronousTestCase):
    """
    Description document, competing feed, single-event bodies, XML.
    """

    def test_description(self) -> None:
        """
        The description document names the stream and its groups.
        """
        doc = atom.description_document("newstream", ["g1"])
        self.assertEqual(doc["title"], "Description document for 'newstream'")
        self.assertEqual(doc["_links"]["self"]["href"], "/streams/newstream")
        self.assertEqual(
            doc["_links"]["streamSubscription"][0]["href"], "/subscriptions/newstream/g1"
        )
        self.assertNotIn("streamSubscription", atom.description_document("x")["_links"])

    def test_competing(self) -> None:
        """
        Competing feeds carry ack/nack links per entry and in total.
        """
        events = [ResolvedEvent(record(0)), ResolvedEvent(record(1))]
        feed = atom.competing_feed(events, "s", "g", URLS, 2, atom.Embed.BODY)
        ids = [str(uuid.UUID(int=2)), str(uuid.UUID(int=1))]
        r = rels(feed)
        base = "http://127.0.0.1:2113/subscriptions/s/g"
        # entries newest first; ackAll in the order handed out (as v5)
        self.assertEqual(r["ackAll"], f"{base}/ack?ids={ids[1]},{ids[0]}")
        self.assertEqual(r["previous"], f"{base}/2")
        entry = feed["entries"][0]
        self.assertEqual(rels(entry)["ack"], f"{base}/ack/{ids[0]}")
        self.assertEqual(rels(entry)["nack"], f"{base}/nack/{ids[0]}")
        empty = atom.competing_feed([], "s", "g", URLS, 1, atom.Embed.NONE)
        self.assertNotIn("ackAll", rels(empty))

    def test_singleBodies(self) -> None:
        """
        Single-event bodies per media type.
        """
        ev = ResolvedEvent(record(0, data=b'{"a":1}'))
        self.assertEqual(atom.single_event_body(ev, atom.JSON, URLS, atom.Embed.NONE), b'{"a":1}')
        body = json.loads(atom.single_event_body(ev, atom.EVENT_JSON, URLS, atom.Embed.NONE))
        self.assertEqual(body["data"], {"a": 1})
        entry = json.loads(atom.single_event_body(ev, atom.ATOM_JSON, URLS, atom.Embed.NONE))
        self.assertEqual(entry["content"]["data"], {"a": 1})
        raw = ResolvedEvent(record(0, data=b"\x00\x01", flags=0))
        self.assertEqual(
            atom.single_event_body(raw, atom.OCTET_STREAM, URLS, atom.Embed.NONE), b"\x00\x01"
        )
        text = ResolvedEvent(record(0, data=b"hi", flags=0))
        self.assertEqual(atom.single_event_body(text, atom.JSON, URLS, atom.Embed.NONE), b'"hi"')
        xml = atom.single_event_body(ev, atom.TEXT_XML, URLS, atom.Embed.NONE)
        self.assertEqual(ElementTree.fromstring(xml).findtext("a"), "1")

    def test_feedXml(self) -> None:
        """
        The XML feed is well-formed Atom with links and entries.
        """
        sl = stream_slice([1, 0], 1, True, False)
        page = atom.stream_feed(sl, "s<&>", URLS, None, 20, False, atom.Embed.CONTENT)
        feed = page.with_entries(URLS)
        root = ElementTree.fromstring(atom.feed_xml(feed))
        ns = {"a": atom.ATOM_NS}
        self.assertEqual(root.findtext("a:title", None, ns), "Event stream 's<&>'")
        self.assertEqual(len(root.findall("a:entry", ns)), 2)
        self.assertEqual(len(root.findall("a:link", ns)), len(feed["links"]))

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
            max_leaves=10,
        )
    )
    def test_jsonToXmlWellFormed(self, value: object) -> None:
        """
        Any JSON value converts to well-formed XML.
        """
        ElementTree.fromstring("<r>" + atom.json_to_xml("data", value) + "</r>")
