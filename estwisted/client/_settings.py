# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
Settings of a connection: L{ConnectionSettings} (behaviour),
L{ClusterSettings} (how to find the nodes), L{SingleNode} (one fixed node),
and L{parse_connection_string} for the C{tcp://} / C{discover://} forms.

Every value is checked when it is built: a bad one raises L{ValueError}
naming the setting.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Optional, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from attrs import field, frozen

from estwisted.client._values import UserCredentials


class NodePreference(enum.Enum):
    """
    Which cluster member discovery connects to.
    """

    LEADER = "leader"
    FOLLOWER = "follower"
    RANDOM = "random"


def _positive(name: str, allow_zero: bool = False) -> Any:
    def check(instance: object, attribute: object, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if value < 0 or (value == 0 and not allow_zero):
            bound = "at least 0" if allow_zero else "greater than 0"
            raise ValueError(f"{name} must be {bound}, got {value!r}")

    return check


def _count(name: str, unlimited: bool = False) -> Any:
    def check(instance: object, attribute: object, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        low = -1 if unlimited else 0
        if value < low:
            extra = " (-1 means unlimited)" if unlimited else ""
            raise ValueError(f"{name} must be at least {low}{extra}, got {value!r}")

    return check


def _check_port(name: str, port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{name} must be a port number (1-65535), got {port!r}")


@frozen
class ConnectionSettings:
    """
    How a connection behaves.  Times are seconds.

    @ivar keep_reconnecting: reconnect forever (C{max_reconnections} is
        then ignored).
    @ivar max_reconnections: reconnections tried before the connection
        closes itself; -1 is unlimited.
    @ivar reconnection_delay: the first wait before reconnecting; it doubles
        with each failed attempt up to C{max_reconnection_delay}.
    @ivar operation_timeout: how long one attempt of an operation may wait
        for its answer.
    @ivar max_retries: attempts after the first one (per operation); -1 is
        unlimited.
    @ivar max_queue_size: operations waiting to be sent before new ones are
        refused with L{QueueFull}.
    @ivar max_concurrent_items: operations in flight on the connection.
    @ivar require_master: reads and writes must be served by the leader.
    @ivar heartbeat_interval: silence after which the client probes.
    @ivar heartbeat_timeout: how long the probe may go unanswered before
        the connection is dropped.
    @ivar ca_file: PEM file of the certificate authority trusted for TLS
        (C{None}: the platform's trust store).
    """

    keep_reconnecting: bool = False
    max_reconnections: int = field(default=10, validator=_count("max_reconnections", True))
    reconnection_delay: float = field(default=0.1, validator=_positive("reconnection_delay"))
    max_reconnection_delay: float = field(
        default=2.0, validator=_positive("max_reconnection_delay")
    )
    operation_timeout: float = field(default=7.0, validator=_positive("operation_timeout"))
    max_retries: int = field(default=10, validator=_count("max_retries", True))
    max_queue_size: int = field(default=5000, validator=_count("max_queue_size"))
    max_concurrent_items: int = field(default=5000, validator=_count("max_concurrent_items"))
    require_master: bool = True
    default_user_credentials: Optional[UserCredentials] = None
    heartbeat_interval: float = field(default=0.75, validator=_positive("heartbeat_interval"))
    heartbeat_timeout: float = field(default=1.5, validator=_positive("heartbeat_timeout"))
    connection_name: str = "estwisted-client"
    use_tls: bool = False
    target_host: Optional[str] = None
    validate_server: bool = True
    ca_file: Optional[str] = None

    def __attrs_post_init__(self) -> None:
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {self.max_queue_size!r}")
        if self.max_concurrent_items < 1:
            raise ValueError(
                f"max_concurrent_items must be at least 1, got {self.max_concurrent_items!r}"
            )
        if self.max_reconnection_delay < self.reconnection_delay:
            raise ValueError(
                "max_reconnection_delay must be at least reconnection_delay "
                f"({self.max_reconnection_delay!r} < {self.reconnection_delay!r})"
            )
        if self.default_user_credentials is not None and not isinstance(
            self.default_user_credentials, UserCredentials
        ):
            raise ValueError("default_user_credentials must be a UserCredentials")
        if self.use_tls and self.validate_server and not self.target_host:
            raise ValueError("target_host is required when use_tls and validate_server are set")


def _seeds(value: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    return tuple((str(h), p) for h, p in value)


@frozen
class ClusterSettings:
    """
    How to find a cluster: C{gossip_seeds} (HTTP endpoints answering
    C{GET /gossip}), or C{cluster_dns} and C{gossip_port} (every address of
    the name, on that port; a manager's port works too).
    """

    gossip_seeds: tuple[tuple[str, int], ...] = field(default=(), converter=_seeds)
    cluster_dns: Optional[str] = None
    gossip_port: int = 2113
    gossip_timeout: float = field(default=1.0, validator=_positive("gossip_timeout"))
    max_discover_attempts: int = field(default=10, validator=_count("max_discover_attempts"))
    discover_delay: float = field(default=0.5, validator=_positive("discover_delay"))
    node_preference: NodePreference = NodePreference.LEADER

    def __attrs_post_init__(self) -> None:
        if not self.gossip_seeds and not self.cluster_dns:
            raise ValueError("gossip_seeds or cluster_dns must be given")
        if self.gossip_seeds and self.cluster_dns:
            raise ValueError("give gossip_seeds or cluster_dns, not both")
        for host, port in self.gossip_seeds:
            if not host:
                raise ValueError("gossip_seeds: a seed has an empty host")
            _check_port("gossip_seeds port", port)
        _check_port("gossip_port", self.gossip_port)
        if self.max_discover_attempts < 1:
            raise ValueError(
                f"max_discover_attempts must be at least 1, got {self.max_discover_attempts!r}"
            )
        if not isinstance(self.node_preference, NodePreference):
            raise ValueError(
                f"node_preference must be a NodePreference, got {self.node_preference!r}"
            )


@frozen
class SingleNode:
    """
    One node at a fixed TCP endpoint (no discovery).
    """

    host: str
    port: int = 1113

    def __attrs_post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        _check_port("port", self.port)


Target = Union[ClusterSettings, SingleNode]

_BOOL = {"true": True, "false": False}

_SETTING_KEYS = {
    "keepreconnecting": ("keep_reconnecting", "bool"),
    "maxreconnections": ("max_reconnections", "int"),
    "reconnectiondelay": ("reconnection_delay", "ms"),
    "operationtimeout": ("operation_timeout", "ms"),
    "maxretries": ("max_retries", "int"),
    "maxqueuesize": ("max_queue_size", "int"),
    "maxconcurrentitems": ("max_concurrent_items", "int"),
    "requiremaster": ("require_master", "bool"),
    "heartbeatinterval": ("heartbeat_interval", "ms"),
    "heartbeattimeout": ("heartbeat_timeout", "ms"),
    "connectionname": ("connection_name", "str"),
    "usesslconnection": ("use_tls", "bool"),
    "usetls": ("use_tls", "bool"),
    "targethost": ("target_host", "str"),
    "validateserver": ("validate_server", "bool"),
    "cafile": ("ca_file", "str"),
}
_CLUSTER_KEYS = {
    "gossiptimeout": ("gossip_timeout", "ms"),
    "maxdiscoverattempts": ("max_discover_attempts", "int"),
    "nodepreference": ("node_preference", "preference"),
    "gossipseeds": ("gossip_seeds", "seeds"),
}


def _convert(key: str, kind: str, text: str) -> object:
    if kind == "bool":
        if text.lower() not in _BOOL:
            raise ValueError(f"{key} must be true or false, got {text!r}")
        return _BOOL[text.lower()]
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {text!r}") from None
    if kind == "ms":
        try:
            return float(text) / 1000.0
        except ValueError:
            raise ValueError(f"{key} must be milliseconds, got {text!r}") from None
    if kind == "preference":
        names = {"master": "leader", "leader": "leader", "slave": "follower"}
        name = names.get(text.lower(), text.lower())
        try:
            return NodePreference(name)
        except ValueError:
            raise ValueError(f"{key} must be leader, follower or random, got {text!r}") from None
    if kind == "seeds":
        seeds = []
        for part in text.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{key} must be host:port,host:port, got {text!r}")
            seeds.append((host, int(port)))
        return seeds
    return text


def parse_connection_string(text: str) -> tuple[ConnectionSettings, Target]:
    """
    Parse C{tcp://user:pass@host:1113?maxRetries=5} (one node) or
    C{discover://user:pass@host:2113?gossipTimeout=500} (a cluster, the host
    being a DNS name or a seed; C{gossipSeeds=h:p,h:p} adds seeds).  Query
    keys are the node-eventstore-client ones, case-insensitive; times are
    milliseconds.

    @raise ValueError: a bad scheme, key or value (naming it).
    """
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "discover"):
        raise ValueError(f"connection string scheme must be tcp or discover, got {text!r}")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"connection string has a bad port: {text!r}") from None
    settings: dict[str, object] = {}
    cluster: dict[str, object] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        lowered = key.lower()
        if lowered in _SETTING_KEYS:
            name, kind = _SETTING_KEYS[lowered]
            settings[name] = _convert(key, kind, value)
        elif lowered in _CLUSTER_KEYS and parts.scheme == "discover":
            name, kind = _CLUSTER_KEYS[lowered]
            cluster[name] = _convert(key, kind, value)
        else:
            raise ValueError(f"unknown connection string setting {key!r}")
    if parts.username is not None:
        settings["default_user_credentials"] = UserCredentials(
            unquote(parts.username), unquote(parts.password or "")
        )
    connection_settings = ConnectionSettings(**settings)  # type: ignore[arg-type]
    target: Target
    if parts.scheme == "tcp":
        if not host:
            raise ValueError(f"connection string names no host: {text!r}")
        target = SingleNode(host, port or 1113)
    else:
        if "gossip_seeds" not in cluster:
            if not host:
                raise ValueError(f"connection string names no host: {text!r}")
            if _looks_like_ip(host):
                cluster["gossip_seeds"] = [(host, port or 2113)]
            else:
                cluster["cluster_dns"] = host
                cluster["gossip_port"] = port or 2113
        target = ClusterSettings(**cluster)  # type: ignore[arg-type]
    return connection_settings, target


def _looks_like_ip(host: str) -> bool:
    pieces = host.split(".")
    return (len(pieces) == 4 and all(p.isdigit() for p in pieces)) or ":" in host
