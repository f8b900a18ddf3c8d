# -*- test-case-name: estwisted.cluster.test.test_discovery -*-
"""
Where a node finds its first peers (cluster.md section 2.1): configured
gossip seeds (C{GossipSeed} with C{DiscoverViaDns: false}), or the A
records of C{ClusterDns} with C{ClusterGossipPort} on each address.

DNS goes through L{twisted.names.client}, pointed at C{ClusterDnsServer}
when that is set (tests run an authoritative server on loopback) and at the
system resolver otherwise.  The name is resolved once at startup and again
every second while the answer is an error or empty; the log says so in
plain words, naming the name and the server.  Seeds that are host names
rather than addresses are resolved the same way, once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.names import dns

from estwisted.cluster.gossip import Endpoint

#: Seconds between DNS attempts while resolution fails.
DNS_RETRY = 1.0
#: Seconds between two log lines about the same failing name.
DNS_LOG_PERIOD = 30.0


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def a_record_addresses(answers: Sequence[Any]) -> list[str]:
    """
    The addresses of the A (and AAAA) records in a DNS answer, in order,
    without duplicates.
    """
    out: list[str] = []
    for record in answers:
        if record.type == dns.A:
            address = record.payload.dottedQuad()
        elif record.type == dns.AAAA:
            address = str(ipaddress.IPv6Address(record.payload.address))
        else:
            continue
        if address not in out:
            out.append(address)
    return out


class DnsSeedSource:
    """
    Resolve C{name} to all its addresses and report C{address:port} for
    each, retrying every L{DNS_RETRY} seconds while nothing is found.

    @param resolver: an L{twisted.internet.interfaces.IResolver}
        (C{lookupAddress}).
    @param server: how the DNS server is described in log lines.
    """

    _log = Logger()

    def __init__(
        self,
        resolver: Any,
        name: str,
        port: int,
        clock: IReactorTime,
        on_found: Callable[[list[Endpoint]], object],
        server: str = "the system resolver",
        retry: float = DNS_RETRY,
    ) -> None:
        self.resolver = resolver
        self.name = name
        self.port = port
        self.clock = clock
        self.on_found = on_found
        self.server = server
        self.retry = retry
        self.found: Optional[list[Endpoint]] = None
        self.attempts = 0
        self._call: Optional[IDelayedCall] = None
        self._pending: Optional[Deferred[Any]] = None
        self._last_logged: Optional[float] = None
        self._stopped = False

    def start(self) -> None:
        self._lookup()

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._pending is not None:
            self._pending.cancel()

    def _lookup(self) -> None:
        self._call = None
        if self._stopped:
            return
        self.attempts += 1
        d = self.resolver.lookupAddress(self.name)
        self._pending = d
        d.addCallbacks(self._answered, self._failed)
        d.addErrback(lambda f: self._log.failure("DNS discovery callback failed", f))

    def _answered(self, result: Any) -> None:
        self._pending = None
        answers = result[0] if isinstance(result, tuple) else result
        addresses = a_record_addresses(answers)
        if not addresses:
            self._again(f"DNS discovery: {self.name} has no A records at {self.server}")
            return
        self.found = [Endpoint(a, self.port) for a in addresses]
        self._log.info(
            "DNS discovery: {name} resolves to {addresses}; gossiping on port {port}",
            name=self.name,
            addresses=", ".join(addresses),
            port=self.port,
        )
        self.on_found(self.found)

    def _failed(self, failure: Any) -> None:
        self._pending = None
        if self._stopped:
            return
        reason = failure.getErrorMessage() or failure.type.__name__
        self._again(f"DNS discovery: cannot resolve {self.name} at {self.server}: {reason}")

    def _again(self, text: str) -> None:
        now = self.clock.seconds()
        if self._last_logged is None or now - self._last_logged >= DNS_LOG_PERIOD:
            self._last_logged = now
            self._log.warn(
                "{text}; no gossip seeds yet, retrying every {retry:g}s", text=text,
                retry=self.retry,
            )
        if not self._stopped:
            self._call = self.clock.callLater(self.retry, self._lookup)


class SeedDiscovery:
    """
    Hands the node its gossip seeds: the configured ones (host names
    resolved first) or those found through DNS.

    @param add_seeds: called with each batch of seed endpoints found.
    @param exclude: endpoints that are this node itself.
    """

    _log = Logger()

    def __init__(
        self,
        add_seeds: Callable[[list[Endpoint]], object],
        static: Sequence[Endpoint] = (),
        dns_source: Optional[DnsSeedSource] = None,
        resolver: Any = None,
        exclude: Sequence[Endpoint] = (),
    ) -> None:
        self.add_seeds = add_seeds
        self.static = list(static)
        self.dns_source = dns_source
        self.resolver = resolver
        self.exclude = set(exclude)

    @classmethod
    def from_config(
        cls, config: Any, reactor: Any, add_seeds: Callable[[list[Endpoint]], object]
    ) -> SeedDiscovery:
        """
        C{DiscoverViaDns}, C{ClusterDns}, C{ClusterGossipPort},
        C{ClusterDnsServer} and C{GossipSeed} of a node configuration.
        """
        server = config.cluster_dns_server
        names = [s for s in config.gossip_seed if not is_ip(s.host)]
        needs_dns = config.discover_via_dns or bool(names)
        # Only build a resolver when something is to be resolved: the
        # system resolver reads /etc/resolv.conf and would query its servers.
        resolver = make_resolver(config, reactor) if needs_dns else None
        exclude = [Endpoint(config.int_ip, config.int_http_port)]
        exclude.append(Endpoint(config.advertised_int_ip, config.advertised_int_http_port))
        discovery = cls(add_seeds, resolver=resolver, exclude=exclude)
        if config.discover_via_dns:
            discovery.dns_source = DnsSeedSource(
                resolver,
                config.cluster_dns,
                config.cluster_gossip_port,
                reactor,
                discovery._found,
                server=f"DNS server {server}" if server is not None else "the system resolver",
            )
        else:
            discovery.static = [Endpoint(s.host, s.port) for s in config.gossip_seed]
        return discovery

    def _found(self, seeds: list[Endpoint]) -> None:
        seeds = [s for s in seeds if s not in self.exclude]
        if seeds:
            self.add_seeds(seeds)

    def start(self) -> None:
        addresses = [s for s in self.static if is_ip(s.host)]
        if addresses:
            self._log.info(
                "Gossip seeds: {seeds}", seeds=", ".join(str(s) for s in addresses)
            )
            self._found(addresses)
        for seed in self.static:
            if not is_ip(seed.host):
                self._resolve_name(seed)
        if self.dns_source is not None:
            self.dns_source.start()

    def _resolve_name(self, seed: Endpoint) -> None:
        if self.resolver is None:
            return
        source = DnsSeedSource(
            self.resolver, seed.host, seed.port, _NoRetryClock(), self._found,  # type: ignore[arg-type]
            server="the resolver",
        )
        source.start()

    def stop(self) -> None:
        if self.dns_source is not None:
            self.dns_source.stop()


class _NoRetryClock:
    """
    A clock for a one-shot lookup of a seed's host name: the lookup is not
    retried (the seed stays unknown and the failure is logged).
    """

    def seconds(self) -> float:
        return 0.0

    def callLater(self, delay: float, f: Callable[..., object], *a: Any) -> Any:
        return None


def make_resolver(config: Any, reactor: Any) -> Any:
    """
    A twisted.names resolver: the C{ClusterDnsServer} when set, else the
    system's.
    """
    from twisted.names import cache, client, hosts, resolve

    server = config.cluster_dns_server
    if server is not None:
        return client.Resolver(servers=[(server.host, server.port)], reactor=reactor)
    # The system's resolver (hosts file, then resolv.conf's servers) on
    # C{reactor}: twisted.names.client.createResolver would use the global one.
    return resolve.ResolverChain(
        [
            hosts.Resolver(b"/etc/hosts"),
            cache.CacheResolver(reactor=reactor),
            client.Resolver(b"/etc/resolv.conf", reactor=reactor),
        ]
    )
