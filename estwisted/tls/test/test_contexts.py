# -*- test-case-name: estwisted.tls.test.test_contexts -*-
"""
Tests for L{estwisted.tls.contexts}: the SAN/CN/usage/validity rules (tables and
hypothesis), the secure-by-default check, loading and checking the node's
certificate files, and real TLS handshakes (OpenSSL, in memory through
iosim) between a listener and a dialling peer: accepted, refused for an
unknown CA, a SAN mismatch, the wrong common name, an expired certificate
or the wrong key usage, each refusal logged with its reason and the
certificate's subject; a plaintext client refused cleanly; reloading.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
from collections.abc import Callable
from typing import Any, Optional

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import crypto
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from estwisted.node.config import NodeConfig, load_config
from estwisted.tls import certs
from estwisted.tls.certs import CertificateFacts, Issued
from estwisted.tls.checks import (
    dns_name_matches,
    explain_verify_error,
    identity_matches,
    identity_problem,
    is_loopback,
    node_identity_problem,
    plaintext_refusal,
    usage_problem,
    validity_problem,
)
from estwisted.tls.contexts import (
    CertificateError,
    NodeTLS,
    address_warnings,
    install_reload_signal,
    node_tls_from_config,
    tls_listeners,
)
from estwisted.tls.handshake import RepeatLimiter, explain_handshake_failure
from estwisted.tls.loading import TLSSettings, load_material

UTC = datetime.UTC
NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
NODE_CN = certs.DEFAULT_NODE_COMMON_NAME


def facts(
    cn: str = NODE_CN,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    **kw: Any,
) -> CertificateFacts:
    return CertificateFacts(
        subject=f"CN={cn}", issuer="CN=ca", common_names=(cn,), dns_names=dns,
        ip_addresses=ips, **kw,
    )


# --- pure rules ----------------------------------------------------------------------

DNS_TABLE = [
    # pattern, host, matches
    ("node1.cluster", "node1.cluster", True),
    ("node1.cluster", "NODE1.Cluster.", True),
    ("node1.cluster", "node2.cluster", False),
    ("node1.cluster", "a.node1.cluster", False),
    ("*.es.example.com", "node1.es.example.com", True),
    ("*.es.example.com", "es.example.com", False),
    ("*.es.example.com", "a.b.es.example.com", False),
    ("*.es.example.com", ".es.example.com", False),
    ("*.cluster", "node1.cluster", False),  # too few labels after the wildcard
    ("n*.es.example.com", "node1.es.example.com", False),  # partial-label wildcard
    ("node1.*.example.com", "node1.es.example.com", False),  # wildcard not first
    ("*.*.example.com", "a.b.example.com", False),
    ("127.0.0.1", "127.0.0.1", False),  # IP addresses are never DNS names
    ("", "node1", False),
    ("node1", "", False),
]


class DnsNameMatchesTests(SynchronousTestCase):
    """
    L{dns_name_matches}: RFC 6125 host name matching.
    """

    def test_table(self) -> None:
        """
        Each row of the table gives the documented answer.
        """
        for pattern, host, expected in DNS_TABLE:
            self.assertEqual(dns_name_matches(pattern, host), expected, (pattern, host))

    labels = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\Z")
    names = st.lists(labels, min_size=1, max_size=5).map(".".join)

    @given(names)
    def test_nameMatchesItselfInAnyCase(self, name: str) -> None:
        """
        A name (that is not an IP address) matches itself, upper-cased, and
        with a trailing dot.
        """
        if _is_ip(name):
            return
        self.assertTrue(dns_name_matches(name, name.upper() + "."))

    @given(labels, st.lists(labels, min_size=2, max_size=4), st.lists(labels, max_size=2))
    def test_wildcardMatchesExactlyOneLabel(
        self, first: str, rest: list[str], extra: list[str]
    ) -> None:
        """
        C{*.<rest>} matches C{<first>.<rest>} and never C{<extra...>.<first>.<rest>}
        with more labels, nor C{<rest>} itself.
        """
        pattern = "*." + ".".join(rest)
        self.assertTrue(dns_name_matches(pattern, ".".join([first, *rest])))
        self.assertFalse(dns_name_matches(pattern, ".".join(rest)))
        if extra:
            self.assertFalse(dns_name_matches(pattern, ".".join([*extra, first, *rest])))

    @given(
        st.booleans(),
        st.lists(st.sampled_from(["a", "b", "node1", "x-1"]), min_size=1, max_size=4),
        st.lists(st.sampled_from(["a", "b", "node1", "x-1"]), min_size=1, max_size=4),
    )
    def test_agreesWithServiceIdentity(
        self, wildcard: bool, pattern_labels: list[str], host_labels: list[str]
    ) -> None:
        """
        On well-formed names our rule agrees with service_identity's (which
        Twisted's C{optionsForClientTLS} uses); patterns it rejects as
        invalid never match for us either.
        """
        from service_identity.hazmat import DNS_ID, DNSPattern

        pattern = ".".join((["*"] if wildcard else []) + pattern_labels)
        host = ".".join(host_labels)
        try:
            theirs = DNS_ID(host).verify(DNSPattern.from_bytes(pattern.encode()))
        except Exception:
            theirs = False
        self.assertEqual(dns_name_matches(pattern, host), theirs, (pattern, host))

    @given(names, names)
    def test_differentNamesDoNotMatch(self, a: str, b: str) -> None:
        """
        Two names without wildcards match only when equal (ignoring case).
        """
        self.assertEqual(dns_name_matches(a, b), a.lower() == b.lower() and not _is_ip(a))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class IdentityTests(SynchronousTestCase):
    """
    L{identity_matches} and L{identity_problem}: the SAN check against the
    address or name dialled.
    """

    def test_ipSanExact(self) -> None:
        """
        An IP address matches an equal IP SAN only, whatever its spelling.
        """
        f = facts(ips=("127.0.0.1", "::1"))
        self.assertTrue(identity_matches(f, "127.0.0.1"))
        self.assertTrue(identity_matches(f, "0:0:0:0:0:0:0:1"))
        self.assertTrue(identity_matches(f, "[::1]"))
        self.assertFalse(identity_matches(f, "127.0.0.2"))

    def test_ipNeverMatchesDnsSan(self) -> None:
        """
        A DNS SAN spelled like an address does not match the IP address.
        """
        self.assertFalse(identity_matches(facts(dns=("127.0.0.1",)), "127.0.0.1"))

    def test_dnsSan(self) -> None:
        """
        A host name matches the DNS SANs.
        """
        f = facts(dns=("node1.cluster", "*.nodes.example.com"), ips=("10.0.0.1",))
        self.assertTrue(identity_matches(f, "node1.cluster"))
        self.assertTrue(identity_matches(f, "n3.nodes.example.com"))
        self.assertFalse(identity_matches(f, "node2.cluster"))

    def test_commonNameOnlyWithoutSans(self) -> None:
        """
        The common name counts only when there is no SAN at all.
        """
        self.assertTrue(identity_matches(facts(cn="node1.cluster"), "node1.cluster"))
        self.assertTrue(identity_matches(facts(cn="127.0.0.1"), "127.0.0.1"))
        self.assertFalse(
            identity_matches(facts(cn="node1.cluster", ips=("10.0.0.1",)), "node1.cluster")
        )

    def test_problemNamesSansAndAddressDialled(self) -> None:
        """
        The mismatch reason names the SANs and the address dialled.
        """
        reason = identity_problem(facts(ips=("127.0.0.2",), dns=("n2",)), "127.0.0.1")
        assert reason is not None
        self.assertIn("SAN mismatch", reason)
        self.assertIn("IP 127.0.0.2, DNS n2", reason)
        self.assertIn("127.0.0.1, the address dialled", reason)

    def test_clusterDnsNameAccepted(self) -> None:
        """
        A name in C{also_accept} (the cluster DNS name) is accepted too.
        """
        f = facts(dns=("cluster.example.com",))
        self.assertIsNone(identity_problem(f, "10.0.0.5", ("cluster.example.com",)))
        self.assertIsNotNone(identity_problem(f, "10.0.0.5"))

    @given(st.ip_addresses())
    def test_anyIpMatchesItsOwnSan(self, ip: Any) -> None:
        """
        Every IP address matches a certificate with that IP SAN and no other
        address.
        """
        f = facts(ips=(str(ip),))
        self.assertTrue(identity_matches(f, str(ip)))
        other = ip + 1 if int(ip) < int(ip.max_prefixlen * "1", 2) else ip - 1
        self.assertFalse(identity_matches(f, str(other)))


class AddressWarningTests(SynchronousTestCase):
    """
    L{address_warnings}: advertised addresses the certificate misses.
    """

    def test_table(self) -> None:
        """
        One warning per advertised address (internal and external, counted
        once when equal) that the SANs do not cover; wildcard binds are not
        checked.
        """
        f = facts(ips=("127.0.0.1",), dns=("node1.cluster",))
        self.assertEqual(address_warnings(NodeConfig(), f), [])
        warnings = address_warnings(NodeConfig(int_ip="127.0.0.2", ext_ip="127.0.0.2"), f)
        self.assertEqual(len(warnings), 1)
        self.assertIn("does not cover 127.0.0.2 (IntIp as advertised)", warnings[0])
        self.assertIn("IP 127.0.0.1, DNS node1.cluster", warnings[0])
        config = NodeConfig(
            int_ip="0.0.0.0", ext_ip="0.0.0.0", ext_ip_advertise_as="node1.cluster",
            insecure=True,
        )
        self.assertEqual(address_warnings(config, f), [])
        config = NodeConfig(int_ip="10.0.0.1", ext_ip="10.0.0.2", insecure=True)
        self.assertEqual(len(address_warnings(config, f)), 2)


class NodeIdentityTests(SynchronousTestCase):
    """
    L{node_identity_problem}: the reserved node common name and a SAN.
    """

    def test_table(self) -> None:
        """
        A node certificate needs the reserved CN and at least one SAN.
        """
        rows = [
            (facts(ips=("127.0.0.1",)), None),
            (facts(dns=("n1",)), None),
            (facts(), "no IP or DNS subject alternative name"),
            (facts(cn="admin", ips=("127.0.0.1",)), "wrong common name: it is admin"),
            (
                CertificateFacts(subject="O=x", issuer="CN=ca", ip_addresses=("127.0.0.1",)),
                "wrong common name: it is missing",
            ),
        ]
        for f, expected in rows:
            reason = node_identity_problem(f, NODE_CN)
            if expected is None:
                self.assertIsNone(reason)
            else:
                assert reason is not None
                self.assertIn(expected, reason)
                if "common name" in expected:
                    self.assertIn("CertificateReservedNodeCommonName", reason)


class UsageTests(SynchronousTestCase):
    """
    L{usage_problem}: key usage and extended key usage.
    """

    def test_table(self) -> None:
        """
        Server needs serverAuth, client needs clientAuth (when the extension
        is present); CAs and certificates that cannot sign are refused.
        """
        both = frozenset({"serverAuth", "clientAuth"})
        rows = [
            (facts(), "server", None),
            (facts(extended_key_usage=both), "server", None),
            (facts(extended_key_usage=both), "client", None),
            (facts(extended_key_usage=frozenset({"clientAuth"})), "server", "lacks serverAuth"),
            (facts(extended_key_usage=frozenset({"serverAuth"})), "client", "lacks clientAuth"),
            (facts(extended_key_usage=frozenset({"anyExtendedKeyUsage"})), "client", None),
            (facts(is_ca=True), "server", "CA certificate"),
            (facts(key_usage=frozenset({"crl_sign"})), "server", "neither digital signature"),
            (facts(key_usage=frozenset({"digital_signature"})), "server", None),
        ]
        for f, role, expected in rows:
            reason = usage_problem(f, role)
            if expected is None:
                self.assertIsNone(reason, (f, role))
            else:
                assert reason is not None
                self.assertIn("wrong key usage", reason)
                self.assertIn(expected, reason)


class ValidityTests(SynchronousTestCase):
    """
    L{validity_problem} and L{explain_verify_error}.
    """

    def test_validity(self) -> None:
        """
        Before, within and after the validity period.
        """
        f = facts(
            not_before=datetime.datetime(2030, 1, 1, tzinfo=UTC),
            not_after=datetime.datetime(2031, 1, 1, tzinfo=UTC),
        )
        self.assertIsNone(validity_problem(f, NOW))
        self.assertEqual(
            validity_problem(f, datetime.datetime(2031, 2, 1, tzinfo=UTC)),
            "expired on 2031-01-01 00:00:00 UTC",
        )
        self.assertEqual(
            validity_problem(f, datetime.datetime(2029, 2, 1, tzinfo=UTC)),
            "not yet valid: valid from 2030-01-01 00:00:00 UTC",
        )

    def test_verifyErrors(self) -> None:
        """
        OpenSSL's common verification codes become sentences naming the
        issuer or the date; unknown codes keep their number.
        """
        f = facts(not_after=datetime.datetime(2031, 1, 1, tzinfo=UTC))
        self.assertEqual(
            explain_verify_error(20, 0, f),
            "unknown CA: it was issued by CN=ca, which is not among the trusted roots",
        )
        self.assertEqual(explain_verify_error(10, 0, f), "expired on 2031-01-01 00:00:00 UTC")
        self.assertIn("a CA certificate in its chain (CN=", explain_verify_error(10, 1, f))
        self.assertIn("wrong key usage", explain_verify_error(26, 0, f))
        self.assertIn("error 999", explain_verify_error(999, 0, f))

    def test_handshakeFailures(self) -> None:
        """
        OpenSSL handshake failure texts become plain words.
        """
        self.assertIn(
            "presented no certificate; this port accepts only cluster nodes",
            explain_handshake_failure("peer did not return a certificate", True),
        )
        self.assertIn("unknown CA", explain_handshake_failure("tlsv1 alert unknown ca", False))
        self.assertIn("did not speak TLS", explain_handshake_failure("http request", False))
        self.assertIn("(weird)", explain_handshake_failure("weird", False))


class PlaintextRefusalTests(SynchronousTestCase):
    """
    L{plaintext_refusal}: secure by default.
    """

    def test_loopback(self) -> None:
        """
        L{is_loopback}: 127.0.0.0/8, ::1 and localhost.
        """
        for host, expected in [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                               ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                               ("10.0.0.1", False), ("::", False), ("example.com", False)]:
            self.assertEqual(is_loopback(host), expected, host)

    def test_defaultLoopbackRuns(self) -> None:
        """
        The default configuration (loopback, no certificate) is allowed.
        """
        self.assertIsNone(plaintext_refusal(NodeConfig()))
        self.assertIsNone(plaintext_refusal(NodeConfig(ext_ip="127.0.0.3", int_ip="::1")))

    def test_nonLoopbackRefused(self) -> None:
        """
        A non-loopback address without a certificate or Insecure is refused
        with one line naming the option, its source and the two ways out.
        """
        config = load_config(command_line={"ExtIp": "0.0.0.0"}, environ={})
        line = plaintext_refusal(config)
        assert line is not None
        self.assertNotIn("\n", line)
        self.assertIn("ExtIp is 0.0.0.0 (command line", line)
        self.assertIn("CertificateFile", line)
        self.assertIn("Insecure: true", line)
        self.assertIn("IntIp is 10.1.2.3", plaintext_refusal(NodeConfig(int_ip="10.1.2.3")) or "")

    def test_insecureOrCertificateAllowed(self) -> None:
        """
        Insecure, or a certificate (every listener then speaks TLS), allows
        any address.
        """
        self.assertIsNone(plaintext_refusal(NodeConfig(ext_ip="10.0.0.1", insecure=True)))
        self.assertIsNone(
            plaintext_refusal(NodeConfig(ext_ip="10.0.0.1", certificate_file="node.crt"))
        )

    def test_serviceSeesOneLine(self) -> None:
        """
        L{node_tls_from_config} raises the refusal as a L{CertificateError}
        and returns C{None} for the plaintext default.
        """
        self.assertIsNone(node_tls_from_config(NodeConfig(), Clock()))
        e = self.assertRaises(
            CertificateError, node_tls_from_config, NodeConfig(ext_ip="10.0.0.1"), Clock()
        )
        self.assertIn("Refusing to start", str(e))


# --- certificate fixtures --------------------------------------------------------------


class PKI:
    """
    Two CAs and certificates for tests, written under a directory.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        year_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=365)
        self.ca = certs.create_ca("test CA", key_type="ec", now=year_ago)
        self.other_ca = certs.create_ca("other CA", key_type="ec", now=year_ago)
        self.roots = os.path.join(directory, "roots")
        certs.write_issued(self.roots, "ca", Issued(self.ca.certificate, self.ca.key))
        os.remove(os.path.join(self.roots, "ca.key"))

    def node(
        self,
        name: str,
        ips: tuple[str, ...] = ("127.0.0.1",),
        dns: tuple[str, ...] = ("localhost",),
        cn: str = NODE_CN,
        ca: Optional[Issued] = None,
        now: Optional[datetime.datetime] = None,
        days: int = 90,
    ) -> TLSSettings:
        issued = certs.create_node(
            ca or self.ca, ips, dns, common_name=cn, key_type="ec", now=now, days=days
        )
        return self.write(name, issued)

    def write(self, name: str, issued: Issued) -> TLSSettings:
        cert, key = certs.write_issued(os.path.join(self.directory, name), "node", issued)
        return TLSSettings(cert, key, None, self.roots, NODE_CN)

    def custom(self, name: str, usages: list[x509.ObjectIdentifier]) -> TLSSettings:
        """
        A node certificate with the given extended key usages only.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_CN)]))
            .issuer_name(self.ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
            .sign(self.ca.key, hashes.SHA256())
        )
        return self.write(name, Issued(cert, key))


def real_clock() -> Clock:
    clock = Clock()
    clock.advance(time.time())
    return clock


class LoadMaterialTests(SynchronousTestCase):
    """
    L{load_material}: reading and checking the node's own certificate.
    """

    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.now = datetime.datetime.now(UTC)

    def refusal(self, settings: TLSSettings) -> str:
        e = self.assertRaises(CertificateError, load_material, settings, self.now)
        return str(e)

    def test_loads(self) -> None:
        """
        A node certificate from the trusted CA loads, without warnings.
        """
        material = load_material(self.pki.node("n1", days=365), self.now)
        self.assertEqual(material.facts.common_names, (NODE_CN,))
        self.assertEqual(len(material.roots), 1)
        self.assertEqual(material.warnings, ())

    def test_unreadableFile(self) -> None:
        """
        A missing file is named with the option and the OS reason.
        """
        settings = TLSSettings("/nonexistent/node.crt", None, None, self.pki.roots)
        reason = self.refusal(settings)
        self.assertIn("unreadable file: cannot read CertificateFile /nonexistent/node.crt", reason)
        self.assertIn("No such file", reason)

    def test_keyMismatch(self) -> None:
        """
        A key that belongs to another certificate is refused.
        """
        a = self.pki.node("a")
        b = self.pki.node("b")
        reason = self.refusal(
            TLSSettings(a.certificate_file, b.private_key_file, None, a.trusted_roots_path)
        )
        self.assertIn("key doesn't match certificate", reason)
        self.assertIn("CN=eventstoredb-node", reason)

    def test_otherCA(self) -> None:
        """
        A node certificate that does not chain to the trusted roots is
        refused as from an unknown CA, naming the issuer.
        """
        reason = self.refusal(self.pki.node("n1", ca=self.pki.other_ca))
        self.assertIn("unknown CA: it was issued by CN=other CA", reason)

    def test_expired(self) -> None:
        """
        An expired node certificate is refused with its end date.
        """
        settings = self.pki.node("n1", now=self.now - datetime.timedelta(days=10), days=2)
        self.assertIn("expired on", self.refusal(settings))

    def test_noRoots(self) -> None:
        """
        Without TrustedRootCertificatesPath (and not Insecure) the node
        cannot verify peers: refused.
        """
        settings = self.pki.node("n1")
        reason = self.refusal(TLSSettings(settings.certificate_file, settings.private_key_file))
        self.assertIn("TrustedRootCertificatesPath is not set", reason)
        empty = self.mktemp()
        os.makedirs(empty)
        reason = self.refusal(
            TLSSettings(settings.certificate_file, settings.private_key_file, None, empty)
        )
        self.assertIn("no trusted root certificate found", reason)

    def test_insecureWithoutRoots(self) -> None:
        """
        With Insecure (no peer verification) roots are optional.
        """
        settings = self.pki.node("n1")
        material = load_material(
            TLSSettings(settings.certificate_file, settings.private_key_file, mutual=False),
            self.now,
        )
        self.assertEqual(material.roots, ())

    def test_wrongCommonNameWarns(self) -> None:
        """
        A node certificate without the reserved common name loads with a
        warning that other nodes will refuse it.
        """
        material = load_material(self.pki.node("n1", cn="somebody"), self.now)
        self.assertEqual(len(material.warnings), 1)
        self.assertIn("wrong common name: it is somebody", material.warnings[0])
        self.assertIn("other nodes will refuse it", material.warnings[0])

    def test_expiringSoonWarns(self) -> None:
        """
        A certificate that expires within 30 days loads with a warning.
        """
        material = load_material(self.pki.node("n1", days=5), self.now)
        self.assertTrue(any("renew it" in w for w in material.warnings))

    def test_clientOnlyCertificateRefused(self) -> None:
        """
        A certificate that may not act as a TLS server is refused.
        """
        settings = self.pki.custom("n1", [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertIn("lacks serverAuth", self.refusal(settings))

    def test_pemWithKeyInside(self) -> None:
        """
        A PEM file holding both certificate and key needs no key file.
        """
        settings = self.pki.node("n1")
        combined = os.path.join(self.pki.directory, "combined.pem")
        with open(combined, "wb") as out:
            for path in (settings.certificate_file, settings.private_key_file):
                assert path is not None
                with open(path, "rb") as f:
                    out.write(f.read())
        material = load_material(TLSSettings(combined, None, None, self.pki.roots), self.now)
        self.assertEqual(material.facts.common_names, (NODE_CN,))

    def test_pkcs12WithPassword(self) -> None:
        """
        A PKCS#12 file loads with its password; a wrong one is refused.
        """
        issued = certs.create_node(self.pki.ca, ["127.0.0.1"], key_type="ec")
        data = pkcs12.serialize_key_and_certificates(
            b"node", issued.key, issued.certificate, None,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
        path = os.path.join(self.pki.directory, "node.p12")
        with open(path, "wb") as f:
            f.write(data)
        material = load_material(TLSSettings(path, None, "s3cret", self.pki.roots), self.now)
        self.assertEqual(material.facts.ip_addresses, ("127.0.0.1",))
        reason = self.refusal(TLSSettings(path, None, "wrong", self.pki.roots))
        self.assertIn("PKCS#12 CertificatePassword is wrong", reason)

    def test_encryptedKeyNeedsPassword(self) -> None:
        """
        An encrypted PEM key without CertificatePassword is refused in
        plain words.
        """
        issued = certs.create_node(self.pki.ca, ["127.0.0.1"], key_type="ec")
        directory = os.path.join(self.pki.directory, "enc")
        cert, _ = certs.write_issued(directory, "node", issued)
        key_path = os.path.join(directory, "enc.key")
        with open(key_path, "wb") as f:
            f.write(
                issued.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"pw"),
                )
            )
        reason = self.refusal(TLSSettings(cert, key_path, None, self.pki.roots))
        self.assertIn("the private key is encrypted; set CertificatePassword", reason)
        load_material(TLSSettings(cert, key_path, "pw", self.pki.roots), self.now)
        # A password with an unencrypted key (the password is for PKCS#12): fine.
        settings = self.pki.node("plain")
        load_material(attrs.evolve(settings, password="unused"), self.now)


# --- handshakes in memory ----------------------------------------------------------------


class Recorder(Protocol):
    """
    Echoes nothing; records what it received and whether it was lost.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def returning(protocol: Protocol) -> Callable[[], Protocol]:
    """
    A protocol "class" for L{Factory.forProtocol} that returns C{protocol}.
    """
    return lambda: protocol


