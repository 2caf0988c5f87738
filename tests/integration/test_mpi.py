"""The MPI transport with real mpirun jobs on this machine: the demo, the same average as over TLS, a
worker rank killed in the middle of training."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefed.demo import CHIEF, prepare_pki, run_demo, worker_names, write_node_config
from edgefed.demo_mpi import UNUSED_PORT, mpirun_command
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.ledger.verify import verify_ledger

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None, reason="OpenMPI not installed (make setup)")

WORKERS = 3
ROUNDS = 3
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_mpi_demo_reaches_the_socket_average(tmp_path: Path) -> None:
    mpi_dir, tls_dir = tmp_path / "mpi", tmp_path / "tls"
    done = subprocess.run(
        [sys.executable, "-m", "edgefed", "demo", "--transport", "mpi", "--workers", str(WORKERS),
         "--rounds", str(ROUNDS), "--state-dir", str(mpi_dir), "--json"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    mpi_summary = json.loads(done.stdout.strip().splitlines()[-1])
    tls_summary = run_demo(WORKERS, ROUNDS, str(tls_dir), ledger=False, out=io.StringIO()).summary

    assert mpi_summary["transport"] == "mpi"
    assert mpi_summary["rounds"] == tls_summary["rounds"] == ROUNDS
    assert mpi_summary["accuracy"] == pytest.approx(tls_summary["accuracy"], abs=1e-6)
    mpi_final, tls_final = load_checkpoint(mpi_dir / CHIEF), load_checkpoint(tls_dir / CHIEF)
    assert mpi_final is not None and tls_final is not None
    assert mpi_final.round == tls_final.round == ROUNDS
    assert len(mpi_final.weights) == len(tls_final.weights)
    for ours, theirs in zip(mpi_final.weights, tls_final.weights, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # Each rank signed its transfers into its own outbox, as over sockets, and the job delivered every
    # outbox to the chief's chain before it ended (no ledger service can reach an MPI chief).
    names = [CHIEF, *worker_names(WORKERS)]
    for name in names:
        with sqlite3.connect(mpi_dir / name / "ledger-outbox.sqlite") as outbox:
            assert outbox.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    report = verify_ledger(mpi_dir / CHIEF / "ledger.sqlite", mpi_dir / "pki")
    assert report.ok, report.problems
    assert sorted(report.signers) == sorted(names)
    # Every record has its other end's: each transfer (at least down and up per worker and round) is
    # proven by both sides.
    assert report.proven_transfers >= ROUNDS * WORKERS * 2
    assert report.records == 2 * report.proven_transfers


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the child of mpirun running the given rank (OpenMPI tells each rank in its env)."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
                return int(child)
    return None


def _job(root: Path, roles: list[str], rounds: int) -> list[str]:
    """Configs node{rank}.toml with these roles, a hostfile, and the mpirun command running them."""
    names = [CHIEF if role == "chief" else f"worker{rank}" for rank, role in enumerate(roles)]
    prepare_pki(root / "pki", names)
    for rank, (name, role) in enumerate(zip(names, roles, strict=True)):
        config = write_node_config(root, name, role, UNUSED_PORT, rounds=rounds, workers=len(names) - 1,
                                   interval_steps=5, trainer="numpy")
        (root / f"node{rank}.toml").write_text(config.read_text())
    hostfile = root / "hostfile"
    hostfile.write_text(f"localhost slots={len(names)}\n")
    return [*mpirun_command(len(names), hostfile), sys.executable, "-m", "edgefed", "mpi",
            "--config", str(root / "node{rank}.toml"), "--progress-jsonl"]


def test_rank_zero_must_be_the_chief(tmp_path: Path) -> None:
    done = subprocess.run(_job(tmp_path, ["worker", "chief"], rounds=1), capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert done.returncode != 0
    assert "rank 0 runs the chief, but node.role is 'worker'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_killed_worker_rank_ends_the_job_with_a_clear_error(tmp_path: Path) -> None:
    command = _job(tmp_path, ["chief", *["worker"] * WORKERS], rounds=10_000)
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        assert job.stdout is not None
        seen = []
        for line in job.stdout:  # training is under way once the chief reports a round
            seen.append(line)
            if line.startswith("{") and json.loads(line).get("round"):
                break
        victim = _rank_pid(job.pid, 2)
        assert victim is not None, "".join(seen)
        os.kill(victim, signal.SIGKILL)
        output = "".join(seen) + job.stdout.read()  # returns when mpirun ends the job
        code = job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert code != 0
    assert "signal 9" in output, output[-2000:]
