"""What a peer may name a file: one plain name inside the receiving directory, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefed.p2p.errors import TransferRefused
from edgefed.p2p.names import MAX_NAME_BYTES, check_file_name, destination, printable

HOSTILE = {
    "../../etc/passwd": "path separator",
    "/etc/passwd": "absolute",
    "\\\\server\\share": "absolute",
    "C:\\Windows\\win.ini": "absolute",
    "..": "names a directory",
    ".": "names a directory",
    "": "empty",
    "inbox/../../x": "path separator",
    "..\\..\\x": "path separator",
    ".bashrc": "hidden",
    ".report.pdf.part": "hidden",
    "x\x00y": "control characters",
    "report\x1b[2J.pdf": "control characters",
    "evil\u202etxt.exe": "control characters",
    "a" * (MAX_NAME_BYTES + 1): "longer than",
}


@pytest.mark.parametrize(("name", "reason"), HOSTILE.items(), ids=[repr(n)[:30] for n in HOSTILE])
def test_hostile_names_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(TransferRefused, match=reason):
        check_file_name(name)


def test_non_string_names_are_refused() -> None:
    with pytest.raises(TransferRefused, match="must be a string"):
        check_file_name(["a"])


@pytest.mark.parametrize("name", ["report.pdf", "model weights (final).npz", "données.csv", "a..b", "x-1_2.tar.gz"])
def test_plain_names_are_kept_as_they_are(name: str, tmp_path: Path) -> None:
    assert check_file_name(name) == name
    assert destination(tmp_path, name) == tmp_path / name


def test_a_symlink_in_the_directory_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(TransferRefused, match="symbolic link"):
        destination(tmp_path / "inbox", "link")


@given(st.text(max_size=80))
def test_any_accepted_name_stays_directly_inside_the_directory(name: str) -> None:
    directory = Path("/srv/inbox")
    try:
        target = destination(directory, name)
    except TransferRefused:
        return
    assert target.parent == directory
    assert target.name == name


def test_printable_escapes_terminal_control() -> None:
    assert printable("hi\x1b[31m there\x07") == "hi\\x1b[31m there\\x07"
    assert printable("tab\tok é") == "tab\tok é"
    assert printable("\u202e") == "\\u202e"
