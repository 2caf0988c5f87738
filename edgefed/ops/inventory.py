"""The hosts `edgefed status` visits, read from the same Ansible inventory the playbooks use.

Ansible's own InventoryManager does the reading, so every format and rule the playbooks see applies
here too: YAML or INI files or a directory of them, group_vars/ and host_vars/ beside the inventory,
`--limit` patterns, and Jinja expressions in variables. Importing and parsing cost about 0.3 s,
paid only when the status command runs (nothing outside edgefed.ops imports this package).

Per-host variables, first one set wins (the later names are the Ansible roles' own):
- state directory: edgefed_state_dir, edgefed_install_state_dir; default /var/lib/edgefed
- PKI directory on the node: edgefed_node_pki_dir, edgefed_install_pki_dir, pki_node_dest;
  default /etc/edgefed/pki. `edgefed_pki_dir` is NOT read: in the playbooks it is the controller's
  PKI directory (where the CA lives), not the node's.
- node (certificate) name: edgefed_node_name, pki_node_name; default the inventory hostname
- forwarding rule: edgefed_public_port (7777) -> edgefed_private_port (3389)
- known_hosts: `-o UserKnownHostsFile=...` in ansible_ssh_common_args or ansible_ssh_extra_args
"""

from __future__ import annotations

import getpass
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.vars.manager import VariableManager

from edgefed.config import DEFAULT_PRIVATE_PORT, DEFAULT_PUBLIC_PORT, ConfigError

Role = Literal["chief", "worker"]

ROLE_GROUPS: dict[str, Role] = {"chief": "chief", "workers": "worker"}
DEFAULT_STATE_DIR = "/var/lib/edgefed"
DEFAULT_PKI_DIR = "/etc/edgefed/pki"
DEFAULT_SSH_PORT = 22
DEFAULT_CONFIG_FILE = "/etc/edgefed/edgefed.toml"


@dataclass(frozen=True)
class AwsTarget:
    """The chief's AWS side (edgefed_aws_*, edgefed_source_cidrs, aws_security_group_name)."""

    region: str
    instance_id: str
    group_name: str
    port: int  # edgefed_public_port, the port the group opens
    source_cidrs: tuple[str, ...]
    endpoint_url: str | None = None  # a moto server in tests and in the lab; None is AWS itself
    profile: str | None = None
    unresolved: str | None = None  # why the variables could not be read (then only doctor's check says so)


@dataclass(frozen=True)
class InventoryHost:
    """One edgefed node as the inventory describes it: where to reach it and where its files are."""

    name: str  # the inventory hostname
    address: str  # ansible_host, else the inventory hostname
    port: int
    user: str
    key_file: str | None  # ansible_ssh_private_key_file; None lets paramiko try the agent and ~/.ssh
    password: str | None
    role: Role
    node_name: str  # edgefed_node_name: the certificate's name
    state_dir: str
    pki_dir: str
    public_port: int  # the chief's forwarding rule: public_port -> private_port
    private_port: int
    # UserKnownHostsFile from ansible_ssh_common_args / ansible_ssh_extra_args, as ssh would use it.
    known_hosts_files: tuple[str, ...] = ()
    config_file: str = DEFAULT_CONFIG_FILE  # the node's edgefed.toml (read by `edgefed doctor`)
    # ProxyJump from the inventory's ssh args (-J / -o ProxyJump=...): [user@]host[:port]
    proxy_jump: str | None = None
    aws: AwsTarget | None = None  # on the chief when edgefed_aws_enabled: what `doctor -i` checks in EC2
    service_user: str = "edgefed"  # edgefed_service_user: who the units run as (doctor's write check)

    @property
    def cert_path(self) -> str:
        return f"{self.pki_dir}/nodes/{self.node_name}/tls.crt"


def default_inventory() -> str:
    """What ansible-playbook would read without -i: ANSIBLE_INVENTORY, else ansible.cfg's inventory
    (ANSIBLE_CONFIG, ./ansible.cfg, ~/.ansible.cfg, /etc/ansible/ansible.cfg), else /etc/ansible/hosts."""
    from ansible import constants

    sources = constants.config.get_config_value("DEFAULT_HOST_LIST") or []
    existing = [str(source) for source in sources if Path(source).exists()]
    if not existing:
        named = ", ".join(map(str, sources)) or "nothing"
        raise ConfigError(
            "no inventory: give -i INVENTORY, set ANSIBLE_INVENTORY, or name it in ansible.cfg"
            f" (the inventory in effect, {named}, does not exist)"
        )
    return existing[0]


