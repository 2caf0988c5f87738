"""`edgefed ledger provenance`: a real Keras demo (chief + 2 workers as processes, mutual TLS, the
embedded ledger) exports model.tflite; the walk from that file back to round 0 verifies, and a changed
byte in the model, a manifest naming another model, or a round's model record missing are each
reported in one line with exit status 1 — on the embedded chain and through the Torii double."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from tfhelpers import ROOT, tf_subprocess_env

from edgefed import pki
from edgefed.config import dump_config
from edgefed.ledger.chain import ChainReader
from edgefed.ledger.records import TransferRecord

pytestmark = pytest.mark.slow

ROUNDS = 2
WORKERS = ("worker1", "worker2")


def edgefed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", *args], capture_output=True, text=True, timeout=300,
                          env=tf_subprocess_env(), cwd=ROOT)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("provenance") / "demo"
    done = edgefed("demo", "--trainer", "keras", "--workers", str(len(WORKERS)), "--rounds", str(ROUNDS),
                   "--interval-steps", "5", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr[-3000:]
    return state


@pytest.fixture
def copy(demo: Path, tmp_path: Path) -> Path:
    """The demo's model directory and chief state, to change without touching the shared run."""
    target = tmp_path / "demo"
    shutil.copytree(demo / "chief" / "model", target / "chief" / "model")
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        if (demo / "chief" / name).exists():
            shutil.copy2(demo / "chief" / name, target / "chief" / name)
    return target


def model_records(ledger: Path) -> list[tuple[int, TransferRecord]]:
    reader = ChainReader.open(ledger)
    try:
        return [(e.height, e.record()) for e in reader.entries() if e.kind == "record" and e.record().kind == "model"]
    finally:
        reader.close()


def test_an_untouched_model_is_traced_to_round_0_with_its_contributors(demo: Path) -> None:
    model = demo / "chief" / "model" / "model.tflite"
    traced = edgefed("ledger", "provenance", str(model), str(demo / "chief"))
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"provenance OK: {model} is model ")
    manifest = json.loads((model.parent / "manifest.json").read_text())
    assert manifest["model_sha256"][:16] in lines[0]
    rounds = {int(line.split()[1].rstrip(":")): line for line in lines[1:]}
    assert sorted(rounds) == list(range(ROUNDS + 1))
    assert "the initial weights" in rounds[0]
    # Every later round names each worker's update and the ledger entries of both sides of its upload.
    records = {height: record for height, record in model_records(demo / "chief" / "ledger.sqlite")}
    for number in range(1, ROUNDS + 1):
        assert "chief (own weights)" in rounds[number]
        for worker in WORKERS:
            assert f"{worker} (update " in rounds[number]
        (on_ledger,) = [r for r in records.values() if r.round == number]
        for node, update in on_ledger.model_inputs():
            assert node == "chief" or update[:12] in rounds[number]
    # the .keras file of the same export traces to the same model
    keras = edgefed("ledger", "provenance", str(model.parent / "model.keras"), str(demo / "chief"))
    assert keras.returncode == 0, keras.stderr


def test_one_changed_byte_in_the_model_is_reported(copy: Path) -> None:
    model = copy / "chief" / "model" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    traced = edgefed("ledger", "provenance", str(model), str(copy / "chief"))
    assert traced.returncode == 1
    assert traced.stdout == ""
    assert traced.stderr.splitlines() == [
        f"provenance BROKEN: {model}: its bytes do not match the sha256 in manifest.json (the file was changed)"
    ]


def test_a_manifest_naming_a_model_the_ledger_does_not_hold_is_reported(copy: Path) -> None:
    manifest_path = copy / "chief" / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    digest = manifest["model_sha256"]
    manifest["model_sha256"] = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    manifest_path.write_text(json.dumps(manifest))
    traced = edgefed("ledger", "provenance", str(copy / "chief" / "model" / "model.tflite"), str(copy / "chief"))
    assert traced.returncode == 1
    assert traced.stderr.startswith("provenance BROKEN: no model record on the ledger has this model's digest")
    assert len(traced.stderr.splitlines()) == 1


