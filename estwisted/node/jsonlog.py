# -*- test-case-name: estwisted.node.test.test_jsonlog -*-
"""
Structured logs: one JSON object per line for every log event, with the
fields the code already passes to C{twisted.logger}.

Select it with twistd's C{--logger} option (before the plugin name)::

    twistd -n --logger estwisted.node.jsonlog.observer estore --config node.yaml

Each line holds C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{message}
(the event formatted as the text log shows it), every keyword field given
to the logger (C{stream=}, C{position=}, ...; values JSON cannot hold are
written with C{repr}), and C{failure} (the traceback text) for
C{log.failure}.  The text format stays the default.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any, Optional

from twisted.logger import FileLogObserver, ILogObserver, formatEvent

#: Keys of twisted.logger's own bookkeeping, not fields of the event.
_INTERNAL = frozenset({"format", "message", "isError", "system", "time", "why", "failure"})


def _safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    return repr(value)


def event_as_json(event: dict[str, Any]) -> str:
    """
    One log event as a line of JSON (no newline inside, one at the end).
    """
    stamp = event.get("log_time")
    when = (
        datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
        if isinstance(stamp, (int, float))
        else None
    )
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": when,
        "level": getattr(level, "name", None) or ("error" if event.get("isError") else "info"),
        "namespace": event.get("log_namespace") or event.get("system"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _INTERNAL or key in record:
            continue
        record[key] = _safe(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["failure"] = failure.getTraceback()
        except Exception:
            record["failure"] = repr(failure)
    return json.dumps(record, ensure_ascii=False, default=repr) + "\n"


def json_observer(out: Optional[IO[str]] = None) -> ILogObserver:
    """
    An observer writing L{event_as_json} lines to C{out} (standard output
    by default).
    """
    return FileLogObserver(out if out is not None else sys.stdout, event_as_json)


def observer() -> ILogObserver:
    """
    The factory twistd's C{--logger estwisted.node.jsonlog.observer} calls.
    """
    return json_observer()


__all__ = ["event_as_json", "json_observer", "observer"]
