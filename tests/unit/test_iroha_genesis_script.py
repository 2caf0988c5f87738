"""scripts/iroha/genesis.py, which the lab's Iroha option runs on the controller: keys made once and kept,
a genesis block irohad can read for exactly those keys, and "unchanged" on a second run (idempotence)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("iroha")

from google.protobuf import json_format
from iroha import block_pb2

from edgefed.ledger.iroha_keys import Sha3Ed25519Key

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "iroha" / "genesis.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_keys_are_made_once_and_the_block_names_them(tmp_path: Path) -> None:
    where = tmp_path / "iroha"
    first = _run(str(where), "--peer-address", "127.0.0.1:10001", "--domain", "lab")
    assert (first.returncode, first.stdout) == (0, "changed\n"), first.stderr
    assert where.stat().st_mode & 0o777 == 0o700
    assert (where / "admin.priv").stat().st_mode & 0o777 == 0o600
    files = {name: (where / name).read_bytes() for name in ("peer.priv", "peer.pub", "admin.priv", "genesis.block")}

    block = json_format.Parse((where / "genesis.block").read_text(), block_pb2.Block())
    commands = block.block_v1.payload.transactions[0].payload.reduced_payload.commands
    peer_key = Sha3Ed25519Key(bytes.fromhex(files["peer.priv"].decode())).public_key_hex()
    admin_key = Sha3Ed25519Key(bytes.fromhex(files["admin.priv"].decode())).public_key_hex()
    assert files["peer.pub"].decode() == peer_key
    assert commands[0].add_peer.peer.address == "127.0.0.1:10001"
    assert commands[0].add_peer.peer.peer_key == peer_key
    created = [c.create_account for c in commands if c.HasField("create_account")]
    assert [(a.account_name, a.domain_id, a.public_key) for a in created] == [("admin", "lab", admin_key)]

    again = _run(str(where), "--peer-address", "127.0.0.1:10001", "--domain", "lab")
    assert (again.returncode, again.stdout) == (0, "unchanged\n")
    assert {name: (where / name).read_bytes() for name in files} == files

    moved = _run(str(where), "--peer-address", "10.0.0.5:10001", "--domain", "lab")
    assert moved.stdout == "changed\n"
    assert (where / "peer.priv").read_bytes() == files["peer.priv"]  # the keys stay
    assert json.loads((where / "genesis.block").read_text()) != json.loads(files["genesis.block"])


def test_a_bad_address_or_key_file_is_one_line(tmp_path: Path) -> None:
    bad = _run(str(tmp_path / "a"), "--peer-address", "no-port")
    assert bad.returncode == 2 and "--peer-address must be HOST:PORT" in bad.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "peer.priv").write_text("not a key")
    broken = _run(str(tmp_path / "b"), "--peer-address", "127.0.0.1:10001")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert broken.stderr.strip().endswith("is not a 64-hex-character Iroha private key")
