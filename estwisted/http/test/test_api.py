# -*- test-case-name: estwisted.http.test.test_api -*-
"""
Tests for L{estwisted.httpapi}: every route through the resource with
C{StubTreq} over a real L{StreamStore} on a L{MemoryLog} (deterministic
L{Clock}), a few over real HTTP on loopback with treq, and a hypothesis
test throwing random requests at the API.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any, Optional
from xml.etree import ElementTree

import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.http.api import HttpApi
from estwisted.http.info import NodeInfo
from estwisted.http.parsing import (
    HttpError,
    negotiate,
    parse_content_type,
    parse_events_json,
    parse_expected_version,
)
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog
from estwisted.subscriptions.persistent import PersistentSubscriptions
from estwisted.subscriptions.volatile import SubscriptionHub
from estwisted.wire import atom

BASE = "http://127.0.0.1:2113"
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:changeit").decode()}
OPS = {"Authorization": "Basic " + base64.b64encode(b"ops:changeit").decode()}
EVENTS = "application/vnd.eventstore.events+json"
ATOM_JSON = "application/vnd.eventstore.atom+json"


def events_body(*items: tuple[str, Any], event_type: str = "t") -> bytes:
    return json.dumps(
        [{"eventId": eid, "eventType": event_type, "data": data} for eid, data in items]
    ).encode()


def new_id() -> str:
    return str(uuid.uuid4())


class Reply:
    """
    A finished response: code, phrase, headers and body.
    """

    def __init__(self, response: Any, body: bytes) -> None:
        self.code: int = response.code
        self.phrase: bytes = response.phrase
        self.headers = response.headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def make_node(
    clock: Clock, node_info: Optional[NodeInfo] = None
) -> tuple[StreamStore, PersistentSubscriptions, HttpApi]:
    store = StreamStore(MemoryLog(), StreamIndex(), clock)
    users = UserManager(store, iterations=10)
    users.ensure_default_users()
    for _ in range(5):
        clock.advance(0)
    persistent = PersistentSubscriptions(store, clock)
    persistent.start()
    api = HttpApi(
        store, SubscriptionHub(store), persistent, clock, node_info or NodeInfo(), users=users
    )
    return store, persistent, api


class ApiTestMixin:
    """
    A node over a Clock and a C{StubTreq} client.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.shutdowns: list[int] = []
        info = NodeInfo(shutdown=lambda: self.shutdowns.append(1))
        self.store, self.persistent, self.api = make_node(self.clock, info)
        self.stub = StubTreq(self.api.resource())

    def start(self, method: str, path: str, headers: Optional[dict[str, str]] = None,
              body: bytes = b"") -> Deferred[Any]:
        d: Deferred[Any] = self.stub.request(  # type: ignore[attr-defined]
            method, BASE + path, headers=headers or {}, data=body or None,
            allow_redirects=False,
        )
        self.pump()
        return d

    def pump(self) -> None:
        for _ in range(4):
            self.stub.flush()
            self.clock.advance(0)

    def finish(self, d: Deferred[Any]) -> Reply:
        self.pump()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        content = treq.content(response)
        self.stub.flush()
        return Reply(response, self.successResultOf(content))  # type: ignore[attr-defined]

    def request(self, method: str, path: str, headers: Optional[dict[str, str]] = None,
                body: bytes = b"") -> Reply:
        return self.finish(self.start(method, path, headers, body))

    def write(self, stream: str, *datas: Any, expected: Optional[int] = None,
              event_type: str = "t") -> Reply:
        headers = {**ADMIN, "Content-Type": EVENTS}
        if expected is not None:
            headers["ES-ExpectedVersion"] = str(expected)
        body = events_body(*[(new_id(), d) for d in datas], event_type=event_type)
        return self.request("POST", f"/streams/{stream}", headers, body)

    def get(self, path: str, accept: str = "application/json", **extra: str) -> Reply:
        return self.request("GET", path, {**ADMIN, "Accept": accept, **extra})


