# -*- test-case-name: estwisted.web.test.test_resource -*-
"""
The admin web UI served at C{/web/} (and C{/} redirecting to it) and the
Prometheus C{/metrics} endpoint, see C{docs/web.md} and C{docs/metrics.md}.

The UI is static files shipped in this package (C{static/}); the pages
call the node's HTTP API from the browser with the credentials given on
the login page.
"""

from estwisted.web._resource import STATIC_FILES, WebResource, is_web_path

__all__ = ["STATIC_FILES", "WebResource", "is_web_path"]
