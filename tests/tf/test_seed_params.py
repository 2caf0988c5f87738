"""The seed hook's constructor parameters mapped onto a NodeConfig (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefed.config import ConfigError
from edgefed.pki import init_ca, issue_node
from edgefed.tf.seed_params import config_from_seed_params, split_host_port


def _seed_config(**overrides):
    params = dict(
        is_chief=True, name="chief", private_ip="172.31.5.10:3389", public_ip="203.0.113.7:7777",
        private_key=None, list_of_workers=["pi1", "pi2", "pi3"], domain="federated", ip=None,
        wait_time=45, interval_steps=50,
    )
    params.update(overrides)
    return config_from_seed_params(**params)


def test_chief_parameters_map_onto_the_configuration() -> None:
    config = _seed_config()
    assert config.node.role == "chief" and config.node.name == "chief"
    federation = config.federation
    assert (federation.private_ip, federation.private_port) == ("172.31.5.10", 3389)
    assert (federation.public_ip, federation.public_port) == ("203.0.113.7", 7777)
    assert federation.min_workers == 3
    assert (federation.wait_time, federation.interval_steps) == (45.0, 50)
    assert config.ledger.backend == "embedded" and config.ledger.domain == "federated"


def test_worker_with_iroha_address_uses_the_iroha_ledger() -> None:
    config = _seed_config(is_chief=False, name="pi1", ip="10.0.0.2:50051")
    assert config.node.role == "worker"
    assert config.federation.min_workers == 0  # only the chief waits for workers
    assert (config.ledger.backend, config.ledger.torii) == ("iroha", "10.0.0.2:50051")


@pytest.mark.parametrize(("value", "expected"), [
    ("10.0.0.5:3389", ("10.0.0.5", 3389)),
    ("10.0.0.5", ("10.0.0.5", 7777)),
    ("chief.example", ("chief.example", 7777)),
    ("[fd00::1]:3390", ("fd00::1", 3390)),
    ("fd00::1", ("fd00::1", 7777)),
])
def test_addresses_with_and_without_ports(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port("public_ip", value, 7777) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("10.0.0.5:99999", "public_ip: port must be 1-65535"),
    ("10.0.0.5:http", "public_ip: port must be 1-65535"),
    ("", "public_ip: an address is required"),
    ("[fd00::1", "public_ip: unbalanced"),
    ("a:b:c", "public_ip: 'a:b:c' is neither HOST:PORT nor an IPv6 address"),
])
def test_bad_addresses_are_named(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        split_host_port("public_ip", value, 7777)


def test_private_key_designates_the_pki_directory(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    init_ca(pki_dir)
    issue_node(pki_dir, "pi1", [])
    by_dir = _seed_config(is_chief=False, name="pi1", private_key=str(pki_dir))
    by_key = _seed_config(is_chief=False, name="pi1", private_key=pki_dir / "nodes" / "pi1" / "ledger.key")
    assert by_dir.node.pki_dir == by_key.node.pki_dir == str(pki_dir)


def test_inline_or_foreign_private_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="private_key: expected the PKI directory"):
        _seed_config(private_key="f" * 64)
    pki_dir = tmp_path / "pki"
    init_ca(pki_dir)
    issue_node(pki_dir, "pi2", [])
    with pytest.raises(ConfigError, match=r"is not PKI_DIR/nodes/pi1/ledger\.key"):
        _seed_config(is_chief=False, name="pi1", private_key=pki_dir / "nodes" / "pi2" / "ledger.key")


def test_list_of_workers_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="list_of_workers: expected a list"):
        _seed_config(list_of_workers="pi1")


def test_invalid_values_are_caught_by_the_configuration() -> None:
    with pytest.raises(ConfigError, match=r"federation\.interval_steps: must be >= 1"):
        _seed_config(interval_steps=0)
