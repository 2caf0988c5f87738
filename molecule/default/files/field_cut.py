#!/usr/bin/env python3
"""Cut a lab worker's network for a while in the middle of a training, as a Pi's Wi-Fi drops (issue 16).

Runs on the lab's controller as root (standard library only). It waits, bounded, until the chief's
status file says the training has reached round --at-round, then sets the worker container's interface
down inside the container's network namespace (`nsenter -n`, the host's own `ip`: nothing runs under
emulation, so the cut starts and ends on time even for an ARM worker), keeps it down for --seconds, sets
it up again and puts back the routes that went with it. Prints one JSON line: the round the chief was in
when the link went down and when it came back, and how long it was down.

    field_cut.py --chief lab-chief --worker lab-worker2 --at-round 5 --seconds 30 [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHIEF_STATUS = "/var/lib/edgefed/status/chief.json"


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"field_cut: {' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def chief_round(chief: str) -> tuple[int, str]:
    """The chief's (round, state) from its status file; (-1, '') while it cannot be read."""
    done = subprocess.run(["docker", "exec", chief, "cat", CHIEF_STATUS], capture_output=True, text=True,
                          timeout=60, check=False)
    try:
        status = json.loads(done.stdout)
        return int(status.get("round", -1)), str(status.get("state", ""))
    except (ValueError, TypeError, AttributeError):
        return -1, ""


def namespace_of(container: str) -> list[str]:
    pid = run(["docker", "inspect", "-f", "{{.State.Pid}}", container]).strip()
    if not pid.isdigit() or pid == "0":
        raise SystemExit(f"field_cut: {container} is not running")
    return ["nsenter", "-t", pid, "-n"]


def interface_routes(netns: list[str]) -> tuple[str, list[str]]:
    """The container's one non-loopback interface and its routes (deleted with the link; put back after)."""
    links = [line.split(": ")[1].split("@")[0] for line in run([*netns, "ip", "-o", "link", "show"]).splitlines()]
    interfaces = [name for name in links if name != "lo"]
    if len(interfaces) != 1:
        raise SystemExit(f"field_cut: expected one interface besides lo, found {interfaces}")
    routes = [line.strip() for line in run([*netns, "ip", "route", "show"]).splitlines() if line.strip()]
    return interfaces[0], routes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chief", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--at-round", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on the wait for --at-round")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    round_number, state = chief_round(args.chief)
    while round_number < args.at_round:
        if state in ("finished", "error") or time.monotonic() > deadline:
            raise SystemExit(f"field_cut: the chief never reached round {args.at_round} "
                             f"(round {round_number}, state {state or 'unknown'})")
        time.sleep(0.5)  # polling the chief's status file: a few docker exec calls a second at most
        round_number, state = chief_round(args.chief)
    if state not in ("training", "waiting"):
        raise SystemExit(f"field_cut: the chief is {state!r} at round {round_number}: no training to cut into")

    netns = namespace_of(args.worker)
    interface, routes = interface_routes(netns)
    run([*netns, "ip", "link", "set", interface, "down"])
    down_at = time.monotonic()
    try:
        time.sleep(args.seconds)  # the cut itself: this is the scenario's length, not a wait for an outcome
    finally:
        run([*netns, "ip", "link", "set", interface, "up"])
        present = set(run([*netns, "ip", "route", "show"]).splitlines())
        for route in routes:
            if route not in present:
                run([*netns, "ip", "route", "replace", *route.split()])
    down_for = time.monotonic() - down_at
    back_round, back_state = chief_round(args.chief)
    print(json.dumps({"worker": args.worker, "interface": interface, "cut_round": round_number,
                      "restored_round": back_round, "restored_state": back_state,
                      "down_seconds": round(down_for, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
