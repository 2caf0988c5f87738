"""The aggregation strategies on their own (edgefed.federation.strategies) and screening in the round
rules: what each does with 8 honest updates and 2 hostile ones."""

from __future__ import annotations

import numpy as np
import pytest

from edgefed.federation.rounds import RoundBook, RoundRules, Seat
from edgefed.federation.strategies import distance, krum_select, make_aggregator, trim_count
from edgefed.wire import specs_of

rng = np.random.default_rng(7)
GLOBAL = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
HONEST = [[(1.0 + 0.05 * rng.standard_normal(a.shape)).astype(np.float32) for a in GLOBAL] for _ in range(8)]
HOSTILE = [[np.full(a.shape, -100.0, np.float32) for a in GLOBAL] for _ in range(2)]


def combine(rule: str, updates: list[list[np.ndarray]], bound: float | None = None) -> list[np.ndarray]:
    aggregator = make_aggregator(rule, specs_of(GLOBAL), GLOBAL, 0.2, lambda: bound)
    for index, update in enumerate(updates):
        aggregator.add_scaled_in_place([a.copy() for a in update], 10, f"w{index}")
    return aggregator.average()


@pytest.mark.parametrize("rule", ["trimmed-mean", "median", "krum"])
def test_robust_rules_stay_near_the_honest_mean_under_two_of_ten_attackers(rule: str) -> None:
    result = combine(rule, HONEST + HOSTILE)
    honest_mean = combine("fedavg", HONEST)
    assert distance(result, honest_mean) < 0.2
    assert result[0].dtype == np.float32 and result[0].shape == (4, 3)


def test_fedavg_is_dragged_away_and_clip_bounds_the_damage() -> None:
    honest_mean = combine("fedavg", HONEST)
    assert distance(combine("fedavg", HONEST + HOSTILE), honest_mean) > 50
    typical = float(np.median([distance(u, GLOBAL) for u in HONEST]))
    clipped = combine("clip", HONEST + HOSTILE, bound=2 * typical)
    assert distance(clipped, honest_mean) < 2 * typical  # each hostile update moved at most 2x typical
    np.testing.assert_allclose(combine("clip", HONEST, bound=None)[0], honest_mean[0], rtol=1e-6)


def test_the_staging_buffers_are_not_kept_by_buffered_rules() -> None:
    aggregator = make_aggregator("median", specs_of(GLOBAL), GLOBAL, 0.2, lambda: None)
    staging = [a.copy() for a in HONEST[0]]
    aggregator.add_scaled_in_place(staging, 1, "w")
    staging[0][:] = 99  # the buffer is reused for the next upload
    assert aggregator.average()[0].max() < 2


def test_trim_and_krum_counts() -> None:
    assert trim_count(10, 0.2) == 2 and trim_count(3, 0.4) == 1 and trim_count(1, 0.4) == 0
    chosen = krum_select(HONEST + HOSTILE, 0.2)
    assert len(chosen) == 8 and not {8, 9} & set(chosen)


def test_screening_refuses_an_outlier_once_the_typical_distance_is_known() -> None:
    rules = RoundRules(5, aggregation="fedavg", screen_factor=4.0)
    book: RoundBook[Seat] = RoundBook(rules, "chief")
    book.begin([a.copy() for a in GLOBAL], 0, False)
    for index, update in enumerate(HONEST[:3]):
        assert book.fold(f"w{index}", 0, [a.copy() for a in update], 10, 1, distance(update, GLOBAL)) is None
    refusal = book.fold("evil", 0, [a.copy() for a in HOSTILE[0]], 10, 1, distance(HOSTILE[0], GLOBAL))
    assert refusal is not None and refusal.code == "outlier"
    assert book.fold("w3", 0, [a.copy() for a in HONEST[3]], 10, 1, distance(HONEST[3], GLOBAL)) is None


def test_buffered_rules_hold_a_bounded_number_of_updates() -> None:
    book: RoundBook[Seat] = RoundBook(RoundRules(5, aggregation="median", max_buffered_updates=2), "chief")
    book.begin([a.copy() for a in GLOBAL], 0, False)
    for index in range(2):
        assert book.fold(f"w{index}", 0, [a.copy() for a in HONEST[index]], 1, 1) is None
    refusal = book.fold("w2", 0, [a.copy() for a in HONEST[2]], 1, 1)
    assert refusal is not None and refusal.code == "busy"