class CountingFactory(Factory):
    """
    Counts the application protocols built.
    """

    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        self.built += 1
        return Recorder()


class HandshakeTests(SynchronousTestCase):
    """
    Real OpenSSL handshakes between a node's listener and a dialling peer,
    in memory.
    """

    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.clock = real_clock()

    def connect(
        self,
        server_tls: NodeTLS,
        client_tls: NodeTLS,
        dialled: str = "127.0.0.1",
        internal: bool = True,
        http: bool = False,
    ) -> tuple[Recorder, Recorder, Any]:
        server_app = Recorder()
        client_app = Recorder()
        server_factory = server_tls.server_factory(
            Factory.forProtocol(lambda: server_app), "internal TCP", internal, http
        )
        client_factory = client_tls.client_factory(
            Factory.forProtocol(lambda: client_app), dialled
        )
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        here = IPv4Address("TCP", "127.0.0.1", 1112)
        server = server_factory.buildProtocol(peer)
        client = client_factory.buildProtocol(here)
        assert server is not None and client is not None
        server_io = iosim.FakeTransport(server, isServer=True, hostAddress=here, peerAddress=peer)
        client_io = iosim.FakeTransport(client, isServer=False, hostAddress=peer, peerAddress=here)
        pump = iosim.connect(server, server_io, client, client_io, clock=self.clock)
        client_app.transport.write(b"ping")  # type: ignore[union-attr]
        server_app.transport.write(b"pong")  # type: ignore[union-attr]
        for _ in range(20):
            pump.flush()
            self.clock.advance(0.01)
        return server_app, client_app, pump

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(UTC)

    def node(self, name: str, **kw: Any) -> NodeTLS:
        return NodeTLS.load(self.pki.node(name, **kw), self.clock)

    def messages(self, events: Any) -> str:
        return "\n".join(formatEvent(e) for e in events)

    def assertRefused(self, server_app: Recorder, client_app: Recorder) -> None:
        self.assertEqual(server_app.received, b"")
        self.assertEqual(client_app.received, b"")

    def test_mutualAccepted(self) -> None:
        """
        Two nodes with certificates from the cluster CA talk, the dialler's
        SAN check passing on the IP address dialled or a DNS SAN.
        """
        server = self.node("s", ips=("127.0.0.1",), dns=("node1.cluster",))
        client = self.node("c", ips=("127.0.0.2",))
        for dialled in ("127.0.0.1", "node1.cluster"):
            with capturedLogs() as events:
                server_app, client_app, _ = self.connect(server, client, dialled)
            self.assertEqual(server_app.received, b"ping", dialled)
            self.assertEqual(client_app.received, b"pong", dialled)
            self.assertNotIn("Refused", self.messages(events))

    def test_clientCreatorUnderAnyProtocol(self) -> None:
        """
        L{NodeTLS.client_creator} works under any application protocol (as
        with C{Agent}, whose protocol has its own C{state} attribute), and
        refusals are still logged.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        class Stateful(Recorder):
            state = "QUIESCENT"

        for server_ips, accepted in ((("127.0.0.1",), True), (("127.0.0.9",), False)):
            server = self.node("s" + server_ips[0], ips=server_ips)
            client = self.node("c" + server_ips[0])
            server_app = Recorder()
            client_app = Stateful()
            server_side = server.server_factory(
                Factory.forProtocol(returning(server_app)), "internal HTTP", True, True
            ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            client_side = TLSMemoryBIOFactory(
                client.client_creator("127.0.0.1"), True,
                Factory.forProtocol(returning(client_app)), clock=self.clock,
            ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 2112))
            assert server_side is not None and client_side is not None
            with capturedLogs() as events:
                pump = iosim.connect(
                    server_side, iosim.makeFakeServer(server_side),
                    client_side, iosim.makeFakeClient(client_side), clock=self.clock,
                )
                client_app.transport.write(b"ping")  # type: ignore[union-attr]
                for _ in range(20):
                    pump.flush()
                    self.clock.advance(0.01)
            text = self.messages(events)
            self.assertNotIn("unexpectedly", text)
            self.assertEqual(server_app.received, b"ping" if accepted else b"")
            if not accepted:
                self.assertIn("SAN mismatch", text)

    def test_otherCARefusedByServer(self) -> None:
        """
        A dialling node whose certificate comes from another CA is refused
        by the listener, which logs the unknown CA and the subject.
        """
        server = self.node("s")
        settings = self.pki.node("x", ca=self.pki.other_ca)
        untrusting = attrs.evolve(settings, trusted_roots_path=None, mutual=False)
        stranger = NodeTLS(settings, self.clock, load_material(untrusting, self.now()))
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(server, self._trusting(stranger))
        self.assertRefused(server_app, client_app)
        text = self.messages(events)
        self.assertIn("Refused the certificate of the peer 127.0.0.1:40000 on internal TCP", text)
        self.assertIn("unknown CA: it was issued by CN=other CA", text)
        self.assertIn("certificate subject: CN=eventstoredb-node; issuer: CN=other CA", text)

    def _files(self, settings: TLSSettings) -> tuple[str, Optional[str]]:
        return settings.certificate_file, settings.private_key_file

    def _trusting(self, node_tls: NodeTLS) -> NodeTLS:
        """
        C{node_tls} presenting its certificate but trusting the test CA.
        """
        m = node_tls.material
        key_path = node_tls.settings.private_key_file
        assert key_path is not None
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(m.certificate),
            verify=True,
            caCerts=[crypto.X509.from_cryptography(self.pki.ca.certificate)],
            requireCertificate=False,
        )
        node_tls.material = attrs.evolve(
            m, context=options.getContext(), roots=(self.pki.ca.certificate,)
        )
        return node_tls

    def test_foreignChainRefusedByDialler(self) -> None:
        """
        A peer that sends its whole chain up to a root we do not trust is
        refused as from an unknown CA, naming that root, and the log gives
        the peer's own subject.
        """
        settings = self.pki.node("x", ca=self.pki.other_ca)
        with open(settings.certificate_file, "ab") as f:
            f.write(self.pki.other_ca.certificate.public_bytes(serialization.Encoding.PEM))
        untrusting = attrs.evolve(settings, trusted_roots_path=None, mutual=False)
        stranger = NodeTLS(settings, self.clock, load_material(untrusting, self.now()))
        self.assertEqual(len(stranger.material.chain), 1)
        self._trusting(stranger)
        stranger.material = attrs.evolve(
            stranger.material,
            context=self._context_with_chain(stranger, self.pki.other_ca.certificate),
        )
        client = self.node("c")
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(stranger, client, "127.0.0.1")
        self.assertRefused(server_app, client_app)
        text = self.messages(events)
        self.assertIn(
            "unknown CA: its chain ends at CN=other CA, which is not among the trusted roots",
            text,
        )
        self.assertIn("(certificate subject: CN=eventstoredb-node; issuer: CN=other CA)", text)

    def _context_with_chain(self, node_tls: NodeTLS, extra: x509.Certificate) -> Any:
        key_path = node_tls.settings.private_key_file
        assert key_path is not None
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(node_tls.material.certificate),
            extraCertChain=[crypto.X509.from_cryptography(extra)],
            verify=True,
            caCerts=[crypto.X509.from_cryptography(self.pki.ca.certificate)],
            requireCertificate=False,
        )
        return options.getContext()

    def test_sanMismatchRefusedByDialler(self) -> None:
        """
        A node dialling 127.0.0.1 refuses a peer whose certificate is for
        another address, and logs the SANs and the address dialled.
        """
        server = self.node("s", ips=("127.0.0.2",), dns=("node2.cluster",))
        client = self.node("c")
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(server, client, "127.0.0.1")
        self.assertRefused(server_app, client_app)
        text = self.messages(events)
        self.assertIn("Refused the certificate of the peer 127.0.0.1", text)
        self.assertIn(
            "SAN mismatch: the certificate's subject alternative names "
            "(IP 127.0.0.2, DNS node2.cluster) do not match 127.0.0.1, the address dialled",
            text,
        )

    def test_wrongCommonNameRefused(self) -> None:
        """
        On the internal port, a client certificate without the reserved node
        common name is refused, with the reason logged.
        """
        server = self.node("s")
        client = self.node("c", cn="admin")
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(server, client)
        self.assertRefused(server_app, client_app)
        text = self.messages(events)
        self.assertIn("wrong common name: it is admin, not the reserved node common name", text)
        self.assertIn("certificate subject: CN=admin", text)

    def test_expiredRefused(self) -> None:
        """
        An expired peer certificate is refused with its end date.
        """
        server = self.node("s")
        client_settings = self.pki.node(
            "c", now=datetime.datetime.now(UTC) - datetime.timedelta(days=10), days=2
        )
        client = NodeTLS(
            client_settings,
            self.clock,
            load_material(client_settings, datetime.datetime.now(UTC) - datetime.timedelta(days=9)),
        )
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(server, client)
        self.assertRefused(server_app, client_app)
        text = self.messages(events)
        self.assertIn("on internal TCP: expired on", text)

    def test_wrongKeyUsageRefused(self) -> None:
        """
        A peer certificate that may not act as a TLS client (extended key
        usage serverAuth only) is refused on the internal port.
        """
        server = self.node("s")
        client = NodeTLS.load(self.pki.custom("c", [ExtendedKeyUsageOID.SERVER_AUTH]), self.clock)
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(server, client)
        self.assertRefused(server_app, client_app)
        self.assertIn("wrong key usage", self.messages(events))

    def test_externalNeedsNoClientCertificate(self) -> None:
        """
        The external listeners accept a client without a certificate.
        """
        server = self.node("s")
        client = self.node("c")
        client.material = self._without_certificate(client)
        server_app, client_app, _ = self.connect(server, client, internal=False)
        self.assertEqual(server_app.received, b"ping")
        self.assertEqual(client_app.received, b"pong")

    def test_internalNeedsClientCertificate(self) -> None:
        """
        The internal listeners refuse a client without a certificate, and
        say so.
        """
        server = self.node("s")
        client = self.node("c")
        client.material = self._without_certificate(client)
        with capturedLogs() as events:
            server_app, client_app, _ = self.connect(server, client, internal=True)
        self.assertRefused(server_app, client_app)
        self.assertIn("presented no certificate", self.messages(events))

    def _without_certificate(self, node_tls: NodeTLS) -> Any:
        options = CertificateOptions(
            verify=True,
            caCerts=[crypto.X509.from_cryptography(self.pki.ca.certificate)],
            requireCertificate=False,
        )
        return attrs.evolve(node_tls.material, context=options.getContext())

    def test_plaintextRefused(self) -> None:
        """
        A plaintext client on a TLS port is refused before any TLS: closed,
        logged, and told so in plain HTTP on HTTP ports.
        """
        server = self.node("s")
        for http in (False, True):
            self.clock.advance(61)  # past the repeat limiter's minute
            app_factory = CountingFactory()
            factory = server.server_factory(app_factory, "external HTTP", False, http)
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
            assert protocol is not None
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
            protocol.makeConnection(transport)
            with capturedLogs() as events:
                protocol.dataReceived(b"GET /info HTTP/1.1\r\n\r\n")
            self.assertTrue(transport.disconnecting)
            self.assertEqual(app_factory.built, 0)
            self.assertIn(
                "Refused a plaintext (non-TLS) connection from 127.0.0.1:5555 to external HTTP",
                self.messages(events),
            )
            if http:
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request"))
                self.assertIn(b"HTTPS only", transport.value())
            else:
                self.assertEqual(transport.value(), b"")
            protocol.connectionLost(None)  # type: ignore[arg-type]
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silentConnectionClosed(self) -> None:
        """
        A connection that never starts a handshake is closed after the
        handshake timeout.
        """
        server = self.node("s")
        factory = server.server_factory(Factory.forProtocol(Recorder), "external TCP", False, False)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        assert protocol is not None
        protocol.makeConnection(transport)
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(2)
        self.assertTrue(transport.disconnecting or getattr(transport, "aborting", False))
        self.assertIn("no TLS handshake within 30 seconds", self.messages(events))

    def test_stalledHandshakeClosed(self) -> None:
        """
        A client that sends its ClientHello and then stalls is closed after
        the handshake timeout; a completed handshake is left alone.
        """
        server = self.node("s")
        client = self.node("c")
        client_side = client.client_factory(Factory.forProtocol(Recorder), "127.0.0.1")
        client_protocol = client_side.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1113))
        assert client_protocol is not None
        client_transport = StringTransport()
        client_protocol.makeConnection(client_transport)
        hello = client_transport.value()
        self.assertEqual(hello[:1], b"\x16")
        factory = server.server_factory(Factory.forProtocol(Recorder), "external TCP", False, False)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        protocol.makeConnection(transport)
        protocol.dataReceived(hello)
        self.assertNotEqual(transport.value(), b"")  # the server answered
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(2)
        self.assertTrue(transport.disconnecting or getattr(transport, "aborting", False))
        self.assertIn("no TLS handshake within 30 seconds", self.messages(events))

    def test_completedHandshakeNotTimedOut(self) -> None:
        """
        After a completed handshake the timeout no longer applies.
        """
        server_app, client_app, pump = self.connect(self.node("s"), self.node("c"))
        self.assertEqual(server_app.received, b"ping")
        with capturedLogs() as events:
            self.clock.advance(60)
            pump.flush()
        self.assertEqual(self.messages(events), "")
        self.assertFalse(server_app.lost)
        self.assertFalse(client_app.lost)

    def test_reload(self) -> None:
        """
        After the certificate files change, L{NodeTLS.reload} makes new
        connections use the new certificate; a broken file leaves the old
        one in use and says why.
        """
        settings = self.pki.node("s", ips=("127.0.0.2",))
        server = NodeTLS.load(settings, self.clock)
        client = self.node("c")
        server_app, _, _ = self.connect(server, client, "127.0.0.1")
        self.assertEqual(server_app.received, b"")  # SAN mismatch: 127.0.0.2 only
        certs.write_issued(
            os.path.dirname(settings.certificate_file),
            "node",
            certs.create_node(self.pki.ca, ["127.0.0.1"], key_type="ec"),
            force=True,
        )
        outcome = server.reload()
        self.assertTrue(outcome.ok, outcome.message)
        server_app, _, _ = self.connect(server, client, "127.0.0.1")
        self.assertEqual(server_app.received, b"ping")
        with open(settings.certificate_file, "wb") as f:
            f.write(b"garbage")
        with capturedLogs() as events:
            outcome = server.reload()
        self.assertFalse(outcome.ok)
        self.assertIn("previous certificate kept", outcome.message)
        self.assertIn("still using the previous certificate", self.messages(events))
        server_app, _, _ = self.connect(server, client, "127.0.0.1")
        self.assertEqual(server_app.received, b"ping")


class RepeatLimiterTests(SynchronousTestCase):
    """
    L{RepeatLimiter}: a peer retrying fast does not flood the log.
    """

    def test_repeatsCountedThenReported(self) -> None:
        """
        The first message of a kind passes; repeats within the interval are
        counted; the next one after it passes with the count.
        """
        limiter = RepeatLimiter(interval=60)
        self.assertEqual(limiter.check(("a",), 0), 0)
        self.assertIsNone(limiter.check(("a",), 1))
        self.assertIsNone(limiter.check(("a",), 59))
        self.assertEqual(limiter.check(("b",), 59), 0)
        self.assertEqual(limiter.check(("a",), 60), 2)
        self.assertIsNone(limiter.check(("a",), 61))

    def test_bounded(self) -> None:
        """
        Memory stays bounded: past capacity, it forgets.
        """
        limiter = RepeatLimiter(interval=60, capacity=10)
        for i in range(25):
            self.assertEqual(limiter.check((str(i),), 0), 0)
        self.assertLessEqual(len(limiter._seen), 10)

    def test_refusalsLimited(self) -> None:
        """
        The same plaintext client refused twice within a minute is logged
        once; a minute later the line says how many were not logged.
        """
        pki = PKI(self.mktemp())
        clock = real_clock()
        node = NodeTLS.load(pki.node("n"), clock)
        factory = node.server_factory(CountingFactory(), "external TCP", False, False)
        lines = []
        for step in (0, 1, 1, 60):
            clock.advance(step)
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
            assert protocol is not None
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
            protocol.makeConnection(transport)
            with capturedLogs() as events:
                protocol.dataReceived(b"hello")
            lines.append([formatEvent(e) for e in events])
            protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual([len(x) for x in lines], [1, 0, 0, 1])
        self.assertIn("[2 more like this in the last minute were not logged]", lines[3][0])


class ExpiryWatchTests(SynchronousTestCase):
    """
    L{NodeTLS.watch_expiry}: a long-running node says when its certificate
    is about to expire, then that it has.
    """

    def test_warnsThenErrs(self) -> None:
        """
        Silent while far from expiry; a warning within 30 days; an error
        once expired.
        """
        pki = PKI(self.mktemp())
        clock = real_clock()
        node = NodeTLS.load(pki.node("n", days=40), clock)
        call = node.watch_expiry(interval=24 * 3600)
        self.addCleanup(call.stop)
        with capturedLogs() as events:
            clock.advance(24 * 3600)
        self.assertEqual(list(events), [])
        clock.advance(10 * 24 * 3600)  # several days pass at once
        with capturedLogs() as events:
            clock.advance(24 * 3600)
        self.assertEqual(len(events), 1)
        self.assertIn("expires on", formatEvent(events[0]))
        with capturedLogs() as events:
            clock.advance(30 * 24 * 3600)
        self.assertTrue(events)
        self.assertIn("expired on", formatEvent(events[-1]))
        self.assertIn("peers and clients refuse it", formatEvent(events[-1]))


class ReloadSignalTests(SynchronousTestCase):
    """
    L{install_reload_signal}: SIGHUP reloads in the reactor thread.
    """

    def test_sighupCallsReloadThroughReactor(self) -> None:
        """
        SIGHUP hands the reload to C{reactor.callFromThread}; the returned
        function restores the previous handler.
        """
        import signal

        calls: list[Any] = []

        class FakeReactor:
            def callFromThread(self, f: Any, *args: Any) -> None:
                calls.append((f, args))

        reloads: list[int] = []
        previous = signal.getsignal(signal.SIGHUP)
        restore = install_reload_signal(FakeReactor(), lambda: reloads.append(1))
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            if calls:
                break
            time.sleep(0.001)
        self.assertEqual(len(calls), 1)
        self.assertEqual(reloads, [])  # not in the signal handler itself
        f, args = calls[0]
        with capturedLogs() as events:
            f(*args)
        self.assertEqual(reloads, [1])
        self.assertIn("SIGHUP received: reloading certificates", self.messages(events))
        restore()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def messages(self, events: Any) -> str:
        return "\n".join(formatEvent(e) for e in events)


class ListenerTests(SynchronousTestCase):
    """
    L{tls_listeners}: which listeners speak TLS.
    """

    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.clock = real_clock()
        self.factories = [Factory.forProtocol(Protocol) for _ in range(4)]

    def names(self, config: NodeConfig, node_tls: Optional[NodeTLS]) -> list[tuple[str, int]]:
        return [
            (name, port)
            for name, _, port, _ in tls_listeners(config, node_tls, self.clock, *self.factories)
        ]

    def test_plaintextDefault(self) -> None:
        """
        Without a certificate the four listeners are plaintext, unwrapped.
        """
        listeners = tls_listeners(NodeConfig(), None, self.clock, *self.factories)
        self.assertEqual(
            [name for name, _, _, _ in listeners],
            ["external TCP", "internal TCP", "external HTTP", "internal HTTP"],
        )
        self.assertEqual([f for _, _, _, f in listeners], self.factories)

    def test_securePortWithoutCertificateWarns(self) -> None:
        """
        A secure TCP port without a certificate (allowed with Insecure)
        listens nowhere, and the log says so.
        """
        config = NodeConfig(insecure=True, ext_secure_tcp_port=1115)
        with capturedLogs() as events:
            names = self.names(config, None)
        self.assertNotIn(1115, [port for _, port in names])
        self.assertIn(
            "ExtSecureTcpPort is 1115 but no CertificateFile is set: nothing listens there",
            [formatEvent(e) for e in events],
        )

    def test_allTls(self) -> None:
        """
        With a certificate every listener is TLS.
        """
        node_tls = NodeTLS.load(self.pki.node("n"), self.clock)
        config = NodeConfig(certificate_file="x")
        self.assertEqual(
            self.names(config, node_tls),
            [("external TCP (TLS)", 1113), ("internal TCP (TLS)", 1112),
             ("external HTTP (TLS)", 2113), ("internal HTTP (TLS)", 2112)],
        )

    def test_insecureWithSecurePorts(self) -> None:
        """
        Event Store v5 style: Insecure with a certificate and secure TCP
        ports keeps the main listeners plaintext and adds TLS TCP ones;
        DisableInsecureTcp drops the plaintext TCP listeners.
        """
        node_tls = NodeTLS.load(self.pki.node("n"), self.clock)
        config = NodeConfig(
            certificate_file="x", insecure=True, ext_secure_tcp_port=1115, int_secure_tcp_port=1116
        )
        self.assertEqual(
            self.names(config, node_tls),
            [("external TCP", 1113), ("internal TCP", 1112), ("external HTTP", 2113),
             ("internal HTTP", 2112), ("external secure TCP (TLS)", 1115),
             ("internal secure TCP (TLS)", 1116)],
        )
        config = NodeConfig(
            certificate_file="x", insecure=True, ext_secure_tcp_port=1115,
            int_secure_tcp_port=1116, disable_insecure_tcp=True,
        )
        self.assertEqual(
            [n for n, _ in self.names(config, node_tls)],
            ["external HTTP", "internal HTTP", "external secure TCP (TLS)",
             "internal secure TCP (TLS)"],
        )
