"""Differential privacy at each participant (federation.dp_epsilon, dp_delta, dp_clip_norm; docs/privacy.md).

Every update a node sends (a worker's upload; the chief's own contribution to the average) is its
step from the global weights it was given, clipped to L2 norm C = dp_clip_norm, plus Gaussian noise of
standard deviation sigma * 2C on every coordinate, before it leaves the node. Two clipped steps differ
by at most 2C, so each upload is a Gaussian mechanism of noise multiplier sigma over *everything* the
node trained on; `federation.rounds` uploads compose. sigma is the smallest value for which Google's
`dp-accounting` (RDP accountant) puts the composition of all planned rounds at (dp_epsilon, dp_delta).
The node counts its uploads in STATE_DIR/dp-budget.json and sends none beyond the plan, across restarts.

This protects against whoever sees an update — the chief included — and, by post-processing, the
global models, the exported files and the ledger's digests. It does not need the chief's honesty.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefed.errors import user_error
from edgefed.fsutil import atomic_write_json
from edgefed.trainers.base import Trainer

MIN_NOISE_MULTIPLIER = 1e-3  # below this the noise is nothing: a target that needs less is "no privacy"
MAX_NOISE_MULTIPLIER = 1000.0  # above this every update is noise: a target that needs more cannot be met
BUDGET_FILE = "dp-budget.json"


@user_error
class PrivacyError(RuntimeError):
    """The privacy target cannot be met, or this node's budget is spent; the message says which."""


def _accountant() -> Any:
    try:
        from dp_accounting.rdp import rdp_privacy_accountant
    except ImportError:
        raise PrivacyError(
            "federation.dp_epsilon needs the dp-accounting package: `make setup` or pip install 'edgefed[privacy]'"
        ) from None
    return rdp_privacy_accountant.RdpAccountant


def _rounds_event(noise_multiplier: float, rounds: int) -> Any:
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)


@dataclass(frozen=True)
class DpPlan:
    """How much noise every update carries so that `rounds` of them spend at most (epsilon, delta)."""

    epsilon: float
    delta: float
    clip_norm: float
    rounds: int
    noise_multiplier: float

    @property
    def noise_std(self) -> float:
        """Per coordinate: sigma times the sensitivity 2C of one clipped step."""
        return self.noise_multiplier * 2.0 * self.clip_norm

    def spent(self, releases: int) -> float:
        """The epsilon (at delta) that `releases` updates of this plan have spent, from the accountant."""
        if releases <= 0:
            return 0.0
        accountant = _accountant()()
        accountant.compose(_rounds_event(self.noise_multiplier, releases))
        return float(accountant.get_epsilon(self.delta))

    @classmethod
    def calibrate(cls, epsilon: float, delta: float, clip_norm: float, rounds: int) -> DpPlan:
        """The plan for this target, or PrivacyError (one line) when no noise level in range meets it."""
        target = f"epsilon {epsilon:g} at delta {delta:g} over {rounds} rounds"
        if not epsilon > 0 or not 0 < delta < 1 or not clip_norm > 0 or rounds < 1:
            raise PrivacyError(f"differential privacy: {target} with clip norm {clip_norm:g} is not a valid "
                               "target (epsilon > 0, 0 < delta < 1, clip norm > 0)")
        from dp_accounting import mechanism_calibration

        try:
            sigma = mechanism_calibration.calibrate_dp_mechanism(
                _accountant(), lambda s: _rounds_event(s, rounds), epsilon, delta,
                mechanism_calibration.ExplicitBracketInterval(MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER),
            )
        except ValueError:  # the bracket holds no solution: the target lies outside the range
            loudest = cls(epsilon, delta, clip_norm, rounds, MAX_NOISE_MULTIPLIER).spent(rounds)
            if loudest > epsilon:
                raise PrivacyError(
                    f"differential privacy: {target} cannot be met: even noise {MAX_NOISE_MULTIPLIER:g} x the "
                    f"update's sensitivity spends epsilon {loudest:.3g}; raise dp_epsilon or dp_delta, or plan "
                    "fewer rounds"
                ) from None
            raise PrivacyError(f"differential privacy: {target} needs noise below {MIN_NOISE_MULTIPLIER:g} x the "
                               "sensitivity, which protects nothing; lower dp_epsilon") from None
        return cls(epsilon, delta, clip_norm, rounds, float(sigma))


