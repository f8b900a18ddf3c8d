# -*- test-case-name: estwisted.manager.test.test_config -*-
"""
Manager configuration: one declarative option table, four sources, one
frozen L{ManagerConfig}, with the same rules as a database node
(L{estwisted.node.config}).

The options are declared with L{estwisted.node.config.option} and the same value
kinds and validators, so a manager option gets its YAML key (PascalCase),
its C{EVENTSTORE_*} variable and its command-line flags exactly as a node
option does.  Precedence, lowest first: default < YAML file (C{--config}) <
environment < command line; C{--what-if} prints every value with its
source.  Unknown keys and bad values are refused with one line naming the
key and its source.  The YAML parser, the file reader, the value kinds and
the L{estwisted.node.config.Source} bookkeeping are reused from
L{estwisted.node.config}; only the table differs.

Pure: reads the configuration file and nothing else.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import attrs
from attrs import field, frozen

from estwisted.core.errors import ConfigError
from estwisted.node.config import (
    BOOL,
    ENDPOINT,
    ENDPOINTS,
    ENV_PREFIX,
    INT,
    IP,
    PATH,
    STR,
    Endpoint,
    Option,
    Source,
    SourceKind,
    at_least,
    dns_name,
    not_empty,
    option,
    parse_config_text,
    port,
    read_config_file,
)

__all__ = [
    "MANAGER_OPTIONS",
    "ManagerConfig",
    "canonical_manager_arguments",
    "load_manager_config",
    "render_manager_options",
]

_OPTION_KEY = "estwisted.option"


@frozen
class ManagerConfig:
    """
    The validated configuration of one manager node.
    """

    # --- application
    config: Optional[str] = option(
        PATH,
        None,
        "YAML configuration file with PascalCase keys (e.g. IntIp: 127.0.0.1).",
        file_allowed=False,
    )
    what_if: bool = option(
        BOOL, False, "Print the effective configuration with sources and exit."
    )
    log: str = option(
        PATH,
        "./estore-manager-log",
        "Directory for the manager's files: the output of every supervised node "
        "(node-N.log) and their pid files (node-N.pid).",
        check=not_empty,
    )

    # --- interfaces
    int_ip: str = option(IP, "127.0.0.1", "Internal IP address (gossip with nodes, managers).")
    ext_ip: str = option(IP, "127.0.0.1", "External IP address (clients' gossip requests).")
    int_http_port: int = option(INT, 30777, "Internal HTTP port.", check=port())
    ext_http_port: int = option(INT, 30778, "External HTTP port.", check=port())
    int_ip_advertise_as: Optional[str] = option(
        IP, None, "Internal IP address told to other members; default IntIp."
    )
    ext_ip_advertise_as: Optional[str] = option(
        IP, None, "External IP address told to clients; default ExtIp."
    )

    # --- discovery and gossip
    discover_via_dns: bool = option(
        BOOL, True, "Find the other managers by resolving ClusterDns (else use GossipSeed)."
    )
    cluster_dns: str = option(
        STR, "fake.dns", "DNS name with one A record per machine.", check=dns_name
    )
    cluster_gossip_port: int = option(
        INT, 30777, "Managers' internal HTTP port on each address of ClusterDns.",
        check=port(),
    )
    cluster_dns_server: Optional[Endpoint] = option(
        ENDPOINT,
        None,
        "host:port of the DNS server for ClusterDns (estwisted addition, for tests); "
        "default the system resolver.",
    )
    gossip_seed: tuple[Endpoint, ...] = option(
        ENDPOINTS,
        (),
        "Internal HTTP endpoints of the other managers (host:port, comma separated), "
        "used when DiscoverViaDns is false.",
    )
    gossip_interval_ms: int = option(
        INT, 1000, "Milliseconds between gossip rounds.", check=at_least(1)
    )
    gossip_timeout_ms: int = option(
        INT, 500, "HTTP timeout of a gossip request, in milliseconds.", check=at_least(1)
    )
    gossip_allowed_difference_ms: int = option(
        INT, 60000, "Clock difference tolerated between members, in milliseconds.",
        check=at_least(0),
    )
    dead_member_removal_period_sec: int = option(
        INT, 1800, "Seconds after which a dead member is dropped from gossip.",
        check=at_least(1),
    )

    # --- watchdog
    enable_watchdog: bool = option(
        BOOL, True, "Start and supervise the nodes listed in WatchdogConfig."
    )
    watchdog_config: Optional[str] = option(
        PATH,
        None,
        "Watchdog file: one line per node, '#' then the node's command-line "
        "options (normally --config /path/database.yaml).",
    )
    watchdog_failure_time_window: int = option(
        INT, 60, "Seconds over which node failures are counted.", check=at_least(1)
    )
    watchdog_failure_count: int = option(
        INT,
        5,
        "Failures of one node within WatchdogFailureTimeWindow after which it is "
        "no longer restarted.",
        check=at_least(1),
    )
    watchdog_stop_grace_ms: int = option(
        INT,
        10000,
        "Milliseconds a node gets to exit after SIGTERM before SIGKILL "
        "(estwisted addition).",
        check=at_least(1),
    )

    # --- TLS (as on a database node: estwisted.tls.contexts)
    certificate_file: Optional[str] = option(
        PATH, None, "Manager certificate: PKCS#12, or PEM with CertificatePrivateKeyFile "
        "(a node certificate of the cluster CA)."
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
        STR, "eventstoredb-node", "Certificate CN that identifies cluster members.",
        check=not_empty,
    )
    insecure: bool = option(
        BOOL, False, "Serve and gossip in plaintext, also on non-loopback addresses."
    )

    # --- bookkeeping (not options)
    sources: Mapping[str, Source] = field(factory=dict, eq=False)
    ignored_environment: tuple[str, ...] = field(default=(), eq=False)

    def source_of(self, name: str) -> Source:
        """
        Where the effective value of option C{name} came from.
        """
        return self.sources.get(_lookup(name).name, Source(SourceKind.DEFAULT))

    def not_implemented_in_use(self) -> list[str]:
        """
        Names of options that were set but have no effect yet.
        """
        return [
            opt.name
            for opt in MANAGER_OPTIONS
            if not opt.implemented and self.source_of(opt.name).kind != SourceKind.DEFAULT
        ]

    @property
    def advertised_int_ip(self) -> str:
        return self.int_ip_advertise_as or self.int_ip

    @property
    def advertised_ext_ip(self) -> str:
        return self.ext_ip_advertise_as or self.ext_ip

    @property
    def advertised_int_http_port(self) -> int:
        return self.int_http_port


def _build_table() -> tuple[Option, ...]:
    table = []
    for f in attrs.fields(ManagerConfig):
        spec = f.metadata.get(_OPTION_KEY)
        if spec is not None:
            table.append(Option(attribute=f.name, **spec))
    return tuple(table)


#: The manager's option table, in declaration order.
MANAGER_OPTIONS: tuple[Option, ...] = _build_table()


def _key(text: str) -> str:
    return text.replace("-", "").replace("_", "").lower()


_BY_NAME = {opt.name: opt for opt in MANAGER_OPTIONS}
_BY_KEY = {_key(opt.name): opt for opt in MANAGER_OPTIONS}
_BY_ENV = {opt.env: opt for opt in MANAGER_OPTIONS}
#: v5's manager note: GossipPort is an alias of ManagerPort; both name the
#: port the managers gossip on.
_BY_KEY["gossipport"] = _BY_NAME["ClusterGossipPort"]
_BY_KEY["managerport"] = _BY_NAME["ClusterGossipPort"]
_BY_ENV[ENV_PREFIX + "GOSSIP_PORT"] = _BY_NAME["ClusterGossipPort"]
_BY_ENV[ENV_PREFIX + "MANAGER_PORT"] = _BY_NAME["ClusterGossipPort"]


def _lookup(name: str) -> Option:
    opt = _BY_KEY.get(_key(name))
    if opt is None:
        raise KeyError(name)
    return opt


def _suggest(word: str, candidates: Iterable[str], key: Callable[[str], str] = _key) -> str:
    by_key = {key(c): c for c in candidates}
    match = difflib.get_close_matches(key(word), list(by_key), n=1, cutoff=0.6)
    return f" (did you mean {by_key[match[0]]}?)" if match else ""


_BOOL_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off"})
_PASS_THROUGH = {"help": "--help", "h": "--help", "?": "--help", "version": "--version"}


def canonical_manager_arguments(args: Sequence[str]) -> list[str]:
    """
    Rewrite manager command-line arguments into C{--flag=value} form, with
    the spellings a node accepts (L{estwisted.node.config.canonical_arguments}):
    C{--int-ip v}, C{--int-ip=v}, C{--IntIp v}, C{-IntIp v}, bare booleans,
    C{--flag-}/C{--flag+}; list options accumulate.

    @raise ConfigError: an unknown flag, a missing value, a stray argument.
    """
    values: dict[str, str] = {}
    order: list[str] = []
    passed: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise ConfigError(f"unexpected argument {arg!r} on the command line")
        spelled, has_value, value = arg.lstrip("-").partition("=")
        if spelled.lower() in _PASS_THROUGH and not has_value:
            passed.append(_PASS_THROUGH[spelled.lower()])
            continue
        opt = None
        if spelled[-1:] in ("+", "-") and not has_value:
            candidate = _BY_KEY.get(_key(spelled[:-1]))
            if candidate is not None and candidate.kind.is_bool:
                opt = candidate
                has_value, value = "=", "true" if spelled.endswith("+") else "false"
        if opt is None:
            opt = _BY_KEY.get(_key(spelled))
        if opt is None:
            suggestion = _suggest(spelled, ["--" + o.flag for o in MANAGER_OPTIONS])
            raise ConfigError(
                f"unknown option {arg.split('=')[0]} on the command line{suggestion}"
            )
        if not has_value:
            if opt.kind.is_bool:
                if i < len(args) and args[i].lower() in _BOOL_WORDS:
                    value = args[i]
                    i += 1
                else:
                    value = "true"
            elif i < len(args) and not args[i].startswith("-"):
                value = args[i]
                i += 1
            else:
                raise ConfigError(f"{opt.name} (command line --{opt.flag}): missing value")
        if opt.name in values and opt.kind.is_list:
            values[opt.name] += "," + value
        else:
            if opt.name not in values:
                order.append(opt.name)
            values[opt.name] = value
    return passed + [f"--{_BY_NAME[name].flag}={values[name]}" for name in order]


def _fail(opt: Option, source: Source, problem: str) -> ConfigError:
    return ConfigError(f"{opt.name} ({source}): {problem}")


def load_manager_config(
    command_line: Optional[Mapping[str, str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    read_file: Callable[[str, Source], str] = read_config_file,
) -> ManagerConfig:
    """
    Merge the four sources and validate.

    @param command_line: option name (PascalCase) -> raw text.
    @param environ: the environment (only C{EVENTSTORE_*} names are read).
    @param read_file: reads the C{Config} file; injectable for tests.

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
        opt = _lookup(name)
        source = Source(SourceKind.COMMAND_LINE, f"--{opt.flag}")
        try:
            take(opt, opt.convert_text(text), source)
        except ValueError as e:
            raise _fail(opt, source, str(e)) from None

    ignored: list[str] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        env_opt = _BY_ENV.get(var)
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
            file_opt = _BY_KEY.get(_key(key))
            if file_opt is None:
                names = [o.name for o in MANAGER_OPTIONS if o.file_allowed]
                raise ConfigError(
                    f"{key} (file {path}, line {line}): not a known manager option"
                    f"{_suggest(key, names)}"
                )
            if not file_opt.file_allowed:
                raise _fail(file_opt, source, "cannot be set in a configuration file")
            try:
                take(file_opt, file_opt.convert_yaml(raw), source)
            except ValueError as e:
                raise _fail(file_opt, source, str(e)) from None

    values = {_BY_NAME[name].attribute: value for name, (value, _) in chosen.items()}
    sources = {name: source for name, (_, source) in chosen.items()}
    config = ManagerConfig(**values, sources=sources, ignored_environment=tuple(ignored))
    _check(config)
    return config


