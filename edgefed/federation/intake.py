"""The chief's front door: accept connections, authenticate each on its own thread, read its first
frame and hand it on (HELLO to the chief, LEDGER_PUSH and friends to their handlers).

A slow or hostile peer never blocks the accept loop: every accepted socket gets its own thread for
the TLS handshake and the first frame; a HELLO's thread then carries that worker's whole life.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from edgefed.contracts.status import StatusFile
from edgefed.transport import Connection, Listener, PendingConnection, TransportError
from edgefed.wire import Frame, MessageType, ProtocolError

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 15.0
ExtraHandler = Callable[[Connection, Frame], None]
HelloHandler = Callable[[Connection, Frame], None]


class Intake:
    """The accept loop and each connection's way to its first frame."""

    def __init__(
        self,
        listener: Listener,
        on_hello: HelloHandler,
        status: StatusFile,
        extra_handlers: Mapping[MessageType, ExtraHandler] | None = None,
    ) -> None:
        self._listener = listener
        self._on_hello = on_hello
        self._status = status
        self._extra_handlers = dict(extra_handlers or {})
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    def start(self) -> None:
        self._spawn(self._accept_loop, "chief-accept")

    def close(self) -> None:
        """Stop accepting and wait (briefly) for the connection threads; the caller has already
        closed the connections those threads serve."""
        self._closing = True
        self._listener.close()
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                pending = self._listener.accept_pending()
            except OSError:
                if self._closing:
                    return
                log.exception("accept failed")
                time.sleep(0.1)
                continue
            host, port = pending.address
            self._spawn(self._serve_connection, f"chief-conn-{host}:{port}", pending)

    def _serve_connection(self, pending: PendingConnection) -> None:
        try:
            conn = pending.authenticate()
        except TransportError as exc:
            host = pending.address[0]
            log.warning("refused connection from %s:%d: %s", host, pending.address[1], exc)
            self._status.error(f"refused {host}: {exc}")
            return
        try:
            conn.settimeout(FIRST_FRAME_TIMEOUT)
            first = conn.recv()
            conn.settimeout(None)
        except (TransportError, ProtocolError) as exc:
            log.warning("dropped %s before it said hello: %s", conn.peer, exc)
            self._status.error(f"{conn.peer}: {exc}")
            conn.close()
            return
        handler = self._extra_handlers.get(first.type)
        if handler is not None:
            try:
                handler(conn, first)
            finally:
                conn.close()
            return
        if first.type is not MessageType.HELLO:
            log.warning("%s opened with %s instead of HELLO", conn.peer, first.type.name)
            conn.close()
            return
        self._on_hello(conn, first)
