# -*- test-case-name: estwisted.tls.test.test_certs -*-
"""
The C{estore} console script.  The node itself runs under C{twistd -n
estore}; this command holds the tooling around it:

    estore certs create-ca --out certs/ca
    estore certs create-node --ca-certificate certs/ca/ca.crt --ca-key certs/ca/ca.key \\
        --ip-addresses 127.0.0.1 --dns-names node1.cluster --out certs/node1
    estore certs create-client --ca-certificate ... --ca-key ... --common-name admin \\
        --out certs/admin
    estore certs show certs/node1/node.crt

Every failure is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import IO, Optional

from cryptography import x509

from estwisted.manager.systemd import ServiceError, add_service_parser, run_service
from estwisted.tls import certs

__all__ = ["main"]


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estore", description="Tools for estwisted nodes (run a node with twistd -n estore)."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    certs_parser = commands.add_parser(
        "certs", help="create a private CA and node/client certificates"
    )
    actions = certs_parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def common(p: argparse.ArgumentParser, days: int) -> None:
        p.add_argument("--out", default=".", help="output directory (default: .)")
        p.add_argument(
            "--days", type=int, default=days, help=f"lifetime in days (default: {days})"
        )
        p.add_argument(
            "--key-type", choices=("rsa", "ec"), default="rsa",
            help="rsa (2048 bits, default) or ec (P-256)",
        )
        p.add_argument("--force", action="store_true", help="overwrite existing files")

    def signed_by(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ca-certificate", required=True, help="the CA certificate (PEM)")
        p.add_argument("--ca-key", required=True, help="the CA private key (PEM)")

    ca = actions.add_parser("create-ca", help="create a root CA (ca.crt, ca.key)")
    ca.add_argument("--common-name", default=certs.DEFAULT_CA_COMMON_NAME)
    ca.add_argument("--name", default="ca", help="file name stem (default: ca)")
    common(ca, certs.CA_DAYS)

    node = actions.add_parser(
        "create-node", help="create a node certificate (node.crt, node.key) signed by the CA"
    )
    signed_by(node)
    node.add_argument(
        "--ip-addresses", type=_list, default=[],
        help="comma-separated IP addresses the node is reached at",
    )
    node.add_argument(
        "--dns-names", type=_list, default=[],
        help="comma-separated DNS names the node is reached at (add the cluster DNS name "
        "when nodes are discovered through DNS)",
    )
    node.add_argument(
        "--common-name", default=certs.DEFAULT_NODE_COMMON_NAME,
        help="must equal the nodes' CertificateReservedNodeCommonName "
        f"(default: {certs.DEFAULT_NODE_COMMON_NAME})",
    )
    node.add_argument("--name", default="node", help="file name stem (default: node)")
    common(node, certs.LEAF_DAYS)

    client = actions.add_parser(
        "create-client", help="create a client certificate (CN = user name) signed by the CA"
    )
    signed_by(client)
    client.add_argument("--common-name", required=True, help="the user name")
    client.add_argument("--name", default=None, help="file name stem (default: the user name)")
    common(client, certs.LEAF_DAYS)

    show = actions.add_parser("show", help="describe a PEM certificate")
    show.add_argument("certificate")
    add_service_parser(commands)
    return parser


def _run(args: argparse.Namespace, out: IO[str]) -> None:
    if args.command == "service":
        run_service(args, out)
        return
    action = args.action
    if action == "show":
        try:
            with open(args.certificate, "rb") as f:
                data = f.read()
        except OSError as e:
            raise certs.CertsError(f"cannot read {args.certificate}: {e.strerror}") from None
        try:
            loaded = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise certs.CertsError(f"{args.certificate} is not a PEM certificate") from None
        out.write("\n\n".join(certs.describe(certs.facts_of(c)) for c in loaded) + "\n")
        return
    if action == "create-ca":
        issued = certs.create_ca(args.common_name, days=args.days, key_type=args.key_type)
        stem = args.name
    else:
        issuer = certs.load_issuer(args.ca_certificate, args.ca_key)
        if action == "create-node":
            issued = certs.create_node(
                issuer,
                ip_addresses=args.ip_addresses,
                dns_names=args.dns_names,
                common_name=args.common_name,
                days=args.days,
                key_type=args.key_type,
            )
            stem = args.name
        else:
            issued = certs.create_client(
                issuer, args.common_name, days=args.days, key_type=args.key_type
            )
            stem = args.name or args.common_name
    cert_path, key_path = certs.write_issued(args.out, stem, issued, force=args.force)
    facts = certs.facts_of(issued.certificate)
    out.write(f"wrote {cert_path} ({facts.subject}, valid until {facts.not_after:%Y-%m-%d})\n")
    out.write(f"wrote {key_path} (private key, mode 0600)\n")


def main(
    argv: Optional[Sequence[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
) -> int:
    """
    Run C{estore}.

    @param argv: the arguments after the program name; default C{sys.argv[1:]}.
    @return: the exit code (0 on success, 1 on failure, 2 on a usage error).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = _parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        _run(args, out)
    except (certs.CertsError, ServiceError) as e:
        err.write(f"estore {args.command} {args.action}: error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
