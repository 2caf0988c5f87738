"""`FederatedCallback`: federated averaging for `keras.Model.fit`, over edgefed's chief/worker protocol.

    callback = FederatedCallback(load_config("/etc/edgefed/edgefed.toml"))
    start = callback.join(model)                      # optional: learn the task index before fit
    x, y = x_all[start.task_index::start.total], y_all[start.task_index::start.total]
    callback.num_samples = len(x)
    model.fit(x, y, epochs=1000, callbacks=[callback])  # stops when the chief ends the federation

At train begin every participant adopts the chief's starting weights; every `interval_steps` batches
it hands its weights to the federation and continues from the weighted average; the chief's last
round (federation.rounds) stops `fit` everywhere, so every node ends with the same weights. At train
end a worker leaves cleanly, and a chief whose `fit` ran out of epochs first makes that round the
final one, so its workers stop too. Optionally the chief exports the final model (edgefed.tf.export).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import keras
import numpy as np

from edgefed.config import NodeConfig
from edgefed.contracts.events import EventBus
from edgefed.federation.session import RoundResult, StartInfo
from edgefed.tf.export import ExportedModel, export_model

log = logging.getLogger(__name__)


class FederationSession(Protocol):
    """What ChiefSession and WorkerSession offer the training loop."""

    def start(self, weights: list[np.ndarray] | None, num_samples: int = 0) -> StartInfo: ...

    def average(self, weights: list[np.ndarray], num_samples: int, final: bool | None = None) -> RoundResult: ...

    def close(self) -> None: ...


def open_session(config: NodeConfig, events: EventBus | None = None) -> FederationSession:
    """The chief or worker session node.role asks for, with every transfer signed into the node's ledger
    outbox, as the `edgefed chief|worker` services run it (edgefed.wiring). Not connected until start()."""
    from edgefed.wiring import build_session  # the federation and ledger only when a session is opened

    return build_session(config, events)


@dataclass(frozen=True)
class SyncRecord:
    """One synchronisation as this node saw it (kept in `FederatedCallback.history`)."""

    step: int
    round: int
    participants: list[str]
    finished: bool


class FederatedCallback(keras.callbacks.Callback):
    """Joins the federation configured in `config` (as chief or worker, by node.role) and averages the
    model's weights every `interval_steps` training batches (default: federation.interval_steps).

    num_samples weighs this node's contribution to the average; by default it is the number of batches
    per epoch, which is proportional to the shard size when every node uses the same batch size.
    export_dir: where the chief writes .keras/.tflite/manifest.json when training ends (none if empty);
    labels and test_data go into the manifest.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        interval_steps: int | None = None,
        num_samples: int | None = None,
        events: EventBus | None = None,
        session: FederationSession | None = None,
        export_dir: str | os.PathLike[str] | None = None,
        labels: Sequence[str] | None = None,
        test_data: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.is_chief = config.node.role == "chief"
        self.interval_steps = interval_steps or config.federation.interval_steps
        if self.interval_steps < 1:
            raise ValueError(f"interval_steps must be >= 1, got {self.interval_steps}")
        self.num_samples = num_samples
        self._events = events
        self._session = session
        self.export_dir = export_dir
        self.labels = list(labels) if labels is not None else None
        self.test_data = test_data
        self.start_info: StartInfo | None = None
        self.round = 0
        self.finished = False
        self.steps = 0
        self.history: list[SyncRecord] = []
        self.exported: ExportedModel | None = None
        self._applied_start = False
        self._closed = False

    # -- joining ----------------------------------------------------------------------------------
    @property
    def session(self) -> FederationSession:
        if self._session is None:
            self._session = open_session(self.config, self._events)
        return self._session

    def join(self, model: keras.Model | None = None) -> StartInfo:
        """Connect and receive the task index, the number of participants and the starting weights.

        Called by fit at train begin if not before; call it first to pick the data shard by task index.
        The chief waits here for its workers (federation.wait_time / min_workers) and needs the model
        (its weights are the starting point everyone adopts).
        """
        if self.start_info is not None:
            return self.start_info
        target = model if model is not None else self._model_or_none()
        if self.is_chief and target is None:
            raise ValueError("the chief's join() needs the model: its weights start the federation")
        weights = None if target is None else _weights_of(target)
        self.start_info = self.session.start(weights, self.num_samples or 0)
        self.round, self.finished = self.start_info.round, self.start_info.finished
        log.info("joined as task %d of %d at round %d", self.start_info.task_index, self.start_info.total,
                 self.round)
        return self.start_info

    def _model_or_none(self) -> keras.Model | None:
        return getattr(self, "_model", None)  # Keras 3 keeps the model set by set_model() here

    # -- keras.callbacks.Callback -----------------------------------------------------------------
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        start = self.join(self.model)
        if not self._applied_start:
            self.model.set_weights(start.weights)
            self._applied_start = True
        if self.num_samples is None:
            self.num_samples = int(self.params.get("steps") or 1)
        if self.finished:  # e.g. a restarted chief whose checkpoint says training is over
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.finished:
            self.model.stop_training = True
            return
        self.steps += 1
        if self.steps % self.interval_steps == 0:
            self._synchronise(final=None)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            if self.is_chief and not self.finished and self.start_info is not None:
                # fit ran out of epochs before federation.rounds: make this the last round for everyone.
                self._synchronise(final=True)
            if self.is_chief and self.finished and self.export_dir:
                self.exported = self._export()
        finally:
            self.close()

    # -- internals --------------------------------------------------------------------------------
    def _synchronise(self, final: bool | None) -> None:
        result = self.session.average(_weights_of(self.model), int(self.num_samples or 1), final)
        self.model.set_weights(result.weights)
        self.round, self.finished = result.round, result.finished
        self.history.append(SyncRecord(self.steps, result.round, list(result.participants), result.finished))
        if result.finished:
            self.model.stop_training = True

    def _export(self) -> ExportedModel:
        assert self.export_dir is not None
        labels = self.labels
        if labels is None:
            labels = [str(i) for i in range(int(self.model.outputs[0].shape[-1]))]
        return export_model(
            self.model, self.export_dir, round_number=self.round, labels=labels, test_data=self.test_data,
            extra={"node": self.config.node.name},
        )

    def __enter__(self) -> FederatedCallback:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # fit does not call on_train_end when it raises

    def close(self) -> None:
        """Leave the federation (idempotent): a worker says goodbye, the chief closes its listener."""
        if not self._closed and self._session is not None:
            self._closed = True
            self._session.close()


def _weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]
