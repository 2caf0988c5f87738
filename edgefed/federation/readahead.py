"""An upload that reads ahead while it waits for a staging buffer (federation.chief_memory_mb).

With every staging buffer taken, an upload's bytes used to wait in the kernel (TCP flow control)
until one freed, so uploads were received one after another. An upload that finds none free now
receives into blocks of at most BLOCK bytes from the pool's read-ahead budget (what chief_memory_mb
leaves after the whole buffers), and when a buffer frees its blocks are copied into it and the rest
lands there directly. Nothing is folded before the whole upload is in a buffer and checked, so an
upload that fails half-way costs only its own blocks (given back), never the round's mean; the mean
sees the same arrays, folded by the same code, as without read-ahead.

The connection's thread waits in view() for a buffer or a block, never holding anything another
upload needs to finish: an upload in a buffer always completes or fails on its own deadline. A
read-ahead upload's deadline runs from its header, so a staller cannot keep its blocks either; the
clock stops while it waits for memory (hold_back: not the worker's fault).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgefed.federation.staging import StagingPool
from edgefed.wire import TensorSpec

BLOCK = 1 << 20  # read-ahead granularity: a waiting upload holds at most one partly filled block more


class PoolClosed(RuntimeError):
    """The chief is shutting down while this upload waited for memory."""


class ReadAhead:
    """One upload's Destination (edgefed.wire): blocks until it gets a staging buffer, then the buffer."""

    def __init__(self, pool: StagingPool, specs: list[TensorSpec], on_staged: Callable[[list[np.ndarray]], None],
                 hold_back: Callable[[bool], None] = lambda _waiting: None) -> None:
        self._pool, self._specs, self._on_staged, self._hold_back = pool, specs, on_staged, hold_back
        self.total = sum(spec.nbytes for spec in specs)
        self._blocks: list[bytearray] = []
        self._buffers: list[np.ndarray] | None = None
        self._views: list[memoryview] = []
        self._starts: list[int] = []  # each view's first data byte

    @property
    def staged(self) -> bool:
        return self._buffers is not None

    def view(self, offset: int) -> memoryview:
        if self._buffers is None and (buffers := self._pool.try_acquire()) is not None:
            self._stage(buffers, offset)  # a buffer is free: no read-ahead needed (or no more)
        if self._buffers is not None:
            return self._buffer_view(offset)
        index = offset // BLOCK
        while index >= len(self._blocks):  # room for the next bytes: a buffer, or one more block
            self._hold_back(True)
            try:
                got = self._pool.take(min(BLOCK, self.total - len(self._blocks) * BLOCK))
            finally:
                self._hold_back(False)
            if got is None:
                raise PoolClosed("the chief is closing")
            if isinstance(got, list):
                self._stage(got, offset)
                return self._buffer_view(offset)
            self._blocks.append(got)
        return memoryview(self._blocks[index])[offset - index * BLOCK :]

    def complete(self) -> list[np.ndarray]:
        """Every byte has come: the upload's arrays (waiting for a buffer if it read ahead to the end)."""
        if self._buffers is None:
            self._hold_back(True)
            try:
                buffers = self._pool.acquire()
            finally:
                self._hold_back(False)
            if buffers is None:
                raise PoolClosed("the chief is closing")
            self._stage(buffers, self.total)
        assert self._buffers is not None
        return self._buffers

    def abandon(self) -> None:
        """The upload failed before it got a buffer: its blocks go back to the budget."""
        held, self._blocks = sum(len(block) for block in self._blocks), []
        if held:
            self._pool.give_back(held)

    def _stage(self, buffers: list[np.ndarray], filled: int) -> None:
        """Move the filled bytes from the blocks into buffers; from now on data lands there."""
        self._buffers = buffers
        start = 0
        for array in buffers:
            if array.nbytes:
                self._views.append(memoryview(array).cast("B"))  # type: ignore[arg-type]
                self._starts.append(start)
                start += array.nbytes
        for index, block in enumerate(self._blocks):
            first = index * BLOCK
            self._write(first, memoryview(block)[: max(min(len(block), filled - first), 0)])
        self.abandon()
        self._on_staged(buffers)

    def _write(self, offset: int, data: memoryview) -> None:
        while data:
            target = self._buffer_view(offset)
            count = min(len(target), len(data))
            target[:count] = data[:count]
            offset, data = offset + count, data[count:]

    def _buffer_view(self, offset: int) -> memoryview:
        index = max(i for i, start in enumerate(self._starts) if start <= offset)
        return self._views[index][offset - self._starts[index] :]
