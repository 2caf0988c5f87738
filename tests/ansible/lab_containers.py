"""Systemd containers of a lab image on a network of their own, for the tests that run the playbooks
against real hosts (tests/ansible, marked `lab`): each module names its containers with its own prefix
and a random tag, and removes them (and the network) whatever happens."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest

# Run inside a container: how a TCP port of another host answers ("open", "refused" or the error).
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print(type(error).__name__)
"""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


def image_missing(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode != 0


def wait_for_systemd(name: str, seconds: float = 90) -> None:
    """systemd has to be up before Ansible asks it anything."""
    deadline = time.monotonic() + seconds
    while docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip() not in {
            "running", "degraded"}:
        if time.monotonic() > deadline:
            pytest.fail(f"systemd in {name} did not finish booting")
        time.sleep(0.5)


@contextlib.contextmanager
def systemd_hosts(image: str, prefix: str, *, chief_address: bool = True,
                  workers: Sequence[str] = ("pi-1",)) -> Iterator[dict[str, str]]:
    """A chief (NET_ADMIN, for its rules) and the workers (default: one, `pi-1`) on network PREFIX-TAG;
    yields their container names by host name, and with chief_address the chief's address as "address"."""
    tag = uuid.uuid4().hex[:8]
    network = f"{prefix}-{tag}"
    names = {"chief": f"{prefix}-chief-{tag}",
             **{worker: f"{prefix}-{worker.replace('-', '')}-{tag}" for worker in workers}}
    docker("network", "create", network)
    try:
        for role, name in names.items():
            caps = ["--cap-add", "NET_ADMIN"] if role == "chief" else []
            docker("run", "-d", "--name", name, "--hostname", role, "--network", network,
                   "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
                   "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--cgroupns=host", *caps, image, "/lib/systemd/systemd")
        for name in names.values():
            wait_for_systemd(name)
        extra = {}
        if chief_address:
            extra["address"] = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                      names["chief"]).stdout.strip()
        yield {**names, **extra}
    finally:
        for name in names.values():
            docker("rm", "-f", name, check=False)
        docker("network", "rm", network, check=False)
