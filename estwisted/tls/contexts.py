# -*- test-case-name: estwisted.tls.test.test_contexts -*-
"""
TLS for every listener, mutual TLS between nodes, and the rules that decide
which certificates are accepted.

Three layers, from the bottom, one module each:

  1. L{estwisted.tls.checks}: the pure rules (no I/O, no reactor), each
     returning C{None} or a reason in plain words: the SAN check against
     the address dialled, the reserved node common name, key usage,
     validity, OpenSSL verification codes as sentences, and secure by
     default (no plaintext on a non-loopback address without C{Insecure}).
  2. L{estwisted.tls.loading} (files, no reactor): the node certificate,
     its key and the trusted roots, checked, and the OpenSSL context built
     from them (TLS 1.2 minimum).
  3. Twisted adapters: L{estwisted.tls.handshake} has the listener gate
     (plaintext clients refused cleanly, L{estwisted.tls.handshake.HANDSHAKE_TIMEOUT}), the
     handshake watch and the certificate verifier; this module has
     L{NodeTLS}, which holds the current material (swapped by
     L{NodeTLS.reload}, which SIGHUP and the admin route call) and makes
     server factories for the listeners and client connection creators
     for dialling peers.  L{NodeTLS.watch_expiry} warns before the node's
     own certificate expires.

The service calls L{node_tls_from_config} at startup (which raises
L{CertificateError} with the one line to refuse to start with),
L{tls_listeners} to wrap its listeners, and L{install_reload_signal} for
SIGHUP.  Code that dials peers uses L{NodeTLS.client_factory},
L{NodeTLS.client_creator} or L{NodeTLS.https_policy}.

Which listener verifies what:

  - external TCP and HTTP: server certificate only; a client certificate is
    optional, and if one is presented it must chain to the trusted roots;
  - internal TCP and HTTP (mutual TLS, unless C{Insecure}): the peer must
    present a certificate that chains to the trusted roots, is in date, may
    be used as a TLS client, carries the reserved node common name and at
    least one IP or DNS SAN;
  - dialling a peer (L{NodeTLS.client_creator}): the same, plus the peer's
    SANs must match the address or name dialled (or the cluster DNS name
    when nodes are discovered through DNS).
"""


from __future__ import annotations

import datetime
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional

from attrs import frozen
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from estwisted.node.config import NodeConfig
from estwisted.tls.certs import CertificateFacts
from estwisted.tls.checks import (
    TLSConfig,
    as_ip,
    identity_matches,
    moment_text,
    plaintext_refusal,
    san_text,
    utc_from_seconds,
)
from estwisted.tls.handshake import GateFactory, RepeatLimiter, Verifier, WatchFactory
from estwisted.tls.loading import (
    EXPIRY_WARNING_DAYS,
    CertificateError,
    Material,
    TLSSettings,
    load_material,
)

__all__ = [
    "CertificateError",
    "NodeTLS",
    "ReloadOutcome",
    "address_warnings",
    "install_reload_signal",
    "node_tls_from_config",
    "tls_listeners",
]

#: One namespace for every TLS module, as before they were split.
_log = Logger(namespace="estwisted.tls.contexts")

@implementer(IOpenSSLServerConnectionCreator)
class _ServerCreator:
    def __init__(self, node_tls: NodeTLS, listener: str, internal: bool) -> None:
        self._node_tls = node_tls
        self._listener = listener
        self._mutual = internal and node_tls.settings.mutual

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        material = self._node_tls.material
        connection = SSL.Connection(material.context, None)
        if self._mutual:
            mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            cn: Optional[str] = self._node_tls.settings.reserved_common_name
        elif material.roots:
            mode, cn = SSL.VERIFY_PEER, None
        else:
            mode, cn = SSL.VERIFY_NONE, None
        verifier = Verifier(self._node_tls, tls_protocol, self._listener, cn, None, ())
        connection.set_verify(mode, verifier)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _PeerClientCreator:
    def __init__(
        self, node_tls: NodeTLS, dialled: str, also_accept: Sequence[str], listener: str
    ) -> None:
        self._node_tls = node_tls
        self._dialled = dialled
        self._also_accept = tuple(also_accept)
        self._listener = listener

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        material = self._node_tls.material
        connection = SSL.Connection(material.context, None)
        if as_ip(self._dialled) is None:
            try:
                server_name = self._dialled.encode("idna")
            except UnicodeError:  # e.g. an underscore: send it as it is
                server_name = self._dialled.encode("ascii", "replace")
            connection.set_tlsext_host_name(server_name)
        verifier = Verifier(
            self._node_tls,
            tls_protocol,
            self._listener,
            self._node_tls.settings.reserved_common_name,
            self._dialled,
            self._also_accept,
        )
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verifier)
        return connection


@implementer(IPolicyForHTTPS)
class _PeerPolicy:
    def __init__(self, node_tls: NodeTLS, also_accept: Sequence[str]) -> None:
        self._node_tls = node_tls
        self._also_accept = tuple(also_accept)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii")
        return self._node_tls.client_creator(host, self._also_accept, f"https://{host}:{port}")


