# -*- test-case-name: estwisted.cluster.test.test_controller -*-
"""
Wiring the cluster side of a node: the pure node machine, its Twisted
controller, the HTTP peer transport, seed/DNS discovery and the gossip and
election resources (L{make_cluster_service}).  It sits above both
L{estwisted.cluster.controller} and L{estwisted.cluster.gossiphttp}, so
that neither imports the other's counterpart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Optional, Protocol

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from estwisted.cluster.controller import (
    ClusterController,
    ClusterSettings,
    NodeMachine,
    StateChanged,
    own_member_from_config,
)
from estwisted.cluster.discovery import SeedDiscovery
from estwisted.cluster.gossiphttp import ClusterResource, ClusterSite, HttpPeerTransport
from estwisted.cluster.leadership import Leadership
from estwisted.node.config import NodeConfig
from estwisted.tls.contexts import NodeTLS


class PositionSource(Protocol):
    """
    What the cluster reads of the store: the positions that go into gossip
    and decide elections (L{estwisted.core.streams.StreamStore} provides
    them).
    """

    @property
    def last_commit_position(self) -> int:
        """
        The log position of the last committed event.
        """

    @property
    def writer_position(self) -> int:
        """
        The log position the next write goes to.
        """


@frozen
class ClusterWiring:
    """
    What L{make_cluster_service} builds.

    @ivar service: start it with the node (after storage is open), stop it
        before storage closes.
    @ivar external_root: the resource to serve on the external HTTP port.
    @ivar internal_root: the resource to serve on the internal HTTP port.
    @ivar external_site: a C{Site} serving C{external_root} (no access-log
        lines for gossip and elections).
    @ivar internal_site: the same for C{internal_root}.
    """

    service: Service
    controller: ClusterController
    external_root: ClusterResource
    internal_root: ClusterResource
    external_site: ClusterSite
    internal_site: ClusterSite


def make_cluster_service(
    config: NodeConfig,
    reactor: IReactorTime,
    store: PositionSource,
    http_root: IResource,
    tls: Optional[NodeTLS] = None,
    instance_id: Optional[uuid.UUID] = None,
    on_state: Optional[Callable[[StateChanged], None]] = None,
    leadership: Optional[Leadership] = None,
) -> ClusterWiring:
    """
    Build the cluster machinery of a node with C{ClusterSize > 1}.

    @param config: the node's configuration.
    @param reactor: the node's reactor: its clock, and (through the gossip
        HTTP client and DNS discovery) its TCP, UDP and name resolution.
    @param store: the store's positions (they go into gossip and decide
        elections).
    @param http_root: the HTTP API root resource; every path but
        C{/gossip} and C{/elections/*} is delegated to it.
    @param tls: the node's TLS state, if any: peers are then
        reached over HTTPS with the node certificate.
    @param on_state: called with every L{StateChanged} (for the log).
    @param leadership: where the node's L{LeadershipView} is published (the
        edges built before the cluster read it); a new one if C{None}.
    """
    settings = ClusterSettings.from_config(config)
    own = own_member_from_config(config, instance_id)
    machine = NodeMachine.create(own, (), settings, reactor.seconds())
    use_tls = tls is not None and not config.insecure
    transport = HttpPeerTransport.create(
        reactor,
        timeout=settings.gossip.timeout,
        https_policy=tls.https_policy() if use_tls and tls is not None else None,
    )

    def positions() -> tuple[int, int]:
        return store.last_commit_position, store.writer_position

    controller = ClusterController(machine, transport, reactor, positions, on_state, leadership)
    discovery = SeedDiscovery.from_config(config, reactor, controller.add_seeds)
    service = _ClusterService(controller, discovery, transport)
    external = ClusterResource(
        http_root, controller, internal=False, gossip=config.gossip_on_ext
    )
    internal = ClusterResource(http_root, controller, internal=True)
    return ClusterWiring(
        service, controller, external, internal, ClusterSite(external), ClusterSite(internal)  # type: ignore[no-untyped-call]
    )


class _ClusterService(Service):
    """
    Starts discovery and the controller; stops them and closes the
    transport's connections.
    """

    def __init__(
        self, controller: ClusterController, discovery: SeedDiscovery, transport: HttpPeerTransport
    ) -> None:
        self.controller = controller
        self.discovery = discovery
        self.transport = transport

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.controller.startService()
        self.discovery.start()

    async def _stop(self) -> None:
        self.discovery.stop()
        await self.controller.stopService()
        await self.transport.close()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._stop())


__all__ = ["ClusterWiring", "PositionSource", "make_cluster_service"]
