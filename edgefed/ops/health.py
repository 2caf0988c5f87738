"""Judge one node from what the probe collected: a `HostStatus` with the facts and a list of problems.

A host is healthy when it was reached, edgefed is installed, and the problem list is empty. The rules:
- the unit of the host's role (edgefed-chief or edgefed-worker) is installed and active, or inactive
  after its status file says `finished`; edgefed-ledger, where installed, is active; no edgefed unit
  is failed or stuck restarting;
- the role's status file exists, is valid JSON and its state is not `error`;
- the ledger outbox backlog is at most `max_outbox_backlog`;
- the node certificate exists and is valid for at least `min_cert_days` more days;
- on the chief, nat PREROUTING holds the DNAT rule public_port -> :private_port.
Restart counts and past errors are shown but do not fail a host on their own.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import (
    COMPONENTS,
    MISSING,
    Collected,
    Failure,
    ProbeOutput,
    Section,
    parse_unit_properties,
    unit_name,
)

RUNNING_STATES = ("active", "reloading")


@dataclass(frozen=True)
class Thresholds:
    min_cert_days: float = 14.0
    max_outbox_backlog: int = 100


@dataclass(frozen=True)
class UnitState:
    unit: str
    load: str  # loaded | not-found | ...
    active: str  # active | inactive | failed | activating | ...
    sub: str  # running | dead | auto-restart | ...
    restarts: int | None
    result: str

    @property
    def installed(self) -> bool:
        return self.load == "loaded"

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "load": self.load,
            "active": self.active,
            "sub": self.sub,
            "restarts": self.restarts,
            "result": self.result,
        }


@dataclass
class HostStatus:
    host: InventoryHost
    failure: Failure | None = None
    remote_time: float | None = None
    arch: str | None = None  # the userland's machine (uname -m; armv7l for 32-bit on aarch64)
    units: dict[str, UnitState | None] = field(default_factory=dict)
    status_files: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    certificate: dict[str, Any] | None = None
    forwarding: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def reachable(self) -> bool:
        return self.failure is None or self.failure.kind == "not-installed"

    @property
    def healthy(self) -> bool:
        return self.failure is None and not self.problems

    @property
    def federation(self) -> dict[str, Any] | None:
        """The role's status file (chief.json on the chief, worker.json on a worker)."""
        return self.status_files.get(self.host.role)

    @property
    def ledger(self) -> dict[str, Any] | None:
        return self.status_files.get("ledger")

    def age(self, timestamp: Any) -> float | None:
        """Seconds between a node timestamp and the node's own clock at probe time (no clock skew)."""
        if self.remote_time is None or not isinstance(timestamp, (int, float)):
            return None
        return max(0.0, self.remote_time - float(timestamp))


def evaluate(collected: Collected, thresholds: Thresholds) -> HostStatus:
    status = HostStatus(collected.host, failure=collected.failure)
    output = collected.output
    if output is None:
        if status.failure is not None:
            status.problems.append(status.failure.message)
        return status
    status.remote_time = _remote_time(output.get("clock"))
    arch = output.get("arch")
    if arch is not None and arch.status == 0 and arch.text.strip():
        status.arch = arch.text.strip()[:32]
    for component in COMPONENTS:
        status.units[component] = _unit(component, output.get(f"unit.{component}"))
    if _not_installed(status, output):
        status.failure = Failure(
            "not-installed",
            f"edgefed is not installed: no edgefed units and no {collected.host.state_dir}",
        )
        status.problems.append(status.failure.message)
        return status
    for component in COMPONENTS:
        status.status_files[component] = _status_file(status, component, output.get(f"status.{component}"))
    _check_units(status)
    _check_status_files(status, thresholds)
    status.certificate = _certificate(status, output.get("cert"), thresholds)
    if collected.host.role == "chief":
        status.forwarding = _forwarding(status, output.get("nat"))
    return status


def _remote_time(section: Section | None) -> float | None:
    if section is None or section.status != 0:
        return None
    try:
        return float(section.text.strip())
    except ValueError:
        return None


def _unit(component: str, section: Section | None) -> UnitState | None:
    if section is None or section.status != 0:
        return None
    properties = parse_unit_properties(section.text)
    if "LoadState" not in properties:
        return None
    restarts = properties.get("NRestarts", "")
    return UnitState(
        unit=unit_name(component),
        load=properties.get("LoadState", ""),
        active=properties.get("ActiveState", ""),
        sub=properties.get("SubState", ""),
        restarts=int(restarts) if restarts.isdigit() else None,
        result=properties.get("Result", ""),
    )


def _not_installed(status: HostStatus, output: ProbeOutput) -> bool:
    state_dir = output.get("state_dir")
    no_state_dir = state_dir is not None and state_dir.status == MISSING
    no_units = all(unit is None or not unit.installed for unit in status.units.values())
    return no_state_dir and no_units


def _status_file(status: HostStatus, component: str, section: Section | None) -> dict[str, Any] | None:
    path = f"{status.host.state_dir}/status/{component}.json"
    if section is None or section.status == MISSING:
        return None
    if section.status != 0:
        status.problems.append(f"cannot read {path}: {section.text.strip()}")
        return None
    try:
        document = json.loads(section.text)
    except json.JSONDecodeError as exc:
        status.problems.append(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})")
        return None
    if not isinstance(document, dict):
        status.problems.append(f"{path} does not hold a JSON object")
        return None
    return document


