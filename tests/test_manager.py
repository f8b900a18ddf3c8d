# -*- test-case-name: tests.test_manager -*-
"""
System tests of manager nodes with real processes: the three-machine
example of the guide "Setting up a Cluster with Manager Nodes" mapped to
127.0.0.1-3, one C{twistd -n estore-manager} per machine, each supervising
one database node through its watchdog file.

Every manager is started in its own process group; cleanup kills the
group, so the database nodes a manager started go too, whatever state the
test left them in.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, TestCase

from tests.harness import REPO_ROOT, free_port, node_environment, twistd_command, wait_for_port

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")

#: Fast gossip and elections for the database nodes (YAML keys).
FAST_NODE = {
    "GossipIntervalMs": 100,
    "GossipTimeoutMs": 500,
    "LeaderElectionTimeoutMs": 500,
}
#: Fast gossip for the managers.
FAST_MANAGER = {"GossipIntervalMs": 100, "GossipTimeoutMs": 500}

#: Longest wait for a cluster to form (seconds).
FORM_WAIT = 40.0


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def same_ports_everywhere(names: Sequence[str], hosts: Sequence[str]) -> dict[str, int]:
    """
    One port per name, free on every host (as the guide uses the same
    ports on each machine).
    """
    for _ in range(20):
        ports = {name: free_port() for name in names}
        if len(set(ports.values())) == len(ports) and all(
            port_free(h, p) for h in hosts for p in ports.values()
        ):
            return ports
    raise SkipTest("no ports free on every loopback address")


def get_json(url: str, timeout: float = 1.0, context: Optional[ssl.SSLContext] = None
             ) -> Optional[Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def eventually(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """
    Call C{check} until it returns without an L{AssertionError}; return
    what it returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def write_yaml(path: str, values: dict[str, Any]) -> str:
    with open(path, "w") as f:
        f.write("---\n")
        for key, value in values.items():
            f.write(f"{key}: {json.dumps(value)}\n")
    return path


