"""p2p file records on the Iroha backend, over real gRPC against ToriiDouble (a TEST DOUBLE of Torii).

Between two workers the sender writes its record on the receiver's account: that needs the
worker-to-worker grants `bootstrap-iroha --p2p` makes (without them Iroha refuses the write).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

pytest.importorskip("iroha", reason="the iroha package is installed by `make setup` (mk/ledger.mk)")

from iroha import IrohaCrypto

from edgefed.ledger.files import file_transfer_record
from edgefed.ledger.iroha import IrohaBackend, verify_iroha
from edgefed.ledger.iroha_bootstrap import bootstrap
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials, ledger_public_keys
from tests.helpers.torii_double import ToriiDouble

DOMAIN = "edgefed"
ADMIN = "admin@test"
TIMEOUT = 10.0
NODES = ("chief", "worker1", "worker2")


@pytest.fixture
def torii() -> Iterator[tuple[ToriiDouble, str, nacl.signing.SigningKey]]:
    admin_key = nacl.signing.SigningKey.generate()
    double = ToriiDouble(ADMIN, IrohaCrypto.derive_public_key(admin_key), block_time=0.02)
    address = double.start()
    yield double, address, admin_key
    double.stop()


def run_bootstrap(address: str, admin_key: nacl.signing.SigningKey, pki_dir: Path, p2p: bool) -> None:
    steps = bootstrap(
        torii=address, domain=DOMAIN, admin_account=ADMIN, admin_key=admin_key,
        node_keys={name: NodeCredentials(pki_dir, name).ledger_signing_key() for name in NODES},
        chief="chief", commit_timeout=TIMEOUT, p2p=p2p,
    )
    assert all(step.outcome == "COMMITTED" for step in steps)


def file_records(pki_dir: Path) -> tuple[TransferRecord, TransferRecord]:
    transfer = {
        "sender": "worker1", "receiver": "worker2", "name": "field-data.csv", "size": 4096, "sha256": "cd" * 32,
        "resumed_from": 0, "seconds": 0.02, "at": "2026-11-21T07:00:00+00:00",
    }
    sides = []
    for direction, node in (("send", "worker1"), ("receive", "worker2")):
        record = file_transfer_record({**transfer, "direction": direction}, "edgefed", node)
        sides.append(record.signed(NodeCredentials(pki_dir, node).ledger_signing_key()))
    return sides[0], sides[1]


def backend(address: str, pki_dir: Path, node: str) -> IrohaBackend:
    return IrohaBackend(address, DOMAIN, node, NodeCredentials(pki_dir, node).ledger_signing_key(), TIMEOUT)


def test_a_file_between_two_workers_is_proven_on_iroha_after_p2p_grants(
    torii: tuple[ToriiDouble, str, nacl.signing.SigningKey], pki_dir: Path
) -> None:
    double, address, admin_key = torii
    run_bootstrap(address, admin_key, pki_dir, p2p=True)
    send, receive = file_records(pki_dir)
    assert backend(address, pki_dir, "worker1").deliver([send]).acknowledged == [send.id]
    assert backend(address, pki_dir, "worker2").deliver([receive]).acknowledged == [receive.id]
    assert set(double.details("worker2@edgefed")) == {"worker1@edgefed", "worker2@edgefed"}

    keys = {name: key for name, key in ledger_public_keys(pki_dir).items() if name in NODES}
    report = verify_iroha(backend(address, pki_dir, "chief"), keys)
    assert report.ok, report.problems
    assert (report.records, report.proven_transfers) == (2, 1)


def test_without_p2p_grants_the_senders_file_record_is_refused(
    torii: tuple[ToriiDouble, str, nacl.signing.SigningKey], pki_dir: Path
) -> None:
    _, address, admin_key = torii
    run_bootstrap(address, admin_key, pki_dir, p2p=False)
    send, _ = file_records(pki_dir)
    delivery = backend(address, pki_dir, "worker1").deliver([send])
    assert delivery.acknowledged == []
    [(refused_id, reason)] = delivery.refused
    assert refused_id == send.id and "STATEFUL_VALIDATION_FAILED" in reason
