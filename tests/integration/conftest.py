"""A three-node cluster: instance-1 embedded in the test process, instance-2/3 real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hastate.testing.embedded import EmbeddedCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """instance-1 is a StateManager inside the test (the embedded bot, no HTTP server)."""
    with EmbeddedCluster(tmp_path, 3, name="itest").running(20, http=False) as c:
        yield c
