# -*- test-case-name: estwisted.cluster.test.test_gossip -*-
"""
Cluster membership by gossip: the member record, its JSON form, the member
table and its merge rules, liveness, and the "decide" functions of the gossip
loop.  Pure code: no reactor, no I/O.  Time comes in as C{now} (Unix seconds,
a float) and randomness as a L{random.Random}.

Facts: shared/spec/cluster.md sections 2.1-2.6 and http-api.md section 11.1.

The JSON shape is the v5 C{ClusterInfoDto}: C{{"members": [...], "serverIp":
..., "serverPort": ...}}, each member with exactly the fields of http-api.md
section 11.1 in that order.  Read-only replicas (a 20.6+ idea that v5 clients
do not know) are written with one extra trailing field C{"isReadOnlyReplica":
true} and with their state written as the nearest v5 name (see
L{VNodeState.v5_name}), so that clients which map state names to the v5 enum
(photon-pump) never meet a name they do not know; the field is read back to
restore the read-only state.  Records of ordinary nodes are byte-for-byte the
v5 shape.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from attrs import define, evolve, field, frozen

from estwisted.core.errors import BadRequest

#: The all-zero GUID: "no instance" (seed placeholders) and "no epoch".
ZERO_ID = uuid.UUID(int=0)

#: Number of quick gossip rounds at startup, and their period (seconds).
STARTUP_ROUNDS = 20
STARTUP_ROUND_DELAY = 0.1

#: Random draws made to avoid picking oneself as gossip target.
TARGET_DRAWS = 5

_TICKS_PER_SECOND = 10_000_000
_UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class GossipFormatError(BadRequest):
    """
    A gossip or election document could not be parsed (the HTTP edge answers
    400).
    """


class VNodeState(enum.Enum):
    """
    Node states.  The first eleven are v5's C{VNodeState}, in enum order
    (photon-pump maps names to these numbers); the last three are the 20.6+
    read-only replica states.
    """

    Initializing = "Initializing"
    Unknown = "Unknown"
    PreReplica = "PreReplica"
    CatchingUp = "CatchingUp"
    Clone = "Clone"
    Slave = "Slave"
    PreMaster = "PreMaster"
    Master = "Master"
    Manager = "Manager"
    ShuttingDown = "ShuttingDown"
    Shutdown = "Shutdown"
    ReadOnlyLeaderless = "ReadOnlyLeaderless"
    PreReadOnlyReplica = "PreReadOnlyReplica"
    ReadOnlyReplica = "ReadOnlyReplica"

    @property
    def v5_name(self) -> str:
        """
        The name written in v5 JSON: read-only states become the v5 state
        that means the same to a client (no leader known, subscribing,
        receiving data but not a full member).
        """
        return _READ_ONLY_AS_V5.get(self, self.value)

    @property
    def is_replica(self) -> bool:
        """
        CatchingUp, Clone, Slave (and the read-only replica state).
        """
        return self in _REPLICA_STATES


_READ_ONLY_AS_V5 = {
    VNodeState.ReadOnlyLeaderless: VNodeState.Unknown.value,
    VNodeState.PreReadOnlyReplica: VNodeState.PreReplica.value,
    VNodeState.ReadOnlyReplica: VNodeState.CatchingUp.value,
}
_V5_AS_READ_ONLY = {v: k for k, v in _READ_ONLY_AS_V5.items()}
_REPLICA_STATES = frozenset(
    {VNodeState.CatchingUp, VNodeState.Clone, VNodeState.Slave, VNodeState.ReadOnlyReplica}
)


@frozen(order=False)
class Endpoint:
    """
    An IP address (text) and a port.  Ordered as v5 sorts members: ordinal
    comparison of the address text, then the port.
    """

    host: str
    port: int

    def sort_key(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """
        Parse C{"ip:port"} (the C{GossipSeed} syntax; C{"[v6]:port"} too).

        @raise ValueError: not of that form.
        """
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not an ip:port endpoint: {text!r}")
        return cls(host, int(port))


@frozen
class MemberInfo:
    """
    One node as seen in gossip (cluster.md section 2.2).  Endpoints are the
    advertised ones.  The member key is C{internal_http}.

    @ivar timestamp: Unix seconds of the owner's last refresh of this record
        (or of a third party's change of C{is_alive}).
    """

    instance_id: uuid.UUID
    timestamp: float
    state: VNodeState
    is_alive: bool
    internal_tcp: Endpoint
    external_tcp: Endpoint
    internal_http: Endpoint
    external_http: Endpoint
    internal_secure_tcp_port: int = 0
    external_secure_tcp_port: int = 0
    last_commit_position: int = -1
    writer_checkpoint: int = -1
    chaser_checkpoint: int = -1
    epoch_position: int = -1
    epoch_number: int = -1
    epoch_id: uuid.UUID = ZERO_ID
    node_priority: int = 0
    is_read_only_replica: bool = False

    @property
    def key(self) -> Endpoint:
        """
        The member-table key: the internal HTTP endpoint.
        """
        return self.internal_http

    @classmethod
    def seed(cls, endpoint: Endpoint, now: float) -> MemberInfo:
        """
        The placeholder record for a gossip seed: state Manager, zero instance
        id, alive, every endpoint the seed endpoint (cluster.md section 2.1).
        """
        return cls(
            instance_id=ZERO_ID,
            timestamp=now,
            state=VNodeState.Manager,
            is_alive=True,
            internal_tcp=endpoint,
            external_tcp=endpoint,
            internal_http=endpoint,
            external_http=endpoint,
        )

    @property
    def is_seed_placeholder(self) -> bool:
        return self.instance_id == ZERO_ID and self.state is VNodeState.Manager

    def endpoints(self) -> frozenset[Endpoint]:
        """
        Every endpoint of the member (the secure ports included when set).
        """
        result = {self.internal_tcp, self.external_tcp, self.internal_http, self.external_http}
        if self.internal_secure_tcp_port:
            result.add(Endpoint(self.internal_tcp.host, self.internal_secure_tcp_port))
        if self.external_secure_tcp_port:
            result.add(Endpoint(self.external_tcp.host, self.external_secure_tcp_port))
        return frozenset(result)

    def is_same_node(self, other: MemberInfo) -> bool:
        """
        Same instance id (unless zero), or any endpoint in common.
        """
        if self.instance_id != ZERO_ID and self.instance_id == other.instance_id:
            return True
        return bool(self.endpoints() & other.endpoints())

    def same_except_volatile(self, other: MemberInfo) -> bool:
        """
        Equality used to detect a changed cluster: ignores the timestamp and
        the three log positions.
        """
        volatile = dict(
            timestamp=0.0, last_commit_position=0, writer_checkpoint=0, chaser_checkpoint=0
        )
        return evolve(self, **volatile) == evolve(other, **volatile)  # type: ignore[arg-type]

    def data_key(self) -> tuple[int, int, int]:
        """
        The "more up to date" order used when merging third-party information:
        epoch number, writer checkpoint, timestamp.
        """
        return (self.epoch_number, self.writer_checkpoint, _ticks(self.timestamp))


def sort_members(members: Iterable[MemberInfo]) -> tuple[MemberInfo, ...]:
    """
    Sort members descending by internal HTTP endpoint (address text, then
    port), the order of every v5 member list.
    """
    return tuple(sorted(members, key=lambda m: m.key.sort_key(), reverse=True))


# --- JSON ------------------------------------------------------------------


def _ticks(seconds: float) -> int:
    """
    Unix seconds to the nearest 100 ns tick, computed without the rounding
    error of one big float multiplication (C{seconds - whole} is exact).
    """
    whole = math.floor(seconds)
    return whole * _TICKS_PER_SECOND + round((seconds - whole) * _TICKS_PER_SECOND)


def format_timestamp(seconds: float) -> str:
    """
    Unix seconds as Newtonsoft writes a UTC C{DateTime}: ISO-8601, up to
    seven fraction digits with trailing zeros dropped, and C{Z}.
    """
    ticks = _ticks(seconds)
    whole, fraction = divmod(ticks, _TICKS_PER_SECOND)
    moment = _UNIX_EPOCH + datetime.timedelta(seconds=whole)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.year < 1000:
        text = f"{moment.year:04d}" + text[text.index("-") :]
    digits = f"{fraction:07d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)


def parse_timestamp(text: str) -> float:
    """
    Parse an ISO-8601 timestamp as written by L{format_timestamp} (an offset
    other than C{Z} is accepted and applied; no suffix means UTC).

    @raise GossipFormatError: not such a timestamp.
    """
    match = _TIMESTAMP.match(text) if isinstance(text, str) else None
    if match is None:
        raise GossipFormatError(f"bad timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = int((match.group(7) or "").ljust(7, "0"))
    offset = match.group(8)
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    except ValueError as e:
        raise GossipFormatError(f"bad timestamp: {text!r}") from e
    delta = moment - _UNIX_EPOCH
    ticks = (delta.days * 86400 + delta.seconds) * _TICKS_PER_SECOND + fraction
    if offset and offset != "Z":
        sign = -1 if offset[0] == "+" else 1
        ticks += sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60) * _TICKS_PER_SECOND
    return ticks / _TICKS_PER_SECOND


def member_to_json(member: MemberInfo) -> dict[str, Any]:
    """
    One member as the v5 JSON object (field order of http-api.md 11.1).
    """
    result: dict[str, Any] = {
        "instanceId": str(member.instance_id),
        "timeStamp": format_timestamp(member.timestamp),
        "state": member.state.v5_name,
        "isAlive": member.is_alive,
        "internalTcpIp": member.internal_tcp.host,
        "internalTcpPort": member.internal_tcp.port,
        "internalSecureTcpPort": member.internal_secure_tcp_port,
        "externalTcpIp": member.external_tcp.host,
        "externalTcpPort": member.external_tcp.port,
        "externalSecureTcpPort": member.external_secure_tcp_port,
        "internalHttpIp": member.internal_http.host,
        "internalHttpPort": member.internal_http.port,
        "externalHttpIp": member.external_http.host,
        "externalHttpPort": member.external_http.port,
        "lastCommitPosition": member.last_commit_position,
        "writerCheckpoint": member.writer_checkpoint,
        "chaserCheckpoint": member.chaser_checkpoint,
        "epochPosition": member.epoch_position,
        "epochNumber": member.epoch_number,
        "epochId": str(member.epoch_id),
        "nodePriority": member.node_priority,
    }
    if member.is_read_only_replica:
        result["isReadOnlyReplica"] = True
    return result


def _get(obj: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    if name not in obj:
        if default is None:
            raise GossipFormatError(f"missing field {name!r}")
        return default
    value = obj[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise GossipFormatError(f"field {name!r} is not an integer: {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise GossipFormatError(f"field {name!r} is not a {kind.__name__}: {value!r}")
    return value


def get_uuid(obj: Mapping[str, Any], name: str, default: Optional[uuid.UUID] = None) -> uuid.UUID:
    """
    Read a GUID field (hyphenated text).

    @raise GossipFormatError: missing (and no default) or not a GUID.
    """
    if name not in obj and default is not None:
        return default
    text = _get(obj, name, str)
    try:
        return uuid.UUID(text)
    except ValueError as e:
        raise GossipFormatError(f"field {name!r} is not a GUID: {text!r}") from e


def get_int(obj: Mapping[str, Any], name: str, default: Optional[int] = None) -> int:
    """
    Read an integer field.

    @raise GossipFormatError: missing (and no default) or not an integer.
    """
    return int(_get(obj, name, int, default))


def get_str(obj: Mapping[str, Any], name: str, default: Optional[str] = None) -> str:
    """
    Read a text field.

    @raise GossipFormatError: missing (and no default) or not text.
    """
    return str(_get(obj, name, str, default))


def member_from_json(obj: Any) -> MemberInfo:
    """
    Parse one member object.  Missing optional numbers take the v5 defaults;
    the identity, state and endpoints are required.

    @raise GossipFormatError: the object is not a member.
    """
    if not isinstance(obj, dict):
        raise GossipFormatError("member is not an object")
    state_name = get_str(obj, "state")
    is_read_only = obj.get("isReadOnlyReplica", False)
    if not isinstance(is_read_only, bool):
        raise GossipFormatError("field 'isReadOnlyReplica' is not a boolean")
    try:
        state = VNodeState(state_name)
    except ValueError as e:
        raise GossipFormatError(f"unknown node state {state_name!r}") from e
    if is_read_only and state_name in _V5_AS_READ_ONLY:
        state = _V5_AS_READ_ONLY[state_name]
    is_alive = obj.get("isAlive")
    if not isinstance(is_alive, bool):
        raise GossipFormatError("field 'isAlive' is missing or not a boolean")

    def endpoint(prefix: str) -> Endpoint:
        return Endpoint(get_str(obj, prefix + "Ip"), get_int(obj, prefix + "Port"))

    return MemberInfo(
        instance_id=get_uuid(obj, "instanceId"),
        timestamp=parse_timestamp(get_str(obj, "timeStamp")),
        state=state,
        is_alive=is_alive,
        internal_tcp=endpoint("internalTcp"),
        external_tcp=endpoint("externalTcp"),
        internal_http=endpoint("internalHttp"),
        external_http=endpoint("externalHttp"),
        internal_secure_tcp_port=get_int(obj, "internalSecureTcpPort", 0),
        external_secure_tcp_port=get_int(obj, "externalSecureTcpPort", 0),
        last_commit_position=get_int(obj, "lastCommitPosition", -1),
        writer_checkpoint=get_int(obj, "writerCheckpoint", -1),
        chaser_checkpoint=get_int(obj, "chaserCheckpoint", -1),
        epoch_position=get_int(obj, "epochPosition", -1),
        epoch_number=get_int(obj, "epochNumber", -1),
        epoch_id=get_uuid(obj, "epochId", ZERO_ID),
        node_priority=get_int(obj, "nodePriority", 0),
        is_read_only_replica=is_read_only,
    )


@frozen
class ClusterInfo:
    """
    A gossip document: the sender's member list and its internal HTTP
    endpoint (C{serverIp}/C{serverPort}).
    """

    members: tuple[MemberInfo, ...]
    server: Optional[Endpoint] = None


def cluster_to_json(info: ClusterInfo) -> dict[str, Any]:
    result: dict[str, Any] = {"members": [member_to_json(m) for m in info.members]}
    if info.server is not None:
        result["serverIp"] = info.server.host
        result["serverPort"] = info.server.port
    return result


def encode_cluster_info(info: ClusterInfo) -> bytes:
    """
    The gossip document as indented JSON (what C{GET /gossip} and C{POST
    /gossip} carry).
    """
    return json.dumps(cluster_to_json(info), indent=2).encode("utf-8")


def cluster_from_json(obj: Any) -> ClusterInfo:
    """
    @raise GossipFormatError: not a gossip document.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("members"), list):
        raise GossipFormatError("gossip document has no 'members' list")
    members = tuple(member_from_json(m) for m in obj["members"])
    server = None
    if "serverIp" in obj or "serverPort" in obj:
        server = Endpoint(get_str(obj, "serverIp"), get_int(obj, "serverPort"))
    return ClusterInfo(members, server)