class Machine:
    """
    One "machine" of the guide: a directory with C{manager.yaml},
    C{database.yaml} and C{watchdog.esconfig}, and the manager process.
    """

    def __init__(
        self,
        directory: str,
        host: str,
        ports: dict[str, int],
        manager_extra: dict[str, Any],
        database_extra: Optional[dict[str, Any]] = None,
        watchdog_text: Optional[str] = None,
    ) -> None:
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.host = host
        self.ports = ports
        self.log_dir = os.path.join(self.directory, "manager-log")
        database = {
            "Db": os.path.join(self.directory, "es-data"),
            "ChunkSize": 1024 * 1024,
            "IntIp": host,
            "ExtIp": host,
            "IntTcpPort": ports["int_tcp"],
            "IntHttpPort": ports["int_http"],
            "ExtTcpPort": ports["ext_tcp"],
            "ExtHttpPort": ports["ext_http"],
            "DiscoverViaDns": False,
            "GossipSeed": [f"{host}:{ports['manager_int']}"],
            "ClusterSize": 3,
            **FAST_NODE,
            **(database_extra or {}),
        }
        self.database_yaml = write_yaml(os.path.join(self.directory, "database.yaml"), database)
        self.watchdog = os.path.join(self.directory, "watchdog.esconfig")
        with open(self.watchdog, "w") as f:
            f.write(watchdog_text if watchdog_text is not None
                    else f"# --config {self.database_yaml}\n")
        manager = {
            "IntIp": host,
            "ExtIp": host,
            "IntHttpPort": ports["manager_int"],
            "ExtHttpPort": ports["manager_ext"],
            "EnableWatchdog": True,
            "WatchdogConfig": self.watchdog,
            "Log": self.log_dir,
            **FAST_MANAGER,
            **manager_extra,
        }
        self.manager_yaml = write_yaml(os.path.join(self.directory, "manager.yaml"), manager)
        self.process: Optional[subprocess.Popen[bytes]] = None
        #: Set for a TLS cluster: HTTPS with this context.
        self.ssl_context: Optional[ssl.SSLContext] = None
        self.output_path = os.path.join(self.directory, "manager.out")

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.ports['manager_ext']}"

    @property
    def gossip_url(self) -> str:
        return self.base_url + "/gossip"

    def gossip(self) -> Optional[dict[str, Any]]:
        return get_json(self.gossip_url, context=self.ssl_context)  # type: ignore[no-any-return]

    @property
    def node_pid_file(self) -> str:
        return os.path.join(self.log_dir, "node-1.pid")

    def start(self) -> None:
        with open(self.output_path, "ab") as out:
            self.process = subprocess.Popen(
                twistd_command()
                + ["-n", "--pidfile=", "estore-manager", "--config", self.manager_yaml],
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=node_environment(),
                start_new_session=True,
            )
        wait_for_port(self.host, self.ports["manager_ext"], 30, self.process)

    def stop(self) -> None:
        """
        Kill the manager's process group (its nodes included) and wait.
        """
        process = self.process
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(15 if sig == signal.SIGTERM else 10)
            except subprocess.TimeoutExpired:
                continue
            # The group may outlive its leader (nodes in it): kill the rest.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if process.poll() is None:
            process.wait(10)

    def output(self) -> str:
        try:
            with open(self.output_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def node_log(self) -> str:
        try:
            with open(os.path.join(self.log_dir, "node-1.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def watchdog_status(self) -> list[dict[str, Any]]:
        doc = get_json(self.base_url + "/watchdog", context=self.ssl_context)
        assert doc is not None, "manager does not answer /watchdog"
        return doc["nodes"]  # type: ignore[no-any-return]

    def node_pid(self) -> int:
        (node,) = self.watchdog_status()
        assert node["pid"] is not None, node
        return int(node["pid"])

    def own_node(self, doc: dict[str, Any]) -> Optional[dict[str, Any]]:
        for m in doc["members"]:
            if m["internalHttpIp"] == self.host and m["internalHttpPort"] == self.ports["int_http"]:
                return m  # type: ignore[no-any-return]
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class ManagerTestCase(TestCase):
    """
    Builds the machines of a test; no tests of its own.
    """

    timeout = 240

    def machines(self, manager_extra: Callable[[str], dict[str, Any]],
                 database_extra: Optional[Callable[[str], dict[str, Any]]] = None
                 ) -> list[Machine]:
        for host in HOSTS:
            if not port_free(host, 0):
                raise SkipTest(f"cannot bind {host}")
        ports = same_ports_everywhere(
            ("int_tcp", "ext_tcp", "int_http", "ext_http", "manager_int", "manager_ext"), HOSTS
        )
        self.ports = ports
        base = self.mktemp()
        machines = [
            Machine(os.path.join(base, f"machine{i + 1}"), host, dict(ports),
                    manager_extra(host), database_extra(host) if database_extra else None)
            for i, host in enumerate(HOSTS)
        ]
        for m in machines:
            self.addCleanup(m.stop)
        return machines

    def seed_machines(self) -> list[Machine]:
        def extra(host: str) -> dict[str, Any]:
            return {
                "DiscoverViaDns": False,
                "GossipSeed": [f"{h}:{self.ports['manager_int']}" for h in HOSTS if h != host],
            }

        return self.machines(extra)

    def wait_for_cluster(self, machines: Sequence[Machine]) -> dict[str, Any]:
        """
        Every manager's C{/gossip} shows the three managers (state Manager)
        and the three database nodes alive, one Master and two Slaves.

        @return: the last document read.
        """

        def check() -> dict[str, Any]:
            doc: dict[str, Any] = {}
            for m in machines:
                doc = m.gossip() or {}
                assert doc, f"{m.host} manager does not answer"
                alive = [x for x in doc["members"] if x["isAlive"]]
                states = sorted(x["state"] for x in alive)
                assert states == ["Manager"] * 3 + ["Master", "Slave", "Slave"], states
            return doc

        try:
            return eventually(check, FORM_WAIT)  # type: ignore[no-any-return]
        except AssertionError as e:
            logs = "\n".join(f"--- {m.host} manager ---\n{m.output()[-2000:]}\n"
                             f"--- {m.host} node ---\n{m.node_log()[-2000:]}" for m in machines)
            raise AssertionError(f"{e}\n{logs}") from None

    def single_machines(self, count: int,
                        manager_extra: Optional[dict[str, Any]] = None) -> list[Machine]:
        machines = self.machines(
            lambda host: {"DiscoverViaDns": False, **(manager_extra or {})},
            lambda host: {"ClusterSize": 1, "GossipSeed": []},
        )
        return machines[:count]


class ManagerClusterTests(ManagerTestCase):
    """
    Three managers found through GossipSeed, each supervising one database
    node; and single machines for the watchdog's own behaviour.
    """

    def test_gossip_seeds_cluster_kill_node(self) -> None:
        """
        Managers found through GossipSeed start their nodes, a cluster with
        one leader forms, visible in every manager's C{/gossip}; a
        SIGKILLed database node is restarted by its watchdog and is back in
        gossip (a new instance, alive) within a few seconds.
        """
        machines = self.seed_machines()
        for m in machines:
            m.start()
        doc = self.wait_for_cluster(machines)
        managers = [x for x in doc["members"] if x["state"] == "Manager"]
        self.assertEqual(sorted((x["externalHttpIp"], x["externalHttpPort"]) for x in managers),
                         [(h, self.ports["manager_ext"]) for h in HOSTS])

        victim = machines[1]
        before = victim.own_node(victim.gossip())  # type: ignore[arg-type]
        assert before is not None
        pid = victim.node_pid()
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def back() -> float:
            doc = machines[0].gossip()
            assert doc is not None
            record = victim.own_node(doc)
            assert record is not None and record["isAlive"], record
            assert record["instanceId"] != before["instanceId"], "still the old instance"
            assert record["state"] in ("Slave", "Master", "CatchingUp", "PreReplica",
                                       "Unknown"), record
            return time.monotonic() - killed_at

        def respawned() -> float:
            (node,) = victim.watchdog_status()
            assert node["pid"] not in (None, pid), node
            return time.monotonic() - killed_at

        def listening() -> float:
            assert not port_free(victim.host, victim.ports["int_http"])
            return time.monotonic() - killed_at

        spawned_after = eventually(respawned, 30, interval=0.02)
        listening_after = eventually(listening, 30, interval=0.02)
        elapsed = eventually(back, 30, interval=0.05)
        status = victim.watchdog_status()[0]
        self.assertEqual((status["restarts"], status["lastExit"], status["state"]),
                         (1, "killed by signal 9", "running"))
        self.assertNotEqual(status["pid"], pid)
        # Log the measured time: the issue aims at 3 s or less with defaults.
        sys.stderr.write(
            f"\nafter SIGKILL: respawned {spawned_after:.2f}s, listening {listening_after:.2f}s,"
            f" back in gossip {elapsed:.2f}s\n"
        )
        # A bound for a loaded shared machine, not the 3 s aim: the time is
        # printed above.
        self.assertLess(elapsed, 30)
        self.wait_for_cluster(machines)

    def test_client_writes_through_managers_across_kill(self) -> None:
        """
        node-eventstore-client, given only the managers' external endpoints
        as gossip seeds, finds the leader and keeps writing while the
        leader's database node is SIGKILLed (and restarted by its
        watchdog); every acknowledged event is read back once, in order.
        """
        node = shutil.which("node")
        if node is None:
            raise SkipTest("node is not installed")
        if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "node-eventstore-client")):
            raise SkipTest("tests/js/node_modules missing: run npm ci --prefix tests/js")
        machines = self.seed_machines()
        for m in machines:
            m.start()
        doc = self.wait_for_cluster(machines)
        (leader,) = [x for x in doc["members"] if x["state"] == "Master"]
        victim = next(m for m in machines if m.host == leader["internalHttpIp"])
        half = os.path.abspath(self.mktemp())
        seeds = ",".join(f"{m.host}:{m.ports['manager_ext']}" for m in machines)
        count = 200
        writer = subprocess.Popen(
            [node, "-e", WRITER, seeds, str(count), half],
            cwd=JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: writer.poll() is None and writer.kill())
        eventually(lambda: self.assertTrue(os.path.exists(half) or writer.poll() is not None),
                   60)
        os.kill(victim.node_pid(), signal.SIGKILL)
        out, err = writer.communicate(timeout=170)
        lines = [line for line in out.decode("utf-8", "replace").splitlines() if line]
        self.assertTrue(lines, f"writer printed nothing: {err.decode()[-2000:]}")
        result = json.loads(lines[-1])
        self.assertTrue(result["ok"], result)
        # Retried writes carry the same event id: each n appears once.
        self.assertEqual(result["ns"], list(range(count)))
        self.assertEqual(victim.watchdog_status()[0]["restarts"], 1)

    def test_twisted_client_writes_through_managers_across_kill(self) -> Any:
        """
        The Twisted client (L{estwisted.client}), given only the managers'
        external endpoints as gossip seeds, finds the leader and keeps
        appending while the leader's database node is SIGKILLed (and
        restarted by its watchdog): every acknowledged event is in the
        stream once, in acknowledgement order (issue 14).
        """
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._twisted_client_across_kill())

    async def _twisted_client_across_kill(self) -> None:
        from twisted.internet import reactor as _reactor
        from twisted.internet.threads import deferToThread

        from estwisted.client import (
            ClusterSettings,
            ConnectionSettings,
            EventStoreConnection,
            ExpectedVersion,
        )
        from estwisted.client.test.suite import ADMIN, event

        reactor: Any = _reactor
        machines = self.seed_machines()
        for m in machines:
            m.start()
        doc = await deferToThread(self.wait_for_cluster, machines)
        (leader,) = [x for x in doc["members"] if x["state"] == "Master"]
        victim = next(m for m in machines if m.host == leader["internalHttpIp"])
        connection = EventStoreConnection.create(
            reactor,
            ConnectionSettings(
                keep_reconnecting=True, operation_timeout=2.0, max_retries=100,
                reconnection_delay=0.1, max_reconnection_delay=0.5,
                default_user_credentials=ADMIN, heartbeat_interval=0.5, heartbeat_timeout=1.0,
            ),
            ClusterSettings(
                gossip_seeds=[(m.host, m.ports["manager_ext"]) for m in machines],
                gossip_timeout=0.5,
            ),
        )
        self.addCleanup(connection.close)
        await connection.connect()
        stream = "through-managers"
        count = 300
        acknowledged = []
        for n in range(count):
            e = event(n)
            await connection.append_to_stream(stream, ExpectedVersion.ANY, [e])
            acknowledged.append(e.event_id)
            if n == count // 3:
                os.kill(victim.node_pid(), signal.SIGKILL)
        read = await connection.read_stream_events_forward(stream, 0, 4096, False)
        self.assertEqual([r.original_event.event_id for r in read.events], acknowledged)
        self.assertEqual(victim.watchdog_status()[0]["restarts"], 1)

    def test_sigterm_stops_node_cleanly(self) -> None:
        """
        SIGTERM to a manager stops its node with SIGTERM (the node shuts
        down and removes its pid file) before the manager exits.
        """
        (machine,) = self.single_machines(1)
        machine.start()
        eventually(lambda: self.assertTrue(
            port_free(machine.host, machine.ports["ext_http"]) is False), 30)
        pid = machine.node_pid()
        assert machine.process is not None
        machine.process.send_signal(signal.SIGTERM)
        # twistd ends by re-raising the signal it stopped for (-15) once the
        # application has stopped.
        self.assertIn(machine.process.wait(30), (0, -signal.SIGTERM))
        self.assertFalse(pid_alive(pid))
        self.assertFalse(os.path.exists(machine.node_pid_file))
        self.assertIn("node-1 (pid", machine.output())
        self.assertIn("ended", machine.output())
        self.assertIn("Server Shut Down", machine.node_log())

    def test_sigkilled_manager_takes_its_node(self) -> None:
        """
        A SIGKILLed manager's node stops with it (never two copies); the
        manager started again starts the node again.
        """
        (machine,) = self.single_machines(1)
        machine.start()
        eventually(lambda: self.assertFalse(port_free(machine.host, machine.ports["ext_http"])),
                   30)
        pid = machine.node_pid()
        assert machine.process is not None
        machine.process.kill()
        machine.process.wait(10)
        eventually(lambda: self.assertFalse(pid_alive(pid)), 20)
        machine.start()
        eventually(lambda: self.assertFalse(port_free(machine.host, machine.ports["ext_http"])),
                   30)
        new_pid = machine.node_pid()
        self.assertNotEqual(new_pid, pid)
        copies = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(
            int(p), machine.database_yaml)]
        self.assertEqual(copies, [str(new_pid)])

    def test_daemon(self) -> None:
        """
        C{twistd --pidfile … --logfile … estore-manager --config …}
        daemonizes: the command returns, the manager runs from its pid file
        and starts its node; SIGTERM to that pid stops both.
        """
        (machine,) = self.single_machines(1)
        pidfile = os.path.join(machine.directory, "manager.pid")
        logfile = os.path.join(machine.directory, "manager.log")

        def cleanup() -> None:
            for path in (pidfile, machine.node_pid_file):
                try:
                    with open(path) as f:
                        os.kill(int(f.read().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass

        self.addCleanup(cleanup)
        completed = subprocess.run(
            twistd_command() + [f"--pidfile={pidfile}", f"--logfile={logfile}",
                                "estore-manager", "--config", machine.manager_yaml],
            cwd=machine.directory, env=node_environment(), capture_output=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr.decode())
        eventually(lambda: self.assertTrue(os.path.exists(pidfile)), 30)
        with open(pidfile) as f:
            manager_pid = int(f.read().strip())
        eventually(lambda: self.assertFalse(port_free(machine.host, machine.ports["ext_http"])),
                   40)
        node_pid = machine.node_pid()
        os.kill(manager_pid, signal.SIGTERM)
        eventually(lambda: self.assertFalse(pid_alive(manager_pid)), 30)
        self.assertFalse(pid_alive(node_pid))
        with open(logfile) as f:
            self.assertIn("node-1 (pid", f.read())

    def test_failing_node_given_up(self) -> None:
        """
        A node whose command fails at once (its port is taken) is restarted
        with growing back-off and given up after WatchdogFailureCount
        failures, without a tight loop.
        """
        (machine,) = self.single_machines(1, {"WatchdogFailureCount": 3})
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind((machine.host, machine.ports["ext_tcp"]))
        blocker.listen(1)
        started = time.monotonic()
        machine.start()

        def gave_up() -> dict[str, Any]:
            (node,) = machine.watchdog_status()
            assert node["state"] == "gave-up", node
            return node

        node = eventually(gave_up, 60)
        elapsed = time.monotonic() - started
        self.assertEqual(node["restarts"], 2)
        self.assertGreaterEqual(elapsed, 0.25 + 0.5)
        self.assertIn("it will not be restarted", machine.output())
        self.assertEqual(machine.output().count("node-1 started"), 3)
        time.sleep(1.5)
        self.assertEqual(machine.output().count("node-1 started"), 3)


JS_DIR = os.path.join(REPO_ROOT, "tests", "js")

#: A node-eventstore-client writer given the managers as gossip seeds:
#: node -e WRITER SEEDS COUNT HALF_FILE (SEEDS = host:port,...).  It writes
#: COUNT events one at a time, retrying a failed write with the same event
#: id, creates HALF_FILE half-way, then reads the stream back and prints one
#: JSON line.
WRITER = r"""
'use strict';
const fs = require('fs');
const client = require('node-eventstore-client');
const uuid = require('uuid');
const [seedsArg, countArg, half] = process.argv.slice(1);
const seeds = seedsArg.split(',').map((s) => {
  const [host, port] = s.split(':');
  return new client.GossipSeed({ host, port: parseInt(port, 10) });
});
const conn = client.createConnection({
  log: { debug() {}, info() {}, error() {} },
  maxReconnections: -1, reconnectionDelay: 100, operationTimeout: 3000, maxRetries: 10,
  maxDiscoverAttempts: 100, discoverDelay: 200, gossipTimeout: 500,
  defaultUserCredentials: new client.UserCredentials('admin', 'changeit'),
}, seeds, 'manager-writer');
conn.on('error', () => {});
setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: 'deadline' }));
  process.exit(1);
}, 150000);
(async () => {
  await conn.connect();
  const count = parseInt(countArg, 10);
  let retries = 0;
  for (let n = 0; n < count; n++) {
    const id = uuid.v4();
    for (let attempt = 0; ; attempt++) {
      if (attempt > 300) throw new Error('write ' + n + ' never acknowledged');
      try {
        await conn.appendToStream('through-managers', client.expectedVersion.any,
          [client.createJsonEventData(id, { n }, null, 'manager-test')]);
        break;
      } catch (e) {
        retries++;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (n === Math.floor(count / 2)) fs.writeFileSync(half, '');
  }
  let read = null;
  for (let attempt = 0; attempt < 100 && read === null; attempt++) {
    try {
      read = await conn.readStreamEventsForward('through-managers', 0, 4096, true);
    } catch (e) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const ns = read.events.map((e) => JSON.parse(e.event.data.toString()).n);
  console.log(JSON.stringify({ ok: true, retries, written: count, ns }));
  conn.close();
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ ok: false, error: String(e.stack || e) }));
  process.exit(1); });
"""


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


class DnsManagerTests(ManagerTestCase):
    """
    The guide's DNS variant: managers find each other through a DNS name
    with an A record per machine and ClusterGossipPort.
    """

    name = "cluster1.eventstore.local"

    def dns_server(self) -> int:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_dns", str(port), self.name, *HOSTS],
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

    def test_dns_cluster(self) -> None:
        """
        Managers discover each other via DNS; the cluster forms.
        """
        dns_port = self.dns_server()
        machines = self.machines(lambda host: {
            "DiscoverViaDns": True,
            "ClusterDns": self.name,
            "ClusterGossipPort": self.ports["manager_int"],
            "ClusterDnsServer": f"127.0.0.1:{dns_port}",
        })
        for m in machines:
            m.start()
        self.wait_for_cluster(machines)


class TLSManagerTests(ManagerTestCase):
    """
    A TLS cluster: managers and nodes with node certificates of one cluster
    CA; the managers serve and gossip over HTTPS with the same checks.
    """

    def test_tls_cluster(self) -> None:
        """
        Managers with certificates gossip over HTTPS with each other and
        with their nodes; the cluster forms and C{/gossip} is served over
        TLS to a client trusting the CA.
        """
        from tests.test_tls import PKI

        pki = PKI(self.mktemp())
        for host in HOSTS:
            pki.node(host, ips=host, dns="localhost")

        def tls(host: str) -> dict[str, Any]:
            return {
                "CertificateFile": pki.path(host, "node.crt"),
                "CertificatePrivateKeyFile": pki.path(host, "node.key"),
                "TrustedRootCertificatesPath": pki.path("roots"),
            }

        def manager(host: str) -> dict[str, Any]:
            return {
                "DiscoverViaDns": False,
                "GossipSeed": [f"{h}:{self.ports['manager_int']}" for h in HOSTS if h != host],
                **tls(host),
            }

        machines = self.machines(manager, tls)
        context = ssl.create_default_context(cafile=pki.ca_cert)
        for m in machines:
            m.ssl_context = context
            m.start()
        self.wait_for_cluster(machines)
        # Plain HTTP is not served.
        self.assertIsNone(get_json(f"http://{HOSTS[0]}:{self.ports['manager_ext']}/gossip"))
