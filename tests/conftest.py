"""Suite-wide test policy, and the real-process clusters tests of several packages share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from hastate.testing.embedded import EmbeddedCluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Campaigns (``@pytest.mark.chaos``) run only when asked: ``tox -e chaos`` (``-m chaos``)."""
    if "chaos" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="chaos campaign: run with tox -e chaos (-m chaos)")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """instance-1 embedded with its HTTP endpoints, instance-2/3 ``hastate node run``
    processes, a file snapshot store; shared by a module's tests, which leave all three
    nodes running."""
    root = tmp_path_factory.mktemp("ops")
    with EmbeddedCluster(root, 3, name="ops", snapshot_store=f"file://{root / 'store'}",
                         snapshot_interval=60).running() as cluster:
        yield cluster


@pytest.fixture
def plain_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """Three real node processes, no snapshot store, for destructive tests."""
    cluster = EmbeddedCluster(tmp_path, 3, name="ops-plain")
    with cluster.processes_running(20):
        yield cluster


#: A skip reason for a missing tool reads "missing tool: WHAT; enable with: COMMAND".
MISSING_TOOL = "missing tool"
ENABLE = "enable with:"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> Iterator[None]:
    """Say loudly, last, which tests a missing tool skipped and the command that enables them.

    A wrapper around the terminal's own summary, so this comes after the short summary.
    """
    yield
    by_command: dict[str, dict[str, list[str]]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = _skip_reason(report)
        if MISSING_TOOL not in reason or ENABLE not in reason:
            continue
        what, _, command = reason.partition(ENABLE)
        what = what.split(MISSING_TOOL + ":", 1)[-1].strip(" ;")
        by_command.setdefault(command.strip(), {}).setdefault(what, []).append(report.nodeid)
    if not by_command:
        return
    total = sum(len(ids) for whats in by_command.values() for ids in whats.values())
    terminalreporter.write_sep("!", f"{total} tests SKIPPED for a missing tool", red=True,
                               bold=True)
    for command, whats in by_command.items():
        for what, ids in whats.items():
            files = sorted({nodeid.split("::")[0] for nodeid in ids})
            terminalreporter.write_line(f"{len(ids)} skipped ({what}): {', '.join(files)}",
                                        red=True, bold=True)
        terminalreporter.write_line(f"enable them with: {command}", red=True, bold=True)
