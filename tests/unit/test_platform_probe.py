"""The install role's platform probe (roles/edgefed_install/files/platform_probe.py): a node's wheel
architecture comes from its Python's userland, as pip decides it, not from the kernel."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

PROBE = Path(__file__).resolve().parents[2] / "roles/edgefed_install/files/platform_probe.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("platform_probe", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe = _load()


@pytest.mark.parametrize(("platform_tag", "pointer", "machine"), [
    ("linux-x86_64", 8, "x86_64"),
    ("linux-aarch64", 8, "aarch64"),  # 64-bit Raspberry Pi OS
    ("linux-aarch64", 4, "armv7l"),  # 32-bit Pi OS on the 64-bit kernel a Pi 4 boots by default
    ("linux-armv8l", 4, "armv7l"),  # the same board with the kernel's 32-bit personality
    ("linux-armv7l", 4, "armv7l"),  # 32-bit kernel and userland (Pi 2/3 images)
    ("linux-armv6l", 4, "armv6l"),  # Pi Zero / Pi 1
    ("linux-x86_64", 4, "i686"),  # 32-bit Python on a 64-bit PC
])
def test_wheel_machine_follows_the_userland(platform_tag: str, pointer: int, machine: str) -> None:
    assert probe.wheel_machine(platform_tag, pointer) == machine


@pytest.mark.parametrize(("machine", "libc", "bits", "kernel", "install", "says"), [
    ("aarch64", ("glibc", "2.36"), 64, "aarch64", "wheels", ""),
    ("x86_64", ("glibc", "2.36"), 64, "x86_64", "wheels", ""),
    ("armv7l", ("glibc", "2.36"), 32, "aarch64", "debian", ""),
    ("armv6l", ("glibc", "2.36"), 32, "armv6l", "refused", "armv6l is not supported"),
    ("i686", ("glibc", "2.36"), 32, "x86_64", "refused", "a 32-bit userland on a x86_64 kernel"),
    ("x86_64", ("", ""), 64, "x86_64", "refused", "an unknown C library is not supported"),
])
def test_verdict_names_the_install_path_or_one_reason(
    machine: str, libc: tuple[str, str], bits: int, kernel: str, install: str, says: str
) -> None:
    got, reason = probe.verdict(machine, libc, bits, kernel)
    assert got == install
    assert says in reason
    assert (reason == "") == (install != "refused")
    assert "\n" not in reason


def test_the_probe_agrees_with_pip_on_this_machine() -> None:
    """Run as the role runs it (a script on the node's Python); pip's own tag logic is the reference."""
    from pip._vendor.packaging import tags

    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(result.stdout)
    pip_platforms = list(tags.platform_tags())
    assert any(tag.endswith("_" + found["machine"]) for tag in pip_platforms), (found, pip_platforms[:3])
    assert found["python"] == "{}.{}".format(*sys.version_info[:2])
    assert found["bits"] in (32, 64)