def decode_cluster_info(body: bytes) -> ClusterInfo:
    """
    Parse a gossip document.

    @raise GossipFormatError: not JSON, or not a gossip document.
    """
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise GossipFormatError(f"gossip document is not JSON: {e}") from e
    return cluster_from_json(obj)


# --- The member table --------------------------------------------------------


@frozen
class GossipSettings:
    """
    Gossip timings in seconds (cluster.md section 2.6; v5 defaults).

    @ivar interval: C{GossipIntervalMs}.
    @ivar timeout: C{GossipTimeoutMs}: a peer that has not answered a gossip
        request within this time is marked dead.
    @ivar allowed_difference: C{GossipAllowedDifferenceMs}: gossip whose
        sender's clock differs more from ours is rejected.
    @ivar dead_member_removal: dead members older than this are dropped.
    """

    interval: float = 1.0
    timeout: float = 0.5
    allowed_difference: float = 60.0
    dead_member_removal: float = 1800.0

    @classmethod
    def from_options(
        cls,
        gossip_interval_ms: int = 1000,
        gossip_timeout_ms: int = 500,
        gossip_allowed_difference_ms: int = 60000,
        dead_member_removal_period_sec: int = 1800,
    ) -> GossipSettings:
        """
        Build from the configuration options (milliseconds, and seconds for
        the removal period, as the options are named).
        """
        return cls(
            interval=gossip_interval_ms / 1000,
            timeout=gossip_timeout_ms / 1000,
            allowed_difference=gossip_allowed_difference_ms / 1000,
            dead_member_removal=float(dead_member_removal_period_sec),
        )


