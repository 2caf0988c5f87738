"""A worker's peak RSS for an M-byte model (issue 14, item 4: target <= 2 x M + 60 MB).

A chief process and one worker process over mutual TLS on loopback; the worker runs the real training
loop (edgefed.federation.driver.run_federated) with a numpy trainer of M MiB that trains in place, as
the numpy softmax trainer does. The worker's peak RSS comes from wait4 (exact per process); its
baseline is the same process with everything imported and no model. --copying runs a trainer without
weights_to_send and with an allocating set_weights (the worker before the lean changes), for
comparison. Prints one JSON line per point; writes nothing into docs/.

    .venv/bin/python bench/bench_worker_memory.py [--sizes 16 64] [--rounds 3] [--compression none int8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from common import free_port, model, peak_rss_mb, reap, run_server_and_clients, spawn  # noqa: E402

from edgefed import pki  # noqa: E402
from edgefed.config import config_from_dict  # noqa: E402
from edgefed.federation.driver import run_federated  # noqa: E402
from edgefed.wiring import build_chief, build_worker  # noqa: E402


class InPlaceTrainer:
    """A numpy trainer of `megabytes` MiB: each step moves the weights in place (no new arrays)."""

    def __init__(self, megabytes: int, copying: bool) -> None:
        self.weights = model(megabytes)
        self._copying = copying

    @property
    def num_samples(self) -> int:
        return 100

    def use_shard(self, task_index: int, total: int) -> None:
        del task_index, total

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def weights_to_send(self) -> list[np.ndarray]:
        if self._copying:
            return self.get_weights()
        return list(self.weights)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        if self._copying:
            self.weights = [np.array(w, dtype=np.float32) for w in weights]
            return
        for mine, theirs in zip(self.weights, weights, strict=True):
            np.copyto(mine, theirs)

    def train_steps(self, steps: int) -> float:
        for _ in range(steps):
            for w in self.weights:
                w *= np.float32(0.999)
        return 0.0

    def evaluate(self) -> tuple[float, float]:
        return 0.0, 0.0


def node_config(args: argparse.Namespace, name: str, role: str) -> Any:
    return config_from_dict({
        "node": {"name": name, "role": role, "pki_dir": args.pki, "state_dir": f"{args.state}/{name}"},
        "federation": {"private_ip": "127.0.0.1", "private_port": args.port, "public_ip": "127.0.0.1",
                       "public_port": args.port, "wait_time": 300.0, "min_workers": 1, "rounds": args.rounds,
                       "round_timeout": 600.0, "max_frame_bytes": 1 << 31, "interval_steps": 1,
                       "compression": args.compression},
        "ledger": {"enabled": False},
    })


def run_chief(args: argparse.Namespace) -> None:
    chief = build_chief(node_config(args, "chief", "chief"), ledger=False)
    chief.listen()
    print("listening", flush=True)
    current = chief.start(model(args.size)).weights
    for _ in range(args.rounds):
        current = chief.average(current, 100).weights
    chief.close()
    print(json.dumps({"chief_peak_rss_mb": peak_rss_mb()}), flush=True)


def run_worker(args: argparse.Namespace) -> None:
    if args.baseline:  # everything a worker imports and builds, no model
        build_worker(node_config(args, "w1", "worker"), ledger=False)
        return
    session = build_worker(node_config(args, "w1", "worker"), ledger=False)
    try:
        run_federated(session, InPlaceTrainer(args.size, args.copying), 1)
    finally:
        session.close()


def measure(args: argparse.Namespace, size: int, compression: str) -> dict[str, Any]:
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-worker-mem-") as state:
        common = ["--pki", args.pki, "--state", state, "--port", str(free_port()), "--size", str(size),
                  "--rounds", str(args.rounds), "--compression", compression]
        baseline_child = spawn([*me, "--role", "worker", "--baseline", *common])
        baseline = reap([baseline_child], deadline=float("inf"))[0]
        worker = [*me, "--role", "worker", *common, *(["--copying"] if args.copying else [])]
        out = run_server_and_clients([*me, "--role", "chief", *common], [worker], timeout=args.timeout)
    peak = out["client_peak_rss_mb"]
    model_mb = size  # MiB, as model() sizes it and as peak RSS is reported
    return {"size_mb": size, "compression": compression, "copying": args.copying, "worker_peak_rss_mb": peak,
            "baseline_mb": baseline, "model_copies": round((peak - baseline) / model_mb, 2),
            "target_mb": 2 * model_mb + 60, "within_target": peak <= 2 * model_mb + 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["chief", "worker"])
    parser.add_argument("--pki")
    parser.add_argument("--state")
    parser.add_argument("--port", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compression", nargs="+", default=["none"])
    parser.add_argument("--copying", action="store_true", help="the worker before the lean changes")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.role:
        args.compression = args.compression[0]
        {"chief": run_chief, "worker": run_worker}[args.role](args)
        return
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-worker-mem-pki-") as pki_dir:
        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "chief", ["127.0.0.1"])
        pki.issue_node(pki_dir, "w1")
        args.pki = pki_dir
        for compression in args.compression:
            for size in args.sizes:
                print(json.dumps(measure(args, size, compression)), flush=True)


if __name__ == "__main__":
    main()