class WriteTests(ApiTestMixin, SynchronousTestCase):
    """
    C{POST /streams/{stream}} and friends (http-api.md 4).
    """

    def test_writeEvents(self) -> None:
        """
        An events+json array is appended: 201, Location of the first event.
        """
        reply = self.write("orders", {"a": 1}, {"a": 2})
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.header("Location"), BASE + "/streams/orders/0")
        self.assertEqual(reply.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(reply.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(self.store.last_event_number("orders"), 1)
        reply = self.write("orders", {"a": 3})
        self.assertEqual(reply.header("Location"), BASE + "/streams/orders/2")

    def test_escapedLocation(self) -> None:
        """
        Stream names are percent-decoded from the URL and escaped again in
        Location.
        """
        reply = self.write("a%20b", {"x": 1})
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.header("Location"), BASE + "/streams/a%20b/0")
        self.assertEqual(self.store.last_event_number("a b"), 0)

    def test_encodedNamesDecodedOnce(self) -> None:
        """
        An encoded C{/} stays inside the stream name and C{%25} is decoded
        once, on the lean routes and the Klein routes alike.
        """
        self.assertEqual(self.write("a%2Fb", {"x": 1}).code, 201)
        self.assertEqual(self.store.last_event_number("a/b"), 0)
        self.assertEqual(self.write("p%2524", {"x": 1}).code, 201)
        self.assertEqual(self.store.last_event_number("p%24"), 0)
        feed = self.get("/streams/a%2Fb", ATOM_JSON).json()
        self.assertEqual(feed["streamId"], "a/b")
        self.assertEqual(feed["id"], BASE + "/streams/a%2Fb")
        self.assertEqual(self.get("/streams/p%2524", ATOM_JSON).json()["streamId"], "p%24")
        self.assertEqual(self.get("/streams/a%2Fb/metadata").code, 200)

    def test_wrongExpectedVersion(self) -> None:
        """
        A wrong ES-ExpectedVersion gives 400 with ES-CurrentVersion.
        """
        self.write("s", {"a": 1})
        reply = self.write("s", {"a": 2}, expected=5)
        self.assertEqual(reply.code, 400)
        self.assertEqual(reply.phrase, b"Wrong expected EventNumber")
        self.assertEqual(reply.header("ES-CurrentVersion"), "0")
        self.assertEqual(self.store.last_event_number("s"), 0)
        self.assertEqual(self.write("s", {"a": 2}, expected=0).code, 201)

    def test_badExpectedVersion(self) -> None:
        """
        A non-integer ES-ExpectedVersion is a 400 with an explanation.
        """
        headers = {**ADMIN, "Content-Type": EVENTS, "ES-ExpectedVersion": "abc"}
        reply = self.request("POST", "/streams/s", headers, events_body((new_id(), {})))
        self.assertEqual(reply.code, 400)
        self.assertEqual(reply.phrase, b"ES-ExpectedVersion header in wrong format.")
        self.assertEqual(self.store.last_event_number("s"), -1)

    def test_idempotent(self) -> None:
        """
        Writing the same event id twice stores it once.
        """
        eid = new_id()
        headers = {**ADMIN, "Content-Type": EVENTS}
        for _ in range(2):
            reply = self.request("POST", "/streams/s", headers, events_body((eid, {"a": 1})))
            self.assertEqual(reply.code, 201)
        self.assertEqual(self.store.last_event_number("s"), 0)

    def test_redirectWithoutEventId(self) -> None:
        """
        A raw application/json event without ES-EventId is redirected to an
        idempotent URI; posting there writes it once, however often.
        """
        headers = {**ADMIN, "Content-Type": "application/json", "ES-EventType": "raw"}
        reply = self.request("POST", "/streams/s", headers, b'{"x": 1}')
        self.assertEqual(reply.code, 307)
        self.assertEqual(reply.body, b"Forwarding to idempotent URI")
        location = reply.header("Location")
        assert location is not None
        self.assertTrue(location.startswith(BASE + "/streams/s/incoming/"))
        self.assertEqual(self.store.last_event_number("s"), -1)
        path = location[len(BASE):]
        for _ in range(2):
            reply = self.request("POST", path, headers, b'{"x": 1}')
            self.assertEqual(reply.code, 201)
        self.assertEqual(self.store.last_event_number("s"), 0)
        data = self.get("/streams/s/0").json()
        self.assertEqual(data, {"x": 1})

    def test_rawWithEventId(self) -> None:
        """
        Raw JSON with ES-EventId and ES-EventType is written directly.
        """
        headers = {
            **ADMIN,
            "Content-Type": "application/json",
            "ES-EventType": "raw",
            "ES-EventId": new_id(),
        }
        self.assertEqual(self.request("POST", "/streams/s", headers, b'{"x":2}').code, 201)
        entry = self.get("/streams/s/0", ATOM_JSON).json()
        self.assertEqual(entry["content"]["eventType"], "raw")
        self.assertEqual(entry["content"]["data"], {"x": 2})

    def test_octetStream(self) -> None:
        """
        Binary events round-trip through application/octet-stream.
        """
        headers = {
            **ADMIN,
            "Content-Type": "application/octet-stream",
            "ES-EventType": "bin",
            "ES-EventId": new_id(),
        }
        self.assertEqual(self.request("POST", "/streams/b", headers, b"\x00\xff").code, 201)
        reply = self.get("/streams/b/0", "application/octet-stream")
        self.assertEqual(reply.body, b"\x00\xff")

    def test_eventsXml(self) -> None:
        """
        An events+xml body is written; child elements of C{data} become
        JSON.
        """
        eid = new_id()
        body = (
            f"<Events><event><eventId>{eid}</eventId><eventType>x</eventType>"
            f"<data><a>1</a><b>two</b></data></event></Events>"
        ).encode()
        headers = {**ADMIN, "Content-Type": "application/vnd.eventstore.events+xml"}
        self.assertEqual(self.request("POST", "/streams/x", headers, body).code, 201)
        self.assertEqual(self.get("/streams/x/0").json(), {"a": "1", "b": "two"})
        bad = self.request("POST", "/streams/x", headers, b"<Events><event>")
        self.assertEqual(bad.code, 400)

    def test_atomJsonNeedsHeaders(self) -> None:
        """
        An atom+json write needs ES-EventType and is redirected without
        ES-EventId (v5 treats it as carrying neither).
        """
        headers = {**ADMIN, "Content-Type": ATOM_JSON}
        body = events_body((new_id(), {"a": 1}))
        self.assertEqual(self.request("POST", "/streams/y", headers, body).code, 400)
        headers["ES-EventType"] = "t"
        self.assertEqual(self.request("POST", "/streams/y", headers, body).code, 307)
        headers["ES-EventId"] = new_id()
        self.assertEqual(self.request("POST", "/streams/y", headers, body).code, 201)
        self.assertEqual(self.store.last_event_number("y"), 0)

    def test_missingEventType(self) -> None:
        """
        Raw bodies need ES-EventType.
        """
        headers = {**ADMIN, "Content-Type": "application/json"}
        reply = self.request("POST", "/streams/s", headers, b"{}")
        self.assertEqual(reply.code, 400)
        self.assertIn(b"event type", reply.phrase)

    def test_contentTypes(self) -> None:
        """
        Missing or unknown Content-Type gives 415; a charset other than
        UTF-8 too.
        """
        body = events_body((new_id(), {}))
        for ct in (None, "text/csv", EVENTS + "; charset=latin-1"):
            headers = dict(ADMIN)
            if ct is not None:
                headers["Content-Type"] = ct
            reply = self.request("POST", "/streams/s", headers, body)
            self.assertEqual(reply.code, 415, ct)
        headers = {**ADMIN, "Content-Type": EVENTS + "; charset=utf-8"}
        self.assertEqual(self.request("POST", "/streams/s", headers, body).code, 201)

    def test_badBodies(self) -> None:
        """
        Malformed bodies are 400 with the spec's explanation, nothing written.
        """
        headers = {**ADMIN, "Content-Type": EVENTS}
        cases = [
            (b"{not json", b"Write request body invalid."),
            (b"[]", b"Write request body invalid."),
            (b'{"a": 1}', b"Write request body invalid."),
            (b'[{"eventType": "t"}]', b"Empty eventId provided."),
            (json.dumps([{"eventId": new_id()}]).encode(), b"Empty eventType provided."),
            (b'[{"eventId": "nope", "eventType": "t"}]', b"Write request body invalid."),
        ]
        for body, phrase in cases:
            reply = self.request("POST", "/streams/s", headers, body)
            self.assertEqual((reply.code, reply.phrase), (400, phrase), body)
        self.assertEqual(self.store.last_event_number("s"), -1)

    def test_tooLargeEvent(self) -> None:
        """
        An event over 4 MiB is refused with 413.
        """
        big = "x" * (4 * 1024 * 1024 + 1)
        headers = {**ADMIN, "Content-Type": EVENTS}
        reply = self.request("POST", "/streams/s", headers, events_body((new_id(), big)))
        self.assertEqual(reply.code, 413)
        self.assertEqual(self.store.last_event_number("s"), -1)

    def test_timeout(self) -> None:
        """
        A write the store does not confirm within 10 s is answered with
        408, nothing logged as an error.
        """
        stalled: Deferred[Any] = Deferred()
        self.patch(self.store, "append", lambda *args: stalled)
        d = self.start(
            "POST", "/streams/s", {**ADMIN, "Content-Type": EVENTS}, events_body((new_id(), {}))
        )
        self.clock.advance(9)
        self.assertNoResult(d)
        self.clock.advance(1)
        reply = self.finish(d)
        self.assertEqual(reply.code, 408)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_anonymousRefused(self) -> None:
        """
        Stream routes need an authenticated user (5.0.2+): 401 with
        C{WWW-Authenticate: BasicCustom}.
        """
        reply = self.request(
            "POST", "/streams/s", {"Content-Type": EVENTS}, events_body((new_id(), {}))
        )
        self.assertEqual(reply.code, 401)
        self.assertEqual(reply.header("WWW-Authenticate"), 'BasicCustom realm="ES"')
        self.assertEqual(self.store.last_event_number("s"), -1)

    def test_badCredentials(self) -> None:
        """
        Wrong passwords and malformed Authorization headers are 401.
        """
        for auth in (
            "Basic " + base64.b64encode(b"admin:wrong").decode(),
            "Basic !!!",
            "Basic " + base64.b64encode(b"nocolon").decode(),
            "Bearer x",
        ):
            reply = self.request("GET", "/ping", {"Authorization": auth})
            self.assertEqual(reply.code, 401, auth)
            unknown = self.request("GET", "/no/such/route", {"Authorization": auth})
            self.assertEqual(unknown.code, 401, auth)

    def test_dataAsString(self) -> None:
        """
        A JSON string holding JSON is stored as JSON; other strings as text.
        """
        self.write("s", '{"k": 1}', "plain")
        entries = self.get("/streams/s/0/forward/2?embed=body").json()["entries"]
        self.assertEqual(json.loads(entries[1]["data"]), {"k": 1})
        self.assertTrue(entries[1]["isJson"])
        self.assertFalse(entries[0]["isJson"])
        self.assertEqual(self.get("/streams/s/1").json(), "plain")


class ReadTests(ApiTestMixin, SynchronousTestCase):
    """
    Single events and feeds (http-api.md 5).
    """

    def test_singleEventFormats(self) -> None:
        """
        application/json gives the data; atom+json an entry with content;
        event+json the envelope; XML types XML.
        """
        self.write("s", {"a": 1})
        self.assertEqual(self.get("/streams/s/0").json(), {"a": 1})
        entry = self.get("/streams/s/0", ATOM_JSON).json()
        self.assertEqual(entry["title"], "0@s")
        self.assertEqual(entry["content"]["data"], {"a": 1})
        env = self.get("/streams/s/0", "application/vnd.eventstore.event+json").json()
        self.assertEqual(env["eventStreamId"], "s")
        self.assertEqual(env["eventNumber"], 0)
        xml = self.get("/streams/s/0", "application/atom+xml")
        self.assertEqual(xml.header("Content-Type"), "application/atom+xml; charset=utf-8")
        root = ElementTree.fromstring(xml.body)
        self.assertEqual(root.findtext(f"{{{atom.ATOM_NS}}}title"), "0@s")

    def test_singleEventCaching(self) -> None:
        """
        Numbered events are cacheable forever; head has an ETag and can be
        revalidated with If-None-Match.
        """
        self.write("s", {"a": 1})
        numbered = self.get("/streams/s/0")
        self.assertEqual(numbered.header("Cache-Control"), "max-age=31536000, public")
        self.assertEqual(numbered.header("Vary"), "Accept")
        head = self.get("/streams/s/head")
        self.assertEqual(head.header("Cache-Control"), "max-age=0, no-cache, must-revalidate")
        etag = head.header("ETag")
        assert etag is not None
        self.assertTrue(etag.startswith('"0;'))
        again = self.get("/streams/s/head", **{"If-None-Match": etag})
        self.assertEqual(again.code, 304)
        self.write("s", {"a": 2})
        self.assertEqual(self.get("/streams/s/head", **{"If-None-Match": etag}).code, 200)

    def test_cacheControlMetadata(self) -> None:
        """
        C{$cacheControl} in the metadata sets max-age on head pages.
        """
        self.write("cc", {"a": 1})
        headers = {**ADMIN, "Content-Type": "application/json", "ES-EventId": new_id()}
        self.request("POST", "/streams/cc/metadata", headers, b'{"$cacheControl": 30}')
        self.assertEqual(self.get("/streams/cc").header("Cache-Control"), "max-age=30, public")
        self.assertEqual(
            self.get("/streams/cc/head").header("Cache-Control"), "max-age=30, public"
        )

    def test_privateCaching(self) -> None:
        """
        Pages of streams anonymous callers cannot read are cached privately.
        """
        self.write("%24sys", {"a": 1}, {"a": 2})
        reply = self.get("/streams/%24sys/0")
        self.assertEqual(reply.header("Cache-Control"), "max-age=31536000, private")
        page = self.get("/streams/%24sys/0/forward/2")
        self.assertEqual(page.header("Cache-Control"), "max-age=31536000, private")

    def test_notFound(self) -> None:
        """
        Missing streams and events are 404; bad event numbers 400.
        """
        self.assertEqual(self.get("/streams/none/0").code, 404)
        self.assertEqual(self.get("/streams/none").code, 404)
        self.write("s", {"a": 1})
        self.assertEqual(self.get("/streams/s/7").code, 404)
        bad = self.get("/streams/s/x1")
        self.assertEqual((bad.code, bad.phrase), (400, b"'x1' is not valid event number"))

    def test_feedHead(self) -> None:
        """
        C{GET /streams/s} with 30 events: the newest 20 and the spec's links.
        """
        self.write("s", *[{"n": i} for i in range(30)])
        reply = self.get("/streams/s", ATOM_JSON)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), ATOM_JSON + "; charset=utf-8")
        self.assertEqual(reply.header("Cache-Control"), "max-age=0, no-cache, must-revalidate")
        feed = reply.json()
        self.assertTrue(feed["headOfStream"])
        self.assertEqual([e["title"] for e in feed["entries"]][0], "29@s")
        self.assertEqual(len(feed["entries"]), 20)
        links = {link["relation"]: link["uri"] for link in feed["links"]}
        self.assertEqual(links["next"], BASE + "/streams/s/9/backward/20")
        self.assertEqual(links["previous"], BASE + "/streams/s/30/forward/20")
        self.assertEqual(links["last"], BASE + "/streams/s/0/forward/20")

    def test_forwardPaging(self) -> None:
        """
        Following C{previous} links forward reads every event once, and the
        last page has headOfStream true.
        """
        self.write("s", *[{"n": i} for i in range(25)])
        url: Optional[str] = "/streams/s/0/forward/10?embed=body"
        seen: list[int] = []
        for _ in range(10):
            assert url is not None
            feed = self.get(url).json()
            seen.extend(json.loads(e["data"])["n"] for e in reversed(feed["entries"]))
            if feed["headOfStream"]:
                break
            links = {link["relation"]: link["uri"] for link in feed["links"]}
            url = links["previous"][len(BASE):] + "?embed=body"
        self.assertEqual(seen, list(range(25)))
        full = self.get("/streams/s/0/forward/10")
        self.assertEqual(full.header("Cache-Control"), "max-age=31536000, public")

    def test_backwardPage(self) -> None:
        """
        A numbered backward page is cacheable and ordered newest first.
        """
        self.write("s", *[{"n": i} for i in range(5)])
        reply = self.get("/streams/s/3/backward/2")
        self.assertEqual([e["title"] for e in reply.json()["entries"]], ["3@s", "2@s"])
        self.assertEqual(reply.header("Cache-Control"), "max-age=31536000, public")
        short = self.get("/streams/s/4/2")
        self.assertEqual([e["title"] for e in short.json()["entries"]], ["4@s", "3@s"])

    def test_feedXml(self) -> None:
        """
        Feeds in application/atom+xml are Atom documents.
        """
        self.write("s", {"a": 1})
        reply = self.get("/streams/s", "application/atom+xml")
        root = ElementTree.fromstring(reply.body)
        self.assertEqual(root.tag, f"{{{atom.ATOM_NS}}}feed")
        self.assertEqual(len(root.findall(f"{{{atom.ATOM_NS}}}entry")), 1)

    def test_descriptionDocument(self) -> None:
        """
        C{*/*} and no Accept get 406 with the description document; asking
        for it explicitly gets 200.
        """
        self.write("s", {"a": 1})
        star = self.get("/streams/s", "*/*")
        self.assertEqual((star.code, star.phrase), (406, b"Description Document"))
        self.assertEqual(star.json()["title"], "Description document for 's'")
        none = self.request("GET", "/streams/s", ADMIN)
        self.assertEqual(none.code, 406)
        self.assertEqual(
            none.phrase, b"We are unable to represent the stream in the format requested."
        )
        explicit = self.get("/streams/s", atom.STREAMDESC_JSON)
        self.assertEqual(explicit.code, 200)
        self.assertEqual(explicit.header("Content-Type"), atom.STREAMDESC_JSON + "; charset=utf-8")
        self.assertEqual(self.get("/streams/s", "image/png").code, 406)

    def test_badFeedParameters(self) -> None:
        """
        Bad counts and starts are 400 with the spec's wording.
        """
        self.write("s", {"a": 1})
        reply = self.get("/streams/s/0/forward/0")
        self.assertEqual(reply.phrase, b"'0' is not valid count. Should be positive integer")
        self.assertEqual(self.get("/streams/s/0/forward/5000").code, 400)
        self.assertEqual(self.get("/streams/s/head/forward/5").code, 400)
        self.assertEqual(self.get("/streams/s/0/sideways/5").code, 404)

    def test_resolveLinkTosHeader(self) -> None:
        """
        ES-ResolveLinkTos must be True or False.
        """
        self.write("s", {"a": 1})
        self.assertEqual(self.get("/streams/s/0", **{"ES-ResolveLinkTos": "maybe"}).code, 400)
        self.assertEqual(self.get("/streams/s/0", **{"ES-ResolveLinkTos": "false"}).code, 200)

    def test_allFeed(self) -> None:
        """
        C{$all} reads need an admin; pages link by 32-hex positions.
        """
        self.write("s", {"a": 1}, {"a": 2})
        reply = self.get("/streams/%24all", ATOM_JSON)
        self.assertEqual(reply.code, 200)
        feed = reply.json()
        self.assertEqual(feed["title"], "All events")
        self.assertIn("1@s", [e["title"] for e in feed["entries"]])
        forward = self.get("/streams/$all/" + "0" * 32 + "/forward/5", ATOM_JSON).json()
        self.assertEqual(forward["entries"][-1]["title"].split("@")[0].isdigit(), True)
        ops = self.request("GET", "/streams/%24all", {**OPS, "Accept": ATOM_JSON})
        self.assertEqual(ops.code, 401)
        bad = self.get("/streams/$all/xyz/forward/5")
        self.assertEqual((bad.code, bad.phrase), (400, b"Invalid position argument: xyz"))


