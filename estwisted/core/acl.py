# -*- test-case-name: estwisted.core.test.test_acl -*-
"""
Access control decisions (tcp-protocol.md section 6.12), as pure functions.

Nothing here reads the log: the stream store passes in the stream's parsed
C{$acl} and the parsed C{$settings}.

Evaluation for stream C{S} and operation C{op}:

  1. members of C{$admins} pass every check;
  2. a metastream C{$$S} is checked as C{$mr} (read) or C{$mw} (write) on
     C{S}; deleting a metastream or touching the metadata of a metastream is
     denied; writing or deleting C{$all} is denied;
  3. the roles for C{op} come from C{S}'s own C{$acl}, else from the
     C{$settings} default for the stream's kind (C{$userStreamAcl} or
     C{$systemStreamAcl}), else from the built-in default (user streams:
     C{$all}; system streams, whose names start with C{$}: C{$admins}); each
     operation falls back on its own;
  4. the principal passes if one of its roles (groups plus login) is among
     them, or if they include C{$all} (which also admits anonymous callers).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from attrs import frozen

from estwisted.core.model import Principal

READ = "$r"
WRITE = "$w"
DELETE = "$d"
META_READ = "$mr"
META_WRITE = "$mw"

#: Every operation an ACL names.
OPERATIONS = (READ, WRITE, DELETE, META_READ, META_WRITE)

ROLE_ALL = "$all"
ROLE_ADMINS = "$admins"
ROLE_OPS = "$ops"

#: The principal of the node's own writes (users, settings, persistent
#: subscription checkpoints ...).
SYSTEM_PRINCIPAL = Principal("$system", frozenset({ROLE_ADMINS, "$system"}))

ALL_STREAM = "$all"
SETTINGS_STREAM = "$settings"

Roles = tuple[str, ...]


@frozen
class StreamAcl:
    """
    A parsed C{$acl} object: for each operation the roles allowed, or
    C{None} when the key is absent (then the next level decides).
    """

    read: Optional[Roles] = None
    write: Optional[Roles] = None
    delete: Optional[Roles] = None
    meta_read: Optional[Roles] = None
    meta_write: Optional[Roles] = None

    def roles(self, operation: str) -> Optional[Roles]:
        """
        The roles for C{operation} (one of L{OPERATIONS}), C{None} if unset.
        """
        if operation == READ:
            return self.read
        if operation == WRITE:
            return self.write
        if operation == DELETE:
            return self.delete
        if operation == META_READ:
            return self.meta_read
        if operation == META_WRITE:
            return self.meta_write
        raise ValueError(f"unknown operation {operation!r}")

    def to_json(self) -> dict[str, Any]:
        """
        The C{$acl} JSON object (absent operations left out).
        """
        result: dict[str, Any] = {}
        for op in OPERATIONS:
            roles = self.roles(op)
            if roles is not None:
                result[op] = roles[0] if len(roles) == 1 else list(roles)
        return result


@frozen
class SystemSettings:
    """
    The parsed C{$settings}: default ACLs for user and system streams.
    """

    user_stream_acl: Optional[StreamAcl] = None
    system_stream_acl: Optional[StreamAcl] = None


NO_SETTINGS = SystemSettings()

_BUILT_IN_USER: Roles = (ROLE_ALL,)
_BUILT_IN_SYSTEM: Roles = (ROLE_ADMINS,)


def _parse_roles(value: object) -> Optional[Roles]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return None


def parse_acl(value: object) -> Optional[StreamAcl]:
    """
    Parse a decoded C{$acl} JSON value.  A key whose value is neither a
    string nor an array counts as absent.

    @return: L{StreamAcl}, or C{None} if C{value} is not an object.
    """
    if not isinstance(value, dict):
        return None
    return StreamAcl(
        read=_parse_roles(value.get(READ)),
        write=_parse_roles(value.get(WRITE)),
        delete=_parse_roles(value.get(DELETE)),
        meta_read=_parse_roles(value.get(META_READ)),
        meta_write=_parse_roles(value.get(META_WRITE)),
    )


def parse_settings(data: bytes) -> SystemSettings:
    """
    Parse the JSON body of a C{$settings} event; anything unparseable gives
    L{NO_SETTINGS}.
    """
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return NO_SETTINGS
    if not isinstance(value, dict):
        return NO_SETTINGS
    return SystemSettings(
        user_stream_acl=parse_acl(value.get("$userStreamAcl")),
        system_stream_acl=parse_acl(value.get("$systemStreamAcl")),
    )


def is_system_stream(stream: str) -> bool:
    """
    Whether C{stream} is a system stream (its name starts with C{$}).
    """
    return stream.startswith("$")


def is_metastream(stream: str) -> bool:
    """
    Whether C{stream} is a metadata stream C{$$<stream>}.
    """
    return stream.startswith("$$")


def original_stream(metastream: str) -> str:
    """
    The stream whose metadata C{metastream} holds.
    """
    return metastream[2:]


def resolve_operation(stream: str, operation: str) -> Optional[tuple[str, str]]:
    """
    Map an operation on C{stream} to the stream and operation whose ACL
    decides it (metastreams are decided by their original stream).

    @return: C{(stream, operation)}, or C{None} when the operation is always
        denied (except for C{$admins}).
    """
    if stream == ALL_STREAM:
        if operation in (WRITE, DELETE):
            return None
        return stream, operation
    if is_metastream(stream):
        if operation == READ:
            return original_stream(stream), META_READ
        if operation == WRITE:
            return original_stream(stream), META_WRITE
        return None
    return stream, operation


def required_roles(
    stream: str,
    operation: str,
    stream_acl: Optional[StreamAcl],
    settings: SystemSettings,
) -> Roles:
    """
    The roles allowed to perform C{operation} on C{stream} (already resolved
    with L{resolve_operation}).
    """
    if stream_acl is not None:
        roles = stream_acl.roles(operation)
        if roles is not None:
            return roles
    if is_system_stream(stream):
        default = settings.system_stream_acl
        built_in = _BUILT_IN_SYSTEM
    else:
        default = settings.user_stream_acl
        built_in = _BUILT_IN_USER
    if default is not None:
        roles = default.roles(operation)
        if roles is not None:
            return roles
    return built_in


def has_role(principal: Optional[Principal], roles: Roles) -> bool:
    """
    Whether C{principal} (C{None} for anonymous) holds one of C{roles}.
    """
    if ROLE_ALL in roles:
        return True
    if principal is None:
        return False
    if principal.is_admin:
        return True
    login = principal.login
    groups = principal.groups
    for role in roles:
        if role == login or role in groups:
            return True
    return False


def is_allowed(
    principal: Optional[Principal],
    stream: str,
    operation: str,
    stream_acl: Optional[StreamAcl],
    settings: SystemSettings,
) -> bool:
    """
    The whole decision for an already resolved C{(stream, operation)}: see
    the module docstring.
    """
    if principal is not None and principal.is_admin:
        return True
    return has_role(principal, required_roles(stream, operation, stream_acl, settings))
