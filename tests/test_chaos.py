"""
System test: a short fault-injection run (L{estwisted.testing.chaos}, ten
rounds, a fixed seed) against three real on-disk nodes, with the history
checked.  The run happens once per test process; each test asserts one
count of its JSON summary, so a red check names the promise broken.

The long run is C{benchmarks/chaos.py}.
"""
# -*- test-case-name: tests.test_chaos -*-

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.harness import REPO_ROOT, node_environment

#: Rounds and seed of the CI run.
ROUNDS = 10
SEED = 11

#: Longest the whole run may take (seconds).
RUN_TIMEOUT = 900

_result: Optional[dict[str, Any]] = None


def chaos_summary() -> dict[str, Any]:
    """
    Run the chaos module once (per process) and return its summary line.
    """
    global _result
    if _result is None:
        command = [sys.executable, "-m", "estwisted.testing.chaos",
                   "--rounds", str(ROUNDS), "--seed", str(SEED)]
        done = subprocess.run(command, cwd=REPO_ROOT, env=node_environment(),
                              capture_output=True, timeout=RUN_TIMEOUT, check=False)
        lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            _result = json.loads(lines[-1])
        except (IndexError, ValueError):
            _result = {"error": "no summary line", "returncode": done.returncode,
                       "stderr": done.stderr.decode("utf-8", "replace")[-3000:]}
        _result["returncode"] = done.returncode
    return _result


class ChaosRunTests(SynchronousTestCase):
    """
    The promises of issue 11 under a ten-round fault schedule.
    """

    def summary(self) -> dict[str, Any]:
        result = chaos_summary()
        if "error" in result:
            self.fail(f"the chaos run did not complete: {result}")
        return result

    def assertZero(self, key: str) -> None:
        result = self.summary()
        self.assertEqual(result[key], 0, json.dumps(result, sort_keys=True)[:4000])

    def test_ran(self) -> None:
        """
        The run completed, writes were acknowledged, faults were injected.
        """
        result = self.summary()
        self.assertGreater(result["acknowledged"], 100)
        self.assertEqual(sum(result["faults"].values()), ROUNDS)

    def test_no_lost_write(self) -> None:
        """
        Every acknowledged event is on every node.
        """
        self.assertZero("lost")

    def test_no_duplicate(self) -> None:
        """
        No event id is stored twice in a stream.
        """
        self.assertZero("duplicated")

    def test_in_order(self) -> None:
        """
        An event acknowledged before another was sent precedes it.
        """
        self.assertZero("reordered")

    def test_expected_version(self) -> None:
        """
        No two writes are accepted for the same expected version, and each
        accepted one is where its expected version put it.
        """
        self.assertZero("ev_conflicts")
        self.assertZero("ev_misplaced")

    def test_dollar_all(self) -> None:
        """
        In C{$all} too, every acknowledged event is there once, in order,
        and the same on every node.
        """
        for key in ("all_lost", "all_duplicated", "all_reordered", "all_divergent"):
            self.assertZero(key)

    def test_no_split_brain(self) -> None:
        """
        Never two leaders in the same epoch.
        """
        self.assertZero("split_brain")

    def test_converged(self) -> None:
        """
        After the faults stop every node holds the same streams, and nothing
        nobody wrote.
        """
        result = self.summary()
        self.assertTrue(result["converged"], json.dumps(result, sort_keys=True)[:4000])
        self.assertZero("divergent_streams")
        self.assertZero("phantoms")

    def test_persistent_subscription_receives_everything(self) -> None:
        """
        The persistent-subscription consumer receives every acknowledged
        event of its stream.
        """
        self.assertZero("sub_missing")

    def test_persistent_subscription_no_redelivery_after_ack(self) -> None:
        """
        The consumer never receives again an event whose ack the server
        accepted (202), whatever failed over in between.
        """
        self.assertZero("sub_redelivered_after_ack")

    def test_exit_code(self) -> None:
        """
        The module exits 0 exactly when it found nothing.
        """
        result = self.summary()
        self.assertEqual(result["returncode"], 0 if result["ok"] else 1)

