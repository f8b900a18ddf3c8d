# -*- test-case-name: estwisted.cluster.test.test_gossiphttp -*-
"""
Tests for L{estwisted.cluster.gossiphttp}: the C{/gossip} and C{/elections/*}
resource in front of the HTTP API (through L{treq.testing.StubTreq}), the
treq peer transport, and three controllers electing a leader over HTTP in
memory.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any, Optional

from attrs import evolve
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from estwisted.cluster.controller import (
    ClusterController,
    ClusterSettings,
    IPeerTransport,
    NodeMachine,
    PeerRefusedError,
)
from estwisted.cluster.elections import LeaderIsResigning, Message, Prepare, ViewChange
from estwisted.cluster.gossip import (
    ClusterInfo,
    Endpoint,
    GossipSettings,
    MemberInfo,
    VNodeState,
    decode_cluster_info,
    encode_cluster_info,
)
from estwisted.cluster.gossiphttp import (
    ClusterResource,
    ClusterSite,
    HttpPeerTransport,
    PeerEndpointFactory,
    PeerError,
)

NOW = 1_700_000_000.0
SETTINGS = ClusterSettings(
    cluster_size=3,
    gossip=GossipSettings(interval=0.1, timeout=0.5),
    election_timeout=0.5,
    probe_interval=0.1,
)

#: The member fields of http-api.md section 11.1, in order.
FIELDS = [
    "instanceId", "timeStamp", "state", "isAlive", "internalTcpIp", "internalTcpPort",
    "internalSecureTcpPort", "externalTcpIp", "externalTcpPort", "externalSecureTcpPort",
    "internalHttpIp", "internalHttpPort", "externalHttpIp", "externalHttpPort",
    "lastCommitPosition", "writerCheckpoint", "chaserCheckpoint", "epochPosition",
    "epochNumber", "epochId", "nodePriority",
]


def member(index: int) -> MemberInfo:
    host = f"127.0.0.{index + 1}"
    return MemberInfo(
        instance_id=uuid.UUID(int=index + 1, version=4),
        timestamp=NOW,
        state=VNodeState.Unknown,
        is_alive=True,
        internal_tcp=Endpoint(host, 1112),
        external_tcp=Endpoint(host, 1113),
        internal_http=Endpoint(host, 2112),
        external_http=Endpoint(host, 2113),
    )


class Inner(Resource):
    """
    Stands for the HTTP API: answers everything with C{inner}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[bytes] = []

    def render(self, request: Any) -> bytes:
        self.paths.append(request.path)
        request.setResponseCode(404)
        return b"inner"


class Silent:
    """
    A transport whose requests never finish.
    """

    timeout = 0.5

    def post_gossip(self, target: Endpoint, info: ClusterInfo) -> Deferred[ClusterInfo]:
        return Deferred()

    def post_election(self, target: Endpoint, message: Message) -> Deferred[None]:
        return Deferred()


def controller(index: int = 0, transport: Any = None, clock: Optional[Clock] = None) -> Any:
    clock = clock or Clock()
    if clock.seconds() == 0:
        clock.advance(NOW)
    own = member(index)
    seeds = [member(i).internal_http for i in range(3) if i != index]
    machine = NodeMachine.create(own, seeds, SETTINGS, clock.seconds(), random.Random(index))
    c = ClusterController(machine, transport or Silent(), clock)
    c.startService()
    return c


def request(
    stub: StubTreq, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, Any, bytes]:
    url = "http://127.0.0.1:2112" + path
    hdrs = {k.replace("_", "-"): [v] for k, v in headers.items()}
    d = stub.request(method, url, data=body or None, headers=hdrs)  # type: ignore[attr-defined]
    response = _result(d)
    content = _result(stub.content(response))  # type: ignore[attr-defined]
    return response.code, response.headers, content


