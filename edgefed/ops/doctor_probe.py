"""What `edgefed doctor` collects on a node: one POSIX sh script (run locally or over SSH), parsed here.

It prints, framed like the status probe (edgefed.ops.probe): the node's clock and its time-sync state,
the node configuration, certificate and CA, whether the state directory takes a new file, the free
space under it, the ledger's status file and, on the chief, the nat PREROUTING and filter INPUT
chains and the listening TCP ports (/proc/net/tcp, present on every Linux). Nothing of edgefed needs
to be installed for it to run.
"""

from __future__ import annotations

import secrets
import shlex
import tomllib
from typing import Any

from edgefed.config import ConfigError, NodeConfig, config_from_dict
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import MISSING, ProbeOutput, Section, root_command, script_prelude

# sh -c WRITE_PROBE DIR: create and remove a file in DIR ($0)
WRITE_PROBE = 'f="$0/.edgefed-doctor.$$"; (: > "$f") 2>/dev/null && rm -f "$f"'
ADJTIMEX = (
    "import ctypes; buf = ctypes.create_string_buffer(512); "
    "state = ctypes.CDLL(None, use_errno=True).adjtimex(buf); "
    "print('adjtimex: ' + ('no' if state == 5 else 'yes' if state >= 0 else 'unknown'))"
)


def build_doctor_script(host: InventoryHost, nonce: str | None = None) -> tuple[str, str]:
    """Return (nonce, script); the script always exits 0 once it has started."""
    nonce = nonce or secrets.token_hex(8)
    lines = [
        *script_prelude(nonce),
        f"STATE_DIR={shlex.quote(host.state_dir)}",
        f"PKI_DIR={shlex.quote(host.pki_dir)}",
        f"CERT={shlex.quote(host.cert_path)}",
        f"CONFIG={shlex.quote(host.config_file)}",
        "begin clock; date +%s; end clock $?",
        # timedatectl where systemd runs; else the kernel's own flag (adjtimex: 5 is TIME_ERROR, unsynced).
        "begin timesync; if timedatectl show --property=NTPSynchronized --value 2>/dev/null; then :;"
        f" elif command -v python3 >/dev/null 2>&1; then python3 -c {shlex.quote(ADJTIMEX)}; else"
        " echo 'neither timedatectl nor python3 (adjtimex) answers'; (exit 127); fi; end timesync $?",
        'begin config; show_file "$CONFIG"; end config $?',
        'begin cert; show_file "$CERT"; end cert $?',
        'begin ca; show_file "$PKI_DIR/ca.crt"; end ca $?',
        # Writable: really create (and remove) a file, as the service user where it exists and this login
        # may act as it (root, or sudo -n); else as the login user.
        f"SVC={shlex.quote(host.service_user)}",
        f"WRITE={shlex.quote(WRITE_PROBE)}",
        f'begin state_write; if [ ! -d "$STATE_DIR" ]; then (exit {MISSING}); else who=$(id -un); as="";'
        ' if [ "$who" != "$SVC" ] && id "$SVC" >/dev/null 2>&1; then'
        ' if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null 2>&1; then who=$SVC; as="runuser -u $SVC --";'
        ' elif sudo -n -u "$SVC" true 2>/dev/null; then who=$SVC; as="sudo -n -u $SVC"; fi; fi;'
        ' if $as sh -c "$WRITE" "$STATE_DIR"; then :; else echo "not writable by $who"; (exit 1); fi; fi;'
        ' end state_write $?',
        'begin disk; d="$STATE_DIR"; while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done;'
        ' df -Pk "$d" 2>&1; end disk $?',
        'begin status.ledger; show_file "$STATE_DIR/status/ledger.json"; end status.ledger $?',
    ]
    if host.role == "chief":
        lines.append(root_command("nat", "iptables -w 5 -t nat -S PREROUTING"))
        lines.append(root_command("input", "iptables -w 5 -S INPUT"))
        lines.append("begin listen; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; end listen 0")
    lines.append("exit 0")
    return nonce, "\n".join(lines) + "\n"


def node_config(output: ProbeOutput) -> tuple[NodeConfig | None, str | None]:
    """(config, None), or (None, why not) when the configuration is missing or invalid."""
    section = output.get("config")
    if section is None or section.status == MISSING:
        return None, "missing"
    if section.status != 0:
        return None, section.text.strip() or "not readable"
    try:
        raw: dict[str, Any] = tomllib.loads(section.text)
        return config_from_dict(raw), None
    except tomllib.TOMLDecodeError as exc:
        return None, f"not valid TOML: {exc}"
    except ConfigError as exc:
        return None, str(exc)


def chief_address(host: InventoryHost, output: ProbeOutput) -> tuple[str, int] | None:
    """Where the node's configuration says the chief answers (federation.public_ip:public_port); None on
    the chief itself: the packets it sends skip its own PREROUTING DNAT (the listener check covers it)."""
    config, _ = node_config(output)
    if config is None or host.role == "chief":
        return None
    return config.federation.public_ip, config.federation.public_port


def listening_ports(proc_net_tcp: str) -> set[int]:
    """TCP ports in LISTEN state (st 0A) in /proc/net/tcp and tcp6 text."""
    ports: set[int] = set()
    for line in proc_net_tcp.splitlines():
        words = line.split()
        if len(words) > 3 and words[3] == "0A" and ":" in words[1]:
            try:
                ports.add(int(words[1].rsplit(":", 1)[1], 16))
            except ValueError:
                continue
    return ports


def free_kib(df_output: str) -> int | None:
    """Available KiB from `df -Pk` (POSIX format: the second line, fourth column)."""
    lines = df_output.strip().splitlines()
    if len(lines) < 2:
        return None
    words = lines[-1].split()
    return int(words[3]) if len(words) > 3 and words[3].isdigit() else None


def with_section(output: ProbeOutput, name: str, section: Section) -> ProbeOutput:
    return ProbeOutput({**output.sections, name: section})
