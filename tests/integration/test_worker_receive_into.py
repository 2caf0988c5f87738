"""A worker receives the chief's global weights straight into its trainer's arrays (issue 14: no second
model copy while they arrive), over real TLS on 127.0.0.1, and ends on the chief's weights."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from edgefed.config import NodeConfig
from edgefed.federation.driver import run_federated
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wiring import build_chief, build_worker
from tests.conftest import free_port


class RecordingTrainer(SoftmaxTrainer):
    """The numpy trainer, noting whether each set_weights was handed its own arrays."""

    def __init__(self) -> None:
        super().__init__()
        self.own_arrays: list[bool] = []

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.own_arrays.append(all(a is b for a, b in zip(weights, self.weights, strict=True)))
        super().set_weights(weights)


@pytest.mark.parametrize(("settings", "in_place"), [
    ({}, True),
    ({"compression": "int8"}, True),
    ({"broadcast_compression": "fp16"}, False),  # a decoded broadcast gets arrays of its own
])
def test_the_global_weights_land_in_the_trainers_arrays(
    make_config: Callable[..., NodeConfig], settings: dict[str, str], in_place: bool
) -> None:
    port = free_port()
    common = {"rounds": 3, "min_workers": 1, "interval_steps": 2, "round_timeout": 60.0, **settings}
    chief = build_chief(make_config("chief", "chief", port, **common), ledger=False)
    finals: list[list[np.ndarray]] = []

    def run_chief() -> None:
        own = SoftmaxTrainer()
        current = chief.start(own.get_weights()).weights
        for _ in range(common["rounds"]):
            current = chief.average(current, own.num_samples).weights
        finals.append([np.array(w) for w in current])

    chief.listen()
    thread = threading.Thread(target=run_chief, daemon=True)
    thread.start()
    worker = build_worker(make_config("worker1", "worker", port, **common), ledger=False)
    trainer = RecordingTrainer()
    try:
        reports = run_federated(worker, trainer, 2)
    finally:
        worker.close()
        thread.join(60)
        chief.close()
    assert [r.round for r in reports] == [1, 2, 3]
    assert trainer.own_arrays == [in_place] * 4  # the join's weights, then every round's
    assert finals, "the chief's rounds did not finish"
    for mine, theirs in zip(trainer.weights, finals[0], strict=True):
        np.testing.assert_array_equal(mine, theirs)
