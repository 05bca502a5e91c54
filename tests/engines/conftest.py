"""The ``deployment`` fixture: the contract suite runs once per engine."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .deployments import DEPLOYMENTS, Deployment


@pytest.fixture(scope="module", params=sorted(DEPLOYMENTS))
def deployment(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir: Path = tmp_path_factory.mktemp(f"engine-{request.param}")
    with DEPLOYMENTS[request.param](workdir) as running:
        yield running


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own (the deployment is shared by a module's tests)."""
    return request.node.name.replace("[", "/").replace("]", "") + "/"
