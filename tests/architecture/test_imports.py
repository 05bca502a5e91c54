"""The shape of src/hastate: no import cycles, PySyncObj only under consensus/, small modules.

Read from the source text (``ast``), so imports under ``if TYPE_CHECKING:`` and inside
functions count as much as module-level ones: a cycle hidden from the interpreter is still
a cycle for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "hastate"
MAX_LINES = 500
#: A module longer than MAX_LINES says why near its top, in a docstring line starting so.
LENGTH_REASON = "Length:"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every hastate module and third-party top-level package ``path`` imports."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in modules else source)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {i for i in _imports(path, name, modules) if i in modules and i != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_every_kind_of_import() -> None:
    """Imports under TYPE_CHECKING, inside functions and relative ones are all edges."""
    graph = _graph()
    assert "hastate.consensus.node" in graph["hastate.testing.lease_trace"]    # TYPE_CHECKING
    assert "hastate.snapshots.restore" in graph["hastate.engines.raft"]         # in a function
    assert "hastate.consensus.transport.config" in graph["hastate.consensus.transport"]


def test_no_import_cycle_in_hastate() -> None:
    assert _cycles(_graph()) == []


def test_only_consensus_imports_pysyncobj() -> None:
    modules = _modules()
    offenders = sorted(name for name, path in modules.items()
                       if not name.startswith("hastate.consensus.")
                       and any(i == "pysyncobj" or i.startswith("pysyncobj.")
                               for i in _imports(path, name, modules)))
    assert offenders == []


def test_long_modules_say_why_at_their_top() -> None:
    unexplained = []
    for name, path in _modules().items():
        lines = path.read_text().splitlines()
        if len(lines) <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        if not any(line.strip().startswith(LENGTH_REASON) for line in doc.splitlines()):
            unexplained.append(f"{name} ({len(lines)} lines)")
    assert unexplained == [], (f"modules over {MAX_LINES} lines need a '{LENGTH_REASON} ...' "
                               "line in their docstring saying why they are not split")


#: Product modules that may use the test harnesses: the demo runs a local cluster with them.
USES_TESTING = {"hastate.cli.demo"}


def test_product_code_does_not_import_the_test_harnesses() -> None:
    """``hastate.testing`` starts servers and traces leases for tests; an engine or the
    manager reading a test seam would ship it to every bot."""
    modules = _modules()
    offenders = sorted(name for name, path in modules.items()
                       if not name.startswith("hastate.testing") and name not in USES_TESTING
                       and any(i.startswith("hastate.testing")
                               for i in _imports(path, name, modules)))
    assert offenders == []
