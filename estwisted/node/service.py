# -*- test-case-name: estwisted.node.test.test_service -*-
"""
Wiring: L{make_node_service} builds a node's whole service tree up front
from a validated L{NodeConfig}.

It loads the certificates and opens the database first (so that a node
that cannot start says why in one line before anything listens), then
builds every part over them and hangs one service per lifecycle on a
L{NodeService}.  In start order (a L{NodeService} stops them one at a time
in the reverse order, each once the one after it has stopped)::

    storage         StorageService: flushes the store, closes the files
    index saver     TimerService saving the stream index (on disk only)
    certificates    CertificateReloadService: SIGHUP re-reads them (TLS only)
    core            CoreService: persistent subscriptions (default users
                    written at build time)
    projections     the system projections (RunProjections System or All)
    cluster         gossip timer, elections, peer links, replication
    listeners       ListenersService: one ListenerService per endpoint
                    description; a single node listens once its default
                    users are durable

Nothing here decides anything: the parts are built by their packages and
only connected here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Optional, cast

from attrs import frozen
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFromThreads,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from estwisted.core.errors import StorageError
from estwisted.core.groupcommit import ThreadFlusher
from estwisted.core.streams import StreamStore
from estwisted.core.users import UserManager
from estwisted.node.config import NodeConfig

if TYPE_CHECKING:
    from twisted.web.resource import IResource

    from estwisted.cluster.leadership import Leadership
    from estwisted.cluster.wiring import ClusterWiring
    from estwisted.core.interfaces import IEventLog
    from estwisted.projections import SystemProjectionsService
    from estwisted.replication.node import NodeReplication
    from estwisted.storage.index import StreamIndex
    from estwisted.storage.open import StorageCloser
    from estwisted.subscriptions.persistent import PersistentSubscriptions
    from estwisted.subscriptions.volatile import SubscriptionHub
    from estwisted.tls.contexts import NodeTLS
    from estwisted.web.metrics import NodeMetrics


class INodeReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorThreads,
    IReactorFromThreads,
    IReactorPluggableNameResolver,
):
    """
    What a node needs of its reactor.
    """


class StartupError(Exception):
    """
    The node cannot start; the message is the one line to show.
    """


def endpoint_description(host: str, port: int) -> str:
    """
    The server endpoint description of a TCP listener on C{host}:C{port}
    (an IPv6 address's colons quoted).
    """
    return f"tcp:{port}:interface={quoteStringArgument(host)}"


@frozen
class Listener:
    """
    One listening endpoint of a node.

    @ivar name: what it serves, as logged (C{"external HTTP (TLS)"}).
    @ivar host: the interface address.
    @ivar port: the TCP port (0: any free one).
    @ivar factory: what answers its connections.
    """

    name: str
    host: str
    port: int
    factory: IProtocolFactory

    @property
    def description(self) -> str:
        """
        Its server endpoint description (L{serverFromString}).
        """
        return endpoint_description(self.host, self.port)


class SequentialMultiService(MultiService):
    """
    A L{MultiService} that stops its children one at a time, last first,
    each once the one started after it has stopped: ports are released
    before the subscriptions close, and storage closes last.
    """

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            await maybeDeferred(child.stopService)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())


class ListenerService(Service):
    """
    Listens on one endpoint while running: one log line when it listens,
    one when it cannot.

    @ivar listening: fires with the port once it listens, or fails with
        the reason it cannot.
    """

    _log = Logger()

    def __init__(self, listener: Listener, endpoint: IStreamServerEndpoint) -> None:
        self.listener = listener
        self.endpoint = endpoint
        self._port: Optional[Deferred[IListeningPort]] = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        port = self.endpoint.listen(self.listener.factory)
        port.addCallbacks(self._listened, self._failed)
        self._port = port

    def _listened(self, port: IListeningPort) -> IListeningPort:
        address = port.getHost()
        self._log.info(
            "Listening for {name} on {host}:{port}",
            name=self.listener.name,
            host=address.host,  # type: ignore[attr-defined]
            port=address.port,  # type: ignore[attr-defined]
        )
        self.listening.callback(port)
        return port

    def _failed(self, reason: Failure) -> None:
        self._log.error(
            "Cannot listen for {name} on {host}:{port}: {reason}",
            name=self.listener.name,
            host=self.listener.host,
            port=self.listener.port,
            reason=reason.getErrorMessage(),
        )
        self.listening.errback(reason)

    async def _stop(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        port.cancel()
        listening = await port
        if listening is not None:
            await maybeDeferred(listening.stopListening)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._stop())


class ListenersService(SequentialMultiService):
    """
    Starts its L{ListenerService} children once C{ready()} fires; when one
    of them cannot listen, C{on_failure} is called (the node stops).
    """

    def __init__(
        self,
        ready: Callable[[], Deferred[object]],
        on_failure: Callable[[Failure], None],
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._ready = ready
        self._on_failure = on_failure
        #: C{None} until every child listens or one cannot; then
        #: C{(True, None)} or C{(False, reason)}.
        self._outcome: Optional[tuple[bool, Optional[Failure]]] = None
        self._waiting: list[Deferred[None]] = []

    def when_listening(self) -> Deferred[None]:
        """
        A Deferred that fires once every child listens, or fails with the
        reason the first one that cannot gave.
        """
        d: Deferred[None] = Deferred()
        if self._outcome is None:
            self._waiting.append(d)
        else:
            self._tell(d)
        return d

    def _tell(self, d: Deferred[None]) -> None:
        assert self._outcome is not None
        ok, reason = self._outcome
        if ok:
            d.callback(None)
        else:
            d.errback(reason)

    def _settle(self, ok: bool, reason: Optional[Failure] = None) -> None:
        self._outcome = (ok, reason)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._tell(d)
        if reason is not None:
            self._on_failure(reason)

    def privilegedStartService(self) -> None:
        # Nothing listens before startService: readiness comes first.
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        self._ready().addBoth(self._start_children)

    def _start_children(self, _: object) -> None:
        if not self.running:
            return
        children = [cast(ListenerService, child) for child in self]
        for child in children:
            child.startService()
        every = DeferredList(
            [child.listening for child in children], fireOnOneErrback=True, consumeErrors=True
        )

        def failed(f: Failure) -> None:
            self._settle(False, f.value.subFailure)  # type: ignore[union-attr]

        every.addCallbacks(lambda _: self._settle(True), failed)

    async def _stop_children(self) -> None:
        # Children that never started (stopped before ready) have nothing
        # to release.
        for child in reversed(list(self)):
            if child.running:
                await maybeDeferred(child.stopService)


class StorageService(Service):
    """
    Owns the open database: stopping it flushes the store's pending
    commits, then closes the log and index files.
    """

    _log = Logger()

    def __init__(
        self, store: StreamStore, closer: StorageCloser, metrics: Optional[NodeMetrics]
    ) -> None:
        self.store = store
        self.closer = closer
        self.metrics = metrics

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.store.flush_now()
        if self.metrics is not None:
            self.metrics.close()
        self.closer()
        self._log.info("Stopped cleanly; checkpoints flushed.")


class CertificateReloadService(Service):
    """
    While running, SIGHUP re-reads the node's certificate files.
    """

    def __init__(self, reactor: INodeReactor, tls: NodeTLS) -> None:
        self.reactor = reactor
        self.tls = tls
        self._uninstall: Optional[Callable[[], None]] = None

    def startService(self) -> None:
        from estwisted.tls.contexts import install_reload_signal

        super().startService()  # type: ignore[no-untyped-call]
        self._uninstall = install_reload_signal(self.reactor, self.tls.reload)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._uninstall is not None:
            self._uninstall()
            self._uninstall = None


class CoreService(Service):
    """
    Starts the persistent subscription groups and stops the subscriptions
    (checkpoints written).

    @ivar users: fires once the default users are durable (or their
        creation failed, which is logged).
    """

    _log = Logger()

    def __init__(
        self,
        hub: SubscriptionHub,
        persistent: PersistentSubscriptions,
        users: Deferred[None],
    ) -> None:
        self.hub = hub
        self.persistent = persistent
        users.addErrback(lambda f: self._log.failure("Could not create default users", f))
        self._users = users

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.persistent.start().addErrback(
            lambda f: self._log.failure("Could not load persistent subscriptions", f)
        )

    def users_ready(self) -> Deferred[object]:
        """
        A Deferred firing once the default users are durable.
        """
        done: Deferred[object] = Deferred()

        def passed(result: object) -> object:
            done.callback(None)
            return result

        self._users.addBoth(passed)
        return done

    async def _stop(self) -> None:
        self.hub.close()
        await self.persistent.stop()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._stop())


class NodeService(SequentialMultiService):
    """
    A node: the tree L{make_node_service} built (see the module docstring),
    and its parts for whoever needs to reach them (tests, tools).

    """

    def __init__(
        self,
        config: NodeConfig,
        reactor: INodeReactor,
        store: StreamStore,
        hub: SubscriptionHub,
        persistent: PersistentSubscriptions,
        metrics: Optional[NodeMetrics],
        tls: Optional[NodeTLS],
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.reactor = reactor
        self.store = store
        self.hub = hub
        self.persistent = persistent
        self.metrics = metrics
        self.tls = tls
        self.projections: Optional[SystemProjectionsService] = None
        self.cluster: Optional[ClusterWiring] = None
        #: The L{estwisted.replication.node.NodeReplication} of a cluster node.
        self.replication: Optional[NodeReplication] = None

    def when_listening(self) -> Deferred[None]:
        """
        A Deferred that fires once every endpoint listens, or fails (and
        the reactor stops) when one cannot.
        """
        listeners = cast(ListenersService, self.getServiceNamed("listeners"))  # type: ignore[no-untyped-call]
        return listeners.when_listening()

    def add(self, name: str, service: IService) -> IService:
        """
        Name C{service} and hang it on this node, after those added before.
        """
        service.setName(name)
        service.setServiceParent(self)
        return service


def stop_reactor(reactor: IReactorCore) -> None:
    """
    Stop C{reactor} now, or as soon as it runs.
    """
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


_log = Logger()


def _shutdown_by(reactor: IReactorCore, over: str) -> Callable[[], None]:
    def shutdown() -> None:
        _log.info("Shutdown requested over {over}.", over=over)
        stop_reactor(reactor)

    return shutdown


def _load_tls(config: NodeConfig, reactor: INodeReactor) -> Optional[NodeTLS]:
    from estwisted.tls.contexts import CertificateError, node_tls_from_config

    try:
        return node_tls_from_config(config, reactor)
    except CertificateError as e:
        raise StartupError(str(e)) from None


def _open_storage(config: NodeConfig) -> tuple[IEventLog, StreamIndex, StorageCloser]:
    from estwisted.storage.open import open_storage

    where = "memory" if config.mem_db else config.db
    try:
        return open_storage(
            path=None if config.mem_db else config.db,
            mem_db=config.mem_db,
            chunk_size=config.chunk_size,
            max_truncation=config.max_truncation,
        )
    except StorageError as e:
        # Expected (locked, unreadable, damaged): the reason says it all.
        raise StartupError(f"cannot open the database in {where}: {e}") from None
    except Exception as e:
        _log.failure("The node could not open its database in {where}", where=where)
        raise StartupError(f"cannot open the database in {where}: {e}") from None


def make_node_service(config: NodeConfig, reactor: INodeReactor) -> NodeService:
    """
    Build the service tree of one node (see the module docstring); nothing
    runs or listens until it is started.

    @raise StartupError: a certificate or the database is unusable.
    """
    from estwisted.cluster.gossip import VNodeState
    from estwisted.cluster.leadership import Leadership, LeadershipView
    from estwisted.http.api import HttpApi
    from estwisted.http.info import NodeInfo
    from estwisted.http.prefixes import prefixed_sites
    from estwisted.storage.open import index_saver
    from estwisted.subscriptions.persistent import PersistentSubscriptions
    from estwisted.subscriptions.volatile import SubscriptionHub
    from estwisted.tcp.server import TcpClientFactory
    from estwisted.tls.contexts import tls_listeners
    from estwisted.web import WebResource
    from estwisted.web.metrics import NodeMetrics, NodeSources

    tls = _load_tls(config, reactor)
    log, index, closer = _open_storage(config)
    store = StreamStore(
        log,
        index,
        reactor,
        recent_event_ids=config.idempotency_window,
        flusher=None if config.mem_db else ThreadFlusher(reactor),
        unsafe_ignore_hard_delete=config.unsafe_ignore_hard_delete,
    )
    store.scavenge_options = {
        "history_max_age": config.scavenge_history_max_age,
        "merge": not config.disable_scavenge_merging,
    }
    users = UserManager(store)
    hub = SubscriptionHub(store)
    def may_deliver() -> bool:
        # A cluster leader hands out persistent subscription messages only
        # while its lease holds (estwisted.cluster.leadership.LeaderLease):
        # cut off from its followers, it stops before a new leader can
        # take acknowledgements for them.
        replication = node.replication
        return replication is not None and replication.holds_lease()

    persistent = PersistentSubscriptions(
        store, reactor, may_deliver if config.cluster_size > 1 else (lambda: True)
    )
    metrics = NodeMetrics(
        NodeSources(
            store=store,
            log=log,
            index=index,
            db_path=None if config.mem_db else config.db,
            hub=hub,
            persistent=persistent,
        )
    )
    metrics.watch_store(store)
    metrics.watch_gc()
    if not config.mem_db:
        metrics.watch_syncs()
    node = NodeService(config, reactor, store, hub, persistent, metrics, tls)
    node.add("storage", StorageService(store, closer, metrics))
    if not config.mem_db:
        # Save the index now and then so a restart after a crash only
        # indexes a short tail of the log.
        node.add("index saver", index_saver(closer, reactor))
    if tls is not None:
        node.add("certificates", CertificateReloadService(reactor, tls))
    # The default users are written now, before the cluster's commit gate
    # is attached (each node starts from its own; a follower's log is then
    # replaced by the leader's); the write is durable once the reactor runs.
    core = CoreService(hub, persistent, users.ensure_default_users())
    node.add("core", core)
    projections = _projections(config, reactor, store)
    if projections is not None:
        node.projections = projections
        node.add("projections", projections)
        if projections.user is not None:
            node.add("user-projections", projections.user)

    # Who leads: published by the cluster's node role machine, read by
    # every edge.  A single node always leads.
    leadership: Optional[Leadership] = None
    if config.cluster_size > 1:
        leadership = Leadership(LeadershipView(VNodeState.Initializing))

    def tcp_factory(interval: int, timeout: int) -> TcpClientFactory:
        factory = TcpClientFactory(
            store,
            hub,
            persistent,
            reactor,
            heartbeat_interval=interval / 1000.0,
            heartbeat_timeout=timeout / 1000.0,
            leadership=leadership,
            users=users,
        )
        # TCP request latency by kind (estwisted.web.metrics)
        factory.request_meter = metrics.tcp_requests
        return factory

    tcp = tcp_factory(config.ext_tcp_heartbeat_interval, config.ext_tcp_heartbeat_timeout)
    int_tcp: IProtocolFactory = tcp_factory(
        config.int_tcp_heartbeat_interval, config.int_tcp_heartbeat_timeout
    )
    extra: dict[str, object] = {}
    if leadership is not None:
        extra["leadership"] = leadership
        # Gossip comes from the cluster's controller, built below.
        extra["gossip_view"] = lambda: node.cluster.controller.gossip_document()  # type: ignore[union-attr]
    if tls is not None:
        # POST /admin/reloadcertificates does what SIGHUP does.
        extra["reload_certificates"] = tls.reload
    if projections is not None:
        extra["projections"] = projections
        extra["projections_mode"] = str(config.run_projections).capitalize()
    info = NodeInfo.from_config(config, shutdown=_shutdown_by(reactor, "HTTP"), **extra)
    # The API's own Site refuses oversized bodies before buffering them
    # and writes no access-log line per request.
    api = HttpApi(store, hub, persistent, reactor, info, users=users)
    api.web = WebResource(metrics)
    api.metrics = metrics
    metrics.sources.http_api = api
    api_site = api.site()
    site: IProtocolFactory = api_site
    int_site: IProtocolFactory = api_site
    if leadership is not None:
        site, int_site, int_tcp = _cluster(
            node, config, reactor, leadership, api_site.resource, log, info.max_body_size, int_tcp
        )
        metrics.sources.cluster = node.cluster
    metrics.sources.tcp_factories = {"external": tcp, "internal": int_tcp}
    # ExtHttpPrefixes / IntHttpPrefixes (estwisted.http.prefixes).
    site, int_site = prefixed_sites(config, site, int_site)
    # The gRPC API (estwisted.grpc) shares the external HTTP port.
    site = _grpc_factory(node, config, reactor, site, leadership, users, metrics)
    listeners = ListenersService(
        # A single node listens once its default users are durable (their
        # write is a group commit, flushed off the reactor thread): a client
        # arriving at once is never refused as unknown.  A cluster node's
        # users come from the leader, so it does not wait for them.
        core.users_ready if config.cluster_size <= 1 else (lambda: succeed(None)),
        lambda reason: stop_reactor(reactor),
    )
    for name, host, port, factory in tls_listeners(
        config, tls, reactor, tcp, int_tcp, site, int_site
    ):
        _add_listener(reactor, listeners, Listener(name, host, port, factory))
    node.add("listeners", listeners)
    return node


def _add_listener(reactor: INodeReactor, parent: MultiService, listener: Listener) -> None:
    service = ListenerService(listener, serverFromString(reactor, listener.description))
    service.setName(listener.name)  # type: ignore[no-untyped-call]
    service.setServiceParent(parent)  # type: ignore[no-untyped-call]


def _projections(
    config: NodeConfig, reactor: INodeReactor, store: StreamStore
) -> Optional[SystemProjectionsService]:
    """
    The standard system projections, with C{RunProjections} System or All
    and C{StartStandardProjections}; with All, the user (JavaScript)
    projections too, as its C{user} child service.
    """
    mode = str(config.run_projections).lower()
    if mode == "none":
        return None
    from estwisted.projections import SystemProjectionsService

    # StartStandardProjections is the default for projections with no
    # persisted definition yet; off, they exist stopped and can be enabled
    # over HTTP (recorded in $projections-{name}).
    system = SystemProjectionsService(
        store, reactor, enabled=bool(config.start_standard_projections)
    )
    if mode == "all":
        from estwisted.projections import UserProjectionsService

        system.user = UserProjectionsService(
            store, reactor, reserved=lambda name: name in system.runners
        )
    return system


def _cluster(
    node: NodeService,
    config: NodeConfig,
    reactor: INodeReactor,
    leadership: Leadership,
    api_root: IResource,
    log: IEventLog,
    max_body_size: int,
    int_tcp: IProtocolFactory,
) -> tuple[IProtocolFactory, IProtocolFactory, IProtocolFactory]:
    """
    The cluster side of a node with C{ClusterSize > 1}: gossip, elections and
    node states (L{estwisted.cluster.wiring}), HTTP forwarded to the leader
    (L{estwisted.http.forwarding}) and quorum replication sharing the
    internal TCP port with clients (L{estwisted.replication.node}).

    @return: the external and internal HTTP sites and the internal TCP
        factory to listen with.
    """
    from estwisted.cluster.wiring import make_cluster_service
    from estwisted.http.forwarding import LeaderForwardingResource, leader_http_of
    from estwisted.http.site import QuietSite, limited_request_factory
    from estwisted.replication.node import attach_replication

    tls = node.tls
    forward_tls = tls is not None and not config.insecure
    # HTTP writes to a follower are answered by the leader.
    forwarding = LeaderForwardingResource(
        api_root,
        leader_http_of(leadership),
        reactor,
        https_policy=tls.https_policy() if forward_tls and tls is not None else None,
    )
    wiring = make_cluster_service(
        config, reactor, node.store, forwarding, tls, leadership=leadership
    )
    node.cluster = wiring
    replicas, node.replication = attach_replication(
        config, reactor, node.store, log, wiring, int_tcp,  # type: ignore[arg-type]
        persistent=node.persistent, tls=tls,
    )
    node.add("cluster", wiring.service)

    def serve(root: object) -> IProtocolFactory:
        # Same Site settings as the API's own (body limit, no access log).
        quiet = QuietSite(  # type: ignore[no-untyped-call]
            root,
            requestFactory=limited_request_factory(max_body_size),
            parsePOSTFormSubmission=False,
        )
        quiet.displayTracebacks = False
        return cast(IProtocolFactory, quiet)

    return serve(wiring.external_root), serve(wiring.internal_root), replicas


def _grpc_factory(
    node: NodeService,
    config: NodeConfig,
    reactor: INodeReactor,
    site: IProtocolFactory,
    leadership: Optional[Leadership],
    users: UserManager,
    metrics: Optional[NodeMetrics] = None,
) -> IProtocolFactory:
    """
    Serve the EventStoreDB 20+ gRPC API beside C{site} on its port (its
    calls counted and sampled in C{metrics}).
    """
    from estwisted.grpc.protocol import GrpcSniffingFactory
    from estwisted.grpc.services import INSECURE_PRINCIPAL, GrpcServer, node_members

    def refusal() -> Optional[Exception]:
        return None if leadership is None else leadership.view.refusal()

    members = node_members(config, reactor, lambda: node.cluster)
    anonymous = INSECURE_PRINCIPAL if config.insecure else None

    def resign() -> None:
        if node.cluster is not None:
            node.cluster.controller.resign()

    def set_node_priority(priority: int) -> None:
        if node.cluster is not None:
            node.cluster.controller.set_node_priority(priority)

    server = GrpcServer(
        node.store, node.hub, reactor, members, refusal, anonymous, node.persistent,
        _shutdown_by(reactor, "gRPC"), users, (resign, set_node_priority),
    )
    if metrics is not None:
        server.request_meter = metrics.grpc_requests
    return cast(IProtocolFactory, GrpcSniffingFactory(server, site, reactor))


def listeners_of(node: NodeService) -> Iterable[ListenerService]:
    """
    The node's listener services, in start order.
    """
    listeners = node.getServiceNamed("listeners")  # type: ignore[no-untyped-call]
    return [cast(ListenerService, child) for child in cast(MultiService, listeners)]
