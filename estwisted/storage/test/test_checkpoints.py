# -*- test-case-name: estwisted.storage.test.test_checkpoints -*-
"""
Tests for L{estwisted.storage.checkpoints}.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import StorageError
from estwisted.storage.checkpoints import INITIAL_VALUES, Checkpoints, FileCheckpoint


class FileCheckpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="estw-chk-")
        self.addCleanup(shutil.rmtree, self.path, True)

    def test_initial(self) -> None:
        """
        A new checkpoint file holds its initial value as 8 bytes.
        """
        chk = FileCheckpoint(os.path.join(self.path, "x.chk"), -1)
        chk.close()
        self.assertEqual(chk.value, -1)
        with open(os.path.join(self.path, "x.chk"), "rb") as f:
            self.assertEqual(f.read(), b"\xff" * 8)
        self.assertEqual(os.listdir(self.path), ["x.chk"])

    @given(st.integers(-(2**63), 2**63 - 1))
    def test_round_trip(self, value: int) -> None:
        path = os.path.join(self.path, f"v{abs(value) % 7}.chk")
        chk = FileCheckpoint(path, 0)
        chk.write(value)
        self.assertEqual(chk.value, value)
        chk.close()
        again = FileCheckpoint(path, 0)
        self.addCleanup(again.close)
        self.assertEqual(again.value, value)
        self.assertEqual(os.path.getsize(path), 8)

    def test_sync(self) -> None:
        """
        L{FileCheckpoint.sync} records the value as synced; unchanged values
        are not synced again.
        """
        chk = FileCheckpoint(os.path.join(self.path, "w.chk"), 0)
        self.addCleanup(chk.close)
        chk.write(5)
        self.assertEqual(chk.synced_value, 0)
        chk.sync()
        self.assertEqual(chk.synced_value, 5)
        chk.write_and_sync(9)
        self.assertEqual((chk.value, chk.synced_value), (9, 9))

    def test_wrong_size(self) -> None:
        path = os.path.join(self.path, "bad.chk")
        with open(path, "wb") as f:
            f.write(b"\x01\x02\x03")
        self.assertRaises(StorageError, FileCheckpoint, path, 0)

    def test_checkpoints(self) -> None:
        """
        L{Checkpoints} opens one file per checkpoint with the initial values
        of storage.md (writer/chaser 0, epoch/truncate -1).
        """
        chk = Checkpoints(self.path)
        self.assertEqual(
            (chk.writer.value, chk.chaser.value, chk.epoch.value, chk.truncate.value),
            (0, 0, -1, -1),
        )
        chk.chaser.write(77)
        chk.close()
        self.assertEqual(sorted(os.listdir(self.path)), sorted(f"{n}.chk" for n in INITIAL_VALUES))
        again = Checkpoints(self.path)
        self.addCleanup(again.close)
        self.assertEqual(again.chaser.value, 77)
