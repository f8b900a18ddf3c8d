# -*- test-case-name: tests.test_cluster_membership -*-
"""
System tests of cluster membership with real node processes on loopback:
the three-node cluster of the Event Store "Setting up an OSS cluster" guide
(ports 1111-1114, 2111-2114, 3111-3114 and its gossip seeds), the same
cluster found through DNS (a twisted.names server on 127.0.0.1 serving one
A record per node, nodes on 127.0.0.1-3 with the same ports), and a
five-node cluster losing two nodes.

Leaders are observed the way clients do: C{GET /gossip?format=json} on
each running node's external HTTP port.  Gossip and election timings are
shortened with flags (100 ms gossip interval, 500 ms timeouts) so the
whole module runs in well under three minutes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, TestCase

from tests.harness import REPO_ROOT, NodeProcess, free_port

#: Timing flags: fast gossip so that the tests are quick.
FAST = [
    "--gossip-interval-ms",
    "100",
    "--gossip-timeout-ms",
    "500",
    "--leader-election-timeout-ms",
    "500",
]

#: Longest wait for a leader to appear (seconds).
LEADER_WAIT = 20.0


def gossip(node: NodeProcess, timeout: float = 1.0) -> Optional[dict[str, Any]]:
    """
    The node's C{/gossip} document, or C{None} if it does not answer.
    """
    url = f"http://{node.host}:{node.ext_http_port}/gossip?format=json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, urllib.error.URLError, ValueError):
        return None


def own_record(node: NodeProcess, doc: dict[str, Any]) -> Optional[dict[str, Any]]:
    for m in doc["members"]:
        if m["internalHttpIp"] == node.host and m["internalHttpPort"] == node.int_http_port:
            return m  # type: ignore[no-any-return]
    return None


def running(nodes: Sequence[NodeProcess]) -> list[NodeProcess]:
    return [n for n in nodes if n.process is not None and n.process.poll() is None]


def agreed_leader(nodes: Sequence[NodeProcess]) -> Optional[NodeProcess]:
    """
    The leader if every running node agrees: exactly one of them says it
    is Master, every other says Slave, and every table shows that leader
    alive and Master.
    """
    docs = {}
    for n in running(nodes):
        doc = gossip(n)
        if doc is None:
            return None
        docs[n] = doc
    masters = []
    for n, doc in docs.items():
        me = own_record(n, doc)
        if me is None:
            return None
        if me["state"] == "Master":
            masters.append(n)
        elif me["state"] != "Slave":
            return None
    if len(masters) != 1:
        return None
    leader = masters[0]
    for doc in docs.values():
        record = own_record(leader, doc)
        if record is None or not record["isAlive"] or record["state"] != "Master":
            return None
    return leader


def wait_for_leader(nodes: Sequence[NodeProcess], timeout: float = LEADER_WAIT) -> NodeProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = agreed_leader(nodes)
        if leader is not None:
            return leader
        time.sleep(0.05)
    states = {n.int_http_port: _states(n) for n in running(nodes)}
    raise AssertionError(f"no agreed leader after {timeout}s: {states}")


def eventually(check: Callable[[], None], timeout: float, interval: float = 0.1) -> None:
    """
    Run C{check} until it passes (raises no L{AssertionError} or
    L{OSError}) or C{timeout} seconds have passed; then raise its last
    error.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except (AssertionError, OSError):
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def _states(node: NodeProcess) -> Any:
    doc = gossip(node)
    if doc is None:
        return None
    return [(m["internalHttpPort"], m["state"], m["isAlive"]) for m in doc["members"]]


def masters(nodes: Sequence[NodeProcess]) -> list[NodeProcess]:
    """
    Running nodes that say they are Master.
    """
    out = []
    for n in running(nodes):
        doc = gossip(n)
        me = own_record(n, doc) if doc is not None else None
        if me is not None and me["state"] == "Master":
            out.append(n)
    return out


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the node's listener does: connections in TIME_WAIT don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def start_all(nodes: Sequence[NodeProcess]) -> None:
    """
    Start nodes in parallel (each start waits for its ports).
    """
    with ThreadPoolExecutor(len(nodes)) as pool:
        for future in [pool.submit(n.start) for n in nodes]:
            future.result()


