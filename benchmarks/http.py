# -*- test-case-name: estwisted.http.test.test_api -*-
"""
HTTP benchmark of an estwisted node (http-api.md; targets in
shared/performance.md, T5 and T12).

    python benchmarks/http.py [--port HTTP_PORT] [--seconds 4] [--mem-db]
                              [--server node|api-site]

Without C{--port} it starts its own server on 127.0.0.1 and stops it at
the end: C{node} (default) is a whole node (C{twistd -n estore} through
L{tests.harness}); C{api-site} is a process serving only
L{estwisted.http.api.HttpApi.site} over a L{StreamStore} (no TCP, no
subscriptions), to tell the API's own cost from the node's wiring.  Both
use an on-disk database unless C{--mem-db}, so every acknowledged write was
fsync'ed.

Load comes from C{wrk} (Debian package C{wrk}), one thread, so the load
client takes one of the two cores:

  - single-event appends: C{POST /streams/bench-w-N} with one
    C{application/vnd.eventstore.events+json} event of about 100 bytes of
    data and a fresh event id per request, 1 and 64 connections;
  - single-event reads: C{GET /streams/bench-r/7} (C{Accept:
    application/json}), 1 and 64 connections;
  - feed pages: C{GET /streams/bench-r/0/forward/20?embed=body} (20 events,
    C{Accept: application/vnd.eventstore.atom+json}), 10 connections.

Prints a table and writes C{benchmarks/results/http.json}.  Every run is
bounded in time and only talks to 127.0.0.1.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's http package: keep its
# folder off the import path before anything imports http.client.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from typing import Any, Optional  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.harness import NodeProcess  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "http.json")
RESULTS_API_SITE = os.path.join(REPO, "benchmarks", "results", "http-api-site.json")
AUTH = "Basic " + base64.b64encode(b"admin:changeit").decode()
EVENTS_JSON = "application/vnd.eventstore.events+json"

POST_LUA = r"""
local counter = 0
local prefix = string.format("%08x", math.random(0, 0x7fffffff))
local data = string.rep("x", 90)
local streams = STREAMS
request = function()
  counter = counter + 1
  local id = string.format("%s-%04x-4%03x-8%03x-%012x", prefix, counter % 65536,
    math.floor(counter / 65536) % 4096, math.random(0, 4095), counter)
  local body = '[{"eventId":"' .. id .. '","eventType":"bench","data":{"p":"' .. data .. '"}}]'
  local stream = "/streams/bench-w-" .. (counter % streams)
  return wrk.format("POST", stream, nil, body)
