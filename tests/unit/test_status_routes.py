"""How `edgefed status`/`doctor` reach a host: ProxyJump and the config file from the inventory,
ssh_config's HostName/IdentityFile/ProxyJump/ProxyCommand, and the inventory Ansible would pick."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
import yaml

from edgefed.config import ConfigError
from edgefed.ops.doctor_probe import free_kib, listening_ports
from edgefed.ops.inventory import DEFAULT_CONFIG_FILE, load_inventory
from edgefed.ops.sshroute import jump_host, route_for


def _inventory(tmp_path: Path, hosts: dict[str, dict[str, str]]) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"workers": {"hosts": hosts}}}}))
    return path


def test_proxy_jump_and_config_file_come_from_the_inventory(tmp_path: Path) -> None:
    source = _inventory(tmp_path, {
        "pi1": {"ansible_ssh_common_args": "-o ProxyJump=ops@bastion.example:2222 -o UserKnownHostsFile=/k"},
        "pi2": {"ansible_ssh_extra_args": "-J bastion", "edgefed_config_file": "/opt/edgefed.toml"},
        "pi3": {},
    })
    hosts = {host.name: host for host in load_inventory(source)}
    assert hosts["pi1"].proxy_jump == "ops@bastion.example:2222"
    assert hosts["pi1"].known_hosts_files == ("/k",)
    assert hosts["pi2"].proxy_jump == "bastion" and hosts["pi2"].config_file == "/opt/edgefed.toml"
    assert hosts["pi3"].proxy_jump is None and hosts["pi3"].config_file == DEFAULT_CONFIG_FILE


def test_ssh_config_supplies_hostname_identity_and_jump(tmp_path: Path) -> None:
    [pi1, pi2] = load_inventory(_inventory(tmp_path, {
        "pi1": {"ansible_host": "pi1.nat", "ansible_user": "pi"},
        "pi2": {"ansible_host": "pi2.nat", "ansible_ssh_common_args": "-J admin@other:22"},
    }))
    config = paramiko.SSHConfig.from_text(
        "Host pi1.nat\n  HostName 192.168.7.11\n"
        "Host *.nat\n  HostName 10.9.9.9\n  ProxyJump ops@bastion:2222,second\n  IdentityFile ~/.ssh/pi\n"
    )
    route = route_for(pi1, config)
    assert route.hostname == "192.168.7.11"  # the first match wins, as in OpenSSH
    assert (route.user, route.port, route.proxy_jump) == ("pi", 22, "ops@bastion:2222")  # the first hop only
    assert route.key_file == os.path.expanduser("~/.ssh/pi")
    assert route_for(pi2, config).proxy_jump == "admin@other:22"  # the inventory's jump wins
    jump = jump_host("ops@bastion:2222", pi1)
    assert (jump.address, jump.port, jump.user, jump.proxy_jump) == ("bastion", 2222, "ops", None)
    assert jump_host("[fd00::1]", pi1).address == "fd00::1"
    with pytest.raises(ConfigError, match="expected \\[user@\\]host\\[:port\\]"):
        jump_host("ops@@bastion:x", pi1)


def test_proxy_command_when_there_is_no_jump(tmp_path: Path) -> None:
    [pi1] = load_inventory(_inventory(tmp_path, {"pi1": {"ansible_host": "pi1.lan"}}))
    config = paramiko.SSHConfig.from_text("Host pi1.lan\n  ProxyCommand nc -X 5 -x proxy:1080 %h %p\n")
    route = route_for(pi1, config)
    assert route.proxy_command == "nc -X 5 -x proxy:1080 pi1.lan 22" and route.proxy_jump is None


def test_inventory_from_the_environment(tmp_path: Path) -> None:
    source = _inventory(tmp_path, {"pi9": {}})
    script = "from edgefed.ops.inventory import load_inventory; print([h.name for h in load_inventory(None)])"
    env = {**os.environ, "ANSIBLE_INVENTORY": str(source)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60, check=True)
    assert done.stdout.strip() == "['pi9']"


def test_listening_ports_and_free_space_parse_the_real_kernel_files() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        proc = Path("/proc/net/tcp").read_text()
        assert port in listening_ports(proc)
    df = subprocess.run(["df", "-Pk", "/"], capture_output=True, text=True, check=True).stdout
    free = free_kib(df)
    assert free is not None and free > 0
    assert free_kib("df: /nowhere: No such file or directory") is None


def test_ansible_cfg_names_the_inventory_and_the_vault_password_file(tmp_path: Path) -> None:
    """Without -i and without ANSIBLE_INVENTORY: ansible.cfg's inventory and vault_password_file, as
    ansible-playbook reads them (here through ANSIBLE_CONFIG), decrypt a vault-encrypted host_vars file."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    _inventory(inventory, {"pi1": {}})
    secret = inventory / "host_vars" / "pi1.yml"
    secret.parent.mkdir()
    secret.write_text("edgefed_state_dir: /srv/edgefed-secret-state\n")
    password = tmp_path / "vault-pass"
    password.write_text("s3cret\n")
    vault = Path(sys.executable).parent / "ansible-vault"
    subprocess.run([str(vault), "encrypt", "--vault-password-file", str(password), str(secret)],
                   check=True, capture_output=True, timeout=60)
    config = tmp_path / "ansible.cfg"
    config.write_text(f"[defaults]\ninventory = inventory\nvault_password_file = {password}\n")
    script = "from edgefed.ops.inventory import load_inventory; print(load_inventory(None)[0].state_dir)"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**env, "ANSIBLE_CONFIG": str(config)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/srv/edgefed-secret-state"
