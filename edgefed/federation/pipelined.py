"""Folding an upload into the round's mean while it arrives (issue 14: big models, one staging buffer).

With one staging buffer (max_concurrent_uploads = 1, no read-ahead) the chief used to receive an
upload whole, check it for NaN/Inf in a second pass and fold it in a third, and only then could the
next upload start: at 64 MB the check and the fold held the buffer for about a third of the
upload's receive time while the next worker's bytes waited in the kernel.

A PartialFold is that upload's Destination (edgefed.wire): each time the reader asks where the next
bytes go, every whole chunk (running_mean.CHUNK elements) that has arrived since is checked and folded
into the round's float32 running mean, still in the CPU's cache from its decryption. The fold of a
chunk reads the chunk first and then writes the mean's previous values of that chunk into the
staging buffer in its place (running_mean.fold_chunk_keeping): the buffer the bytes arrived in
becomes the undo log, so no memory is added. Whatever ends the upload early — a NaN or Inf in a later
chunk, a disconnect, a bad frame, the upload's deadline, the round closing first, the chief shutting
down — copies those values back, and the mean is bit for bit what it was before the upload began:
a hostile or broken peer still costs only itself. Undoing is exact because nothing else folds into
the round while a PartialFold holds it (Round.partial): the chief waits for it before it folds its
own weights, whole uploads are never folded beside it (one staging buffer), and closing the round
undoes it. The upload becomes part of the round only when the chief commits it after its last byte;
until then it is not counted (samples, contributors, bytes), and a fold after the last chunk's is
arithmetic for arithmetic what folding the whole upload would have done (same shares, same
operations per element), so the mean does not depend on which way an upload was folded.

Only where that holds with no extra memory: fedavg (no distance before the fold: clip and screening
measure the whole update first), federation.compression none, no secure aggregation, every tensor
float32 and the model past running_mean.EXACT_SUM_MAX_BYTES (a float32 mean: the undo log is as wide
as the mean; a float64 sum's is not), one staging buffer and no read-ahead. Otherwise the upload is
received whole and folded afterwards, as before (PASSIVE).
"""

from __future__ import annotations

import bisect
import enum
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgefed.compression import NONE
from edgefed.federation.aggregation import StreamingAggregator
from edgefed.federation.rounds import Refusal, Round, RoundBook, RoundRules
from edgefed.federation.running_mean import CHUNK, borrowed_scratch, fold_chunk_keeping, fold_shares, folds_as_mean
from edgefed.wire import ReasonCode, TensorSpec

_ITEM = 4  # bytes per float32
RETRY_BYTES = 64 << 10  # the lock was taken or the round had no mean yet: try again after this many bytes


class State(enum.Enum):
    WAITING = "waiting"  # no whole chunk yet
    FOLDING = "folding"  # holds the round: chunks are folded as they arrive
    PASSIVE = "passive"  # a plain staging buffer: folded whole after its last byte, as before
    REFUSED = "refused"  # NaN or Inf in a chunk: undone, the rest is received and dropped
    UNDONE = "undone"  # ended early (round closed, upload failed): undone
    COMMITTED = "committed"


def pipelines(rules: RoundRules, specs: Sequence[TensorSpec], limit: int, readahead: int) -> bool:
    """Whether uploads of this model (specs: what an upload carries) are folded while they arrive."""
    float32 = all(np.dtype(spec.dtype) == np.float32 for spec in specs)
    return (rules.aggregation == "fedavg" and rules.compression == NONE and rules.secure_bound <= 0
            and rules.screen_factor <= 0 and float32 and folds_as_mean(sum(spec.nbytes for spec in specs))
            and limit == 1 and readahead == 0)


