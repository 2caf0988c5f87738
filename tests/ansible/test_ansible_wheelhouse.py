"""The controller's wheelhouse script: reproducible edgefed wheels and node archives, so an unchanged
source tree changes nothing on the nodes (the idempotence of edgefed_install rests on it)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
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
    rebuilt = _run("wheel", str(source), str(dest))
    assert rebuilt["changed"] is True
    assert Path(str(rebuilt["wheel"])).read_bytes() != content


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


def _git(source: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   check=True, capture_output=True)


def test_the_wheel_version_comes_from_git(tmp_path: Path) -> None:
    source, dest = _source_copy(tmp_path), tmp_path / "wheelhouse" / "edgefed"
    copy = str(_run("wheel", str(source), str(dest))["version"])
    assert copy.startswith("0.1.0+s")  # not a checkout: the content decides
    _git(source, "init", "-q")
    _git(source, "add", ".")
    _git(source, "commit", "-qm", "A")
    sha = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert _run("wheel", str(source), str(dest))["version"] == f"0.1.0.dev0+g{sha}"
    _git(source, "tag", "v1.2.0")
    tagged = _run("wheel", str(source), str(dest))
    assert tagged["version"] == "1.2.0"
    assert Path(str(tagged["wheel"])).name == "edgefed-1.2.0-py3-none-any.whl"
    with zipfile.ZipFile(str(tagged["wheel"])) as wheel:
        assert '__version__ = "1.2.0"' in wheel.read("edgefed/__init__.py").decode()
    (source / "edgefed" / "added.py").write_text("VALUE = 1\n")
    dirty = str(_run("wheel", str(source), str(dest))["version"])
    assert dirty.startswith("1.2.0.post0+g") and ".d" in dirty, dirty
    _git(source, "add", ".")
    _git(source, "commit", "-qm", "B")
    assert str(_run("wheel", str(source), str(dest))["version"]).startswith("1.2.0.post1+g")
    assert _run("wheel", str(source), str(dest), "--version", "2.0.0rc1")["version"] == "2.0.0rc1"
    refused = subprocess.run([sys.executable, str(SCRIPT), "wheel", str(source), str(dest), "--version", "two"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "not a version pip accepts: 'two'" in refused.stderr
