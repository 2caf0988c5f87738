"""federation.broadcast_compression without sockets: the chief's GlobalEncoder and the worker's
GlobalDecoder, every frame through the real codec (encoded, read back by a FrameReader)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefed.compression import (
    BroadcastError,
    BroadcastSettingError,
    GlobalDecoder,
    GlobalEncoder,
    encode_fp16,
    encode_int8,
    parse_broadcast_compression,
)
from edgefed.config import ConfigError, config_from_dict
from edgefed.wire import FrameReader, Hello, MessageType, Tensor, encode_message, encode_tensor_frame

SHAPES = [(64, 10), (10,)]


def model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for shape in SHAPES] + [np.array([7], np.int64)]


def through_codec(round_number: int, tensors: list[Tensor]) -> tuple[list[Tensor], int]:
    """The tensors as a worker decodes them from the frame's bytes, and the frame's size."""
    data = b"".join(encode_tensor_frame(MessageType.WEIGHTS, round_number, tensors, 0))
    (frame,) = FrameReader().feed(data)
    assert frame.decoded is not None
    return frame.decoded, len(data)


def moved(weights: list[np.ndarray], rng: np.random.Generator, scale: float = 0.01) -> list[np.ndarray]:
    """A fresh 'average': the held model plus a small step (counters step by one)."""
    return [w + rng.normal(scale=scale, size=w.shape).astype(w.dtype) if w.dtype.kind == "f" else w + 1
            for w in weights]


@pytest.mark.parametrize("setting", ["fp16", "int8"])
def test_the_worker_holds_exactly_the_chiefs_global_and_the_error_does_not_grow(setting: str) -> None:
    """Over 200 rounds: the decoded model is bit for bit the chief's global (what it trains from, folds
    onto and checkpoints), and the gap to the unquantized trajectory stays one quantization step wide
    (server-side error feedback) instead of growing with the rounds."""
    rng = np.random.default_rng(1)
    encoder, decoder = GlobalEncoder(setting), GlobalDecoder(setting)
    held = encoder.start(model())
    exact = [w.astype(np.float64) for w in model()]  # the trajectory without any quantization
    decoded = decoder.receive(0, through_codec(0, encoder.full(held))[0])
    assert decoded is not None and all(np.array_equal(a, b) for a, b in zip(decoded, held, strict=True))
    gaps = []
    for round_number in range(1, 201):
        average = moved(held, rng)
        exact = [e + (a - h) for e, a, h in zip(exact, average, held, strict=True)]
        held = encoder.advance(average, round_number)
        delta = encoder.delta_for(round_number)
        assert (delta is not None) == (setting == "int8")
        decoded = decoder.receive(round_number, through_codec(round_number, delta or encoder.full(held))[0])
        assert decoded is not None
        for got, want in zip(decoded, held, strict=True):
            np.testing.assert_array_equal(got, want)
        gaps.append(max(float(np.abs(e - h).max()) for e, h in zip(exact[:2], held[:2], strict=True)))
    # one step of fp16 at |w| ~ 4, or of int8 on a delta ~ 0.04: the last 100 rounds no wider than the first
    bound = 4 * 2.0**-11 if setting == "fp16" else 0.04 / 127
    assert max(gaps) <= bound
    assert max(gaps[100:]) <= 1.5 * max(gaps[:100])


def test_int8_deltas_are_a_quarter_of_a_float32_frame_and_fp16_half() -> None:
    big = [np.random.default_rng(2).normal(size=(256, 1024)).astype(np.float32)]

    def frame_size(setting: str) -> int:
        """The frame a worker holding round 0 gets for round 1."""
        encoder = GlobalEncoder(setting)
        held = encoder.start([w.copy() for w in big])
        held = encoder.advance([w + 0.01 for w in held], 1)
        return through_codec(1, encoder.delta_for(1) or encoder.full(held))[1]

    none, fp16, int8 = (frame_size(setting) for setting in ("none", "fp16", "int8"))
    assert none / fp16 >= 1.99 and none / int8 >= 3.9


def test_a_delta_goes_only_onto_the_model_of_the_round_before() -> None:
    encoder, decoder = GlobalEncoder("int8"), GlobalDecoder("int8")
    held = encoder.start(model())
    rng = np.random.default_rng(3)
    first = encoder.advance(moved(held, rng), 1)
    one = through_codec(1, encoder.delta_for(1) or [])[0]
    with pytest.raises(BroadcastError, match="a delta broadcast for round 1 but this worker holds no model"):
        decoder.receive(1, one)  # a new connection (or a restarted worker): only a keyframe will do
    assert decoder.receive(1, through_codec(1, encoder.full(first))[0]) is not None  # the keyframe
    encoder.advance(moved(first, rng), 2)
    encoder.advance(moved(first, rng), 3)
    three = through_codec(3, encoder.delta_for(3) or [])[0]
    with pytest.raises(BroadcastError, match="round 3 but this worker holds round 1's model"):
        decoder.receive(3, three)  # it missed round 2
    decoder.reset()
    assert decoder.receive(0, through_codec(0, held)[0]) is not None
    assert decoder.receive(0, through_codec(0, held)[0]) is not None  # the same round again: taken
    # an older full model on the same connection is stale: ignored, the newer one stays
    assert decoder.receive(2, through_codec(2, first)[0]) is not None
    assert decoder.receive(1, through_codec(1, held)[0]) is None and decoder.round == 2


def test_refused_broadcasts_say_why_in_one_line() -> None:
    weights = model()
    nan = [w.copy() for w in weights]
    nan[0][3, 3] = np.nan
    huge = [np.full((64, 10), 3e38, np.float32), np.zeros(10, np.float32), np.array([7], np.int64)]
    cases: list[tuple[str, list[tuple[int, list[Tensor]]], str]] = [
        ("int8", [(0, weights), (1, [encode_int8(np.zeros((10, 64), np.float32)), *weights[1:]])],
         r"delta broadcast tensor 0 \(int8 \[10, 64\]\) does not fit the model's float32\[64, 10\]"),
        ("int8", [(0, weights), (1, [encode_int8(weights[0]), encode_int8(weights[1])])],
         "a delta broadcast of 2 tensors for a model of 3"),
        ("int8", [(0, weights), (1, [encode_int8(weights[0]), encode_int8(weights[1]), np.array([1], np.int32)])],
         r"delta broadcast tensor 2 \(plain \[1\]\) does not fit the model's int64\[1\]"),
        ("int8", [(0, huge), (1, [encode_int8(huge[0]), encode_int8(huge[1]), huge[2]])], "takes the model to NaN"),
        ("int8", [(0, nan)], "broadcast tensor 0 holds NaN or Inf"),
        ("int8", [(0, weights), (1, weights[:2])], r"a broadcast of \[float32\[64, 10\], float32\[10\]\] does not fit"),
        ("fp16", [(0, weights)], "broadcast tensor 0 is plain float32; federation.broadcast_compression is fp16"),
        ("fp16", [(0, [encode_fp16(nan[0]), encode_fp16(nan[1]), nan[2]])], "broadcast tensor 0 holds NaN or Inf"),
        ("fp16", [(0, [encode_int8(weights[0]), encode_fp16(weights[1]), weights[2]])],
         "broadcast tensor 0 is int8; federation.broadcast_compression is fp16"),
    ]
    for setting, frames, message in cases:
        decoder = GlobalDecoder(setting)
        *good, (last_round, last) = frames
        for round_number, tensors in good:
            assert decoder.receive(round_number, through_codec(round_number, tensors)[0]) is not None
        with pytest.raises(BroadcastError, match=message) as caught:
            decoder.receive(last_round, through_codec(last_round, last)[0])
        assert "\n" not in str(caught.value)


def test_the_setting_and_its_hello_field() -> None:
    parsed = [parse_broadcast_compression(v) for v in (None, "none", " FP16 ", "int8")]
    assert parsed == ["none", "none", "fp16", "int8"]
    for bad in ("int4", "topk:0.1", 8):
        with pytest.raises(BroadcastSettingError, match=r"federation\.broadcast_compression .* is not one of none"):
            parse_broadcast_compression(bad)
    with pytest.raises(ConfigError, match=r"federation\.broadcast_compression 'int4' is not one of none, fp16, int8"):
        config_from_dict({"node": {"name": "w", "role": "worker"}, "federation": {"broadcast_compression": "int4"}})
    # a HELLO says the setting; `none` is not written (a worker from before says nothing: none)
    assert b"broadcast" not in encode_message(Hello(num_samples=1))
    (frame,) = FrameReader().feed(encode_message(Hello(num_samples=1, broadcast="int8")))
    assert Hello.from_body(frame.body).broadcast == "int8"
