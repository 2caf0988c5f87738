"""Health rules of `edgefed status`, on probe output shaped like what a node prints."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from edgefed import pki
from edgefed.ops.health import Thresholds, evaluate, find_dnat_rule
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import MISSING, Collected, Failure, ProbeOutput, Section

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    pki_dir = tmp_path_factory.mktemp("pki")
    pki.init_ca(pki_dir)
    return {days: pki.issue_node(pki_dir, f"node{days}", days=days).cert.read_text() for days in (365, 5)}


def _host(role: str = "worker") -> InventoryHost:
    return InventoryHost(
        name="node",
        address="192.0.2.1",
        port=22,
        user="root",
        key_file=None,
        password=None,
        role="chief" if role == "chief" else "worker",
        node_name="node",
        state_dir="/var/lib/edgefed",
        pki_dir="/etc/edgefed/pki",
        public_port=7777,
        private_port=3389,
    )


def _unit(active: str = "active", sub: str = "running", load: str = "loaded", restarts: int = 0) -> Section:
    result = "exit-code" if active in ("failed", "activating") else "success"
    text = f"LoadState={load}\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\nResult={result}"
    return Section(text, 0)


def _absent() -> Section:
    return Section("", MISSING)


def _probe(
    role: str,
    cert: str,
    files: dict[str, dict[str, Any] | str | None] | None = None,
    units: dict[str, Section] | None = None,
    nat: Section | None = None,
    clock: float = NOW,
) -> Collected:
    sections = {"clock": Section(f"{int(clock)}", 0), "state_dir": Section("", 0), "cert": Section(cert, 0)}
    own = "chief" if role == "chief" else "worker"
    defaults: dict[str, Section] = {own: _unit(), "ledger": _unit()}
    for component in ("chief", "worker", "ledger"):
        sections[f"unit.{component}"] = (units or {}).get(component) or defaults.get(
            component, _unit("inactive", "dead", load="not-found")
        )
    files = {own: {"state": "training", "round": 1}, "ledger": {"outbox_backlog": 0}} if files is None else files
    for component in ("chief", "worker", "ledger"):
        document = files.get(component)
        if document is None:
            sections[f"status.{component}"] = _absent()
        else:
            text = document if isinstance(document, str) else json.dumps(document)
            sections[f"status.{component}"] = Section(text, 0)
    if role == "chief":
        sections["nat"] = nat or Section(
            "-P PREROUTING ACCEPT\n-A PREROUTING -p tcp -m tcp --dport 7777 -j DNAT --to-destination :3389", 0
        )
    return Collected(_host(role), ProbeOutput(sections), None)


def test_healthy_chief_and_worker(certificates: dict[int, str]) -> None:
    for role in ("chief", "worker"):
        status = evaluate(_probe(role, certificates[365]), Thresholds())
        assert status.problems == []
        assert status.healthy and status.reachable
    chief = evaluate(_probe("chief", certificates[365]), Thresholds())
    assert chief.forwarding is not None and chief.forwarding["present"] is True


def test_connection_failure_is_one_problem() -> None:
    failure = Failure("timeout", "no answer from 192.0.2.1:22 within 10s")
    status = evaluate(Collected(_host(), None, failure), Thresholds())
    assert not status.reachable and not status.healthy
    assert status.problems == [failure.message]


def test_finished_run_may_stop_but_a_crash_loop_may_not(certificates: dict[int, str]) -> None:
    stopped = {"worker": _unit("inactive", "dead")}
    finished = evaluate(_probe("worker", certificates[365], {"worker": {"state": "finished"}}, stopped), Thresholds())
    assert finished.healthy
    looping = evaluate(
        _probe("worker", certificates[365], units={"worker": _unit("activating", "auto-restart", restarts=7)}),
        Thresholds(),
    )
    assert looping.problems == ["edgefed-worker.service is restarting after a crash (result: exit-code)"]


def test_status_file_problems(certificates: dict[int, str]) -> None:
    error_state = {"state": "error", "errors": [{"at": NOW, "message": "round 4 timed out"}]}
    status = evaluate(
        _probe("worker", certificates[365], {"worker": error_state, "ledger": {"outbox_backlog": 250}}),
        Thresholds(max_outbox_backlog=100),
    )
    assert status.problems == [
        "worker reports state error: round 4 timed out",
        "ledger outbox backlog 250 exceeds 100 (are deliveries stuck?)",
    ]
    garbled = evaluate(_probe("worker", certificates[365], {"worker": "{not json"}), Thresholds())
    assert garbled.problems[0].startswith("/var/lib/edgefed/status/worker.json is not valid JSON")
    assert "no status file /var/lib/edgefed/status/worker.json" in garbled.problems
    missing = evaluate(_probe("worker", certificates[365], {}), Thresholds())
    assert missing.problems == ["no status file /var/lib/edgefed/status/worker.json"]


def test_certificate_checks_use_the_node_clock(certificates: dict[int, str]) -> None:
    now = time.time()
    soon = evaluate(_probe("worker", certificates[5], clock=now), Thresholds(min_cert_days=14))
    assert soon.certificate is not None and 4 < soon.certificate["days_left"] <= 5
    assert soon.problems == [
        f"certificate /etc/edgefed/pki/nodes/node/tls.crt expires in {soon.certificate['days_left']:.1f} days"
        " (less than 14)"
    ]
    # The same certificate seen by a node whose clock is a year ahead: expired there.
    expired = evaluate(_probe("worker", certificates[365], clock=now + 400 * 86400), Thresholds())
    assert expired.problems == ["certificate /etc/edgefed/pki/nodes/node/tls.crt expired 35 days ago"]
    broken = evaluate(_probe("worker", "garbage"), Thresholds())
    assert broken.certificate is not None and broken.certificate["days_left"] is None
    assert broken.problems[0].startswith("certificate /etc/edgefed/pki/nodes/node/tls.crt is not a PEM")


def test_chief_forwarding_rule_and_unreadable_nat_table(certificates: dict[int, str]) -> None:
    no_rule = evaluate(_probe("chief", certificates[365], nat=Section("-P PREROUTING ACCEPT", 0)), Thresholds())
    assert no_rule.problems == ["no DNAT rule 7777 -> :3389 in nat PREROUTING"]
    denied = Section("sudo: a password is required", 1)
    unreadable = evaluate(_probe("chief", certificates[365], nat=denied), Thresholds())
    assert unreadable.forwarding is not None and unreadable.forwarding["present"] is None
    assert unreadable.problems == ["cannot read the nat table: sudo: a password is required"]


def test_not_installed_host(certificates: dict[int, str]) -> None:
    collected = _probe("worker", certificates[365], {}, units={"worker": _unit("inactive", "dead", "not-found")})
    assert collected.output is not None
    collected.output.sections["state_dir"] = _absent()
    collected.output.sections["unit.ledger"] = _unit("inactive", "dead", "not-found")
    status = evaluate(collected, Thresholds())
    assert status.failure is not None and status.failure.kind == "not-installed"
    assert status.reachable and not status.healthy


@pytest.mark.parametrize(
    ("rules", "found"),
    [
        ("-A PREROUTING -p tcp -m tcp --dport 7777 -j DNAT --to-destination 10.0.0.5:3389", True),
        ("-A PREROUTING -i eth0 -p tcp -m tcp --dport 7777 -j DNAT --to-destination :3389", True),
        (  # the shape the port_forward role writes
            '-A PREROUTING -p tcp -m tcp --dport 7777 -m comment --comment "edgefed federation port forward"'
            " -j DNAT --to-destination 10.0.0.5:3389",
            True,
        ),
        ("-A PREROUTING -p udp -m udp --dport 7777 -j DNAT --to-destination :3389", False),
        ("-A PREROUTING -p tcp -m tcp --dport 7778 -j DNAT --to-destination :3389", False),
        ("-A PREROUTING -p tcp -m tcp --dport 7777 -j DNAT --to-destination :3390", False),
        ("-A OUTPUT -p tcp -m tcp --dport 7777 -j DNAT --to-destination :3389", False),
        ("-A PREROUTING -p tcp -m tcp --dport 7777 -j REDIRECT --to-ports 3389", False),
    ],
)
def test_find_dnat_rule(rules: str, found: bool) -> None:
    assert (find_dnat_rule("-P PREROUTING ACCEPT\n" + rules, 7777, 3389) is not None) is found
