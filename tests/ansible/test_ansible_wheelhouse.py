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


def _fake_wheel(directory: Path, name: str, version: str, requires: list[str]) -> Path:
    """A pure-Python wheel whose METADATA declares REQUIRES (nothing else in it matters to a download)."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                        *(f"Requires-Dist: {requirement}\n" for requirement in requires),
                        "\nA description that mentions Requires-Dist: never-fetched\n"])
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{dist}.dist-info/METADATA", metadata)
        wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def test_a_node_provided_with_debian_packages_gets_every_other_dependency(tmp_path: Path) -> None:
    """32-bit Pi OS: --provided leaves Debian's distributions out and follows everything else, extras,
    markers and pins included (an extra enabled later, like metrics, brings its dependencies)."""
    index, local = tmp_path / "index", tmp_path / "local"
    index.mkdir()
    local.mkdir()
    app = _fake_wheel(local, "app", "1.0", [
        "numpy>=1.24", "dep-a>=1", "pinned", 'dep-b; extra == "metrics"', 'winonly; sys_platform == "win32"',
        'armonly; platform_machine == "armv7l"', 'oldpy; python_version < "3.10"'])
    _fake_wheel(index, "dep-a", "1.0", ["dep-c[fast]", "numpy"])
    _fake_wheel(index, "dep-c", "1.0", ['dep-d; extra == "fast"', 'dep-e; extra == "slow"'])
    for name in ("dep-b", "dep-d", "dep-e", "numpy", "winonly", "armonly", "oldpy"):
        _fake_wheel(index, name, "1.0", [])
    _fake_wheel(index, "pinned", "1.0", [])
    _fake_wheel(index, "pinned", "2.0", [])
    env = {"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)}  # nothing but the test's wheels

    def fetch(dest: Path, *requirements: str) -> dict[str, object]:
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "download", str(dest), "--python-version", "3.11",
             "--platform", "manylinux_2_36_armv7l", "--platform", "manylinux2014_armv7l",
             "--provided", "numpy", "--provided", "CFFI", *requirements],
            capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return dict(json.loads(result.stdout))

    plain = fetch(tmp_path / "plain", str(app), "pinned<2")
    names = {"dep_a-1.0", "dep_c-1.0", "dep_d-1.0", "armonly-1.0", "pinned-1.0"}
    assert plain["files"] == sorted(f"{name}-py3-none-any.whl" for name in names)
    assert plain["changed"] is True
    assert sorted(path.name for path in (tmp_path / "plain").iterdir()) == plain["files"]  # not app itself
    again = fetch(tmp_path / "plain", str(app), "pinned<2")
    assert again["changed"] is False and again["files"] == plain["files"]

    metrics = fetch(tmp_path / "plain", f"{app}[metrics]", "pinned<2")
    assert metrics["changed"] is True
    assert metrics["saved"] == [str(tmp_path / "plain" / "dep_b-1.0-py3-none-any.whl")]
    assert set(metrics["files"]) == set(plain["files"]) | {"dep_b-1.0-py3-none-any.whl"}


def test_a_dependency_nobody_provides_or_publishes_stops_the_download_with_its_name(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    app = _fake_wheel(tmp_path, "app", "1.0", ["cffi>=1.14"])
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "download", str(tmp_path / "dest"), "--python-version", "3.11",
         "--platform", "manylinux_2_36_armv7l", "--provided", "numpy", str(app)],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)})
    assert result.returncode != 0
    assert "cffi>=1.14" in result.stderr and "Traceback" not in result.stderr
