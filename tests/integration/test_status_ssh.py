"""`edgefed status` against real OpenSSH servers: one sshd per node, started by the test.

Each node is a real `/usr/sbin/sshd -D` with throwaway host and user keys. The workers' sshd listen on
free loopback ports; the chief's sshd runs inside a network namespace the test creates (reached over
a veth pair), so the real `iptables -t nat` the probe runs there reads and changes that namespace's
own nat table, never the machine's. Status files are written with edgefed's own StatusFile and the
certificates are issued with edgefed's PKI.

systemd is not PID 1 on this machine, so `systemctl` in these sessions is a TEST DOUBLE
(`systemctl-double/systemctl`, put first on PATH with sshd's SetEnv): it answers `systemctl show`
from one KEY=VALUE file per unit. The same checks against real systemd run in
tests/integration/test_status_lab.py (marker `lab`, a systemd container).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefed import pki
from edgefed.contracts.status import StatusFile
from edgefed.ops.report import STATUS_SCHEMA

SSHD = Path("/usr/sbin/sshd")
pytestmark = [
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed (make setup installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd and network namespaces need root"),
]

SYSTEMCTL_DOUBLE = """#!/bin/sh
# TEST DOUBLE of systemctl (systemd is not PID 1 where these tests run). It answers only
# `systemctl show --property=... UNIT` from $EDGEFED_TEST_UNITS/UNIT (KEY=VALUE lines), and reports
# a unit without a file the way systemd reports an unknown unit.
[ "$1" = show ] || { echo "systemctl double: only 'show' is implemented" >&2; exit 1; }
# A node that hangs (for the command timeout test): bounded, so nothing outlives the test for long.
if [ -f "$EDGEFED_TEST_UNITS/hang" ]; then sleep 10; fi
for last; do :; done
if [ -f "$EDGEFED_TEST_UNITS/$last" ]; then
  cat "$EDGEFED_TEST_UNITS/$last"
else
  printf 'LoadState=not-found\\nActiveState=inactive\\nSubState=dead\\nNRestarts=0\\nResult=success\\n'