@frozen
class ReloadOutcome:
    """
    The result of L{NodeTLS.reload}.
    """

    ok: bool
    message: str


class NodeTLS:
    """
    The node's TLS state: the current L{Material} and the factories and
    connection creators that always use the current one, so that
    L{reload} takes effect for every new connection without a restart.
    """

    def __init__(self, settings: TLSSettings, clock: IReactorTime, material: Material) -> None:
        self.settings = settings
        self.clock = clock
        self.material = material
        self.limiter = RepeatLimiter()

    @classmethod
    def load(cls, settings: TLSSettings, clock: IReactorTime) -> NodeTLS:
        """
        Load and check the material, log its warnings and a summary.

        @raise CertificateError: the setup is unusable.
        """
        material = load_material(settings, utc_from_seconds(clock.seconds()))
        node_tls = cls(settings, clock, material)
        node_tls._announce("Loaded")
        return node_tls

    def now(self) -> datetime.datetime:
        return utc_from_seconds(self.clock.seconds())

    def _announce(self, verb: str) -> None:
        m = self.material
        for warning in m.warnings:
            _log.warn("Certificate warning: {text}", text=warning)
        _log.info(
            "{verb} node certificate {subject} (issuer {issuer}; SANs {sans}; valid until "
            "{until}); {roots} trusted root(s)",
            verb=verb,
            subject=m.facts.subject,
            issuer=m.facts.issuer,
            sans=san_text(m.facts),
            until=moment_text(m.facts.not_after),
            roots=len(m.roots),
        )

    def reload(self) -> ReloadOutcome:
        """
        Read the certificate files again.  On success new connections use
        them at once (existing connections keep theirs); on failure the
        previous certificate stays in use and the reason is logged.
        """
        try:
            material = load_material(self.settings, self.now())
        except CertificateError as e:
            _log.error(
                "Certificate reload failed; still using the previous certificate: {reason}",
                reason=str(e),
            )
            return ReloadOutcome(False, f"reload failed, previous certificate kept: {e}")
        self.material = material
        self._announce("Reloaded")
        return ReloadOutcome(True, f"reloaded {material.facts.subject}")

    def check_expiry(self) -> Optional[str]:
        """
        Log (and return) a line when the current certificate expired or
        expires within L{EXPIRY_WARNING_DAYS} days; C{None} otherwise.
        """
        facts = self.material.facts
        now = self.now()
        if now > facts.not_after:
            line = (
                f"The node certificate {facts.subject} expired on {moment_text(facts.not_after)}: "
                "peers and clients refuse it; renew it and send SIGHUP"
            )
            _log.error("{line}", line=line)
            return line
        if facts.not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            line = (
                f"The node certificate {facts.subject} expires on {moment_text(facts.not_after)}; "
                "renew it and send SIGHUP"
            )
            _log.warn("{line}", line=line)
            return line
        return None

    def watch_expiry(self, interval: float = 6 * 3600.0) -> LoopingCall:
        """
        Call L{check_expiry} every C{interval} seconds (on the clock), so a
        node that runs for months says so before its certificate expires.
        """
        call = LoopingCall(self.check_expiry)
        call.clock = self.clock
        call.start(interval, now=False).addErrback(
            lambda f: _log.failure("Certificate expiry check failed", f)
        )
        return call

    def server_factory(
        self, factory: IProtocolFactory, listener: str, internal: bool, http: bool
    ) -> IProtocolFactory:
        """
        Wrap an application factory for a TLS listener: a plaintext gate,
        the TLS layer (mutual on internal listeners unless C{Insecure}) and
        a handshake watch.
        """
        watch = WatchFactory(factory, listener, internal, self)
        tls = TLSMemoryBIOFactory(
            _ServerCreator(self, listener, internal), False, watch, clock=self.clock
        )
        return GateFactory(tls, listener, http, self)

    def client_creator(
        self,
        dialled: str,
        also_accept: Optional[Sequence[str]] = None,
        listener: Optional[str] = None,
    ) -> IOpenSSLClientConnectionCreator:
        """
        A connection creator for dialling the peer node at C{dialled} (host
        name or IP address): the node certificate is presented, and the
        peer's must chain to the trusted roots, carry the reserved node
        common name, and match C{dialled} or C{also_accept} (default: the
        cluster DNS name when discovering through DNS).
        """
        accept = self.settings.also_accept if also_accept is None else tuple(also_accept)
        return _PeerClientCreator(self, dialled, accept, listener or f"the link to {dialled}")

    def client_factory(
        self,
        factory: IProtocolFactory,
        dialled: str,
        also_accept: Optional[Sequence[str]] = None,
    ) -> IProtocolFactory:
        """
        Wrap an application factory for an outgoing TLS connection to a
        peer (see L{client_creator}); failures are logged.
        """
        listener = f"the link to {dialled}"
        watch = WatchFactory(factory, listener, True, self)
        return TLSMemoryBIOFactory(
            self.client_creator(dialled, also_accept, listener), True, watch, clock=self.clock
        )

    def https_policy(self, also_accept: Optional[Sequence[str]] = None) -> IPolicyForHTTPS:
        """
        For C{Agent(reactor, contextFactory=...)} / treq: HTTPS to peer
        nodes with the checks of L{client_creator}.
        """
        accept = self.settings.also_accept if also_accept is None else tuple(also_accept)
        return _PeerPolicy(self, accept)


