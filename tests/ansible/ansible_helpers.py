"""Helpers for the Ansible tests: run the repository's real playbooks with the project's ansible.

Everything here runs on the controller only (localhost, loopback): the PKI play against a temporary
directory, the security-group role against a moto server (the AWS test double), the validation play
with broken inventories, and the roles' templates rendered by Ansible itself. Converging real nodes
is the molecule lab's job (molecule/default, marker `lab`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgefed.transport import free_port as transport_free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def free_port() -> int:
    return transport_free_port("127.0.0.1")


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        return {
            host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unr), "failed": int(failed)}
            for host, ok, changed, unr, failed in _RECAP.findall(self.output)
        }

    def changed(self, host: str = "localhost") -> int:
        return self.recap()[host]["changed"]


def ansible_env(tmp_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update(extra or {})
    return env


def run_playbook(
    tmp_path: Path,
    inventory: Path,
    *playbooks: str,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> PlaybookRun:
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), *args, *(str(REPO / p) for p in playbooks)]
    result = subprocess.run(
        command, cwd=REPO, env=ansible_env(tmp_path, env), capture_output=True, text=True, timeout=timeout
    )
    return PlaybookRun(result.returncode, result.stdout + result.stderr)


def write_inventory(path: Path, settings: Mapping[str, Any], chief: str = "chief",
                    workers: tuple[str, ...] = ("pi-1", "pi-2")) -> Path:
    """An inventory like inventory/example: one chief, some workers, appliance settings in `all`."""
    inventory = {
        "all": {
            "vars": dict(settings),
            "children": {
                "chief": {"hosts": {chief: None}},
                "workers": {"hosts": {name: None for name in workers}},
            },
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def base_settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "edgefed_public_address": "203.0.113.10",
        "edgefed_private_address": "10.0.0.5",
        "edgefed_source_cidrs": ["198.51.100.0/24"],
        "edgefed_pki_dir": str(tmp_path / "pki"),
    }


def pki_node_settings(tmp_path: Path) -> dict[str, Any]:
    """base_settings plus what tests/ansible/playbooks/pki_nodes.yml needs: where the stand-in nodes live
    (tmp_path/nodes/NAME) and who owns their files (this user)."""
    import grp
    import pwd

    return {**base_settings(tmp_path), "test_nodes_dir": str(tmp_path / "nodes"),
            "test_user": pwd.getpwuid(os.getuid()).pw_name,
            "test_group": grp.getgrgid(os.getgid()).gr_name}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
