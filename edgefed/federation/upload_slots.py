"""Whether the chief takes an upload, decided from its tensor header, and the staging slot it gets.

Split out of chief.py: the slot is reserved before the data arrives and released after the update
was folded (or refused); the upload's deadline (UploadDeadlines) runs while the slot is held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edgefed.config import FederationSection
from edgefed.federation.deadlines import UploadDeadlines
from edgefed.federation.readahead import ReadAhead
from edgefed.federation.rounds import Refusal, RoundBook
from edgefed.federation.seat import WorkerSeat
from edgefed.federation.staging import StagingPool
from edgefed.federation.timeline import RoundTimeline
from edgefed.wire import FrameHeader, MessageType, ReasonCode, TensorSpec


class UploadSlots:
    def __init__(self, federation: FederationSection, cond: threading.Condition, book: RoundBook[WorkerSeat],
                 timeline: RoundTimeline, pool: Callable[[], StagingPool | None],
                 drop: Callable[[WorkerSeat, str], None]) -> None:
        self._cond, self._book, self._timeline, self._pool, self._drop = cond, book, timeline, pool, drop
        self.deadlines: UploadDeadlines[WorkerSeat] = UploadDeadlines(
            federation.min_upload_rate, federation.upload_grace, self._too_slow
        )

    def release(self, worker: WorkerSeat) -> None:
        self.deadlines.end(worker)
        ahead, worker.readahead = worker.readahead, None
        if ahead is not None:
            ahead.abandon()  # blocks of an upload that never got a buffer
        staging, worker.staging = worker.staging, None
        pool = self._pool()
        if staging is not None and pool is not None:
            pool.release(staging)

    def allocate(
        self, worker: WorkerSeat, header: FrameHeader, num_samples: int, specs: list[TensorSpec]
    ) -> list[np.ndarray] | ReadAhead | None:
        """Decide from the tensor header alone whether to take the upload; reserve a staging slot
        (or, with a read-ahead budget, let it read ahead until one frees)."""
        worker.reject_reason = None
        if header.type is not MessageType.UPDATE:
            worker.reject_reason = Refusal(ReasonCode.PROTOCOL_ERROR,
                                           f"{header.type.name} cannot carry tensors from a worker")
            return None
        with self._cond:
            worker.reject_reason = self._book.header_refusal(header.round, specs, num_samples)
        pool = self._pool()
        if worker.reject_reason is not None or pool is None:
            return None
        self._timeline.upload_started(header.round)
        waited, size = time.perf_counter(), sum(spec.nbytes for spec in specs)

        def staged(buffers: list[np.ndarray] | None) -> None:
            worker.staging, worker.staged_at = buffers, time.perf_counter()
            self._timeline.add(header.round, "slot_wait", worker.staged_at - waited)

        def hold_back(waiting: bool) -> None:
            (self.deadlines.pause if waiting else self.deadlines.resume)(worker)

        if pool.readahead > 0:  # reading ahead from now: the clock runs except while it waits for memory
            self.deadlines.begin(worker, size)
            worker.readahead = ReadAhead(pool, specs, staged, hold_back)
            return worker.readahead
        staged(pool.acquire())
        # The clock starts once the slot is ours (waiting for it is not the worker's fault).
        self.deadlines.begin(worker, size)
        return worker.staging

    def _too_slow(self, worker: WorkerSeat) -> None:
        self._drop(worker, self.deadlines.too_slow)
