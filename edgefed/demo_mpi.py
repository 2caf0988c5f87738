"""`edgefed demo --transport mpi`: the same federation as the socket demo, as one `mpirun` job on this
machine (rank 0 the chief, ranks 1..N the workers), with a hostfile as a cluster would use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from edgefed.demo import (
    CHIEF,
    DemoFailed,
    DemoResult,
    _print_header,
    _print_row,
    _state_directory,
    _tail,
    demo_summary,
    prepare_pki,
    worker_names,
    write_node_config,
)
from edgefed.errors import UsageError

# Ranks address each other by number: the port in the configs is never opened.
UNUSED_PORT = 1


def mpirun_command(ranks: int, hostfile: Path) -> list[str]:
    """mpirun with the flags a single machine needs; OpenMPI refuses root unless told (then only)."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise UsageError("mpirun not found: install openmpi-bin (make setup does)")
    command = [mpirun, "--hostfile", str(hostfile), "-np", str(ranks), "--oversubscribe"]
    return [*command, "--allow-run-as-root"] if os.geteuid() == 0 else command


def run_mpi_demo(
    workers: int, rounds: int, state_dir: str | None = None, interval_steps: int = 20, trainer: str = "numpy",
    out: TextIO | None = None, timeout: float = 600.0,
) -> DemoResult:
    if workers < 1 or rounds < 1:
        raise UsageError(f"--workers and --rounds must be >= 1, got {workers} and {rounds}")
    out = out or sys.stdout
    result = DemoResult()
    started = time.monotonic()
    with _state_directory(state_dir) as root:
        names = [CHIEF, *worker_names(workers)]
        prepare_pki(root / "pki", names)  # the ledger's records are signed with the nodes' keys
        for rank, name in enumerate(names):
            config = write_node_config(
                root, name, "chief" if rank == 0 else "worker", UNUSED_PORT, rounds, workers, interval_steps, trainer
            )
            (root / f"node{rank}.toml").write_text(config.read_text())
        hostfile = root / "hostfile"
        hostfile.write_text(f"localhost slots={len(names)}\n")
        command = [*mpirun_command(len(names), hostfile), sys.executable, "-m", "edgefed", "-v", "mpi",
                   "--config", str(root / "node{rank}.toml"), "--progress-jsonl"]
        log_path = root / "mpirun.log"
        summary: dict[str, Any] = {}
        with open(log_path, "w") as log:
            job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                _print_header(out)
                assert job.stdout is not None
                for line in job.stdout:
                    if not line.startswith("{"):
                        continue  # mpirun's own notices
                    record = json.loads(line)
                    if record.get("done"):
                        summary = record
                        continue
                    result.rounds.append(record)
                    _print_row(out, record)
                code = job.wait(timeout=max(1.0, started + timeout - time.monotonic()))
            finally:
                if job.poll() is None:
                    job.kill()
                    job.wait()
        if job.returncode != 0 or not summary:
            raise DemoFailed(f"mpi demo failed: mpirun exited {job.returncode}: {_tail(log_path)}")
        del code
        result.summary = demo_summary(result, workers, summary, started, root if state_dir else None,
                                      transport="mpi")
    return result
