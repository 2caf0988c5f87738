"""Mutual TLS 1.3 over TCP: the handshake on both sides, the listener and the node's Transport.

Handshakes take their contexts from a `Trust` (edgefed.transport.tls), so a rotated certificate or a
new CRL applies from the next handshake on, and a revoked peer is refused by name.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from edgefed.pki import NodeCredentials
from edgefed.transport.base import PeerRefused, TransportError
from edgefed.transport.tcp import HANDSHAKE_TIMEOUT, SocketConnection, StreamListener, dial, tune_socket
from edgefed.transport.tls import PeerRevoked, Trust, TrustState, peer_common_name, peer_serial
from edgefed.wire import Bye, Limits, ReasonCode, encode_message


class TlsConnection(SocketConnection):
    """A stream whose peer proved its identity in a mutual-TLS handshake; peer is its certificate's CN."""

    def __init__(self, sock: ssl.SSLSocket, peer: str, limits: Limits | None = None) -> None:
        super().__init__(sock, peer, limits)
        self._tls = sock

    @property
    def peer_serial(self) -> int:
        """The serial number of the certificate the peer proved itself with."""
        return peer_serial(self._tls)


REFUSAL_LINGER = 2.0  # seconds a refused peer gets to read why before the socket closes
REFUSAL_DRAIN_BYTES = 1 << 16


def server_handshake(
    raw: socket.socket,
    context: ssl.SSLContext,
    limits: Limits | None,
    timeout: float = HANDSHAKE_TIMEOUT,
    trust: Trust | None = None,
    state: TrustState | None = None,
) -> TlsConnection:
    """The server side of the mutual-TLS handshake on an accepted socket; TransportError if refused
    (PeerRefused, naming the peer, when trust's CRL revokes its certificate)."""
    tune_socket(raw)
    raw.settimeout(timeout)
    try:
        tls = context.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TransportError(f"TLS handshake refused: {exc}") from exc
    try:
        name = trust.check_peer(tls, state) if trust is not None else peer_common_name(tls)
    except PeerRevoked as exc:
        _tell_revoked(tls, str(exc))
        raise PeerRefused(str(exc)) from exc
    except (ssl.SSLError, OSError, ValueError) as exc:
        tls.close()
        raise TransportError(f"TLS handshake refused: {exc}") from exc
    return _established(tls, name, limits, trust)


def _established(tls: ssl.SSLSocket, name: str, limits: Limits | None, trust: Trust | None) -> TlsConnection:
    """Either side, once the peer is verified: blocking again, and known to the trust that may revoke it."""
    tls.settimeout(None)
    connection = TlsConnection(tls, name, limits)
    if trust is not None:
        try:
            trust.track(connection, name, tls)
        except PeerRevoked as exc:  # revoked while the handshake ran
            connection.close()
            raise PeerRefused(str(exc)) from exc
    return connection


def _tell_revoked(tls: ssl.SSLSocket, reason: str) -> None:
    """Say BYE (not-allowed: a worker stops instead of retrying), let the peer read it, then close.

    What the peer already sent is read away first (bounded in bytes and time): closing with unread
    data would reset the connection and could destroy the BYE before the peer reads it.
    """
    try:
        tls.settimeout(REFUSAL_LINGER)
        tls.sendall(encode_message(Bye(ReasonCode.NOT_ALLOWED, reason)))
        with contextlib.suppress(OSError):
            tls.shutdown(socket.SHUT_WR)
        drained, deadline = 0, time.monotonic() + REFUSAL_LINGER  # one deadline: a trickle cannot extend it
        while drained < REFUSAL_DRAIN_BYTES and (left := deadline - time.monotonic()) > 0:
            tls.settimeout(left)
            if not (chunk := tls.recv(4096)):
                break
            drained += len(chunk)
    except (OSError, ValueError):
        pass
    finally:
        tls.close()


class TlsListener(StreamListener):
    """A listening socket whose accepted peers must complete a mutual-TLS handshake.

    With trust, every handshake uses trust's current contexts (a rotated certificate, a new CRL) and
    refuses revoked peers; a watcher looks for new files while the listener is open.
    """

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        backlog: int = 128,
        *,
        trust: Trust | None = None,
    ) -> None:
        if context is None and trust is None:
            raise ValueError("a TlsListener needs a context or a Trust")
        super().__init__(host, port, backlog)
        self._context = context
        self._limits = limits
        self._trust = trust
        self._stop_watch = trust.watch() if trust is not None else None

    def handshake(self, raw: socket.socket, timeout: float = HANDSHAKE_TIMEOUT) -> TlsConnection:
        """Authenticate an accepted socket; the peer is refused unless its certificate is from our CA
        (and, with trust, not on the CRL)."""
        if self._trust is None:
            assert self._context is not None
            return server_handshake(raw, self._context, self._limits, timeout)
        state = self._trust.current()
        return server_handshake(raw, state.server, self._limits, timeout, self._trust, state)

    def close(self) -> None:
        stop, self._stop_watch = self._stop_watch, None
        if stop is not None:
            stop()
        super().close()


def connect_tls(
    host: str,
    port: int,
    context: ssl.SSLContext,
    limits: Limits | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    server_hostname: str | None = None,
    trust: Trust | None = None,
) -> TlsConnection:
    """Dial and handshake; with trust, a server whose certificate the CRL revokes is PeerRefused."""
    raw = dial(host, port, timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname=server_hostname or host)
        name = trust.check_peer(tls) if trust is not None else peer_common_name(tls)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        refused = PeerRefused if isinstance(exc, ssl.SSLCertVerificationError | PeerRevoked) else TransportError
        raise refused(f"TLS handshake with {host}:{port} failed: {exc}") from exc
    return _established(tls, name, limits, trust)


class TlsTransport:
    """The Transport of a node holding NAME's credentials: mutual TLS 1.3 over TCP."""

    streams = True

    def __init__(self, creds: NodeCredentials) -> None:
        self._name = creds.name
        # The contexts and the CRL, re-read when their files change or on SIGHUP (edgefed.transport.tls).
        self.trust = Trust(creds)

    @property
    def local_name(self) -> str:
        return self._name

    def listen(self, host: str, port: int, limits: Limits) -> TlsListener:
        return TlsListener(host, port, limits=limits, trust=self.trust)

    def connect(self, host: str, port: int, limits: Limits, server_name: str | None) -> TlsConnection:
        state = self.trust.current()
        if server_name is None:
            # Any node certificate of the deployment CA, for peers dialled by address without a name to
            # check: node certificates name the node (SAN DNS:NAME), not necessarily the address.
            return connect_tls(host, port, state.client_any_node, limits, trust=self.trust)
        return connect_tls(host, port, state.client, limits, server_hostname=server_name, trust=self.trust)
