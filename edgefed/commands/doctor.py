"""`edgefed doctor`: quick checks of a node (this one, or every inventory host over SSH), each with its fix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgefed.commands.status import add_inventory_options, add_ssh_options, check_ssh_options, ssh_options
from edgefed.errors import UsageError

DEFAULT_CONFIG = "/etc/edgefed/edgefed.toml"


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "doctor",
        help="check clock, certificates, reachability, forwarding, state dir, disk and ledger; say the fix",
        description="Without -i: checks this node, from its configuration. With -i (or --remote): every"
        " chief and worker of the inventory over SSH. Exit status 0 when every check passed, 1 otherwise,"
        " 2 on bad input.",
    )
    parser.add_argument("--config", default=None, metavar="FILE",
                        help=f"this node's configuration (default {DEFAULT_CONFIG})")
    parser.add_argument("--remote", action="store_true",
                        help="check the inventory's hosts over SSH (implied by -i)")
    add_inventory_options(parser)
    add_ssh_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--min-cert-days", type=float, default=14.0, help="fail when a certificate expires sooner")
    parser.add_argument("--min-free-mib", type=int, default=200, help="fail below this much free disk (MiB)")
    parser.add_argument("--max-clock-skew", type=float, default=30.0,
                        help="over SSH: fail when a node's clock is off this machine's by more seconds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgefed.ops.doctor import DoctorLimits
    from edgefed.ops.doctor_run import doctor_local, doctor_remote, render_json, render_text

    if args.min_cert_days < 0 or args.min_free_mib < 0 or args.max_clock_skew <= 0:
        raise UsageError("--min-cert-days and --min-free-mib cannot be negative, --max-clock-skew must be > 0")
    limits = DoctorLimits(max_clock_skew=args.max_clock_skew, min_cert_days=args.min_cert_days,
                          min_free_mib=args.min_free_mib)
    remote = args.remote or args.inventory is not None
    if args.verbose < 2:  # paramiko logs every refused channel and failed login; the report says why
        import logging

        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    if remote:
        if args.config is not None:
            raise UsageError("--config is for this node; over SSH each host's edgefed_config_file is read")
        check_ssh_options(args)
        from edgefed.ops.inventory import load_inventory

        hosts = load_inventory(args.inventory, args.limit, tuple(args.vault_password_file))
        reports = doctor_remote(hosts, ssh_options(args), limits)
    else:
        from edgefed.transport.probe import tcp_reachable

        reports = [doctor_local(_local_host(Path(args.config or DEFAULT_CONFIG)), limits, tcp_reachable)]
    (render_json if args.json else render_text)(reports, sys.stdout)
    return 0 if all(report.passed for report in reports) else 1


def _local_host(config_path: Path) -> Any:
    """This node, described the way the inventory describes a host (what the probe script needs)."""
    import getpass

    from edgefed.config import load_config
    from edgefed.ops.inventory import InventoryHost

    config = load_config(config_path)
    return InventoryHost(
        name=config.node.name, address="localhost", port=22, user=getpass.getuser(), key_file=None, password=None,
        role=config.node.role, node_name=config.node.name, state_dir=config.node.state_dir,
        pki_dir=config.node.pki_dir, public_port=config.federation.public_port,
        private_port=config.federation.private_port, config_file=str(config_path),
    )
