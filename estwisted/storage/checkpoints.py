# -*- test-case-name: estwisted.storage.test.test_checkpoints -*-
"""
Checkpoints: one signed 64-bit little-endian integer per file, 8 bytes.

L{FileCheckpoint.write} stores a value with one C{pwrite} (it survives a
crash of the process); L{FileCheckpoint.sync} makes it survive a crash of
the machine.  Files are created atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import struct

from estwisted.core.errors import StorageError

_VALUE = struct.Struct("<q")

#: Checkpoint files and their initial values (storage.md section 9).  The
#: C{shutdown} checkpoint is ours: the end position at a clean close, -1
#: while the log is open.
INITIAL_VALUES = {
    "writer": 0,
    "chaser": 0,
    "epoch": -1,
    "truncate": -1,
    "shutdown": -1,
}


def fsync_directory(path: str) -> None:
    """
    Make renames and unlinks in directory C{path} durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileCheckpoint:
    """
    One checkpoint file, kept open.

    @ivar value: the last value written.
    """

    def __init__(self, path: str, initial: int) -> None:
        self.path = path
        if not os.path.exists(path):
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
            try:
                os.write(fd, _VALUE.pack(initial))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            fsync_directory(os.path.dirname(path) or ".")
        self._fd = os.open(path, os.O_RDWR)
        raw = os.pread(self._fd, 8, 0)
        if len(raw) != 8:
            os.close(self._fd)
            raise StorageError(f"checkpoint {path} is {len(raw)} bytes long, not 8")
        self.value: int = _VALUE.unpack(raw)[0]
        self.synced_value = self.value

    def write(self, value: int) -> None:
        """
        Store C{value} (durable against a process crash, not a power loss).
        """
        os.pwrite(self._fd, _VALUE.pack(value), 0)
        self.value = value

    def sync(self) -> None:
        """
        Make the last written value durable, if it is not already.
        """
        if self.synced_value != self.value:
            os.fdatasync(self._fd)
            self.synced_value = self.value

    def write_and_sync(self, value: int) -> None:
        if value != self.value:
            self.write(value)
        self.sync()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Checkpoints:
    """
    The checkpoint files of one database directory:
    C{writer}, C{chaser}, C{epoch}, C{truncate} and C{shutdown}.
    """

    def __init__(self, directory: str) -> None:
        opened: list[FileCheckpoint] = []
        try:
            for name, initial in INITIAL_VALUES.items():
                opened.append(FileCheckpoint(os.path.join(directory, f"{name}.chk"), initial))
        except BaseException:
            for chk in opened:
                chk.close()
            raise
        self.writer, self.chaser, self.epoch, self.truncate, self.shutdown = opened

    def close(self) -> None:
        for chk in (self.writer, self.chaser, self.epoch, self.truncate, self.shutdown):
            chk.close()
