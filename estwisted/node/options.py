# -*- test-case-name: estwisted.node.test.test_config -*-
"""
The option machinery shared by a node (L{estwisted.node.config}) and a
manager (L{estwisted.manager.config}): where a value came from
(L{Source}), the value kinds that turn command-line/environment text and
YAML values into Python values (L{Kind}, L{BOOL}, L{ENDPOINT}...), the
validators (L{port}, L{at_least}...) and the declaration of one option
(L{option}, L{Option}).

Every option is declared once, as an attrs field made with L{option};
its snake_case attribute name gives its YAML key (PascalCase), its
C{EVENTSTORE_*} variable and its command-line flag (L{Option}).
L{estwisted.node.sources.OptionTable} reads the declarations.

Pure: no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from typing import Any, Optional

from attrs import field, frozen

__all__ = [
    "what_if_option",
    "gossip_interval_option",
    "gossip_timeout_option",
    "dead_member_removal_option",
    "certificate_private_key_option",
    "certificate_password_option",
    "trusted_roots_option",
    "BOOL",
    "BOOL_WORDS",
    "ENDPOINT",
    "ENDPOINTS",
    "ENV_PREFIX",
    "HOST",
    "INT",
    "IP",
    "MIB",
    "OPTION_KEY",
    "PATH",
    "STR",
    "STRINGS",
    "DEFAULT_SOURCE",
    "Check",
    "Endpoint",
    "HttpPrefix",
    "Kind",
    "Option",
    "Source",
    "SourceKind",
    "at_least",
    "http_prefixes",
    "dns_name",
    "not_empty",
    "one_of",
    "option",
    "parse_endpoint",
    "parse_http_prefix",
    "port",
]

ENV_PREFIX = "EVENTSTORE_"

#: The attrs metadata key under which L{option} stores its declaration.
OPTION_KEY = "estwisted.option"

MIB = 1024 * 1024


# --- sources -----------------------------------------------------------------


class SourceKind(enum.IntEnum):
    """
    Where a value came from; a higher value wins.
    """

    DEFAULT = 0
    FILE = 1
    ENVIRONMENT = 2
    COMMAND_LINE = 3


@frozen
class Source:
    """
    The origin of one effective value.

    @ivar kind: which of the four sources.
    @ivar where: detail for messages: the file name (and line), the variable
        name, or the flag as typed.
    """

    kind: SourceKind
    where: str = ""

    def __str__(self) -> str:
        label = {
            SourceKind.DEFAULT: "default",
            SourceKind.FILE: "file",
            SourceKind.ENVIRONMENT: "environment",
            SourceKind.COMMAND_LINE: "command line",
        }[self.kind]
        if self.where:
            return f"{label} {self.where}"
        return label


DEFAULT_SOURCE = Source(SourceKind.DEFAULT)


# --- value kinds ---------------------------------------------------------------


@frozen
class Endpoint:
    """
    A C{host:port} pair (gossip seeds, DNS server).  C{host} is an IP address
    or a host name; IPv6 addresses are written C{[::1]:2113}.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_TRUE_WORDS = frozenset({"true", "1", "yes", "on", "+"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off", "-"})
BOOL_WORDS = _TRUE_WORDS | _FALSE_WORDS
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _is_host_name(text: str) -> bool:
    if not text or len(text) > 253:
        return False
    return all(_HOST_LABEL.match(label) for label in text.rstrip(".").split("."))


def _text_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _yaml_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _text_bool(value)
    raise ValueError(f"expected true or false, got {value!r}")


def _text_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _yaml_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return _text_int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _text_str(text: str) -> str:
    return text


def _yaml_str(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _text_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _yaml_ip(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IP address")
    return _text_ip(value)


def _text_host(text: str) -> str:
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _is_host_name(text):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return text


def _yaml_host(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a host name")
    return _text_host(value)


def parse_endpoint(text: str) -> Endpoint:
    """
    Parse C{host:port} (C{[v6]:port} for IPv6).

    @raise ValueError: it is not of that form, or the port is out of range.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host:port")
        port_text = rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not host:port")
        try:
            host = _text_host(host)
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from None
    if not port_text.isdigit():
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range 1-65535")
    return Endpoint(host, port)


def _text_endpoint(text: str) -> Endpoint:
    return parse_endpoint(text)


def _yaml_endpoint(value: object) -> Endpoint:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not host:port")
    return parse_endpoint(value)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _yaml_items(value: object) -> list[str]:
    if isinstance(value, str):
        return _split_list(value)
    if isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise ValueError(f"list item {item!r} is not a string")
            items.append(str(item))
        return items
    raise ValueError(f"expected a list, got {value!r}")


def _text_endpoints(text: str) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(part) for part in _split_list(text))


def _yaml_endpoints(value: object) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(part) for part in _yaml_items(value))


def _text_strings(text: str) -> tuple[str, ...]:
    return tuple(_split_list(text))


def _yaml_strings(value: object) -> tuple[str, ...]:
    return tuple(_yaml_items(value))


def _show(value: object) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "<empty>"
    return str(value)


@frozen
class Kind:
    """
    How values of one type are read from text (environment, command line)
    and from YAML, and shown.

    @ivar name: short description for help texts ("integer", "IP address").
    @ivar from_text: text -> value; raises C{ValueError} with a message.
    @ivar from_yaml: YAML value -> value; raises C{ValueError}.
    @ivar is_bool: a flag that may be given bare on the command line.
    @ivar is_list: comma-separated; repeated flags accumulate.
    """

    name: str
    from_text: Callable[[str], Any]
    from_yaml: Callable[[object], Any]
    is_bool: bool = False
    is_list: bool = False


BOOL = Kind("true|false", _text_bool, _yaml_bool, is_bool=True)
INT = Kind("integer", _text_int, _yaml_int)
STR = Kind("string", _text_str, _yaml_str)
PATH = Kind("path", _text_str, _yaml_str)
IP = Kind("IP address", _text_ip, _yaml_ip)
HOST = Kind("host name", _text_host, _yaml_host)
ENDPOINT = Kind("host:port", _text_endpoint, _yaml_endpoint)
ENDPOINTS = Kind("host:port,...", _text_endpoints, _yaml_endpoints, is_list=True)
STRINGS = Kind("string,...", _text_strings, _yaml_strings, is_list=True)


# --- validators ----------------------------------------------------------------

Check = Callable[[Any], None]


def at_least(minimum: int) -> Check:
    """
    Reject integers below C{minimum}.
    """

    def check(value: int) -> None:
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")

    return check


@frozen
class HttpPrefix:
    """
    One C{ExtHttpPrefixes}/C{IntHttpPrefixes} entry, an Event Store v5
    (HttpListener) prefix C{scheme://host:port/path/}.

    @ivar scheme: C{http} or C{https}.
    @ivar host: the host name or address, lower case; C{None} for the
        wildcards C{*} and C{+} (any host).
    @ivar port: the port.
    @ivar path: starts and ends with C{/}.
    """

    scheme: str
    host: Optional[str]
    port: int
    path: str

    def __str__(self) -> str:
        host = self.host or "*"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_http_prefix(text: str) -> HttpPrefix:
    """
    Parse an HttpListener prefix (C{http://*:2113/}, C{http://node1:2113/es/}).

    @raise ValueError: naming what is wrong.
    """
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"{text!r} is not an http:// or https:// prefix")
    authority, slash, path = rest.partition("/")
    if not slash:
        raise ValueError(f"{text!r} must end with '/' (e.g. http://*:2113/)")
    path = "/" + path
    if not path.endswith("/"):
        raise ValueError(f"{text!r} must end with '/' (e.g. http://*:2113/)")
    if "?" in path or "#" in path or "//" in path:
        raise ValueError(f"{text!r} has a bad path {path!r}")
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"{text!r} has a bad IPv6 host")
        port_text = after[1:] if after else ""
    else:
        host, _, port_text = authority.partition(":")
    if not host or any(c in host for c in " @/\\"):
        raise ValueError(f"{text!r} has no valid host (use * for any host)")
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r} has a bad port {port_text!r}")
        number = int(port_text)
    else:
        number = 443 if scheme == "https" else 80
    wildcard = host in ("*", "+")
    return HttpPrefix(scheme, None if wildcard else host.lower(), number, path)


def http_prefixes(value: tuple[str, ...]) -> None:
    for text in value:
        parse_http_prefix(text)


def port(allow_zero: bool = False) -> Check:
    """
    Reject ports outside 1-65535 (0 allowed when it means "off"/"same").
    """
    low = 0 if allow_zero else 1

    def check(value: int) -> None:
        if not low <= value <= 65535:
            raise ValueError(f"port {value} is out of range {low}-65535")

    return check


def one_of(*choices: str) -> Check:
    """
    Accept only the given words (case-insensitively).
    """

    def check(value: str) -> None:
        if value.lower() not in {c.lower() for c in choices}:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def dns_name(value: str) -> None:
    """
    Accept a syntactically valid host name.
    """
    if not _is_host_name(value):
        raise ValueError(f"{value!r} is not a valid DNS name")


def not_empty(value: str) -> None:
    """
    Reject the empty string.
    """
    if not value.strip():
        raise ValueError("must not be empty")


# --- the option table ------------------------------------------------------------


@frozen
class Option:
    """
    One row of the option table.

    @ivar attribute: the L{NodeConfig} attribute, snake_case.
    @ivar name: PascalCase name; also the YAML key.
    @ivar flag: the canonical command-line flag without dashes (kebab-case).
    @ivar env: the environment variable name.
    @ivar env_aliases: other accepted environment variable names.
    @ivar implemented: False for options that are accepted and validated but
        have no effect yet ("not yet implemented" in what-if output).
    @ivar why: for an option that is not implemented on purpose, why
        (what-if shows it instead of "not yet implemented").
    @ivar file_allowed: False for options that may not appear in the YAML
        file (C{Config} itself).
    @ivar secret: the value is never shown (what-if prints C{****}).
    """

    attribute: str
    kind: Kind
    default: Any
    help: str
    check: Optional[Check]
    implemented: bool
    file_allowed: bool
    env_aliases: tuple[str, ...]
    secret: bool
    why: str = ""

    @property
    def marker(self) -> str:
        """
        What-if's note on an option without effect, or C{""}.
        """
        if self.implemented:
            return ""
        if self.why:
            return f"[accepted, no effect here: {self.why}]"
        return "[accepted, not yet implemented]"

    @property
    def name(self) -> str:
        return "".join(part.capitalize() for part in self.attribute.split("_"))

    @property
    def flag(self) -> str:
        return self.attribute.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attribute.upper()

    @property
    def title(self) -> str:
        """
        The v5 what-if spelling: C{INT IP}.
        """
        return self.attribute.replace("_", " ").upper()

    def show(self, value: object) -> str:
        """
        The value as shown in what-if output and help.
        """
        if self.secret and value:
            return "****"
        return _show(value)

    def convert_text(self, text: str) -> Any:
        value = self.kind.from_text(text)
        if self.check is not None and value is not None:
            self.check(value)
        return value

    def convert_yaml(self, raw: object) -> Any:
        if raw is None:
            if self.default is None:
                return None
            raise ValueError("has no value")
        value = self.kind.from_yaml(raw)
        if self.check is not None and value is not None:
            self.check(value)
        return value


def option(
    kind: Kind,
    default: Any,
    help: str,
    *,
    check: Optional[Check] = None,
    implemented: bool = True,
    file_allowed: bool = True,
    env_aliases: tuple[str, ...] = (),
    secret: bool = False,
    why: str = "",
) -> Any:
    """
    Declare one option as an attrs field of L{NodeConfig}.  The attribute
    name gives the option its names (see the module docstring).
    """
    spec = {
        "kind": kind,
        "default": default,
        "help": help,
        "check": check,
        "implemented": implemented,
        "file_allowed": file_allowed,
        "env_aliases": env_aliases,
        "secret": secret,
        "why": why,
    }
    return field(default=default, metadata={OPTION_KEY: spec})



# --- declarations a node and a manager share -----------------------------------


def what_if_option() -> Any:
    """
    Print the effective configuration with its sources and exit (C{--what-if}).
    """
    return option(
        BOOL, False, "Print the effective configuration with sources and exit."
    )


def gossip_interval_option() -> Any:
    """
    Milliseconds between gossip rounds (C{GossipIntervalMs}).
    """
    return option(
        INT, 1000, "Milliseconds between gossip rounds.", check=at_least(1)
    )


def gossip_timeout_option() -> Any:
    """
    HTTP timeout of a gossip request (C{GossipTimeoutMs}).
    """
    return option(
        INT, 500, "HTTP timeout of a gossip request, in milliseconds.", check=at_least(1)
    )


def dead_member_removal_option() -> Any:
    """
    When a dead member leaves gossip (C{DeadMemberRemovalPeriodSec}).
    """
    return option(
        INT, 1800, "Seconds after which a dead member is dropped from gossip.",
        check=at_least(1),
    )


def certificate_private_key_option() -> Any:
    """
    The PEM private key of the certificate (C{CertificatePrivateKeyFile}).
    """
    return option(
        PATH, None, "Private key (PEM) for a PEM CertificateFile."
    )


def certificate_password_option() -> Any:
    """
    The password of a PKCS#12 certificate (C{CertificatePassword}).
    """
    return option(
        STR, None, "Password of a PKCS#12 CertificateFile.", secret=True
    )


def trusted_roots_option() -> Any:
    """
    The trusted roots directory (C{TrustedRootCertificatesPath}).
    """
    return option(
        PATH, None, "Directory of trusted root CA certificates."
    )
