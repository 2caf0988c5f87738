"""The benchmark scripts' pure helpers: their sections of docs/benchmarks.md and the seed table's
reading of snapshots. (The benchmarks themselves are run by `make bench`, never by the tests.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


def test_update_doc_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nhand-written intro\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    common.update_doc("first version\n", "mine", doc)
    common.update_doc("second version\n", "mine", doc)
    text = doc.read_text()
    assert "first version" not in text
    assert text.count("<!-- mine:start -->\nsecond version\n<!-- mine:end -->") == 1
    assert "hand-written intro" in text
    assert "<!-- other:start -->\nkeep me\n<!-- other:end -->" in text


def test_update_doc_creates_the_document(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "benchmarks.md"
    common.update_doc("numbers\n", "mine", doc)
    assert doc.read_text().startswith("# Benchmarks\n")
    assert "<!-- mine:start -->\nnumbers\n<!-- mine:end -->" in doc.read_text()


def test_model_has_the_requested_size() -> None:
    arrays = common.model(2)
    assert sum(a.nbytes for a in arrays) == 2 << 20
    assert [float(a[0]) for a in arrays] == [1.0, 2.0, 3.0, 4.0]


def test_run_server_and_clients_reports_a_failing_client() -> None:
    server = [sys.executable, "-c", "import json; print('listening', flush=True); "
              "print(json.dumps({'times': [1.0]}), flush=True)"]
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    with pytest.raises(common.BenchFailure, match="exited with 3"):
        common.run_server_and_clients(server, [failing], timeout=60)


def test_run_server_and_clients_returns_the_result_and_peak_memory() -> None:
    server = [sys.executable, "-c", "import json; print('listening', flush=True); print(json.dumps({'times': [2.0]}))"]
    client = [sys.executable, "-c", "pass"]
    result = common.run_server_and_clients(server, [client, client], timeout=60)
    assert result["times"] == [2.0]
    assert result["server_process_peak_rss_mb"] > 0
    assert result["client_peak_rss_mb"] > 0


def test_seed_table_times_the_first_snapshot_at_the_target() -> None:
    import bench_seed_table

    snapshots = [
        {"seconds": 0.0, "steps": 0, "bytes": 0, "accuracy": 0.1},
        {"seconds": 1.0, "steps": 100, "bytes": 10, "accuracy": 0.89},
        {"seconds": 2.0, "steps": 200, "bytes": 20, "accuracy": 0.91},
        {"seconds": 3.0, "steps": 300, "bytes": 30, "accuracy": 0.95},
    ]
    result = {"steps": 300, "seconds": 3.5, "bytes": 35, "app_bytes": 30, "cut_by_time": False,
              "snapshots": snapshots}
    summary = bench_seed_table.summarize({"fedavg": result}, target=0.9)["fedavg"]
    assert (summary["target_seconds"], summary["target_bytes"], summary["target_steps"]) == (2.0, 20, 200)
    assert summary["final_accuracy"] == 0.95
    missed = bench_seed_table.summarize({"fedavg": result}, target=0.99)["fedavg"]
    assert missed["target_seconds"] is None


def test_bench_mpi_roles_give_bench_round_every_option_it_reads(tmp_path: Path) -> None:
    """bench_mpi's MPI and plain-TCP roles run bench_round's chief and worker with bench_mpi's own
    options: the node configuration builds from them (an option bench_round added once broke every run)."""
    import argparse

    import bench_mpi
    import bench_round

    args = argparse.Namespace(workers=[3], pki=str(tmp_path), state=str(tmp_path), port=1, size=1, rounds=2)
    config = bench_round.node_config(bench_mpi.role_args(args), "chief", "chief")
    assert (config.federation.min_workers, config.federation.max_concurrent_uploads) == (3, 1)
    assert (config.federation.rounds, config.ledger.enabled) == (2, False)
    assert bench_mpi._rank_error("Traceback (most recent call last):\n  File x\nAttributeError: no\n---\nmpirun") \
        == "AttributeError: no"
