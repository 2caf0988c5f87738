"""Iroha 1's own signature scheme, ed25519 with SHA-3, computed with libsodium's constant-time primitives.

Every irohad build verifies it (iroha-ed25519, the "default" crypto provider): a 64-hex public key,
signatures over SHA3-256 of the transaction or query payload. The ``ed0120`` multihash keys
(standard ed25519 with SHA-512) are verified only by peers built with Hyperledger Ursa
(``-DUSE_LIBURSA=ON``); a stock irohad 1.6 answers them with STATELESS_VALIDATION_FAILED. So a node's
Iroha account uses the SHA-3 key derived from the same 32-byte seed as its PKI ledger key: no extra
key file, and records are still signed with the standard ed25519 key the PKI publishes.

The two schemes hash the seed differently (SHA3-512 versus SHA-512), so the derived scalars and nonce
prefixes are unrelated: a signature of one scheme says nothing about the other. The `iroha` package's
own SHA-3 signer is pure Python and documented as unsafe for secret keys (timing); this one is not.
"""

from __future__ import annotations

import hashlib
from typing import Any

from iroha import primitive_pb2
from nacl import bindings

from edgefed.ledger.errors import LedgerError

SEED_BYTES = 32


class Sha3Ed25519Key:
    """An ed25519/SHA-3 signing key (Iroha 1's default) from a 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise LedgerError(f"an ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        digest = hashlib.sha3_512(seed).digest()
        clamped = bytearray(digest[:32])
        clamped[0] &= 248
        clamped[31] &= 127
        clamped[31] |= 64
        self._scalar = bindings.crypto_core_ed25519_scalar_reduce(bytes(clamped) + bytes(32))
        self._prefix = digest[32:]
        self.public_key = bindings.crypto_scalarmult_ed25519_base_noclamp(self._scalar)

    def public_key_hex(self) -> str:
        return self.public_key.hex()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of MESSAGE, every hash being SHA3-512 (RFC 8032 otherwise)."""
        nonce = bindings.crypto_core_ed25519_scalar_reduce(hashlib.sha3_512(self._prefix + message).digest())
        commitment = bindings.crypto_scalarmult_ed25519_base_noclamp(nonce)
        challenge = bindings.crypto_core_ed25519_scalar_reduce(
            hashlib.sha3_512(commitment + self.public_key + message).digest()
        )
        response = bindings.crypto_core_ed25519_scalar_add(
            nonce, bindings.crypto_core_ed25519_scalar_mul(challenge, self._scalar)
        )
        return commitment + response

    def signature_of(self, proto: Any) -> primitive_pb2.Signature:
        """Iroha's signature over a transaction or query: SHA3-256 of its serialised payload, signed."""
        message = hashlib.sha3_256(proto.payload.SerializeToString()).digest()
        return primitive_pb2.Signature(public_key=self.public_key_hex(), signature=self.sign(message).hex())


def sign_transaction(transaction: Any, key: Sha3Ed25519Key) -> None:
    transaction.signatures.append(key.signature_of(transaction))


def sign_query(query: Any, key: Sha3Ed25519Key) -> None:
    query.signature.CopyFrom(key.signature_of(query))
