#!/usr/bin/env python3
"""Prepare the wheelhouse on the controller so nodes can install with `pip --no-index`.

  wheelhouse.py wheel SOURCE_DIR DEST_DIR [--check] [--version VERSION]
      Build the project's wheel reproducibly (SOURCE_DATE_EPOCH fixed, so the same source gives the
      same bytes), stamped with its release version (release_version.py: from git, or VERSION), and
      place it in DEST_DIR only if it differs from what is there.
  wheelhouse.py download DEST_DIR --platform TAG... --python-version 3.11 [--check] [--no-deps] REQUIREMENT...
      Make DEST_DIR hold every wheel REQUIREMENTs need on that platform: first resolved offline
      against DEST_DIR itself (nothing to do when complete), otherwise downloaded with `pip download`.
      Local wheel files among the REQUIREMENTs (the edgefed wheel) are not kept in DEST_DIR: nodes get
      them on their own. Reports the wheel files the requirements resolved to.
      --provided NAME...: the node has these distributions from elsewhere (Debian's numpy on 32-bit
      Pi OS); each level is fetched with --no-deps and its dependencies followed from the wheels'
      metadata, without those (wheel_closure.py).
  wheelhouse.py pack DEST_DIR ARCHIVE [--check] [FILE...]
      Write ARCHIVE, a reproducible tar of those FILEs (all of DEST_DIR's wheels when none are named),
      if its content changed: one file to copy to a node instead of one round-trip per wheel, and
      only what that node installs.

Prints one JSON object: {"changed": bool, "wheel": path?, "version": str?, "saved": [files]?}. Runs with the
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

from release_version import release_version, stamp
from wheel_closure import Closure, local_wheel, machine_of, target_environment

# 1980-01-01, the earliest timestamp a zip file can hold: only the bytes matter, not the build time.
_FIXED_EPOCH = "315532800"
# What the build needs besides the package itself.
_PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in")


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, env=env, check=False,
    )


def build_wheel(source: Path, dest: Path, check: bool, version: str = "") -> dict[str, object]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": _FIXED_EPOCH}
    version = release_version(source, version)
    with tempfile.TemporaryDirectory(prefix="edgefed-wheel-") as tmp:
        # Build from a clean copy: an in-tree build would reuse (and ship) stale files from build/.
        tree = Path(tmp) / "src"
        tree.mkdir()
        for name in _PROJECT_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tree / name)
        package = source / "edgefed"
        shutil.copytree(package, tree / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        stamp(tree, version)
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
    return {"changed": changed, "wheel": str(target), "version": version}


def pack(directory: Path, target: Path, files: list[str], check: bool) -> dict[str, object]:
    """Write TARGET, a tar of FILES from DIRECTORY (all its wheels when none are named), reproducibly
    (sorted names, fixed owners and times), only if its content changed."""
    names = sorted(set(files)) or sorted(p.name for p in directory.glob("*.whl"))
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        if check:
            return {"changed": True, "archive": str(target)}
        raise SystemExit(f"not in {directory}: {', '.join(missing)}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in names:
            path = directory / name
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, int(_FIXED_EPOCH)
            with path.open("rb") as data:
                archive.addfile(info, data)
    content = buffer.getvalue()
    changed = not (target.is_file() and target.read_bytes() == content)
    if changed and not check:
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(content)
        partial.replace(target)
    return {"changed": changed, "archive": str(target)}


def _local_wheels(requirements: list[str]) -> set[str]:
    """File names of the requirements that are local wheel files (the edgefed wheel)."""
    wheels = (local_wheel(requirement) for requirement in requirements)
    return {local[0].name for local in wheels if local is not None and local[0].is_file()}


def _reported(output: str, *markers: str) -> list[str]:
    """The wheel files of a `pip download` run's report lines that start with one of MARKERS."""
    names = []
    for line in output.splitlines():
        for marker in markers:
            if marker in line:
                names.append(Path(line.split(marker, 1)[1].strip()).name)
    return names


