# -*- test-case-name: estwisted.projections.test -*-
"""
Projections (issue 16): the four standard system projections of Event
Store v5 (C{$by_category}, C{$by_event_type}, C{$stream_by_category},
C{$streams}) over the stream store.

Pure logic is in C{_system} (no reactor, no store); C{_service} is the
thin loop that reads C{$all}, writes and checkpoints.
"""

from estwisted.projections._service import (
    ProjectionRunner,
    SystemProjectionsService,
)
from estwisted.projections._system import (
    CHECKPOINT_EVENT_TYPE,
    STANDARD_PROJECTIONS,
    STREAM_REFERENCE_EVENT_TYPE,
    Emit,
    OutputState,
    Projector,
    SystemProjection,
    Write,
    category_of,
    checkpoint_event,
    checkpoint_stream,
    emit_for,
    parse_checkpoint,
    source_position_of,
)

__all__ = [
    "CHECKPOINT_EVENT_TYPE",
    "STANDARD_PROJECTIONS",
    "STREAM_REFERENCE_EVENT_TYPE",
    "Emit",
    "OutputState",
    "ProjectionRunner",
    "Projector",
    "SystemProjection",
    "SystemProjectionsService",
    "Write",
    "category_of",
    "checkpoint_event",
    "checkpoint_stream",
    "emit_for",
    "parse_checkpoint",
    "source_position_of",
]
