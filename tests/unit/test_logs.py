"""Logging under systemd: priority prefixes journald understands, no timestamp of our own; elsewhere a
timestamped line. The stream is a real file whose device:inode is given as JOURNAL_STREAM, which is how
systemd tells a service that its stderr is the journal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefed import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def journal_env(path: Path) -> dict[str, str]:
    info = os.stat(path)
    return {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}


def test_under_journald_each_line_carries_its_priority(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        logs.configure(logging.DEBUG, stream=stream, env=journal_env(path))
        log = logging.getLogger("edgefed.federation.worker")
        log.debug("dialling")
        log.info("round 3 done")
        log.warning("chief not reachable")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("upload failed")
    lines = path.read_text().splitlines()
    assert lines[:4] == [
        "<7>edgefed.federation.worker: dialling",
        "<6>edgefed.federation.worker: round 3 done",
        "<4>edgefed.federation.worker: chief not reachable",
        "<3>edgefed.federation.worker: upload failed",
    ]
    traceback = lines[4:]
    assert traceback[0] == "<3>Traceback (most recent call last):" and traceback[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in traceback)


def test_a_stream_that_is_not_the_journal_gets_timestamps(tmp_path: Path, restore_logging: None) -> None:
    path, other = tmp_path / "stderr", tmp_path / "elsewhere"
    other.write_text("")
    with path.open("w") as stream:
        assert not logs.under_journal(stream, journal_env(other))  # JOURNAL_STREAM names another file
        logs.configure(logging.INFO, stream=stream, env=journal_env(other))
        logging.getLogger("edgefed.x").info("hello")
    [line] = path.read_text().splitlines()
    assert line.endswith(" INFO edgefed.x hello") and line[:4].isdigit()


def test_flags_win_over_the_configuration() -> None:
    assert logs.level_from_flags(0, 0) is None
    assert logs.level_from_flags(1, 0) == logging.INFO
    assert logs.level_from_flags(2, 0) == logging.DEBUG
    assert logs.level_from_flags(0, 1) == logging.ERROR
    assert logs.parse_level("Info") == logging.INFO
    with pytest.raises(ValueError, match="use one of debug, info, warning, error"):
        logs.parse_level("loud")


def test_node_log_level_reaches_the_service_log(tmp_path: Path) -> None:
    """A worker with log_level = "info" logs its retries at INFO, journald-shaped under JOURNAL_STREAM."""
    from edgefed import pki
    from edgefed.config import dump_config

    pki.init_ca(tmp_path / "pki")
    pki.issue_node(tmp_path / "pki", "pi1", [])
    config = tmp_path / "worker.toml"
    config.write_text(dump_config({
        "node": {"name": "pi1", "role": "worker", "pki_dir": str(tmp_path / "pki"),
                 "state_dir": str(tmp_path / "state"), "log_level": "info"},
        "federation": {"public_ip": "127.0.0.1", "public_port": 9, "reconnect_timeout": 0.5,
                       "reconnect_max_delay": 0.1},
        "ledger": {"enabled": False},
    }))
    stderr = tmp_path / "stderr"
    with stderr.open("w") as stream:
        env = {**os.environ, **journal_env(stderr)}
        code = subprocess.run([sys.executable, "-m", "edgefed", "worker", "--config", str(config)],
                              stderr=stream, timeout=120, check=False, env=env).returncode
    lines = stderr.read_text().splitlines()
    assert code == 3
    assert any(line.startswith("<6>edgefed.federation.worker: chief not reachable") for line in lines), lines
    assert lines[-1].startswith("<3>edgefed: gave up: gave up joining 127.0.0.1:9")  # the last word, an error
    quiet = subprocess.run([sys.executable, "-m", "edgefed", "-q", "worker", "--config", str(config)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert "chief not reachable" not in quiet.stderr  # -q wins over node.log_level
