"""One federated round (gather + average + broadcast) on loopback: edgefed vs the raw TLS limit.

For each N workers and model size, runs a chief process and N worker processes (no training: a
worker answers each broadcast at once, so the round is pure protocol), then pushes the same bytes
through plain TLS sockets (sendall / recv_into, no framing, no averaging) with the same certificates.
Reports the median round time of several rounds, the ratio, the chief's peak RSS and the median
of each phase of the chief's round timeline (edgefed/federation/timeline.py).

    .venv/bin/python bench/bench_round.py [--workers 1 4 16] [--sizes 1 16 64] [--rounds 4]
        [--uploads 1 | --memory-mb MB | --memory-models X] [--checkpoint-every K]
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import machine, model, peak_rss_mb, run_server_and_clients, update_doc  # noqa: E402

from edgefed import pki  # noqa: E402
from edgefed.config import config_from_dict  # noqa: E402
from edgefed.federation.staging import held_model_bytes  # noqa: E402
from edgefed.federation.timeline import PHASES  # noqa: E402
from edgefed.pki import NodeCredentials  # noqa: E402
from edgefed.transport import Transport, client_context, server_context  # noqa: E402
from edgefed.transport.tcp import tune_socket  # noqa: E402
from edgefed.wire import TensorSpec  # noqa: E402
from edgefed.wiring import build_chief, build_worker  # noqa: E402


def readahead_mb(args: argparse.Namespace) -> int:
    """--readahead-mb, when no other pool setting is given (--uploads 1, no --memory-mb/--memory-models)."""
    plain = args.uploads == 1 and not args.memory_mb and not args.memory_models
    return int(getattr(args, "readahead_mb", 0)) if plain else 0


def chief_memory_mb(args: argparse.Namespace) -> int:
    """--memory-mb as given, or --memory-models times this run's model size (a budget per size), or
    with --readahead-mb R alone: what the global model, the aggregator and one staging buffer hold plus
    R MiB of read-ahead for the uploads waiting for the buffer (edgefed/federation/readahead.py)."""
    if readahead_mb(args):
        specs = [TensorSpec("float32", array.shape) for array in model(args.size)]
        held = held_model_bytes(specs, "fedavg", 10) + sum(spec.nbytes for spec in specs)
        return math.ceil(held / (1 << 20)) + readahead_mb(args)
    if args.memory_models:
        return math.ceil(args.memory_models * args.size)
    return int(args.memory_mb)


def node_config(args: argparse.Namespace, name: str, role: str) -> Any:
    """The benchmark's node: ledger.enabled only switches the payload digests on (--digests); no
    records are written, that cost is bench_ledger.py's."""
    return config_from_dict({
        "node": {"name": name, "role": role, "pki_dir": args.pki, "state_dir": f"{args.state}/{name}"},
        "federation": {"private_ip": "127.0.0.1", "private_port": args.port, "public_ip": "127.0.0.1",
                       "public_port": args.port, "wait_time": 300.0, "min_workers": args.workers,
                       "rounds": args.rounds, "round_timeout": 600.0, "max_frame_bytes": 1 << 31,
                       "max_concurrent_uploads": args.uploads, "chief_memory_mb": chief_memory_mb(args),
                       "checkpoint_every": args.checkpoint_every},
        "ledger": {"enabled": args.digests},
    })


# -- edgefed -----------------------------------------------------------------------------------------
def run_chief(args: argparse.Namespace, transport: Transport | None = None, name: str = "chief") -> None:
    """The chief's rounds; transport: TLS unless given (bench_mpi.py: MPI, plain TCP)."""
    config = node_config(args, name, "chief")
    chief = build_chief(config, ledger=False, transport=transport)  # digests only (--digests), no records
    chief.listen()
    print("listening", flush=True)
    current = chief.start(model(args.size)).weights  # keep no other reference: it is the chief's model
    times, phases = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        result = chief.average(current, 1)
        times.append(time.perf_counter() - started)
        phases.append(result.phases)
        current = result.weights
    staging = chief.staging
    chief.close()
    print(json.dumps({"times": times, "phases": phases, "peak_rss_mb": peak_rss_mb(),
                      "staging": {"limit": staging.limit, "created": staging.created, "peak": staging.peak_in_use}
                      if staging is not None else None}), flush=True)


