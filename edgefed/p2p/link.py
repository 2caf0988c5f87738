"""The transport a p2p session runs on: mutual TLS from the deployment's PKI, or (only when asked
for by name) unauthenticated plain TCP. Both come from edgefed.transport; p2p opens no socket."""

from __future__ import annotations

import logging
from pathlib import Path

from edgefed.p2p.errors import P2PError
from edgefed.pki import NodeCredentials, PKIError
from edgefed.transport import PlainTransport, TlsTransport, Transport
from edgefed.wire import Limits

log = logging.getLogger("edgefed.p2p")

CHUNK_BYTES = 256 << 10
# Tight decoding limits: p2p carries small JSON messages and file chunks, never tensors.
P2P_LIMITS = Limits(
    max_frame_bytes=1 << 20, max_control_bytes=64 << 10, max_raw_bytes=1 << 20, max_tensors=1, max_ndim=1
)
PLAINTEXT_WARNING = (
    "INSECURE PLAINTEXT p2p link: messages and files travel unencrypted and the peer is NOT "
    "authenticated; use only on a network you trust completely"
)


def resolve_transport(
    pki_dir: str | Path | None = None,
    name: str | None = None,
    credentials: NodeCredentials | None = None,
    insecure_plaintext: bool = False,
    transport: Transport | None = None,
) -> Transport:
    """Exactly one of: a transport, this node's credentials (or pki_dir and name: mutual TLS, the
    default), or the explicit plain-text opt-in."""
    if transport is not None:
        if credentials is not None or pki_dir is not None or name is not None or insecure_plaintext:
            raise P2PError("give either a transport or the means to make one (credentials, plain text), not both")
        return transport  # whoever made a PlainTransport chose it in code
    if insecure_plaintext:
        if credentials is not None or pki_dir is not None or name is not None:
            raise P2PError("insecure_plaintext=True cannot be combined with PKI credentials: pick one")
        log.warning(PLAINTEXT_WARNING)
        return PlainTransport()
    if credentials is not None:
        if pki_dir is not None or name is not None:
            raise P2PError("give either credentials or pki_dir and name, not both")
        return TlsTransport(credentials)
    if pki_dir is None or name is None:
        raise PKIError(
            "p2p links use mutual TLS: give pki_dir and name (the node's credentials from "
            "`edgefed pki issue`); plain text needs insecure_plaintext=True"
        )
    return TlsTransport(NodeCredentials.load(pki_dir, name))
