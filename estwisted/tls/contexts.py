# -*- test-case-name: estwisted.tls.test.test_contexts -*-
"""
TLS for every listener, mutual TLS between nodes, and the rules that decide
which certificates are accepted.

Three layers, from the bottom:

  1. Pure rules (no I/O, no reactor), each returning C{None} or a reason in
     plain words: L{dns_name_matches}, L{identity_matches},
     L{identity_problem} (the SAN check against the address dialled, RFC
     6125 style), L{node_identity_problem} (the reserved node common name),
     L{usage_problem}, L{validity_problem}, L{explain_verify_error} (OpenSSL
     verification codes as sentences) and L{plaintext_refusal} (secure by
     default: no plaintext on a non-loopback address without C{Insecure}).
  2. Loading (files, no reactor): L{load_material} reads the node
     certificate (PEM with its key file, PEM with the key inside, PKCS#12,
     or DER), the trusted roots directory, checks that the key belongs to the
     certificate and that the node's own chain builds to a trusted root, and
     builds the OpenSSL context (TLS 1.2 minimum).
  3. Twisted adapters: L{NodeTLS} holds the current material (swapped by
     L{NodeTLS.reload}, which SIGHUP and the admin route call) and makes
     server factories for the listeners and client connection creators for
     dialling peers.  Every listener gets a gate that refuses a plaintext
     client cleanly (one log line, the connection closed; HTTP clients get a
     plain C{400} saying the port speaks HTTPS) and closes a connection that
     has not completed its handshake within L{HANDSHAKE_TIMEOUT}.  Every
     refused certificate is logged with the reason and the certificate's
     subject, once a minute per peer and reason (L{RepeatLimiter}).
     L{NodeTLS.watch_expiry} warns before the node's own certificate
     expires.

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
import ipaddress
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional

import attrs
from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from estwisted.core.errors import ConfigError
from estwisted.tls.certs import CertificateFacts, PrivateKey, facts_of

__all__ = [
    "CertificateError",
    "address_warnings",
    "Material",
    "NodeTLS",
    "ReloadOutcome",
    "RepeatLimiter",
    "TLSSettings",
    "dns_name_matches",
    "explain_verify_error",
    "identity_matches",
    "identity_problem",
    "install_reload_signal",
    "is_loopback",
    "load_material",
    "node_identity_problem",
    "node_tls_from_config",
    "plaintext_refusal",
    "tls_listeners",
    "usage_problem",
    "validity_problem",
]

_log = Logger(namespace="estwisted.tls.contexts")

#: How long a new connection on a TLS port may take to complete its TLS
#: handshake before it is closed (seconds).
HANDSHAKE_TIMEOUT = 30.0
#: Warn at startup when the node certificate expires within this many days.
EXPIRY_WARNING_DAYS = 30


class CertificateError(ConfigError):
    """
    The node's own certificate setup is unusable; the message says why in
    plain words, naming the file or option.
    """


# --- pure rules --------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """
    Whether C{host} (an IP address or C{localhost}) is a loopback address.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plaintext_refusal(config: Any) -> Optional[str]:
    """
    Secure by default: the one line to refuse to start with when a
    plaintext endpoint would be bound to a non-loopback address without
    C{Insecure: true}, else C{None}.

    Plaintext endpoints exist only when no certificate is configured (with a
    certificate every listener speaks TLS).
    """
    if config.insecure or config.certificate_file:
        return None
    for name, host in (("ExtIp", config.ext_ip), ("IntIp", config.int_ip)):
        if not is_loopback(host):
            source = config.source_of(name) if hasattr(config, "source_of") else "config"
            return (
                f"Refusing to start: {name} is {host} ({source}), not a loopback address, "
                "and no certificate is configured; set CertificateFile, "
                "CertificatePrivateKeyFile and TrustedRootCertificatesPath to serve TLS, or "
                "Insecure: true to serve plaintext on purpose"
            )
    return None


