"""JSON Schemas (2020-12) shipped as data files: the status files, the `edgefed status --json` document
and the lines of the chief's training history."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

STATUS_FILE = "status-file.schema.json"
STATUS_REPORT = "status-report.schema.json"
HISTORY_LINE = "history-line.schema.json"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the schema files beside this module, parsed (cached: callers must not modify it)."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
