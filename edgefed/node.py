"""Runs one node (chief or worker) from its configuration: the service behind `edgefed chief|worker`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from types import FrameType

from edgefed.config import NodeConfig, TrainerSection
from edgefed.contracts.events import EventBus
from edgefed.errors import UsageError
from edgefed.federation.driver import RoundReport, run_federated
from edgefed.observe.node import NodeObserver
from edgefed.trainers.base import Trainer
from edgefed.transport import Transport, reload_on_sighup
from edgefed.wiring import build_session

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
) -> list[RoundReport]:
    """Train as the configured role until the chief ends training; then, unless exit_when_done, keep
    serving (the chief answers late joiners and ledger deliveries) until SIGTERM."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        _stop_on_sigterm(stop)
        reload_on_sighup()  # systemctl reload: re-read the certificate, key and CRL (no restart)
    # Every transfer this node observes goes, signed, into its ledger outbox; on the chief (embedded
    # backend) the federation listener also takes the workers' ledger deliveries (LEDGER_PUSH).
    bus = events or EventBus()
    session = build_session(config, bus, transport=transport)
    try:
        observer = NodeObserver.start(config, session.status, bus)  # history, status accuracy, metrics
    except BaseException:
        session.close()  # e.g. the metrics port is taken: nothing of this node stays open
        raise
    trainer = make_trainer(config.trainer)
    if attack:  # a simulated hostile worker (demo, poisoning benchmark)
        from edgefed.attacks import AttackingTrainer

        trainer = AttackingTrainer(trainer, attack, seed=config.trainer.seed)

    def on_round(report: RoundReport) -> None:
        record = asdict(report)
        log.info("round %s", json.dumps(record))
        observer.round(report)
        if progress is not None:
            progress(record)

    try:
        reports = run_federated(session, trainer, config.federation.interval_steps, on_round)
        if config.node.role == "chief" and config.trainer.kind == "keras" and reports:
            from edgefed.tf.trainer import KerasClassifierTrainer, export_directory

            assert isinstance(trainer, KerasClassifierTrainer)
            exported = trainer.export(export_directory(config), reports[-1].round, config.node.name)
            log.info("final model exported to %s", exported.manifest_path)
        if progress is not None:
            progress({"done": True, "bytes_sent": session.bytes_sent, "bytes_received": session.bytes_received})
        if not exit_when_done:
            log.info("training finished; serving until stopped")
            stop.wait()
        return reports
    finally:
        session.close()  # the ledger hooks close first, then the session
        observer.close()


def print_jsonl(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
