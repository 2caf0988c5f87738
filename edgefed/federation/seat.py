"""The chief's view of one connected worker: its seat in the round book, its connection and its upload."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefed.federation.readahead import ReadAhead
from edgefed.federation.rounds import Refusal, Seat
from edgefed.transport import Connection


@dataclass(eq=False, kw_only=True)
class WorkerSeat(Seat):
    """A seat plus the chief's connection to it and its upload in flight."""

    conn: Connection
    reject_reason: Refusal | None = None  # set by the allocator when an upload is refused before its data
    staging: list[np.ndarray] | None = field(default=None, repr=False)
    staged_at: float = 0.0  # perf_counter when the upload in flight got its staging buffer
    readahead: ReadAhead | None = field(default=None, repr=False)  # its upload while it waits for a buffer
