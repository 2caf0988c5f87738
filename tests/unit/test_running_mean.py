"""The float32 running mean of fedavg and clip (federation/running_mean.py): its precision against a
float64 reference, its range with huge updates, its memory, a compressed update beyond float32's
range refused alone, its chunked arithmetic bit for bit, and the distance that doubles as the finite check."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgefed.compression import Compressor, decode_dense, parse_compression
from edgefed.federation import running_mean
from edgefed.federation.aggregation import StreamingAggregator, first_non_finite
from edgefed.federation.compressed import Delta, needs_finite_pass, received_update
from edgefed.federation.rounds import RoundBook, RoundRules, Seat
from edgefed.federation.running_mean import CHUNK, FLOAT32_MAX
from edgefed.federation.strategies import ClippingAggregator, distance
from edgefed.wire import ReasonCode, specs_of

WORKERS = 32
EPS32 = 2.0 ** -24  # float32's unit roundoff


@pytest.fixture(autouse=True)
def every_model_folds_as_a_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """These models are small; the chief keeps the exact float64 sum for models of up to 8 MiB."""
    monkeypatch.setattr(running_mean, "EXACT_SUM_MAX_BYTES", 0)


def updates(seed: int, count: int = WORKERS, size: int = 2 * CHUNK + 1000) -> list[list[np.ndarray]]:
    """count updates of two float32 tensors, the first spanning several chunks, magnitudes 1e-3..1e3."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(size) * 10.0 ** rng.integers(-3, 4)).astype(np.float32),
             rng.standard_normal((3, 5)).astype(np.float32)] for _ in range(count)]


def reference_mean(batch: list[list[np.ndarray]], samples: list[int]) -> list[np.ndarray]:
    return [np.average([u[i].astype(np.float64) for u in batch], axis=0, weights=samples) for i in range(2)]


def within_bound(got: np.ndarray, want: np.ndarray, inputs: list[np.ndarray]) -> None:
    """running_mean.py's bound: n folds, each rounding once to float32, |error| <= (n + 1) x 2^-24 x max|w|
    (one more rounding for the reference's own cast)."""
    peak = max(float(np.abs(w).max()) for w in inputs)
    error = np.abs(got.astype(np.float64) - want)
    assert float(error.max()) <= (len(inputs) + 1) * EPS32 * peak


def test_32_updates_average_within_the_float32_bound_of_the_float64_mean() -> None:
    batch = updates(1)
    samples = [int(n) for n in np.random.default_rng(2).integers(1, 5000, WORKERS)]
    aggregator = StreamingAggregator(specs_of(batch[0]))
    for index, (update, count) in enumerate(zip(batch, samples, strict=True)):
        aggregator.add_scaled_in_place(update, count, f"w{index}")
    result, reference = aggregator.average(), reference_mean(batch, samples)
    for tensor in range(2):
        assert result[tensor].dtype == np.float32
        within_bound(result[tensor], reference[tensor], [u[tensor] for u in batch])
        # in practice the errors average out: relative error near float32's own
        scale = np.abs(reference[tensor]).max()
        assert float(np.abs(result[tensor] - reference[tensor]).max()) / scale < 1e-5


def test_huge_finite_updates_with_many_samples_give_a_finite_exact_mean() -> None:
    top = np.float32(FLOAT32_MAX)
    batch = [[np.full(CHUNK + 7, top, np.float32)], [np.full(CHUNK + 7, top, np.float32)],
             [np.full(CHUNK + 7, -top / 2, np.float32)]]
    samples = [10**12, 10**12, 10**12]
    aggregator = StreamingAggregator(specs_of(batch[0]))
    for update, count in zip(batch, samples, strict=True):
        aggregator.add(update, count, "w")
    mean = aggregator.average()[0]
    assert np.isfinite(mean).all()
    np.testing.assert_allclose(mean, np.float64(top) / 2, rtol=4 * EPS32)


def test_the_accumulator_is_one_float32_copy_and_folding_allocates_no_model_sized_temporary() -> None:
    size = 8 * CHUNK  # 8 MiB of float32
    batch = [[np.full(size, float(i), np.float32)] for i in range(3)]
    tracemalloc.start()
    try:
        aggregator = StreamingAggregator(specs_of(batch[0]))
        for update in batch:
            aggregator.add(update, 7, "w")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    model_bytes = batch[0][0].nbytes
    assert peak < model_bytes + 4 * CHUNK * 8  # the mean, plus a few float64 chunks
    np.testing.assert_array_equal(aggregator.average()[0], np.full(size, 1.0, np.float32))


