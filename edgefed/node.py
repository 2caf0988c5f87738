"""Runs one node (chief or worker) from its configuration: the service behind `edgefed chief|worker`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from edgefed.config import NodeConfig, TrainerSection
from edgefed.contracts.events import EventBus
from edgefed.errors import UsageError
from edgefed.federation.chief import ChiefSession
from edgefed.federation.dp import PrivateTrainer, plan_for
from edgefed.federation.driver import RoundReport, run_federated
from edgefed.federation.model_push import model_frames
from edgefed.federation.worker import WorkerSession
from edgefed.membership import MembershipWatcher
from edgefed.observe.node import NodeObserver
from edgefed.trainers.base import Trainer
from edgefed.transport import Transport, reload_on_sighup
from edgefed.wiring import build_session

if TYPE_CHECKING:
    from edgefed.lite_export.softmax import ExportedSoftmax

log = logging.getLogger(__name__)


def make_trainer(section: TrainerSection) -> Trainer:
    if section.kind == "numpy":
        from edgefed.trainers.softmax import SoftmaxTrainer

        return SoftmaxTrainer(section.learning_rate, section.batch_size, section.seed)
    if section.kind == "keras":
        from edgefed.tf.trainer import trainer_for_section  # TensorFlow only when asked for

        return trainer_for_section(section)
    raise UsageError(f"trainer.kind: {section.kind!r} trainer is not available in this installation")


def _stop_on_sigterm(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def run_node(
    config: NodeConfig,
    exit_when_done: bool = False,
    progress: Callable[[dict[str, object]], None] | None = None,
    events: EventBus | None = None,
    attack: str | None = None,
    transport: Transport | None = None,
    config_path: str | Path | None = None,
) -> list[RoundReport]:
    """Train as the configured role until the chief ends training; then, unless exit_when_done, keep
    serving (the chief answers late joiners and ledger deliveries) until SIGTERM. config_path: the
    chief's expected workers follow that file's federation.expected_workers (membership.py)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        _stop_on_sigterm(stop)
        reload_on_sighup()  # systemctl reload: re-read the certificate, key and CRL (no restart)
    dp_plan = plan_for(config.federation)  # first: a privacy target that cannot be met stops the node here
    _require_model_writer(config)
    # Every transfer this node observes goes, signed, into its ledger outbox; on the chief (embedded
    # backend) the federation listener also takes the workers' ledger deliveries (LEDGER_PUSH).
    bus = events or EventBus()
    session = build_session(config, bus, transport=transport)
    try:
        observer = NodeObserver.start(config, session.status, bus)  # history, status accuracy, metrics
    except BaseException:
        session.close()  # e.g. the metrics port is taken: nothing of this node stays open
        raise
    base = trainer = make_trainer(config.trainer)
    private = PrivateTrainer(base, dp_plan, config.node.state_dir) if dp_plan is not None else None
    if private is not None:  # every update this node sends is clipped and noised (docs/privacy.md)
        trainer = private
        session.status.update(dp_epsilon=0.0, dp_epsilon_target=dp_plan.epsilon)  # type: ignore[union-attr]
    if attack:  # a simulated hostile worker (demo, poisoning benchmark)
        from edgefed.attacks import AttackingTrainer

        trainer = AttackingTrainer(trainer, attack, seed=config.trainer.seed)

    every = config.federation.push_model_every if config.federation.push_model else 0

    def on_round(report: RoundReport) -> None:
        record = asdict(report)
        log.info("round %s", json.dumps(record))
        observer.round(report, dp_epsilon=None if private is None else private.spent_epsilon)
        if progress is not None:
            progress(record)
        if every and not report.finished and report.round % every == 0:  # the workers' model so far
            _export(config, base, session, report.round)

    members = None  # the chief: expected_workers re-read on change or SIGHUP (membership.py)
    if config_path is not None and isinstance(session, ChiefSession):
        members = MembershipWatcher(config_path, config.federation.expected_workers,
                                    session.set_expected_workers).start()
    try:
        reports = run_federated(session, trainer, config.federation.interval_steps, on_round)
        if reports:
            _export(config, base, session, reports[-1].round)
        if config.node.role == "worker" and config.federation.push_model:
            assert isinstance(session, WorkerSession)
            session.wait_for_model(config.federation.model_wait)
        if progress is not None:
            progress({"done": True, "bytes_sent": session.bytes_sent, "bytes_received": session.bytes_received})
        if not exit_when_done:
            log.info("training finished; serving until stopped")
            stop.wait()
        return reports
    finally:
        if members is not None:
            members.close()
        session.close()  # the ledger hooks close first, then the session
        observer.close()


def _export(config: NodeConfig, trainer: Trainer, session: object, round_number: int) -> None:
    """The chief's model as .tflite files (Keras: also .keras); sent to the workers with push_model."""
    if config.node.role != "chief":
        return
    if config.trainer.kind == "numpy":
        written = _export_softmax(config, trainer, round_number)
        if written is None:
            return
        manifest_path, model_path = written.manifest_path, written.float_path
    elif config.trainer.kind == "keras":
        from edgefed.tf.trainer import KerasClassifierTrainer

        assert isinstance(trainer, KerasClassifierTrainer)
        exported = trainer.export(_export_directory(config), round_number, config.node.name)
        manifest_path, model_path = exported.manifest_path, exported.float_path
    else:
        return
    log.info("model of round %d exported to %s", round_number, manifest_path)
    if config.federation.push_model:
        _push_model(session, model_path.read_bytes(), round_number)


def _export_softmax(config: NodeConfig, trainer: Trainer, round_number: int) -> ExportedSoftmax | None:
    """The numpy trainer's model, written without TensorFlow; None when the writer is not installed
    (only without push_model: run_node refuses to start a chief that would have nothing to push)."""
    try:
        from edgefed.lite_export.softmax import export_softmax
    except ImportError as exc:
        log.warning("model of round %d not exported: %s (pip install 'edgefed[demo]')", round_number, exc)
        return None
    from edgefed.trainers.softmax import SoftmaxTrainer

    assert isinstance(trainer, SoftmaxTrainer)
    return export_softmax(trainer, _export_directory(config), round_number=round_number, node=config.node.name)


def _export_directory(config: NodeConfig) -> Path:
    """Where the chief exports its model, whichever the trainer: trainer.export_dir, or STATE_DIR/model."""
    return Path(config.trainer.export_dir or Path(config.node.state_dir) / "model")


def _require_model_writer(config: NodeConfig) -> None:
    """A numpy chief with push_model needs the .tflite writer's flatbuffers: say so before training."""
    if config.node.role != "chief" or config.trainer.kind != "numpy" or not config.federation.push_model:
        return
    try:
        import edgefed.lite_export.writer  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"federation.push_model: the numpy model's .tflite writer cannot load ({exc}); "
                         "pip install 'edgefed[demo]'") from None


def _push_model(session: object, data: bytes, round_number: int) -> None:
    """The chief sends the exported float .tflite to every connected worker (federation.push_model)."""
    assert isinstance(session, ChiefSession)
    sent = session.push_to_workers(model_frames(data, round_number))
    log.info("model of round %d (%d bytes) sent to %s (%d bytes on the wire)", round_number, len(data),
             ", ".join(session.participants()) or "no worker", sent)


def print_jsonl(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