@frozen
class ClockSkew:
    """
    Why a gossip was rejected: the sender's own record says C{theirs} when our
    clock says C{ours}.
    """

    peer: Endpoint
    theirs: float
    ours: float

    @property
    def difference(self) -> float:
        return self.theirs - self.ours


@frozen
class MergeResult:
    """
    The outcome of L{ClusterView.merge}: the new view, whether it differs
    from the old one (ignoring volatile fields), and the reason the gossip
    was rejected (the view is then unchanged).
    """

    view: ClusterView
    changed: bool
    rejected: Optional[ClockSkew] = None


@frozen
class ClusterView:
    """
    The member table: at most one record per internal HTTP endpoint, kept in
    the v5 order (descending by endpoint).  Immutable: every operation
    returns a new view.
    """

    members: tuple[MemberInfo, ...] = field(converter=sort_members)

    @classmethod
    def initial(cls, own: MemberInfo, seeds: Iterable[Endpoint], now: float) -> ClusterView:
        """
        Own record plus one placeholder per seed that is not one of our own
        endpoints.
        """
        table = {own.key: evolve(own, timestamp=now, is_alive=True)}
        mine = own.endpoints()
        for seed in seeds:
            if seed not in mine and seed not in table:
                table[seed] = MemberInfo.seed(seed, now)
        return cls(tuple(table.values()))

    def get(self, key: Endpoint) -> Optional[MemberInfo]:
        for m in self.members:
            if m.key == key:
                return m
        return None

    def by_instance(self, instance_id: uuid.UUID) -> Optional[MemberInfo]:
        for m in self.members:
            if m.instance_id == instance_id and instance_id != ZERO_ID:
                return m
        return None

    def _replace(self, table: Mapping[Endpoint, MemberInfo]) -> ClusterView:
        return ClusterView(tuple(table.values()))

    def same_as(self, other: ClusterView) -> bool:
        """
        Equal ignoring timestamps and log positions (the "cluster changed"
        test).
        """
        if len(self.members) != len(other.members):
            return False
        pairs = zip(self.members, other.members, strict=True)
        return all(a.same_except_volatile(b) for a, b in pairs)

    def merge(
        self,
        own: MemberInfo,
        received: Sequence[MemberInfo],
        now: float,
        *,
        peer: Optional[Endpoint] = None,
        leader_id: Optional[uuid.UUID] = None,
        settings: GossipSettings = GossipSettings(),
    ) -> MergeResult:
        """
        Merge a received member list (v5 C{MergeClusters}, cluster.md
        section 2.4).

        @param own: this node's current record; it is refreshed (alive,
            timestamp C{now}) in the result and never taken from others.
        @param peer: the internal HTTP endpoint of the sender (the body's
            C{serverIp/serverPort}) or of the node we posted to; its own
            record is taken as it is.  If that record's timestamp differs
            from C{now} by more than C{settings.allowed_difference} the whole
            gossip is rejected.
        @param leader_id: instance id of our current leader while we are a
            replica: third-party news about it never changes its liveness or
            state here.
        """
        mine = own.endpoints()
        if peer is not None:
            for m in received:
                if m.is_same_node(own) or peer not in m.endpoints():
                    continue
                if abs(now - m.timestamp) > settings.allowed_difference:
                    return MergeResult(self, False, ClockSkew(peer, m.timestamp, now))
        table = {m.key: m for m in self.members}
        for m in received:
            if m.instance_id == own.instance_id or not m.endpoints().isdisjoint(mine):
                continue
            if peer is not None and peer in m.endpoints():
                table[m.key] = m
                continue
            existing = table.get(m.key)
            if existing is None:
                table[m.key] = m
            elif m.data_key() > existing.data_key():
                if leader_id is not None and m.instance_id == leader_id:
                    m = evolve(m, is_alive=existing.is_alive, state=existing.state)
                table[m.key] = m
        table[own.key] = evolve(own, timestamp=now, is_alive=True)
        merged = self._replace(table).remove_dead(now, settings.dead_member_removal)
        return MergeResult(merged, not merged.same_as(self))

    def refresh_own(self, own: MemberInfo, now: float) -> ClusterView:
        """
        Put this node's current record in the table (alive, timestamp C{now}).
        """
        table = {m.key: m for m in self.members}
        table[own.key] = evolve(own, timestamp=now, is_alive=True)
        return self._replace(table)

    def mark_dead(
        self, key: Endpoint, now: float, *, leader_id: Optional[uuid.UUID] = None
    ) -> ClusterView:
        """
        A gossip request to C{key} failed or went unanswered: mark it dead
        (timestamp C{now}) unless it is our current leader, whose liveness
        the replication link decides (cluster.md section 2.5).
        """
        member = self.get(key)
        if member is None or not member.is_alive:
            return self
        if leader_id is not None and member.instance_id == leader_id:
            return self
        table = {m.key: m for m in self.members}
        table[key] = evolve(member, is_alive=False, timestamp=now)
        return self._replace(table)

    def mark_alive(self, key: Endpoint, now: float) -> ClusterView:
        """
        Something (a replication connection) showed C{key} is alive.
        """
        member = self.get(key)
        if member is None or member.is_alive:
            return self
        table = {m.key: m for m in self.members}
        table[key] = evolve(member, is_alive=True, timestamp=now)
        return self._replace(table)

    def remove_dead(self, now: float, removal: float) -> ClusterView:
        """
        Drop members that are dead and whose record is older than
        C{removal} seconds.
        """
        kept = tuple(m for m in self.members if m.is_alive or now - m.timestamp <= removal)
        if len(kept) == len(self.members):
            return self
        return ClusterView(kept)

    def elected(self, leader_id: uuid.UUID, own_id: uuid.UUID) -> ClusterView:
        """
        Rewrite the table after an election (cluster.md section 2.3 step 7):
        the leader's record becomes Master, every other node record (not
        ours, not seed placeholders) Unknown until its own gossip corrects
        it.
        """
        table = {}
        for m in self.members:
            if m.instance_id == leader_id:
                m = evolve(m, state=VNodeState.Master)
            elif (
                m.instance_id != own_id
                and not m.is_seed_placeholder
                and not m.is_read_only_replica
                and m.state is not VNodeState.Manager
            ):
                m = evolve(m, state=VNodeState.Unknown)
            table[m.key] = m
        return self._replace(table)

    def electorate(self) -> tuple[MemberInfo, ...]:
        """
        The members that take part in elections: alive, not a manager (or
        seed placeholder), not a read-only replica; sorted descending by
        internal HTTP endpoint.
        """
        return tuple(
            m
            for m in self.members
            if m.is_alive and m.state is not VNodeState.Manager and not m.is_read_only_replica
        )

    def alive_leaders(self) -> tuple[MemberInfo, ...]:
        """
        Alive members in state Master.
        """
        return tuple(m for m in self.members if m.is_alive and m.state is VNodeState.Master)


