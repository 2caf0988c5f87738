"""Incremental frame reader: a state machine that hands out buffers to fill and returns whole frames.

The caller owns the I/O::

    reader = FrameReader(limits)
    while (frame := reader.advance(sock.recv_into(reader.buffer()))) is None: ...

Tensor data lands directly in arrays chosen by an allocator (preallocated staging buffers on the
chief), so a large payload is never assembled from chunks; or the allocator returns a Destination
that says where each next bytes go and hands over the arrays at the end (the chief's read-ahead).

Memory before trust: nothing is allocated for a tensor until the frame header, the tensor prefix and
every spec have passed the limits and the declared sizes add up to the frame's length exactly; then
the allocator decides (arrays, None to discard, or ProtocolError to refuse). Control and raw payloads
get memory as their bytes arrive (doubling from 64 KiB), not what the header declares.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgefed.wire.errors import ProtocolError
from edgefed.wire.frame import (
    HEADER_SIZE,
    Flags,
    FrameHeader,
    Limits,
    MessageType,
    PayloadKind,
    decode_control,
    decode_header,
    payload_kind,
)
from edgefed.wire.tensors import (
    Tensor,
    TensorSpec,
    check_payload_length,
    decode_tensor,
    decode_tensor_prefix,
    decode_tensor_specs,
    prefix_size,
)


class Destination(Protocol):
    """Tensor data that need not land in its final arrays from the first byte (the chief's read-ahead):
    the reader asks where the data bytes from offset go, and at the frame's end for the arrays."""

    def view(self, offset: int) -> memoryview:
        """Writable, non-empty, at most the data bytes left after offset; the same place for the same offset."""
        ...

    def complete(self) -> list[np.ndarray]:
        """Every data byte has been written: the filled arrays (one per spec's storage)."""
        ...


# Given the frame header, the sample count and the specs, return arrays to fill (matching each spec's
# storage: the tensor, or a uint8 buffer for an encoded one), a Destination, or None to discard the
# tensor bytes (the caller has decided to reject the frame).
Allocator = Callable[[FrameHeader, int, list[TensorSpec]], "list[np.ndarray] | Destination | None"]

_DISCARD_CHUNK = 1 << 16
_PAYLOAD_FIRST_CHUNK = 1 << 16


def allocate_fresh(_header: FrameHeader, _num_samples: int, specs: list[TensorSpec]) -> list[np.ndarray]:
    return [np.empty(shape, dtype=np.dtype(dtype).newbyteorder("<")) for dtype, shape in (s.storage for s in specs)]


def refuse_tensors(header: FrameHeader, _num_samples: int, _specs: list[TensorSpec]) -> list[np.ndarray]:
    """An allocator for when no tensor frame may come (e.g. before HELLO): refuse it before its data."""
    raise ProtocolError(f"{header.type.name} is not expected here (no tensor frame is accepted now)")


@dataclass
class Frame:
    header: FrameHeader
    body: dict[str, Any] = field(default_factory=dict)
    tensors: list[np.ndarray] | None = None  # the arrays the allocator gave, filled
    decoded: list[Tensor] | None = None  # what they mean: each array, or its checked EncodedTensor
    specs: list[TensorSpec] = field(default_factory=list)
    num_samples: int = 0
    raw: bytes = b""
    sha256: str = ""
    discarded: bool = False

    @property
    def type(self) -> MessageType:
        return self.header.type

    @property
    def round(self) -> int:
        return self.header.round

    @property
    def flags(self) -> Flags:
        return self.header.flags

    @property
    def wire_bytes(self) -> int:
        return HEADER_SIZE + self.header.length


class _State(enum.Enum):
    HEADER = 1
    PAYLOAD = 2  # control or raw payload into one bytearray
    TENSOR_PREFIX = 3
    TENSOR_SPECS = 4
    TENSOR_DATA = 5


class FrameReader:
    def __init__(
        self, limits: Limits | None = None, allocator: Allocator = allocate_fresh, hash_payloads: bool = True
    ) -> None:
        self.limits = limits or Limits()
        self.allocator = allocator
        self.hash_payloads = hash_payloads  # may change between frames
        self._scratch = bytearray(_DISCARD_CHUNK)
        self._start_frame()

    # -- public API -------------------------------------------------------------------------------
    @property
    def at_frame_boundary(self) -> bool:
        return self._state is _State.HEADER and self._pos == 0

    def buffer(self) -> memoryview:
        """The writable buffer to fill next; never empty."""
        if self._state is _State.TENSOR_DATA and self._dest is not None:
            self._dest_view = self._dest.view(self._data_pos)
            return self._dest_view
        if self._state is _State.TENSOR_DATA and self._views is None:
            remaining = self._discard_left
            return memoryview(self._scratch)[: min(remaining, len(self._scratch))]
        return self._target[self._pos :]

    def advance(self, nbytes: int) -> Frame | None:
        """Account for nbytes written into the last buffer(); return a frame once one is complete."""
        if nbytes <= 0:
            raise ValueError("advance() needs a positive byte count; 0 from recv means the peer closed")
        if self._state is _State.TENSOR_DATA and self._dest is not None:
            if self._hasher is not None:
                self._hasher.update(self._dest_view[:nbytes])
            self._data_pos += nbytes
            return self._step() if self._data_pos >= self._data_total else None
        if self._state is _State.TENSOR_DATA and self._views is None:
            if self._hasher is not None:
                self._hasher.update(self.buffer()[:nbytes])
            self._discard_left -= nbytes
            return self._step() if self._discard_left == 0 else None
        self._pos += nbytes
        if self._pos < len(self._target):
            return None
        if self._state is _State.PAYLOAD and self._grow_payload():
            return None
        if self._state is not _State.HEADER and self._hasher is not None:
            # one call per finished piece (a whole tensor), not per TLS record: far less overhead
            self._hasher.update(self._target)
        return self._step()

    def feed(self, data: bytes | memoryview) -> list[Frame]:
        """Copy-in convenience for tests and fuzzing: consume all of data, return completed frames."""
        frames: list[Frame] = []
        view = memoryview(data)
        while view:
            target = self.buffer()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            view = view[n:]
            frame = self.advance(n)
            if frame is not None:
                frames.append(frame)
        return frames

    # -- state machine ----------------------------------------------------------------------------
    def _start_frame(self) -> None:
        self._state = _State.HEADER
        self._target: memoryview = memoryview(bytearray(HEADER_SIZE))
        self._pos = 0
        self._header: FrameHeader | None = None
        self._hasher: Any = None
        self._views: list[memoryview] | None = []
        self._arrays: list[np.ndarray] | None = None
        self._specs: list[TensorSpec] = []
        self._view_index = 0
        self._num_samples = 0
        self._count = 0
        self._discard_left = 0
        self._dest: Destination | None = None
        self._dest_view = memoryview(b"")
        self._data_pos: int = 0
        self._data_total: int = 0

    def _set_target(self, state: _State, size: int) -> None:
        self._state = state
        self._target = memoryview(bytearray(size))
        self._pos = 0

    def _step(self) -> Frame | None:
        """The current piece is complete: move on, possibly through several empty pieces."""
        while True:
            if self._state is _State.HEADER:
                self._header = decode_header(self._target, self.limits)
                self._hasher = hashlib.sha256() if self.hash_payloads else None
                kind = payload_kind(self._header.type)
                if kind is PayloadKind.TENSORS:
                    if self._header.length < prefix_size():
                        raise ProtocolError(
                            f"{self._header.type.name} payload of {self._header.length} bytes "
                            "is shorter than a tensor header"
                        )
                    self._set_target(_State.TENSOR_PREFIX, prefix_size())
                else:
                    self._set_target(_State.PAYLOAD, min(self._header.length, _PAYLOAD_FIRST_CHUNK))
            elif self._state is _State.PAYLOAD:
                return self._finish_payload()
            elif self._state is _State.TENSOR_PREFIX:
                count, num_samples, spec_len = decode_tensor_prefix(self._target, self.limits)
                length = self._header.length if self._header is not None else 0
                if prefix_size() + spec_len > length:
                    raise ProtocolError(f"tensor spec block of {spec_len} bytes overruns the {length}-byte payload")
                self._count, self._num_samples = count, num_samples
                self._set_target(_State.TENSOR_SPECS, spec_len)
            elif self._state is _State.TENSOR_SPECS:
                self._begin_tensor_data()
            elif self._state is _State.TENSOR_DATA:
                if self._dest is not None:
                    return self._finish_tensors() if self._data_pos >= self._data_total else None
                if self._views is None:
                    if self._discard_left == 0:
                        return self._finish_tensors()
                    return None
                if self._view_index < len(self._views) and self._pos >= len(self._target):
                    self._view_index += 1
                    self._pos = 0
                if self._view_index >= len(self._views):
                    return self._finish_tensors()
                self._target = self._views[self._view_index]
            if self._pos < len(self._target):
                return None

    def _grow_payload(self) -> bool:
        """The payload buffer is full: if the frame declares more, double it (keeping what came)."""
        assert self._header is not None
        held = len(self._target)
        if held >= self._header.length:
            return False
        grown = bytearray(min(self._header.length, 2 * held))
        grown[:held] = self._target
        self._target = memoryview(grown)
        return True

    def _begin_tensor_data(self) -> None:
        assert self._header is not None
        specs = decode_tensor_specs(self._target, self._count, self.limits)
        header_length = prefix_size() + len(self._target)
        check_payload_length(specs, header_length, self._header.length)
        self._specs = specs
        arrays = self.allocator(self._header, self._num_samples, specs)
        self._state = _State.TENSOR_DATA
        self._pos = 0
        if arrays is None:
            self._views = None
            self._discard_left = sum(spec.nbytes for spec in specs)
            return
        if not isinstance(arrays, list):  # filled through views, the arrays come at the end
            self._dest, self._data_total = arrays, sum(spec.nbytes for spec in specs)
            self._target = memoryview(b"")
            return
        self._arrays = _checked(arrays, specs)
        self._views = [memoryview(a).cast("B") for a in arrays if a.nbytes]  # type: ignore[arg-type]
        self._view_index = 0
        self._target = self._views[0] if self._views else memoryview(b"")

    def _finish_payload(self) -> Frame:
        assert self._header is not None
        header, payload = self._header, bytes(self._target)
        digest = self._hasher.hexdigest() if self._hasher is not None else ""
        self._start_frame()
        if payload_kind(header.type) is PayloadKind.RAW:
            return Frame(header, raw=payload, sha256=digest)
        return Frame(header, body=decode_control(payload, header.type, self.limits), sha256=digest)

    def _finish_tensors(self) -> Frame:
        assert self._header is not None
        if self._dest is not None:
            self._arrays = _checked(self._dest.complete(), self._specs)
        decoded: list[Tensor] | None = None
        if self._arrays is not None:  # encoded tensors are checked before anyone sees the frame
            decoded = [decode_tensor(spec, array) for spec, array in zip(self._specs, self._arrays, strict=True)]
        frame = Frame(
            self._header,
            tensors=self._arrays,
            decoded=decoded,
            specs=self._specs,
            num_samples=self._num_samples,
            sha256=self._hasher.hexdigest() if self._hasher is not None else "",
            discarded=self._arrays is None,
        )
        self._start_frame()
        return frame


def _checked(arrays: list[np.ndarray], specs: list[TensorSpec]) -> list[np.ndarray]:
    for array, spec in zip(arrays, specs, strict=True):
        dtype, shape = spec.storage
        if array.shape != shape or array.dtype.name != dtype or not array.flags.c_contiguous:
            raise ValueError(f"allocator returned {array.dtype}{list(array.shape)} for {spec}")
    return arrays