def _as_ip(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def dns_name_matches(pattern: str, host: str) -> bool:
    """
    RFC 6125 matching of one SAN DNS name against a host name: case
    insensitive, trailing dots ignored; a wildcard only as the whole first
    label, matching exactly one label, and only with at least two labels
    after it (C{*.cluster.example} yes, C{*.example} and C{f*.a.b} no).  An
    IP address never matches a DNS name.
    """
    pattern = pattern.strip().lower().rstrip(".")
    host = host.strip().lower().rstrip(".")
    if not pattern or not host or _as_ip(host) is not None:
        return False
    if "*" not in pattern:
        return pattern == host
    p_labels = pattern.split(".")
    h_labels = host.split(".")
    if p_labels[0] != "*" or "*" in "".join(p_labels[1:]) or len(p_labels) < 3:
        return False
    if len(h_labels) != len(p_labels) or not h_labels[0]:
        return False
    return h_labels[1:] == p_labels[1:]


def identity_matches(facts: CertificateFacts, name: str) -> bool:
    """
    Whether a certificate is valid for C{name} (a host name or an IP
    address): IP addresses compare exactly with the IP SANs; host names
    match the DNS SANs (L{dns_name_matches}); the common name is consulted
    only when the certificate has no SAN at all.
    """
    ip = _as_ip(name)
    has_sans = bool(facts.dns_names or facts.ip_addresses)
    if ip is not None:
        if any(_as_ip(s) == ip for s in facts.ip_addresses):
            return True
        return not has_sans and any(_as_ip(cn) == ip for cn in facts.common_names)
    if any(dns_name_matches(s, name) for s in facts.dns_names):
        return True
    return not has_sans and any(dns_name_matches(cn, name) for cn in facts.common_names)


def _san_text(facts: CertificateFacts) -> str:
    sans = [f"IP {ip}" for ip in facts.ip_addresses] + [f"DNS {d}" for d in facts.dns_names]
    return ", ".join(sans) if sans else "none"


def identity_problem(
    facts: CertificateFacts, dialled: str, also_accept: Sequence[str] = ()
) -> Optional[str]:
    """
    C{None} when the certificate matches the address or name dialled (or one
    of C{also_accept}, e.g. the cluster DNS name), else the reason.
    """
    for name in (dialled, *also_accept):
        if identity_matches(facts, name):
            return None
    extra = f" nor {', '.join(also_accept)}" if also_accept else ""
    return (
        f"SAN mismatch: the certificate's subject alternative names ({_san_text(facts)}) do "
        f"not match {dialled}, the address dialled{extra}"
    )


def node_identity_problem(facts: CertificateFacts, reserved_common_name: str) -> Optional[str]:
    """
    C{None} when the certificate identifies a cluster node: its common name
    is the reserved node common name and it has at least one IP or DNS SAN.
    """
    if reserved_common_name not in facts.common_names:
        cn = ", ".join(facts.common_names) or "missing"
        return (
            f"wrong common name: it is {cn}, not the reserved node common name "
            f"{reserved_common_name} (CertificateReservedNodeCommonName)"
        )
    if not (facts.dns_names or facts.ip_addresses):
        return "it has no IP or DNS subject alternative name; a node certificate needs one"
    return None


def usage_problem(facts: CertificateFacts, role: str) -> Optional[str]:
    """
    C{None} when the certificate may act as a TLS C{role} (C{"server"} or
    C{"client"}): not a CA, extended key usage (if present) includes
    serverAuth/clientAuth, key usage (if present) allows a handshake.
    """
    want = "serverAuth" if role == "server" else "clientAuth"
    if facts.is_ca:
        return f"wrong key usage: it is a CA certificate, not one for a TLS {role}"
    eku = facts.extended_key_usage
    if eku is not None and want not in eku and "anyExtendedKeyUsage" not in eku:
        return (
            f"wrong key usage: its extended key usage ({', '.join(sorted(eku)) or 'empty'}) "
            f"lacks {want}, needed to act as a TLS {role}"
        )
    ku = facts.key_usage
    if ku is not None and not ku & {"digital_signature", "key_encipherment", "key_agreement"}:
        return (
            f"wrong key usage: its key usage ({', '.join(sorted(ku)) or 'empty'}) allows "
            "neither digital signature nor key encipherment"
        )
    return None


def _when(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def validity_problem(facts: CertificateFacts, now: datetime.datetime) -> Optional[str]:
    """
    C{None} when C{now} lies within the certificate's validity.
    """
    if now < facts.not_before:
        return f"not yet valid: valid from {_when(facts.not_before)}"
    if now > facts.not_after:
        return f"expired on {_when(facts.not_after)}"
    return None


#: OpenSSL X509_V_ERR_* codes that users meet, as sentences.
_VERIFY_ERRORS = {
    2: "unknown CA: it was issued by {issuer}, which is not among the trusted roots",
    20: "unknown CA: it was issued by {issuer}, which is not among the trusted roots",
    21: "unknown CA: it was issued by {issuer}, which is not among the trusted roots",
    18: "unknown CA: it is self-signed and is not one of the trusted roots",
    19: "unknown CA: its chain ends at {issuer}, a root that is not trusted",
    7: "bad signature: it was not signed by the key of {issuer}",
    9: "not yet valid: valid from {not_before}",
    10: "expired on {not_after}",
    22: "its certificate chain is too long",
    23: "it has been revoked",
    24: "invalid CA: {subject} in its chain is not a CA certificate",
    25: "path length exceeded: {subject} may not sign this chain",
    26: "wrong key usage: it may not be used for this purpose (extended key usage: {eku})",
    27: "it is not trusted for this purpose",
    28: "it was rejected for this purpose",
}


#: Codes that mean "the chain does not end at a trusted root".
_UNKNOWN_CA = frozenset({2, 18, 19, 20, 21})


def explain_verify_error(code: int, depth: int, facts: CertificateFacts) -> str:
    """
    An OpenSSL certificate verification failure, in plain words.

    @param code: the X509_V_ERR_* code.
    @param depth: 0 for the peer's own certificate, more for a CA above it.
    @param facts: the certificate OpenSSL was looking at.
    """
    if code in _UNKNOWN_CA and depth > 0:
        # The peer sent its CA along: the chain ends at a root we do not trust.
        root = facts.subject if code in (18, 19) else facts.issuer
        return f"unknown CA: its chain ends at {root}, which is not among the trusted roots"
    template = _VERIFY_ERRORS.get(code, "OpenSSL certificate verification error {code}")
    eku = facts.extended_key_usage
    text = template.format(
        issuer=facts.issuer,
        subject=facts.subject,
        not_before=_when(facts.not_before),
        not_after=_when(facts.not_after),
        eku=", ".join(sorted(eku)) if eku is not None else "any",
        code=code,
    )
    if depth > 0:
        return f"a CA certificate in its chain ({facts.subject}) failed: {text}"
    return text


def _utc_from_seconds(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


# --- loading ------------------------------------------------------------------------


@frozen
class TLSSettings:
    """
    The TLS part of the node configuration.

    @ivar mutual: verify peers on the internal ports (C{not Insecure}).
    @ivar also_accept: names accepted besides the one dialled (the cluster
        DNS name when nodes are discovered through DNS).
    """

    certificate_file: str
    private_key_file: Optional[str] = None
    password: Optional[str] = None
    trusted_roots_path: Optional[str] = None
    reserved_common_name: str = "eventstoredb-node"
    mutual: bool = True
    also_accept: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any) -> TLSSettings:
        """
        From a L{estwisted.node.config.NodeConfig} whose C{certificate_file} is set.
        """
        also = (config.cluster_dns,) if config.discover_via_dns and config.cluster_dns else ()
        return cls(
            certificate_file=config.certificate_file,
            private_key_file=config.certificate_private_key_file,
            password=config.certificate_password,
            trusted_roots_path=config.trusted_root_certificates_path,
            reserved_common_name=config.certificate_reserved_node_common_name,
            mutual=not config.insecure,
            also_accept=also,
        )


@frozen
class Material:
    """
    A loaded, checked node certificate and the OpenSSL context built from
    it (shared by every connection made while it is current).
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    context: SSL.Context
    facts: CertificateFacts
    warnings: tuple[str, ...] = ()


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError(
            f"unreadable file: cannot read {option} {path}: {e.strerror}"
        ) from None


def _load_key(data: bytes, password: Optional[str], where: str) -> PrivateKey:
    secret = password.encode("utf-8") if password else None
    pem = b"-----BEGIN" in data
    try:
        if pem:
            key = serialization.load_pem_private_key(data, password=secret)
        else:
            key = serialization.load_der_private_key(data, password=secret)
    except TypeError:
        if secret is None:
            raise CertificateError(
                f"{where}: the private key is encrypted; set CertificatePassword"
            ) from None
        # CertificatePassword is for something else (PKCS#12): the key is
        # simply not encrypted.
        return _load_key(data, None, where)
    except ValueError:
        raise CertificateError(
            f"{where}: not a private key, or CertificatePassword is wrong"
        ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CertificateError(f"{where}: only RSA and EC keys are supported")
    return key


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _load_node_certificate(
    settings: TLSSettings,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], PrivateKey]:
    path = settings.certificate_file
    data = _read(path, "CertificateFile")
    key: Optional[PrivateKey] = None
    certificates: list[x509.Certificate]
    if b"-----BEGIN" in data:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise CertificateError(
                f"CertificateFile {path} holds no readable PEM certificate"
            ) from None
        if settings.private_key_file is None and b"PRIVATE KEY-----" in data:
            key = _load_key(data, settings.password, f"CertificateFile {path}")
    else:
        try:
            p12_key, p12_cert, extra = pkcs12.load_key_and_certificates(
                data, settings.password.encode("utf-8") if settings.password else None
            )
        except ValueError:
            try:
                certificates = [x509.load_der_x509_certificate(data)]
            except ValueError:
                raise CertificateError(
                    f"CertificateFile {path} is neither PEM, DER nor PKCS#12 (or the "
                    "PKCS#12 CertificatePassword is wrong)"
                ) from None
        else:
            if p12_cert is None:
                raise CertificateError(
                    f"CertificateFile {path}: the PKCS#12 holds no certificate"
                )
            certificates = [p12_cert, *extra]
            if isinstance(p12_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
                key = p12_key
    if settings.private_key_file is not None:
        key = _load_key(
            _read(settings.private_key_file, "CertificatePrivateKeyFile"),
            settings.password,
            f"CertificatePrivateKeyFile {settings.private_key_file}",
        )
    leaf = certificates[0]
    subject = facts_of(leaf).subject
    if key is None:
        raise CertificateError(
            f"no private key for the certificate {subject} in {path}; set "
            "CertificatePrivateKeyFile"
        )
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        where = settings.private_key_file or path
        raise CertificateError(
            f"key doesn't match certificate: the private key in {where} does not belong to "
            f"the certificate {subject} in {path}"
        )
    return leaf, tuple(certificates[1:]), key


def load_roots(path: str) -> tuple[tuple[x509.Certificate, ...], list[str]]:
    """
    Every certificate in the files of directory C{path} (PEM, several per
    file allowed, or DER), or in the file C{path}.

    @return: the certificates and warnings about files that were skipped.
    @raise CertificateError: unreadable, or no certificate found.
    """
    warnings: list[str] = []
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise CertificateError(
                f"unreadable file: cannot list TrustedRootCertificatesPath {path}: {e.strerror}"
            ) from None
        files = [
            os.path.join(path, n)
            for n in names
            if not n.startswith(".")
            and not n.endswith(".key")
            and os.path.isfile(os.path.join(path, n))
        ]
    else:
        files = [path]
    roots: list[x509.Certificate] = []
    for name in files:
        data = _read(name, "a trusted root certificate")
        try:
            if b"-----BEGIN CERTIFICATE" in data:
                roots.extend(x509.load_pem_x509_certificates(data))
            else:
                roots.append(x509.load_der_x509_certificate(data))
        except ValueError:
            warnings.append(f"{name} in TrustedRootCertificatesPath is not a certificate; skipped")
    if not roots:
        raise CertificateError(
            f"no trusted root certificate found in TrustedRootCertificatesPath {path}"
        )
    return tuple(roots), warnings


def _x509(cert: x509.Certificate) -> crypto.X509:
    return crypto.X509.from_cryptography(cert)


def _check_chain(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> Optional[str]:
    store = crypto.X509Store()
    for root in roots:
        store.add_cert(_x509(root))
    store.set_time(now)
    context = crypto.X509StoreContext(store, _x509(leaf), [_x509(c) for c in chain])
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as e:
        code, depth = int(e.errors[0]), int(e.errors[1])
        return explain_verify_error(code, depth, facts_of(e.certificate.to_cryptography()))
    return None


def load_material(settings: TLSSettings, now: datetime.datetime) -> Material:
    """
    Read and check the node certificate, its key and the trusted roots, and
    build the OpenSSL context.

    Refusals (raised): unreadable file, unparsable certificate or key, key
    doesn't match certificate, no trusted roots (unless not C{mutual} and
    none configured), own chain does not build to a trusted root, expired
    or not yet valid, not usable as a TLS server.  Warnings (kept in
    L{Material.warnings}): not the reserved node common name, not usable as
    a TLS client, expiring within L{EXPIRY_WARNING_DAYS} days.

    @raise CertificateError: the first refusal.
    """
    leaf, chain, key = _load_node_certificate(settings)
    facts = facts_of(leaf)
    subject = f"{facts.subject} in {settings.certificate_file}"
    warnings: list[str] = []
    roots: tuple[x509.Certificate, ...] = ()
    if settings.trusted_roots_path:
        roots, skipped = load_roots(settings.trusted_roots_path)
        warnings.extend(skipped)
    elif settings.mutual:
        raise CertificateError(
            "TrustedRootCertificatesPath is not set: the directory holding the cluster CA "
            "certificate (ca.crt) is needed to verify peers"
        )
    problem = validity_problem(facts, now)
    if problem is None and roots:
        problem = _check_chain(leaf, chain, roots, now)
    if problem is None:
        problem = usage_problem(facts, "server")
    if problem is not None:
        raise CertificateError(f"the node certificate {subject} is unusable: {problem}")
    if settings.mutual:
        for extra in (
            node_identity_problem(facts, settings.reserved_common_name),
            usage_problem(facts, "client"),
        ):
            if extra is not None:
                warnings.append(
                    f"the node certificate {subject}: {extra}; other nodes will refuse it"
                )
    if facts.not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        warnings.append(
            f"the node certificate {subject} expires on {_when(facts.not_after)}; renew it "
            "and send SIGHUP (or POST /admin/reloadcertificates)"
        )
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=_x509(leaf),
        extraCertChain=[_x509(c) for c in chain],
        verify=bool(roots),
        caCerts=[_x509(r) for r in roots] or None,
        requireCertificate=False,
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    try:
        context = options.getContext()
    except SSL.Error as e:
        raise CertificateError(f"the node certificate {subject} is unusable: {e}") from None
    context.set_alpn_select_callback(_alpn_select)
    return Material(leaf, chain, roots, context, facts, tuple(warnings))


# --- Twisted adapters ---------------------------------------------------------------


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
            node_tls: NodeTLS = self.factory.node_tls
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


def _alpn_select(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    ALPN on the server: the first protocol the application factory accepts
    that the client offered; none (the connection goes on) otherwise.
    """
    tls_protocol = connection.get_app_data()
    watch = getattr(getattr(tls_protocol, "factory", None), "wrappedFactory", None)
    acceptable = watch.acceptable_protocols() if isinstance(watch, _WatchFactory) else ()
    for protocol in acceptable:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


class _WatchFactory(WrappingFactory):
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
        self, wrapped: IProtocolFactory, listener: str, internal: bool, node_tls: NodeTLS
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

    def __init__(self, gate_factory: _GateFactory, addr: Optional[IAddress]) -> None:
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


class _GateFactory(Factory):
    noisy = False

    def __init__(
        self, tls: TLSMemoryBIOFactory, listener: str, http: bool, node_tls: NodeTLS
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


class _Verifier:
    """
    The certificate verification callback of one connection: OpenSSL checks
    the chain, dates and purpose; this adds the node identity and SAN rules
    and logs the first refusal with the reason and the subject.
    """

    def __init__(
        self,
        node_tls: NodeTLS,
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
        verifier = _Verifier(self._node_tls, tls_protocol, self._listener, cn, None, ())
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
        if _as_ip(self._dialled) is None:
            try:
                server_name = self._dialled.encode("idna")
            except UnicodeError:  # e.g. an underscore: send it as it is
                server_name = self._dialled.encode("ascii", "replace")
            connection.set_tlsext_host_name(server_name)
        verifier = _Verifier(
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
        material = load_material(settings, _utc_from_seconds(clock.seconds()))
        node_tls = cls(settings, clock, material)
        node_tls._announce("Loaded")
        return node_tls

    def now(self) -> datetime.datetime:
        return _utc_from_seconds(self.clock.seconds())

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
            sans=_san_text(m.facts),
            until=_when(m.facts.not_after),
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
                f"The node certificate {facts.subject} expired on {_when(facts.not_after)}: "
                "peers and clients refuse it; renew it and send SIGHUP"
            )
            _log.error("{line}", line=line)
            return line
        if facts.not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            line = (
                f"The node certificate {facts.subject} expires on {_when(facts.not_after)}; "
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
        watch = _WatchFactory(factory, listener, internal, self)
        tls = TLSMemoryBIOFactory(
            _ServerCreator(self, listener, internal), False, watch, clock=self.clock
        )
        return _GateFactory(tls, listener, http, self)

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
        watch = _WatchFactory(factory, listener, True, self)
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


def node_tls_from_config(config: Any, clock: IReactorTime) -> Optional[NodeTLS]:
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


def address_warnings(config: Any, facts: CertificateFacts) -> list[str]:
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
        ip = _as_ip(address)
        if address in seen or (ip is not None and ip.is_unspecified):
            continue
        seen.add(address)
        if not identity_matches(facts, address):
            out.append(
                f"the node certificate {facts.subject} does not cover {address} ({option} as "
                f"advertised): its subject alternative names are {_san_text(facts)}; peers and "
                "clients dialling that address will refuse it"
            )
    return out


def tls_listeners(
    config: Any,
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

