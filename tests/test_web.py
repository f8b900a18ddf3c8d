# -*- test-case-name: tests.test_web -*-
"""
System tests of the admin web UI (issue 17) in a real browser: headless
Chromium, driven through its driver (Debian's C{chromium} and
C{chromium-driver}) with selenium, against real node processes on
127.0.0.1-3.

The browser logs in, sees the cluster page list three members with one
leader, browses a stream a test client wrote over HTTP, creates a
persistent subscription, and is shown an API error as a message, never a
traceback or a blank page.  Screenshots of every step are kept in the
test's temporary directory (C{_trial_temp/.../screenshots}).

Every wait is bounded; the browser, its driver and the nodes are stopped
in cleanup.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, Optional

from twisted.trial.unittest import SkipTest, TestCase

from tests.harness import NodeProcess, free_port
from tests.test_cluster_membership import FAST, start_all, wait_for_leader

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: Chromium flags: no sandbox (root in CI), nothing fetched from anywhere.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)

#: Longest wait for anything the page should show (seconds).
PAGE_WAIT = 20.0

ADMIN = "Basic " + base64.b64encode(b"admin:changeit").decode()


def http(method: str, url: str, body: Optional[Any] = None, content_type: str = "") -> Any:
    """
    One request as admin; the decoded JSON reply (or C{None}).
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", ADMIN)
    request.add_header("Accept", "application/json")
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


