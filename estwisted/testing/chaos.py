"""
A fault-injection run against a real cluster of on-disk node processes.

    python -m estwisted.testing.chaos --rounds 10 --seed 1 [--nodes 3]

starts C{--nodes} C{twistd -n estore} processes (through the system-test
harness, L{tests.harness.NodeProcess}), drives a workload, injects one
fault per round, then heals everything, waits for the nodes to converge,
reads every stream back from every node and checks the history with
L{estwisted.testing.history.check_history}.  It prints one JSON summary
line and exits 1 on any violation (2 when the cluster could not be set up).

Topology.  As root, each node runs in a network namespace the run creates
(C{ip netns}), alone on its loopback, as node I{i} of the Event Store
guide's loopback layout: 127.0.0.I{i}, internal TCP 1112, external TCP
1113, internal HTTP 2112, external HTTP 2113 (the namespaces keep these
fixed ports away from anything else on the machine).  A fault-injecting
proxy in this process joins them: in node I{i}'s namespace it listens on
every other node I{j}'s addresses and forwards to node I{j}'s namespace,
one listener per directed pair, so traffic from I{i} to I{j} can be cut
in one direction or both.  A cut direction is silent: the proxy stops
reading (bytes stay queued, as with packets dropped and retransmitted,
and connections opened meanwhile get no answer) until it heals.  Clients
reach each node through a proxy port on 127.0.0.1 that is never cut.
Each node's database is a small tmpfs the run mounts, so a full disk can
be made and freed.  Without root, nodes run directly on 127.0.0.1 with
free ports and the partition and full-disk faults are left out (the
summary says which faults ran).

Faults (one per round, 1-3 s apart, chosen by the seed): SIGKILL of the
leader, of a follower or of the leader and a follower, restarted 2-6 s
later; SIGSTOP of the leader for 3-6 s; the leader cut from its followers
in both directions while clients still reach it; one node cut from
another in one direction only; a follower restarted with its clock
(C{time.time}) ahead by more than C{GossipAllowedDifferenceMs} (the node
has no clock-offset option, so the run patches the clock in the node
process before Twisted starts); a node's disk filled (leader or follower;
C{full_disk_leader}, only when asked for, always the leader); a follower
restarted with a delay in every C{fsync}/C{fdatasync} (patched the same
way).

Workload: HTTP writers (one event per request, expected version any, to a
random node, retrying the same event id after any failure until answered
201), a TCP writer doing the same, and HTTP writers sharing one stream
with expected versions, and an HTTP persistent-subscription consumer on
one writer's stream that acks what it gets.  Gossip is polled on every
node for leadership claims (split brain).  Afterwards every stream and
C{$all} are read from every node; the summary also carries what the
probes of issue 11 item 6 saw (full disk, a cut leader, clock skew).
"""
# -*- test-case-name: tests.test_chaos -*-

from __future__ import annotations

import argparse
import base64
import ctypes
import http.client
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

from estwisted.testing.history import ANY, LeaderClaim, WriteRecord, check_history

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.harness import NodeProcess, free_port  # noqa: E402

__all__ = ["ChaosRun", "main"]

#: Shortened gossip and election timings (as in the membership system tests).
FAST = [
    "--gossip-interval-ms", "100",
    "--gossip-timeout-ms", "500",
    "--leader-election-timeout-ms", "500",
]

#: Every fault kind, in the order of the issue.
FAULTS = (
    "kill_leader",
    "kill_follower",
    "kill_two",
    "pause_leader",
    "partition_leader",
    "partition_one_way",
    "clock_skew",
    "full_disk",
    "slow_fsync",
)

#: Faults run only when asked for (C{--faults}): the leader's disk filled.
EXTRA_FAULTS = ("full_disk_leader",)

#: Faults that need namespaces (partitions) or a tmpfs (full disk).
_ROOT_FAULTS = {"partition_leader", "partition_one_way", "full_disk", "full_disk_leader"}

#: Clock offset given to a skewed node, beyond the default allowed 60 s.
SKEW_SECONDS = 90.0
#: What a node logs when it refuses a peer for clock difference.
SKEW_LINE = "as a cluster member: its clock says"

#: Chunk size of the nodes: small, so that chunks are created (and a full
#: disk is noticed) during the run.
CHUNK_SIZE = 256 << 10

#: What a leader whose disk filled logs when it hands leadership over.
RESIGN_LINE = "resigning leadership"

#: Seconds beyond the election timeout a cut leader's step-down may take to
#: show in its gossip (the poll every 20 ms, the HTTP round trip).
STEPDOWN_SLACK = 0.1

#: Delay added to every fsync on a slow-fsync node.
FSYNC_DELAY = 0.05

_CLONE_NEWNET = 0x40000000
_AUTH = "Basic " + base64.b64encode(b"admin:changeit").decode("ascii")

#: Python run in a node process before twistd: optional clock offset and
#: fsync delay, from the environment.
_PRELUDE = """\
import os, time
_off = float(os.environ.get("ESTCHAOS_CLOCK_OFFSET") or 0)
if _off:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _off
    time.time_ns = lambda: _time_ns() + int(_off * 1e9)
_delay = float(os.environ.get("ESTCHAOS_FSYNC_DELAY") or 0)
if _delay:
    def _slow(real):
        def call(fd):
            time.sleep(_delay)
            return real(fd)
        return call
    os.fsync = _slow(os.fsync)
    os.fdatasync = _slow(os.fdatasync)
from twisted.scripts.twistd import run
run()
"""


# --- network namespaces ------------------------------------------------------


def _libc() -> Any:
    return ctypes.CDLL("libc.so.6", use_errno=True)


@contextmanager
def in_namespace(name: Optional[str]) -> Iterator[None]:
    """
    Run the block with this thread in network namespace C{name} (sockets
    created inside stay there); C{None} means the current one.
    """
    if name is None:
        yield
        return
    libc = _libc()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def ns_connect(ns: Optional[str], host: str, port: int, timeout: float) -> socket.socket:
    """
    A TCP connection to C{host}:C{port} as seen from namespace C{ns}.
    """
    with in_namespace(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    return s


def _run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=20)


# --- the fault-injecting proxy -----------------------------------------------


class _Pipe:
    """
    One proxied connection from C{src} (accepted socket) to C{dst}.
    """

    def __init__(self, down: socket.socket, src: str, dst: str, target_ns: Optional[str],
                 target: tuple[str, int]) -> None:
        self.down = down
        self.up: Optional[socket.socket] = None
        self.src = src
        self.dst = dst
        self.target_ns = target_ns
        self.target = target
        self.to_up = b""
        self.to_down = b""
        #: EOF read from the downstream (accepted) side / the upstream side
        self.down_eof = False
        self.up_eof = False
        #: EOF passed on (shutdown for writing) to the upstream / downstream
        self.up_shut = False
        self.down_shut = False
        self.closed = False


