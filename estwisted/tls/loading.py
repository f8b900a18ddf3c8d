# -*- test-case-name: estwisted.tls.test.test_contexts -*-
"""
Loading the node's TLS material (files, no reactor): L{load_material}
reads the node certificate (PEM with its key file, PEM with the key
inside, PKCS#12, or DER), the trusted roots directory, checks that the key
belongs to the certificate and that the node's own chain builds to a
trusted root, and builds the OpenSSL context (TLS 1.2 minimum).  An
unusable setup raises L{CertificateError} with the one line to refuse to
start with.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any, Optional

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

from estwisted.core.errors import ConfigError
from estwisted.tls.certs import CertificateFacts, PrivateKey, facts_of
from estwisted.tls.checks import (
    TLSConfig,
    explain_verify_error,
    moment_text,
    node_identity_problem,
    usage_problem,
    validity_problem,
)
from estwisted.tls.handshake import alpn_select

__all__ = [
    "CertificateError",
    "EXPIRY_WARNING_DAYS",
    "Material",
    "TLSSettings",
    "load_material",
    "load_roots",
]

#: Warn at startup when the node certificate expires within this many days.
EXPIRY_WARNING_DAYS = 30


class CertificateError(ConfigError):
    """
    The node's own certificate setup is unusable; the message says why in
    plain words, naming the file or option.
    """



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
    def from_config(cls, config: TLSConfig) -> TLSSettings:
        """
        From a configuration whose C{certificate_file} is set.

        @raise CertificateError: C{certificate_file} is not set.
        """
        if not config.certificate_file:
            raise CertificateError("CertificateFile is not set")
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
            f"the node certificate {subject} expires on {moment_text(facts.not_after)}; renew it "
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
    context.set_alpn_select_callback(alpn_select)
    return Material(leaf, chain, roots, context, facts, tuple(warnings))