def _check_units(status: HostStatus) -> None:
    role = status.host.role
    for component in COMPONENTS:
        unit = status.units.get(component)
        name = unit_name(component)
        if unit is None:
            if component == role:
                status.problems.append(f"cannot query {name} (is systemd running?)")
            continue
        if not unit.installed:
            if component == role:
                status.problems.append(f"{name} is not installed ({unit.load})")
            continue
        if unit.active == "failed":
            status.problems.append(f"{name} failed (result: {unit.result or 'unknown'})")
        elif unit.active == "activating" and unit.sub == "auto-restart":
            status.problems.append(f"{name} is restarting after a crash (result: {unit.result or 'unknown'})")
        elif unit.active not in RUNNING_STATES and unit.active != "activating":
            own = status.status_files.get(component) or {}
            finished_role = component == role and own.get("state") == "finished"
            # The other role's unit may sit stopped on this host; a stopped ledger never is fine.
            if (component == role and not finished_role) or component == "ledger":
                status.problems.append(f"{name} is {unit.active} ({unit.sub})")


def _check_status_files(status: HostStatus, thresholds: Thresholds) -> None:
    role_file = status.federation
    role_unit = status.units.get(status.host.role)
    if role_file is None and role_unit is not None and role_unit.installed:
        status.problems.append(f"no status file {status.host.state_dir}/status/{status.host.role}.json")
    for component in COMPONENTS:
        document = status.status_files.get(component)
        if document is not None and document.get("state") == "error":
            errors = document.get("errors") or []
            last = errors[-1].get("message") if errors and isinstance(errors[-1], dict) else None
            status.problems.append(f"{component} reports state error" + (f": {last}" if last else ""))
    ledger = status.ledger
    if ledger is not None:
        backlog = ledger.get("outbox_backlog")
        if isinstance(backlog, int) and backlog > thresholds.max_outbox_backlog:
            status.problems.append(
                f"ledger outbox backlog {backlog} exceeds {thresholds.max_outbox_backlog} (are deliveries stuck?)"
            )


def _certificate(status: HostStatus, section: Section | None, thresholds: Thresholds) -> dict[str, Any]:
    path = status.host.cert_path
    info: dict[str, Any] = {"path": path, "not_after": None, "days_left": None, "error": None}
    if section is None or section.status != 0:
        info["error"] = "missing" if section is None or section.status == MISSING else section.text.strip()
        status.problems.append(f"certificate {path} is {info['error']}")
        return info
    try:
        cert = x509.load_pem_x509_certificate(section.text.encode())
    except ValueError as exc:
        info["error"] = f"not a PEM certificate ({exc})"
        status.problems.append(f"certificate {path} is {info['error']}")
        return info
    not_after = cert.not_valid_after_utc
    now = (
        dt.datetime.fromtimestamp(status.remote_time, dt.UTC)
        if status.remote_time is not None
        else dt.datetime.now(dt.UTC)
    )
    days_left = (not_after - now).total_seconds() / 86400
    info["not_after"] = not_after.isoformat()
    info["days_left"] = round(days_left, 2)
    if days_left < 0:
        status.problems.append(f"certificate {path} expired {-days_left:.0f} days ago")
    elif days_left < thresholds.min_cert_days:
        status.problems.append(
            f"certificate {path} expires in {days_left:.1f} days (less than {thresholds.min_cert_days:g})"
        )
    return info


def _forwarding(status: HostStatus, section: Section | None) -> dict[str, Any]:
    host = status.host
    info: dict[str, Any] = {
        "public_port": host.public_port,
        "private_port": host.private_port,
        "present": None,
        "rule": None,
        "error": None,
    }
    if section is None or section.status != 0:
        info["error"] = section.text.strip() if section is not None else "not collected"
        status.problems.append(f"cannot read the nat table: {info['error']}")
        return info
    rule = find_dnat_rule(section.text, host.public_port, host.private_port)
    info["present"] = rule is not None
    info["rule"] = rule
    if rule is None:
        status.problems.append(f"no DNAT rule {host.public_port} -> :{host.private_port} in nat PREROUTING")
    return info


def find_dnat_rule(iptables_rules: str, public_port: int, private_port: int) -> str | None:
    """The first `iptables -S` rule that DNATs TCP public_port to private_port, or None."""
    for line in iptables_rules.splitlines():
        words = line.split()
        if words[:2] != ["-A", "PREROUTING"] or not _has(words, "-j", "DNAT"):
            continue
        if not _has(words, "--dport", str(public_port)) or not _has(words, "-p", "tcp"):
            continue
        target = _option(words, "--to-destination")
        if target is not None and target.rsplit(":", 1)[-1] == str(private_port):
            return line.strip()
    return None


def _option(words: list[str], name: str) -> str | None:
    for index, word in enumerate(words[:-1]):
        if word == name:
            return words[index + 1]
    return None


def _has(words: list[str], name: str, value: str) -> bool:
    return _option(words, name) == value
