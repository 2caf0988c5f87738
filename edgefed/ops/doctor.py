"""Judge what the doctor probe collected: one `Check` per question, each with the fix when it fails.

The questions, in the order a silent Pi is usually explained: is the clock right (a Pi has no RTC,
so a certificate "not yet valid" after boot is the classic failure), is the certificate signed by
the deployment CA, valid now and for a while, issued to this node (and, on the chief, to the name
the workers check), is the chief reachable where the configuration says, does the chief forward and
accept its public port and listen on the private one, can the state directory be written, is there
disk space, and is the ledger outbox draining.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from edgefed.config import NodeConfig
from edgefed.ops.doctor_probe import free_kib, listening_ports, node_config
from edgefed.ops.health import find_dnat_rule
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import MISSING, ProbeOutput, Section

RENEW = ("re-issue it from the deployment CA: ansible-playbook site.yml --limit {name} (or, where the CA is:"
         " edgefed pki issue {name} --force), then restart the node's units")
TIME_FIX = ("enable time sync: timedatectl set-ntp true, let systemd-timesyncd reach an NTP server (udp/123),"
            " then restart the edgefed units")


@dataclass(frozen=True)
class DoctorLimits:
    max_clock_skew: float = 30.0  # seconds between the node's clock and the operator's (over SSH)
    min_cert_days: float = 14.0
    min_free_mib: int = 200
    max_outbox_stall: float = 600.0  # seconds an outbox may hold records without a delivery


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: could not be checked here (not a failure)
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix or None}


def diagnose(
    host: InventoryHost, output: ProbeOutput, limits: DoctorLimits, operator_time: float | None = None
) -> list[Check]:
    node_time = _float(output.get("clock"))
    config, config_error = node_config(output)
    checks = [_clock(output, node_time, operator_time, limits)]
    if config is None:
        checks.append(Check("configuration", False if config_error != "missing" else None,
                            f"{host.config_file}: {config_error}",
                            "" if config_error == "missing" else "fix the key named above (docs/configuration.md)"))
    cert, ca = _pem(output.get("cert")), _pem(output.get("ca"))
    checks += _certificate(host, cert, ca, output, node_time, config, limits)
    checks.append(_reach(output, config))
    if host.role == "chief":
        checks += _chief(host, output, config)
    checks += [_state_dir(host, output), _disk(host, output, limits), _outbox(output, node_time, limits)]
    return checks


def _float(section: Section | None) -> float | None:
    try:
        return float(section.text.strip()) if section is not None and section.status == 0 else None
    except ValueError:
        return None


def _clock(output: ProbeOutput, node_time: float | None, operator_time: float | None, limits: DoctorLimits) -> Check:
    if node_time is not None and operator_time is not None and abs(node_time - operator_time) > limits.max_clock_skew:
        skew = node_time - operator_time
        way = "behind" if skew < 0 else "ahead of"
        return Check("clock", False, f"the node's clock is {abs(skew):.0f}s {way} this machine's", TIME_FIX)
    sync = output.get("timesync")
    if sync is None or sync.status != 0:
        reason = sync.text.strip().splitlines()[0] if sync is not None and sync.text.strip() else "not collected"
        return Check("clock", None, f"cannot tell whether the clock is synchronised ({reason})")
    answer = sync.text.strip().splitlines()[0] if sync.text.strip() else ""
    source, _, flag = answer.rpartition(" ")
    source = "the kernel (adjtimex)" if source == "adjtimex:" else "timedatectl"
    if flag == "yes":
        return Check("clock", True, f"synchronised, says {source}")
    if flag == "no":
        return Check("clock", False, f"not synchronised, says {source}", TIME_FIX)
    return Check("clock", None, f"cannot tell whether the clock is synchronised ({answer})")


def _pem(section: Section | None) -> x509.Certificate | str:
    if section is None or section.status == MISSING:
        return "missing"
    if section.status != 0:
        return section.text.strip() or "not readable"
    try:
        return x509.load_pem_x509_certificate(section.text.encode())
    except ValueError:
        return "not a PEM certificate"


def _certificate(
    host: InventoryHost, cert: x509.Certificate | str, ca: x509.Certificate | str, output: ProbeOutput,
    node_time: float | None, config: NodeConfig | None, limits: DoctorLimits,
) -> list[Check]:
    renew = RENEW.format(name=host.node_name)
    if isinstance(cert, str):
        return [Check("certificate", False, f"{host.cert_path}: {cert}", renew)]
    checks = []
    if isinstance(ca, str):
        checks.append(Check("certificate chain", False, f"{host.pki_dir}/ca.crt: {ca}",
                            "install the deployment's ca.crt on the node: ansible-playbook site.yml"
                            f" --limit {host.name}"))
    else:
        try:
            cert.verify_directly_issued_by(ca)
            checks.append(Check("certificate chain", True, f"signed by {_cn(ca)} ({host.pki_dir}/ca.crt)"))
        except (ValueError, TypeError, InvalidSignature) as exc:  # other issuer name; wrong key; key type
            checks.append(Check(
                "certificate chain", False,
                f"{host.cert_path} is not signed by the CA in {host.pki_dir}/ca.crt ({_cn(ca)}):"
                f" {str(exc) or 'the signature does not verify with its key'}",
                "the certificate and ca.crt come from different PKIs: " + renew))
    now = dt.datetime.fromtimestamp(node_time, dt.UTC) if node_time is not None else dt.datetime.now(dt.UTC)
    days_left = (cert.not_valid_after_utc - now).total_seconds() / 86400
    if now < cert.not_valid_before_utc:
        checks.append(Check(
            "certificate validity", False,
            f"not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC;"
            f" the node's clock says {now:%Y-%m-%d %H:%M}",
            "the clock is behind (a Pi without RTC before time sync): " + TIME_FIX))
    elif days_left < 0:
        checks.append(Check("certificate validity", False, f"expired {-days_left:.0f} days ago", renew))
    elif days_left < limits.min_cert_days:
        checks.append(Check("certificate validity", False, f"expires in {days_left:.1f} days", renew))
    else:
        checks.append(Check("certificate validity", True, f"valid for {days_left:.0f} more days"))
    checks.append(_names(host, cert, config))
    return checks


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "(no CN)"


def _names(host: InventoryHost, cert: x509.Certificate, config: NodeConfig | None) -> Check:
    renew = RENEW.format(name=host.node_name)
    if _cn(cert) != host.node_name:
        return Check("certificate names", False, f"issued to {_cn(cert)!r}, but this node is {host.node_name!r}", renew)
    if host.role != "chief" or config is None:
        return Check("certificate names", True, f"issued to {host.node_name}")
    expected = config.federation.server_name or config.federation.public_ip
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {str(n) for n in sans.get_values_for_type(x509.DNSName)}
        names |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        names = set()
    wanted = _normal(expected)
    if wanted in {_normal(name) for name in names}:
        detail = f"issued to {host.node_name}, valid for {expected} (what workers check)"
        return Check("certificate names", True, detail)
    return Check("certificate names", False,
                 f"workers check the chief's certificate against {expected!r}; it names only {sorted(names)}",
                 f"re-issue with the name: edgefed pki issue {host.node_name} --san {expected} --force"
                 " (or pki_extra_sans in the inventory), or set federation.server_name")


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower().rstrip(".")


def _reach(output: ProbeOutput, config: NodeConfig | None) -> Check:
    if config is None:
        return Check("chief reachable", None, "no configuration: address unknown")
    where = f"{config.federation.public_ip}:{config.federation.public_port}"
    section = output.get("reach")
    if config.node.role == "chief":
        return Check("chief reachable", None, f"{where} is tried from the workers (no hairpin through DNAT)")
    if section is None:
        return Check("chief reachable", None, f"{where} not tried")
    if section.status == 0:
        return Check("chief reachable", True, f"TCP connect to {where} works")
    return Check("chief reachable", False, f"cannot open TCP to {where}: {section.text.strip()}",
                 "check federation.public_ip/public_port, the chief's DNAT rule and listener (edgefed doctor"
                 " on the chief) and the security group (tcp/" + str(config.federation.public_port) + " open)")


def _chief(host: InventoryHost, output: ProbeOutput, config: NodeConfig | None) -> list[Check]:
    public = config.federation.public_port if config else host.public_port
    private = config.federation.private_port if config else host.private_port
    checks = []
    nat = output.get("nat")
    if nat is None or nat.status != 0:
        checks.append(Check("DNAT rule", False, f"cannot read the nat table: {nat.text.strip() if nat else '?'}",
                            "run doctor as root, or allow: sudo -n iptables -w 5 -t nat -S PREROUTING"))
    elif (rule := find_dnat_rule(nat.text, public, private)) is None:
        checks.append(Check("DNAT rule", False, f"no rule forwarding tcp/{public} to :{private} in nat PREROUTING",
                            "ansible-playbook playbooks/chief.yml (role port_forward) or: iptables -t nat"
                            f" -A PREROUTING -p tcp --dport {public} -j DNAT --to-destination PRIVATE_IP:{private}"))
    else:
        checks.append(Check("DNAT rule", True, rule))
    checks.append(_accept(output.get("input"), private))
    listen = output.get("listen")
    ports = listening_ports(listen.text) if listen is not None else set()
    if private in ports:
        checks.append(Check("listener", True, f"something listens on tcp/{private}"))
    else:
        checks.append(Check("listener", False, f"nothing listens on tcp/{private}",
                            "systemctl start edgefed-chief; journalctl -u edgefed-chief -p warning says why"
                            " it stopped"))
    return checks


def _accept(section: Section | None, private: int) -> Check:
    if section is None or section.status != 0:
        return Check("ACCEPT rule", False, "cannot read the filter INPUT chain",
                     "run doctor as root, or allow: sudo -n iptables -w 5 -S INPUT")
    lines = section.text.splitlines()
    for line in lines:
        words = line.split()
        if words[:2] == ["-A", "INPUT"] and "ACCEPT" in words and f"{private}" in words and "--dport" in words:
            return Check("ACCEPT rule", True, line.strip())
    blocking = [line for line in lines if line.startswith("-A INPUT") and ("REJECT" in line or "DROP" in line)]
    if "-P INPUT ACCEPT" in lines and not blocking:
        return Check("ACCEPT rule", True, "the INPUT chain accepts everything (policy ACCEPT, no REJECT/DROP)")
    return Check("ACCEPT rule", False, f"INPUT may drop tcp/{private} (no ACCEPT rule for it)",
                 "ansible-playbook playbooks/chief.yml (role port_forward)"
                 f" or: iptables -I INPUT -p tcp --dport {private} -j ACCEPT")


def _state_dir(host: InventoryHost, output: ProbeOutput) -> Check:
    section = output.get("state_write")
    if section is not None and section.status == 0:
        return Check("state directory", True, f"{host.state_dir} is writable")
    if section is None or section.status == MISSING:
        return Check("state directory", False, f"{host.state_dir} does not exist",
                     "ansible-playbook site.yml (role edgefed_install creates it)")
    return Check("state directory", False, f"{host.state_dir}: {section.text.strip()}",
                 f"chown -R edgefed: {host.state_dir} (the services write there)")


def _disk(host: InventoryHost, output: ProbeOutput, limits: DoctorLimits) -> Check:
    section = output.get("disk")
    free = free_kib(section.text) if section is not None and section.status == 0 else None
    if free is None:
        return Check("disk space", None, "df gave no answer")
    mib = free // 1024
    if mib < limits.min_free_mib:
        return Check("disk space", False, f"{mib} MiB free under {host.state_dir} (less than {limits.min_free_mib})",
                     "free space: journalctl --vacuum-size=100M, remove old files in the state directory")
    return Check("disk space", True, f"{mib} MiB free under {host.state_dir}")


def _outbox(output: ProbeOutput, node_time: float | None, limits: DoctorLimits) -> Check:
    section = output.get("status.ledger")
    if section is None or section.status != 0:
        return Check("ledger outbox", None, "no ledger status file (ledger disabled or not started)")
    try:
        doc = json.loads(section.text)
        backlog = int(doc.get("outbox_backlog") or 0)
        last = doc.get("last_delivery_at")
    except (ValueError, TypeError, AttributeError):
        return Check("ledger outbox", False, "status/ledger.json is not valid", "systemctl restart edgefed-ledger")
    if backlog == 0:
        return Check("ledger outbox", True, "empty")
    age = node_time - float(last) if node_time is not None and isinstance(last, (int, float)) else None
    if age is None or age > limits.max_outbox_stall:
        since = "never delivered" if age is None else f"last delivery {age:.0f}s ago"
        return Check("ledger outbox", False, f"{backlog} records waiting, {since}",
                     "journalctl -u edgefed-ledger -p warning: is the chief (or Iroha) reachable?")
    return Check("ledger outbox", True, f"{backlog} records waiting, last delivery {age:.0f}s ago (draining)")