class PartialFold:
    """One upload's Destination: its staging buffers, folded chunk by chunk under the chief's lock."""

    def __init__(self, buffers: list[np.ndarray], book: RoundBook[Any], cond: threading.Condition, name: str,
                 round_number: int, num_samples: int) -> None:
        self.buffers = buffers
        self._book, self._cond, self._name = book, cond, name
        self._round_number, self._num_samples = round_number, num_samples
        self._flat = [array.reshape(-1) for array in buffers]
        self._views = [memoryview(array).cast("B") for array in buffers]  # type: ignore[arg-type]
        self._starts = [0]
        for array in buffers:
            self._starts.append(self._starts[-1] + array.nbytes)
        self._total = self._starts[-1]
        self._tensor = 0  # the tensor being folded; elements [0, _done) of it are folded
        self._done = 0
        self._round: Round | None = None
        self._aggregator: StreamingAggregator | None = None
        self._means: list[np.ndarray] = []
        self._keep = self._share = 0.0
        self.state = State.WAITING
        self._due = min(CHUNK * _ITEM, self._total)  # the byte offset at which to try folding next
        self.refusal: Refusal | None = None
        self.seconds = 0.0  # spent folding (the timeline's `add`)

    @property
    def folds(self) -> bool:
        """Whether this upload took the pipelined way (commit() decides it), not the whole-upload one."""
        return self.state not in (State.WAITING, State.PASSIVE)

    # -- Destination --------------------------------------------------------------------------------
    def view(self, offset: int) -> memoryview:
        if offset >= self._due and self.state in (State.WAITING, State.FOLDING):
            self._fold_to(offset)
        index = bisect.bisect_right(self._starts, offset) - 1  # the last of equal starts: not an empty tensor
        return self._views[index][offset - self._starts[index]:]

    def complete(self) -> list[np.ndarray]:
        if self.state in (State.WAITING, State.FOLDING):
            self._fold_to(self._total)
        return self.buffers

    # -- folding ------------------------------------------------------------------------------------
    def _ready(self, filled: int) -> list[tuple[int, int, int]]:
        """(tensor, start, stop) element spans that have arrived and are not folded: whole chunks, and a
        tensor's tail once the tensor is complete."""
        spans: list[tuple[int, int, int]] = []
        tensor, done = self._tensor, self._done
        while tensor < len(self._flat):
            size = self._flat[tensor].size
            have = min(size, max(filled - self._starts[tensor], 0) // _ITEM)
            stop = have if have == size else done + (have - done) // CHUNK * CHUNK
            spans.extend((tensor, start, min(start + CHUNK, stop)) for start in range(done, stop, CHUNK))
            if stop < size:
                break
            tensor, done = tensor + 1, 0
        return spans

    def _fold_to(self, filled: int) -> None:
        """Fold what has arrived. Before the last byte only if the chief's lock is free now: the chief may
        hold it for a while (folding its own weights, averaging), and the bytes keep coming meanwhile;
        the backlog is folded at the next try."""
        last = filled >= self._total
        spans = self._ready(filled)
        if not spans and not last:
            return
        if not self._cond.acquire(blocking=last):
            self._due = filled + RETRY_BYTES
            return
        try:
            if self.state is State.WAITING:
                self._claim(last)
            if self.state is not State.FOLDING:
                self._due = filled + RETRY_BYTES
                return
            started = time.perf_counter()
            with borrowed_scratch() as scratch:
                for tensor, start, stop in spans:
                    if not fold_chunk_keeping(self._means[tensor], self._flat[tensor], slice(start, stop),
                                              self._keep, self._share, scratch):
                        self.refusal = Refusal(ReasonCode.NON_FINITE, f"tensor {tensor} contains NaN or Inf")
                        self._undo(State.REFUSED)
                        break
                    self._tensor, self._done = tensor, stop
                    if stop == self._flat[tensor].size:
                        self._tensor, self._done = tensor + 1, 0
            while self.state is State.FOLDING and self._tensor < len(self._flat) and not self._flat[self._tensor].size:
                self._tensor += 1  # empty tensors: nothing to fold
            self.seconds += time.perf_counter() - started
            if self.state is not State.FOLDING:
                self._cond.notify_all()  # refused and undone: the round no longer waits for this fold
            elif self._tensor < len(self._flat):  # where the next chunk is whole
                self._due = self._starts[self._tensor] + min(self._done + CHUNK, self._flat[self._tensor].size) * _ITEM
        finally:
            self._cond.release()

    def _claim(self, last: bool) -> None:
        """Take the open round for this upload if nothing else folds into it (under the lock). Not before
        the round's mean exists (the chief's own weights usually make it) or the upload's last byte: a
        new mean made earlier could sit beside the previous global weights, still held until the
        previous round's broadcast and checkpoint are over (one model more at the chief's peak)."""
        current = self._book.current
        if (current is None or current.number != self._round_number or not current.open
                or current.partial is not None or self._name in current.submitted
                or type(current.aggregator) is not StreamingAggregator):
            self.state = State.PASSIVE  # the whole-upload way gives the refusal (stale, duplicate)
            return
        aggregator = current.aggregator
        if not aggregator.started and not last:
            return  # WAITING: the chunks that arrived meanwhile are folded at the claim
        means = aggregator.accumulators()
        if any(mean.dtype != np.float32 or mean.size != flat.size
               for mean, flat in zip(means, self._flat, strict=True)):
            self.state = State.PASSIVE
            return
        self._round, self._aggregator, self._means = current, aggregator, [mean.reshape(-1) for mean in means]
        self._keep, self._share = fold_shares(means[0], aggregator.total_samples, self._num_samples)
        current.partial = self
        self.state = State.FOLDING

    def undo(self) -> None:
        """Round.partial's undo: the round closes before this upload was committed (under the lock)."""
        self._undo(State.UNDONE)

    def _undo(self, state: State) -> None:
        if self.state is not State.FOLDING:
            return
        for tensor in range(min(self._tensor + 1, len(self._flat))):
            stop = self._done if tensor == self._tensor else self._flat[tensor].size
            np.copyto(self._means[tensor][:stop], self._flat[tensor][:stop])  # the mean's values before
        assert self._round is not None
        self._round.partial = None
        self.state = state

    # -- the chief's side ---------------------------------------------------------------------------
    def abandon(self) -> None:
        """The upload is over without being committed (it failed, or was refused): undo (under the lock)."""
        self._undo(State.UNDONE)

    def commit(self, wire_bytes: int) -> Refusal | None:
        """After the last byte (under the lock): the update is in the round, or why it is refused."""
        if self.state is State.REFUSED:
            return self.refusal
        if (self.state is not State.FOLDING or self._round is None or self._aggregator is None
                or self._tensor < len(self._flat)):
            self._undo(State.UNDONE)
            return Refusal(ReasonCode.STALE, f"stale update for round {self._round_number}; the round has closed")
        self._aggregator.counted(self._num_samples, self._name)
        self._book.taken(self._round, self._name, wire_bytes)
        self._round.partial = None
        self.state = State.COMMITTED
        return None
