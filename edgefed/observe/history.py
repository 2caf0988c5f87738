"""The chief's training history: one JSON line per round appended to STATE_DIR/history.jsonl.

A line is about 550 bytes with the chief's phase timeline (6 workers, short names): 100 rounds cost
~55 KB of SD card. Lines are
appended without fsync (a crash loses at most the last round's line, which the checkpoint repeats);
the reader reports a truncated or corrupt line in one sentence instead of failing. The line format is
edgefed/contracts/schemas/history-line.schema.json.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefed.contracts.events import RefusalEvent, TransferEvent

FORMAT = "edgefed-history/1"
HISTORY_FILE = "history.jsonl"
MAX_LINE_BYTES = 64 * 1024  # a longer line is not ours (participants are bounded by the chief's seats)
MAX_PARTICIPANTS_KEPT = 256  # names written per line; the count of the rest is dropped, not the round


def history_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / HISTORY_FILE


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class _RoundTally:
    """What the EventBus said about one round number."""

    bytes_in: int = 0
    bytes_out: int = 0
    upload_max: float | None = None
    broadcast: float = 0.0


MAX_TALLIED_ROUNDS = 8  # round numbers tallied at once: a hostile worker's stale/future rounds add none


class HistoryWriter:
    """Subscribe transfer() and refused() to the chief's EventBus; call round() from the driver's
    on_round callback.

    Transfers are tallied by their round number, not by arrival: fast workers upload the next round's
    update before the driver has reported the previous one. The line for round R counts the updates
    sent for round R-1 (bytes_in) and the broadcast of the weights of round R (bytes_out).
    """

    def __init__(self, state_dir: str | Path, node: str, compression: str | None = None,
                 broadcast_compression: str | None = None) -> None:
        self.path = history_path(state_dir)
        self.node = node
        self.compression = compression  # federation.compression, canonical; None: not recorded
        self.broadcast_compression = broadcast_compression  # federation.broadcast_compression, idem
        self._lock = threading.Lock()
        self._tallies: dict[int, _RoundTally] = {}
        self._refused = 0
        self._reported = 0  # the last round written

    def _tally(self, round_number: int) -> _RoundTally | None:
        tally = self._tallies.get(round_number)
        if tally is None and round_number >= self._reported and len(self._tallies) < MAX_TALLIED_ROUNDS:
            tally = self._tallies[round_number] = _RoundTally()
        return tally

    def transfer(self, event: TransferEvent) -> None:
        if event.observer != self.node:
            return
        with self._lock:
            tally = self._tally(event.round)
            if tally is None:
                return
            if event.direction == "receive":
                tally.bytes_in += event.bytes
                tally.upload_max = max(tally.upload_max or 0.0, event.seconds)
            else:
                tally.bytes_out += event.bytes
                tally.broadcast += event.seconds

    def refused(self, _event: RefusalEvent) -> None:
        with self._lock:
            self._refused += 1

    def round(self, round_number: int, participants: list[str], *, accuracy: float | None, loss: float | None,
              train_loss: float | None, seconds: float, samples: int | None = None,
              dp_epsilon: float | None = None, phases: dict[str, float] | None = None) -> dict[str, Any]:
        """Append the line for the round just averaged (the chief's average() returns after its
        broadcast, so both directions are tallied by now)."""
        with self._lock:
            uploads = self._tallies.get(round_number - 1) or _RoundTally()
            broadcast = self._tallies.get(round_number) or _RoundTally()
            refused, self._refused = self._refused, 0
            self._reported = round_number
            self._tallies = {r: t for r, t in self._tallies.items() if r >= round_number}
        record: dict[str, Any] = {
            "format": FORMAT,
            "at": round(time.time(), 3),
            "node": self.node,
            "round": round_number,
            "participants": participants[:MAX_PARTICIPANTS_KEPT],
            "refused": refused,
            "samples": samples,
            "accuracy": _finite(accuracy),
            "loss": _finite(loss),
            "train_loss": _finite(train_loss),
            "bytes_in": uploads.bytes_in,
            "bytes_out": broadcast.bytes_out,
            "seconds": {
                "round": round(max(seconds, 0.0), 4),
                "upload_max": None if uploads.upload_max is None else round(uploads.upload_max, 4),
                "broadcast": round(broadcast.broadcast, 4) if broadcast.bytes_out else None,
            },
        }
        if dp_epsilon is not None:  # differential privacy on: the epsilon the chief's updates have spent
            record["dp_epsilon"] = dp_epsilon
        if self.compression is not None:
            record["compression"] = self.compression
        if self.broadcast_compression is not None:
            record["broadcast_compression"] = self.broadcast_compression
        if phases:  # the chief's timeline of this round (edgefed.federation.timeline)
            record["phases"] = {name: round(max(value, 0.0), 4) for name, value in phases.items()
                                if isinstance(value, int | float) and math.isfinite(value)}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:  # one write per round; no fsync (SD card)
            file.write(line)
        return record


@dataclass
class History:
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one sentence per line that could not be used


_NUMBER_FIELDS = ("accuracy", "loss", "train_loss")
_COUNT_FIELDS = ("round", "refused", "bytes_in", "bytes_out")


def _line_problem(record: Any) -> str | None:
    """Why a parsed line is not a history record (the schema's checks that matter to the reader)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("format") != FORMAT:
        return f"format is {record.get('format')!r}, expected {FORMAT!r}"
    for key in _COUNT_FIELDS:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} must be a non-negative integer, got {value!r}"
    for key in _NUMBER_FIELDS:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"{key} must be a number or null, got {value!r}"
    participants = record.get("participants")
    if not isinstance(participants, list) or not all(isinstance(p, str) for p in participants):
        return "participants must be a list of names"
    seconds = record.get("seconds")
    if not isinstance(seconds, dict) or not isinstance(seconds.get("round"), int | float):
        return "seconds.round must be a number"
    phases = record.get("phases", {})
    if not isinstance(phases, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in phases.values()
    ):
        return "phases must map phase names to non-negative seconds"
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, ended by a newline), each line cut at MAX_LINE_BYTES."""
    with open(path, "rb") as file:
        number = 0
        while True:
            chunk = file.readline(MAX_LINE_BYTES + 1)
            if not chunk:
                return
            number += 1
            if len(chunk) > MAX_LINE_BYTES:
                while chunk and not chunk.endswith(b"\n"):  # skip the rest of the oversized line
                    chunk = file.readline(MAX_LINE_BYTES)
                yield number, b"", False
                continue
            yield number, chunk, chunk.endswith(b"\n")


def read_history(path: str | Path) -> History:
    """Every usable line of a history file; each unusable one becomes one sentence in problems.
    Raises OSError (FileNotFoundError, IsADirectoryError...) when the file cannot be read at all."""
    history = History()
    for number, raw, complete in _lines(Path(path)):
        if not raw:
            history.problems.append(f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes, skipped")
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            what = "truncated (the chief stopped mid-write?)" if not complete else "not valid JSON"
            history.problems.append(f"{path}:{number}: {what}, skipped")
            continue
        problem = _line_problem(record)
        if problem:
            history.problems.append(f"{path}:{number}: {problem}, skipped")
            continue
        history.records.append(record)
    return history
