# -*- test-case-name: estwisted.wire.test.test_framing -*-
"""
Sans-IO length-prefix framing of the Event Store TCP protocol
(tcp-protocol.md section 2.1): every frame is a little-endian signed int32
length followed by that many bytes of package.

L{Framer.feed} takes whatever bytes arrived and returns the complete
packages; L{frame} builds one frame.  No I/O and no reactor here.
"""

from __future__ import annotations

import struct

#: Default maximum package size (64 MiB), as the v5 server and clients use.
DEFAULT_MAX_PACKAGE_SIZE = 64 * 1024 * 1024

_LENGTH = struct.Struct("<i")
_pack_length = _LENGTH.pack
_unpack_length_from = _LENGTH.unpack_from


class FramingError(Exception):
    """
    A frame length is out of bounds.  The stream cannot be resynchronised:
    the connection must be closed.

    @ivar length: the offending length.
    @ivar max_size: the limit in force.
    @ivar packages: the packages completed, in the same call, before the bad
        length (they are valid and may still be processed).
    """

    def __init__(self, length: int, max_size: int) -> None:
        super().__init__(f"Package size is out of bounds: {length} (max: {max_size}).")
        self.length = length
        self.max_size = max_size
        self.packages: list[bytes] = []


def frame(package: bytes) -> bytes:
    """
    Prefix C{package} with its length.
    """
    return _pack_length(len(package)) + package


class Framer:
    """
    Incremental decoder of length-prefixed frames.

    @ivar max_size: the largest acceptable package length.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_PACKAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._failed: FramingError | None = None

    @property
    def buffered(self) -> int:
        """
        Bytes received and not yet returned as a package.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add received bytes.

        @return: every package completed by C{data}, in order (possibly none).
        @raise FramingError: a length prefix is C{<= 0} or above C{max_size}.
            The packages completed before it are in its C{packages}; later
            calls raise the same error again (with no packages).
        """
        if self._failed is not None:
            self._failed.packages = []
            raise self._failed
        buffer = self._buffer
        if not buffer:
            # Fast path: whole frames in one chunk, no copying into the buffer.
            packages: list[bytes] = []
            offset = 0
            size = len(data)
            max_size = self.max_size
            while size - offset >= 4:
                (length,) = _unpack_length_from(data, offset)
                if length <= 0 or length > max_size:
                    self._failed = FramingError(length, max_size)
                    self._failed.packages = packages
                    raise self._failed
                end = offset + 4 + length
                if end > size:
                    break
                packages.append(data[offset + 4 : end])
                offset = end
            if offset < size:
                buffer += data[offset:] if offset else data
            return packages
        buffer += data
        packages = []
        offset = 0
        size = len(buffer)
        max_size = self.max_size
        while size - offset >= 4:
            (length,) = _unpack_length_from(buffer, offset)
            if length <= 0 or length > max_size:
                self._failed = FramingError(length, max_size)
                self._failed.packages = packages
                del buffer[:]
                raise self._failed
            end = offset + 4 + length
            if end > size:
                break
            packages.append(bytes(buffer[offset + 4 : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return packages
