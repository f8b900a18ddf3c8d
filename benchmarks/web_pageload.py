"""
How long the admin UI's pages take to load against a node holding many
events (issue 17: under one second with one million).

    python benchmarks/web_pageload.py [--events 1000000] [--streams 1000] [--disk]
                                      [--projections] [--rebuild]

Starts a node (in memory unless C{--disk}), writes C{--events} events of
100 bytes over TCP spread over C{--streams} streams (batches of 100), then
opens each page in headless Chromium (as C{tests/test_web.py} does) and
times it from navigation to the page's content being on screen, three
times each.  With C{--projections} the node runs the standard projections
(C{--run-projections all}) and the pages are timed once they caught up
(their catch-up, from C{GET /progress}, is reported); with C{--rebuild}
(and C{--disk}) the node is restarted without its index files, and the
index rebuild's duration and rate (C{GET /progress}) are reported.
Prints the times and writes C{benchmarks/results/web_pageload.json}.
Only talks to 127.0.0.1; the node and the browser are stopped at the end.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# benchmarks/http.py would shadow the standard library's http package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

from tests.harness import NodeProcess  # noqa: E402
from tests.test_web import Browser  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_tcp", os.path.join(HERE, "tcp.py"))
assert _spec is not None and _spec.loader is not None
_tcp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tcp)

RESULTS = os.path.join(HERE, "results", "web_pageload.json")

#: Page, and the element id whose content means the page has loaded.
PAGES = (
    ("dashboard", "card-state", "master"),
    ("cluster", "members-table", "Master"),
    ("streams", "recent-streams", "stream-"),
    ("streams/stream-0", "events-table", "bench"),
    ("event/stream-0/5", "event-data", "{"),
    ("subscriptions", "subscriptions-list", "No persistent"),
    ("users", "users-table", "admin"),
    ("admin", "scavenge-progress", "scavenge"),
)

#: Pages timed only with C{--projections}, and the text they show without.
PROJECTION_PAGES = (
    ("projections", "projections-table", "$streams"),
    ("projections/$streams", "projection-fields", "Running"),
)
NO_PROJECTIONS_PAGE = ("projections", "projections-not-running", "not running")


def progress(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/progress", timeout=10) as r:
        tasks: list[dict[str, Any]] = json.loads(r.read())["tasks"]
    return tasks


def wait_projections(base: str, timeout: float = 1800.0) -> list[dict[str, Any]]:
    """
    Wait (bounded) until the projections are idle: none catching up (on
    C{GET /progress}) and their events processed unchanged for two
    seconds; their catch-up tasks (none when they kept up live).
    """
    deadline = time.monotonic() + timeout
    last_line = 0.0
    previous = -1
    while time.monotonic() < deadline:
        tasks = [t for t in progress(base) if t["kind"] == "projection-catch-up"]
        running = [t for t in tasks if t["running"]]
        request = urllib.request.Request(f"{base}/projections/any")
        request.add_header("Accept", "application/json")
        with urllib.request.urlopen(request, timeout=10) as r:
            processed = sum(p["eventsProcessedAfterRestart"]
                            for p in json.loads(r.read())["projections"])
        if not running and processed == previous:
            return tasks
        previous = processed
        if time.monotonic() - last_line > 10:
            last_line = time.monotonic()
            print(f"  projections: {processed:,} events processed" + "".join(
                f", {t['name']} {t['percentage']:.0f}%" for t in running))
        time.sleep(2.0)
    raise RuntimeError("the projections did not catch up in time")


def describe_task(t: dict[str, Any]) -> str:
    unit = "MiB" if t["unit"] == "bytes" else t["unit"]
    scale = 1 / 1048576 if t["unit"] == "bytes" else 1
    return (f"{t['kind']} {t['name']}: {t['result'] or 'running'}, {t['done'] * scale:.1f} "
            f"{unit} in {t['elapsedSeconds']:.1f} s ({t['rate'] * scale:.1f} {unit}/s)")


def fill(port: int, events: int, streams: int) -> float:
    """
    Write C{events} events over C{streams} streams; the seconds it took.
    """
    per_stream = max(1, events // streams)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(_tcp.write_events, port, f"stream-{i}", per_stream)
            for i in range(streams)
        ]
        for f in futures:
            f.result(timeout=1800)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--disk", action="store_true")
    parser.add_argument("--projections", action="store_true")
    parser.add_argument("--rebuild", action="store_true")
    options = parser.parse_args()
    if options.rebuild and not options.disk:
        parser.error("--rebuild needs --disk")
    workdir = tempfile.mkdtemp(prefix="estwisted-web-bench-")
    extra = (["--run-projections", "all", "--start-standard-projections", "true"]
             if options.projections else [])
    node = NodeProcess(os.path.join(workdir, "node"), mem_db=not options.disk, extra_args=extra)
    pages = PAGES + (PROJECTION_PAGES if options.projections else (NO_PROJECTIONS_PAGE,))
    browser = None
    results: dict[str, Any] = {"options": vars(options), "pages": {}}
    try:
        node.start()
        results["fill_seconds"] = fill(node.ext_tcp_port, options.events, options.streams)
        print(f"wrote {options.events:,} events in {results['fill_seconds']:.0f} s")
        base = node.http_url
        if options.projections:
            caught_up = wait_projections(base)
            results["projection_catch_up"] = caught_up
            for t in caught_up:
                print("  " + describe_task(t))
        if options.rebuild:
            node.stop()
            shutil.rmtree(os.path.join(node.directory, "data", "index"))
            started = time.monotonic()
            node.start(timeout=1200)
            results["restart_seconds"] = time.monotonic() - started
            startup = [t for t in progress(base)
                       if t["kind"] in ("index-rebuild", "chunk-verification")]
            results["startup_tasks"] = startup
            print(f"restarted without index files in {results['restart_seconds']:.1f} s")
            for t in startup:
                print("  " + describe_task(t))
            if options.projections:
                wait_projections(base)
        browser = Browser(workdir)
        d = browser.driver
        d.get(base + "/web/")
        browser.wait("the login form", browser.present("login-user"))
        browser.by_id("login-user").send_keys("admin")
        browser.by_id("login-password").send_keys("changeit")
        browser.by_id("login-submit").click()
        browser.wait("the dashboard", browser.present("card-state"))
        for page, element, text in pages:
            times = []
            for _ in range(3):
                d.get("about:blank")
                started = time.monotonic()
                d.get(f"{base}/web/#/{page}")
                browser.wait(page, lambda d, e=element, t=text: t in (
                    d.find_elements("id", e) and d.find_element("id", e).text or ""))
                times.append(time.monotonic() - started)
            results["pages"][page] = times
            print(f"{page:<24} median {statistics.median(times) * 1000:6.0f} ms"
                  f"  max {max(times) * 1000:6.0f} ms")
            browser.screenshot(page.replace("/", "_"))
    finally:
        if browser is not None:
            browser.quit()
        node.stop()
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results in {os.path.relpath(RESULTS, ROOT)}; screenshots in {workdir}")


if __name__ == "__main__":
    main()
