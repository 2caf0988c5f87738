"""Streaming weighted averaging and update validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefed.federation.aggregation import StreamingAggregator, UploadSlots, first_non_finite, spec_mismatch
from edgefed.wire import TensorSpec, specs_of


def test_weighted_mean_matches_numpy_reference() -> None:
    rng = np.random.default_rng(3)
    updates = [[rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
               for _ in range(5)]
    samples = [10, 1, 250, 33, 7]
    aggregator = StreamingAggregator(specs_of(updates[0]))
    aggregator.add(updates[0], samples[0], "chief")
    for index, (update, count) in enumerate(zip(updates[1:], samples[1:], strict=True), start=1):
        aggregator.add_scaled_in_place([u.copy() for u in update], count, f"worker{index}")
    result = aggregator.average()
    for tensor_index in range(2):
        reference = np.average([u[tensor_index] for u in updates], axis=0, weights=samples)
        np.testing.assert_allclose(result[tensor_index], reference, rtol=1e-5, atol=1e-6)
        assert result[tensor_index].dtype == np.float32
    assert aggregator.contributors == ["chief", "worker1", "worker2", "worker3", "worker4"]
    assert aggregator.total_samples == sum(samples)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=8))
def test_average_of_equal_updates_is_that_update(samples: list[int]) -> None:
    update = [np.linspace(-1, 1, 7, dtype=np.float32)]
    aggregator = StreamingAggregator(specs_of(update))
    for count in samples:
        aggregator.add_scaled_in_place([update[0].copy()], count, "w")
    np.testing.assert_allclose(aggregator.average()[0], update[0], rtol=1e-5, atol=1e-6)


def test_float16_and_integer_tensors_keep_their_dtype() -> None:
    updates = [[np.array([1.0, 2.0], np.float16), np.array([1, 4], np.int64)],
               [np.array([3.0, 4.0], np.float16), np.array([2, 5], np.int64)]]
    aggregator = StreamingAggregator(specs_of(updates[0]))
    for update in updates:
        aggregator.add(update, 1, "w")
    half, whole = aggregator.average()
    assert half.dtype == np.float16 and whole.dtype == np.int64
    np.testing.assert_array_equal(half, [2.0, 3.0])
    np.testing.assert_array_equal(whole, [2, 4])  # 1.5 and 4.5 round half to even


def test_no_samples_is_an_error() -> None:
    aggregator = StreamingAggregator([TensorSpec("float32", (2,))])
    with pytest.raises(ValueError, match="no samples"):
        aggregator.average()


def test_non_finite_detection_names_the_tensor() -> None:
    ok = np.ones(10, np.float32)
    bad = np.ones(3_000_000, np.float32)
    bad[-1] = np.inf
    assert first_non_finite([ok, ok]) is None
    assert first_non_finite([ok, bad]) == 1
    assert first_non_finite([np.array([np.nan])]) == 0
    assert first_non_finite([np.array([1, 2], np.int64)]) is None


def test_spec_mismatch_explains() -> None:
    expected = [TensorSpec("float32", (3, 2)), TensorSpec("float32", (2,))]
    assert spec_mismatch(expected, expected) is None
    assert spec_mismatch(expected, expected[:1]) == "expected 2 tensors, got 1"
    wrong = [TensorSpec("float32", (2, 3)), TensorSpec("float64", (2,))]
    assert spec_mismatch(expected, wrong) == "tensor 0 is float32[2, 3], expected float32[3, 2]"


def test_upload_slots_hand_out_each_buffer_once() -> None:
    slots = UploadSlots([TensorSpec("float32", (4,))], 2)
    first, second = slots.acquire(), slots.acquire()
    assert first[0] is not second[0]
    slots.release(first)
    assert slots.acquire()[0] is first[0]
