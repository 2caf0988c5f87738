"""The version the controller stamps on the edgefed wheel (wheelhouse.py `wheel`), so every build of
different code carries a different version and the nodes' pinned requirement (edgefed==VERSION) makes
pip upgrade, dependencies included:

  tag vX.Y.Z on the commit, clean tree      X.Y.Z
  N commits after vX.Y.Z                    X.Y.Z.postN+gSHA
  no tag yet                                BASE.dev0+gSHA          (BASE: pyproject.toml's version)
  uncommitted changes                       ...+gSHA.dHASH          (HASH: of pyproject.toml and the package)
  not the top of a git checkout (a copy)    BASE+sHASH

The same source always gives the same version, so the wheel stays reproducible."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

_PYPROJECT_VERSION = re.compile(r'^version\s*=\s*"([^"]+)"', re.M)
_INIT_VERSION = re.compile(r'^__version__\s*=\s*"[^"]*"', re.M)
_DESCRIBE = re.compile(r"^v(?P<tag>\d+(?:\.\d+)*)-(?P<distance>\d+)-g(?P<sha>[0-9a-f]+)(?P<dirty>-dirty)?$")
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$")


def _git(source: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True,
                                timeout=30, check=False)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def content_hash(source: Path) -> str:
    """Of pyproject.toml and the package's files (names and bytes), not of caches: 8 hex characters."""
    digest = hashlib.sha256()
    files = [source / "pyproject.toml", *sorted((source / "edgefed").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:8]


def release_version(source: Path, override: str = "") -> str:
    if override:
        if not _VERSION.match(override):
            raise SystemExit(f"edgefed_install_version: not a version pip accepts: {override!r}")
        return override
    match = _PYPROJECT_VERSION.search((source / "pyproject.toml").read_text())
    base = match.group(1) if match else "0"
    # Only the top of a checkout: a snapshot inside an ignored directory of one is not that commit.
    top = _git(source, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source.resolve():
        return f"{base}+s{content_hash(source)}"
    described = _git(source, "describe", "--tags", "--long", "--dirty", "--abbrev=12", "--match", "v[0-9]*")
    parsed = _DESCRIBE.match(described or "")
    dirty = _git(source, "status", "--porcelain", "--", "edgefed", "pyproject.toml") != ""
    suffix = f".d{content_hash(source)}" if dirty else ""
    if parsed is None:
        sha = _git(source, "rev-parse", "--short=12", "HEAD") or "0"
        return f"{base}.dev0+g{sha}{suffix}"
    if parsed["distance"] == "0" and not dirty:
        return parsed["tag"]
    return f"{parsed['tag']}.post{parsed['distance']}+g{parsed['sha']}{suffix}"


def stamp(tree: Path, version: str) -> None:
    """Write VERSION into a copy of the project (its pyproject.toml and edgefed/__init__.py)."""
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(_PYPROJECT_VERSION.sub(f'version = "{version}"', pyproject.read_text(), count=1))
    init = tree / "edgefed" / "__init__.py"
    if init.is_file():
        init.write_text(_INIT_VERSION.sub(f'__version__ = "{version}"', init.read_text(), count=1))