def run_worker(args: argparse.Namespace, transport: Transport | None = None) -> None:
    config = node_config(args, args.name, "worker")
    session = build_worker(config, ledger=False, transport=transport)
    info = session.start()
    weights, finished = info.weights, info.finished
    while not finished:
        result = session.average(weights, 1)
        weights, finished = result.weights, result.finished
    session.close()


# -- raw TLS limit -----------------------------------------------------------------------------------
def run_raw_server(args: argparse.Namespace) -> None:
    creds = NodeCredentials.load(args.pki, "chief")
    context = server_context(creds)
    listener = socket.create_server(("127.0.0.1", args.port))
    print("listening", flush=True)
    size = args.size << 20
    conns = []
    for _ in range(args.workers):
        raw, _ = listener.accept()
        tune_socket(raw)
        conns.append(context.wrap_socket(raw, server_side=True))
    buffers = [bytearray(size) for _ in conns]
    outgoing = memoryview(bytearray(size))

    def receive(conn: ssl.SSLSocket, buffer: bytearray) -> None:
        view, got = memoryview(buffer), 0
        while got < size:
            got += conn.recv_into(view[got:])

    def each(function: Any, items: list[Any]) -> None:
        threads = [threading.Thread(target=function, args=item) for item in items]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    each(lambda c: c.sendall(outgoing), [(c,) for c in conns])  # the initial broadcast
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        each(receive, list(zip(conns, buffers, strict=True)))
        each(lambda c: c.sendall(outgoing), [(c,) for c in conns])
        times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "peak_rss_mb": peak_rss_mb()}), flush=True)


def run_raw_client(args: argparse.Namespace) -> None:
    context = client_context(NodeCredentials.load(args.pki, args.name))
    raw = socket.create_connection(("127.0.0.1", args.port))
    tune_socket(raw)
    conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
    size = args.size << 20
    buffer = memoryview(bytearray(size))
    for round_ in range(args.rounds + 1):
        got = 0
        while got < size:
            got += conn.recv_into(buffer[got:])
        if round_ < args.rounds:
            conn.sendall(buffer)
    conn.close()


# -- orchestration -----------------------------------------------------------------------------------
def measure(
    kind: str, pki_dir: str, workers: int, size: int, rounds: int, timeout: float = 600, options: Sequence[str] = ()
) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The state directory holds the chief's checkpoint (a model's size): removed after the run.
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-") as state:
        common = ["--pki", pki_dir, "--state", state, "--port", str(port), "--workers", str(workers),
                  "--size", str(size), "--rounds", str(rounds), *options]
        server_role, client_role = ("chief", "worker") if kind == "edgefed" else ("raw-server", "raw-client")
        me = [sys.executable, __file__]
        out = run_server_and_clients(
            [*me, "--role", server_role, *common],
            [[*me, "--role", client_role, "--name", f"w{i}", *common] for i in range(workers)],
            timeout,
        )
    # the first round includes connection warm-up; report the median of the rest
    timed = out.get("phases", [])[1:]
    if timed:
        out["phases_median"] = {name: round(statistics.median(p.get(name, 0.0) for p in timed), 4) for name in PHASES}
    return {"median_s": statistics.median(out["times"][1:]), **out}


