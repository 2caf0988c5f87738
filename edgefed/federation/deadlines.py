"""Upload deadlines: every upload in flight must finish within grace + size / min_rate seconds.

The clock starts when the upload gets its staging slot (or, reading ahead, when its header came) and
progress does not reset it (a socket timeout would restart on every byte, so a trickle could hold the
slot, and the round, for ever); it stops while the chief, not the worker, holds the upload back
(pause/resume: a read-ahead upload waiting for memory).
One thread watches all uploads and calls on_late for each that runs over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")


class UploadDeadlines(Generic[K]):
    def __init__(self, min_rate: int, grace: float, on_late: Callable[[K], None]) -> None:
        self.min_rate = min_rate
        self.grace = grace
        self._on_late = on_late
        self._deadlines: dict[K, float] = {}
        self._paused: dict[K, float] = {}  # seconds left when paused
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._watch, name="upload-deadlines", daemon=True)

    def allowed(self, nbytes: int) -> float:
        """Seconds an upload of nbytes may take."""
        return self.grace + nbytes / self.min_rate

    @property
    def too_slow(self) -> str:
        """Why a late upload's worker is dropped."""
        return f"upload too slow: not done within {self.grace:g}s + its size at {self.min_rate} B/s"

    def begin(self, key: K, nbytes: int) -> None:
        with self._cond:
            self._deadlines[key] = time.monotonic() + self.allowed(nbytes)
            self._cond.notify_all()

    def end(self, key: K) -> None:
        with self._cond:
            self._deadlines.pop(key, None)
            self._paused.pop(key, None)

    def pause(self, key: K) -> None:
        """Stop key's clock, keeping the time it has left (nothing if it has none running)."""
        with self._cond:
            deadline = self._deadlines.pop(key, None)
            if deadline is not None:
                self._paused[key] = deadline - time.monotonic()

    def resume(self, key: K) -> None:
        """Run key's clock again with the time it had left when paused."""
        with self._cond:
            left = self._paused.pop(key, None)
            if left is not None:
                self._deadlines[key] = time.monotonic() + left
                self._cond.notify_all()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                now = time.monotonic()
                late = [key for key, deadline in self._deadlines.items() if deadline <= now]
                if not late:
                    upcoming = min(self._deadlines.values(), default=now + 1.0)
                    self._cond.wait(max(0.01, min(upcoming - now, 1.0)))
                    continue
                for key in late:
                    del self._deadlines[key]
            for key in late:
                self._on_late(key)
