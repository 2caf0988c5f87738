#!/usr/bin/env python3
"""The lab's stand-in for AWS: a moto server on loopback holding one EC2 instance, "the chief".

AWS cannot be reached from the lab, so the aws_security_group role talks to moto's server mode
instead (its endpoint is overridable). This is a test double and is named as one everywhere.

    aws_double.py start STATE_DIR   start the server (once), create the chief's instance, and write
                                    STATE_DIR/endpoint_url and STATE_DIR/instance_id
    aws_double.py stop STATE_DIR    stop the server started from STATE_DIR (harmless when none runs)
    aws_double.py serve STATE_DIR   (internal) the server process itself

The server listens on a port the kernel picks (no race for a "free" port) and lives in its own
session, so it outlives the command that started it until `stop`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REGION = "us-east-1"
# moto accepts any credentials; botocore only needs some to sign with.
CREDENTIALS = {"aws_access_key_id": "lab-double", "aws_secret_access_key": "lab-double"}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DoubleError(Exception):
    """The double could not be started or stopped; the message says why."""


def _pid_alive(pid_file: Path) -> int | None:
    """The running server's pid, or None (a stale pid file, or one of another program, is ignored)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"serve" in cmdline and any(part.endswith(b"aws_double.py") for part in cmdline) else None


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def serve(state_dir: Path) -> int:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    _write(state_dir / "endpoint_url", f"http://{host}:{port}")
    stop.wait()
    server.stop()
    return 0


def _client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint_url, **CREDENTIALS)


def _chief_instance(endpoint_url: str) -> str:
    """The id of the instance tagged as the lab's chief, created on first use."""
    ec2 = _client(endpoint_url)
    found = ec2.describe_instances(
        Filters=[
            {"Name": "tag:Name", "Values": ["edgefed-lab-chief"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    for reservation in found["Reservations"]:
        for instance in reservation["Instances"]:
            return str(instance["InstanceId"])
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    created = ec2.run_instances(
        ImageId=image_id,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "edgefed-lab-chief"}]}],
    )
    return str(created["Instances"][0]["InstanceId"])


def start(state_dir: Path) -> dict[str, object]:
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = state_dir / "moto.pid"
    endpoint_file = state_dir / "endpoint_url"
    started = False
    if _pid_alive(pid_file) is None:
        endpoint_file.unlink(missing_ok=True)
        with open(state_dir / "moto.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "serve", str(state_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        _write(pid_file, str(process.pid))
        deadline = time.monotonic() + START_TIMEOUT
        while not endpoint_file.exists():
            if process.poll() is not None:
                raise DoubleError(f"moto server exited with {process.returncode}; see {state_dir}/moto.log")
            if time.monotonic() > deadline:
                process.terminate()
                raise DoubleError(f"moto server did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.1)
        started = True
    endpoint_url = endpoint_file.read_text().strip()
    instance_id = _chief_instance(endpoint_url)
    _write(state_dir / "instance_id", instance_id)
    return {"changed": started, "endpoint_url": endpoint_url, "instance_id": instance_id}


def stop(state_dir: Path) -> dict[str, object]:
    pid_file = state_dir / "moto.pid"
    pid = _pid_alive(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _pid_alive(pid_file) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid_file) is not None:
            os.kill(pid, signal.SIGKILL)
    for name in ("moto.pid", "endpoint_url", "instance_id"):
        (state_dir / name).unlink(missing_ok=True)
    return {"changed": pid is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "serve"])
    parser.add_argument("state_dir", type=Path)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.action == "serve":
        return serve(state_dir)
    try:
        result = start(state_dir) if args.action == "start" else stop(state_dir)
    except DoubleError as exc:
        print(f"aws_double: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
