"""Compressed tensor encodings: how a float32 tensor (a model delta) travels in fewer bytes.

Each encoding has a code that shares the spec block's first byte with the plain dtype codes (1-9), so
a tensor list can mix plain and encoded tensors and a float32 frame is byte-for-byte what it was. The
codes are part of the format: appended, never renumbered. Decoded values are float32.

    code  name       data, in this order (every part little-endian; 4-byte parts first)
    32    fp16       n float16 values
    33    int8       ceil(n / 256) float32 scales | n int8 values; value i = q[i] * scale[i // 256]
    34    topk       k uint32 indices | k float32 values
    35    topk+int8  k uint32 indices | ceil(k / 256) float32 scales | k int8 values

n is the element count of the tensor's shape, k (sparse encodings only) a u64 after the shape in the
spec block. Checked while decoding, before the frame reaches its caller: k <= n, n < 2^32 for sparse
tensors, indices strictly increasing and below n (so unique: a scatter-add touches each once), scales
finite and within [0, MAX_SCALE] (so every dequantized value is a finite float32). Values of fp16 and
topk tensors may be NaN or Inf like those of a plain float tensor: the receiver checks them
(`has_non_finite` here, `first_non_finite` for plain tensors) and answers with a REJECT, as it does for plain tensors.

The arithmetic that chooses scales and indices is the compression library's (edgefed/compression/);
this module only lays the parts out and checks them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from math import prod

import numpy as np

from edgefed.wire.errors import ProtocolError

INT8_BLOCK = 256  # values per float32 scale: 1.6 % overhead, error <= 1/254 of the block's largest value
MAX_SCALE = float(np.finfo(np.float32).max) / 128  # any int8 times a scale stays finite in float32
MAX_SPARSE_ELEMENTS = 1 << 32  # sparse indices are uint32
_CHECK_CHUNK = 1 << 20  # elements per pass when checking indices: bounds the temporaries
FINITE_CHECK_CHUNK = 1 << 18  # elements per max/min pass of all_finite (no temporaries either way)


class Encoding(enum.IntEnum):
    """Wire codes of the encodings (never renumber)."""

    FP16 = 32
    INT8 = 33
    TOPK = 34
    TOPK_INT8 = 35

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def sparse(self) -> bool:
        return self in (Encoding.TOPK, Encoding.TOPK_INT8)

    @property
    def quantized(self) -> bool:
        return self in (Encoding.INT8, Encoding.TOPK_INT8)


_LABELS = {Encoding.FP16: "fp16", Encoding.INT8: "int8", Encoding.TOPK: "topk", Encoding.TOPK_INT8: "topk+int8"}
ENCODING_CODES = {int(e): e for e in Encoding}
SUPPORTED_ENCODINGS = frozenset(e.label for e in Encoding)


def scale_blocks(values: int) -> int:
    return -(-values // INT8_BLOCK)


def encoded_nbytes(encoding: Encoding, elements: int, count: int = 0) -> int:
    """Bytes of an encoded tensor of `elements` elements (`count` kept ones if sparse)."""
    if encoding is Encoding.FP16:
        return 2 * elements
    if encoding is Encoding.INT8:
        return 4 * scale_blocks(elements) + elements
    if encoding is Encoding.TOPK:
        return 8 * count
    return 5 * count + 4 * scale_blocks(count)


@dataclass(frozen=True, eq=False)
class EncodedTensor:
    """One encoded tensor: its logical shape and its parts (views into a receive buffer, or the
    encoder's arrays). Built only through checked constructors: `EncodedTensor.build` or the reader."""

    encoding: Encoding
    shape: tuple[int, ...]
    values: np.ndarray  # float16 (fp16), int8 (int8, topk+int8) or float32 (topk), 1-D
    scales: np.ndarray | None = None  # float32, one per INT8_BLOCK values (quantized encodings)
    indices: np.ndarray | None = None  # uint32 flat C-order positions, strictly increasing (sparse)

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def count(self) -> int:
        """Values carried: the tensor's size, or k for a sparse tensor."""
        return int(self.values.size)

    @property
    def nbytes(self) -> int:
        return encoded_nbytes(self.encoding, self.size, self.count)

    def parts(self) -> list[np.ndarray]:
        """The data in wire order, each little-endian and contiguous."""
        parts = [self.indices, self.scales, self.values]
        return [np.ascontiguousarray(p, p.dtype.newbyteorder("<")).reshape(-1) for p in parts if p is not None]

    @classmethod
    def build(
        cls,
        encoding: Encoding,
        shape: tuple[int, ...],
        values: np.ndarray,
        scales: np.ndarray | None = None,
        indices: np.ndarray | None = None,
    ) -> EncodedTensor:
        """An encoded tensor from an encoder's arrays, checked as a decoder would (ProtocolError)."""
        shape = tuple(int(d) for d in shape)
        tensor = cls(
            encoding, shape, np.asarray(values, _VALUE_DTYPES[encoding]).reshape(-1),
            None if scales is None else np.asarray(scales, np.float32).reshape(-1),
            None if indices is None else np.asarray(indices, np.uint32).reshape(-1),
        )
        check_encoded(tensor)
        return tensor


@dataclass(frozen=True, eq=False)
class EncodedStream:
    """An encoded tensor whose data is produced while it is sent (`stream_tensor_frame`), so the whole
    encoding is never held: `produce()` yields its parts in wire order, little-endian, nbytes in all.
    The encoder is trusted to follow the layout (it is ours); a receiver checks it as any other."""

    encoding: Encoding
    shape: tuple[int, ...]
    count: int  # values carried: the tensor's size, or k if sparse
    produce: Callable[[], Iterator[np.ndarray]]

    @property
    def nbytes(self) -> int:
        return encoded_nbytes(self.encoding, prod(self.shape), self.count)


_VALUE_DTYPES: dict[Encoding, np.dtype] = {
    Encoding.FP16: np.dtype("<f2"), Encoding.INT8: np.dtype("i1"),
    Encoding.TOPK: np.dtype("<f4"), Encoding.TOPK_INT8: np.dtype("i1"),
}


def check_sparse_count(encoding: Encoding, shape: tuple[int, ...], count: int) -> None:
    """The spec-level limits of an encoded tensor: before any of its data is read."""
    elements = prod(shape)
    if encoding.sparse:
        if elements > MAX_SPARSE_ELEMENTS:
            raise ProtocolError(f"{encoding.label} tensor of {elements} elements: sparse indices are 32-bit")
        if count > elements:
            raise ProtocolError(f"{encoding.label} tensor keeps {count} values of a tensor of {elements}")
    elif count:
        raise ProtocolError(f"{encoding.label} tensor carries a sparse count")


def check_encoded(tensor: EncodedTensor) -> None:
    """Every structural rule of docs/protocol.md (Encodings); ProtocolError names the first broken one."""
    encoding, name = tensor.encoding, tensor.encoding.label
    if tensor.values.ndim != 1 or tensor.values.dtype != _VALUE_DTYPES[encoding]:
        raise ProtocolError(f"{name} values must be 1-D {_VALUE_DTYPES[encoding]}, got {tensor.values.dtype}")
    check_sparse_count(encoding, tensor.shape, tensor.count if encoding.sparse else 0)
    if not encoding.sparse and tensor.count != tensor.size:
        raise ProtocolError(f"{name} tensor of shape {list(tensor.shape)} carries {tensor.count} values")
    if encoding.quantized:
        _check_scales(name, tensor.scales, scale_blocks(tensor.count))
    elif tensor.scales is not None:
        raise ProtocolError(f"{name} tensor carries scales")
    if encoding.sparse:
        _check_indices(name, tensor.indices, tensor.count, tensor.size)
    elif tensor.indices is not None:
        raise ProtocolError(f"{name} tensor carries indices")


def _check_scales(name: str, scales: np.ndarray | None, expected: int) -> None:
    if scales is None or scales.shape != (expected,):
        raise ProtocolError(f"{name} tensor needs {expected} scales")
    # NaN fails both comparisons, so this also refuses NaN and +-Inf
    if not np.all((scales >= 0) & (scales <= MAX_SCALE)):
        raise ProtocolError(f"{name} tensor has a scale that is negative, not finite, or over {MAX_SCALE:.3g}")


def _check_indices(name: str, indices: np.ndarray | None, count: int, size: int) -> None:
    if indices is None or indices.shape != (count,):
        raise ProtocolError(f"{name} tensor needs {count} indices")
    if count == 0:
        return
    if int(indices[-1]) >= size:
        raise ProtocolError(f"{name} tensor has index {int(indices[-1])} outside its {size} elements")
    # chunks overlap by one element so every neighbouring pair is compared once
    for start in range(0, count - 1, _CHECK_CHUNK):
        window = indices[start : start + _CHECK_CHUNK + 1]
        if not np.all(window[1:] > window[:-1]):
            raise ProtocolError(f"{name} tensor's indices are not strictly increasing (near position {start})")


def decode_encoded(encoding: Encoding, shape: tuple[int, ...], count: int, storage: np.ndarray) -> EncodedTensor:
    """The encoded tensor whose bytes fill storage (a uint8 buffer of exactly its size), checked.
    Its parts are views of storage: nothing is copied."""
    elements = prod(shape)
    if not encoding.sparse:
        count = elements
    if storage.dtype != np.uint8 or storage.shape != (encoded_nbytes(encoding, elements, count),):
        raise ValueError(f"storage of {storage.dtype}{list(storage.shape)} does not hold a {encoding.label} tensor")
    offset = 0

    def take(dtype: str, items: int) -> np.ndarray:
        nonlocal offset
        part = storage[offset : offset + items * np.dtype(dtype).itemsize].view(dtype)
        offset += part.nbytes
        return part

    indices = take("<u4", count) if encoding.sparse else None
    scales = take("<f4", scale_blocks(count)) if encoding.quantized else None
    tensor = EncodedTensor(encoding, shape, take(_VALUE_DTYPES[encoding].str, count), scales, indices)
    check_encoded(tensor)
    return tensor


def all_finite(array: np.ndarray) -> bool:
    """No NaN or Inf, a chunk at a time: max is NaN if any value is, and +-Inf shows as the max or the
    min, so no mask is allocated (np.isfinite's was a fresh heap block per chunk, faulted in each time).
    The one NaN/Inf check of plain, encoded and decoded tensors alike."""
    flat = array.reshape(-1)
    for start in range(0, flat.size, FINITE_CHECK_CHUNK):
        part = flat[start : start + FINITE_CHECK_CHUNK]
        if not (math.isfinite(part.max()) and math.isfinite(part.min())):
            return False
    return True


def has_non_finite(tensor: EncodedTensor) -> bool:
    """Whether the tensor holds NaN or Inf (quantized encodings never do: their scales are checked)."""
    return not tensor.encoding.quantized and not all_finite(tensor.values)
