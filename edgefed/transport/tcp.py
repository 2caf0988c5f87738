"""Frames over TCP sockets: the connection, a stoppable listener and dialling (TLS on top: mtls.py)."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections.abc import Iterable
from typing import overload

from edgefed.transport.base import ConnectionClosed, ListenerClosed, TransportError
from edgefed.wire import Frame, FrameReader, Limits
from edgefed.wire.reader import Allocator, allocate_fresh

HANDSHAKE_TIMEOUT = 15.0


def tune_socket(sock: socket.socket) -> None:
    # Small control frames must not wait for Nagle's algorithm (40-90 ms stalls over TLS).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Detect peers that vanished without a FIN (a Pi unplugged) while we wait between rounds.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class SocketConnection:
    """Frames over one stream socket. send() may be called from another thread than recv()."""

    def __init__(self, sock: socket.socket, peer: str, limits: Limits | None = None) -> None:
        self._sock = sock
        self._peer = peer
        self._reader = FrameReader(limits)
        self._send_lock = threading.Lock()

    @property
    def peer(self) -> str:
        return self._peer

    def settimeout(self, seconds: float | None) -> None:
        self._sock.settimeout(seconds)

    def send(self, parts: Iterable[bytes | memoryview]) -> int:
        total = 0
        try:
            with self._send_lock:
                for part in parts:
                    self._sock.sendall(part)
                    total += len(part) if isinstance(part, bytes) else part.nbytes
        except OSError as exc:  # ssl.SSLError included
            raise TransportError(f"send to {self._peer} failed: {exc}") from exc
        return total

    def recv(self, allocator: Allocator | None = None, hash_payload: bool = True) -> Frame:
        reader = self._reader
        reader.allocator = allocator or allocate_fresh
        reader.hash_payloads = hash_payload
        try:
            while True:
                count = self._sock.recv_into(reader.buffer())
                if count == 0:
                    if reader.at_frame_boundary:
                        raise ConnectionClosed(f"{self._peer} closed the connection")
                    raise ConnectionClosed(f"{self._peer} closed the connection in the middle of a frame")
                frame = reader.advance(count)
                if frame is not None:
                    return frame
        except TimeoutError as exc:
            raise TransportError(f"timed out waiting for {self._peer}") from exc
        except OSError as exc:  # ssl.SSLError included
            if isinstance(exc, ConnectionClosed):
                raise
            raise TransportError(f"receive from {self._peer} failed: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening TCP socket (IPv4 or IPv6 by the address), or a TransportError naming it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(backlog)
    return sock


# Below Linux's default ephemeral range (32768-60999): a port handed out here is never taken meanwhile
# as the local end of some outgoing connection, which binding to port 0 would risk.
FREE_PORT_RANGE = (20000, 32767)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (demos, tests). Another listener may still take it before it is
    used, but no outgoing connection will: it comes from below the ephemeral range."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in random.sample(range(FREE_PORT_RANGE[0], FREE_PORT_RANGE[1] + 1), 200):
        with socket.socket(family) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise TransportError(f"no free port on {host} in {FREE_PORT_RANGE[0]}-{FREE_PORT_RANGE[1]}")


def dial(host: str, port: int, timeout: float = HANDSHAKE_TIMEOUT) -> socket.socket:
    """A connected, tuned TCP socket still carrying the timeout (for the handshake that follows)."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc}") from exc
    tune_socket(raw)
    return raw


