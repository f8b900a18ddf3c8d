"""
How long the admin UI's pages take to load against a node holding many
events (issue 17: under one second with one million).

    python benchmarks/web_pageload.py [--events 1000000] [--streams 1000] [--disk]

Starts a node (in memory unless C{--disk}), writes C{--events} events of
100 bytes over TCP spread over C{--streams} streams (batches of 100), then
opens each page in headless Chromium (as C{tests/test_web.py} does) and
times it from navigation to the page's content being on screen, three
times each.  Prints the times and writes C{benchmarks/results/web_pageload.json}.
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
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
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
    options = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="estwisted-web-bench-")
    node = NodeProcess(os.path.join(workdir, "node"), mem_db=not options.disk)
    browser = None
    results: dict[str, Any] = {"options": vars(options), "pages": {}}
    try:
        node.start()
        results["fill_seconds"] = fill(node.ext_tcp_port, options.events, options.streams)
        print(f"wrote {options.events:,} events in {results['fill_seconds']:.0f} s")
        browser = Browser(workdir)
        d = browser.driver
        base = node.http_url
        d.get(base + "/web/")
        browser.wait("the login form", browser.present("login-user"))
        browser.by_id("login-user").send_keys("admin")
        browser.by_id("login-password").send_keys("changeit")
        browser.by_id("login-submit").click()
        browser.wait("the dashboard", browser.present("card-state"))
        for page, element, text in PAGES:
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
