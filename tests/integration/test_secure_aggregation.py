"""federation.secure_aggregation end to end: a real chief and real workers over mutual TLS on
loopback (WorkerSession threads whose updates the test chooses, hand-made peers for the hostile and
dying ones, and `edgefed demo --secure-aggregation` as processes)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgefed.config import NodeConfig
from edgefed.federation.chief import ChiefSession
from edgefed.federation.secure_chief import SecureChief
from edgefed.federation.secure_sum import SecureSum
from edgefed.federation.session import RoundResult
from edgefed.federation.worker import FederationRefused
from edgefed.pki import NodeCredentials, ledger_public_keys
from edgefed.secagg import ring
from edgefed.secagg.worker_round import WorkerRound
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.transport import client_context, connect_tls
from edgefed.wire import (
    MessageType,
    SecAggInbox,
    SecAggRoster,
    decode_message,
    encode_control_frame,
    encode_message,
    encode_tensor_frame,
)
from edgefed.wiring import build_chief, build_worker
from tests.conftest import REPO, free_port

BOUND = 0.05
SAMPLES = {"chief": 100, "worker1": 40, "worker2": 70, "worker3": 55, "mallory": 50}


def delta_for(name: str, like: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(sum(map(ord, name)))
    return [rng.normal(0, BOUND / 3, w.shape).astype(np.float32) for w in like]


class Peer:
    """mallory: a node of the deployment speaking the secure-aggregation phases by hand."""

    def __init__(self, pki_dir: Path, port: int) -> None:
        self.conn = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "mallory")))
        self.conn.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": SAMPLES["mallory"],
                                                                    "secure_aggregation": True})])
        self.key = NodeCredentials.load(pki_dir, "mallory").ledger_signing_key()
        self.directory = ledger_public_keys(pki_dir)

    def next_of(self, kind: MessageType) -> tuple[int, object]:
        while (frame := self.conn.recv()).type is not kind:
            pass
        return frame.round, frame.tensors if kind is MessageType.WEIGHTS else decode_message(frame)

    def mask_then_die(self, quantized: np.ndarray, upload: bool = True) -> None:
        """Every phase up to the masked update, then the connection closes (killed after masking).
        upload False: killed once its masks are set up (keys and shares sent), before its masked update."""
        number, _ = self.next_of(MessageType.WEIGHTS)
        machine = WorkerRound("mallory", number, self.key, self.directory)
        self.conn.send([encode_message(machine.advert(), number)])
        _, roster = self.next_of(MessageType.SECAGG_ROSTER)
        assert isinstance(roster, SecAggRoster)
        self.conn.send([encode_message(machine.share(roster), number)])
        _, inbox = self.next_of(MessageType.SECAGG_INBOX)
        assert isinstance(inbox, SecAggInbox)
        masked = machine.mask(inbox, quantized)
        if not upload:
            self.conn.close()
            return
        self.conn.send(encode_tensor_frame(MessageType.UPDATE, number, [masked.view(np.int32)], SAMPLES["mallory"]))
        self.next_of(MessageType.SECAGG_UNMASK_REQUEST)
        self.conn.close()


@pytest.fixture
def federation(make_config: Callable[..., NodeConfig]) -> Iterator[Callable[..., tuple[ChiefSession, int]]]:
    chiefs: list[ChiefSession] = []

    def start(**settings: object) -> tuple[ChiefSession, int]:
        port = free_port()
        merged = {"secure_aggregation": True, "secure_aggregation_bound": BOUND, "rounds": 100,
                  "round_timeout": 30.0, **settings}
        chief = build_chief(make_config("chief", "chief", port, **merged), ledger=False)
        chiefs.append(chief)
        chief.listen()
        return chief, port

    yield start
    for chief in chiefs:
        chief.close()


def run_workers(make_config: Callable[..., NodeConfig], port: int, names: list[str], settings: dict[str, object],
                rounds: int = 1) -> tuple[list[threading.Thread], dict[str, RoundResult]]:
    """Real WorkerSessions in threads: each joins, then for rounds rounds sends the global weights it
    holds + its chosen delta; keeps the last answer (its weights copied: a decoder may reuse them)."""
    results: dict[str, RoundResult] = {}

    def work(name: str) -> None:
        session = build_worker(make_config(name, "worker", port, secure_aggregation=True,
                                           secure_aggregation_bound=BOUND, rounds=100, **settings), ledger=False)
        try:
            weights = [np.array(w) for w in session.start().weights]
            for _ in range(rounds):
                trained = [w + d for w, d in zip(weights, delta_for(name, weights), strict=True)]
                result = session.average(trained, SAMPLES[name])
                weights = [np.array(w) for w in result.weights]
                results[name] = dataclasses.replace(result, weights=weights)
        finally:
            session.close()

    threads = [threading.Thread(target=work, args=(name,), daemon=True, name=name) for name in names]
    for thread in threads:
        thread.start()
    return threads, results


def quantized_step(name: str, weights: list[np.ndarray]) -> np.ndarray:
    """What a node sends before masking: its float32 weights' step from the global ones, quantized."""
    trained = [w + d for w, d in zip(weights, delta_for(name, weights), strict=True)]
    return ring.quantize(ring.flatten(trained) - ring.flatten(weights), BOUND, SAMPLES[name])


