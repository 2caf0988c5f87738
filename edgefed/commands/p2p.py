"""`edgefed p2p chat|send|receive`: secure chat and file transfer between two nodes (docs/p2p.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_PKI_DIR = "/etc/edgefed/pki"


def _argument_type(parser_name: str, what: str, **options: Any) -> Callable[[str], Any]:
    """An argparse type calling edgefed.p2p.parse.<parser_name>; its ValueError becomes a usage error.

    The parser is imported when an argument is converted, so `edgefed --help` stays light.
    """

    def convert(text: str) -> Any:
        from edgefed.p2p import parse

        try:
            return getattr(parse, parser_name)(text, **options)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = what
    return convert


def _parsers() -> dict[str, Callable[[str], Any]]:
    return {
        "listen": _argument_type("parse_endpoint", "HOST:PORT", allow_zero_port=True),
        "peer": _argument_type("parse_endpoint", "HOST:PORT"),
        "duration": _argument_type("parse_duration", "duration"),
        "size": _argument_type("parse_size", "size"),
    }


def _add_security(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pki", default=DEFAULT_PKI_DIR, metavar="DIR", help=f"PKI directory (default {DEFAULT_PKI_DIR})"
    )
    parser.add_argument("--name", metavar="NAME", help="this node's name in the PKI; required for TLS")
    parser.add_argument(
        "--insecure-plaintext", action="store_true",
        help="DANGEROUS: no TLS, no authentication; messages and files travel in clear text",
    )


def _add_peer_options(parser: argparse.ArgumentParser, types: dict[str, Callable[[str], Any]]) -> None:
    parser.add_argument(
        "--peer", required=True, type=types["peer"], metavar="HOST:PORT", help="the other node's receiver"
    )
    parser.add_argument(
        "--peer-name", metavar="NAME", help="require the peer's certificate to be issued to this node name"
    )
    parser.add_argument(
        "--retry-for", type=types["duration"], metavar="DURATION",
        help="keep re-dialling an unreachable or broken link this long (e.g. 30s, 5m)",
    )


def register(subcommands: Any) -> None:
    types = _parsers()
    parser = subcommands.add_parser("p2p", help="secure chat and file transfer between two nodes")
    actions = parser.add_subparsers(dest="p2p_command", required=True, metavar="ACTION")

    chat = actions.add_parser("chat", help="chat with another node (lines from stdin)")
    chat.add_argument(
        "--listen", required=True, type=types["listen"], metavar="HOST:PORT", help="this node's receiver"
    )
    _add_peer_options(chat, types)
    chat.add_argument(
        "--for", dest="lifetime", type=types["duration"], metavar="DURATION", help="end the chat after (e.g. 10m)"
    )
    _add_security(chat)
    chat.set_defaults(handler=_chat)

    send = actions.add_parser("send", help="send files to a node running `edgefed p2p receive`")
    send.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_peer_options(send, types)
    send.add_argument("--as", dest="remote_name", metavar="NAME", help="name to propose to the receiver (one FILE)")
    send.add_argument(
        "--max-rate", type=types["size"], metavar="RATE", help="bandwidth cap in bytes per second (e.g. 20M)"
    )
    send.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_security(send)
    send.set_defaults(handler=_send)

    receive = actions.add_parser("receive", help="receive files (and chat lines) for a limited time")
    receive.add_argument(
        "--listen", required=True, type=types["listen"], metavar="HOST:PORT", help="address to listen on"
    )
    receive.add_argument("--dir", required=True, type=Path, metavar="DIR", help="where received files go")
    receive.add_argument(
        "--for", dest="lifetime", type=types["duration"], metavar="DURATION",
        help="end the session after (e.g. 10m)",
    )
    receive.add_argument("--max-size", type=types["size"], metavar="SIZE", help="largest file accepted (default 4G)")
    receive.add_argument("--allow", action="append", metavar="NAME", help="accept only this peer (repeatable)")
    receive.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_security(receive)
    receive.set_defaults(handler=_receive)


def _credentials(args: argparse.Namespace) -> Any:
    from edgefed.errors import UsageError
    from edgefed.pki import NodeCredentials

    if args.insecure_plaintext:
        return None
    if not args.name:
        raise UsageError("--name is required: the node's name in the PKI (or --insecure-plaintext)")
    return NodeCredentials.load(args.pki, args.name)


def _chat(args: argparse.Namespace) -> int:
    from edgefed.p2p import session

    return session.chat(
        args.listen, args.peer, sys.stdin, session.Terminal(), _credentials(args), args.insecure_plaintext,
        expect_peer=args.peer_name, lifetime=args.lifetime, retry_for=args.retry_for or 60.0,
    )


def _send(args: argparse.Namespace) -> int:
    from edgefed.p2p import session

    return session.send(
        args.files, args.peer, session.Terminal(progress=not args.no_progress), _credentials(args),
        args.insecure_plaintext, remote_name=args.remote_name, expect_peer=args.peer_name,
        retry_for=args.retry_for or 30.0, max_rate=args.max_rate,
    )


def _receive(args: argparse.Namespace) -> int:
    from edgefed.p2p import session
    from edgefed.p2p.receiver import DEFAULT_MAX_FILE_SIZE

    return session.receive(
        args.listen, args.dir, session.Terminal(progress=not args.no_progress), _credentials(args),
        args.insecure_plaintext, lifetime=args.lifetime, max_file_size=args.max_size or DEFAULT_MAX_FILE_SIZE,
        allowed_peers=args.allow,
    )
