"""The digest that names a global model: sha256 of the payload of the WEIGHTS frame that carries it.

The round number travels in the frame header, outside the payload, so the digest depends on the
tensors alone (shapes, dtypes, values): the chief's `model` records on the ledger, the `weights` send
records of the round that model starts, and an exported model's manifest all carry the same value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefed.wire.frame import HEADER_SIZE, MessageType
from edgefed.wire.tensors import encode_tensor_frame, payload_sha256


def weights_digest(weights: Sequence[np.ndarray]) -> tuple[str, int]:
    """(sha256, payload bytes) of these weights framed for a broadcast (no copy of the arrays)."""
    parts = encode_tensor_frame(MessageType.WEIGHTS, 0, list(weights), 0)
    size = sum(memoryview(part).nbytes for part in parts) - HEADER_SIZE
    return payload_sha256(parts), size
