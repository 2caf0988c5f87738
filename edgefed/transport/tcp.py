"""Frames over TCP sockets wrapped in TLS 1.3."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from edgefed.pki import NodeCredentials
from edgefed.transport.base import ConnectionClosed, TransportError
from edgefed.transport.tls import client_context, peer_common_name, server_context
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

    def send(self, parts: Sequence[bytes | memoryview]) -> int:
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


class TlsConnection(SocketConnection):
    """A stream whose peer proved its identity in a mutual-TLS handshake; peer is its certificate's CN."""

    def __init__(self, sock: ssl.SSLSocket, peer: str, limits: Limits | None = None) -> None:
        super().__init__(sock, peer, limits)


def server_handshake(
    raw: socket.socket, context: ssl.SSLContext, limits: Limits | None, timeout: float = HANDSHAKE_TIMEOUT
) -> TlsConnection:
    """The server side of the mutual-TLS handshake on an accepted socket; TransportError if refused."""
    tune_socket(raw)
    raw.settimeout(timeout)
    try:
        tls = context.wrap_socket(raw, server_side=True)
        name = peer_common_name(tls)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TransportError(f"TLS handshake refused: {exc}") from exc
    tls.settimeout(None)
    return TlsConnection(tls, name, limits)


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


class TlsListener:
    """A listening socket whose accepted peers must complete a mutual-TLS handshake."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, limits: Limits | None = None, backlog: int = 128
    ) -> None:
        self._context = context
        self._limits = limits
        self._sock = listening_socket(host, port, backlog)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def accept_raw(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a TCP connection without handshaking (so a slow peer never blocks the accept loop)."""
        sock, address = self._sock.accept()
        return sock, address

    def handshake(self, raw: socket.socket, timeout: float = HANDSHAKE_TIMEOUT) -> TlsConnection:
        """Authenticate an accepted socket; the peer is refused unless its certificate is from our CA."""
        return server_handshake(raw, self._context, self._limits, timeout)

    def accept(self) -> TlsConnection:
        raw, _ = self.accept_raw()
        return self.handshake(raw)

    def accept_pending(self) -> PendingTls:
        raw, address = self.accept_raw()
        return PendingTls(self, raw, (str(address[0]), int(address[1])))

    def close(self) -> None:
        # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def connect_tls(
    host: str,
    port: int,
    context: ssl.SSLContext,
    limits: Limits | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    server_hostname: str | None = None,
) -> TlsConnection:
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc}") from exc
    tune_socket(raw)
    try:
        tls = context.wrap_socket(raw, server_hostname=server_hostname or host)
        name = peer_common_name(tls)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TransportError(f"TLS handshake with {host}:{port} failed: {exc}") from exc
    tls.settimeout(None)
    return TlsConnection(tls, name, limits)


@dataclass(frozen=True)
class PendingTls:
    listener: TlsListener
    raw: socket.socket
    address: tuple[str, int]

    def authenticate(self) -> TlsConnection:
        return self.listener.handshake(self.raw)


class TlsTransport:
    """The Transport of a node holding NAME's credentials: mutual TLS 1.3 over TCP."""

    def __init__(self, creds: NodeCredentials) -> None:
        self._server = server_context(creds)
        self._client = client_context(creds)

    def listen(self, host: str, port: int, limits: Limits) -> TlsListener:
        return TlsListener(host, port, self._server, limits)

    def connect(self, host: str, port: int, limits: Limits, server_name: str) -> TlsConnection:
        return connect_tls(host, port, self._client, limits, server_hostname=server_name)
