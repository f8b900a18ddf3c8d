# -*- test-case-name: estwisted.http.test.test_api -*-
"""
Users over HTTP (http-api.md 9).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from estwisted.core.errors import (
    AccessDenied,
    AlreadyExists,
    NotAuthenticated,
    NotFound,
)
from estwisted.http.base import HttpBase
from estwisted.http.parsing import JSON_ONLY, USER_BODY_TYPES, HttpError, set_header, unauthorized
from estwisted.wire import atom


class UserRoutes(HttpBase):
    """
    The C{/users/...} handlers.
    """

    # -- users ---------------------------------------------------------------------

    def _user_json(self, urls: atom.Urls, user: Any, links: bool = True) -> dict[str, Any]:
        login = user.login
        out: dict[str, Any] = {
            "loginName": login,
            "fullName": user.full_name,
            "groups": list(user.groups),
        }
        if not links:
            updated = getattr(user, "date_last_updated", None)
            if updated is not None:
                out["dateLastUpdated"] = updated
        out["disabled"] = bool(user.disabled)
        if links:
            u = f"{urls.base}/users/{quote(login, safe='')}"
            out["links"] = [
                {"href": f"{u}/command/reset-password", "rel": "reset-password"},
                {"href": f"{u}/command/change-password", "rel": "change-password"},
                {"href": u, "rel": "edit"},
                {"href": u, "rel": "delete"},
                (
                    {"href": f"{u}/command/enable", "rel": "enable"}
                    if user.disabled
                    else {"href": f"{u}/command/disable", "rel": "disable"}
                ),
            ]
        return out

    def _user_body(self, request: Any) -> dict[str, Any]:
        self._body_type(request, USER_BODY_TYPES)
        body = request.content.read() if request.content is not None else b""
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise HttpError(400, "Invalid request body.") from None
        if not isinstance(value, dict):
            raise HttpError(400, "Invalid request body.")
        return {str(k).lower(): v for k, v in value.items()}

    def _user_result(
        self, request: Any, d: Deferred[Any], login: str, code: int = 200
    ) -> Deferred[bytes]:
        def ok(_: Any) -> bytes:
            body = atom.dumps({"loginName": login, "success": True, "error": "Success"})
            return self._ok(request, body, atom.JSON, code, b"OK" if code == 200 else b"Created")

        def failed(f: Failure) -> Any:
            for error, status, reason, name in (
                (NotFound, 404, "Not Found", "NotFound"),
                (AlreadyExists, 409, "Conflict", "Conflict"),
                (AccessDenied, 401, "Unauthorized", "Unauthorized"),
                (NotAuthenticated, 401, "Unauthorized", "Unauthorized"),
            ):
                if f.check(error):
                    body = atom.dumps({"loginName": login, "success": False, "error": name})
                    headers = {}
                    if status == 401:
                        headers = {"WWW-Authenticate": 'BasicCustom realm="ES"'}
                    raise HttpError(status, reason, headers, body, atom.JSON)
            return f

        return d.addCallbacks(ok, failed)

    def _users_ready(self) -> Any:
        if self.users is None:
            raise HttpError(503, "Not yet ready.")
        return self.users

    def list_users(self, request: Any) -> bytes:
        """
        C{GET /users}.
        """
        self._negotiate(request, JSON_ONLY)
        principal = self._principal(request, "admin")
        users = self._users_ready().list_users(principal)
        urls = self._urls(request)
        body = {
            "data": [self._user_json(urls, u) for u in users],
            "success": True,
            "error": "Success",
        }
        return self._ok(request, atom.dumps(body), atom.JSON)

    def get_user(self, request: Any, raw_login: str) -> bytes:
        """
        C{GET /users/{login}} and C{GET /users/$current}.
        """
        login = unquote(raw_login)
        self._negotiate(request, JSON_ONLY)
        current = login == "$current"
        principal = self._principal(request, "user" if current else "admin")
        manager = self._users_ready()
        if current:
            assert principal is not None or not self.node_info.first_level_auth
            if principal is None:
                raise unauthorized()
            login = principal.login
        try:
            user = manager.get_user(login, principal)
        except NotFound:
            missing = atom.dumps({"loginName": login, "success": False, "error": "NotFound"})
            raise HttpError(404, "Not Found", body=missing, content_type=atom.JSON) from None
        data = self._user_json(self._urls(request), user, links=not current)
        reply = {"data": data, "success": True, "error": "Success"}
        return self._ok(request, atom.dumps(reply), atom.JSON)

    def create_user(self, request: Any) -> Deferred[bytes]:
        """
        C{POST /users}.
        """
        principal = self._principal(request, "admin")
        fields = self._user_body(request)
        login = fields.get("loginname")
        password = fields.get("password")
        full_name = fields.get("fullname") or ""
        groups = fields.get("groups") or []
        if not isinstance(login, str) or not login or not isinstance(password, str):
            raise HttpError(400, "loginName and password are required.")
        if not isinstance(full_name, str) or not isinstance(groups, list) or not all(
            isinstance(g, str) for g in groups
        ):
            raise HttpError(400, "Invalid request body.")
        manager = self._users_ready()
        location = f"{self.base_url(request)}/users/{quote(login, safe='')}"
        set_header(request, b"location", location.encode("ascii"))
        d = manager.create_user(login, full_name, groups, password, principal)
        return self._user_result(request, d, login, 201)

    def update_user(self, request: Any, raw_login: str) -> Deferred[bytes]:
        """
        C{PUT /users/{login}}.
        """
        login = unquote(raw_login)
        principal = self._principal(request, "admin")
        fields = self._user_body(request)
        full_name = fields.get("fullname") or ""
        groups = fields.get("groups") or []
        if not isinstance(full_name, str) or not isinstance(groups, list) or not all(
            isinstance(g, str) for g in groups
        ):
            raise HttpError(400, "Invalid request body.")
        d = self._users_ready().update_user(login, full_name, groups, principal)
        return self._user_result(request, d, login)

    def delete_user(self, request: Any, raw_login: str) -> Deferred[bytes]:
        """
        C{DELETE /users/{login}}.
        """
        login = unquote(raw_login)
        principal = self._principal(request, "admin")
        d = self._users_ready().delete_user(login, principal)
        return self._user_result(request, d, login)

    def user_command(self, request: Any, raw_login: str, command: str) -> Deferred[bytes]:
        """
        C{POST /users/{login}/command/{enable|disable|reset-password|change-password}}.
        """
        login = unquote(raw_login)
        manager = self._users_ready()
        if command in ("enable", "disable"):
            principal = self._principal(request, "admin")
            if command == "enable":
                d = manager.enable_user(login, principal)
            else:
                d = manager.disable_user(login, principal)
        elif command == "reset-password":
            principal = self._principal(request, "admin")
            fields = self._user_body(request)
            new = fields.get("newpassword")
            if not isinstance(new, str) or not new:
                raise HttpError(400, "newPassword is required.")
            d = manager.reset_password(login, new, principal)
        elif command == "change-password":
            principal = self._principal(request, "user")
            fields = self._user_body(request)
            current = fields.get("currentpassword")
            new = fields.get("newpassword")
            if not isinstance(current, str) or not isinstance(new, str) or not new:
                raise HttpError(400, "currentPassword and newPassword are required.")
            d = manager.change_password(login, current, new, principal)
        else:
            raise HttpError(404, "Not Found")
        return self._user_result(request, d, login)

