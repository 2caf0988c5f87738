"""Poisoning: final accuracy of each aggregation strategy with k of N = 10 workers attacking, and what
each strategy costs the chief per round.

1. Accuracy: the chief's real round rules (edgefed.federation.rounds.RoundBook, the strategies the chief
   runs) driven in one process — no sockets: what an update does to the model does not depend on how it
   travelled (`edgefed demo --attackers K --attack KIND --aggregation RULE` runs the same over TLS).
   Digits task, the numpy softmax trainer, chief + 10 workers, the last k of them attacking
   (edgefed.attacks: sign-flip, scale, huge, noise, little), every strategy, with update screening off;
   plus "fedavg+screen": fedavg with federation.screen_factor = 4. Updates reach the chief in a shuffled
   order each round (the chief's own last, as its average() closes the round).
2. Cost: one round of 10 updates of a 16 MB float32 model folded and combined, per strategy: seconds
   and the peak of memory allocated on top of the global model (tracemalloc).

    .venv/bin/python bench/bench_poisoning.py [--rounds 10] [--interval-steps 20] [--max-attackers 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import PLOTS, machine, update_doc  # noqa: E402

from edgefed.attacks import ATTACKS, AttackingTrainer  # noqa: E402
from edgefed.config import AGGREGATIONS  # noqa: E402
from edgefed.federation.rounds import RoundBook, RoundRules, Seat  # noqa: E402
from edgefed.federation.strategies import distance  # noqa: E402
from edgefed.trainers.base import Trainer  # noqa: E402
from edgefed.trainers.data import DIGITS, load_dataset  # noqa: E402
from edgefed.trainers.softmax import SoftmaxTrainer  # noqa: E402

WORKERS = 10
SCREENED = "fedavg+screen"
VARIANTS = (*AGGREGATIONS, SCREENED)


def rules_for(variant: str, rounds: int) -> RoundRules:
    if variant == SCREENED:
        return RoundRules(rounds, aggregation="fedavg", screen_factor=4.0)
    return RoundRules(rounds, aggregation=variant)


def federate(variant: str, attack: str, attackers: int, rounds: int, interval_steps: int) -> float:
    """Final accuracy of the chief's model after rounds rounds."""
    data = load_dataset(DIGITS, 0)  # one split for every node, as in the demo (trainer.seed = 0)
    chief = SoftmaxTrainer(data=data)
    workers: list[Trainer] = [SoftmaxTrainer(data=data) for _ in range(WORKERS)]
    for index in range(WORKERS - attackers, WORKERS):
        workers[index] = AttackingTrainer(workers[index], attack, seed=index)
    total = WORKERS + 1
    chief.use_shard(0, total)
    for index, trainer in enumerate(workers, start=1):
        trainer.use_shard(index, total)
    book: RoundBook[Seat] = RoundBook(rules_for(variant, rounds), "chief")
    book.begin(chief.get_weights(), 0, False)
    arrivals = np.random.default_rng(1)  # the order updates reach the chief: shuffled every round
    for number in range(rounds):
        start = book.global_weights
        for index in arrivals.permutation(WORKERS) + 1:
            trainer = workers[index - 1]
            trainer.set_weights(start)
            trainer.train_steps(interval_steps)
            update = trainer.get_weights()
            if book.content_refusal(update) is None:
                book.fold(f"worker{index}", number, update, trainer.num_samples, 0, distance(update, start))
        chief.set_weights(start)
        chief.train_steps(interval_steps)
        own = chief.get_weights()
        book.contribute_own(own, chief.num_samples, distance(own, start))
        book.close_round(None)
    chief.set_weights(book.global_weights)
    return float(chief.evaluate()[1])


