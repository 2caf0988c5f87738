"""Updates as integers in the ring Z/2^32: clip, quantize with a scale every worker shares, mask.

A shared scale is what makes the sum exact: per-worker (or per-block) scales would not add up. uint32
arithmetic in numpy wraps around, which is exactly addition mod 2^32, so masks cancel bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

RING_DTYPE = np.dtype("<u4")
LEVELS = 127  # int8 levels on each side of zero: a quantized coordinate is in [-127, 127]
# The unmasked sum must stay inside the signed range of the ring: samples x LEVELS < 2^31.
MAX_TOTAL_WEIGHT = (1 << 31) // LEVELS - 1
_PRG_NONCE = bytes(16)  # every seed keys exactly one stream, so a fixed nonce is safe
_PRG_CHUNK = 1 << 20  # coordinates expanded at once (4 MiB of keystream)


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All tensors as one float64 vector (the order the model lists them in)."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]) if arrays else \
        np.zeros(0, np.float64)


def unflatten(vector: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(vector[start:start + size].reshape(shape))
        start += size
    if start != vector.size:
        raise ValueError(f"vector holds {vector.size} coordinates, the shapes {start}")
    return out


def quantize(delta: np.ndarray, bound: float, weight: int = 1) -> np.ndarray:
    """weight x round(clamp(delta, +-bound) x LEVELS / bound) in the ring (two's complement)."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    if not 1 <= weight <= MAX_TOTAL_WEIGHT:
        raise ValueError(f"weight must be between 1 and {MAX_TOTAL_WEIGHT}, got {weight!r}")
    clipped = np.clip(np.nan_to_num(delta, nan=0.0, posinf=bound, neginf=-bound), -bound, bound)
    levels = np.rint(clipped * (LEVELS / bound)).astype(np.int64) * weight
    return levels.astype(np.int32).view(RING_DTYPE)


def dequantize_sum(ring_sum: np.ndarray, bound: float, total_weight: int) -> np.ndarray:
    """The mean of the quantized updates: the ring sum read as signed, scaled back once, divided."""
    if not 1 <= total_weight <= MAX_TOTAL_WEIGHT:
        raise ValueError(f"total weight must be between 1 and {MAX_TOTAL_WEIGHT}, got {total_weight!r}")
    signed = np.asarray(ring_sum, RING_DTYPE).view(np.int32).astype(np.float64)
    return signed * (bound / LEVELS) / total_weight


def prg_mask(seed: bytes, length: int) -> np.ndarray:
    """length pseudorandom ring elements from a 32-byte seed (ChaCha20 keystream)."""
    if len(seed) != 32:
        raise ValueError(f"a mask seed is 32 bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.ChaCha20(seed, _PRG_NONCE), mode=None).encryptor()
    out = np.empty(length, RING_DTYPE)
    for start in range(0, length, _PRG_CHUNK):
        count = min(_PRG_CHUNK, length - start)
        out[start:start + count] = np.frombuffer(encryptor.update(bytes(4 * count)), RING_DTYPE)
    return out


def add_mask(target: np.ndarray, seed: bytes, sign: int) -> None:
    """target += sign x PRG(seed) in the ring, in place (sign is +1 or -1)."""
    mask = prg_mask(seed, target.size)
    if sign > 0:
        np.add(target, mask, out=target)
    else:
        np.subtract(target, mask, out=target)
