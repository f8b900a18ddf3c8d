# -*- test-case-name: estwisted.manager.test.test_gossip -*-
"""
Manager gossip: the manager runs the same gossip machine as a database
node (L{estwisted.cluster.gossip.GossipMachine}), with its own record in state
C{Manager}.  It posts its table to a random member every round (other
managers and the database nodes it has heard of) and merges what it is
posted, so a database node seeded with its manager's internal endpoint
learns the whole cluster through it.  A member in state C{Manager} is
never part of an election's electorate nor of a quorum
(L{estwisted.cluster.gossip.ClusterView.electorate}).

A manager's record has its internal and external HTTP endpoints; its TCP
endpoints are the same as its HTTP ones, as v5 writes them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from estwisted.cluster.gossip import (
    ClusterInfo,
    Endpoint,
    GossipMachine,
    GossipSettings,
    MemberInfo,
    VNodeState,
)

__all__ = ["ManagerGossip", "manager_member"]


def manager_member(
    instance_id: uuid.UUID, internal_http: Endpoint, external_http: Endpoint, now: float
) -> MemberInfo:
    """
    The gossip record of a manager.
    """
    return MemberInfo(
        instance_id=instance_id,
        timestamp=now,
        state=VNodeState.Manager,
        is_alive=True,
        internal_tcp=internal_http,
        external_tcp=external_http,
        internal_http=internal_http,
        external_http=external_http,
    )


class ManagerGossip:
    """
    Runs a L{GossipMachine} on a clock and a peer transport.

    @param transport: has C{post_gossip(target, info) -> Deferred[ClusterInfo]}
        (L{estwisted.cluster.gossiphttp.HttpPeerTransport}).
    """

    _log = Logger()

    def __init__(
        self,
        own: MemberInfo,
        seeds: Sequence[Endpoint],
        settings: GossipSettings,
        clock: IReactorTime,
        transport: Any,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.rng = rng or random.Random()
        self.machine = GossipMachine.start(own, seeds, clock.seconds(), settings)
        self._call: Optional[IDelayedCall] = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self._tick()

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def set_seeds(self, seeds: Sequence[Endpoint]) -> None:
        """
        Seeds found later (DNS discovery).
        """
        mine = self.machine.own.endpoints()
        self.machine.seeds = tuple(s for s in seeds if s not in mine)

    def _tick(self) -> None:
        self._call = None
        if not self._running:
            return
        now = self.clock.seconds()
        try:
            self.machine.check_timeouts(now)
            self.machine.remove_dead(now)
            send, delay = self.machine.tick(now, self.rng)
            if send is not None:
                d = self.transport.post_gossip(send.target, send.info)
                d.addCallbacks(self._answered, self._failed, callbackArgs=(send.target,),
                               errbackArgs=(send.target,))
                d.addErrback(lambda f: self._log.failure("gossip answer handling failed", f))
        except Exception:
            self._log.failure("gossip round failed")
            delay = self.machine.settings.interval
        self._call = self.clock.callLater(delay, self._tick)

    def _answered(self, info: ClusterInfo, target: Endpoint) -> None:
        result = self.machine.on_response(target, info, self.clock.seconds())
        if result.rejected is not None:
            self._log.warn(
                "gossip from {peer} rejected: its clock differs from ours by {diff:.1f}s",
                peer=str(target), diff=result.rejected.difference,
            )

    def _failed(self, failure: Any, target: Endpoint) -> None:
        self.machine.on_failure(target, self.clock.seconds())

    def cluster_info(self) -> ClusterInfo:
        """
        The table as C{GET /gossip} answers it.
        """
        self.machine.update_own(self.machine.own, self.clock.seconds())
        return ClusterInfo(self.machine.view.members, self.machine.own.key)

    def handle_gossip(self, info: ClusterInfo) -> Optional[ClusterInfo]:
        """
        A member posted its table.

        @return: our merged table, or C{None} when the gossip was rejected
            (clock difference).
        """
        reply, result = self.machine.on_gossip(info, self.clock.seconds())
        if result.rejected is not None:
            return None
        return reply
