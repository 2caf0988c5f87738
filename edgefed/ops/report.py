"""Render host verdicts: the JSON document of `edgefed status --json` and the rich table.

The JSON shape is fixed by edgefed/contracts/schemas/status-report.schema.json (JSON Schema 2020-12),
linked from docs/status.md; unit tests keep its failure kinds and format in step with this code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from edgefed.contracts.schemas import STATUS_REPORT, load_schema
from edgefed.ops.health import HostStatus
from edgefed.ops.probe import COMPONENTS

FORMAT = "edgefed-status/1"

STATUS_SCHEMA: dict[str, Any] = load_schema(STATUS_REPORT)  # the data file is the source of truth

def document(
    statuses: Sequence[HostStatus], inventory: str, limit: str | None, generated_at: dt.datetime | None = None
) -> dict[str, Any]:
    """The whole `--json` document for one pass over the inventory."""
    when = generated_at or dt.datetime.now(dt.UTC)
    healthy = sum(1 for status in statuses if status.healthy)
    return {
        "format": FORMAT,
        "generated_at": when.isoformat(),
        "inventory": inventory,
        "limit": limit,
        "healthy": healthy == len(statuses),
        "summary": {
            "hosts": len(statuses),
            "healthy": healthy,
            "unhealthy": len(statuses) - healthy,
            "unreachable": sum(1 for status in statuses if not status.reachable),
        },
        "hosts": [host_json(status) for status in statuses],
    }


def host_json(status: HostStatus) -> dict[str, Any]:
    host = status.host
    return {
        "name": host.name,
        "address": host.address,
        "port": host.port,
        "user": host.user,
        "role": host.role,
        "node_name": host.node_name,
        "reachable": status.reachable,
        "healthy": status.healthy,
        "failure": None if status.failure is None else {"kind": status.failure.kind, "message": status.failure.message},
        "problems": list(status.problems),
        "remote_time": status.remote_time,
        "arch": status.arch,
        "units": {c: (u.to_json() if (u := status.units.get(c)) is not None else None) for c in COMPONENTS},
        "federation": _federation_json(status),
        "ledger": _ledger_json(status),
        "certificate": status.certificate,
        "forwarding": status.forwarding,
        "status_files": {component: status.status_files.get(component) for component in COMPONENTS},
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _federation_json(status: HostStatus) -> dict[str, Any] | None:
    doc = status.federation
    if doc is None:
        return None
    transfer = doc.get("last_transfer")
    last_transfer = None
    if isinstance(transfer, dict):
        direction = transfer.get("direction")
        last_transfer = {
            "round": _integer(transfer.get("round")),
            "peer": _string(transfer.get("peer")),
            "direction": direction if direction in ("send", "receive") else None,
            "bytes": _integer(transfer.get("bytes")),
            "at": _number(transfer.get("at")),
            "age_seconds": status.age(transfer.get("at")),
        }
    participants = doc.get("participants")
    errors = doc.get("errors")
    last_error = None
    if isinstance(errors, list) and errors and isinstance(errors[-1], dict):
        last_error = errors[-1].get("message")
    measured: dict[str, Any] = {k: _number(doc.get(k)) for k in ("accuracy", "loss", "dp_epsilon", "dp_epsilon_target")
                                if k in doc}  # newer nodes; dp_*: differential privacy on
    if "refused_total" in doc:  # a chief that records refusals
        measured["refused_total"] = _integer(doc.get("refused_total"))
        measured["last_refusal"] = _refusal_json(doc.get("refused"))
    measured.update(_compression_json(doc))
    return {
        "state": _string(doc.get("state")),
        "round": _integer(doc.get("round")),
        "rounds_total": _integer(doc.get("rounds_total")),
        "participants": [str(p) for p in participants] if isinstance(participants, list) else [],
        "updated_at": _number(doc.get("updated_at")),
        "age_seconds": status.age(doc.get("updated_at")),
        "last_transfer": last_transfer,
        "last_error": _string(last_error),
        **measured,
    }


def _compression_json(doc: dict[str, Any]) -> dict[str, Any]:
    """federation.compression and the last round's bytes, from nodes that write them (issue 14)."""
    out: dict[str, Any] = {}
    if "compression" in doc:
        out["compression"] = _string(doc.get("compression"))
    if "broadcast_compression" in doc:
        out["broadcast_compression"] = _string(doc.get("broadcast_compression"))
    if "round_bytes" in doc:
        counts = doc.get("round_bytes")
        out["round_bytes"] = {k: _integer(counts.get(k)) for k in ("round", "sent", "received")} \
            if isinstance(counts, dict) else None
    return out


def _refusal_json(refused: Any) -> dict[str, Any] | None:
    if not isinstance(refused, list) or not refused or not isinstance(refused[-1], dict):
        return None
    last = refused[-1]
    return {
        "worker": _string(last.get("worker")),
        "round": _integer(last.get("round")),
        "stage": _string(last.get("stage")),
        "code": _string(last.get("code")),
        "message": _string(last.get("message")),
        "at": _number(last.get("at")),
    }


