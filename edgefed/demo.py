"""`edgefed demo`: a chief and N workers as real local processes on loopback, fresh certificates,
the digits data set split across participants by task index."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgefed import pki
from edgefed.compression import parse_broadcast_compression, parse_compression
from edgefed.config import dump_config
from edgefed.errors import UsageError, user_error
from edgefed.transport import free_port

CHIEF = "chief"
DEMO_DP_DELTA = 1e-5  # --dp-epsilon: below 1/(participants) by far, the usual choice
DEMO_DP_CLIP_NORM = 1.0  # about the norm of one round's step of the digits softmax after a few rounds


@user_error
class DemoFailed(RuntimeError):
    """A node of the demo exited with an error; the message quotes the end of its log."""





@dataclass
class DemoResult:
    rounds: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def worker_names(count: int) -> list[str]:
    return [f"worker{i}" for i in range(1, count + 1)]


def prepare_pki(pki_dir: Path, names: list[str]) -> None:
    """Create the CA and credentials once; a re-run with the same state dir reuses them."""
    if not (pki_dir / "ca.crt").exists():
        pki.init_ca(pki_dir, "edgefed demo CA")
    for name in names:
        if not (pki_dir / "nodes" / name / "tls.crt").exists():
            sans = ["127.0.0.1", "localhost"] if name == CHIEF else []
            pki.issue_node(pki_dir, name, sans)


def write_node_config(
    state_dir: Path, name: str, role: str, port: int, rounds: int, workers: int, interval_steps: int,
    trainer: str, extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    node_dir = state_dir / name
    node_dir.mkdir(parents=True, exist_ok=True)
    raw: dict[str, dict[str, Any]] = {
        "node": {"name": name, "role": role, "pki_dir": str(state_dir / "pki"), "state_dir": str(node_dir)},
        "federation": {
            "private_ip": "127.0.0.1", "private_port": port, "public_ip": "127.0.0.1", "public_port": port,
            "wait_time": 60.0, "min_workers": workers, "interval_steps": interval_steps, "rounds": rounds,
            "round_timeout": 120.0, "reconnect_timeout": 120.0,
        },
        "trainer": {"kind": trainer},
    }
    for section, values in (extra or {}).items():
        raw.setdefault(section, {}).update(values)
    path = node_dir / "edgefed.toml"
    path.write_text(dump_config(raw))
    return path


@contextlib.contextmanager
def _state_directory(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).resolve()
    else:
        with tempfile.TemporaryDirectory(prefix="edgefed-demo-") as tmp:
            yield Path(tmp)


def _node_command(role: str, config: Path, exit_when_done: bool = True) -> list[str]:
    command = [sys.executable, "-m", "edgefed", "-v", role, "--config", str(config)]
    return [*command, "--exit-when-done"] if exit_when_done else command


def _ledger_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "edgefed", "-v", "ledger", "serve", "--config", str(config)]


LEDGER_STOP_TIMEOUT = 60.0


def _stop_ledger(
    processes: dict[str, subprocess.Popen[str]], services: dict[str, subprocess.Popen[str]]
) -> dict[str, int]:
    """End of the run: each ledger service delivers what is left (it drains on SIGTERM), workers' first,
    while the chief still listens; then the chief, which kept its listener up for them, is stopped."""
    failures: dict[str, int] = {}
    order = [name for name in services if name != CHIEF] + [CHIEF]
    for name in order:
        service = services[name]
        service.terminate()
        try:
            code = service.wait(timeout=LEDGER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            service.kill()
            code = service.wait()
        if code != 0:
            failures[f"{name} ledger"] = code
    processes[CHIEF].terminate()
    return failures


def run_demo(
    workers: int, rounds: int, state_dir: str | None = None, interval_steps: int = 20, trainer: str = "numpy",
    out: TextIO | None = None, timeout: float = 600.0, ledger: bool = True,
    attackers: int = 0, attack: str = "scale", aggregation: str = "fedavg",
    ledger_settings: dict[str, Any] | None = None, dp_epsilon: float = 0.0, compression: str = "none",
    broadcast_compression: str = "none", secure_aggregation: bool = False,
) -> DemoResult:
    """attackers: how many of the workers (the last ones) poison their updates with attack
    (edgefed.attacks); aggregation: the chief's federation.aggregation; dp_epsilon: every node's
    federation.dp_epsilon (0: off); compression: every node's federation.compression, broadcast_compression
    its federation.broadcast_compression (docs/compression.md); secure_aggregation: every node's
    federation.secure_aggregation (docs/privacy.md)."""
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if not 0 <= attackers <= workers:
        raise UsageError(f"--attackers must be between 0 and --workers ({workers}), got {attackers}")
    if rounds < 1:
        raise UsageError(f"--rounds must be >= 1, got {rounds}")
    privacy = _privacy(dp_epsilon, rounds)  # an unreachable target stops here, before any process starts
    compression = str(parse_compression(compression))  # a bad value: one line, before anything starts
    broadcast_compression = parse_broadcast_compression(broadcast_compression)
    if secure_aggregation and (aggregation != "fedavg" or compression != "none"):  # what the config refuses
        raise UsageError("--secure-aggregation needs --aggregation fedavg and --compression none (docs/privacy.md)")
    out = out or sys.stdout
    result = DemoResult()
    started = time.monotonic()
    with _state_directory(state_dir) as root:
        names = worker_names(workers)
        prepare_pki(root / "pki", [CHIEF, *names])
        port = free_port()
        extra: dict[str, dict[str, Any]] = {"federation": {"aggregation": aggregation, "compression": compression,
                                                           "broadcast_compression": broadcast_compression}}
        if secure_aggregation:
            extra["federation"]["secure_aggregation"] = True
        if privacy:
            extra["federation"].update({key: privacy[key] for key in ("dp_epsilon", "dp_delta", "dp_clip_norm")})
        if not ledger:
            extra["ledger"] = {"enabled": False}
        elif ledger_settings:
            extra["ledger"] = dict(ledger_settings)
        hostile = set(names[len(names) - attackers:]) if attackers else set()
        configs = {
            CHIEF: write_node_config(root, CHIEF, "chief", port, rounds, workers, interval_steps, trainer, extra)
        }
        for name in names:
            configs[name] = write_node_config(
                root, name, "worker", port, rounds, workers, interval_steps, trainer, extra
            )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        processes: dict[str, subprocess.Popen[str]] = {}
        services: dict[str, subprocess.Popen[str]] = {}  # the ledger service of each node
        logs = {name: open(root / name / "node.log", "w") for name in configs}  # noqa: SIM115
        try:
            if ledger:
                for name, config in configs.items():
                    services[name] = subprocess.Popen(
                        _ledger_command(config), stdout=logs[name], stderr=subprocess.STDOUT, text=True, env=env
                    )
            # With the ledger the chief keeps its listener up after training (late ledger deliveries land)
            # until the workers' ledger services have drained; _stop_ledger then stops it.
            processes[CHIEF] = subprocess.Popen(
                [*_node_command("chief", configs[CHIEF], exit_when_done=not ledger), "--progress-jsonl"],
                stdout=subprocess.PIPE, stderr=logs[CHIEF], text=True, env=env,
            )
            for name in names:
                command = _node_command("worker", configs[name])
                processes[name] = subprocess.Popen(
                    [*command, "--attack", attack] if name in hostile else command,
                    stdout=logs[name], stderr=subprocess.STDOUT, text=True, env=env,
                )
            _print_header(out)
            first_round = threading.Event()
            announcer = threading.Thread(target=_announce_joins, args=(
                root / CHIEF / "status" / "chief.json", workers, first_round), daemon=True, name="demo-joins")
            announcer.start()
            summary: dict[str, Any] = {}
            chief_out = processes[CHIEF].stdout
            assert chief_out is not None
            for line in chief_out:
                first_round.set()
                announcer.join(timeout=5)  # its last count comes before round 1's row
                record = json.loads(line)
                if record.get("done"):
                    summary = record
                    if ledger:
                        break
                    continue
                result.rounds.append(record)
                _print_row(out, record)
            if ledger and processes[CHIEF].poll() is None:  # the chief finished training and still listens
                workers_only = {name: process for name, process in processes.items() if name != CHIEF}
                failures = _wait_all(workers_only, deadline=started + timeout)
                failures.update(_stop_ledger(processes, services))
                failures.update(_wait_all({CHIEF: processes[CHIEF]}, deadline=started + timeout))
            else:
                failures = _wait_all(processes, deadline=started + timeout)
        finally:
            for process in [*processes.values(), *services.values()]:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            for handle in logs.values():
                handle.close()
        if failures:
            details = "; ".join(
                f"{name} exited {code}: {_tail(root / name / 'node.log')}" for name, code in failures.items()
            )
            raise DemoFailed(f"demo failed: {details}")
        result.summary = demo_summary(
            result, workers, summary, started, root if state_dir else None,
            attackers=attackers, attack=attack if attackers else None, aggregation=aggregation,
            compression=compression, broadcast_compression=broadcast_compression,
        )
        if secure_aggregation:
            result.summary["secure_aggregation"] = True
        if privacy:
            result.summary.update(privacy, dp_epsilon_spent=_spent(root / CHIEF / "status" / "chief.json"))
    return result


def _privacy(dp_epsilon: float, rounds: int) -> dict[str, Any]:
    """The demo's differential-privacy settings (empty when off), after the accountant accepted them."""
    if not dp_epsilon:
        return {}
    from edgefed.federation.dp import DpPlan

    plan = DpPlan.calibrate(dp_epsilon, DEMO_DP_DELTA, DEMO_DP_CLIP_NORM, rounds)
    return {"dp_epsilon": dp_epsilon, "dp_delta": plan.delta, "dp_clip_norm": plan.clip_norm,
            "dp_noise_multiplier": plan.noise_multiplier}


