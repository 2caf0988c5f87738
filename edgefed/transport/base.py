"""The transport interface: what the federation and p2p need from sockets, TLS or (later) MPI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, overload

from edgefed.errors import user_error
from edgefed.wire import Frame, Limits
from edgefed.wire.reader import Allocator


@user_error
class TransportError(ConnectionError):
    """The link to a peer failed (handshake, reset, timeout)."""


class ConnectionClosed(TransportError):
    """The peer closed the connection."""


class PeerRefused(TransportError):
    """The peer is not one we may talk to (its certificate failed verification): dialling again cannot help."""


class ListenerClosed(TransportError):
    """accept_pending() on a listener that close() stopped (before or while it waited)."""


class Connection(Protocol):
    """A bidirectional, authenticated frame stream to one named peer."""

    @property
    def peer(self) -> str:
        """The peer's authenticated identity (its certificate's common name)."""
        ...

    def send(self, parts: Iterable[bytes | memoryview]) -> int:
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

    def close(self) -> None:
        """Hang up without a handshake (a peer that will not be served)."""
        ...


class Listener(Protocol):
    @property
    def port(self) -> int:
        """The bound port (still known after close())."""
        ...

    @overload
    def accept_pending(self, timeout: None = None) -> PendingConnection: ...

    @overload
    def accept_pending(self, timeout: float) -> PendingConnection | None: ...

    def accept_pending(self, timeout: float | None = None) -> PendingConnection | None:
        """Wait for the next peer to connect; None if nobody came within timeout (seconds).
        ListenerClosed once close() was called, also for a caller already waiting."""
        ...

    def close(self) -> None:
        """Stop listening; wakes a thread waiting in accept_pending() (callable from any thread)."""
        ...


class Transport(Protocol):
    """How nodes reach each other: mutual TLS (TlsTransport), plain TCP on request (PlainTransport), MPI later."""

    @property
    def local_name(self) -> str:
        """Who this node is to its peers ("unauthenticated" on a transport without identities)."""
        ...

    # Whether a frame's bytes can be read into buffers of any size (a byte stream); MPI delivers whole
    # messages, so a buffer smaller than one costs a message-sized scratch (the chief then reads no ahead).
    streams: bool

    def listen(self, host: str, port: int, limits: Limits) -> Listener: ...

    def connect(self, host: str, port: int, limits: Limits, server_name: str | None) -> Connection:
        """Dial host:port. server_name: the name the peer must prove (TLS: a name in its certificate);
        None accepts any peer the transport authenticates (TLS: any certificate of the deployment CA)."""
        ...
