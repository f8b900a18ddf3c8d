# -*- test-case-name: estwisted.projections.test.test_status -*-
"""
The v5 JSON shapes of the HTTP projections API for the standard
projections (C{GET /projections/...}, C{/projection/{name}/statistics},
C{/config}, C{/query}): pure functions of a runner's state.
"""

from __future__ import annotations

from typing import Any

#: The source text v5 shows as the query of each standard projection.
SYSTEM_QUERIES = {
    "$by_category": "first\r\n-",
    "$by_event_type": "",
    "$stream_by_category": "first\r\n-",
    "$streams": "",
}

#: The kinds of C{GET /projections/{kind}} that list continuous projections.
CONTINUOUS_LISTS = frozenset({"any", "all-non-transient", "continuous"})
#: The kinds that exist but hold none of the standard projections.
OTHER_LISTS = frozenset({"onetime", "transient"})


def position_text(position: int) -> str:
    """
    v5's position of an C{$all} projection: C{C:{commit}/P:{prepare}}.
    """
    position = max(position, 0)
    return f"C:{position}/P:{position}"


def statistics(
    name: str, status: str, position: int, checkpoint: int, processed: int, reason: str,
    base_url: str,
) -> dict[str, Any]:
    """
    One projection's statistics as v5 writes them.
    """
    url = f"{base_url}/projection/{name}"
    return {
        "coreProcessingTime": 0,
        "version": 1,
        "epoch": -1,
        "effectiveName": name,
        "writesInProgress": 0,
        "readsInProgress": 0,
        "partitionsCached": 1,
        "status": status,
        "stateReason": reason,
        "name": name,
        "mode": "Continuous",
        "position": position_text(position),
        "progress": 100.0 if status == "Running" else -1.0,
        "lastCheckpoint": position_text(checkpoint),
        "eventsProcessedAfterRestart": processed,
        "statusUrl": url,
        "stateUrl": url + "/state",
        "resultUrl": url + "/result",
        "queryUrl": url + "/query?config=yes",
        "enableCommandUrl": url + "/command/enable",
        "disableCommandUrl": url + "/command/disable",
        "checkpointStatus": "",
        "bufferedEvents": 0,
        "writePendingEventsBeforeCheckpoint": 0,
        "writePendingEventsAfterCheckpoint": 0,
    }


def config(checkpoint_every: int) -> dict[str, Any]:
    """
    C{GET /projection/{name}/config} as v5 answers it.
    """
    return {
        "emitEnabled": True,
        "trackEmittedStreams": False,
        "checkpointAfterMs": 0,
        "checkpointHandledThreshold": checkpoint_every,
        "checkpointUnhandledBytesThreshold": 10_000_000,
        "pendingEventsThreshold": 5000,
        "maxWriteBatchLength": 500,
        "maxAllowedWritesInFlight": 0,
    }


#: The v5 statuses of a user projection (ours to theirs).
_USER_STATUS = {"Completed": "Completed/Stopped"}


def user_statistics(runner: Any, base_url: str) -> dict[str, Any]:
    """
    A user projection's statistics as v5 writes them.
    """
    d = runner.definition
    stats = statistics(
        d.name, _USER_STATUS.get(runner.status, runner.status), runner.position,
        runner.checkpoint, runner.processed, runner.reason, base_url,
    )
    stats["mode"] = d.mode.value
    stats["epoch"] = d.epoch
    stats["progress"] = 100.0 if runner.status in ("Running", "Completed") else -1.0
    stats["partitionsCached"] = max(1, len(runner.known_partitions()) + 1)
    return stats


def user_config(runner: Any) -> dict[str, Any]:
    """
    C{GET /projection/{name}/config} of a user projection.
    """
    d = runner.definition
    body = config(d.checkpoint_every)
    body["emitEnabled"] = d.emit_enabled
    body["trackEmittedStreams"] = d.track_emitted_streams
    return body


#: The list kinds each mode appears in.
USER_LISTS = {
    "OneTime": frozenset({"any", "all-non-transient", "onetime"}),
    "Continuous": frozenset({"any", "all-non-transient", "continuous"}),
    "Transient": frozenset({"any", "transient"}),
}
