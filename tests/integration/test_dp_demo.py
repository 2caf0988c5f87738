"""Differential privacy end to end: `edgefed demo --dp-epsilon` (chief + 2 workers as processes over
mutual TLS) reports the spent epsilon per round in the chief's history and every node's status file,
each the accountant's value for that many updates; and a chief whose target cannot be met refuses to
start, in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

dp_accounting = pytest.importorskip("dp_accounting", reason="installed by `make setup` (mk/privacy.mk)")

from edgefed.config import dump_config  # noqa: E402
from edgefed.federation.dp import BUDGET_FILE, DpPlan  # noqa: E402
from tests.conftest import REPO  # noqa: E402

ROUNDS = 3
EPSILON = 40.0


def edgefed(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_the_demo_reports_the_spent_epsilon_per_round(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    run = edgefed("demo", "--workers", "2", "--rounds", str(ROUNDS), "--interval-steps", "5",
                  "--dp-epsilon", str(EPSILON), "--state-dir", str(state), "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    plan = DpPlan.calibrate(EPSILON, summary["dp_delta"], summary["dp_clip_norm"], ROUNDS)
    assert summary["dp_noise_multiplier"] == pytest.approx(plan.noise_multiplier)
    assert summary["dp_epsilon_spent"] == pytest.approx(EPSILON, rel=1e-3)

    lines = [json.loads(line) for line in (state / "chief" / "history.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == list(range(1, ROUNDS + 1))
    assert [line["dp_epsilon"] for line in lines] == pytest.approx([plan.spent(r) for r in range(1, ROUNDS + 1)])
    for worker in ("worker1", "worker2"):
        status = json.loads((state / worker / "status" / "worker.json").read_text())
        assert status["dp_epsilon"] == pytest.approx(plan.spent(ROUNDS))
        assert status["dp_epsilon_target"] == EPSILON
        assert json.loads((state / worker / BUDGET_FILE).read_text())["releases"] == ROUNDS

    # the history command reads the new field without complaint
    history = edgefed("history", "--state-dir", str(state / "chief"), "--json")
    assert history.returncode == 0, history.stderr
    report = json.loads(history.stdout)
    assert report["problems"] == []
    assert [r["dp_epsilon"] for r in report["records"]] == [line["dp_epsilon"] for line in lines]


def test_a_chief_refuses_to_start_when_the_target_cannot_be_met(tmp_path: Path, pki_dir: Path) -> None:
    config = tmp_path / "chief.toml"
    config.write_text(dump_config({
        "node": {"name": "chief", "role": "chief", "pki_dir": str(pki_dir), "state_dir": str(tmp_path / "state")},
        "federation": {"private_ip": "127.0.0.1", "private_port": 1, "rounds": 500, "dp_epsilon": 0.0005,
                       "dp_delta": 1e-9},
    }))
    run = edgefed("chief", "--config", str(config), "--exit-when-done", timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("edgefed: error: differential privacy: epsilon 0.0005 at delta 1e-09 over 500 "
                               "rounds cannot be met")
    assert not (tmp_path / "state" / "status" / "chief.json").exists()  # nothing was opened or written

    demo = edgefed("demo", "--workers", "1", "--rounds", "500", "--dp-epsilon", "0.0001", timeout=120)
    assert demo.returncode == 2
    assert demo.stderr.strip().splitlines() == [demo.stderr.strip()]
    assert "cannot be met" in demo.stderr and demo.stdout == ""
