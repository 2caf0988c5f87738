"""The seed hook's parameters (coMind/BSMD `_FederatedHook`) mapped onto an edgefed NodeConfig.

    seed parameter    edgefed configuration
    is_chief          node.role = "chief" | "worker"
    name              node.name (also the CN of the node's certificate in the PKI)
    private_ip        federation.private_ip, private_port ("HOST:PORT"; port 3389 when omitted)
    public_ip         federation.public_ip, public_port  ("HOST:PORT"; port 7777 when omitted)
    private_key       the node's keys now live in the PKI directory (TLS key and ed25519 ledger key):
                      pass that directory, or its nodes/NAME/ledger.key file; never the key itself
    list_of_workers   federation.min_workers = len(list_of_workers) on the chief (start when all joined)
    domain            ledger.domain
    ip                ledger.torii with ledger.backend = "iroha"; empty: the embedded ledger
    wait_time         federation.wait_time
    interval_steps    federation.interval_steps

No TensorFlow here, so the mapping is testable (and usable) without it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgefed.config import DEFAULT_PRIVATE_PORT, DEFAULT_PUBLIC_PORT, ConfigError, NodeConfig, config_from_dict

DEFAULT_PKI_DIR = "/etc/edgefed/pki"


def split_host_port(parameter: str, value: str, default_port: int) -> tuple[str, int]:
    """'10.0.0.5:3389', '10.0.0.5', '[fd00::1]:3389' or 'chief.example' -> (host, port)."""
    text = value.strip()
    if not text:
        raise ConfigError(f"{parameter}: an address is required, got {value!r}")
    host, port_text = text, ""
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise ConfigError(f"{parameter}: unbalanced '[' in {value!r}")
        host, rest = text[1:closing], text[closing + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{parameter}: expected ':PORT' after ']' in {value!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ConfigError(f"{parameter}: {value!r} is neither HOST:PORT nor an IPv6 address") from None
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{parameter}: port must be 1-65535, got {port_text!r} in {value!r}")
    return host, int(port_text)


def pki_dir_from_private_key(private_key: str | Path | None, name: str, default: str) -> str:
    """The PKI directory the seed's private_key parameter designates (see the module docstring)."""
    if private_key is None or str(private_key) == "":
        return default
    path = Path(private_key).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_file():
        if path.name == "ledger.key" and path.parent.name == name and path.parent.parent.name == "nodes":
            return str(path.parent.parent.parent)
        raise ConfigError(
            f"private_key: {path} is not PKI_DIR/nodes/{name}/ledger.key; pass the PKI directory instead"
        )
    raise ConfigError(
        "private_key: expected the PKI directory (or its nodes/NAME/ledger.key) that `edgefed pki issue` "
        "wrote; inline keys are not accepted, and no such file or directory exists"
    )


def config_from_seed_params(
    is_chief: bool,
    name: str,
    private_ip: str,
    public_ip: str,
    private_key: str | Path | None,
    list_of_workers: Sequence[str],
    domain: str,
    ip: str | None,
    wait_time: float = 30,
    interval_steps: int = 100,
    *,
    pki_dir: str = DEFAULT_PKI_DIR,
    state_dir: str | None = None,
    rounds: int | None = None,
    server_name: str | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> NodeConfig:
    """A validated NodeConfig for the seed's hook arguments; `extra` adds or overrides configuration keys
    ({section: {key: value}}, as in the TOML file)."""
    if isinstance(list_of_workers, str):
        raise ConfigError("list_of_workers: expected a list of node names, got a single string")
    private_host, private_port = split_host_port("private_ip", private_ip, DEFAULT_PRIVATE_PORT)
    public_host, public_port = split_host_port("public_ip", public_ip, DEFAULT_PUBLIC_PORT)
    node: dict[str, Any] = {
        "name": name,
        "role": "chief" if is_chief else "worker",
        "pki_dir": pki_dir_from_private_key(private_key, name, pki_dir),
    }
    if state_dir is not None:
        node["state_dir"] = state_dir
    federation: dict[str, Any] = {
        "private_ip": private_host, "private_port": private_port,
        "public_ip": public_host, "public_port": public_port,
        "wait_time": wait_time, "interval_steps": interval_steps,
    }
    if is_chief:
        federation["min_workers"] = len(list_of_workers)
    if rounds is not None:
        federation["rounds"] = rounds
    if server_name:
        federation["server_name"] = server_name
    ledger: dict[str, Any] = {"domain": domain}
    if ip:
        ledger.update(backend="iroha", torii=ip)
    raw: dict[str, dict[str, Any]] = {"node": node, "federation": federation, "ledger": ledger}
    for section, values in (extra or {}).items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)
