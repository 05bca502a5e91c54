"""The consensus package stays walkable: documented modules, read through the node."""

from __future__ import annotations

import ast
from pathlib import Path

CONSENSUS = Path(__file__).resolve().parents[2] / "src" / "hastate" / "consensus"


def test_every_consensus_module_has_a_docstring() -> None:
    missing = [str(p.relative_to(CONSENSUS)) for p in sorted(CONSENSUS.rglob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, missing


def test_code_outside_consensus_reads_raft_through_the_node_not_syncobj() -> None:
    """The manager, observability and the rest use RaftNode.status() and its methods."""
    package = CONSENSUS.parent
    offenders = sorted(
        f"{path.relative_to(package)}:{node.lineno}"
        for path in package.rglob("*.py") if CONSENSUS not in path.parents
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in ("syncobj", "_syncobj"))
    assert not offenders, f"reads of RaftNode.syncobj outside consensus/: {offenders}"
