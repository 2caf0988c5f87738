"""One FedAvg round on loopback: edgefed over MPI vs edgefed sockets (mutual TLS, plain TCP) vs Flower.

The coMind post says its MPI variant "will work faster than plain sockets": this measures by how much,
at bench_flower.py's points (N workers x model MB), each system doing the same round on the same arrays
(bench/common.py: model), in separate processes on this machine, one run after the other:
- MPI: one `mpirun -np N+1` job of edgefed's own chief and workers over the MPI transport
  (edgefed/transport/mpi.py; OpenMPI picks its shared-memory path between ranks on one machine, or
  TCP only with --mpi-btl tcp,self);
- TLS: the same chief and workers over mutual TLS on 127.0.0.1 (bench_round.py's edgefed run);
- plain: the same over plain TCP (PlainTransport: no encryption, no identities; a reference only);
- Flower: the real Flower server and clients, TLS on (bench_flower.py's run, in .venv-flwr).
Workers answer at once with the arrays they received, so a round is pure framework and transport cost.
Reports the median of the timed rounds (the first, which includes joining, is dropped), the ratios
to MPI, and the peak RSS of the chief / server. Writes its section of docs/benchmarks.md.

    .venv/bin/python bench/bench_mpi.py [--workers 2 8 32] [--sizes 1 16 64] [--rounds 4]
        [--systems mpi tls plain flower] [--mpi-btl tcp,self] [--flwr-python .venv-flwr/bin/python]
        [--budget 900] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_flower
import bench_round
from common import REPO, BenchFailure, load_average, machine, update_doc

from edgefed import pki
from edgefed.transport import PlainTransport, SocketConnection
from edgefed.wire import Limits

SYSTEMS = ("mpi", "tls", "plain", "flower")
LABELS = {"mpi": "MPI", "tls": "edgefed TLS", "plain": "edgefed plain TCP", "flower": "Flower"}
# Memory a run needs, as bench_flower.needed_mb estimates it: MPI and plain ranks hold what TLS ones do.
FOOTPRINT_OF = {"mpi": "edgefed", "tls": "edgefed", "plain": "edgefed", "flower": "flower"}


class _NamelessPlain(PlainTransport):
    """Plain TCP for the benchmark's workers, which name the chief they expect: a plain link cannot
    check a name, so the name is dropped (PlainTransport refuses one, rightly, everywhere else)."""

    def connect(self, host: str, port: int, limits: Limits, server_name: str | None) -> SocketConnection:
        del server_name
        return super().connect(host, port, limits, None)


# -- the roles ---------------------------------------------------------------------------------------
def run_mpi_rank(args: argparse.Namespace) -> None:
    """One rank of the mpirun job: rank 0 the chief (prints the round times), the others workers."""
    from edgefed.transport.mpi import CHIEF_RANK, MpiTransport, rank_of_this_process

    rank = rank_of_this_process()
    name = "chief" if rank == CHIEF_RANK else f"w{rank - 1}"
    transport = MpiTransport(name)
    if rank == CHIEF_RANK:
        print("listening", flush=True)  # the same protocol as the socket chief's (nothing opens a port)
        bench_round.run_chief(args, transport)
    else:
        args.name = name
        bench_round.run_worker(args, transport)


# -- one run of one system -----------------------------------------------------------------------------
def measure_mpi(pki_dir: str, workers: int, size: int, rounds: int, timeout: float, btl: str | None) -> dict[str, Any]:
    from edgefed.demo_mpi import mpirun_command

    with tempfile.TemporaryDirectory(prefix="edgefed-bench-mpi-") as state:
        hostfile = Path(state) / "hostfile"
        hostfile.write_text(f"localhost slots={workers + 1}\n")
        command = [*mpirun_command(workers + 1, hostfile), *(["--mca", "btl", btl] if btl else []),
                   sys.executable, __file__, "--role", "mpi-rank", "--pki", pki_dir, "--state", state,
                   "--port", "1", "--workers", str(workers), "--size", str(size), "--rounds", str(rounds)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BenchFailure(f"the mpirun job did not end within {timeout:.0f}s") from exc
    results = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not results:
        raise BenchFailure(f"mpirun exited {done.returncode}: {_rank_error(done.stderr)}")
    out: dict[str, Any] = json.loads(results[-1])
    return {"median_s": statistics.median(out["times"][1:]), **out}


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failure)\b")  # a traceback's last line


def _rank_error(stderr: str) -> str:
    """The last exception a rank printed (mpirun's own banner after it says only that a rank failed)."""
    raised = [line.strip() for line in stderr.splitlines() if _RAISED.match(line)]
    return raised[-1] if raised else stderr.strip()[-400:]


def measure_system(system: str, args: argparse.Namespace, pki_dir: str, workers: int, size: int) -> dict[str, Any]:
    rounds = args.rounds
    if system == "mpi":
        return measure_mpi(pki_dir, workers, size, rounds, args.timeout, args.mpi_btl)
    if system == "flower":
        return bench_flower.measure_flower(args.flwr_python, pki_dir, workers, size, rounds, args.timeout)
    if system == "plain":  # the roles of this script, over plain TCP
        return _measure_plain(pki_dir, workers, size, rounds, args.timeout)
    return bench_round.measure("edgefed", pki_dir, workers, size, rounds, args.timeout)  # TLS


def _measure_plain(pki_dir: str, workers: int, size: int, rounds: int, timeout: float) -> dict[str, Any]:
    from common import free_port, run_server_and_clients

    with tempfile.TemporaryDirectory(prefix="edgefed-bench-plain-") as state:
        common = ["--pki", pki_dir, "--state", state, "--port", str(free_port()), "--workers", str(workers),
                  "--size", str(size), "--rounds", str(rounds)]
        me = [sys.executable, __file__]
        clients = [[*me, "--role", "plain-worker", "--name", f"w{i}", *common] for i in range(workers)]
        out = run_server_and_clients([*me, "--role", "plain-chief", *common], clients, timeout)
    return {"median_s": statistics.median(out["times"][1:]), **out}


def measure_point(args: argparse.Namespace, pki_dir: str, workers: int, size: int) -> dict[str, Any]:
    row: dict[str, Any] = {"workers": workers, "size_mb": size, "load_before": load_average(),
                           "timed_rounds": args.rounds - 1}
    for system in args.systems:
        started = time.monotonic()
        needed = bench_flower.needed_mb(FOOTPRINT_OF[system], workers, size)
        available = bench_flower.available_memory_mb() - bench_flower.SAFETY_MB
        if needed > available:
            result: dict[str, Any] = {"error": f"not run: needs about {needed / 1024:.1f} GB of memory"}
        else:
            try:
                result = measure_system(system, args, pki_dir, workers, size)
            except (BenchFailure, ValueError, KeyError) as exc:
                result = {"error": str(exc)}
        result["run_s"] = round(time.monotonic() - started, 1)
        row[system] = result
        print(json.dumps({"workers": workers, "size_mb": size, "system": system, **result}), flush=True)
    return row


# -- the report ----------------------------------------------------------------------------------------
def _seconds(row: dict[str, Any], system: str) -> float | None:
    value = row.get(system, {}).get("median_s")
    return float(value) if value is not None else None


def _cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def write_markdown(rows: list[dict[str, Any]], not_run: list[tuple[int, int]], command: str,
                   args: argparse.Namespace, elapsed: float) -> str:
    others = [s for s in args.systems if s != "mpi"]
    lines = [
        "## One round: MPI vs edgefed sockets (TLS, plain TCP) vs Flower (issue 17)",
        "",
        f"Command: `{command}`, {elapsed / 60:.1f} min  ",
        f"Machine: {machine()}  ",
        f"MPI: OpenMPI via mpi4py, ranks on this machine, BTL {args.mpi_btl or 'chosen by OpenMPI (shared memory)'}. "
        "TLS and plain: edgefed's chief and workers on 127.0.0.1 (TLS 1.3, both ends authenticated; plain: "
        "nothing checked). Flower: as in bench_flower.py (TLS on). The same round everywhere: every worker "
        "uploads the model, the chief averages (and writes its checkpoint), the chief broadcasts; workers "
        "answer at once. Median of the timed rounds; 'load' is the 1-minute load average when the point started.",
        "",
        "| workers | model MB | " + " | ".join(f"{LABELS[s]} s" for s in args.systems) + " | "
        + " | ".join(f"{LABELS[s]} / MPI" for s in others) + " | load | errors |",
        "|---:|---:|" + "---:|" * (len(args.systems) + len(others)) + "---:|---|",
    ]
    for row in rows:
        mpi = _seconds(row, "mpi")
        times = [_cell(_seconds(row, s)) for s in args.systems]
        ratios = [_cell(_seconds(row, s) / mpi if mpi and _seconds(row, s) else None, 2) for s in others]
        errors = "; ".join(f"{LABELS[s]}: {row[s]['error']}" for s in args.systems if "error" in row[s])
        lines.append(f"| {row['workers']} | {row['size_mb']} | " + " | ".join(times + ratios)
                     + f" | {row['load_before']} | {errors} |")
    for workers, size in not_run:
        lines.append(f"| {workers} | {size} | not run (time budget {args.budget:.0f} s used up) |")
    lines += ["", "Peak RSS of the chief / server (MB):", "",
              "| workers | model MB | " + " | ".join(LABELS[s] for s in args.systems) + " |",
              "|---:|---:|" + "---:|" * len(args.systems)]
    for row in rows:
        lines.append(f"| {row['workers']} | {row['size_mb']} | "
                     + " | ".join(_cell(row[s].get("peak_rss_mb"), 0) for s in args.systems) + " |")
    return "\n".join(lines) + "\n"


def role_args(args: argparse.Namespace) -> argparse.Namespace:
    """Every option bench_round's roles read (node_config), at bench_round's own defaults: one worker
    count, one upload at a time, no digests, no memory budget, a checkpoint every round."""
    args.workers = args.workers[0] if isinstance(args.workers, list) else args.workers
    args.uploads, args.digests, args.memory_mb, args.memory_models, args.checkpoint_every = 1, False, 0, 0.0, 1
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=["mpi-rank", "plain-chief", "plain-worker"])
    parser.add_argument("--pki")
    parser.add_argument("--state")
    parser.add_argument("--name", default="w0")
    parser.add_argument("--port", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="model sizes in MiB")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run; the first is dropped")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--mpi-btl", help="OpenMPI's byte transfer layers (e.g. tcp,self); default: its choice")
    parser.add_argument("--flwr-python", default=str(REPO / ".venv-flwr" / "bin" / "python"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for the whole matrix")
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not update docs/")
    args = parser.parse_args()
    if args.role:
        role_args(args)
        if args.role == "mpi-rank":
            run_mpi_rank(args)
        elif args.role == "plain-chief":
            bench_round.run_chief(args, PlainTransport())
        else:
            bench_round.run_worker(args, _NamelessPlain())
        return
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round is dropped)")
    if "flower" in args.systems and not Path(args.flwr_python).exists():
        parser.error(f"--flwr-python {args.flwr_python} does not exist (make .venv-flwr/.installed builds it)")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    not_run: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-mpi-pki-") as pki_dir:
        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "chief", ["127.0.0.1"])
        for i in range(max(args.workers)):
            pki.issue_node(pki_dir, f"w{i}")
        for size in sorted(args.sizes):
            for workers in sorted(args.workers):
                if time.monotonic() - started > args.budget:
                    not_run.append((workers, size))
                    continue
                rows.append(measure_point(args, pki_dir, workers, size))
    elapsed = time.monotonic() - started
    section = write_markdown(rows, not_run, ("python bench/bench_mpi.py " + shlex.join(sys.argv[1:])).strip(),
                             args, elapsed)
    print(section)
    if not args.no_doc:
        update_doc(section, "bench_mpi")


if __name__ == "__main__":
    main()
