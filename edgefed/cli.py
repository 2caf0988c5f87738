"""The `edgefed` command: parses arguments and hands over to one function per subcommand.

Each module in COMMAND_MODULES registers its subcommands; none imports a heavy dependency
(TensorFlow, paramiko, grpc) until its command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "edgefed.commands.pki",
    "edgefed.commands.ledger",
    "edgefed.commands.run",
    "edgefed.commands.mpi",
    "edgefed.commands.predict",
    "edgefed.commands.p2p",
    "edgefed.commands.status",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefed", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # only the error types we know how to explain
        from edgefed.errors import USER_ERRORS

        if isinstance(exc, tuple(USER_ERRORS)):
            print(f"edgefed: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
