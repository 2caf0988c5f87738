"""The dependencies of downloaded wheels, read from their own metadata (Requires-Dist).

A 32-bit Raspberry Pi OS node takes numpy, cffi and scikit-learn from Debian (PyPI has no armv7l
wheels of them; its venvs see the system site packages). `pip download` cannot leave a dependency
out, so wheelhouse.py fetches one level at a time with --no-deps and follows the metadata here,
skipping the distributions the node is provided with. Pure: it reads wheel files, it fetches nothing.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def target_environment(python_version: str, machine: str) -> dict[str, str]:
    """The marker environment of a Linux CPython node (PEP 508 names)."""
    return {
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
        "platform_machine": machine, "python_version": python_version,
        "python_full_version": python_version + ".0", "implementation_version": python_version + ".0",
    }


def machine_of(platform_tags: list[str]) -> str:
    """The CPU of manylinux tags (manylinux_2_36_armv7l -> armv7l)."""
    machines = {tag.split("_", 3)[-1] if tag.startswith("manylinux_") else tag.split("_", 1)[-1]
                for tag in platform_tags}
    if len(machines) != 1:
        raise ValueError(f"platform tags of more than one machine: {sorted(machines)}")
    return machines.pop()


def distribution(wheel_name: str) -> str:
    """The canonical distribution name of a wheel file name."""
    return str(parse_wheel_filename(wheel_name)[0])


def local_wheel(requirement: str) -> tuple[Path, set[str]] | None:
    """A requirement that names a wheel file (the edgefed wheel), as path[extra,...]: its path and
    extras; None for a requirement pip looks up by name."""
    path, _, extras = requirement.partition("[")
    if not path.endswith(".whl"):
        return None
    return Path(path), set(extras.rstrip("]").split(",")) - {""}


def requires_dist(wheel: Path) -> list[Requirement]:
    """The Requires-Dist entries of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ValueError(f"{wheel.name}: expected one .dist-info/METADATA, found {len(names)}")
        text = archive.read(names[0]).decode("utf-8")
    requirements = []
    for line in text.split("\n\n", 1)[0].splitlines():  # the headers end at the first blank line
        if line.startswith("Requires-Dist:"):
            try:
                requirements.append(Requirement(line.split(":", 1)[1].strip()))
            except InvalidRequirement as error:
                raise ValueError(f"{wheel.name}: {error}") from None
    return requirements


def applies(requirement: Requirement, extras: set[str], environment: dict[str, str]) -> bool:
    """Whether the node needs the requirement, given the extras asked of the wheel that declares it."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in sorted(extras) or [""])


class Closure:
    """The requirements still to fetch, level by level, and the extras asked of each distribution."""

    def __init__(self, requirements: list[str], provided: list[str], environment: dict[str, str]) -> None:
        self.provided = {canonicalize_name(name) for name in provided}
        self.environment = environment
        self.extras: dict[str, set[str]] = {}
        self.pending: list[str] = []
        for text in requirements:
            local = local_wheel(text)
            if local is not None:
                self.extras.setdefault(distribution(local[0].name), set()).update(local[1])
            else:
                requirement = Requirement(text)
                self.extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
            self.pending.append(text)

    def take(self) -> list[str]:
        """The next level's requirements (empty: the closure is complete)."""
        level, self.pending = self.pending, []
        return level

    def follow(self, wheel: Path) -> None:
        """Queue what a fetched wheel needs that the node is not provided with and nobody asked yet."""
        extras = self.extras.get(distribution(wheel.name), set())
        for requirement in requires_dist(wheel):
            name = canonicalize_name(requirement.name)
            if name in self.provided or not applies(requirement, extras, self.environment):
                continue
            if name in self.extras and requirement.extras <= self.extras[name]:
                continue
            self.extras.setdefault(name, set()).update(requirement.extras)
            self.pending.append(str(Requirement(f"{requirement.name}{_extras(requirement)}{requirement.specifier}")))


def _extras(requirement: Requirement) -> str:
    return "[" + ",".join(sorted(requirement.extras)) + "]" if requirement.extras else ""