def _result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not finished"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class ResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.inner = Inner()
        self.controller = controller()
        self.internal = StubTreq(ClusterResource(self.inner, self.controller, internal=True))
        self.external = StubTreq(ClusterResource(self.inner, self.controller, internal=False))

    def test_get_gossip(self) -> None:
        """
        C{GET /gossip} answers the v5 document: members with the 21 fields
        in order, C{serverIp}/C{serverPort} the internal HTTP endpoint, no
        caching.
        """
        for stub in (self.internal, self.external):
            code, headers, body = request(stub, "GET", "/gossip?format=json")
            self.assertEqual(code, 200)
            doc = json.loads(body)
            self.assertEqual(list(doc), ["members", "serverIp", "serverPort"])
            self.assertEqual((doc["serverIp"], doc["serverPort"]), ("127.0.0.1", 2112))
            own = [m for m in doc["members"] if m["internalHttpIp"] == "127.0.0.1"]
            self.assertEqual(list(own[0]), FIELDS)
            self.assertEqual(own[0]["state"], "Unknown")
            self.assertEqual(
                headers.getRawHeaders(b"cache-control"), [b"max-age=0, no-cache, must-revalidate"]
            )
            self.assertIn(b"application/json", headers.getRawHeaders(b"content-type")[0])
        self.assertEqual(self.inner.paths, [])

    def test_host_header_does_not_matter(self) -> None:
        """
        The answer is the same whatever the Host header says: addresses
        are the advertised ones, never taken from the request.
        """
        bodies = []
        for host in ("127.0.0.1:2112", "cluster.example.com", "10.9.9.9:80"):
            code, _, body = request(self.external, "GET", "/gossip", Host=host)
            self.assertEqual(code, 200)
            doc = json.loads(body)
            for m in doc["members"]:
                m.pop("timeStamp")
            bodies.append(doc)
        self.assertEqual(bodies[0], bodies[1])
        self.assertEqual(bodies[0], bodies[2])

    def test_get_gossip_xml(self) -> None:
        code, headers, body = request(self.external, "GET", "/gossip", Accept="application/xml")
        self.assertEqual(code, 200)
        self.assertIn(b"<ClusterInfoDto>", body)
        self.assertIn(b"<serverPort>2112</serverPort>", body)

    def test_external_without_gossip(self) -> None:
        """
        C{GossipOnExt: false}: C{/gossip} is not served on the external
        port (and not answered by the API's single-node document either).
        """
        stub = StubTreq(ClusterResource(self.inner, self.controller, internal=False, gossip=False))
        code, _, body = request(stub, "GET", "/gossip")
        self.assertEqual((code, body), (404, b""))
        self.assertEqual(self.inner.paths, [])

    def test_post_gossip_merges(self) -> None:
        """
        C{POST /gossip} on the internal port merges the sender's table and
        answers the merged one.
        """
        peer = member(1)
        body = encode_cluster_info(ClusterInfo((peer,), peer.internal_http))
        code, _, reply = request(self.internal, "POST", "/gossip", body)
        self.assertEqual(code, 200)
        info = decode_cluster_info(reply)
        keys = {m.internal_http for m in info.members}
        self.assertIn(peer.internal_http, keys)
        self.assertEqual(self.controller.machine.view.get(peer.internal_http).instance_id,
                         peer.instance_id)

    def test_post_gossip_external_refused(self) -> None:
        peer = member(1)
        body = encode_cluster_info(ClusterInfo((peer,), peer.internal_http))
        code, headers, _ = request(self.external, "POST", "/gossip", body)
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders(b"allow"), [b"GET"])
        self.assertEqual(
            self.controller.machine.view.get(peer.internal_http).state, VNodeState.Manager
        )

    def test_post_gossip_bad_body(self) -> None:
        for body in (b"not json", b"{}", b'{"members": [{"state": "Nope"}]}'):
            code, _, _ = request(self.internal, "POST", "/gossip", body)
            self.assertEqual(code, 400)

    def test_post_gossip_clock_skew(self) -> None:
        """
        A gossip whose sender's clock is off by more than the allowed
        difference is refused with 409 and changes nothing.
        """
        peer = evolve(member(1), timestamp=NOW + 3600)
        body = encode_cluster_info(ClusterInfo((peer,), peer.internal_http))
        code, _, _ = request(self.internal, "POST", "/gossip", body)
        self.assertEqual(code, 409)
        self.assertEqual(
            self.controller.machine.view.get(peer.internal_http).state, VNodeState.Manager
        )

    def test_elections_routes(self) -> None:
        """
        Election messages on the internal port are decoded and handed to
        the controller; the v5 resignation names are aliases.
        """
        got: list[Message] = []
        self.controller.handle_election = got.append
        vc = ViewChange(uuid.uuid4(), Endpoint("127.0.0.2", 2112), 3)
        from estwisted.cluster.elections import encode_message

        route, body = encode_message(vc)
        code, _, reply = request(self.internal, "POST", f"/elections/{route}", body)
        self.assertEqual((code, reply), (200, b""))
        resign = LeaderIsResigning(uuid.uuid4(), Endpoint("127.0.0.2", 2112))
        _, body = encode_message(resign)
        code, _, _ = request(self.internal, "POST", "/elections/masterisresigning", body)
        self.assertEqual(code, 200)
        self.assertEqual(got, [vc, resign])

    def test_elections_bad_body(self) -> None:
        code, _, _ = request(self.internal, "POST", "/elections/prepare", b'{"view": 1}')
        self.assertEqual(code, 400)

    def test_elections_not_on_external_or_unknown(self) -> None:
        msg = Prepare(uuid.uuid4(), Endpoint("127.0.0.2", 2112), 1)
        from estwisted.cluster.elections import encode_message

        _, body = encode_message(msg)
        code, _, reply = request(self.external, "POST", "/elections/prepare", body)
        self.assertEqual((code, reply), (404, b"inner"))
        code, _, reply = request(self.internal, "POST", "/elections/bogus", body)
        self.assertEqual((code, reply), (404, b"inner"))

    def test_other_paths_delegated(self) -> None:
        code, _, body = request(self.external, "GET", "/streams/foo")
        self.assertEqual((code, body), (404, b"inner"))
        self.assertEqual(self.inner.paths, [b"/streams/foo"])

    def test_non_leaf_inner(self) -> None:
        """
        A non-leaf inner root is traversed as a Site would.
        """
        root = Resource()
        leaf = Inner()
        root.putChild(b"ping", leaf)
        stub = StubTreq(ClusterResource(root, self.controller, internal=False))
        code, _, body = request(stub, "GET", "/ping")
        self.assertEqual((code, body), (404, b"inner"))

    def test_site_does_not_log_gossip(self) -> None:
        site = ClusterSite(Inner())
        logged: list[bytes] = []

        class Req:
            def __init__(self, path: bytes) -> None:
                self.path = path

        import twisted.web.server

        original = twisted.web.server.Site.log
        twisted.web.server.Site.log = lambda self, r: logged.append(r.path)  # type: ignore
        try:
            for p in (b"/gossip", b"/elections/prepare", b"/streams/x"):
                site.log(Req(p))
        finally:
            twisted.web.server.Site.log = original  # type: ignore
        self.assertEqual(logged, [b"/streams/x"])


