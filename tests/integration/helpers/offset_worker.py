"""A real worker (edgefed.wiring.build_worker) that trains nothing: each round it answers the chief's
weights plus OFFSET with SAMPLES samples, so the chief's FedAvg can be computed exactly.

Usage: offset_worker.py CONFIG OFFSET SAMPLES
"""

from __future__ import annotations

import sys

import numpy as np

from edgefed.config import load_config
from edgefed.wiring import build_worker


def main() -> None:
    config, offset, samples = load_config(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    session = build_worker(config, ledger=False)
    info = session.start()
    weights, finished = info.weights, info.finished
    print("joined", flush=True)
    while not finished:
        result = session.average([(w + np.float32(offset)).astype(w.dtype) for w in weights], samples)
        weights, finished = result.weights, result.finished
    session.close()
    print("finished", flush=True)


if __name__ == "__main__":
    main()
