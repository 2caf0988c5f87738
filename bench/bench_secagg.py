"""Secure aggregation's cost per round: extra messages, bytes and seconds at N workers (issue 18).

One round of the real protocol (edgefed.secagg: X25519 adverts, encrypted Shamir shares, ChaCha20
masks, unmasking) in one process, every message through the real codec, next to the plain round it
replaces (N UPDATE frames of float32 weights). Seconds are the whole round's CPU work run serially in
this one process (every worker's and the chief's), so they bound what a round adds, not its latency;
"chief s" is the chief's share (relaying, summing, unmasking), which does run on one node.

    .venv/bin/python bench/bench_secagg.py [--workers 8 32] [--params 100000] [--dropouts 0 1] [--repeats 3]

Prints a markdown table (stdout) for docs/benchmarks.md; writes nothing.

With --live it also runs real rounds: a chief process and N worker processes over mutual TLS on
loopback (no training: each worker answers every broadcast at once, as in bench_round.py), once with
federation.secure_aggregation and once without, and reports the median round time (the first round,
with its connection set-up, left out) and the bytes the chief sent and received per round.

    .venv/bin/python bench/bench_secagg.py --live [--workers 8 32] [--params 100000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import free_port, load_average, machine, run_server_and_clients  # noqa: E402

from edgefed import pki  # noqa: E402
from edgefed.config import config_from_dict  # noqa: E402
from edgefed.secagg import ring  # noqa: E402
from edgefed.secagg.chief_round import ChiefRound  # noqa: E402
from edgefed.secagg.simulate import run_round  # noqa: E402
from edgefed.wire import MessageType, encode_tensor_frame  # noqa: E402

BOUND = 0.05


def plain_round_bytes(workers: int, params: int) -> int:
    """What the same round costs without secure aggregation: one float32 UPDATE frame per worker."""
    frame = encode_tensor_frame(MessageType.UPDATE, 1, [np.zeros(params, np.float32)], 100)
    return workers * sum(len(part) for part in frame)


def chief_seconds(workers: int, params: int, dropouts: int) -> float:
    """Time the chief's own methods take in a round, measured by wrapping ChiefRound's phases."""
    spent = 0.0
    phases = ("add_advert", "roster", "add_shares", "inboxes", "add_masked", "unmask_request", "add_unmask", "result")
    originals = {name: getattr(ChiefRound, name) for name in phases}

    def timed(method):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal spent
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent += time.perf_counter() - started
        return wrapper

    try:
        for name, method in originals.items():
            setattr(ChiefRound, name, timed(method))
        one_round(workers, params, dropouts)
    finally:
        for name, method in originals.items():
            setattr(ChiefRound, name, method)
    return spent


def one_round(workers: int, params: int, dropouts: int) -> tuple[int, int, float]:
    rng = np.random.default_rng(workers)
    names = [f"w{index:03d}" for index in range(workers)]
    updates = {name: ring.quantize(rng.normal(0, BOUND / 2, params), BOUND, 10) for name in names}
    samples = dict.fromkeys(names, 10)
    result = run_round(updates, samples, threshold=2, dropouts={name: "mask" for name in names[:dropouts]})
    return result.traffic.messages, result.traffic.bytes, result.seconds


# -- live rounds: real processes over mutual TLS ------------------------------------------------------
def node_config(args: argparse.Namespace, name: str, role: str) -> Any:
    return config_from_dict({
        "node": {"name": name, "role": role, "pki_dir": args.pki, "state_dir": f"{args.state}/{name}"},
        "federation": {"private_ip": "127.0.0.1", "private_port": args.port, "public_ip": "127.0.0.1",
                       "public_port": args.port, "wait_time": 600.0, "min_workers": args.workers[0],
                       "rounds": args.rounds, "round_timeout": 600.0, "secure_aggregation": args.secure,
                       "secure_aggregation_bound": BOUND},
        "ledger": {"enabled": False},
    })


def run_chief(args: argparse.Namespace) -> None:
    from edgefed.wiring import build_chief

    chief = build_chief(node_config(args, "chief", "chief"), ledger=False)
    chief.listen()
    print("listening", flush=True)
    current = chief.start([np.random.default_rng(0).normal(0, 0.1, args.params).astype(np.float32)]).weights
    times, traffic = [], []
    for _ in range(args.rounds):
        before, started = chief.bytes_sent + chief.bytes_received, time.perf_counter()
        current = chief.average(current, 1).weights
        times.append(time.perf_counter() - started)
        traffic.append(chief.bytes_sent + chief.bytes_received - before)
    chief.close()
    print(json.dumps({"times": times, "bytes": traffic}), flush=True)


def run_worker(args: argparse.Namespace) -> None:
    from edgefed.wiring import build_worker

    session = build_worker(node_config(args, args.name, "worker"), ledger=False)
    info = session.start()
    weights, finished = info.weights, info.finished
    while not finished:
        result = session.average([w + np.float32(0.001) for w in weights], 1)  # a small step each round
        weights, finished = result.weights, result.finished
    session.close()


def live_round(pki_dir: str, workers: int, params: int, rounds: int, secure: bool) -> tuple[float, float]:
    """Median seconds and chief bytes per round (the first round left out) of a real federation."""
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-secagg-") as state:
        common = ["--pki", pki_dir, "--state", state, "--port", str(free_port()), "--workers", str(workers),
                  "--params", str(params), "--rounds", str(rounds), *(["--secure"] if secure else [])]
        me = [sys.executable, __file__]
        out = run_server_and_clients([*me, "--role", "chief", *common],
                                     [[*me, "--role", "worker", "--name", f"w{i:03d}", *common]
                                      for i in range(workers)], timeout=1800)
    return statistics.median(out["times"][1:]), statistics.median(out["bytes"][1:])


def live(args: argparse.Namespace) -> None:
    print(f"live: params {args.params}, {args.rounds} rounds (median of all but the first), {machine()}, "
          f"load {load_average()}")
    print("| N | plain round s | secure round s | extra s | chief bytes/round plain | secure | extra bytes |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-secagg-pki-") as pki_dir:
        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "chief", ["127.0.0.1"])
        for index in range(max(args.workers)):
            pki.issue_node(pki_dir, f"w{index:03d}")
        for workers in args.workers:
            plain_s, plain_b = live_round(pki_dir, workers, args.params, args.rounds, secure=False)
            secure_s, secure_b = live_round(pki_dir, workers, args.params, args.rounds, secure=True)
            print(f"| {workers} | {plain_s:.3f} | {secure_s:.3f} | {secure_s - plain_s:.3f} | {plain_b:.0f} | "
                  f"{secure_b:.0f} | {secure_b - plain_b:.0f} |", flush=True)
    print(f"load at the end {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--params", type=int, default=100_000, help="model coordinates (float32 parameters)")
    parser.add_argument("--dropouts", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="also time real rounds (processes, mutual TLS)")
    parser.add_argument("--rounds", type=int, default=4, help="--live: rounds per federation")
    parser.add_argument("--role", choices=["chief", "worker"], help=argparse.SUPPRESS)
    parser.add_argument("--secure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        (run_chief if args.role == "chief" else run_worker)(args)
        return
    print(f"params {args.params}, bound {BOUND}, median of {args.repeats} rounds")
    print("| N | dropped | messages (plain N) | bytes | plain bytes | extra bytes | round CPU s | chief s |")
    print("|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        for dropped in args.dropouts:
            runs = [one_round(workers, args.params, dropped) for _ in range(args.repeats)]
            messages, sent = runs[0][0], runs[0][1]
            seconds = statistics.median(run[2] for run in runs)
            chief = statistics.median(chief_seconds(workers, args.params, dropped) for _ in range(args.repeats))
            plain = plain_round_bytes(workers - dropped, args.params)
            print(f"| {workers} | {dropped} | {messages} ({workers}) | {sent} | {plain} | {sent - plain} | "
                  f"{seconds:.3f} | {chief:.3f} |", flush=True)
    if args.live:
        live(args)


if __name__ == "__main__":
    main()