class Browser:
    """
    A headless Chromium with a fresh profile, driven by selenium.
    """

    def __init__(self, directory: str) -> None:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            raise SkipTest("selenium is not installed") from None
        for path in (CHROMIUM, CHROMEDRIVER):
            if not os.access(path, os.X_OK):
                raise SkipTest(f"{path} is missing (apt-get install chromium chromium-driver)")
        # Selenium must not look anything up on the network.
        os.environ.setdefault("SE_AVOID_STATS", "true")
        os.environ.setdefault("SE_OFFLINE", "true")
        self.screenshots = os.path.join(directory, "screenshots")
        os.makedirs(self.screenshots, exist_ok=True)
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        service = Service(CHROMEDRIVER, log_output=os.path.join(directory, "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(PAGE_WAIT)
        self._shots = 0

    def quit(self) -> None:
        """
        Stop the browser and its driver; safe to call twice.
        """
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.quit()
        shutil.rmtree(self._profile, ignore_errors=True)

    def wait(self, what: str, check: Callable[[Any], Any], timeout: float = PAGE_WAIT) -> Any:
        """
        Wait until C{check(driver)} is true; on timeout, a screenshot and an
        error naming C{what}.
        """
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        # Live pages re-render: an element may go stale between two looks.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
        try:
            return wait.until(check)
        except TimeoutException:
            path = self.screenshot(f"timeout-{what}")
            text = self.driver.find_element("tag name", "body").text[:2000]
            raise AssertionError(f"timed out waiting for {what}; see {path}\n{text}") from None

    def screenshot(self, name: str) -> str:
        self._shots += 1
        path = os.path.join(self.screenshots, f"{self._shots:02d}-{name}.png")
        self.driver.save_screenshot(path)
        return path

    def by_id(self, element_id: str) -> Any:
        return self.driver.find_element("id", element_id)

    def present(self, element_id: str) -> Callable[[Any], Any]:
        return lambda d: d.find_elements("id", element_id) and d.find_element("id", element_id)

    def body_text(self) -> str:
        return str(self.driver.find_element("tag name", "body").text)


def login(b: Browser, base: str, wrong_first: bool = False) -> None:
    """
    Open the node's root (redirected to the UI, which asks for
    credentials) and log in as admin, with a wrong password first if told.
    """
    d = b.driver
    d.get(base + "/")
    b.wait("the login form", b.present("login-user"))
    b.screenshot("login")
    b.by_id("login-user").send_keys("admin")
    if wrong_first:
        b.by_id("login-password").send_keys("wrong")
        b.by_id("login-submit").click()
        b.wait("a refused login", lambda d: "Wrong user name or password" in b.body_text())
        b.by_id("login-password").clear()
    b.by_id("login-password").send_keys("changeit")
    b.by_id("login-submit").click()
    b.wait("the dashboard", lambda d: "master" in (
        d.find_elements("id", "card-state") and d.find_element("id", "card-state").text
        or ""))
    b.screenshot("dashboard")


class WebUITests(TestCase):
    timeout = 300

    def make_cluster(self) -> list[NodeProcess]:
        hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        ports = [
            {name: free_port(h) for name in ("int_tcp", "ext_tcp", "int_http", "ext_http")}
            for h in hosts
        ]
        seeds = ",".join(f"{h}:{p['int_http']}" for h, p in zip(hosts, ports, strict=True))
        base = self.mktemp()
        nodes = []
        for i, host in enumerate(hosts):
            args = ["--cluster-size", "3", "--discover-via-dns", "false", "--gossip-seed", seeds]
            node = NodeProcess(
                os.path.join(base, f"node{i}"), host=host, ports=ports[i],
                extra_args=args + FAST, mem_db=True,
            )
            self.addCleanup(node.stop)
            nodes.append(node)
        return nodes

    def browser(self) -> Browser:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        b = Browser(directory)
        self.addCleanup(b.quit)
        return b

    def test_cluster_streams_and_subscriptions(self) -> None:
        """
        Log in, see three members with one leader, browse a stream a test
        client wrote, create a persistent subscription, and see API errors
        shown as messages.
        """
        nodes = self.make_cluster()
        start_all(nodes)
        leader = wait_for_leader(nodes)
        base = leader.http_url
        stream = f"web-test-{uuid.uuid4().hex[:8]}"
        events = [
            {"eventId": str(uuid.uuid4()), "eventType": "OrderPlaced", "data": {"order": n}}
            for n in range(3)
        ]
        http("POST", f"{base}/streams/{stream}", events, "application/vnd.eventstore.events+json")

        b = self.browser()
        d = b.driver
        login(b, base, wrong_first=True)

        # Cluster: three alive members, exactly one leader.
        d.get(base + "/web/#/cluster")

        def three_members_one_leader(d: Any) -> bool:
            # Read the table in one go: it is rebuilt every second.
            rows = d.execute_script(
                "return [...document.querySelectorAll('#members-table tbody tr')]"
                ".map(r => [...r.cells].map(c => c.textContent));"
            )
            states = sorted(r[1] for r in rows)
            alive = [r[2] for r in rows]
            return states == ["Master", "Slave", "Slave"] and alive == ["yes"] * 3

        b.wait("three members and one leader", three_members_one_leader)
        self.assertIn("leader: ", b.by_id("cluster-members").text)
        b.screenshot("cluster")

        # Every node's /metrics (external and internal port) sees the same.
        for node in nodes:
            for port in (node.ext_http_port, node.int_http_port):
                url = f"http://{node.host}:{port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as r:
                    text = r.read().decode()
                self.assertIn("estore_cluster_has_leader 1.0", text, url)
                self.assertIn('estore_gossip_members{alive="true",state="Slave"} 2.0', text, url)
                state = "Master" if node is leader else "Slave"
                self.assertIn(f'estore_node_state{{state="{state}"}} 1.0', text, url)

        # Streams: the test's stream is among the recent ones; open it.
        d.get(base + "/web/#/streams")
        link = b.wait(
            "the stream in the recent list",
            lambda d: [a for a in d.find_elements("css selector", "a.stream-link")
                       if a.text == stream],
        )[0]
        b.screenshot("streams")
        link.click()
        b.wait("the stream's events", lambda d: len(
            d.find_elements("css selector", "#events-table tbody tr")) == 3)
        self.assertIn("OrderPlaced", b.by_id("events-table").text)
        b.screenshot("stream")
        d.find_elements("css selector", "a.event-link")[-1].click()
        data = b.wait("the event's data", b.present("event-data"))
        self.assertEqual(json.loads(data.text), {"order": 0})
        b.screenshot("event")

        # Persistent subscriptions: create one from the form.
        d.get(base + "/web/#/subscriptions")
        b.wait("the create form", b.present("sub-stream"))
        b.by_id("sub-stream").send_keys(stream)
        b.by_id("sub-group").send_keys("web-group")
        b.by_id("sub-create").click()
        b.wait("the created message", b.present("sub-result"))
        b.wait("the group in the list", lambda d: "web-group" in (
            d.find_elements("id", "subscriptions-table")
            and d.find_element("id", "subscriptions-table").text or ""))
        b.screenshot("subscriptions")
        groups = http("GET", f"{base}/subscriptions")
        self.assertIn(("web-group", stream), [(g["groupName"], g["eventStreamId"]) for g in groups])

        # Projections do not exist: said plainly.
        d.get(base + "/web/#/projections")
        b.wait("projections not running", b.present("projections-not-running"))
        b.screenshot("projections")

        # An API error is a message, not a blank page or a traceback.
        d.get(base + f"/web/#/event/{stream}/99")
        error = b.wait("an error message", lambda d: d.find_elements("css selector", ".error"))
        self.assertIn("404", error[0].text)
        self.assertNotIn("Traceback", d.page_source)
        b.screenshot("error")

        # The users page lists the default users.
        d.get(base + "/web/#/users")
        b.wait("the users", lambda d: "ops" in (
            d.find_elements("id", "users-table") and d.find_element("id", "users-table").text
            or ""))
        b.screenshot("users")
        d.get(base + "/web/#/admin")
        b.wait("the admin page", b.present("scavenge"))
        b.screenshot("admin")

    def test_projections_and_scavenge_progress(self) -> None:
        """
        On a node on disk running the system projections: the projections
        page lists them with their status, disables and enables one, shows
        one's state, and answers the new-projection form with a message;
        the dashboard shows the index rebuild at start; the admin page
        starts a scavenge and shows its progress bar reach 100%.
        """
        node = NodeProcess(
            self.mktemp(),
            extra_args=["--chunk-size", str(64 * 1024), "--run-projections", "all",
                        "--start-standard-projections", "true"],
        )
        self.addCleanup(node.stop)
        node.start()
        base = node.http_url
        for batch in range(8):
            events = [
                {"eventId": str(uuid.uuid4()), "eventType": "Padded",
                 "data": {"n": n, "pad": "x" * 150}}
                for n in range(batch * 100, batch * 100 + 100)
            ]
            http("POST", f"{base}/streams/padded-{batch % 2}", events,
                 "application/vnd.eventstore.events+json")
        http("DELETE", f"{base}/streams/padded-1")

        b = self.browser()
        d = b.driver
        login(b, base)

        # The index was built at start: the dashboard lists it as done.
        b.wait("the index rebuild on the dashboard", lambda d: "Index rebuild" in (
            d.find_elements("id", "dashboard-tasks")
            and d.find_element("id", "dashboard-tasks").text or ""))
        b.screenshot("dashboard-tasks")

        # Projections: the four standard ones, running.
        d.get(base + "/web/#/projections")

        def statuses(d: Any) -> dict[str, str]:
            rows = d.execute_script(
                "return [...document.querySelectorAll('#projections-table tbody tr')]"
                ".map(r => [...r.cells].map(c => c.textContent));"
            )
            return {r[0]: r[1] for r in rows}

        standard = {"$by_category", "$by_event_type", "$stream_by_category", "$streams"}
        b.wait("the standard projections running", lambda d: standard <= set(statuses(d)) and all(
            statuses(d)[n].startswith("Running") for n in standard))
        b.screenshot("projections")

        def click_in_row(name: str, label: str) -> None:
            d.execute_script(
                "const [name, label] = arguments;"
                "for (const r of document.querySelectorAll('#projections-table tbody tr'))"
                "  if (r.cells[0].textContent === name)"
                "    for (const x of r.querySelectorAll('button'))"
                "      if (x.textContent === label) x.click();",
                name, label,
            )

        click_in_row("$by_category", "Disable")
        b.wait("$by_category stopped", lambda d: statuses(d).get("$by_category") == "Stopped")
        stats = http("GET", f"{base}/projection/$by_category")
        self.assertEqual(stats["status"], "Stopped")
        b.screenshot("projection-disabled")
        click_in_row("$by_category", "Enable")
        b.wait("$by_category running again",
               lambda d: statuses(d).get("$by_category", "").startswith("Running"))
        self.assertTrue(http("GET", f"{base}/projection/$by_category")["status"]
                        .startswith("Running"))

        # The new-projection form creates a projection and says so.
        b.by_id("projection-name").send_keys("web-counter")
        b.by_id("projection-create").click()
        answer = b.wait("the create answer", lambda d: d.find_elements(
            "css selector", "#projection-create-result .ok, #projection-create-result .error"))
        self.assertEqual(answer[0].text, "Projection web-counter created.")
        # it runs the form's query: counting every event
        b.wait("web-counter in the list", lambda d: statuses(d).get("web-counter", "")
               .startswith("Running"))
        deadline = time.monotonic() + PAGE_WAIT
        state: Any = None
        while time.monotonic() < deadline:
            state = http("GET", f"{base}/projection/web-counter/state")
            if state and state.get("count", 0) >= 800:
                break
            time.sleep(0.2)
        self.assertGreaterEqual(state and state.get("count", 0), 800, state)
        self.assertNotIn("Traceback", d.page_source)
        b.screenshot("projection-create")

        # One projection's page: its fields and state.
        d.get(base + "/web/#/projections/%24streams")
        b.wait("the projection's fields", b.present("projection-fields"))
        b.wait("the projection's state", lambda d: d.find_element("id", "projection-state").text)
        self.assertIn("Running", b.by_id("projection-fields").text)
        b.screenshot("projection")

        # Admin: start a scavenge and watch its bar reach 100%.
        d.get(base + "/web/#/admin")
        b.wait("the admin page", b.present("scavenge")).click()

        def scavenge_done(d: Any) -> Any:
            bars = d.find_elements("css selector", "#scavenge-bar progress")
            if not bars or float(bars[0].get_attribute("value")) != 100.0:
                return False
            return "done in" in d.find_element("id", "scavenge-bar").text

        b.wait("the scavenge at 100%", scavenge_done, timeout=60)
        self.assertIn("Scavenge:", b.by_id("scavenge-bar").text)
        b.screenshot("admin-scavenge")
        tasks = http("GET", f"{base}/progress")["tasks"]
        scavenges = [t for t in tasks if t["kind"] == "scavenge"]
        self.assertEqual((scavenges[0]["percentage"], scavenges[0]["result"]), (100.0, "done"))
        self.assertGreaterEqual(scavenges[0]["total"], 1)
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertIn("estore_scavenge_progress_ratio 1.0", text)
        fsyncs = [line for line in text.splitlines()
                  if line.startswith("estore_fsync_duration_seconds_count ")]
        self.assertTrue(fsyncs and float(fsyncs[0].split()[1]) > 0, fsyncs)

    def test_metrics_on_both_ports(self) -> None:
        """
        C{/metrics} answers on the external and internal HTTP ports of a
        single node, in the Prometheus text format.
        """
        node = NodeProcess(self.mktemp(), mem_db=True)
        self.addCleanup(node.stop)
        node.start()
        http("POST", f"{node.http_url}/streams/m", [
            {"eventId": str(uuid.uuid4()), "eventType": "t", "data": {}}
        ], "application/vnd.eventstore.events+json")
        for port in (node.ext_http_port, node.int_http_port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                self.assertTrue(r.headers["Content-Type"].startswith("text/plain"))
                text = r.read().decode()
            self.assertIn("estore_events_committed_total", text)
            self.assertIn('estore_gossip_members{alive="true",state="Master"} 1.0', text)
            self.assertIn("process_resident_memory_bytes", text)


class JsonLogNode(NodeProcess):
    """
    A node started with twistd's C{--logger estwisted.node.jsonlog.observer}.
    """

    def command(self) -> list[str]:
        args = super().command()
        at = args.index("estore")
        return args[:at] + ["--logger", "estwisted.node.jsonlog.observer"] + args[at:]


class JsonLogTests(TestCase):
    timeout = 120

    def test_json_lines(self) -> None:
        """
        Every line a node logs is a JSON object with the event's fields.
        """
        node = JsonLogNode(self.mktemp(), mem_db=True)
        self.addCleanup(node.stop)
        node.start()
        node.stop()
        lines = [line for line in node.log().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        listening = [r for r in records if r["message"].startswith("Listening for external HTTP")]
        self.assertEqual(len(listening), 1, lines[:20])
        self.assertEqual(listening[0]["port"], node.ext_http_port)
        self.assertEqual(listening[0]["namespace"], "estwisted.node.service.ListenerService")
        self.assertTrue(all({"time", "level", "message"} <= set(r) for r in records))
