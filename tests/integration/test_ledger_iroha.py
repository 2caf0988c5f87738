"""The Iroha backend over real gRPC against ToriiDouble, a TEST DOUBLE of Iroha's Torii (not Iroha).

ToriiDouble uses the `iroha` package's own generated protobuf/gRPC modules and checks signatures with
IrohaCrypto; what it does not model is listed in docs/ledger.md. The last test runs against a real
Iroha peer, only when IROHA_TORII (and IROHA_ADMIN_ACCOUNT, IROHA_ADMIN_KEY) are set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

pytest.importorskip("iroha", reason="the iroha package is installed by `make setup` (mk/ledger.mk)")

from iroha import Iroha, IrohaCrypto, IrohaGrpc

from edgefed import pki
from edgefed.config import dump_config
from edgefed.contracts.events import TransferEvent
from edgefed.ledger.errors import BackendUnavailable
from edgefed.ledger.iroha import (
    IrohaBackend,
    account_id,
    detail_key,
    load_admin_key,
    nacl_key,
)
from edgefed.ledger.iroha_bootstrap import bootstrap
from edgefed.ledger.outbox import Outbox, OutboxSink
from edgefed.ledger.records import TransferRecord
from edgefed.ledger.verify import check_transfers
from tests.conftest import REPO
from tests.helpers.torii_double import ToriiDouble

DOMAIN = "edgefed"
ADMIN = "admin@test"
TIMEOUT = 10.0


def key_of(pki_dir: Path, name: str) -> ed25519.Ed25519PrivateKey:
    return pki.NodeCredentials(pki_dir, name).ledger_signing_key()


@pytest.fixture
def admin_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


@pytest.fixture
def torii(admin_key: nacl.signing.SigningKey) -> Iterator[tuple[ToriiDouble, str]]:
    double = ToriiDouble(ADMIN, IrohaCrypto.derive_public_key(admin_key), block_time=0.02)
    address = double.start()
    yield double, address
    double.stop()


@pytest.fixture
def bootstrapped(
    torii: tuple[ToriiDouble, str], admin_key: nacl.signing.SigningKey, pki_dir: Path
) -> tuple[ToriiDouble, str]:
    double, address = torii
    steps = bootstrap(
        torii=address,
        domain=DOMAIN,
        admin_account=ADMIN,
        admin_key=admin_key,
        node_keys={name: key_of(pki_dir, name) for name in ("chief", "worker1", "worker2")},
        chief="chief",
        commit_timeout=TIMEOUT,
    )
    assert all(step.outcome == "COMMITTED" for step in steps)
    return double, address


def record(
    pki_dir: Path, direction: str, sender: str = "chief", receiver: str = "worker1", **changes: object
) -> TransferRecord:
    observer = sender if direction == "send" else receiver
    kind = "weights" if sender == "chief" else "update"
    fields = dict(
        round=2,
        sender=sender,
        receiver=receiver,
        observer=observer,
        direction=direction,
        participants=3,
        bytes=5328,
        sha256="ab" * 32,
        seconds=0.01,
        kind=kind,
        timestamp=1_800_000_000.5,
    )
    fields.update(changes)
    event = TransferEvent(**fields)  # type: ignore[arg-type]
    return TransferRecord.from_event(event, "edgefed").signed(key_of(pki_dir, observer))


def backend(address: str, pki_dir: Path, name: str, key: ed25519.Ed25519PrivateKey | None = None) -> IrohaBackend:
    return IrohaBackend(address, DOMAIN, name, key or key_of(pki_dir, name), TIMEOUT)


def test_bootstrap_creates_accounts_and_is_safe_to_repeat(
    bootstrapped: tuple[ToriiDouble, str], admin_key: nacl.signing.SigningKey, pki_dir: Path
) -> None:
    double, address = bootstrapped
    assert all(double.account_exists(account_id(n, DOMAIN)) for n in ("chief", "worker1", "worker2"))
    again = bootstrap(
        torii=address,
        domain=DOMAIN,
        admin_account=ADMIN,
        admin_key=admin_key,
        node_keys={name: key_of(pki_dir, name) for name in ("chief", "worker1", "worker2")},
        chief="chief",
        commit_timeout=TIMEOUT,
    )
    assert [s.outcome for s in again][:4] == ["already there"] * 4


def test_both_sides_commit_and_the_transfer_is_proven(bootstrapped: tuple[ToriiDouble, str], pki_dir: Path) -> None:
    double, address = bootstrapped
    weights_send = record(pki_dir, "send")
    weights_receive = record(pki_dir, "receive")
    update_send = record(pki_dir, "send", sender="worker1", receiver="chief")
    update_receive = record(pki_dir, "receive", sender="worker1", receiver="chief")
    chief, worker1 = backend(address, pki_dir, "chief"), backend(address, pki_dir, "worker1")
    assert chief.deliver([weights_send, update_receive]).acknowledged == [weights_send.id, update_receive.id]
    assert worker1.deliver([weights_receive, update_send]).acknowledged == [weights_receive.id, update_send.id]

    # On the receiver's account, each side's record is written by its own observer's account.
    details = double.details("worker1@edgefed")
    assert json.loads(details["chief@edgefed"][detail_key(weights_send)])["signature"] == weights_send.signature
    assert detail_key(weights_receive) in details["worker1@edgefed"]

    found = worker1.fetch_records([account_id(n, DOMAIN) for n in ("chief", "worker1")])
    proven, problems = check_transfers(found)
    assert (proven, problems) == (2, [])
    assert {r.id for _, r in found} == {weights_send.id, weights_receive.id, update_send.id, update_receive.id}


def test_verify_reads_the_iroha_ledger_and_names_a_forged_detail(
    bootstrapped: tuple[ToriiDouble, str], pki_dir: Path, tmp_path: Path
) -> None:
    _, address = bootstrapped
    send, receive = record(pki_dir, "send"), record(pki_dir, "receive")
    backend(address, pki_dir, "chief").deliver([send])
    backend(address, pki_dir, "worker1").deliver([receive])
    config = tmp_path / "worker1.toml"
    config.write_text(
        dump_config(
            {
                "node": {
                    "name": "worker1",
                    "role": "worker",
                    "pki_dir": str(pki_dir),
                    "state_dir": str(tmp_path / "s"),
                },
                "ledger": {"backend": "iroha", "torii": address, "domain": DOMAIN, "commit_timeout": TIMEOUT},
            }
        )
    )
    command = [sys.executable, "-m", "edgefed", "ledger", "verify", "--config", str(config), "--json"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["proven_transfers"] == 1

    # The chief's account overwrites its own detail with a changed byte count: Iroha accepts the write
    # (the chief may write there), but the record's signature no longer matches.
    forged = json.loads(send.to_json())
    forged["bytes"] += 1
    chief = backend(address, pki_dir, "chief")
    outcome = chief.client.submit(
        [
            Iroha.command(
                "SetAccountDetail",
                account_id="worker1@edgefed",
                key=detail_key(send),
                value=json.dumps(forged, separators=(",", ":")),
            )
        ]
    )
    assert outcome.committed
    broken = subprocess.run(command[:-1], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert broken.returncode == 1
    assert f"worker1@edgefed detail {detail_key(send)} by chief@edgefed" in broken.stderr


def test_a_retry_overwrites_the_same_detail_instead_of_duplicating(
    bootstrapped: tuple[ToriiDouble, str], pki_dir: Path
) -> None:
    double, address = bootstrapped
    send = record(pki_dir, "send")
    chief = backend(address, pki_dir, "chief")
    chief.deliver([send])
    chief.deliver([send])
    assert list(double.details("worker1@edgefed")["chief@edgefed"]) == [detail_key(send)]


def test_writing_without_the_grant_is_refused(bootstrapped: tuple[ToriiDouble, str], pki_dir: Path) -> None:
    double, address = bootstrapped
    # worker2 never received a grant from worker1: its "send" to worker1 must not land on worker1's account.
    sneaky = record(pki_dir, "send", sender="worker2", receiver="worker1")
    delivery = backend(address, pki_dir, "worker2").deliver([sneaky])
    assert delivery.acknowledged == []
    [(refused_id, reason)] = delivery.refused
    assert refused_id == sneaky.id
    assert "STATEFUL_VALIDATION_FAILED" in reason and "worker2@edgefed" in reason
    assert "worker2@edgefed" not in double.details("worker1@edgefed")


def test_one_refused_record_does_not_block_the_rest_of_its_batch(
    bootstrapped: tuple[ToriiDouble, str], pki_dir: Path
) -> None:
    _, address = bootstrapped
    allowed = record(pki_dir, "send", sender="worker2", receiver="chief")  # the chief granted worker2
    refused = record(pki_dir, "send", sender="worker2", receiver="worker1")  # worker1 did not
    delivery = backend(address, pki_dir, "worker2").deliver([allowed, refused])
    assert delivery.acknowledged == [allowed.id]
    assert [rid for rid, _ in delivery.refused] == [refused.id]


def test_a_key_that_is_not_the_accounts_signatory_is_refused(
    bootstrapped: tuple[ToriiDouble, str], pki_dir: Path
) -> None:
    double, address = bootstrapped
    send = record(pki_dir, "send")
    impostor = backend(address, pki_dir, "chief", key=ed25519.Ed25519PrivateKey.generate())
    delivery = impostor.deliver([send])
    assert delivery.acknowledged == []
    assert "STATEFUL_VALIDATION_FAILED" in delivery.refused[0][1]
    assert double.details("worker1@edgefed") == {}


def test_a_corrupted_signature_fails_stateless_validation(bootstrapped: tuple[ToriiDouble, str], pki_dir: Path) -> None:
    double, address = bootstrapped
    tx = Iroha("chief@edgefed").transaction(
        [Iroha.command("SetAccountDetail", account_id="chief@edgefed", key="probe", value="1")]
    )
    IrohaCrypto.sign_transaction(tx, nacl_key(key_of(pki_dir, "chief")))
    tx.payload.reduced_payload.commands[0].set_account_detail.value = "2"  # changed after signing
    grpc_client = IrohaGrpc(address, timeout=TIMEOUT)
    grpc_client.send_tx(tx)
    statuses = [status for status, _, _ in grpc_client.tx_status_stream(tx)]
    assert statuses[-1] == "STATELESS_VALIDATION_FAILED"
    assert double.details("chief@edgefed") == {}


def test_classic_sha3_admin_keys_work_too(pki_dir: Path, tmp_path: Path) -> None:
    legacy = IrohaCrypto.private_key()  # Iroha's classic ed25519/SHA-3 key, as in admin@test.priv
    (tmp_path / "admin.priv").write_bytes(legacy)
    double = ToriiDouble(ADMIN, IrohaCrypto.derive_public_key(legacy).decode(), block_time=0.0)
    address = double.start()
    try:
        steps = bootstrap(
            torii=address,
            domain=DOMAIN,
            admin_account=ADMIN,
            admin_key=load_admin_key(tmp_path / "admin.priv"),
            node_keys={"chief": key_of(pki_dir, "chief")},
            chief="chief",
            commit_timeout=TIMEOUT,
        )
        assert [s.outcome for s in steps] == ["COMMITTED", "COMMITTED"]
    finally:
        double.stop()


def test_an_unreachable_torii_keeps_the_records(pki_dir: Path) -> None:
    from tests.conftest import free_port

    unreachable = IrohaBackend(f"127.0.0.1:{free_port()}", DOMAIN, "chief", key_of(pki_dir, "chief"), 1.0)
    with pytest.raises(BackendUnavailable):
        unreachable.deliver([record(pki_dir, "send")])


def test_ledger_serve_relays_an_outbox_to_iroha(
    bootstrapped: tuple[ToriiDouble, str], pki_dir: Path, tmp_path: Path
) -> None:
    double, address = bootstrapped
    state = tmp_path / "state" / "worker1"
    sink = OutboxSink(Outbox.for_state_dir(state), "worker1", key_of(pki_dir, "worker1"), "edgefed")
    for round_ in range(5):
        sink(TransferEvent(round_, "chief", "worker1", "worker1", "receive", 3, 100, f"{round_:064x}", 0.0, "weights"))
    sink.close()
    config = tmp_path / "worker1.toml"
    config.write_text(
        dump_config(
            {
                "node": {"name": "worker1", "role": "worker", "pki_dir": str(pki_dir), "state_dir": str(state)},
                "ledger": {"backend": "iroha", "torii": address, "domain": DOMAIN, "commit_timeout": TIMEOUT},
            }
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "edgefed", "ledger", "serve", "--config", str(config), "--drain", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert "delivered 5, refused 0, waiting 0" in run.stdout
    assert len(double.details("worker1@edgefed")["worker1@edgefed"]) == 5
    status = json.loads((state / "status" / "ledger.json").read_text())
    assert status["backend"] == "iroha" and status["outbox_backlog"] == 0


def test_bootstrap_command_and_admin_key_formats(
    torii: tuple[ToriiDouble, str], admin_key: nacl.signing.SigningKey, pki_dir: Path, tmp_path: Path
) -> None:
    double, address = torii
    from cryptography.hazmat.primitives import serialization

    seed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(admin_key))
    pem = tmp_path / "admin.pem"
    pem.write_bytes(
        seed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    assert bytes(load_admin_key(pem)) == bytes(admin_key)  # type: ignore[arg-type]
    config = tmp_path / "chief.toml"
    config.write_text(
        dump_config(
            {
                "node": {"name": "chief", "role": "chief", "pki_dir": str(pki_dir), "state_dir": str(tmp_path / "s")},
                "ledger": {"backend": "iroha", "torii": address, "domain": DOMAIN, "commit_timeout": TIMEOUT},
            }
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefed",
            "ledger",
            "bootstrap-iroha",
            "--config",
            str(config),
            "--admin-account",
            ADMIN,
            "--admin-key",
            str(pem),
            "--nodes",
            "chief,worker1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert "create account worker1@edgefed: COMMITTED" in run.stdout
    assert not double.account_exists("worker2@edgefed")
    bad = tmp_path / "bad.priv"
    bad.write_text("not a key")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefed",
            "ledger",
            "bootstrap-iroha",
            "--config",
            str(config),
            "--admin-account",
            ADMIN,
            "--admin-key",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert refused.returncode == 2
    assert "expected 64 hex characters" in refused.stderr


@pytest.mark.iroha_live
@pytest.mark.skipif(
    not os.environ.get("IROHA_TORII"),
    reason="set IROHA_TORII (and IROHA_ADMIN_ACCOUNT, IROHA_ADMIN_KEY) to run against a real Iroha peer",
)
def test_against_a_real_iroha_peer(pki_dir: Path) -> None:
    address = os.environ["IROHA_TORII"]
    admin = os.environ.get("IROHA_ADMIN_ACCOUNT", ADMIN)
    admin_key = load_admin_key(os.environ["IROHA_ADMIN_KEY"])
    domain = f"ef{uuid.uuid4().hex[:10]}"  # a fresh domain per run
    bootstrap(
        torii=address,
        domain=domain,
        admin_account=admin,
        admin_key=admin_key,
        node_keys={n: key_of(pki_dir, n) for n in ("chief", "worker1")},
        chief="chief",
        commit_timeout=60.0,
    )
    send, receive = record(pki_dir, "send"), record(pki_dir, "receive")
    chief = IrohaBackend(address, domain, "chief", key_of(pki_dir, "chief"), 60.0)
    worker1 = IrohaBackend(address, domain, "worker1", key_of(pki_dir, "worker1"), 60.0)
    assert chief.deliver([send]).acknowledged == [send.id]
    assert worker1.deliver([receive]).acknowledged == [receive.id]
    proven, problems = check_transfers(worker1.fetch_records([f"worker1@{domain}"]))
    assert (proven, problems) == (1, [])