def test_a_removed_round_is_reported(copy: Path) -> None:
    ledger = copy / "chief" / "ledger.sqlite"
    (height,) = [h for h, record in model_records(ledger) if record.round == 1]
    with sqlite3.connect(ledger) as db:
        db.execute("DELETE FROM entries WHERE height = ?", (height,))
    db.close()
    traced = edgefed("ledger", "provenance", str(copy / "chief" / "model" / "model.tflite"), str(copy / "chief"))
    assert traced.returncode == 1
    first, more = traced.stderr.splitlines()
    assert first.startswith("provenance BROKEN: round 2: the model it was averaged from (")
    assert first.endswith("has no model record on the ledger: a round is missing")
    assert more.startswith("  (") and "more problems" in more  # the chain's own gap, named after it


# -- the same walk over the Iroha backend (the Torii double, real gRPC) --------------------------------
@pytest.fixture
def torii_ledger(demo: Path, tmp_path: Path) -> Iterator[tuple[Path, object]]:
    """The demo's records, each delivered by its own node's Iroha account to a Torii double; yields the
    chief's configuration for that ledger and the double."""
    pytest.importorskip("iroha", reason="the iroha package is installed by `make setup` (mk/ledger.mk)")
    import nacl.signing
    from iroha import IrohaCrypto

    from edgefed.ledger.iroha import IrohaBackend
    from edgefed.ledger.iroha_bootstrap import bootstrap
    from tests.helpers.torii_double import ToriiDouble

    admin = nacl.signing.SigningKey.generate()
    double = ToriiDouble("admin@test", IrohaCrypto.derive_public_key(admin), block_time=0.02)
    address = double.start()
    pki_dir = demo / "pki"
    keys = {name: pki.NodeCredentials(pki_dir, name).ledger_signing_key() for name in ("chief", *WORKERS)}
    try:
        steps = bootstrap(torii=address, domain="edgefed", admin_account="admin@test", admin_key=admin,
                          node_keys=keys, chief="chief", commit_timeout=10.0)
        assert all(step.outcome == "COMMITTED" for step in steps)
        by_observer: dict[str, list[TransferRecord]] = defaultdict(list)
        reader = ChainReader.open(demo / "chief" / "ledger.sqlite")
        for record in reader.records():
            by_observer[record.observer].append(record)
        reader.close()
        for name, records in by_observer.items():
            delivery = IrohaBackend(address, "edgefed", name, keys[name], 10.0).deliver(records)
            assert not delivery.refused and len(delivery.acknowledged) == len(records)
        config = tmp_path / "chief.toml"
        config.write_text(dump_config({
            "node": {"name": "chief", "role": "chief", "pki_dir": str(pki_dir), "state_dir": str(tmp_path / "s")},
            "ledger": {"backend": "iroha", "torii": address, "domain": "edgefed", "commit_timeout": 10.0},
        }))
        yield config, double
    finally:
        double.stop()


def test_provenance_through_the_iroha_backend(
    demo: Path, torii_ledger: tuple[Path, object]
) -> None:
    config, double = torii_ledger
    model = demo / "chief" / "model" / "model.tflite"
    args = ("ledger", "provenance", str(model), "--config", str(config), "--pki", str(demo / "pki"))
    traced = edgefed(*args)
    assert traced.returncode == 0, traced.stderr
    assert f"round {ROUNDS}: model " in traced.stdout and "round 0: model " in traced.stdout
    assert "chief@edgefed detail t" in traced.stdout  # where each record was found on Iroha

    (round_1,) = [r for _, r in model_records(demo / "chief" / "ledger.sqlite") if r.round == 1]
    double.forget_detail("chief@edgefed", "chief@edgefed", f"t{round_1.id}")  # type: ignore[attr-defined]
    broken = edgefed(*args)
    assert broken.returncode == 1
    assert broken.stderr.startswith("provenance BROKEN: round 2: the model it was averaged from (")
    assert "a round is missing" in broken.stderr.splitlines()[0]
