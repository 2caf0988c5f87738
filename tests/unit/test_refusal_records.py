"""Refusal events as records (ledger), as status entries, and FILE_RESULT's duplicate flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.contracts.events import EventBus, RefusalEvent, TransferEvent
from edgefed.contracts.status import MAX_REFUSED, StatusFile
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import MAX_REASON_CHARS, TransferRecord
from edgefed.ledger.verify import check_transfers
from edgefed.wire import FileOffer, FileResult, FrameReader, decode_message, encode_message


def refusal(message: str = "tensor 0 contains NaN or Inf", code: str = "non-finite") -> RefusalEvent:
    return RefusalEvent("mallory", 3, code, message, "chief", "update", timestamp=1.5)


def test_a_refusal_record_is_signed_parsed_back_and_pairs_with_nothing() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    record = TransferRecord.from_refusal(refusal(), "edgefed").signed(key)
    again = TransferRecord.from_dict(json.loads(record.to_json()))
    again.verify(key.public_key())
    assert (again.kind, again.sender, again.receiver, again.code, again.reason) == (
        "refusal", "mallory", "chief", "non-finite", "tensor 0 contains NaN or Inf")
    assert check_transfers([("entry 1", again)]) == (0, [])


def test_a_reason_is_cleaned_and_clipped_and_weight_records_keep_their_bytes() -> None:
    record = TransferRecord.from_refusal(refusal("bad\x1b[2J" + "x" * 2000), "edgefed")
    assert record.reason is not None and "\x1b" not in record.reason and len(record.reason) == MAX_REASON_CHARS
    weights = TransferRecord.from_event(
        TransferEvent(1, "chief", "w1", "w1", "receive", 2, 10, "a" * 64, 0.1, "weights", timestamp=2.0), "edgefed")
    assert "code" not in weights.to_dict() and "reason" not in weights.to_dict()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [({"code": "Non Finite"}, "needs a code"), ({"reason": ""}, "needs a reason"),
     ({"sha256": "a" * 64}, "carries no bytes"),
     ({"direction": "send", "observer": "mallory"}, "recorded by the chief"),
     ({"kind": "update", "sha256": "a" * 64}, "only refusal records carry a code")],
)
def test_malformed_refusal_records_are_refused(changes: dict[str, object], problem: str) -> None:
    document = {**TransferRecord.from_refusal(refusal(), "edgefed").to_dict(), **changes}
    del document["id"]
    with pytest.raises(LedgerError, match=problem):
        TransferRecord.from_dict(document)


def test_the_status_file_keeps_the_last_refusals_and_counts_them_all(tmp_path: Path) -> None:
    status = StatusFile(tmp_path, "chief", "chief")
    bus = EventBus()
    bus.subscribe_refusals(status.refused)
    for index in range(MAX_REFUSED + 5):
        bus.refused(RefusalEvent(f"w{index}", index, "outlier", "far" * 200, "chief", "update"))
    document = json.loads(status.path.read_text())
    assert document["refused_total"] == MAX_REFUSED + 5
    assert [entry["worker"] for entry in document["refused"]] == [f"w{i}" for i in range(5, MAX_REFUSED + 5)]
    assert all(len(entry["message"]) <= 300 for entry in document["refused"])


def test_file_result_says_duplicate_as_a_flag() -> None:
    sha = "0" * 64
    result = FileResult(True, "already received", False, FileOffer("a.bin", 1, sha), duplicate=True)
    [frame] = FrameReader().feed(encode_message(result))
    assert decode_message(frame) == result and frame.body["duplicate"] is True
    plain = FileResult(True, "received", False, FileOffer("a.bin", 1, sha))
    [frame] = FrameReader().feed(encode_message(plain))
    assert "duplicate" not in frame.body and not FileResult.from_body(frame.body).duplicate
