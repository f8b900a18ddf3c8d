# -*- test-case-name: estwisted.manager.test.test_service -*-
"""
Wiring of a manager node: L{make_manager_service} builds one
L{MultiService} with

  - the watchdog (L{WatchdogService}) when C{EnableWatchdog} is true;
  - the gossip loop and seed discovery (L{GossipService});
  - one HTTP listener on C{IntIp:IntHttpPort} and one on
    C{ExtIp:ExtHttpPort}, both serving L{ManagerResource}.

Start order: the listeners (a port that cannot be bound fails the start
before any node is started), gossip, the watchdog.  Stop order is the
reverse: the watchdog stops its nodes and waits for their processes to
end, then gossip stops and the listeners close.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from estwisted.cluster.gossip import Endpoint, GossipSettings
from estwisted.cluster.gossiphttp import ClusterSite
from estwisted.manager.config import ManagerConfig
from estwisted.manager.gossip import ManagerGossip, manager_member
from estwisted.manager.http import ManagerResource
from estwisted.manager.supervision import RestartPolicy
from estwisted.manager.watchdog import NodeRunner, WatchdogService, node_command
from estwisted.manager.watchdogfile import NodeSpec

__all__ = ["GossipService", "StartupError", "make_manager_service"]


class GossipService(Service):
    """
    Starts seed discovery and the gossip loop; stops them.
    """

    def __init__(self, gossip: ManagerGossip, discovery: Any, transport: Any) -> None:
        self.gossip = gossip
        self.discovery = discovery
        self.transport = transport

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.discovery is not None:
            self.discovery.start()
        self.gossip.start()

    def stopService(self) -> Optional[Deferred[None]]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self.discovery is not None:
            self.discovery.stop()
        self.gossip.stop()
        close = getattr(self.transport, "close", None)
        return close() if close is not None else None


def _listen(reactor: Any, ip: str, port: int, site: Any) -> StreamServerEndpointService:
    kind = TCP6ServerEndpoint if ":" in ip else TCP4ServerEndpoint
    service = StreamServerEndpointService(kind(reactor, port, interface=ip), site)
    # A port that cannot be bound fails the start instead of being logged.
    service._raiseSynchronously = True
    return service


class StartupError(Exception):
    """
    The manager cannot start (a certificate is unusable, plaintext on a
    public address); the message is one line.
    """


def make_manager_service(
    config: ManagerConfig,
    nodes: Sequence[NodeSpec],
    reactor: Any,
    transport: Any = None,
    discovery: Any = None,
    environ: Optional[Mapping[str, str]] = None,
) -> MultiService:
    """
    Build the manager's service tree.

    With C{CertificateFile} set (and not C{Insecure}) both HTTP ports speak
    TLS with the node certificate (mutual TLS on the internal one) and the
    manager gossips over HTTPS, with the CA and SAN checks of a database
    node (L{estwisted.tls.contexts}).  Without a certificate, plaintext is refused on
    a non-loopback address unless C{Insecure} is set, as on a node.

    @param nodes: the parsed watchdog file (empty when the watchdog is off).
    @param reactor: provides IReactorTime, IReactorTCP, IReactorProcess.
    @param transport: the gossip transport; default HTTP(S) through
        C{reactor}.
    @param discovery: the seed discovery; default from C{config}.
    @raise StartupError: one line.
    """
    from estwisted.tls.contexts import CertificateError, node_tls_from_config

    try:
        node_tls = node_tls_from_config(config, reactor)
    except CertificateError as e:
        raise StartupError(str(e)) from None
    use_tls = node_tls is not None and not config.insecure
    top = MultiService()
    log_dir = os.path.abspath(config.log)

    watchdog = WatchdogService([])
    if config.enable_watchdog:
        os.makedirs(log_dir, exist_ok=True)
        policy = RestartPolicy(
            count=config.watchdog_failure_count,
            window=float(config.watchdog_failure_time_window),
            grace=config.watchdog_stop_grace_ms / 1000,
        )
        watchdog.runners = [
            NodeRunner(
                spec,
                # The pid is read at each start: twistd daemonizes (forks)
                # after this tree is built.
                lambda spec=spec: node_command(spec, log_dir, os.getpid()),  # type: ignore[misc]
                os.path.join(log_dir, f"node-{spec.index}.log"),
                policy,
                reactor,
                environ=environ,
            )
            for spec in nodes
        ]

    if transport is None:
        from estwisted.cluster.gossiphttp import HttpPeerTransport

        transport = HttpPeerTransport.create(
            reactor,
            config.gossip_timeout_ms / 1000,
            https_policy=node_tls.https_policy() if use_tls and node_tls is not None else None,
        )
    settings = GossipSettings.from_options(
        gossip_interval_ms=config.gossip_interval_ms,
        gossip_timeout_ms=config.gossip_timeout_ms,
        gossip_allowed_difference_ms=config.gossip_allowed_difference_ms,
        dead_member_removal_period_sec=config.dead_member_removal_period_sec,
    )
    own = manager_member(
        uuid.uuid4(),
        Endpoint(config.advertised_int_ip, config.int_http_port),
        Endpoint(config.advertised_ext_ip, config.ext_http_port),
        reactor.seconds(),
    )
    gossip = ManagerGossip(own, (), settings, reactor, transport)
    found: list[Endpoint] = []

    def add_seeds(seeds: list[Endpoint]) -> None:
        for seed in seeds:
            if seed not in found:
                found.append(seed)
        gossip.set_seeds(found)

    if discovery is None:
        from estwisted.cluster.discovery import SeedDiscovery

        discovery = SeedDiscovery.from_config(config, reactor, add_seeds)

    resource = ManagerResource(gossip, watchdog.status)
    site = ClusterSite(resource)  # type: ignore[no-untyped-call]
    int_factory: Any = site
    ext_factory: Any = site
    if use_tls and node_tls is not None:
        int_factory = node_tls.server_factory(site, "internal HTTP", True, True)
        ext_factory = node_tls.server_factory(site, "external HTTP", False, True)
    _listen(reactor, config.int_ip, config.int_http_port, int_factory).setServiceParent(top)
    _listen(reactor, config.ext_ip, config.ext_http_port, ext_factory).setServiceParent(top)
    GossipService(gossip, discovery, transport).setServiceParent(top)  # type: ignore[no-untyped-call]
    watchdog.setServiceParent(top)  # type: ignore[no-untyped-call]
    top.watchdog = watchdog  # type: ignore[attr-defined]
    top.gossip = gossip  # type: ignore[attr-defined]
    return top
