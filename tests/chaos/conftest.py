"""Fixtures shared by chaos tests: network-namespace labs and the TCP fault proxy."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import pytest

from .netns import NetnsLab, cleanup_stale, require_netns
from .proxy import TcpProxy


@pytest.fixture(scope="session")
def _stale_namespaces_removed() -> None:
    """Once per session, remove namespaces left by crashed runs (dead owner pid only)."""
    require_netns()
    cleanup_stale()


@pytest.fixture
def netns_lab(_stale_namespaces_removed: None) -> Iterator[Callable[..., NetnsLab]]:
    """Factory ``netns_lab(nodes, subnet=...)`` returning started labs, all closed at teardown.

    Skips the test when namespaces are unavailable (not root, no ``ip``/``nft``).
    """
    labs: list[NetnsLab] = []

    def make(nodes: int | Sequence[str], **kwargs: str) -> NetnsLab:
        lab = NetnsLab(nodes, **kwargs)
        labs.append(lab)
        lab.start()
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()


@pytest.fixture
def tcp_proxy() -> Iterator[TcpProxy]:
    """A started :class:`TcpProxy`, closed at teardown."""
    with TcpProxy() as proxy:
        yield proxy


# --------------------------------------------------------------------------- campaigns
# (tests/chaos/test_campaign.py; `tox -e chaos -- --runs N --duration S`)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Campaign options; they exist when tests/chaos is on the command line (tox -e chaos)."""
    group = parser.getgroup("chaos", "fault-injection campaigns (tests/chaos, -m chaos)")
    group.addoption("--runs", type=int, default=5,
                    help="chaos: number of campaign runs (default 5)")
    group.addoption("--duration", type=float, default=30.0,
                    help="chaos: workload seconds per run (default 30)")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="chaos: seed of the first run (run i uses seed+i); default random, "
                         "printed")
    group.addoption("--chaos-nodes", default="3,5",
                    help="chaos: cluster sizes, cycled over the runs (default 3,5)")
    group.addoption("--control-runs", type=int, default=None,
                    help="chaos: runs of each negative control (default max(2, runs // 4))")


def pytest_terminal_summary(terminalreporter: object, exitstatus: int,
                            config: pytest.Config) -> None:
    """Print the campaign table (and negative controls) of this session, if any ran."""
    from .campaign import SESSION, format_table

    runs = SESSION["runs"]
    controls = SESSION["controls"]
    if not runs and not controls:
        return
    write = terminalreporter.write_line  # type: ignore[attr-defined]
    terminalreporter.section("chaos campaign summary")  # type: ignore[attr-defined]
    if runs:
        for line in format_table(runs).splitlines():  # type: ignore[arg-type]
            write(line)
    for line in controls:
        write(str(line))
