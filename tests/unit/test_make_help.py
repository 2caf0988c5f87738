"""`make help` lists every target a developer can run, from the Makefile and every mk/*.mk fragment."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]*):(?!=)", re.MULTILINE)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target() -> None:
    files = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    targets = {name for file in files for name in TARGET.findall(file.read_text())}
    result = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "help"], capture_output=True,
                            text=True, timeout=60, check=True)
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("make ")}
    assert len(targets) > 20
    assert targets == listed
    assert all(len(line.split(None, 2)) == 3 for line in result.stdout.splitlines())  # each has its comment
