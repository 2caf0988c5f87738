"""Progress reporting for file transfers: a small interface, and a rich progress bar behind it."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class ProgressTask(Protocol):
    def advance(self, nbytes: int) -> None: ...

    def close(self) -> None: ...


class ProgressFactory(Protocol):
    def __call__(self, label: str, total: int, completed: int) -> ProgressTask:
        """A task for one transfer of total bytes, completed of which are already done (resume)."""
        ...


class RichProgress:
    """One rich progress display shared by every transfer of a command (use as a context manager)."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()

    def __call__(self, label: str, total: int, completed: int) -> ProgressTask:
        with self._lock:
            task = self._progress.add_task(label, total=total, completed=completed)
        return _RichTask(self._progress, task)


class _RichTask:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)

    def close(self) -> None:
        self._progress.stop_task(self._task)
