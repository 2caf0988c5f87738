"""One `edgefed doctor` run: on this node (the probe script run with sh) or on every inventory host over
SSH, then the checks printed one line each, or as one JSON document. Exit 0 when every check passed.

The TCP connect to the chief is not made here (only edgefed.transport opens sockets): locally the
caller passes `connect` (edgefed.transport.probe.tcp_reachable); over SSH the node's own sshd opens it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from edgefed.ops.doctor import Check, DoctorLimits, diagnose
from edgefed.ops.doctor_probe import build_doctor_script, chief_address, with_section
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import Section, parse_output
from edgefed.ops.ssh import SshOptions, collect

FORMAT = "edgefed-doctor/1"
Connect = Callable[[str, int, float], "str | None"]  # (host, port, timeout) -> None or why not


@dataclass(frozen=True)
class HostReport:
    host: InventoryHost
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(check.ok is not False for check in self.checks)


def doctor_local(host: InventoryHost, limits: DoctorLimits, connect: Connect, timeout: float = 20.0) -> HostReport:
    nonce, script = build_doctor_script(host)
    try:
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout, check=False)
        output = parse_output(result.stdout, nonce)
    except subprocess.TimeoutExpired:
        return HostReport(host, [Check("probe", False, f"the checks did not finish within {timeout:g}s")])
    target = chief_address(host, output)
    if target is not None:
        reason = connect(target[0], target[1], min(timeout, 5.0))
        output = with_section(output, "reach", Section(reason or "", 0 if reason is None else 1))
    return HostReport(host, diagnose(host, output, limits))


def doctor_remote(hosts: list[InventoryHost], options: SshOptions, limits: DoctorLimits) -> list[HostReport]:
    reports = []
    for collected in collect(hosts, options, build=build_doctor_script, follow_up=chief_address):
        if collected.output is None:
            failure = collected.failure
            message = failure.message if failure is not None else "no output"
            reports.append(HostReport(collected.host, [Check("ssh", False, message, _ssh_fix(failure))]))
            continue
        checks = diagnose(collected.host, collected.output, limits, time.time())
        if collected.host.aws is not None:  # the chief's security group, where AWS credentials exist
            from edgefed.ops.doctor_aws import check_security_group

            checks.append(check_security_group(collected.host.aws))
        reports.append(HostReport(collected.host, checks))
    return reports


def _ssh_fix(failure: Any) -> str:
    kind = getattr(failure, "kind", "")
    return {
        "unreachable": "is the node up and on the network? (edgefed status shows the same)",
        "timeout": "is the node up? is sshd running?",
        "host-key-unknown": "check the key, then rerun with --accept-new-host-keys",
        "auth": "check ansible_user / ansible_ssh_private_key_file",
    }.get(kind, "")


def render_text(reports: list[HostReport], out: TextIO) -> None:
    for report in reports:
        verdict = "all checks passed" if report.passed else "PROBLEMS"
        out.write(f"{report.host.name} ({report.host.role}): {verdict}\n")
        for check in report.checks:
            mark = {True: "ok  ", False: "FAIL", None: "--  "}[check.ok]
            line = f"  {mark}  {check.name}: {check.detail}"
            if check.ok is False and check.fix:
                line += f"  → fix: {check.fix}"
            out.write(line + "\n")
    failed = sum(1 for report in reports if not report.passed)
    out.write(f"{len(reports) - failed}/{len(reports)} hosts passed every check\n")


def render_json(reports: list[HostReport], out: TextIO) -> None:
    doc = {
        "format": FORMAT,
        "passed": all(report.passed for report in reports),
        "hosts": [
            {"name": r.host.name, "role": r.host.role, "passed": r.passed, "checks": [c.to_json() for c in r.checks]}
            for r in reports
        ],
    }
    out.write(json.dumps(doc, indent=2) + "\n")