class StreamListener:
    """A listening TCP socket that close() stops from any thread, waking a waiting accept at once.

    Subclasses authenticate accepted sockets in handshake(); accept_pending() leaves that to the
    caller's thread, so a slow or hostile peer never blocks accepting the next one.
    """

    def __init__(self, host: str, port: int, backlog: int = 128) -> None:
        self._sock = listening_socket(host, port, backlog)
        self._port = int(self._sock.getsockname()[1])
        self._lock = threading.Lock()
        self._closed = False
        self._accepting = 0  # threads inside accept: the last one out closes the descriptor

    @property
    def port(self) -> int:
        return self._port

    def accept_raw(self, timeout: float | None = None) -> tuple[socket.socket, tuple[str, int]] | None:
        """A TCP connection not yet authenticated and its address; None if nobody came within timeout."""
        with self._lock:
            if self._closed:
                raise ListenerClosed("the listener is closed")
            self._accepting += 1
            # Only the socket's own wait: a closing listener is woken by shutdown(), not by this timeout.
            self._sock.settimeout(None if timeout is None else max(timeout, 0.0))
        try:
            raw, address = self._sock.accept()
        except (TimeoutError, BlockingIOError):  # BlockingIOError: timeout 0 and nobody waiting
            return None
        except OSError as exc:
            if self._closed:  # shutdown() woke us (EINVAL), or the socket was already gone
                raise ListenerClosed("the listener is closed") from exc
            raise TransportError(f"accept on port {self._port} failed: {exc}") from exc
        finally:
            self._leave_accept()
        raw.settimeout(None)
        return raw, (str(address[0]), int(address[1]))

    def _leave_accept(self) -> None:
        with self._lock:
            self._accepting -= 1
            if self._closed and self._accepting == 0:
                self._sock.close()

    @overload
    def accept_pending(self, timeout: None = None) -> PendingSocket: ...

    @overload
    def accept_pending(self, timeout: float) -> PendingSocket | None: ...

    def accept_pending(self, timeout: float | None = None) -> PendingSocket | None:
        accepted = self.accept_raw(timeout)
        if accepted is None:
            return None
        return PendingSocket(self, *accepted)

    def handshake(self, raw: socket.socket, timeout: float = HANDSHAKE_TIMEOUT) -> SocketConnection:
        raise NotImplementedError

    def accept(self) -> SocketConnection:
        """Accept and authenticate one peer on this thread (for tests and one-peer tools)."""
        return self.accept_pending().authenticate()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux. The
            # descriptor is closed by the last thread leaving accept, so its number is never reused
            # under a waiting accept.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            if self._accepting == 0:
                self._sock.close()


class PendingSocket:
    """An accepted TCP connection whose handshake has not run yet (or is running on some thread)."""

    def __init__(self, listener: StreamListener, raw: socket.socket, address: tuple[str, int]) -> None:
        self._listener = listener
        self._raw = raw
        self.address = address
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "handshaking" -> "authenticated"; or "hung up"
        # A second descriptor of the socket while the handshake runs: close() shuts the socket down
        # through it, which wakes the handshake without touching the descriptor the handshake uses.
        self._waker: socket.socket | None = None

    def authenticate(self, timeout: float = HANDSHAKE_TIMEOUT) -> SocketConnection:
        who = f"peer {self.address[0]}:{self.address[1]}"
        with self._lock:
            if self._state != "waiting":
                raise TransportError(f"{who}: {self._state}, no handshake")
            self._state = "handshaking"
            self._waker = self._raw.dup()
        try:
            connection = self._listener.handshake(self._raw, timeout)  # closes the socket if refused
        except BaseException:
            self._end_handshake("hung up")
            raise
        if not self._end_handshake("authenticated"):
            connection.close()
            raise TransportError(f"{who}: hung up during the handshake")
        return connection

    def _end_handshake(self, state: str) -> bool:
        """Leave the handshake in state; False if close() hung up meanwhile."""
        with self._lock:
            completed = self._state == "handshaking"
            self._state = state if completed else "hung up"
            waker, self._waker = self._waker, None
        if waker is not None:
            waker.close()
        return completed

    def close(self) -> None:
        """Hang up on a peer not authenticated yet; wakes a handshake running on another thread."""
        with self._lock:
            state = self._state
            if state in ("authenticated", "hung up"):
                return  # the Connection owns the socket now, or nothing is left to close
            self._state = "hung up"
            if state == "waiting":
                self._raw.close()
            elif self._waker is not None:
                with contextlib.suppress(OSError):
                    self._waker.shutdown(socket.SHUT_RDWR)
