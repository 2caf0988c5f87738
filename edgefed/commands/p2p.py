"""`edgefed p2p chat|send|receive`: secure chat and file transfer between two nodes (docs/p2p.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefed.config import NodeConfig
    from edgefed.ledger.files import FileTransferRecorder
    from edgefed.p2p.session import Terminal

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
        "--pki", metavar="DIR", help=f"PKI directory (default: node.pki_dir of --ledger-config, else {DEFAULT_PKI_DIR})"
    )
    parser.add_argument(
        "--name", metavar="NAME",
        help="this node's name in the PKI, required for TLS (default: node.name of --ledger-config)",
    )
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
    _add_ledger(send)
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
    _add_ledger(receive)
    receive.set_defaults(handler=_receive)


def _add_ledger(parser: argparse.ArgumentParser) -> None:
    # chat has no such option: a chat session never transfers files (its receiver refuses them).
    parser.add_argument(
        "--ledger-config", type=Path, metavar="FILE",
        help="record every completed transfer on the ledger: this node's configuration (TOML; [node] name, "
        "pki_dir, state_dir and [ledger]); also the default for --name and --pki",
    )


def _ledger_config(args: argparse.Namespace) -> NodeConfig | None:
    """The node configuration of --ledger-config, checked against the other options (None without it)."""
    from edgefed.config import load_config
    from edgefed.errors import UsageError

    if getattr(args, "ledger_config", None) is None:
        return None
    if args.insecure_plaintext:
        raise UsageError(
            "--ledger-config cannot be combined with --insecure-plaintext: the peer of a plain-text link is not "
            "authenticated, so the ledger could not prove who took part in a transfer"
        )
    config = load_config(args.ledger_config)
    if args.name is not None and args.name != config.node.name:
        raise UsageError(
            f"--name {args.name} is not node.name {config.node.name!r} of {args.ledger_config}: "
            "records are signed with the ledger key of the node the configuration describes"
        )
    return config


def _credentials(args: argparse.Namespace, config: NodeConfig | None = None) -> Any:
    from edgefed.errors import UsageError
    from edgefed.pki import NodeCredentials

    if args.insecure_plaintext:
        return None
    name = args.name or (config.node.name if config else None)
    pki_dir = args.pki or (config.node.pki_dir if config else DEFAULT_PKI_DIR)
    if not name:
        raise UsageError("--name is required: the node's name in the PKI (or --ledger-config, or --insecure-plaintext)")
    return NodeCredentials.load(pki_dir, name)


class _LedgerRecording:
    """The on_file_transfer callback of a command given --ledger-config: records, and says so."""

    def __init__(self, config: NodeConfig | None, terminal: Terminal) -> None:
        self.recorder: FileTransferRecorder | None = None
        if config is not None:
            from edgefed.ledger.files import file_transfer_recorder

            self.recorder = file_transfer_recorder(config)
        self.terminal = terminal
        self.failures = 0

    def __call__(self, transfer: dict[str, Any]) -> None:
        import sqlite3

        from edgefed.ledger.errors import LedgerError

        assert self.recorder is not None
        try:
            record = self.recorder(transfer)
        except (LedgerError, OSError, sqlite3.Error) as exc:
            self.failures += 1
            self.terminal.complain(f"ledger: {transfer.get('name')!r} was transferred but NOT recorded: {exc}")
            return
        self.terminal.say(
            f"ledger: {record.direction} record {record.id} is in {self.recorder.outbox.path} "
            "(relayed by the node's `edgefed ledger serve`)"
        )

    @property
    def callback(self) -> Callable[[dict[str, Any]], None] | None:
        return self if self.recorder is not None else None

    def status(self) -> int:
        """A transfer that happened but could not be recorded fails the command too."""
        return 2 if self.failures else 0

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def _chat(args: argparse.Namespace) -> int:
    from edgefed.p2p import session

    return session.chat(
        args.listen, args.peer, sys.stdin, session.Terminal(), _credentials(args), args.insecure_plaintext,
        expect_peer=args.peer_name, lifetime=args.lifetime, retry_for=args.retry_for or 60.0,
    )


def _send(args: argparse.Namespace) -> int:
    from edgefed.p2p import session

    config = _ledger_config(args)
    terminal = session.Terminal(progress=not args.no_progress)
    credentials = _credentials(args, config)
    recording = _LedgerRecording(config, terminal)
    try:
        status = session.send(
            args.files, args.peer, terminal, credentials,
            args.insecure_plaintext, remote_name=args.remote_name, expect_peer=args.peer_name,
            retry_for=args.retry_for or 30.0, max_rate=args.max_rate, on_file_transfer=recording.callback,
        )
    finally:
        recording.close()
    return status or recording.status()


def _check_receive_dir(directory: Path) -> None:
    """--dir must be (or become) a directory this user can write into: say so before listening."""
    from edgefed.errors import UsageError

    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {directory}: not a directory; give a directory for the received files")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {directory}: cannot create it ({exc.strerror}); give a writable directory") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--dir {directory}: not writable by this user; give a writable directory")


def _receive(args: argparse.Namespace) -> int:
    from edgefed.p2p import session
    from edgefed.p2p.receiver import DEFAULT_MAX_FILE_SIZE
    from edgefed.transport import reload_on_sighup

    reload_on_sighup()  # kill -HUP: re-read the certificate, key and CRL while receiving
    _check_receive_dir(args.dir)
    config = _ledger_config(args)
    terminal = session.Terminal(progress=not args.no_progress)
    credentials = _credentials(args, config)
    recording = _LedgerRecording(config, terminal)
    try:
        status = session.receive(
            args.listen, args.dir, terminal, credentials,
            args.insecure_plaintext, lifetime=args.lifetime, max_file_size=args.max_size or DEFAULT_MAX_FILE_SIZE,
            allowed_peers=args.allow, on_file_transfer=recording.callback,
        )
    finally:
        recording.close()
    return status or recording.status()
