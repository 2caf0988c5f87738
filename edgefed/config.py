"""Node configuration: TOML files (rendered by Ansible under /etc/edgefed/) validated into dataclasses.

Unknown keys, missing required keys and values of the wrong type or range are errors that name the
key, e.g. ``federation.interval_steps: must be an integer >= 1, got 0``. docs/configuration.md lists
every key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from edgefed.errors import user_error


@user_error
class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


Aggregation = Literal["fedavg", "clip", "trimmed-mean", "median", "krum"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


@dataclass(frozen=True)
class NodeSection:
    name: str
    role: Literal["chief", "worker"]
    pki_dir: str = "/etc/edgefed/pki"
    state_dir: str = "/var/lib/edgefed"
    # Logging level of the services (edgefed.logs); -v/-q on the command line win over it.
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

# The appliance's port defaults: public (what workers dial, DNAT'ed on the chief) and private (where the
# chief listens). playbooks/vars/appliance.yml sets the same for Ansible; a test keeps the two equal.
DEFAULT_PUBLIC_PORT = 7777
DEFAULT_PRIVATE_PORT = 3389


@dataclass(frozen=True)
class FederationSection:
    # Seed names: the chief serves on private_ip:private_port, workers dial public_ip:public_port.
    private_ip: str = "0.0.0.0"
    private_port: int = DEFAULT_PRIVATE_PORT
    public_ip: str = "127.0.0.1"
    public_port: int = DEFAULT_PUBLIC_PORT
    server_name: str = ""  # name the chief's certificate is checked against; default public_ip
    chief_name: str = ""  # worker: the chief's node name (certificate CN); default: its first chief's, pinned
    wait_time: float = 30.0
    interval_steps: int = 100
    rounds: int = 10
    min_workers: int = 0  # the chief waits wait_time or until this many have joined
    # chief: the workers' node names (the inventory's workers group); round 1 starts when all of them
    # have joined (or wait_time passed) and each has a fixed shard whatever the join order
    expected_workers: tuple[str, ...] = ()
    round_timeout: float = 120.0
    allow_late_joiners: bool = True
    max_frame_bytes: int = 1 << 30
    max_concurrent_uploads: int = 1  # each upload in flight holds one model-sized staging buffer
    reconnect_max_delay: float = 30.0
    reconnect_timeout: float = 600.0  # a worker gives up after this long without a chief
    # hostile-worker defences (docs/configuration.md, "Robust aggregation")
    aggregation: Aggregation = "fedavg"
    robust_fraction: float = 0.2  # share of workers assumed hostile (trimmed-mean trims it, krum tolerates it)
    clip_factor: float = 2.0  # clip: update norms above this times the median of recent norms are scaled down
    screen_factor: float = 0.0  # refuse updates this many times farther than the median distance (0: off)
    max_buffered_updates: int = 64  # trimmed-mean, median, krum: updates held per round, each one model
    min_upload_rate: int = 131072  # bytes/s: an upload slower than this (after upload_grace) is dropped
    upload_grace: float = 10.0  # seconds every upload gets on top of its size / min_upload_rate
    max_pending_connections: int = 16  # connections not yet past HELLO; more are closed at once
    hello_timeout: float = 15.0  # seconds from accept to a whole first frame (not reset per byte)
    # differential privacy (edgefed.federation.dp, docs/privacy.md): off while dp_epsilon is 0
    dp_epsilon: float = 0.0  # the target epsilon over all `rounds` (every node's updates, each on its own)
    dp_delta: float = 1e-5
    dp_clip_norm: float = 1.0  # L2 bound of one update's step from the global weights
    # secure aggregation (edgefed.secagg, docs/privacy.md): the chief learns only the sum of the updates
    secure_aggregation: bool = False
    secure_aggregation_threshold: int = 2  # workers that must stay to unmask (raised to a majority of the roster)
    secure_aggregation_bound: float = 0.05  # every coordinate of a step is clamped to +-this, then int8-quantized
    # the model on the worker (issue 16): the chief sends its exported .tflite to every worker after the
    # last round; a worker keeps the last good one in STATE_DIR/model/federated.tflite
    push_model: bool = False
    push_model_every: int = 0  # chief with push_model: also every this many rounds (0: only the final one)
    max_model_bytes: int = 64 << 20  # worker: a bigger model offer is refused before any data
    model_wait: float = 300.0  # worker: seconds to wait for the model after the last round
    # none | fp16 | int8 | topk:F | topk:F+int8 (docs/compression.md); chief and workers must agree
    compression: str = "none"
    broadcast_compression: str = "none"  # none | fp16 | int8 (an int8 delta, keyframes as needed); all agree
    # -- round cost and chief memory (issue 14, items 2-3; docs/configuration.md) --
    checkpoint_every: int = 1  # 1: every round, durable before the next; K: every K rounds, in the background
    chief_memory_mb: int = 0  # 0: max_concurrent_uploads staging buffers; else as many as fit in this budget


@dataclass(frozen=True)
class TrainerSection:
    kind: Literal["numpy", "keras"] = "numpy"
    learning_rate: float = 0.5
    batch_size: int = 32
    seed: int = 0
    export_dir: str = ""  # the chief writes the final model here (either trainer); default STATE_DIR/model
    # keras trainer: "digits" (bundled with scikit-learn) or a local Fashion-MNIST (idx .gz directory or .npz)
    dataset: str = "digits"


@dataclass(frozen=True)
class LedgerSection:
    enabled: bool = True
    backend: Literal["embedded", "iroha"] = "embedded"
    process: str = "edgefed"  # the federated process every transfer record names (BSMD's process id)
    # iroha backend
    torii: str = ""
    domain: str = "edgefed"
    commit_timeout: float = 30.0


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSection
    federation: FederationSection = field(default_factory=FederationSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    ledger: LedgerSection = field(default_factory=LedgerSection)
    metrics: MetricsSection = field(default_factory=lambda: MetricsSection())  # noqa: PLW0108 (defined below)


_POSITIVE = {
    "federation.private_port", "federation.public_port", "federation.interval_steps",
    "federation.rounds", "federation.max_frame_bytes", "federation.max_concurrent_uploads",
    "federation.max_buffered_updates", "federation.min_upload_rate", "federation.max_pending_connections",
    "federation.max_model_bytes",
    "trainer.batch_size",
    "federation.checkpoint_every",  # issue 14, round cost
}
_NON_NEGATIVE = {
    "federation.wait_time", "federation.round_timeout", "federation.min_workers",
    "federation.reconnect_max_delay", "federation.reconnect_timeout", "ledger.commit_timeout", "trainer.learning_rate",
    "federation.clip_factor", "federation.screen_factor", "federation.upload_grace", "federation.robust_fraction",
    "federation.hello_timeout", "federation.model_wait", "federation.push_model_every",
    "federation.chief_memory_mb",  # issue 14, chief memory (0: off)
}
_PORTS = {"federation.private_port", "federation.public_port"}
_LEDGER_PROCESS = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # it becomes part of Iroha detail keys
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # pki.NAME_PATTERN (a certificate CN)
MAX_EXPECTED_WORKERS = 10_000


def _check_names(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_EXPECTED_WORKERS:
        raise ConfigError(f"{key}: must be a list of at most {MAX_EXPECTED_WORKERS} node names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not _NODE_NAME.match(name):
            raise ConfigError(f"{key}: {name!r} is not a node name (1-63 letters, digits, '.', '_', '-')")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key}: lists a node twice: {value!r}")
    return tuple(value)


def _check_value(key: str, hint: Any, value: Any) -> Any:
    if hint == tuple[str, ...]:
        return _check_names(key, value)
    literal_choices = get_args(hint) if getattr(hint, "__origin__", None) is Literal else ()
    if literal_choices:
        if value not in literal_choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, literal_choices))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        value = float(value)
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    if key in _POSITIVE and value < 1:
        raise ConfigError(f"{key}: must be >= 1, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value!r}")
    if key in _PORTS and value > 65535:
        raise ConfigError(f"{key}: must be a port number (1-65535), got {value!r}")
    return value


def _build_section(cls: type, section: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: must be a table, got {raw!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    values = {}
    for f in fields(cls):
        key = f"{section}.{f.name}"
        if f.name in raw:
            values[f.name] = _check_value(key, hints[f.name], raw[f.name])
        elif f.default is f.default_factory:  # both MISSING: required
            raise ConfigError(f"{key}: required key is missing")
    return cls(**values)


_SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "federation": FederationSection,
    "trainer": TrainerSection,
    "ledger": LedgerSection,
}


def config_from_dict(raw: dict[str, Any]) -> NodeConfig:
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(_SECTIONS)})")
    if "node" not in raw:
        raise ConfigError("node: required section is missing")
    sections = {name: _build_section(cls, name, raw[name]) for name, cls in _SECTIONS.items() if name in raw}
    config = NodeConfig(**sections)
    if not config.federation.robust_fraction < 0.5:
        raise ConfigError(
            f"federation.robust_fraction: must be below 0.5 (a majority of honest workers), "
            f"got {config.federation.robust_fraction!r}"
        )
    _check_dp(config.federation)
    _check_secure_aggregation(config.federation)
    if config.node.name in config.federation.expected_workers:
        raise ConfigError(f"federation.expected_workers: lists the node itself ({config.node.name!r})")
    _check_compression(config.federation)
    if config.ledger.backend == "iroha" and not config.ledger.torii:
        raise ConfigError("ledger.torii: required when ledger.backend is 'iroha'")
    if not _LEDGER_PROCESS.match(config.ledger.process):
        raise ConfigError(
            f"ledger.process: use 1-64 letters, digits or '_', got {config.ledger.process!r}"
        )
    return config


def _check_compression(federation: FederationSection) -> None:
    """federation.compression and broadcast_compression must parse (edgefed.compression holds the grammars)."""
    from edgefed.compression.settings import CompressionSettingError, parse_compression

    try:
        parse_compression(federation.compression)
    except CompressionSettingError as exc:
        raise ConfigError(str(exc)) from None
    from edgefed.compression.broadcast import BroadcastSettingError, parse_broadcast_compression

    try:
        parse_broadcast_compression(federation.broadcast_compression)
    except BroadcastSettingError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path) -> NodeConfig:
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, unreadable, or not text at all
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"{file}: cannot read the configuration ({reason}); give the node's TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def _toml_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(key, item) for item in value) + "]"
    raise ConfigError(f"{key}: cannot write {type(value).__name__} values to TOML")


def dump_config(raw: dict[str, dict[str, Any]]) -> str:
    """TOML text for a {section: {key: scalar}} mapping (what the demo and tests write)."""
    lines: list[str] = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(f'{section}.{key}', value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _check_secure_aggregation(federation: FederationSection) -> None:
    """federation.secure_aggregation: its ranges, and the features it rules out (docs/privacy.md)."""
    if federation.secure_aggregation_threshold < 2:
        raise ConfigError("federation.secure_aggregation_threshold: must be >= 2, "
                          f"got {federation.secure_aggregation_threshold!r}")
    if not 0 < federation.secure_aggregation_bound <= 1e6:
        raise ConfigError("federation.secure_aggregation_bound: must be > 0 and <= 1e6, "
                          f"got {federation.secure_aggregation_bound!r}")
    if not federation.secure_aggregation:
        return
    if federation.aggregation != "fedavg":
        raise ConfigError(f"federation.secure_aggregation: needs aggregation 'fedavg' (the chief sees only the sum, "
                          f"so {federation.aggregation!r} has no updates to compare), got {federation.aggregation!r}")
    if federation.screen_factor > 0:
        raise ConfigError("federation.secure_aggregation: rules out screen_factor (no single update to screen); "
                          "set screen_factor to 0")
    if federation.compression != "none":
        raise ConfigError("federation.secure_aggregation: quantizes updates itself with one shared scale; "
                          f"set compression to 'none', got {federation.compression!r}")


def _check_dp(federation: FederationSection) -> None:
    """federation.dp_*: the ranges; whether the accountant can meet the target is checked when a node starts."""
    if not federation.dp_epsilon >= 0:
        raise ConfigError(f"federation.dp_epsilon: must be >= 0 (0: off), got {federation.dp_epsilon!r}")
    if not 0 < federation.dp_delta < 1:
        raise ConfigError(f"federation.dp_delta: must be between 0 and 1 (exclusive), got {federation.dp_delta!r}")
    if not federation.dp_clip_norm > 0:
        raise ConfigError(f"federation.dp_clip_norm: must be > 0, got {federation.dp_clip_norm!r}")


DEFAULT_METRICS_PORT = 9477


@dataclass(frozen=True)
class MetricsSection:
    """[metrics]: the node's Prometheus endpoint (edgefed.observe.metrics), off unless enabled."""

    enabled: bool = False
    address: str = "127.0.0.1"  # an IP address of this host; 0.0.0.0 only behind a firewall
    port: int = DEFAULT_METRICS_PORT

    def __post_init__(self) -> None:
        import ipaddress

        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ConfigError(
                f"metrics.address: must be an IP address such as 127.0.0.1, got {self.address!r}"
            ) from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"metrics.port: must be a port number (1-65535), got {self.port!r}")


_SECTIONS["metrics"] = MetricsSection
