# -*- test-case-name: tests.test_crash -*-
"""
Crash safety with real processes: L{tests.crash_writer} appends with many
concurrent appenders and is killed with SIGKILL at random moments, then
restarted.  After every kill every acknowledged event is present exactly
once and in order, and no partial record is visible.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from estwisted.storage.open import open_storage
from tests.crash_writer import payload

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_writer.py")
ROUNDS = 22
CHUNK_SIZE = 128 * 1024
START_TIMEOUT = 30.0


def _acks(text: str) -> dict[str, int]:
    """
    The last acknowledged event number per stream, from complete lines.
    """
    acked: dict[str, int] = {}
    for line in text.split("\n")[:-1]:
        if not line.startswith("ack "):
            continue
        for item in line[4:].split():
            stream, number = item.rsplit(":", 1)
            acked[stream] = max(acked.get(stream, -1), int(number))
    return acked


class CrashTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="estw-crash-")
        self.addCleanup(shutil.rmtree, self.path, True)
        self.db = os.path.join(self.path, "db")

    def _run_and_kill(self, n: int, rng: random.Random) -> str:
        """
        Start a writer, let it write for a random moment, SIGKILL it.

        @return: what it printed.
        """
        out_path = os.path.join(self.path, f"out-{n}.txt")
        err_path = os.path.join(self.path, f"err-{n}.txt")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, WRITER, self.db, str(n), str(CHUNK_SIZE), "30"],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                with open(out_path, "rb") as f:
                    if f.read(6) == b"ready ":
                        break
                if process.poll() is not None:
                    break
                time.sleep(0.01)
            else:
                self.fail(f"writer {n} did not start in {START_TIMEOUT} s")
            time.sleep(rng.uniform(0.01, 0.35))
        finally:
            process.kill()
            process.wait(10)
        with open(err_path, "rb") as f:
            errors = f.read().decode("utf-8", "replace")
        self.assertNotIn("Traceback", errors)
        with open(out_path, "rb") as f:
            return f.read().decode("utf-8")

    def _verify(self, acked: dict[str, int]) -> int:
        """
        Open the database (recovering it) and check every stream: numbers
        0..last once each, in log order, intact payloads, at least every
        acknowledged event, and an index that agrees with the log.

        @return: the number of events.
        """
        log, index, closer = open_storage(self.db, False, CHUNK_SIZE)
        try:
            seen: dict[str, list[int]] = {}
            positions: dict[str, list[int]] = {}
            p = 0
            count = 0
            while True:
                page = log.read_forward(p, 4096)
                if not page:
                    break
                for record in page:
                    numbers = seen.setdefault(record.stream, [])
                    self.assertEqual(
                        record.event_number,
                        len(numbers),
                        f"{record.stream}: event {record.event_number} after {len(numbers) - 1}",
                    )
                    numbers.append(record.event_number)
                    positions.setdefault(record.stream, []).append(record.position)
                    self.assertEqual(
                        record.data, payload(record.stream, record.event_number, len(record.data))
                    )
                    count += 1
                p = page[-1].next_position
            # the end may lie past the last record, at the start of a chunk
            # when a kill came right after a chunk was completed
            self.assertLessEqual(p, log.end_position)
            self.assertLessEqual(log.end_position - p, CHUNK_SIZE)
            for stream, last in acked.items():
                self.assertGreaterEqual(
                    len(seen.get(stream, [])) - 1, last, f"acknowledged {stream}:{last} lost"
                )
            for stream, expected in positions.items():
                self.assertEqual(list(index.positions(stream, 0, len(expected))), expected)
            self.assertEqual(len(index), count)
        finally:
            closer()
        return count

    def test_kill_and_restart(self) -> None:
        """
        At least 20 SIGKILL/restart rounds; some recoveries are done by the
        verifier, some by the next writer itself.
        """
        rng = random.Random(20261122)
        acked: dict[str, int] = {}
        total_acks = 0
        verified = 0
        for n in range(ROUNDS):
            text = self._run_and_kill(n, rng)
            self.assertTrue(text.startswith("ready "), text[:100])
            for stream, last in _acks(text).items():
                acked[stream] = max(acked.get(stream, -1), last)
            total_acks += text.count("\nack ")
            if n % 3 != 1 or n == ROUNDS - 1:
                self._verify(acked)
                verified += 1
        self.assertGreater(total_acks, ROUNDS)
        self.assertGreaterEqual(verified, 14)
