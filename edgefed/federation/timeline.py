"""Where a round's seconds go on the chief: a per-phase timeline, pure data, measured with
time.perf_counter by the chief's threads and handed back with each RoundResult.

Phases of round R (the round average() closes), in seconds:
- broadcast: sending round R+1's weights to every worker (wall time, on the training thread);
- turnaround: the longest time from the broadcast of round R's weights to a worker's round-R upload
  header (the worker's local training, plus its wait for the chief's receive path);
- slot_wait: summed over uploads, time a taken upload waited for a staging buffer;
- receive: summed over uploads, from its staging buffer to its last byte (uploads may overlap);
- validate: summed over uploads, the finite check and the distance from the global model;
- add: summed over uploads, folding them into the aggregator (under the chief's lock);
- gather: the training thread's wait for the missing updates after adding its own;
- average: combining the round (close_round);
- checkpoint: the training thread's wait for a durable checkpoint (0 when none was due or it trails);
- checkpoint_write, status: the background writes (a checkpoint, the status file) that finished
  since the previous round was taken — usually the previous round's, as they run while the next
  round trains; on the critical path only as far as checkpoint says (a final round's are awaited).
Uploads are keyed by the round they carry, so a fast worker's next-round upload lands in the next line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = (
    "broadcast", "turnaround", "slot_wait", "receive", "validate", "add", "gather", "average",
    "checkpoint", "checkpoint_write", "status",
)
MAX_PHASES_TRACKED = 4  # rounds measured at once; uploads for other rounds were refused by their header
MAX_PHASES = frozenset({"turnaround"})  # phases that keep their longest value, not the sum


class RoundTimeline:
    """Thread-safe: every chief thread adds seconds to a phase of a round; take() hands a round's
    phases to the training thread and forgets them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rounds: dict[int, dict[str, float]] = {}
        self._broadcast_at: dict[int, float] = {}  # perf_counter when round R's weights went out
        self._background: dict[str, float] = {}  # writes finished since the last take()

    def add(self, round_number: int, phase: str, seconds: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        with self._lock:
            phases = self._rounds.get(round_number)
            if phases is None:
                if len(self._rounds) >= MAX_PHASES_TRACKED:
                    del self._rounds[min(self._rounds)]
                phases = self._rounds[round_number] = {}
            seconds = max(seconds, 0.0)
            if phase in MAX_PHASES:
                phases[phase] = max(phases.get(phase, 0.0), seconds)
            else:
                phases[phase] = phases.get(phase, 0.0) + seconds

    def add_background(self, phase: str, seconds: float) -> None:
        """A background write finished: it goes into the next round taken."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        with self._lock:
            self._background[phase] = self._background.get(phase, 0.0) + max(seconds, 0.0)

    @contextmanager
    def span(self, round_number: int, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(round_number, phase, time.perf_counter() - started)

    def broadcast_done(self, round_number: int) -> None:
        """Round round_number's weights are out: the workers' turnaround starts now."""
        with self._lock:
            self._broadcast_at[round_number] = time.perf_counter()
            for old in [r for r in self._broadcast_at if r < round_number - MAX_PHASES_TRACKED]:
                del self._broadcast_at[old]

    def upload_started(self, round_number: int) -> None:
        """An accepted upload header for round_number arrived: record the worker's turnaround."""
        with self._lock:
            sent = self._broadcast_at.get(round_number)
        if sent is not None:
            self.add(round_number, "turnaround", time.perf_counter() - sent)

    def take(self, round_number: int) -> dict[str, float]:
        """The phases measured for round_number (rounded to 0.1 ms), every phase present."""
        with self._lock:
            phases = self._rounds.pop(round_number, {})
            for phase, seconds in self._background.items():
                phases[phase] = phases.get(phase, 0.0) + seconds
            self._background = {}
        return {phase: round(phases.get(phase, 0.0), 4) for phase in PHASES}