# --- wiring helpers (called by estwisted.node.service) ---------------------------------------


def node_tls_from_config(config: TLSConfig, clock: IReactorTime) -> Optional[NodeTLS]:
    """
    Decide and load the node's TLS setup at startup.

    @return: C{None} when no certificate is configured (plaintext, allowed
        only on loopback or with C{Insecure}).
    @raise CertificateError: one line to refuse to start with.
    """
    refusal = plaintext_refusal(config)
    if refusal is not None:
        raise CertificateError(refusal)
    if not config.certificate_file:
        return None
    try:
        node_tls = NodeTLS.load(TLSSettings.from_config(config), clock)
    except CertificateError as e:
        raise CertificateError(f"Refusing to start: {e}") from None
    for warning in address_warnings(config, node_tls.material.facts):
        _log.warn("Certificate warning: {text}", text=warning)
    node_tls.watch_expiry()
    return node_tls


def address_warnings(config: TLSConfig, facts: CertificateFacts) -> list[str]:
    """
    Warnings about advertised addresses the node certificate does not cover:
    peers and clients dialling them would refuse it.
    """
    out = []
    seen = set()
    for option, address in (
        ("IntIp", config.advertised_int_ip),
        ("ExtIp", config.advertised_ext_ip),
    ):
        ip = as_ip(address)
        if address in seen or (ip is not None and ip.is_unspecified):
            continue
        seen.add(address)
        if not identity_matches(facts, address):
            out.append(
                f"the node certificate {facts.subject} does not cover {address} ({option} as "
                f"advertised): its subject alternative names are {san_text(facts)}; peers and "
                "clients dialling that address will refuse it"
            )
    return out


def tls_listeners(
    config: NodeConfig,
    node_tls: Optional[NodeTLS],
    clock: IReactorTime,
    external_tcp: IProtocolFactory,
    internal_tcp: IProtocolFactory,
    external_http: IProtocolFactory,
    internal_http: IProtocolFactory,
) -> list[tuple[str, str, int, IProtocolFactory]]:
    """
    The node's listeners as C{(name, host, port, factory)}.

    With a certificate and without C{Insecure}, every listener speaks TLS
    (mutual TLS on the internal ones).  With C{Insecure} the four main
    listeners are plaintext.  C{ExtSecureTcpPort}/C{IntSecureTcpPort}, when
    set and a certificate is configured, add TLS TCP listeners (Event Store
    v5 style); C{DisableInsecureTcp} drops the plaintext TCP listeners.
    """
    c = config
    main = [
        ("external TCP", c.ext_ip, c.ext_tcp_port, external_tcp, False, False),
        ("internal TCP", c.int_ip, c.int_tcp_port, internal_tcp, True, False),
        ("external HTTP", c.ext_ip, c.ext_http_port, external_http, False, True),
        ("internal HTTP", c.int_ip, c.int_http_port, internal_http, True, True),
    ]
    all_tls = node_tls is not None and not c.insecure
    out: list[tuple[str, str, int, IProtocolFactory]] = []
    for name, host, port, factory, internal, http in main:
        if all_tls:
            assert node_tls is not None
            wrapped = node_tls.server_factory(factory, name, internal, http)
            out.append((f"{name} (TLS)", host, port, wrapped))
        elif not (c.disable_insecure_tcp and not http):
            out.append((name, host, port, factory))
    if node_tls is None:
        for option, port in (("ExtSecureTcpPort", c.ext_secure_tcp_port),
                             ("IntSecureTcpPort", c.int_secure_tcp_port)):
            if port:
                _log.warn(
                    "{option} is {port} but no CertificateFile is set: nothing listens there",
                    option=option,
                    port=port,
                )
    else:
        for name, host, port, factory, internal in (
            ("external secure TCP", c.ext_ip, c.ext_secure_tcp_port, external_tcp, False),
            ("internal secure TCP", c.int_ip, c.int_secure_tcp_port, internal_tcp, True),
        ):
            if port:
                out.append(
                    (f"{name} (TLS)", host, port,
                     node_tls.server_factory(factory, name, internal, False))
                )
    return out


def install_reload_signal(
    reactor: Any, reload: Callable[[], object]
) -> Callable[[], None]:
    """
    Call C{reload} in the reactor thread on SIGHUP.

    @return: a function restoring the previous handler.  Does nothing where
        there is no SIGHUP or off the main thread.
    """
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sighup(signum: int, frame: object) -> None:
        reactor.callFromThread(_reload_logged, reload)

    previous = signal.signal(signal.SIGHUP, on_sighup)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore


def _reload_logged(reload: Callable[[], object]) -> None:
    _log.info("SIGHUP received: reloading certificates")
    try:
        reload()
    except Exception:
        _log.failure("Certificate reload failed")


