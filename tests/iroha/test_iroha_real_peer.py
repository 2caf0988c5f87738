"""The Iroha backend against a REAL irohad 1.6 (tests/iroha/conftest.py; `make test-iroha`).

`edgefed ledger bootstrap-iroha` prepares a fresh domain per test on the shared peer; records are then
written by each node's own account and read back, refused writes are refused by the peer itself,
`edgefed ledger verify --config` proves the transfers from what irohad stored, a demo trains with
`backend = "iroha"`, and a p2p file transfer between two real `edgefed p2p` processes is recorded on it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from iroha import Iroha, IrohaCrypto, IrohaGrpc

from edgefed.config import dump_config
from edgefed.contracts.events import TransferEvent
from edgefed.demo import prepare_pki, run_demo
from edgefed.ledger.iroha import IrohaBackend, account_id, detail_key, nacl_key
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials
from tests.conftest import REPO, Processes, free_port
from tests.iroha.conftest import LivePeer
from tests.iroha.scenario import Side

TIMEOUT = 60.0


def edgefed(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "edgefed", *map(str, args)], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env=env,
    )


def node_config(path: Path, name: str, pki_dir: Path, state_dir: Path, torii: str, domain: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        dump_config(
            {
                "node": {"name": name, "role": "chief" if name == "chief" else "worker", "pki_dir": str(pki_dir),
                         "state_dir": str(state_dir)},
                "ledger": {"backend": "iroha", "torii": torii, "domain": domain, "commit_timeout": TIMEOUT},
            }
        )
    )
    return path


def bootstrap_cli(peer: LivePeer, config: Path, nodes: str, *extra: str) -> str:
    run = edgefed(
        "ledger", "bootstrap-iroha", "--config", config, "--admin-account", peer.admin_account,
        "--admin-key", peer.admin_key_file, "--nodes", nodes, *extra,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def key_of(pki_dir: Path, name: str) -> ed25519.Ed25519PrivateKey:
    return NodeCredentials(pki_dir, name).ledger_signing_key()


def record(
    pki_dir: Path, direction: Side, sender: str = "chief", receiver: str = "worker1", round_: int = 1
) -> TransferRecord:
    observer = sender if direction == "send" else receiver
    event = TransferEvent(
        round_, sender, receiver, observer, direction, 3, 5328, hashlib.sha256(f"{round_}".encode()).hexdigest(),
        0.01, "weights" if sender == "chief" else "update", 1_800_000_000.5,
    )
    return TransferRecord.from_event(event, "edgefed").signed(key_of(pki_dir, observer))


@pytest.fixture
def deployment(iroha_peer: LivePeer, fresh_domain: str, pki_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """chief, worker1, worker2 bootstrapped on the real peer in a domain of their own; their configs."""
    configs = {
        name: node_config(tmp_path / "configs" / f"{name}.toml", name, pki_dir, tmp_path / "state" / name,
                          iroha_peer.torii, fresh_domain)
        for name in ("chief", "worker1", "worker2")
    }
    out = bootstrap_cli(iroha_peer, configs["chief"], "chief,worker1,worker2")
    assert f"create account worker2@{fresh_domain}: COMMITTED" in out
    return configs


def test_bootstrap_is_safe_to_repeat(iroha_peer: LivePeer, deployment: dict[str, Path], fresh_domain: str) -> None:
    again = bootstrap_cli(iroha_peer, deployment["chief"], "chief,worker1,worker2")
    assert f"role edgefed_node and domain {fresh_domain}: already there" in again
    assert f"account worker1@{fresh_domain}: already there" in again


def test_both_sides_commit_and_verify_proves_the_transfers(
    iroha_peer: LivePeer, deployment: dict[str, Path], fresh_domain: str, pki_dir: Path
) -> None:
    sends = [record(pki_dir, "send", round_=r) for r in (1, 2)]
    receives = [record(pki_dir, "receive", round_=r) for r in (1, 2)]
    update = record(pki_dir, "send", sender="worker1", receiver="chief")
    chief = IrohaBackend(iroha_peer.torii, fresh_domain, "chief", key_of(pki_dir, "chief"), TIMEOUT)
    worker1 = IrohaBackend(iroha_peer.torii, fresh_domain, "worker1", key_of(pki_dir, "worker1"), TIMEOUT)
    assert chief.deliver(sends).acknowledged == [r.id for r in sends]
    assert worker1.deliver([*receives, update]).acknowledged == [r.id for r in [*receives, update]]
    chief.deliver(sends[:1])  # a retry rewrites the same detail: harmless

    stored = chief.client.account_details(account_id("worker1", fresh_domain))
    assert set(stored) == {f"chief@{fresh_domain}", f"worker1@{fresh_domain}"}
    assert stored[f"chief@{fresh_domain}"][detail_key(sends[0])] == sends[0].to_json()

    verified = edgefed("ledger", "verify", "--config", deployment["worker1"], "--pki", pki_dir, "--json")
    assert verified.returncode == 1, verified.stdout + verified.stderr  # the update's receipt is missing
    report = json.loads(verified.stdout)
    assert report["proven_transfers"] == 2 and report["records"] == 5
    chief.deliver([record(pki_dir, "receive", sender="worker1", receiver="chief")])
    verified = edgefed("ledger", "verify", "--config", deployment["worker1"], "--pki", pki_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_peer_refuses_what_it_must(
    iroha_peer: LivePeer, deployment: dict[str, Path], fresh_domain: str, pki_dir: Path
) -> None:
    # No grant from worker1 to worker2 (bootstrap without --p2p): irohad's stateful validation refuses.
    sneaky = record(pki_dir, "send", sender="worker2", receiver="worker1")
    worker2 = IrohaBackend(iroha_peer.torii, fresh_domain, "worker2", key_of(pki_dir, "worker2"), TIMEOUT)
    delivery = worker2.deliver([sneaky])
    assert delivery.acknowledged == [] and "STATEFUL_VALIDATION_FAILED" in delivery.refused[0][1]

    # A key that is not the account's signatory.
    impostor = IrohaBackend(iroha_peer.torii, fresh_domain, "chief", ed25519.Ed25519PrivateKey.generate(), TIMEOUT)
    delivery = impostor.deliver([record(pki_dir, "send")])
    assert delivery.acknowledged == [] and "STATEFUL_VALIDATION_FAILED" in delivery.refused[0][1]

    # The same ledger key as an ed0120 multihash (ed25519/SHA-512): a stock irohad has no verifier for it.
    tx = Iroha(f"chief@{fresh_domain}").transaction(
        [Iroha.command("SetAccountDetail", account_id=f"chief@{fresh_domain}", key="probe", value="1")]
    )
    IrohaCrypto.sign_transaction(tx, nacl_key(key_of(pki_dir, "chief")))
    client = IrohaGrpc(iroha_peer.torii, timeout=TIMEOUT)
    client.send_tx(tx)
    assert [s for s, _, _ in client.tx_status_stream(tx)][-1] == "STATELESS_VALIDATION_FAILED"


def test_a_demo_with_the_iroha_backend_trains_and_verifies(
    iroha_peer: LivePeer, fresh_domain: str, tmp_path: Path
) -> None:
    root = tmp_path / "demo"
    prepare_pki(root / "pki", ["chief", "worker1", "worker2"])
    admin_config = node_config(tmp_path / "admin.toml", "chief", root / "pki", tmp_path / "admin-state",
                               iroha_peer.torii, fresh_domain)
    bootstrap_cli(iroha_peer, admin_config, "chief,worker1,worker2")
    settings = {"backend": "iroha", "torii": iroha_peer.torii, "domain": fresh_domain, "commit_timeout": TIMEOUT}
    result = run_demo(2, 2, state_dir=str(root), interval_steps=5, out=io.StringIO(), ledger_settings=settings)
    assert len(result.rounds) == 2

    verified = edgefed("ledger", "verify", "--config", root / "worker1" / "edgefed.toml", "--pki", root / "pki",
                       "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    # Per worker and round the weights go down and an update comes up; every transfer has both sides.
    assert report["records"] == 2 * report["proven_transfers"] >= 2 * 2 * 2, report


def test_a_p2p_transfer_is_recorded_on_the_real_peer(
    iroha_peer: LivePeer, fresh_domain: str, pki_dir: Path, tmp_path: Path, processes: Processes
) -> None:
    configs = {
        name: node_config(tmp_path / "configs" / f"{name}.toml", name, pki_dir, tmp_path / "state" / name,
                          iroha_peer.torii, fresh_domain)
        for name in ("chief", "worker1", "worker2")
    }
    bootstrap_cli(iroha_peer, configs["chief"], "chief,worker1,worker2", "--p2p")
    source = tmp_path / "outgoing" / "field-data.csv"
    source.parent.mkdir()
    source.write_bytes(os.urandom(1 << 18))
    listen = f"127.0.0.1:{free_port()}"
    receiver = processes.edgefed(
        "p2p", "receive", "--listen", listen, "--dir", str(tmp_path / "inbox"), "--for", "2m", "--no-progress",
        "--ledger-config", str(configs["worker2"]), log_name="receiver",
    )
    sent = edgefed("p2p", "send", source, "--peer", listen, "--no-progress", "--ledger-config", configs["worker1"])
    assert sent.returncode == 0, sent.stdout + sent.stderr
    receiver.send_signal(signal.SIGINT)
    assert receiver.wait(timeout=60) == 130, processes.log("receiver")
    assert "ledger: receive record" in processes.log("receiver")
    for name in ("worker1", "worker2"):
        relay = edgefed("ledger", "serve", "--config", configs[name], "--drain", "120", "--nice", "0")
        assert relay.returncode == 0, relay.stdout + relay.stderr
        assert "delivered 1, refused 0, waiting 0" in relay.stdout

    verified = edgefed("ledger", "verify", "--config", configs["chief"], "--pki", pki_dir, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert (report["proven_transfers"], report["records"]) == (1, 2)
