"""Control payloads: one JSON object, parsed with explicit bounds so a hostile body can only fail as
a ProtocolError (Python's json module raises RecursionError on deep nesting and ValueError on
integers past its digit limit, and accepts NaN, Infinity and duplicate keys)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from edgefed.wire.errors import ProtocolError

# A JSON string literal, written as an unrolled loop: no alternative can match the same byte twice.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def encode_control(body: dict[str, Any]) -> bytes:
    # allow_nan=False: the decoder refuses NaN and Infinity, so the encoder never writes them
    return json.dumps(body, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def nesting_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in payload, brackets inside strings not counted."""
    structure = _STRING.sub(b'""', payload)
    codes = np.frombuffer(structure, dtype=np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int64) - np.isin(codes, _CLOSE).astype(np.int64)
    return int(np.cumsum(steps).max()) if steps.size else 0


class _Parser:
    """Hooks for json.loads that enforce the number and key rules while parsing."""

    def __init__(self, name: str, max_number_chars: int) -> None:
        self.name = name
        self.max_number_chars = max_number_chars

    def _check_length(self, text: str) -> None:
        if len(text) > self.max_number_chars:
            raise ProtocolError(
                f"{self.name} payload has a number of {len(text)} characters "
                f"(at most {self.max_number_chars} are accepted)"
            )

    def parse_int(self, text: str) -> int:
        self._check_length(text)  # before int(): Python refuses past 4300 digits, slowly
        return int(text)

    def parse_float(self, text: str) -> float:
        self._check_length(text)
        value = float(text)
        if not math.isfinite(value):
            raise ProtocolError(f"{self.name} payload holds {text[:20]}, which is not a finite number")
        return value

    def parse_constant(self, text: str) -> float:
        raise ProtocolError(f"{self.name} payload holds {text}, which is not a finite number")

    def object_pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise ProtocolError(f"{self.name} payload has the duplicate key {key[:40]!r}")
                seen.add(key)
        return result


def decode_control_body(
    payload: bytes | bytearray | memoryview, name: str, max_depth: int, max_number_chars: int
) -> dict[str, Any]:
    """The JSON object in payload, or ProtocolError; name is the message type, for the error text."""
    data = bytes(payload)
    # Depth is checked before parsing: the parser would recurse once per level.
    if data.count(b"[") + data.count(b"{") > max_depth and nesting_depth(data) > max_depth:
        raise ProtocolError(f"{name} payload is nested deeper than {max_depth} levels")
    parser = _Parser(name, max_number_chars)
    try:
        body = json.loads(
            data.decode("utf-8"),
            parse_int=parser.parse_int,
            parse_float=parser.parse_float,
            parse_constant=parser.parse_constant,
            object_pairs_hook=parser.object_pairs,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{name} payload is not valid JSON: {exc}") from None
    except RecursionError:  # belt and braces: the depth check above should make this unreachable
        raise ProtocolError(f"{name} payload is nested too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{name} payload must be a JSON object, got {type(body).__name__}")
    return body
