# -*- test-case-name: estwisted.http.test.test_api -*-
"""
What the HTTP API tells about the node and the hooks it calls
(L{NodeInfo}).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Optional

import attrs
from attrs import field, frozen

from estwisted.cluster.leadership import Leadership
from estwisted.http.parsing import DEFAULT_MAX_BODY

# -- node information ------------------------------------------------------------


@frozen
class NodeInfo:
    """
    What the HTTP API tells about the node (C{/gossip}, C{/info}) and the
    hooks it calls (C{/admin/*}).

    @ivar shutdown: called by C{POST /admin/shutdown}.
    @ivar scavenge: called by C{POST /admin/scavenge}; may return a Deferred.
    @ivar reload_certificates: called by C{POST /admin/reloadcertificates};
        re-reads the node's certificate files and returns an object with
        C{ok} and C{message} (L{estwisted.tls.contexts.ReloadOutcome}); C{None} when
        the node has no TLS.
    @ivar first_level_auth: the 5.0.2+ route authorization levels
        (C{DisableFirstLevelHttpAuthorization} turns them off).
    @ivar leadership: in a cluster, the node's published
        L{estwisted.cluster.leadership.Leadership} (its view gives the state and
        the leader's external HTTP endpoint); C{None} means a single node,
        always C{state}.
    @ivar enable_trusted_auth: honour C{ES-TrustedAuth} (C{EnableTrustedAuth}).
    @ivar disable_http_caching: no response is cacheable
        (C{DisableHttpCaching}).
    @ivar gossip_view: in a cluster, returns the C{/gossip} document
        (C{{"members", "serverIp", "serverPort"}}); C{None} answers the
        single-node view.
    """

    ext_ip: str = "127.0.0.1"
    int_ip: str = "127.0.0.1"
    ext_tcp_port: int = 1113
    int_tcp_port: int = 1112
    ext_http_port: int = 2113
    int_http_port: int = 2112
    ext_secure_tcp_port: int = 0
    int_secure_tcp_port: int = 0
    node_priority: int = 0
    instance_id: str = field(factory=lambda: str(uuid.uuid4()))
    state: str = "Master"
    projections_mode: str = "None"
    shutdown: Optional[Callable[[], Any]] = None
    scavenge: Optional[Callable[[], Any]] = None
    reload_certificates: Optional[Callable[[], Any]] = None
    first_level_auth: bool = True
    enable_trusted_auth: bool = False
    disable_http_caching: bool = False
    max_body_size: int = DEFAULT_MAX_BODY
    advertise_host: Optional[str] = None
    advertise_port: Optional[int] = None
    options: tuple[tuple[str, str], ...] = ()
    leadership: Optional[Leadership] = None
    gossip_view: Optional[Callable[[], dict[str, Any]]] = None
    #: The L{estwisted.projections.SystemProjectionsService} when
    #: C{RunProjections} is not None (the C{/projection(s)} routes).
    projections: Any = None

    @classmethod
    def from_config(
        cls, config: Any, shutdown: Optional[Callable[[], Any]] = None, **extra: Any
    ) -> NodeInfo:
        """
        Build from a node configuration object, reading the attributes it
        has (missing ones keep their defaults).
        """
        names = {
            "ext_ip": "advertised_ext_ip",
            "int_ip": "advertised_int_ip",
            "ext_tcp_port": "advertised_ext_tcp_port",
            "int_tcp_port": "advertised_int_tcp_port",
            "ext_http_port": "advertised_ext_http_port",
            "int_http_port": "advertised_int_http_port",
            "ext_secure_tcp_port": "advertised_ext_secure_tcp_port",
            "int_secure_tcp_port": "advertised_int_secure_tcp_port",
            "node_priority": "node_priority",
            "enable_trusted_auth": "enable_trusted_auth",
            "disable_http_caching": "disable_http_caching",
            "advertise_host": "ext_ip_advertise_as",
            "advertise_port": "ext_http_port_advertise_as",
        }
        kwargs: dict[str, Any] = {}
        for ours, theirs in names.items():
            value = getattr(config, theirs, None)
            if value is None:
                value = getattr(config, theirs.replace("advertised_", ""), None)
            if value is not None:
                kwargs[ours] = value
        if not kwargs.get("advertise_host"):
            kwargs.pop("advertise_host", None)
        if not kwargs.get("advertise_port"):
            kwargs.pop("advertise_port", None)
        disable = getattr(config, "disable_first_level_http_authorization", None)
        if disable is not None:
            kwargs["first_level_auth"] = not disable
        kwargs["shutdown"] = shutdown
        if attrs.has(type(config)):
            kwargs["options"] = tuple(
                (f.name, str(getattr(config, f.name)))
                for f in attrs.fields(type(config))
                if not f.name.startswith("_") and f.name != "sources"
            )
        kwargs.update(extra)
        return cls(**kwargs)


