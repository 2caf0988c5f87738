"""The controller's wheelhouse script: reproducible edgefed wheels and node archives, so an unchanged
source tree changes nothing on the nodes (the idempotence of edgefed_install rests on it)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from ansible_helpers import REPO

SCRIPT = REPO / "roles/edgefed_install/files/wheelhouse.py"


def _run(*args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def _source_copy(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((REPO / name).read_bytes())
    subprocess.run(["cp", "-r", str(REPO / "edgefed"), str(source / "edgefed")], check=True)
    return source


def test_same_source_same_wheel_new_source_new_wheel(tmp_path: Path) -> None:
    source, dest = _source_copy(tmp_path), tmp_path / "wheelhouse" / "edgefed"
    first = _run("wheel", str(source), str(dest))
    assert first["changed"] is True
    wheel = Path(str(first["wheel"]))
    content = wheel.read_bytes()
    assert _run("wheel", str(source), str(dest))["changed"] is False
    assert wheel.read_bytes() == content
    (source / "edgefed" / "__init__.py").write_text((source / "edgefed" / "__init__.py").read_text() + "\n# edit\n")
    assert _run("wheel", str(source), str(dest), "--check")["changed"] is True
    assert wheel.read_bytes() == content, "--check wrote the wheel"
    assert _run("wheel", str(source), str(dest))["changed"] is True
    assert wheel.read_bytes() != content


def test_archives_hold_the_named_wheels_reproducibly(tmp_path: Path) -> None:
    platform = tmp_path / "cp311-x86_64-glibc2.36"
    platform.mkdir()
    for name in ("a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl", "tensorflow-9-cp311-cp311-x.whl"):
        (platform / name).write_bytes(name.encode() * 100)
    archive = tmp_path / "node.tar"
    report = _run("pack", str(platform), str(archive), "b-2.0-py3-none-any.whl", "a-1.0-py3-none-any.whl")
    assert report["changed"] is True
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl"]
        assert {member.mtime for member in tar.getmembers()} == {315532800}
    content = archive.read_bytes()
    (platform / "a-1.0-py3-none-any.whl").touch()  # a newer mtime alone changes nothing
    assert _run("pack", str(platform), str(archive), "a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl")[
        "changed"] is False
    assert archive.read_bytes() == content
    everything = _run("pack", str(platform), str(tmp_path / "all.tar"))
    with tarfile.open(str(everything["archive"])) as tar:
        assert len(tar.getnames()) == 3


def test_packing_a_missing_wheel_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "pack", str(tmp_path), str(tmp_path / "x.tar"),
                             "missing-1.0-py3-none-any.whl"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "missing-1.0-py3-none-any.whl" in result.stderr
