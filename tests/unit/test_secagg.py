"""Secure aggregation's math and state machines (edgefed.secagg), in one process through the real codec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgefed.config import ConfigError, config_from_dict
from edgefed.demo import run_demo
from edgefed.errors import UsageError
from edgefed.secagg import ring, shamir
from edgefed.secagg.errors import SecAggRefused
from edgefed.secagg.simulate import run_round
from edgefed.wire import ControlMessage, MessageError, SecAggAdvert, SecAggShares, SecAggUnmask
from edgefed.wire.secagg_messages import b64

BOUND = 0.05


def _updates(count: int, length: int = 257, seed: int = 7) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(seed)
    deltas = {f"w{i:02d}": rng.normal(0, BOUND / 2, length) for i in range(count)}
    samples = {name: int(rng.integers(1, 200)) for name in deltas}
    return deltas, samples


def _quantized(deltas: dict[str, np.ndarray], samples: dict[str, int]) -> dict[str, np.ndarray]:
    return {name: ring.quantize(delta, BOUND, samples[name]) for name, delta in deltas.items()}


def _plain_fedavg(deltas: dict[str, np.ndarray], samples: dict[str, int], names: list[str]) -> np.ndarray:
    """Sample-weighted mean of the same quantized updates, in float64, without any masking."""
    levels = {n: np.rint(np.clip(deltas[n], -BOUND, BOUND) * ring.LEVELS / BOUND) * BOUND / ring.LEVELS for n in names}
    total = sum(samples[n] for n in names)
    return sum(levels[n] * samples[n] for n in names) / total  # type: ignore[return-value]


def test_shamir_any_threshold_of_shares_rebuilds_and_fewer_do_not() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5])
    assert shamir.reconstruct({x: shares[x] for x in (1, 3, 5)}) == secret
    assert shamir.reconstruct({x: shares[x] for x in (2, 4, 5)}) == secret
    try:  # two points of a degree-2 polynomial: another value, most often not even 32 bytes long
        fewer: bytes | None = shamir.reconstruct({x: shares[x] for x in (1, 2)})
    except ValueError:
        fewer = None
    assert fewer != secret


def test_masks_cancel_and_the_average_equals_fedavg_on_the_quantized_updates() -> None:
    deltas, samples = _updates(5)
    quantized = _quantized(deltas, samples)
    result = run_round(quantized, samples, threshold=3)
    assert result.faults == [] and result.survivors == sorted(deltas)
    plain_sum = sum(q.view(np.int32).astype(np.int64) for q in quantized.values())
    assert np.array_equal(result.sum.view(np.int32).astype(np.int64), plain_sum)  # exact, bit for bit
    mean = ring.dequantize_sum(result.sum, BOUND, result.total_weight)
    np.testing.assert_allclose(mean, _plain_fedavg(deltas, samples, sorted(deltas)), rtol=1e-12, atol=1e-15)


def test_the_chief_decodes_no_single_update() -> None:
    deltas, samples = _updates(4)
    quantized = _quantized(deltas, samples)
    result = run_round(quantized, samples, threshold=3)
    assert len(result.traffic.decoded) == 4
    for seen in result.traffic.decoded:
        for update in quantized.values():
            assert not np.array_equal(seen, update)
            assert np.mean(seen == update) < 0.01  # masked: no more coordinates agree than chance


def test_a_worker_dropped_after_sharing_keys_is_recovered() -> None:
    deltas, samples = _updates(5)
    quantized = _quantized(deltas, samples)
    result = run_round(quantized, samples, threshold=3, dropouts={"w02": "mask"})
    assert result.survivors == ["w00", "w01", "w03", "w04"]
    survivors_sum = sum(quantized[n].view(np.int32).astype(np.int64) for n in result.survivors)
    assert np.array_equal(result.sum.view(np.int32).astype(np.int64), survivors_sum)
    assert result.total_weight == sum(samples[n] for n in result.survivors)


def test_a_survivor_silent_at_unmasking_is_covered_by_the_others() -> None:
    deltas, samples = _updates(5)
    quantized = _quantized(deltas, samples)
    result = run_round(quantized, samples, threshold=3, dropouts={"w01": "unmask", "w03": "mask"})
    expected = sum(quantized[n].view(np.int32).astype(np.int64) for n in ["w00", "w01", "w02", "w04"])
    assert np.array_equal(result.sum.view(np.int32).astype(np.int64), expected)


def test_below_the_threshold_the_chief_refuses_to_unmask() -> None:
    deltas, samples = _updates(5)
    quantized = _quantized(deltas, samples)
    with pytest.raises(SecAggRefused, match="below the threshold 3: refusing to unmask"):
        run_round(quantized, samples, threshold=3, dropouts={"w00": "mask", "w01": "mask", "w02": "mask"})
    with pytest.raises(SecAggRefused, match="answered the unmask request, below the threshold"):
        run_round(quantized, samples, threshold=3, dropouts={"w00": "unmask", "w01": "unmask", "w02": "unmask"})


def test_the_threshold_is_raised_to_a_majority_of_the_roster() -> None:
    deltas, samples = _updates(6)
    quantized = _quantized(deltas, samples)
    with pytest.raises(SecAggRefused, match="below the threshold 4"):  # configured 2, roster 6: 4
        run_round(quantized, samples, threshold=2, dropouts={n: "mask" for n in ["w00", "w01", "w02"]})


def _forged_advert(sender: str, phase: str, message: ControlMessage) -> ControlMessage:
    if sender == "w01" and phase == "advert":
        assert isinstance(message, SecAggAdvert)
        return dataclasses.replace(message, c_public=b64(bytes(32)))  # keys the signature does not cover
    return message


def _lying_shares(sender: str, phase: str, message: ControlMessage) -> ControlMessage:
    if sender == "w02" and phase == "unmask":
        assert isinstance(message, SecAggUnmask)
        return SecAggUnmask({name: b64(bytes(66)) for name in message.seed_shares}, {})
    if sender == "w03" and phase == "share":
        assert isinstance(message, SecAggShares)
        return SecAggShares(message.commitment, dict(list(message.shares.items())[:1]))
    return message


def test_hostile_messages_cost_only_their_sender() -> None:
    deltas, samples = _updates(5)
    quantized = _quantized(deltas, samples)
    result = run_round(quantized, samples, threshold=3, tamper=_forged_advert)
    assert [fault.sender for fault in result.faults] == ["w01"]
    assert "signature" in result.faults[0].reason
    assert result.survivors == ["w00", "w02", "w03", "w04"]
    # w03 addresses its shares to one peer only (dropped); w02 answers the unmask with zeros: the
    # chief rebuilds every seed from other subsets of shares, checked against the commitments
    result = run_round(quantized, samples, threshold=3, tamper=_lying_shares)
    assert [fault.sender for fault in result.faults] == ["w03"]
    expected = sum(quantized[n].view(np.int32).astype(np.int64) for n in result.survivors)
    assert np.array_equal(result.sum.view(np.int32).astype(np.int64), expected)


@pytest.mark.parametrize("body", [
    {"name": "w1", "c_public": "AAAA", "s_public": b64(bytes(32)), "signature": b64(bytes(64))},
    {"name": "w1", "c_public": b64(bytes(32)), "s_public": b64(bytes(32)), "signature": "!" * 88},
    {"name": "", "c_public": b64(bytes(32)), "s_public": b64(bytes(32)), "signature": b64(bytes(64))},
    {"name": "w1", "c_public": b64(bytes(32)), "s_public": 5, "signature": b64(bytes(64))},
])
def test_malformed_adverts_are_refused_with_one_line(body: dict[str, object]) -> None:
    with pytest.raises(MessageError, match="SECAGG_ADVERT"):
        SecAggAdvert.from_body(body)


def test_an_unmask_answer_may_not_reveal_both_shares_of_a_worker() -> None:
    share = b64(bytes(66))
    with pytest.raises(MessageError, match="both shares"):
        SecAggUnmask({"w1": share}, {"w1": share})


def test_config_refuses_what_secure_aggregation_rules_out() -> None:
    base = {"node": {"name": "chief", "role": "chief"}}
    config = config_from_dict({**base, "federation": {"secure_aggregation": True}})
    assert config.federation.secure_aggregation
    for extra, words in [({"aggregation": "median"}, "needs aggregation 'fedavg'"),
                         ({"screen_factor": 3.0}, "rules out screen_factor"),
                         ({"compression": "int8"}, "set compression to 'none'"),
                         ({"secure_aggregation_threshold": 1}, "must be >= 2")]:
        with pytest.raises(ConfigError, match=words):
            config_from_dict({**base, "federation": {"secure_aggregation": True, **extra}})
    config = config_from_dict({**base, "federation": {"secure_aggregation": True, "broadcast_compression": "int8"}})
    assert config.federation.broadcast_compression == "int8"  # the public global's encoding: orthogonal


@pytest.mark.parametrize("options", [{"aggregation": "krum"}, {"compression": "fp16"}])
def test_the_demo_refuses_those_combinations_before_starting_anything(options: dict[str, str],
                                                                      tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--secure-aggregation needs --aggregation fedavg and --compression none"):
        run_demo(2, 1, str(tmp_path / "demo"), secure_aggregation=True, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "demo").exists()


def test_a_late_advert_is_left_out_of_the_round_without_a_fault() -> None:
    from edgefed.secagg.chief_round import ChiefRound
    from edgefed.secagg.simulate import identities
    from edgefed.secagg.worker_round import WorkerRound

    names = ["w0", "w1", "w2", "w3"]
    private, directory = identities(names)
    chief = ChiefRound(5, 16, 2, directory)
    for name in names[:3]:
        chief.add_advert(name, WorkerRound(name, 5, private[name], directory).advert())
    roster = chief.roster()
    chief.add_advert("w3", WorkerRound("w3", 5, private["w3"], directory).advert())
    assert [advert["name"] for advert in roster.adverts] == names[:3] and chief.advertised == set(names[:3])


def test_a_diverged_step_is_named_in_the_worker_log_before_it_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    from edgefed.federation.secure_worker import step_from

    start = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]
    trained = [np.array([[0.01, np.nan], [np.inf, -0.02]], np.float32), np.array([0.0, 0.03, -np.inf], np.float32)]
    with caplog.at_level("WARNING", logger="edgefed.federation.secure_worker"):
        step = step_from(trained, start, 4)
    assert "round 4: 3 of 7 coordinates of this worker's step are NaN or Inf" in caplog.text
    assert list(ring.quantize(step, 0.05).view(np.int32)) == [25, 0, 127, -51, 0, 76, -127]
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgefed.federation.secure_worker"):
        step_from([np.ones(3, np.float32)], [np.zeros(3, np.float32)], 5)
    assert caplog.text == ""
