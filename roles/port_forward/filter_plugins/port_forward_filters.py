"""Filters of the port_forward role: one rule definition (ansible.builtin.iptables options) rendered
as iptables arguments for the boot script, so the script and the live rules never disagree."""

from __future__ import annotations

from typing import Any


def _flag(args: list[str], flag: str, value: Any) -> None:
    if value in (None, ""):
        return
    text = str(value)
    args.extend(["!", flag, text[1:]] if text.startswith("!") else [flag, text])


def iptables_args(rule: dict[str, Any]) -> list[str]:
    """The match and target of `rule`, as given after `iptables -t TABLE -C|-I|-A|-D CHAIN`."""
    args: list[str] = []
    _flag(args, "-p", rule.get("protocol"))
    _flag(args, "-d", rule.get("destination"))
    _flag(args, "-i", rule.get("in_interface"))
    _flag(args, "--dport", rule.get("destination_port"))
    args.extend(["-m", "comment", "--comment", str(rule["comment"])])
    _flag(args, "-j", rule.get("jump"))
    _flag(args, "--to-destination", rule.get("to_destination"))
    _flag(args, "--reject-with", rule.get("reject_with"))
    return args


def applicable(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules that apply: a rule whose destination port is 0 (an unset optional port) does not."""
    return [rule for rule in rules if str(rule.get("destination_port", "")).strip() not in ("0", "")]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"port_forward_iptables_args": iptables_args, "port_forward_applicable": applicable}
