"""Checkpoints and the PKI directory layout."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from edgefed import pki
from edgefed.contracts.status import StatusFile, status_path
from edgefed.federation.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


def test_checkpoint_round_trip_and_no_leftovers(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(2.0)]
    save_checkpoint(tmp_path, Checkpoint(4, weights, finished=True))
    save_checkpoint(tmp_path, Checkpoint(5, weights))
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None and loaded.round == 5 and not loaded.finished
    for got, want in zip(loaded.weights, weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.efed"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.efed").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"checkpoint\.efed is not a usable checkpoint: bad magic"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, Checkpoint(2, [np.ones(100, np.float32)]))
    data = (tmp_path / "checkpoint.efed").read_bytes()
    (tmp_path / "checkpoint.efed").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"checkpoint\.efed is truncated"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.efed").write_bytes(data + b"x")
    with pytest.raises(CheckpointError, match="bytes after its checkpoint"):
        load_checkpoint(tmp_path)


def test_pki_layout_and_key_modes(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    creds = pki.issue_node(tmp_path, "chief", ["10.0.0.5", "chief.example.org"])
    for path in (tmp_path / "ca.key", creds.key, creds.ledger_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    cert = creds.certificate()
    assert cert.subject.rfc4514_string() == "CN=chief"
    sans = cert.extensions.get_extension_for_class(pki.x509.SubjectAlternativeName).value
    assert {str(v) for v in sans.get_values_for_type(pki.x509.DNSName)} == {"chief", "chief.example.org"}
    assert [str(v) for v in sans.get_values_for_type(pki.x509.IPAddress)] == ["10.0.0.5"]
    keys = pki.ledger_public_keys(tmp_path)
    assert pki.public_key_hex(keys["chief"]) == creds.ledger_pub.read_text().strip()
    signature = creds.ledger_signing_key().sign(b"record")
    keys["chief"].verify(signature, b"record")
    assert 364 < pki.days_until_expiry(creds.cert) <= 365


def test_pki_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    with pytest.raises(pki.PKIError, match="already exists"):
        pki.init_ca(tmp_path)
    pki.issue_node(tmp_path, "w1")
    with pytest.raises(pki.PKIError, match="already exists"):
        pki.issue_node(tmp_path, "w1")
    with pytest.raises(pki.PKIError, match="is not valid"):
        pki.issue_node(tmp_path, "../evil")
    with pytest.raises(pki.PKIError, match=r"missing .*tls\.crt"):
        pki.NodeCredentials.load(tmp_path, "nobody")
    with pytest.raises(pki.PKIError, match="no CA"):
        pki.issue_node(tmp_path / "empty", "w2")


def test_status_file_is_rewritten_atomically(tmp_path: Path) -> None:
    status = StatusFile(tmp_path, "chief", "chief", role="chief", round=0)
    status.update(round=3)
    for index in range(15):
        status.error(f"problem {index}")
    import json

    doc = json.loads(status_path(tmp_path, "chief").read_text())
    assert doc["round"] == 3 and doc["component"] == "chief"
    assert next(e["message"] for e in doc["errors"]) == "problem 5"  # only the last 10 are kept
    assert sorted(p.name for p in (tmp_path / "status").iterdir()) == ["chief.json"]
