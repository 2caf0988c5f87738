"""Iroha's ed25519/SHA-3 keys from a node's ledger seed (edgefed.ledger.iroha_keys), checked against the
`iroha` package's reference implementation (pure Python, the one Iroha's own tests use)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("iroha", reason="the iroha package is installed by `make setup` (mk/ledger.mk)")

from cryptography.hazmat.primitives.asymmetric import ed25519
from iroha import Iroha, IrohaCrypto
from iroha import ed25519 as reference

from edgefed.ledger.errors import LedgerError
from edgefed.ledger.iroha import iroha_public_key, iroha_signing_key, multihash_public_key
from edgefed.ledger.iroha_keys import Sha3Ed25519Key, sign_query, sign_transaction


@pytest.mark.parametrize("size", [0, 1, 32, 200])
def test_keys_and_signatures_equal_the_reference_implementation(size: int) -> None:
    seed, message = os.urandom(32), os.urandom(size)
    key = Sha3Ed25519Key(seed)
    assert key.public_key == reference.publickey_unsafe(seed)
    assert key.public_key_hex().encode() == IrohaCrypto.derive_public_key(seed.hex())
    signature = key.sign(message)
    assert signature == reference.signature_unsafe(message, seed, key.public_key)
    reference.checkvalid(signature, message, key.public_key)


def test_signed_transactions_and_queries_verify_as_iroha_checks_them() -> None:
    key = Sha3Ed25519Key(os.urandom(32))
    tx = Iroha("chief@edgefed").transaction(
        [Iroha.command("SetAccountDetail", account_id="chief@edgefed", key="k", value="v")]
    )
    sign_transaction(tx, key)
    assert IrohaCrypto.is_signature_valid(tx, tx.signatures[0])
    tx.payload.reduced_payload.commands[0].set_account_detail.value = "w"
    assert not IrohaCrypto.is_signature_valid(tx, tx.signatures[0])
    query = Iroha("chief@edgefed").query("GetRoles")
    sign_query(query, key)
    assert IrohaCrypto.is_signature_valid(query, query.signature)


def test_a_node_account_key_comes_from_its_ledger_seed_but_differs_from_the_ledger_key() -> None:
    ledger_key = ed25519.Ed25519PrivateKey.generate()
    account_key = iroha_public_key(ledger_key)
    assert account_key == iroha_signing_key(ledger_key).public_key_hex() and len(account_key) == 64
    assert multihash_public_key(ledger_key) == multihash_public_key(ledger_key.public_key())
    assert account_key not in multihash_public_key(ledger_key)  # SHA3-512 and SHA-512 derive other scalars


def test_a_seed_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(LedgerError, match="32 bytes, not 31"):
        Sha3Ed25519Key(bytes(31))
