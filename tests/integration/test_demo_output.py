"""`edgefed demo --json`: stdout is one JSON document; the table and the join progress go to stderr."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_json_stdout_is_json_only_and_joins_are_announced() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgefed", "demo", "--workers", "2", "--rounds", "2", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # nothing else on stdout
    assert summary["rounds"] == 2 and summary["workers"] == 2
    lines = result.stderr.splitlines()
    joined = lines.index("2/2 workers joined")
    first_row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["1"])
    assert joined < first_row
    assert lines[0].split() == ["round", "participants", "loss", "accuracy", "bytes", "seconds"]
