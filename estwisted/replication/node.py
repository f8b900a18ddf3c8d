# -*- test-case-name: estwisted.replication.test.test_runners -*-
"""
Replication of one clustered node: performs what the node role machine
decides (lead, follow, stand by), reports what it observes, gates the
store's commits on the quorum while leading; and its wiring into a node.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from estwisted.cluster.controller import EpochWritten, StorageFreed, StorageFull
from estwisted.cluster.elections import NoQuorum as QuorumLost
from estwisted.cluster.gossip import VNodeState
from estwisted.cluster.leadership import (
    LeaderLease,
    Leadership,
    LeadershipView,
    lease_duration,
)
from estwisted.core.errors import DiskFull, NotReady
from estwisted.core.interfaces import ICommitGate
from estwisted.replication.codec import (
    scan_epochs,
)
from estwisted.replication.follower import ReplicationFollower
from estwisted.replication.leader import ReplicationLeader
from estwisted.replication.state import (
    Epoch,
    no_quorum_timing,
)
from estwisted.tcp.internal import InternalTcpFactory

_log = Logger()

#: Seconds between two looks at the free space of a node whose disk filled.
DISK_CHECK_INTERVAL = 1.0
#: Free bytes a full disk must have again, beyond one chunk file, before
#: the node may lead again.
DISK_MARGIN = 1 << 20


def space_for_a_chunk(log: Any) -> Callable[[], bool]:
    """
    Whether the file system of C{log} (a L{estwisted.storage.log.ChunkedLog}:
    its C{path} and C{chunk_size}) has room for a new chunk file and
    L{DISK_MARGIN} more; always C{True} for a log without a path (memory).
    """
    path = getattr(log, "path", None)
    if not isinstance(path, (str, os.PathLike)):
        return lambda: True
    need = int(getattr(log, "chunk_size", 0) or 0) + DISK_MARGIN

    def check() -> bool:
        try:
            st = os.statvfs(path)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= need

    return check


@implementer(ICommitGate)
class NodeReplication:
    """
    Replication of one clustered node, performing what the node role
    machine decides (L{estwisted.cluster.controller.IRoleReplication}: L{lead},
    L{follow}, L{stand_by}) and reporting what it observes back to it
    (C{report}: the leader accepted our subscription, assigned us a role,
    our link to it closed, or, leading, our epoch was written or the quorum
    was lost).  Writes are refused as the published leadership view says
    (L{estwisted.cluster.leadership.LeadershipView.refusal}:
    L{estwisted.core.errors.NotLeader} with the leader's external endpoints, or
    L{NotReady}) except on the leader, where they wait for the quorum
    (it is the store's L{ICommitGate}: L{commit}).

    @param connect: C{connect(host, port, factory)} opens a connection to a
        leader's internal TCP endpoint.
    @param report: called with every L{estwisted.cluster.controller.ReplicationEvent}.
    @param leadership: the node's published L{estwisted.cluster.leadership.Leadership}
        (its write refusal is applied to the store); without one writes are
        refused until L{lead}.
    @param on_epoch: called with the newest epoch of the log (C{None}:
        none) whenever it changes (written here as leader, received or cut
        off as follower), to advertise it in gossip: elections compare it.
    @param election_timeout: C{LeaderElectionTimeoutMs} in seconds: a
        leader that hears no quorum steps down within it
        (L{estwisted.replication.state.no_quorum_timing}).
    @param space_available: whether the disk has room again after it
        filled (by default L{space_for_a_chunk} of C{log}).  A write that
        fails with L{DiskFull} is reported once as L{StorageFull} (a leader
        hands leadership over); from then on C{space_available} is asked
        every L{DISK_CHECK_INTERVAL} until it says yes, which is reported
        as L{StorageFreed}.
    """

    def __init__(
        self,
        store: Any,
        log: Any,
        clock: IReactorTime,
        node_id: bytes,
        cluster_size: int,
        connect: Callable[[str, int, Factory], Deferred[Any]],
        commit_count: int = -1,
        commit_timeout: float = 2.0,
        read_only: bool = False,
        report: Optional[Callable[[Any], None]] = None,
        on_epoch: Optional[Callable[[Optional[Epoch]], None]] = None,
        leadership: Optional[Leadership] = None,
        election_timeout: float = 1.0,
        space_available: Optional[Callable[[], bool]] = None,
        lease: Optional[LeaderLease] = None,
    ) -> None:
        #: this leader's lease (L{holds_lease})
        self.lease = lease if lease is not None else LeaderLease(lease_duration(election_timeout))
        self.store = store
        self.log = log
        self.clock = clock
        self.epochs = scan_epochs(log)
        self._connect_to = connect
        self._target: Optional[tuple[str, int]] = None
        self.read_only = read_only
        self._report = report
        self.on_epoch = on_epoch
        self.leader = ReplicationLeader(
            log,
            clock,
            cluster_size,
            node_id,
            commit_count=commit_count,
            commit_timeout=commit_timeout,
            epochs=self.epochs,
            on_no_quorum=self._no_quorum,
            no_quorum=no_quorum_timing(election_timeout),
        )
        self.follower = ReplicationFollower(
            log,
            clock,
            node_id,
            self._connect,
            store.apply_replicated,
            store.truncated,
            promotable=not read_only,
            epochs=self.epochs,
            report=self._follower_event,
        )
        if leadership is None:
            leadership = Leadership(LeadershipView(VNodeState.Initializing))
        self.leadership = leadership
        # The only writer of the store's refusal: what the view says.
        store.writes_refused = leadership.view.refusal()
        leadership.subscribe(self._leadership_changed)
        # This node's commits go through the quorum while it leads and fail
        # otherwise (never acknowledged without one).
        store.set_commit_gate(self)
        #: the node's L{estwisted.subscriptions.persistent.PersistentSubscriptions}, reloaded
        #: when this node becomes leader
        self.persistent: Any = None
        self.leader.epochs_changed = self._epochs_changed
        self.follower.epochs_changed = self._epochs_changed
        self.space_available = space_available or space_for_a_chunk(log)
        #: the disk filled and has not been seen with room again
        self.disk_full = False
        self._disk_watch: Optional[LoopingCall] = None
        store.on_disk_full = self._on_disk_full
        self.follower.on_disk_full = self._on_disk_full

    # -- a full disk --

    def _on_disk_full(self, error: DiskFull) -> None:
        """
        A write (or our epoch) failed for lack of space: report it once
        (a leader hands leadership over) and watch for room.
        """
        if self.disk_full:
            return
        self.disk_full = True
        # Told from inside the store's group commit (or the follower's
        # flush): the role machine hears it on the next reactor turn, once
        # the failed batch is settled (stepping down in the middle of it
        # would release the gated batches before the store forgot the
        # failed one).
        self.clock.callLater(0, self._emit, StorageFull(str(error)))
        if self._disk_watch is None:
            self._disk_watch = LoopingCall(self._check_disk)
            self._disk_watch.clock = self.clock
            self._disk_watch.start(DISK_CHECK_INTERVAL, now=False)

    def _check_disk(self) -> None:
        try:
            room = self.space_available()
        except Exception:
            _log.failure("Checking the free disk space failed")
            return
        if not room:
            return
        self._stop_disk_watch()
        self.disk_full = False
        self._emit(StorageFreed())

    def _stop_disk_watch(self) -> None:
        watch, self._disk_watch = self._disk_watch, None
        if watch is not None and watch.running:
            watch.stop()

    def _epochs_changed(self) -> None:
        if self.on_epoch is not None:
            self.on_epoch(self.epochs[-1] if self.epochs else None)

    def _emit(self, event: Any) -> None:
        if self._report is not None:
            self._report(event)

    def _leadership_changed(self, view: LeadershipView) -> None:
        self.store.writes_refused = view.refusal()

    def _no_quorum(self) -> None:
        self._emit(QuorumLost())

    def _follower_event(self, event: Any) -> None:
        if self.follower.leader_id is not None:
            self._emit(event)

    def _connect(self, factory: Factory) -> Deferred[Any]:
        if self._target is None:
            return Deferred()
        host, port = self._target
        return self._connect_to(host, port, factory)

    def commit(self, end: int) -> Deferred[None]:
        """
        L{ICommitGate}: while leading, the batch ending at C{end} is
        released once a quorum has it durable; otherwise it fails
        (L{_refuse}).
        """
        if self.leader.active:
            return self._gate(end)
        return self._refuse(end)

    def _gate(self, end: int) -> Deferred[None]:
        d = self.leader.wait_committed(end)
        self.leader.flushed(end)
        return d

    # -- IRoleReplication --

    def lead(self, epoch_number: int) -> None:
        """
        Become the replication leader: write an epoch (numbered at least
        C{epoch_number}), gate writes on the quorum and take them.
        """
        self.follower.stop()
        self._target = None
        if self.leader.active:
            return
        try:
            epoch = self.leader.start(epoch_number)
        except DiskFull as e:
            # no room for our epoch: we cannot lead
            self.log.discard()
            self._on_disk_full(e)
            return
        if self.persistent is not None:
            # groups and checkpoints written by the previous leader
            # arrived as events: serve them from here now
            try:
                self.persistent.reload()
            except Exception:
                _log.failure("Could not reload the persistent subscriptions")
        self._emit(EpochWritten(epoch.position, epoch.number, uuid.UUID(bytes=epoch.epoch_id)))

    def follow(self, leader: Any) -> None:
        """
        Replicate from C{leader} (an L{estwisted.cluster.gossip.MemberInfo}).
        """
        self._step_down()
        self._target = (leader.internal_tcp.host, leader.internal_tcp.port)
        self.follower.start(leader.instance_id.bytes)

    def stand_by(self) -> None:
        """
        Neither lead nor follow.
        """
        self._step_down()
        self._target = None
        self.follower.stop()

    def holds_lease(self) -> bool:
        """
        Whether this node leads and heard a quorum recently enough that no
        other node can have been elected meanwhile
        (L{estwisted.cluster.leadership.LeaderLease}): what a leader does
        without a quorum write behind it (handing out persistent
        subscription messages) waits while this is false.
        """
        if not self.leader.active:
            return False
        heard = self.leader.quorum_heard_at()
        if heard is not None:
            self.lease.renew(heard)
        return self.lease.holds(self.clock.seconds())

    def _step_down(self) -> None:
        self.lease.release()
        if self.leader.active:
            self.leader.stop(NotReady("The leader stepped down before the write was replicated"))
            # Settle group commit before anything else happens to the log:
            # the flush in flight and the writes buffered behind it are
            # made durable now (they fail at the gate, never acknowledged
            # without the quorum), then every batch still gated is indexed.
            # Left to finish later, a deposed leader's batch could land
            # while it already follows (and is told where to continue by a
            # log end that does not count it) or leads again.
            self.store.flush_now()
            self.store.release_gated()

    def _refuse(self, end: int) -> Deferred[None]:
        """
        The commit gate of a node that stopped leading: the batch fails; its
        records (in our log) are indexed right after, and a truncation
        removes them if the new leader does not have them.
        """
        self.clock.callLater(0, self.store.release_gated)
        d: Deferred[None] = Deferred()
        d.errback(NotReady("The leader stepped down before the write was replicated"))
        return d

    def stop(self) -> None:
        self._stop_disk_watch()
        self._step_down()
        self.follower.stop()


def attach_replication(
    config: Any,
    reactor: Any,
    store: Any,
    log: Any,
    wiring: Any,
    clients: Factory,
    persistent: Any = None,
    tls: Any = None,
) -> tuple[InternalTcpFactory, NodeReplication]:
    """
    Wire replication into a clustered node built by
    L{estwisted.cluster.wiring.make_cluster_service}: the controller drives it
    (L{estwisted.cluster.controller.IRoleReplication}) and hears what it observes; it
    serves replicas on the internal TCP port beside clients.

    @param tls: the node's L{estwisted.tls.contexts.NodeTLS}, or C{None}: with it,
        replicas dial the leader's internal TCP port over mutual TLS (the
        leader's certificate must match the address dialled).
    @return: the factory to listen with on the internal TCP port, and the
        node's replication.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint

    controller = wiring.controller

    def connect(host: str, port: int, factory: Factory) -> Deferred[Any]:
        wrapped: Any = factory if tls is None else tls.client_factory(factory, host)
        return TCP4ClientEndpoint(reactor, host, port, timeout=2).connect(wrapped)

    def on_epoch(epoch: Optional[Epoch]) -> None:
        # Elections compare epochs first (cluster.md 3.4): advertise the
        # log's newest epoch in our gossip record.
        if epoch is None:
            controller.set_epoch(-1, -1, uuid.UUID(int=0))
        else:
            controller.set_epoch(epoch.position, epoch.number, uuid.UUID(bytes=epoch.epoch_id))

    commit_count = max(
        int(getattr(config, "commit_count", -1)), int(getattr(config, "prepare_count", -1))
    )
    replication = NodeReplication(
        store,
        log,
        reactor,
        controller.machine.own.instance_id.bytes,
        int(config.cluster_size),
        connect,
        commit_count=commit_count,
        commit_timeout=int(getattr(config, "commit_timeout_ms", 2000)) / 1000.0,
        read_only=bool(getattr(config, "read_only_replica", False)),
        report=controller.replication_event,
        on_epoch=on_epoch,
        leadership=controller.leadership,
        election_timeout=int(getattr(config, "leader_election_timeout_ms", 1000)) / 1000.0,
        lease=LeaderLease(
            lease_duration(
                int(getattr(config, "leader_election_timeout_ms", 1000)) / 1000.0,
                int(getattr(config, "gossip_timeout_ms", 500)) / 1000.0,
            )
        ),
    )
    replication.persistent = persistent
    controller.drive(replication)
    if replication.epochs:
        on_epoch(replication.epochs[-1])
    reactor.addSystemEventTrigger("before", "shutdown", replication.stop)
    return InternalTcpFactory(clients, replication.leader), replication
