"""The ledger's cost: records per second into the embedded chain, and the demo's round time with the
ledger on vs off.

1. Outbox: microseconds per event on the training thread (sign + one SQLite WAL insert).
2. Embedded chain, local: records/s appended (signature check + hash link + chief signature), in
   batches of 1 and of 200 (the ledger service's batch).
3. Embedded chain, remote: records/s a worker's ledger service pushes over mutual TLS (LEDGER_PUSH /
   LEDGER_ACK to the chief's listener, batches of 200).
4. `edgefed demo` with and without the ledger (real processes; the ledger services run alongside):
   median round time over all rounds of several alternating runs.

    .venv/bin/python bench/bench_ledger.py [--records 2000] [--demo-runs 3] [--workers 3] [--rounds 10]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgefed import pki  # noqa: E402
from edgefed.config import config_from_dict  # noqa: E402
from edgefed.contracts.events import TransferEvent  # noqa: E402
from edgefed.demo import run_demo  # noqa: E402
from edgefed.ledger.backends import pki_key_lookup  # noqa: E402
from edgefed.ledger.chain import EmbeddedLedger  # noqa: E402
from edgefed.ledger.outbox import Outbox, OutboxSink  # noqa: E402
from edgefed.ledger.push import RemoteChainBackend  # noqa: E402
from edgefed.ledger.records import TransferRecord  # noqa: E402
from edgefed.transport import TlsTransport  # noqa: E402
from edgefed.wiring import build_chief  # noqa: E402


def events(count: int, observer: str = "worker1") -> list[TransferEvent]:
    return [
        TransferEvent(i, "chief", "worker1", observer, "receive", 4, 5328,
                      hashlib.sha256(str(i).encode()).hexdigest(), 0.001, "weights")
        for i in range(count)
    ]


def bench_outbox(root: Path, count: int) -> dict[str, Any]:
    key = pki.NodeCredentials(root / "pki", "worker1").ledger_signing_key()
    sink = OutboxSink(Outbox(root / "bench-outbox.sqlite"), "worker1", key, "bench")
    batch = events(count)
    started = time.perf_counter()
    for event in batch:
        sink(event)
    seconds = time.perf_counter() - started
    sink.flush(60)
    stored_in = time.perf_counter() - started
    sink.close()
    return {
        "events": count,
        "us_per_event_on_training_thread": round(seconds / count * 1e6, 1),
        "stored_events_per_s": round(count / stored_in),
    }


def bench_local(root: Path, count: int, batch_size: int) -> dict[str, Any]:
    key = pki.NodeCredentials(root / "pki", "worker1").ledger_signing_key()
    records = [TransferRecord.from_event(e, f"local{batch_size}").signed(key) for e in events(count)]
    chief_key = pki.NodeCredentials(root / "pki", "chief").ledger_signing_key()
    ledger = EmbeddedLedger(root / f"local-{batch_size}.sqlite", "chief", chief_key, pki_key_lookup(root / "pki"))
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        ledger.append(records[start:start + batch_size], pushed_by="worker1")
    seconds = time.perf_counter() - started
    assert ledger.count_records() == count
    ledger.close()
    return {"records": count, "batch": batch_size, "records_per_s": round(count / seconds)}


def bench_remote(root: Path, count: int) -> dict[str, Any]:
    port = _free_port()
    config = config_from_dict({
        "node": {"name": "chief", "role": "chief", "pki_dir": str(root / "pki"), "state_dir": str(root / "chief")},
        "federation": {"private_ip": "127.0.0.1", "private_port": port, "public_ip": "127.0.0.1", "public_port": port},
    })
    session = build_chief(config)  # with the embedded ledger's LEDGER_PUSH handler
    session.listen()
    key = pki.NodeCredentials(root / "pki", "worker1").ledger_signing_key()
    records = [TransferRecord.from_event(e, "remote").signed(key) for e in events(count)]
    backend = RemoteChainBackend(TlsTransport(pki.NodeCredentials.load(root / "pki", "worker1")), "127.0.0.1", port)
    try:
        started = time.perf_counter()
        for start in range(0, count, 200):
            delivery = backend.deliver(records[start:start + 200])
            assert len(delivery.acknowledged) == len(records[start:start + 200]), delivery.refused
        seconds = time.perf_counter() - started
    finally:
        backend.close()
        session.close()
    return {"records": count, "batch": 200, "records_per_s": round(count / seconds)}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_demo(runs: int, workers: int, rounds: int, interval_steps: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(runs):
        for mode in ("off", "on"):  # alternate, so drift in machine load hits both alike
            result = run_demo(workers, rounds, interval_steps=interval_steps, out=io.StringIO(), ledger=mode == "on")
            times[mode].extend(float(r["seconds"]) for r in result.rounds)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    mean_off, mean_on = statistics.mean(times["off"]), statistics.mean(times["on"])
    return {
        "workers": workers, "rounds": rounds, "interval_steps": interval_steps, "runs": runs,
        "median_round_s_off": round(off, 4), "median_round_s_on": round(on, 4),
        "median_slowdown_pct": round((on / off - 1) * 100, 1),
        "mean_round_s_off": round(mean_off, 4), "mean_round_s_on": round(mean_on, 4),
        "mean_slowdown_pct": round((mean_on / mean_off - 1) * 100, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--demo-runs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval-steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        root = Path(tmp)
        pki.init_ca(root / "pki")
        for name in ("chief", "worker1"):
            pki.issue_node(root / "pki", name, ["127.0.0.1"])
        results = {
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
            "outbox": bench_outbox(root, args.records),
            "embedded_local": [bench_local(root, args.records, 1), bench_local(root, args.records, 200)],
            "embedded_over_tls": bench_remote(root, args.records),
            "demo": bench_demo(args.demo_runs, args.workers, args.rounds, args.interval_steps),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
