# -*- test-case-name: tests.test_cluster_membership -*-
"""
A tiny authoritative DNS server for system tests of DNS discovery, on
loopback only (twisted.names):

    python -m tests.cluster_dns PORT NAME ADDRESS [ADDRESS ...]

answers A queries for NAME with one record per ADDRESS (UDP and TCP on
127.0.0.1:PORT) and NXDOMAIN for every other name.  It prints C{ready}
once listening and runs until killed.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase


class StaticAuthority(ResolverBase):
    """
    Knows one name and its A records.
    """

    def __init__(self, name: str, addresses: list[str]) -> None:
        super().__init__()
        self.name = name.lower().rstrip(".").encode("ascii")
        self.addresses = addresses

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Any:
        if name.lower().rstrip(b".") != self.name:
            return defer.fail(error.DomainError(name))
        if type not in (dns.A, dns.ALL_RECORDS):
            return defer.succeed(([], [], []))
        answers = [
            dns.RRHeader(name, dns.A, dns.IN, 1, dns.Record_A(a, 1), auth=True)
            for a in self.addresses
        ]
        return defer.succeed((answers, [], []))


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    port, name, addresses = int(argv[1]), argv[2], argv[3:]
    factory = server.DNSServerFactory(authorities=[StaticAuthority(name, addresses)])
    protocol = dns.DNSDatagramProtocol(controller=factory)
    reactor.listenUDP(port, protocol, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.listenTCP(port, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv)
