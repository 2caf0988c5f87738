"""Compressed model updates (issue 14), pure: no sockets, no threads.

Worker side: a `Compressor` per setting turns a delta (trained weights - the global weights they
came from) into the tensors to send, keeping what the encoding lost as a residual for the next round
(error feedback). Chief side: `update_mismatch` and `first_non_finite` check an upload, `DeltaSum` /
`add_into` add it into a running sum without expanding it to a float32 copy. `parse_compression`
reads `federation.compression`. Broadcasts (`federation.broadcast_compression`): `GlobalEncoder` on
the chief, `GlobalDecoder` on the worker (broadcast.py). The encodings' wire layout is edgefed/wire/encodings.py.
"""

from edgefed.compression.accumulate import DeltaSum, delta_norm, first_non_finite, update_mismatch, upload_specs
from edgefed.compression.broadcast import (
    BroadcastError,
    BroadcastSettingError,
    GlobalDecoder,
    GlobalEncoder,
    parse_broadcast_compression,
)
from edgefed.compression.codecs import (
    add_into,
    decode_dense,
    decoded_spans,
    encode_fp16,
    encode_int8,
    encode_topk,
    topk_count,
)
from edgefed.compression.feedback import CompressionError, Compressor
from edgefed.compression.settings import NONE, CompressionSetting, CompressionSettingError, parse_compression

__all__ = [
    "NONE",
    "BroadcastError",
    "BroadcastSettingError",
    "CompressionError",
    "CompressionSetting",
    "CompressionSettingError",
    "Compressor",
    "DeltaSum",
    "GlobalDecoder",
    "GlobalEncoder",
    "add_into",
    "decode_dense",
    "decoded_spans",
    "delta_norm",
    "encode_fp16",
    "encode_int8",
    "encode_topk",
    "first_non_finite",
    "parse_broadcast_compression",
    "parse_compression",
    "topk_count",
    "update_mismatch",
    "upload_specs",
]
