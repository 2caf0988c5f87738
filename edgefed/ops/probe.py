"""The one remote command `edgefed status` runs on a node, and the parsing of what it prints.

The command is plain POSIX sh and needs nothing of edgefed on the node: it prints the node's clock,
its status files, `systemctl show` for the three units, the node certificate (parsed here, with
cryptography) and, on the chief, the nat PREROUTING chain. Each piece is framed by marker lines that
carry a random nonce, so no file content can be mistaken for a frame.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass, field
from typing import Literal

from edgefed.ops.inventory import InventoryHost

FailureKind = Literal[
    "unreachable",
    "timeout",
    "host-key-unknown",
    "host-key-changed",
    "auth",
    "ssh",
    "command",
    "not-installed",
]
COMPONENTS = ("chief", "worker", "ledger")
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "NRestarts", "Result")
MISSING = 3  # exit status the script gives a section whose file is absent


def unit_name(component: str) -> str:
    return f"edgefed-{component}.service"


@dataclass(frozen=True)
class Section:
    text: str
    status: int  # the exit status of the section's command


@dataclass(frozen=True)
class ProbeOutput:
    sections: dict[str, Section] = field(default_factory=dict)

    def get(self, name: str) -> Section | None:
        return self.sections.get(name)


@dataclass(frozen=True)
class Failure:
    """Why a host has no probe output (or, for not-installed, why it has nothing to report)."""

    kind: FailureKind
    message: str


@dataclass(frozen=True)
class Collected:
    """What one host gave: the probe's sections, or the reason there are none."""

    host: InventoryHost
    output: ProbeOutput | None
    failure: Failure | None


def build_script(host: InventoryHost, nonce: str | None = None) -> tuple[str, str]:
    """Return (nonce, script) for one host; the script always exits 0 once it has started."""
    nonce = nonce or secrets.token_hex(8)
    lines = [
        *script_prelude(nonce),
        f"STATE_DIR={shlex.quote(host.state_dir)}",
        f"CERT={shlex.quote(host.cert_path)}",
        "begin clock; date +%s; end clock $?",
        # the userland's machine, as the install role decides it: a 32-bit userland on a 64-bit kernel
        # (32-bit Raspberry Pi OS on a Pi 4) is armv7l, not aarch64
        'begin arch; m=$(uname -m); [ "$(getconf LONG_BIT 2>/dev/null)" = 32 ] && [ "$m" = aarch64 ] && m=armv7l;'
        ' echo "$m"; end arch 0',
        f'begin state_dir; if [ -d "$STATE_DIR" ]; then :; else (exit {MISSING}); fi; end state_dir $?',
    ]
    for component in COMPONENTS:
        section = f"status.{component}"
        lines.append(f'begin {section}; show_file "$STATE_DIR/status/{component}.json"; end {section} $?')
    properties = ",".join(UNIT_PROPERTIES)
    for component in COMPONENTS:
        lines.append(
            f"begin unit.{component}; if command -v systemctl >/dev/null 2>&1; then"
            f" systemctl show --property={properties} {unit_name(component)} 2>&1;"
            f" else echo 'systemctl: not found'; (exit 127); fi; end unit.{component} $?"
        )
    lines.append('begin cert; show_file "$CERT"; end cert $?')
    if host.role == "chief":
        lines.append(root_command("nat", "iptables -w 5 -t nat -S PREROUTING"))
    lines.append("exit 0")
    return nonce, "\n".join(lines) + "\n"


def root_command(section: str, command: str) -> str:
    """A section running COMMAND as root: directly when root, else through `sudo -n` (never prompts)."""
    return (
        f'begin {section}; if [ "$(id -u)" = 0 ]; then {command} 2>&1;'
        f" else sudo -n {command} 2>&1; fi; end {section} $?"
    )


def script_prelude(nonce: str) -> list[str]:
    """The shell functions every probe script uses: begin/end frames and show_file."""
    marker = f"--edgefed-probe-{nonce}--"
    return [
        'PATH="$PATH:/usr/sbin:/sbin"',
        f"M={shlex.quote(marker)}",
        # A section: its output, then a frame line with the command's exit status.
        'begin() { printf "%s begin %s\\n" "$M" "$1"; }',
        'end() { printf "\\n%s end %s %s\\n" "$M" "$1" "$2"; }',
        # A file the login user cannot read (the roles keep state and keys to the service user) is
        # read through `sudo -n` when that is allowed; otherwise "not readable", never "missing".
        'show_file() { if [ -r "$1" ]; then cat "$1"; return; fi;'
        ' if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then'
        f' if sudo -n test -e "$1"; then sudo -n cat "$1"; return; fi; return {MISSING}; fi;'
        ' if [ -e "$1" ]; then echo "$1 is not readable by $(id -un)"; return 2; fi;'
        ' d=$(dirname "$1"); while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done;'
        ' if [ -d "$d" ] && [ ! -x "$d" ]; then echo "$1 is not readable by $(id -un): $d is closed to it";'
        f" return 2; fi; return {MISSING}; }}",
    ]


def remote_command(script: str) -> str:
    """The command line for an SSH exec channel: run the script with sh whatever the login shell is."""
    return "sh -c " + shlex.quote(script)


def parse_output(output: str, nonce: str) -> ProbeOutput:
    """Split the script's output into sections; a section without its end frame is left out."""
    marker = f"--edgefed-probe-{nonce}--"
    sections: dict[str, Section] = {}
    current: str | None = None
    body: list[str] = []
    for line in output.splitlines():
        if not line.startswith(marker + " "):
            if current is not None:
                body.append(line)
            continue
        words = line[len(marker) + 1 :].split()
        if len(words) == 2 and words[0] == "begin":
            current, body = words[1], []
        elif len(words) == 3 and words[0] == "end" and words[1] == current:
            text = "\n".join(body)
            # end() printed a newline of its own before the frame: drop it again.
            text = text[:-1] if text.endswith("\n") else text
            sections[current] = Section(text=text, status=_int(words[2], default=-1))
            current = None
    return ProbeOutput(sections)


def parse_unit_properties(text: str) -> dict[str, str]:
    """`systemctl show` prints KEY=VALUE lines."""
    properties: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in UNIT_PROPERTIES:
            properties[key] = value
    return properties


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
