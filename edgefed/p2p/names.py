"""What a peer may put on our screen or disk: file names confined to one directory, printable chat text."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from edgefed.p2p.errors import TransferRefused

# Leaves room for the ".NAME.part.json" bookkeeping files inside the usual 255-byte file name limit.
MAX_NAME_BYTES = 200
MAX_CHAT_CHARS = 4096


def _unprintable(char: str) -> bool:
    # Cc control, Cf format (e.g. right-to-left override), Co/Cs/Cn private or unassigned.
    return unicodedata.category(char).startswith("C") and char != "\t"


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Text with control and format characters escaped, so a peer cannot drive our terminal."""
    return "".join(_escape(char) if _unprintable(char) else char for char in text)


def check_file_name(name: object) -> str:
    """Return name if it is one plain file name; raise TransferRefused saying why not otherwise.

    Only a bare name is accepted (no directories at all), which is stricter than resolving the
    path and checking that it stays inside the directory: there is nothing to resolve.
    """
    if not isinstance(name, str):
        raise TransferRefused(f"refused file name {name!r}: it must be a string")
    shown = printable(name)
    if not name:
        raise TransferRefused("refused an empty file name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[0].isalpha() and name[1] == ":"):
        raise TransferRefused(f"refused file name {shown!r}: absolute paths are not accepted")
    if "/" in name or "\\" in name:
        raise TransferRefused(
            f"refused file name {shown!r}: it contains a path separator; send a plain file name"
        )
    if name in (".", ".."):
        raise TransferRefused(f"refused file name {shown!r}: it names a directory")
    if name.startswith("."):
        raise TransferRefused(f"refused file name {shown!r}: hidden names (starting with '.') are not accepted")
    if any(_unprintable(char) for char in name) or "\t" in name:
        raise TransferRefused(f"refused file name {shown!r}: it contains control characters")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise TransferRefused(f"refused file name {shown[:40]!r}...: longer than {MAX_NAME_BYTES} bytes")
    return name


def destination(directory: Path, name: object) -> Path:
    """Where a received file called name lands: always directly inside directory."""
    safe = check_file_name(name)
    target = directory / safe
    # Belt and braces: the checks above leave nothing to resolve, but never trust them alone.
    if target.parent != directory or os.path.normpath(target) != str(target):
        raise TransferRefused(f"refused file name {printable(safe)!r}: it would leave {directory}")
    if target.is_symlink():
        raise TransferRefused(f"refused file name {printable(safe)!r}: {target} is a symbolic link")
    return target


def part_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.part")


def part_info_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.part.json")
