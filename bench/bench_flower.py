"""One FedAvg round on loopback: edgefed vs Flower vs the raw TLS limit, and the chief's memory vs N.

For every N workers and model size, three runs of separate processes on 127.0.0.1, one after the
other, each doing the same round on the same arrays (bench/common.py: model):
- edgefed: a ChiefSession process and N WorkerSession processes (bench_round.py's roles);
- Flower: a real Flower server (legacy start_server, gRPC, TLS on, FedAvg) and N real Flower clients
  (bench/flower_roles.py, run in .venv-flwr);
- raw TLS: the same bytes through plain mutual-TLS sockets, no framing and no averaging
  (bench_round.py's raw roles).
Workers answer at once with the arrays they received, so a round is pure framework cost. Reports
the median of the timed rounds (the first round, which includes joining, is dropped), the ratios, and
the peak RSS of the chief / server process. Writes its section of docs/benchmarks.md, the raw numbers
to docs/bench/round_cost.json and plots to docs/bench/round_time.png and docs/bench/chief_rss.png.

    .venv/bin/python bench/bench_flower.py [--workers 2 8 32] [--sizes 1 16 64] [--rounds 4]
        [--flwr-python .venv-flwr/bin/python] [--budget 900] [--no-doc]
        [--uploads 1 | --memory-mb MB | --memory-models X | --readahead-mb R] [--checkpoint-every K]
        [--systems edgefed raw]
The edgefed rows also carry the median of each phase of the chief's round timeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_round
from common import (
    PLOTS,
    REPO,
    BenchFailure,
    free_port,
    load_average,
    machine,
    model,
    process_group,
    read_line,
    run_server_and_clients,
    spawn,
    update_doc,
)

from edgefed import pki

SYSTEMS = ("edgefed", "flower", "raw")
LABELS = {"edgefed": "edgefed", "flower": "Flower", "raw": "raw TLS"}
FLOWER_ROLES = Path(__file__).resolve().parent / "flower_roles.py"


# Resident memory a run needs, in MB: per client process base + copies x model, server base + copies x
# model x (per client) + copies x model (fixed). Measured here (N = 2, 8 and 32; 16 and 64 MB): a Flower
# client peaks at 18-22 model copies (gRPC message, protobuf, arrays, re-encoded arrays, outgoing
# message), its server near 9 per client; an edgefed worker near 4, its chief near 7 whatever N.
FOOTPRINT = {"edgefed": (60, 4.0, 0.0, 7.0), "flower": (100, 20.0, 9.0, 16.0), "raw": (50, 2.0, 1.0, 2.0)}
SAFETY_MB = 3072  # left to the rest of the machine (other engineers' tests share it)


def needed_mb(system: str, workers: int, size: int) -> float:
    client_base, client_copies, server_per_client, server_fixed = FOOTPRINT[system]
    return workers * (client_base + size * client_copies) + 150 + size * (server_per_client * workers + server_fixed)


def measure_flower(
    flwr_python: str, pki_dir: str, workers: int, size: int, rounds: int, timeout: float
) -> dict[str, Any]:
    common = ["--pki", pki_dir, "--port", str(free_port()), "--workers", str(workers), "--size", str(size),
              "--rounds", str(rounds), "--round-timeout", str(timeout)]
    me = [flwr_python, str(FLOWER_ROLES)]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    out = run_server_and_clients(
        [*me, "--role", "server", *common], [[*me, "--role", "client", *common] for _ in range(workers)], timeout, env
    )
    return {"median_s": statistics.median(out["times"][1:]), **out}


def flower_tls(flwr_python: str, pki_dir: str) -> str:
    """What a TLS client negotiates with the Flower server: proof that its own TLS is on."""
    port = free_port()
    command = [flwr_python, str(FLOWER_ROLES), "--role", "server", "--pki", pki_dir, "--port", str(port),
               "--workers", "1", "--size", "1", "--rounds", "2"]
    with process_group() as children:
        server = spawn(command, {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}, subprocess.PIPE)
        children.append(server)
        assert server.stdout is not None
        read_line(server.stdout, time.monotonic() + 60, "the Flower server to listen")
        context = ssl.create_default_context(cafile=str(Path(pki_dir) / "ca.crt"))
        context.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            cipher = tls.cipher()
            return f"{tls.version()} {cipher[0] if cipher else '?'}, ALPN {tls.selected_alpn_protocol()}"


def memory_setting(args: argparse.Namespace) -> str:
    """chief_memory_mb as the run set it, and the read-ahead it leaves (edgefed/federation/readahead.py)."""
    if bench_round.readahead_mb(args):
        return f"global + aggregator + 1 staging buffer + {args.readahead_mb} MiB`, read-ahead `{args.readahead_mb} MiB"
    budget = f"{args.memory_models:g} x M" if args.memory_models else str(args.memory_mb)
    return f"{budget}`, read-ahead `{'what the budget leaves after whole buffers' if budget != '0' else '0'}"


def available_memory_mb() -> float:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def measure_point(args: argparse.Namespace, pki_dir: str, workers: int, size: int) -> dict[str, Any]:
    # Light points are cheap and noisy on a shared machine: more rounds. Heavy ones: one round fewer.
    round_mb = 2 * workers * size
    if round_mb <= args.light_mb:
        rounds = 2 * args.rounds
    elif round_mb <= args.heavy_mb:
        rounds = args.rounds
    else:
        rounds = max(3, args.rounds - 1)
    row: dict[str, Any] = {"workers": workers, "size_mb": size, "load_before": load_average(),
                           "timed_rounds": rounds - 1}
    for system in SYSTEMS:
        if system not in args.systems:
            row[system] = {"error": "not run (--systems)"}
            continue
        started = time.monotonic()
        # Do not start a run the machine cannot hold: an OOM kill would hit other people's work too.
        needed, available = needed_mb(system, workers, size), available_memory_mb() - SAFETY_MB
        if needed > available:
            row[system] = {"error": f"not run: needs about {needed / 1024:.1f} GB of memory, "
                                    f"{available / 1024:.1f} GB free beyond a {SAFETY_MB // 1024} GB reserve"}
            print(json.dumps({"workers": workers, "size_mb": size, "system": system, **row[system]}), flush=True)
            continue
        try:
            if system == "flower":
                result = measure_flower(args.flwr_python, pki_dir, workers, size, rounds, args.timeout)
            else:
                options = bench_round.edgefed_options(args) if system == "edgefed" else ()
                result = bench_round.measure(system, pki_dir, workers, size, rounds, args.timeout, options)
        except (BenchFailure, ValueError, KeyError) as exc:
            result = {"error": str(exc)}
        result["run_s"] = round(time.monotonic() - started, 1)
        row[system] = result
        print(json.dumps({"workers": workers, "size_mb": size, "system": system, **result}), flush=True)
    return row


def edgefed_own_work(size: int, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of the per-round work edgefed does and raw TLS does not, each timed alone here
    (median of `repeats`): sha256 of a frame (the ledger's transfer records carry it), adding one
    upload into a fresh round's running sum (first touch of its memory included, as in a real round),
    the average, and the durable checkpoint."""
    from edgefed.federation.aggregation import StreamingAggregator
    from edgefed.federation.checkpoint import Checkpoint, save_checkpoint
    from edgefed.wire import MessageType, encode_tensor_frame, payload_sha256, specs_of

    weights = model(size)
    parts = encode_tensor_frame(MessageType.UPDATE, 1, weights, 1)
    samples: dict[str, list[float]] = {"sha256_ms": [], "add_ms": [], "average_ms": [], "checkpoint_ms": []}

    def timed_ms(key: str, action: Callable[[], object]) -> None:
        started = time.perf_counter()
        action()
        samples[key].append((time.perf_counter() - started) * 1000)

    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as state:
        for _ in range(repeats):
            aggregator, upload = StreamingAggregator(specs_of(weights)), [w.copy() for w in weights]
            timed_ms("sha256_ms", lambda: payload_sha256(parts))
            timed_ms("add_ms", lambda: aggregator.add_scaled_in_place(upload, 1, "w"))  # noqa: B023
            timed_ms("average_ms", aggregator.average)
            timed_ms("checkpoint_ms", lambda: save_checkpoint(state, Checkpoint(1, weights)))
    return {"size_mb": size, **{key: round(statistics.median(values), 1) for key, values in samples.items()}}


