"""A real single-peer Hyperledger Iroha 1.6 (irohad, RocksDB world state) for tests and benchmarks.

The peer is the binary `make iroha-peer` built (scripts/iroha/build-peer.sh). Every start writes a
fresh genesis block of the project's own: a peer key and an admin key generated for this run, the
role ``edgefed_node`` and the domain ``edgefed`` as `edgefed ledger bootstrap-iroha` makes them, and
the admin account ``admin@edgefed``. Node accounts are left to bootstrap-iroha, which the tests run.

    python -m tests.iroha.peer run -- COMMAND...   start a peer, run COMMAND with IROHA_TORII,
                                                   IROHA_ADMIN_ACCOUNT and IROHA_ADMIN_KEY set,
                                                   stop the peer and remove its state

irohad listens on every interface (the address is hard-coded upstream); `make test-iroha` therefore
runs inside a network namespace of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgefed.ledger.errors import BackendUnavailable, LedgerError
from edgefed.ledger.iroha import IrohaClient
from edgefed.ledger.iroha_genesis import DOMAIN, genesis_block
from edgefed.ledger.iroha_keys import Sha3Ed25519Key

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "iroha" / "build-peer.sh"
ADMIN = f"admin@{DOMAIN}"
# Block formation: a proposal is cut after this many transactions or this many milliseconds.
MAX_PROPOSAL_SIZE = 10
PROPOSAL_TIMEOUT_MS = 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_irohad() -> Path | None:
    """$IROHAD, or the binary make iroha-peer cached for the current sources and patches."""
    if os.environ.get("IROHAD"):
        return Path(os.environ["IROHAD"])
    run = subprocess.run([str(BUILD_SCRIPT), "--print-path"], capture_output=True, text=True, check=False)
    return Path(run.stdout.strip()) if run.returncode == 0 else None


class IrohaPeer:
    """One irohad process with its keys, configuration, genesis block and RocksDB under ROOT."""

    def __init__(self, irohad: Path, root: Path, proposal_timeout_ms: int = PROPOSAL_TIMEOUT_MS) -> None:
        self.irohad = irohad
        self.root = root
        self.proposal_timeout_ms = proposal_timeout_ms
        self.admin_key_file = root / "admin.priv"
        self.log_file = root / "irohad.log"
        self.torii = ""
        self._process: subprocess.Popen[bytes] | None = None

    def _write_files(self) -> tuple[list[str], Sha3Ed25519Key]:
        self.root.mkdir(parents=True, exist_ok=True)
        peer_seed, admin_seed = os.urandom(32), os.urandom(32)
        peer_key, admin_key = Sha3Ed25519Key(peer_seed), Sha3Ed25519Key(admin_seed)
        (self.root / "peer.priv").write_text(peer_seed.hex())
        (self.root / "peer.pub").write_text(peer_key.public_key_hex())
        self.admin_key_file.write_text(admin_seed.hex())
        for secret in (self.root / "peer.priv", self.admin_key_file):
            secret.chmod(0o600)
        torii_port, internal_port = free_port(), free_port()
        config = {
            "torii_port": torii_port,
            "internal_port": internal_port,
            "database": {"type": "rocksdb", "path": str(self.root / "wsv")},
            "max_proposal_size": MAX_PROPOSAL_SIZE,
            "proposal_creation_timeout": self.proposal_timeout_ms,
            "vote_delay": 1000,
            "mst_enable": False,
            "mst_expiration_time": 1440,
            "stale_stream_max_rounds": 2,
            "healthcheck_port": free_port(),
            "log": {"level": "info"},
        }
        (self.root / "config.json").write_text(json.dumps(config, indent=2))
        genesis = genesis_block(f"127.0.0.1:{internal_port}", peer_key.public_key_hex(), admin_key.public_key_hex())
        (self.root / "genesis.block").write_text(json.dumps(genesis, indent=2))
        self.torii = f"127.0.0.1:{torii_port}"
        command = [
            str(self.irohad), "--config", str(self.root / "config.json"),
            "--genesis_block", str(self.root / "genesis.block"),
            "--keypair_name", str(self.root / "peer"), "--overwrite_ledger", "--drop_state",
        ]
        return command, admin_key

    def start(self, timeout: float = 180.0) -> str:
        """Start irohad and wait until Torii answers the admin's query; returns Torii's host:port."""
        command, admin_key = self._write_files()
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        admin = IrohaClient(self.torii, ADMIN, admin_key, commit_timeout=5.0)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"irohad exited {self._process.returncode}: {self.log_tail()}")
            try:
                admin.query("GetRoles")
                return self.torii
            except (BackendUnavailable, LedgerError) as exc:
                if time.monotonic() > deadline:
                    message = f"irohad did not answer within {timeout:.0f} s ({exc}): {self.log_tail()}"
                    raise RuntimeError(message) from None
            time.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, remove: bool = True) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def run_with_peer(command: list[str]) -> int:
    irohad = find_irohad()
    if irohad is None:
        print("no irohad for the current sources: run `make iroha-peer` first", file=sys.stderr)
        return 2
    peer = IrohaPeer(irohad, Path(tempfile.mkdtemp(prefix="edgefed-iroha-peer-")))
    try:
        torii = peer.start()
        print(f"irohad {irohad} serving Torii on {torii} (state in {peer.root})", flush=True)
        env = {**os.environ, "IROHA_TORII": torii, "IROHA_ADMIN_ACCOUNT": ADMIN,
               "IROHA_ADMIN_KEY": str(peer.admin_key_file), "IROHA_PEER_LOG": str(peer.log_file)}
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        peer.stop()


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1:3] != ["run", "--"]:
        print("usage: python -m tests.iroha.peer run -- COMMAND...", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_with_peer(sys.argv[3:]))
