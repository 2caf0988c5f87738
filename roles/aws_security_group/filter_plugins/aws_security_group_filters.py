"""Filters of the aws_security_group role: which network interface carries the chief, and which other
attached groups open the appliance's ports wider than the inventory allows."""

from __future__ import annotations

import ipaddress
from typing import Any


def primary_interface(instance: dict[str, Any], private_address: str = "") -> dict[str, Any]:
    """The instance's interface holding `private_address`, else its primary one (device index 0)."""
    interfaces = list(instance.get("network_interfaces") or [])
    if private_address:
        for interface in interfaces:
            addresses = {a.get("private_ip_address") for a in interface.get("private_ip_addresses") or []}
            if private_address in addresses | {interface.get("private_ip_address")}:
                return dict(interface)
    for interface in interfaces:
        if (interface.get("attachment") or {}).get("device_index") == 0:
            return dict(interface)
    return {}


def _covers(permission: dict[str, Any], port: int) -> bool:
    protocol = str(permission.get("ip_protocol", ""))
    if protocol == "-1":
        return True
    if protocol not in ("tcp", "6"):
        return False
    low, high = permission.get("from_port"), permission.get("to_port")
    if low is None or high is None or low == -1:
        return True
    return int(low) <= port <= int(high)


def _within(cidr: str, allowed: list[str]) -> bool:
    network = ipaddress.ip_network(cidr, strict=False)
    return any(network.version == 4 and network.subnet_of(ipaddress.ip_network(a, strict=False))  # type: ignore[arg-type]
               for a in allowed)


def wide_ingress(groups: list[dict[str, Any]], checks: list[dict[str, Any]], own_name: str) -> list[str]:
    """One line per rule of another group that opens a checked port beyond its allowed CIDRs.

    checks: [{port, cidrs, setting}]; IPv6 ranges are always wider (the inventory allows IPv4 only)."""
    findings = []
    for group in groups:
        if group.get("group_name") == own_name:
            continue
        for permission in group.get("ip_permissions") or []:
            sources = [r["cidr_ip"] for r in permission.get("ip_ranges") or []]
            sources += [r["cidr_ipv6"] for r in permission.get("ipv6_ranges") or []]
            for check in checks:
                if not _covers(permission, int(check["port"])):
                    continue
                for source in sources:
                    if not _within(source, list(check["cidrs"])):
                        findings.append(
                            f"{group.get('group_id')} ({group.get('group_name')}) opens tcp/{check['port']} "
                            f"to {source}, wider than {check['setting']} {list(check['cidrs'])}")
    return sorted(set(findings))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "aws_security_group_primary_interface": primary_interface,
            "aws_security_group_wide_ingress": wide_ingress,
        }
