"""What the roles write on the nodes: hardened systemd units and a configuration edgefed accepts."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml
from ansible_helpers import REPO, run_playbook, write_inventory

from edgefed.config import FederationSection, LedgerSection, MetricsSection, NodeSection, TrainerSection, load_config

UNITS = ("edgefed-chief.service", "edgefed-worker.service", "edgefed-ledger.service")
# Keys the plays wire from the appliance settings (not free-form role options).
WIRED_FEDERATION = {"private_ip", "private_port", "public_ip", "public_port", "server_name"}


def _render(tmp_path: Path, settings: dict[str, Any]) -> Path:
    out = tmp_path / "rendered"
    out.mkdir()
    settings_file = tmp_path / "settings.yml"
    settings_file.write_text(yaml.safe_dump(settings))
    inventory = write_inventory(tmp_path / "hosts.yml", {})
    run = run_playbook(tmp_path, inventory, "tests/ansible/playbooks/render_templates.yml",
                       args=("-e", f"render_dir={out}", "-e", f"settings_file={settings_file}"))
    assert run.returncode == 0, run.output
    return out


@pytest.fixture(scope="module")
def example_render(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The templates rendered with inventory/example's settings for a worker."""
    tmp_path = tmp_path_factory.mktemp("render")
    example = yaml.safe_load((REPO / "inventory/example/group_vars/all/main.yml").read_text())
    settings = {key: value for key, value in example.items() if key.startswith("edgefed_install_")}
    settings.update({
        "edgefed_install_node_name": "pi-1",
        "edgefed_install_chief_public_address": example["edgefed_public_address"],
        "edgefed_install_chief_private_address": example["edgefed_private_address"],
        "edgefed_install_public_port": example["edgefed_public_port"],
        "edgefed_install_private_port": example["edgefed_private_port"],
    })
    return _render(tmp_path, settings)


def test_example_configuration_loads_in_edgefed(example_render: Path) -> None:
    config = load_config(example_render / "edgefed.toml")
    assert config.node.name == "pi-1"
    assert config.node.role == "worker"
    assert config.node.pki_dir == "/etc/edgefed/pki"
    assert config.node.state_dir == "/var/lib/edgefed"
    assert (config.federation.public_ip, config.federation.public_port) == ("203.0.113.10", 7777)
    assert (config.federation.private_ip, config.federation.private_port) == ("172.31.20.5", 3389)
    assert config.federation.server_name == "203.0.113.10"
    assert config.federation.rounds == 10
    assert config.federation.min_workers == 3
    assert config.trainer.kind == "numpy"
    assert config.ledger.backend == "embedded"


def test_strings_are_quoted_safely(tmp_path: Path) -> None:
    rendered = _render(tmp_path, {
        "edgefed_install_node_name": "pi-1",
        "edgefed_install_node_role": "chief",
        "edgefed_install_chief_public_address": "chief.example.org",
        "edgefed_install_chief_private_address": "10.0.0.5",
        "edgefed_install_trainer": {"kind": "numpy", "export_dir": '/srv/a "quoted" \\ dir'},
        "edgefed_install_ledger": {"backend": "iroha", "torii": "iroha:50051", "enabled": False},
    })
    config = load_config(rendered / "edgefed.toml")
    assert config.node.role == "chief"
    assert config.trainer.export_dir == '/srv/a "quoted" \\ dir'
    assert config.ledger.enabled is False
    assert config.ledger.torii == "iroha:50051"


def test_metrics_are_off_unless_the_inventory_enables_them(example_render: Path, tmp_path: Path) -> None:
    """edgefed_install_metrics renders [metrics]; without it the node serves nothing (edgefed's default)."""
    assert "[metrics]" not in (example_render / "edgefed.toml").read_text()
    assert load_config(example_render / "edgefed.toml").metrics.enabled is False
    rendered = _render(tmp_path, {
        "edgefed_install_node_name": "pi-1",
        "edgefed_install_chief_public_address": "203.0.113.10",
        "edgefed_install_chief_private_address": "10.0.0.5",
        "edgefed_install_metrics": {"enabled": True},
    })
    metrics = load_config(rendered / "edgefed.toml").metrics
    assert (metrics.enabled, metrics.address, metrics.port) == (True, "127.0.0.1", 9477)  # localhost
    (tmp_path / "bound").mkdir()
    bound = _render(tmp_path / "bound", {
        "edgefed_install_node_name": "pi-1",
        "edgefed_install_chief_public_address": "203.0.113.10",
        "edgefed_install_chief_private_address": "10.0.0.5",
        "edgefed_install_metrics": {"enabled": True, "address": "10.0.0.7", "port": 9100},
    })
    metrics = load_config(bound / "edgefed.toml").metrics
    assert (metrics.enabled, metrics.address, metrics.port) == (True, "10.0.0.7", 9100)


