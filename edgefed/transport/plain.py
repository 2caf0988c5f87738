"""Frames over bare TCP: no encryption, no identities. Only for an explicit, loud opt-in (p2p's
--insecure-plaintext) on a network trusted completely; the federation never uses it."""

from __future__ import annotations

import socket

from edgefed.transport.base import TransportError
from edgefed.transport.tcp import HANDSHAKE_TIMEOUT, SocketConnection, StreamListener, dial, tune_socket
from edgefed.wire import Limits

UNAUTHENTICATED = "unauthenticated"


def plain_connection(sock: socket.socket, limits: Limits | None) -> SocketConnection:
    """Frames over a connected socket; the peer is named by its address, which proves nothing."""
    host, port = sock.getpeername()[:2]
    return SocketConnection(sock, f"{UNAUTHENTICATED}@{host}:{port}", limits)


class PlainListener(StreamListener):
    """A listening socket that takes every peer as it comes: the "handshake" checks nothing."""

    def __init__(self, host: str, port: int, limits: Limits | None = None, backlog: int = 128) -> None:
        super().__init__(host, port, backlog)
        self._limits = limits

    def handshake(self, raw: socket.socket, timeout: float = HANDSHAKE_TIMEOUT) -> SocketConnection:
        del timeout  # nothing is exchanged before the first frame
        try:
            tune_socket(raw)
            raw.settimeout(None)
            return plain_connection(raw, self._limits)
        except OSError as exc:  # the peer hung up between accept and now
            raw.close()
            raise TransportError(f"peer gone before its first frame: {exc}") from exc


def connect_plain(
    host: str, port: int, limits: Limits | None = None, timeout: float = HANDSHAKE_TIMEOUT
) -> SocketConnection:
    raw = dial(host, port, timeout)
    raw.settimeout(None)
    try:
        return plain_connection(raw, limits)
    except OSError as exc:
        raw.close()
        raise TransportError(f"{host}:{port} hung up at once: {exc}") from exc


class PlainTransport:
    """The Transport without security: anyone can read, change or impersonate what it carries."""

    streams = True

    @property
    def local_name(self) -> str:
        return UNAUTHENTICATED

    def listen(self, host: str, port: int, limits: Limits) -> PlainListener:
        return PlainListener(host, port, limits)

    def connect(self, host: str, port: int, limits: Limits, server_name: str | None) -> SocketConnection:
        """server_name must be None: a plain link cannot check who answers."""
        if server_name is not None:
            raise TransportError(f"a plain-text link cannot check that {host}:{port} is {server_name}: use TLS")
        return connect_plain(host, port, limits)