def _fetch(dest: Path, target: list[str], requirements: list[str], offline: bool) -> tuple[bool, list[str], list[str]]:
    """One `pip download` into DEST_DIR (offline: resolved against DEST_DIR alone).
    Returns whether it succeeded, the wheel files it used and those it saved; a failure's output
    is raised only for an online run, where it is the cause."""
    source = ["--no-index", "--find-links", str(dest)] if offline else []
    result = _pip("download", *source, "--dest", str(dest), *target, *requirements)
    if result.returncode != 0 and not offline:
        raise SystemExit(f"pip download {' '.join(requirements)} failed:\n{result.stdout}\n{result.stderr}")
    used = _reported(result.stdout, "Saved ", "File was already downloaded ")
    return result.returncode == 0, used, _reported(result.stdout, "Saved ")


def _fetch_all(dest: Path, target: list[str], requirements: list[str], offline: bool,
               closure: Closure | None) -> tuple[bool, set[str], set[str]]:
    """The requirements' wheels: by pip's resolver, or level by level along the closure (--provided)."""
    if closure is None:
        ok, files, saved = _fetch(dest, target, requirements, offline)
        return ok, set(files), set(saved)
    used: set[str] = set()
    saved_all: set[str] = set()
    level = closure.take()
    while level:
        ok, files, saved = _fetch(dest, target, level, offline)
        if not ok:
            return False, used, saved_all
        saved_all.update(saved)
        for name in sorted(set(files) - used):
            used.add(name)
            closure.follow(dest / name)
        level = closure.take()
    return True, used, saved_all


def download(dest: Path, platforms: list[str], python_version: str, requirements: list[str],
             check: bool, no_deps: bool = False, provided: list[str] | None = None) -> dict[str, object]:
    """See the module's help. With PROVIDED (distribution names the node has from elsewhere, e.g.
    Debian's numpy on 32-bit Pi OS) the dependencies are followed here, leaving those out."""
    target = [
        "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
        *(arg for tag in platforms for arg in ("--platform", tag)),
        *(["--no-deps"] if no_deps or provided is not None else []),
    ]

    def closure() -> Closure | None:
        if provided is None:
            return None
        return Closure(requirements, provided, target_environment(python_version, machine_of(platforms)))

    local = _local_wheels(requirements)
    if dest.is_dir():
        # Resolve against DEST_DIR only: when it is complete pip finds every file already there.
        ok, files, saved = _fetch_all(dest, target, requirements, True, closure())
        for name in local:
            (dest / name).unlink(missing_ok=True)
        if ok:  # (pip's own find-links, if configured, may still have added a file)
            return {"changed": bool(saved - local), "saved": sorted(str(dest / name) for name in saved - local),
                    "files": sorted(files - local)}
    if check:
        return {"changed": True, "saved": [], "files": []}
    dest.mkdir(parents=True, exist_ok=True)
    _, files, saved = _fetch_all(dest, target, requirements, False, closure())
    for name in local:
        (dest / name).unlink(missing_ok=True)
    return {"changed": bool(saved - local), "saved": sorted(str(dest / name) for name in saved - local),
            "files": sorted(files - local)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    wheel = actions.add_parser("wheel")
    wheel.add_argument("source", type=Path)
    wheel.add_argument("dest", type=Path)
    wheel.add_argument("--check", action="store_true")
    wheel.add_argument("--version", default="", help="instead of the version derived from git")
    fetch = actions.add_parser("download")
    fetch.add_argument("dest", type=Path)
    fetch.add_argument("--platform", action="append", required=True)
    fetch.add_argument("--python-version", required=True)
    fetch.add_argument("--check", action="store_true")
    fetch.add_argument("--no-deps", action="store_true", help="only the requirements themselves")
    fetch.add_argument("--provided", action="append", metavar="NAME",
                       help="a distribution the node has from elsewhere: dependencies are followed without it")
    fetch.add_argument("requirements", nargs="+")
    bundle = actions.add_parser("pack")
    bundle.add_argument("dest", type=Path)
    bundle.add_argument("archive", type=Path)
    bundle.add_argument("--check", action="store_true")
    bundle.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.action == "wheel":
        report = build_wheel(args.source, args.dest, args.check, args.version)
    elif args.action == "pack":
        report = pack(args.dest, args.archive, args.files, args.check)
    else:
        report = download(args.dest, args.platform, args.python_version, args.requirements, args.check,
                          args.no_deps, args.provided)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
