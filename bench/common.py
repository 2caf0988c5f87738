"""What the benchmarks share: the test model, process orchestration, the machine line, and the
sections of docs/benchmarks.md.

Only the standard library and NumPy: the Flower roles import this module inside .venv-flwr, where
edgefed and its dependencies are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import selectors
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgefed.transport import free_port as transport_free_port

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
PLOTS = REPO / "docs" / "bench"
TENSORS = 4


def model(megabytes: int) -> list[np.ndarray]:
    """A model of `megabytes` MiB of float32 in TENSORS equal tensors (tensor i filled with i + 1)."""
    elements = megabytes * (1 << 20) // 4 // TENSORS
    return [np.full(elements, i + 1, dtype=np.float32) for i in range(TENSORS)]


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port(host: str = "127.0.0.1") -> int:
    return transport_free_port(host)


def machine() -> str:
    """CPU model, cores, memory, kernel, Python and OpenSSL: what a reader needs to compare numbers."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
                break
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}"
    )


def load_average() -> str:
    """The 1-minute load when a measurement starts: other work on a shared machine shows here."""
    with contextlib.suppress(OSError):
        return f"{os.getloadavg()[0]:.1f}"
    return "?"


def update_doc(section: str, marker: str, doc: Path = DOC) -> None:
    """Replace the text between <!-- marker:start --> and <!-- marker:end --> (append it if absent),
    leaving the other benchmarks' sections as they are."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{section}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


# -- processes ---------------------------------------------------------------------------------------
def die_with_parent() -> None:
    """preexec_fn: the kernel kills the child when the benchmark dies, even by SIGKILL (PR_SET_PDEATHSIG
    survives exec, also through `ip netns exec`), so no worker outlives a killed run."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(
    command: Sequence[str], env: dict[str, str] | None = None, stdout: int | None = None
) -> subprocess.Popen[str]:
    """A child process that dies with this one (die_with_parent)."""
    return subprocess.Popen(list(command), stdout=stdout, text=True, env=env, preexec_fn=die_with_parent)


class BenchFailure(RuntimeError):
    """A benchmark run did not finish: a process failed, or a deadline passed."""


def read_line(stream: IO[str], deadline: float, what: str) -> str:
    """One line from a child's stdout, or BenchFailure once the deadline has passed."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            raise BenchFailure(f"timed out waiting for {what}")
    line = stream.readline()
    if not line:
        raise BenchFailure(f"{what}: the process ended without saying it")
    return line.strip()


@contextlib.contextmanager
def process_group() -> Iterator[list[subprocess.Popen[str]]]:
    """Children appended to the yielded list are killed on the way out if they are still running."""
    children: list[subprocess.Popen[str]] = []
    try:
        yield children
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)


def run_server_and_clients(
    server: Sequence[str],
    clients: Sequence[Sequence[str]],
    timeout: float,
    env: dict[str, str] | None = None,
    ready: str = "listening",
) -> dict[str, Any]:
    """Start the server, wait for its `ready` line, start the clients, then return the JSON object the
    server prints last. Everything is bounded by `timeout` seconds; stragglers are killed."""
    deadline = time.monotonic() + timeout
    with process_group() as children:
        first = spawn(server, env, subprocess.PIPE)
        children.append(first)
        assert first.stdout is not None
        line = read_line(first.stdout, deadline, f"{server[-1]!r} to say {ready!r}")
        if line != ready:
            raise BenchFailure(f"server said {line!r} instead of {ready!r}")
        children.extend(spawn(command, env) for command in clients)
        result = json.loads(read_line(first.stdout, deadline, "the server's result"))
        peaks = reap(children, deadline)
    if not isinstance(result, dict):
        raise BenchFailure(f"the server printed {result!r}, not a JSON object")
    result["server_process_peak_rss_mb"] = peaks[0]
    result["client_peak_rss_mb"] = max(peaks[1:], default=0.0)
    return result


def reap(children: Sequence[subprocess.Popen[str]], deadline: float) -> list[float]:
    """Wait for every child; return each one's peak RSS in MB (from wait4's rusage, exact per child).
    BenchFailure when one exits non-zero or is still running at the deadline."""
    peaks = [0.0] * len(children)
    pending = set(range(len(children)))
    while pending:
        for index in sorted(pending):
            child = children[index]
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid == 0:
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            peaks[index] = usage.ru_maxrss / 1024
            pending.discard(index)
            if child.returncode != 0:
                raise BenchFailure(f"process {child.args!r} exited with {child.returncode}")
        if pending and time.monotonic() > deadline:
            raise BenchFailure(f"{len(pending)} processes did not end in time")
        if pending:
            time.sleep(0.05)
    return peaks
