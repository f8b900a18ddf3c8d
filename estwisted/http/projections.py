# -*- test-case-name: estwisted.http.test.test_api -*-
"""
The v5 HTTP projections API (issue 16): the standard projections and
user (JavaScript) ones.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from estwisted.http.base import HttpBase
from estwisted.http.parsing import HttpError
from estwisted.wire import atom

_TRUE = frozenset({"yes", "true", "1", "on"})
_FALSE = frozenset({"no", "false", "0", "off"})


def _flag(text: Optional[str], name: str) -> Optional[bool]:
    if text is None or text == "":
        return None
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise HttpError(400, f"Invalid value for {name}: {text!r} (yes or no)")


class ProjectionRoutes(HttpBase):
    """
    The C{/projections} and C{/projection/...} handlers.
    """

    def _service(self) -> Any:
        service = self.node_info.projections
        if service is None:
            raise HttpError(404, "Not Found")
        return service

    def _projections(self, name: Optional[str] = None) -> Any:
        service = self._service()
        if name is not None and name not in service.runners:
            raise HttpError(404, "Not Found")
        return service

    def _user(self, name: Optional[str] = None) -> Any:
        """
        The user projections service (and C{name} is one), or C{None}.
        """
        service = self._service()
        user = getattr(service, "user", None)
        if user is None or (name is not None and name not in user.runners):
            return None
        return user

    def _users_or_404(self) -> Any:
        user = self._user()
        if user is None:
            raise HttpError(404, "Not Found")
        return user

    def _body_text(self, request: Any) -> str:
        body = request.content.read() if request.content is not None else b""
        try:
            return str(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise HttpError(400, "The query is not UTF-8") from None

    def list_projections(self, request: Any, kind: str) -> bytes:
        """
        C{GET /projections/{any|all-non-transient|continuous|onetime|transient}}.
        """
        from estwisted.projections import _status

        self._principal(request, "none")
        service = self._projections()
        base = self.base_url(request)
        if kind in _status.CONTINUOUS_LISTS:
            items = [service.statistics(name, base) for name in service.runners]
        elif kind in _status.OTHER_LISTS:
            items = []
        else:
            raise HttpError(404, "Not Found")
        user = self._user()
        if user is not None:
            for runner in user.runners.values():
                if kind in _status.USER_LISTS[runner.definition.mode.value]:
                    items.append(_status.user_statistics(runner, base))
        return self._ok(request, atom.dumps({"projections": items}), atom.JSON)

    def projection_part(self, request: Any, name: str, part: str) -> Any:
        """
        C{GET /projection/{name}} and its C{/statistics}, C{/state},
        C{/result}, C{/query} and C{/config}.
        """
        from estwisted.projections import _service, _status

        self._principal(request, "none")
        user = self._user(name)
        if user is not None:
            return self._user_part(request, user.runners[name], part)
        service = self._projections(name)
        if part == "":
            body = service.statistics(name, self.base_url(request))
        elif part == "statistics":
            body = {"projections": [service.statistics(name, self.base_url(request))]}
        elif part in ("state", "result"):
            # the standard projections keep no state
            body = {}
        elif part == "query":
            text = _status.SYSTEM_QUERIES.get(name, "")
            return self._ok(request, text.encode(), atom.TEXT_PLAIN)
        elif part == "config":
            body = _status.config(_service.CHECKPOINT_EVERY)
        else:
            raise HttpError(404, "Not Found")
        return self._ok(request, atom.dumps(body), atom.JSON)

    def _user_part(self, request: Any, runner: Any, part: str) -> Any:
        from twisted.internet.defer import Deferred

        from estwisted.projections import _status

        base = self.base_url(request)
        if part == "":
            return self._ok(request, atom.dumps(_status.user_statistics(runner, base)),
                            atom.JSON)
        if part == "statistics":
            stats = {"projections": [_status.user_statistics(runner, base)]}
            return self._ok(request, atom.dumps(stats), atom.JSON)
        if part == "query":
            d = runner.definition
            if _flag(self._query(request, b"config"), "config"):
                body: dict[str, Any] = {
                    "name": d.name, "query": d.query, "mode": d.mode.value,
                    "emitEnabled": d.emit_enabled,
                    "definition": runner.sources_definition() or {},
                    "outputConfig": {"resultStreamName": None},
                }
                return self._ok(request, atom.dumps(body), atom.JSON)
            return self._ok(request, d.query.encode(), atom.TEXT_PLAIN)
        if part == "config":
            return self._ok(request, atom.dumps(_status.user_config(runner)), atom.JSON)
        if part in ("state", "result"):
            partition = self._query(request, b"partition") or ""
            coroutine = runner.state(partition) if part == "state" else runner.result(partition)
            d2: Deferred[Optional[str]] = Deferred.fromCoroutine(coroutine)
            return d2.addCallback(
                lambda text: self._ok(request, (text or "").encode(), atom.JSON))
        raise HttpError(404, "Not Found")

    def create_projection(self, request: Any, mode: str) -> Any:
        """
        C{POST /projections/{onetime|continuous|transient}?name=&type=js&
        enabled=&emit=&checkpoints=&trackemittedstreams=}, the query as
        the body: 201 with its URL.
        """
        from estwisted.projections._user import Definition, Mode

        try:
            kind = Mode.from_path(mode)
        except ValueError:
            raise HttpError(404, "Not Found") from None
        principal = self._principal(request, "user" if kind is Mode.TRANSIENT else "ops")
        user = self._users_or_404()
        handler = (self._query(request, b"type") or "js").lower()
        if handler != "js":
            raise HttpError(400, f"Unsupported projection type: {handler}")
        name = self._query(request, b"name") or ""
        if not name:
            if kind is Mode.CONTINUOUS:
                raise HttpError(400, "Projection name is required")
            name = str(uuid.uuid4())
        if "/" in name:
            raise HttpError(400, "Invalid projection name")
        query = self._body_text(request)
        if not query.strip():
            raise HttpError(400, "The query (request body) is empty")
        enabled = _flag(self._query(request, b"enabled"), "enabled")
        emit = _flag(self._query(request, b"emit"), "emit")
        checkpoints = _flag(self._query(request, b"checkpoints"), "checkpoints")
        track = _flag(self._query(request, b"trackemittedstreams"), "trackemittedstreams")
        if kind is Mode.TRANSIENT and emit:
            raise HttpError(400, "Transient projections cannot emit")
        if track and not emit:
            raise HttpError(400, "trackemittedstreams needs emit=yes")
        definition = Definition(
            name=name, query=query, mode=kind,
            enabled=True if enabled is None else enabled,
            emit_enabled=bool(emit),
            checkpoints_enabled=(
                kind is Mode.CONTINUOUS if checkpoints is None else checkpoints
            ) and kind is not Mode.TRANSIENT,
            track_emitted_streams=bool(track),
            run_as=principal.login if principal is not None else "anonymous",
        )
        if kind is Mode.CONTINUOUS and not definition.checkpoints_enabled:
            raise HttpError(400, "Continuous projections need checkpoints")
        d = user.create(definition)
        url = f"{self.base_url(request)}/projection/{name}"

        def created(_: object) -> bytes:
            request.setHeader(b"location", url.encode())
            return self._ok(request, atom.dumps({"name": name}), atom.JSON, 201, b"Created")

        return d.addCallback(created)

    def update_query(self, request: Any, name: str) -> Any:
        """
        C{PUT /projection/{name}/query?emit=}: the body is the new query.
        """
        self._principal(request, "ops")
        user = self._user(name)
        if user is None:
            raise HttpError(404, "Not Found")
        query = self._body_text(request)
        if not query.strip():
            raise HttpError(400, "The query (request body) is empty")
        emit = _flag(self._query(request, b"emit"), "emit")
        d = user.update_query(name, query, emit)
        return d.addCallback(lambda _: self._ok(request, atom.dumps({"name": name}), atom.JSON))

    def update_config(self, request: Any, name: str) -> Any:
        """
        C{PUT /projection/{name}/config}: v5's config object (its
        C{emitEnabled}, C{trackEmittedStreams} and
        C{checkpointHandledThreshold} apply).
        """
        self._principal(request, "ops")
        user = self._user(name)
        if user is None:
            raise HttpError(404, "Not Found")
        try:
            body = json.loads(self._body_text(request) or "{}")
        except ValueError:
            raise HttpError(400, "The config is not JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "The config must be a JSON object")

        def typed(key: str, kind: type) -> Any:
            value = body.get(key)
            if value is None:
                return None
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise HttpError(400, f"config.{key} must be a {kind.__name__}")
            return value

        d = user.update_config(
            name, typed("emitEnabled", bool), typed("trackEmittedStreams", bool),
            typed("checkpointHandledThreshold", int))
        return d.addCallback(lambda _: self._ok(request, atom.dumps({"name": name}), atom.JSON))

    def delete_projection(self, request: Any, name: str) -> Any:
        """
        C{DELETE /projection/{name}?deleteStateStream=&deleteCheckpointStream=
        &deleteEmittedStreams=}; the projection must be disabled first.
        """
        self._principal(request, "ops")
        user = self._user(name)
        if user is None:
            if name in self._projections().runners:
                raise HttpError(400, "The standard projections cannot be deleted")
            raise HttpError(404, "Not Found")
        d = user.delete(
            name,
            bool(_flag(self._query(request, b"deleteStateStream"), "deleteStateStream")),
            bool(_flag(self._query(request, b"deleteCheckpointStream"),
                       "deleteCheckpointStream")),
            bool(_flag(self._query(request, b"deleteEmittedStreams"), "deleteEmittedStreams")),
        )
        return d.addCallback(lambda _: self._ok(request, atom.dumps({"name": name}), atom.JSON))

    def projection_command(self, request: Any, name: str, command: str) -> Any:
        """
        C{POST /projection/{name}/command/{enable|disable|abort|reset}}
        ($ops).
        """
        self._principal(request, "ops")
        user = self._user(name)
        service = user if user is not None else self._projections(name)
        body = atom.dumps({"name": name})
        if command == "enable":
            d = service.enable(name)
        elif command in ("disable", "abort"):
            d = service.disable(name)
        elif command == "reset":
            d = service.reset(name)
        else:
            raise HttpError(404, "Not Found")
        return d.addCallback(lambda _: self._ok(request, body, atom.JSON))
