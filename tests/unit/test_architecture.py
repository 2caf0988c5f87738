"""The layers of docs/architecture.md, checked on the source: a new import across them fails here.

Reads the package's files as syntax trees (nothing is imported), so the rules hold for code paths
that no other test happens to run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "edgefed"
MAX_LINES = 400

# Sibling features: each may use the shared layers below it, never another sibling.
SIBLINGS = ("federation", "ledger", "p2p")
# What each lower layer may import from edgefed (besides itself).
LOWER_LAYERS = {
    "wire": {"errors"},
    "contracts": {"errors", "fsutil"},
    "transport": {"errors", "fsutil", "wire", "pki"},
    "ops": {"errors", "fsutil", "config", "contracts"},
    "compression": {"errors", "wire"},
    "secagg": {"errors", "wire"},
}
# The only package that may open, accept or wrap sockets.
SOCKET_OWNER = "transport"
SOCKET_CALLS = {"socket", "create_connection", "create_server", "wrap_socket", "socketpair", "fromfd"}


def _modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _edgefed_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, top-level package under edgefed) for every import of edgefed code, lazy ones included."""
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "edgefed" else [f"edgefed.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "edgefed" and len(parts) > 1:
                yield node.lineno, parts[1]


def _violations(rule: str) -> list[str]:
    found: list[str] = []
    for path, area in _modules():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(PACKAGE.parent)
        if rule == "siblings" and area in SIBLINGS:
            found += [f"{where}:{line} imports edgefed.{dep}" for line, dep in _edgefed_imports(tree)
                      if dep in SIBLINGS and dep != area]
        elif rule == "lower" and area in LOWER_LAYERS:
            allowed = LOWER_LAYERS[area] | {area}
            found += [f"{where}:{line} imports edgefed.{dep}" for line, dep in _edgefed_imports(tree)
                      if dep not in allowed]
        elif rule == "sockets" and area != SOCKET_OWNER:
            found += [f"{where}:{node.lineno} calls {node.func.attr}()" for node in ast.walk(tree)
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr in SOCKET_CALLS]
    return found


@pytest.mark.parametrize("rule", ["siblings", "lower", "sockets"])
def test_layers_hold(rule: str) -> None:
    assert _violations(rule) == []


def test_no_module_is_over_the_size_limit() -> None:
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for path, _ in _modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert long == []


def test_the_walker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rules above can fail: the walker finds lazy and aliased imports and socket calls."""
    tree = ast.parse("def f():\n    from edgefed.ledger import chain\n    import edgefed.p2p.link as l\n"
                     "    s = socket.create_connection(('h', 1))\n")
    assert [dep for _, dep in _edgefed_imports(tree)] == ["ledger", "p2p"]
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert SOCKET_CALLS & set(calls) == {"create_connection"}