def test_clip_folds_the_pulled_back_update_without_touching_the_staging_buffers() -> None:
    start = [np.zeros(CHUNK + 3, np.float32)]
    far = [np.full(CHUNK + 3, 4.0, np.float32)]
    received = [far[0].copy()]
    aggregator = ClippingAggregator(specs_of(start), start, lambda: float(np.linalg.norm(far[0])) / 4)
    aggregator.add_scaled_in_place(received, 3, "w1")
    np.testing.assert_array_equal(received[0], far[0])  # read, not modified
    np.testing.assert_allclose(aggregator.average()[0], far[0] / 4, rtol=4 * EPS32)


@pytest.mark.parametrize("compression", ["fp16", "int8", "topk:0.05+int8"])
def test_compressed_deltas_of_32_workers_average_like_the_float64_rebuilt_updates(compression: str) -> None:
    setting = parse_compression(compression)
    start = updates(3, count=1)[0]
    trained = updates(4)
    samples = [int(n) for n in np.random.default_rng(5).integers(1, 300, WORKERS)]
    aggregator, rebuilt = StreamingAggregator(specs_of(start)), []
    for index, (weights, count) in enumerate(zip(trained, samples, strict=True)):
        tensors = Compressor(setting).compress_update(weights, start)
        aggregator.add_delta(start, tensors, count, f"w{index}")
        rebuilt.append([(s + decode_dense(t, "float64")).astype(np.float32)
                        for s, t in zip(start, tensors, strict=True)])
    result, reference = aggregator.average(), reference_mean(rebuilt, samples)
    for tensor in range(2):
        within_bound(result[tensor], reference[tensor], [u[tensor] for u in rebuilt])


def test_a_delta_that_leaves_float32s_range_is_refused_alone() -> None:
    setting = parse_compression("int8")
    start = [np.full(CHUNK + 5, 3e38, np.float32), np.ones(4, np.float32)]
    book: RoundBook[Seat] = RoundBook(RoundRules(3, compression=setting), "chief")
    book.begin(start, 0, False)
    book.contribute_own(start, 10)
    honest = Compressor(setting).compress_update([start[0] - np.float32(1e37), start[1] + 1], start)
    hostile = Compressor(setting).compress([np.full(CHUNK + 5, 3e38, np.float32), np.full(4, 5.0, np.float32)])
    for name, tensors in (("w1", honest), ("w2", hostile)):  # w2: finite deltas, but 6e38 rebuilt
        update, span = received_update(tensors, setting, start)
        assert isinstance(update, Delta)
        refusal = book.fold(name, 0, update, 10, 0, span)
        if name == "w1":
            assert refusal is None
        else:
            assert refusal is not None and refusal.code == ReasonCode.NON_FINITE
            assert "tensor 0" in refusal.reason and "beyond float32's range" in refusal.reason
    assert len(book.distances) == 1  # the refused update's distance is not kept
    closed = book.close_round(None)
    assert closed.refusal is None and closed.contributors == ["chief", "w1"]
    assert np.isfinite(closed.average[0]).all()
    np.testing.assert_allclose(closed.average[0], 3e38 - 5e36, rtol=1e-2)
    np.testing.assert_allclose(closed.average[1], 1.5, rtol=1e-2)


def test_a_contribution_of_no_samples_weighs_nothing() -> None:
    aggregator = StreamingAggregator(specs_of([np.zeros(CHUNK + 1, np.float32)]))
    aggregator.add([np.full(CHUNK + 1, np.float32(1e30))], 0, "chief")  # a chief without data
    aggregator.add([np.full(CHUNK + 1, 2.0, np.float32)], 5, "w1")
    assert aggregator.contributors == ["chief", "w1"] and aggregator.total_samples == 5
    np.testing.assert_array_equal(aggregator.average()[0], np.full(CHUNK + 1, 2.0, np.float32))


def test_a_large_delta_where_the_global_weights_are_small_is_folded() -> None:
    # the bound from the parts (max |global| + max |delta|) exceeds float32; the decoded values do not
    start = [np.concatenate([np.full(CHUNK, 3e38, np.float32), np.zeros(CHUNK, np.float32)])]
    delta = np.concatenate([np.zeros(CHUNK, np.float32), np.full(CHUNK, 3e38, np.float32)])
    aggregator = StreamingAggregator(specs_of(start))
    aggregator.add_delta(start, Compressor(parse_compression("int8")).compress([delta]), 4, "w1")
    np.testing.assert_allclose(aggregator.average()[0], start[0] + delta, rtol=1e-2)


def test_a_small_model_keeps_the_exact_float64_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(running_mean, "EXACT_SUM_MAX_BYTES", 8 << 20)  # the chief's own threshold
    batch = updates(6, count=3, size=1000)
    aggregator = StreamingAggregator(specs_of(batch[0]))
    for update in batch:
        aggregator.add(update, 3, "w")
    result = aggregator.average()
    np.testing.assert_array_equal(result[0], reference_mean(batch, [3, 3, 3])[0].astype(np.float32))


