"""The real Iroha peer for tests/iroha: the one `make test-iroha` started (IROHA_TORII, IROHA_ADMIN_ACCOUNT,
IROHA_ADMIN_KEY), or with EDGEFED_IROHA_REQUIRED=1 one this session starts from the irohad
`make iroha-peer` built (a missing irohad is then a failure). Otherwise, as in `make test`, the tests
that need a real peer are skipped; the Torii double's side of tests/iroha still runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("iroha", reason="the iroha package is installed by `make setup` (mk/ledger.mk)")

from edgefed.ledger.iroha import IrohaKey, load_admin_key
from tests.iroha.peer import ADMIN, IrohaPeer, find_irohad


@dataclass(frozen=True)
class LivePeer:
    torii: str
    admin_account: str
    admin_key_file: Path

    @property
    def admin_key(self) -> IrohaKey:
        return load_admin_key(self.admin_key_file)


@pytest.fixture(scope="session")
def iroha_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePeer]:
    if os.environ.get("IROHA_TORII"):
        yield LivePeer(
            os.environ["IROHA_TORII"],
            os.environ.get("IROHA_ADMIN_ACCOUNT", ADMIN),
            Path(os.environ["IROHA_ADMIN_KEY"]),
        )
        return
    if os.environ.get("EDGEFED_IROHA_REQUIRED") != "1":
        pytest.skip("needs a real Iroha peer: `make test-iroha` (after `make iroha-peer`) starts one")
    irohad = find_irohad()
    if irohad is None:
        pytest.fail("no irohad built for the current sources: `make iroha-peer` builds it")
    peer = IrohaPeer(irohad, tmp_path_factory.mktemp("irohad"))
    try:
        torii = peer.start()
        yield LivePeer(torii, ADMIN, peer.admin_key_file)
    finally:
        peer.stop()


@pytest.fixture
def fresh_domain() -> str:
    """A domain of its own per test: the peer is shared by the whole session."""
    return f"ef{uuid.uuid4().hex[:12]}"