def _check(config: ManagerConfig) -> None:
    """
    Rules that involve more than one option.

    @raise ConfigError: the first rule broken.
    """

    def where(name: str) -> str:
        return f"{name} ({config.source_of(name)})"

    if config.int_ip == config.ext_ip and config.int_http_port == config.ext_http_port:
        raise ConfigError(
            f"{where('ExtHttpPort')}: endpoint {config.ext_ip}:{config.ext_http_port} is "
            f"also used by {where('IntHttpPort')}"
        )
    if config.certificate_private_key_file and not config.certificate_file:
        raise ConfigError(f"{where('CertificatePrivateKeyFile')}: needs CertificateFile")
    if config.enable_watchdog and not config.watchdog_config:
        raise ConfigError(
            f"{where('WatchdogConfig')}: EnableWatchdog is true "
            f"({config.source_of('EnableWatchdog')}) but no watchdog file is given"
        )


def render_manager_options(config: ManagerConfig) -> str:
    """
    The effective configuration: C{MODIFIED OPTIONS} then C{DEFAULT
    OPTIONS}, one C{NAME: value (source)} line each, as a node prints it.
    """
    modified, defaults = [], []
    width = max(len(opt.title) for opt in MANAGER_OPTIONS) + 2
    for opt in MANAGER_OPTIONS:
        source = config.source_of(opt.name)
        value = opt.show(getattr(config, opt.attribute))
        line = f"    {(opt.title + ':').ljust(width)}{value} ({source})"
        if source.kind == SourceKind.DEFAULT:
            defaults.append(line)
        else:
            if not opt.implemented:
                line += " [accepted, not yet implemented]"
            modified.append(line)
    out = ["MODIFIED OPTIONS:", ""]
    out += modified or ["    (none)"]
    out += ["", "DEFAULT OPTIONS:", ""]
    out += defaults or ["    (none)"]
    if config.ignored_environment:
        out += ["", "IGNORED ENVIRONMENT VARIABLES (not options):", ""]
        out += [f"    {var}" for var in config.ignored_environment]
    return "\n".join(out) + "\n"