def _vault_secrets(loader: DataLoader, password_files: Sequence[str]) -> None:
    """Give the loader the vault passwords: --vault-password-file, else ANSIBLE_VAULT_PASSWORD_FILE or
    ansible.cfg's vault_password_file, as ansible-playbook does (files only: nothing prompts)."""
    from ansible import constants
    from ansible.cli import CLI

    files = list(password_files)
    if not files:
        configured = constants.config.get_config_value("DEFAULT_VAULT_PASSWORD_FILE")
        files = [str(configured)] if configured else []
    for file in files:
        if not Path(file).exists():
            raise ConfigError(f"vault password file {file} does not exist")
    secrets = CLI.setup_vault_secrets(
        loader, vault_ids=[], vault_password_files=files, ask_vault_pass=False, auto_prompt=False,
        initialize_context=False,
    )
    loader.set_vault_secrets(secrets)


def load_inventory(
    source: str | Path | None, limit: str | None = None, vault_password_files: Sequence[str] = ()
) -> list[InventoryHost]:
    """Return the chief and worker hosts of an inventory (file or directory), optionally limited.

    Raises ConfigError when the source is missing, holds no edgefed hosts, or a variable is invalid.
    """
    source = default_inventory() if source is None else source
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"inventory {source} does not exist")
    _plugins_ready()
    loader = DataLoader()
    try:
        _vault_secrets(loader, vault_password_files)
        inventory = InventoryManager(loader=loader, sources=[str(path)])
        if limit:
            inventory.subset(limit)
        variables = VariableManager(loader=loader, inventory=inventory)
        hosts = []
        for host in inventory.get_hosts("all"):
            host_vars = variables.get_vars(host=host)
            templar = Templar(loader=loader, variables=host_vars)
            groups = [group.name for group in host.get_groups()]
            resolved = _Vars(host.name, host_vars, templar)
            role = _role(host.name, groups, resolved)
            if role is not None:
                hosts.append(_host(host.name, role, resolved))
    except AnsibleError as exc:
        hint = ""
        if "vault" in str(exc.message).lower():
            hint = " (give --vault-password-file FILE, or set ANSIBLE_VAULT_PASSWORD_FILE)"
        raise ConfigError(f"inventory {source}: {exc.message}{hint}") from exc
    if not hosts:
        where = f" matching --limit {limit!r}" if limit else ""
        raise ConfigError(
            f"inventory {source} has no hosts{where} in the groups 'chief' or 'workers'"
            " (nor with edgefed_role); if it could not be parsed, ansible's warnings above say why"
        )
    return sorted(hosts, key=lambda h: (h.role != "chief", h.name))


_PLUGINS: list[bool] = []


def _plugins_ready() -> None:
    """Ansible's plugin loader with its collection finder, as ansible-playbook sets it up: without it an
    inventory's `lookup('ansible.builtin.file', ...)` (the lab's AWS double address) cannot be resolved."""
    if not _PLUGINS:
        from ansible.plugins.loader import init_plugin_loader

        init_plugin_loader()
        _PLUGINS.append(True)