end
"""


def wrk_binary() -> Optional[str]:
    return shutil.which("wrk")


def parse_wrk(output: str) -> dict[str, Any]:
    """
    Requests/s, latency percentiles and error counts from wrk's output.
    """
    result: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["requests_per_s"] = float(m.group(1)) if m else 0.0
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if m:
            result[f"p{pct}_ms"] = round(float(m.group(1)) * units[m.group(2)], 3)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", output)
    result["socket_errors"] = m.group(0) if m else ""
    m = re.search(r"(\d+) requests in", output)
    result["requests"] = int(m.group(1)) if m else 0
    return result


def run_wrk(
    url: str,
    connections: int,
    seconds: int,
    headers: dict[str, str],
    script: Optional[str] = None,
) -> dict[str, Any]:
    wrk = wrk_binary()
    assert wrk is not None
    duration = f"-d{max(1, round(seconds))}s"
    cmd = [wrk, "-t1", f"-c{connections}", duration, "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", script]
    cmd.append(url)
    completed = subprocess.run(
        cmd, capture_output=True, timeout=seconds + 30, stdin=subprocess.DEVNULL
    )
    output = completed.stdout.decode("utf-8", "replace")
    result = parse_wrk(output)
    if not result["requests"]:
        print(output + completed.stderr.decode("utf-8", "replace"), file=sys.stderr)
    result["connections"] = connections
    result["seconds"] = seconds
    return result


def post_json(base: str, path: str, body: bytes, content_type: str = EVENTS_JSON) -> int:
    request = urllib.request.Request(
        base + path,
        data=body,
        method="POST",
        headers={"Authorization": AUTH, "Content-Type": content_type},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def prepare(base: str) -> None:
    """
    A stream of 40 events of about 100 bytes for the read benchmarks.
    """
    events = [
        {"eventId": str(uuid.uuid4()), "eventType": "bench", "data": {"n": i, "p": "x" * 90}}
        for i in range(40)
    ]
    post_json(base, "/streams/bench-r", json.dumps(events).encode())


def serve(port: int, directory: str, mem_db: bool, lifetime: float) -> None:
    """
    The C{api-site} server: one store, one L{HttpApi} site on 127.0.0.1;
    stops by itself after C{lifetime} seconds.
    """
    from twisted.internet import reactor

    from estwisted.core.streams import StreamStore
    from estwisted.core.users import UserManager
    from estwisted.http.api import HttpApi
    from estwisted.http.info import NodeInfo
    from estwisted.storage.open import open_storage
    from estwisted.subscriptions.persistent import PersistentSubscriptions
    from estwisted.subscriptions.volatile import SubscriptionHub

    log, index, close = open_storage(None if mem_db else directory, mem_db=mem_db)
    store = StreamStore(log, index, reactor)
    users = UserManager(store)
    users.ensure_default_users()
    persistent = PersistentSubscriptions(store, reactor)
    persistent.start()
    api = HttpApi(
        store, SubscriptionHub(store), persistent, reactor, NodeInfo(ext_http_port=port),
        users=users,
    )
    site: Any = api.site()
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.callLater(lifetime, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    close()


def serve_baseline(port: int, lifetime: float) -> None:
    """
    A bare twisted.web resource answering C{pong}: the machine's current
    ceiling, measured in the same run so figures taken on a busy machine
    can be compared (shared/performance.md L16 measured it quiet).
    """
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Pong(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.content.read()
            return b"pong"

    site: Any = Site(Pong(), parsePOSTFormSubmission=False)
    site.log = lambda request: None
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.callLater(lifetime, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def start_api_site(
    directory: str, mem_db: bool, baseline: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    from tests.harness import free_port, wait_for_port

    port = free_port()
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", str(port), "--dir", directory]
    if baseline:
        cmd.append("--baseline")
    if mem_db:
        cmd.append("--mem-db")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
    process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 30, process)
    time.sleep(0.5)  # default users are written
    return process, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, help="an existing node's external HTTP port")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--mem-db", action="store_true", help="start the node with --mem-db")
    parser.add_argument("--quick", action="store_true", help="1-second runs")
    parser.add_argument("--server", choices=("node", "api-site"), default="node")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve and args.baseline:
        serve_baseline(args.serve, lifetime=120)
        return 0
    if args.serve:
        serve(args.serve, args.dir, args.mem_db, lifetime=900)
        return 0
    if wrk_binary() is None:
        print("wrk is not installed (apt-get install wrk); nothing measured.")
        return 1
    seconds = 1 if args.quick else args.seconds

    node: Optional[NodeProcess] = None
    server: Optional[subprocess.Popen[bytes]] = None
    tmp = tempfile.mkdtemp(prefix="estwisted-http-bench-")
    try:
        base_server, base_port = start_api_site(tmp, True, baseline=True)
        try:
            baseline = run_wrk(f"http://127.0.0.1:{base_port}/", 10, seconds, {})
        finally:
            base_server.terminate()
            base_server.wait(20)
        ceiling = baseline["requests_per_s"]
        print(f"machine now: bare twisted.web GET at c=10 serves {ceiling:.0f}/s "
              f"(35,400/s on a quiet machine, performance.md L16)")
        if args.port is not None:
            port = args.port
        elif args.server == "api-site":
            server, port = start_api_site(os.path.join(tmp, "data"), args.mem_db)
        else:
            node = NodeProcess(os.path.join(tmp, "node"), mem_db=args.mem_db).start()
            port = node.ext_http_port
        base = f"http://127.0.0.1:{port}"
        prepare(base)
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(POST_LUA.replace("STREAMS", "16"))

        write_headers = {"Authorization": AUTH, "Content-Type": EVENTS_JSON}
        read_headers = {"Authorization": AUTH, "Accept": "application/json"}
        feed_headers = {
            "Authorization": AUTH,
            "Accept": "application/vnd.eventstore.atom+json",
        }
        runs: list[tuple[str, str, int, dict[str, str], Optional[str]]] = [
            ("append_1event", base + "/streams/bench-w", 1, write_headers, script),
            ("append_1event", base + "/streams/bench-w", 64, write_headers, script),
            ("read_event", base + "/streams/bench-r/7", 1, read_headers, None),
            ("read_event", base + "/streams/bench-r/7", 64, read_headers, None),
            (
                "read_feed_20",
                base + "/streams/bench-r/0/forward/20?embed=body",
                10,
                feed_headers,
                None,
            ),
        ]
        results = []
        header = f"{'figure':<16} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
        print(header + f" {'errors':>7} {'÷bare':>6}")
        for name, url, conns, headers, lua in runs:
            r = run_wrk(url, conns, seconds, headers, lua)
            r["name"] = name
            ratio = r["requests_per_s"] / ceiling if ceiling else 0.0
            r["ratio_to_bare_twisted_now"] = round(ratio, 3)
            results.append(r)
            print(
                f"{name:<16} {conns:>5} {r['requests_per_s']:>10.0f} "
                f"{r.get('p50_ms', 0):>8.3f} {r.get('p99_ms', 0):>8.3f} {r['non_2xx']:>7} "
                f"{r['ratio_to_bare_twisted_now']:>6.2f}"
            )
            time.sleep(0.5)
        document = {
            "benchmark": "http",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "node": {
                "storage": "memory" if args.mem_db else "disk (fsync per group commit)",
                "own_process": args.port is None,
                "server": "external" if args.port is not None else args.server,
            },
            "load_average_at_end": os.getloadavg(),
            "load_client": "wrk -t1",
            "bare_twisted_web_get_c10_now": baseline,
            "results": results,
            "targets": {
                "append_1event_c64_req_per_s": 9000,
                "read_feed_20_c10_req_per_s": 16000,
            },
        }
        target = RESULTS_API_SITE if args.server == "api-site" else RESULTS
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
        print(f"written to {os.path.relpath(target, REPO)}")
        return 0
    finally:
        if node is not None:
            node.stop()
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