def _ledger_json(status: HostStatus) -> dict[str, Any] | None:
    doc = status.ledger
    if doc is None:
        return None
    return {
        "state": _string(doc.get("state")),
        "backend": _string(doc.get("backend")),
        "height": _integer(doc.get("height")),
        "outbox_backlog": _integer(doc.get("outbox_backlog")),
        "last_delivery_at": _number(doc.get("last_delivery_at")),
    }


# --- the table ---------------------------------------------------------------------------------

_UNIT_STYLE = {"active": "green", "failed": "bold red", "inactive": "yellow", "activating": "yellow"}


def render_table(statuses: Sequence[HostStatus], title: str | None = None) -> Table:
    """A rich Table: one row per host, problems spelled out in the last column."""
    table = Table(title=title, show_lines=True, expand=False)
    columns = ("host", "role", "units", "round", "last transfer", "ledger", "cert", "forward", "health")
    for column in columns:
        table.add_column(column, overflow="fold")
    for status in statuses:
        host = status.host
        name = Text(host.name, style="bold")
        name.append(f"\n{host.user}@{host.address}:{host.port}", style="dim")
        if status.failure is not None:
            failure = Text(status.failure.kind, style="bold red")
            table.add_row(name, host.role, failure, "", "", "", "", "", _health(status))
            continue
        fed = _federation_json(status)
        ledger = _ledger_json(status)
        table.add_row(
            name,
            host.role,
            _units_text(status),
            _round_text(fed),
            _transfer_text(fed),
            _ledger_text(ledger),
            _cert_text(status),
            _forward_text(status),
            _health(status),
        )
    return table


def _units_text(status: HostStatus) -> Text:
    text = Text()
    for component in COMPONENTS:
        unit = status.units.get(component)
        if unit is None or not unit.installed:
            continue
        if text:
            text.append("\n")
        text.append(f"{component} ")
        text.append(unit.active, style=_UNIT_STYLE.get(unit.active, "yellow"))
        if unit.restarts:
            text.append(f" ↻{unit.restarts}", style="yellow")
    return text if text else Text("none", style="red")


def _round_text(fed: dict[str, Any] | None) -> str:
    if fed is None:
        return "—"
    total = f"/{fed['rounds_total']}" if fed["rounds_total"] is not None else ""
    round_ = fed["round"] if fed["round"] is not None else "—"
    participants = ", ".join(fed["participants"])
    lines = [f"{round_}{total} {fed['state'] or ''}".strip()]
    if fed.get("accuracy") is not None:
        lines.append(f"accuracy {fed['accuracy']:.3f}")
    if fed.get("dp_epsilon") is not None:
        target = f" of {fed['dp_epsilon_target']:g}" if fed.get("dp_epsilon_target") is not None else ""
        lines.append(f"ε spent {fed['dp_epsilon']:.3g}{target}")
    counts = fed.get("round_bytes") or {}
    if fed.get("compression") or counts:
        sent, received = counts.get("sent"), counts.get("received")
        moved = f"↑{_bytes(sent)} ↓{_bytes(received)}" if sent is not None and received is not None else ""
        broadcast = fed.get("broadcast_compression")
        shown = f"broadcast {broadcast}" if broadcast and broadcast != "none" else ""
        lines.append(" ".join(part for part in (fed.get("compression") or "", shown, moved) if part))
    if participants:
        lines.append(participants)
    if fed.get("refused_total"):
        last = fed.get("last_refusal") or {}
        lines.append(f"refused {fed['refused_total']} (last: {last.get('worker') or '?'} {last.get('code') or '?'})")
    return "\n".join(lines)


def _transfer_text(fed: dict[str, Any] | None) -> str:
    transfer = fed["last_transfer"] if fed else None
    if not transfer:
        return "—"
    arrow = {"send": "→", "receive": "←"}.get(transfer["direction"], "?")
    size = _bytes(transfer["bytes"]) if transfer["bytes"] is not None else "?"
    round_ = transfer["round"] if transfer["round"] is not None else "?"
    age = _duration(transfer["age_seconds"])
    return f"r{round_} {arrow} {transfer['peer'] or '?'} {size}\n{age} ago"


def _ledger_text(ledger: dict[str, Any] | None) -> str:
    if ledger is None:
        return "—"
    height = ledger["height"] if ledger["height"] is not None else "?"
    backlog = ledger["outbox_backlog"] if ledger["outbox_backlog"] is not None else "?"
    return f"height {height}\nbacklog {backlog}"


def _cert_text(status: HostStatus) -> Text | str:
    cert = status.certificate
    if cert is None:
        return "—"
    if cert["days_left"] is None:
        return Text(cert["error"] or "?", style="red")
    days = float(cert["days_left"])
    style = "red" if days < 0 else "yellow" if days < 30 else "green"
    return Text(f"{int(days)} d", style=style)  # whole days left, rounded down


def _forward_text(status: HostStatus) -> Text | str:
    forwarding = status.forwarding
    if forwarding is None:
        return "—"
    if forwarding["present"]:
        return Text("yes", style="green")
    return Text("no" if forwarding["present"] is False else "unknown", style="red")


def _health(status: HostStatus) -> Text:
    if status.healthy:
        return Text("OK", style="bold green")
    text = Text("FAIL", style="bold red")
    for problem in status.problems:
        text.append(f"\n• {problem}")
    return text


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
