"""The doctor's certificate judgement on real certificates made by edgefed's PKI: two CAs with the same
name (the usual case: every `edgefed pki init` names its CA "edgefed deployment CA"), a node name
mismatch, and the chief's certificate lacking the name the workers check."""

from __future__ import annotations

from pathlib import Path

from edgefed import pki
from edgefed.config import dump_config
from edgefed.ops.doctor import DoctorLimits, diagnose
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import ProbeOutput, Section


def _host(name: str, role: str, pki_dir: Path) -> InventoryHost:
    return InventoryHost(name, "192.0.2.1", 22, "root", None, None, role, name,  # type: ignore[arg-type]
                         "/var/lib/edgefed", str(pki_dir), 7777, 3389)


def _output(pki_dir: Path, name: str, config: str = "") -> ProbeOutput:
    sections = {
        "cert": Section((pki_dir / "nodes" / name / "tls.crt").read_text(), 0),
        "ca": Section((pki_dir / "ca.crt").read_text(), 0),
        "config": Section(config, 0) if config else Section("", 3),
    }
    return ProbeOutput(sections)


def _checks(host: InventoryHost, output: ProbeOutput) -> dict[str, tuple[bool | None, str, str]]:
    return {c.name: (c.ok, c.detail, c.fix) for c in diagnose(host, output, DoctorLimits())}


def test_a_ca_of_the_same_name_but_another_key_is_refused(tmp_path: Path) -> None:
    deployment, stray = tmp_path / "deployment", tmp_path / "stray"
    pki.init_ca(deployment)
    pki.init_ca(stray)  # same default name, "edgefed deployment CA"
    pki.issue_node(stray, "pi1", [])
    (stray / "ca.crt").write_text((deployment / "ca.crt").read_text())  # the node got the deployment's ca.crt
    ok, detail, fix = _checks(_host("pi1", "worker", stray), _output(stray, "pi1"))["certificate chain"]
    assert ok is False
    assert detail.endswith("(edgefed deployment CA): the signature does not verify with its key")
    assert fix.startswith("the certificate and ca.crt come from different PKIs")


def test_names_on_the_chief_must_include_what_workers_check(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    pki.issue_node(tmp_path, "hub", ["10.0.0.5"])
    config = dump_config({"node": {"name": "hub", "role": "chief"},
                          "federation": {"public_ip": "203.0.113.7", "public_port": 7777}})
    checks = _checks(_host("hub", "chief", tmp_path), _output(tmp_path, "hub", config))
    ok, detail, fix = checks["certificate names"]
    assert ok is False
    assert detail == "workers check the chief's certificate against '203.0.113.7'; it names only ['10.0.0.5', 'hub']"
    assert "--san 203.0.113.7" in fix
    assert checks["certificate chain"][0] is True and checks["certificate validity"][0] is True


def test_a_certificate_issued_to_another_node(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    pki.issue_node(tmp_path, "pi2", [])
    host = _host("pi1", "worker", tmp_path)
    output = _output(tmp_path, "pi2")
    ok, detail, _ = _checks(host, output)["certificate names"]
    assert ok is False and detail == "issued to 'pi2', but this node is 'pi1'"
    configuration = _checks(host, output)["configuration"]
    assert configuration[0] is None  # a missing configuration only skips what needs it
