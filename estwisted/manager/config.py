# -*- test-case-name: estwisted.manager.test.test_config -*-
"""
Manager configuration: one declarative option table, four sources, one
frozen L{ManagerConfig}, with the same rules as a database node
(L{estwisted.node.config}).

The options are declared with L{estwisted.node.options.option} and the same value
kinds and validators, so a manager option gets its YAML key (PascalCase),
its C{EVENTSTORE_*} variable and its command-line flags exactly as a node
option does.  Precedence, lowest first: default < YAML file (C{--config}) <
environment < command line; C{--what-if} prints every value with its
source.  Unknown keys and bad values are refused with one line naming the
key and its source.  The YAML parser, the file reader, the value kinds and
the L{estwisted.node.options.Source} bookkeeping are reused from
L{estwisted.node.options} and L{estwisted.node.sources}; only the table
differs.

Pure: reads the configuration file and nothing else.
"""

from __future__ import annotations

import functools
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
    PATH,
    STR,
    Endpoint,
    Option,
    Source,
    at_least,
    certificate_password_option,
    certificate_private_key_option,
    dead_member_removal_option,
    dns_name,
    gossip_interval_option,
    gossip_timeout_option,
    not_empty,
    option,
    port,
    trusted_roots_option,
    what_if_option,
)
from estwisted.node.sources import Loader, OptionTable

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
    what_if: bool = what_if_option()
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
    gossip_interval_ms: int = gossip_interval_option()
    gossip_timeout_ms: int = gossip_timeout_option()
    gossip_allowed_difference_ms: int = option(
        INT, 60000, "Clock difference tolerated between members, in milliseconds.",
        check=at_least(0),
    )
    dead_member_removal_period_sec: int = dead_member_removal_option()

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
    certificate_private_key_file: Optional[str] = certificate_private_key_option()
    certificate_password: Optional[str] = certificate_password_option()
    trusted_root_certificates_path: Optional[str] = trusted_roots_option()
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
    def advertised_int_ip(self) -> str:
        return self.int_ip_advertise_as or self.int_ip

    @property
    def advertised_ext_ip(self) -> str:
        return self.ext_ip_advertise_as or self.ext_ip

    @property
    def advertised_int_http_port(self) -> int:
        return self.int_http_port


#: The manager's option table.  v5's manager note: GossipPort is an alias
#: of ManagerPort; both name the port the managers gossip on.
TABLE = OptionTable.of(
    ManagerConfig,
    what="manager option",
    key_aliases={"GossipPort": "ClusterGossipPort", "ManagerPort": "ClusterGossipPort"},
    env_aliases={
        ENV_PREFIX + "GOSSIP_PORT": "ClusterGossipPort",
        ENV_PREFIX + "MANAGER_PORT": "ClusterGossipPort",
    },
)

#: The manager's option table, in declaration order.
MANAGER_OPTIONS: tuple[Option, ...] = TABLE.options

#: Manager command-line arguments in canonical C{--flag=value} form, with
#: the spellings a node accepts (L{OptionTable.canonical_arguments}).
canonical_manager_arguments = TABLE.canonical_arguments


def _check(config: ManagerConfig) -> None:
    """
    Rules that involve more than one option.

    @raise ConfigError: the first rule broken.
    """
    where = functools.partial(TABLE.where, config)

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


#: Merge the four sources and validate (L{OptionTable.load}):
#: C{load_manager_config(command_line=None, environ=None, read_file=read_config_file)}.
#: @raise ConfigError: one line naming the option and its source.
load_manager_config: Loader[ManagerConfig] = TABLE.loader(ManagerConfig, _check)


def render_manager_options(config: ManagerConfig) -> str:
    """
    The effective configuration, as a node prints it (L{OptionTable.render}).
    """
    return TABLE.render(config)
