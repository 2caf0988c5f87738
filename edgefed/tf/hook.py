"""`FederatedHook`: the seed's graph-mode `tf.compat.v1.train.SessionRunHook`, on edgefed's protocol.

For users of the original coMind/BSMD hook: same constructor parameters (mapped onto a NodeConfig by
edgefed.tf.seed_params), same life cycle:

- begin: placeholders and assign ops for every averaged variable (the graph is finalized after it);
- after_create_session: join (the chief waits wait_time for its workers), adopt the chief's weights;
- after_run: every interval_steps training steps send the variables, inject the average; stop at the
  last round. A step is an increment of the global step when the graph has one (so evaluation runs do
  not count), otherwise one run of the session, as in the seed;
- end: a chief whose loop ended early makes that round the final one; everyone leaves cleanly.

Graph mode needs `tf.compat.v1.disable_eager_execution()` before the graph is built, in its own process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from edgefed.config import NodeConfig
from edgefed.contracts.events import EventBus
from edgefed.federation.session import StartInfo
from edgefed.tf.callback import FederationSession, SyncRecord, open_session
from edgefed.tf.seed_params import DEFAULT_PKI_DIR, config_from_seed_params

log = logging.getLogger(__name__)


class FederatedHook(tf.compat.v1.train.SessionRunHook):
    """Federated averaging every `interval_steps` steps of a tf.compat.v1 (Monitored)Session.

    Seed parameters: is_chief, name, private_ip, public_ip, private_key, list_of_workers, domain, ip,
    wait_time, interval_steps (see edgefed.tf.seed_params for what each becomes). Keyword-only:
    pki_dir, state_dir, rounds, server_name, extra (more configuration keys), num_samples (this node's
    weight in the average), variables (what to average; default: the trainable variables), events.
    `FederatedHook.from_config(config)` skips the seed parameters.
    """

    def __init__(
        self,
        is_chief: bool,
        name: str,
        private_ip: str,
        public_ip: str,
        private_key: str | Path | None,
        list_of_workers: Sequence[str],
        domain: str,
        ip: str | None,
        wait_time: float = 30,
        interval_steps: int = 100,
        *,
        pki_dir: str = DEFAULT_PKI_DIR,
        state_dir: str | None = None,
        rounds: int | None = None,
        server_name: str | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        num_samples: int = 1,
        variables: Sequence[tf.Variable] | None = None,
        events: EventBus | None = None,
    ) -> None:
        config = config_from_seed_params(
            is_chief, name, private_ip, public_ip, private_key, list_of_workers, domain, ip, wait_time,
            interval_steps, pki_dir=pki_dir, state_dir=state_dir, rounds=rounds, server_name=server_name,
            extra=extra,
        )
        self._configure(config, num_samples, variables, events, None)

    @classmethod
    def from_config(
        cls,
        config: NodeConfig,
        *,
        num_samples: int = 1,
        variables: Sequence[tf.Variable] | None = None,
        events: EventBus | None = None,
        session: FederationSession | None = None,
    ) -> FederatedHook:
        hook = cls.__new__(cls)
        hook._configure(config, num_samples, variables, events, session)
        return hook

    def _configure(
        self,
        config: NodeConfig,
        num_samples: int,
        variables: Sequence[tf.Variable] | None,
        events: EventBus | None,
        session: FederationSession | None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.config = config
        self.is_chief = config.node.role == "chief"
        self.interval_steps = config.federation.interval_steps
        self.num_samples = num_samples
        self._requested_variables = list(variables) if variables is not None else None
        self._events = events
        self._session = session
        self._variables: list[tf.Variable] = []
        self._placeholders: list[Any] = []
        self._assign_op: Any = None
        self._global_step: Any = None
        self._last_global_step = 0
        self._next_sync = self.interval_steps
        self.start_info: StartInfo | None = None
        self.task_index = -1
        self.total = 0
        self.round = 0
        self.steps = 0
        self.finished = False
        self.history: list[SyncRecord] = []
        self.final_weights: list[np.ndarray] | None = None
        self._closed = False

    @property
    def session(self) -> FederationSession:
        if self._session is None:
            self._session = open_session(self.config, self._events)
        return self._session

    def join(self, weights: list[np.ndarray] | None = None) -> StartInfo:
        """Join now (a worker may, to learn its task index before building its input pipeline);
        otherwise after_create_session does. The chief joins with its initialised variables."""
        if self.start_info is None:
            if self.is_chief and weights is None:
                raise ValueError("the chief joins in after_create_session, with its initialised variables")
            self.start_info = self.session.start(weights, self.num_samples)
            self.task_index, self.total = self.start_info.task_index, self.start_info.total
            self.round, self.finished = self.start_info.round, self.start_info.finished
            log.info("joined as task %d of %d at round %d", self.task_index, self.total, self.round)
        return self.start_info

    # -- SessionRunHook ---------------------------------------------------------------------------
    def begin(self) -> None:
        self._global_step = tf.compat.v1.train.get_global_step()
        self._variables = self._requested_variables or list(tf.compat.v1.trainable_variables())
        if not self._variables:
            raise ValueError("FederatedHook: the graph has no trainable variables to average")
        with tf.compat.v1.name_scope("federated_averaging"):
            self._placeholders = [
                tf.compat.v1.placeholder(v.dtype.base_dtype, shape=v.shape, name=f"{v.op.name}_average")
                for v in self._variables
            ]
            self._assign_op = tf.group(
                *[tf.compat.v1.assign(v, p) for v, p in zip(self._variables, self._placeholders, strict=True)]
            )

    def after_create_session(self, session: tf.compat.v1.Session, coord: Any) -> None:
        start = self.join(self._read(session) if self.is_chief else None)
        self._inject(session, start.weights)
        if self._global_step is not None:
            self._last_global_step = int(session.run(self._global_step))

    def before_run(self, run_context: tf.compat.v1.train.SessionRunContext) -> None:
        if self.finished:
            run_context.request_stop()

    def after_run(self, run_context: tf.compat.v1.train.SessionRunContext, run_values: Any) -> None:
        if self.finished:
            run_context.request_stop()
            return
        if self._global_step is None:
            self.steps += 1
        else:
            # Read it after the run: a value fetched with the run may be the one before the increment.
            global_step = int(run_context.session.run(self._global_step))
            self.steps += global_step - self._last_global_step
            self._last_global_step = global_step
        if self.steps >= self._next_sync:
            self._next_sync += self.interval_steps
            self._synchronise(run_context.session, final=None)
            if self.finished:
                run_context.request_stop()

    def end(self, session: tf.compat.v1.Session) -> None:
        try:
            if self.is_chief and not self.finished and self.start_info is not None:
                self._synchronise(session, final=True)  # the loop ended first: this is the last round
            self.final_weights = self._read(session)
        finally:
            self.close()

    # -- internals --------------------------------------------------------------------------------
    def _read(self, session: tf.compat.v1.Session) -> list[np.ndarray]:
        return [np.asarray(value) for value in session.run(self._variables)]

    def _inject(self, session: tf.compat.v1.Session, weights: list[np.ndarray]) -> None:
        if len(weights) != len(self._placeholders):
            raise ValueError(f"got {len(weights)} tensors for {len(self._placeholders)} averaged variables")
        session.run(self._assign_op, feed_dict=dict(zip(self._placeholders, weights, strict=True)))

    def _synchronise(self, session: tf.compat.v1.Session, final: bool | None) -> None:
        result = self.session.average(self._read(session), self.num_samples, final)
        self._inject(session, result.weights)
        self.round, self.finished = result.round, result.finished
        self.history.append(SyncRecord(self.steps, result.round, list(result.participants), result.finished))

    def close(self) -> None:
        if not self._closed and self._session is not None:
            self._closed = True
            self._session.close()
