"""The chief's side of federation.compression without sockets: every aggregation folds a compressed
delta exactly as it folds the rebuilt weights (global + decoded delta), and HELLO negotiation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefed.compression import Compressor, decode_dense, parse_compression
from edgefed.federation.compressed import Delta, received_update
from edgefed.federation.rounds import RoundBook, RoundRules, Seat
from edgefed.wire import Hello, MessageError, specs_of


def model(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((40, 7)).astype(np.float32), rng.standard_normal(7).astype(np.float32),
            np.arange(5, dtype=np.int64)]


def run_round(rule: str, compression: str, rebuilt: bool) -> list[np.ndarray]:
    """One round of five workers' compressed updates (one far off), folded as Deltas or rebuilt."""
    setting = parse_compression(compression)
    book: RoundBook[Seat] = RoundBook(RoundRules(3, aggregation=rule, compression=setting), "chief")
    start = model(0)
    book.begin(start, 0, False)
    book.contribute_own(start, 10)
    for index in range(5):
        trained = [w + (np.float32(0.1 * (index + 1)) if w.dtype.kind == "f" else 1) for w in model(index + 1)]
        if index == 4:
            trained = [w * 50 if w.dtype.kind == "f" else w for w in trained]
        tensors = Compressor(setting).compress_update(trained, start)
        update, span = received_update(tensors, setting, start)
        assert isinstance(update, Delta)
        if rebuilt:  # what a worker sending whole weights would have sent, decoded
            update = [w + decode_dense(t, "float64").astype(w.dtype) for w, t in zip(start, tensors, strict=True)]
        for _ in range(3 if index == 0 else 1):  # clip needs a few distances before it bounds anything
            book.distances.append(1.0)
        assert book.fold(f"w{index}", 0, update, 20, 0, span) is None
    return book.close_round(None).average


@pytest.mark.parametrize("rule", ["fedavg", "clip", "trimmed-mean", "median", "krum"])
@pytest.mark.parametrize("compression", ["fp16", "int8", "topk:0.2", "topk:0.2+int8"])
def test_every_rule_folds_a_delta_like_the_weights_it_stands_for(rule: str, compression: str) -> None:
    folded, reference = run_round(rule, compression, False), run_round(rule, compression, True)
    for got, want in zip(folded, reference, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_header_check_wants_the_settings_exact_specs() -> None:
    book: RoundBook[Seat] = RoundBook(RoundRules(3, compression=parse_compression("topk:0.1")), "chief")
    start = model(0)
    book.begin(start, 0, False)
    good = Compressor(parse_compression("topk:0.1")).compress_update(model(1), start)
    assert book.header_refusal(0, specs_of(good), 5) is None
    plain = book.header_refusal(0, specs_of(start), 5)
    assert plain is not None and plain.code == "shape-mismatch"
    assert "tensor 0 is float32[40, 7], expected topk[40, 7] keeping 28" in plain.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.sampled_from(["none", "fp16", "int8", "INT8", " topk:0.5 ", "topk:0.01+int8",
                                                         "topk:2", "topk:nan", "topk:0.1+fp16"])))
def test_any_hello_compression_is_taken_refused_or_a_bad_hello(value: str) -> None:
    try:
        hello = Hello(num_samples=1, compression=value)
    except MessageError as exc:
        assert exc.code == "bad-hello" and not 1 <= len(value) <= 64
        return
    book: RoundBook[Seat] = RoundBook(RoundRules(3, compression=parse_compression("int8")), "chief")
    refusal = book.compression_refusal(hello)
    if value.strip().lower() == "int8":
        assert refusal is None
    else:
        assert refusal is not None and refusal.code == "bad-hello" and "\n" not in refusal.reason.strip()