class _Vars:
    """A host's variables with templates expanded on access, and errors that name the variable."""

    def __init__(self, host: str, raw: Mapping[str, Any], templar: Any) -> None:
        self.host = host
        self._raw = raw
        self._templar = templar

    def get(self, *names: str) -> Any:
        for name in names:
            value = self._raw.get(name)
            if value is not None:
                return self._templar.template(value)
        return None

    def text(self, *names: str, default: str | None = None) -> str | None:
        value = self.get(*names)
        if value is None:
            return default
        if isinstance(value, (dict, list)):
            raise ConfigError(f"inventory host {self.host}: {names[0]} must be a string, not {value!r}")
        return str(value)

    def port(self, name: str, default: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        try:
            port = int(str(value))
        except ValueError:
            raise ConfigError(f"inventory host {self.host}: {name}={value!r} is not a port number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"inventory host {self.host}: {name}={port} is outside 1-65535")
        return port


def _role(host: str, groups: list[str], host_vars: _Vars) -> Role | None:
    explicit = host_vars.text("edgefed_role")
    if explicit is not None:
        if explicit not in ("chief", "worker"):
            raise ConfigError(f"inventory host {host}: edgefed_role={explicit!r} must be 'chief' or 'worker'")
        return "chief" if explicit == "chief" else "worker"
    roles = {ROLE_GROUPS[group] for group in groups if group in ROLE_GROUPS}
    if len(roles) > 1:
        raise ConfigError(f"inventory host {host} is in both 'chief' and 'workers'; set edgefed_role to pick one")
    return roles.pop() if roles else None


def _host(name: str, role: Role, host_vars: _Vars) -> InventoryHost:
    ssh_args = [host_vars.text(var) or "" for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args")]
    return InventoryHost(
        name=name,
        address=host_vars.text("ansible_host", "ansible_ssh_host", default=name) or name,
        port=host_vars.port("ansible_port", DEFAULT_SSH_PORT)
        if host_vars.get("ansible_port") is not None
        else host_vars.port("ansible_ssh_port", DEFAULT_SSH_PORT),
        user=host_vars.text("ansible_user", "ansible_ssh_user", default=None) or getpass.getuser(),
        key_file=host_vars.text("ansible_ssh_private_key_file", "ansible_private_key_file"),
        password=host_vars.text("ansible_password", "ansible_ssh_pass"),
        role=role,
        node_name=host_vars.text("edgefed_node_name", "pki_node_name") or name,
        state_dir=host_vars.text("edgefed_state_dir", "edgefed_install_state_dir") or DEFAULT_STATE_DIR,
        pki_dir=host_vars.text("edgefed_node_pki_dir", "edgefed_install_pki_dir", "pki_node_dest") or DEFAULT_PKI_DIR,
        public_port=host_vars.port("edgefed_public_port", DEFAULT_PUBLIC_PORT),
        private_port=host_vars.port("edgefed_private_port", DEFAULT_PRIVATE_PORT),
        known_hosts_files=_ssh_option(name, ssh_args, "userknownhostsfile", split=True),
        config_file=host_vars.text("edgefed_config_file", "edgefed_install_config_file") or DEFAULT_CONFIG_FILE,
        proxy_jump=next(iter(_ssh_option(name, ssh_args, "proxyjump")), None),
        aws=_aws(host_vars) if role == "chief" else None,
        service_user=host_vars.text("edgefed_service_user") or "edgefed",
    )


def _aws(host_vars: _Vars) -> AwsTarget | None:
    enabled = host_vars.get("edgefed_aws_enabled")
    if not enabled or str(enabled).lower() in ("false", "no", "0"):
        return None
    try:
        return _aws_target(host_vars)
    except AnsibleError as exc:  # e.g. a lookup of a file that is not there: status goes on without it
        return AwsTarget("", "", "", DEFAULT_PUBLIC_PORT, (), unresolved=str(exc.message))


def _aws_target(host_vars: _Vars) -> AwsTarget:
    cidrs = host_vars.get("edgefed_source_cidrs") or []
    if isinstance(cidrs, str) or not isinstance(cidrs, list):
        raise ConfigError(f"inventory host {host_vars.host}: edgefed_source_cidrs must be a list, not {cidrs!r}")
    return AwsTarget(
        region=host_vars.text("edgefed_aws_region") or "",
        instance_id=host_vars.text("edgefed_aws_instance_id") or "",
        group_name=host_vars.text("aws_security_group_name") or "edgefed-chief",
        port=host_vars.port("edgefed_public_port", DEFAULT_PUBLIC_PORT),
        source_cidrs=tuple(str(cidr) for cidr in cidrs),
        endpoint_url=host_vars.text("edgefed_aws_endpoint_url") or None,
        profile=host_vars.text("aws_security_group_profile") or None,
    )


def _ssh_option(host: str, ssh_args: list[str], wanted: str, split: bool = False) -> tuple[str, ...]:
    """An option of the ssh arguments Ansible passes (`-o Key=Value`, `-oKey=Value`; -J for ProxyJump)."""
    values: tuple[str, ...] = ()
    for args in ssh_args:
        try:
            words = shlex.split(args)
        except ValueError as exc:
            raise ConfigError(f"inventory host {host}: cannot parse ssh arguments {args!r}: {exc}") from None
        for index, word in enumerate(words):
            following = words[index + 1] if index + 1 < len(words) else None
            if word == "-J" and wanted == "proxyjump" and following:
                values = (following,)
                continue
            option = following if word == "-o" else (word[2:] if word.startswith("-o") and len(word) > 2 else None)
            if option is None:
                continue
            key, _, value = option.replace("=", " ", 1).partition(" ")
            if key.lower() == wanted and value.strip():
                parts = value.split() if split else [value.strip()]
                values = tuple(path for path in parts if path.lower() != "none")
    return values