def _spent(chief_status: Path) -> float | None:
    try:
        value = json.loads(chief_status.read_text()).get("dp_epsilon")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def demo_summary(
    result: DemoResult, workers: int, chief_done: dict[str, Any], started: float, state_dir: Path | None,
    **details: Any,
) -> dict[str, Any]:
    """The one-line outcome `--json` prints: the last round's accuracy, the chief's bytes, the time."""
    last = result.rounds[-1] if result.rounds else {}
    return {
        **details,
        "rounds": len(result.rounds),
        "workers": workers,
        "accuracy": last.get("accuracy"),
        "loss": last.get("loss"),
        "bytes_sent": int(chief_done.get("bytes_sent", 0)) + int(chief_done.get("bytes_received", 0)),
        "broadcast_bytes": int(chief_done.get("bytes_sent", 0)),  # the chief's sends: the global weights
        "upload_bytes": int(chief_done.get("bytes_received", 0)),
        "seconds": round(time.monotonic() - started, 3),
        "state_dir": str(state_dir) if state_dir else None,
    }


def _announce_joins(chief_status: Path, workers: int, first_round: threading.Event) -> None:
    """Say on stderr how many workers have joined, until round 1 (from the chief's status file)."""
    said = -1
    while True:
        started = first_round.wait(0.1)
        try:
            joined = len(json.loads(chief_status.read_text()).get("participants") or [])
        except (OSError, ValueError, AttributeError):
            joined = said
        if joined != said:
            sys.stderr.write(f"{joined}/{workers} workers joined\n")
            sys.stderr.flush()
            said = joined
        if started or joined >= workers:
            return


def _wait_all(processes: dict[str, subprocess.Popen[str]], deadline: float) -> dict[str, int]:
    """Exit codes of the nodes that failed; if the chief failed, the workers are not waited for."""
    failures = {}
    chief = processes.get(CHIEF)
    if chief is not None and chief.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
        deadline = time.monotonic()
    for name, process in processes.items():
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            failures[name] = code
    return failures


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


_COLUMNS = ("round", "participants", "loss", "accuracy", "bytes", "seconds")


def _print_header(out: TextIO) -> None:
    out.write(f"{'round':>5}  {'participants':>12}  {'loss':>8}  {'accuracy':>8}  {'bytes':>10}  {'seconds':>8}\n")
    out.flush()


def _print_row(out: TextIO, record: dict[str, Any]) -> None:
    out.write(
        f"{record['round']:>5}  {len(record['participants']):>12}  {record['loss']:>8.4f}  "
        f"{record['accuracy']:>8.4f}  {record['bytes']:>10}  {record['seconds']:>8.3f}\n"
    )
    out.flush()
