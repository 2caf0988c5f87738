"""The transport interface: what the federation needs from sockets, TLS or (later) MPI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgefed.errors import user_error
from edgefed.wire import Frame
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

    def recv(self, allocator: Allocator | None = None) -> Frame:
        """Block until one whole frame has arrived; tensors land in arrays from allocator."""
        ...

    def close(self) -> None: ...


class Listener(Protocol):
    @property
    def port(self) -> int: ...

    def accept(self) -> Connection:
        """Wait for a peer and authenticate it; raise TransportError if that peer is refused."""
        ...

    def close(self) -> None: ...
