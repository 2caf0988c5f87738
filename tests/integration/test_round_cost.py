"""Issue 14 items 2-3 with real processes on 127.0.0.1: checkpoints every K rounds still resume a
killed chief, and uploads overlap within the chief's memory budget with plain FedAvg's result."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefed.config import NodeConfig
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.federation.timeline import PHASES
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for

HELPERS = Path(__file__).parent / "helpers"


def test_a_chief_checkpointing_every_3_rounds_killed_after_round_7_resumes_from_its_last_checkpoint(
    processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port, rounds, every, killed_after = free_port(), 10, 3, 7
    settings = {"rounds": rounds, "interval_steps": 200, "min_workers": 2, "wait_time": 30.0}
    chief_config = str(write_config("chief", "chief", port, checkpoint_every=every, **settings))
    workers = [
        processes.edgefed("worker", "--config", str(write_config(f"worker{i}", "worker", port, **settings)),
                          "--exit-when-done", log_name=f"worker{i}")
        for i in (1, 2)
    ]
    first = processes.edgefed("chief", "--config", chief_config, "--exit-when-done", "--progress-jsonl",
                              log_name="chief", stdout=subprocess.PIPE)
    assert first.stdout is not None
    while json.loads(first.stdout.readline()).get("round") != killed_after:
        pass
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    checkpoint = load_checkpoint(tmp_path / "state" / "chief")
    # only multiples of 3: round 6's write may still have been in flight (it trails; round 3's was
    # awaited before it began), and 9 only if the chief ran two more rounds before the SIGKILL landed
    assert checkpoint is not None and checkpoint.round in (3, 6, 9) and not checkpoint.finished

    second = processes.edgefed("chief", "--config", chief_config, "--exit-when-done", "--progress-jsonl",
                               log_name="chief", stdout=subprocess.PIPE)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, processes.log("chief")
    resumed = [json.loads(line)["round"] for line in out.decode().splitlines() if '"round"' in line]
    assert resumed == list(range(checkpoint.round + 1, rounds + 1))
    assert f"resuming from checkpoint at round {checkpoint.round}" in processes.log("chief")
    for index, worker in enumerate(workers, start=1):
        assert worker.wait(timeout=60) == 0, processes.log(f"worker{index}")
    final = load_checkpoint(tmp_path / "state" / "chief")  # the last round's is awaited
    assert final is not None and final.round == rounds and final.finished


MODEL = [np.linspace(-1.0, 1.0, 256 * 512, dtype=np.float32).reshape(256, 512), np.zeros(131072, np.float32)]
WORKERS = {"worker1": (0.5, 10), "worker2": (-1.0, 20), "worker3": (2.0, 30)}  # offset, samples
CHIEF_SAMPLES = 40


def fedavg_of_offsets(global_weights: list[np.ndarray]) -> list[np.ndarray]:
    """The round's FedAvg: the chief sends the global weights, each worker global + its offset. Computed
    the way the chief's float64 sum of a small model is, bit for bit: every n_i * w_i and their sum are
    exact in float64 here (24-bit values times small counts, within 53 bits), so the chief's sum is this
    one whatever order the uploads were folded in."""
    result = []
    for tensor in global_weights:
        total = CHIEF_SAMPLES * tensor.astype(np.float64)
        for offset, samples in WORKERS.values():
            total += samples * (tensor + np.float32(offset)).astype(np.float64)
        result.append((total / (CHIEF_SAMPLES + sum(s for _, s in WORKERS.values()))).astype(np.float32))
    return result


def test_uploads_overlap_within_the_chiefs_memory_budget_and_average_to_plain_fedavg(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], pki_dir: Path
) -> None:
    # a 1 MiB model: 5 MiB hold the global model (1), the float64 sum (2) and two staging buffers
    port = free_port()
    settings = {"rounds": 3, "round_timeout": 120.0, "upload_grace": 300.0}
    chief = build_chief(make_config("chief", "chief", port, chief_memory_mb=5, min_workers=1, **settings),
                        ledger=False)
    received: list[tuple[int, str]] = []  # (round, worker) of every whole update the chief read
    chief.events.subscribe(lambda e: received.append((e.round, e.sender)) if e.direction == "receive" else None)
    try:
        chief.listen()
        # worker4 sends half an update and stalls: it holds one of the two buffers for the whole round
        staller = processes.python(str(HELPERS / "partial_upload.py"), str(pki_dir), "worker4", str(port),
                                   log_name="worker4", stdout=subprocess.PIPE)
        chief.start(MODEL)
        assert chief.staging is not None and chief.staging.limit == 2
        assert staller.stdout is not None and staller.stdout.readline().strip() == b"joined"
        assert staller.stdout.readline().strip() == b"sent-half"
        wait_for(lambda: chief.staging is not None and chief.staging.in_use == 1, 30, "worker4 to hold a buffer")
        workers = {  # late joiners: they get round 0's weights at once
            name: processes.python(str(HELPERS / "offset_worker.py"),
                                   str(write_config(name, "worker", port, **settings)), str(offset), str(samples),
                                   log_name=name)
            for name, (offset, samples) in WORKERS.items()
        }
        wait_for(lambda: {w for r, w in received if r == 0} == set(WORKERS), 60, "the three round-0 updates")
        assert chief.staging.in_use == 1 and chief.staging.peak_in_use == 2  # they came in beside worker4's
        staller.send_signal(signal.SIGKILL)
        staller.wait(timeout=10)

        expected, result = fedavg_of_offsets(MODEL), chief.average(MODEL, CHIEF_SAMPLES)
        while True:
            assert sorted(result.participants) == ["chief", *WORKERS]
            for got, want in zip(result.weights, expected, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            assert set(result.phases) == set(PHASES) and result.phases["receive"] > 0
            if result.finished:
                break
            expected, result = fedavg_of_offsets(result.weights), chief.average(result.weights, CHIEF_SAMPLES)
        assert result.round == 3
        # never more buffers than the budget holds, however the three uploads of rounds 2 and 3 overlapped
        assert chief.staging.created <= 2 and chief.staging.peak_in_use == 2
        for name, worker in workers.items():  # each got the final weights and left
            assert worker.wait(timeout=60) == 0, processes.log(name)
    finally:
        chief.close()


def test_overlapping_uploads_that_fail_half_way_leave_the_exact_fedavg_of_the_good_ones(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], pki_dir: Path
) -> None:
    # a 1 MiB model, 7 MiB: the global model and the float64 sum (3) leave four staging buffers
    port = free_port()
    settings = {"rounds": 2, "round_timeout": 120.0, "upload_grace": 300.0}
    chief = build_chief(make_config("chief", "chief", port, chief_memory_mb=7, min_workers=1, **settings),
                        ledger=False)
    received: list[tuple[int, str]] = []
    refused: list[tuple[str, int, str]] = []
    chief.events.subscribe(lambda e: received.append((e.round, e.sender)) if e.direction == "receive" else None)
    chief.events.subscribe_refusals(lambda e: refused.append((e.worker, e.round, e.code)))
    try:
        chief.listen()
        # worker4 will disconnect half-way, mallory will finish with NaN in its second half
        hostile = {name: processes.python(str(HELPERS / "half_then_fail.py"), str(pki_dir), name, str(port), mode,
                                          log_name=name, stdout=subprocess.PIPE)
                   for name, mode in (("worker4", "disconnect"), ("mallory", "nan"))}
        chief.start(MODEL)
        assert chief.staging is not None and chief.staging.limit == 4
        for process in hostile.values():
            assert process.stdout is not None and process.stdout.readline().strip() == b"sent-half"
        wait_for(lambda: chief.staging is not None and chief.staging.in_use == 2, 30, "two half uploads in buffers")
        workers = {
            name: processes.python(str(HELPERS / "offset_worker.py"),
                                   str(write_config(name, "worker", port, **settings)), str(offset), str(samples),
                                   log_name=name)
            for name, (offset, samples) in WORKERS.items()
        }
        wait_for(lambda: {w for r, w in received if r == 0} == set(WORKERS), 60, "the three good round-0 updates")
        assert chief.staging.peak_in_use >= 3  # good uploads were received beside the two half ones
        for process in hostile.values():
            process.send_signal(signal.SIGUSR1)
        out = {name: process.communicate(timeout=60)[0].decode().split() for name, process in hostile.items()}
        assert out == {"worker4": ["closed"], "mallory": ["non-finite"]}, processes.log("mallory")

        result = chief.average(MODEL, CHIEF_SAMPLES)
        expected = fedavg_of_offsets(MODEL)
        while True:  # as if worker4 and mallory had never sent anything, bit for bit
            assert sorted(result.participants) == ["chief", *WORKERS]
            for got, want in zip(result.weights, expected, strict=True):
                np.testing.assert_array_equal(got, want)
            if result.finished:
                break
            expected, result = fedavg_of_offsets(result.weights), chief.average(result.weights, CHIEF_SAMPLES)
        assert result.round == 2
        assert ("mallory", 0, "non-finite") in refused and not any(w == "worker4" for w, _, _ in refused)
        # the last fold wakes the round before its connection's thread hands the buffer back
        wait_for(lambda: chief.staging is not None and chief.staging.in_use == 0, 30, "every buffer back in the pool")
        assert chief.staging.created <= 4
        for name, worker in workers.items():
            assert worker.wait(timeout=60) == 0, processes.log(name)
    finally:
        chief.close()


def test_an_upload_reading_ahead_that_disconnects_costs_only_its_blocks(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], pki_dir: Path
) -> None:
    # 1.5 MiB: the global model and the float64 sum hold 4.5 MiB of the 7, so one staging buffer and
    # 1 MiB of read-ahead (readahead.py): a second upload reads ahead, the others wait in the kernel
    model = [MODEL[0], np.zeros(262144, np.float32)]
    port = free_port()
    settings = {"rounds": 2, "round_timeout": 120.0, "upload_grace": 300.0}
    chief = build_chief(make_config("chief", "chief", port, chief_memory_mb=7, min_workers=1, **settings),
                        ledger=False)
    refused: list[tuple[str, int, str]] = []
    chief.events.subscribe_refusals(lambda e: refused.append((e.worker, e.round, e.code)))
    try:
        chief.listen()
        hostile: dict[str, subprocess.Popen[bytes]] = {}

        def half_upload(name: str, mode: str) -> None:
            hostile[name] = processes.python(str(HELPERS / "half_then_fail.py"), str(pki_dir), name, str(port), mode,
                                             log_name=name, stdout=subprocess.PIPE)

        half_upload("mallory", "nan")  # the round starts once it joined
        chief.start(model)
        pool = chief.staging
        assert pool is not None and (pool.limit, pool.readahead) == (1, 1 << 20)
        for name, holds in (("mallory", lambda: pool.in_use == 1), ("worker4", lambda: pool.ahead > 0)):
            if name not in hostile:
                half_upload(name, "disconnect")
            assert hostile[name].stdout is not None and hostile[name].stdout.readline().strip() == b"sent-half"
            wait_for(holds, 30, f"{name}'s half upload in the pool")  # mallory's in the buffer, worker4's ahead
        workers = {
            name: processes.python(str(HELPERS / "offset_worker.py"),
                                   str(write_config(name, "worker", port, **settings)), str(offset), str(samples),
                                   log_name=name)
            for name, (offset, samples) in WORKERS.items()
        }
        # their round-0 headers were taken: they wait for memory, their bytes in the kernel
        wait_for(lambda: pool.waiting == len(WORKERS), 60, "the three good uploads to wait for memory")
        for process in hostile.values():
            process.send_signal(signal.SIGUSR1)
        out = {name: process.communicate(timeout=60)[0].decode().split() for name, process in hostile.items()}
        assert out == {"worker4": ["closed"], "mallory": ["non-finite"]}, processes.log("mallory")

        expected, result = fedavg_of_offsets(model), chief.average(model, CHIEF_SAMPLES)
        while True:  # bit for bit the FedAvg of the good ones
            assert sorted(result.participants) == ["chief", *WORKERS]
            for got, want in zip(result.weights, expected, strict=True):
                np.testing.assert_array_equal(got, want)
            if result.finished:
                break
            expected, result = fedavg_of_offsets(result.weights), chief.average(result.weights, CHIEF_SAMPLES)
        assert ("mallory", 0, "non-finite") in refused
        wait_for(lambda: pool.in_use == 0 and pool.ahead == 0, 30, "the buffer and the blocks back in the pool")
        assert pool.created == 1 and pool.peak_ahead == 1 << 20
        for name, worker in workers.items():
            assert worker.wait(timeout=60) == 0, processes.log(name)
    finally:
        chief.close()


def test_a_staller_reading_ahead_is_dropped_on_its_deadline_and_its_blocks_come_back(
    processes: Processes, make_config: Callable[..., NodeConfig], pki_dir: Path
) -> None:
    # one staging buffer and 1 MiB of read-ahead (as above); two workers send half an update and stall:
    # one in the buffer, one in read-ahead blocks, and each clock runs out (8 s + 1.5 s: room for both
    # to be seen in the pool at once under load)
    model = [MODEL[0], np.zeros(262144, np.float32)]
    port = free_port()
    chief = build_chief(make_config("chief", "chief", port, chief_memory_mb=7, min_workers=1, rounds=1,
                                    round_timeout=120.0, upload_grace=8.0, min_upload_rate=1 << 20), ledger=False)
    try:
        chief.listen()
        stallers = [processes.python(str(HELPERS / "partial_upload.py"), str(pki_dir), name, str(port),
                                     log_name=name, stdout=subprocess.PIPE) for name in ("worker1", "worker2")]
        chief.start(model)
        pool = chief.staging
        assert pool is not None and (pool.limit, pool.readahead) == (1, 1 << 20)
        for staller in stallers:
            assert staller.stdout is not None and staller.stdout.readline().strip() == b"joined"
        wait_for(lambda: pool.in_use == 1 and pool.ahead > 0, 30, "one half upload in the buffer, one ahead")
        wait_for(lambda: not {"worker1", "worker2"} & set(chief.participants()), 60, "both stallers dropped")
        # the deadline's thread drops a staller; its connection's thread, woken by the close, hands the
        # buffer and the blocks back (only it may: it may be writing into them), so this comes just after
        wait_for(lambda: pool.in_use == 0 and pool.ahead == 0, 30, "the buffer and the blocks back in the pool")
        errors = [e["message"] for e in json.loads(chief.status.path.read_text())["errors"]]
        assert sorted(e.split(" left: ")[0] for e in errors if "upload too slow" in e) == ["worker1", "worker2"]
    finally:
        chief.close()
