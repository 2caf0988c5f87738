"""The one backoff helper: doubling, the cap, jitter bounds, reset and bad parameters."""

from __future__ import annotations

import random

import pytest

from edgefed.backoff import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(first=0.5, cap=3.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.upcoming == 0.5 and backoff.next_delay() == 0.5


def test_jitter_stays_within_its_band_and_varies() -> None:
    backoff = Backoff(first=1.0, cap=1.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(set(delays)) > 100  # spread, not one value


@pytest.mark.parametrize(
    ("first", "cap", "jitter"), [(0.0, 1.0, 0.1), (2.0, 1.0, 0.1), (1.0, 2.0, 1.0), (1.0, 2.0, -0.1)]
)
def test_bad_parameters_are_refused(first: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first=first, cap=cap, jitter=jitter)
