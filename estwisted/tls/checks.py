# -*- test-case-name: estwisted.tls.test.test_contexts -*-
"""
The pure rules that decide which certificates are accepted (no I/O, no
reactor), each returning C{None} or a reason in plain words:
L{dns_name_matches}, L{identity_matches}, L{identity_problem} (the SAN
check against the address dialled, RFC 6125 style),
L{node_identity_problem} (the reserved node common name),
L{usage_problem}, L{validity_problem}, L{explain_verify_error} (OpenSSL
verification codes as sentences) and L{plaintext_refusal} (secure by
default: no plaintext on a non-loopback address without C{Insecure}).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from typing import Optional, Protocol

from estwisted.tls.certs import CertificateFacts

__all__ = [
    "TLSConfig",
    "as_ip",
    "dns_name_matches",
    "explain_verify_error",
    "identity_matches",
    "identity_problem",
    "is_loopback",
    "moment_text",
    "node_identity_problem",
    "plaintext_refusal",
    "san_text",
    "usage_problem",
    "utc_from_seconds",
    "validity_problem",
]


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


class TLSConfig(Protocol):
    """
    What the TLS code reads of a node's or a manager's configuration
    (L{estwisted.node.config.NodeConfig}, L{estwisted.manager.config.ManagerConfig}).
    """

    @property
    def insecure(self) -> bool: ...

    @property
    def certificate_file(self) -> Optional[str]: ...

    @property
    def certificate_private_key_file(self) -> Optional[str]: ...

    @property
    def certificate_password(self) -> Optional[str]: ...

    @property
    def trusted_root_certificates_path(self) -> Optional[str]: ...

    @property
    def certificate_reserved_node_common_name(self) -> str: ...

    @property
    def discover_via_dns(self) -> bool: ...

    @property
    def cluster_dns(self) -> str: ...

    @property
    def int_ip(self) -> str: ...

    @property
    def ext_ip(self) -> str: ...

    @property
    def advertised_int_ip(self) -> str: ...

    @property
    def advertised_ext_ip(self) -> str: ...

    def source_of(self, name: str) -> object:
        """
        Where the effective value of option C{name} came from.
        """


def plaintext_refusal(config: TLSConfig) -> Optional[str]:
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
            source = config.source_of(name)
            return (
                f"Refusing to start: {name} is {host} ({source}), not a loopback address, "
                "and no certificate is configured; set CertificateFile, "
                "CertificatePrivateKeyFile and TrustedRootCertificatesPath to serve TLS, or "
                "Insecure: true to serve plaintext on purpose"
            )
    return None


def as_ip(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
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
    if not pattern or not host or as_ip(host) is not None:
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
    ip = as_ip(name)
    has_sans = bool(facts.dns_names or facts.ip_addresses)
    if ip is not None:
        if any(as_ip(s) == ip for s in facts.ip_addresses):
            return True
        return not has_sans and any(as_ip(cn) == ip for cn in facts.common_names)
    if any(dns_name_matches(s, name) for s in facts.dns_names):
        return True
    return not has_sans and any(dns_name_matches(cn, name) for cn in facts.common_names)


def san_text(facts: CertificateFacts) -> str:
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
        f"SAN mismatch: the certificate's subject alternative names ({san_text(facts)}) do "
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


def moment_text(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def validity_problem(facts: CertificateFacts, now: datetime.datetime) -> Optional[str]:
    """
    C{None} when C{now} lies within the certificate's validity.
    """
    if now < facts.not_before:
        return f"not yet valid: valid from {moment_text(facts.not_before)}"
    if now > facts.not_after:
        return f"expired on {moment_text(facts.not_after)}"
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
        not_before=moment_text(facts.not_before),
        not_after=moment_text(facts.not_after),
        eku=", ".join(sorted(eku)) if eku is not None else "any",
        code=code,
    )
    if depth > 0:
        return f"a CA certificate in its chain ({facts.subject}) failed: {text}"
    return text


def utc_from_seconds(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)

