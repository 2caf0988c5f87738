"""The listening half of a p2p session (BSMD's ``Receiver(my_host, my_port)``), made secure.

Each accepted peer is authenticated (mutual TLS) and served in its own thread: chat lines are
handed to on_chat with the peer's certificate name, files are received into one directory.
The session ends by itself when its lifetime is over; peers still connected get a BYE.
stop() closes the listener, which wakes the accepting thread at once (no polling).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edgefed import wire
from edgefed.p2p.errors import P2PError, TransferFailed, TransferRefused
from edgefed.p2p.files import DuplicateFile, FileOffer, IncomingFile, TransferCallback, notify_transfer, transfer_record
from edgefed.p2p.link import P2P_LIMITS, resolve_transport
from edgefed.p2p.names import MAX_CHAT_CHARS, printable
from edgefed.p2p.parse import parse_port
from edgefed.p2p.progress import ProgressFactory, ProgressTask
from edgefed.pki import NodeCredentials
from edgefed.transport import Connection, ConnectionClosed, ListenerClosed, PendingConnection, Transport, TransportError
from edgefed.wire import Frame, MessageType, ProtocolError, encode_control_frame

log = logging.getLogger("edgefed.p2p")

DEFAULT_MAX_FILE_SIZE = 4 << 30

ChatHandler = Callable[[str, str], None]


def _log_chat(peer: str, text: str) -> None:
    log.info("chat from %s: %s", peer, text)


class Receiver(threading.Thread):
    """Listen on my_host:my_port for the peer's Sender; receive chat lines and files.

    The socket is bound when the object is made (so an address in use fails at once, and
    port 0 picks a free port, see .port); start() begins accepting. stop() ends the session;
    so does the lifetime (seconds) when given. Files are accepted only when directory is set.
    The link is mutual TLS from credentials (or pki_dir and name), plain TCP with
    insecure_plaintext=True, or any edgefed.transport Transport given as transport.
    """

    def __init__(
        self,
        my_host: str,
        my_port: int | str,
        *,
        pki_dir: str | Path | None = None,
        name: str | None = None,
        credentials: NodeCredentials | None = None,
        insecure_plaintext: bool = False,
        transport: Transport | None = None,
        directory: str | Path | None = None,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        lifetime: float | None = None,
        on_chat: ChatHandler | None = None,
        on_file_transfer: TransferCallback | None = None,
        allowed_peers: Iterable[str] | None = None,
        progress: ProgressFactory | None = None,
        idle_timeout: float = 60.0,
        max_peers: int = 8,
    ) -> None:
        port = parse_port(my_port, allow_zero=True)
        super().__init__(name=f"p2p-receiver-{port}", daemon=True)
        if lifetime is not None and lifetime <= 0:
            raise P2PError(f"session lifetime must be positive, got {lifetime}")
        if max_file_size <= 0:
            raise P2PError(f"max_file_size must be positive, got {max_file_size}")
        self._transport = resolve_transport(pki_dir, name, credentials, insecure_plaintext, transport)
        self.directory: Path | None = None
        if directory is not None:
            self.directory = Path(directory).resolve()
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_file_size = max_file_size
        self.lifetime = lifetime
        self._on_chat = on_chat or _log_chat
        self._on_file_transfer = on_file_transfer
        self._allowed = frozenset(allowed_peers) if allowed_peers is not None else None
        self._progress = progress
        self._idle_timeout = idle_timeout
        self._max_peers = max_peers
        self._listener = self._transport.listen(my_host, port, P2P_LIMITS)
        self._host = my_host
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[PendingConnection] = set()  # accepted, handshake not over
        self._connections: set[Connection] = set()
        self._handlers: list[threading.Thread] = []
        self._busy_names: set[str] = set()
        self.end_reason = ""
        # Set once run() has said goodbye to every peer and its handlers are gone. Wait on this, not on
        # join(): in Python 3.11 a Ctrl-C landing in Thread.join() marks the thread stopped while it
        # still runs (bpo-45274), so a later join() returns at once and the process exits mid-shutdown.
        self.finished = threading.Event()

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def host(self) -> str:
        return self._host

    @property
    def own_name(self) -> str:
        return self._transport.local_name

    def stop(self) -> None:
        """End the session: stop accepting and close every peer's connection (returns at once)."""
        if not self.end_reason:
            self.end_reason = "stopped"
        self._stop_event.set()
        self._listener.close()  # wakes run() out of accept_pending()

    def run(self) -> None:
        deadline = time.monotonic() + self.lifetime if self.lifetime is not None else None
        log.info("p2p receiver %s listening on %s:%d", self.own_name, self.host, self.port)
        try:
            while not self._stop_event.is_set():
                pending: PendingConnection | None
                try:
                    if deadline is None:
                        pending = self._listener.accept_pending()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            self.end_reason = f"session lifetime of {self.lifetime:g}s is over"
                            break
                        pending = self._listener.accept_pending(left)
                except ListenerClosed:
                    break  # stop()
                except TransportError as exc:  # a peer gone before accept, out of descriptors...
                    log.warning("p2p receiver on port %d: %s", self.port, exc)
                    self._stop_event.wait(0.1)
                    continue
                if pending is not None:
                    self._start_handler(pending)
        finally:
            try:
                self._shutdown()
            finally:
                self.finished.set()

    # -- connections -----------------------------------------------------------------------------
    def _start_handler(self, pending: PendingConnection) -> None:
        address = "{}:{}".format(*pending.address)
        with self._lock:
            self._handlers = [thread for thread in self._handlers if thread.is_alive()]
            if len(self._handlers) >= self._max_peers:
                log.warning("refusing %s: already serving %d peers", address, self._max_peers)
                pending.close()
                return
            handler = threading.Thread(
                target=self._serve, args=(pending, address), name=f"p2p-peer-{address}", daemon=True
            )
            self._handlers.append(handler)
            self._pending.add(pending)
        handler.start()

    def _shutdown(self) -> None:
        # Under the lock, so every handler either is in the lists below or sees the event and hangs up.
        with self._lock:
            self._stop_event.set()
            pending = list(self._pending)
            connections = list(self._connections)
            handlers = list(self._handlers)
        self._listener.close()
        reason = self.end_reason or "session over"
        for peer in pending:
            peer.close()  # wakes a handshake in progress
        for connection in connections:
            with contextlib.suppress(TransportError, OSError):
                connection.settimeout(2.0)
                connection.send([wire.encode_message(wire.Bye(wire.ReasonCode.SHUTDOWN, reason))])
            connection.close()  # wakes the handler's recv
        for handler in handlers:
            handler.join(timeout=5.0)
            if handler.is_alive():
                log.warning("%s did not finish within 5s of the session's end", handler.name)
        log.info("p2p receiver %s closed: %s", self.own_name, reason)

    def _serve(self, pending: PendingConnection, address: str) -> None:
        try:
            connection = pending.authenticate()
        except TransportError as exc:
            if not self._stop_event.is_set():
                log.warning("refused peer %s: %s", address, exc)
            return
        finally:
            with self._lock:
                self._pending.discard(pending)
        peer = connection.peer
        if self._allowed is not None and peer not in self._allowed:
            log.warning("refused peer %s (%s): not in the allowed peers", peer, address)
            self._say_bye(connection, f"{peer} is not allowed on this session", wire.ReasonCode.NOT_ALLOWED)
            connection.close()
            return
        with self._lock:
            if self._stop_event.is_set():
                connection.close()
                return
            self._connections.add(connection)
        log.info("peer %s connected from %s", peer, address)
        session = _PeerSession(self, connection)
        try:
            session.serve()
        except ConnectionClosed as exc:
            log.info("%s", exc)
        except (OSError, ProtocolError, P2PError) as exc:  # OSError: the link, or our disk
            if not self._stop_event.is_set():
                log.warning("dropping peer %s: %s", peer, exc)
                self._say_bye(connection, str(exc))
        finally:
            session.release()
            with self._lock:
                self._connections.discard(connection)
            connection.close()

    @staticmethod
    def _say_bye(connection: Connection, reason: str, code: wire.ReasonCode = wire.ReasonCode.OTHER) -> None:
        with contextlib.suppress(TransportError, OSError):
            connection.send([wire.encode_message(wire.Bye(code, reason))])

    # -- used by _PeerSession ----------------------------------------------------------------------
    def _claim(self, name: str) -> bool:
        with self._lock:
            if name in self._busy_names:
                return False
            self._busy_names.add(name)
            return True

    def _release(self, name: str) -> None:
        with self._lock:
            self._busy_names.discard(name)


