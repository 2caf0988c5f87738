"""The ledger on a real Hyperledger Iroha 1.6 peer (irohad from `make iroha-peer`) beside the embedded chain.

1. Commit latency: one record per transaction, submitted by a node's IrohaBackend, until the status
   stream says COMMITTED (median and 90th percentile).
2. Records/s committed by one node's ledger service: IrohaBackend.deliver, 50 records per transaction
   (the backend's batch), transactions one after another as the service sends them.
3. Records/s with three nodes delivering at once (their transactions share blocks).
4. The embedded chain on the same machine in the same run, batches of 200 (the service's batch).

The peer is single, on loopback, RocksDB world state, with tests/iroha/peer.py's configuration
(proposal_creation_timeout, max_proposal_size as printed). The machine is shared: the load average
is printed with every row.

    .venv/bin/python bench/bench_iroha.py [--records 500] [--latency-samples 20] [--proposal-timeout-ms 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgefed import pki  # noqa: E402
from edgefed.contracts.events import TransferEvent  # noqa: E402
from edgefed.ledger.backends import pki_key_lookup  # noqa: E402
from edgefed.ledger.chain import EmbeddedLedger  # noqa: E402
from edgefed.ledger.iroha import IrohaBackend, load_admin_key  # noqa: E402
from edgefed.ledger.iroha_bootstrap import bootstrap  # noqa: E402
from edgefed.ledger.records import TransferRecord  # noqa: E402
from tests.iroha.peer import ADMIN, DOMAIN, MAX_PROPOSAL_SIZE, IrohaPeer, find_irohad  # noqa: E402

NODES = ("chief", "worker1", "worker2", "worker3")
TIMEOUT = 120.0


def load() -> float:
    return round(os.getloadavg()[0], 1)


def records_of(pki_dir: Path, node: str, count: int, tag: str) -> list[TransferRecord]:
    key = pki.NodeCredentials(pki_dir, node).ledger_signing_key()
    return [
        TransferRecord.from_event(
            TransferEvent(i, "chief", node, node, "receive", 4, 5328,
                          hashlib.sha256(f"{tag}{i}".encode()).hexdigest(), 0.001, "weights"),
            tag,
        ).signed(key)
        for i in range(count)
    ]


def backend(torii: str, pki_dir: Path, node: str) -> IrohaBackend:
    return IrohaBackend(torii, DOMAIN, node, pki.NodeCredentials(pki_dir, node).ledger_signing_key(), TIMEOUT)


def bench_latency(torii: str, pki_dir: Path, samples: int) -> dict[str, Any]:
    node = backend(torii, pki_dir, "worker1")
    before, seconds = load(), []
    for record in records_of(pki_dir, "worker1", samples, "latency"):
        started = time.perf_counter()
        assert node.deliver([record]).acknowledged == [record.id]
        seconds.append(time.perf_counter() - started)
    quantiles = statistics.quantiles(seconds, n=10)
    return {"samples": samples, "median_s": round(statistics.median(seconds), 3), "p90_s": round(quantiles[-1], 3),
            "min_s": round(min(seconds), 3), "load": [before, load()]}


def bench_one_node(torii: str, pki_dir: Path, count: int) -> dict[str, Any]:
    node = backend(torii, pki_dir, "worker2")
    records = records_of(pki_dir, "worker2", count, "one")
    before, started = load(), time.perf_counter()
    delivery = node.deliver(records)
    seconds = time.perf_counter() - started
    assert len(delivery.acknowledged) == count, delivery.refused
    return {"records": count, "records_per_s": round(count / seconds, 1), "seconds": round(seconds, 1),
            "load": [before, load()]}


def bench_three_nodes(torii: str, pki_dir: Path, count: int) -> dict[str, Any]:
    nodes = ("worker1", "worker2", "worker3")
    batches = {node: records_of(pki_dir, node, count, f"three-{node}") for node in nodes}
    acknowledged: dict[str, int] = {}

    def run(node: str) -> None:
        acknowledged[node] = len(backend(torii, pki_dir, node).deliver(batches[node]).acknowledged)

    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    before, started = load(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    assert acknowledged == {node: count for node in nodes}, acknowledged
    return {"records": 3 * count, "records_per_s": round(3 * count / seconds, 1), "seconds": round(seconds, 1),
            "load": [before, load()]}


def bench_embedded(root: Path, pki_dir: Path, count: int) -> dict[str, Any]:
    records = records_of(pki_dir, "worker1", count, "embedded")
    chief_key = pki.NodeCredentials(pki_dir, "chief").ledger_signing_key()
    ledger = EmbeddedLedger(root / "embedded.sqlite", "chief", chief_key, pki_key_lookup(pki_dir))
    before, started = load(), time.perf_counter()
    for start in range(0, count, 200):
        ledger.append(records[start:start + 200], pushed_by="worker1")
    seconds = time.perf_counter() - started
    ledger.close()
    return {"records": count, "records_per_s": round(count / seconds, 1), "load": [before, load()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=500, help="records per node for the throughput runs")
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--proposal-timeout-ms", type=int, default=1000)
    args = parser.parse_args()
    irohad = find_irohad()
    if irohad is None:
        sys.exit("bench_iroha: no irohad for the current sources: run `make iroha-peer` first")
    with tempfile.TemporaryDirectory(prefix="edgefed-bench-iroha-") as tmp:
        root = Path(tmp)
        pki_dir = root / "pki"
        pki.init_ca(pki_dir)
        for node in NODES:
            pki.issue_node(pki_dir, node)
        peer = IrohaPeer(irohad, root / "peer", proposal_timeout_ms=args.proposal_timeout_ms)
        try:
            torii = peer.start()
            bootstrap(torii=torii, domain=DOMAIN, admin_account=ADMIN, admin_key=load_admin_key(peer.admin_key_file),
                      node_keys={n: pki.NodeCredentials(pki_dir, n).ledger_signing_key() for n in NODES},
                      chief="chief", commit_timeout=TIMEOUT)
            results = {
                "peer": {"irohad": str(irohad), "proposal_creation_timeout_ms": args.proposal_timeout_ms,
                         "max_proposal_size": MAX_PROPOSAL_SIZE, "cpus": os.cpu_count()},
                "commit_latency_one_record": bench_latency(torii, pki_dir, args.latency_samples),
                "one_node_batches_of_50": bench_one_node(torii, pki_dir, args.records),
                "three_nodes_at_once": bench_three_nodes(torii, pki_dir, args.records),
                "embedded_chain_batches_of_200": bench_embedded(root, pki_dir, args.records),
            }
        finally:
            peer.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
