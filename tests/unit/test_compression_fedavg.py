"""End to end without sockets: FedAvg on digits with the numpy softmax trainer, 4 simulated workers,
every update compressed with error feedback and sent through the real frame codec; each setting ends
within 1 accuracy point of uncompressed float32 deltas (fixed seeds: the run is deterministic)."""

from __future__ import annotations

import functools

import pytest

from edgefed.compression import parse_compression
from edgefed.compression.simulate import SimResult, simulate_fedavg
from edgefed.trainers.data import load_dataset
from edgefed.trainers.softmax import SoftmaxTrainer

WORKERS, ROUNDS, STEPS = 4, 100, 10


@functools.cache
def run(text: str) -> SimResult:
    data = load_dataset("digits", seed=0)
    return simulate_fedavg(lambda _index: SoftmaxTrainer(seed=0, data=data), parse_compression(text),
                           workers=WORKERS, rounds=ROUNDS, steps=STEPS)


@pytest.mark.parametrize("text", ["fp16", "int8", "topk:0.01", "topk:0.01+int8"])
def test_compressed_fedavg_reaches_the_accuracy_of_float32(text: str) -> None:
    baseline, compressed = run("none"), run(text)
    assert baseline.final_accuracy > 0.9  # the baseline itself learned
    assert abs(compressed.final_accuracy - baseline.final_accuracy) <= 0.01
    assert len(compressed.upload_bytes) == ROUNDS
    assert max(compressed.upload_bytes) < min(baseline.upload_bytes)  # and every round sent fewer bytes
