"""Transfer records: signing, ids, parsing, and the pairing of sender and receiver records."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.contracts.events import TransferEvent
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import TransferRecord, disagreement
from edgefed.ledger.verify import check_transfers

DIGEST = hashlib.sha256(b"weights of round 3").hexdigest()


def event(direction: str = "send", **changes: object) -> TransferEvent:
    observer = "chief" if direction == "send" else "worker1"
    fields = dict(
        round=3,
        sender="chief",
        receiver="worker1",
        observer=observer,
        direction=direction,
        participants=3,
        bytes=5328,
        sha256=DIGEST,
        seconds=0.004,
        kind="weights",
        timestamp=1_700_000_000.25,
    )
    fields.update(changes)
    return TransferEvent(**fields)  # type: ignore[arg-type]


def test_record_carries_the_event_and_verifies_with_the_observer_key() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    record = TransferRecord.from_event(event(), "demo").signed(key)
    assert (record.process, record.round, record.sender, record.receiver) == ("demo", 3, "chief", "worker1")
    assert (record.participants, record.bytes, record.sha256, record.time) == (3, 5328, DIGEST, 1_700_000_000.25)
    record.verify(key.public_key())


def test_id_is_stable_and_depends_on_every_signed_field() -> None:
    record = TransferRecord.from_event(event(), "demo")
    assert record.id == TransferRecord.from_event(event(), "demo").id
    assert len(record.id) == 32
    ids = {
        dataclasses.replace(record, **{name: value}).id
        for name, value in (
            ("round", 4),
            ("bytes", 5329),
            ("sha256", "0" * 64),
            ("participants", 2),
            ("time", 1.0),
        )
    }
    assert record.id not in ids and len(ids) == 5


def test_any_changed_field_breaks_the_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    record = TransferRecord.from_event(event(), "demo").signed(key)
    forged = dataclasses.replace(record, bytes=record.bytes + 1)
    with pytest.raises(LedgerError, match="bad signature"):
        forged.verify(key.public_key())


def test_another_key_does_not_verify() -> None:
    record = TransferRecord.from_event(event(), "demo").signed(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(LedgerError, match=f"record {record.id}: bad signature"):
        record.verify(ed25519.Ed25519PrivateKey.generate().public_key())


def test_round_trip_through_json_keeps_id_and_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    record = TransferRecord.from_event(event(), "demo").signed(key)
    import json

    parsed = TransferRecord.from_dict(json.loads(record.to_json()))
    assert parsed == record
    parsed.verify(key.public_key())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bytes": "5328"}, "field 'bytes' must be int"),
        ({"extra": 1}, "unknown field 'extra'"),
        ({"id": "0" * 32}, "id does not match its content"),
        ({"direction": "sideways"}, "direction must be 'send' or 'receive'"),
        ({"observer": "worker1"}, "observer 'worker1' is not the sender"),
        ({"sha256": "xyz"}, "sha256 must be 64 lowercase hex"),
        ({"round": True}, "field 'round' must be int"),
    ],
)
def test_malformed_records_are_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    document = TransferRecord.from_event(event(), "demo").to_dict()
    document.update(change)
    with pytest.raises(LedgerError, match=message):
        TransferRecord.from_dict(document)


def test_missing_field_is_named() -> None:
    document = TransferRecord.from_event(event(), "demo").to_dict()
    del document["sha256"]
    with pytest.raises(LedgerError, match="field 'sha256' is missing"):
        TransferRecord.from_dict(document)


def test_send_and_receive_records_of_one_transfer_agree() -> None:
    send = TransferRecord.from_event(event("send", timestamp=10.0), "demo")
    receive = TransferRecord.from_event(event("receive", timestamp=10.1, seconds=0.2), "demo")
    assert disagreement(send, receive) is None
    proven, problems = check_transfers([("a", send), ("b", receive)])
    assert (proven, problems) == (1, [])


def test_a_digest_mismatch_is_reported_as_disagreement() -> None:
    send = TransferRecord.from_event(event("send"), "demo")
    receive = TransferRecord.from_event(event("receive", sha256="1" * 64), "demo")
    proven, problems = check_transfers([("entry 2", send), ("entry 3", receive)])
    assert proven == 0
    assert len(problems) == 1
    assert problems[0].where == "entry 2"
    assert "disagree on sha256" in problems[0].message and "entry 3" in problems[0].message


def test_one_sided_transfers_are_reported() -> None:
    send = TransferRecord.from_event(event("send", round=1), "demo")
    receive = TransferRecord.from_event(event("receive", round=2), "demo")
    proven, problems = check_transfers([("entry 2", send), ("entry 3", receive)])
    assert proven == 0
    assert [p.where for p in problems] == ["entry 2", "entry 3"]
    assert "no matching receive record from worker1" in problems[0].message
    assert "no matching send record from chief" in problems[1].message


def test_a_repeated_transfer_needs_two_records_on_each_side() -> None:
    first_send = TransferRecord.from_event(event("send", timestamp=1.0), "demo")
    second_send = TransferRecord.from_event(event("send", timestamp=2.0), "demo")
    receive = TransferRecord.from_event(event("receive", timestamp=1.5), "demo")
    proven, problems = check_transfers([("e2", first_send), ("e3", second_send), ("e4", receive)])
    assert proven == 1
    assert len(problems) == 1 and "no matching receive record" in problems[0].message