class LeanPathTests(ApiTestMixin, SynchronousTestCase):
    """
    The lean path of L{ApiRoot} answers exactly as the Klein routes do.
    """

    def test_sameAnswers(self) -> None:
        """
        Hot routes give the same status, headers and body either way.
        """
        self.write("s", *[{"n": i} for i in range(5)])
        klein = StubTreq(self.api.app.resource())
        cases = [
            ("GET", "/streams/s/0", "application/json"),
            ("GET", "/streams/s/head", ATOM_JSON),
            ("GET", "/streams/s/9", "application/json"),
            ("GET", "/streams/s/0/forward/3", ATOM_JSON),
            ("GET", "/streams/s/head/backward/2", "application/atom+xml"),
            ("GET", "/streams/s/4/2", ATOM_JSON),
            ("GET", "/streams/s/x/forward/2", ATOM_JSON),
            ("GET", "/streams/s", ATOM_JSON),
            ("GET", "/streams/s", "*/*"),
            ("POST", "/streams/s", "application/json"),
        ]
        for method, path, accept in cases:
            headers = {**ADMIN, "Accept": accept}
            lean = self.request(method, path, headers)
            d = klein.request(method, BASE + path, headers=headers)  # type: ignore[attr-defined]
            klein.flush()
            response = self.successResultOf(d)
            body = self.successResultOf(treq.content(response))
            self.assertEqual((lean.code, lean.phrase), (response.code, response.phrase), path)
            self.assertEqual(lean.body, body, path)
            for name in ("Content-Type", "Cache-Control", "ETag", "Content-Length"):
                self.assertEqual(
                    lean.headers.getRawHeaders(name), response.headers.getRawHeaders(name), name
                )


