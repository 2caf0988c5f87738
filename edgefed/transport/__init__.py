"""Transports move frames between peers; the features above see only the Connection interface.

The only package that opens, accepts or wraps sockets (tests/unit/test_architecture.py checks it).
"""

from edgefed.transport.base import (
    Connection,
    ConnectionClosed,
    Listener,
    ListenerClosed,
    PeerRefused,
    PendingConnection,
    Transport,
    TransportError,
)
from edgefed.transport.plain import UNAUTHENTICATED, PlainListener, PlainTransport, connect_plain
from edgefed.transport.tcp import (
    HANDSHAKE_TIMEOUT,
    SocketConnection,
    StreamListener,
    TlsConnection,
    TlsListener,
    TlsTransport,
    connect_tls,
    free_port,
)
from edgefed.transport.tls import client_context, peer_common_name, server_context

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "UNAUTHENTICATED",
    "Connection",
    "ConnectionClosed",
    "Listener",
    "ListenerClosed",
    "PeerRefused",
    "PendingConnection",
    "PlainListener",
    "PlainTransport",
    "SocketConnection",
    "StreamListener",
    "TlsConnection",
    "TlsListener",
    "TlsTransport",
    "Transport",
    "TransportError",
    "client_context",
    "connect_plain",
    "connect_tls",
    "free_port",
    "peer_common_name",
    "server_context",
]
