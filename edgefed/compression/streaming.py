"""int8 updates encoded while they are sent: the worker never holds the whole encoding.

`int8_stream(residual)` is the `EncodedStream` of the int8 encoding of the delta held in residual:
a first pass takes every block's scale (4 bytes per 256 values, sent first, as the layout wants),
then each chunk of values is quantized with those scales, subtracted (dequantized) from the residual
and handed to the sender. The bytes are encode_int8's and the residual ends as add_into(residual,
encoded, -1.0) leaves it: the same arithmetic on the same chunks (codecs.py). A stream abandoned
part way (the link dropped) leaves the unsent chunks' delta whole in the residual: nothing of them
was sent, so it is kept for the next round, as error feedback wants.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgefed.compression.codecs import (
    LEAN_CHUNK,
    _blocks,
    _dequantized_part,
    _flat,
    _spans,
    block_scales,
    quantized_blocks,
)
from edgefed.wire import INT8_BLOCK, EncodedStream, Encoding


def _all_scales(flat: np.ndarray) -> np.ndarray:
    scales = np.empty(-(-flat.size // INT8_BLOCK), np.float32)
    for span in _spans(flat.size, LEAN_CHUNK):
        chunk_scales = block_scales(_blocks(flat[span].astype(np.float32)))
        first = span.start // INT8_BLOCK
        scales[first : first + chunk_scales.size] = chunk_scales
    return scales


def int8_stream(residual: np.ndarray) -> EncodedStream:
    """The int8 encoding of residual (float32, C-contiguous), produced while sent; error feedback
    applied to residual chunk by chunk as each is handed over."""
    flat = _flat(residual)
    if flat.dtype != np.float32:
        raise ValueError(f"a residual is float32, not {flat.dtype}")

    def produce() -> Iterator[np.ndarray]:
        scales = _all_scales(flat)
        yield scales
        for span in _spans(flat.size, LEAN_CHUNK):
            first = span.start // INT8_BLOCK
            chunk_scales = scales[first : first + -(-(span.stop - span.start) // INT8_BLOCK)]
            chunk = flat[span].astype(np.float32)
            values = quantized_blocks(_blocks(chunk), chunk_scales, chunk.size)
            flat[span] += _dequantized_part(values.astype(np.float32), chunk_scales, -1.0)
            yield values

    return EncodedStream(Encoding.INT8, tuple(int(d) for d in residual.shape), flat.size, produce)