def seconds(row: dict[str, Any], system: str) -> float | None:
    value = row[system].get("median_s")
    return float(value) if value is not None else None


def cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def verdicts(row: dict[str, Any]) -> str:
    ours, flower, raw = seconds(row, "edgefed"), seconds(row, "flower"), seconds(row, "raw")
    notes = []
    if ours is not None and raw is not None:
        notes.append("≤1.5x raw: " + ("met" if ours <= 1.5 * raw else "**missed**"))
        notes.append("≤1.25x raw: " + ("met" if ours <= 1.25 * raw else "**missed**"))
    rss = row["edgefed"].get("peak_rss_mb")
    if rss is not None:
        notes.append("chief RSS ≤ 3x M + 100 MB: " + ("met" if rss <= 3 * row["size_mb"] + 100 else "**missed**"))
    if ours is not None and flower is not None:
        notes.append("ahead of Flower: " + ("met" if ours < flower else "**missed**"))
    errors = [f"{LABELS[s]}: {row[s]['error']}" for s in SYSTEMS if "error" in row[s]]
    return "; ".join(notes + errors)


def memory_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per model size: chief / server RSS at the smallest and largest N measured, and whether edgefed's
    stays flat (within 20 %) while Flower's grows."""
    verdicts = []
    for size in sorted({r["size_mb"] for r in rows}):
        parts = []
        for system in ("edgefed", "flower"):
            points = sorted((r["workers"], r[system]["peak_rss_mb"]) for r in rows
                            if r["size_mb"] == size and "peak_rss_mb" in r[system])
            if len(points) < 2:
                parts.append(f"{LABELS[system]}: fewer than two points")
                continue
            (n_low, low), (n_high, high) = points[0], points[-1]
            growth = high / low
            judged = ""
            if system == "edgefed":
                judged = " — flat: met" if growth <= 1.2 else " — flat: **missed**"
            parts.append(f"{LABELS[system]} {low:.0f} MB at N = {n_low} → {high:.0f} MB at N = {n_high} "
                         f"(x{growth:.2f}){judged}")
        verdicts.append(f"- {size} MB model: " + "; ".join(parts))
    return verdicts


