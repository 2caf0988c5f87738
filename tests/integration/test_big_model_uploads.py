"""Issue 14, big models with real processes on 127.0.0.1: with the chief's one staging buffer an
upload is checked and folded while it arrives (edgefed/federation/pipelined.py), and uploads that
end early — a disconnect half-way, NaN in the last bytes — leave the round's mean bit for bit as if
they had never been sent."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefed.config import NodeConfig
from edgefed.federation.aggregation import StreamingAggregator
from edgefed.wire import specs_of
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for

HELPERS = Path(__file__).parent / "helpers"
# 9.6 MiB of float32, past the 8 MiB under which the chief keeps a float64 sum: a float32 running mean
MODEL = [np.linspace(-1.0, 1.0, 1024 * 2048, dtype=np.float32).reshape(1024, 2048),
         np.linspace(3.0, -2.0, 400_000, dtype=np.float32)]
WORKERS = {"worker1": (0.5, 10), "worker2": (-1.0, 20), "worker3": (2.0, 30)}  # offset, samples
CHIEF_SAMPLES = 40


def fedavg_in_order(contributors: list[str]) -> list[np.ndarray]:
    """The round's mean folded whole, in the order the chief folded it: the float32 running mean
    depends on the order, and folding while arriving must not change it."""
    aggregator = StreamingAggregator(specs_of(MODEL))
    for name in contributors:
        offset, samples = (0.0, CHIEF_SAMPLES) if name == "chief" else WORKERS[name]
        aggregator.add([(w + np.float32(offset)).astype(np.float32) if offset else w for w in MODEL], samples, name)
    return aggregator.average()


def test_half_uploads_folded_as_they_arrive_are_taken_out_exactly(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], pki_dir: Path
) -> None:
    port = free_port()
    settings = {"rounds": 1, "round_timeout": 300.0, "upload_grace": 300.0, "max_frame_bytes": 64 << 20}
    chief = build_chief(make_config("chief", "chief", port, min_workers=1, **settings), ledger=False)
    received: list[str] = []
    refused: list[tuple[str, str]] = []
    chief.events.subscribe(lambda e: received.append(e.sender) if e.direction == "receive" else None)
    chief.events.subscribe_refusals(lambda e: refused.append((e.worker, e.code)))

    def worker(name: str) -> subprocess.Popen[bytes]:
        offset, samples = WORKERS[name]
        return processes.python(str(HELPERS / "offset_worker.py"), str(write_config(name, "worker", port, **settings)),
                                str(offset), str(samples), log_name=name)

    def half_then(name: str, mode: str) -> subprocess.Popen[bytes]:
        process = processes.python(str(HELPERS / "half_then_fail.py"), str(pki_dir), name, str(port), mode,
                                   log_name=name, stdout=subprocess.PIPE)
        assert process.stdout is not None and process.stdout.readline().strip() == b"sent-half"
        # half of it is in the one staging buffer, and folded: the mean holds a part of it now
        wait_for(lambda: chief.folding, 30, f"{name}'s half upload being folded")
        return process

    try:
        chief.listen()
        good = {"worker1": worker("worker1")}
        chief.start(MODEL)
        assert chief.staging is not None and (chief.staging.limit, chief.staging.readahead) == (1, 0)
        wait_for(lambda: "worker1" in received, 60, "worker1's update")  # the mean is not a first copy any more
        dropper = half_then("worker4", "disconnect")
        dropper.send_signal(signal.SIGUSR1)
        assert dropper.communicate(timeout=60)[0].decode().split() == ["closed"]
        wait_for(lambda: not chief.folding, 30, "worker4's part taken out")
        mallory = half_then("mallory", "nan")
        mallory.send_signal(signal.SIGUSR1)
        assert mallory.communicate(timeout=60)[0].decode().split() == ["non-finite"], processes.log("mallory")
        good.update({name: worker(name) for name in ("worker2", "worker3")})
        wait_for(lambda: set(WORKERS) <= set(received), 60, "the three good updates")

        result = chief.average(MODEL, CHIEF_SAMPLES)
        assert result.finished and sorted(result.participants) == ["chief", *WORKERS]
        for got, want in zip(result.weights, fedavg_in_order(result.participants), strict=True):
            np.testing.assert_array_equal(got, want)  # as if worker4 and mallory had sent nothing
        assert ("mallory", "non-finite") in refused and not any(w == "worker4" for w, _ in refused)
        assert result.phases["validate"] == 0.0  # no upload was checked whole: each took the pipeline
        assert chief.staging.created == 1
        for name, process in good.items():
            assert process.wait(timeout=60) == 0, processes.log(name)
    finally:
        chief.close()