class PageCacheTests(ApiTestMixin, SynchronousTestCase):
    """
    Rendered feed pages are reused only while they cannot have changed.
    """

    def set_metadata(self, stream: str, metadata: dict[str, Any]) -> None:
        headers = {**ADMIN, "Content-Type": "application/json", "ES-EventId": new_id()}
        reply = self.request(
            "POST", f"/streams/{stream}/metadata", headers, json.dumps(metadata).encode()
        )
        self.assertEqual(reply.code, 201)

    def titles(self, path: str, headers: Optional[dict[str, str]] = None) -> list[str]:
        reply = self.request("GET", path, {**ADMIN, "Accept": ATOM_JSON, **(headers or {})})
        self.assertEqual(reply.code, 200)
        return [e["title"] for e in reply.json()["entries"]]

    def test_newEventsShow(self) -> None:
        """
        A cached head page is not served after a write.
        """
        self.write("s", {"a": 1})
        self.assertEqual(self.titles("/streams/s"), ["0@s"])
        self.assertEqual(self.titles("/streams/s"), ["0@s"])
        self.assertTrue(self.api._pages)
        self.write("s", {"a": 2})
        self.assertEqual(self.titles("/streams/s"), ["1@s", "0@s"])

    def test_deletesAndTruncation(self) -> None:
        """
        Soft deletes and $tb metadata take effect at once.
        """
        self.write("s", {"a": 1}, {"a": 2})
        self.assertEqual(self.titles("/streams/s/0/forward/5"), ["1@s", "0@s"])
        self.set_metadata("s", {"$tb": 1})
        self.assertEqual(self.titles("/streams/s/0/forward/5"), ["1@s"])
        self.request("DELETE", "/streams/s", ADMIN)
        self.assertEqual(self.get("/streams/s/0/forward/5", ATOM_JSON).code, 404)

    def test_aclCheckedOnHits(self) -> None:
        """
        A page cached for an admin is refused to a caller without read
        access.
        """
        self.write("secret", {"a": 1})
        self.set_metadata("secret", {"$acl": {"$r": "$admins"}})
        self.assertEqual(self.titles("/streams/secret"), ["0@secret"])
        self.assertEqual(self.titles("/streams/secret"), ["0@secret"])
        denied = self.request("GET", "/streams/secret", {**OPS, "Accept": ATOM_JSON})
        self.assertEqual(denied.code, 401)

    def test_maxAgeNotCached(self) -> None:
        """
        Streams with $maxAge are never served from the cache (events age
        out without any write).
        """
        self.write("aging", {"a": 1})
        self.set_metadata("aging", {"$maxAge": 60})
        self.api._pages.clear()
        self.titles("/streams/aging")
        self.assertEqual(self.api._pages, {})

    def test_linksNotCached(self) -> None:
        """
        Pages holding links are not cached (their targets may change).
        """
        self.write("target", {"a": 1})
        headers = {
            **ADMIN,
            "Content-Type": "application/octet-stream",
            "ES-EventType": "$>",
            "ES-EventId": new_id(),
        }
        self.request("POST", "/streams/links", headers, b"0@target")
        self.api._pages.clear()
        self.assertEqual(self.titles("/streams/links"), ["0@target"])
        self.assertEqual(self.api._pages, {})
        self.request("DELETE", "/streams/target", {**ADMIN, "ES-HardDelete": "true"})
        self.assertNotEqual(self.titles("/streams/links"), ["0@target"])


class LongPollTests(ApiTestMixin, SynchronousTestCase):
    """
    C{ES-LongPoll} on forward feeds.
    """

    def test_wokenByWrite(self) -> None:
        """
        A forward read at the end waits until an event arrives.
        """
        self.write("s", {"a": 1})
        d = self.start("GET", "/streams/s/1/forward/5", {
            **ADMIN, "Accept": "application/json", "ES-LongPoll": "10"})
        self.assertNoResult(d)
        self.write("other", {"b": 1})
        self.assertNoResult(d)
        self.write("s", {"a": 2})
        reply = self.finish(d)
        self.assertEqual([e["title"] for e in reply.json()["entries"]], ["1@s"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """
        With no event the reply comes after N seconds, an empty page.
        """
        self.write("s", {"a": 1})
        d = self.start("GET", "/streams/s/1/forward/5", {
            **ADMIN, "Accept": "application/json", "ES-LongPoll": "3"})
        self.clock.advance(2)
        self.assertNoResult(d)
        self.clock.advance(1)
        reply = self.finish(d)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["entries"], [])

    def test_allStream(self) -> None:
        """
        C{$all} long polls wake on any commit.
        """
        self.write("s", {"a": 1})
        head = self.get("/streams/%24all/head/backward/1").json()
        links = {link["relation"]: link["uri"] for link in head["links"]}
        d = self.start("GET", links["previous"][len(BASE):], {
            **ADMIN, "Accept": "application/json", "ES-LongPoll": "10"})
        self.assertNoResult(d)
        self.write("t", {"x": 1})
        entries = self.finish(d).json()["entries"]
        self.assertEqual(entries[-1]["title"], "0@t")

    def test_badHeader(self) -> None:
        """
        A non-numeric ES-LongPoll is 400.
        """
        reply = self.get("/streams/s/0/forward/5", **{"ES-LongPoll": "soon"})
        self.assertEqual(reply.code, 400)


class DeleteAndMetadataTests(ApiTestMixin, SynchronousTestCase):
    """
    Deletes (http-api.md 6) and metadata (7).
    """

    def test_softDelete(self) -> None:
        """
        Soft delete: 204, reads 404, writes re-create it.
        """
        self.write("s", {"a": 1})
        reply = self.request("DELETE", "/streams/s", ADMIN)
        self.assertEqual((reply.code, reply.phrase), (204, b"Stream deleted"))
        self.assertEqual(self.get("/streams/s").code, 404)
        self.assertEqual(self.write("s", {"a": 2}).code, 201)
        self.assertEqual(self.get("/streams/s/1").json(), {"a": 2})

    def test_hardDelete(self) -> None:
        """
        Hard delete: reads and writes are 410 afterwards.
        """
        self.write("s", {"a": 1})
        reply = self.request("DELETE", "/streams/s", {**ADMIN, "ES-HardDelete": "true"})
        self.assertEqual(reply.code, 204)
        self.assertEqual(self.get("/streams/s").code, 410)
        self.assertEqual(self.get("/streams/s/0").code, 410)
        self.assertEqual(self.write("s", {"a": 2}).code, 410)
        self.assertEqual(self.request("DELETE", "/streams/s", ADMIN).code, 410)

    def test_deleteWrongVersion(self) -> None:
        """
        Deleting with a wrong expected version is 400 without
        ES-CurrentVersion.
        """
        self.write("s", {"a": 1})
        reply = self.request("DELETE", "/streams/s", {**ADMIN, "ES-ExpectedVersion": "7"})
        self.assertEqual(reply.code, 400)
        self.assertIsNone(reply.header("ES-CurrentVersion"))
        bad = self.request("DELETE", "/streams/s", {**ADMIN, "ES-HardDelete": "yes"})
        self.assertEqual(bad.code, 400)
        self.assertEqual(self.store.last_event_number("s"), 0)

    def test_metadataRoundTrip(self) -> None:
        """
        Metadata written as raw JSON with ES-EventId reads back.
        """
        self.write("s", {"a": 1})
        self.assertEqual(self.get("/streams/s/metadata").json(), {})
        meta = {"$maxCount": 100, "custom": "x"}
        headers = {**ADMIN, "Content-Type": "application/json", "ES-EventId": new_id()}
        reply = self.request("POST", "/streams/s/metadata", headers, json.dumps(meta).encode())
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.header("Location"), BASE + "/streams/%24%24s/0")
        self.assertEqual(self.get("/streams/s/metadata").json(), meta)
        entry = self.get("/streams/s/metadata", ATOM_JSON).json()
        self.assertEqual(entry["content"]["data"], meta)

    def test_metadataEventsJson(self) -> None:
        """
        Metadata written as an events+json array reads back.
        """
        body = json.dumps(
            [{"eventId": new_id(), "eventType": "$user-updated", "data": {"$maxAge": 60}}]
        ).encode()
        headers = {**ADMIN, "Content-Type": EVENTS}
        self.assertEqual(self.request("POST", "/streams/m/metadata", headers, body).code, 201)
        self.assertEqual(self.get("/streams/m/metadata").json(), {"$maxAge": 60})

    def test_metadataErrors(self) -> None:
        """
        Raw metadata needs ES-EventId; other event types are refused;
        unknown streams are 404.
        """
        headers = {**ADMIN, "Content-Type": "application/json"}
        reply = self.request("POST", "/streams/s/metadata", headers, b"{}")
        self.assertEqual((reply.code, reply.phrase), (400, b"Empty eventId provided."))
        headers["ES-EventType"] = "other"
        headers["ES-EventId"] = new_id()
        self.assertEqual(self.request("POST", "/streams/s/metadata", headers, b"{}").code, 400)
        self.assertEqual(self.get("/streams/never/metadata").code, 404)
        self.assertEqual(self.store.last_event_number("$$s"), -1)


