"""Whole p2p sessions as the `edgefed p2p` commands run them: receive, send, chat.

Each function wires a Receiver and/or a Sender to a console and returns an exit status;
the command module only parses arguments.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from edgefed.p2p.errors import P2PError
from edgefed.p2p.files import TransferCallback
from edgefed.p2p.link import resolve_transport
from edgefed.p2p.parse import Endpoint
from edgefed.p2p.progress import ProgressFactory, RichProgress
from edgefed.p2p.receiver import DEFAULT_MAX_FILE_SIZE, Receiver
from edgefed.p2p.sender import Sender
from edgefed.pki import NodeCredentials
from edgefed.transport import TransportError
from edgefed.wire import ProtocolError

_WAIT_SLICE = 0.2  # chat: how often the main thread looks at the receiver and the sender


class Terminal:
    """Where a session reports: lines on stdout, errors and progress bars on stderr."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None, progress: bool = True) -> None:
        self.out = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=err or sys.stderr, highlight=False, soft_wrap=True)
        self.show_progress = progress

    def say(self, *parts: str | tuple[str, str]) -> None:
        # Text objects: nothing a peer sends is ever interpreted as rich markup.
        self.out.print(Text.assemble(*parts))
        self.out.file.flush()

    def complain(self, message: str) -> None:
        self.err.print(Text(message, style="bold red"))
        self.err.file.flush()

    @contextlib.contextmanager
    def progress(self) -> Iterator[ProgressFactory | None]:
        if not self.show_progress:
            yield None
            return
        with RichProgress(self.err) as bars:
            yield bars


