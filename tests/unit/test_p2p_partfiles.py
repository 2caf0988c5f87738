"""The receiving side's part files: resume only the very same file, check it end to end, keep nothing bad."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from edgefed.p2p.errors import TransferFailed, TransferRefused
from edgefed.p2p.files import DuplicateFile, FileOffer, IncomingFile, file_sha256
from edgefed.wire import ProtocolError

DATA = os.urandom(300_000)
OFFER = FileOffer("data.bin", len(DATA), hashlib.sha256(DATA).hexdigest())
LIMIT = 1 << 20


def _receive(directory: Path, data: bytes, offer: FileOffer = OFFER, chunk: int = 65536) -> IncomingFile:
    incoming = IncomingFile(directory, offer, LIMIT)
    for start in range(incoming.offset, len(data), chunk):
        incoming.write(data[start : start + chunk])
    return incoming


def test_a_whole_file_is_published_only_after_its_sha256_checks(tmp_path: Path) -> None:
    incoming = _receive(tmp_path, DATA)
    assert not (tmp_path / "data.bin").exists()
    assert (tmp_path / ".data.bin.part").exists()
    assert incoming.finish() == tmp_path / "data.bin"
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_an_interrupted_file_resumes_where_it_stopped(tmp_path: Path) -> None:
    first = IncomingFile(tmp_path, OFFER, LIMIT)
    first.write(DATA[:100_000])
    first.suspend()
    second = IncomingFile(tmp_path, OFFER, LIMIT)
    assert second.offset == 100_000
    second.write(DATA[100_000:])
    second.finish()
    assert file_sha256(tmp_path / "data.bin") == OFFER.sha256


def test_a_different_file_under_the_same_name_starts_from_zero(tmp_path: Path) -> None:
    first = IncomingFile(tmp_path, OFFER, LIMIT)
    first.write(DATA[:100_000])
    first.suspend()
    other = os.urandom(1000)
    second = IncomingFile(tmp_path, FileOffer("data.bin", 1000, hashlib.sha256(other).hexdigest()), LIMIT)
    assert second.offset == 0
    second.write(other)
    second.finish()
    assert (tmp_path / "data.bin").read_bytes() == other


def test_a_part_file_without_its_description_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / ".data.bin.part").write_bytes(DATA[:5000])
    assert IncomingFile(tmp_path, OFFER, LIMIT).offset == 0


def test_corrupted_content_is_refused_and_deleted(tmp_path: Path) -> None:
    first = IncomingFile(tmp_path, OFFER, LIMIT)
    first.write(DATA[:100_000])
    first.suspend()
    # The kept prefix was damaged on disk: the re-hash on resume carries the damage to the final check.
    with (tmp_path / ".data.bin.part").open("r+b") as handle:
        handle.write(b"\xff" * 10)
    second = IncomingFile(tmp_path, OFFER, LIMIT)
    second.write(DATA[second.offset :])
    with pytest.raises(TransferFailed, match="sha256"):
        second.finish()
    assert list(tmp_path.iterdir()) == []


def test_a_short_file_is_refused(tmp_path: Path) -> None:
    incoming = _receive(tmp_path, DATA[:-1])
    with pytest.raises(TransferFailed, match="ended at"):
        incoming.finish()
    assert list(tmp_path.iterdir()) == []


def test_bytes_past_the_offered_size_are_a_protocol_error(tmp_path: Path) -> None:
    incoming = _receive(tmp_path, DATA)
    with pytest.raises(ProtocolError, match="past the offered size"):
        incoming.write(b"x")


def test_files_over_the_limit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TransferRefused, match="over this receiver's limit"):
        IncomingFile(tmp_path, OFFER, max_size=len(DATA) - 1)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_different_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"mine")
    with pytest.raises(TransferRefused, match="already exists"):
        IncomingFile(tmp_path, OFFER, LIMIT)
    assert (tmp_path / "data.bin").read_bytes() == b"mine"


def test_the_same_file_again_is_recognised(tmp_path: Path) -> None:
    _receive(tmp_path, DATA).finish()
    with pytest.raises(DuplicateFile):
        IncomingFile(tmp_path, OFFER, LIMIT)


def test_the_part_description_records_the_offer(tmp_path: Path) -> None:
    IncomingFile(tmp_path, OFFER, LIMIT).suspend()
    assert json.loads((tmp_path / ".data.bin.part.json").read_text()) == OFFER.to_body()
    assert (tmp_path / ".data.bin.part").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [({"name": "a", "size": -1, "sha256": "0" * 64}, "size"),
     ({"name": "a", "size": True, "sha256": "0" * 64}, "size"),
     ({"name": "a", "size": 1, "sha256": "xyz"}, "sha256"),
     ({"name": 5, "size": 1, "sha256": "0" * 64}, "name")],
)
def test_malformed_offers_are_protocol_errors(body: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        FileOffer.from_body(body)


def test_an_empty_file_is_a_file_too(tmp_path: Path) -> None:
    empty = FileOffer("empty.txt", 0, hashlib.sha256(b"").hexdigest())
    IncomingFile(tmp_path, empty, LIMIT).finish()
    assert (tmp_path / "empty.txt").read_bytes() == b""
