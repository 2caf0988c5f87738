"""The keys of one secure-aggregation round: X25519 agreement, Ed25519 signatures, share encryption.

Each worker makes two fresh X25519 pairs per round: c (encrypts the shares it sends its peers) and s
(agrees the pairwise mask seeds). It signs both public keys with its long-lived identity key, whose
public half every node already holds, so the chief that relays them cannot substitute its own.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_RAW = serialization.Encoding.Raw
_NONCE = bytes(12)  # every derived key encrypts one message only


def public_bytes(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def private_bytes(key: x25519.X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def advert_payload(round_number: int, name: str, c_public: bytes, s_public: bytes) -> bytes:
    """What a worker signs: the round, its name and both public keys, unambiguously framed."""
    encoded = name.encode()
    return (b"edgefed-secagg-advert\0" + round_number.to_bytes(8, "big") + len(encoded).to_bytes(2, "big")
            + encoded + c_public + s_public)


def sign_advert(identity: ed25519.Ed25519PrivateKey, round_number: int, name: str, c_public: bytes,
                s_public: bytes) -> bytes:
    return identity.sign(advert_payload(round_number, name, c_public, s_public))


def advert_is_signed(identity: ed25519.Ed25519PublicKey, round_number: int, name: str, c_public: bytes,
                     s_public: bytes, signature: bytes) -> bool:
    try:
        identity.verify(signature, advert_payload(round_number, name, c_public, s_public))
    except InvalidSignature:
        return False
    return True


def _derive(own: x25519.X25519PrivateKey, peer_public: bytes, purpose: bytes, round_number: int,
            first: str, second: str) -> bytes:
    shared = own.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    info = b"\0".join([b"edgefed-secagg", purpose, round_number.to_bytes(8, "big"), first.encode(), second.encode()])
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=info).derive(shared)


def pair_seed(own: x25519.X25519PrivateKey, peer_public: bytes, round_number: int, me: str, peer: str) -> bytes:
    """The mask seed both ends of a pair derive alike (names in sorted order)."""
    first, second = sorted((me, peer))
    return _derive(own, peer_public, b"mask", round_number, first, second)


def private_from_bytes(raw: bytes) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(raw)


def public_of(raw_private: bytes) -> bytes:
    return public_bytes(private_from_bytes(raw_private))


def encrypt_share(own_c: x25519.X25519PrivateKey, peer_c_public: bytes, round_number: int, sender: str,
                  recipient: str, plaintext: bytes) -> bytes:
    key = _derive(own_c, peer_c_public, b"share", round_number, sender, recipient)  # one key per direction
    return ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, None)


def decrypt_share(own_c: x25519.X25519PrivateKey, peer_c_public: bytes, round_number: int, sender: str,
                  recipient: str, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext was not made by sender for recipient in this round."""
    key = _derive(own_c, peer_c_public, b"share", round_number, sender, recipient)
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, ciphertext, None)
    except InvalidTag:
        return None
