# -*- test-case-name: estwisted.core.test.test_streams -*-
"""
Stream metadata and link events, as values: parsing a C{$metadata} event
(tcp-protocol.md 6.11), the lowest visible event number of a stream, and a
C{$>} link's body.  Pure: no log, no reactor.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from attrs import frozen

from estwisted.core import acl
from estwisted.core.model import DELETED_STREAM

#: Event types written by the store itself.
METADATA_EVENT_TYPE = "$metadata"
TOMBSTONE_EVENT_TYPE = "$streamDeleted"
LINK_EVENT_TYPE = "$>"


@frozen
class StreamMetadata:
    """
    Parsed stream metadata (tcp-protocol.md 6.11).  Numeric keys are
    C{None} when absent, invalid or not positive.

    @ivar version: the metastream's last event number, -1 if none.
    @ivar raw: the latest metadata event's data (C{b""} if none).
    @ivar data: the decoded JSON object, C{None} if none or unparseable.
    """

    version: int = -1
    raw: bytes = b""
    data: Optional[dict[str, Any]] = None
    max_count: Optional[int] = None
    max_age: Optional[int] = None
    truncate_before: Optional[int] = None
    cache_control: Optional[int] = None
    acl: Optional[acl.StreamAcl] = None

    @property
    def is_soft_deleted(self) -> bool:
        return self.truncate_before == DELETED_STREAM


NO_METADATA = StreamMetadata()

#: What every metastream behaves as having.
METASTREAM_METADATA = StreamMetadata(max_count=1)


def _positive_int(value: object, minimum: int = 1) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value >= minimum else None


def parse_metadata(data: bytes, is_json: bool, version: int) -> StreamMetadata:
    """
    Parse a metadata event's body; a non-JSON, empty or unparseable body
    means no metadata (but C{version} and C{raw} are kept).
    """
    if not is_json or not data:
        return StreamMetadata(version=version, raw=data)
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return StreamMetadata(version=version, raw=data)
    if not isinstance(value, dict):
        return StreamMetadata(version=version, raw=data)
    return StreamMetadata(
        version=version,
        raw=data,
        data=value,
        max_count=_positive_int(value.get("$maxCount")),
        max_age=_positive_int(value.get("$maxAge")),
        truncate_before=_positive_int(value.get("$tb"), 0),
        cache_control=_positive_int(value.get("$cacheControl")),
        acl=acl.parse_acl(value.get("$acl")),
    )


def min_visible(last: int, metadata: StreamMetadata) -> int:
    """
    The lowest visible event number of a stream whose last event is
    C{last}.
    """
    lowest = 0
    if metadata.max_count is not None:
        lowest = max(lowest, last - metadata.max_count + 1)
    if metadata.truncate_before is not None:
        lowest = max(lowest, metadata.truncate_before)
    return lowest


def parse_link(data: bytes) -> Optional[tuple[int, str]]:
    """
    Parse a link event's data C{b"<event number>@<stream>"}.

    @return: C{(event_number, stream)} or C{None} when it is not a link.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    number, sep, stream = text.partition("@")
    if not sep or not stream:
        return None
    number = number.strip()
    if not number or not (number.isdigit() or (number[0] == "-" and number[1:].isdigit())):
        return None
    return int(number), stream
