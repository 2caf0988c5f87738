"""Reading the Ansible inventory for `edgefed status`: YAML and INI, group_vars/host_vars, limits."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
import yaml

from edgefed.config import ConfigError
from edgefed.ops.inventory import InventoryHost, load_inventory


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def yaml_inventory(tmp_path: Path) -> Path:
    inventory = {
        "all": {
            "children": {
                "chief": {"hosts": {"aws-chief": {"ansible_host": "203.0.113.10", "ansible_user": "admin"}}},
                "workers": {
                    "hosts": {
                        "pi1": {"ansible_host": "{{ inventory_hostname }}.lan", "ansible_port": 2201},
                        "pi2": None,
                    }
                },
                "monitoring": {"hosts": {"grafana": None}},
            }
        }
    }
    source = _write(tmp_path / "hosts.yml", yaml.safe_dump(inventory))
    _write(
        tmp_path / "group_vars" / "all.yml",
        # edgefed_pki_dir is the controller's CA directory in the playbooks: status must not use it.
        "ansible_user: pi\nansible_ssh_private_key_file: ~/.ssh/edge\nedgefed_pki_dir: /home/op/ca\n",
    )
    _write(tmp_path / "group_vars" / "workers.yml", "edgefed_state_dir: /srv/edgefed\n")
    _write(tmp_path / "host_vars" / "pi2.yml", "edgefed_node_name: pi-two\nedgefed_node_pki_dir: /opt/pki\n")
    return source


def test_yaml_inventory_with_group_and_host_vars(yaml_inventory: Path) -> None:
    hosts = {host.name: host for host in load_inventory(yaml_inventory)}
    assert list(hosts) == ["aws-chief", "pi1", "pi2"]  # chief first; grafana is no edgefed node
    chief = hosts["aws-chief"]
    assert chief == InventoryHost(
        name="aws-chief",
        address="203.0.113.10",
        port=22,
        user="admin",  # host var beats group_vars/all
        key_file="~/.ssh/edge",
        password=None,
        role="chief",
        node_name="aws-chief",
        state_dir="/var/lib/edgefed",
        pki_dir="/etc/edgefed/pki",
        public_port=7777,
        private_port=3389,
    )
    assert hosts["pi1"].address == "pi1.lan"  # templated
    assert hosts["pi1"].port == 2201
    assert hosts["pi1"].user == "pi"
    assert hosts["pi1"].state_dir == "/srv/edgefed"
    assert hosts["pi1"].role == "worker"
    assert hosts["pi2"].address == "pi2"
    assert hosts["pi2"].node_name == "pi-two"
    assert hosts["pi2"].cert_path == "/opt/pki/nodes/pi-two/tls.crt"


def test_limit_pattern_selects_hosts(yaml_inventory: Path) -> None:
    assert [h.name for h in load_inventory(yaml_inventory, "workers:!pi2")] == ["pi1"]
    assert [h.name for h in load_inventory(yaml_inventory, "pi*")] == ["pi1", "pi2"]
    with pytest.raises(ConfigError, match="no hosts matching --limit 'nothing'"):
        load_inventory(yaml_inventory, "nothing")


def test_ini_inventory_directory(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    _write(
        directory / "hosts.ini",
        "[chief]\nhub ansible_host=10.0.0.1 ansible_port=2222\n\n"
        "[workers]\npi1 ansible_host=10.0.0.2\n\n[workers:vars]\nedgefed_state_dir=/data/edgefed\n\n"
        "[other]\nbox edgefed_role=worker pki_node_name=box-1 pki_node_dest=/srv/pki\n",
    )
    hosts = {host.name: host for host in load_inventory(directory)}
    assert set(hosts) == {"hub", "pi1", "box"}
    assert hosts["hub"].port == 2222
    assert hosts["pi1"].state_dir == "/data/edgefed"
    assert hosts["box"].role == "worker"  # from edgefed_role, not from a group
    assert hosts["box"].user == getpass.getuser()
    assert hosts["box"].cert_path == "/srv/pki/nodes/box-1/tls.crt"  # the pki role's own variables


def test_edgefed_role_settles_a_host_in_both_groups(tmp_path: Path) -> None:
    ambiguous = _write(tmp_path / "a" / "hosts.ini", "[chief]\nboth\n\n[workers]\nboth\n")
    with pytest.raises(ConfigError, match="both 'chief' and 'workers'; set edgefed_role"):
        load_inventory(ambiguous)
    settled = _write(tmp_path / "b" / "hosts.ini", "[chief]\nboth\n\n[workers]\nboth\n")
    _write(tmp_path / "b" / "host_vars" / "both.yml", "edgefed_role: chief\n")
    assert [h.role for h in load_inventory(settled)] == ["chief"]


@pytest.mark.parametrize(
    ("host_vars", "message"),
    [
        ("ansible_port: ssh\n", "ansible_port='ssh' is not a port number"),
        ("ansible_port: 70000\n", "ansible_port=70000 is outside 1-65535"),
        ("edgefed_role: ledger\n", "edgefed_role='ledger' must be 'chief' or 'worker'"),
        ("edgefed_state_dir: [a, b]\n", "edgefed_state_dir must be a string"),
    ],
)
def test_bad_variables_name_the_host_and_variable(tmp_path: Path, host_vars: str, message: str) -> None:
    source = _write(tmp_path / "hosts.ini", "[workers]\npi1\n")
    _write(tmp_path / "host_vars" / "pi1.yml", host_vars)
    with pytest.raises(ConfigError, match=f"inventory host pi1: {message}".replace("[", r"\[")):
        load_inventory(source)


def test_missing_or_empty_inventory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_inventory(tmp_path / "missing.yml")
    empty = _write(tmp_path / "empty.ini", "[web]\nwww1\n")
    with pytest.raises(ConfigError, match="no hosts in the groups 'chief' or 'workers'"):
        load_inventory(empty)


def test_known_hosts_file_from_ansible_ssh_args(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "hosts.yml",
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "workers": {
                            "hosts": {
                                "pi1": {"ansible_ssh_common_args": "-o UserKnownHostsFile=/lab/known_hosts -o X=y"},
                                "pi2": {"ansible_ssh_extra_args": "-oStrictHostKeyChecking=yes"
                                        " '-oUserKnownHostsFile ~/a ~/b'"},
                                "pi3": {"ansible_ssh_common_args": "-o UserKnownHostsFile=none"},
                                "pi4": None,
                            }
                        }
                    }
                }
            }
        ),
    )  # fmt: skip
    hosts = {host.name: host.known_hosts_files for host in load_inventory(source)}
    assert hosts == {"pi1": ("/lab/known_hosts",), "pi2": ("~/a", "~/b"), "pi3": (), "pi4": ()}


def test_lookups_resolve_and_an_unreadable_aws_variable_costs_only_the_security_group_check(tmp_path: Path) -> None:
    """The lab's inventory reads its AWS double's address with lookup('ansible.builtin.file'): status
    resolves such lookups, and a file that is not there leaves the hosts readable (doctor says why)."""
    from edgefed.ops.doctor_aws import check_security_group

    _write(tmp_path / "endpoint", "http://127.0.0.1:5000\n")
    inventory = {"all": {
        "vars": {"edgefed_aws_enabled": True, "edgefed_aws_region": "eu-west-1",
                 "edgefed_source_cidrs": ["192.0.2.0/24"],
                 "edgefed_aws_endpoint_url": "{{ lookup('ansible.builtin.file', '%s') }}" % (tmp_path / "endpoint"),
                 "edgefed_aws_instance_id": "{{ lookup('ansible.builtin.file', '%s') }}" % (tmp_path / "absent")},
        "children": {"chief": {"hosts": {"chief": {"ansible_host": "192.0.2.10"}}},
                     "workers": {"hosts": {"pi1": {"ansible_host": "192.0.2.11"}}}}}}
    source = _write(tmp_path / "hosts.yml", yaml.safe_dump(inventory))
    hosts = {host.name: host for host in load_inventory(source)}
    assert set(hosts) == {"chief", "pi1"} and hosts["pi1"].aws is None
    aws = hosts["chief"].aws
    assert aws is not None and aws.unresolved is not None and "absent" in aws.unresolved
    check = check_security_group(aws)
    assert check.ok is False and "cannot be read" in check.detail and "edgefed_aws_" in check.fix

    _write(tmp_path / "absent", "i-0123456789abcdef0\n")
    resolved = {host.name: host for host in load_inventory(source)}["chief"].aws
    assert resolved is not None and resolved.unresolved is None
    assert resolved.instance_id == "i-0123456789abcdef0" and resolved.endpoint_url == "http://127.0.0.1:5000"