class SubscriptionTests(ApiTestMixin, SynchronousTestCase):
    """
    Persistent subscriptions over HTTP (http-api.md 8).
    """

    def create(self, stream: str = "s", group: str = "g", body: Any = None) -> Reply:
        headers = {**ADMIN, "Content-Type": "application/json"}
        return self.request(
            "PUT", f"/subscriptions/{stream}/{group}", headers, json.dumps(body or {}).encode()
        )

    def test_lifecycle(self) -> None:
        """
        Create, list, read messages, ack, nack, info, delete.
        """
        reply = self.create()
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.header("Location"), BASE + "/subscriptions/s/g")
        self.assertEqual(self.create().code, 409)
        self.write("s", {"n": 0}, {"n": 1}, {"n": 2})
        listed = self.get("/subscriptions").json()
        self.assertEqual([(g["eventStreamId"], g["groupName"]) for g in listed], [("s", "g")])
        self.assertEqual(self.get("/subscriptions/s").code, 200)
        self.assertEqual(self.get("/subscriptions/nope").code, 404)
        competing = atom.COMPETING_JSON
        reply = self.get("/subscriptions/s/g/2?embed=body", competing)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), competing + "; charset=utf-8")
        feed = reply.json()
        self.assertEqual(len(feed["entries"]), 2)
        self.assertEqual(feed["title"], "Messages for 's/g'")
        links = {link["relation"]: link["uri"] for link in feed["entries"][0]["links"]}
        ack = self.request("POST", links["ack"][len(BASE):], ADMIN)
        self.assertEqual(ack.code, 202)
        nack = self.request("POST", links["nack"][len(BASE):] + "?action=park", ADMIN)
        self.assertEqual(nack.code, 202)
        all_links = {link["relation"]: link["uri"] for link in feed["links"]}
        self.assertEqual(self.request("POST", all_links["ackAll"][len(BASE):], ADMIN).code, 202)
        info = self.get("/subscriptions/s/g/info").json()
        self.assertEqual(info["groupName"], "g")
        self.assertEqual(info["config"]["namedConsumerStrategy"], "RoundRobin")
        self.assertEqual(self.request("POST", "/subscriptions/s/g/replayParked", ADMIN).code, 200)
        self.assertEqual(self.request("DELETE", "/subscriptions/s/g", ADMIN).code, 200)
        self.assertEqual(self.request("DELETE", "/subscriptions/s/g", ADMIN).code, 404)
        self.assertEqual(self.get("/subscriptions/s/g/info").code, 404)

    def test_update(self) -> None:
        """
        POST updates an existing group; a missing one is 404.
        """
        self.create(body={"maxRetryCount": 3})
        headers = {**ADMIN, "Content-Type": "application/json"}
        reply = self.request("POST", "/subscriptions/s/g", headers, b'{"maxRetryCount": 5}')
        self.assertEqual(reply.code, 200)
        self.assertEqual(self.get("/subscriptions/s/g/info").json()["config"]["maxRetryCount"], 5)
        self.assertEqual(self.request("POST", "/subscriptions/s/x", headers, b"{}").code, 404)

    def test_validation(self) -> None:
        """
        Bad settings, counts and ids are 400; anonymous create is 401.
        """
        self.assertEqual(self.create(body={"bufferSize": 5, "readBatchSize": 10}).code, 400)
        self.assertEqual(self.create(body={"namedConsumerStrategy": "Nope"}).code, 400)
        reply = self.request(
            "PUT", "/subscriptions/s/g", {"Content-Type": "application/json"}, b"{}"
        )
        self.assertEqual(reply.code, 401)
        self.create()
        self.assertEqual(self.get("/subscriptions/s/g/101", atom.COMPETING_JSON).code, 400)
        self.assertEqual(self.get("/subscriptions/s/g/1", "application/json").code, 406)
        bad = self.request("POST", "/subscriptions/s/g/ack/not-a-guid", ADMIN)
        self.assertEqual(
            (bad.code, bad.phrase), (400, b"messageid should be a properly formed guid")
        )

    def test_descriptionListsGroups(self) -> None:
        """
        The description document lists the stream's groups.
        """
        self.create()
        doc = self.get("/streams/s", atom.STREAMDESC_JSON).json()
        self.assertEqual(doc["_links"]["streamSubscription"][0]["href"], "/subscriptions/s/g")


class UserTests(ApiTestMixin, SynchronousTestCase):
    """
    C{/users} (http-api.md 9).
    """

    def post_json(self, path: str, body: Any, headers: Optional[dict[str, str]] = None) -> Reply:
        h = {**(headers or ADMIN), "Content-Type": "application/json"}
        return self.request("POST", path, h, json.dumps(body).encode())

    def auth(self, login: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{login}:{password}".encode()).decode()
        return {"Authorization": "Basic " + token}

    def test_lifecycle(self) -> None:
        """
        Create, list, get, update, disable, enable, passwords, delete.
        """
        new = {"loginName": "bob", "fullName": "Bob", "groups": ["g1"], "password": "pw"}
        reply = self.post_json("/users", new)
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.header("Location"), BASE + "/users/bob")
        self.assertEqual(reply.json(), {"loginName": "bob", "success": True, "error": "Success"})
        self.assertEqual(self.post_json("/users", new).code, 409)
        logins = [u["loginName"] for u in self.get("/users").json()["data"]]
        self.assertIn("bob", logins)
        user = self.get("/users/bob").json()["data"]
        self.assertEqual(user["groups"], ["g1"])
        self.assertIn("disable", [link["rel"] for link in user["links"]])
        me = self.request("GET", "/users/$current", self.auth("bob", "pw")).json()["data"]
        self.assertEqual(me["loginName"], "bob")
        self.assertNotIn("links", me)
        h = {**ADMIN, "Content-Type": "application/json"}
        upd = self.request("PUT", "/users/bob", h, b'{"fullName": "B", "groups": []}')
        self.assertEqual(upd.code, 200)
        self.assertEqual(self.get("/users/bob").json()["data"]["fullName"], "B")
        self.assertEqual(self.request("POST", "/users/bob/command/disable", ADMIN).code, 200)
        self.assertEqual(self.request("GET", "/ping", self.auth("bob", "pw")).code, 401)
        self.assertEqual(self.request("POST", "/users/bob/command/enable", ADMIN).code, 200)
        self.assertEqual(self.request("GET", "/ping", self.auth("bob", "pw")).code, 200)
        self.assertEqual(
            self.post_json("/users/bob/command/reset-password", {"newPassword": "p2"}).code, 200
        )
        self.assertEqual(self.request("GET", "/ping", self.auth("bob", "pw")).code, 401)
        change = {"currentPassword": "wrong", "newPassword": "p3"}
        bob = self.auth("bob", "p2")
        self.assertEqual(
            self.post_json("/users/bob/command/change-password", change, bob).code, 401
        )
        change["currentPassword"] = "p2"
        self.assertEqual(
            self.post_json("/users/bob/command/change-password", change, bob).code, 200
        )
        self.assertEqual(self.request("GET", "/ping", self.auth("bob", "p3")).code, 200)
        self.assertEqual(self.request("DELETE", "/users/bob", ADMIN).code, 200)
        self.assertEqual(self.get("/users/bob").code, 404)
        self.assertEqual(self.request("DELETE", "/users/bob", ADMIN).code, 404)

    def test_adminOnly(self) -> None:
        """
        Non-admins cannot manage users.
        """
        self.assertEqual(self.request("GET", "/users", OPS).code, 401)
        new = {"loginName": "x", "password": "y"}
        self.assertEqual(self.post_json("/users", new, OPS).code, 401)
        self.assertEqual(self.post_json("/users", {"loginName": "x"}).code, 400)


