"""Bad input ends with one line that says what to do and exit status 2; a network that stays away, 3.

Each case runs the real `edgefed` command in a subprocess (the exit status and stderr are what a user
or systemd sees).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgefed import __version__, pki
from edgefed.config import dump_config
from edgefed.transport import free_port


def edgefed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki")
    pki.init_ca(path)
    return path


def test_binary_file_as_config(tmp_path: Path) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    line = one_line_error(edgefed("chief", "--config", str(binary)))
    expected = "cannot read the configuration (not a text file); give the node's TOML file"
    assert line == f"edgefed: error: {binary}: {expected}"


def test_directory_as_config(tmp_path: Path) -> None:
    line = one_line_error(edgefed("worker", "--config", str(tmp_path)))
    assert line.endswith("cannot read the configuration (Is a directory); give the node's TOML file")


def test_pki_init_on_a_file(tmp_path: Path) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0::/root:/bin/sh\n")
    line = one_line_error(edgefed("pki", "init", "--pki", str(file)))
    assert line == f"edgefed: error: --pki {file}: not a directory; give a directory for the PKI (it is created)"
    assert file.read_text() == "root:x:0:0::/root:/bin/sh\n"


def test_pki_issue_negative_days_and_bad_san_write_nothing(ca: Path) -> None:
    line = one_line_error(edgefed("pki", "issue", "pi7", "--pki", str(ca), "--days", "-5"))
    assert line == "edgefed: error: --days -5: a certificate must be valid for at least 1 day"
    line = one_line_error(edgefed("pki", "issue", "pi7", "--pki", str(ca), "--san", "not an address!"))
    assert "--san 'not an address!' is neither an IP address nor a DNS name" in line
    assert not (ca / "nodes" / "pi7").exists()


def test_pki_issue_accepts_addresses_and_dns_names(ca: Path) -> None:
    result = edgefed("pki", "issue", "pi8", "--pki", str(ca), "--san", "10.0.0.8", "--san", "pi8.lan",
                     "--san", "fd00::8")
    assert result.returncode == 0, result.stderr
    names = pki.NodeCredentials(ca, "pi8").certificate().extensions.get_extension_for_oid(
        pki.x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert {str(n.value) for n in names} == {"pi8", "10.0.0.8", "pi8.lan", "fd00::8"}


def test_p2p_receive_into_a_file(tmp_path: Path) -> None:
    file = tmp_path / "passwd"
    file.write_text("x")
    line = one_line_error(edgefed("p2p", "receive", "--listen", "127.0.0.1:0", "--dir", str(file),
                                  "--insecure-plaintext"))
    assert line == f"edgefed: error: --dir {file}: not a directory; give a directory for the received files"


def test_predict_input_that_is_text_not_npy(tmp_path: Path) -> None:
    from edgefed.lite import InferenceError, load_input

    text = tmp_path / "input.npy"
    text.write_text("0.1 0.2 0.3\n")
    with pytest.raises(InferenceError) as error:
        load_input(text)
    assert str(error.value) == f"{text}: not an .npy file; save the input with numpy.save(FILE, array) of numbers"
    with pytest.raises(InferenceError, match=r"is a directory; give an \.npy file"):
        load_input(tmp_path)


def test_version() -> None:
    result = edgefed("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"edgefed {__version__}"


def test_worker_that_gives_up_on_the_chief_exits_3(ca: Path, tmp_path: Path) -> None:
    pki.issue_node(ca, "lonely", [])
    port = free_port()  # a port nothing listens on
    config = tmp_path / "worker.toml"
    config.write_text(dump_config({
        "node": {"name": "lonely", "role": "worker", "pki_dir": str(ca), "state_dir": str(tmp_path / "state")},
        "federation": {"public_ip": "127.0.0.1", "public_port": port, "reconnect_timeout": 1.0,
                       "reconnect_max_delay": 0.2},
        "ledger": {"enabled": False},
    }))
    line = one_line_error(edgefed("worker", "--config", str(config), timeout=120), code=3)
    assert line.startswith(f"edgefed: gave up: gave up joining 127.0.0.1:{port}")
