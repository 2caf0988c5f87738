"""Hostile compressed uploads against a real chief over mutual TLS on loopback: a bad scale, indices
out of range, NaN values, the wrong encoding or top-k count each cost only the worker that sent them;
the honest worker's updates keep being averaged."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgefed.compression import Compressor, parse_compression
from edgefed.config import NodeConfig
from edgefed.federation.chief import ChiefSession
from edgefed.pki import NodeCredentials
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.transport import TransportError, client_context, connect_tls
from edgefed.wire import EncodedTensor, Encoding, MessageType, encode_control_frame, encode_tensor_frame
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for

ChiefFactory = Callable[[str], tuple[ChiefSession, int]]


@pytest.fixture
def chief_with(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes
) -> Iterator[ChiefFactory]:
    """start(compression): a chief in this process, listening, and worker1 (same setting) as a process."""
    chiefs: list[ChiefSession] = []

    def start(compression: str) -> tuple[ChiefSession, int]:
        port = free_port()
        settings = {"rounds": 100, "round_timeout": 60.0, "compression": compression}
        chief = build_chief(make_config("chief", "chief", port, min_workers=2, **settings), ledger=False)
        chiefs.append(chief)
        chief.listen()
        processes.edgefed("worker", "--config", str(write_config("worker1", "worker", port, **settings)),
                          log_name="worker1")
        return chief, port

    yield start
    for chief in chiefs:
        chief.close()


class Mallory:
    """A worker of the deployment that says the right compression, then sends what the test says."""

    def __init__(self, pki_dir: Path, port: int, compression: str) -> None:
        self.conn = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "mallory")))
        self.conn.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": 50, "compression": compression})])
        self.setting = parse_compression(compression)

    def next_weights(self) -> tuple[int, list[np.ndarray]]:
        while (frame := self.conn.recv()).type is not MessageType.WEIGHTS:
            pass
        assert frame.tensors is not None
        return frame.round, frame.tensors

    def honest_frame(self, round_: int, model: list[np.ndarray]) -> bytes:
        tensors = Compressor(self.setting).compress_update([w + 0.01 for w in model], model)
        return b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, round_, tensors, 50))

    def send(self, data: bytes) -> None:
        self.conn.send([data])


def data_offset(compression: str, model: list[np.ndarray]) -> int:
    """Where the first tensor's data starts in an UPDATE frame (after the frame and tensor headers)."""
    tensors = Compressor(parse_compression(compression)).compress_update(model, model)
    return len(encode_tensor_frame(MessageType.UPDATE, 0, tensors, 50)[0])


def errors_of(chief: ChiefSession) -> list[str]:
    return [e["message"] for e in json.loads(chief.status.path.read_text())["errors"]]


@pytest.mark.parametrize(("compression", "patch", "why"), [
    ("int8", lambda at, _m: (at, struct.pack("<f", float("nan"))), "scale that is negative, not finite"),
    ("int8", lambda at, _m: (at, struct.pack("<f", -1.0)), "scale that is negative, not finite"),
    ("topk:0.1", lambda at, _m: (at + 4 * 63, struct.pack("<I", 640)), "index 640 outside its 640 elements"),
    ("topk:0.1+int8", lambda at, _m: (at + 4, struct.pack("<I", 0)), "not strictly increasing"),
], ids=["int8-nan-scale", "int8-negative-scale", "topk-index-out-of-range", "topk-int8-repeated-index"])
def test_a_malformed_encoding_drops_only_its_sender(
    compression: str, patch: Callable[[int, list[np.ndarray]], tuple[int, bytes]], why: str,
    chief_with: ChiefFactory, pki_dir: Path,
) -> None:
    chief, port = chief_with(compression)
    mallory = Mallory(pki_dir, port, compression)
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    round_, model = mallory.next_weights()
    frame = bytearray(mallory.honest_frame(round_, model))
    where, value = patch(data_offset(compression, model), model)
    frame[where:where + len(value)] = value
    mallory.send(bytes(frame))
    result = chief.average(weights, 100)
    assert sorted(result.participants) == ["chief", "worker1"]
    assert all(np.isfinite(w).all() for w in result.weights)
    wait_for(lambda: any("mallory left" in e and why in e for e in errors_of(chief)), 10, f"mallory dropped: {why}")
    with pytest.raises(TransportError):  # the chief closed mallory's connection
        mallory.next_weights()
    assert "worker1" in chief.average(result.weights, 100).participants


def test_nan_values_and_wrong_shapes_are_rejected_and_the_sender_stays(chief_with: ChiefFactory, pki_dir: Path) -> None:
    chief, port = chief_with("fp16")
    mallory = Mallory(pki_dir, port, "fp16")
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)

    round_, model = mallory.next_weights()
    poisoned = [EncodedTensor.build(Encoding.FP16, w.shape, np.full(w.size, np.nan, np.float16)) for w in model]
    mallory.send(b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, round_, poisoned, 50)))
    reject = mallory.conn.recv()
    assert reject.type is MessageType.REJECT and reject.body["code"] == "non-finite", reject.body
    result = chief.average(weights, 100)
    assert sorted(result.participants) == ["chief", "worker1"] and all(np.isfinite(w).all() for w in result.weights)

    round_, model = mallory.next_weights()
    mallory.send(b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, round_, model, 50)))  # float32
    reject = mallory.conn.recv()
    assert reject.type is MessageType.REJECT and reject.body["code"] == "shape-mismatch", reject.body
    assert "tensor 0 is float32[64, 10], expected fp16[64, 10]" in reject.body["reason"]
    result = chief.average(result.weights, 100)

    round_, model = mallory.next_weights()  # an honest one now: taken
    mallory.send(mallory.honest_frame(round_, model))
    assert sorted(chief.average(result.weights, 100).participants) == ["chief", "mallory", "worker1"]


def test_a_topk_upload_keeping_more_than_the_setting_is_refused_before_its_data(
    chief_with: ChiefFactory, pki_dir: Path
) -> None:
    chief, port = chief_with("topk:0.1")
    mallory = Mallory(pki_dir, port, "topk:0.1")
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    round_, model = mallory.next_weights()
    greedy = Compressor(parse_compression("topk:0.5")).compress_update([w + 0.01 for w in model], model)
    mallory.send(b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, round_, greedy, 50)))
    reject = mallory.conn.recv()
    assert reject.type is MessageType.REJECT and reject.body["code"] == "shape-mismatch"
    assert "tensor 0 is topk[64, 10] keeping 320, expected topk[64, 10] keeping 64" in reject.body["reason"]
    assert sorted(chief.average(weights, 100).participants) == ["chief", "worker1"]
