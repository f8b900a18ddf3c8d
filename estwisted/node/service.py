# -*- test-case-name: estwisted.test.test_service -*-
"""
Wiring: one function builds the node's service tree from a validated
L{NodeConfig}.

Start order: open storage (recovering the log and loading or rebuilding the
index), build the stream store, default users, subscriptions, then listen on
every endpoint, logging one line per endpoint.  Stop order is the reverse:
stop listening (ports released), drop subscriptions, write persistent
subscription checkpoints, flush and close storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.logger import Logger

from estwisted.core.errors import StorageError
from estwisted.core.groupcommit import ThreadFlusher
from estwisted.core.streams import StreamStore


class StartupError(Exception):
    """
    The node cannot start; the message is the one line to show.
    """


class NodeService(MultiService):
    """
    A single node: storage, core, subscriptions and listeners.

    @ivar store: the L{StreamStore}, set once the service started.
    """

    _log = Logger()

    def __init__(self, config: Any, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.reactor = reactor
        self.store: Optional[StreamStore] = None
        self.hub: Any = None
        self.persistent: Any = None
        #: The L{estwisted.projections.SystemProjectionsService}, when run.
        self.projections: Any = None
        self._close_storage: Optional[Callable[[], None]] = None
        self._ports: list[IListeningPort] = []
        self.listening: Deferred[None] = Deferred()
        #: The node's L{estwisted.tls.contexts.NodeTLS} when a certificate is configured;
        #: C{tls.reload()} re-reads the certificate files.
        self.tls: Any = None
        #: The L{estwisted.cluster.wiring.ClusterWiring} when C{ClusterSize > 1}.
        self.cluster: Any = None
        #: The L{estwisted.web.metrics.NodeMetrics} served at C{/metrics}.
        self.metrics: Any = None

    # -- start -------------------------------------------------------------

    def prepare(self) -> None:
        """
        Load the certificates and open the database, before anything
        listens.  C{twistd} calls this through C{makeService}, so a node that
        cannot start exits non-zero with one line; L{startService} calls it
        too (a no-op the second time).

        @raise StartupError: a certificate or the database is unusable.
        """
        if self.store is not None:
            return
        from estwisted.tls.contexts import CertificateError, node_tls_from_config

        try:
            self.tls = node_tls_from_config(self.config, self.reactor)
        except CertificateError as e:
            raise StartupError(str(e)) from None
        where = "memory" if self.config.mem_db else self.config.db
        try:
            self._open_core()
        except StorageError as e:
            # Expected (locked, unreadable, damaged): the reason says it all.
            raise StartupError(f"cannot open the database in {where}: {e}") from None
        except Exception as e:
            self._log.failure("The node could not open its database in {where}", where=where)
            raise StartupError(f"cannot open the database in {where}: {e}") from None

    def startService(self) -> None:
        from estwisted.tls.contexts import install_reload_signal

        try:
            self.prepare()
        except StartupError as e:
            self._log.error("{reason}; stopping.", reason=str(e))
            self._stop_reactor()
            return
        if self.tls is not None:
            self.reactor.addSystemEventTrigger(
                "after", "shutdown", install_reload_signal(self.reactor, self.tls.reload)
            )
        super().startService()  # type: ignore[no-untyped-call]
        listeners = self._listeners()

        def listen(_: object) -> Deferred[Any]:
            listens = [
                self._listen(name, host, port, factory)
                for name, host, port, factory in listeners
            ]
            return DeferredList(listens, fireOnOneErrback=True, consumeErrors=True)

        # A single node listens once its default users are durable (their
        # write is a group commit, flushed off the reactor thread): a client
        # arriving at once is never refused as unknown.  A cluster node's
        # users come from the leader, so it does not wait for them.
        ready = self._users_ready if self.config.cluster_size <= 1 else succeed(None)
        d = ready.addCallback(listen)
        d.addCallback(lambda _: self.listening.callback(None))
        d.addErrback(self._listen_failed)

    def _open_core(self) -> None:
        from estwisted.storage.open import index_saver, open_storage
        from estwisted.subscriptions.persistent import PersistentSubscriptions
        from estwisted.subscriptions.volatile import SubscriptionHub

        config = self.config
        log, index, close = open_storage(
            path=None if config.mem_db else config.db,
            mem_db=config.mem_db,
            chunk_size=config.chunk_size,
        )
        self._close_storage = close
        #: The L{IEventLog} (replication reads and appends it raw).
        self.log = log
        if not config.mem_db:
            # Save the index now and then so a restart after a crash only
            # indexes a short tail of the log.
            index_saver(close, self.reactor).setServiceParent(self)
        self.store = StreamStore(
            log,
            index,
            self.reactor,
            recent_event_ids=config.idempotency_window,
            flusher=None if config.mem_db else ThreadFlusher(self.reactor),
        )
        self.hub = SubscriptionHub(self.store)
        self.persistent = PersistentSubscriptions(self.store, self.reactor)
        self._watch_metrics(log, index)
        users = self.store.users.ensure_default_users()
        users.addErrback(lambda f: self._log.failure("Could not create default users", f))
        #: Fires once the default users exist (or their creation failed, logged).
        self._users_ready: Deferred[Any] = users
        self.persistent.start().addErrback(
            lambda f: self._log.failure("Could not load persistent subscriptions", f)
        )
        self._start_projections()

    def _start_projections(self) -> None:
        """
        The standard system projections (issue 16), with C{RunProjections}
        System or All and C{StartStandardProjections}.
        """
        config = self.config
        if str(config.run_projections).lower() == "none":
            return
        from estwisted.projections import SystemProjectionsService

        # StartStandardProjections is the default for projections with no
        # persisted definition yet; off, they exist stopped and can be
        # enabled over HTTP (recorded in $projections-{name}).
        self.projections = SystemProjectionsService(
            self.store, self.reactor, enabled=bool(config.start_standard_projections)
        )
        self.projections.setServiceParent(self)
        if str(config.run_projections).lower() == "all":
            # user (JavaScript) projections, beside the standard ones
            from estwisted.projections import UserProjectionsService

            system = self.projections
            self.projections.user = UserProjectionsService(
                self.store, self.reactor, reserved=lambda name: name in system.runners
            )
            self.projections.user.setServiceParent(self)

    def _listeners(self) -> list[tuple[str, str, int, IProtocolFactory]]:
        from estwisted.cluster.gossip import VNodeState
        from estwisted.cluster.leadership import Leadership, LeadershipView
        from estwisted.http.api import HttpApi
        from estwisted.http.info import NodeInfo
        from estwisted.tcp.server import TcpClientFactory
        from estwisted.tls.contexts import tls_listeners

        c = self.config
        # Who leads: published by the cluster's node role machine (built
        # below), read by every edge.  A single node always leads.
        leadership = None
        if c.cluster_size > 1:
            leadership = Leadership(LeadershipView(VNodeState.Initializing))
        tcp = TcpClientFactory(
            self.store,
            self.hub,
            self.persistent,
            self.reactor,
            heartbeat_interval=c.ext_tcp_heartbeat_interval / 1000.0,
            heartbeat_timeout=c.ext_tcp_heartbeat_timeout / 1000.0,
            leadership=leadership,
        )
        int_tcp = TcpClientFactory(
            self.store,
            self.hub,
            self.persistent,
            self.reactor,
            heartbeat_interval=c.int_tcp_heartbeat_interval / 1000.0,
            heartbeat_timeout=c.int_tcp_heartbeat_timeout / 1000.0,
            leadership=leadership,
        )
        extra: dict[str, Any] = {}
        if leadership is not None:
            # Gossip comes from the cluster controller (built below; looked
            # up on each request).
            extra = {
                "leadership": leadership,
                "gossip_view": lambda: self.cluster.controller.gossip_document(),
            }
        if self.tls is not None:
            # POST /admin/reloadcertificates does what SIGHUP does.
            extra["reload_certificates"] = self.tls.reload
        if self.projections is not None:
            extra["projections"] = self.projections
            extra["projections_mode"] = str(c.run_projections).capitalize()
        info = NodeInfo.from_config(c, shutdown=self._shutdown, **extra)
        # The API's own Site refuses oversized bodies before buffering them
        # and writes no access-log line per request.
        api = HttpApi(self.store, self.hub, self.persistent, self.reactor, info)
        self._serve_web(api)
        site = api.site()
        int_site = site
        if leadership is not None:
            # Gossip, elections and node states (estwisted.cluster.controller).
            from estwisted.cluster.wiring import make_cluster_service

            # HTTP writes to a follower are answered by the leader
            # (estwisted.http.forwarding.LeaderForwardingResource).
            from estwisted.http.forwarding import LeaderForwardingResource, leader_http_of

            forward_tls = self.tls is not None and not c.insecure
            api_root = LeaderForwardingResource(
                site.resource,
                leader_http_of(leadership),
                self.reactor,
                https_policy=self.tls.https_policy() if forward_tls and self.tls else None,
            )
            wiring = make_cluster_service(
                c, self.reactor, self.store, api_root, self.tls, leadership=leadership
            )
            self.cluster = wiring
            # Quorum replication (estwisted.replication): replicas share
            # the internal TCP port with clients.
            from estwisted.replication.node import attach_replication

            int_tcp = attach_replication(  # type: ignore[assignment]
                c, self.reactor, self.store, self.log, wiring, int_tcp,
                persistent=self.persistent, tls=self.tls,
            )
            wiring.service.setServiceParent(self)
            # Same Site settings as the API's own (body limit, no access log).
            from estwisted.http.site import QuietSite, limited_request_factory

            def serve(root: Any) -> Any:
                quiet = QuietSite(  # type: ignore[no-untyped-call]
                    root,
                    requestFactory=limited_request_factory(info.max_body_size),
                    parsePOSTFormSubmission=False,
                )
                quiet.displayTracebacks = False
                return quiet

            site, int_site = serve(wiring.external_root), serve(wiring.internal_root)
        if self.metrics is not None:
            self.metrics.sources.tcp_factories = {"external": tcp, "internal": int_tcp}
        # The gRPC API (estwisted.grpc) shares the external HTTP port.
        site = self._grpc_factory(site, leadership)
        return tls_listeners(c, self.tls, self.reactor, tcp, int_tcp, site, int_site)

    def _grpc_factory(self, site: Any, leadership: Any) -> Any:
        """
        Serve the EventStoreDB 20+ gRPC API beside C{site} on its port.
        """
        from estwisted.grpc.protocol import GrpcSniffingFactory
        from estwisted.grpc.services import INSECURE_PRINCIPAL, GrpcServer, node_members

        def refusal() -> Any:
            return None if leadership is None else leadership.view.refusal()

        members = node_members(self.config, self.reactor, lambda: self.cluster)
        anonymous = INSECURE_PRINCIPAL if self.config.insecure else None
        server = GrpcServer(
            self.store, self.hub, self.reactor, members, refusal, anonymous, self.persistent,
            self._shutdown_over_grpc,
        )
        return GrpcSniffingFactory(server, site, self.reactor)

    def _watch_metrics(self, log: Any, index: Any) -> None:
        """
        Build the node's metrics (L{estwisted.web.metrics}) over its open parts.
        """
        from estwisted.web.metrics import NodeMetrics, NodeSources

        sources = NodeSources(
            store=self.store,
            log=log,
            index=index,
            db_path=None if self.config.mem_db else self.config.db,
            hub=self.hub,
            persistent=self.persistent,
        )
        self.metrics = NodeMetrics(sources)
        self.metrics.watch_store(self.store)
        self.metrics.watch_gc()

    def _serve_web(self, api: Any) -> None:
        """
        Serve the admin UI and C{/metrics} from C{api}'s root (L{estwisted.web}).
        """
        from estwisted.web import WebResource

        api.web = WebResource(self.metrics)
        if self.metrics is not None:
            api.metrics = self.metrics
            self.metrics.sources.http_api = api

    def _listen(
        self, name: str, host: str, port: int, factory: IProtocolFactory
    ) -> Deferred[IListeningPort]:
        endpoint = TCP4ServerEndpoint(self.reactor, port, interface=host)
        d = endpoint.listen(factory)

        def listening(p: IListeningPort) -> IListeningPort:
            self._ports.append(p)
            address = p.getHost()
            self._log.info(
                "Listening for {name} on {host}:{port}",
                name=name,
                host=address.host,  # type: ignore[attr-defined]
                port=address.port,  # type: ignore[attr-defined]
            )
            return p

        def failed(f: Any) -> Any:
            self._log.error(
                "Cannot listen for {name} on {host}:{port}: {reason}",
                name=name,
                host=host,
                port=port,
                reason=f.getErrorMessage(),
            )
            return f

        return d.addCallbacks(listening, failed)  # type: ignore[no-any-return]

    def _listen_failed(self, failure: Any) -> None:
        self.listening.errback(failure)
        self._stop_reactor()

    def _stop_reactor(self) -> None:
        reactor: IReactorCore = self.reactor
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    def _shutdown(self) -> None:
        self._log.info("Shutdown requested over HTTP.")
        self._stop_reactor()

    def _shutdown_over_grpc(self) -> None:
        self._log.info("Shutdown requested over gRPC.")
        self._stop_reactor()

    # -- stop --------------------------------------------------------------

    async def _stop(self) -> None:
        ports, self._ports = self._ports, []
        for p in ports:
            await maybeDeferred(p.stopListening)
        await maybeDeferred(super().stopService)
        if self.hub is not None:
            self.hub.close()
        if self.persistent is not None:
            await self.persistent.stop()
        if self.store is not None:
            self.store.flush_now()
        if self.metrics is not None:
            self.metrics.close()
        if self._close_storage is not None:
            self._close_storage()
            self._close_storage = None
        self._log.info("Stopped cleanly; checkpoints flushed.")

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())


def make_node_service(config: Any, reactor: Any) -> NodeService:
    """
    Build the service tree for one node.
    """
    return NodeService(config, reactor)
