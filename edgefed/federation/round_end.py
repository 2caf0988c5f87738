"""What the chief does once a round is averaged: the checkpoint, the broadcast, the status file —
with as little of it as possible between the average and the next broadcast.

Checkpoints (federation.checkpoint_every = K):
- K = 1 (default): every round's checkpoint is written while the broadcast runs and is on disk
  before average() returns, so a chief killed after round R resumes at round R (or R-1 when it died
  between the average and the write: that round is repeated).
- K > 1: a checkpoint every K rounds (rounds K, 2K, ...) and at the last round, written in the
  background while the next rounds train; at most one write is in flight (the next due one waits
  for it) and the last round's is awaited. A chief killed after round R resumes at the last
  checkpoint on disk: a multiple of K, at most 2K-1 rounds back; those rounds are trained again.
A failed write (disk full) stops the chief with its error, at the latest when the next one is due.

The status file is rewritten on its own thread (the final round's write is awaited), so a slow
SD card delays the file, never the round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from edgefed.contracts.status import StatusFile
from edgefed.federation.checkpoint import Checkpoint, save_checkpoint
from edgefed.federation.rounds import Seat
from edgefed.federation.timeline import RoundTimeline

log = logging.getLogger(__name__)

W = TypeVar("W", bound=Seat)
Broadcast = Callable[[list[W], int, list[np.ndarray], bool], int]


def checkpoint_due(next_round: int, final: bool, every: int) -> bool:
    """Whether the weights that open next_round are checkpointed (always the last round's)."""
    return final or every <= 1 or next_round % every == 0


class RoundEnd(Generic[W]):
    def __init__(
        self, state_dir: str | Path, checkpoint_every: int, status: StatusFile, timeline: RoundTimeline,
        broadcast: Broadcast[W], participants: Callable[[], list[str]],
    ) -> None:
        self._state_dir = state_dir
        self.checkpoint_every = checkpoint_every
        self._status = status
        self._timeline = timeline
        self._broadcast = broadcast
        self._participants = participants
        # Long-lived single threads: writes keep their order and a round never pays for a thread start.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chief-checkpoint")
        self._status_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chief-status")
        self._in_flight: Future[None] | None = None  # a trailing checkpoint write

    def finish(
        self, closed_round: int, recipients: list[W], next_round: int, weights: list[np.ndarray], final: bool,
        after_checkpoint: Callable[[], None] | None = None,
    ) -> int:
        """Checkpoint (when due), broadcast next_round's weights, update the status file; returns the
        bytes broadcast. closed_round is the round the timeline charges. after_checkpoint runs on the
        writer thread after the checkpoint (every round, due or not): the model's provenance record."""
        timeline = self._timeline
        due = checkpoint_due(next_round, final, self.checkpoint_every)
        writing: Future[None] | None = None
        if due:
            with timeline.span(closed_round, "checkpoint"):
                self._settle()  # at most one write in flight; an earlier failure surfaces here
            writing = self._writer.submit(self._write, Checkpoint(next_round, weights, final))
        following: Future[None] | None = None
        if after_checkpoint is not None:  # one writer thread: it runs after the checkpoint it follows
            following = self._writer.submit(self._run_logged, after_checkpoint)
        started = time.perf_counter()
        sent = self._broadcast(recipients, next_round, weights, final)
        timeline.add(closed_round, "broadcast", time.perf_counter() - started)
        timeline.broadcast_done(next_round)
        if writing is not None:
            if final or self.checkpoint_every <= 1:
                with timeline.span(closed_round, "checkpoint"):
                    writing.result()  # a failed write (disk full) stops the chief with its error
            else:
                self._in_flight = writing
        if following is not None and (final or self.checkpoint_every <= 1):
            following.result()  # as before K existed: the round's record is made before the next round
        state = "finished" if final else "training"
        if final:
            self._write_status(state, next_round)
        else:
            self._status_writer.submit(self._write_status_logged, state, next_round)
        return sent

    def _write(self, checkpoint: Checkpoint) -> None:
        started = time.perf_counter()
        save_checkpoint(self._state_dir, checkpoint)
        self._timeline.add_background("checkpoint_write", time.perf_counter() - started)

    def _write_status(self, state: str, round_number: int) -> None:
        started = time.perf_counter()
        # participants as of the write: a worker dropped meanwhile is not written back in
        self._status.update(state=state, round=round_number, participants=self._participants())
        self._timeline.add_background("status", time.perf_counter() - started)

    def _write_status_logged(self, state: str, round_number: int) -> None:
        try:
            self._write_status(state, round_number)
        except OSError as exc:  # nobody waits for this write: the operator sees it in the log
            log.error("cannot write the status file: %s", exc)

    @staticmethod
    def _run_logged(step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # nobody waits for it: the operator sees it in the log, the rounds go on
            log.exception("a step after the checkpoint failed")

    def _settle(self) -> None:
        writing, self._in_flight = self._in_flight, None
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """Wait for the writes in flight (a trailing checkpoint lands before the chief exits)."""
        try:
            self._settle()
        except Exception as exc:  # shutting down: the error is reported, not raised
            log.error("the last checkpoint could not be written: %s", exc)
        finally:
            self._writer.shutdown(wait=True)
            self._status_writer.shutdown(wait=True)
