"""Configuration errors name the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefed.config import ConfigError, config_from_dict, dump_config, load_config

MINIMAL = {"node": {"name": "chief", "role": "chief"}}


def test_defaults_follow_the_seed() -> None:
    config = config_from_dict(MINIMAL)
    assert (config.federation.private_port, config.federation.public_port) == (3389, 7777)
    assert config.ledger.backend == "embedded"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "node: required section is missing"),
        ({"node": {"name": "a"}}, "node.role: required key is missing"),
        ({"node": {"name": "a", "role": "boss"}}, "node.role: must be one of 'chief', 'worker', got 'boss'"),
        ({**MINIMAL, "federation": {"interval_steps": 0}}, "federation.interval_steps: must be >= 1, got 0"),
        ({**MINIMAL, "federation": {"public_port": 70000}}, "federation.public_port: must be a port number"),
        ({**MINIMAL, "federation": {"wait_time": "long"}}, "federation.wait_time: must be a number, got 'long'"),
        ({**MINIMAL, "federation": {"rounds": True}}, "federation.rounds: must be an integer, got True"),
        ({**MINIMAL, "federation": {"intervals": 3}}, "federation.intervals: unknown key"),
        ({**MINIMAL, "trainers": {}}, "trainers: unknown section"),
        ({**MINIMAL, "ledger": {"backend": "iroha"}}, "ledger.torii: required when ledger.backend is 'iroha'"),
        ({**MINIMAL, "federation": 3}, "federation: must be a table"),
    ],
)
def test_invalid_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert message in str(error.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\nname = 1")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_config(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nname = "w"\nrole = "worker"\n[federation]\nround_timeout = -1\n')
    with pytest.raises(ConfigError, match=r"bad.toml: federation.round_timeout: must be >= 0"):
        load_config(bad)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    raw = {"node": {"name": "w1", "role": "worker", "state_dir": 'C:\\odd "path"'},
           "federation": {"wait_time": 1.5, "allow_late_joiners": False, "rounds": 4}}
    path = tmp_path / "node.toml"
    path.write_text(dump_config(raw))
    config = load_config(path)
    assert config.node.state_dir == 'C:\\odd "path"'
    federation = config.federation
    assert (federation.wait_time, federation.allow_late_joiners, federation.rounds) == (1.5, False, 4)