def failover_scenario(test: TestCase, nodes: list[NodeProcess]) -> None:
    """
    On a running three-node cluster: one leader; killing it elects
    another; the killed node rejoins as a follower; losing a follower keeps
    the leader; with two of three down there is no leader; once they are
    back there is a leader again.
    """
    leader = wait_for_leader(nodes)

    # Kill the leader: the two others elect a new one.
    leader.kill()
    second = wait_for_leader(nodes)
    test.assertIsNot(second, leader)

    # The killed node comes back and follows the new leader.
    leader.start()
    test.assertIs(wait_for_leader(nodes), second)

    # Kill a follower: the remaining two keep their leader.
    follower = next(n for n in nodes if n is not second and n is not leader)
    follower.kill()
    time.sleep(1.0)
    test.assertIs(wait_for_leader(nodes), second)

    # Kill a second node: the survivor is alone, a minority: no leader.
    second.kill()
    survivor = running(nodes)
    test.assertEqual(len(survivor), 1)
    deadline = time.monotonic() + 10
    while masters(nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    test.assertEqual(masters(nodes), [])
    time.sleep(1.5)
    test.assertEqual(masters(nodes), [], "a minority elected a leader")

    # Restart both: a leader again.
    start_all([follower, second])
    wait_for_leader(nodes)
    test.assertEqual(len(masters(nodes)), 1)


class ClusterTestCase(TestCase):
    timeout = 170

    def track(self, nodes: Sequence[NodeProcess]) -> list[NodeProcess]:
        for n in nodes:
            self.addCleanup(n.stop)
        return list(nodes)


class SeedClusterTests(ClusterTestCase):
    """
    The guide's three loopback nodes with gossip seeds.
    """

    def nodes(self) -> list[NodeProcess]:
        nodes = []
        for i in (1, 2, 3):
            ports = {
                "int_tcp": i * 1000 + 111,
                "ext_tcp": i * 1000 + 112,
                "int_http": i * 1000 + 113,
                "ext_http": i * 1000 + 114,
            }
            if not all(port_free("127.0.0.1", p) for p in ports.values()):
                raise SkipTest(f"the guide's ports for node {i} are taken")
            # The node's settings are the guide's, from etc/cluster-nodeN.yaml
            # (the harness repeats the same addresses and ports as flags).
            config = os.path.join(REPO_ROOT, "etc", f"cluster-node{i}.yaml")
            args = ["--config", config] + FAST
            directory = os.path.join(self.mktemp(), f"node{i}")
            nodes.append(NodeProcess(directory, ports=ports, extra_args=args, mem_db=True))
        return self.track(nodes)

    def test_leader_failover_and_quorum(self) -> None:
        """
        One leader; killing it elects another; losing a follower keeps the
        leader; with two of three down there is no leader; once they are
        back there is a leader again.
        """
        nodes = self.nodes()
        start_all(nodes)
        failover_scenario(self, nodes)

    def test_gossip_document_shape(self) -> None:
        """
        C{/gossip} on the external and internal ports lists the three nodes
        with the v5 fields, whatever the Host header says; C{/info} tells
        each node's state.

        An agreed leader does not mean every table already has every
        member's full record, and under load a follower may still be
        settling: the checks are polled until they hold (bounded).
        """
        nodes = self.nodes()
        start_all(nodes)
        wait_for_leader(nodes)

        def states_agree() -> None:
            leader = agreed_leader(nodes)
            assert leader is not None, "no agreed leader"
            for n in nodes:
                url = f"http://127.0.0.1:{n.ext_http_port}/info"
                with urllib.request.urlopen(url, timeout=5) as response:
                    info = json.loads(response.read())
                self.assertEqual(info["state"], "master" if n is leader else "slave")

        eventually(states_agree, LEADER_WAIT)
        node = nodes[0]

        def document_shape() -> None:
            for port in (node.ext_http_port, node.int_http_port):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/gossip", headers={"Host": "cluster.example.com:80"}
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.assertEqual(response.status, 200)
                    doc = json.loads(response.read())
                self.assertEqual(doc["serverIp"], "127.0.0.1")
                self.assertEqual(doc["serverPort"], node.int_http_port)
                ports = sorted(m["externalHttpPort"] for m in doc["members"])
                self.assertEqual(ports, [1114, 2114, 3114])
                self.assertEqual(
                    list(doc["members"][0])[:4], ["instanceId", "timeStamp", "state", "isAlive"]
                )

        eventually(document_shape, LEADER_WAIT)


class DnsClusterTests(ClusterTestCase):
    """
    Three nodes on 127.0.0.1, 127.0.0.2, 127.0.0.3 with the same ports,
    found through a DNS name served by a twisted.names server on loopback.
    """

    name = "cluster.estore.test"

    def dns_server(self, addresses: Sequence[str]) -> int:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_dns", str(port), self.name, *addresses],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            process.kill()
            process.wait(10)
            assert process.stdout is not None
            process.stdout.close()

        self.addCleanup(stop)
        assert process.stdout is not None
        line = process.stdout.readline()
        if b"ready" not in line:
            raise AssertionError(f"DNS server did not start: {line!r}")
        return port

    def nodes(self, dns_port: int, hosts: Sequence[str]) -> list[NodeProcess]:
        for host in hosts:
            if not port_free(host, 0):
                raise SkipTest(f"cannot bind {host}")
        ports = {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
        for host in hosts:
            if not all(port_free(host, p) for p in ports.values()):
                raise SkipTest("ports taken")
        args = [
            "--cluster-size=3",
            f"--cluster-dns={self.name}",
            f"--cluster-gossip-port={ports['int_http']}",
            f"--cluster-dns-server=127.0.0.1:{dns_port}",
        ] + FAST
        base = self.mktemp()
        return self.track(
            [
                NodeProcess(
                    os.path.join(base, host), host=host, ports=dict(ports), extra_args=args,
                    mem_db=True,
                )
                for host in hosts
            ]
        )

    def test_dns_discovery_failover(self) -> None:
        """
        Nodes find each other through the DNS name's A records and elect a
        leader; then the failover scenario of the seed cluster.
        """
        hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        dns_port = self.dns_server(hosts)
        nodes = self.nodes(dns_port, hosts)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        # a leader can be agreed by two nodes before the third is in its
        # gossip: wait (bounded) until every A record's node is a member
        members: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            doc = gossip(leader)
            if doc is not None:
                members = sorted(
                    m["internalHttpIp"] for m in doc["members"] if m["state"] != "Manager"
                )
                if members == hosts:
                    break
            time.sleep(0.1)
        self.assertEqual(members, hosts)
        self.assertIn("DNS discovery: cluster.estore.test resolves to", leader.log())
        failover_scenario(self, nodes)

    def test_dns_finds_nothing_is_logged(self) -> None:
        """
        A name the DNS server does not know: the node says so, naming it,
        and keeps running without a leader.
        """
        dns_port = self.dns_server(["127.0.0.9"])
        self.name = "missing.estore.test"
        (node,) = self.nodes(dns_port, ["127.0.0.1"])
        node.start()
        deadline = time.monotonic() + 10
        while "missing.estore.test" not in node.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("DNS discovery: cannot resolve missing.estore.test", node.log())
        self.assertEqual(masters([node]), [])


class FiveNodeTests(ClusterTestCase):
    def test_survives_two_nodes_down(self) -> None:
        """
        A five-node cluster keeps (or elects) a leader with two nodes down,
        including the leader.  One node advertises other external
        addresses (NAT): gossip shows those, not the bound ones.
        """
        ports = [
            {name: free_port() for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for _ in range(5)
        ]
        base = self.mktemp()
        nodes = []
        for i, p in enumerate(ports):
            seeds = ",".join(f"127.0.0.1:{q['int_http']}" for q in ports if q is not p)
            args = ["--cluster-size=5", "--discover-via-dns=false", f"--gossip-seed={seeds}"]
            if i == 0:
                # Behind NAT: clients must be told another address.
                args += [
                    "--ext-ip-advertise-as=10.20.30.40",
                    "--ext-http-port-advertise-as=8080",
                    "--ext-tcp-port-advertise-as=1999",
                ]
            nodes.append(
                NodeProcess(
                    os.path.join(base, f"node{i}"), ports=p, extra_args=args + FAST, mem_db=True
                )
            )
        self.track(nodes)
        start_all(nodes)
        leader = wait_for_leader(nodes)
        doc = gossip(nodes[1])
        assert doc is not None
        (natted,) = [m for m in doc["members"] if m["internalHttpPort"] == ports[0]["int_http"]]
        self.assertEqual(
            (natted["externalHttpIp"], natted["externalHttpPort"], natted["externalTcpIp"],
             natted["externalTcpPort"]),
            ("10.20.30.40", 8080, "10.20.30.40", 1999),
        )
        self.assertEqual(natted["internalHttpIp"], "127.0.0.1")
        follower = next(n for n in nodes if n is not leader)
        leader.kill()
        follower.kill()
        second = wait_for_leader(nodes)
        self.assertNotIn(second, (leader, follower))
        self.assertEqual(len(running(nodes)), 3)


class SeedLogTests(ClusterTestCase):
    def test_silent_seed_is_logged(self) -> None:
        """
        A seed nobody listens on is named in the log.
        """
        silent = free_port()
        node = NodeProcess(
            self.mktemp(),
            extra_args=[
                "--cluster-size=3",
                "--discover-via-dns=false",
                f"--gossip-seed=127.0.0.1:{silent}",
            ]
            + FAST,
            mem_db=True,
        )
        self.track([node])
        node.start()
        deadline = time.monotonic() + 10
        text = f"Gossip seed 127.0.0.1:{silent} does not answer"
        while text not in node.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn(text, node.log())
        doc = gossip(node)
        assert doc is not None
        me = own_record(node, doc)
        assert me is not None
        self.assertEqual(me["state"], "Unknown")
