"""Differential privacy (edgefed.federation.dp): the noise is calibrated by Google's dp-accounting over
the planned rounds, each update is clipped then noised, the spent epsilon per round is the accountant's,
and a node refuses a target that cannot be met or a budget already spent."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

dp_accounting = pytest.importorskip("dp_accounting", reason="installed by `make setup` (mk/privacy.mk)")
from dp_accounting.rdp import rdp_privacy_accountant  # noqa: E402

from edgefed.config import ConfigError, config_from_dict  # noqa: E402
from edgefed.federation.dp import (  # noqa: E402
    BUDGET_FILE,
    DpPlan,
    PrivacyError,
    PrivateTrainer,
    plan_for,
    privatize,
)
from edgefed.trainers.softmax import SoftmaxTrainer  # noqa: E402


def epsilon_of(noise_multiplier: float, releases: int, delta: float) -> float:
    """The accountant asked directly: `releases` Gaussian mechanisms of this noise multiplier."""
    accountant = rdp_privacy_accountant.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, releases))
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("epsilon", "delta", "rounds"), [(1.0, 1e-5, 10), (8.0, 1e-6, 20), (300.0, 1e-5, 3)])
def test_the_noise_is_the_least_that_meets_the_target(epsilon: float, delta: float, rounds: int) -> None:
    plan = DpPlan.calibrate(epsilon, delta, 0.5, rounds)
    spent = epsilon_of(plan.noise_multiplier, rounds, delta)
    assert spent <= epsilon * (1 + 1e-6)
    assert spent == pytest.approx(epsilon, rel=1e-3)  # not more noise than needed
    assert epsilon_of(plan.noise_multiplier * 0.99, rounds, delta) > epsilon  # less noise would overspend
    assert plan.noise_std == pytest.approx(plan.noise_multiplier * 2 * 0.5)  # sensitivity of a clipped step: 2C
    # epsilon per round: what the accountant says for that many updates, growing to the target
    per_round = [plan.spent(r) for r in range(1, rounds + 1)]
    assert per_round == pytest.approx([epsilon_of(plan.noise_multiplier, r, delta) for r in range(1, rounds + 1)])
    assert all(a < b for a, b in itertools.pairwise(per_round))
    assert plan.spent(0) == 0.0


def test_a_target_that_cannot_be_met_is_refused_in_one_line() -> None:
    with pytest.raises(PrivacyError) as refused:
        DpPlan.calibrate(1e-4, 1e-10, 1.0, 1000)
    message = str(refused.value)
    assert "cannot be met" in message and "\n" not in message
    assert "raise dp_epsilon or dp_delta, or plan fewer rounds" in message
    with pytest.raises(PrivacyError, match="protects nothing"):
        DpPlan.calibrate(1e12, 0.5, 1.0, 1)


def test_config_keys_and_their_ranges() -> None:
    base = {"node": {"name": "w", "role": "worker"}}
    assert plan_for(config_from_dict(base).federation) is None  # off by default
    config = config_from_dict({**base, "federation": {"dp_epsilon": 4, "dp_delta": 1e-6, "dp_clip_norm": 2.0,
                                                      "rounds": 7}})
    plan = plan_for(config.federation)
    assert plan is not None and (plan.epsilon, plan.delta, plan.clip_norm, plan.rounds) == (4.0, 1e-6, 2.0, 7)
    for key, value, message in (("dp_epsilon", -1, "must be >= 0"), ("dp_delta", 1.0, "must be between 0 and 1"),
                                ("dp_clip_norm", 0, "must be > 0")):
        with pytest.raises(ConfigError, match=f"federation.{key}: {message}"):
            config_from_dict({**base, "federation": {key: value}})


def test_an_update_is_clipped_to_the_norm_then_noised() -> None:
    plan = DpPlan.calibrate(10.0, 1e-5, 1.5, 4)
    rng = np.random.default_rng(11)
    start = [rng.standard_normal((64, 10)).astype(np.float32), rng.standard_normal(10).astype(np.float32),
             np.array([7], np.int64)]
    trained = [start[0] + 0.5, start[1] - 0.25, np.array([9], np.int64)]
    step_norm = math.sqrt(640 * 0.25 + 10 * 0.0625)
    private, norm = privatize(trained, start, plan, np.random.default_rng(3))
    assert norm == pytest.approx(step_norm, rel=1e-5)
    # the same generator again gives the noise that was added: what remains is the clipped step
    replay = np.random.default_rng(3)
    noise = [replay.normal(0.0, plan.noise_std, t.shape) for t in start[:2]]
    clipped = [(p.astype(np.float64) - s - n) for p, s, n in zip(private[:2], start[:2], noise, strict=True)]
    assert math.sqrt(sum(float((c**2).sum()) for c in clipped)) == pytest.approx(1.5, rel=1e-3)
    assert clipped[0] == pytest.approx(np.full((64, 10), 0.5 * 1.5 / step_norm), abs=1e-4)
    assert [p.dtype for p in private] == [np.float32, np.float32, np.int64]
    assert private[2].tolist() == [7]  # integer tensors are not learned: the global value goes out
    # a step inside the bound is not scaled; the noise has the planned spread
    small = [start[0] + 1e-3, start[1], start[2]]
    private, _ = privatize(small, start, plan, np.random.default_rng(5))
    spread = (private[0].astype(np.float64) - start[0] - 1e-3).std()
    assert spread == pytest.approx(plan.noise_std, rel=0.1)


def test_a_private_trainer_counts_its_updates_and_stops_at_the_budget(tmp_path: Path) -> None:
    plan = DpPlan.calibrate(50.0, 1e-5, 1.0, 2)
    inner = SoftmaxTrainer(0.5, 32, 0)
    trainer = PrivateTrainer(inner, plan, tmp_path)
    initial = trainer.get_weights()  # before any global weights: the initial model, untouched
    assert all(np.array_equal(a, b) for a, b in zip(initial, inner.get_weights(), strict=True))
    assert trainer.releases == 0 and trainer.spent_epsilon == 0.0
    spent = []
    for _ in range(2):
        trainer.set_weights(initial)
        trainer.train_steps(5)
        update = trainer.get_weights()
        assert not all(np.array_equal(a, b) for a, b in zip(update, inner.get_weights(), strict=True))
        spent.append(trainer.spent_epsilon)
    assert spent == pytest.approx([epsilon_of(plan.noise_multiplier, r, 1e-5) for r in (1, 2)])
    assert spent[-1] == pytest.approx(50.0, rel=1e-3)
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["releases"] == 2
    trainer.set_weights(initial)
    with pytest.raises(PrivacyError, match="budget of 2 updates is spent"):
        trainer.get_weights()
    # a restarted node remembers what it spent
    with pytest.raises(PrivacyError, match="already sent 2 updates"):
        PrivateTrainer(SoftmaxTrainer(0.5, 32, 0), plan, tmp_path)
    (tmp_path / BUDGET_FILE).write_text('{"releases": "many"}')
    with pytest.raises(PrivacyError, match="'releases' must be a count"):
        PrivateTrainer(SoftmaxTrainer(0.5, 32, 0), plan, tmp_path)
