"""File records (kind "file", p2p transfers): ids, the signed name, pairing, and the p2p recorder.

The weight-record test pins the id and the signature a version 1 record had before file records
existed: those values are stored in every ledger written so far, so they must never change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.config import config_from_dict
from edgefed.contracts.events import TransferEvent
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.files import file_transfer_record, file_transfer_recorder
from edgefed.ledger.outbox import Outbox
from edgefed.ledger.records import TransferRecord, canonical_json
from edgefed.ledger.verify import check_transfers
from edgefed.pki import NodeCredentials

CONTENT = hashlib.sha256(b"the file's bytes").hexdigest()
FIXED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def file_record(direction: str = "send", **changes: Any) -> TransferRecord:
    fields: dict[str, Any] = dict(
        process="demo",
        sender="worker1",
        receiver="worker2",
        direction=direction,
        name="model.tflite",
        size=123_456,
        sha256=CONTENT,
        seconds=0.25,
        time=1_700_000_100.0 if direction == "send" else 1_700_000_100.5,
    )
    fields.update(changes)
    return TransferRecord.for_file(**fields)


def p2p_transfer(direction: str = "receive", **changes: Any) -> dict[str, Any]:
    """A record as edgefed.p2p hands it to on_file_transfer."""
    transfer: dict[str, Any] = {
        "sender": "worker1",
        "receiver": "worker2",
        "name": "results.csv",
        "size": 2048,
        "sha256": CONTENT,
        "direction": direction,
        "resumed_from": 0,
        "seconds": 0.125,
        "at": "2026-11-21T06:30:00+00:00",
    }
    transfer.update(changes)
    return transfer


# -- weight records are exactly what they were ---------------------------------------------------
def test_weight_records_keep_their_canonical_form_id_and_signature() -> None:
    digest = hashlib.sha256(b"weights of round 3").hexdigest()
    event = TransferEvent(3, "chief", "worker1", "chief", "send", 3, 5328, digest, 0.004, "weights", 1_700_000_000.25)
    record = TransferRecord.from_event(event, "demo")
    assert "name" not in record.to_dict()
    assert record.signed_bytes == canonical_json(
        {
            "bytes": 5328, "direction": "send", "kind": "weights", "observer": "chief", "participants": 3,
            "process": "demo", "receiver": "worker1", "round": 3, "seconds": 0.004, "sender": "chief",
            "sha256": digest, "time": 1_700_000_000.25, "v": 1,
        }
    )
    # Values computed by the code before file records existed (commit 1398083).
    assert record.id == "b0828f0baa2b9afbbe0c6ad038be0a69"
    assert record.signed(FIXED_KEY).signature == (
        "e4de2f76123b6b5812675d4d3cb07e194d427c1c9af2f44a5aa14dadf22df69a"
        "c03c7cb7c29da32424a4e29bcae8a143b88802e31b03f9aadccb0e8f2cec3107"
    )


def test_a_weight_record_may_not_carry_a_name() -> None:
    digest = hashlib.sha256(b"w").hexdigest()
    event = TransferEvent(1, "chief", "worker1", "chief", "send", 2, 10, digest, 0.1, "weights", 1.0)
    document = TransferRecord.from_event(event, "demo").to_dict()
    del document["id"]
    with pytest.raises(LedgerError, match="only file records carry a name"):
        TransferRecord.from_dict({**document, "name": "x.bin"})


# -- file records --------------------------------------------------------------------------------
def test_file_record_fields() -> None:
    send, receive = file_record("send"), file_record("receive")
    assert (send.kind, send.round, send.participants, send.bytes, send.name) == ("file", 0, 2, 123_456, "model.tflite")
    assert (send.observer, receive.observer) == ("worker1", "worker2")
    assert json.loads(send.signed_bytes)["name"] == "model.tflite"


def test_file_record_id_is_stable_and_includes_the_name() -> None:
    record = file_record()
    assert record.id == file_record().id and len(record.id) == 32
    changes: list[dict[str, Any]] = [{"name": "model2.tflite"}, {"bytes": 1}, {"sha256": "0" * 64}, {"receiver": "w3"}]
    changed = {dataclasses.replace(record, **change).id for change in changes}
    assert record.id not in changed and len(changed) == 4


def test_the_signature_covers_the_name() -> None:
    record = file_record().signed(FIXED_KEY)
    record.verify(FIXED_KEY.public_key())
    renamed = dataclasses.replace(record, name="other.tflite")
    with pytest.raises(LedgerError, match="bad signature"):
        renamed.verify(FIXED_KEY.public_key())
    # A claimed id that belonged to the original name is refused before any signature check.
    document = {**record.to_dict(), "name": "other.tflite"}
    with pytest.raises(LedgerError, match="id does not match its content"):
        TransferRecord.from_dict(document)


def test_file_record_round_trips_through_json() -> None:
    record = file_record("receive").signed(FIXED_KEY)
    parsed = TransferRecord.from_dict(json.loads(record.to_json()))
    assert parsed == record and parsed.id == record.id
    parsed.verify(FIXED_KEY.public_key())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "a file record needs the file's name"),
        ({"name": ""}, "file name must be 1 to 255 bytes"),
        ({"name": "é" * 128}, "file name must be 1 to 255 bytes"),
        ({"name": "evil\x1b[2J.txt"}, "control or format character"),
        ({"name": 7}, "field 'name' must be str"),
    ],
)
def test_bad_file_names_are_refused(change: dict[str, Any], message: str) -> None:
    document = file_record().to_dict()
    del document["id"]
    document.update(change)
    if document["name"] is None:
        del document["name"]
    with pytest.raises(LedgerError, match=message):
        TransferRecord.from_dict(document)


def test_both_sides_of_a_file_transfer_prove_it() -> None:
    proven, problems = check_transfers([("entry 2", file_record("send")), ("entry 3", file_record("receive"))])
    assert (proven, problems) == (1, [])


def test_sides_that_disagree_prove_nothing() -> None:
    send = file_record("send")
    other_content = file_record("receive", sha256="1" * 64)
    proven, problems = check_transfers([("entry 2", send), ("entry 3", other_content)])
    assert proven == 0
    assert [p.where for p in problems] == ["entry 2"]
    assert "file 'model.tflite' worker1->worker2" in problems[0].message
    assert "disagree on sha256" in problems[0].message

    renamed = file_record("receive", name="model.tflite.1")
    proven, problems = check_transfers([("entry 2", send), ("entry 3", renamed)])
    assert proven == 0
    assert "no matching receive record from worker2" in problems[0].message
    assert "no matching send record from worker1" in problems[1].message


def test_a_file_and_a_weight_transfer_never_pair() -> None:
    event = TransferEvent(0, "worker1", "worker2", "worker2", "receive", 2, 123_456, CONTENT, 0.1, "update", 1.0)
    update = TransferRecord.from_event(event, "demo")
    proven, problems = check_transfers([("entry 2", file_record("send")), ("entry 3", update)])
    assert proven == 0 and len(problems) == 2


# -- from p2p's callback record to a signed record in the outbox --------------------------------
def test_a_p2p_record_becomes_the_observers_file_record() -> None:
    record = file_transfer_record(p2p_transfer("receive"), "demo", "worker2")
    assert (record.sender, record.receiver, record.observer, record.direction) == (
        "worker1", "worker2", "worker2", "receive"
    )
    assert (record.name, record.bytes, record.sha256, record.seconds) == ("results.csv", 2048, CONTENT, 0.125)
    assert record.time == dt.datetime(2026, 11, 21, 6, 30, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("node", "changes", "message"),
    [
        ("worker1", {}, "names 'worker2' as the receiver, but this recorder signs for 'worker1'"),
        ("worker2", {"sender": "unauthenticated@127.0.0.1:5555"}, "not an authenticated node name"),
        ("worker2", {"direction": "both"}, "direction must be 'send' or 'receive'"),
        ("worker2", {"at": "yesterday"}, "not a p2p transfer record"),
        ("worker2", {"size": "2048"}, "wrong types"),
        ("worker2", {"sha256": "abc"}, "sha256 must be 64 lowercase hex"),
    ],
)
def test_p2p_records_that_cannot_be_recorded_are_refused(node: str, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        file_transfer_record({**p2p_transfer("receive"), **changes}, "demo", node)


def node_config(pki_dir: Path, state_dir: Path, name: str, **ledger: Any) -> Any:
    return config_from_dict(
        {
            "node": {"name": name, "role": "worker", "pki_dir": str(pki_dir), "state_dir": str(state_dir)},
            "ledger": {"process": "demo", **ledger},
        }
    )


def test_the_recorder_signs_with_the_node_key_and_stores_in_the_outbox(pki_dir: Path, tmp_path: Path) -> None:
    config = node_config(pki_dir, tmp_path / "state", "worker2")
    with file_transfer_recorder(config) as recorder:
        record = recorder(p2p_transfer("receive"))
        recorder(p2p_transfer("receive"))  # the same callback twice: one record (ids make it idempotent)
    outbox = Outbox.for_state_dir(tmp_path / "state")
    try:
        pending = outbox.pending(10)
    finally:
        outbox.close()
    assert [item.record for item in pending] == [record]
    key = NodeCredentials(pki_dir, "worker2").ledger_signing_key()
    pending[0].record.verify(key.public_key())
    assert pending[0].record.process == "demo"


def test_no_recorder_when_the_ledger_is_disabled(pki_dir: Path, tmp_path: Path) -> None:
    config = node_config(pki_dir, tmp_path / "state", "worker2", enabled=False)
    with pytest.raises(LedgerError, match=r"ledger\.enabled is false for worker2"):
        file_transfer_recorder(config)
