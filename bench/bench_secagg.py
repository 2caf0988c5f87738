"""Secure aggregation's cost per round: extra messages, bytes and seconds at N workers (issue 18).

One round of the real protocol (edgefed.secagg: X25519 adverts, encrypted Shamir shares, ChaCha20
masks, unmasking) in one process, every message through the real codec, next to the plain round it
replaces (N UPDATE frames of float32 weights). Seconds are the whole round's CPU work run serially in
this one process (every worker's and the chief's), so they bound what a round adds, not its latency;
"chief s" is the chief's share (relaying, summing, unmasking), which does run on one node.

    .venv/bin/python bench/bench_secagg.py [--workers 8 32] [--params 100000] [--dropouts 0 1] [--repeats 3]

Prints a markdown table (stdout) for docs/benchmarks.md; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--params", type=int, default=100_000, help="model coordinates (float32 parameters)")
    parser.add_argument("--dropouts", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
                  f"{seconds:.3f} | {chief:.3f} |")


if __name__ == "__main__":
    main()