@pytest.mark.parametrize("unit", UNITS)
def test_units_run_hardened_as_the_service_user(example_render: Path, unit: str) -> None:
    text = (example_render / unit).read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["User"] == "edgefed"
    assert settings["Restart"] == "on-failure"
    assert settings["ReadWritePaths"] == "/var/lib/edgefed"
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert settings[option] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ExecStart"].startswith("/opt/edgefed/venv/bin/edgefed ")
    assert settings["ExecStart"].endswith("--config /etc/edgefed/edgefed.toml")


@pytest.mark.parametrize("unit", UNITS)
def test_units_exposure_below_4(example_render: Path, unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the lab checks the units on real systemd)")
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(example_render / unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) < 4.0, result.stdout


def _spec_options(name: str) -> dict[str, Any]:
    specs = yaml.safe_load((REPO / "roles/edgefed_install/meta/argument_specs.yml").read_text())
    return dict(specs["argument_specs"]["main"]["options"][name]["options"])


_SPEC_TYPES = {int: "int", float: "float", bool: "bool", str: "str", tuple[str, ...]: "list"}


@pytest.mark.parametrize(("option", "section", "skip"), [
    ("edgefed_install_federation", FederationSection, WIRED_FEDERATION),
    ("edgefed_install_trainer", TrainerSection, set()),
    ("edgefed_install_ledger", LedgerSection, set()),
    ("edgefed_install_metrics", MetricsSection, set()),
])
def test_role_options_match_edgefed_config(option: str, section: type, skip: set[str]) -> None:
    """Every key of edgefed/config.py can be set from the inventory, with the same type, and no other."""
    options = _spec_options(option)
    hints = get_type_hints(section)
    keys = {field.name for field in dataclasses.fields(section)} - skip
    assert set(options) == keys
    for key in keys:
        expected = _SPEC_TYPES.get(hints[key], "str")  # Literal[...] values are strings
        assert options[key]["type"] == expected, key


def test_node_section_is_fully_rendered(example_render: Path) -> None:
    text = (example_render / "edgefed.toml").read_text()
    node = text.split("[node]", 1)[1].split("[", 1)[0]
    assert {line.split(" = ")[0] for line in node.strip().splitlines()} == {
        field.name for field in dataclasses.fields(NodeSection)}


def test_inference_units_serve_the_received_model_over_a_socket(example_render: Path) -> None:
    socket_unit = dict(re.findall(r"^(\w+)=(.*)$", (example_render / "edgefed-infer.socket").read_text(), re.M))
    assert socket_unit["ListenStream"] == "/run/edgefed-infer.sock"
    assert (socket_unit["Accept"], socket_unit["SocketMode"], socket_unit["SocketGroup"]) == ("yes", "0660", "edgefed")
    service = dict(re.findall(r"^(\w+)=(.*)$", (example_render / "edgefed-infer@.service").read_text(), re.M))
    assert service["ExecStart"] == "/opt/edgefed/lite/bin/edgefed-predict --serve --state-dir /var/lib/edgefed"
    assert (service["StandardInput"], service["StandardOutput"]) == ("socket", "socket")
    assert service["User"] == "edgefed" and service["ReadOnlyPaths"] == "/var/lib/edgefed"
    assert (service["PrivateNetwork"], service["RestrictAddressFamilies"]) == ("yes", "AF_UNIX")
    assert "ReadWritePaths" not in service  # it writes nothing


def test_inference_unit_exposure_below_2(example_render: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the lab checks the units on real systemd)")
    unit = str(example_render / "edgefed-infer@.service")
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", unit],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) < 2.0, result.stdout
