# -*- test-case-name: tests.test_tls -*-
"""
System tests of TLS on a real node process, with certificates made by
C{estore certs}: HTTPS and TCP over TLS with a client that trusts the CA
(a TCP Ping answered by Pong), refusal of a client trusting another CA, of
plaintext clients, and on the internal ports of clients without a node
certificate from the cluster CA (reasons logged); reload on SIGHUP; and the
refusals to start (plaintext on a non-loopback address, a key that does
not match the certificate).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, TestCase

from tests.harness import REPO_ROOT, NodeProcess, free_port, start_node, twistd_command


def estore(*args: str) -> str:
    """
    Run C{estore} (the console script's code) and return its output.
    """
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "estwisted.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(f"estore {' '.join(args)} failed: {result.stderr}")
    return result.stdout


class PKI:
    """
    A cluster CA, node certificates and a stranger CA, made with C{estore
    certs} under one directory.
    """

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        estore("certs", "create-ca", "--out", self.path("ca"))
        estore("certs", "create-ca", "--out", self.path("other-ca"), "--common-name", "other CA")
        self.ca_cert = self.path("ca", "ca.crt")
        self.other_ca_cert = self.path("other-ca", "ca.crt")
        # The trusted roots directory holds the CA certificate only.
        os.makedirs(self.path("roots"))
        with open(self.ca_cert, "rb") as src, open(self.path("roots", "ca.crt"), "wb") as dst:
            dst.write(src.read())

    def path(self, *parts: str) -> str:
        return os.path.join(self.directory, *parts)

    def node(
        self,
        name: str,
        ips: str = "127.0.0.1",
        dns: str = "localhost",
        ca: str = "ca",
        common_name: Optional[str] = None,
        force: bool = False,
    ) -> tuple[str, str]:
        args = [
            "certs",
            "create-node",
            "--ca-certificate",
            self.path(ca, "ca.crt"),
            "--ca-key",
            self.path(ca, "ca.key"),
            "--ip-addresses",
            ips,
            "--dns-names",
            dns,
            "--out",
            self.path(name),
        ]
        if common_name:
            args += ["--common-name", common_name]
        if force:
            args.append("--force")
        estore(*args)
        return self.path(name, "node.crt"), self.path(name, "node.key")

    def expired_node(self, name: str) -> tuple[str, str]:
        """
        A node certificate from the CA that expired a week ago (made
        in-process: C{estore certs} only makes valid certificates).
        """
        import datetime

        from estwisted.tls import certs

        issuer = certs.load_issuer(self.path("ca", "ca.crt"), self.path("ca", "ca.key"))
        then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=8)
        issued = certs.create_node(issuer, ["127.0.0.1"], now=then, days=1)
        return certs.write_issued(self.path(name), "node", issued)

    def node_args(self, name: str) -> list[str]:
        cert, key = self.path(name, "node.crt"), self.path(name, "node.key")
        return [
            "--certificate-file",
            cert,
            "--certificate-private-key-file",
            key,
            "--trusted-root-certificates-path",
            self.path("roots"),
        ]


def client_context(cafile: str, cert: Optional[tuple[str, str]] = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def ping(
    host: str, port: int, context: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> bytes:
    """
    Send a TCP Ping package over TLS and return the reply package.
    """
    correlation = uuid.uuid4().bytes
    package = bytes([0x03, 0x00]) + correlation
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(struct.pack("<i", len(package)) + package)
            data = b""
            deadline = time.monotonic() + 10
            while len(data) < 4 + 18 and time.monotonic() < deadline:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    length = struct.unpack("<i", data[:4])[0]
    reply = data[4 : 4 + length]
    assert reply[2:18] == correlation, "correlation id differs"
    return reply


def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def refused(host: str, port: int, context: ssl.SSLContext) -> bool:
    """
    Whether a TLS client is refused (handshake error, or the connection
    closed before any answer to a Ping).
    """
    try:
        ping(host, port, context)
    except (ssl.SSLError, ConnectionError, AssertionError, struct.error, OSError):
        return True
    return False


def wait_for_log(node: NodeProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the node log:\n{node.log()[-3000:]}")


class TLSNodeTests(TestCase):
    """
    One node with a certificate: every listener speaks TLS.
    """

    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.pki.node("node1", ips="127.0.0.1", dns="localhost,node1.cluster")
        self.node = start_node(self, mem_db=True, extra_args=self.pki.node_args("node1"))
        self.trusting = client_context(self.pki.ca_cert)

    def test_httpsAndTcpOverTls(self) -> None:
        """
        A client trusting the CA reads /info over HTTPS and gets a Pong for
        a Ping over TLS on the external TCP port.
        """
        status, body = https_get(self.node.ext_http_port, "/info", self.trusting)
        self.assertEqual(status, 200)
        self.assertIn(b"esVersion", body)
        reply = ping("127.0.0.1", self.node.ext_tcp_port, self.trusting)
        self.assertEqual(reply[0], 0x04)
        log = self.node.log()
        self.assertIn(
            f"Listening for external TCP (TLS) on 127.0.0.1:{self.node.ext_tcp_port}", log
        )
        self.assertIn("Loaded node certificate CN=eventstoredb-node", log)

    async def test_treq(self) -> None:
        """
        treq with a TLS policy that trusts the CA reads /info; the host name
        is checked (the certificate's DNS SAN C{localhost} is accepted).
        """
        import treq
        from twisted.internet import reactor
        from twisted.internet.ssl import Certificate
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

        with open(self.pki.ca_cert, "rb") as f:
            ca = Certificate.loadPEM(f.read())
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=ca), pool=pool)
        client = treq.client.HTTPClient(agent)
        response = await client.get(f"https://localhost:{self.node.ext_http_port}/info")
        self.assertEqual(response.code, 200)
        body = await response.json()
        self.assertIn("esVersion", body)

    def test_clientTrustingAnotherCA(self) -> None:
        """
        A client that trusts another CA does not accept the node, and the
        node logs that the client does not trust its certificate.
        """
        stranger = client_context(self.pki.other_ca_cert)
        with self.assertRaises(ssl.SSLCertVerificationError):
            https_get(self.node.ext_http_port, "/info", stranger)
        wait_for_log(self.node, "does not trust this node's certificate (unknown CA)")

    def test_plaintextRefused(self) -> None:
        """
        A plaintext HTTP request to the TLS HTTP port gets a plain 400 and
        is closed; a plaintext TCP package is closed without an answer;
        both are logged.
        """
        with socket.create_connection(("127.0.0.1", self.node.ext_http_port), timeout=10) as s:
            s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request"), answer)
        self.assertIn(b"HTTPS only", answer)
        with socket.create_connection(("127.0.0.1", self.node.ext_tcp_port), timeout=10) as s:
            package = bytes([0x03, 0x00]) + uuid.uuid4().bytes
            s.sendall(struct.pack("<i", len(package)) + package)
            self.assertEqual(s.recv(4096), b"")
        log = wait_for_log(self.node, "to external TCP, which speaks TLS only")
        self.assertIn("Refused a plaintext (non-TLS) connection from 127.0.0.1:", log)
        self.assertIn("to external HTTP, which speaks TLS only", log)

    def test_internalPortsMutualTls(self) -> None:
        """
        The internal TCP port answers a client with a node certificate of
        the cluster CA, and refuses (logging the reason and subject) one
        without a certificate, one from another CA, and one without the
        reserved node common name.
        """
        port = self.node.int_tcp_port
        good = client_context(self.pki.ca_cert, self.pki.node("peer", ips="127.0.0.2"))
        self.assertEqual(ping("127.0.0.1", port, good)[0], 0x04)

        self.assertTrue(refused("127.0.0.1", port, self.trusting))
        wait_for_log(self.node, "on internal TCP failed: it presented no certificate")

        other = client_context(self.pki.ca_cert, self.pki.node("stranger", ca="other-ca"))
        self.assertTrue(refused("127.0.0.1", port, other))
        log = wait_for_log(self.node, "unknown CA: it was issued by CN=other CA")
        self.assertIn("on internal TCP: unknown CA", log)

        wrong_cn = client_context(self.pki.ca_cert, self.pki.node("admin", common_name="admin"))
        self.assertTrue(refused("127.0.0.1", port, wrong_cn))
        wait_for_log(self.node, "wrong common name: it is admin")

        expired = client_context(self.pki.ca_cert, self.pki.expired_node("old"))
        self.assertTrue(refused("127.0.0.1", port, expired))
        log = wait_for_log(self.node, "on internal TCP: expired on")
        self.assertIn("(certificate subject: CN=eventstoredb-node; issuer: CN=estore CA)", log)

    def test_reloadOnSighup(self) -> None:
        """
        After the certificate files are replaced, SIGHUP makes the node
        serve the new certificate without a restart.
        """

        def served() -> bytes:
            with socket.create_connection(("127.0.0.1", self.node.ext_tcp_port), timeout=10) as r:
                with self.trusting.wrap_socket(r, server_hostname="127.0.0.1") as t:
                    der = t.getpeercert(binary_form=True)
                    assert der is not None
                    return der

        before = served()
        self.pki.node("node1", ips="127.0.0.1", dns="localhost,renewed.cluster", force=True)
        assert self.node.process is not None
        self.node.process.send_signal(signal.SIGHUP)
        wait_for_log(self.node, "Reloaded node certificate")
        after = served()
        self.assertNotEqual(before, after)
        self.assertIn("DNS renewed.cluster", self.node.log())

    def test_reloadOverHttp(self) -> None:
        """
        C{POST /admin/reloadcertificates} (ops) makes the node serve the new
        certificate files; when they are broken it answers 400 with the
        reason and keeps serving the previous certificate.
        """
        import base64
        import http.client

        def post(credentials: Optional[bytes]) -> tuple[int, bytes]:
            headers = {"Content-Length": "0"}
            if credentials is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.node.ext_http_port, context=self.trusting, timeout=10
            )
            try:
                connection.request("POST", "/admin/reloadcertificates", headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        def served() -> bytes:
            with socket.create_connection(("127.0.0.1", self.node.ext_tcp_port), timeout=10) as r:
                with self.trusting.wrap_socket(r, server_hostname="127.0.0.1") as t:
                    der = t.getpeercert(binary_form=True)
                    assert der is not None
                    return der

        before = served()
        self.assertEqual(post(None)[0], 401)
        self.pki.node("node1", ips="127.0.0.1", dns="localhost,renewed.cluster", force=True)
        status, body = post(b"ops:changeit")
        self.assertEqual((status, body), (200, b"reloaded CN=eventstoredb-node"))
        renewed = served()
        self.assertNotEqual(before, renewed)

        with open(self.pki.path("node1", "node.key"), "wb") as f:
            f.write(b"not a key\n")
        status, body = post(b"admin:changeit")
        self.assertEqual(status, 400)
        self.assertIn(b"previous certificate kept", body)
        self.assertEqual(served(), renewed)


#: node-eventstore-client over TLS, validating the server: append two events
#: and read them back.  Prints one JSON line; exits 0 when all went well.
NODE_TLS_CLIENT = r"""
'use strict';
const client = require('node-eventstore-client');
const uuid = require('uuid');
const port = parseInt(process.argv[1], 10);
const out = (o) => { process.stdout.write(JSON.stringify(o) + '\n'); process.exit(o.ok ? 0 : 1); };
setTimeout(() => out({ ok: false, error: 'deadline' }), 20000).unref();
(async () => {
  const conn = client.createConnection({
    log: { debug() {}, info() {}, error() {} },
    useSslConnection: true, validateServer: true, maxReconnections: 0, operationTimeout: 5000,
  }, 'tcp://127.0.0.1:' + port, 'tls-test');
  conn.on('error', () => {});
  const closed = new Promise((resolve) => conn.once('closed', (reason) => resolve(reason)));
  const connected = new Promise((resolve) => conn.once('connected', () => resolve('connected')));
  await conn.connect();
  const first = await Promise.race([connected, closed]);
  if (first !== 'connected') return out({ ok: false, closed: String(first) });
  const creds = new client.UserCredentials('admin', 'changeit');
  const events = [1, 2].map((n) => client.createJsonEventData(uuid.v4(), { n }, null, 'tls'));
  const stream = 'tls-' + uuid.v4();
  const w = await conn.appendToStream(stream, client.expectedVersion.noStream, events, creds);
  const r = await conn.readStreamEventsForward(stream, 0, 10, true, creds);
  conn.close();
  const next = String(w.nextExpectedVersion);
  out({ ok: next === '1' && r.events.length === 2, next, read: r.events.length });
})().catch((e) => out({ ok: false, error: String(e && e.stack || e) }));
"""


class TLSClientTests(TestCase):
    """
    A third-party TCP client (node-eventstore-client, validating the
    server against the CA) works over TLS.
    """

    def test_nodeEventstoreClient(self) -> None:
        """
        node-eventstore-client with C{useSslConnection} and
        C{validateServer} appends and reads over TLS when it trusts the CA
        (C{NODE_EXTRA_CA_CERTS}), and cannot connect when it does not (it
        closes without a TLS alert, so the node has nothing to log).
        """
        js = os.path.join(REPO_ROOT, "tests", "js")
        node_bin = shutil.which("node")
        if node_bin is None or not os.path.isdir(
            os.path.join(js, "node_modules", "node-eventstore-client")
        ):
            raise SkipTest("node or node-eventstore-client is not installed")
        pki = PKI(self.mktemp())
        pki.node("node1")
        node = start_node(self, mem_db=True, extra_args=pki.node_args("node1"))

        def run(ca: str) -> dict[str, Any]:
            result = subprocess.run(
                [node_bin, "-e", NODE_TLS_CLIENT, str(node.ext_tcp_port)],
                cwd=js,
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(os.environ, NODE_EXTRA_CA_CERTS=ca),
            )
            lines = result.stdout.strip().splitlines()
            self.assertTrue(lines, result.stderr)
            return json.loads(lines[-1])  # type: ignore[no-any-return]

        trusted = run(pki.ca_cert)
        self.assertTrue(trusted["ok"], trusted)
        self.assertEqual(trusted["read"], 2)
        untrusted = run(pki.other_ca_cert)
        self.assertFalse(untrusted["ok"], untrusted)
        self.assertIn("closed", untrusted)  # it never got to connect


class RefuseToStartTests(TestCase):
    """
    Startup refusals are one clear line and the node exits.
    """

    def run_node(self, *args: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        ports = []
        for flag in ("--ext-tcp-port", "--int-tcp-port", "--ext-http-port", "--int-http-port"):
            ports += [flag, str(free_port())]
        command = twistd_command() + ["-n", "--pidfile=", "estore", "--mem-db", *ports, *args]
        result = subprocess.run(
            command,
            cwd=directory,
            capture_output=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        )
        return result.stdout.decode() + result.stderr.decode()

    def test_plaintextOnNonLoopback(self) -> None:
        """
        A plaintext endpoint on a non-loopback address without Insecure is
        refused before anything listens.  (192.0.2.1 is a documentation
        address, not on this machine: nothing could bind to it anyway.)
        """
        output = self.run_node("--ext-ip", "192.0.2.1")
        self.assertIn(
            "Refusing to start: ExtIp is 192.0.2.1 (command line --ext-ip), not a loopback "
            "address, and no certificate is configured",
            output,
        )
        self.assertNotIn("Listening for", output)

    def test_keyDoesNotMatch(self) -> None:
        """
        A key that does not belong to the certificate stops the node with
        the reason.
        """
        pki = PKI(self.mktemp())
        cert, _ = pki.node("a")
        _, other_key = pki.node("b")
        output = self.run_node(
            "--certificate-file",
            cert,
            "--certificate-private-key-file",
            other_key,
            "--trusted-root-certificates-path",
            pki.path("roots"),
        )
        self.assertIn("Refusing to start: key doesn't match certificate", output)
        self.assertNotIn("Listening for", output)


#: Fast gossip and elections for the cluster tests.
FAST = [
    "--gossip-interval-ms",
    "100",
    "--gossip-timeout-ms",
    "500",
    "--leader-election-timeout-ms",
    "500",
]


def https_json(node: NodeProcess, path: str, context: ssl.SSLContext) -> Optional[Any]:
    try:
        status, body = https_get_host(node.host, node.ext_http_port, path, context)
    except (OSError, ssl.SSLError):
        return None
    if status != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def https_request(
    node: NodeProcess,
    method: str,
    path: str,
    context: ssl.SSLContext,
    body: Optional[bytes] = None,
    headers: Optional[dict[str, str]] = None,
) -> tuple[int, bytes]:
    """
    One HTTPS request to the node's external HTTP port, as admin.
    """
    import base64
    import http.client

    connection = http.client.HTTPSConnection(
        node.host, node.ext_http_port, context=context, timeout=10
    )
    all_headers = {"Authorization": "Basic " + base64.b64encode(b"admin:changeit").decode()}
    all_headers.update(headers or {})
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def https_get_host(host: str, port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPSConnection(host, port, context=context, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class TLSClusterTests(TestCase):
    """
    Three nodes on 127.0.0.1-3 started from the etc/tls example files
    (certificate paths relative to the working directory, as documented),
    with certificates from C{estore certs}: gossip and elections run over
    mutual TLS.  A node whose certificate comes from another CA is refused
    by the cluster, and refuses it in turn, both with the reason logged.
    """

    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        for n in (1, 2, 3):
            self.pki.node(f"node{n}", ips=f"127.0.0.{n}", dns=f"node{n}.estore.local")
        self.context = client_context(self.pki.ca_cert)
        self.nodes: list[NodeProcess] = []
        hosts = [f"127.0.0.{n}" for n in (1, 2, 3)]
        ports = [
            {name: free_port(host) for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for host in hosts
        ]
        for n, host in enumerate(hosts, start=1):
            seeds = ",".join(
                f"{other}:{ports[i]['int_http']}" for i, other in enumerate(hosts) if other != host
            )
            self.nodes.append(
                self.make_node(
                    f"node{n}",
                    host,
                    ports[n - 1],
                    [
                        "--config",
                        os.path.join(REPO_ROOT, "etc", "tls", f"node{n}.yaml"),
                        "--gossip-seed",
                        seeds,
                        *FAST,
                    ],
                )
            )

    def make_node(
        self, name: str, host: str, ports: dict[str, int], args: list[str]
    ) -> NodeProcess:
        directory = os.path.join(self.pki.directory, "run", name)
        os.makedirs(directory)
        # The example files name certs/nodeN/node.crt and certs/ca relative
        # to the working directory.
        os.symlink(self.pki.directory, os.path.join(directory, "certs"))
        node = NodeProcess(directory, host=host, ports=ports, mem_db=True, extra_args=args)
        self.addCleanup(node.stop)
        return node

    def states(self) -> dict[str, Optional[str]]:
        """
        Each node's own state, from its /gossip over HTTPS.
        """
        out: dict[str, Optional[str]] = {}
        for node in self.nodes:
            doc = https_json(node, "/gossip?format=json", self.context)
            state = None
            if doc is not None:
                for m in doc.get("members", []):
                    if m.get("internalHttpIp") == node.host and m.get("isAlive"):
                        state = m.get("state")
            out[node.host] = state
        return out

    def wait_for_leader(self, timeout: float = 30.0) -> dict[str, Optional[str]]:
        deadline = time.monotonic() + timeout
        states: dict[str, Optional[str]] = {}
        while time.monotonic() < deadline:
            states = self.states()
            values = sorted(str(s) for s in states.values())
            if values == ["Master", "Slave", "Slave"]:
                return states
            time.sleep(0.1)
        raise AssertionError(
            f"no leader over TLS after {timeout}s: {states}\n"
            + "\n".join(n.log()[-2000:] for n in self.nodes)
        )

    def test_electsLeaderOverMutualTls(self) -> None:
        """
        The three nodes find each other over HTTPS gossip with mutual TLS
        and agree on one leader; no certificate is refused.
        """
        for node in self.nodes:
            node.start()
        self.wait_for_leader()
        for node in self.nodes:
            log = node.log()
            self.assertIn("Listening for internal HTTP (TLS)", log)
            self.assertNotIn("Refused the certificate", log)

    def test_replicatesOverMutualTls(self) -> None:
        """
        A write to the leader is acknowledged only once a quorum has it, so
        its acknowledgement shows that replication runs over the mutual-TLS
        internal TCP port; the followers then serve the event.
        """
        for node in self.nodes:
            node.start()
        states = self.wait_for_leader()
        leader = next(n for n in self.nodes if states[n.host] == "Master")
        followers = [n for n in self.nodes if n is not leader]
        status, body = https_request(
            leader,
            "POST",
            "/streams/over-tls",
            self.context,
            b'{"n": 1}',
            {
                "Content-Type": "application/json",
                "ES-EventType": "tested",
                "ES-EventId": str(uuid.uuid4()),
            },
        )
        self.assertEqual(status, 201, body)
        for follower in followers:
            deadline = time.monotonic() + 20
            got: tuple[int, bytes] = (0, b"")
            while time.monotonic() < deadline:
                got = https_request(
                    follower,
                    "GET",
                    "/streams/over-tls/0",
                    self.context,
                    headers={"Accept": "application/json", "ES-RequireMaster": "False"},
                )
                if got[0] == 200:
                    break
                time.sleep(0.1)
            self.assertEqual(got, (200, b'{"n": 1}'))
            self.assertNotIn("Refused the certificate", follower.log())

    def test_writesAndReadsThroughEveryNode(self) -> None:
        """
        Issue 11 item 4: an HTTPS write to any node is answered 201 (a
        follower forwards it to the leader over HTTPS, checking the leader's
        certificate), and every node then serves all the writes in order.
        """
        for node in self.nodes:
            node.start()
        self.wait_for_leader()
        for i, node in enumerate(self.nodes):
            status, body = https_request(
                node,
                "POST",
                "/streams/every-node",
                self.context,
                json.dumps({"n": i}).encode(),
                {
                    "Content-Type": "application/json",
                    "ES-EventType": "tested",
                    "ES-EventId": str(uuid.uuid4()),
                },
            )
            self.assertEqual(status, 201, (node.host, body, node.log()[-2000:]))
        for node in self.nodes:
            deadline = time.monotonic() + 20
            got: list[int] = []
            while time.monotonic() < deadline:
                got = []
                for n in range(3):
                    status, body = https_request(
                        node,
                        "GET",
                        f"/streams/every-node/{n}",
                        self.context,
                        headers={"Accept": "application/json", "ES-RequireMaster": "False"},
                    )
                    if status != 200:
                        break
                    got.append(json.loads(body)["n"])
                if got == [0, 1, 2]:
                    break
                time.sleep(0.1)
            self.assertEqual(got, [0, 1, 2], node.host)
            self.assertNotIn("Refused the certificate", node.log())

    def start_intruder(self, name: str, trusted: list[str]) -> NodeProcess:
        """
        Start a node on 127.0.0.4 with a certificate from the other CA,
        trusting the CA certificates C{trusted}, gossiping to node 1.
        """
        self.pki.node(name, ips="127.0.0.4", ca="other-ca")
        roots = self.pki.path(f"{name}-roots")
        os.makedirs(roots)
        for i, ca in enumerate(trusted):
            with open(ca, "rb") as src, open(os.path.join(roots, f"ca{i}.crt"), "wb") as dst:
                dst.write(src.read())
        host = "127.0.0.4"
        ports = {n: free_port(host) for n in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
        intruder = self.make_node(
            name,
            host,
            ports,
            [
                "--cluster-size",
                "3",
                "--discover-via-dns",
                "false",
                "--gossip-seed",
                f"127.0.0.1:{self.nodes[0].int_http_port}",
                "--certificate-file",
                self.pki.path(name, "node.crt"),
                "--certificate-private-key-file",
                self.pki.path(name, "node.key"),
                "--trusted-root-certificates-path",
                roots,
                *FAST,
            ],
        )
        return intruder.start()

    def test_foreignNodeRefused(self) -> None:
        """
        A fourth node with a certificate from another CA gossips to node 1.
        Trusting only its own CA, it refuses node 1's certificate (unknown
        CA, logged by it) and node 1 logs that the peer does not trust its
        certificate.  Trusting both CAs, it gets as far as presenting its
        certificate, which node 1 refuses as from an unknown CA, naming the
        issuer.  Each refusal is logged once, not once per gossip round.
        The cluster keeps its leader throughout.
        """
        for node in self.nodes:
            node.start()
        self.wait_for_leader()
        first = self.start_intruder("intruder1", [self.pki.other_ca_cert])
        log = wait_for_log(first, "unknown CA: its chain ends at CN=estore CA", 20)
        self.assertIn(
            f"Refused the certificate of the peer 127.0.0.1 (127.0.0.1:"
            f"{self.nodes[0].int_http_port}) on https://127.0.0.1:",
            log,
        )
        wait_for_log(self.nodes[0], "the peer does not trust this node's certificate", 20)
        first.stop()

        second = self.start_intruder("intruder2", [self.pki.other_ca_cert, self.pki.ca_cert])
        log = wait_for_log(self.nodes[0], "unknown CA: its chain ends at CN=other CA", 20)
        self.assertIn("on internal HTTP: unknown CA", log)
        time.sleep(1)  # ten gossip rounds
        self.assertEqual(self.nodes[0].log().count("unknown CA: its chain ends at CN=other CA"), 1)
        self.assertTrue(second.process is not None and second.process.poll() is None)
        self.assertEqual(
            sorted(str(s) for s in self.states().values()), ["Master", "Slave", "Slave"]
        )

    def test_wrongSanRefusedByDialler(self) -> None:
        """
        A fourth node from the right CA whose certificate names 127.0.0.9
        but which runs on 127.0.0.5 warns at startup; node 1 accepts its
        gossip (as a TLS server it checks the CA and the node common name),
        but refuses it when dialling it back at 127.0.0.5, logging the SAN
        mismatch with the address dialled.
        """
        for node in self.nodes:
            node.start()
        self.wait_for_leader()
        self.pki.node("liar", ips="127.0.0.9", dns="node9.estore.local")
        host = "127.0.0.5"
        ports = {n: free_port(host) for n in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
        liar = self.make_node(
            "liar",
            host,
            ports,
            [
                "--cluster-size",
                "3",
                "--discover-via-dns",
                "false",
                "--gossip-seed",
                f"127.0.0.1:{self.nodes[0].int_http_port}",
                *self.pki.node_args("liar"),
                *FAST,
            ],
        )
        liar.start()
        wait_for_log(liar, "does not cover 127.0.0.5 (IntIp as advertised)")
        log = wait_for_log(self.nodes[0], "SAN mismatch", 20)
        self.assertIn(
            "subject alternative names (IP 127.0.0.9, DNS node9.estore.local) do not match "
            "127.0.0.5, the address dialled",
            log,
        )
