# -*- test-case-name: estwisted.node.test.test_config -*-
"""
Node configuration: one declarative option table, four sources, one frozen
L{NodeConfig}.

Every option is declared exactly once, as a field of L{NodeConfig} made with
L{option}: its snake_case attribute name, Python type, default, help text,
kind (how text and YAML values are converted) and validator.  From that one
declaration come:

  - the YAML key, PascalCase: C{int_ip} -> C{IntIp};
  - the environment variable: C{EVENTSTORE_INT_IP};
  - the command-line flag: C{--int-ip value} / C{--int-ip=value}; any
    spelling that matches case-insensitively once dashes are dropped is
    accepted too (C{--IntIp}, C{-IntIp}), as Event Store v5 does.  Booleans
    may be bare (true) or followed by C{true}/C{false}/C{1}/C{0}, and
    C{--flag-}/C{--flag+} mean false/true.

Precedence, lowest first: default < YAML file (C{--config path}) <
environment < command line.  Each effective value remembers its L{Source}.

This module is pure: it reads the configuration file and nothing else, and
knows nothing of reactors or services.  C{estwisted.node.tap} turns its
L{ConfigError} into C{usage.UsageError}.

NodeConfig attributes (all have defaults; C{NodeConfig()} is a valid
single-node, loopback configuration):

  - files: C{db} (str, default C{./estore-data}), C{index} (str, resolved to
    C{<db>/index} when not given), C{mem_db} (bool), C{log} (str or None),
    C{chunk_size} (int, 256 MiB), C{max_truncation} (int, -1 = unlimited),
    C{skip_db_verify} (bool), C{max_mem_table_size} (int),
    C{disable_scavenge_merging} (bool), C{scavenge_history_max_age} (int,
    days, 30)
  - endpoints: C{int_ip}, C{ext_ip} (str), C{int_tcp_port}, C{ext_tcp_port},
    C{int_http_port}, C{ext_http_port}, C{int_secure_tcp_port},
    C{ext_secure_tcp_port} (int; secure ports 0 = off)
  - advertising: C{int_ip_advertise_as}, C{ext_ip_advertise_as} (str or
    None), C{int_tcp_port_advertise_as}, C{ext_tcp_port_advertise_as},
    C{int_http_port_advertise_as}, C{ext_http_port_advertise_as},
    C{int_secure_tcp_port_advertise_as}, C{ext_secure_tcp_port_advertise_as}
    (int, 0 = the bound port); helpers L{NodeConfig.advertised_int_ip} etc.
  - heartbeats (ms): C{int_tcp_heartbeat_interval},
    C{int_tcp_heartbeat_timeout}, C{ext_tcp_heartbeat_interval},
    C{ext_tcp_heartbeat_timeout}
  - HTTP exposure: C{gossip_on_ext}, C{admin_on_ext}, C{stats_on_ext} (bool)
  - cluster: C{cluster_size}, C{node_priority}, C{commit_count},
    C{prepare_count} (int), C{discover_via_dns} (bool), C{cluster_dns} (str),
    C{cluster_gossip_port} (int, resolved to C{int_http_port} when 0),
    C{cluster_dns_server} (L{Endpoint} or None), C{gossip_seed}
    (tuple of L{Endpoint}), C{gossip_interval_ms}, C{gossip_timeout_ms},
    C{gossip_allowed_difference_ms}, C{leader_election_timeout_ms},
    C{dead_member_removal_period_sec}, C{read_only_replica} (bool),
    C{prepare_timeout_ms}, C{commit_timeout_ms}
  - TLS: C{certificate_file}, C{certificate_private_key_file},
    C{certificate_password}, C{trusted_root_certificates_path} (str or
    None), C{certificate_reserved_node_common_name} (str), C{insecure},
    C{use_internal_ssl}, C{disable_insecure_tcp}, C{ssl_validate_server}
    (bool), C{ssl_target_host} (str)
  - misc: C{max_append_size} (int), C{run_projections} (str),
    C{what_if} (bool), C{config} (str or None: the YAML file read)
  - bookkeeping: C{sources} (option name -> L{Source});
    L{NodeConfig.source_of}, L{NodeConfig.not_implemented_in_use},
    C{ignored_environment} (unknown C{EVENTSTORE_*} variable names)
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, TypeVar

import attrs
import yaml
from attrs import field, frozen

from estwisted.core.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "OPTIONS",
    "ConfigError",
    "Endpoint",
    "NodeConfig",
    "Option",
    "Source",
    "SourceKind",
    "canonical_arguments",
    "load_config",
    "option",
    "render_options",
    "startup_warnings",
]

ENV_PREFIX = "EVENTSTORE_"

_OPTION_KEY = "estwisted.option"

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
_BOOL_WORDS = _TRUE_WORDS | _FALSE_WORDS
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


def _http_prefixes(value: tuple[str, ...]) -> None:
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
    return field(default=default, metadata={_OPTION_KEY: spec})


@frozen
class NodeConfig:
    """
    The validated configuration of one node.  See the module docstring for
    the attribute list; option help texts are in the field declarations
    below (C{estore --help} shows them).
    """

    # --- application
    config: Optional[str] = option(
        PATH,
        None,
        "YAML configuration file with PascalCase keys (e.g. IntIp: 127.0.0.1). "
        "No file is read unless given.",
        file_allowed=False,
    )
    what_if: bool = option(
        BOOL, False, "Print the effective configuration with sources and exit."
    )
    log: Optional[str] = option(
        PATH,
        None,
        "Directory for log files. By default logs go where twistd sends them "
        "(stdout with -n, else --logfile).",
    )
    max_append_size: int = option(
        INT, 1024 * 1024, "Largest accepted write, in bytes.", check=at_least(1)
    )
    run_projections: str = option(
        STR,
        "None",
        "Projections to run: None, System or All.",
        check=one_of("None", "System", "All"),
    )
    start_standard_projections: bool = option(
        BOOL, False, "Start the standard projections (with RunProjections System or All)."
    )
    stats_period_sec: int = option(
        INT, 30,
        "Seconds between statistics collections (Event Store v5 wrote them to its stats "
        "log file, and to $stats-<address> with WriteStatsToDb).",
        check=at_least(1),
        implemented=False,
        why="statistics are computed on each request to /stats and /metrics; no stats "
        "file or $stats stream is written (docs/v5-options.md)",
    )

    # --- database
    db: str = option(
        PATH,
        "./estore-data",
        "Directory of the database (chunks, checkpoints). Our default is "
        "./estore-data, not /var/lib/eventstore as in Event Store.",
        check=not_empty,
    )
    index: str = option(
        PATH, "", "Directory of the index; empty = <Db>/index. Must differ from Db."
    )
    mem_db: bool = option(BOOL, False, "Keep everything in memory; nothing is written.")
    chunk_size: int = option(
        INT,
        256 * MIB,
        "Size of one chunk file in bytes (estwisted addition; Event Store uses 256 MiB).",
        check=at_least(4096),
    )
    max_truncation: int = option(
        INT,
        256 * MIB,
        "Most bytes a follower may truncate from its log when rejoining; -1 = no limit.",
        check=at_least(-1),
    )
    skip_db_verify: bool = option(
        BOOL, False, "Skip verifying the tail of the log at start."
    )
    max_mem_table_size: int = option(
        INT, 1_000_000, "Index entries kept in memory before a table is written.",
        check=at_least(1),
    )
    idempotency_window: int = option(
        INT, 100_000,
        "Event ids remembered (rebuilt from the log on start) so that a client's retry "
        "with expected version Any is not written twice.",
        check=at_least(1),
    )
    unsafe_ignore_hard_delete: bool = option(
        BOOL, False,
        "A scavenge (from chunk 0) also removes the tombstones of hard-deleted streams "
        "in completed chunks; those streams may then be written again (UNSAFE).",
    )
    disable_scavenge_merging: bool = option(
        BOOL,
        False,
        "Do not merge small scavenged chunks into one file after a scavenge.",
    )
    scavenge_history_max_age: int = option(
        INT,
        30,
        "Days the $scavenges-{id} history streams are kept ($maxAge).",
        check=at_least(1),
    )

    # --- interfaces
    int_ip: str = option(IP, "127.0.0.1", "Internal IP address (replication, gossip).")
    ext_ip: str = option(IP, "127.0.0.1", "External IP address (clients).")
    int_tcp_port: int = option(INT, 1112, "Internal TCP port (replication).", check=port())
    ext_tcp_port: int = option(INT, 1113, "External TCP port (clients).", check=port())
    int_http_port: int = option(
        INT, 2112, "Internal HTTP port (gossip, elections).", check=port()
    )
    ext_http_port: int = option(INT, 2113, "External HTTP port (clients).", check=port())
    int_secure_tcp_port: int = option(
        INT, 0, "Internal TLS TCP port; 0 = off.", check=port(allow_zero=True)
    )
    ext_secure_tcp_port: int = option(
        INT, 0, "External TLS TCP port; 0 = off.", check=port(allow_zero=True)
    )
    int_ip_advertise_as: Optional[str] = option(
        IP, None, "Internal IP address told to other nodes; default IntIp."
    )
    ext_ip_advertise_as: Optional[str] = option(
        IP, None, "External IP address told to clients and nodes; default ExtIp."
    )
    int_tcp_port_advertise_as: int = option(
        INT, 0, "Internal TCP port to advertise; 0 = IntTcpPort.", check=port(allow_zero=True)
    )
    ext_tcp_port_advertise_as: int = option(
        INT, 0, "External TCP port to advertise; 0 = ExtTcpPort.", check=port(allow_zero=True)
    )
    int_http_port_advertise_as: int = option(
        INT, 0, "Internal HTTP port to advertise; 0 = IntHttpPort.",
        check=port(allow_zero=True),
    )
    ext_http_port_advertise_as: int = option(
        INT, 0, "External HTTP port to advertise; 0 = ExtHttpPort.",
        check=port(allow_zero=True),
    )
    int_secure_tcp_port_advertise_as: int = option(
        INT, 0, "Internal TLS TCP port to advertise; 0 = IntSecureTcpPort.",
        check=port(allow_zero=True),
    )
    ext_secure_tcp_port_advertise_as: int = option(
        INT, 0, "External TLS TCP port to advertise; 0 = ExtSecureTcpPort.",
        check=port(allow_zero=True),
    )
    int_tcp_heartbeat_interval: int = option(
        INT, 700, "Milliseconds of silence on internal TCP before a heartbeat.",
        check=at_least(1),
    )
    int_tcp_heartbeat_timeout: int = option(
        INT, 700, "Milliseconds to wait for an internal heartbeat answer.", check=at_least(1)
    )
    ext_tcp_heartbeat_interval: int = option(
        INT, 2000, "Milliseconds of silence on external TCP before a heartbeat.",
        check=at_least(1),
    )
    ext_tcp_heartbeat_timeout: int = option(
        INT, 1000, "Milliseconds to wait for an external heartbeat answer.", check=at_least(1)
    )
    gossip_on_ext: bool = option(BOOL, True, "Serve GET /gossip on the external HTTP port.")
    admin_on_ext: bool = option(BOOL, True, "Serve /admin on the external HTTP port.")
    stats_on_ext: bool = option(BOOL, True, "Serve /stats on the external HTTP port.")
    int_http_prefixes: tuple[str, ...] = option(
        STRINGS, (),
        "Extra prefixes (http://host:port/path/, * = any host) the internal HTTP server "
        "answers; when set, other Host names get 400 (docs/v5-options.md).",
        check=_http_prefixes,
    )
    ext_http_prefixes: tuple[str, ...] = option(
        STRINGS, (),
        "Extra prefixes (http://host:port/path/, * = any host) the external HTTP server "
        "answers; when set, other Host names get 400 (docs/v5-options.md).",
        check=_http_prefixes,
    )
    enable_trusted_auth: bool = option(
        BOOL, False,
        "Trust the ES-TrustedAuth header ('user; group1, group2') set by an "
        "authenticating proxy.",
    )
    disable_http_caching: bool = option(
        BOOL, False,
        "No cacheable HTTP responses: Cache-Control: max-age=0, no-cache, must-revalidate.",
    )
    disable_first_level_http_authorization: bool = option(
        BOOL,
        False,
        "Let only stream ACLs decide over HTTP (anonymous reads and writes of ordinary "
        "streams, as before Event Store 5.0.2).",
    )

    # --- cluster
    cluster_size: int = option(INT, 1, "Number of database nodes in the cluster.",
                               check=at_least(1))
    node_priority: int = option(
        INT,
        0,
        "Election preference; higher is preferred.",
        env_aliases=("EVENTSTORE_NODE_PRORITY",),  # as misspelt in the Event Store docs
    )
    commit_count: int = option(
        INT, -1, "Nodes that must acknowledge a commit; -1 = a quorum.", check=at_least(-1)
    )
    prepare_count: int = option(
        INT, -1, "Nodes that must acknowledge a prepare; -1 = a quorum.", check=at_least(-1)
    )
    prepare_timeout_ms: int = option(
        INT, 2000, "Milliseconds to wait for prepare acknowledgements.", check=at_least(1)
    )
    commit_timeout_ms: int = option(
        INT, 2000, "Milliseconds to wait for commit acknowledgements.", check=at_least(1)
    )
    discover_via_dns: bool = option(
        BOOL, True, "Find cluster members by resolving ClusterDns (else use GossipSeed)."
    )
    cluster_dns: str = option(
        STR, "fake.dns", "DNS name whose addresses are the cluster members.", check=dns_name
    )
    cluster_gossip_port: int = option(
        INT,
        0,
        "Port gossiped to on each address from ClusterDns; 0 = IntHttpPort "
        "(Event Store v5 used 30777, the manager's port).",
        check=port(allow_zero=True),
    )
    cluster_dns_server: Optional[Endpoint] = option(
        ENDPOINT,
        None,
        "host:port of the DNS server used to resolve ClusterDns (estwisted addition, "
        "for tests); default the system resolver.",
    )
    gossip_seed: tuple[Endpoint, ...] = option(
        ENDPOINTS,
        (),
        "Internal HTTP endpoints (host:port, comma separated) of other nodes, used "
        "when DiscoverViaDns is false.",
    )
    gossip_interval_ms: int = option(
        INT, 1000, "Milliseconds between gossip rounds.", check=at_least(1)
    )
    gossip_timeout_ms: int = option(
        INT, 500, "HTTP timeout of a gossip request, in milliseconds.", check=at_least(1)
    )
    gossip_allowed_difference_ms: int = option(
        INT, 60000, "Clock difference tolerated between nodes, in milliseconds.",
        check=at_least(0),
    )
    gossip_on_single_node: bool = option(
        BOOL, False, "Gossip even when ClusterSize is 1 (deprecated in Event Store 21).",
        implemented=False,
    )
    leader_election_timeout_ms: int = option(
        INT, 1000, "Milliseconds before an election view is abandoned.", check=at_least(1)
    )
    dead_member_removal_period_sec: int = option(
        INT, 1800, "Seconds after which a dead member is dropped from gossip.",
        check=at_least(1),
    )
    read_only_replica: bool = option(
        BOOL, False, "Replicate from the leader but never vote or lead (needs ClusterSize > 1)."
    )
    unsafe_allow_surplus_nodes: bool = option(
        BOOL, False,
        "Let more than ClusterSize nodes join as clones (EventStoreDB 20; refused there "
        "without it).",
        implemented=False,
        why="a node beyond ClusterSize always joins as a clone here (the leader never "
        "refuses a replica), so the option changes nothing (docs/v5-options.md)",
    )

    # --- TLS
    certificate_file: Optional[str] = option(
        PATH, None, "Node certificate: PKCS#12, or PEM with CertificatePrivateKeyFile."
    )
    certificate_private_key_file: Optional[str] = option(
        PATH, None, "Private key (PEM) for a PEM CertificateFile."
    )
    certificate_password: Optional[str] = option(
        STR, None, "Password of a PKCS#12 CertificateFile.", secret=True
    )
    trusted_root_certificates_path: Optional[str] = option(
        PATH, None, "Directory of trusted root CA certificates."
    )
    certificate_reserved_node_common_name: str = option(
        STR, "eventstoredb-node", "Certificate CN that identifies cluster nodes.",
        check=not_empty,
    )
    insecure: bool = option(
        BOOL, False, "Disable TLS and authentication everywhere."
    )
    use_internal_ssl: bool = option(
        BOOL, False, "Replicate over the internal TLS port (needs IntSecureTcpPort)."
    )
    disable_insecure_tcp: bool = option(
        BOOL, False, "Listen on the TLS TCP ports only."
    )
    ssl_target_host: str = option(
        STR, "n/a", "Host name expected in peers' certificates for internal TLS."
    )
    ssl_validate_server: bool = option(
        BOOL, True, "Verify peers' certificates on internal TLS."
    )

    # --- manager / watchdog: accepted on a database node for v5 compatibility, with
    # no effect there; they take effect in a manager (twistd estore-manager,
    # estwisted/manager/config.py)
    enable_watchdog: bool = option(
        BOOL, True, "Manager: supervise the nodes in WatchdogConfig (a twistd "
        "estore-manager option; no effect on a node).", implemented=False
    )
    watchdog_config: Optional[str] = option(
        PATH, None, "Manager: file listing the nodes to supervise (a twistd estore-manager option; "
        "no effect on a node).", implemented=False
    )
    watchdog_failure_time_window: int = option(
        INT, -1, "Manager: window for counting node failures (a twistd estore-manager option; "
        "no effect on a node).", implemented=False
    )
    watchdog_failure_count: int = option(
        INT, -1, "Manager: node failures allowed within the window (a twistd "
        "estore-manager option; no effect on a node).", implemented=False
    )

    # --- bookkeeping (not options)
    sources: Mapping[str, Source] = field(factory=dict, eq=False)
    ignored_environment: tuple[str, ...] = field(default=(), eq=False)

    def __attrs_post_init__(self) -> None:
        # Defaults that depend on other options.
        if not self.index:
            object.__setattr__(self, "index", os.path.join(self.db, "index"))
        if not self.cluster_gossip_port:
            object.__setattr__(self, "cluster_gossip_port", self.int_http_port)

    def source_of(self, name: str) -> Source:
        """
        Where the effective value of option C{name} (PascalCase or
        snake_case) came from.
        """
        opt = TABLE.lookup(name)
        return self.sources.get(opt.name, DEFAULT_SOURCE)

    def not_implemented_in_use(self) -> list[str]:
        """
        Names of options that were set (not default) but have no effect yet.
        """
        return [
            opt.name
            for opt in OPTIONS
            if not opt.implemented and self.source_of(opt.name).kind != SourceKind.DEFAULT
        ]

    @property
    def quorum(self) -> int:
        """
        C{ClusterSize // 2 + 1}.
        """
        return self.cluster_size // 2 + 1

    @property
    def advertised_int_ip(self) -> str:
        return self.int_ip_advertise_as or self.int_ip

    @property
    def advertised_ext_ip(self) -> str:
        return self.ext_ip_advertise_as or self.ext_ip

    @property
    def advertised_int_tcp_port(self) -> int:
        return self.int_tcp_port_advertise_as or self.int_tcp_port

    @property
    def advertised_ext_tcp_port(self) -> int:
        return self.ext_tcp_port_advertise_as or self.ext_tcp_port

    @property
    def advertised_int_http_port(self) -> int:
        return self.int_http_port_advertise_as or self.int_http_port

    @property
    def advertised_ext_http_port(self) -> int:
        return self.ext_http_port_advertise_as or self.ext_http_port

    @property
    def advertised_int_secure_tcp_port(self) -> int:
        return self.int_secure_tcp_port_advertise_as or self.int_secure_tcp_port

    @property
    def advertised_ext_secure_tcp_port(self) -> int:
        return self.ext_secure_tcp_port_advertise_as or self.ext_secure_tcp_port


# --- YAML file ------------------------------------------------------------------------


def read_config_file(path: str, source: Source) -> str:
    """
    Read the configuration file as text.

    @raise ConfigError: it cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            f"Config ({source}): cannot read configuration file {path!r}: {reason}"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"Config ({source}): configuration file {path!r} is not UTF-8 text: {e.reason}"
        ) from None


