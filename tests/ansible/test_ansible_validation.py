"""Bad input stops site.yml before any change, with a message that names the variable or group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import run_playbook, write_inventory

AWS = {
    "edgefed_aws_enabled": True,
    "edgefed_aws_region": "eu-west-1",
    "edgefed_aws_instance_id": "i-0123456789abcdef0",
    "edgefed_operator_cidrs": ["192.0.2.0/24"],
}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # (id, settings to change, inventory shape, text the failure must contain)
    ("missing public address", {"edgefed_public_address": None}, {}, "edgefed_public_address must be"),
    ("malformed public address", {"edgefed_public_address": "chief..example"}, {}, "edgefed_public_address must be"),
    ("private address not IPv4", {"edgefed_private_address": "10.0.0.256"}, {}, "edgefed_private_address must be"),
    ("missing source cidrs", {"edgefed_source_cidrs": None}, {}, "edgefed_source_cidrs must be"),
    ("empty source cidrs", {"edgefed_source_cidrs": []}, {}, "edgefed_source_cidrs must be"),
    ("malformed cidr", {"edgefed_source_cidrs": ["198.51.100.0/33"]}, {}, "edgefed_source_cidrs must be"),
    ("cidrs as a string", {"edgefed_source_cidrs": "198.51.100.0/24"}, {}, "edgefed_source_cidrs must be"),
    ("world open", {"edgefed_source_cidrs": ["0.0.0.0/0"]}, {}, "edgefed_source_cidrs contains 0.0.0.0/0"),
    ("bad port", {"edgefed_public_port": 70000}, {}, "edgefed_public_port must be a port number"),
    ("relative pki dir", {"edgefed_pki_dir": "pki"}, {}, "edgefed_pki_dir must be"),
    ("no workers", {}, {"workers": ()}, "inventory group 'workers' must hold at least one host"),
    ("bad node name", {}, {"workers": ("pi 1",)}, "is not a valid node name"),
    ("aws without region", {**AWS, "edgefed_aws_region": None}, {}, "edgefed_aws_region"),
    ("aws bad instance id", {**AWS, "edgefed_aws_instance_id": "chief"}, {}, "edgefed_aws_instance_id"),
    ("aws without operator cidrs", {**AWS, "edgefed_operator_cidrs": None}, {}, "edgefed_operator_cidrs"),
    ("unknown trainer", {"edgefed_install_trainer": {"kind": "torch"}}, {}, "kind"),
    ("unknown federation key", {"edgefed_install_federation": {"round": 3}}, {}, "round"),
    ("wrong type", {"edgefed_install_federation": {"rounds": "many"}}, {}, "rounds"),
    ("bad service state", {"edgefed_worker_service_state": "running"}, {}, "edgefed_worker_service_state"),
]


@pytest.mark.parametrize(("changes", "shape", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_site_stops_before_any_change(tmp_path: Path, settings: dict[str, Any], changes: dict[str, Any],
                                      shape: dict[str, Any], message: str) -> None:
    values = {**settings, **changes}
    values = {key: value for key, value in values.items() if value is not None}
    inventory = write_inventory(tmp_path / "hosts.yml", values, **shape)
    run = run_playbook(tmp_path, inventory, "site.yml")
    assert run.returncode != 0
    assert message in run.output, run.output
    # Nothing ran after the validation play: no PKI, no host contacted.
    assert "PLAY [Create the deployment CA" not in run.output
    assert not (tmp_path / "pki").exists()


def test_the_example_inventory_passes_validation(tmp_path: Path) -> None:
    from ansible_helpers import REPO

    run = run_playbook(tmp_path, REPO / "inventory" / "example", "playbooks/validate.yml")
    assert run.returncode == 0, run.output
    assert run.recap()["localhost"]["failed"] == 0
