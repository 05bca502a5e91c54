"""Code every engine runs reads the engine contract, never the embedded Raft engine's parts.

``StateManager.node`` / ``.machine`` / ``.spec`` exist only on the Raft engine (elsewhere
they raise NotSupportedError), so outside the Raft engine itself (engines/raft.py, consensus/)
and the test helpers (testing/), no module reads them off a manager, and no module declares
a manager shape that has them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "hastate"
RAFT_ONLY = ("node", "machine", "spec")
#: Names a StateManager goes by in the code (``server.manager``, ``self.manager``, ``sm``...).
MANAGER_NAMES = ("manager", "_manager", "sm", "state_manager")
ALLOWED = ("engines/raft.py", "consensus/", "testing/")


def _receiver(node: ast.expr) -> str | None:
    """The last name of an attribute's receiver (``server.manager`` -> ``manager``)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def offences(source: str) -> list[int]:
    """Lines of ``source`` reading a raft-only property off a manager or declaring one."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in RAFT_ONLY and \
                _receiver(node.value) in MANAGER_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases):
            lines += [s.lineno for s in node.body if isinstance(s, ast.AnnAssign)
                      and isinstance(s.target, ast.Name) and s.target.id in RAFT_ONLY]
    return sorted(lines)


def test_the_checker_catches_a_raft_only_read_and_a_raft_only_shape() -> None:
    assert offences("ok = server.manager.node.running\n") == [1]
    assert offences("x = 1\nsm.machine.locks()\n") == [2]
    assert offences("class Shape(Protocol):\n    spec: 'NodeSpec'\n") == [2]
    assert offences("node.spec.node_id\nconfig.node('a')\nmanager.engine.status()\n") == []


def test_no_engine_neutral_module_touches_raft_only_properties() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where == "manager.py" or where.startswith(ALLOWED):
            continue    # manager.py defines the properties
        found += [f"{where}:{line}" for line in offences(path.read_text())]
    assert not found, (f"raft-only manager properties read outside the Raft engine: {found}; "
                       "use manager.engine (the Engine contract) or manager.status()")
