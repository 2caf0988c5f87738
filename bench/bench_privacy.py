"""Differential privacy: final accuracy on digits against the target epsilon (federation.dp_epsilon).

The chief's real round rules (edgefed.federation.rounds.RoundBook, fedavg) and the nodes' real
privatizing trainer (edgefed.federation.dp.PrivateTrainer: clip each step to dp_clip_norm, add the
Gaussian noise dp-accounting calibrates for the planned rounds) driven in one process — no sockets:
what the noise does to the model does not depend on how the update travelled
(`edgefed demo --dp-epsilon E` runs the same over TLS). Digits, the numpy softmax trainer, chief + N
workers, every node privatizing its own update; each epsilon is run with several noise seeds and the
mean and spread of the final accuracy are reported, next to the run without privacy.

    .venv/bin/python bench/bench_privacy.py [--epsilons 1 10 100 1000] [--workers 10] [--rounds 10]
        [--repeats 3] [--clip-norm 1.0] [--delta 1e-5] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import PLOTS, machine, update_doc  # noqa: E402

from edgefed.federation.dp import DpPlan, PrivateTrainer  # noqa: E402
from edgefed.federation.rounds import RoundBook, RoundRules, Seat  # noqa: E402
from edgefed.federation.strategies import distance  # noqa: E402
from edgefed.trainers.base import Trainer  # noqa: E402
from edgefed.trainers.data import DIGITS, load_dataset  # noqa: E402
from edgefed.trainers.softmax import SoftmaxTrainer  # noqa: E402


def federate(plan: DpPlan | None, workers: int, rounds: int, interval_steps: int, seed: int) -> float:
    """Final accuracy of the chief's model after `rounds` rounds; plan None: no privacy."""
    data = load_dataset(DIGITS, 0)  # one split for every node, as in the demo (trainer.seed = 0)
    bases = [SoftmaxTrainer(data=data) for _ in range(workers + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as budgets:
        nodes: list[Trainer] = []
        for index, base in enumerate(bases):
            base.use_shard(index, workers + 1)
            if plan is None:
                nodes.append(base)
                continue
            private = PrivateTrainer(base, plan, Path(budgets) / str(index))
            private._rng = np.random.default_rng(seed * 1000 + index)  # repeatable runs (nodes use OS entropy)
            nodes.append(private)
        chief, others = nodes[0], nodes[1:]
        book: RoundBook[Seat] = RoundBook(RoundRules(rounds, aggregation="fedavg"), "chief")
        book.begin(bases[0].get_weights(), 0, False)
        for number in range(rounds):
            start = book.global_weights
            for index, trainer in enumerate(others, start=1):
                trainer.set_weights(list(start))
                trainer.train_steps(interval_steps)
                update = trainer.get_weights()
                book.fold(f"worker{index}", number, update, trainer.num_samples, 0, distance(update, start))
            chief.set_weights(list(start))
            chief.train_steps(interval_steps)
            own = chief.get_weights()
            book.contribute_own(own, chief.num_samples, distance(own, start))
            book.close_round(None)
        bases[0].set_weights(list(book.global_weights))
        return float(bases[0].evaluate()[1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for epsilon in [0.0, *args.epsilons]:  # 0: without privacy
        plan = DpPlan.calibrate(epsilon, args.delta, args.clip_norm, args.rounds) if epsilon else None
        accuracies = [federate(plan, args.workers, args.rounds, args.interval_steps, seed)
                      for seed in range(args.repeats)]
        rows.append({
            "epsilon": epsilon or None, "noise_multiplier": plan.noise_multiplier if plan else None,
            "noise_std": plan.noise_std if plan else None,
            "accuracy_mean": round(statistics.fmean(accuracies), 4),
            "accuracy_stdev": round(statistics.pstdev(accuracies), 4), "accuracies": accuracies,
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"machine": machine(), "workers": args.workers, "rounds": args.rounds,
            "interval_steps": args.interval_steps, "delta": args.delta, "clip_norm": args.clip_norm,
            "repeats": args.repeats, "rows": rows}


def section(results: dict[str, Any]) -> str:
    lines = [
        "## Differential privacy: accuracy against epsilon (issue 18)",
        "",
        f"`bench/bench_privacy.py` on {results['machine']}: the chief's round rules (fedavg) and every node's "
        f"privatizing trainer in one process, digits, chief + {results['workers']} workers, {results['rounds']} "
        f"rounds of {results['interval_steps']} steps, clip norm {results['clip_norm']}, delta {results['delta']}, "
        f"{results['repeats']} noise seeds per row (docs/privacy.md).",
        "",
        "| target epsilon | noise multiplier | noise std per coordinate | final accuracy (mean ± sd) |",
        "|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if row["epsilon"] is None:
            lines.append(f"| off | - | - | {row['accuracy_mean']:.3f} ± {row['accuracy_stdev']:.3f} |")
        else:
            lines.append(f"| {row['epsilon']:g} | {row['noise_multiplier']:.3g} | {row['noise_std']:.3g} | "
                         f"{row['accuracy_mean']:.3f} ± {row['accuracy_stdev']:.3f} |")
    return "\n".join(lines) + "\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0, 10000.0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--no-doc", action="store_true", help="print the results only")
    args = parser.parse_args()
    results = measure(args)
    print(json.dumps(results, indent=2))
    if not args.no_doc:
        (PLOTS / "privacy.json").write_text(json.dumps(results, indent=2) + "\n")
        update_doc(section(results), "bench_privacy")


if __name__ == "__main__":
    main()