def expected_average(weights: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Plain FedAvg over the same quantized deltas (shared scale, sample-weighted), in one process."""
    flat = ring.flatten(weights)
    total = np.zeros(flat.size, np.float64)
    for name in names:
        step = ring.flatten([w + d for w, d in zip(weights, delta_for(name, weights), strict=True)]) - flat
        total += np.rint(np.clip(step, -BOUND, BOUND) * ring.LEVELS / BOUND) * SAMPLES[name]
    mean = flat + total * (BOUND / ring.LEVELS) / sum(SAMPLES[name] for name in names)
    return [part.astype(np.float32) for part in ring.unflatten(mean, [w.shape for w in weights])]


def test_the_chief_sees_only_the_sum_and_survives_a_worker_killed_after_masking(
    federation: Callable[..., tuple[ChiefSession, int]], make_config: Callable[..., NodeConfig], pki_dir: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    decoded: list[np.ndarray] = []  # every array the chief's aggregation path decodes from a worker
    original = SecureChief.masked
    monkeypatch.setattr(SecureChief, "masked", lambda self, name, frame, tensors: (
        decoded.extend(np.asarray(t).reshape(-1).view(ring.RING_DTYPE).copy() for t in tensors),
        original(self, name, frame, tensors))[1])
    caplog.set_level(logging.DEBUG)
    chief, port = federation(min_workers=4)
    weights = SoftmaxTrainer().get_weights()
    mallory = Peer(pki_dir, port)
    mallory_q = quantized_step("mallory", weights)
    dying = threading.Thread(target=mallory.mask_then_die, args=(mallory_q,), daemon=True)
    dying.start()
    threads, results = run_workers(make_config, port, ["worker1", "worker2", "worker3"], {})
    chief.start(weights)
    own = [w + d for w, d in zip(weights, delta_for("chief", weights), strict=True)]
    result = chief.average(own, SAMPLES["chief"])
    for thread in [dying, *threads]:
        thread.join(timeout=60)
    names = ["chief", "worker1", "worker2", "worker3", "mallory"]
    assert sorted(result.participants) == sorted(names)
    for got, want in zip(result.weights, expected_average(weights, names), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert sorted(results) == ["worker1", "worker2", "worker3"]
    for name in results:
        np.testing.assert_array_equal(results[name].weights[0], result.weights[0])

    quantized = [quantized_step(n, weights) for n in ("mallory", "worker1", "worker2", "worker3")]
    assert len(decoded) == 4
    reach = ring.LEVELS * max(SAMPLES.values())
    for seen in decoded:
        assert not any(np.array_equal(seen, q) for q in quantized)
        # a quantized update lies within +-reach; a masked one is spread over the whole ring
        assert np.mean(np.abs(seen.view(np.int32).astype(np.int64)) <= reach) < 0.01
    log_text = caplog.text
    assert "mallory" in log_text  # its departure is logged, and nothing of anyone's update is
    for q in quantized:
        assert np.array2string(q[:6].view(np.int32))[1:-1].strip() not in log_text
    # nor is anything the chief wrote (status, history, checkpoint): no 64 bytes of a worker's quantized
    # step or of its trained float32 weights appear in any file of its state directory
    chief.close()
    written = b"".join(path.read_bytes() for path in sorted((tmp_path / "state" / "chief").rglob("*"))
                       if path.is_file())
    assert written
    for name, q in zip(("mallory", "worker1", "worker2", "worker3"), quantized, strict=True):
        trained = ring.flatten([w + d for w, d in zip(weights, delta_for(name, weights), strict=True)])
        assert q.tobytes()[:64] not in written and trained.astype(np.float32).tobytes()[:64] not in written


def test_a_worker_killed_before_its_masked_update_has_its_masks_rebuilt(
    federation: Callable[..., tuple[ChiefSession, int]], make_config: Callable[..., NodeConfig], pki_dir: Path,
) -> None:
    """mallory sent its keys and shares, then died: the others' masks with it are rebuilt from their
    shares of its key, and the round averages the rest exactly."""
    chief, port = federation(min_workers=4)
    weights = SoftmaxTrainer().get_weights()
    mallory = Peer(pki_dir, port)
    dying = threading.Thread(target=mallory.mask_then_die, args=(quantized_step("mallory", weights), False),
                             daemon=True)
    dying.start()
    threads, results = run_workers(make_config, port, ["worker1", "worker2", "worker3"], {})
    chief.start(weights)
    own = [w + d for w, d in zip(weights, delta_for("chief", weights), strict=True)]
    result = chief.average(own, SAMPLES["chief"])
    for thread in [dying, *threads]:
        thread.join(timeout=60)
    names = ["chief", "worker1", "worker2", "worker3"]
    assert sorted(result.participants) == names
    for got, want in zip(result.weights, expected_average(weights, names), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert sorted(results) == names[1:]


@pytest.mark.parametrize("broadcast", ["fp16", "int8"])
def test_secure_aggregation_sums_steps_from_the_compressed_broadcast_the_workers_hold(
    broadcast: str, federation: Callable[..., tuple[ChiefSession, int]], make_config: Callable[..., NodeConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """federation.broadcast_compression with secure aggregation: the chief's global is the model the
    workers decoded (int8: a keyframe, then deltas), so the unmasked average is plain FedAvg of the
    quantized steps from it, round after round."""
    averages: list[list[np.ndarray]] = []  # copies of what each round's secure sum averaged to
    original = SecureSum.average

    def average(self: SecureSum) -> list[np.ndarray]:
        mean = original(self)
        averages.append([np.array(part) for part in mean])  # the broadcast's encoder then rounds mean in place
        return mean

    monkeypatch.setattr(SecureSum, "average", average)
    chief, port = federation(min_workers=2, broadcast_compression=broadcast)
    names = ["chief", "worker1", "worker2"]
    threads, results = run_workers(make_config, port, names[1:], {"broadcast_compression": broadcast}, rounds=2)
    start = chief.start(SoftmaxTrainer().get_weights())
    held = [np.array(w) for w in start.weights]
    for _ in range(2):
        own = [w + d for w, d in zip(held, delta_for("chief", held), strict=True)]
        result = chief.average(own, SAMPLES["chief"])
        assert sorted(result.participants) == names
        for got, want in zip(averages[-1], expected_average(held, names), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        held = [np.array(w) for w in result.weights]
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == names[1:]
    for name in results:  # every worker holds, bit for bit, the global the chief summed from
        for got, want in zip(results[name].weights, held, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("chief_secure", [True, False])
def test_a_worker_with_the_other_secure_aggregation_setting_is_refused_for_good(
    chief_secure: bool, make_config: Callable[..., NodeConfig],
) -> None:
    """HELLO carries the worker's federation.secure_aggregation: a mismatch is a bad-hello, not a
    plain update refused round after round (or a SECAGG_ADVERT the chief drops)."""
    port = free_port()
    chief = build_chief(make_config("chief", "chief", port, secure_aggregation=chief_secure), ledger=False)
    worker = build_worker(make_config("worker1", "worker", port, secure_aggregation=not chief_secure), ledger=False)
    try:
        chief.listen()
        with pytest.raises(FederationRefused, match="secure aggregation") as refused:
            worker.start()
        on, off = ("off", "on") if chief_secure else ("on", "off")
        assert f"(bad-hello): the worker has secure aggregation {on}, this federation {off}" in str(refused.value)
        assert json.loads(chief.status.path.read_text())["refused"][-1]["code"] == "bad-hello"
    finally:
        worker.close()
        chief.close()


def test_below_the_threshold_the_round_is_refused_and_not_adopted(
    federation: Callable[..., tuple[ChiefSession, int]], make_config: Callable[..., NodeConfig], pki_dir: Path,
) -> None:
    chief, port = federation(min_workers=4, secure_aggregation_threshold=4)
    weights = SoftmaxTrainer().get_weights()
    mallory = Peer(pki_dir, port)
    dying = threading.Thread(target=mallory.mask_then_die, daemon=True,
                             args=(quantized_step("mallory", weights),))
    dying.start()
    threads, results = run_workers(make_config, port, ["worker1", "worker2", "worker3"], {})
    chief.start(weights)
    result = chief.average([w + 0.01 for w in weights], SAMPLES["chief"])
    for thread in [dying, *threads]:
        thread.join(timeout=60)
    for got, before in zip(result.weights, weights, strict=True):
        np.testing.assert_array_equal(got, before)  # not adopted: the previous model stays
    assert sorted(results) == ["worker1", "worker2", "worker3"]  # the workers go on with it
    for name in results:
        np.testing.assert_array_equal(results[name].weights[0], weights[0])
    errors = [e["message"] for e in json.loads(chief.status.path.read_text())["errors"]]
    assert any("3 workers answered the unmask request, below the threshold 4: refusing to unmask" in e
               for e in errors), errors


@pytest.mark.parametrize("advert", [
    {"name": "mallory", "c_public": "AAAA", "s_public": "x", "signature": "y"},  # malformed
    "forged",  # well-formed, signed with a key that is not mallory's
])
def test_a_hostile_secagg_message_costs_only_its_sender(
    advert: object, federation: Callable[..., tuple[ChiefSession, int]], make_config: Callable[..., NodeConfig],
    pki_dir: Path,
) -> None:
    chief, port = federation(min_workers=3)
    weights = SoftmaxTrainer().get_weights()
    mallory = Peer(pki_dir, port)
    threads, results = run_workers(make_config, port, ["worker1", "worker2"], {})
    chief.start(weights)

    def misbehave() -> None:
        number, _ = mallory.next_of(MessageType.WEIGHTS)
        if advert == "forged":
            other = NodeCredentials.load(pki_dir, "worker4").ledger_signing_key()
            mallory.conn.send([encode_message(WorkerRound("mallory", number, other, mallory.directory).advert(),
                                              number)])
        else:
            mallory.conn.send([encode_control_frame(MessageType.SECAGG_ADVERT, number, advert)])  # type: ignore[arg-type]

    hostile = threading.Thread(target=misbehave, daemon=True)
    hostile.start()
    result = chief.average([w + 0.01 for w in weights], SAMPLES["chief"])
    for thread in [hostile, *threads]:
        thread.join(timeout=60)
    assert sorted(result.participants) == ["chief", "worker1", "worker2"]
    assert "mallory" not in chief.participants()
    assert sorted(results) == ["worker1", "worker2"]


LONG = os.environ.get("EDGEFED_SECAGG_LONG") == "1"  # make test-secagg sets it


@pytest.mark.parametrize("ledger", [
    False,
    pytest.param(True, marks=pytest.mark.skipif(not LONG, reason="the demo with its ledger takes ~30 s: "
                                                "make test-secagg (EDGEFED_SECAGG_LONG=1)")),
])
def test_the_demo_runs_with_secure_aggregation(ledger: bool, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "edgefed", "demo", "--workers", "2", "--rounds", "2",
                          "--interval-steps", "5", *([] if ledger else ["--no-ledger"]), "--secure-aggregation",
                          "--json", "--state-dir", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["secure_aggregation"] is True and summary["rounds"] == 2
    history = [json.loads(line) for line in (tmp_path / "demo" / "chief" / "history.jsonl").read_text().splitlines()]
    assert [sorted(line["participants"]) for line in history] == [["chief", "worker1", "worker2"]] * 2
    if ledger:  # every masked upload is a transfer both sides signed, with the same digest
        verify = subprocess.run([sys.executable, "-m", "edgefed", "ledger", "verify", "--json", "--pki",
                                 str(tmp_path / "demo" / "pki"), str(tmp_path / "demo" / "chief")],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        report = json.loads(verify.stdout)
        assert report["ok"] and report["problems"] == [], report
        assert report["proven_transfers"] == 2 * 2 + 2 * 3, report  # 2 workers: 2 masked updates, 3 broadcasts each