class OperationalTests(ApiTestMixin, SynchronousTestCase):
    """
    C{/ping}, C{/info}, C{/stats}, C{/gossip}, C{/admin}, routing errors.
    """

    def test_ping(self) -> None:
        """
        Ping needs no credentials.
        """
        reply = self.request("GET", "/ping", {"Accept": "application/json"})
        self.assertEqual(reply.json(), {"text": "Ping request successfully handled"})

    def test_info(self) -> None:
        """
        Info names the version and state.
        """
        body = self.request("GET", "/info").json()
        self.assertEqual(body["state"], "master")
        self.assertEqual(body["esVersion"], "5.0.9.0")

    def test_stats(self) -> None:
        """
        Stats is a JSON object with sub-trees.
        """
        self.assertIn("proc", self.request("GET", "/stats").json())
        self.assertIn("id", self.request("GET", "/stats/proc").json())
        self.assertEqual(self.request("GET", "/stats/nope").code, 404)

    def test_gossip(self) -> None:
        """
        Gossip answers one live Master member in the v5 cluster shape.
        """
        reply = self.request("GET", "/gossip?format=json")
        self.assertEqual(reply.header("Content-Type"), "application/json; charset=utf-8")
        doc = reply.json()
        self.assertEqual(list(doc), ["members", "serverIp", "serverPort"])
        (member,) = doc["members"]
        self.assertEqual(member["state"], "Master")
        self.assertTrue(member["isAlive"])
        self.assertEqual(member["externalHttpPort"], 2113)
        self.assertEqual(len(member), 21)

    def test_shutdown(self) -> None:
        """
        Ops may shut the node down; others may not.
        """
        self.assertEqual(self.request("POST", "/admin/shutdown").code, 401)
        self.assertEqual(self.shutdowns, [])
        self.assertEqual(self.request("POST", "/admin/shutdown", OPS).code, 200)
        self.clock.advance(0)
        self.assertEqual(self.shutdowns, [1])

    def test_scavenge(self) -> None:
        """
        Scavenge answers an id; stopping it by id works; bad ids are 404.
        """
        reply = self.request("POST", "/admin/scavenge", ADMIN)
        scavenge_id = reply.json()["scavengeId"]
        uuid.UUID(scavenge_id)
        self.assertEqual(self.request("DELETE", f"/admin/scavenge/{scavenge_id}", ADMIN).code, 200)
        self.assertEqual(self.request("DELETE", "/admin/scavenge/nope", ADMIN).code, 404)
        bad = self.request("POST", "/admin/scavenge?threads=0", ADMIN)
        self.assertEqual(bad.code, 400)

    def test_reloadCertificatesWithoutTls(self) -> None:
        """
        C{POST /admin/reloadcertificates} on a node without TLS answers 400
        with the reason; anonymous callers get 401.
        """
        self.assertEqual(self.request("POST", "/admin/reloadcertificates").code, 401)
        reply = self.request("POST", "/admin/reloadcertificates", OPS)
        self.assertEqual(reply.code, 400)
        self.assertEqual(reply.body, b"TLS is not configured on this node")

    def test_reloadCertificates(self) -> None:
        """
        C{POST /admin/reloadcertificates} calls the node's reload hook (ops
        level): 200 with its message when the new files are in use, 400 with
        its message when they are broken.
        """
        from estwisted.tls.contexts import ReloadOutcome

        outcomes = [
            ReloadOutcome(True, "reloaded CN=eventstoredb-node"),
            ReloadOutcome(False, "reload failed, previous certificate kept: bad key"),
        ]
        calls: list[int] = []

        def reload() -> ReloadOutcome:
            calls.append(1)
            return outcomes[len(calls) - 1]

        self.store, self.persistent, self.api = make_node(
            self.clock, NodeInfo(reload_certificates=reload)
        )
        self.stub = StubTreq(self.api.resource())
        self.assertEqual(self.request("POST", "/admin/reloadcertificates").code, 401)
        self.assertEqual(calls, [])
        ok = self.request("POST", "/admin/reloadcertificates", OPS)
        self.assertEqual((ok.code, ok.body), (200, b"reloaded CN=eventstoredb-node"))
        broken = self.request("POST", "/admin/reloadcertificates", ADMIN)
        self.assertEqual(broken.code, 400)
        self.assertEqual(broken.body, b"reload failed, previous certificate kept: bad key")
        self.assertEqual(calls, [1, 1])

    def test_mergeIndexesAndOptions(self) -> None:
        """
        Ops-level admin extras answer JSON; anonymous callers get 401.
        """
        reply = self.request("POST", "/admin/mergeindexes", OPS)
        uuid.UUID(reply.json()["mergeIndexesId"])
        self.assertEqual(self.request("POST", "/admin/mergeindexes").code, 401)
        self.assertEqual(self.request("GET", "/info/options", OPS).json(), [])
        self.assertEqual(self.request("GET", "/info/options").code, 401)

    def test_nodeInfoFromConfig(self) -> None:
        """
        L{NodeInfo.from_config} reads advertised addresses and lists
        options with passwords blanked in C{/info/options}.
        """
        from estwisted.node.config import NodeConfig

        config = NodeConfig()
        info = NodeInfo.from_config(config, shutdown=lambda: None)
        self.assertEqual(info.ext_http_port, config.ext_http_port)
        self.assertEqual(info.int_tcp_port, config.int_tcp_port)
        names = dict(info.options)
        self.assertIn("ext_http_port", names)
        api = HttpApi(self.store, SubscriptionHub(self.store), self.persistent, self.clock, info)
        stub = StubTreq(api.resource())
        d = stub.get(BASE + "/info/options", headers=OPS)  # type: ignore[attr-defined]
        stub.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(treq.json_content(response))
        password = [o for o in body if o["name"] == "certificate_password"]
        self.assertEqual(password[0]["value"], "")

    def test_requireMasterOnReplica(self) -> None:
        """
        On a cluster node, ES-RequireMaster on a replica redirects to the
        master named by the leadership view (307) or is 503 with no master;
        /info takes the state from the view, /gossip uses the hook.
        """
        from estwisted.cluster.gossip import Endpoint, VNodeState
        from estwisted.cluster.leadership import Leadership, LeadershipView

        leadership = Leadership(
            LeadershipView(
                VNodeState.Slave,
                leader_external_tcp=Endpoint("127.0.0.9", 1113),
                leader_external_http=Endpoint("127.0.0.9", 2113),
            )
        )
        view = {"members": [], "serverIp": "127.0.0.1", "serverPort": 2112}
        info = NodeInfo(leadership=leadership, gossip_view=lambda: view)
        api = HttpApi(self.store, SubscriptionHub(self.store), self.persistent, self.clock, info)
        stub = StubTreq(api.resource())

        def call(method: str, path: str, headers: dict[str, str]) -> Any:
            d = stub.request(  # type: ignore[attr-defined]
                method, BASE + path, headers=headers, allow_redirects=False
            )
            stub.flush()
            self.clock.advance(0)
            stub.flush()
            return self.successResultOf(d)

        headers = {**ADMIN, "Accept": "application/json", "ES-RequireMaster": "True"}
        response = call("GET", "/streams/s/0?embed=body", headers)
        self.assertEqual(response.code, 307)
        self.assertEqual(
            response.headers.getRawHeaders("location"),
            ["http://127.0.0.9:2113/streams/s/0?embed=body"],
        )
        leadership.publish(LeadershipView(VNodeState.Slave))
        self.assertEqual(call("GET", "/streams/s/0", headers).code, 503)
        self.write("s", {"a": 1})
        headers["ES-RequireMaster"] = "False"
        self.assertEqual(call("GET", "/streams/s/0", headers).code, 200)
        body = self.successResultOf(treq.json_content(call("GET", "/info", {})))
        self.assertEqual(body["state"], "slave")
        leadership.publish(LeadershipView(VNodeState.Master, takes_writes=True))
        headers["ES-RequireMaster"] = "True"
        self.assertEqual(call("GET", "/streams/s/0", headers).code, 200)
        gossip = self.successResultOf(treq.json_content(call("GET", "/gossip", {})))
        self.assertEqual(gossip, view)

    def test_subscriptionsServedByTheLeaderOnly(self) -> None:
        """
        A persistent subscription request that reached a follower (the HTTP
        edge forwards them; this one could not be) is never served from the
        follower's own groups, header or not: 307 to the leader, or 503
        when no leader is known.
        """
        from estwisted.cluster.gossip import Endpoint, VNodeState
        from estwisted.cluster.leadership import Leadership, LeadershipView

        leadership = Leadership(
            LeadershipView(VNodeState.Slave, leader_external_http=Endpoint("127.0.0.9", 2113))
        )
        info = NodeInfo(leadership=leadership)
        api = HttpApi(self.store, SubscriptionHub(self.store), self.persistent, self.clock, info)
        stub = StubTreq(api.resource())

        def call(method: str, path: str) -> Any:
            d = stub.request(  # type: ignore[attr-defined]
                method, BASE + path, headers=ADMIN, allow_redirects=False
            )
            stub.flush()
            self.clock.advance(0)
            stub.flush()
            return self.successResultOf(d)

        response = call("GET", "/subscriptions/s/g/20")
        self.assertEqual(response.code, 307)
        self.assertEqual(
            response.headers.getRawHeaders("location"), ["http://127.0.0.9:2113/subscriptions/s/g/20"]
        )
        self.assertEqual(call("POST", "/subscriptions/s/g/ack?ids=x").code, 307)
        leadership.publish(LeadershipView(VNodeState.Slave))
        self.assertEqual(call("GET", "/subscriptions").code, 503)

    def test_routingErrors(self) -> None:
        """
        Unknown routes are 404, known routes with other methods 405, both
        with an empty body.
        """
        missing = self.request("GET", "/nothing/here", ADMIN)
        self.assertEqual((missing.code, missing.body), (404, b""))
        wrong = self.request("PUT", "/ping", ADMIN)
        self.assertEqual((wrong.code, wrong.body), (405, b""))

    def test_options(self) -> None:
        """
        OPTIONS lists the URL's methods in the CORS headers.
        """
        reply = self.request("OPTIONS", "/streams/s")
        self.assertEqual(reply.code, 200)
        methods = reply.header("Access-Control-Allow-Methods") or ""
        self.assertIn("POST", methods)
        self.assertTrue(methods.endswith("OPTIONS"))
        self.assertEqual(self.request("OPTIONS", "/nowhere/x/y").code, 404)

    def test_forwardedHost(self) -> None:
        """
        X-Forwarded-Host and -Prefix shape the URLs in bodies.
        """
        headers = {**ADMIN, "Content-Type": EVENTS, "X-Forwarded-Host": "example.test:80",
                   "X-Forwarded-Prefix": "es"}
        reply = self.request("POST", "/streams/s", headers, events_body((new_id(), {})))
        self.assertEqual(reply.header("Location"), "http://example.test:80/es/streams/s/0")


