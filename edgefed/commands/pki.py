"""`edgefed pki init|issue|keygen|csr|sign|revoke|crl`: the deployment's CA, node credentials and revocation list."""

from __future__ import annotations

import argparse
from typing import Any

NODE_DAYS = 365  # edgefed.pki.NODE_DAYS; not imported here so the CLI loads without cryptography


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser("pki", help="create the deployment CA and issue node credentials")
    actions = parser.add_subparsers(dest="pki_command", required=True, metavar="ACTION")

    init = actions.add_parser("init", help="create a CA in the PKI directory")
    init.add_argument("--pki", required=True, help="PKI directory (see docs/pki.md)")
    init.add_argument("--common-name", default="edgefed deployment CA")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=_init)

    issue = actions.add_parser("issue", help="issue a node's TLS certificate and ledger key")
    issue.add_argument("name", help="node name; it becomes the certificate's common name")
    issue.add_argument("--pki", required=True, help="PKI directory holding the CA")
    issue.add_argument("--san", action="append", default=[], help="extra DNS name or IP (repeatable)")
    issue.add_argument("--days", type=int, default=NODE_DAYS)
    issue.add_argument("--force", action="store_true", help="re-issue an existing certificate")
    issue.add_argument("--keep-ledger-key", action="store_true",
                       help="renewal: new TLS key and certificate, the same ledger key (its records still verify)")
    issue.set_defaults(handler=_issue)

    keygen = actions.add_parser("keygen", help="on a node: create its TLS and ledger keys where missing (0600)")
    keygen.add_argument("name", help="this node's name")
    keygen.add_argument("--pki", required=True, help="the node's PKI directory (node.pki_dir)")
    keygen.set_defaults(handler=_keygen)

    csr = actions.add_parser("csr", help="on a node: print a certificate request made from its TLS key")
    csr.add_argument("name", help="this node's name; the request's common name")
    csr.add_argument("--pki", required=True, help="the node's PKI directory (node.pki_dir)")
    csr.add_argument("--san", action="append", default=[], help="extra DNS name or IP (repeatable)")
    csr.set_defaults(handler=_csr)

    sign = actions.add_parser("sign", help="where the CA key is: check a node's request and sign it")
    sign.add_argument("name", help="the node the request must be for")
    sign.add_argument("--pki", required=True, help="PKI directory holding the CA key")
    sign.add_argument("--csr", default="-", help="the request (PEM file; default - reads stdin)")
    sign.add_argument("--san", action="append", default=[],
                      help="extra DNS name or IP the node may have (repeatable); the request must ask for exactly "
                           "these")
    sign.add_argument("--days", type=int, default=NODE_DAYS)
    sign.add_argument("--renew-days", type=float, default=0,
                      help="keep a matching certificate unless it expires within this many days")
    sign.add_argument("--dry-run", action="store_true", help="check and say what would happen; write nothing")
    sign.set_defaults(handler=_sign)

    revoke = actions.add_parser("revoke", help="put a node's certificate on the deployment CRL (crl.pem)")
    revoke.add_argument("name", help="node name whose certificate (nodes/NAME/tls.crt) is revoked")
    revoke.add_argument("--pki", required=True, help="PKI directory holding the CA key")
    revoke.add_argument("--reason", default="key_compromise",
                        help="CRL reason (key_compromise, cessation_of_operation, superseded, ...)")
    revoke.set_defaults(handler=_revoke)

    crl = actions.add_parser("crl", help="re-sign the CRL with a fresh next-update date (or create an empty one)")
    crl.add_argument("--pki", required=True, help="PKI directory holding the CA key")
    crl.set_defaults(handler=_crl)


def _init(args: argparse.Namespace) -> int:
    from edgefed import pki

    path = pki.init_ca(args.pki, args.common_name, force=args.force)
    print(f"CA written to {path}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from edgefed import pki
    from edgefed.pki_requests import refuse_revoked

    refuse_revoked(args.pki, args.name)  # a revoked name is never certified again, even with --force
    creds = pki.issue_node(
        args.pki, args.name, args.san, days=args.days, force=args.force, keep_ledger_key=args.keep_ledger_key
    )
    print(f"issued {creds.cert} and ledger key {creds.ledger_pub}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from edgefed.pki_requests import ensure_node_keys

    created = ensure_node_keys(args.pki, args.name)
    print(f"{args.name}: created {', '.join(created)}" if created else f"{args.name}: keys kept")
    return 0


def _csr(args: argparse.Namespace) -> int:
    import sys

    from edgefed.pki_requests import node_request

    sys.stdout.write(node_request(args.pki, args.name, args.san).decode())
    return 0


def _sign(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from edgefed.pki import PKIError
    from edgefed.pki_requests import MAX_REQUEST_BYTES, sign_request

    try:
        pem = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1) if args.csr == "-" else Path(args.csr).read_bytes()
    except OSError as exc:
        raise PKIError(f"--csr {args.csr}: {exc.strerror}") from None
    outcome = sign_request(args.pki, args.name, pem, args.san, days=args.days, renew_days=args.renew_days,
                           dry_run=args.dry_run)
    print(f"{args.name}: {outcome}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from edgefed import pki

    serial = pki.revoke(args.pki, args.name, args.reason)
    print(f"revoked {args.name} (serial {serial:x}); copy {pki.crl_path(args.pki)} to every node "
          "(nodes re-read it within seconds, or at once on SIGHUP)")
    return 0


def _crl(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cryptography import x509

    from edgefed import pki

    root = Path(args.pki)
    old = pki.crl_path(root)
    entries: list[x509.RevokedCertificate] = []
    if old.is_file():
        ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
        entries = list(pki.parse_crl(old.read_bytes(), ca, str(old)))
    path = pki.sign_crl(root, entries)
    print(f"{path}: {len(entries)} revoked, valid {pki.CRL_DAYS} days")
    return 0
