"""Model records (provenance): built from the chief's ModelEvent, signed like every record, checked
field by field when read back; and the model digest they carry is the broadcast payload's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.contracts.events import EventBus, ModelEvent, TransferEvent
from edgefed.federation.provenance import ModelProvenance
from edgefed.federation.rounds import ClosedRound
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import TransferRecord
from edgefed.wire import Flags, MessageType, encode_tensor_frame, payload_sha256
from edgefed.wire.digest import weights_digest

A, B = "a" * 64, "b" * 64


def event(round_number: int = 3, previous: str = A, **changes: object) -> ModelEvent:
    fields: dict[str, object] = dict(
        round=round_number, sha256=B, bytes=19312, previous=previous,
        inputs=(("chief", ""), ("worker1", "c" * 64), ("worker2", "d" * 64)), observer="chief",
        timestamp=1_800_000_000.25,
    )
    fields.update(changes)
    return ModelEvent(**fields)  # type: ignore[arg-type]


def test_a_model_record_is_signed_and_read_back_unchanged() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    record = TransferRecord.from_model(event(), "edgefed").signed(key)
    assert (record.kind, record.sender, record.receiver, record.direction) == ("model", "chief", "chief", "send")
    assert record.participants == 3 and record.previous == A
    assert record.inputs == f"chief:local worker1:{'c' * 64} worker2:{'d' * 64}"
    assert record.model_inputs() == [("chief", "local"), ("worker1", "c" * 64), ("worker2", "d" * 64)]
    again = TransferRecord.from_dict(record.to_dict())
    assert again == record and again.id == record.id
    again.verify(key.public_key())
    # previous and inputs are signed: a changed input no longer verifies
    forged = dataclasses.replace(record, inputs=record.inputs.replace("c" * 64, "e" * 64))  # type: ignore[union-attr]
    with pytest.raises(LedgerError, match="bad signature"):
        forged.verify(key.public_key())


def test_the_round_0_model_has_no_previous_and_no_inputs() -> None:
    record = TransferRecord.from_model(event(0, "", inputs=()), "edgefed")
    assert record.previous == "" and record.inputs == "" and record.participants == 0
    with pytest.raises(LedgerError, match="only the round-0 model has no previous"):
        TransferRecord.from_model(event(2, ""), "edgefed")
    with pytest.raises(LedgerError, match="only the round-0 model has no previous"):
        TransferRecord.from_model(event(0, A), "edgefed")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": "worker1:xyz"}, "inputs must be"),
        ({"inputs": "worker1:" + "c" * 64 + "  chief:local"}, "inputs must be"),
        ({"inputs": "chief:local"}, "participants"),
        ({"previous": "AB" * 32}, "previous must be"),
        ({"receiver": "worker1"}, "the chief's own"),
        ({"direction": "receive"}, "the chief's own"),
    ],
)
def test_malformed_model_records_are_refused(change: dict[str, object], message: str) -> None:
    document = TransferRecord.from_model(event(), "edgefed").to_dict()
    document.pop("id")
    document.update(change)
    with pytest.raises(LedgerError, match=message):
        TransferRecord.from_dict(document)


def test_only_model_records_carry_previous_and_inputs() -> None:
    document = TransferRecord.from_model(event(), "edgefed").to_dict()
    document.pop("id")
    document.update(kind="weights", receiver="worker1")
    with pytest.raises(LedgerError, match="only model records carry previous and inputs"):
        TransferRecord.from_dict(document)


def test_the_model_digest_is_the_broadcast_payloads_whatever_the_round() -> None:
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal((64, 10)).astype(np.float32), rng.standard_normal(10).astype(np.float32)]
    digest, size = weights_digest(weights)
    for round_number, flags in ((0, Flags.NONE), (17, Flags.FINAL)):
        parts = encode_tensor_frame(MessageType.WEIGHTS, round_number, weights, 0, flags)
        assert payload_sha256(parts) == digest
    assert size > sum(w.nbytes for w in weights)  # the tensor header (shapes, dtypes) is part of it
    changed = [weights[0].copy(), weights[1]]
    changed[0][3, 3] = np.nextafter(changed[0][3, 3], np.float32(np.inf))
    assert weights_digest(changed)[0] != digest


def test_the_event_bus_hands_model_events_to_model_sinks_and_survives_a_failing_one() -> None:
    seen: list[ModelEvent] = []

    def broken(_: ModelEvent) -> None:
        raise RuntimeError("sink failed")

    bus = EventBus()
    bus.subscribe_models(broken)
    bus.subscribe_models(seen.append)
    bus.model(event())
    assert seen == [event()]


def test_the_chief_names_each_round_its_folded_uploads_and_ignores_other_round_numbers(tmp_path: Path) -> None:
    bus, models = EventBus(), list[ModelEvent]()
    bus.subscribe_models(models.append)
    provenance = ModelProvenance("chief", bus, enabled=True)
    start = [np.zeros((3, 2), np.float32)]
    provenance.started(0, start)

    def upload(worker: str, round_number: int, digest: str) -> None:
        bus.emit(TransferEvent(round_number, worker, "chief", "chief", "receive", 3, 100, digest, 0.1, "update"))

    upload("worker1", 0, "1" * 64)
    upload("worker1", 0, "9" * 64)  # a second upload for the round: refused by the rules, not what was folded
    upload("mallory", 10**9, "e" * 64)  # a far-off round number from a hostile worker: ignored
    upload("worker2", 1, "2" * 64)  # a fast worker already on the next round before the chief checkpointed
    first = [np.ones((3, 2), np.float32)]
    provenance.record(ClosedRound(first, 1, False, ["worker1", "chief"], 200))
    upload("worker1", 1, "3" * 64)
    provenance.record(ClosedRound([first[0] * 2], 2, True, ["worker2", "worker1", "chief"], 200))
    assert [(m.round, m.previous, m.inputs) for m in models] == [
        (0, "", ()),
        (1, weights_digest(start)[0], (("chief", ""), ("worker1", "1" * 64))),
        (2, weights_digest(first)[0], (("chief", ""), ("worker1", "3" * 64), ("worker2", "2" * 64))),
    ]
    assert models[2].sha256 == weights_digest([first[0] * 2])[0]