class HelperTests(SynchronousTestCase):
    """
    Pure helpers.
    """

    def test_negotiate(self) -> None:
        """
        q-values order ranges; wildcards pick the route's first type.
        """
        offered = ("a/x", "a/y", "b/z")
        self.assertEqual(negotiate(None, offered), ("a/x", False))
        self.assertEqual(negotiate("*/*", offered), ("a/x", False))
        self.assertEqual(negotiate("b/z", offered), ("b/z", True))
        self.assertEqual(negotiate("b/z;q=0.5, a/y", offered), ("a/y", True))
        self.assertEqual(negotiate("b/*", offered), ("b/z", False))
        self.assertIsNone(negotiate("c/c", offered))
        self.assertIsNone(negotiate("b/z;q=0", offered))

    def test_contentType(self) -> None:
        """
        Parameters are dropped; only UTF-8 charsets are accepted.
        """
        self.assertEqual(parse_content_type("application/json; charset=UTF-8"), "application/json")
        self.assertIsNone(parse_content_type("application/json; charset=ascii"))
        self.assertIsNone(parse_content_type(None))

    @given(st.text(max_size=20))
    def test_expectedVersion(self, text: str) -> None:
        """
        Integers >= -4 parse; anything else is a 400.
        """
        try:
            value: Optional[int] = int(text.strip())
        except ValueError:
            value = None
        if value is not None and -4 <= value <= 2**63 - 1:
            self.assertEqual(parse_expected_version(text), value)
        else:
            e = self.assertRaises(HttpError, parse_expected_version, text)
            self.assertEqual(e.code, 400)

    @given(st.binary(max_size=200))
    def test_eventsBodyNeverCrashes(self, body: bytes) -> None:
        """
        Any body either parses or raises a 4xx HttpError.
        """
        try:
            parse_events_json(body)
        except HttpError as e:
            self.assertTrue(400 <= e.code < 500)


_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"])
_SEGMENTS = st.sampled_from(
    [
        "streams", "s", "%24all", "$all", "metadata", "head", "0", "1", "-1", "20",
        "forward", "backward", "incoming", "subscriptions", "g", "users", "admin",
        "command", "enable", "ack", "nack", "info", "gossip", "ping", "stats",
        "%ZZ", "%00", "%FF", "%C3%A9", "a%2Fb", "x" * 40, "0" * 32, "replayParked", "scavenge", "",
    ]
)
_HEADER_NAMES = st.sampled_from(
    [
        "Accept", "Content-Type", "ES-ExpectedVersion", "ES-EventId", "ES-EventType",
        "ES-LongPoll", "ES-HardDelete", "ES-ResolveLinkTos", "ES-RequireMaster",
        "If-None-Match", "X-Forwarded-Host", "X-Forwarded-Prefix", "Authorization",
    ]
)
_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            "application/json", EVENTS, ATOM_JSON, "*/*", "text/xml", "-1", "-2", "5",
            "true", "false", str(uuid.UUID(int=7)), "Basic !!", "abc", "0",
            "application/octet-stream", atom.COMPETING_JSON,
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
)
_BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"", b"{}", b"[]", b"[{}]", b'{"loginName": "z", "password": "p"}',
            events_body((str(uuid.UUID(int=9)), {"a": 1})),
            b'[{"eventId": "00000000-0000-0000-0000-000000000000", "eventType": ""}]',
        ]
    ),
)


class FuzzTests(ApiTestMixin, SynchronousTestCase):
    """
    Random requests: never a 500, nothing logged as an error, no change to
    data from a rejected request.
    """

    def setUp(self) -> None:
        super().setUp()
        self.write("s", {"a": 1})
        self.errors: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level") in (LogLevel.error, LogLevel.critical) or event.get(
                "isError"
            ):
                self.errors.append(event)

        observer: Any = observe
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    @settings(max_examples=300)
    @given(
        _METHODS,
        st.lists(_SEGMENTS, min_size=1, max_size=6),
        st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=5),
        _BODIES,
        st.booleans(),
    )
    def test_randomRequests(
        self,
        method: str,
        segments: list[str],
        headers: dict[str, str],
        body: bytes,
        admin: bool,
    ) -> None:
        """
        Whatever is thrown at the API gets a non-500 reply, and a 4xx leaves
        the log as it was.
        """
        if admin and "Authorization" not in headers:
            headers = {**headers, **ADMIN}
        headers.pop("ES-LongPoll", None) if method != "GET" else None
        before = self.store.last_commit_position
        path = "/" + "/".join(segments)
        d = self.start(method, path, headers, body)
        self.clock.advance(400)
        reply = self.finish(d)
        self.assertLess(reply.code, 500, (method, path, headers, body, reply.phrase))
        self.assertEqual(self.errors, [])
        if reply.code >= 400:
            self.assertEqual(self.store.last_commit_position, before, (method, path))
        self.assertEqual(self.shutdowns, [])


