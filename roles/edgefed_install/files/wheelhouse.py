#!/usr/bin/env python3
"""Prepare the wheelhouse on the controller so nodes can install with `pip --no-index`.

  wheelhouse.py wheel SOURCE_DIR DEST_DIR [--check]
      Build the project's wheel reproducibly (SOURCE_DATE_EPOCH fixed, so the same source gives the
      same bytes) and place it in DEST_DIR only if it differs from what is there.
  wheelhouse.py download DEST_DIR --platform TAG... --python-version 3.11 [--check] [--no-deps] REQUIREMENT...
      Make DEST_DIR hold every wheel REQUIREMENTs need on that platform: first resolved offline
      against DEST_DIR itself (nothing to do when complete), otherwise downloaded with `pip download`.
      Local wheel files among the REQUIREMENTs (the edgefed wheel) are not kept in DEST_DIR: nodes get
      them on their own. DEST_DIR.tar is then rewritten, if its content changed, as a reproducible
      archive of DEST_DIR: one file to copy to a node instead of one round-trip per wheel.

Prints one JSON object: {"changed": bool, "wheel": path?, "saved": [files]?}. Runs with the
controller's Python (ansible_playbook_python), which has pip.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# 1980-01-01, the earliest timestamp a zip file can hold: only the bytes matter, not the build time.
_FIXED_EPOCH = "315532800"
# What the build needs besides the package itself.
_PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in")


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, env=env, check=False,
    )


def build_wheel(source: Path, dest: Path, check: bool) -> dict[str, object]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": _FIXED_EPOCH}
    with tempfile.TemporaryDirectory(prefix="edgefed-wheel-") as tmp:
        # Build from a clean copy: an in-tree build would reuse (and ship) stale files from build/.
        tree = Path(tmp) / "src"
        tree.mkdir()
        for name in _PROJECT_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tree / name)
        package = source / "edgefed"
        shutil.copytree(package, tree / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        out = Path(tmp) / "out"
        result = _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(tree), env=env)
        if result.returncode != 0:
            raise SystemExit(f"building the wheel of {source} failed:\n{result.stdout}\n{result.stderr}")
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            raise SystemExit(f"expected one wheel from {source}, found {[p.name for p in built]}")
        target = dest / built[0].name
        changed = not target.is_file() or target.read_bytes() != built[0].read_bytes()
        if changed and not check:
            dest.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(built[0], partial)
            partial.replace(target)  # atomic: a node never copies half a wheel
    return {"changed": changed, "wheel": str(target)}


def _pack(directory: Path, check: bool) -> bool:
    """Write DIRECTORY.tar (sorted names, fixed owners and times) if it differs; True if it did."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.suffix != ".whl":
                continue
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, int(_FIXED_EPOCH)
            with path.open("rb") as data:
                archive.addfile(info, data)
    target = directory.with_name(directory.name + ".tar")
    content = buffer.getvalue()
    if target.is_file() and target.read_bytes() == content:
        return False
    if not check:
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(content)
        partial.replace(target)
    return True


def _drop_local_wheels(dest: Path, requirements: list[str]) -> None:
    for requirement in requirements:
        local = Path(requirement.split("[", 1)[0])
        if local.suffix == ".whl" and local.is_file():
            (dest / local.name).unlink(missing_ok=True)


def download(dest: Path, platforms: list[str], python_version: str, requirements: list[str],
             check: bool, no_deps: bool = False) -> dict[str, object]:
    target = [
        "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
        *(arg for tag in platforms for arg in ("--platform", tag)),
        *(["--no-deps"] if no_deps else []),
    ]
    saved: list[str] = []
    complete = False
    if dest.is_dir():
        # Resolve against DEST_DIR only: when it is complete pip finds every file already there.
        offline = _pip("download", "--no-index", "--find-links", str(dest), "--dest", str(dest),
                       *target, *requirements)
        _drop_local_wheels(dest, requirements)
        complete = offline.returncode == 0
    if not complete:
        if check:
            return {"changed": True, "saved": []}
        dest.mkdir(parents=True, exist_ok=True)
        online = _pip("download", "--dest", str(dest), *target, *requirements)
        if online.returncode != 0:
            raise SystemExit(f"pip download for {' '.join(platforms)} failed:\n{online.stdout}\n{online.stderr}")
        saved = [line.split("Saved ", 1)[1].strip() for line in online.stdout.splitlines() if "Saved " in line]
        _drop_local_wheels(dest, requirements)
    packed = _pack(dest, check)
    return {"changed": bool(saved) or packed, "saved": saved, "archive": str(dest) + ".tar"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    wheel = actions.add_parser("wheel")
    wheel.add_argument("source", type=Path)
    wheel.add_argument("dest", type=Path)
    wheel.add_argument("--check", action="store_true")
    fetch = actions.add_parser("download")
    fetch.add_argument("dest", type=Path)
    fetch.add_argument("--platform", action="append", required=True)
    fetch.add_argument("--python-version", required=True)
    fetch.add_argument("--check", action="store_true")
    fetch.add_argument("--no-deps", action="store_true", help="only the requirements themselves")
    fetch.add_argument("requirements", nargs="+")
    args = parser.parse_args()
    if args.action == "wheel":
        report = build_wheel(args.source, args.dest, args.check)
    else:
        report = download(args.dest, args.platform, args.python_version, args.requirements, args.check,
                          args.no_deps)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