def phase_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per point, the median milliseconds of each phase of the chief's timeline.
    rows: dicts with workers, size (MB) and phases_median (seconds)."""
    lines = [
        "Where the chief's round goes (median ms per phase, `edgefed/federation/timeline.py`: turnaround is "
        "the slowest worker's, receive / validate / add / slot_wait are summed over uploads, which overlap "
        "when several staging buffers exist; checkpoint is the wait on the round's critical path, "
        "checkpoint_write and status the background writes):",
        "",
        "| workers | model MB | " + " | ".join(PHASES) + " |",
        "|---:|---:|" + "---:|" * len(PHASES),
    ]
    for row in rows:
        phases = row.get("phases_median")
        if phases:
            lines.append(f"| {row['workers']} | {row['size']} | "
                         + " | ".join(f"{1000 * phases.get(name, 0.0):.1f}" for name in PHASES) + " |")
    return lines


def write_markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "## One round on loopback: edgefed vs the raw TLS limit (issue 2)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        "A round = every worker uploads the model, the chief averages, the chief broadcasts the average. "
        "Raw TLS = the same bytes through the same mutual-TLS 1.3 sockets with sendall/recv_into and no "
        "framing, validation, hashing or averaging. Median of the timed rounds (the first is dropped). "
        "Targets (issue 14): edgefed <= 1.25x raw; chief peak RSS <= 3x model + 100 MB at every N.",
        "",
        "| workers | model MB | edgefed s | raw TLS s | ratio | chief RSS MB | RSS target MB | raw server RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        target = 3 * row["size"] + 100
        lines.append(
            f"| {row['workers']} | {row['size']} | {row['edgefed_s']:.3f} | {row['raw_s']:.3f} | "
            f"{row['edgefed_s'] / row['raw_s']:.2f} | {row['chief_rss_mb']:.0f} | {target} | {row['raw_rss_mb']:.0f} |"
        )
    lines += ["", *phase_table(rows)]
    return "\n".join(lines) + "\n"


def edgefed_options(args: argparse.Namespace) -> list[str]:
    """The chief's settings under test, as this script's role options."""
    return ["--uploads", str(args.uploads), "--memory-mb", str(args.memory_mb),
            "--memory-models", str(args.memory_models), "--readahead-mb", str(getattr(args, "readahead_mb", 0)),
            "--checkpoint-every", str(args.checkpoint_every)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["chief", "worker", "raw-server", "raw-client"])
    parser.add_argument("--pki")
    parser.add_argument("--state")
    parser.add_argument("--name", default="w0")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--size", type=int)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=1, help="the chief's max_concurrent_uploads")
    parser.add_argument("--memory-mb", type=int, default=0,
                        help="the chief's chief_memory_mb (sizes its staging pool; 0: --uploads buffers)")
    parser.add_argument("--memory-models", type=float, default=0.0,
                        help="chief_memory_mb as this many model sizes (5: the global model, the float64 sum "
                        "and two staging buffers); overrides --memory-mb")
    parser.add_argument("--readahead-mb", type=int, default=0,
                        help="with --uploads 1 and no budget given: chief_memory_mb as one staging buffer plus "
                        "this many MiB of read-ahead")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="the chief's checkpoint_every")
    parser.add_argument("--digests", action="store_true",
                        help="compute the payload sha256 digests the ledger records (on when a ledger is configured)")
    parser.add_argument("--no-doc", action="store_true", help="print the table, do not update docs/benchmarks.md")
    args = parser.parse_args()
    if args.role:
        args.workers = args.workers[0]
        {"chief": run_chief, "worker": run_worker, "raw-server": run_raw_server, "raw-client": run_raw_client}[
            args.role
        ](args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-pki-") as pki_dir:
        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "chief", ["127.0.0.1"])
        for i in range(max(args.workers)):
            pki.issue_node(pki_dir, f"w{i}")
        for workers in args.workers:
            for size in args.sizes:
                options = [*edgefed_options(args), *(["--digests"] if args.digests else [])]
                ours = measure("edgefed", pki_dir, workers, size, args.rounds, options=options)
                raw = measure("raw", pki_dir, workers, size, args.rounds, options=options)
                row = {"workers": workers, "size": size, "edgefed_s": ours["median_s"], "raw_s": raw["median_s"],
                       "chief_rss_mb": ours["peak_rss_mb"], "raw_rss_mb": raw["peak_rss_mb"],
                       "phases_median": ours.get("phases_median"), "staging": ours.get("staging")}
                print(json.dumps(row), flush=True)
                rows.append(row)
    command = "python bench/bench_round.py " + " ".join(sys.argv[1:])
    section = write_markdown(rows, command.strip())
    print(section)
    if not args.no_doc:
        update_doc(section, "bench_round")


if __name__ == "__main__":
    main()