def whole_array_mean(batch: list[np.ndarray], samples: list[int], reference: np.ndarray | None = None,
                     scales: list[float] | None = None) -> np.ndarray:
    """running_mean.py's arithmetic on whole arrays, a numpy temporary per operation: each fold rounds
    float64(mean) * keep + float64(w) * share to float32 once (w pulled back towards reference by scale)."""
    mean, total = np.zeros_like(batch[0]), 0
    for index, (update, count) in enumerate(zip(batch, samples, strict=True)):
        wide = update.astype(np.float64)
        if reference is not None and scales is not None:
            base = reference.astype(np.float64)
            wide = (wide - base) * scales[index] + base
        keep, share = total / (total + count), count / (total + count)
        mean = (wide * share + mean.astype(np.float64) * keep).astype(np.float32) if total else wide.astype(np.float32)
        total += count
    return mean


@pytest.mark.parametrize("clip", [False, True])
def test_folding_in_reused_chunk_buffers_is_bit_for_bit_the_whole_array_arithmetic(clip: bool) -> None:
    batch = [u[0] for u in updates(8, count=5, size=3 * CHUNK + 17)]
    samples = [int(n) for n in np.random.default_rng(9).integers(1, 5000, 5)]
    start = np.random.default_rng(10).standard_normal(3 * CHUNK + 17).astype(np.float32)
    bound = min(distance([u], [start]) for u in batch) / 2  # every update is pulled back
    aggregator = (ClippingAggregator(specs_of([start]), [start], lambda: bound) if clip
                  else StreamingAggregator(specs_of([start])))
    for update, count in zip(batch, samples, strict=True):
        aggregator.add([update], count, "w")
    scales = [bound / distance([u], [start]) for u in batch] if clip else None
    assert aggregator.average()[0].tobytes() == whole_array_mean(batch, samples, start, scales).tobytes()

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, CHUNK - 1, CHUNK, 2 * CHUNK + 4])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_non_finite_value_anywhere_makes_the_distance_non_finite(bad: float, where: int, dtype: str) -> None:
    # the chief skips the upload's own finite pass when its distance is finite (compressed.needs_finite_pass)
    start = [np.full(2 * CHUNK + 5, 3e4, dtype), np.ones(3, np.float32)]
    update = [np.full(2 * CHUNK + 5, -3e4, dtype), np.ones(3, np.float32)]
    update[0][where] = bad
    span = distance(update, start)
    assert not np.isfinite(span) and needs_finite_pass(update, span)
    assert first_non_finite(update) == 0
    update[0][where] = 0
    span = distance(update, start)
    assert np.isfinite(span) and not needs_finite_pass(update, span)
    assert first_non_finite(update) is None


def test_the_largest_finite_float32_updates_have_a_finite_distance() -> None:
    top = np.float32(FLOAT32_MAX)
    span = distance([np.full(CHUNK + 3, top)], [np.full(CHUNK + 3, -top)])
    assert np.isfinite(span) and span > FLOAT32_MAX


def test_clip_given_the_measured_distance_folds_exactly_what_it_folds_measuring_it_itself() -> None:
    batch = [u[0] for u in updates(11, count=4, size=2 * CHUNK + 9)]
    start = np.zeros(2 * CHUNK + 9, np.float32)
    bound = min(distance([u], [start]) for u in batch) / 3
    measuring, given = (ClippingAggregator(specs_of([start]), [start], lambda: bound) for _ in range(2))
    for index, update in enumerate(batch):
        measuring.add([update], 10 + index, "w")
        given.add_measured([update], 10 + index, "w", distance([update], [start]))
    assert measuring.average()[0].tobytes() == given.average()[0].tobytes()


@pytest.mark.parametrize(("aggregation", "screen_factor", "measured"),
                         [("fedavg", 0.0, False), ("fedavg", 3.0, True), ("clip", 0.0, True), ("median", 0.0, False)])
def test_distances_are_measured_only_for_the_rules_that_use_them(aggregation: str, screen_factor: float,
                                                                 measured: bool) -> None:
    rules = RoundRules(3, aggregation=aggregation, screen_factor=screen_factor)
    assert rules.measures_distances is measured
    start = [np.zeros(CHUNK + 1, np.float32)]
    update, span = received_update([np.full(CHUNK + 1, np.nan, np.float32)], rules.compression, start, measured)
    assert (span is not None) is measured
    assert needs_finite_pass(update, span)  # measured or not, a NaN upload gets its finite check
