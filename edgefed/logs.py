"""Logging set-up for every `edgefed` command: journald-shaped under systemd, timestamped elsewhere.

Under systemd (stderr is the journal's stream: JOURNAL_STREAM names it, or INVOCATION_ID is set and
stderr is not a terminal) each line starts with an sd-daemon priority prefix, `<3>` error .. `<7>`
debug, which journald turns into the entry's PRIORITY (so `journalctl -p warning` filters) and strips;
journald stamps the time itself, so the line carries none. Elsewhere: `TIME LEVEL LOGGER MESSAGE`.

The level comes from -v/-q on the command line, else `node.log_level` of the node's configuration,
else WARNING (interactive commands stay quiet).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
DEFAULT_LEVEL = logging.WARNING

# sd-daemon(3): SD_ERR 3, SD_WARNING 4, SD_NOTICE 5, SD_INFO 6, SD_DEBUG 7.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between two named ones take the lower one's)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def under_journal(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when `stream` (default stderr) is connected to journald, as systemd services' stderr is."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    journal = env.get("JOURNAL_STREAM", "")
    if journal:
        device, _, inode = journal.partition(":")
        return device == str(info.st_dev) and inode == str(info.st_ino)
    # Older systemd (< 231) sets no JOURNAL_STREAM; a unit's stderr is still not a terminal.
    return bool(env.get("INVOCATION_ID")) and not stream.isatty()


class JournalFormatter(logging.Formatter):
    """`<PRIORITY>logger: message`; every line of a multi-line message (a traceback) gets the prefix,
    since journald reads each line as its own entry."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def level_from_flags(verbose: int, quiet: int) -> int | None:
    """The level -v/-q ask for, or None when neither was given."""
    if quiet:
        return logging.ERROR if quiet == 1 else logging.CRITICAL
    if verbose:
        return logging.INFO if verbose == 1 else logging.DEBUG
    return None


def parse_level(name: str) -> int:
    try:
        return LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"log level {name!r}: use one of {', '.join(LEVELS)}") from None


def configure(level: int = DEFAULT_LEVEL, stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> None:
    """Install the one root handler (replacing an earlier one from this function)."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if under_journal(stream, env):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_edgefed", False)]:
        root.removeHandler(old)
    handler._edgefed = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def set_level(level: int) -> None:
    logging.getLogger().setLevel(level)
