"""TLS 1.3 mutual-authentication contexts built from the deployment's PKI."""

from __future__ import annotations

import ssl
from typing import Any

from edgefed.pki import NodeCredentials


def _base_context(purpose: ssl.Purpose, creds: NodeCredentials) -> ssl.SSLContext:
    protocol = ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(creds.ca_cert))
    context.load_cert_chain(certfile=str(creds.cert), keyfile=str(creds.key))
    return context


def server_context(creds: NodeCredentials) -> ssl.SSLContext:
    """Server side: present NAME's certificate, require a client certificate from the same CA."""
    return _base_context(ssl.Purpose.CLIENT_AUTH, creds)


def client_context(creds: NodeCredentials, check_hostname: bool = True) -> ssl.SSLContext:
    """Client side: present NAME's certificate; the server's must come from the same CA.

    check_hostname also ties the server's certificate to the address dialled (its SANs), which the
    chief's certificate carries for its public and private addresses.
    """
    context = _base_context(ssl.Purpose.SERVER_AUTH, creds)
    context.check_hostname = check_hostname
    return context


def peer_common_name(sock: ssl.SSLSocket) -> str:
    cert: Any = sock.getpeercert()
    if not cert:
        raise ssl.SSLError("peer presented no certificate")
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise ssl.SSLError("peer certificate has no common name")
