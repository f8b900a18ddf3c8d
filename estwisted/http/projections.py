# -*- test-case-name: estwisted.http.test.test_api -*-
"""
The standard projections' part of the v5 HTTP API (issue 16).
"""

from __future__ import annotations

from typing import Any, Optional

from estwisted.http.base import HttpBase
from estwisted.http.parsing import HttpError
from estwisted.wire import atom


class ProjectionRoutes(HttpBase):
    """
    The C{/projections} and C{/projection/...} handlers.
    """

    def _projections(self, name: Optional[str] = None) -> Any:
        service = self.node_info.projections
        if service is None or (name is not None and name not in service.runners):
            raise HttpError(404, "Not Found")
        return service

    def list_projections(self, request: Any, kind: str) -> bytes:
        """
        C{GET /projections/{any|all-non-transient|continuous|onetime|transient}}.
        """
        from estwisted.projections import _status

        self._principal(request, "none")
        service = self._projections()
        if kind in _status.CONTINUOUS_LISTS:
            base = self.base_url(request)
            items = [service.statistics(name, base) for name in service.runners]
        elif kind in _status.OTHER_LISTS:
            items = []
        else:
            raise HttpError(404, "Not Found")
        return self._ok(request, atom.dumps({"projections": items}), atom.JSON)

    def projection_part(self, request: Any, name: str, part: str) -> bytes:
        """
        C{GET /projection/{name}} and its C{/statistics}, C{/state},
        C{/result}, C{/query} and C{/config}.
        """
        from estwisted.projections import _service, _status

        self._principal(request, "none")
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

    def projection_command(self, request: Any, name: str, command: str) -> Any:
        """
        C{POST /projection/{name}/command/{enable|disable|abort|reset}}
        ($ops).
        """
        self._principal(request, "ops")
        service = self._projections(name)
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



