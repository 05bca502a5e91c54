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
