"""The positions bot's demo runs end to end: a leader killed, the projection rebuilt equal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'hastate[eventsourcing]'")
pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_rebuilds_the_projection_equal_after_a_failover() -> None:
    out = subprocess.run([sys.executable, "-m", "positions_bot.demo", "--fills", "8"],
                         cwd=EXAMPLES, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "killing the leader" in out.stdout and "rebuilt == live" in out.stdout
