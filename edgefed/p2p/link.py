"""The links a p2p session runs on: mutual TLS from the deployment's PKI, or (only when asked
for by name) unauthenticated plain TCP.

The listener polls its socket so that stop() and the session lifetime take effect within a
fraction of a second, and hands back raw sockets: the TLS handshake then runs in the
connection's own thread, so a slow or hostile peer never blocks the others.
"""

from __future__ import annotations

import logging
import select
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgefed.p2p.errors import P2PError
from edgefed.pki import NodeCredentials, PKIError
from edgefed.transport import (
    TransportError,
    client_context,
    connect_tls,
    server_context,
)
from edgefed.transport.base import Connection
from edgefed.transport.tcp import (
    HANDSHAKE_TIMEOUT,
    SocketConnection,
    listening_socket,
    server_handshake,
    tune_socket,
)
from edgefed.wire import Limits

log = logging.getLogger("edgefed.p2p")

CHUNK_BYTES = 256 << 10
# Tight decoding limits: p2p carries small JSON messages and file chunks, never tensors.
P2P_LIMITS = Limits(
    max_frame_bytes=1 << 20, max_control_bytes=64 << 10, max_raw_bytes=1 << 20, max_tensors=1, max_ndim=1
)
PLAINTEXT_WARNING = (
    "INSECURE PLAINTEXT p2p link: messages and files travel unencrypted and the peer is NOT "
    "authenticated; use only on a network you trust completely"
)


@dataclass(frozen=True)
class LinkSecurity:
    """Either this node's credentials (mutual TLS, the default) or an explicit plaintext opt-in."""

    credentials: NodeCredentials | None
    insecure_plaintext: bool = False

    @classmethod
    def resolve(
        cls,
        pki_dir: str | Path | None = None,
        name: str | None = None,
        credentials: NodeCredentials | None = None,
        insecure_plaintext: bool = False,
    ) -> LinkSecurity:
        if insecure_plaintext:
            if credentials is not None or pki_dir is not None or name is not None:
                raise P2PError("insecure_plaintext=True cannot be combined with PKI credentials: pick one")
            log.warning(PLAINTEXT_WARNING)
            return cls(None, insecure_plaintext=True)
        if credentials is not None:
            if pki_dir is not None or name is not None:
                raise P2PError("give either credentials or pki_dir and name, not both")
            return cls(credentials)
        if pki_dir is None or name is None:
            raise PKIError(
                "p2p links use mutual TLS: give pki_dir and name (the node's credentials from "
                "`edgefed pki issue`); plain text needs insecure_plaintext=True"
            )
        return cls(NodeCredentials.load(pki_dir, name))

    @property
    def own_name(self) -> str:
        return self.credentials.name if self.credentials is not None else "unauthenticated"


def plain_connection(sock: socket.socket, limits: Limits = P2P_LIMITS) -> SocketConnection:
    """Frames over a bare TCP socket: the Connection interface without any security."""
    host, port = sock.getpeername()[:2]
    return SocketConnection(sock, f"unauthenticated@{host}:{port}", limits)


# What the p2p code needs from a connection beyond the transport's Connection protocol.
class P2PConnection(Connection, Protocol):
    def settimeout(self, seconds: float | None) -> None: ...


class P2PListener:
    """A listening TCP socket whose accepted peers are authenticated by handshake()."""

    def __init__(self, host: str, port: int, security: LinkSecurity) -> None:
        self.security = security
        self._context = (
            server_context(security.credentials) if security.credentials is not None else None
        )
        self._sock = listening_socket(host, port, backlog=16)
        self.host = host
        self.port = int(self._sock.getsockname()[1])  # kept: still known after close()

    def accept(self, timeout: float) -> tuple[socket.socket, str] | None:
        """A newly connected socket and its address, or None if nobody came within timeout."""
        readable, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        if not readable:
            return None
        try:
            raw, address = self._sock.accept()
        except OSError:
            return None
        return raw, f"{address[0]}:{address[1]}"

    def handshake(self, raw: socket.socket) -> P2PConnection:
        """Authenticate an accepted socket; TransportError if the peer is refused."""
        if self._context is None:
            tune_socket(raw)
            return plain_connection(raw)
        return server_handshake(raw, self._context, P2P_LIMITS)

    def close(self) -> None:
        self._sock.close()


def connect(host: str, port: int, security: LinkSecurity, expect_peer: str | None = None) -> P2PConnection:
    """Dial a p2p receiver. With expect_peer, its certificate must also be issued to that name."""
    if security.credentials is None:
        try:
            raw = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT)
        except OSError as exc:
            raise TransportError(f"cannot connect to {host}:{port}: {exc}") from exc
        tune_socket(raw)
        raw.settimeout(None)
        return plain_connection(raw)
    # Any node certificate of the deployment CA is accepted unless a peer name is required: node
    # certificates name the node (SAN DNS:NAME), not necessarily the address we dial.
    context = client_context(security.credentials, check_hostname=expect_peer is not None)
    return connect_tls(host, port, context, limits=P2P_LIMITS, server_hostname=expect_peer or host)
