"""One TCP connect, for `edgefed doctor`: can this node reach the chief's public address and port?"""

from __future__ import annotations

import socket


def tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within timeout (it is closed at once), else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    except OSError as exc:
        return exc.strerror or str(exc)
