"""Issue 14 items 2-3 in pieces: the chief's round timeline, when checkpoints are due, the staging
pool's bound and how a memory budget sizes it, the new keys' validation, and the phases in the
training history (`edgefed history --phases`)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgefed.config import ConfigError, FederationSection, config_from_dict
from edgefed.contracts.schemas import HISTORY_LINE, load_schema
from edgefed.federation.round_end import checkpoint_due
from edgefed.federation.running_mean import folds_as_mean
from edgefed.federation.staging import MemoryBudgetError, StagingPool, held_model_bytes, staging_limit
from edgefed.federation.timeline import PHASES, RoundTimeline
from edgefed.observe.history import HistoryWriter, read_history
from edgefed.wire import TensorSpec
from tests.conftest import REPO

ONE_MB_MODEL = [TensorSpec("float32", (256, 512)), TensorSpec("float32", (131072,))]


def test_the_timeline_sums_per_round_keeps_the_longest_turnaround_and_forgets_what_it_handed_out() -> None:
    timeline = RoundTimeline()
    timeline.add(3, "receive", 0.25)
    timeline.add(3, "receive", 0.5)
    timeline.add(4, "receive", 9.0)  # an early upload for the next round stays with that round
    timeline.add(3, "turnaround", 0.2)
    timeline.broadcast_done(3)
    timeline.upload_started(3)  # measured from broadcast_done: tiny, below the 0.2 already there
    timeline.add_background("checkpoint_write", 0.125)
    with timeline.span(3, "average"):
        pass
    phases = timeline.take(3)
    assert list(phases) == list(PHASES)
    assert (phases["receive"], phases["turnaround"], phases["checkpoint_write"]) == (0.75, 0.2, 0.125)
    assert phases["average"] >= 0 and phases["broadcast"] == 0.0
    assert timeline.take(3)["receive"] == 0.0 and timeline.take(4)["checkpoint_write"] == 0.0
    with pytest.raises(ValueError, match="unknown phase"):
        timeline.add(3, "coffee", 1.0)


def test_a_stream_of_round_numbers_keeps_a_bounded_number_of_rounds() -> None:
    timeline = RoundTimeline()
    for number in range(10_000):
        timeline.add(number, "receive", 1.0)
        timeline.broadcast_done(number)
    assert len(timeline._rounds) <= 4 and len(timeline._broadcast_at) <= 6


@pytest.mark.parametrize(("every", "due"), [
    (1, [1, 2, 3, 4, 5, 6, 7]),
    (3, [3, 6, 7]),  # 7 is the last round
])
def test_checkpoints_are_due_every_k_rounds_and_at_the_last(every: int, due: list[int]) -> None:
    assert [r for r in range(1, 8) if checkpoint_due(r, r == 7, every)] == due


def _federation(**values: object) -> FederationSection:
    return config_from_dict({"node": {"name": "c", "role": "chief"}, "federation": values}).federation


def test_without_a_budget_the_pool_is_max_concurrent_uploads() -> None:
    assert staging_limit(ONE_MB_MODEL, _federation()) == 1
    assert staging_limit(ONE_MB_MODEL, _federation(max_concurrent_uploads=3)) == 3


def test_a_budget_counts_the_global_model_and_the_aggregator_before_staging_buffers() -> None:
    # fedavg: 1 MB model + 2 MB float64 sum held; the rest in 1 MB buffers
    assert staging_limit(ONE_MB_MODEL, _federation(chief_memory_mb=5)) == 2
    assert staging_limit(ONE_MB_MODEL, _federation(chief_memory_mb=5, max_concurrent_uploads=9)) == 2
    assert staging_limit(ONE_MB_MODEL, _federation(chief_memory_mb=4, aggregation="clip")) == 1
    # trimmed-mean holds max_buffered_updates copies
    assert staging_limit(ONE_MB_MODEL, _federation(chief_memory_mb=16, aggregation="median",
                                                   max_buffered_updates=10)) == 5


def test_a_budget_counts_a_float32_running_mean_as_one_model_and_a_float64_sum_as_two() -> None:
    # 16 MiB of float32 weights: past EXACT_SUM_MAX_BYTES, fedavg and clip fold them into a float32
    # running mean (one model), so 64 MiB hold the global model, the mean and two 16 MiB buffers
    big = [TensorSpec("float32", (2048, 2048)), TensorSpec("int64", (4,))]
    model = sum(spec.nbytes for spec in big)
    assert folds_as_mean(16 << 20)
    # the global model, then the mean of the float32 tensor and the int64 counter's float64 sum
    assert held_model_bytes(big, "fedavg", 10) == held_model_bytes(big, "clip", 10) == model + (16 << 20) + 4 * 8
    assert staging_limit(big, _federation(chief_memory_mb=64)) == 1  # it used to count 48 MiB held: none fitted
    assert staging_limit(big, _federation(chief_memory_mb=65)) == 2
    assert held_model_bytes(big, "median", 3) == 4 * model
    # up to 8 MiB of float32 the exact float64 sum stays: two model copies, as before
    small = [TensorSpec("float32", (1024, 1024))]
    assert not folds_as_mean(4 << 20) and held_model_bytes(small, "fedavg", 10) == 3 * (4 << 20)


def test_a_budget_without_room_for_one_buffer_names_what_it_needs() -> None:
    with pytest.raises(MemoryBudgetError, match=r"chief_memory_mb = 3 is too small .* need 4 MB"):
        staging_limit(ONE_MB_MODEL, _federation(chief_memory_mb=3))


def test_the_pool_makes_buffers_on_demand_never_more_than_its_limit_and_counts_them() -> None:
    pool = StagingPool(ONE_MB_MODEL, 2)
    assert pool.created == 0  # nothing until an upload needs it
    first, second = pool.acquire(), pool.acquire()
    assert first is not None and second is not None
    assert [a.shape for a in first] == [(256, 512), (131072,)] and first[0].dtype == np.dtype("<f4")
    waiting: list[list[np.ndarray] | None] = []
    third = threading.Thread(target=lambda: waiting.append(pool.acquire()))
    third.start()
    pool.release(first)  # the waiter takes the freed buffer, no new one is made
    third.join(timeout=10)
    assert waiting and waiting[0] is first
    assert (pool.created, pool.in_use, pool.peak_in_use) == (2, 2, 2)
    closed: list[list[np.ndarray] | None] = []
    fourth = threading.Thread(target=lambda: closed.append(pool.acquire()))
    fourth.start()
    pool.close()  # a shutting-down chief wakes its waiters with nothing
    fourth.join(timeout=10)
    assert closed == [None]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("checkpoint_every", 0, "federation.checkpoint_every: must be >= 1, got 0"),
    ("checkpoint_every", 1.5, "federation.checkpoint_every: must be an integer, got 1.5"),
    ("chief_memory_mb", -1, "federation.chief_memory_mb: must be >= 0, got -1"),
    ("chief_memory_mb", "1G", "federation.chief_memory_mb: must be an integer, got '1G'"),
])
def test_the_new_keys_are_validated(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _federation(**{key: value})


def test_phases_go_into_the_history_line_and_edgefed_history_shows_them(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    writer = HistoryWriter(tmp_path, "chief")
    phases = {phase: (index + 1) / 1000 for index, phase in enumerate(PHASES)}
    writer.round(1, ["chief", "worker1"], accuracy=0.9, loss=0.3, train_loss=0.4, seconds=0.5, phases=phases)
    writer.round(2, ["chief"], accuracy=0.9, loss=0.3, train_loss=0.4, seconds=0.5)  # no timeline: no phases
    history = read_history(writer.path)
    assert history.problems == []
    validator = jsonschema.Draft202012Validator(load_schema(HISTORY_LINE))
    for record in history.records:
        validator.validate(record)
    assert history.records[0]["phases"] == phases and "phases" not in history.records[1]
    shown = subprocess.run([sys.executable, "-m", "edgefed", "history", "--state-dir", str(tmp_path), "--phases"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout
    header, first, second = shown.splitlines()
    assert header.split() == ["round", *PHASES]
    assert first.split() == ["1", *(f"{1000 * phases[p]:.1f}" for p in PHASES)]
    assert second.split() == ["2", *("-" for _ in PHASES)]


def test_a_history_line_with_bad_phases_is_named_and_skipped(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, "chief")
    line = writer.round(1, ["chief"], accuracy=None, loss=None, train_loss=None, seconds=0.5)
    line["phases"] = {"broadcast": -1}
    with open(writer.path, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
    history = read_history(writer.path)
    assert len(history.records) == 1 and "phases must map phase names" in history.problems[0]


@pytest.mark.parametrize("every", [1, 3])
def test_the_step_after_a_checkpoint_sees_it_on_disk_and_a_failing_step_costs_no_round(
    tmp_path: Path, every: int
) -> None:
    """The chief's model record (provenance) runs after the round's checkpoint on the same writer thread;
    with checkpoint_every = 1 it is done before finish() returns; a step that raises is logged, not fatal."""
    from edgefed.contracts.status import StatusFile
    from edgefed.federation.checkpoint import load_checkpoint
    from edgefed.federation.round_end import RoundEnd

    seen: list[int | None] = []

    def record() -> None:
        checkpoint = load_checkpoint(tmp_path)
        seen.append(None if checkpoint is None else checkpoint.round)

    def broken() -> None:
        raise RuntimeError("the ledger sink failed")

    status = StatusFile(tmp_path, "chief", "chief")
    end: RoundEnd = RoundEnd(tmp_path, every, status, RoundTimeline(), lambda *_: 0, lambda: [])
    weights = [np.ones(3, np.float32)]
    for round_number in (1, 2, 3):
        end.finish(round_number - 1, [], round_number, weights, round_number == 3,
                   after_checkpoint=broken if round_number == 2 else record)
        if every == 1 and round_number != 2:
            assert seen[-1] == round_number  # already made, with its own checkpoint on disk
    end.close()
    assert seen[-1] == 3 and len(seen) == 2  # rounds 1 and 3 recorded; round 2's failure only logged
    if every == 3:
        assert seen[0] is None  # round 1 is no checkpoint round: the step runs all the same