class Proxy:
    """
    Forwarders between namespaces, one per directed pair and port, run by
    one thread with C{select}; L{cut} and L{heal} silence directions.
    """

    def __init__(self) -> None:
        self._listeners: dict[socket.socket, tuple[str, str, Optional[str],
                                                   tuple[str, int]]] = {}
        self._pipes: list[_Pipe] = []
        self._cut: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-proxy", daemon=True)
        self.bytes = 0

    def listen(self, ns: Optional[str], address: tuple[str, int], src: str, dst: str,
               target_ns: Optional[str], target: tuple[str, int]) -> int:
        """
        Listen on C{address} in C{ns}; connections carry traffic from C{src}
        to C{dst} at C{target} in C{target_ns}.

        @return: the port listened on.
        """
        with in_namespace(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(64)
        s.setblocking(False)
        with self._lock:
            self._listeners[s] = (src, dst, target_ns, target)
        return int(s.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for s in list(self._listeners):
            s.close()
        for p in self._pipes:
            self._close(p)

    def cut(self, src: str, dst: str) -> None:
        """
        Silence traffic from C{src} to C{dst}.
        """
        with self._lock:
            self._cut.add((src, dst))

    def heal(self) -> None:
        """
        Restore every direction.
        """
        with self._lock:
            self._cut.clear()

    def cuts(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._cut)

    def _blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

    def _close(self, p: _Pipe) -> None:
        p.closed = True
        for s in (p.down, p.up):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def _connect_up(self, p: _Pipe) -> None:
        try:
            up = ns_connect(p.target_ns, p.target[0], p.target[1], 1.0)
        except OSError:
            self._close(p)
            return
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        p.up = up

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._pipes = [p for p in self._pipes if not p.closed]
                pipes = list(self._pipes)
                listeners = dict(self._listeners)
            readers: dict[socket.socket, tuple[str, Any]] = {}
            writers: dict[socket.socket, tuple[str, _Pipe]] = {}
            for s in listeners:
                readers[s] = ("listen", s)
            for p in pipes:
                forward_open = not self._blocked(p.src, p.dst)
                back_open = not self._blocked(p.dst, p.src)
                if p.up is None:
                    if forward_open:
                        self._connect_up(p)
                    if p.up is None:
                        continue
                if forward_open and not p.down_eof and len(p.to_up) < 1 << 20:
                    readers[p.down] = ("down", p)
                if back_open and not p.up_eof and len(p.to_down) < 1 << 20:
                    readers[p.up] = ("up", p)
                if p.to_up:
                    writers[p.up] = ("up", p)
                if p.to_down:
                    writers[p.down] = ("down", p)
            try:
                readable, writable, _ = select.select(list(readers), list(writers), [], 0.05)
            except (OSError, ValueError):
                continue
            for s in readable:
                kind, what = readers[s]
                if kind == "listen":
                    self._accept(s, listeners[s])
                    continue
                p = what
                if p.closed:
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    if kind == "down":
                        p.down_eof = True
                    else:
                        p.up_eof = True
                    self._shutdowns(p)
                    continue
                self.bytes += len(data)
                if kind == "down":
                    p.to_up += data
                else:
                    p.to_down += data
            for s in writable:
                kind, p = writers[s]
                if p.closed:
                    continue
                buffer = p.to_up if kind == "up" else p.to_down
                try:
                    n = s.send(buffer)
                except BlockingIOError:
                    continue
                except OSError:
                    self._close(p)
                    continue
                if kind == "up":
                    p.to_up = p.to_up[n:]
                else:
                    p.to_down = p.to_down[n:]
                self._shutdowns(p)

    def _shutdowns(self, p: _Pipe) -> None:
        """
        Pass an EOF on once the data before it is delivered; close the pipe
        when both directions are done.
        """
        try:
            if p.down_eof and not p.to_up and not p.up_shut and p.up is not None:
                p.up.shutdown(socket.SHUT_WR)
                p.up_shut = True
            if p.up_eof and not p.to_down and not p.down_shut:
                p.down.shutdown(socket.SHUT_WR)
                p.down_shut = True
        except OSError:
            self._close(p)
            return
        if p.up_shut and p.down_shut:
            self._close(p)

    def _accept(self, listener: socket.socket,
                info: tuple[str, str, Optional[str], tuple[str, int]]) -> None:
        try:
            down, _ = listener.accept()
        except OSError:
            return
        down.setblocking(False)
        down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        src, dst, target_ns, target = info
        with self._lock:
            self._pipes.append(_Pipe(down, src, dst, target_ns, target))


# --- nodes ---------------------------------------------------------------------


class ChaosNode(NodeProcess):
    """
    A harness node that may run in a network namespace, with a clock offset
    or slow fsync, reached by clients through C{client_*_port} on
    127.0.0.1.
    """

    name: str
    namespace: Optional[str]
    client_tcp_port: int
    client_http_port: int
    clock_offset: float = 0.0
    fsync_delay: float = 0.0

    def command(self) -> list[str]:
        args = super().command()
        args[2] = _PRELUDE
        if self.namespace is not None:
            args = ["ip", "netns", "exec", self.namespace] + args
        return args

    def start(self, timeout: float = 30.0) -> ChaosNode:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("node already running")
        extra = {}
        if self.clock_offset:
            extra["ESTCHAOS_CLOCK_OFFSET"] = repr(self.clock_offset)
        if self.fsync_delay:
            extra["ESTCHAOS_FSYNC_DELAY"] = repr(self.fsync_delay)
        saved = self.env
        self.env = {**(saved or {}), **extra}
        log = open(self.log_path, "ab")
        log.write(f"--- chaos: start at {time.time():.3f} {extra}\n".encode())
        log.flush()
        self._log_file = log
        from tests.harness import node_environment

        self.process = subprocess.Popen(
            self.command(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=node_environment(self.env), start_new_session=True,
        )
        self.env = saved
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}\n"
                                   + self.log()[-3000:])
            try:
                ns_connect(self.namespace, self.host, self.ext_http_port, 0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen in {timeout}s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def mark(self, text: str) -> None:
        """
        Note a fault in the node's log, for reading the two side by side.
        """
        try:
            with open(self.log_path, "ab") as f:
                f.write(f"--- chaos {time.time():.3f}: {text}\n".encode())
        except OSError:
            pass


# --- clients ---------------------------------------------------------------------


class Sequencer:
    """
    A global, thread-safe logical clock for the history.
    """

    def __init__(self) -> None:
        self._count = itertools.count(1)

    def next(self) -> int:
        return next(self._count)


_LEN = struct.Struct("<i")


class TcpConnection:
    """
    A blocking client of the external TCP protocol, one request at a time.
    """

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _frame(self, command: int, corr: bytes, data: bytes) -> bytes:
        from estwisted.wire.tcpcodec import encode_package

        package = encode_package(command, corr, data, "admin", "changeit")
        return _LEN.pack(len(package)) + package

    def request(self, command: int, data: bytes) -> Any:
        from estwisted.wire.tcpcodec import decode_package

        corr = os.urandom(16)
        self.sock.sendall(self._frame(command, corr, data))
        while True:
            if len(self.buffer) >= 4:
                (n,) = _LEN.unpack_from(self.buffer)
                if len(self.buffer) >= 4 + n:
                    package = decode_package(self.buffer[4:4 + n])
                    self.buffer = self.buffer[4 + n:]
                    if package.command == 0x01:
                        self.sock.sendall(self._frame(0x02, package.correlation_id, b""))
                        continue
                    if package.correlation_id != corr:
                        continue
                    return package
            data_in = self.sock.recv(65536)
            if not data_in:
                raise ConnectionError("closed")
            self.buffer += data_in

    def write(self, stream: str, event_id: str, expected: int) -> str:
        """
        @return: C{"ok"}, C{"wrong_version"} or another failure word.
        """
        from estwisted.wire import messages_pb2 as pb

        message = pb.WriteEvents(event_stream_id=stream, expected_version=expected,
                                 require_master=False)
        e = message.events.add()
        e.event_id = uuid.UUID(event_id).bytes_le
        e.event_type = "chaos"
        e.data_content_type = 1
        e.metadata_content_type = 0
        e.data = b'{"tcp":1}'
        package = self.request(0x82, message.SerializeToString())
        if package.command == 0xF1:
            return not_handled_word(package.data)
        if package.command != 0x83:
            return f"command_{package.command:#x}"
        completed = pb.WriteEventsCompleted.FromString(package.data)
        if completed.result == pb.Success:
            return "ok"
        if completed.result == pb.WrongExpectedVersion:
            return "wrong_version"
        return f"result_{completed.result}"

    def read_stream(self, stream: str, start: int, count: int) -> tuple[list[str], bool]:
        """
        @return: the event ids from C{start} and whether the end was reached.
        """
        from estwisted.wire import messages_pb2 as pb

        message = pb.ReadStreamEvents(event_stream_id=stream, from_event_number=start,
                                      max_count=count, resolve_link_tos=False,
                                      require_master=False)
        package = self.request(0xB2, message.SerializeToString())
        if package.command != 0xB3:
            raise ConnectionError(f"read answered with {package.command:#x}")
        completed = pb.ReadStreamEventsCompleted.FromString(package.data)
        if completed.result == pb.ReadStreamEventsCompleted.NoStream:
            return [], True
        if completed.result != pb.ReadStreamEventsCompleted.Success:
            raise ConnectionError(f"read result {completed.result}")
        ids = [str(uuid.UUID(bytes_le=e.event.event_id)) for e in completed.events]
        return ids, bool(completed.is_end_of_stream)


    def read_all_forward(self, commit: int, prepare: int, count: int) -> tuple[
            list[tuple[str, str]], int, int]:
        """
        One page of C{$all}: C{(stream, event id)} pairs and the next
        position.
        """
        from estwisted.wire import messages_pb2 as pb

        message = pb.ReadAllEvents(commit_position=commit, prepare_position=prepare,
                                   max_count=count, resolve_link_tos=False,
                                   require_master=False)
        package = self.request(0xB6, message.SerializeToString())
        if package.command != 0xB7:
            raise ConnectionError(f"read $all answered with {package.command:#x}")
        completed = pb.ReadAllEventsCompleted.FromString(package.data)
        if completed.result != pb.ReadAllEventsCompleted.Success:
            raise ConnectionError(f"read $all result {completed.result}")
        events = [(e.event.event_stream_id, str(uuid.UUID(bytes_le=e.event.event_id)))
                  for e in completed.events]
        return events, completed.next_commit_position, completed.next_prepare_position


def not_handled_word(data: bytes) -> str:
    """
    A C{NotHandled} answer as a word: C{not_handled_NotReady}, or
    C{not_handled_NotMaster@host:port} (the leader's external TCP endpoint
    its C{MasterInfo} names).
    """
    from estwisted.wire import messages_pb2 as pb

    answer = pb.NotHandled.FromString(data)
    reason = pb.NotHandled.NotHandledReason.Name(answer.reason)
    if answer.reason == pb.NotHandled.NotMaster and answer.additional_info:
        info = pb.NotHandled.MasterInfo.FromString(answer.additional_info)
        return f"not_handled_{reason}@{info.external_tcp_address}:{info.external_tcp_port}"
    return f"not_handled_{reason}"


def http_write(port: int, stream: str, event_id: str, expected: int,
               timeout: float) -> tuple[int, dict[str, str]]:
    """
    POST one event; the status (0 for no answer) and the headers.
    """
    body = json.dumps([{"eventId": event_id, "eventType": "chaos", "data": {"id": event_id}}])
    headers = {"Content-Type": "application/vnd.eventstore.events+json",
               "Authorization": _AUTH}
    if expected != ANY:
        headers["ES-ExpectedVersion"] = str(expected)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/streams/{stream}", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        headers[":reason"] = response.reason
        return response.status, headers
    except (OSError, http.client.HTTPException):
        return 0, {}
    finally:
        conn.close()


def http_call(port: int, method: str, path: str, body: Optional[bytes] = None,
              headers: Optional[dict[str, str]] = None,
              timeout: float = 5.0) -> tuple[int, bytes]:
    """
    One HTTP request as admin; the status (0: no answer) and the body.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Authorization": _AUTH,
                                                       **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


class PersistentConsumer:
    """
    A competing consumer over HTTP on one stream: pulls from the leader,
    acks what it got, and notes an event delivered again after its ack was
    accepted (202).
    """

    def __init__(self, run: ChaosRun, stream: str, group: str = "chaos") -> None:
        self.run = run
        self.stream = stream
        self.group = group
        self.received: list[str] = []
        self.acked: set[str] = set()
        #: when each id's ack was accepted, and by which node
        self.acked_at: dict[str, tuple[float, str]] = {}
        self.redelivered_after_ack: list[dict[str, Any]] = []
        self.outcomes: Counter[str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="chaos-consumer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _node(self) -> ChaosNode:
        leader = self.run.current_leader
        return leader if leader is not None else random.choice(self.run.nodes)

    def _create(self) -> bool:
        body = json.dumps({"startFrom": 0, "messageTimeoutMilliseconds": 10000,
                           "resolveLinktos": False}).encode()
        status, _ = http_call(self._node().client_http_port, "PUT",
                              f"/subscriptions/{self.stream}/{self.group}", body,
                              {"Content-Type": "application/json"})
        self.outcomes[f"create:{status}"] += 1
        return status in (201, 409)

    def _loop(self) -> None:
        created = False
        while not self.stop.is_set():
            if not created:
                created = self._create()
                if not created:
                    self.stop.wait(0.5)
                    continue
            node = self._node()
            port = node.client_http_port
            status, body = http_call(
                port, "GET", f"/subscriptions/{self.stream}/{self.group}/20?embed=body",
                headers={"Accept": "application/vnd.eventstore.competingatom+json"})
            self.outcomes[f"pull:{status}"] += 1
            if status != 200:
                self.stop.wait(0.2)
                continue
            try:
                ids = [e["eventId"] for e in json.loads(body).get("entries", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                self.outcomes["pull:unparsable"] += 1
                continue
            if not ids:
                self.stop.wait(0.2)
                continue
            with self.lock:
                for event_id in ids:
                    if event_id in self.acked:
                        at, by = self.acked_at[event_id]
                        self.redelivered_after_ack.append({
                            "event_id": event_id, "acked_at": round(at, 3), "acked_by": by,
                            "redelivered_at": round(time.time(), 3),
                            "redelivered_by": node.name})
                    self.received.append(event_id)
            status, _ = http_call(port, "POST",
                                  f"/subscriptions/{self.stream}/{self.group}/ack?ids="
                                  + ",".join(ids))
            self.outcomes[f"ack:{status}"] += 1
            if status == 202:
                with self.lock:
                    self.acked.update(ids)
                    for event_id in ids:
                        self.acked_at.setdefault(event_id, (time.time(), node.name))

    def finish(self, expected: set[str], timeout: float) -> dict[str, Any]:
        """
        Keep consuming until every id in C{expected} arrived (bounded), then
        stop and report.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if expected <= set(self.received):
                    break
            time.sleep(0.5)
        self.stop.set()
        self.thread.join(10)
        with self.lock:
            missing = expected - set(self.received)
            return {
                "sub_received": len(self.received),
                "sub_missing": len(missing),
                "sub_redelivered_after_ack": len(self.redelivered_after_ack),
                "sub_examples": {"missing": sorted(missing)[:3],
                                 "redelivered_after_ack": self.redelivered_after_ack[:3]},
                "sub_outcomes": dict(sorted(self.outcomes.items())),
            }


class Workload:
    """
    The writer threads and the history they record.
    """

    def __init__(self, run: ChaosRun, rng: random.Random) -> None:
        self.run = run
        self.seq = Sequencer()
        self.records: dict[str, WriteRecord] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.outcomes: Counter[str] = Counter()
        self.seeds = [rng.randrange(1 << 30) for _ in range(16)]
        self.streams: set[str] = set()

    def _sent(self, writer: str, stream: str, event_id: str, expected: int) -> None:
        with self.lock:
            self.streams.add(stream)
            self.records[event_id] = WriteRecord(writer, stream, event_id, self.seq.next(),
                                                 expected_version=expected)

    def _acked(self, event_id: str, node: str) -> None:
        with self.lock:
            r = self.records[event_id]
            self.records[event_id] = WriteRecord(r.writer, r.stream, r.event_id, r.sent,
                                                 self.seq.next(), r.expected_version, node)

    def _note(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def start(self, http_writers: int, tcp_writers: int, ev_writers: int) -> None:
        prefix = self.run.prefix
        n = 0
        for i in range(http_writers):
            self._spawn(self._any_writer, f"http{i}", f"{prefix}-http{i}", "http", n)
            n += 1
        for i in range(tcp_writers):
            self._spawn(self._any_writer, f"tcp{i}", f"{prefix}-tcp{i}", "tcp", n)
            n += 1
        for i in range(ev_writers):
            self._spawn(self._ev_writer, f"ev{i}", f"{prefix}-shared", "http", n)
            n += 1

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=f"chaos-{args[0]}", daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self, timeout: float) -> None:
        """
        Let every writer get its pending write answered (bounded), then stop.
        """
        self.run.draining = True
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _done(self, pending: bool) -> bool:
        if self.stop.is_set():
            return True
        return self.run.draining and not pending

    def _any_writer(self, writer: str, stream: str, protocol: str, index: int) -> None:
        rng = random.Random(self.seeds[index])
        pending: Optional[str] = None
        tcp: Optional[TcpConnection] = None
        tcp_node = ""
        while not self._done(pending is not None):
            if pending is None:
                pending = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                self._sent(writer, stream, pending, ANY)
            node = rng.choice(self.run.nodes)
            if protocol == "http":
                status, headers = http_write(node.client_http_port, stream, pending, ANY, 5.0)
                outcome = str(status)
                if status not in (0, 201):
                    self._note(f"http:{status} {headers.get(':reason', '')}"[:80])
            else:
                try:
                    if tcp is None:
                        tcp = TcpConnection(node.client_tcp_port, 5.0)
                        tcp_node = node.name
                    outcome = tcp.write(stream, pending, ANY)
                except (OSError, ConnectionError, ValueError):
                    outcome = "conn"
                if outcome != "ok" and tcp is not None:
                    tcp.close()
                    tcp = None
                outcome = "201" if outcome == "ok" else outcome
            self._note(f"{protocol}:{outcome}")
            if outcome == "201":
                self._acked(pending, tcp_node if protocol == "tcp" else node.name)
                pending = None
            else:
                time.sleep(rng.uniform(0.02, 0.2))
        if tcp is not None:
            tcp.close()

    def _ev_writer(self, writer: str, stream: str, protocol: str, index: int) -> None:
        """
        Optimistic concurrency on a shared stream: write at the version last
        seen; a retry keeps the id and the expected version; a wrong
        expected version gives the pending id up and moves on.
        """
        rng = random.Random(self.seeds[index])
        version = -1
        pending: Optional[str] = None
        while not self._done(pending is not None):
            if pending is None:
                pending = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                self._sent(writer, stream, pending, version)
            node = rng.choice(self.run.nodes)
            status, headers = http_write(node.client_http_port, stream, pending, version, 5.0)
            self._note(f"ev:{status}")
            if status not in (0, 201, 400):
                self._note(f"ev:{status} {headers.get(':reason', '')}"[:80])
            if status == 201:
                self._acked(pending, node.name)
                pending = None
                location = headers.get("location", "")
                try:
                    version = int(location.rsplit("/", 1)[1])
                except (IndexError, ValueError):
                    version += 1
                time.sleep(rng.uniform(0.0, 0.05))
            elif status == 400 and "es-currentversion" in headers:
                pending = None
                version = int(headers["es-currentversion"])
            else:
                time.sleep(rng.uniform(0.02, 0.2))
        if pending is not None:
            # never answered: the record stays unacknowledged
            pass


# --- the run ------------------------------------------------------------------------


class ChaosRun:
    """
    One run: set up, workload, faults, heal, converge, check.
    """

    def __init__(self, rounds: int, seed: int, nodes: int, workdir: str,
                 faults: Sequence[str], use_namespaces: bool, http_writers: int = 4,
                 tcp_writers: int = 1, ev_writers: int = 2, consume: bool = True,
                 fast: bool = True) -> None:
        self.rounds = rounds
        self.seed = seed
        self.count = nodes
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.use_namespaces = use_namespaces
        self.faults = [f for f in faults if use_namespaces or f not in _ROOT_FAULTS]
        self.skipped_faults = [f for f in faults if f not in self.faults]
        self.prefix = f"chaos{seed}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:6]}"
        self.nodes: list[ChaosNode] = []
        self.proxy = Proxy()
        self.namespaces: list[str] = []
        self.mounts: list[str] = []
        self.claims: list[LeaderClaim] = []
        self.claims_lock = threading.Lock()
        self.schedule: list[dict[str, Any]] = []
        self.draining = False
        self.started = time.time()
        self.poll_stop = threading.Event()
        self.http_writers = http_writers
        self.tcp_writers = tcp_writers
        self.ev_writers = ev_writers
        self.observations: Counter[str] = Counter()
        #: the node last seen claiming leadership (for the consumer)
        self.current_leader: Optional[ChaosNode] = None
        self.consume = consume
        self.fast = fast
        #: event ids written by probes (not checked: their stream is not read)
        self.probes: list[str] = []
        #: C{LeaderElectionTimeoutMs} of the nodes, in seconds
        self.election_timeout = 0.5 if fast else 1.0
        #: seconds from cutting a leader off to its gossip saying it is not
        #: Master any more
        self.stepdowns: list[float] = []
        #: seconds from filling a leader's disk to another node leading
        self.handovers: list[float] = []
        #: seconds from healing a cut to the deposed leader naming the new one
        self.redirects: list[float] = []

    # -- setup and teardown

    def setup(self) -> None:
        n = self.count
        tag = f"estchaos{os.getpid()}"
        if self.use_namespaces:
            self.namespaces = [f"{tag}n{i + 1}" for i in range(n)]
            for ns in self.namespaces:
                _run(["ip", "netns", "add", ns])
                _run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        layout = []
        for i in range(n):
            if self.use_namespaces:
                host = f"127.0.0.{i + 1}"
                ports = {"int_tcp": 1112, "ext_tcp": 1113, "int_http": 2112, "ext_http": 2113}
            else:
                host = "127.0.0.1"
                ports = {k: free_port() for k in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            layout.append((host, ports))
        for i in range(n):
            host, ports = layout[i]
            seeds = ",".join(f"{h}:{p['int_http']}" for j, (h, p) in enumerate(layout) if j != i)
            args = ["--cluster-size", str(n), "--discover-via-dns", "false",
                    "--gossip-seed", seeds, "--chunk-size", str(CHUNK_SIZE)]
            args += FAST if self.fast else []
            directory = os.path.join(self.workdir, f"node{i + 1}")
            data = os.path.join(directory, "data")
            os.makedirs(data, exist_ok=True)
            if self.use_namespaces:
                _run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", data])
                self.mounts.append(data)
            node = ChaosNode(directory, host=host, ports=dict(ports), extra_args=args)
            node.name = f"node{i + 1}"
            node.namespace = self.namespaces[i] if self.use_namespaces else None
            self.nodes.append(node)
        for i, node in enumerate(self.nodes):
            if self.use_namespaces:
                for j, other in enumerate(self.nodes):
                    if i == j:
                        continue
                    for key in ("int_tcp", "ext_tcp", "int_http", "ext_http"):
                        self.proxy.listen(node.namespace, (other.host, other.ports[key]),
                                          node.name, other.name, other.namespace,
                                          (other.host, other.ports[key]))
                node.client_tcp_port = self.proxy.listen(
                    None, ("127.0.0.1", 0), "client", node.name, node.namespace,
                    (node.host, node.ext_tcp_port))
                node.client_http_port = self.proxy.listen(
                    None, ("127.0.0.1", 0), "client", node.name, node.namespace,
                    (node.host, node.ext_http_port))
            else:
                node.client_tcp_port = node.ext_tcp_port
                node.client_http_port = node.ext_http_port
        self.proxy.start()
        for node in self.nodes:
            node.start()

    def teardown(self) -> None:
        self.poll_stop.set()
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - best effort, keep cleaning
                if node.process is not None:
                    try:
                        os.killpg(node.process.pid, signal.SIGKILL)
                    except OSError:
                        pass
        self.proxy.stop()
        for data in self.mounts:
            subprocess.run(["umount", "-l", data], check=False, timeout=20,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=20,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # -- observation

    def gossip(self, node: ChaosNode, timeout: float = 1.0) -> Optional[dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", node.client_http_port, timeout=timeout)
        try:
            conn.request("GET", "/gossip?format=json")
            response = conn.getresponse()
            if response.status != 200:
                return None
            return json.loads(response.read())  # type: ignore[no-any-return]
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def own_state(self, node: ChaosNode, doc: dict[str, Any]) -> Optional[dict[str, Any]]:
        for m in doc.get("members", []):
            if m.get("internalHttpIp") == node.host and m.get("internalHttpPort") == \
                    node.int_http_port:
                return m  # type: ignore[no-any-return]
        return None

    def _poll_gossip(self) -> None:
        while not self.poll_stop.is_set():
            for node in self.nodes:
                if not node.alive():
                    continue
                doc = self.gossip(node, 0.5)
                if doc is None:
                    continue
                me = self.own_state(node, doc)
                if me is not None and me.get("state") == "Master":
                    self.current_leader = node
                    with self.claims_lock:
                        self.claims.append(LeaderClaim(
                            node.name, int(me.get("epochNumber", -1)), time.time(),
                            str(me.get("epochId", ""))))
            self.poll_stop.wait(0.2)

    def leader(self, timeout: float = 15.0) -> Optional[ChaosNode]:
        """
        The node every live node agrees leads, waiting up to C{timeout}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            masters = []
            for node in self.nodes:
                if not node.alive():
                    continue
                doc = self.gossip(node)
                me = self.own_state(node, doc) if doc else None
                if me is not None and me.get("state") == "Master":
                    masters.append(node)
            if len(masters) == 1:
                return masters[0]
            time.sleep(0.2)
        return None

    # -- faults

    def _note(self, kind: str, **details: Any) -> dict[str, Any]:
        entry = {"round": len(self.schedule), "kind": kind, "at": round(time.time(), 3),
                 **details}
        self.schedule.append(entry)
        for node in self.nodes:
            node.mark(json.dumps(entry))
        return entry

    def _restart(self, node: ChaosNode, clock_offset: float = 0.0,
                 fsync_delay: float = 0.0) -> None:
        node.clock_offset = clock_offset
        node.fsync_delay = fsync_delay
        if node.alive():
            node.kill()
        for _ in range(3):
            try:
                node.start()
                return
            except RuntimeError:
                time.sleep(1)
        raise RuntimeError(f"{node.name} would not restart")

    def inject(self, kind: str) -> None:
        rng = self.rng
        leader = self.leader(10.0)
        leader_name = leader.name if leader else None
        if leader is None:
            leader = rng.choice(self.nodes)
        followers = [n for n in self.nodes if n is not leader]
        follower = rng.choice(followers)
        down = rng.uniform(2, 6)
        if kind == "kill_leader":
            self._note(kind, victims=[leader.name], leader=leader_name, down=round(down, 2))
            leader.kill()
            time.sleep(down)
            self._restart(leader)
        elif kind == "kill_follower":
            self._note(kind, victims=[follower.name], leader=leader_name, down=round(down, 2))
            follower.kill()
            time.sleep(down)
            self._restart(follower)
        elif kind == "kill_two":
            self._note(kind, victims=[leader.name, follower.name], leader=leader_name,
                       down=round(down, 2))
            leader.kill()
            follower.kill()
            time.sleep(down)
            self._restart(leader)
            self._restart(follower)
        elif kind == "pause_leader":
            pause = rng.uniform(3, 6)
            self._note(kind, victims=[leader.name], leader=leader_name, down=round(pause, 2))
            leader.pause()
            time.sleep(pause)
            leader.resume()
        elif kind == "partition_leader":
            cut = rng.uniform(3, 8)
            self._note(kind, victims=[leader.name], leader=leader_name, down=round(cut, 2))
            for other in followers:
                self.proxy.cut(leader.name, other.name)
                self.proxy.cut(other.name, leader.name)
            cut_at = time.monotonic()
            stepped = self._wait_not_master(leader, cut)
            if stepped is None:
                self.observations["cut_leader_no_stepdown_during_cut"] += 1
            else:
                self.stepdowns.append(round(stepped, 3))
                if stepped <= self.election_timeout + STEPDOWN_SLACK:
                    self.observations["cut_leader_stepped_down_within_election_timeout"] += 1
                else:
                    self.observations["cut_leader_stepped_down_late"] += 1
            time.sleep(max(0.0, cut - (time.monotonic() - cut_at)))
            self._probe_cut_leader(leader)
            self.proxy.heal()
            self._probe_healed_leader(leader, followers)
        elif kind == "partition_one_way":
            cut = rng.uniform(3, 8)
            src, dst = rng.sample(self.nodes, 2)
            self._note(kind, victims=[src.name, dst.name], leader=leader_name,
                       down=round(cut, 2), direction=f"{src.name}->{dst.name}")
            self.proxy.cut(src.name, dst.name)
            time.sleep(cut)
            self.proxy.heal()
        elif kind == "clock_skew":
            hold = rng.uniform(4, 8)
            self._note(kind, victims=[follower.name], leader=leader_name, down=round(hold, 2),
                       offset=SKEW_SECONDS)
            others_list = [n for n in self.nodes if n is not follower]
            before = follower.log().count(SKEW_LINE)
            others_before = sum(n.log().count(SKEW_LINE) for n in others_list)
            self._restart(follower, clock_offset=SKEW_SECONDS)
            time.sleep(hold)
            own = follower.log().count(SKEW_LINE) - before
            others = sum(n.log().count(SKEW_LINE) for n in others_list) - others_before
            if own and others:
                self.observations["clock_skew_refused_logged_both_sides"] += 1
            self.observations["clock_skew_log_lines_skewed_node"] += own
            self.observations["clock_skew_log_lines_other_nodes"] += others
            self._restart(follower)
        elif kind in ("full_disk", "full_disk_leader"):
            hold = rng.uniform(3, 6)
            victim = rng.choice(self.nodes)
            if kind == "full_disk_leader":
                victim = leader
            self._note(kind, victims=[victim.name], leader=leader_name, down=round(hold, 2))
            filler = os.path.join(victim.directory, "data", "chaos-filler")
            try:
                with open(filler, "wb") as f:
                    block = b"\0" * (1 << 20)
                    for _ in range(4096):
                        f.write(block)
                        f.flush()
            except OSError:
                self.observations["disk_filled"] += 1
            filled_at = time.monotonic()
            was_leader = victim is leader and leader_name is not None
            if was_leader:
                # it hands leadership over once a write finds the disk full
                mark = len(victim.log())
                successor = self._wait_other_leader(victim, max(hold, 8.0))
                if successor is None and RESIGN_LINE not in victim.log()[mark:]:
                    # it had room left in its preallocated chunk: it did not
                    # need any space yet
                    self.observations["full_disk_leader_never_ran_out"] += 1
                elif successor is None:
                    self.observations["full_disk_leader_kept_leadership"] += 1
                else:
                    self.handovers.append(round(time.monotonic() - filled_at, 3))
                    self.observations["full_disk_leader_handed_over"] += 1
            time.sleep(max(0.0, hold / 2 - (time.monotonic() - filled_at)))
            self._probe_full_disk(victim, was_leader)
            time.sleep(max(0.0, hold - (time.monotonic() - filled_at)))
            try:
                os.unlink(filler)
            except OSError:
                pass
            if not victim.alive():
                self.observations["full_disk_node_died"] += 1
                self._restart(victim)
            elif self._wait_member(victim, 15.0):
                self.observations["full_disk_node_rejoined"] += 1
            else:
                self.observations["full_disk_node_not_rejoined"] += 1
        elif kind == "slow_fsync":
            hold = rng.uniform(4, 8)
            self._note(kind, victims=[follower.name], leader=leader_name, down=round(hold, 2),
                       delay=FSYNC_DELAY)
            self._restart(follower, fsync_delay=FSYNC_DELAY)
            time.sleep(hold)
            self._restart(follower)
        else:
            raise ValueError(kind)

    def _probe_full_disk(self, victim: ChaosNode, is_leader: bool) -> None:
        """
        Item 6 of issue 11: a node with a full disk stays readable and
        answers writes with a clear error.  Noted in the observations.
        """
        role = "leader" if is_leader else "follower"
        try:
            conn = TcpConnection(victim.client_tcp_port, 3.0)
            try:
                conn.read_stream(f"{self.prefix}-http0", 0, 10)
            finally:
                conn.close()
            self.observations[f"full_disk_{role}_read_ok"] += 1
        except (OSError, ConnectionError):
            self.observations[f"full_disk_{role}_read_failed"] += 1
        probe = str(uuid.uuid4())
        status, headers = http_write(victim.client_http_port, f"{self.prefix}-probe", probe,
                                     ANY, 5.0)
        self.observations[f"full_disk_{role}_write {status} {headers.get(':reason', '')}"] += 1
        self.probes.append(probe)

    def _probe_cut_leader(self, leader: ChaosNode) -> None:
        """
        Item 6 of issue 11: a leader cut from its followers steps down (its
        own gossip) and sends a client that requires the master elsewhere.
        """
        doc = self.gossip(leader)
        me = self.own_state(leader, doc) if doc else None
        state = me.get("state") if me else None
        self.observations[f"cut_leader_state_at_heal {state}"] += 1
        self._probe_require_master(leader, "cut_leader")

    def _probe_require_master(self, node: ChaosNode, label: str) -> None:
        """
        Post one event with C{ES-RequireMaster} to C{node} and count the
        answer under C{label}: its status, and whether it names a location.
        """
        conn = http.client.HTTPConnection("127.0.0.1", node.client_http_port, timeout=3)
        try:
            conn.request("POST", f"/streams/{self.prefix}-probe",
                         body=json.dumps([{"eventId": str(uuid.uuid4()), "eventType": "p",
                                           "data": {}}]),
                         headers={"Content-Type": "application/vnd.eventstore.events+json",
                                  "Authorization": _AUTH, "ES-RequireMaster": "True"})
            response = conn.getresponse()
            response.read()
            where = "with location" if response.getheader("Location") else "no location"
            self.observations[f"{label}_requiremaster {response.status} {where}"] += 1
        except (OSError, http.client.HTTPException):
            self.observations[f"{label}_requiremaster no answer"] += 1
        finally:
            conn.close()

    def _own(self, node: ChaosNode, timeout: float = 0.5) -> Optional[dict[str, Any]]:
        doc = self.gossip(node, timeout)
        return self.own_state(node, doc) if doc else None

    def _wait_not_master(self, node: ChaosNode, timeout: float) -> Optional[float]:
        """
        Seconds until C{node}'s own gossip record (read through the client
        port, never cut) stops saying Master, polled every 20 ms; C{None}
        if it still does after C{timeout}.
        """
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            me = self._own(node, 0.5)
            if me is not None and me.get("state") != "Master":
                return time.monotonic() - start
            time.sleep(0.02)
        return None

    def _wait_other_leader(self, node: ChaosNode, timeout: float) -> Optional[ChaosNode]:
        """
        Another node that says it is Master while C{node} does not, within
        C{timeout}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            me = self._own(node)
            if me is not None and me.get("state") != "Master":
                for other in self.nodes:
                    if other is node or not other.alive():
                        continue
                    theirs = self._own(other)
                    if theirs is not None and theirs.get("state") == "Master":
                        return other
            time.sleep(0.1)
        return None

    def _wait_member(self, node: ChaosNode, timeout: float) -> bool:
        """
        C{node} is a member in good standing again (leader or an active
        replica) within C{timeout}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            me = self._own(node)
            if me is not None and me.get("state") in ("Master", "Slave", "Clone"):
                return True
            time.sleep(0.2)
        return False

    def _probe_healed_leader(self, old: ChaosNode, followers: Sequence[ChaosNode]) -> None:
        """
        Item 6 of issue 11, after the cut heals: the deposed leader sends
        its clients to the new leader (TCP C{NotMaster} with the leader's
        endpoint, HTTP writes forwarded; C{ES-RequireMaster} answered
        C{307} with its C{Location}) from the moment gossip tells it where
        the leader is.  Polled for up to 10 s; noted: what it answered
        first, and the seconds until a TCP write named the new leader.
        """
        start = time.monotonic()
        hosts = {f"{n.host}:{n.ext_tcp_port}": n for n in followers}
        seen: set[str] = set()
        named = None
        while time.monotonic() - start < 10.0 and named is None:
            try:
                tcp = TcpConnection(old.client_tcp_port, 3.0)
                try:
                    word = tcp.write(f"{self.prefix}-probe", str(uuid.uuid4()), ANY)
                finally:
                    tcp.close()
            except (OSError, ConnectionError):
                word = "no_answer"
            kind = word.split("@")[0]
            if kind not in seen:
                seen.add(kind)
                self.observations[f"healed_leader_tcp_write {kind}"] += 1
            if "@" in word and word.split("@", 1)[1] in hosts:
                named = time.monotonic() - start
            elif kind == "ok":
                break  # it leads again (re-elected): nothing to redirect
            time.sleep(0.05)
        if named is not None:
            self.redirects.append(round(named, 3))
            self.observations["healed_leader_named_new_leader"] += 1
            status, headers = http_write(old.client_http_port, f"{self.prefix}-probe",
                                         str(uuid.uuid4()), ANY, 5.0)
            self.observations[f"healed_leader_http_write {status}"] += 1
            self._probe_require_master(old, "healed_leader")
        elif "ok" not in seen:
            self.observations["healed_leader_never_named_new_leader"] += 1

    # -- reading back

    def read_stream(self, node: ChaosNode, stream: str) -> list[str]:
        conn = TcpConnection(node.client_tcp_port, 10.0)
        try:
            ids: list[str] = []
            for _ in range(10000):
                batch, end = conn.read_stream(stream, len(ids), 4096)
                ids += batch
                if end or not batch:
                    return ids
            raise RuntimeError("stream too long")
        finally:
            conn.close()

    def read_all(self, streams: Sequence[str]) -> dict[str, dict[str, list[str]]]:
        return {n.name: {s: self.read_stream(n, s) for s in streams} for n in self.nodes}

    def read_dollar_all(self, node: ChaosNode, streams: set[str]) -> list[str]:
        """
        The ids of the events of C{streams}, in C{$all} order on C{node}.
        """
        conn = TcpConnection(node.client_tcp_port, 10.0)
        try:
            ids: list[str] = []
            commit = prepare = 0
            for _ in range(100000):
                events, next_commit, next_prepare = conn.read_all_forward(commit, prepare,
                                                                          4096)
                ids += [event_id for stream, event_id in events if stream in streams]
                if not events or (next_commit, next_prepare) == (commit, prepare):
                    return ids
                commit, prepare = next_commit, next_prepare
            raise RuntimeError("$all too long")
        finally:
            conn.close()

    def log_epochs(self) -> dict[int, list[str]]:
        """
        From the node logs: which nodes said they led which epoch.
        """
        led: dict[int, list[str]] = {}
        for node in self.nodes:
            for match in re.finditer(r"Leader of epoch (\d+) at position (\d+)", node.log()):
                led.setdefault(int(match.group(1)), []).append(
                    f"{node.name}@{match.group(2)}")
        return led

    def converge(self, streams: Sequence[str], timeout: float) -> tuple[
            bool, dict[str, dict[str, list[str]]]]:
        """
        Read until every node has the same contents (or time runs out).
        """
        deadline = time.monotonic() + timeout
        stored: dict[str, dict[str, list[str]]] = {}
        while True:
            try:
                stored = self.read_all(streams)
                if all(len({tuple(stored[n][s]) for n in stored}) == 1 for s in streams):
                    return True, stored
            except (OSError, ConnectionError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                return False, stored
            time.sleep(1.0)

    # -- the whole run

    def execute(self) -> dict[str, Any]:
        self.setup()
        poller = threading.Thread(target=self._poll_gossip, name="chaos-gossip", daemon=True)
        poller.start()
        first = self.leader(30.0)
        if first is None:
            raise RuntimeError("no leader elected at start")
        workload = Workload(self, random.Random(self.rng.getrandbits(32)))
        workload.start(self.http_writers, self.tcp_writers, self.ev_writers)
        consumer: Optional[PersistentConsumer] = None
        if self.consume and self.http_writers:
            consumer = PersistentConsumer(self, f"{self.prefix}-http0")
            consumer.start()
        time.sleep(2.0)
        for _ in range(self.rounds):
            time.sleep(self.rng.uniform(1, 3))
            self.inject(self.rng.choice(self.faults))
        self.proxy.heal()
        for node in self.nodes:
            node.resume()
            if not node.alive():
                self._restart(node)
            if node.clock_offset or node.fsync_delay:
                self._restart(node)
        settled = self.leader(60.0) is not None
        workload.finish(60.0)
        streams = sorted(workload.streams)
        converged, stored = self.converge(streams, 90.0)
        sub: dict[str, Any] = {}
        if consumer is not None:
            with workload.lock:
                expected = {r.event_id for r in workload.records.values()
                            if r.stream == consumer.stream and r.acked is not None}
            sub = consumer.finish(expected, 60.0)
        self.poll_stop.set()
        poller.join(5)
        with workload.lock:
            records = list(workload.records.values())
            outcomes = dict(sorted(workload.outcomes.items()))
        with self.claims_lock:
            claims = list(self.claims)
        result = check_history(records, stored, claims)
        # $all: the same checks with every event taken as one stream
        try:
            wanted = set(streams)
            in_all = {n.name: {"$all": self.read_dollar_all(n, wanted)} for n in self.nodes}
            all_records = [WriteRecord(r.writer, "$all", r.event_id, r.sent, r.acked,
                                       ANY, r.acked_by) for r in records]
            all_result: Optional[Any] = check_history(all_records, in_all)
        except (OSError, ConnectionError, RuntimeError) as e:
            all_result = None
            self.observations[f"read_all_failed {e}"[:80]] += 1
        led = self.log_epochs()
        with open(os.path.join(self.workdir, "history.json"), "w") as f:
            json.dump({
                       "records": [[r.writer, r.stream, r.event_id, r.sent, r.acked,
                                    r.expected_version, r.acked_by] for r in records],
                       "stored": stored,
                       "claims": [[c.node, c.epoch_number, c.epoch_id, c.at] for c in claims],
                       "schedule": self.schedule}, f)
        epochs = sorted({(c.epoch_number, c.node) for c in claims})
        summary: dict[str, Any] = {
            "seed": self.seed,
            "rounds": self.rounds,
            "nodes": self.count,
            "mode": "netns" if self.use_namespaces else "loopback",
            "timings": "fast" if self.fast else "default",
            **result.counts(),
            "all_lost": all_result.lost if all_result else -1,
            "all_duplicated": all_result.duplicated if all_result else -1,
            "all_reordered": all_result.reordered if all_result else -1,
            "all_divergent": all_result.divergent_streams if all_result else -1,
            "epochs_led_twice_in_logs": {str(k): v for k, v in sorted(led.items())
                                         if len({x.split("@")[0] for x in v}) > 1},
            "converged": converged,
            "settled": settled,
            "faults": dict(Counter(e["kind"] for e in self.schedule)),
            "faults_skipped": self.skipped_faults,
            "outcomes": outcomes,
            "observations": dict(self.observations),
            "cut_leader_stepdown_s": self.stepdowns,
            "full_disk_handover_s": self.handovers,
            "healed_leader_redirect_s": self.redirects,
            "leaders": [f"{node}@{epoch}" for epoch, node in epochs],
            "proxy_bytes": self.proxy.bytes,
            **sub,
            "duration_s": round(time.time() - self.started, 1),
            "workdir": self.workdir,
            "examples": {k: list(v)[:3] for k, v in result.examples.items()},
            "all_examples": ({k: list(v)[:3] for k, v in all_result.examples.items()
                              if k != "phantoms"} if all_result else {}),
        }
        if result.violations:
            summary["schedule"] = self.schedule
        return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Run once; print the JSON summary line.

    @return: the exit code: 0 clean, 1 violations (or no convergence),
        2 the run could not be carried out.
    """
    parser = argparse.ArgumentParser(prog="python -m estwisted.testing.chaos")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma-separated fault kinds: " + ", ".join(FAULTS + EXTRA_FAULTS))
    parser.add_argument("--workdir", default=None, help="keep node data and logs here")
    parser.add_argument("--no-netns", action="store_true",
                        help="run on 127.0.0.1 without namespaces (no partitions/full disk)")
    parser.add_argument("--http-writers", type=int, default=4)
    parser.add_argument("--tcp-writers", type=int, default=1)
    parser.add_argument("--ev-writers", type=int, default=2)
    parser.add_argument("--timings", choices=("fast", "default"), default="fast",
                        help="fast: 100 ms gossip, 500 ms timeouts; default: the node's")
    parser.add_argument("--no-consumer", action="store_true",
                        help="no persistent-subscription consumer")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(faults) - set(FAULTS + EXTRA_FAULTS))
    if unknown or not faults:
        parser.error(f"unknown faults {unknown}")
    use_ns = not args.no_netns and os.geteuid() == 0 and shutil.which("ip") is not None
    keep = args.workdir is not None
    workdir = args.workdir or tempfile.mkdtemp(prefix="estchaos-")
    os.makedirs(workdir, exist_ok=True)
    run = ChaosRun(args.rounds, args.seed, args.nodes, os.path.abspath(workdir), faults, use_ns,
                   args.http_writers, args.tcp_writers, args.ev_writers,
                   not args.no_consumer, args.timings == "fast")
    code = 2

    def terminated(signum: int, frame: Any) -> None:
        # SIGTERM (a timeout): unwind so that the finally clause below stops
        # the nodes, the proxy, the mounts and the namespaces.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        summary = run.execute()
        bad = (summary["violations"] or not summary["converged"]
               or any(summary[k] != 0 for k in ("all_lost", "all_duplicated",
                                                  "all_reordered", "all_divergent"))
               or any(summary.get(k, 0) != 0 for k in ("sub_missing",
                                                         "sub_redelivered_after_ack")))
        code = 1 if bad else 0
        summary["ok"] = not bad
    except Exception as e:  # noqa: BLE001 - reported in the summary line
        summary = {"seed": args.seed, "rounds": args.rounds, "ok": False,
                   "error": f"{type(e).__name__}: {e}"[:2000], "workdir": workdir,
                   "schedule": run.schedule}
    finally:
        run.teardown()
    if code == 0 and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