def write_markdown(rows: list[dict[str, Any]], not_run: list[tuple[int, int]], command: str, args: argparse.Namespace,
                   elapsed: float, own_work: list[dict[str, float]]) -> str:
    flwr_version = next((r["flower"]["flwr"] for r in rows if "flwr" in r["flower"]), "?")
    lines = [
        "## One round: edgefed vs Flower vs the raw TLS limit (issue 9)",
        "",
        f"Command: `{command}` (part of `make bench`), {elapsed / 60:.1f} min  ",
        f"Machine: {machine()}  ",
        (f"Flower: flwr {flwr_version} in `.venv-flwr`, legacy `start_server`/`start_client` (gRPC bidi stream), "
         "its own TLS on with the certificates `edgefed.pki` issued (ECDSA P-256; Flower authenticates the "
         f"server only, edgefed and raw TLS authenticate both ends; a client handshake with the Flower server "
         f"negotiated {args.flower_tls}), strategy FedAvg, server thread pool = N.  "
         if "flower" in args.systems else "Flower: not run in this run (`--systems`).  "),
        "",
        "A round: every worker uploads the model, the chief averages, the chief broadcasts the average "
        "(Flower: the server sends the model in each fit instruction, every client returns it, the server "
        "averages). Workers answer at once with the arrays they received. All processes on loopback, the "
        "model is 4 float32 tensors. Raw TLS = the same bytes through the same mutual-TLS 1.3 sockets with "
        "sendall/recv_into: no framing, hashing, checkpoint or averaging. The edgefed chief also writes its "
        "checkpoint (every `checkpoint_every` rounds, below) and contributes its own copy of the model. "
        f"Median of the timed rounds of each run: {args.rounds - 1}, {2 * args.rounds - 1} where a round moves "
        f"at most {args.light_mb:.0f} MB, one fewer where it moves more than {args.heavy_mb:.0f} MB (the first "
        "round, which includes joining, is dropped); "
        "'load' is the machine's 1-minute load average when the point started (it counts the benchmark's own "
        "processes of the previous point too, so it is high after the N = 32 points even on a quiet machine).",
        "",
        "Targets: edgefed ≤ 1.5x raw TLS and ahead of Flower at every point (issue 9); edgefed ≤ 1.25x raw "
        "TLS and chief peak RSS ≤ 3x M + 100 MB at every point (issue 14). The edgefed chief's settings: "
        f"`max_concurrent_uploads = {args.uploads}`, `chief_memory_mb = "
        f"{memory_setting(args)}`, "
        f"`checkpoint_every = {args.checkpoint_every}`.",
        "",
        "| workers | model MB | edgefed s | Flower s | raw TLS s | edgefed / raw | Flower / raw | Flower / edgefed "
        "| timed rounds | load | targets |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ours, flower, raw = seconds(row, "edgefed"), seconds(row, "flower"), seconds(row, "raw")
        lines.append(
            f"| {row['workers']} | {row['size_mb']} | {cell(ours)} | {cell(flower)} | {cell(raw)} | "
            f"{cell(ours / raw if ours and raw else None, 2)} | {cell(flower / raw if flower and raw else None, 2)} | "
            f"{cell(flower / ours if flower and ours else None, 2)} | {row['timed_rounds']} | {row['load_before']} | "
            f"{verdicts(row)} |"
        )
    for workers, size in not_run:
        lines.append(f"| {workers} | {size} | not run | not run | not run | | | | | | time budget "
                     f"({args.budget:.0f} s) used up |")
    lines += [
        "",
        "Where edgefed's time goes beyond raw TLS: per round the chief receives the uploads through its "
        "staging buffers (`federation.max_concurrent_uploads`, default 1: one upload at a time; with "
        "`chief_memory_mb`, uploads waiting for a buffer read ahead into what it leaves), adds every "
        "upload into the running sum, averages, and writes a durable checkpoint (fsync) while it broadcasts; "
        "with a ledger configured (not in these runs) both sides also hash every frame (sha256, for the "
        "ledger's transfer records). Each timed alone here, single-threaded:",
        "",
        "| model MB | sha256 of the model ms (ledger only) | add one upload ms | average ms | checkpoint ms |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {c['size_mb']} | {c['sha256_ms']} | {c['add_ms']} | {c['average_ms']} | {c['checkpoint_ms']} |"
          for c in own_work),
        "",
        *bench_round.phase_table([{"workers": r["workers"], "size": r["size_mb"],
                                   "phases_median": r["edgefed"].get("phases_median")} for r in rows]),
        "",
        "![round time](bench/round_time.png)",
        "",
        "### Chief / server peak RSS vs N",
        "",
        "Peak resident memory of the chief (edgefed), the server (Flower) and the raw TLS server process over "
        "the whole run. Target: edgefed flat in N (streaming aggregation), where Flower keeps every "
        "client's result until it aggregates.",
        "",
        "| model MB | workers | edgefed chief MB | Flower server MB | raw TLS server MB "
        "| edgefed worker MB | Flower client MB | raw TLS client MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r["size_mb"], r["workers"])):
        rss = [row[s].get("peak_rss_mb") for s in SYSTEMS] + [row[s].get("client_peak_rss_mb") for s in SYSTEMS]
        lines.append(f"| {row['size_mb']} | {row['workers']} | " + " | ".join(cell(v, 0) for v in rss) + " |")
    lines += ["", *memory_verdicts(rows), "", "![chief memory](bench/chief_rss.png)", ""]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sizes = sorted({r["size_mb"] for r in rows})
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
    for axis, size in zip(axes[0], sizes, strict=True):
        for system, marker in zip(SYSTEMS, "os^", strict=True):
            points = [(r["workers"], seconds(r, system)) for r in rows if r["size_mb"] == size]
            points = [(n, s) for n, s in points if s is not None]
            if points:
                axis.plot(*zip(*points, strict=True), marker=marker, label=LABELS[system])
        axis.set(title=f"{size} MB model", xlabel="workers", ylabel="median round time (s)", xscale="log", yscale="log")
        workers = sorted({r["workers"] for r in rows})
        axis.set_xticks(workers, labels=[str(n) for n in workers])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOTS / "round_time.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 4))
    for size, style in zip(sizes, ["-", "--", ":", "-."], strict=False):
        for system, color in zip(SYSTEMS, ["tab:blue", "tab:orange", "tab:green"], strict=True):
            points = [(r["workers"], r[system].get("peak_rss_mb")) for r in rows if r["size_mb"] == size]
            points = [(n, m) for n, m in points if m is not None]
            if points:
                label = f"{LABELS[system]}, {size} MB"
                axis.plot(*zip(*points, strict=True), style, color=color, marker="o", label=label)
    axis.set(xlabel="workers", ylabel="peak RSS of the chief / server (MB)", xscale="log", yscale="log")
    workers = sorted({r["workers"] for r in rows})
    axis.set_xticks(workers, labels=[str(n) for n in workers])
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(PLOTS / "chief_rss.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="model sizes in MiB")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run; the first is dropped")
    parser.add_argument("--light-mb", type=float, default=128,
                        help="points moving at most this many MB per round run twice --rounds")
    parser.add_argument("--heavy-mb", type=float, default=1024,
                        help="points moving more MB than this per round run one round fewer (at least 3)")
    parser.add_argument("--flwr-python", default=str(REPO / ".venv-flwr" / "bin" / "python"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take")
    parser.add_argument("--budget", type=float, default=780.0,
                        help="seconds for the whole matrix; the points after it are reported as not run")
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not update docs/")
    parser.add_argument("--uploads", type=int, default=1, help="the edgefed chief's max_concurrent_uploads")
    parser.add_argument("--memory-mb", type=int, default=0,
                        help="the edgefed chief's chief_memory_mb (sizes its staging pool; 0: --uploads buffers)")
    parser.add_argument("--memory-models", type=float, default=0.0,
                        help="the edgefed chief's chief_memory_mb as this many model sizes; overrides --memory-mb")
    parser.add_argument("--readahead-mb", type=int, default=0,
                        help="with --uploads 1 and no budget given: the edgefed chief's chief_memory_mb as one "
                        "staging buffer plus this many MiB of read-ahead for the uploads waiting for it (0: none)")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="the edgefed chief's checkpoint_every")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                        help="which systems to run (a smoke run or an edgefed-vs-raw matrix skips Flower)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round is dropped)")
    if "flower" in args.systems and not Path(args.flwr_python).exists():
        parser.error(f"--flwr-python {args.flwr_python} does not exist (make .venv-flwr/.installed builds it)")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    not_run: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-flower-pki-") as pki_dir:
        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "chief", ["127.0.0.1"])
        for i in range(max(args.workers)):
            pki.issue_node(pki_dir, f"w{i}")
        args.flower_tls = flower_tls(args.flwr_python, pki_dir) if "flower" in args.systems else "not run"
        # small models first: if the budget runs out, what is left unmeasured is the largest points
        for size in sorted(args.sizes):
            for workers in sorted(args.workers):
                if time.monotonic() - started > args.budget:
                    not_run.append((workers, size))
                    continue
                rows.append(measure_point(args, pki_dir, workers, size))
    own_work = [edgefed_own_work(size) for size in sorted(args.sizes)]
    elapsed = time.monotonic() - started
    command = "python bench/bench_flower.py " + shlex.join(sys.argv[1:])
    section = write_markdown(rows, not_run, command.strip(), args, elapsed, own_work)
    print(section)
    if not args.no_doc:
        PLOTS.mkdir(parents=True, exist_ok=True)
        (PLOTS / "round_cost.json").write_text(
            json.dumps({"rows": rows, "not_run": not_run, "edgefed_own_work": own_work}, indent=1) + "\n"
        )
        plot(rows)
        update_doc(section, "bench_flower")


if __name__ == "__main__":
    main()
