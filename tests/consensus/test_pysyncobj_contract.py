"""hastate's corrections of PySyncObj stay tied to the pinned PySyncObj and to the defect list.

- Every ``_SyncObj__*`` name hastate overrides or reads exists in PySyncObj's ``SyncObj``: a
  misspelled override would otherwise silently never run, and a misspelled read would only
  fail on the code path that reaches it.
- Every "defect N" tag in the code names a defect of docs/pysyncobj-defects.md, every
  defect there is tagged somewhere in the code, and every test file the document cites
  exists.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pysyncobj.syncobj

from hastate.consensus.raft import HastateSyncObj

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "hastate"
DEFECTS_DOC = ROOT / "docs" / "pysyncobj-defects.md"
MANGLED = "_SyncObj__"
# "defect 5", "Defect 2 (2b)", "defects 2 and 3", "defects 1, 4 and 9", "defects 2/3"
TAG = re.compile(r"\b[Dd]efects? (\d+(?:(?:, | and |/)\d+)*)")


def syncobj_private_names() -> set[str]:
    """Every ``self.__x`` attribute and ``def __x`` method of PySyncObj's SyncObj, mangled."""
    tree = ast.parse(Path(pysyncobj.syncobj.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SyncObj")
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("__") and \
                not node.name.endswith("__"):
            names.add(MANGLED + node.name[2:])
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and \
                not node.attr.endswith("__"):
            names.add(MANGLED + node.attr[2:])
    return names


def hastate_private_uses() -> dict[str, list[str]]:
    """Every ``_SyncObj__*`` name hastate's source uses (attribute or def) -> where."""
    uses: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else \
                node.name if isinstance(node, ast.FunctionDef) else None
            if name and name.startswith(MANGLED):
                uses.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return uses


def test_the_installed_pysyncobj_is_the_pinned_one() -> None:
    """The checks below read the installed PySyncObj: it must be the version hastate pins."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if d.lower().startswith("pysyncobj")]
    assert pins == [f"pysyncobj=={importlib.metadata.version('pysyncobj')}"], pins


def test_syncobj_private_names_are_read_from_the_pinned_source() -> None:
    names = syncobj_private_names()
    # a sanity check of the parser itself, so an empty set cannot pass the tests below
    assert {"_SyncObj__raftLog", "_SyncObj__onMessageReceived",
            "_SyncObj__raftCurrentTerm"} <= names


def test_every_overridden_syncobj_method_exists_in_pysyncobj() -> None:
    overrides = [name for name, _ in inspect.getmembers(HastateSyncObj)
                 if name.startswith(MANGLED) and name in vars(HastateSyncObj)]
    assert overrides, "HastateSyncObj overrides no _SyncObj__ method?"
    missing = [name for name in overrides if not callable(getattr(pysyncobj.SyncObj, name, None))]
    assert not missing, f"overrides of methods PySyncObj does not have: {missing}"


def test_every_syncobj_private_name_hastate_uses_exists() -> None:
    known = syncobj_private_names()
    unknown = {name: where for name, where in hastate_private_uses().items()
               if name not in known}
    assert not unknown, f"_SyncObj__ names PySyncObj does not define: {unknown}"


def test_only_raft_py_touches_syncobj_private_names() -> None:
    files = {where.split(":")[0] for uses in hastate_private_uses().values() for where in uses}
    assert files == {"src/hastate/consensus/raft.py"}, files


def test_the_checks_catch_a_misspelled_name() -> None:
    """Negative control: a name PySyncObj does not define is reported."""
    assert "_SyncObj__raftLogg" not in syncobj_private_names()
    assert not callable(getattr(pysyncobj.SyncObj, "_SyncObj__onMessageRecieved", None))


def documented_defects() -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", DEFECTS_DOC.read_text(), re.M)}


def tagged_defects() -> dict[int, list[str]]:
    tags: dict[int, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for match in TAG.finditer(line):
                for number in re.findall(r"\d+", match.group(1)):
                    tags.setdefault(int(number), []).append(f"{path.relative_to(ROOT)}:{lineno}")
    return tags


def test_the_tag_pattern_reads_every_form() -> None:
    found = [re.findall(r"\d+", m.group(1)) for m in TAG.finditer(
        "defect 5; Defect 2 (2b); defects 2 and 3; defects 1, 4 and 9; defects 2/3; defective")]
    assert found == [["5"], ["2"], ["2", "3"], ["1", "4", "9"], ["2", "3"]]


def test_every_documented_defect_is_tagged_in_the_code() -> None:
    documented = documented_defects()
    assert documented == set(range(1, max(documented) + 1)), documented
    untagged = documented - set(tagged_defects())
    assert not untagged, f"defects of {DEFECTS_DOC.name} no code comment names: {untagged}"


def test_every_tag_in_the_code_names_a_documented_defect() -> None:
    stray = {n: where for n, where in tagged_defects().items() if n not in documented_defects()}
    assert not stray, f"'defect N' tags with no section in {DEFECTS_DOC.name}: {stray}"


def test_every_test_file_the_defect_document_cites_exists() -> None:
    cited = set(re.findall(r"tests/[\w/]+\.py", DEFECTS_DOC.read_text()))
    assert cited
    missing = sorted(path for path in cited if not (ROOT / path).is_file())
    assert not missing, f"{DEFECTS_DOC.name} cites test files that do not exist: {missing}"


def test_no_issue_numbers_in_the_source() -> None:
    """Issue numbers mean nothing to a reader of the code; say what the change does."""
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in SRC.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\b[Ii]ssue #?\d", line)]
    assert not hits, hits