def plan_for(federation: Any) -> DpPlan | None:
    """The plan of a FederationSection, or None when differential privacy is off (dp_epsilon = 0)."""
    if not federation.dp_epsilon:
        return None
    return DpPlan.calibrate(federation.dp_epsilon, federation.dp_delta, federation.dp_clip_norm, federation.rounds)


def privatize(
    trained: Sequence[np.ndarray], start: Sequence[np.ndarray], plan: DpPlan, rng: np.random.Generator
) -> tuple[list[np.ndarray], float]:
    """start + clip(trained - start) + noise, tensor by tensor in float64; and the step's norm before
    clipping. Integer tensors (counters, not learned) are sent as the global ones."""
    floating = [i for i, t in enumerate(trained) if np.dtype(t.dtype).kind == "f"]
    steps = {i: np.asarray(trained[i], np.float64) - np.asarray(start[i], np.float64) for i in floating}
    norm = math.sqrt(sum(float(np.vdot(step, step)) for step in steps.values()))
    scale = min(1.0, plan.clip_norm / norm) if norm > 0 else 1.0
    out = [np.array(t, copy=True) for t in start]
    for i, step in steps.items():
        noisy = np.asarray(start[i], np.float64) + step * scale + rng.normal(0.0, plan.noise_std, step.shape)
        out[i] = noisy.astype(trained[i].dtype)
    return out, norm


class PrivateTrainer:
    """A Trainer whose get_weights() after set_weights(global) is the privatized update (privatize);
    counts its updates in STATE_DIR/dp-budget.json and refuses one beyond the plan's rounds."""

    def __init__(self, inner: Trainer, plan: DpPlan, state_dir: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.plan = plan
        self._budget = Path(state_dir) / BUDGET_FILE
        self.releases = self._load_releases()
        if self.releases >= plan.rounds:
            raise PrivacyError(f"differential privacy: this node already sent {self.releases} updates, the "
                               f"{plan.rounds} its budget allows ({self._budget}); a new federation starts with "
                               "a new state directory")
        self._rng = np.random.default_rng()  # OS entropy: never the trainer's seed
        self._start: list[np.ndarray] | None = None
        self.last_norm: float | None = None

    def _load_releases(self) -> int:
        try:
            document = json.loads(self._budget.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise PrivacyError(f"{self._budget}: unreadable ({exc}); it counts this node's private updates") from None
        releases = document.get("releases") if isinstance(document, dict) else None
        if isinstance(releases, bool) or not isinstance(releases, int) or releases < 0:
            raise PrivacyError(f"{self._budget}: 'releases' must be a count, got {releases!r}")
        return releases

    @property
    def spent_epsilon(self) -> float:
        return self.plan.spent(self.releases)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.inner.set_weights(weights)
        self._start = [np.array(w, copy=True) for w in weights]

    def get_weights(self) -> list[np.ndarray]:
        trained = self.inner.get_weights()
        if self._start is None:  # the initial weights, before any training: no data in them
            return trained
        if self.releases >= self.plan.rounds:
            raise PrivacyError(f"differential privacy: the budget of {self.plan.rounds} updates is spent")
        private, self.last_norm = privatize(trained, self._start, self.plan, self._rng)
        self.releases += 1  # counted on disk before the update can leave the node
        atomic_write_json(self._budget, {"releases": self.releases, "noise_multiplier": self.plan.noise_multiplier,
                                         "epsilon": self.plan.epsilon, "delta": self.plan.delta,
                                         "clip_norm": self.plan.clip_norm, "rounds": self.plan.rounds})
        return private

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def use_shard(self, task_index: int, total: int) -> None:
        self.inner.use_shard(task_index, total)

    def train_steps(self, steps: int) -> float:
        return self.inner.train_steps(steps)

    def evaluate(self) -> tuple[float, float]:
        return self.inner.evaluate()
