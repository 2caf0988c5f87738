"""Which wheels a node's Python can install, judged by its userland as pip does (run on the node).

The kernel's machine (`uname -m`, platform.machine()) is not the answer: a Raspberry Pi 4 running
32-bit Raspberry Pi OS boots a 64-bit kernel and reports aarch64, yet its Python is 32-bit armhf and
takes only armv7l wheels. pip (packaging.tags) starts from sysconfig.get_platform() and turns a 64-bit
machine name into its 32-bit sibling when the interpreter's pointers are 4 bytes; so does this probe.

Prints one JSON object: machine (the wheel architecture), kernel, bits, libc [name, version], python
(X.Y), install ("wheels": every dependency from PyPI wheels; "debian": the numeric packages from
Debian, the rest from wheels; "refused") and reason (one line, when refused).

Standard library only: it runs with the node's system Python before anything is installed.
"""

from __future__ import annotations

import json
import platform
import struct
import sys
import sysconfig
from typing import Any

# 64-bit machine name -> the one a 32-bit interpreter on it uses (packaging.tags._linux_platforms).
_THIRTY_TWO_BIT = {"x86_64": "i686", "aarch64": "armv7l", "armv8l": "armv7l", "arm64": "armv7l"}
WHEELS = ("x86_64", "aarch64")  # PyPI has manylinux wheels of every dependency (numpy, scikit-learn)
DEBIAN = ("armv7l",)  # cryptography and tflite-runtime have armv7l wheels; numpy, scikit-learn do not


def wheel_machine(platform_tag: str, pointer_bytes: int) -> str:
    """The architecture in the wheel tags a Python accepts, from sysconfig.get_platform() (e.g.
    linux-aarch64) and its pointer size."""
    machine = platform_tag.split("-", 1)[1] if "-" in platform_tag else platform_tag
    machine = machine.replace("-", "_").replace(".", "_")
    return _THIRTY_TWO_BIT.get(machine, machine) if pointer_bytes == 4 else machine


def verdict(machine: str, libc: tuple[str, str], bits: int, kernel: str) -> tuple[str, str]:
    """(install, reason): how edgefed installs on this userland, or why it cannot."""
    if libc[0] != "glibc":
        return "refused", (f"{libc[0] or 'an unknown C library'} is not supported: the wheels are manylinux "
                           "(glibc); use Debian, Raspberry Pi OS or Ubuntu")
    if machine in WHEELS:
        return "wheels", ""
    if machine in DEBIAN:
        return "debian", ""
    on = f" (a {bits}-bit userland on a {kernel} kernel)" if kernel != machine else ""
    return "refused", (f"{machine}{on} is not supported: use a 64-bit OS (x86_64 or aarch64, e.g. Raspberry Pi "
                       "OS 64-bit) or 32-bit Raspberry Pi OS on an ARMv7 or newer board (armv7l)")


def probe() -> dict[str, Any]:
    pointer = struct.calcsize("P")
    machine = wheel_machine(sysconfig.get_platform(), pointer)
    name, version = platform.libc_ver()
    kernel = platform.machine()
    install, reason = verdict(machine, (name, version), pointer * 8, kernel)
    return {
        "machine": machine, "kernel": kernel, "bits": pointer * 8, "libc": [name, version],
        "python": "{}.{}".format(*sys.version_info[:2]), "install": install, "reason": reason,
    }


if __name__ == "__main__":
    print(json.dumps(probe()))
