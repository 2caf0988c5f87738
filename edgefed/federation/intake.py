"""The chief's front door: accept connections, authenticate each on its own thread, read its first
frame and hand it on (HELLO to the chief, LEDGER_PUSH and friends to their handlers).

A slow or hostile peer never blocks the accept loop: every accepted socket gets its own thread for
the TLS handshake and the first frame; a HELLO's thread then carries that worker's whole life.
Before its first frame a peer gets little: at most max_pending such connections at once (more are
closed after the handshake), hello_timeout seconds in all for the first frame (a trickle of bytes
does not extend it), and no memory for tensors (a tensor frame before HELLO is read into a small
scratch buffer and thrown away), so a control body (max_control_bytes) is the most it can make the
chief hold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from edgefed.contracts.status import StatusFile
from edgefed.transport import Connection, Listener, PendingConnection, TransportError
from edgefed.wire import Frame, FrameHeader, MessageType, ProtocolError, TensorSpec

log = logging.getLogger(__name__)

ExtraHandler = Callable[[Connection, Frame], None]
HelloHandler = Callable[[Connection, Frame], None]


def described(exc: Exception) -> str:
    """One line for a failed receive: the transport's or codec's own message, else what broke."""
    if isinstance(exc, TransportError):
        return str(exc)
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}"
    return f"undecodable frame ({type(exc).__name__})"


def _no_tensors_before_hello(_header: FrameHeader, _num_samples: int, _specs: list[TensorSpec]) -> None:
    """A tensor frame before HELLO gets no memory: its data is read into scratch and dropped."""
    return None


class Intake:
    """The accept loop and each connection's way to its first frame."""

    def __init__(
        self,
        listener: Listener,
        on_hello: HelloHandler,
        status: StatusFile,
        extra_handlers: Mapping[MessageType, ExtraHandler] | None = None,
        *,
        max_pending: int = 16,
        hello_timeout: float = 15.0,
    ) -> None:
        self._listener = listener
        self._max_pending = max_pending
        self._hello_timeout = hello_timeout
        self._pending = 0  # accepted, first frame not yet handled (guarded by _threads_lock)
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
            with self._threads_lock:
                over_cap = self._pending >= self._max_pending
                if not over_cap:
                    self._pending += 1
            target = self._refuse_over_cap if over_cap else self._serve_connection
            self._spawn(target, f"chief-conn-{host}:{port}", pending)

    def _refuse_over_cap(self, pending: PendingConnection) -> None:
        host = pending.address[0]
        try:
            conn = pending.authenticate()  # the transport's handshake deadline bounds this
        except TransportError:
            return
        conn.close()
        log.warning("refused %s from %s: %d connections are already waiting for their HELLO",
                    conn.peer, host, self._max_pending)
        self._status.error(f"refused {conn.peer}: too many connections before HELLO (cap {self._max_pending})")

    def _serve_connection(self, pending: PendingConnection) -> None:
        try:
            first = self._first_frame(pending)
        finally:
            with self._threads_lock:
                self._pending -= 1
        if first is not None:
            self._dispatch(*first)

    def _first_frame(self, pending: PendingConnection) -> tuple[Connection, Frame] | None:
        try:
            conn = pending.authenticate()
        except TransportError as exc:
            host = pending.address[0]
            log.warning("refused connection from %s:%d: %s", host, pending.address[1], exc)
            self._status.error(f"refused {host}: {exc}")
            return None
        # One deadline for the whole first frame: a socket timeout alone restarts on every byte.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            conn.close()

        timer = threading.Timer(self._hello_timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.settimeout(self._hello_timeout)
            first = conn.recv(allocator=_no_tensors_before_hello)
            conn.settimeout(None)
        except Exception as exc:  # a frame the decoder chokes on costs this connection, never a traceback
            problem = f"no whole first frame within {self._hello_timeout:g}s" if expired.is_set() else described(exc)
            log.warning("dropped %s before it said hello: %s", conn.peer, problem)
            self._status.error(f"{conn.peer}: {problem}")
            conn.close()
            return None
        finally:
            timer.cancel()
        if expired.is_set():
            return None
        return conn, first

    def _dispatch(self, conn: Connection, first: Frame) -> None:
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