class Answering(Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.requests: list[tuple[bytes, bytes, Any]] = []

    def render(self, request: Any) -> bytes:
        self.requests.append((request.path, request.content.read(), request.requestHeaders))
        request.setResponseCode(self.code)
        return self.body


class TransportTests(SynchronousTestCase):
    def test_interface(self) -> None:
        transport = HttpPeerTransport(StubTreq(Resource()), 0.5)
        self.assertTrue(verifyObject(IPeerTransport, transport))

    def test_post_gossip(self) -> None:
        """
        The table goes as JSON to C{/gossip}; the answer is parsed.
        """
        theirs = ClusterInfo((member(1),), member(1).internal_http)
        resource = Answering(200, encode_cluster_info(theirs))
        transport = HttpPeerTransport(StubTreq(resource), 0.5, clock=Clock())
        ours = ClusterInfo((member(0),), member(0).internal_http)
        got = self.successResultOf(transport.post_gossip(member(1).internal_http, ours))
        self.assertEqual(got, theirs)
        path, body, headers = resource.requests[0]
        self.assertEqual(path, b"/gossip")
        self.assertEqual(decode_cluster_info(body), ours)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])

    def test_post_gossip_error_status(self) -> None:
        transport = HttpPeerTransport(StubTreq(Answering(409, b"")), 0.5, clock=Clock())
        info = ClusterInfo((member(0),), member(0).internal_http)
        f = self.failureResultOf(transport.post_gossip(member(1).internal_http, info), PeerError)
        self.assertIn("409", f.getErrorMessage())

    def test_post_gossip_unreadable(self) -> None:
        transport = HttpPeerTransport(StubTreq(Answering(200, b"nope")), 0.5, clock=Clock())
        info = ClusterInfo((member(0),), member(0).internal_http)
        self.failureResultOf(transport.post_gossip(member(1).internal_http, info), PeerError)

    def test_refused(self) -> None:
        """
        A refused connection is reported as L{PeerRefusedError}.
        """

        class Refusing:
            def post(self, *a: Any, **kw: Any) -> Deferred[Any]:
                return fail(ConnectionRefusedError())

        transport = HttpPeerTransport(Refusing(), 0.5)
        info = ClusterInfo((member(0),), member(0).internal_http)
        self.failureResultOf(
            transport.post_gossip(member(1).internal_http, info), PeerRefusedError
        )

    def test_url_and_options(self) -> None:
        """
        URLs use the scheme and bracket IPv6 hosts; the timeout and clock
        are passed to treq.
        """
        calls: list[tuple[str, dict[str, Any]]] = []

        class Recording:
            def post(self, url: str, **kw: Any) -> Deferred[Any]:
                calls.append((url, kw))
                return Deferred()

        clock = Clock()
        transport = HttpPeerTransport(Recording(), 0.25, "https", clock=clock)
        transport.post_gossip(Endpoint("::1", 2112), ClusterInfo(()))
        transport.post_election(
            Endpoint("127.0.0.2", 2112), Prepare(uuid.uuid4(), Endpoint("127.0.0.1", 2112), 0)
        )
        self.assertEqual(calls[0][0], "https://[::1]:2112/gossip")
        self.assertEqual(calls[0][1]["timeout"], 0.25)
        self.assertIs(calls[0][1]["reactor"], clock)
        self.assertEqual(calls[1][0], "https://127.0.0.2:2112/elections/prepare")
        self.assertEqual(calls[1][1]["timeout"], 2.0)

    def test_election_post(self) -> None:
        resource = Answering(200, b"")
        transport = HttpPeerTransport(StubTreq(resource), 0.5, clock=Clock())
        msg = ViewChange(uuid.uuid4(), Endpoint("127.0.0.1", 2112), 4)
        self.assertIsNone(
            self.successResultOf(transport.post_election(member(1).internal_http, msg))
        )
        path, body, _ = resource.requests[0]
        self.assertEqual(path, b"/elections/viewchange")
        self.assertEqual(json.loads(body)["attemptedView"], 4)


