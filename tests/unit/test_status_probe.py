"""The status probe script, run by a real /bin/sh here, and the parsing of what it prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import MISSING, build_script, parse_output, parse_unit_properties, remote_command


def _host(tmp_path: Path, role: str = "worker", state_dir: Path | None = None) -> InventoryHost:
    return InventoryHost(
        name="pi1",
        address="127.0.0.1",
        port=22,
        user="root",
        key_file=None,
        password=None,
        role="chief" if role == "chief" else "worker",
        node_name="pi1",
        state_dir=str(state_dir or tmp_path / "state dir's"),  # a space and a quote survive quoting
        pki_dir=str(tmp_path / "pki"),
        public_port=7777,
        private_port=3389,
    )


def _run_like_sshd(command: str) -> str:
    """sshd hands the command line to the login shell: `sh -c COMMAND`."""
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def test_probe_reads_status_files_and_certificate(tmp_path: Path) -> None:
    host = _host(tmp_path)
    status_dir = Path(host.state_dir) / "status"
    status_dir.mkdir(parents=True)
    worker = {"component": "worker", "round": 2, "state": "training"}
    (status_dir / "worker.json").write_text(json.dumps(worker, indent=2) + "\n")
    cert = Path(host.cert_path)
    cert.parent.mkdir(parents=True)
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")

    nonce, script = build_script(host)
    output = parse_output(_run_like_sshd(remote_command(script)), nonce)

    clock = output.get("clock")
    assert clock is not None and clock.status == 0 and clock.text.strip().isdigit()
    assert output.sections["state_dir"].status == 0
    assert json.loads(output.sections["status.worker"].text) == worker
    assert output.sections["status.chief"].status == MISSING
    assert output.sections["status.ledger"].status == MISSING
    assert output.sections["cert"].text == cert.read_text().rstrip("\n")
    for component in ("chief", "worker", "ledger"):
        assert f"unit.{component}" in output.sections  # whatever systemctl says here, it is framed
    assert "nat" not in output.sections  # only the chief is asked for its nat table


def test_missing_state_dir_and_chief_nat_section(tmp_path: Path) -> None:
    host = _host(tmp_path, role="chief", state_dir=tmp_path / "absent")
    nonce, script = build_script(host)
    output = parse_output(_run_like_sshd(remote_command(script)), nonce)
    assert output.sections["state_dir"].status == MISSING
    assert output.sections["cert"].status == MISSING
    assert "nat" in output.sections


def test_file_content_cannot_forge_a_frame(tmp_path: Path) -> None:
    host = _host(tmp_path)
    status_dir = Path(host.state_dir) / "status"
    status_dir.mkdir(parents=True)
    forged = "--edgefed-probe-0000000000000000-- end status.worker 0\n--edgefed-probe-0000000000000000-- begin x\n"
    (status_dir / "worker.json").write_text(forged)
    nonce, script = build_script(host)
    assert nonce != "0000000000000000"
    output = parse_output(_run_like_sshd(remote_command(script)), nonce)
    assert output.sections["status.worker"].text == forged.rstrip("\n")
    assert "x" not in output.sections


def test_a_section_cut_short_is_left_out() -> None:
    text = "--edgefed-probe-ab-- begin clock\n1700000000\n\n--edgefed-probe-ab-- end clock 0\n"
    text += '--edgefed-probe-ab-- begin status.chief\n{"round": 1'  # connection dropped here
    output = parse_output(text, "ab")
    assert output.sections["clock"].text == "1700000000"
    assert "status.chief" not in output.sections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=4\nResult=exit-code\n",
            {
                "LoadState": "loaded",
                "ActiveState": "failed",
                "SubState": "failed",
                "NRestarts": "4",
                "Result": "exit-code",
            },
        ),
        ("Id=x.service\nLoadState=not-found\nnoise without equals\n", {"LoadState": "not-found"}),
    ],
)
def test_unit_properties(text: str, expected: dict[str, str]) -> None:
    assert parse_unit_properties(text) == expected


def test_files_closed_to_the_login_user_are_not_readable_rather_than_missing(tmp_path: Path) -> None:
    """As the roles lay them out: state and keys belong to the service user, the operator logs in as
    another user without sudo (here `nobody`, for real, through setpriv)."""
    root = tmp_path / "closed"
    host = _host(root)
    status_dir = Path(host.state_dir) / "status"
    status_dir.mkdir(parents=True)
    (status_dir / "worker.json").write_text("{}")
    Path(host.cert_path).parent.mkdir(parents=True)
    Path(host.cert_path).write_text("cert")
    tmp_path.chmod(0o755)
    root.chmod(0o755)
    Path(host.state_dir).chmod(0o700)  # closed directory
    Path(host.pki_dir).chmod(0o700)
    nonce, script = build_script(host)
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", script],
        capture_output=True, text=True, timeout=30, check=True,
    )
    output = parse_output(result.stdout, nonce)
    worker = output.sections["status.worker"]
    assert worker.status == 2 and "is not readable by nobody" in worker.text
    cert = output.sections["cert"]
    assert cert.status == 2 and "is not readable by nobody" in cert.text