def round_cost(variant: str, megabytes: int) -> dict[str, Any]:
    """One round of WORKERS updates of a megabytes-sized model: seconds and peak extra memory."""
    rng = np.random.default_rng(0)
    shape = (megabytes << 18,)  # float32: 4 bytes each
    model = [rng.standard_normal(shape).astype(np.float32)]
    updates = [[model[0] + rng.standard_normal(shape).astype(np.float32) * 0.01] for _ in range(WORKERS)]
    book: RoundBook[Seat] = RoundBook(rules_for(variant, 2), "chief")
    book.begin([m.copy() for m in model], 0, False)
    staging = [np.empty_like(model[0])]
    tracemalloc.start()
    started = time.perf_counter()
    for index, update in enumerate(updates):
        np.copyto(staging[0], update[0])  # as the chief receives into a staging buffer
        book.fold(f"worker{index}", 0, staging, 100, 0, distance(staging, book.global_weights))
    book.contribute_own(model, 100, distance(model, book.global_weights))
    book.close_round(None)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"aggregation": variant, "model_mb": megabytes, "seconds": round(seconds, 3),
            "peak_extra_mb": round(peak / 2**20, 1)}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ATTACKS), figsize=(4 * len(ATTACKS), 3.6), sharey=True)
    clean = results["clean"]
    for axis, attack in zip(axes, ATTACKS, strict=True):
        for variant in VARIANTS:
            ks = list(range(results["max_attackers"] + 1))
            accuracy = [clean[variant]] + [results["accuracy"][attack][variant][str(k)] for k in ks[1:]]
            axis.plot(ks, accuracy, marker="o", label=variant)
        axis.set_title(attack)
        axis.set_xlabel(f"attackers of {WORKERS}")
        axis.set_xticks(ks)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("final accuracy")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def section(results: dict[str, Any]) -> str:
    ks = range(1, results["max_attackers"] + 1)
    lines = [
        "## Poisoning: k of 10 workers attacking, per aggregation strategy (issue 13)",
        "",
        f"`bench/bench_poisoning.py` on {results['machine']}: the chief's round rules and strategies in one "
        f"process, digits, chief + {WORKERS} workers, {results['rounds']} rounds of {results['interval_steps']} "
        "steps, the last k workers attacking (`edgefed/attacks.py`), updates arriving in a shuffled order, "
        "`robust_fraction` 0.2 (trimmed-mean trims 2 of 11 at each end, krum tolerates 2). Final accuracy; "
        "attack-free in the first column. `fedavg+screen` is fedavg with `screen_factor = 4`.",
        "",
    ]
    for attack in ATTACKS:
        lines += [f"**{attack}**", "", "| aggregation | k=0 | " + " | ".join(f"k={k}" for k in ks) + " |",
                  "|---|---:|" + "---:|" * len(ks)]
        for variant in VARIANTS:
            row = [f"{results['clean'][variant]:.3f}"]
            row += [f"{results['accuracy'][attack][variant][str(k)]:.3f}" for k in ks]
            lines.append(f"| {variant} | " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "![accuracy under attack](bench/poisoning.png)", "",
        "### What each strategy costs the chief per round",
        "",
        f"One round of {WORKERS} updates of a {results['cost'][0]['model_mb']} MB float32 model: time to fold and "
        "combine them, and the peak memory allocated on top of the global model and one staging buffer.",
        "",
        "| aggregation | seconds | peak extra MB |",
        "|---|---:|---:|",
    ]
    lines += [f"| {c['aggregation']} | {c['seconds']} | {c['peak_extra_mb']} |" for c in results["cost"]]
    lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval-steps", type=int, default=20)
    parser.add_argument("--max-attackers", type=int, default=3)
    parser.add_argument("--model-mb", type=int, default=16)
    parser.add_argument("--no-doc", action="store_true", help="print the results only")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": machine(), "rounds": args.rounds, "interval_steps": args.interval_steps,
        "max_attackers": args.max_attackers,
        "clean": {v: federate(v, "scale", 0, args.rounds, args.interval_steps) for v in VARIANTS},
        "accuracy": {
            attack: {
                v: {str(k): federate(v, attack, k, args.rounds, args.interval_steps)
                    for k in range(1, args.max_attackers + 1)}
                for v in VARIANTS
            }
            for attack in ATTACKS
        },
        "cost": [round_cost(v, args.model_mb) for v in VARIANTS],
    }
    print(json.dumps(results, indent=2))
    if not args.no_doc:
        (PLOTS / "poisoning.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, PLOTS / "poisoning.png")
        update_doc(section(results), "bench_poisoning")


if __name__ == "__main__":
    main()
