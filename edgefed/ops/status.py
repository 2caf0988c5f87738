"""One `edgefed status` run: probe the inventory's hosts, judge them, print a table or JSON.

`--watch` repeats the pass every N seconds: the table is redrawn in place (rich Live), JSON is
printed as one compact document per line (JSON Lines). The exit status is that of the last pass.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from edgefed.ops.health import HostStatus, Thresholds, evaluate
from edgefed.ops.inventory import InventoryHost, default_inventory, load_inventory
from edgefed.ops.report import document, render_table
from edgefed.ops.ssh import SshOptions, collect

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1


@dataclass(frozen=True)
class StatusRequest:
    inventory: Path | None  # None: ANSIBLE_INVENTORY, else ansible.cfg's inventory
    limit: str | None = None
    json: bool = False
    watch: float | None = None  # seconds between passes; None: one pass
    count: int | None = None  # with watch: number of passes; None: until interrupted
    ssh: SshOptions = field(default_factory=SshOptions)
    thresholds: Thresholds = field(default_factory=Thresholds)
    quiet_paramiko: bool = True
    vault_password_files: tuple[str, ...] = ()


def run_status(request: StatusRequest, console: Console | None = None) -> int:
    if request.quiet_paramiko:
        # paramiko logs each failed connection with a traceback; the report already says why.
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    if request.inventory is None:
        request = replace(request, inventory=Path(default_inventory()))
    hosts = load_inventory(request.inventory, request.limit, request.vault_password_files)
    console = console or wide_console()
    passes = _passes(request.watch, request.count)
    if request.json:
        return _json(request, hosts, passes, console)
    if request.watch is None:
        next(passes)
        renderable, code = _table(request, hosts)
        console.print(renderable)
        return code
    code = EXIT_UNHEALTHY
    with Live(Text("probing hosts…"), console=console, auto_refresh=False) as live:
        for _ in passes:
            renderable, code = _table(request, hosts)
            live.update(renderable, refresh=True)
    return code


def wide_console() -> Console:
    """A terminal keeps its width; piped or captured output is not squeezed (and host names not split)
    into 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=400)


def probe_all(hosts: list[InventoryHost], request: StatusRequest) -> list[HostStatus]:
    return [evaluate(collected, request.thresholds) for collected in collect(hosts, request.ssh)]


def _exit(healthy: bool) -> int:
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


def _json(request: StatusRequest, hosts: list[InventoryHost], passes: Iterator[int], console: Console) -> int:
    code = EXIT_UNHEALTHY
    for _ in passes:
        doc = document(probe_all(hosts, request), str(request.inventory), request.limit)
        text = json.dumps(doc) if request.watch is not None else json.dumps(doc, indent=2)
        # Plain write, not console.print: no markup, no wrapping, one document per line when watching.
        console.file.write(text + "\n")
        console.file.flush()
        code = _exit(doc["healthy"])
    return code


def _table(request: StatusRequest, hosts: list[InventoryHost]) -> tuple[Group, int]:
    statuses = probe_all(hosts, request)
    healthy = sum(1 for status in statuses if status.healthy)
    everyone = healthy == len(statuses)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    summary = Text(
        f"{healthy}/{len(statuses)} hosts healthy · {request.inventory} · {stamp}",
        style="green" if everyone else "bold red",
    )
    return Group(render_table(statuses), summary), _exit(everyone)


def _passes(interval: float | None, count: int | None) -> Iterator[int]:
    """Yield once per pass; passes start `interval` seconds apart (one pass when interval is None)."""
    if interval is None:
        yield 0
        return
    done = 0
    next_at = time.monotonic()
    while count is None or done < count:
        yield done
        done += 1
        if count is not None and done >= count:
            return
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:  # a pass took longer than the interval: start the next one now, don't pile up
            next_at = time.monotonic()