class _PeerSession:
    """The conversation with one connected peer: chat lines, then at most one file at a time."""

    def __init__(self, receiver: Receiver, connection: Connection) -> None:
        self.receiver = receiver
        self.connection = connection
        self.peer = connection.peer
        self.incoming: IncomingFile | None = None
        self.task: ProgressTask | None = None
        self.accepted_at = 0.0  # monotonic time the current file's offer was accepted

    def serve(self) -> None:
        while True:
            # A stalled transfer is dropped (and stays resumable); an idle chat may stay open.
            self.connection.settimeout(self.receiver._idle_timeout if self.incoming else None)
            frame = self.connection.recv()
            if frame.type is MessageType.CHAT:
                self._chat(frame)
            elif frame.type is MessageType.FILE_OFFER:
                self._offer(frame)
            elif frame.type is MessageType.FILE_CHUNK:
                self._chunk(frame)
            elif frame.type is MessageType.FILE_DONE:
                self._done()
            elif frame.type is MessageType.BYE:
                log.info("peer %s said goodbye: %s", self.peer, printable(wire.expect(frame, wire.Bye).reason))
                return
            else:
                raise ProtocolError(f"{frame.type.name} is not part of the p2p protocol")

    def release(self) -> None:
        """The connection ended: keep any partial file for a resume, free its name."""
        if self.incoming is not None:
            log.warning(
                "transfer of %r from %s interrupted at %d of %d bytes; kept for resume",
                printable(self.incoming.offer.name), self.peer, self.incoming.received, self.incoming.offer.size,
            )
            self.incoming.suspend()
            self._end_file()

    def _chat(self, frame: Frame) -> None:
        text = frame.body.get("text")
        if not isinstance(text, str) or len(text) > MAX_CHAT_CHARS:
            raise ProtocolError(f"CHAT text must be a string of at most {MAX_CHAT_CHARS} characters")
        try:
            self.receiver._on_chat(self.peer, printable(text))
        except Exception:  # the application's handler failing is no reason to drop the peer
            log.exception("on_chat callback failed for a message from %s", self.peer)

    def _offer(self, frame: Frame) -> None:
        if self.incoming is not None:
            raise ProtocolError("FILE_OFFER while another file is still being received")
        offer = FileOffer.from_body(frame.body)
        directory = self.receiver.directory
        if directory is None:
            self._result(False, "this session does not accept files (no receiving directory)")
            return
        if not self.receiver._claim(offer.name):
            self._result(False, f"{printable(offer.name)!r} is being received from another connection", True)
            return
        try:
            self.incoming = IncomingFile(directory, offer, self.receiver.max_file_size)
        except DuplicateFile as duplicate:
            self.receiver._release(offer.name)
            log.info("%s offered %s, which is already here", self.peer, duplicate.path)
            self._result(True, "already received", offer=offer, duplicate=True)
            return
        except (TransferRefused, TransferFailed) as exc:
            self.receiver._release(offer.name)
            log.warning("refused offer from %s: %s", self.peer, exc)
            self._result(False, str(exc), getattr(exc, "retryable", False))
            return
        except OSError as exc:
            self.receiver._release(offer.name)
            log.warning("cannot receive %r: %s", printable(offer.name), exc)
            self._result(False, f"receiver cannot write {printable(offer.name)!r}: {exc.strerror}")
            return
        offset = self.incoming.offset
        if offset:
            log.info("resuming %r from %s at %d bytes", printable(offer.name), self.peer, offset)
        if self.receiver._progress is not None:
            self.task = self.receiver._progress(f"{offer.name} ← {self.peer}", offer.size, offset)
        self.accepted_at = time.monotonic()
        self.connection.send([encode_control_frame(MessageType.FILE_ACCEPT, 0, {"offset": offset})])

    def _chunk(self, frame: Frame) -> None:
        if self.incoming is None:
            raise ProtocolError("FILE_CHUNK without an accepted FILE_OFFER")
        self.incoming.write(frame.raw)
        if self.task is not None:
            self.task.advance(len(frame.raw))

    def _done(self) -> None:
        incoming = self.incoming
        if incoming is None:
            raise ProtocolError("FILE_DONE without an accepted FILE_OFFER")
        try:
            path = incoming.finish()
        except TransferFailed as exc:
            log.warning("transfer from %s failed: %s", self.peer, exc)
            self._end_file()
            self._result(False, str(exc))
            return
        self._end_file()
        offer = incoming.offer
        log.info("received %s (%d bytes, sha256 %s) from %s", path, offer.size, offer.sha256, self.peer)
        record = transfer_record(
            self.peer, self.receiver.own_name, offer, "receive", incoming.offset, time.monotonic() - self.accepted_at
        )
        record["path"] = str(path)
        # The file is published: record it before answering, so a link that breaks now cannot leave the
        # sender (who will hear "already received" on its retry) with a record the receiver lacks.
        notify_transfer(self.receiver._on_file_transfer, record)
        self._result(True, "received", offer=offer)

    def _end_file(self) -> None:
        if self.task is not None:
            self.task.close()
            self.task = None
        if self.incoming is not None:
            self.receiver._release(self.incoming.offer.name)
            self.incoming = None

    def _result(
        self, ok: bool, message: str, retryable: bool = False, offer: FileOffer | None = None, duplicate: bool = False
    ) -> None:
        named = wire.FileOffer(offer.name, offer.size, offer.sha256) if offer is not None else None
        self.connection.send([wire.encode_message(wire.FileResult(ok, message, retryable, named, duplicate))])