class Dispatch:
    """
    A treq-like client that routes each request to the StubTreq of the
    port in the URL (every node has its own port here), refusing unknown
    ports.
    """

    def __init__(self) -> None:
        self.stubs: dict[int, StubTreq] = {}

    def post(self, url: str, **kw: Any) -> Deferred[Any]:
        port = int(url.split(":")[2].split("/")[0])
        stub = self.stubs.get(port)
        if stub is None:
            return fail(ConnectionRefusedError())
        kw.pop("reactor", None)
        kw.pop("timeout", None)
        return stub.post(url, **kw)  # type: ignore[attr-defined,no-any-return]


class OverHttpTests(SynchronousTestCase):
    def test_three_nodes_elect_over_http(self) -> None:
        """
        Three controllers whose gossip and election messages travel as
        HTTP requests and JSON bodies (in memory) elect one leader, and a
        new one when it stops answering.
        """
        clock = Clock()
        clock.advance(NOW)
        client = Dispatch()
        nodes = []
        for i in range(3):
            own = evolve(
                member(i), internal_http=Endpoint("127.0.0.1", 2112 + 10 * i),
                external_http=Endpoint("127.0.0.1", 2113 + 10 * i),
            )
            seeds = [Endpoint("127.0.0.1", 2112 + 10 * j) for j in range(3) if j != i]
            machine = NodeMachine.create(own, seeds, SETTINGS, clock.seconds(), random.Random(i))
            transport = HttpPeerTransport(client, 0.5, clock=clock)
            c = ClusterController(machine, transport, clock)
            client.stubs[2112 + 10 * i] = StubTreq(ClusterResource(Inner(), c, internal=True))
            nodes.append(c)
        for c in nodes:
            c.startService()

        def leaders() -> list[int]:
            return [
                i for i, c in enumerate(nodes)
                if c.state is VNodeState.Master and not c.machine.stopped
            ]

        for _ in range(300):
            clock.advance(0.01)
            for stub in client.stubs.values():
                stub.flush()
        (first,) = leaders()
        followers = [c for i, c in enumerate(nodes) if i != first]
        # No replication here: followers wait for their subscription.
        self.assertEqual({c.state for c in followers}, {VNodeState.PreReplica})
        leader_id = nodes[first].machine.own.instance_id
        self.assertEqual({c.machine.leader_id for c in followers}, {leader_id})
        # The leader's process dies: its port refuses.
        nodes[first].machine.stopped = True
        nodes[first]._loop.stop()
        del client.stubs[2112 + 10 * first]
        for _ in range(300):
            clock.advance(0.01)
            for stub in client.stubs.values():
                stub.flush()
        (second,) = leaders()
        self.assertNotEqual(second, first)