fi
"""

_counter = itertools.count()


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@dataclass
class Netns:
    """A network namespace joined to the root one by a veth pair (a /30 of 10.213.0.0/16)."""

    name: str
    host_ip: str
    node_ip: str
    host_if: str

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Netns]:
        tag = f"{os.getpid() % 100000}{next(_counter)}"
        index = int(tag) % 16000
        base = f"10.213.{index // 64}.{(index % 64) * 4}"
        prefix = base.rsplit(".", 1)[0]
        last = int(base.rsplit(".", 1)[1])
        ns = cls(f"efst{tag}", f"{prefix}.{last + 1}", f"{prefix}.{last + 2}", f"efh{tag}")
        node_if = f"efn{tag}"
        _run("ip", "netns", "add", ns.name)
        try:
            _run("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", node_if)
            _run("ip", "link", "set", node_if, "netns", ns.name)
            _run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
            _run("ip", "link", "set", ns.host_if, "up")
            _run("ip", "netns", "exec", ns.name, "ip", "addr", "add", f"{ns.node_ip}/30", "dev", node_if)
            _run("ip", "netns", "exec", ns.name, "ip", "link", "set", node_if, "up")
            _run("ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
            yield ns
        finally:
            subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)

    def iptables(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.name, "iptables", "-w", "5", *args)


@dataclass
class Node:
    """One edgefed node: a real sshd, its state directory and its (double) unit states."""

    name: str
    role: str
    root: Path
    address: str = "127.0.0.1"
    port: int = 0
    netns: Netns | None = None
    process: subprocess.Popen[bytes] | None = None
    host_key: Path = field(init=False)
    # Inside the namespace on its loopback only: reachable solely through a jump host in that namespace.
    netns_loopback: bool = False

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True)
        self.host_key = _keygen(self.root / "ssh_host_ed25519_key")
        (self.root / "units").mkdir()

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def set_unit(self, component: str, active: str = "active", sub: str = "running", restarts: int = 0) -> None:
        result = "exit-code" if active == "failed" else "success"
        (self.root / "units" / f"edgefed-{component}.service").write_text(
            f"LoadState=loaded\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\nResult={result}\n"
        )

    def start_sshd(self, authorized_keys: Path, double_dir: Path) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.address = self.netns.node_ip if self.netns and not self.netns_loopback else "127.0.0.1"
        self.port = _free_port() if self.netns is None else 2222 if not self.netns_loopback else 2200
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized_keys}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    f"SetEnv PATH={double_dir}:/usr/sbin:/usr/bin:/sbin:/bin EDGEFED_TEST_UNITS={self.root / 'units'}",
                    "LogLevel ERROR",
                ]
            )
            + "\n"
        )
        argv = [str(SSHD), "-D", "-e", "-f", str(config)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns.name, *argv]
        self.process = subprocess.Popen(argv, stderr=open(self.root / "sshd.log", "wb"))  # noqa: SIM115
        self._wait_listening()

    def _wait_listening(self) -> None:
        for _ in range(100):  # bounded: 100 x 0.05 s
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited: {(self.root / 'sshd.log').read_text()}")
            if self.netns_loopback:
                assert self.netns is not None
                probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), timeout=1)"
                check = ["ip", "netns", "exec", self.netns.name, sys.executable, "-c", probe]
                if subprocess.run(check, capture_output=True, check=False).returncode == 0:
                    return
            else:
                with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), timeout=1):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd for {self.name} is not listening on {self.address}:{self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def known_hosts_line(self) -> str:
        key = (self.host_key.with_suffix(".pub")).read_text().split()
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {key[0]} {key[1]}\n"


@dataclass
class Lab:
    root: Path
    user_key: Path
    wrong_key: Path
    pki_dir: Path
    known_hosts: Path
    nodes: dict[str, Node]
    chief_ns: Netns

    def inventory(self, extra_hosts: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> Path:
        """Write a YAML inventory with group_vars (shared settings) and host_vars (per node)."""
        directory = self.root / f"inventory{next(_counter)}"
        (directory / "group_vars").mkdir(parents=True)
        (directory / "host_vars").mkdir()
        groups: dict[str, dict[str, Any]] = {"chief": {"hosts": {}}, "workers": {"hosts": {}}}
        for node in self.nodes.values():
            group = "chief" if node.role == "chief" else "workers"
            groups[group]["hosts"][node.name] = {"ansible_host": node.address, "ansible_port": node.port}
            host_vars = {"edgefed_state_dir": str(node.state_dir), **overrides.get(node.name, {})}
            (directory / "host_vars" / f"{node.name}.yml").write_text(yaml.safe_dump(host_vars))
        for name, host_vars in (extra_hosts or {}).items():
            groups["workers"]["hosts"][name] = host_vars
        (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": groups}}))
        (directory / "group_vars" / "all.yml").write_text(
            yaml.safe_dump(
                {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.user_key),
                    "edgefed_node_pki_dir": str(self.pki_dir),
                }
            )
        )
        return directory


def _write_status_files(node: Node, now: float) -> None:
    """What the services write, using the services' own StatusFile."""
    role = node.role
    federation = StatusFile(
        node.state_dir,
        role,
        node.name,
        role=role,
        round=3,
        rounds_total=10,
        participants=["hub", "pi1", "pi2"],
        task_index=0 if role == "chief" else 1,
    )
    federation.update(
        state="training",
        last_transfer={
            "round": 3,
            "peer": "hub" if role == "worker" else "pi1",
            "direction": "send",
            "bytes": 26_000,
            "at": now - 5,
        },
    )
    ledger = StatusFile(node.state_dir, "ledger", node.name, backend="embedded")
    ledger.update(state="waiting", height=42, outbox_backlog=0, last_delivery_at=now - 2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        pytest.skip("iproute2 and iptables are needed for the chief's namespace")
    root = tmp_path_factory.mktemp("status-lab")
    user_key = _keygen(root / "id_operator")
    wrong_key = _keygen(root / "id_stranger")
    authorized = root / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    double_dir = root / "systemctl-double"
    double_dir.mkdir()
    (double_dir / "systemctl").write_text(SYSTEMCTL_DOUBLE)
    (double_dir / "systemctl").chmod(0o755)

    pki_dir = root / "pki"
    pki.init_ca(pki_dir)
    nodes = {
        name: Node(name, role, root / name)
        for name, role in (("hub", "chief"), ("pi1", "worker"), ("pi2", "worker"), ("pi3", "worker"))
    }
    for name in ("hub", "pi1", "pi2"):  # pi3 never gets edgefed: no units, no state, no cert
        pki.issue_node(pki_dir, name, [])
    with Netns.create() as chief_ns:
        nodes["hub"].netns = chief_ns
        try:
            for node in nodes.values():
                node.start_sshd(authorized, double_dir)
            known_hosts = root / "known_hosts"
            known_hosts.write_text("".join(node.known_hosts_line() for node in nodes.values()))
            yield Lab(root, user_key, wrong_key, pki_dir, known_hosts, nodes, chief_ns)
        finally:
            for node in nodes.values():
                node.stop()


@pytest.fixture
def healthy(lab: Lab) -> Lab:
    """Every edgefed node running, status files fresh, the chief's DNAT rule in place."""
    now = time.time()
    for name in ("hub", "pi1", "pi2"):
        node = lab.nodes[name]
        for unit in (node.root / "units").iterdir():
            unit.unlink()
        node.set_unit(node.role)
        node.set_unit("ledger", restarts=1 if name == "pi1" else 0)
        _write_status_files(node, now)
    lab.chief_ns.iptables("-t", "nat", "-F", "PREROUTING")
    lab.chief_ns.iptables(
        "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "7777", "-j", "DNAT", "--to-destination", ":3389"
    )
    return lab


def edgefed_status(*args: str, known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "edgefed.cli", "status", *args]
    if known_hosts is not None:
        argv += ["--known-hosts", str(known_hosts)]
    argv += ["--connect-timeout", "5", "--command-timeout", "20"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def status_json(*args: str, known_hosts: Path) -> tuple[int, dict[str, Any]]:
    result = edgefed_status(*args, "--json", known_hosts=known_hosts)
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    _validate(doc)
    return result.returncode, doc


def _validate(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())


def _hosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {host["name"]: host for host in doc["hosts"]}


def test_healthy_appliance_exits_zero_and_reports_every_field(healthy: Lab) -> None:
    inventory = healthy.inventory()
    code, doc = status_json("-i", str(inventory), "--limit", "hub:pi1:pi2", known_hosts=healthy.known_hosts)
    hosts = _hosts(doc)
    assert code == 0, [host["problems"] for host in doc["hosts"]]
    assert doc["healthy"] is True
    assert doc["summary"] == {"hosts": 3, "healthy": 3, "unhealthy": 0, "unreachable": 0}
    chief = hosts["hub"]
    assert chief["role"] == "chief"
    assert chief["address"] == healthy.chief_ns.node_ip
    assert chief["units"]["chief"]["active"] == "active"
    assert chief["units"]["worker"]["load"] == "not-found"
    assert chief["federation"]["round"] == 3
    assert chief["federation"]["rounds_total"] == 10
    assert chief["federation"]["participants"] == ["hub", "pi1", "pi2"]
    assert chief["federation"]["last_transfer"]["peer"] == "pi1"
    assert 4 <= chief["federation"]["last_transfer"]["age_seconds"] < 120
    assert chief["ledger"] == {
        "state": "waiting",
        "backend": "embedded",
        "height": 42,
        "outbox_backlog": 0,
        "last_delivery_at": pytest.approx(chief["ledger"]["last_delivery_at"]),
    }
    assert chief["forwarding"]["present"] is True
    assert "--dport 7777" in chief["forwarding"]["rule"]
    assert 363 < chief["certificate"]["days_left"] <= 365
    assert hosts["pi1"]["units"]["ledger"]["restarts"] == 1
    assert hosts["pi1"]["forwarding"] is None
    assert hosts["pi1"]["federation"]["last_transfer"]["peer"] == "hub"
    assert all(host["problems"] == [] for host in doc["hosts"])


def test_table_output_lists_every_host(healthy: Lab) -> None:
    result = edgefed_status("-i", str(healthy.inventory()), "--limit", "hub:pi1:pi2", known_hosts=healthy.known_hosts)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("hub", "pi1", "pi2"):
        assert name in result.stdout
    assert "3/3 hosts healthy" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no colour codes


def test_stopped_and_failed_services_make_the_host_unhealthy(healthy: Lab) -> None:
    healthy.nodes["pi2"].set_unit("worker", active="inactive", sub="dead")
    healthy.nodes["pi1"].set_unit("ledger", active="failed", sub="failed", restarts=5)
    code, doc = status_json("-i", str(healthy.inventory()), "--limit", "hub:pi1:pi2", known_hosts=healthy.known_hosts)
    hosts = _hosts(doc)
    assert code == 1
    assert doc["summary"]["unhealthy"] == 2
    assert hosts["hub"]["healthy"] is True
    assert hosts["pi2"]["problems"] == ["edgefed-worker.service is inactive (dead)"]
    assert hosts["pi1"]["problems"] == ["edgefed-ledger.service failed (result: exit-code)"]
    assert hosts["pi1"]["units"]["ledger"]["restarts"] == 5


def test_missing_forwarding_rule_fails_the_chief(healthy: Lab) -> None:
    healthy.chief_ns.iptables("-t", "nat", "-F", "PREROUTING")
    code, doc = status_json("-i", str(healthy.inventory()), "--limit", "hub", known_hosts=healthy.known_hosts)
    chief = _hosts(doc)["hub"]
    assert code == 1
    assert chief["forwarding"] == {
        "public_port": 7777,
        "private_port": 3389,
        "present": False,
        "rule": None,
        "error": None,
    }
    assert chief["problems"] == ["no DNAT rule 7777 -> :3389 in nat PREROUTING"]


def test_unreachable_wrong_key_and_uninstalled_hosts_each_get_a_row(healthy: Lab) -> None:
    closed_port = _free_port()  # nothing listens there
    inventory = healthy.inventory(
        extra_hosts={"ghost": {"ansible_host": "127.0.0.1", "ansible_port": closed_port}},
        pi2={"ansible_ssh_private_key_file": str(healthy.wrong_key)},
    )
    code, doc = status_json("-i", str(inventory), known_hosts=healthy.known_hosts)
    hosts = _hosts(doc)
    assert code == 1
    assert set(hosts) == {"hub", "pi1", "pi2", "pi3", "ghost"}
    assert hosts["hub"]["healthy"] and hosts["pi1"]["healthy"]
    ghost = hosts["ghost"]
    assert ghost["reachable"] is False
    assert ghost["failure"]["kind"] == "unreachable"
    assert f"127.0.0.1:{closed_port}" in ghost["failure"]["message"]
    assert "refused" in ghost["failure"]["message"].lower()
    pi2 = hosts["pi2"]
    assert pi2["failure"]["kind"] == "auth"
    assert str(healthy.wrong_key) in pi2["failure"]["message"]
    pi3 = hosts["pi3"]
    assert pi3["reachable"] is True and pi3["healthy"] is False
    assert pi3["failure"]["kind"] == "not-installed"
    assert doc["summary"] == {"hosts": 5, "healthy": 2, "unhealthy": 3, "unreachable": 2}


def test_unknown_host_key_is_refused_until_accepted(healthy: Lab, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(healthy.nodes["hub"].known_hosts_line())  # pi1's key is not in it
    inventory = str(healthy.inventory())
    code, doc = status_json("-i", inventory, "--limit", "pi1", known_hosts=known_hosts)
    pi1 = _hosts(doc)["pi1"]
    assert code == 1
    assert pi1["failure"]["kind"] == "host-key-unknown"
    assert "--accept-new-host-keys" in pi1["failure"]["message"]
    assert "SHA256:" in pi1["failure"]["message"]

    code, doc = status_json("-i", inventory, "--limit", "pi1", "--accept-new-host-keys", known_hosts=known_hosts)
    assert code == 0, _hosts(doc)["pi1"]["problems"]
    node = healthy.nodes["pi1"]
    recorded = known_hosts.read_text()
    assert f"[127.0.0.1]:{node.port} ssh-ed25519 " in recorded
    assert node.host_key.with_suffix(".pub").read_text().split()[1] in recorded

    code, _ = status_json("-i", inventory, "--limit", "pi1", known_hosts=known_hosts)  # now known
    assert code == 0


def test_changed_host_key_is_refused_even_with_accept_new(healthy: Lab, tmp_path: Path) -> None:
    impostor = _keygen(tmp_path / "impostor_host_key").with_suffix(".pub").read_text().split()
    node = healthy.nodes["pi1"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{node.port} {impostor[0]} {impostor[1]}\n")
    code, doc = status_json(
        "-i", str(healthy.inventory()), "--limit", "pi1", "--accept-new-host-keys", known_hosts=known_hosts
    )
    assert code == 1
    assert _hosts(doc)["pi1"]["failure"]["kind"] == "host-key-changed"
    assert known_hosts.read_text().count("\n") == 1  # nothing was added


def test_watch_json_prints_one_document_per_refresh(healthy: Lab) -> None:
    result = edgefed_status(
        "-i",
        str(healthy.inventory()),
        "--limit",
        "pi1",
        "--json",
        "--watch",
        "0.2",
        "--count",
        "2",
        known_hosts=healthy.known_hosts,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        doc = json.loads(line)
        _validate(doc)
        assert [host["name"] for host in doc["hosts"]] == ["pi1"]


def test_bad_inventory_is_a_clear_error(tmp_path: Path) -> None:
    result = edgefed_status("-i", str(tmp_path / "nope.yml"))
    assert result.returncode == 2
    assert "nope.yml does not exist" in result.stderr


def test_watch_table_refreshes_then_stops_after_count(healthy: Lab) -> None:
    result = edgefed_status(
        "-i", str(healthy.inventory()), "--limit", "pi1", "--watch", "0.2", "--count", "2",
        known_hosts=healthy.known_hosts,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1/1 hosts healthy" in result.stdout
    assert "pi1" in result.stdout


def test_silent_server_and_hanging_probe_time_out(healthy: Lab) -> None:
    with socket.socket() as mute:  # accepts TCP connections and never says a word
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        mute_port = mute.getsockname()[1]
        inventory = healthy.inventory(extra_hosts={"mute": {"ansible_host": "127.0.0.1", "ansible_port": mute_port}})
        hang = healthy.nodes["pi2"].root / "units" / "hang"
        hang.touch()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "edgefed.cli", "status", "-i", str(inventory), "--json",
                 "--limit", "pi1:pi2:mute", "--known-hosts", str(healthy.known_hosts),
                 "--connect-timeout", "1", "--command-timeout", "2"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
        finally:
            hang.unlink()
    doc = json.loads(result.stdout)
    _validate(doc)
    hosts = _hosts(doc)
    assert result.returncode == 1
    assert hosts["pi1"]["healthy"] is True
    assert hosts["mute"]["failure"] == {
        "kind": "timeout",
        "message": f"no SSH greeting from 127.0.0.1:{mute_port} within 1s (is sshd there?)",
    }
    assert hosts["pi2"]["failure"]["kind"] == "timeout"
    assert "did not finish within 2s" in hosts["pi2"]["failure"]["message"]


def test_known_hosts_file_named_in_the_inventory_ssh_args(healthy: Lab) -> None:
    # As in inventory/lab: ansible_ssh_common_args carries -o UserKnownHostsFile=...; no --known-hosts.
    args = f"-o UserKnownHostsFile={healthy.known_hosts} -o StrictHostKeyChecking=yes"
    inventory = healthy.inventory(pi1={"ansible_ssh_common_args": args})
    result = edgefed_status("-i", str(inventory), "--limit", "pi1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["hosts"][0]["healthy"] is True
