# -*- test-case-name: estwisted.tls.test.test_contexts -*-
"""
The Twisted adapters every TLS listener and dialled connection goes
through: a gate that refuses a plaintext client cleanly (one log line, the
connection closed; HTTP clients get a plain C{400} saying the port speaks
HTTPS) and closes a connection that has not completed its handshake within
L{HANDSHAKE_TIMEOUT}; a watch that explains failed handshakes
(L{explain_handshake_failure}); and the certificate L{Verifier} that
applies the rules of L{estwisted.tls.checks} to a peer's chain.  Every
refusal is logged with the reason and the certificate's subject, once a
minute per peer and reason (L{RepeatLimiter}).

They read the node's TLS state through L{HandshakeOwner}
(L{estwisted.tls.contexts.NodeTLS} provides it).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any, Optional
from typing import Protocol as TypingProtocol

import attrs
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from estwisted.tls.certs import CertificateFacts, facts_of
from estwisted.tls.checks import (
    explain_verify_error,
    identity_problem,
    node_identity_problem,
    validity_problem,
)

__all__ = [
    "GateFactory",
    "HANDSHAKE_TIMEOUT",
    "HandshakeOwner",
    "RepeatLimiter",
    "Verifier",
    "WatchFactory",
    "alpn_select",
    "explain_handshake_failure",
]

#: One namespace for every TLS module, as before they were split.
_log = Logger(namespace="estwisted.tls.contexts")

#: How long a new connection on a TLS port may take to complete its TLS
#: handshake before it is closed (seconds).
HANDSHAKE_TIMEOUT = 30.0


class HandshakeOwner(TypingProtocol):
    """
    What the adapters read of the node's TLS state.

    @ivar clock: the reactor's clock, for handshake timeouts and log rates.
    @ivar limiter: rate limit of repeated refusal log lines.
    """

    clock: IReactorTime
    limiter: RepeatLimiter

    def now(self) -> datetime.datetime:
        """
        The current time, as an aware UTC datetime.
        """


def _peer_text(address: Optional[IAddress]) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"{host}:{port}"


def _ssl_error_text(value: BaseException) -> str:
    """
    The reason strings of a pyOpenSSL error.
    """
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list):
        reasons = [str(item[-1]) for item in args[0] if isinstance(item, tuple) and item]
        if reasons:
            return "; ".join(reasons)
    return str(value)


def explain_handshake_failure(text: str, internal: bool) -> str:
    """
    A failed TLS handshake (OpenSSL's reason text) in plain words.
    """
    lowered = text.lower()
    if "peer did not return a certificate" in lowered:
        return (
            "it presented no certificate; this port accepts only cluster nodes with a "
            "certificate from the cluster CA"
            if internal
            else "it presented no certificate"
        )
    if "unknown ca" in lowered:
        return (
            "the peer does not trust this node's certificate (unknown CA): give it the CA "
            "that signed this node's certificate"
        )
    if "certificate expired" in lowered:
        return "the peer says this node's certificate has expired"
    if "bad certificate" in lowered or "certificate unknown" in lowered:
        return f"the peer refused this node's certificate ({text})"
    if "http request" in lowered or "wrong version number" in lowered:
        return "the client did not speak TLS"
    if "no shared cipher" in lowered or "version" in lowered or "protocol" in lowered:
        return f"no TLS version or cipher in common ({text})"
    return f"TLS handshake failed ({text})"


class RepeatLimiter:
    """
    Keeps a peer that retries every 100 ms from flooding the log: the first
    of a kind of message is logged, repeats within C{interval} seconds are
    counted, and the next one logged after that says how many were not.
    """

    def __init__(self, interval: float = 60.0, capacity: int = 1000) -> None:
        self.interval = interval
        self.capacity = capacity
        self._seen: dict[tuple[str, ...], list[float]] = {}

    def check(self, key: tuple[str, ...], now: float) -> Optional[int]:
        """
        C{None} to stay silent; otherwise the number of repeats not logged
        since this kind was last logged.
        """
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        if entry is None and len(self._seen) >= self.capacity:
            self._seen.clear()
        self._seen[key] = [now, 0]
        return int(entry[1]) if entry is not None else 0


def _repeats(count: int) -> str:
    if not count:
        return ""
    return f" [{count} more like this in the last minute were not logged]"


class _ConnectionState:
    """
    What one TLS connection's verifier and handshake watcher share.
    """

    def __init__(self, listener: str, internal: bool) -> None:
        self.listener = listener
        self.internal = internal
        self.refused = False
        self.handshake_done = False
        self.on_handshake: Optional[Callable[[], None]] = None


@implementer(IHandshakeListener)
class _HandshakeWatch(ProtocolWrapper):
    """
    Between the TLS layer and the application protocol: logs a handshake
    that failed for a reason the verifier did not already log.
    """

    tls_state: _ConnectionState

    def handshakeCompleted(self) -> None:
        self.tls_state.handshake_done = True
        if self.tls_state.on_handshake is not None:
            self.tls_state.on_handshake()
            self.tls_state.on_handshake = None
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state = self.tls_state
        if not state.handshake_done and not state.refused and isinstance(reason.value, SSL.Error):
            address = self.transport.getPeer() if self.transport else None
            why = explain_handshake_failure(_ssl_error_text(reason.value), state.internal)
            node_tls: HandshakeOwner = self.factory.node_tls
            repeats = node_tls.limiter.check(
                ("handshake", state.listener, str(getattr(address, "host", "")), why),
                node_tls.clock.seconds(),
            )
            if repeats is not None:
                _log.warn(
                    "TLS handshake with {peer} on {listener} failed: {why}{repeats}",
                    peer=_peer_text(address),
                    listener=state.listener,
                    why=why,
                    repeats=_repeats(repeats),
                )
        ProtocolWrapper.connectionLost(self, reason)


def alpn_select(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    ALPN on the server: the first protocol the application factory accepts
    that the client offered; none (the connection goes on) otherwise.
    """
    tls_protocol = connection.get_app_data()
    watch = getattr(getattr(tls_protocol, "factory", None), "wrappedFactory", None)
    acceptable = watch.acceptable_protocols() if isinstance(watch, WatchFactory) else ()
    for protocol in acceptable:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


class WatchFactory(WrappingFactory):
    protocol = _HandshakeWatch
    noisy = False

    def acceptable_protocols(self) -> list[bytes]:
        """
        The ALPN protocols of the application factory, if it has any.
        """
        negotiation = IProtocolNegotiationFactory(self.wrappedFactory, None)
        if negotiation is None:
            return []
        return list(negotiation.acceptableProtocols())

    def __init__(
        self, wrapped: IProtocolFactory, listener: str, internal: bool, node_tls: HandshakeOwner
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.listener = listener
        self.internal = internal
        self.node_tls = node_tls

    def buildProtocol(self, addr: Optional[IAddress]) -> ProtocolWrapper:
        protocol = super().buildProtocol(addr)
        protocol.tls_state = _ConnectionState(  # type: ignore[attr-defined]
            self.listener, self.internal
        )
        return protocol


_HTTP_HINT = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 44\r\n\r\nThis port speaks HTTPS only: use https://.\r\n"
)
assert len(b"This port speaks HTTPS only: use https://.\r\n") == 44


class _TLSOnlyGate(Protocol):
    """
    Below the TLS layer: the first byte of a TLS connection is a handshake
    record (0x16).  Anything else is a plaintext client, refused with one
    log line (and a plain C{400} for HTTP) before any TLS state exists.  A
    connection that has not completed its handshake within
    L{HANDSHAKE_TIMEOUT} seconds (silent, or stalled half-way) is closed.
    """

    def __init__(self, gate_factory: GateFactory, addr: Optional[IAddress]) -> None:
        self._factory = gate_factory
        self._addr = addr
        self._inner: Optional[Protocol] = None
        self._closed = False
        self._timer: Any = None

    def connectionMade(self) -> None:
        self._timer = self._factory.clock.callLater(HANDSHAKE_TIMEOUT, self._silent)

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _silent(self) -> None:
        self._timer = None
        self._closed = True
        _log.info(
            "Closed a connection from {peer} to {listener}: no TLS handshake within "
            "{seconds:.0f} seconds",
            peer=_peer_text(self.transport.getPeer()),  # type: ignore[union-attr]
            listener=self._factory.listener,
            seconds=HANDSHAKE_TIMEOUT,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._inner is None:
            if self._closed:
                return
            if data[:1] != b"\x16":
                self._cancel()
                self._closed = True
                address = self.transport.getPeer()  # type: ignore[union-attr]
                node_tls = self._factory.node_tls
                repeats = node_tls.limiter.check(
                    ("plaintext", self._factory.listener, str(getattr(address, "host", ""))),
                    node_tls.clock.seconds(),
                )
                if repeats is not None:
                    _log.warn(
                        "Refused a plaintext (non-TLS) connection from {peer} to {listener}, "
                        "which speaks TLS only; closed it{repeats}",
                        peer=_peer_text(address),
                        listener=self._factory.listener,
                        repeats=_repeats(repeats),
                    )
                if self._factory.http:
                    self.transport.write(_HTTP_HINT)  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            inner = self._factory.tls.buildProtocol(self._addr)
            if inner is None:
                self._closed = True
                self.transport.loseConnection()
                return
            self._inner = inner
            state = getattr(getattr(inner, "wrappedProtocol", None), "tls_state", None)
            if isinstance(state, _ConnectionState):
                state.on_handshake = self._cancel
            inner.makeConnection(self.transport)
        self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel()
        if self._inner is not None:
            self._inner.connectionLost(reason)


class GateFactory(Factory):
    noisy = False

    def __init__(
        self, tls: TLSMemoryBIOFactory, listener: str, http: bool, node_tls: HandshakeOwner
    ) -> None:
        self.tls = tls
        self.listener = listener
        self.http = http
        self.node_tls = node_tls
        self.clock = node_tls.clock

    def logPrefix(self) -> str:
        return f"{self.listener} (TLS)"

    def doStart(self) -> None:
        self.tls.doStart()

    def doStop(self) -> None:
        self.tls.doStop()

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:
        return _TLSOnlyGate(self, addr)


class Verifier:
    """
    The certificate verification callback of one connection: OpenSSL checks
    the chain, dates and purpose; this adds the node identity and SAN rules
    and logs the first refusal with the reason and the subject.
    """

    def __init__(
        self,
        node_tls: HandshakeOwner,
        tls_protocol: Any,
        listener: str,
        node_common_name: Optional[str],
        dialled: Optional[str],
        also_accept: Sequence[str],
    ) -> None:
        self._node_tls = node_tls
        self._tls_protocol = tls_protocol
        self._listener = listener
        self._node_common_name = node_common_name
        self._dialled = dialled
        self._also_accept = tuple(also_accept)
        wrapped = getattr(tls_protocol, "wrappedProtocol", None)
        state = getattr(wrapped, "tls_state", None)
        self._state = state if isinstance(state, _ConnectionState) else None

    def _refuse(self, reason: str, facts: CertificateFacts) -> bool:
        if self._state is not None:
            if self._state.refused:
                return False
            self._state.refused = True
        transport = getattr(self._tls_protocol, "transport", None)
        address = transport.getPeer() if transport is not None else None
        peer = _peer_text(address)
        if self._dialled is not None:
            who = f"the peer {self._dialled} ({peer})"
        else:
            who = f"the peer {peer}"
        repeats = self._node_tls.limiter.check(
            ("refused", self._listener, str(getattr(address, "host", "")), reason),
            self._node_tls.clock.seconds(),
        )
        if repeats is not None:
            _log.warn(
                "Refused the certificate of {who} on {listener}: {reason} "
                "(certificate subject: {subject}; issuer: {issuer}){repeats}",
                who=who,
                listener=self._listener,
                reason=reason,
                subject=facts.subject,
                issuer=facts.issuer,
                peer=peer,
                repeats=_repeats(repeats),
            )
        return False

    def __call__(
        self, connection: SSL.Connection, certificate: crypto.X509, code: int, depth: int,
        ok: int,
    ) -> bool:
        try:
            return self._verify(connection, certificate, code, depth, ok)
        except Exception:
            # Never let an exception escape into OpenSSL: refuse, and say why.
            _log.failure("Certificate verification failed unexpectedly; refusing the peer")
            return False

    def _verify(
        self, connection: SSL.Connection, certificate: crypto.X509, code: int, depth: int,
        ok: int,
    ) -> bool:
        if self._state is not None and self._state.refused:
            return False
        facts = facts_of(certificate.to_cryptography())
        if not ok:
            shown = facts
            if depth > 0:
                # The peer's own certificate, when OpenSSL already has it (as
                # a client); a server only sees the CA that failed.
                chain = connection.get_peer_cert_chain(as_cryptography=True)
                if chain:
                    shown = facts_of(chain[0])
                else:
                    shown = attrs.evolve(
                        facts, subject=f"{facts.subject}, a CA certificate the peer sent"
                    )
            return self._refuse(explain_verify_error(code, depth, facts), shown)
        if depth > 0:
            return True
        problem = None
        if self._node_common_name is not None:
            problem = node_identity_problem(facts, self._node_common_name)
        if problem is None and self._dialled is not None:
            problem = identity_problem(facts, self._dialled, self._also_accept)
        if problem is None:
            problem = validity_problem(facts, self._node_tls.now())
        if problem is not None:
            return self._refuse(problem, facts)
        return True


