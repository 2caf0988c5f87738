"""Shared fixtures: a fresh deployment PKI, node configurations, free ports, node processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefed import pki
from edgefed.config import NodeConfig, config_from_dict, dump_config
from edgefed.transport import free_port as transport_free_port

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    return transport_free_port("127.0.0.1")


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    """A deployment CA with a chief (valid for 127.0.0.1/localhost) and workers worker1..worker4."""
    root = tmp_path / "pki"
    pki.init_ca(root)
    pki.issue_node(root, "chief", ["127.0.0.1", "localhost"])
    for index in range(1, 5):
        pki.issue_node(root, f"worker{index}")
    pki.issue_node(root, "mallory")  # a node of this deployment that misbehaves
    return root


def node_settings(
    pki_dir: Path, state_dir: Path, name: str, role: str, port: int, **federation: Any
) -> dict[str, dict[str, Any]]:
    settings: dict[str, Any] = {
        "private_ip": "127.0.0.1", "private_port": port, "public_ip": "127.0.0.1", "public_port": port,
        "wait_time": 20.0, "interval_steps": 5, "rounds": 3, "round_timeout": 30.0, "reconnect_timeout": 60.0,
    }
    settings.update(federation)
    return {
        "node": {"name": name, "role": role, "pki_dir": str(pki_dir), "state_dir": str(state_dir / name)},
        "federation": settings,
        "trainer": {"kind": "numpy"},
    }


@pytest.fixture
def make_config(pki_dir: Path, tmp_path: Path) -> Callable[..., NodeConfig]:
    def build(name: str, role: str, port: int, **federation: Any) -> NodeConfig:
        return config_from_dict(node_settings(pki_dir, tmp_path / "state", name, role, port, **federation))

    return build


@pytest.fixture
def write_config(pki_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    def write(name: str, role: str, port: int, **federation: Any) -> Path:
        path = tmp_path / "configs" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_config(node_settings(pki_dir, tmp_path / "state", name, role, port, **federation)))
        return path

    return write


class Processes:
    """Node processes started by a test; all are killed at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def edgefed(self, *args: str, log_name: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        return self.python("-m", "edgefed", "-v", *args, log_name=log_name, stdout=stdout)

    def python(self, *args: str, log_name: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{log_name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, *args], stdout=stdout if stdout is not None else log, stderr=log, env=env, cwd=REPO
        )
        self.started.append(process)
        return process

    def log(self, log_name: str) -> str:
        path = self.log_dir / f"{log_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path / "logs")
    yield procs
    procs.stop_all()


def wait_for_drain(backlog: Callable[[], int], stall: float, what: str) -> None:
    """Poll backlog() until it is 0; fail only when it has not reached a new low for `stall` seconds.

    For work the product runs at a lowered priority (the ledger's signing, relaying and appending yield to
    training, edgefed/ledger/background.py): on a loaded machine it is slow but keeps moving, and a fixed
    total bound would measure the load; a backlog that stops shrinking is the failure."""
    lowest = backlog()
    deadline = time.monotonic() + stall
    while lowest > 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the backlog stayed at {lowest} for {stall}s")
        time.sleep(0.2)
        now = backlog()
        if now < lowest:
            lowest, deadline = now, time.monotonic() + stall


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll predicate until it holds; fail the test naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
