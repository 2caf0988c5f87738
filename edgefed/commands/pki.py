"""`edgefed pki init|issue|revoke|crl`: the deployment's CA, node credentials and revocation list."""

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

    creds = pki.issue_node(
        args.pki, args.name, args.san, days=args.days, force=args.force, keep_ledger_key=args.keep_ledger_key
    )
    print(f"issued {creds.cert} and ledger key {creds.ledger_pub}")
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
