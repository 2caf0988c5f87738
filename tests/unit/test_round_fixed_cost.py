"""Per-round work taken off the chief's critical path (issue 14, fixed cost): folds reuse kept chunk
buffers instead of faulting in new ones, a small model's float64 sum is added in place and divided
straight into float32, and the broadcast's first send runs on the calling thread. Each stays bit for
bit (or send for send) what it was."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from edgefed.contracts.events import EventBus
from edgefed.federation import running_mean
from edgefed.federation.aggregation import StreamingAggregator
from edgefed.federation.broadcast import Broadcaster
from edgefed.federation.rounds import Seat
from edgefed.federation.running_mean import CHUNK, POOLED_SCRATCHES, borrowed_scratch
from edgefed.wire import specs_of


def test_a_call_gets_the_scratch_the_previous_one_gave_back() -> None:
    with borrowed_scratch() as first:
        pass
    with borrowed_scratch() as second:
        assert second is first


def test_callers_at_once_never_share_a_scratch_and_the_pool_keeps_only_a_few() -> None:
    held = []
    with borrowed_scratch() as a, borrowed_scratch() as b, borrowed_scratch() as c:
        held = [a, b, c]
        assert len({id(s) for s in held}) == 3
    with borrowed_scratch() as x, borrowed_scratch() as y, borrowed_scratch() as z:
        reused = [s for s in (x, y, z) if any(s is h for h in held)]
    assert len(reused) == POOLED_SCRATCHES


def test_a_scratch_grown_by_a_longer_chunk_is_not_kept() -> None:
    with borrowed_scratch() as grown:
        grown.spare(3 * CHUNK)
    with borrowed_scratch() as again:
        assert again is not grown
        assert not again.oversized


def test_a_warm_fold_into_a_small_models_sum_allocates_no_chunk_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(running_mean, "EXACT_SUM_MAX_BYTES", 8 << 20)  # the chief's own threshold
    update = [np.full(4 * CHUNK, 1.5, np.float32), np.full(CHUNK // 2, 2.5, np.float32)]
    aggregator = StreamingAggregator(specs_of(update))
    aggregator.add(update, 3, "chief")  # the sums are made, a scratch is kept
    tracemalloc.start()
    try:
        aggregator.add(update, 3, "w1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < CHUNK  # no 512 KiB float64 chunk buffer (a pair was 1 MiB per tensor per update)
    np.testing.assert_array_equal(aggregator.average()[0], update[0])


def test_a_small_models_average_is_bit_for_bit_the_float64_sum_divided_then_rounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(running_mean, "EXACT_SUM_MAX_BYTES", 8 << 20)
    rng = np.random.default_rng(14)
    shapes = [(3 * CHUNK + 17,), (5, 7)]
    batch = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 4)).astype(np.float32) for s in shapes]
             for _ in range(6)]
    samples = [int(n) for n in rng.integers(1, 5000, len(batch))]
    aggregator = StreamingAggregator(specs_of(batch[0]))
    for update, count in zip(batch, samples, strict=True):
        aggregator.add(update, count, "w")
    result = aggregator.average()
    for index in range(len(shapes)):
        total = np.zeros(shapes[index], np.float64)
        for update, count in zip(batch, samples, strict=True):
            total = update[index].astype(np.float64) * float(count) + total
        want = (total / sum(samples)).astype(np.float32)
        assert result[index].dtype == np.float32
        assert result[index].tobytes() == want.tobytes()


def test_the_broadcast_sends_to_the_first_worker_on_the_calling_thread_and_to_every_worker_once() -> None:
    sends: list[tuple[str, str]] = []
    delivered: list[str] = []
    lock = threading.Lock()

    def send(worker: Seat, parts: list[bytes | memoryview]) -> int:
        with lock:
            sends.append((worker.name, threading.current_thread().name))
        return sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)

    broadcaster: Broadcaster[Seat] = Broadcaster("chief", EventBus(), False, send,
                                                 lambda worker, _: delivered.append(worker.name))
    try:
        workers = [Seat(f"w{i}", i) for i in range(5)]
        sent = broadcaster(workers, 3, [np.ones(CHUNK, np.float32)], final=False)
    finally:
        broadcaster.close()
    assert sorted(name for name, _ in sends) == [w.name for w in workers]
    assert sorted(delivered) == [w.name for w in workers]
    assert dict(sends)["w0"] == threading.current_thread().name
    assert all(thread.startswith("chief-send") for name, thread in sends if name != "w0")
    assert sent == 5 * (sent // 5) and sent > 5 * CHUNK * 4
