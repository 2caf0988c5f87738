"""Where the ledger service delivers records: one interface, three implementations.

- `LocalChainBackend` (here): the chief's own ledger service appends straight to the embedded chain.
- `edgefed.ledger.push.RemoteChainBackend`: a worker's ledger service pushes to the chief's embedded
  chain over the federation port (LEDGER_PUSH / LEDGER_ACK frames on the same mutual-TLS PKI).
- `edgefed.ledger.iroha.IrohaBackend`: Hyperledger Iroha 1 over gRPC (imported only when configured).

A backend either returns what happened to each record (acknowledged or refused for good) or raises
BackendUnavailable, after which the service keeps the records and retries with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.config import NodeConfig
from edgefed.ledger.chain import EmbeddedLedger, KeyLookup, ledger_path
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials, PKIError, check_node_name, load_ledger_public_key

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """The backend's answer for one batch."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    height: int | None = None  # the ledger's height after the batch, when the backend knows it


class Backend(Protocol):
    name: str

    def deliver(self, records: Sequence[TransferRecord]) -> Delivery:
        """Hand records over; raise BackendUnavailable if it cannot be reached right now."""
        ...

    def close(self) -> None: ...


class LocalChainBackend:
    """The chief's ledger service: appends its node's records to the chain in STATE_DIR/ledger.sqlite."""

    name = "embedded"

    def __init__(self, ledger: EmbeddedLedger, node: str) -> None:
        self.ledger = ledger
        self.node = node

    def deliver(self, records: Sequence[TransferRecord]) -> Delivery:
        result = self.ledger.append(records, pushed_by=self.node)
        return Delivery(result.acknowledged(), result.refused, result.height)

    def close(self) -> None:
        self.ledger.close()


def pki_key_lookup(pki_dir: str | Path) -> KeyLookup:
    """Find NODE's ledger public key at PKI_DIR/nodes/NODE/ledger.pub (None if it is not there)."""

    def lookup(node: str) -> ed25519.Ed25519PublicKey | None:
        try:
            path = Path(pki_dir) / "nodes" / check_node_name(node) / "ledger.pub"
            return load_ledger_public_key(path) if path.is_file() else None
        except PKIError as exc:
            log.warning("ledger: no usable key for %r: %s", node, exc)
            return None

    return lookup


def open_chief_ledger(config: NodeConfig) -> EmbeddedLedger:
    """The chief's embedded chain, signed with its ledger key; unknown signers are looked up in the PKI.

    Both writers of the chain open it this way: the chief's ledger service (LocalChainBackend) and the
    chief's federation process (the LEDGER_PUSH handler of edgefed.ledger.push).
    """
    creds = NodeCredentials(Path(config.node.pki_dir), config.node.name)
    return EmbeddedLedger(
        ledger_path(config.node.state_dir),
        owner=config.node.name,
        signing_key=creds.ledger_signing_key(),
        key_lookup=pki_key_lookup(config.node.pki_dir),
    )
