"""The `edgefed` command: parses arguments and hands over to one function per subcommand.

Each module in COMMAND_MODULES registers its subcommands; none imports a heavy dependency
(TensorFlow, paramiko, grpc) until its command runs.

Exit status (docs/operations.md): 0 success; 1 an internal error (a bug) or the command's own "not
healthy / not verified" answer; 2 bad input (a file, option or configuration value; the one-line
message says which and what to do); 3 gave up on the network (a peer or the chief stayed unreachable).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tomllib
from collections.abc import Sequence

from edgefed import __version__, logs

COMMAND_MODULES = (
    "edgefed.commands.pki",
    "edgefed.commands.ledger",
    "edgefed.commands.run",
    "edgefed.commands.mpi",
    "edgefed.commands.predict",
    "edgefed.commands.p2p",
    "edgefed.commands.status",
    "edgefed.commands.doctor",
    "edgefed.commands.history",
)

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_NETWORK = 3

log = logging.getLogger("edgefed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefed",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="exit status: 0 ok, 1 internal error or unhealthy, 2 bad input, 3 gave up on the network",
    )
    parser.add_argument("--version", action="version", version=f"edgefed {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging: -v info, -vv debug (default: node.log_level, else warning)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="errors only")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subcommands)
    return parser


def _config_level(args: argparse.Namespace) -> int | None:
    """node.log_level of the configuration the command reads, if it names one (validated later by
    load_config; here an unreadable file or bad value just means "not set")."""
    path = getattr(args, "config", None) or getattr(args, "ledger_config", None)
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            value = tomllib.load(file).get("node", {}).get("log_level")
        return logs.parse_level(value) if isinstance(value, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _network_errors() -> tuple[type[BaseException], ...]:
    from edgefed.p2p.errors import PeerUnreachable

    return (PeerUnreachable, ConnectionError)


def _say(line: str) -> None:
    """The command's last word on stderr; under systemd at error priority, like the log's errors."""
    prefix = f"<{logs.priority(logging.ERROR)}>" if logs.under_journal() else ""
    print(prefix + line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logs.level_from_flags(args.verbose, args.quiet)
    logs.configure(level if level is not None else _config_level(args) or logs.DEFAULT_LEVEL)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every error ends as one line; only a bug keeps its traceback (-vv)
        from edgefed.errors import USER_ERRORS

        if isinstance(exc, BrokenPipeError):  # `edgefed ... | head`: the reader left; nothing more to say
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_INTERNAL
        if isinstance(exc, _network_errors()):
            _say(f"edgefed: gave up: {exc}")
            return EXIT_NETWORK
        if isinstance(exc, tuple(USER_ERRORS)):
            _say(f"edgefed: error: {exc}")
            return EXIT_BAD_INPUT
        if isinstance(exc, OSError) and exc.filename is not None:
            _say(f"edgefed: error: {exc.filename}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
        if args.verbose >= 2 or logs.under_journal():
            log.exception("internal error")
        _say(f"edgefed: internal error: {type(exc).__name__}: {exc} (a bug: please report it with the output"
             " of the same command run with -vv)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