def choose_gossip_target(
    view: ClusterView,
    own: MemberInfo,
    seeds: Sequence[Endpoint],
    rng: random.Random,
) -> Optional[Endpoint]:
    """
    Decide which peer to gossip to next: a random member of the table (dead
    ones and seed placeholders included) or a configured seed no longer in
    the table, never ourselves.  Like v5, up to L{TARGET_DRAWS} random draws
    are made; if all of them hit ourselves, nobody is chosen this round.
    """
    candidates = [m.key for m in view.members]
    known = set(candidates)
    candidates.extend(s for s in seeds if s not in known)
    if not candidates:
        return None
    mine = own.endpoints()
    for _ in range(TARGET_DRAWS):
        pick = candidates[rng.randrange(len(candidates))]
        if pick not in mine:
            return pick
    return None


def next_gossip_delay(rounds_sent: int, settings: GossipSettings) -> float:
    """
    Delay before the next round: quick rounds for the first
    L{STARTUP_ROUNDS} rounds that sent something, then the interval.
    """
    return STARTUP_ROUND_DELAY if rounds_sent < STARTUP_ROUNDS else settings.interval


# --- The gossip loop, as a machine -------------------------------------------


@frozen
class SendGossip:
    """
    Effect: POST our table to C{target} (internal HTTP C{/gossip}).
    """

    target: Endpoint
    info: ClusterInfo


