"""`edgefed history`: the chief's per-round training history as a table, JSON lines or a plot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgefed.errors import UsageError


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "history",
        help="the chief's training history: accuracy, loss, participants, bytes and time per round",
        description="Reads STATE_DIR/history.jsonl (written by the chief after each round)."
        " Exit status: 0 ok, 2 no history or bad input.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state-dir", type=Path, metavar="DIR", help="the chief's state directory")
    where.add_argument("--config", metavar="FILE", help="the chief's configuration (its node.state_dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (records and problems)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw accuracy, loss, participants and round time ")
    parser.add_argument("--last", type=int, metavar="N", help="only the last N rounds")
    parser.add_argument("--phases", action="store_true",
                        help="where each round's time went on the chief: milliseconds per phase"
                        " (broadcast, worker turnaround, upload receive, validation, add, average, checkpoint,"
                        " status; docs/benchmarks.md)")
    parser.set_defaults(handler=run)


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    from edgefed.commands.doctor import DEFAULT_CONFIG
    from edgefed.config import load_config

    return Path(load_config(args.config or DEFAULT_CONFIG).node.state_dir)


def run(args: argparse.Namespace) -> int:
    from edgefed.observe.history import history_path, read_history

    if args.last is not None and args.last < 1:
        raise UsageError("--last must be at least 1")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {args.plot}: give a file name ending in .png")
    path = history_path(_state_dir(args))
    try:
        history = read_history(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no history yet (the chief writes it after its first round)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the history ({exc.strerror or exc})") from None
    records = history.records[-args.last:] if args.last else history.records
    for problem in history.problems:
        print(f"edgefed: warning: {problem}", file=sys.stderr)
    if args.json:
        json.dump({"format": "edgefed-history/1", "path": str(path), "records": records,
                   "problems": history.problems}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.phases:
        sys.stdout.write(render_phases(records))
    else:
        sys.stdout.write(render_table(records))
    if args.plot is not None:
        if not records:
            raise UsageError(f"{path}: no rounds to plot")
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'edgefed[observe]'")
        from edgefed.observe.plot import plot_history

        out = plot_history(records, args.plot)
        print(f"plotted {len(records)} rounds to {out}", file=sys.stderr)
    return 0


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB"):
        if count < 1024 or unit == "MB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def render_table(records: list[dict[str, Any]]) -> str:
    """Plain columns (pipes and narrow terminals alike): one row per round."""
    header = ("round", "workers", "refused", "accuracy", "loss", "in", "out", "seconds")
    rows = [header]
    for r in records:
        rows.append((
            str(r["round"]), str(len(r["participants"])), str(r["refused"]), _cell(r.get("accuracy"), ".4f"),
            _cell(r.get("loss"), ".4f"), _size(r["bytes_in"]), _size(r["bytes_out"]),
            _cell(r["seconds"].get("round"), ".2f"),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    if not records:
        lines.append("(no rounds recorded)")
    return "\n".join(lines) + "\n"


def render_phases(records: list[dict[str, Any]]) -> str:
    """One row per round, one column per phase of the chief's timeline, in milliseconds."""
    from edgefed.federation.timeline import PHASES

    header: tuple[str, ...] = ("round", *PHASES)
    rows: list[tuple[str, ...]] = [header]
    for r in records:
        phases = r.get("phases") or {}
        rows.append((str(r["round"]), *(_cell(None if p not in phases else 1000 * phases[p], ".1f") for p in PHASES)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    if not any(r.get("phases") for r in records):
        lines.append("(no phases recorded: written by chiefs since issue 14)")
    return "\n".join(lines) + "\n"