class EndpointFactoryTests(SynchronousTestCase):
    def test_endpoints(self) -> None:
        """
        IP peers get plain TCP endpoints (a refusal is reported at once),
        names a HostnameEndpoint, C{https} a TLS wrapper.
        """
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
        )
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import URI, BrowserLikePolicyForHTTPS

        reactor = MemoryReactorClock()
        plain = PeerEndpointFactory(reactor, 0.5)
        self.assertIsInstance(
            plain.endpointForURI(URI.fromBytes(b"http://127.0.0.1:2112/gossip")),
            TCP4ClientEndpoint,
        )
        self.assertIsInstance(
            plain.endpointForURI(URI.fromBytes(b"http://[::1]:2112/gossip")), TCP6ClientEndpoint
        )
        self.assertIsInstance(
            plain.endpointForURI(URI.fromBytes(b"http://node1.test:2112/gossip")),
            HostnameEndpoint,
        )
        tls = PeerEndpointFactory(reactor, 0.5, BrowserLikePolicyForHTTPS())
        wrapped = tls.endpointForURI(URI.fromBytes(b"https://127.0.0.1:2112/gossip"))
        self.assertNotIsInstance(wrapped, TCP4ClientEndpoint)
        self.assertEqual(type(wrapped).__name__, "_WrapperEndpoint")

    def test_refused_connection_fails_at_once(self) -> None:
        """
        Through the real agent on a memory reactor, a refused connection is
        reported as L{PeerRefusedError} without waiting.
        """
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        transport = HttpPeerTransport.create(reactor, 0.5)
        d = transport.post_gossip(Endpoint("127.0.0.1", 2112), ClusterInfo(()))
        host, port, factory, timeout, _ = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 2112, 0.5))
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))  # type: ignore[arg-type]
        self.failureResultOf(d, PeerRefusedError)

