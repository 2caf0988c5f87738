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
from edgefed.transport.mtls import TlsConnection, TlsListener, TlsTransport, connect_tls
from edgefed.transport.plain import UNAUTHENTICATED, PlainListener, PlainTransport, connect_plain
from edgefed.transport.tcp import HANDSHAKE_TIMEOUT, SocketConnection, StreamListener, free_port
from edgefed.transport.tls import (
    PeerRevoked,
    Trust,
    client_context,
    peer_common_name,
    reload_on_sighup,
    reload_requests,
    request_reload,
    server_context,
)

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "UNAUTHENTICATED",
    "Connection",
    "ConnectionClosed",
    "Listener",
    "ListenerClosed",
    "PeerRefused",
    "PeerRevoked",
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
    "Trust",
    "client_context",
    "connect_plain",
    "connect_tls",
    "free_port",
    "peer_common_name",
    "reload_on_sighup",
    "reload_requests",
    "request_reload",
    "server_context",
]
