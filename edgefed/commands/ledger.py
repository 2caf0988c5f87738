"""`edgefed ledger serve|verify|show|provenance|bootstrap-iroha`: the BSMD ledger client service and its tools."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from edgefed.config import NodeConfig, load_config


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser("ledger", help="the transfer ledger: relay service, verification, listing")
    actions = parser.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="relay this node's outbox to the ledger backend until stopped")
    serve.add_argument("--config", required=True, help="the node's configuration (TOML, [ledger] section)")
    serve.add_argument("--pki", help="PKI directory (overrides node.pki_dir)")
    serve.add_argument("--name", help="node name (overrides node.name)")
    serve.add_argument("--state-dir", help="state directory (overrides node.state_dir)")
    serve.add_argument(
        "--drain",
        type=float,
        metavar="SECONDS",
        help="deliver what is waiting, then exit (status 1 if records are still waiting after SECONDS)",
    )
    serve.add_argument(
        "--stop-grace",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="on SIGTERM, keep delivering what is waiting for up to SECONDS before exiting (default 15)",
    )
    serve.add_argument(
        "--nice",
        type=int,
        default=10,
        help="lower the service's CPU priority by this much (default 10: relaying yields to training)",
    )
    serve.set_defaults(handler=_serve)

    verify = actions.add_parser("verify", help="check chain integrity, every signature and both sides of transfers")
    verify.add_argument(
        "path", metavar="PATH", nargs="?", help="a ledger database or a state directory holding ledger.sqlite"
    )
    verify.add_argument("--config", help="verify the Iroha ledger this node configuration points at (needs --pki)")
    verify.add_argument("--pki", help="also check the registered keys against this PKI directory's ledger.pub files")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)

    show = actions.add_parser("show", help="list the ledger's transfer and refusal records")
    show.add_argument("path", metavar="PATH", help="a ledger database or a state directory holding ledger.sqlite")
    show.add_argument("--round", type=int, help="only this round")
    show.add_argument("--kind", choices=("weights", "update", "file", "refusal", "model"),
                      help="only this kind (file: p2p transfers; refusal: updates the chief refused; "
                      "model: global models the chief adopted)")
    show.add_argument("--node", help="only records where this node is sender or receiver")
    show.add_argument("--json", action="store_true", help="one JSON object per record")
    show.add_argument("--pki", help="mark records of identities revoked by this PKI directory's crl.pem")
    show.set_defaults(handler=_show)

    trace = actions.add_parser(
        "provenance", help="walk from an exported model file back to round 0 on the ledger, checking every link"
    )
    trace.add_argument("model", metavar="MODEL",
                       help="an exported model file (.tflite or .keras, its manifest.json beside it)")
    trace.add_argument("path", metavar="STATE_DIR", nargs="?",
                       help="the chief's state directory (or its ledger.sqlite) of the embedded ledger")
    trace.add_argument("--config", help="read the Iroha ledger this node configuration points at (needs --pki)")
    trace.add_argument("--pki", help="check the ledger keys against this PKI directory's ledger.pub files")
    trace.set_defaults(handler=_provenance)

    boot = actions.add_parser(
        "bootstrap-iroha", help="create the Iroha domain, node accounts and permissions from the PKI"
    )
    boot.add_argument("--config", required=True, help="the chief's configuration ([ledger] torii, domain)")
    boot.add_argument("--pki", help="PKI directory holding every node's ledger key (default: node.pki_dir)")
    boot.add_argument("--admin-account", required=True, help="an Iroha account that may create roles (admin@test)")
    boot.add_argument("--admin-key", required=True, help="its private key: Iroha .priv (hex) or ed25519 PEM")
    boot.add_argument("--nodes", help="comma-separated node names (default: every node in the PKI directory)")
    boot.add_argument(
        "--p2p", action="store_true",
        help="also let every worker write on every other worker's account (p2p file records between workers)",
    )
    boot.set_defaults(handler=_bootstrap_iroha)


def _config(args: argparse.Namespace) -> NodeConfig:
    config = load_config(args.config)
    changes = {
        key: value
        for key, value in (
            ("pki_dir", getattr(args, "pki", None)),
            ("name", getattr(args, "name", None)),
            ("state_dir", getattr(args, "state_dir", None)),
        )
        if value is not None
    }
    return dataclasses.replace(config, node=dataclasses.replace(config.node, **changes))


def _serve(args: argparse.Namespace) -> int:
    from edgefed.ledger.service import service_for
    from edgefed.transport import reload_on_sighup

    config = _config(args)
    if args.nice:
        os.nice(args.nice)
    service = service_for(config)
    try:
        if args.drain is not None:
            delivered = service.drain(args.drain)
            print(
                f"ledger: delivered {service.stats.delivered}, refused {service.stats.refused}, "
                f"waiting {service.outbox.backlog()}"
            )
            return 0 if delivered else 1
        stop = threading.Event()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        reload_on_sighup()  # systemctl reload: re-read the certificate, key and CRL (no restart)
        service.run(stop)
        # Stopping is the moment records are most likely waiting (the node just finished): deliver them.
        return 0 if service.drain(args.stop_grace) else 1
    finally:
        service.close()


def _verify(args: argparse.Namespace) -> int:
    from edgefed.errors import UsageError
    from edgefed.ledger.verify import verify_ledger

    if (args.path is None) == (args.config is None):
        raise UsageError("give either PATH (the embedded ledger) or --config (a node configured for iroha)")
    report = _verify_iroha(args) if args.config is not None else verify_ledger(args.path, args.pki)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        models = f", {report.models} model records" if report.models else ""  # none in a p2p-only ledger
        print(
            f"ledger OK: {report.entries} entries, {report.records} records, "
            f"{report.proven_transfers} transfers proven by both sides{models}; "
            f"signers: {', '.join(report.signers)}"
        )
    else:
        print(f"ledger BROKEN: {report.problems[0]}", file=sys.stderr)
        if len(report.problems) > 1:
            print(f"  ({len(report.problems) - 1} more problems; --json lists them all)", file=sys.stderr)
    return 0 if report.ok else 1


def _provenance(args: argparse.Namespace) -> int:
    from edgefed.errors import UsageError
    from edgefed.ledger.provenance import trace
    from edgefed.ledger.verify import verify_ledger

    if (args.path is None) == (args.config is None):
        raise UsageError("give either STATE_DIR (the embedded ledger) or --config (a node configured for iroha)")
    ledger = _verify_iroha(args) if args.config is not None else verify_ledger(args.path, args.pki)
    report = trace(args.model, ledger)
    if not report.ok:
        print(f"provenance BROKEN: {report.problems[0]}", file=sys.stderr)
        if len(report.problems) > 1:
            print(f"  ({len(report.problems) - 1} more problems)", file=sys.stderr)
        return 1
    print(f"provenance OK: {args.model} is model {report.model_sha256[:16]}… of process {report.process!r}, "
          f"round {report.links[0].round}, traced through {len(report.links)} models back to round 0")
    for link in report.links:
        inputs = ", ".join(
            f"{c.node} (own weights)" if c.update == "local"
            else f"{c.node} (update {c.update[:12]}…, {' & '.join(c.records)})" for c in link.inputs
        )
        print(f"  round {link.round}: model {link.model[:12]}… ({link.where}) "
              + (f"averaged from {inputs}" if inputs else "the initial weights"))
    return 0


def _verify_iroha(args: argparse.Namespace) -> Any:
    from edgefed.errors import UsageError
    from edgefed.ledger.iroha import IrohaBackend, verify_iroha
    from edgefed.pki import ledger_public_keys

    config = _config(args)
    if config.ledger.backend != "iroha":
        raise UsageError(f"{args.config}: ledger.backend is {config.ledger.backend!r}; verify its ledger by PATH")
    keys = ledger_public_keys(args.pki or config.node.pki_dir)
    if not keys:
        raise UsageError(f"no ledger.pub files under {args.pki or config.node.pki_dir}/nodes: pass --pki")
    return verify_iroha(IrohaBackend.for_config(config), keys)


def _show(args: argparse.Namespace) -> int:
    from edgefed.ledger.chain import ChainReader

    revoked = _revoked_names(args.pki)
    ledger = ChainReader.open(args.path)
    try:
        rows = []
        for entry in ledger.entries():
            if entry.kind != "record":
                continue
            record = entry.record()
            if args.round is not None and record.round != args.round:
                continue
            if args.kind is not None and record.kind != args.kind:
                continue
            if args.node is not None and args.node not in (record.sender, record.receiver):
                continue
            rows.append((entry.height, record))
    finally:
        ledger.close()
    if args.json:
        for height, record in rows:
            marks = {"revoked_identity": sorted(revoked & {record.sender, record.receiver})} if args.pki else {}
            print(json.dumps({"height": height, **record.to_dict(), **marks}, sort_keys=True))
        return 0
    _print_table(rows, revoked)
    return 0


def _revoked_names(pki_dir: str | None) -> frozenset[str]:
    """Nodes whose certificate the CRL under pki_dir revokes (named by its revoked.json)."""
    if pki_dir is None:
        return frozenset()
    from edgefed.pki import load_revocations

    return load_revocations(pki_dir).revoked_names


def _print_table(rows: list[tuple[int, Any]], revoked: frozenset[str] = frozenset()) -> None:
    import datetime as dt

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(rows)} transfer records")
    marked = sorted(revoked & {name for _, record in rows for name in (record.sender, record.receiver)})
    files = any(record.name is not None for _, record in rows)  # the file column only when p2p files are listed
    refusals = any(record.code is not None for _, record in rows)  # the reason column only with refusals
    columns = ("height", "round", "kind", *(("file",) if files else ()), "sender", "receiver", "side", "bytes",
               "sha256", *(("reason",) if refusals else ()), "time (UTC)")
    for column in columns:
        table.add_column(column, justify="right" if column in ("height", "round", "bytes") else "left")
    for height, record in rows:
        when = dt.datetime.fromtimestamp(record.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        name = (Text(record.name or ""),) if files else ()  # Text: a file name is never read as rich markup
        why = (Text(f"{record.code}: {record.reason}" if record.code else ""),) if refusals else ()
        side = f"refused by {record.observer}" if record.code else f"{record.direction} ({record.observer})"
        table.add_row(
            str(height), "-" if record.name is not None else str(record.round), record.kind, *name,
            _star(record.sender, revoked), _star(record.receiver, revoked), side, f"{record.bytes:,}",
            record.sha256[:16], *why, when,
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    if marked:
        console.print(Text(f"* from a now-revoked identity: {', '.join(marked)} (its records stay on the ledger)"))


def _star(name: str, revoked: frozenset[str]) -> Any:
    from rich.text import Text

    return Text(f"{name} *" if name in revoked else name)  # Text: a node name is never read as markup


def _bootstrap_iroha(args: argparse.Namespace) -> int:
    from edgefed.ledger.errors import LedgerError
    from edgefed.ledger.iroha import load_admin_key
    from edgefed.ledger.iroha_bootstrap import bootstrap
    from edgefed.pki import NodeCredentials

    config = _config(args)
    pki_dir = Path(args.pki or config.node.pki_dir)
    if args.nodes:
        names = [name.strip() for name in args.nodes.split(",") if name.strip()]
    else:
        names = sorted(path.parent.name for path in pki_dir.glob("nodes/*/ledger.key"))
    if not config.ledger.torii:
        raise LedgerError(f"{args.config}: ledger.torii is not set (the Iroha peer's Torii address)")
    node_keys = {name: NodeCredentials(pki_dir, name).ledger_signing_key() for name in names}
    steps = bootstrap(
        torii=config.ledger.torii,
        domain=config.ledger.domain,
        admin_account=args.admin_account,
        admin_key=load_admin_key(args.admin_key),
        node_keys=node_keys,
        chief=config.node.name,
        commit_timeout=config.ledger.commit_timeout,
        p2p=args.p2p,
    )
    for step in steps:
        print(f"{step.description}: {step.outcome}")
    return 0
