"""Parsers for the values a p2p session is configured with: durations, byte sizes, HOST:PORT."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90``, ``90s``, ``10m``, ``1h30m``, ``1.5h`` or ``2d``."""
    value = text.strip().lower()
    if not value:
        raise ValueError("duration is empty (examples: 90s, 10m, 1h30m)")
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    else:
        position, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            position = match.end()
        if position != len(value):
            raise ValueError(f"duration {text!r} is not valid (examples: 90s, 10m, 1h30m, 2d)")
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in a size such as ``1024``, ``512k``, ``200M``, ``200MiB`` or ``4G`` (binary multiples)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"size {text!r} is not valid (examples: 4096, 512k, 200M, 4G)")
    number, unit, _suffix = match.groups()
    size = int(float(number) * _SIZE_UNITS[unit.lower()])
    if size <= 0:
        raise ValueError(f"size {text!r} must be larger than zero")
    return size


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_port(value: int | str, allow_zero: bool = False) -> int:
    """A TCP port given as int or string (BSMD passes strings); 0 asks the OS for a free one."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"port {value!r} is not a number") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is out of range ({low}-65535)")
    return port


def parse_endpoint(text: str, allow_zero_port: bool = False) -> Endpoint:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    value = text.strip()
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)", value) or re.fullmatch(r"([^:\s]+):(\d+)", value)
    if not match:
        raise ValueError(f"address {text!r} must be HOST:PORT (or [IPv6]:PORT)")
    return Endpoint(match.group(1), parse_port(match.group(2), allow_zero=allow_zero_port))
