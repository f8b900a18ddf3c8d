# -*- test-case-name: estwisted.storage.test.test_max_truncation -*-
"""
C{MaxTruncation}: a cut of the log by C{truncate.chk} larger than the
limit is refused, on open and in process, and changes nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import StorageError
from estwisted.storage.checkpoints import FileCheckpoint
from estwisted.storage.log import ChunkedLog, check_truncation
from estwisted.storage.open import open_storage

CHUNK = 8192


def _append(log: ChunkedLog, i: int) -> int:
    return log.append(f"s{i % 3}", i // 3, i.to_bytes(16, "big"), "t", 0, b"d" * 300, b"", i)


def _read_checkpoint(path: str, name: str) -> int:
    chk = FileCheckpoint(os.path.join(path, f"{name}.chk"), 0)
    try:
        return chk.value
    finally:
        chk.close()


def _set_checkpoint(path: str, name: str, value: int) -> None:
    chk = FileCheckpoint(os.path.join(path, f"{name}.chk"), 0)
    chk.write(value)
    chk.close()


class CheckTruncationTests(SynchronousTestCase):
    """
    The pure rule.
    """

    @settings(max_examples=200)
    @given(
        writer=st.integers(0, 2**40),
        cut=st.integers(0, 2**40),
        limit=st.integers(-1, 2**40),
    )
    def test_rule(self, writer: int, cut: int, limit: int) -> None:
        """
        Refused exactly when a limit is set and the cut is larger; the
        error names the cut and the option.
        """
        truncate = max(0, writer - cut)
        requested = writer - truncate
        if limit >= 0 and requested > limit:
            e = self.assertRaises(StorageError, check_truncation, "db", writer, truncate, limit)
            self.assertIn("MaxTruncation", str(e))
            self.assertIn(f"cut {requested} bytes", str(e))
        else:
            check_truncation("db", writer, truncate, limit)


class MaxTruncationLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.path, True)

    def _fill(self, n: int = 30) -> list[int]:
        log = ChunkedLog(self.path, chunk_size=CHUNK)
        positions = [_append(log, i) for i in range(n)]
        log.flush()
        log.close()
        return positions

    def test_open_refuses_larger_cut(self) -> None:
        """
        Opening with C{truncate.chk} asking for more than C{max_truncation}
        bytes raises L{StorageError}; chunks and checkpoints are untouched,
        and the same database opens (and cuts) with no limit.
        """
        positions = self._fill()
        writer = _read_checkpoint(self.path, "writer")
        _set_checkpoint(self.path, "truncate", positions[5])
        files = sorted(os.listdir(self.path))
        e = self.assertRaises(
            StorageError, ChunkedLog, self.path, chunk_size=CHUNK, max_truncation=1000
        )
        self.assertIn("more than MaxTruncation (1000)", str(e))
        self.assertIn(f"{writer} => {positions[5]}", str(e))
        self.assertEqual(sorted(os.listdir(self.path)), files)
        self.assertEqual(_read_checkpoint(self.path, "writer"), writer)
        self.assertEqual(_read_checkpoint(self.path, "truncate"), positions[5])
        self.assertRaises(StorageError, open_storage, self.path, False, CHUNK, 1000)
        log = ChunkedLog(self.path, chunk_size=CHUNK, max_truncation=-1)
        self.addCleanup(log.close)
        self.assertEqual(log.end_position, positions[5])

    def test_open_allows_cut_within_limit(self) -> None:
        """
        A cut of at most C{max_truncation} bytes is applied.
        """
        positions = self._fill()
        writer = _read_checkpoint(self.path, "writer")
        _set_checkpoint(self.path, "truncate", positions[-2])
        log = ChunkedLog(self.path, chunk_size=CHUNK, max_truncation=writer - positions[-2])
        self.addCleanup(log.close)
        self.assertEqual(log.end_position, positions[-2])

    def test_in_process_truncate_refused(self) -> None:
        """
        L{ChunkedLog.truncate} (a replica's divergence) refuses a larger cut
        before writing C{truncate.chk}: the log stays as it was.
        """
        self._fill()
        log = ChunkedLog(self.path, chunk_size=CHUNK, max_truncation=100)
        self.addCleanup(log.close)
        end = log.end_position
        before = [r.position for r in log.read_forward(0, 1000)]
        self.assertRaises(StorageError, log.truncate, 0)
        self.assertEqual(log.end_position, end)
        self.assertEqual(log.checkpoints.truncate.value, -1)  # type: ignore[union-attr]
        self.assertEqual([r.position for r in log.read_forward(0, 1000)], before)
        self.assertGreater(len(before), 20)