@contextlib.contextmanager
def _ctrl_c_ends_the_session() -> Iterator[None]:
    """SIGINT (Ctrl-C, `kill -INT`) ends the session even in a process that inherited it ignored.

    A shell without job control starts `cmd &` with SIGINT ignored (make or a script run in the
    background), and Python keeps an inherited SIG_IGN: the session could then only be killed,
    without its goodbyes to peers and without the final progress line.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def receive(
    listen: Endpoint,
    directory: Path,
    terminal: Terminal,
    credentials: NodeCredentials | None,
    insecure_plaintext: bool = False,
    lifetime: float | None = None,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    allowed_peers: Sequence[str] | None = None,
    on_file_transfer: TransferCallback | None = None,
) -> int:
    """Receive files (and chat lines) into directory until the lifetime is over or Ctrl-C."""

    def received(record: dict[str, Any]) -> None:
        terminal.say(
            ("received ", ""), (record["name"], "bold"),
            f" ({_human(record['size'])}, sha256 {record['sha256']}) from ", (record["sender"], "bold"),
        )
        if on_file_transfer is not None:
            on_file_transfer(record)

    with _ctrl_c_ends_the_session(), terminal.progress() as bars:
        receiver = Receiver(
            listen.host, listen.port, transport=resolve_transport(credentials=credentials,
                                                                  insecure_plaintext=insecure_plaintext),
            directory=directory, max_file_size=max_file_size, lifetime=lifetime,
            on_chat=lambda peer, text: terminal.say((peer, "bold cyan"), ": ", text),
            on_file_transfer=received, allowed_peers=allowed_peers, progress=bars,
        )
        ends = f", session ends after {lifetime:g}s" if lifetime else ""
        terminal.say(
            f"listening on {Endpoint(receiver.host, receiver.port)} as {receiver.own_name}; "
            f"files go to {receiver.directory}{ends}"
        )
        receiver.start()
        try:
            receiver.finished.wait()  # an Event, not join(): see Receiver.finished
        finally:
            # On Ctrl-C too: the session ends only once every peer got its BYE and the handlers are
            # gone; exiting with them still in TLS calls races the interpreter's shutdown.
            receiver.stop()
            receiver.finished.wait()
            receiver.join()
    terminal.say(f"session over: {receiver.end_reason}")
    return 0


def send(
    files: Sequence[Path],
    peer: Endpoint,
    terminal: Terminal,
    credentials: NodeCredentials | None,
    insecure_plaintext: bool = False,
    remote_name: str | None = None,
    expect_peer: str | None = None,
    retry_for: float = 30.0,
    max_rate: int | None = None,
    on_file_transfer: TransferCallback | None = None,
) -> int:
    """Send files one after the other; status 2 if any of them did not arrive intact."""
    if remote_name is not None and len(files) != 1:
        raise P2PError("--as names one file: give exactly one FILE with it")
    failures = 0
    with _ctrl_c_ends_the_session(), terminal.progress() as bars:
        sender = Sender(
            peer.host, peer.port, transport=resolve_transport(credentials=credentials,
                                                              insecure_plaintext=insecure_plaintext),
            expect_peer=expect_peer, on_file_transfer=on_file_transfer, progress=bars,
            retry_for=retry_for, max_rate=max_rate,
        )
        futures = [(path, sender.send_file(path, remote_name)) for path in files]
        sender.start()
        try:
            for path, future in futures:
                try:
                    record = future.result()
                except (P2PError, TransportError, ProtocolError, OSError) as exc:
                    failures += 1
                    terminal.complain(f"{path}: not sent: {exc}")
                    continue
                resumed = f", resumed at {record['resumed_from']} bytes" if record["resumed_from"] else ""
                terminal.say(
                    f"{record['outcome']}: ", (record["name"], "bold"),
                    f" ({_human(record['size'])}, sha256 {record['sha256']}) by ", (record["receiver"], "bold"),
                    resumed,
                )
        finally:
            sender.stop()
            sender.join()
    return 2 if failures else 0


def chat(
    listen: Endpoint,
    peer: Endpoint,
    lines: Iterable[str],
    terminal: Terminal,
    credentials: NodeCredentials | None,
    insecure_plaintext: bool = False,
    expect_peer: str | None = None,
    lifetime: float | None = None,
    retry_for: float = 60.0,
) -> int:
    """Chat: lines read from `lines` go to the peer, the peer's lines are shown with its name.

    Ends when the input ends, when the lifetime is over, or when the peer cannot be reached.
    """
    transport = resolve_transport(credentials=credentials, insecure_plaintext=insecure_plaintext)
    # The sender first: it holds nothing until started, the receiver's socket is bound at once.
    sender = Sender(peer.host, peer.port, transport=transport, expect_peer=expect_peer, retry_for=retry_for)
    receiver = Receiver(
        listen.host, listen.port, transport=transport, lifetime=lifetime,
        on_chat=lambda name, text: terminal.say((name, "bold cyan"), ": ", text),
    )
    terminal.say(f"listening on {Endpoint(receiver.host, receiver.port)} as {receiver.own_name}; type to chat")
    input_done = threading.Event()

    def undelivered(future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            terminal.complain(f"message not delivered: {error}")

    def read_input() -> None:
        try:
            for line in lines:
                text = line.rstrip("\r\n")
                if text:
                    sender.send_message(text).add_done_callback(undelivered)
        except P2PError as exc:
            terminal.complain(str(exc))
        finally:
            input_done.set()

    def announce() -> None:
        if sender.connected.wait(retry_for + 5):
            terminal.say("connected to ", (sender.peer_name, "bold cyan"))

    with _ctrl_c_ends_the_session():
        receiver.start()
        sender.start()
        threading.Thread(target=announce, daemon=True, name="p2p-chat-announce").start()
        # Reading stdin blocks; a daemon thread lets the lifetime end the chat in the middle of a line.
        threading.Thread(target=read_input, daemon=True, name="p2p-chat-input").start()
        try:
            while not (receiver.finished.is_set() or sender.finished.is_set() or input_done.is_set()):
                input_done.wait(_WAIT_SLICE)
        finally:
            sender.stop()
            sender.join(timeout=10)
            receiver.stop()
            receiver.join()
    if sender.error is not None:
        terminal.complain(f"chat with {peer} ended: {sender.error}")
        return 2
    terminal.say(f"chat over: {receiver.end_reason or 'input ended'}")
    return 0