def parse_config_text(text: str, path: str) -> dict[str, tuple[object, int]]:
    """
    Parse YAML text into C{{key as written: (value, line number)}}.

    @raise ConfigError: YAML syntax error (with line number), a document that
        is not a mapping, or a key given twice.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = e.problem or e.context or "syntax error"
            if e.context and e.context_mark is not None and e.problem:
                problem += f" ({e.context} started on line {e.context_mark.line + 1})"
            raise ConfigError(
                f"configuration file {path}{line}: YAML syntax error: {problem}"
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration file {path}: YAML error: {e}") from None
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(
                f"configuration file {path}, line {node.start_mark.line + 1}: expected a "
                "mapping of option names to values (e.g. IntIp: 127.0.0.1)"
            )
        result: dict[str, tuple[object, int]] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            try:
                key = loader.construct_object(key_node, deep=True)
                value = loader.construct_object(value_node, deep=True)
            except yaml.YAMLError as e:
                raise ConfigError(f"configuration file {path}, line {line}: {e}") from None
            if not isinstance(key, str):
                raise ConfigError(
                    f"configuration file {path}, line {line}: key {key!r} is not an option name"
                )
            if key in result:
                raise ConfigError(
                    f"{key} (file {path}, line {line}): given twice "
                    f"(first on line {result[key][1]})"
                )
            result[key] = (value, line)
        return result
    finally:
        loader.dispose()


def _key(text: str) -> str:
    """
    The lookup key of a spelled option name: case and dashes/underscores
    ignored.
    """
    return text.replace("-", "").replace("_", "").lower()


def _suggest(word: str, candidates: Iterable[str], key: Callable[[str], str] = _key) -> str:
    """
    " (did you mean X?)" for the nearest candidate, or "".
    """
    by_key = {key(c): c for c in candidates}
    match = difflib.get_close_matches(key(word), list(by_key), n=1, cutoff=0.6)
    if match:
        return f" (did you mean {by_key[match[0]]}?)"
    return ""


_NEGATIVE_NUMBER = re.compile(r"^-\d")
_PASS_THROUGH = {"help": "--help", "h": "--help", "?": "--help", "version": "--version"}


_Config = TypeVar("_Config")


def _fail(opt: Option, source: Source, problem: str) -> ConfigError:
    return ConfigError(f"{opt.name} ({source}): {problem}")


class OptionTable:
    """
    One declarative option table and everything that reads it: lookups by
    name, spelling and C{EVENTSTORE_*} variable, the command-line
    canonicalisation, the merge of the four sources (default < file <
    environment < command line) and the C{--what-if} rendering.  A node
    (L{NodeConfig}) and a manager (L{estwisted.manager.config}) each
    declare their table with L{option}; the rules are these, once.

    @param what: the word in "not a known ..." for an unknown file key.
    @param key_aliases: other spellings of an option (spelling -> name).
    @param env_aliases: other variables of an option (variable -> name),
        besides each option's own C{env_aliases}.
    """

    def __init__(
        self,
        options: Sequence[Option],
        what: str = "option",
        key_aliases: Optional[Mapping[str, str]] = None,
        env_aliases: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.options = tuple(options)
        self.what = what
        self.by_name = {opt.name: opt for opt in self.options}
        self.by_key = {_key(opt.name): opt for opt in self.options}
        self.by_env = {opt.env: opt for opt in self.options}
        for opt in self.options:
            for alias in opt.env_aliases:
                self.by_env[alias] = opt
        for spelling, name in (key_aliases or {}).items():
            self.by_key[_key(spelling)] = self.by_name[name]
        for var, name in (env_aliases or {}).items():
            self.by_env[var] = self.by_name[name]

    @classmethod
    def of(cls, config_class: type, **kwargs: Any) -> OptionTable:
        """
        The table of the options declared (with L{option}) on an attrs
        configuration class, in declaration order.
        """
        table = []
        for f in attrs.fields(config_class):
            spec = f.metadata.get(_OPTION_KEY)
            if spec is not None:
                table.append(Option(attribute=f.name, **spec))
        return cls(table, **kwargs)

    def lookup(self, name: str) -> Option:
        """
        @raise KeyError: no option is spelled C{name}.
        """
        opt = self.by_key.get(_key(name))
        if opt is None:
            raise KeyError(name)
        return opt

    def canonical_arguments(self, args: Sequence[str]) -> list[str]:
        """
        Rewrite command-line arguments into canonical C{--flag=value} form.

        Accepts C{--int-ip value}, C{--int-ip=value}, C{--IntIp value},
        C{-IntIp value}; bare booleans (C{--mem-db}), booleans followed by
        a true/false word, C{--mem-db-}/C{--mem-db+}.  List options given
        more than once accumulate.  C{--help} and C{--version} pass
        through.

        @raise ConfigError: an unknown flag (with the nearest known one
            suggested), a missing value, or a stray argument.
        """
        values: dict[str, str] = {}
        order: list[str] = []
        passed: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not arg.startswith("-") or arg in ("-", "--"):
                raise ConfigError(
                    f"unexpected argument {arg!r} on the command line "
                    "(options look like --int-ip 127.0.0.1)"
                )
            spelled, has_value, value = arg.lstrip("-").partition("=")
            if spelled.lower() in _PASS_THROUGH and not has_value:
                passed.append(_PASS_THROUGH[spelled.lower()])
                continue
            opt = None
            if spelled[-1:] in ("+", "-") and not has_value:
                opt = self.by_key.get(_key(spelled[:-1]))
                if opt is not None and opt.kind.is_bool:
                    has_value, value = "=", "true" if spelled.endswith("+") else "false"
                else:
                    opt = None
            if opt is None:
                opt = self.by_key.get(_key(spelled))
            if opt is None:
                suggestion = _suggest(spelled, ["--" + o.flag for o in self.options])
                raise ConfigError(
                    f"unknown option {arg.split('=')[0]} on the command line{suggestion}"
                )
            if not has_value:
                if opt.kind.is_bool:
                    if i < len(args) and args[i].lower() in _BOOL_WORDS - {"+", "-"}:
                        value = args[i]
                        i += 1
                    else:
                        value = "true"
                elif i < len(args) and (
                    not args[i].startswith("-") or _NEGATIVE_NUMBER.match(args[i])
                ):
                    value = args[i]
                    i += 1
                else:
                    raise ConfigError(f"{opt.name} (command line --{opt.flag}): missing value")
            if opt.name in values and opt.kind.is_list:
                values[opt.name] = values[opt.name] + "," + value
            else:
                if opt.name not in values:
                    order.append(opt.name)
                values[opt.name] = value
        return passed + [f"--{self.by_name[name].flag}={values[name]}" for name in order]

    def merge(
        self,
        command_line: Optional[Mapping[str, str]] = None,
        environ: Optional[Mapping[str, str]] = None,
        read_file: Callable[[str, Source], str] = read_config_file,
    ) -> tuple[dict[str, Any], dict[str, Source], tuple[str, ...]]:
        """
        Merge the four sources.

        @param command_line: option name (PascalCase) -> raw text, as
            produced from L{canonical_arguments} output.
        @param environ: the environment (only C{EVENTSTORE_*} names are
            looked at); by default none.
        @param read_file: reads the C{Config} file; injectable for tests.
        @return: the values by attribute, the source of each option set,
            and the C{EVENTSTORE_*} variables that name no option.

        @raise ConfigError: one line naming the option and its source.
        """
        command_line = command_line or {}
        environ = environ or {}
        chosen: dict[str, tuple[Any, Source]] = {}

        def take(opt: Option, value: Any, source: Source) -> None:
            current = chosen.get(opt.name)
            if current is None or current[1].kind <= source.kind:
                chosen[opt.name] = (value, source)

        for name, text in command_line.items():
            opt = self.lookup(name)
            source = Source(SourceKind.COMMAND_LINE, f"--{opt.flag}")
            try:
                take(opt, opt.convert_text(text), source)
            except ValueError as e:
                raise _fail(opt, source, str(e)) from None

        ignored: list[str] = []
        for var in sorted(environ):
            if not var.startswith(ENV_PREFIX):
                continue
            env_opt = self.by_env.get(var)
            if env_opt is None:
                ignored.append(var)
                continue
            source = Source(SourceKind.ENVIRONMENT, var)
            try:
                take(env_opt, env_opt.convert_text(environ[var]), source)
            except ValueError as e:
                raise _fail(env_opt, source, str(e)) from None

        config_entry = chosen.get("Config")
        if config_entry is not None and config_entry[0]:
            path, path_source = config_entry
            text = read_file(path, path_source)
            for key, (raw, line) in parse_config_text(text, path).items():
                source = Source(SourceKind.FILE, f"{path}, line {line}")
                file_opt = self.by_key.get(_key(key))
                if file_opt is None:
                    names = [o.name for o in self.options if o.file_allowed]
                    raise ConfigError(
                        f"{key} (file {path}, line {line}): not a known {self.what}"
                        f"{_suggest(key, names)}"
                    )
                if not file_opt.file_allowed:
                    raise _fail(file_opt, source, "cannot be set in a configuration file")
                try:
                    take(file_opt, file_opt.convert_yaml(raw), source)
                except ValueError as e:
                    raise _fail(file_opt, source, str(e)) from None

        values = {self.by_name[name].attribute: value for name, (value, _) in chosen.items()}
        sources = {name: source for name, (_, source) in chosen.items()}
        return values, sources, tuple(ignored)

    def load(
        self,
        make: Callable[..., _Config],
        check: Callable[[_Config], None],
        command_line: Optional[Mapping[str, str]] = None,
        environ: Optional[Mapping[str, str]] = None,
        read_file: Callable[[str, Source], str] = read_config_file,
    ) -> _Config:
        """
        L{merge}, build the configuration with C{make(**values, sources=...,
        ignored_environment=...)} and validate it with C{check}.

        @raise ConfigError: one line naming the option and its source.
        """
        values, sources, ignored = self.merge(command_line, environ, read_file)
        config = make(**values, sources=sources, ignored_environment=ignored)
        check(config)
        return config

    def suggest_variable(self, var: str) -> str:
        """
        " (did you mean EVENTSTORE_X?)" for a variable that names no option.
        """
        return _suggest(var, list(self.by_env), key=str.upper)

    def render(self, config: Any) -> str:
        """
        The effective configuration, Event Store v5 style: C{MODIFIED
        OPTIONS} then C{DEFAULT OPTIONS}, one C{NAME: value (source)} line
        each (C{--what-if}).
        """
        modified, defaults = [], []
        width = max(len(opt.title) for opt in self.options) + 2
        for opt in self.options:
            source = config.source_of(opt.name)
            value = opt.show(getattr(config, opt.attribute))
            line = f"    {(opt.title + ':').ljust(width)}{value} ({source})"
            if source.kind == SourceKind.DEFAULT:
                defaults.append(line)
            else:
                if not opt.implemented:
                    line += " " + opt.marker
                modified.append(line)
        out = ["MODIFIED OPTIONS:", ""]
        out += modified or ["    (none)"]
        out += ["", "DEFAULT OPTIONS:", ""]
        out += defaults or ["    (none)"]
        if config.ignored_environment:
            out += ["", "IGNORED ENVIRONMENT VARIABLES (not options):", ""]
            for var in config.ignored_environment:
                out.append(f"    {var}{self.suggest_variable(var)}")
        return "\n".join(out) + "\n"


#: The node's option table.
TABLE = OptionTable.of(NodeConfig)

#: The option table, in declaration order.
OPTIONS: tuple[Option, ...] = TABLE.options

#: Command-line arguments in canonical C{--flag=value} form
#: (L{OptionTable.canonical_arguments}).
canonical_arguments = TABLE.canonical_arguments


# --- merging ----------------------------------------------------------------------


def load_config(
    command_line: Optional[Mapping[str, str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    read_file: Callable[[str, Source], str] = read_config_file,
) -> NodeConfig:
    """
    Merge the four sources and validate (L{OptionTable.load}).

    @raise ConfigError: one line naming the option and its source.
    """
    return TABLE.load(NodeConfig, _check_config, command_line, environ, read_file)


def _check_config(config: NodeConfig) -> None:
    """
    Rules that involve more than one option.

    @raise ConfigError: the first rule broken.
    """

    def where(name: str) -> str:
        return f"{name} ({config.source_of(name)})"

    # endpoints must not collide
    endpoints = [
        ("IntTcpPort", config.int_ip, "IntIp", config.int_tcp_port),
        ("ExtTcpPort", config.ext_ip, "ExtIp", config.ext_tcp_port),
        ("IntHttpPort", config.int_ip, "IntIp", config.int_http_port),
        ("ExtHttpPort", config.ext_ip, "ExtIp", config.ext_http_port),
        ("IntSecureTcpPort", config.int_ip, "IntIp", config.int_secure_tcp_port),
        ("ExtSecureTcpPort", config.ext_ip, "ExtIp", config.ext_secure_tcp_port),
    ]
    seen: list[tuple[str, str, str, int]] = []
    for name, ip, ip_name, number in endpoints:
        if number == 0:
            continue
        for other, other_ip, other_ip_name, other_number in seen:
            wildcard = ipaddress.ip_address(ip).is_unspecified or ipaddress.ip_address(
                other_ip
            ).is_unspecified
            if number == other_number and (ip == other_ip or wildcard):
                raise ConfigError(
                    f"{where(name)}: endpoint {ip}:{number} is also used by {where(other)}"
                    f" (on {other_ip_name} {other_ip}); give each endpoint its own ip:port"
                )
        seen.append((name, ip, ip_name, number))

    if not config.mem_db:
        if os.path.normpath(config.index) == os.path.normpath(config.db):
            raise ConfigError(f"{where('Index')}: must differ from Db ({config.db})")

    if config.read_only_replica and config.cluster_size == 1:
        raise ConfigError(
            f"{where('ReadOnlyReplica')}: a read-only replica needs ClusterSize > 1 "
            f"(ClusterSize is 1 from {config.source_of('ClusterSize')})"
        )
    if config.cluster_size > 1 and not config.discover_via_dns and not config.gossip_seed:
        raise ConfigError(
            f"{where('GossipSeed')}: no gossip seeds, but ClusterSize is {config.cluster_size} "
            "and DiscoverViaDns is false; give the other nodes' internal HTTP endpoints"
        )
    if config.cluster_size == 1 and len(config.gossip_seed) > 1:
        raise ConfigError(
            f"{where('GossipSeed')}: {len(config.gossip_seed)} seeds given but ClusterSize is 1 "
            f"({config.source_of('ClusterSize')})"
        )
    for name, count in (("CommitCount", config.commit_count),
                        ("PrepareCount", config.prepare_count)):
        if count == 0 or count > config.cluster_size:
            raise ConfigError(
                f"{where(name)}: must be -1 (a quorum) or 1..ClusterSize "
                f"({config.cluster_size}), got {count}"
            )
    for name, prefixes, number, port_name in (
        ("ExtHttpPrefixes", config.ext_http_prefixes, config.ext_http_port, "ExtHttpPort"),
        ("IntHttpPrefixes", config.int_http_prefixes, config.int_http_port, "IntHttpPort"),
    ):
        for text in prefixes:
            prefix = parse_http_prefix(text)
            if prefix.port != number:
                raise ConfigError(
                    f"{where(name)}: {text} is on port {prefix.port} but {port_name} is "
                    f"{number}; estwisted listens only on {port_name} (a prefix names "
                    "the host names and paths answered there, not another listener)"
                )
    if config.certificate_private_key_file and not config.certificate_file:
        raise ConfigError(
            f"{where('CertificatePrivateKeyFile')}: needs CertificateFile"
        )
    if not config.insecure and not config.certificate_file:
        for name, number in (("IntSecureTcpPort", config.int_secure_tcp_port),
                             ("ExtSecureTcpPort", config.ext_secure_tcp_port)):
            if number:
                raise ConfigError(f"{where(name)}: a TLS port needs CertificateFile")
    if config.use_internal_ssl and not config.int_secure_tcp_port:
        raise ConfigError(f"{where('UseInternalSsl')}: needs IntSecureTcpPort")
    if config.disable_insecure_tcp and not (
        config.int_secure_tcp_port and config.ext_secure_tcp_port
    ):
        raise ConfigError(
            f"{where('DisableInsecureTcp')}: needs IntSecureTcpPort and ExtSecureTcpPort"
        )


# --- what-if ------------------------------------------------------------------------


def startup_warnings(config: NodeConfig) -> list[str]:
    """
    Lines worth logging when the node starts: options that were set but
    have no effect yet, and C{EVENTSTORE_*} variables that name no option.
    """
    warnings = []
    for name in config.not_implemented_in_use():
        why = TABLE.by_name[name].why
        if why:
            warnings.append(
                f"{name} ({config.source_of(name)}) is accepted but has no effect here: {why}"
            )
        else:
            warnings.append(
                f"{name} ({config.source_of(name)}) is accepted but not yet implemented; "
                "it has no effect"
            )
    for var in config.ignored_environment:
        warnings.append(
            f"environment variable {var} names no option and is ignored"
            f"{TABLE.suggest_variable(var)}"
        )
    return warnings


def render_options(config: NodeConfig) -> str:
    """
    The effective configuration, Event Store v5 style (L{OptionTable.render}).
    """
    return TABLE.render(config)
