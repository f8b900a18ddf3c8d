# -*- test-case-name: estwisted.tls.test.test_certs -*-
"""
Tests for L{estwisted.tls.certs} and the C{estore certs} commands of
L{estwisted.node.cli}: what the certificates contain, their lifetimes and key
sizes, the file permissions, the refusals, and acceptance by C{openssl
verify} (when the openssl binary is installed).
"""

from __future__ import annotations

import datetime
import functools
import io
import os
import shutil
import stat
import subprocess
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import crypto
from twisted.trial.unittest import SynchronousTestCase

from estwisted.node.cli import main
from estwisted.node.config import NodeConfig
from estwisted.tls import certs

UTC = datetime.UTC


def chains(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(ca))
    context = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf))
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError:
        return False
    return True


@functools.cache
def _shared_ca() -> certs.Issued:
    return certs.create_ca()


class GenerationTests(SynchronousTestCase):
    """
    L{certs.create_ca}, L{certs.create_node}, L{certs.create_client}.
    """

    def setUp(self) -> None:
        self.ca = _shared_ca()

    def test_ca(self) -> None:
        """
        The CA is a self-signed RSA 2048 CA (path length 0) valid about 5
        years, allowed to sign certificates.
        """
        f = certs.facts_of(self.ca.certificate)
        self.assertTrue(f.is_ca)
        self.assertEqual(f.subject, "CN=estore CA")
        self.assertEqual(f.issuer, f.subject)
        self.assertIsInstance(self.ca.key, rsa.RSAPrivateKey)
        assert isinstance(self.ca.key, rsa.RSAPrivateKey)
        self.assertEqual(self.ca.key.key_size, 2048)
        assert f.key_usage is not None
        self.assertIn("key_cert_sign", f.key_usage)
        lifetime = f.not_after - f.not_before
        self.assertTrue(datetime.timedelta(days=5 * 365) <= lifetime, lifetime)
        self.assertTrue(lifetime < datetime.timedelta(days=5 * 365 + 1), lifetime)
        self.assertTrue(chains(self.ca.certificate, self.ca.certificate))

    def test_node(self) -> None:
        """
        A node certificate carries the reserved node CN by default, the IP
        and DNS SANs, serverAuth and clientAuth, is valid a year and chains
        to the CA.
        """
        node = certs.create_node(self.ca, ["127.0.0.1", "::1"], ["Node1.Cluster", "cluster.dns"])
        f = certs.facts_of(node.certificate)
        self.assertEqual(f.common_names, (NodeConfig().certificate_reserved_node_common_name,))
        self.assertEqual(f.ip_addresses, ("127.0.0.1", "::1"))
        self.assertEqual(f.dns_names, ("node1.cluster", "cluster.dns"))
        self.assertEqual(f.extended_key_usage, frozenset({"serverAuth", "clientAuth"}))
        self.assertFalse(f.is_ca)
        self.assertEqual(f.issuer, "CN=estore CA")
        lifetime = f.not_after - f.not_before
        self.assertTrue(datetime.timedelta(days=365) <= lifetime < datetime.timedelta(days=366))
        self.assertTrue(chains(node.certificate, self.ca.certificate))
        other = certs.create_ca("other")
        self.assertFalse(chains(node.certificate, other.certificate))

    def test_defaultCommonNameIsTheReservedOne(self) -> None:
        """
        The default node CN equals the default of
        CertificateReservedNodeCommonName.
        """
        self.assertEqual(
            certs.DEFAULT_NODE_COMMON_NAME, NodeConfig().certificate_reserved_node_common_name
        )

    def test_client(self) -> None:
        """
        A client certificate has the user name as CN, clientAuth only and
        no SAN.
        """
        client = certs.create_client(self.ca, "admin", key_type="ec")
        f = certs.facts_of(client.certificate)
        self.assertEqual(f.common_names, ("admin",))
        self.assertEqual(f.extended_key_usage, frozenset({"clientAuth"}))
        self.assertEqual((f.dns_names, f.ip_addresses), ((), ()))
        self.assertIsInstance(client.key, ec.EllipticCurvePrivateKey)
        self.assertTrue(chains(client.certificate, self.ca.certificate))

    def test_lifetimeCappedByCA(self) -> None:
        """
        A leaf never outlives its CA; a CA that expired signs nothing.
        """
        now = datetime.datetime.now(UTC)
        short_ca = certs.create_ca("short", days=10, key_type="ec")
        node = certs.create_node(short_ca, ["127.0.0.1"], key_type="ec")
        self.assertEqual(
            node.certificate.not_valid_after_utc, short_ca.certificate.not_valid_after_utc
        )
        e = self.assertRaises(
            certs.CertsError,
            certs.create_node,
            short_ca,
            ["127.0.0.1"],
            key_type="ec",
            now=now + datetime.timedelta(days=20),
        )
        self.assertIn("expired", str(e))

    def test_refusals(self) -> None:
        """
        Missing or malformed names, wildcards outside the first label, a
        bad key type and a zero lifetime are refused in plain words.
        """
        rows: list[tuple[dict[str, Any], str]] = [
            (dict(ip_addresses=[], dns_names=[]), "needs at least one IP address or DNS name"),
            (dict(ip_addresses=["300.1.1.1"]), "is not an IP address"),
            (dict(dns_names=["a.*.b"]), "wildcard may only be the first label"),
            (dict(dns_names=["f*.a.b"]), "wildcard may only be the first label"),
            (dict(dns_names=["a..b"]), "is not a DNS name"),
            (dict(dns_names=["10.0.0.1"]), "give it with --ip-addresses"),
            (dict(ip_addresses=["127.0.0.1"], key_type="dsa"), "unknown key type"),
            (dict(ip_addresses=["127.0.0.1"], days=0), "at least one day"),
        ]
        for kwargs, expected in rows:
            e = self.assertRaises(certs.CertsError, certs.create_node, self.ca, **kwargs)
            self.assertIn(expected, str(e), kwargs)

    def test_wildcardAllowedFirst(self) -> None:
        """
        A wildcard as the whole first label is accepted.
        """
        node = certs.create_node(self.ca, dns_names=["*.nodes.example.com"], key_type="ec")
        self.assertEqual(certs.facts_of(node.certificate).dns_names, ("*.nodes.example.com",))