class LoopbackTests(TestCase):
    """
    Real HTTP on 127.0.0.1 with treq: the Site, the body limit, the
    trailing-slash redirect and a long poll.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.store = StreamStore(MemoryLog(), StreamIndex(), reactor)
        self.users = UserManager(self.store, iterations=10)
        self.api = HttpApi(
            self.store,
            SubscriptionHub(self.store),
            PersistentSubscriptions(self.store, reactor),
            reactor,
            NodeInfo(max_body_size=10_000),
            users=self.users,
        )
        site: Any = self.api.site()
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        self.port_number: int = self.port.getHost().port  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{self.port_number}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        return self.users.ensure_default_users()

    def req(self, method: str, path: str, headers: Optional[dict[str, str]] = None,
            body: Optional[bytes] = None) -> Deferred[Any]:
        return treq.request(
            method, self.base + path, headers=dict(headers or {}),  # type: ignore[arg-type]
            data=body, pool=self.pool,
            allow_redirects=False,
        )

    @inlineCallbacks
    def test_writeAndRead(self) -> Any:
        """
        A write and a feed read over a real socket.
        """
        headers = {**ADMIN, "Content-Type": EVENTS}
        body = events_body((new_id(), {"a": 1}))
        response = yield self.req("POST", "/streams/loop", headers, body)
        yield treq.content(response)
        self.assertEqual(response.code, 201)
        location = response.headers.getRawHeaders("location")
        self.assertEqual(location, [self.base + "/streams/loop/0"])
        accept = {**ADMIN, "Accept": "application/json"}
        response = yield self.req("GET", "/streams/loop?embed=body", accept)
        feed = yield treq.json_content(response)
        self.assertEqual(json.loads(feed["entries"][0]["data"]), {"a": 1})
        content_type = response.headers.getRawHeaders("content-type")
        self.assertEqual(content_type, ["application/json; charset=utf-8"])

    @inlineCallbacks
    def test_gzip(self) -> Any:
        """
        Large replies are gzip-compressed when the client accepts it (and
        only then), with the compressed Content-Length.
        """
        import gzip

        from twisted.web.client import Agent, readBody
        from twisted.web.http_headers import Headers

        body = events_body(*[(new_id(), {"n": i, "p": "x" * 50}) for i in range(20)])
        response = yield self.req("POST", "/streams/gz", {**ADMIN, "Content-Type": EVENTS}, body)
        yield treq.content(response)
        agent = Agent(reactor, pool=self.pool)
        url = (self.base + "/streams/gz?embed=body").encode()
        base = {b"Authorization": [ADMIN["Authorization"].encode()],
                b"Accept": [b"application/json"]}
        plain = yield agent.request(b"GET", url, Headers(base))
        plain_body = yield readBody(plain)
        self.assertIsNone(plain.headers.getRawHeaders(b"content-encoding"))
        packed = yield agent.request(
            b"GET", url, Headers({**base, b"Accept-Encoding": [b"gzip, deflate"]})
        )
        packed_body = yield readBody(packed)
        self.assertEqual(packed.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(packed.length, len(packed_body))
        self.assertEqual(gzip.decompress(packed_body), plain_body)
        refused = yield agent.request(
            b"GET", url, Headers({**base, b"Accept-Encoding": [b"gzip;q=0"]})
        )
        yield readBody(refused)
        self.assertIsNone(refused.headers.getRawHeaders(b"content-encoding"))

    @inlineCallbacks
    def test_trailingSlash(self) -> Any:
        """
        C{/streams/s/} redirects to C{/streams/s} (307).
        """
        response = yield self.req("GET", "/streams/loop/", ADMIN)
        yield treq.content(response)
        self.assertEqual(response.code, 307)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/streams/loop"])

    def raw_exchange(self, data: bytes) -> Deferred[bytes]:
        """
        Send raw bytes over a new connection; fires with everything received
        once the server closes it.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        received: list[bytes] = []
        done: Deferred[bytes] = Deferred()

        class Client(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(data)

            def dataReceived(self, chunk: bytes) -> None:
                received.append(chunk)

            def connectionLost(self, reason: Any = None) -> None:
                done.callback(b"".join(received))

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_number)
        connectProtocol(endpoint, Client())
        return done

    @inlineCallbacks
    def test_bodyLimit(self) -> Any:
        """
        A body over the limit is refused from its Content-Length with 413
        before it is sent, and nothing is written.
        """
        reply = yield self.raw_exchange(
            b"POST /streams/big HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/vnd.eventstore.events+json\r\n"
            b"Authorization: " + ADMIN["Authorization"].encode() + b"\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        self.assertTrue(reply.startswith(b"HTTP/1.1 413 "), reply[:100])
        self.assertEqual(self.store.last_event_number("big"), -1)

    @inlineCallbacks
    def test_chunkedBodyLimit(self) -> Any:
        """
        A chunked body is refused with 413 as soon as it passes the limit.
        """
        chunk = b"x" * 4000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
        reply = yield self.raw_exchange(
            b"POST /streams/big HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/vnd.eventstore.events+json\r\n"
            b"Authorization: " + ADMIN["Authorization"].encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body
        )
        self.assertTrue(reply.startswith(b"HTTP/1.1 413 "), reply[:100])
        self.assertEqual(self.store.last_event_number("big"), -1)

    @inlineCallbacks
    def test_longPoll(self) -> Any:
        """
        A long poll over a real socket is answered when an event arrives.
        """
        headers = {**ADMIN, "Accept": "application/json", "ES-LongPoll": "5"}
        polled = self.req("GET", "/streams/lp/0/forward/5", headers)
        from twisted.internet.task import deferLater

        yield deferLater(reactor, 0.05, lambda: None)
        self.assertNoResult(polled)
        write = {**ADMIN, "Content-Type": EVENTS}
        response = yield self.req("POST", "/streams/lp", write, events_body((new_id(), {"n": 1})))
        yield treq.content(response)
        response = yield polled
        feed = yield treq.json_content(response)
        self.assertEqual([e["title"] for e in feed["entries"]], ["0@lp"])


class GuidTests(SynchronousTestCase):
    """
    L{estwisted.http.parsing.parse_guid}.
    """

    @given(st.uuids())
    def test_forms(self, value: uuid.UUID) -> None:
        """
        Hyphenated (any case), bare, braced and parenthesised forms parse
        to the RFC 4122 bytes.
        """
        from estwisted.http.parsing import parse_guid

        for text in (
            str(value),
            str(value).upper(),
            value.hex,
            "{" + str(value) + "}",
            "(" + str(value) + ")",
        ):
            self.assertEqual(parse_guid(text), value.bytes)

    @given(st.text(max_size=40))
    def test_garbage(self, text: str) -> None:
        """
        Anything else raises ValueError, never anything worse.
        """
        from estwisted.http.parsing import parse_guid

        try:
            expected = uuid.UUID(text.strip().strip("()")).bytes
        except ValueError:
            expected = None
        if expected is None:
            self.assertRaises(ValueError, parse_guid, text)
        else:
            self.assertEqual(parse_guid(text), expected)


class DiskFullAnswerTests(SynchronousTestCase):
    def test_disk_full_is_507(self) -> None:
        """
        A write refused because the disk is full says so (507), apart from
        other storage errors (500).
        """
        from estwisted.core.errors import DiskFull, StorageError
        from estwisted.http.parsing import error_for

        full = error_for(DiskFull("no space"))
        other = error_for(StorageError("EIO"))
        assert full is not None and other is not None
        self.assertEqual(full.code, 507)
        self.assertIn("disk is full", full.reason)
        self.assertEqual(other.code, 500)


class RouteTableTests(ApiTestMixin, SynchronousTestCase):
    """
    L{estwisted.http.api.ROUTES} is the one route table: Klein routes it,
    and the C{/streams/...} index compiled from it picks the same route
    with the same parameters for every request Klein routes there.
    """

    @given(
        st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
        st.lists(
            st.sampled_from(
                ["s", "$all", "metadata", "incoming", "forward", "backward", "0", "head", "20"]
            ),
            min_size=1,
            max_size=5,
        ),
    )
    def test_index_agrees_with_klein(self, method: str, segments: list[str]) -> None:
        from werkzeug.exceptions import HTTPException

        from estwisted.http.api import ROUTES, _SegmentIndex

        index = _SegmentIndex(self.api, "streams")
        found = index.match(method.encode(), segments)
        adapter = self.api.app.url_map.bind("localhost")
        try:
            endpoint, values = adapter.match("/streams/" + "/".join(segments), method)
        except HTTPException:
            self.assertIsNone(found)
            return
        route = next(r for r in ROUTES if f"{r.method} {r.rule}" == endpoint)
        assert found is not None
        self.assertEqual(found[0], route)
        self.assertEqual(found[2], [*[values[n] for n in route.parameters], *route.fixed])

    def test_every_handler_exists(self) -> None:
        """
        Every route names a handler method of L{HttpApi}.
        """
        from estwisted.http.api import ROUTES

        for route in ROUTES:
            self.assertTrue(callable(getattr(self.api, route.handler)), route)
