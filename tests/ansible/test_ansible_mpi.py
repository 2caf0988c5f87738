"""edgefed_transport: mpi in the validation play: MPI only inside private networks the inventory names,
every node inside them, no AWS; the example MPI inventory passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_helpers import REPO, run_playbook

NODES = {"chief": "192.168.7.10", "pi-1": "192.168.7.11", "pi-2": "192.168.7.12"}


def _mpi_inventory(path: Path, settings: dict[str, Any], addresses: dict[str, str]) -> Path:
    hosts = {name: {"ansible_host": address} for name, address in addresses.items()}
    inventory = {"all": {"vars": settings, "children": {
        "chief": {"hosts": {"chief": hosts["chief"]}},
        "workers": {"hosts": {name: value for name, value in hosts.items() if name != "chief"}},
    }}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _settings(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    values = {
        "edgefed_transport": "mpi",
        "edgefed_mpi_cidrs": ["192.168.7.0/24"],
        "edgefed_public_address": "192.168.7.10",
        "edgefed_private_address": "192.168.7.10",
        "edgefed_source_cidrs": ["192.168.7.0/24"],
        "edgefed_pki_dir": str(tmp_path / "pki"),
        **changes,
    }
    return {key: value for key, value in values.items() if value is not None}


CASES: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    # (id, settings to change, node addresses, text the failure must contain)
    ("unknown transport", {"edgefed_transport": "udp"}, NODES, "edgefed_transport must be tls"),
    ("no mpi cidrs", {"edgefed_mpi_cidrs": None}, NODES, "edgefed_mpi_cidrs must list the cluster's LAN"),
    ("empty mpi cidrs", {"edgefed_mpi_cidrs": []}, NODES, "edgefed_mpi_cidrs must list the cluster's LAN"),
    ("public cidr", {"edgefed_mpi_cidrs": ["192.168.7.0/24", "198.51.100.0/24"]}, NODES,
     "edgefed_mpi_cidrs must list the cluster's LAN"),
    ("wider than a private range", {"edgefed_mpi_cidrs": ["172.0.0.0/8"]}, NODES,
     "edgefed_mpi_cidrs must list the cluster's LAN"),
    ("malformed cidr", {"edgefed_mpi_cidrs": ["192.168.7.0/33"]}, NODES,
     "edgefed_mpi_cidrs must list the cluster's LAN"),
    ("worker outside", {}, {**NODES, "pi-2": "192.168.8.12"}, "not inside: pi-2 at 192.168.8.12"),
    ("worker by name", {}, {**NODES, "pi-2": "pi-2.example.org"}, "not inside: pi-2 at pi-2.example.org"),
    ("with aws", {"edgefed_aws_enabled": True, "edgefed_aws_region": "eu-west-1",
                  "edgefed_aws_instance_id": "i-0123456789abcdef0", "edgefed_operator_cidrs": ["192.0.2.0/24"]},
     NODES, "set edgefed_aws_enabled: false"),
]


@pytest.mark.parametrize(("changes", "addresses", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mpi_is_refused_outside_the_private_lan(tmp_path: Path, changes: dict[str, Any], addresses: dict[str, str],
                                                message: str) -> None:
    inventory = _mpi_inventory(tmp_path / "hosts.yml", _settings(tmp_path, **changes), addresses)
    run = run_playbook(tmp_path, inventory, "site.yml")
    assert run.returncode != 0
    assert message in run.output, run.output
    assert "PLAY [Create the deployment CA" not in run.output  # stopped before any change


@pytest.mark.parametrize("cidrs", [["192.168.7.0/24"], ["10.0.0.0/8", "192.168.7.10/31", "192.168.7.12/32"]])
def test_mpi_inside_private_cidrs_passes(tmp_path: Path, cidrs: list[str]) -> None:
    inventory = _mpi_inventory(tmp_path / "hosts.yml", _settings(tmp_path, edgefed_mpi_cidrs=cidrs), NODES)
    run = run_playbook(tmp_path, inventory, "playbooks/validate.yml")
    assert run.returncode == 0, run.output


def test_the_example_mpi_inventory_passes_validation(tmp_path: Path) -> None:
    run = run_playbook(tmp_path, REPO / "inventory" / "example-mpi", "playbooks/validate.yml")
    assert run.returncode == 0, run.output
    assert run.recap()["localhost"]["failed"] == 0
