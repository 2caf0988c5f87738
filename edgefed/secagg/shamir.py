"""Shamir's t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A share is (x, y) with x the holder's index (1..n) and y a field element; any t shares give the
secret back, fewer give nothing about it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

PRIME = (1 << 521) - 1  # a Mersenne prime above every 256-bit secret
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def split(secret: bytes, threshold: int, holders: Sequence[int]) -> dict[int, bytes]:
    """Shares of secret for each holder index, any threshold of which reconstruct it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a shared secret is {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} out of range for {len(holders)} holders")
    if len(set(holders)) != len(holders) or any(not 0 < x < PRIME for x in holders):
        raise ValueError("holder indices must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in holders:
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def reconstruct(shares: Mapping[int, bytes]) -> bytes:
    """The secret at x = 0 from the given shares (exactly the threshold's worth or more, consistent)."""
    if not shares:
        raise ValueError("no shares to reconstruct from")
    points = []
    for x, share in shares.items():
        if len(share) != SHARE_BYTES:
            raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(share)}")
        y = int.from_bytes(share, "big")
        if not 0 < x < PRIME or y >= PRIME:
            raise ValueError("a share lies outside the field")
        points.append((x, y))
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise ValueError("the shares do not reconstruct a 32-byte secret (inconsistent shares)")
    return secret.to_bytes(SECRET_BYTES, "big")
