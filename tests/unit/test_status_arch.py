"""`edgefed status --json` names each host's architecture (issue 16): the probe script, run by a real
shell here as it is over SSH, reports the userland's machine."""

from __future__ import annotations

import platform
import struct
import subprocess
from pathlib import Path

from edgefed.ops.health import Thresholds, evaluate
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import Collected, ProbeOutput, Section, build_script, parse_output
from edgefed.ops.report import host_json


def _host(tmp_path: Path) -> InventoryHost:
    return InventoryHost("pi-1", "192.0.2.1", 22, "edge", None, None, "worker", "pi-1",  # type: ignore[arg-type]
                         str(tmp_path / "state"), str(tmp_path / "pki"), 7777, 3389)


def test_the_probe_reports_this_machines_userland(tmp_path: Path) -> None:
    host = _host(tmp_path)
    nonce, script = build_script(host)
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    report = host_json(evaluate(Collected(host, parse_output(done.stdout, nonce), None), Thresholds()))
    machine = platform.machine()
    assert report["arch"] == ("armv7l" if machine == "aarch64" and struct.calcsize("P") == 4 else machine)


def test_no_arch_section_means_null(tmp_path: Path) -> None:
    host = _host(tmp_path)
    output = ProbeOutput({"clock": Section("1800000000\n", 0), "arch": Section("", 0)})
    assert host_json(evaluate(Collected(host, output, None), Thresholds()))["arch"] is None
