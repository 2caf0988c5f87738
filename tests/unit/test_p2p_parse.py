"""Durations, sizes and addresses given to `edgefed p2p`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefed.p2p.parse import Endpoint, parse_duration, parse_endpoint, parse_port, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800), (" 10M ", 600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "10x", "m", "10m5", "1h 30m", "5m10"])
def test_bad_durations_are_refused_with_the_value_named(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_duration_parts_add_up(hours: int, minutes: int, seconds: int) -> None:
    total = hours * 3600 + minutes * 60 + seconds
    if total == 0:
        return
    assert parse_duration(f"{hours}h{minutes}m{seconds}s") == total


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("512k", 512 << 10), ("200M", 200 << 20), ("200MiB", 200 << 20), ("4G", 4 << 30),
     ("1.5k", 1536), ("20MB", 20 << 20)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "10 apples", "G", "1.2.3M"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_endpoints() -> None:
    assert parse_endpoint("127.0.0.1:5555") == Endpoint("127.0.0.1", 5555)
    assert parse_endpoint("node-1.lan:7000") == Endpoint("node-1.lan", 7000)
    assert parse_endpoint("[::1]:4444") == Endpoint("::1", 4444)
    assert str(Endpoint("::1", 4444)) == "[::1]:4444"
    assert parse_endpoint("127.0.0.1:0", allow_zero_port=True).port == 0


@pytest.mark.parametrize("text", ["127.0.0.1", ":5555", "host:", "host:70000", "host:0", "::1:5555", "a b:1"])
def test_bad_endpoints_name_the_address(text: str) -> None:
    with pytest.raises(ValueError, match=r"address|port"):
        parse_endpoint(text)


def test_ports_as_strings_like_bsmd() -> None:
    assert parse_port("5555") == 5555
    with pytest.raises(ValueError, match="not a number"):
        parse_port("fifty")
