"""`edgefed status`: how every node of the appliance is doing, read over SSH from the Ansible inventory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgefed.errors import UsageError


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "status",
        help="report every node's units, round, ledger, certificate and forwarding over SSH",
        description="Exit status: 0 when every host is healthy, 1 otherwise, 2 on bad input."
        " The checks and the --json shape are in docs/status.md.",
    )
    add_inventory_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    parser.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    add_ssh_options(parser)
    parser.add_argument("--min-cert-days", type=float, default=14.0, help="unhealthy when a certificate expires sooner")
    parser.add_argument(
        "--max-outbox-backlog", type=int, default=100, help="unhealthy above this many undelivered records"
    )
    parser.set_defaults(handler=run)


def add_inventory_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "-i", "--inventory", type=Path, required=required,
        help="Ansible inventory file or directory (default: ANSIBLE_INVENTORY, else ansible.cfg's inventory)",
    )
    parser.add_argument("-l", "--limit", help="Ansible host pattern, as for ansible-playbook --limit")
    parser.add_argument(
        "--vault-password-file", action="append", default=[], metavar="FILE",
        help="vault password file for encrypted inventory variables (repeatable; default:"
        " ANSIBLE_VAULT_PASSWORD_FILE, else ansible.cfg's vault_password_file)",
    )


def add_ssh_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="trust and record host keys not yet in known_hosts (changed keys are always refused)",
    )
    parser.add_argument(
        "--known-hosts",
        action="append",
        type=Path,
        metavar="FILE",
        help="known_hosts file for every host (repeatable; the first receives accepted keys); default:"
        " UserKnownHostsFile from the inventory's ssh args, else ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts",
    )
    parser.add_argument(
        "--ssh-config", type=Path, metavar="FILE",
        help="OpenSSH client config (HostName, IdentityFile, ProxyJump, ProxyCommand); default ~/.ssh/config",
    )
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--command-timeout", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--forks", type=int, default=16, help="hosts probed at once (default 16)")


def check_ssh_options(args: argparse.Namespace) -> None:
    for option in ("connect_timeout", "command_timeout"):
        if getattr(args, option) <= 0:
            raise UsageError(f"--{option.replace('_', '-')} must be more than 0 seconds")
    if args.forks < 1:
        raise UsageError("--forks must be at least 1")


def ssh_options(args: argparse.Namespace) -> Any:
    from edgefed.ops.ssh import SshOptions
    from edgefed.ops.sshroute import load_ssh_config

    return SshOptions(
        connect_timeout=args.connect_timeout,
        command_timeout=args.command_timeout,
        known_hosts=tuple(args.known_hosts or ()),
        accept_new_host_keys=args.accept_new_host_keys,
        forks=args.forks,
        ssh_config=load_ssh_config(args.ssh_config),
    )


def _check(args: argparse.Namespace) -> None:
    if args.watch is not None and args.watch <= 0:
        raise UsageError(f"--watch {args.watch:g}: the refresh interval must be more than 0 seconds")
    if args.count is not None and (args.count < 1 or args.watch is None):
        raise UsageError("--count N needs --watch and N >= 1")
    check_ssh_options(args)
    if args.min_cert_days < 0 or args.max_outbox_backlog < 0:
        raise UsageError("--min-cert-days and --max-outbox-backlog cannot be negative")


def run(args: argparse.Namespace) -> int:
    _check(args)
    # paramiko and ansible load only when the command runs, not with every `edgefed` invocation.
    from edgefed.ops.health import Thresholds
    from edgefed.ops.status import StatusRequest, run_status

    request = StatusRequest(
        inventory=args.inventory,
        limit=args.limit,
        json=args.json,
        watch=args.watch,
        count=args.count,
        ssh=ssh_options(args),
        vault_password_files=tuple(args.vault_password_file),
        thresholds=Thresholds(min_cert_days=args.min_cert_days, max_outbox_backlog=args.max_outbox_backlog),
        quiet_paramiko=args.verbose < 2,
    )
    return run_status(request)
