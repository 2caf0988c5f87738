"""The chief's staging buffers: where uploads are received, one upload per buffer, a bounded number.

The bound is either federation.max_concurrent_uploads (the default way) or, with
federation.chief_memory_mb set, what fits in that memory budget once the round's other model-sized
buffers are counted (staging_limit). Buffers are created when an upload first needs one and reused
afterwards, so a pool larger than the uploads that ever overlap costs nothing; an upload that finds
every buffer taken waits (its bytes wait in the kernel's socket buffers: TCP flow control), or, with
a budget, reads ahead into blocks of what the budget leaves after the whole buffers (readahead.py).
The counters (created, in_use, peak_in_use) are what tests and benchmarks observe.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from edgefed.config import FederationSection
from edgefed.errors import user_error
from edgefed.federation.running_mean import accumulator_dtype, folds_as_mean
from edgefed.wire import TensorSpec

MB = 1 << 20


@user_error
class MemoryBudgetError(ValueError):
    """federation.chief_memory_mb is too small for the model; the message says how much is needed."""


def held_model_bytes(specs: Sequence[TensorSpec], aggregation: str, max_buffered_updates: int) -> int:
    """Bytes the chief holds for a round besides its staging buffers: the global model and the
    aggregator's state. fedavg and clip: their accumulator as running_mean.py makes it (a float32
    running mean, one copy of the float32 tensors, once the model's float32 weights exceed
    EXACT_SUM_MAX_BYTES; a float64 sum, 8 bytes per element, for every other tensor and for smaller
    models). The other strategies: up to max_buffered_updates copies of the model."""
    model = sum(spec.nbytes for spec in specs)
    if aggregation in ("fedavg", "clip"):
        mean = folds_as_mean(sum(spec.nbytes for spec in specs if np.dtype(spec.dtype) == np.float32))
        state = sum(_elements(spec) * accumulator_dtype(spec.dtype, mean).itemsize for spec in specs)
    else:
        state = max_buffered_updates * model
    return model + state


def _elements(spec: TensorSpec) -> int:
    return spec.nbytes // max(np.dtype(spec.dtype).itemsize, 1)


def staging_limit(
    specs: Sequence[TensorSpec], federation: FederationSection, upload_specs: Sequence[TensorSpec] | None = None,
) -> int:
    """How many uploads the chief receives at once. Without a budget (chief_memory_mb 0):
    max_concurrent_uploads. With one: as many staging buffers as fit in chief_memory_mb after the
    global model and the aggregator's state; fewer than one is a configuration error. upload_specs:
    what one upload carries when it differs from the model (federation.compression: encoded bytes)."""
    memory_mb, aggregation = federation.chief_memory_mb, federation.aggregation
    if memory_mb <= 0:
        return federation.max_concurrent_uploads
    model = max(sum(spec.nbytes for spec in (specs if upload_specs is None else upload_specs)), 1)
    held = held_model_bytes(specs, aggregation, federation.max_buffered_updates)
    fits = (memory_mb * MB - held) // model
    if fits < 1:
        need = -(-(held + model) // MB)
        raise MemoryBudgetError(
            f"federation.chief_memory_mb = {memory_mb} is too small for this model ({model / MB:.1f} MB) with "
            f"{aggregation}: the global model, the aggregator and one staging buffer need {need} MB"
        )
    return int(fits)


def readahead_bytes(
    specs: Sequence[TensorSpec], federation: FederationSection, upload_specs: Sequence[TensorSpec] | None = None,
) -> int:
    """What is left of chief_memory_mb after the held state and the whole staging buffers: uploads
    waiting for a buffer read ahead into it (readahead.py). 0 without a budget."""
    if federation.chief_memory_mb <= 0:
        return 0
    model = max(sum(spec.nbytes for spec in (specs if upload_specs is None else upload_specs)), 1)
    held = held_model_bytes(specs, federation.aggregation, federation.max_buffered_updates)
    return max(federation.chief_memory_mb * MB - held - staging_limit(specs, federation, upload_specs) * model, 0)


def staging_pool(
    specs: Sequence[TensorSpec], federation: FederationSection, upload_specs: Sequence[TensorSpec],
    streams: bool = True,
) -> StagingPool:
    """The round's pool: staging_limit buffers of upload_specs and readahead_bytes beside them (none
    when the transport does not stream: a block smaller than its messages would cost a scratch copy)."""
    return StagingPool(upload_specs, staging_limit(specs, federation, upload_specs),
                       readahead_bytes(specs, federation, upload_specs) if streams else 0)


class StagingPool:
    """At most limit staging buffers in use at once; acquire() waits for a free one. Beside them,
    readahead bytes that uploads waiting for a buffer may hold in blocks (take())."""

    def __init__(self, specs: Sequence[TensorSpec], limit: int, readahead: int = 0) -> None:
        if limit < 1:
            raise ValueError("a staging pool needs at least one buffer")
        self.limit = limit
        self.readahead = readahead
        self._specs = list(specs)
        self._free: list[list[np.ndarray]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.created = 0  # buffers that exist (never more than limit)
        self.in_use = 0
        self.peak_in_use = 0  # the most held at once since the pool was made
        self.ahead = 0  # read-ahead bytes held now
        self.peak_ahead = 0
        self.waiting = 0  # uploads waiting for a buffer or a block now

    def acquire(self) -> list[np.ndarray] | None:
        """A staging buffer for one upload, or None once the pool is closed."""
        with self._cond:
            while not self._buffer_ready() and not self._closed:
                self._wait()
            return None if self._closed else self._take_buffer()

    def try_acquire(self) -> list[np.ndarray] | None:
        """A staging buffer if one is free now, else None (never waits)."""
        with self._cond:
            return self._take_buffer() if self._buffer_ready() and not self._closed else None

    def take(self, block_bytes: int) -> list[np.ndarray] | bytearray | None:
        """Whichever comes first: a staging buffer, or a read-ahead block of block_bytes within the
        read-ahead budget. None once the pool is closed."""
        with self._cond:
            while not self._closed:
                if self._buffer_ready():
                    return self._take_buffer()
                if self.ahead + block_bytes <= self.readahead:
                    self.ahead += block_bytes
                    self.peak_ahead = max(self.peak_ahead, self.ahead)
                    return bytearray(block_bytes)
                self._wait()
            return None

    def _wait(self) -> None:
        self.waiting += 1
        try:
            self._cond.wait()
        finally:
            self.waiting -= 1

    def give_back(self, block_bytes: int) -> None:
        """Read-ahead blocks of this many bytes were dropped."""
        with self._cond:
            self.ahead -= block_bytes
            self._cond.notify_all()

    def _buffer_ready(self) -> bool:
        return bool(self._free) or self.created < self.limit

    def _take_buffer(self) -> list[np.ndarray]:
        if self._free:
            buffers = self._free.pop()
        else:
            # spec.storage: the tensor itself, or the bytes of an encoded one (federation.compression)
            buffers = [np.empty(shape, np.dtype(dtype).newbyteorder("<"))
                       for dtype, shape in (spec.storage for spec in self._specs)]
            self.created += 1
        self.in_use += 1
        self.peak_in_use = max(self.peak_in_use, self.in_use)
        return buffers

    def release(self, buffers: list[np.ndarray]) -> None:
        with self._cond:
            self.in_use -= 1
            self._free.append(buffers)
            self._cond.notify_all()  # an acquire() or a take(): either may go on

    def close(self) -> None:
        """Wake every waiter (they get None): the chief is shutting down."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
