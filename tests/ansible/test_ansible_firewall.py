"""The chief's firewall (roles/port_forward through the real playbooks) on systemd containers of the lab
image, probed from a worker container: open after site.yml, closed after teardown.yml even though the
INPUT policy is ACCEPT, both states survive a reboot (docker restart: a new network namespace, so only
what edgefed's own boot unit restores comes back), and firewall services that would override the rules
are refused before anything changes. Containers and network are this module's own (deploy-fw-*)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_helpers import run_playbook
from lab_containers import PROBE, docker, image_missing, systemd_hosts, wait_for_systemd

pytestmark = pytest.mark.lab

IMAGE = os.environ.get("EDGEFED_LAB_IMAGE", "edgefed-lab:current")
P2P_PORT = 7000


def _start_listeners(chief: str, address: str) -> None:
    """What the chief would serve: its private port and the p2p port (nothing listens on 7777)."""
    for port in (3389, P2P_PORT):
        docker("exec", "-d", chief, "python3", "-m", "http.server", str(port), "--bind", address)
    for port in (3389, P2P_PORT):
        deadline = time.monotonic() + 30
        while docker("exec", chief, "python3", "-c", PROBE, address, str(port)).stdout.strip() != "open":
            assert time.monotonic() < deadline, f"the chief's test listener on {port} did not start"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, str]]:
    if shutil.which("docker") is None or image_missing(IMAGE):
        pytest.skip(f"docker or the lab image {IMAGE} is missing (make lab-image builds it)")
    with systemd_hosts(IMAGE, "deploy-fw") as hosts:
        _start_listeners(hosts["chief"], hosts["address"])
        yield hosts


def _inventory(tmp_path: Path, settings: dict[str, Any], hosts: dict[str, str], **extra: Any) -> Path:
    inventory = {"all": {
        "vars": {**settings, "ansible_connection": "community.docker.docker",
                 "ansible_python_interpreter": "/usr/bin/python3", "edgefed_p2p_port": P2P_PORT,
                 "edgefed_public_address": hosts["address"], "edgefed_private_address": hosts["address"], **extra},
        "children": {"chief": {"hosts": {"chief": {"ansible_host": hosts["chief"]}}},
                     "workers": {"hosts": {"pi-1": {"ansible_host": hosts["pi-1"]}}}},
    }}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _from_worker(hosts: dict[str, str]) -> dict[int, str]:
    return {port: docker("exec", hosts["pi-1"], "python3", "-c", PROBE, hosts["address"], str(port)).stdout.strip()
            for port in (7777, 3389, P2P_PORT)}


def _rules(hosts: dict[str, str]) -> list[str]:
    saved = docker("exec", hosts["chief"], "iptables-save").stdout
    return [line for line in saved.splitlines() if "edgefed" in line]


def _site(tmp_path: Path, inventory: Path) -> Any:
    return run_playbook(tmp_path, inventory, "playbooks/validate.yml", "playbooks/chief.yml",
                        args=("--tags", "port_forward"))


def _reboot(hosts: dict[str, str]) -> None:
    docker("restart", hosts["chief"])
    wait_for_systemd(hosts["chief"])
    _start_listeners(hosts["chief"], hosts["address"])


def test_refuses_an_enabled_nftables_service_before_any_change(tmp_path: Path, settings: dict[str, Any],
                                                               hosts: dict[str, str]) -> None:
    unit = "[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    chief = hosts["chief"]
    docker("exec", chief, "sh", "-c", f"printf '{unit}' > /etc/systemd/system/nftables.service"
            " && systemctl daemon-reload && systemctl enable nftables.service")
    try:
        run = _site(tmp_path, _inventory(tmp_path, settings, hosts))
        assert run.returncode != 0, run.output
        assert "nftables.service is enabled on chief" in run.output, run.output
        assert _rules(hosts) == []
        assert docker("exec", chief, "test", "-e", "/usr/local/sbin/edgefed-firewall", check=False).returncode != 0
    finally:
        docker("exec", chief, "sh", "-c", "systemctl disable nftables.service;"
                " rm -f /etc/systemd/system/nftables.service && systemctl daemon-reload")


def test_open_close_and_reboot(tmp_path: Path, settings: dict[str, Any], hosts: dict[str, str]) -> None:
    chief, address = hosts["chief"], hosts["address"]
    # What an older version left: the DNAT without an address match, and a dump of every rule.
    docker("exec", chief, "sh", "-c",
            f"iptables -t nat -A PREROUTING -p tcp --dport 7777 -m comment --comment 'edgefed federation port forward'"
            f" -j DNAT --to-destination {address}:3389"
            " && iptables -A INPUT -p tcp --dport 9999 -m comment --comment 'operator rule' -j ACCEPT"
            " && mkdir -p /etc/iptables && printf '%s\\n' '*nat' '-A PREROUTING -p tcp -m comment --comment"
            " \"edgefed federation port forward\" -j DNAT' 'COMMIT' > /etc/iptables/rules.v4")
    assert _from_worker(hosts) == {7777: "open", 3389: "open", P2P_PORT: "open"}  # ACCEPT policy, no rules
    inventory = _inventory(tmp_path, settings, hosts)

    run = _site(tmp_path, inventory)
    assert run.returncode == 0, run.output
    rules = _rules(hosts)
    dnat = [r for r in rules if "DNAT" in r]
    assert dnat == [f'-A PREROUTING -d {address}/32 -p tcp -m tcp --dport 7777 -m comment --comment'
                    f' "edgefed federation port forward" -j DNAT --to-destination {address}:3389'], rules
    assert len([r for r in rules if "-j ACCEPT" in r and f"-d {address}/32" in r]) == 2, rules
    assert "edgefed" not in docker("exec", chief, "cat", "/etc/iptables/rules.v4").stdout
    script = docker("exec", chief, "cat", "/usr/local/sbin/edgefed-firewall").stdout
    assert "operator rule" not in script and "DOCKER" not in script, script
    assert _from_worker(hosts) == {7777: "open", 3389: "open", P2P_PORT: "open"}
    again = _site(tmp_path, inventory)
    assert again.returncode == 0 and again.changed("chief") == 0, again.output

    _reboot(hosts)  # the boot unit restores edgefed's rules, and only those
    assert sorted(_rules(hosts)) == sorted(rules)
    assert "operator rule" not in docker("exec", chief, "iptables-save").stdout
    assert _from_worker(hosts) == {7777: "open", 3389: "open", P2P_PORT: "open"}

    for _ in range(2):
        down = run_playbook(tmp_path, inventory, "teardown.yml", args=("--tags", "port_forward"))
        assert down.returncode == 0, down.output
    assert down.changed("chief") == 0, down.output
    closed = {7777: "refused", 3389: "refused", P2P_PORT: "refused"}
    assert _from_worker(hosts) == closed  # the listeners still run; the ACCEPT policy is unchanged
    assert "-P INPUT ACCEPT" in docker("exec", chief, "iptables", "-S", "INPUT").stdout
    assert all("REJECT" in rule for rule in _rules(hosts)), _rules(hosts)

    _reboot(hosts)
    assert _from_worker(hosts) == closed

    reopened = _site(tmp_path, inventory)
    assert reopened.returncode == 0, reopened.output
    assert _from_worker(hosts) == {7777: "open", 3389: "open", P2P_PORT: "open"}


def test_behind_a_router_no_dnat_and_the_forwarding_is_printed(tmp_path: Path, settings: dict[str, Any],
                                                               hosts: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, settings, hosts, edgefed_chief_behind_router=True)
    run = _site(tmp_path, inventory)
    assert run.returncode == 0, run.output
    assert f"forward TCP 7777 to {hosts['address']}:3389 and TCP {P2P_PORT}" in " ".join(run.output.split())
    assert [r for r in _rules(hosts) if "DNAT" in r] == []
    reachable = _from_worker(hosts)
    assert reachable[3389] == "open" and reachable[P2P_PORT] == "open", reachable
    assert reachable[7777] == "refused", reachable  # the router's job; nothing listens there on the chief
    down = run_playbook(tmp_path, inventory, "teardown.yml", args=("--tags", "port_forward"))
    assert down.returncode == 0, down.output
    assert _from_worker(hosts) == {7777: "refused", 3389: "refused", P2P_PORT: "refused"}


def test_behind_a_router_excludes_aws(tmp_path: Path, settings: dict[str, Any], hosts: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, settings, hosts, edgefed_chief_behind_router=True, edgefed_aws_enabled=True)
    run = run_playbook(tmp_path, inventory, "playbooks/validate.yml")
    assert run.returncode != 0
    assert "edgefed_chief_behind_router must be true or false and excludes edgefed_aws_enabled" in run.output
