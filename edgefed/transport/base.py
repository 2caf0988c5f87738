"""The transport interface: what the federation needs from sockets, TLS or (later) MPI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgefed.errors import user_error
from edgefed.wire import Frame, Limits
from edgefed.wire.reader import Allocator


@user_error
class TransportError(ConnectionError):
    """The link to a peer failed (handshake, reset, timeout)."""


class ConnectionClosed(TransportError):
    """The peer closed the connection."""


class Connection(Protocol):
    """A bidirectional, authenticated frame stream to one named peer."""

    @property
    def peer(self) -> str:
        """The peer's authenticated identity (its certificate's common name)."""
        ...

    def send(self, parts: Sequence[bytes | memoryview]) -> int:
        """Send one encoded frame (as returned by the wire encoders); return the bytes sent."""
        ...

    def recv(self, allocator: Allocator | None = None, hash_payload: bool = True) -> Frame:
        """Block until one whole frame has arrived; tensors land in arrays from allocator; the payload's
        sha256 is computed on the way unless hash_payload is false (no ledger to record it)."""
        ...

    def settimeout(self, seconds: float | None) -> None:
        """Bound how long recv() may wait (None: wait for ever)."""
        ...

    def close(self) -> None: ...


class PendingConnection(Protocol):
    """A peer that connected but has not proved who it is yet."""

    @property
    def address(self) -> tuple[str, int]: ...

    def authenticate(self) -> Connection:
        """Complete the handshake (on the caller's thread, so a slow peer never blocks accepting);
        raise TransportError if the peer is refused."""
        ...


class Listener(Protocol):
    @property
    def port(self) -> int: ...

    def accept_pending(self) -> PendingConnection:
        """Wait for the next peer to connect."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """How sessions reach each other: TLS sockets today (TlsTransport), MPI later."""

    def listen(self, host: str, port: int, limits: Limits) -> Listener: ...

    def connect(self, host: str, port: int, limits: Limits, server_name: str) -> Connection: ...
