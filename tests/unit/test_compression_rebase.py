"""Compressor.rebase / compress_trained: the worker's error feedback without a copy of the global weights."""

from __future__ import annotations

import numpy as np
import pytest

from edgefed.compression import CompressionError, Compressor, decode_dense, parse_compression


def weights(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((30, 9)).astype(np.float32), np.arange(4, dtype=np.int32) * seed]


@pytest.mark.parametrize("text", ["fp16", "int8", "topk:0.1", "topk:0.1+int8"])
def test_rebased_feedback_sends_what_compress_update_sends(text: str) -> None:
    kept_copy, no_copy = Compressor(parse_compression(text)), Compressor(parse_compression(text))
    for round_ in range(5):
        base, trained = weights(round_), weights(round_ + 100)
        no_copy.rebase(base)
        base[0].fill(np.nan)  # the caller may reuse or drop the global weights after rebase: none is kept
        base[1].fill(-1)
        got, want = no_copy.compress_trained(trained), kept_copy.compress_update(trained, weights(round_))
        np.testing.assert_allclose(decode_dense(got[0]), decode_dense(want[0]), atol=1e-5)
        np.testing.assert_array_equal(got[1], trained[1] - weights(round_)[1])  # exact, in its dtype
        mine, theirs = no_copy.residuals[0], kept_copy.residuals[0]
        assert mine is not None and theirs is not None
        np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_a_second_rebase_or_a_nan_starts_clean_instead_of_corrupting() -> None:
    compressor = Compressor(parse_compression("int8"))
    with pytest.raises(CompressionError, match="rebase first"):
        compressor.compress_trained(weights(1))
    compressor.rebase(weights(1))
    compressor.rebase(weights(2))  # no update in between (e.g. a rejoin): only the latest base counts
    sent = compressor.compress_trained(weights(3))
    np.testing.assert_allclose(decode_dense(sent[0]), weights(3)[0] - weights(2)[0], atol=0.05)
    compressor.rebase(weights(3))
    poisoned = weights(4)
    poisoned[0][0, 0] = np.nan
    with pytest.raises(CompressionError, match="NaN"):
        compressor.compress_trained(poisoned)
    assert compressor.residual_norm() == 0
    compressor.rebase(weights(5))
    sent = compressor.compress_trained(weights(6))
    np.testing.assert_allclose(decode_dense(sent[0]), weights(6)[0] - weights(5)[0], atol=0.05)
