"""Transports move frames between peers; the federation logic sees only the Connection interface."""

from edgefed.transport.base import Connection, ConnectionClosed, Listener, PendingConnection, Transport, TransportError
from edgefed.transport.tcp import SocketConnection, TlsConnection, TlsListener, TlsTransport, connect_tls
from edgefed.transport.tls import client_context, peer_common_name, server_context

__all__ = [
    "Connection",
    "ConnectionClosed",
    "Listener",
    "PendingConnection",
    "SocketConnection",
    "TlsConnection",
    "TlsListener",
    "TlsTransport",
    "Transport",
    "TransportError",
    "client_context",
    "connect_tls",
    "peer_common_name",
    "server_context",
]
