"""Tensor-list payloads: a small header of dtypes and shapes, then the raw bytes of each tensor."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from edgefed.wire.encodings import (
    ENCODING_CODES,
    EncodedStream,
    EncodedTensor,
    Encoding,
    check_sparse_count,
    decode_encoded,
    encoded_nbytes,
)
from edgefed.wire.errors import ProtocolError
from edgefed.wire.frame import (
    HEADER_SIZE,
    MAX_SAMPLES,
    Flags,
    FrameHeader,
    Limits,
    MessageType,
    PayloadKind,
    encode_header,
    payload_kind,
)

# Codes are part of the wire format: never renumber.
_DTYPE_CODES: dict[str, int] = {
    "float16": 1,
    "float32": 2,
    "float64": 3,
    "int8": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "uint8": 8,
    "bfloat16": 9,
}
_CODE_DTYPES = {code: name for name, code in _DTYPE_CODES.items()}
ALLOWED_DTYPES = frozenset(name for name in _DTYPE_CODES if name != "bfloat16")

_PREFIX = struct.Struct("!IQI")  # tensor count, sample count, spec block length
_SPEC_HEAD = struct.Struct("!BB")  # dtype code, ndim
_DIM = struct.Struct("!Q")
_COUNT = struct.Struct("!Q")  # after the shape of a sparse encoded tensor: the values it keeps

# A tensor in a list to send: a plain array, or an encoded one (edgefed/wire/encodings.py).
Tensor = np.ndarray | EncodedTensor


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's dtype and shape; for an encoded tensor also its encoding (dtype float32, the type it
    decodes to) and, if sparse, the count of values it keeps. Plain specs compare as before."""

    dtype: str
    shape: tuple[int, ...]
    encoding: Encoding | None = None
    count: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes on the wire."""
        if self.encoding is not None:
            return encoded_nbytes(self.encoding, prod(self.shape), self.count)
        return prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def storage(self) -> tuple[str, tuple[int, ...]]:
        """(dtype, shape) of the array the reader fills: the tensor itself, or its encoded bytes."""
        return ("uint8", (self.nbytes,)) if self.encoding is not None else (self.dtype, self.shape)

    def __str__(self) -> str:
        if self.encoding is None:
            return f"{self.dtype}{list(self.shape)}"
        kept = f" keeping {self.count}" if self.encoding.sparse else ""
        return f"{self.encoding.label}{list(self.shape)}{kept}"


def spec_of(tensor: Tensor) -> TensorSpec:
    shape = tuple(int(d) for d in tensor.shape)
    if isinstance(tensor, EncodedTensor):
        return TensorSpec("float32", shape, tensor.encoding, tensor.count if tensor.encoding.sparse else 0)
    return TensorSpec(str(tensor.dtype), shape)


def specs_of(tensors: Sequence[Tensor]) -> list[TensorSpec]:
    return [spec_of(t) for t in tensors]


def little_endian_contiguous(array: np.ndarray) -> np.ndarray:
    if array.dtype.name not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {array.dtype} cannot travel on the wire (allowed: {sorted(ALLOWED_DTYPES)})")
    little = np.asarray(array, dtype=array.dtype.newbyteorder("<"))
    # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
    return little if little.flags.c_contiguous else little.copy(order="C")


def encode_tensor_header(tensors: Sequence[Tensor | EncodedStream], num_samples: int) -> bytes:
    if not 0 <= num_samples <= MAX_SAMPLES:
        raise ValueError(f"num_samples must be from 0 to {MAX_SAMPLES}, got {num_samples}")
    specs = bytearray()
    for tensor in tensors:
        if isinstance(tensor, np.ndarray):
            code, count = _DTYPE_CODES[tensor.dtype.name], None
        else:
            code, count = int(tensor.encoding), tensor.count if tensor.encoding.sparse else None
        specs += _SPEC_HEAD.pack(code, len(tensor.shape))
        for dim in tensor.shape:
            specs += _DIM.pack(dim)
        if count is not None:
            specs += _COUNT.pack(count)
    return _PREFIX.pack(len(tensors), num_samples, len(specs)) + bytes(specs)


def encode_tensor_frame(
    message_type: MessageType,
    round_: int,
    arrays: Sequence[Tensor],
    num_samples: int,
    flags: Flags = Flags.NONE,
) -> list[bytes | memoryview]:
    """Frame a tensor list (plain arrays and encoded tensors) as buffers for sendall; array bytes are
    not copied when already contiguous and little-endian."""
    if payload_kind(message_type) is not PayloadKind.TENSORS:
        raise ValueError(f"{message_type.name} does not carry tensors")
    prepared: list[Tensor] = [t if isinstance(t, EncodedTensor) else little_endian_contiguous(t) for t in arrays]
    tensor_header = encode_tensor_header(prepared, num_samples)
    data: list[np.ndarray] = []
    for tensor in prepared:
        data.extend(tensor.parts() if isinstance(tensor, EncodedTensor) else [tensor])
    length = len(tensor_header) + sum(a.nbytes for a in data)
    frame_header = encode_header(FrameHeader(message_type, round_, length, flags))
    parts: list[bytes | memoryview] = [frame_header + tensor_header]
    parts.extend(memoryview(a).cast("B") for a in data if a.nbytes)  # type: ignore[arg-type]
    return parts


def prefix_size() -> int:
    return _PREFIX.size


def decode_tensor_prefix(data: bytes | memoryview, limits: Limits) -> tuple[int, int, int]:
    """(tensor count, sample count, spec block length) from the fixed prefix."""
    count, num_samples, spec_len = _PREFIX.unpack(data)
    if num_samples > limits.max_samples:
        raise ProtocolError(f"tensor list claims {num_samples} samples, over the limit of {limits.max_samples}")
    if count > limits.max_tensors:
        raise ProtocolError(f"tensor list has {count} tensors, over the limit of {limits.max_tensors}")
    max_spec = count * (_SPEC_HEAD.size + limits.max_ndim * _DIM.size + _COUNT.size)
    if spec_len > max_spec:
        raise ProtocolError(f"tensor spec block of {spec_len} bytes is too long for {count} tensors")
    return count, num_samples, spec_len


def decode_tensor_specs(data: bytes | memoryview, count: int, limits: Limits) -> list[TensorSpec]:
    specs: list[TensorSpec] = []
    offset = 0
    for index in range(count):
        if offset + _SPEC_HEAD.size > len(data):
            raise ProtocolError(f"tensor spec block ends inside tensor {index}")
        code, ndim = _SPEC_HEAD.unpack_from(data, offset)
        offset += _SPEC_HEAD.size
        encoding = ENCODING_CODES.get(code)
        dtype = "float32" if encoding is not None else _CODE_DTYPES.get(code)
        if dtype is None or dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"tensor {index} has dtype code {code}, which is not allowed")
        if ndim > limits.max_ndim:
            raise ProtocolError(f"tensor {index} has {ndim} dimensions, over the limit of {limits.max_ndim}")
        if offset + ndim * _DIM.size > len(data):
            raise ProtocolError(f"tensor spec block ends inside the shape of tensor {index}")
        shape = tuple(_DIM.unpack_from(data, offset + i * _DIM.size)[0] for i in range(ndim))
        offset += ndim * _DIM.size
        if any(dim > limits.max_frame_bytes for dim in shape):
            raise ProtocolError(f"tensor {index} has a dimension over the frame limit: {shape}")
        # A zero dimension makes the byte count 0 and so passes the payload length check, yet numpy
        # still multiplies the other dimensions (and fails past the address space): bound them too.
        elements = prod(max(dim, 1) for dim in shape)
        if elements * np.dtype(dtype).itemsize > limits.max_frame_bytes:
            raise ProtocolError(
                f"tensor {index} of shape {list(shape)} spans {elements} elements, over the frame limit "
                f"of {limits.max_frame_bytes} bytes"
            )
        count = 0
        if encoding is not None:
            if encoding.sparse:
                if offset + _COUNT.size > len(data):
                    raise ProtocolError(f"tensor spec block ends inside the count of tensor {index}")
                count = _COUNT.unpack_from(data, offset)[0]
                offset += _COUNT.size
            try:
                check_sparse_count(encoding, shape, count)
            except ProtocolError as exc:
                raise ProtocolError(f"tensor {index}: {exc}") from None
        spec = TensorSpec(dtype, shape, encoding, count)
        if spec.nbytes > limits.max_frame_bytes:
            raise ProtocolError(f"tensor {index} ({spec}) is over the frame limit of {limits.max_frame_bytes} bytes")
        specs.append(spec)
    if offset != len(data):
        raise ProtocolError(f"tensor spec block has {len(data) - offset} trailing bytes")
    return specs


def decode_tensor_header(
    data: bytes | memoryview, payload_length: int, limits: Limits
) -> tuple[int, list[TensorSpec], int]:
    """Parse a whole tensor header held in memory: (sample count, specs, header length)."""
    if len(data) < _PREFIX.size:
        raise ProtocolError("tensor payload shorter than its prefix")
    count, num_samples, spec_len = decode_tensor_prefix(memoryview(data)[: _PREFIX.size], limits)
    end = _PREFIX.size + spec_len
    if len(data) < end:
        raise ProtocolError("tensor payload ends inside its spec block")
    specs = decode_tensor_specs(memoryview(data)[_PREFIX.size : end], count, limits)
    check_payload_length(specs, end, payload_length)
    return num_samples, specs, end


def check_payload_length(specs: Sequence[TensorSpec], header_length: int, payload_length: int) -> None:
    expected = header_length + sum(spec.nbytes for spec in specs)
    if expected != payload_length:
        raise ProtocolError(
            f"tensor payload length {payload_length} does not match its header "
            f"({header_length} header bytes + {expected - header_length} tensor bytes)"
        )


def decode_tensor(spec: TensorSpec, stored: np.ndarray) -> Tensor:
    """What a received tensor means: the array itself, or its encoding checked (ProtocolError)."""
    if spec.encoding is None:
        return stored
    return decode_encoded(spec.encoding, spec.shape, spec.count, stored)


def payload_sha256(parts: Sequence[bytes | memoryview]) -> str:
    """sha256 of a frame's payload, from the buffers an encoder returned (the frame header excluded)."""
    digest = hashlib.sha256()
    digest.update(memoryview(parts[0])[HEADER_SIZE:])
    for part in parts[1:]:
        digest.update(part)
    return digest.hexdigest()
