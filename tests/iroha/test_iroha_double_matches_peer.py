"""The Torii double must store and answer what a real irohad 1.6 stores and answers.

tests/iroha/scenario.py runs one script (bootstrap, both sides of transfers, refused writes, keys that
are not signatories, an ed0120 key, awkward detail values, queries allowed and refused) against a
Torii and records every status stream and every answer. In `make test` it runs against the double
configured as a stock peer (no ed0120 verifier), checked for what any Iroha 1 peer must do; in
`make test-iroha` also against the real peer, and the two observations must be identical.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

pytest.importorskip("iroha", reason="the iroha package is installed by `make setup` (mk/ledger.mk)")

from iroha import Iroha

from edgefed.ledger.iroha import NODE_ROLE, IrohaClient
from edgefed.ledger.iroha_bootstrap import NODE_PERMISSIONS
from edgefed.ledger.iroha_keys import Sha3Ed25519Key
from tests.helpers.torii_double import ToriiDouble
from tests.iroha.conftest import LivePeer
from tests.iroha.scenario import check_what_any_peer_must_do, run_scenario

ADMIN = "admin@edgefed"


def on_the_double(pki_dir: Path, domain: str) -> str:
    admin_key = Sha3Ed25519Key(os.urandom(32))
    double = ToriiDouble(ADMIN, admin_key.public_key_hex(), block_time=0.02, multihash_keys=False)
    address = double.start()
    try:
        # The state the real peer's genesis block (tests/iroha/peer.py) starts from: the node role exists.
        create_role = Iroha.command("CreateRole", role_name=NODE_ROLE, permissions=NODE_PERMISSIONS)
        assert IrohaClient(address, ADMIN, admin_key, 10.0).submit([create_role]).committed
        seen = run_scenario(address, ADMIN, admin_key, pki_dir, domain)
    finally:
        double.stop()
    check_what_any_peer_must_do(seen)
    return seen.normalised(domain)


def test_the_double_does_what_any_iroha_peer_must(pki_dir: Path) -> None:
    on_the_double(pki_dir, f"ef{uuid.uuid4().hex[:12]}")


def test_the_double_stores_and_answers_what_the_real_peer_does(
    iroha_peer: LivePeer, pki_dir: Path, fresh_domain: str, tmp_path: Path
) -> None:
    seen = run_scenario(iroha_peer.torii, iroha_peer.admin_account, iroha_peer.admin_key, pki_dir, fresh_domain)
    real = seen.normalised(fresh_domain)
    (tmp_path / "real-peer.json").write_text(real)
    double = on_the_double(pki_dir, fresh_domain)
    (tmp_path / "double.json").write_text(double)
    check_what_any_peer_must_do(seen)
    assert double == real
