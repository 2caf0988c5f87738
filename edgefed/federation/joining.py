"""Who the chief waits for before round 1, and which shard of the data each worker trains on.

Pure rules (no sockets, threads or clock), used by rounds.RoundBook under the chief's lock.

A fleet's workers join in whatever order their installs finish. Task indices must therefore not depend
on that order, and every index handed out must fit the shard count sent with it (a worker's trainer
refuses `task_index >= total`). The expected workers (federation.expected_workers, written by the
playbooks from the inventory's workers group) get fixed indices 1..N in the order listed; anyone else
takes the next free index when it first joins. The shard count covers every index handed out so far,
so a late or unexpected joiner shares data with nobody's index but its own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


class JoinPlan:
    """Task indices and the start condition for one federation."""

    def __init__(self, expected: Sequence[str] = (), min_workers: int = 0) -> None:
        self.expected = tuple(dict.fromkeys(expected))  # order kept, duplicates dropped
        self.min_workers = min_workers
        self.indices: dict[str, int] = {name: index for index, name in enumerate(self.expected, start=1)}
        self._next = len(self.expected) + 1

    def set_expected(self, expected: Sequence[str]) -> tuple[list[str], list[str]]:
        """A new expected set (a membership reload); returns (added, removed). Indices handed out stay;
        a newly expected worker takes the next free one, a removed one is no longer waited for."""
        new = tuple(dict.fromkeys(expected))
        added = [name for name in new if name not in self.expected]
        removed = [name for name in self.expected if name not in new]
        self.expected = new
        for name in added:
            self.task_index_for(name)
        return added, removed

    def task_index_for(self, name: str) -> int:
        """An expected worker's fixed index; otherwise the next free one, kept across reconnections."""
        index = self.indices.get(name)
        if index is None:
            index = self.indices[name] = self._next
            self._next += 1
        return index

    def shard_count(self, alive: int) -> int:
        """The `total` a WELCOME carries: every index handed out fits below it (the chief is task 0)."""
        return max(alive + 1, self._next)

    def ready(self, alive: Collection[str]) -> bool:
        """Whether round 1 may start before wait_time runs out: every expected worker has joined (when
        some are expected), or min_workers have (when set)."""
        if self.expected:
            return not self.missing(alive)
        return bool(self.min_workers) and len(alive) >= self.min_workers

    def missing(self, alive: Collection[str]) -> list[str]:
        """Expected workers not connected, in the order listed."""
        return [name for name in self.expected if name not in alive]
