"""Exponential backoff with jitter, for anything that retries a peer (a worker joining, the ledger relay).

Pure: it computes delays and never sleeps, so the caller decides how to wait (a stop event, a
deadline) and tests can step it without a clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

JITTER = 0.2  # +-20 %: workers that lost the chief together do not all come back in the same instant


@dataclass
class Backoff:
    """Delays first, first*2, first*4, ... capped at `cap`, each spread by +-JITTER; reset() starts over."""

    first: float
    cap: float
    jitter: float = JITTER
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _current: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"backoff needs 0 < first ({self.first}) <= cap ({self.cap})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1): {self.jitter}")
        self._current = self.first

    @property
    def upcoming(self) -> float:
        """The undithered delay the next call to next_delay() is based on."""
        return self._current

    def next_delay(self) -> float:
        """The delay to wait now; the one after it doubles (up to the cap)."""
        delay = self._current * self.rng.uniform(1 - self.jitter, 1 + self.jitter)
        self._current = min(self._current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._current = self.first
