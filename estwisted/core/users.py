# -*- test-case-name: estwisted.core.test.test_users -*-
"""
User accounts (tcp-protocol.md 6.13, http-api.md section 9), stored as
events through the stream store:

  - C{$user-<login>}: C{$UserCreated} then C{$UserUpdated} events whose JSON
    body is the whole account (login, full name, groups, disabled flag,
    PBKDF2-SHA256 password hash with its own random salt and iteration
    count); the latest event is the account; deleting the user soft-deletes
    the stream (so the login can be created again);
  - C{$users}: one C{$User} event (data = login) per created account;
  - C{$users-password-notifications}: C{$PasswordChanged} events.

Management calls take the acting principal: everything but L{get_user}
for oneself and L{UserManager.change_password} needs C{$admins}.  Writes
return Deferreds; failures are L{NotFound}, L{AlreadyExists},
L{AccessDenied}, L{NotAuthenticated} (wrong current password).

Authentication (L{UserManager.authenticate}) is synchronous: verified
credentials are cached under C{(login, sha256(password))} so only the
first request of a login pays for PBKDF2; the cache entries of a login are
dropped whenever its stream is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Optional

from attrs import frozen
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.core.errors import (
    AccessDenied,
    AlreadyExists,
    NotAuthenticated,
    NotFound,
    StreamDeleted,
    WrongExpectedVersion,
)
from estwisted.core.model import (
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    NewEvent,
    Principal,
    ReadStatus,
    WriteResult,
    unix_ms_from_ticks,
)

if TYPE_CHECKING:
    from estwisted.core.streams import StreamStore

_log = Logger()

#: PBKDF2-SHA256 iterations for new password hashes.
DEFAULT_ITERATIONS = 100_000

USERS_STREAM = "$users"
PASSWORD_NOTIFICATIONS_STREAM = "$users-password-notifications"
USER_STREAM_PREFIX = "$user-"
USER_CREATED = "$UserCreated"
USER_UPDATED = "$UserUpdated"
USER_INDEX_EVENT = "$User"
PASSWORD_CHANGED = "$PasswordChanged"

#: Users created on first start: login, full name, groups, password.
DEFAULT_USERS = (
    ("admin", "Event Store Administrator", ("$admins",), "changeit"),
    ("ops", "Event Store Operations", ("$ops",), "changeit"),
)

#: Above this many cached credentials the cache is dropped.
AUTH_CACHE_LIMIT = 10_000


@frozen
class UserRecord:
    """
    One account as stored.

    @ivar salt: hex of the random salt.
    @ivar password_hash: hex of PBKDF2-SHA256(password, salt, iterations).
    @ivar date_last_updated: ISO 8601 UTC time of the latest write.
    """

    login: str
    full_name: str
    groups: tuple[str, ...]
    disabled: bool
    salt: str
    password_hash: str
    iterations: int
    date_last_updated: str = ""

    def to_json(self) -> dict[str, Any]:
        """
        The stored JSON body.
        """
        return {
            "loginName": self.login,
            "fullName": self.full_name,
            "groups": list(self.groups),
            "disabled": self.disabled,
            "salt": self.salt,
            "hash": self.password_hash,
            "iterations": self.iterations,
        }

    def public_json(self) -> dict[str, Any]:
        """
        The fields shown to clients (no password material).
        """
        return {
            "loginName": self.login,
            "fullName": self.full_name,
            "groups": list(self.groups),
            "disabled": self.disabled,
            "dateLastUpdated": self.date_last_updated,
        }

    @property
    def principal(self) -> Principal:
        return Principal(self.login, frozenset(self.groups))


def hash_password(password: str, salt: bytes, iterations: int) -> bytes:
    """
    PBKDF2-HMAC-SHA256 of C{password}.
    """
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def verify_password(record: UserRecord, password: str) -> bool:
    """
    Whether C{password} matches C{record}'s hash (constant-time compare).
    """
    try:
        salt = bytes.fromhex(record.salt)
        expected = bytes.fromhex(record.password_hash)
    except ValueError:
        return False
    return hmac.compare_digest(hash_password(password, salt, record.iterations), expected)


def parse_user(data: bytes, created: int) -> Optional[UserRecord]:
    """
    Decode a C{$UserCreated}/C{$UserUpdated} body, C{None} if malformed.
    """
    try:
        value = json.loads(data)
        groups = value.get("groups") or []
        return UserRecord(
            login=str(value["loginName"]),
            full_name=str(value.get("fullName", "")),
            groups=tuple(str(g) for g in groups),
            disabled=bool(value.get("disabled", False)),
            salt=str(value["salt"]),
            password_hash=str(value["hash"]),
            iterations=int(value.get("iterations", DEFAULT_ITERATIONS)),
            date_last_updated=_iso_from_ticks(created),
        )
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def _iso_from_ticks(ticks: int) -> str:
    ms = unix_ms_from_ticks(ticks)
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _attempt_key(password: str) -> bytes:
    return hashlib.sha256(password.encode("utf-8")).digest()


def _json_event(event_type: str, body: Any) -> NewEvent:
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return NewEvent(uuid.uuid4().bytes, event_type, data, b"", True)


class UserManager:
    """
    User accounts over a L{StreamStore}; see the module docstring.  The
    manager watches the system streams the store writes (locally or
    replicated) and forgets what it cached of an account whose stream was
    written.

    @param store: the store the accounts are kept in.
    @param iterations: PBKDF2 iterations for new password hashes.
    """

    def __init__(self, store: StreamStore, iterations: int = DEFAULT_ITERATIONS) -> None:
        self._store = store
        self._iterations = iterations
        self._auth_cache: dict[tuple[str, bytes], Principal] = {}
        self._records: dict[str, Optional[tuple[int, UserRecord]]] = {}
        store.add_system_stream_watcher(self._written)

    def _written(self, streams: set[str]) -> None:
        for stream in streams:
            name = stream[2:] if stream.startswith("$$") else stream
            if name.startswith(USER_STREAM_PREFIX):
                self.invalidate(name[len(USER_STREAM_PREFIX) :])

    # -- lookups -----------------------------------------------------------

    def _system(self) -> Principal:
        from estwisted.core.acl import SYSTEM_PRINCIPAL

        return SYSTEM_PRINCIPAL

    def _load(self, login: str) -> Optional[tuple[int, UserRecord]]:
        """
        The account's stream version and record, C{None} if no such user.
        """
        if login in self._records:
            return self._records[login]
        found: Optional[tuple[int, UserRecord]] = None
        result = self._store.read_event(USER_STREAM_PREFIX + login, -1, False, self._system())
        if result.status == ReadStatus.SUCCESS and result.event is not None:
            record = result.event.original
            if record.event_type in (USER_CREATED, USER_UPDATED):
                parsed = parse_user(record.data, record.created)
                if parsed is not None:
                    found = (record.event_number, parsed)
        if len(self._records) >= AUTH_CACHE_LIMIT:
            self._records.clear()
        self._records[login] = found
        return found

    def invalidate(self, login: str) -> None:
        """
        Forget cached state of C{login} (its stream was written).
        """
        self._records.pop(login, None)
        for key in [k for k in self._auth_cache if k[0] == login]:
            del self._auth_cache[key]

    # -- authentication ----------------------------------------------------

    def authenticate(self, login: str, password: str) -> Principal:
        """
        @raise NotAuthenticated: unknown user, wrong password or disabled.
        """
        key = (login, _attempt_key(password))
        principal = self._auth_cache.get(key)
        if principal is not None:
            return principal
        loaded = self._load(login) if login else None
        if loaded is None:
            raise NotAuthenticated("Not Authenticated")
        record = loaded[1]
        if record.disabled or not verify_password(record, password):
            raise NotAuthenticated("Not Authenticated")
        principal = record.principal
        if len(self._auth_cache) >= AUTH_CACHE_LIMIT:
            self._auth_cache.clear()
        self._auth_cache[key] = principal
        return principal

    # -- reads -------------------------------------------------------------

    def get_user(self, login: str, principal: Optional[Principal]) -> UserRecord:
        """
        @raise AccessDenied: neither C{$admins} nor the user itself.
        @raise NotFound: no such user.
        """
        if principal is None or not (principal.is_admin or principal.login == login):
            raise AccessDenied("Only administrators may read other users")
        loaded = self._load(login)
        if loaded is None:
            raise NotFound(f"User {login!r} not found")
        return loaded[1]

    def list_users(self, principal: Optional[Principal]) -> list[UserRecord]:
        """
        Every existing account, in creation order.

        @raise AccessDenied: not C{$admins}.
        """
        self._require_admin(principal)
        logins: list[str] = []
        seen: set[str] = set()
        position = 0
        store = self._store
        for _ in range(1_000_000):
            page = store.read_stream(USERS_STREAM, position, 1000, True, False, self._system())
            if page.status != ReadStatus.SUCCESS:
                break
            for event in page.events:
                login = event.original.data.decode("utf-8", "replace")
                if login not in seen:
                    seen.add(login)
                    logins.append(login)
            if page.is_end_of_stream:
                break
            position = page.next_event_number
        users = []
        for login in logins:
            loaded = self._load(login)
            if loaded is not None:
                users.append(loaded[1])
        return users

    # -- writes ------------------------------------------------------------

    def _require_admin(self, principal: Optional[Principal]) -> None:
        if principal is None or not principal.is_admin:
            raise AccessDenied("Only administrators may manage users")

    def _new_record(
        self, login: str, full_name: str, groups: Sequence[str], password: str, disabled: bool
    ) -> UserRecord:
        salt = os.urandom(16)
        return UserRecord(
            login=login,
            full_name=full_name,
            groups=tuple(groups),
            disabled=disabled,
            salt=salt.hex(),
            password_hash=hash_password(password, salt, self._iterations).hex(),
            iterations=self._iterations,
        )

    def _write_user(
        self, login: str, expected: int, event_type: str, record: UserRecord
    ) -> Deferred[WriteResult]:
        d = self._store.append(
            USER_STREAM_PREFIX + login,
            expected,
            [_json_event(event_type, record.to_json())],
            self._system(),
        )
        self.invalidate(login)
        return d

    def create_user(
        self,
        login: str,
        full_name: str,
        groups: Sequence[str],
        password: str,
        principal: Optional[Principal],
    ) -> Deferred[None]:
        """
        @return: fires when the account is stored; fails with
            L{AlreadyExists} or L{AccessDenied}.
        """
        try:
            self._require_admin(principal)
            if not login:
                raise NotFound("Empty login")
        except Exception:
            return fail()
        if self._load(login) is not None:
            return fail(AlreadyExists(f"User {login!r} exists"))
        record = self._new_record(login, full_name, groups, password, False)
        written = self._write_user(login, EXPECTED_NO_STREAM, USER_CREATED, record)
        index = self._store.append(
            USERS_STREAM,
            EXPECTED_ANY,
            [NewEvent(uuid.uuid4().bytes, USER_INDEX_EVENT, login.encode("utf-8"))],
            self._system(),
        )

        def created(_: object) -> None:
            return None

        def conflict(failure: Failure) -> Failure:
            if failure.check(WrongExpectedVersion):
                return Failure(AlreadyExists(f"User {login!r} exists"))
            return failure

        index.addErrback(lambda f: _log.failure("Indexing user {login}", f, login=login))
        return written.addCallbacks(created, conflict)

    def _modify(self, login: str, principal: Optional[Principal], change: Any) -> Deferred[None]:
        """
        Read the account, apply C{change(record) -> record}, write it.
        """
        loaded = self._load(login)
        if loaded is None:
            return fail(NotFound(f"User {login!r} not found"))
        version, record = loaded
        written = self._write_user(login, version, USER_UPDATED, change(record))

        def done(_: object) -> None:
            return None

        def missing(failure: Failure) -> Failure:
            if failure.check(StreamDeleted):
                return Failure(NotFound(f"User {login!r} not found"))
            return failure

        return written.addCallbacks(done, missing)

    def update_user(
        self,
        login: str,
        full_name: str,
        groups: Sequence[str],
        principal: Optional[Principal],
    ) -> Deferred[None]:
        try:
            self._require_admin(principal)
        except AccessDenied:
            return fail()
        return self._modify(
            login,
            principal,
            lambda r: _replace(r, full_name=full_name, groups=tuple(groups)),
        )

    def enable_user(self, login: str, principal: Optional[Principal]) -> Deferred[None]:
        try:
            self._require_admin(principal)
        except AccessDenied:
            return fail()
        return self._modify(login, principal, lambda r: _replace(r, disabled=False))

    def disable_user(self, login: str, principal: Optional[Principal]) -> Deferred[None]:
        try:
            self._require_admin(principal)
        except AccessDenied:
            return fail()
        return self._modify(login, principal, lambda r: _replace(r, disabled=True))

    def _set_password(
        self, login: str, principal: Optional[Principal], password: str
    ) -> Deferred[None]:
        def change(record: UserRecord) -> UserRecord:
            salt = os.urandom(16)
            return _replace(
                record,
                salt=salt.hex(),
                password_hash=hash_password(password, salt, self._iterations).hex(),
                iterations=self._iterations,
            )

        d = self._modify(login, principal, change)

        def notify(_: None) -> None:
            self._store.append(
                PASSWORD_NOTIFICATIONS_STREAM,
                EXPECTED_ANY,
                [_json_event(PASSWORD_CHANGED, {"loginName": login})],
                self._system(),
            ).addErrback(lambda f: _log.failure("Password notification", f))

        return d.addCallback(notify)

    def reset_password(
        self, login: str, new_password: str, principal: Optional[Principal]
    ) -> Deferred[None]:
        try:
            self._require_admin(principal)
        except AccessDenied:
            return fail()
        return self._set_password(login, principal, new_password)

    def change_password(
        self,
        login: str,
        current_password: str,
        new_password: str,
        principal: Optional[Principal],
    ) -> Deferred[None]:
        """
        Knowing the current password is the proof: any caller may change a
        password with it (the HTTP API requires an authenticated user).

        @return: fails with L{NotAuthenticated} if C{current_password} is
            wrong, L{NotFound} for an unknown login.
        """
        loaded = self._load(login)
        if loaded is None:
            return fail(NotFound(f"User {login!r} not found"))
        if not verify_password(loaded[1], current_password):
            return fail(NotAuthenticated("Wrong current password"))
        return self._set_password(login, principal, new_password)

    def delete_user(self, login: str, principal: Optional[Principal]) -> Deferred[None]:
        try:
            self._require_admin(principal)
        except AccessDenied:
            return fail()
        loaded = self._load(login)
        if loaded is None:
            return fail(NotFound(f"User {login!r} not found"))
        d = self._store.delete_stream(USER_STREAM_PREFIX + login, loaded[0], False, self._system())
        self.invalidate(login)

        def done(_: object) -> None:
            return None

        def missing(failure: Failure) -> Failure:
            if failure.check(StreamDeleted, WrongExpectedVersion):
                return Failure(NotFound(f"User {login!r} not found"))
            return failure

        return d.addCallbacks(done, missing)

    def ensure_default_users(self) -> Deferred[None]:
        """
        Create C{admin} and C{ops} unless their streams ever existed.
        """
        pending = []
        for login, full_name, groups, password in DEFAULT_USERS:
            if self._store.last_event_number(USER_STREAM_PREFIX + login) != -1:
                continue
            pending.append(self.create_user(login, full_name, groups, password, self._system()))
        if not pending:
            return succeed(None)
        return gatherResults(pending, consumeErrors=True).addCallback(lambda _: None)


def _replace(record: UserRecord, **changes: Any) -> UserRecord:
    import attrs

    return attrs.evolve(record, **changes)
