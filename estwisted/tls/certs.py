# -*- test-case-name: estwisted.tls.test.test_certs -*-
"""
Certificate tooling for a private cluster certificate authority: create a
CA, node certificates (IP and DNS subject alternative names, the reserved
node common name) and client certificates; write them with safe
permissions; and describe a certificate in plain words.

Everything here is plain code over C{cryptography}: no reactor.  The
C{estore certs ...} commands (L{estwisted.node.cli}) are a thin layer on top.

Choices:

  - keys: RSA 2048 by default (every TLS client understands it), or EC
    P-256 (C{key_type="ec"});
  - lifetimes: CA 5 years, node and client certificates 1 year;
  - node certificates can act as TLS server I{and} client (extended key
    usage serverAuth + clientAuth), because nodes dial each other;
  - key files are written 0600, certificates 0644; existing files are not
    overwritten unless asked to.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from typing import Optional, Union

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_DAYS",
    "DEFAULT_CA_COMMON_NAME",
    "DEFAULT_NODE_COMMON_NAME",
    "LEAF_DAYS",
    "CertificateFacts",
    "CertsError",
    "Issued",
    "PrivateKey",
    "create_ca",
    "create_client",
    "create_node",
    "describe",
    "facts_of",
    "load_issuer",
    "new_key",
    "write_issued",
]

#: Default CA lifetime, in days (about 5 years).
CA_DAYS = 5 * 365
#: Default node and client certificate lifetime, in days.
LEAF_DAYS = 365
#: RSA key size.
RSA_BITS = 2048
#: The CN of node certificates; the default of CertificateReservedNodeCommonName.
DEFAULT_NODE_COMMON_NAME = "eventstoredb-node"
#: The CN of a new CA.
DEFAULT_CA_COMMON_NAME = "estore CA"

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

#: Backdating of notBefore, so that peers with a slightly slow clock accept
#: a certificate made a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)


class CertsError(Exception):
    """
    A certificate operation failed; the message says why in plain words.
    """


@frozen
class Issued:
    """
    A certificate and its private key.
    """

    certificate: x509.Certificate
    key: PrivateKey


# --- generation ----------------------------------------------------------------


def new_key(key_type: str = "rsa") -> PrivateKey:
    """
    A new private key: C{"rsa"} (2048 bits) or C{"ec"} (P-256).

    @raise CertsError: unknown key type.
    """
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise CertsError(f"unknown key type {key_type!r}; use rsa or ec")


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str, organization: Optional[str] = None) -> x509.Name:
    if not common_name:
        raise CertsError("the common name must not be empty")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _validity(
    now: Optional[datetime.datetime], days: int
) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise CertsError(f"a certificate must be valid for at least one day, not {days}")
    start = (now or _utcnow()) - _BACKDATE
    return start, start + _BACKDATE + datetime.timedelta(days=days)


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def create_ca(
    common_name: str = DEFAULT_CA_COMMON_NAME,
    days: int = CA_DAYS,
    key_type: str = "rsa",
    now: Optional[datetime.datetime] = None,
) -> Issued:
    """
    A self-signed root CA that may sign node and client certificates (and
    nothing below them: path length 0).

    @param now: the issue time; default the current time.
    """
    key = new_key(key_type)
    start, end = _validity(now, days)
    name = _name(common_name)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return Issued(_sign(builder, key), key)


def _parse_ips(ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for text in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text.strip())))
        except ValueError:
            raise CertsError(f"{text!r} is not an IP address") from None
    return names


def _parse_dns(dns_names: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for text in dns_names:
        text = text.strip().rstrip(".")
        labels = text.split(".")
        bad_wildcard = "*" in "".join(labels[1:]) or ("*" in labels[0] and labels[0] != "*")
        if not text or any(not label for label in labels) or bad_wildcard:
            raise CertsError(f"{text!r} is not a DNS name (a wildcard may only be the first label)")
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            raise CertsError(f"{text!r} is an IP address; give it with --ip-addresses")
        names.append(x509.DNSName(text.lower()))
    return names


def _leaf(
    issuer: Issued,
    common_name: str,
    days: int,
    key_type: str,
    now: Optional[datetime.datetime],
    usages: list[x509.ObjectIdentifier],
    alternative_names: list[x509.GeneralName],
) -> Issued:
    key = new_key(key_type)
    public = key.public_key()
    start, end = _validity(now, days)
    ca_not_after = issuer.certificate.not_valid_after_utc
    if end > ca_not_after:
        end = ca_not_after
    if end <= start:
        raise CertsError(
            f"the CA ({issuer.certificate.subject.rfc4514_string()}) expired on "
            f"{ca_not_after:%Y-%m-%d}; create a new CA"
        )
    rsa_key = isinstance(public, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=rsa_key,
                data_encipherment=False,
                key_agreement=not rsa_key,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        )
    return Issued(_sign(builder, issuer.key), key)


def create_node(
    issuer: Issued,
    ip_addresses: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    common_name: str = DEFAULT_NODE_COMMON_NAME,
    days: int = LEAF_DAYS,
    key_type: str = "rsa",
    now: Optional[datetime.datetime] = None,
) -> Issued:
    """
    A node certificate signed by C{issuer}: the reserved node common name,
    the node's IP addresses and DNS names (include the cluster DNS name when
    nodes are discovered through DNS) as subject alternative names, usable
    as TLS server and client.  Its lifetime never exceeds the CA's.

    @raise CertsError: no address or name given, or one is malformed.
    """
    names = _parse_ips(ip_addresses) + _parse_dns(dns_names)
    if not names:
        raise CertsError(
            "a node certificate needs at least one IP address or DNS name: peers check "
            "the address they dial against them"
        )
    return _leaf(
        issuer,
        common_name,
        days,
        key_type,
        now,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        names,
    )


def create_client(
    issuer: Issued,
    common_name: str,
    days: int = LEAF_DAYS,
    key_type: str = "rsa",
    now: Optional[datetime.datetime] = None,
) -> Issued:
    """
    A client certificate (extended key usage clientAuth only) whose common
    name is the user name, signed by C{issuer}.
    """
    return _leaf(issuer, common_name, days, key_type, now, [ExtendedKeyUsageOID.CLIENT_AUTH], [])


# --- files ----------------------------------------------------------------------


def _write(path: str, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CertsError(f"{path} already exists; use --force to overwrite it") from None
    except OSError as e:
        raise CertsError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_issued(directory: str, stem: str, issued: Issued, force: bool = False) -> tuple[str, str]:
    """
    Write C{<stem>.crt} (PEM, mode 0644) and C{<stem>.key} (unencrypted
    PKCS#8 PEM, mode 0600) into C{directory}, creating it (0755) if needed.

    @return: the certificate and key paths.
    @raise CertsError: a file exists (and not C{force}) or cannot be written.
    """
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise CertsError(f"cannot create directory {directory}: {e.strerror}") from None
    cert_path = os.path.join(directory, stem + ".crt")
    key_path = os.path.join(directory, stem + ".key")
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not force:
        for path in (cert_path, key_path):
            if os.path.exists(path):
                raise CertsError(f"{path} already exists; use --force to overwrite it")
    _write(key_path, key_pem, 0o600, force)
    _write(cert_path, issued.certificate.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return cert_path, key_path


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertsError(f"cannot read the {what} {path}: {e.strerror}") from None


def load_issuer(certificate_path: str, key_path: str) -> Issued:
    """
    Read a CA certificate and its key (PEM) to sign new certificates with.

    @raise CertsError: unreadable, not PEM, not a CA, or the key does not
        belong to the certificate.
    """
    try:
        cert = x509.load_pem_x509_certificate(_read(certificate_path, "CA certificate"))
    except ValueError:
        raise CertsError(f"{certificate_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, "CA key"), password=None)
    except (ValueError, TypeError) as e:
        raise CertsError(f"{key_path} is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CertsError(f"{key_path}: only RSA and EC keys are supported")
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertsError(
            f"the key {key_path} does not belong to the certificate {certificate_path}"
        )
    facts = facts_of(cert)
    if not facts.is_ca:
        raise CertsError(f"{certificate_path} ({facts.subject}) is not a CA certificate")
    return Issued(cert, key)


# --- facts ------------------------------------------------------------------------


@frozen
class CertificateFacts:
    """
    What the verification rules need to know about a certificate, as plain
    values.

    @ivar subject: the subject, RFC 4514 text (C{CN=eventstoredb-node}).
    @ivar issuer: the issuer, RFC 4514 text.
    @ivar common_names: the subject's CN values (usually one).
    @ivar dns_names: SAN DNS names, lower case.
    @ivar ip_addresses: SAN IP addresses, normalised text.
    @ivar not_before: start of validity (UTC).
    @ivar not_after: end of validity (UTC).
    @ivar is_ca: basic constraints say CA.
    @ivar key_usage: names of the key usage bits set (C{digital_signature},
        ...), or C{None} when the extension is absent.
    @ivar extended_key_usage: C{"serverAuth"}, C{"clientAuth"}, ... or
        C{None} when the extension is absent (any use).
    """

    subject: str
    issuer: str
    common_names: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    not_before: datetime.datetime = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    not_after: datetime.datetime = datetime.datetime.max.replace(tzinfo=datetime.UTC)
    is_ca: bool = False
    key_usage: Optional[frozenset[str]] = None
    extended_key_usage: Optional[frozenset[str]] = None


_KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


def _safe_subject(name: x509.Name) -> str:
    try:
        return name.rfc4514_string() or "(empty subject)"
    except ValueError:
        return "(unreadable subject)"


def facts_of(cert: x509.Certificate) -> CertificateFacts:
    """
    The L{CertificateFacts} of a certificate.
    """
    common_names = tuple(
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        dns = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    is_ca = False
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        pass
    key_usage: Optional[frozenset[str]] = None
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        key_usage = frozenset(bit for bit in _KEY_USAGE_BITS if getattr(ku, bit))
    eku: Optional[frozenset[str]] = None
    try:
        eku_value = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        eku = frozenset(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku_value)
    return CertificateFacts(
        subject=_safe_subject(cert.subject),
        issuer=_safe_subject(cert.issuer),
        common_names=common_names,
        dns_names=dns,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        key_usage=key_usage,
        extended_key_usage=eku,
    )


def describe(facts: CertificateFacts) -> str:
    """
    A few lines describing a certificate for people (C{estore certs show}).
    """
    lines = [
        f"subject:   {facts.subject}",
        f"issuer:    {facts.issuer}",
        f"valid:     {facts.not_before:%Y-%m-%d %H:%M:%S} to "
        f"{facts.not_after:%Y-%m-%d %H:%M:%S} UTC",
        f"CA:        {'yes' if facts.is_ca else 'no'}",
        f"IP SANs:   {', '.join(facts.ip_addresses) or '(none)'}",
        f"DNS SANs:  {', '.join(facts.dns_names) or '(none)'}",
        "key usage: "
        + (", ".join(sorted(facts.key_usage)) if facts.key_usage is not None else "(any)"),
        "extended:  "
        + (
            ", ".join(sorted(facts.extended_key_usage))
            if facts.extended_key_usage is not None
            else "(any)"
        ),
    ]
    return "\n".join(lines)
