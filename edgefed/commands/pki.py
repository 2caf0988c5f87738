"""`edgefed pki init|issue`: the deployment's CA and node credentials, for local use and tests."""

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
    issue.set_defaults(handler=_issue)


def _init(args: argparse.Namespace) -> int:
    from edgefed import pki

    path = pki.init_ca(args.pki, args.common_name, force=args.force)
    print(f"CA written to {path}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from edgefed import pki

    creds = pki.issue_node(args.pki, args.name, args.san, days=args.days, force=args.force)
    print(f"issued {creds.cert} and ledger key {creds.ledger_pub}")
    return 0
