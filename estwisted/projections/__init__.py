# -*- test-case-name: estwisted.projections.test -*-
"""
Projections (issue 16): the four standard system projections of Event
Store v5 (C{$by_category}, C{$by_event_type}, C{$stream_by_category},
C{$streams}) over the stream store.

Pure logic is in C{_system} (no reactor, no store); C{_service} is the
thin loop that reads C{$all}, writes and checkpoints.

User (JavaScript) projections: C{_js} runs a v5 query in V8
(C{_prelude} is the v5 API in JavaScript), C{_user} is their pure logic
(definitions, stream names, L{EmitPlanner}), C{_runner} the loop of one,
C{_user_service} the service holding them.
"""

from estwisted.projections._js import JsProjection, ProjectionFault, Sources
from estwisted.projections._runner import UserProjectionRunner
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
from estwisted.projections._user import Definition, Mode
from estwisted.projections._user_service import (
    ProjectionConflict,
    ProjectionStateError,
    UserProjectionsService,
)

__all__ = [
    "Definition",
    "JsProjection",
    "Mode",
    "ProjectionConflict",
    "ProjectionFault",
    "ProjectionStateError",
    "Sources",
    "UserProjectionRunner",
    "UserProjectionsService",
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
