"""The chief's expected workers follow the configuration file without a restart (a membership reload).

The playbooks rewrite federation.expected_workers when a worker is added to or removed from the
inventory and ask systemd to reload the chief (SIGHUP) instead of restarting it. This watcher re-reads
the file when it changes or on SIGHUP, takes only expected_workers from it and hands the new set to
the chief session: round 1 (or a resumed chief's first round) stops waiting for a removed worker, and
the training in progress goes on. Any other change in the file waits for the next restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from edgefed.config import ConfigError, load_config
from edgefed.transport import reload_requests

log = logging.getLogger(__name__)

LOOK_EVERY = 1.0  # seconds between looks at the file (a stat, and a parse only when it changed)


def _fingerprint(path: Path) -> tuple[object, ...]:
    try:
        stat = os.stat(path)
    except OSError:
        return (reload_requests(), None)
    return (reload_requests(), stat.st_ino, stat.st_mtime_ns, stat.st_size)


class MembershipWatcher:
    """Calls apply(names) whenever the file's federation.expected_workers differs from the last set."""

    def __init__(self, config_path: str | Path, expected: Sequence[str],
                 apply: Callable[[Sequence[str]], None], look_every: float = LOOK_EVERY) -> None:
        self.path = Path(config_path)
        self.expected = tuple(expected)
        self._apply = apply
        self._look_every = look_every
        self._seen = _fingerprint(self.path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="membership", daemon=True)

    def start(self) -> MembershipWatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def look(self) -> None:
        """Re-read the file if it changed or SIGHUP asked; apply a changed expected set."""
        seen = _fingerprint(self.path)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            names = load_config(self.path).federation.expected_workers
        except ConfigError as exc:  # a half-written or broken file: keep the set in force
            log.warning("membership reload: %s; the expected workers stay %s", exc, list(self.expected))
            return
        if tuple(names) == self.expected:
            return
        added = [name for name in names if name not in self.expected]
        removed = [name for name in self.expected if name not in names]
        self._apply(names)
        self.expected = tuple(names)
        log.info("membership reload: expected workers now %s (added %s, removed %s)", list(names),
                 added or "none", removed or "none")

    def _watch(self) -> None:
        while not self._stop.wait(self._look_every):
            try:
                self.look()
            except Exception:  # never let a reload end the chief's training
                log.exception("membership reload failed; the expected workers stay %s", list(self.expected))
