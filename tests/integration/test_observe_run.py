"""A real chief and real workers (processes, mutual TLS on loopback) write the training history and
serve Prometheus metrics: the endpoint is scraped while training, the history is read back, printed
and plotted to a PNG that is opened and looked at."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgefed.config import dump_config
from edgefed.contracts.schemas import HISTORY_LINE, STATUS_FILE, load_schema
from edgefed.contracts.status import status_path
from edgefed.pki import NodeCredentials
from edgefed.transport import client_context, connect_tls
from edgefed.wire import MessageType, encode_control_frame
from tests.conftest import REPO, Processes, free_port, node_settings, wait_for

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("prometheus_client")
image = pytest.importorskip("matplotlib.image")


def _scrape(port: int) -> dict[str, float]:
    """The endpoint's samples as {'name{labels}': value} (the text format, comment lines skipped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _scraped(port: int) -> dict[str, float]:
    try:
        return _scrape(port)
    except OSError:
        return {}


def _write(tmp_path: Path, settings: dict[str, Any], name: str) -> Path:
    path = tmp_path / "configs" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(settings))
    return path


def _history(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", "history", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)


def test_a_real_run_is_scraped_while_training_and_its_history_plotted(
    pki_dir: Path, tmp_path: Path, processes: Processes
) -> None:
    port, rounds, state = free_port(), 6, tmp_path / "state"
    metrics_port, worker_metrics_port = free_port(), free_port()
    # round_timeout long and steps many enough that a scrape sees the rounds move
    common = {"rounds": rounds, "min_workers": 2, "interval_steps": 40, "wait_time": 30.0}
    chief_settings = node_settings(pki_dir, state, "chief", "chief", port, **common)
    chief_settings["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": metrics_port}
    chief = processes.edgefed("chief", "--config", str(_write(tmp_path, chief_settings, "chief")),
                              "--exit-when-done", log_name="chief")
    wait_for(lambda: bool(_scraped(metrics_port)) or chief.poll() is not None, 30, "the chief's metrics endpoint")
    assert chief.poll() is None, processes.log("chief")
    before = _scrape(metrics_port)
    assert before["edgefed_round"] == 0 and before["edgefed_certificate_days_left"] > 300

    chief_file = status_path(state / "chief", "chief")
    wait_for(lambda: chief_file.exists() and json.loads(chief_file.read_text())["state"] == "waiting", 30,
             "the chief to listen")
    # a peer of this deployment that speaks another protocol: refused, and counted by reason
    stranger = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "mallory")))
    stranger.send([encode_control_frame(MessageType.HELLO, 0, {"protocol": 99})])
    assert stranger.recv().type is MessageType.BYE
    stranger.close()

    workers = []
    for index in (1, 2):
        settings = node_settings(pki_dir, state, f"worker{index}", "worker", port, **common)
        if index == 1:
            settings["metrics"] = {"enabled": True, "port": worker_metrics_port}
        workers.append(processes.edgefed("worker", "--config", str(_write(tmp_path, settings, f"worker{index}")),
                                         "--exit-when-done", log_name=f"worker{index}"))

    wait_for(lambda: _scraped(metrics_port).get("edgefed_round", 0) >= 2 or chief.poll() is not None, 120,
             "round 2 on the chief's endpoint")
    during = _scrape(metrics_port) if chief.poll() is None else {}
    worker_during = _scraped(worker_metrics_port)
    assert chief.wait(timeout=180) == 0, processes.log("chief")
    for worker in workers:
        assert worker.wait(timeout=60) == 0

    if during:  # the endpoint closes when the chief exits; what it said while training:
        assert 2 <= during["edgefed_round"] <= rounds
        assert during["edgefed_participants"] == 3
        assert 0.0 < during["edgefed_accuracy"] <= 1.0
        assert during["edgefed_bytes_received_total"] > 0 and during["edgefed_bytes_sent_total"] > 0
        assert during["edgefed_upload_seconds_count"] >= 2 and during["edgefed_round_seconds_count"] >= 2
        assert during['edgefed_refusals_total{reason="unsupported-protocol"}'] == 1
        assert during["edgefed_round"] > before["edgefed_round"]
        assert during["edgefed_bytes_received_total"] > before["edgefed_bytes_received_total"]
    if worker_during:
        assert worker_during["edgefed_bytes_sent_total"] > 0 and "edgefed_certificate_days_left" in worker_during
    assert during or worker_during, "no scrape landed while training"

    # the history: one valid line per round
    history_file = state / "chief" / "history.jsonl"
    lines = [json.loads(line) for line in history_file.read_text().splitlines()]
    validator = jsonschema.Draft202012Validator(load_schema(HISTORY_LINE))
    for line in lines:
        validator.validate(line)
    assert [line["round"] for line in lines] == list(range(1, rounds + 1))
    assert sum(line["refused"] for line in lines) == 1
    for line in lines:
        assert sorted(line["participants"]) == ["chief", "worker1", "worker2"], line
        assert line["bytes_in"] > 0 and line["bytes_out"] > 0 and line["accuracy"] is not None, line
        assert isinstance(line["samples"], int) and line["samples"] > 0, line  # every round, the chief's too
    assert len({line["samples"] for line in lines}) == 1  # the same three shards behind every average
    assert lines[-1]["accuracy"] > lines[0]["accuracy"] - 0.2  # trained, not wrecked

    # the status files carry the last round's accuracy
    chief_status = json.loads(status_path(state / "chief", "chief").read_text())
    jsonschema.Draft202012Validator(load_schema(STATUS_FILE)).validate(chief_status)
    assert chief_status["accuracy"] == lines[-1]["accuracy"]

    table = _history("--state-dir", str(state / "chief"))
    assert table.returncode == 0 and table.stderr == ""
    rows = table.stdout.splitlines()
    assert rows[0].split() == ["round", "workers", "refused", "accuracy", "loss", "in", "out", "seconds"]
    assert len(rows) == rounds + 1 and rows[-1].split()[:2] == [str(rounds), "3"]

    as_json = _history("--state-dir", str(state / "chief"), "--json")
    assert json.loads(as_json.stdout)["records"] == lines

    png = tmp_path / "history.png"
    plotted = _history("--config", str(tmp_path / "configs" / "chief.toml"), "--plot", str(png))
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(png)
    assert pixels.shape[:2] == (700, 1000)
    assert pixels[..., :3].std() > 0.05  # drawn on, not a blank canvas


def test_a_taken_metrics_port_is_one_line_and_exit_2(pki_dir: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:  # another program already listens on the metrics port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = node_settings(pki_dir, tmp_path / "state", "chief", "chief", free_port())
        settings["metrics"] = {"enabled": True, "port": taken}
        result = subprocess.run(
            [sys.executable, "-m", "edgefed", "chief", "--config", str(_write(tmp_path, settings, "chief"))],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"edgefed: error: metrics endpoint 127.0.0.1:{taken}: cannot listen"
                                          " (Address already in use)"]
