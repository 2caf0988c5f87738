#!/usr/bin/env python3
"""Keys and genesis block of a deployment's single Iroha peer, on the controller, beside the PKI.

    scripts/iroha/genesis.py DIR --peer-address HOST:PORT [--domain edgefed]

Writes into DIR (mode 0700): peer.priv / peer.pub (the peer's ed25519/SHA-3 key pair, Iroha's hex
files) and admin.priv (the key of admin@DOMAIN, which `edgefed ledger bootstrap-iroha` signs with),
each created once and kept afterwards, and genesis.block (edgefed.ledger.iroha_genesis) for those
keys, rewritten only when it would change. Prints "changed" or "unchanged" (Ansible reads it: the
playbook that runs this stays idempotent). The node accounts are not in the genesis block:
bootstrap-iroha creates them from the PKI's ledger keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edgefed.ledger.iroha_genesis import DOMAIN, genesis_block  # noqa: E402
from edgefed.ledger.iroha_keys import Sha3Ed25519Key  # noqa: E402


def _seed(path: Path) -> tuple[bytes, bool]:
    """The 32-byte seed in PATH (hex), created when absent; (seed, created)."""
    if path.exists():
        text = path.read_text().strip()
        if len(text) != 64:
            raise SystemExit(f"genesis.py: {path} is not a 64-hex-character Iroha private key")
        return bytes.fromhex(text), False
    seed = os.urandom(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(seed.hex())
    return seed, True


def _write_if_changed(path: Path, text: str, mode: int) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    path.chmod(mode)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="where the keys and genesis.block live (created 0700)")
    parser.add_argument("--peer-address", required=True, help="the peer's internal (consensus) address HOST:PORT")
    parser.add_argument("--domain", default=DOMAIN, help=f"the deployment's Iroha domain (default {DOMAIN})")
    args = parser.parse_args()
    host, _, port = args.peer_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"--peer-address must be HOST:PORT, got {args.peer_address!r}")
    args.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    peer_seed, peer_created = _seed(args.dir / "peer.priv")
    admin_seed, admin_created = _seed(args.dir / "admin.priv")
    peer_public = Sha3Ed25519Key(peer_seed).public_key_hex()
    admin_public = Sha3Ed25519Key(admin_seed).public_key_hex()
    changed = _write_if_changed(args.dir / "peer.pub", peer_public, 0o644)
    block = genesis_block(args.peer_address, peer_public, admin_public, args.domain)
    changed |= _write_if_changed(args.dir / "genesis.block", json.dumps(block, indent=2, sort_keys=True) + "\n", 0o600)
    print("changed" if changed or peer_created or admin_created else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
