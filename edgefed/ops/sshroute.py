"""How to reach a host over SSH as OpenSSH would: ssh_config (HostName, IdentityFile, ProxyJump,
ProxyCommand) applied to what the inventory says, the inventory's own ssh arguments winning.

Pis behind NAT are reached through a jump host; `ProxyJump user@bastion:2222` (in ~/.ssh/config or
in ansible_ssh_common_args as `-J`/`-o ProxyJump=`) is honoured with a direct-tcpip channel through
the jump host's SSH connection, whose host key is checked like any other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko

from edgefed.config import ConfigError
from edgefed.ops.inventory import InventoryHost

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
_JUMP = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s]+)(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class Route:
    hostname: str
    port: int
    user: str
    key_file: str | None
    proxy_jump: str | None  # the first hop; further hops come from the jump host's own route
    proxy_command: str | None


def load_ssh_config(path: Path | None) -> paramiko.SSHConfig | None:
    """The ssh_config file: `path`, else ~/.ssh/config when it exists."""
    file = Path(os.path.expanduser(str(path or DEFAULT_SSH_CONFIG)))
    if not file.exists():
        if path is not None:
            raise ConfigError(f"--ssh-config {path} does not exist")
        return None
    try:
        return paramiko.SSHConfig.from_path(str(file))
    except (OSError, paramiko.SSHException) as exc:
        raise ConfigError(f"cannot read ssh config {file}: {exc}") from None


def route_for(host: InventoryHost, config: paramiko.SSHConfig | None) -> Route:
    entry = config.lookup(host.address) if config is not None else {}
    jump = host.proxy_jump or entry.get("proxyjump")
    identity = entry.get("identityfile")
    return Route(
        hostname=entry.get("hostname", host.address),
        port=host.port,
        user=host.user,
        key_file=host.key_file or (identity[0] if identity else None),
        proxy_jump=None if jump in (None, "none") else jump.split(",")[0].strip(),
        proxy_command=None if jump else _none(entry.get("proxycommand")),
    )


def jump_host(spec: str, via: InventoryHost) -> InventoryHost:
    """The InventoryHost of a ProxyJump hop `[user@]host[:port]` (the login key is the target's)."""
    match = _JUMP.match(spec)
    if match is None:
        raise ConfigError(f"ProxyJump {spec!r}: expected [user@]host[:port]")
    port = int(match["port"] or 22)
    if not 0 < port < 65536:
        raise ConfigError(f"ProxyJump {spec!r}: port outside 1-65535")
    from dataclasses import replace

    return replace(
        via, name=f"jump {spec}", address=match["host"].strip("[]"), port=port,
        user=match["user"] or via.user, proxy_jump=None,
    )


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value
