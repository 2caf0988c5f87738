"""The Prometheus scrape endpoint's HTTP listener: the one socket the metrics feature opens.

prometheus_client's start_http_server binds it; it lives here so that transport/ stays the only
package that opens sockets (tests/unit/test_architecture.py). Plain HTTP, read-only, bound to the
configured address (127.0.0.1 by default): expose it beyond the host only on a private network.
"""

from __future__ import annotations

import threading
from typing import Any

from edgefed.errors import user_error


@user_error
class MetricsBindError(OSError):
    """The metrics address or port cannot be bound (in use, or not an address of this host)."""


class MetricsServer:
    """A running scrape endpoint; close() stops it and frees the port."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.address: str = server.server_address[0]
        self.port: int = server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def serve_metrics(registry: Any, address: str, port: int) -> MetricsServer:
    """Serve registry's metrics on http://address:port/metrics from a daemon thread (port 0: any free one)."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise MetricsBindError(f"metrics endpoint {address}:{port}: cannot listen ({exc.strerror or exc})") from None
    return MetricsServer(server, thread)
