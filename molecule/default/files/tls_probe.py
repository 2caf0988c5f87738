#!/usr/bin/env python3
"""Dial a TLS endpoint as a client (with or without a client certificate) and report, as JSON, whether
the server accepted us. Runs on a lab node with the system Python (standard library only).

TLS 1.3 finishes the client's side of the handshake before the server has checked the client's
certificate, so "the handshake completed" proves nothing by itself. The server's verdict arrives
right after: a refused client gets an alert (certificate required / unknown CA); an accepted one
gets session tickets (OpenSSL sends them once the client is authenticated). The probe waits for one
or the other (bounded by --timeout) and reports which.

    tls_probe.py HOST PORT --ca CA [--cert CERT --key KEY] [--server-name NAME] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import time
from typing import Any


def _common_name(cert: dict[str, Any]) -> str | None:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def probe(args: argparse.Namespace) -> dict[str, object]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=args.ca)
    if args.cert:
        context.load_cert_chain(certfile=args.cert, keyfile=args.key)
    result: dict[str, object] = {"host": args.host, "port": args.port, "client_cert": bool(args.cert)}
    try:
        raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as exc:
        return {**result, "connected": False, "accepted": False, "error": str(exc)}
    result["connected"] = True
    with raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=args.server_name or args.host)
        except (ssl.SSLError, OSError) as exc:
            return {**result, "accepted": False, "error": f"handshake: {exc}"}
        result["server_common_name"] = _common_name(tls.getpeercert() or {})
        # Read until the server's verdict: tickets (accepted) or an alert (refused). The server
        # sends no application data first, so a read only ends on an alert, EOF or the timeout.
        deadline = time.monotonic() + args.timeout
        tls.settimeout(0.2)
        error = None
        while time.monotonic() < deadline:
            try:
                data = tls.recv(1)
            except TimeoutError:
                session = tls.session
                if session is not None and session.has_ticket:
                    break
                continue
            except (ssl.SSLError, OSError) as exc:
                error = str(exc)
                break
            if not data:
                error = "server closed the connection"
                break
        session = tls.session
        accepted = error is None and session is not None and session.has_ticket
        result.update(accepted=accepted, error=error if not accepted else None)
        if not accepted and error is None:
            result["error"] = f"no verdict from the server within {args.timeout} s"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--server-name")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(probe(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
