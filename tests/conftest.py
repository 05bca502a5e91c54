"""Suite-wide test policy."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Campaigns (``@pytest.mark.chaos``) run only when asked: ``tox -e chaos`` (``-m chaos``)."""
    if "chaos" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="chaos campaign: run with tox -e chaos (-m chaos)")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)
