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

The machinery is in two modules below this one, shared with the manager
(L{estwisted.manager.config}): L{estwisted.node.options} (sources, value
kinds, validators, L{option}) and L{estwisted.node.sources} (the YAML file,
the merge of the four sources, the C{--what-if} rendering).  This module
holds the node's table, its cross-option rules and its startup warnings.

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

import functools
import ipaddress
import os
from collections.abc import Mapping
from typing import Optional

from attrs import field, frozen

from estwisted.core.errors import ConfigError
from estwisted.node.options import (
    BOOL,
    ENDPOINT,
    ENDPOINTS,
    ENV_PREFIX,
    INT,
    IP,
    MIB,
    PATH,
    STR,
    STRINGS,
    Endpoint,
    Option,
    Source,
    SourceKind,
    at_least,
    certificate_password_option,
    certificate_private_key_option,
    dead_member_removal_option,
    dns_name,
    gossip_interval_option,
    gossip_timeout_option,
    http_prefixes,
    not_empty,
    one_of,
    option,
    parse_http_prefix,
    port,
    trusted_roots_option,
    what_if_option,
)
from estwisted.node.sources import Loader, OptionTable

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
    what_if: bool = what_if_option()
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
        check=http_prefixes,
    )
    ext_http_prefixes: tuple[str, ...] = option(
        STRINGS, (),
        "Extra prefixes (http://host:port/path/, * = any host) the external HTTP server "
        "answers; when set, other Host names get 400 (docs/v5-options.md).",
        check=http_prefixes,
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
    gossip_interval_ms: int = gossip_interval_option()
    gossip_timeout_ms: int = gossip_timeout_option()
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
    dead_member_removal_period_sec: int = dead_member_removal_option()
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
    certificate_private_key_file: Optional[str] = certificate_private_key_option()
    certificate_password: Optional[str] = certificate_password_option()
    trusted_root_certificates_path: Optional[str] = trusted_roots_option()
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
        snake_case) came from (L{OptionTable.source_of}).
        """
        return TABLE.source_of(self, name)

    def not_implemented_in_use(self) -> list[str]:
        """
        Names of options that were set (not default) but have no effect yet.
        """
        return TABLE.not_implemented_in_use(self)

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


#: The node's option table.
TABLE = OptionTable.of(NodeConfig)

#: The option table, in declaration order.
OPTIONS: tuple[Option, ...] = TABLE.options

#: Command-line arguments in canonical C{--flag=value} form
#: (L{OptionTable.canonical_arguments}).
canonical_arguments = TABLE.canonical_arguments


# --- merging ----------------------------------------------------------------------


def _check_config(config: NodeConfig) -> None:
    """
    Rules that involve more than one option.

    @raise ConfigError: the first rule broken.
    """
    where = functools.partial(TABLE.where, config)

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


#: Merge the four sources and validate (L{OptionTable.load}):
#: C{load_config(command_line=None, environ=None, read_file=read_config_file)}.
#: @raise ConfigError: one line naming the option and its source.
load_config: Loader[NodeConfig] = TABLE.loader(NodeConfig, _check_config)


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