@define
class GossipMachine:
    """
    The gossip loop of one node without its I/O.  The edge calls L{tick}
    on a timer (the delay of the next call is returned), performs the
    L{SendGossip} effects, and reports answers, failures and incoming
    gossip.  Requests not answered within C{settings.timeout} are failures
    (see L{check_timeouts}).

    @ivar own: this node's current record (update with L{update_own}).
    @ivar leader_id: our current leader while we are a replica.
    """

    own: MemberInfo
    view: ClusterView
    seeds: tuple[Endpoint, ...] = ()
    settings: GossipSettings = GossipSettings()
    leader_id: Optional[uuid.UUID] = None
    rounds_sent: int = 0
    pending: dict[Endpoint, float] = field(factory=dict)
    rejected: list[ClockSkew] = field(factory=list)
    heard_from: set[Endpoint] = field(factory=set)
    #: when each peer last posted its gossip to us or answered ours
    heard_at: dict[Endpoint, float] = field(factory=dict)

    @classmethod
    def start(
        cls,
        own: MemberInfo,
        seeds: Sequence[Endpoint],
        now: float,
        settings: GossipSettings = GossipSettings(),
    ) -> GossipMachine:
        return cls(
            own=own,
            view=ClusterView.initial(own, seeds, now),
            seeds=tuple(seeds),
            settings=settings,
        )

    def update_own(self, own: MemberInfo, now: float) -> bool:
        """
        Our state or data changed: refresh our record.

        @return: whether the table changed (ignoring volatile fields).
        """
        self.own = own
        new = self.view.refresh_own(own, now)
        changed = not new.same_as(self.view)
        self.view = new
        return changed

    def tick(self, now: float, rng: random.Random) -> tuple[Optional[SendGossip], float]:
        """
        One gossip round.

        @return: what to send (or C{None}) and the delay until the next
            round.
        """
        target = choose_gossip_target(self.view, self.own, self.seeds, rng)
        if target is None:
            return None, next_gossip_delay(self.rounds_sent, self.settings)
        self.view = self.view.refresh_own(self.own, now)
        self.pending.setdefault(target, now)
        delay = next_gossip_delay(self.rounds_sent, self.settings)
        self.rounds_sent += 1
        return SendGossip(target, ClusterInfo(self.view.members, self.own.key)), delay

    def _merge(
        self, received: Sequence[MemberInfo], peer: Optional[Endpoint], now: float
    ) -> MergeResult:
        result = self.view.merge(
            self.own,
            received,
            now,
            peer=peer,
            leader_id=self.leader_id,
            settings=self.settings,
        )
        if result.rejected is not None:
            self.rejected.append(result.rejected)
        self.view = result.view
        return result

    def on_gossip(self, info: ClusterInfo, now: float) -> tuple[ClusterInfo, MergeResult]:
        """
        A peer posted its table to us.

        @return: our merged table (the reply body) and the merge outcome.
        """
        result = self._merge(info.members, info.server, now)
        if info.server is not None and result.rejected is None:
            self.heard_from.add(info.server)
            self.heard_at[info.server] = now
        return ClusterInfo(self.view.members, self.own.key), result

    def on_response(self, peer: Endpoint, info: ClusterInfo, now: float) -> MergeResult:
        """
        The peer we posted to answered with its table.
        """
        self.pending.pop(peer, None)
        result = self._merge(info.members, peer, now)
        if result.rejected is None:
            self.heard_from.add(peer)
            self.heard_at[peer] = now
        return result

    def silent_seeds(self) -> tuple[Endpoint, ...]:
        """
        Configured seeds that never answered nor gossiped to us (the edge
        logs them by name after a few rounds: a wrong seed must be obvious).
        """
        return tuple(s for s in self.seeds if s not in self.heard_from)

    def on_failure(self, peer: Endpoint, now: float) -> bool:
        """
        Our gossip to C{peer} failed (refused, error status, bad body,
        timeout).  A peer that posted its gossip to us (or answered) after
        the failed request was sent (within the last timeout, when we do
        not know when it was sent) is alive: a request held up by a
        partition that has healed since must not mark it dead again.

        @return: whether the table changed.
        """
        sent = self.pending.pop(peer, None)
        heard = self.heard_at.get(peer)
        since = now - self.settings.timeout if sent is None else sent
        if heard is not None and heard > since:
            return False
        new = self.view.mark_dead(peer, now, leader_id=self.leader_id)
        changed = new is not self.view
        self.view = new
        return changed

    def check_timeouts(self, now: float) -> list[Endpoint]:
        """
        Mark dead every peer that has not answered a gossip request within
        C{settings.timeout}.

        @return: the peers whose requests timed out.
        """
        late = [p for p, sent in self.pending.items() if now - sent >= self.settings.timeout]
        for peer in late:
            self.on_failure(peer, now)
        return late

    def elected(self, leader_id: uuid.UUID, now: float) -> None:
        """
        An election finished with C{leader_id}.
        """
        self.leader_id = None if leader_id == self.own.instance_id else leader_id
        self.view = self.view.elected(leader_id, self.own.instance_id).refresh_own(self.own, now)

    def remove_dead(self, now: float) -> None:
        self.view = self.view.remove_dead(now, self.settings.dead_member_removal)