class FileTests(SynchronousTestCase):
    """
    L{certs.write_issued} and L{certs.load_issuer}.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.ca = certs.create_ca(key_type="ec")

    def test_permissions(self) -> None:
        """
        Keys are written 0600 and certificates 0644, whatever the umask.
        """
        old = os.umask(0)
        try:
            cert, key = certs.write_issued(self.directory, "ca", self.ca)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(cert).st_mode), 0o644)
        self.assertEqual(os.path.basename(cert), "ca.crt")

    def test_noOverwrite(self) -> None:
        """
        Existing files are kept unless C{force}.
        """
        cert, _ = certs.write_issued(self.directory, "ca", self.ca)
        with open(cert, "rb") as f:
            before = f.read()
        other = certs.create_ca("other", key_type="ec")
        e = self.assertRaises(certs.CertsError, certs.write_issued, self.directory, "ca", other)
        self.assertIn("already exists; use --force", str(e))
        with open(cert, "rb") as f:
            self.assertEqual(f.read(), before)
        certs.write_issued(self.directory, "ca", other, force=True)
        with open(cert, "rb") as f:
            self.assertNotEqual(f.read(), before)

    def test_loadIssuer(self) -> None:
        """
        A written CA loads back; a key of another certificate, a non-CA and
        a missing file are refused.
        """
        cert, key = certs.write_issued(self.directory, "ca", self.ca)
        issuer = certs.load_issuer(cert, key)
        self.assertEqual(issuer.certificate, self.ca.certificate)
        other_cert, other_key = certs.write_issued(
            self.directory, "other", certs.create_ca("other", key_type="ec")
        )
        e = self.assertRaises(certs.CertsError, certs.load_issuer, cert, other_key)
        self.assertIn("does not belong to the certificate", str(e))
        node_cert, node_key = certs.write_issued(
            self.directory, "node", certs.create_node(self.ca, ["127.0.0.1"], key_type="ec")
        )
        e = self.assertRaises(certs.CertsError, certs.load_issuer, node_cert, node_key)
        self.assertIn("is not a CA certificate", str(e))
        e = self.assertRaises(certs.CertsError, certs.load_issuer, cert + ".missing", key)
        self.assertIn("cannot read the CA certificate", str(e))


class CommandTests(SynchronousTestCase):
    """
    C{estore certs ...} through L{main}.
    """

    def run_cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(args), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def setUp(self) -> None:
        self.root = self.mktemp()
        code, out, _ = self.run_cli("certs", "create-ca", "--out", f"{self.root}/ca",
                                    "--key-type", "ec")
        self.assertEqual(code, 0)
        self.assertIn("ca.crt (CN=estore CA", out)
        self.ca_cert = f"{self.root}/ca/ca.crt"
        self.ca_key = f"{self.root}/ca/ca.key"

    def test_createNode(self) -> None:
        """
        C{create-node} writes node.crt and node.key with the SANs given.
        """
        code, out, err = self.run_cli(
            "certs", "create-node", "--ca-certificate", self.ca_cert, "--ca-key", self.ca_key,
            "--ip-addresses", "127.0.0.1, 127.0.0.2", "--dns-names", "node1.cluster",
            "--out", f"{self.root}/node1",
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn("node.key (private key, mode 0600)", out)
        with open(f"{self.root}/node1/node.crt", "rb") as f:
            f_ = certs.facts_of(x509.load_pem_x509_certificate(f.read()))
        self.assertEqual(f_.ip_addresses, ("127.0.0.1", "127.0.0.2"))
        self.assertEqual(f_.dns_names, ("node1.cluster",))
        self.assertEqual(f_.common_names, (certs.DEFAULT_NODE_COMMON_NAME,))

    def test_createClientAndShow(self) -> None:
        """
        C{create-client} names its files after the user; C{show} describes
        the certificate.
        """
        code, _, _ = self.run_cli(
            "certs", "create-client", "--ca-certificate", self.ca_cert, "--ca-key", self.ca_key,
            "--common-name", "ops", "--out", f"{self.root}/users", "--key-type", "ec",
        )
        self.assertEqual(code, 0)
        code, out, _ = self.run_cli("certs", "show", f"{self.root}/users/ops.crt")
        self.assertEqual(code, 0)
        self.assertIn("subject:   CN=ops", out)
        self.assertIn("extended:  clientAuth", out)

    def test_errorsAreOneLine(self) -> None:
        """
        A failure is one line on stderr and exit code 1; a usage error is
        exit code 2.
        """
        code, out, err = self.run_cli(
            "certs", "create-node", "--ca-certificate", self.ca_cert, "--ca-key", self.ca_key,
            "--out", f"{self.root}/n",
        )
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertTrue(err.startswith("estore certs create-node: error: a node certificate needs"))
        code, _, err = self.run_cli("certs", "create-ca", "--out", f"{self.root}/ca")
        self.assertEqual(code, 1)
        self.assertIn("already exists", err)
        code, _, err = self.run_cli("certs", "create-node")
        self.assertEqual(code, 2)
        self.assertIn("the following arguments are required: --ca-certificate", err)

    def test_opensslVerify(self) -> None:
        """
        C{openssl verify} accepts the node certificate (as SSL server and
        client) and the client certificate, against the CA.
        """
        openssl = shutil.which("openssl")
        if openssl is None:
            raise self.skipTest("no openssl binary")  # type: ignore[attr-defined]
        self.run_cli(
            "certs", "create-node", "--ca-certificate", self.ca_cert, "--ca-key", self.ca_key,
            "--ip-addresses", "127.0.0.1", "--out", f"{self.root}/n", "--key-type", "rsa",
        )
        self.run_cli(
            "certs", "create-client", "--ca-certificate", self.ca_cert, "--ca-key", self.ca_key,
            "--common-name", "admin", "--out", f"{self.root}/c",
        )
        for purpose, path in (
            ("sslserver", f"{self.root}/n/node.crt"),
            ("sslclient", f"{self.root}/n/node.crt"),
            ("sslclient", f"{self.root}/c/admin.crt"),
        ):
            result = subprocess.run(
                [openssl, "verify", "-purpose", purpose, "-CAfile", self.ca_cert, path],
                capture_output=True, timeout=30,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn(b": OK", result.stdout)
        other = self.mktemp()
        self.run_cli("certs", "create-ca", "--out", other, "--key-type", "ec")
        result = subprocess.run(
            [openssl, "verify", "-CAfile", f"{other}/ca.crt", f"{self.root}/n/node.crt"],
            capture_output=True, timeout=30,
        )
        self.assertNotEqual(result.returncode, 0)
