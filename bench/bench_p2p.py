"""p2p file transfer cost: throughput and the receiver's peak memory, TLS vs plain text.

Real `edgefed p2p receive` and `edgefed p2p send` processes on 127.0.0.1. For each mode and file
size: the median over several runs of the sender's wall time (process start, sha256 of the source,
TLS handshake, transfer, the receiver's end-to-end check and rename), and the receiving process's
peak RSS (VmHWM) after all runs against it.

    .venv/bin/python bench/bench_p2p.py [--sizes 64,256] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgefed import pki  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from edgefed.cli import main; sys.exit(main())"]
MiB = 1 << 20


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def start_receiver(root: Path, security: list[str]) -> tuple[subprocess.Popen[str], int, Path]:
    out = root / "receiver.out"
    inbox = root / "inbox"
    handle = out.open("w")
    process = subprocess.Popen(
        [*CLI, "p2p", "receive", "--listen", "127.0.0.1:0", "--dir", str(inbox), "--no-progress",
         "--for", "1h", *security],
        stdout=handle, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for _ in range(600):
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", out.read_text())
        if match:
            return process, int(match.group(1)), inbox
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("receiver did not start")


def bench_mode(root: Path, mode: str, sizes: list[int], runs: int) -> list[dict[str, Any]]:
    if mode == "tls":
        rx_security = ["--pki", str(root / "pki"), "--name", "bob"]
        tx_security = ["--pki", str(root / "pki"), "--name", "alice"]
    else:
        rx_security = tx_security = ["--insecure-plaintext"]
    receiver, port, inbox = start_receiver(root / mode, rx_security)
    rows = []
    try:
        for size_mib in sizes:
            source = root / f"file-{size_mib}.bin"
            seconds = []
            for run in range(runs):
                name = f"{mode}-{size_mib}-{run}.bin"
                started = time.perf_counter()
                subprocess.run(
                    [*CLI, "p2p", "send", str(source), "--as", name, "--peer", f"127.0.0.1:{port}",
                     "--no-progress", *tx_security],
                    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                seconds.append(time.perf_counter() - started)
                (inbox / name).unlink()
            median = statistics.median(seconds)
            rows.append({"mode": mode, "size_mib": size_mib, "runs": runs, "median_s": round(median, 3),
                         "mib_per_s": round(size_mib / median, 1)})
        peak = peak_rss(receiver.pid)
        for row in rows:
            row["receiver_peak_rss_mib"] = round(peak / MiB, 1)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="64,256", help="file sizes in MiB, comma separated")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-p2p-") as tmp:
        root = Path(tmp)
        pki.init_ca(root / "pki")
        for name in ("alice", "bob"):
            pki.issue_node(root / "pki", name)
        for size_mib in sizes:
            with (root / f"file-{size_mib}.bin").open("wb") as handle:
                for _ in range(size_mib):
                    handle.write(os.urandom(MiB))
        for mode in ("tls", "plaintext"):
            (root / mode).mkdir()
        rows = [row for mode in ("tls", "plaintext") for row in bench_mode(root, mode, sizes, args.runs)]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    # Other work on the machine slows the transfer: the load average puts the numbers in context.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(json.dumps({"machine": machine, "load_average_after": load, "results": rows}, indent=2))
    print("\n| link | file | median send time | throughput | receiver peak RSS |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['size_mib']} MiB | {row['median_s']:.2f} s | {row['mib_per_s']} MiB/s "
              f"| {row['receiver_peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
