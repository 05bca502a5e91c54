"""The disaster-recovery test cluster: one embedded writer, two node processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hastate import StateManager
from hastate.testing import LocalCluster


class DRCluster(LocalCluster):
    """instance-1 embedded (the writer); instance-2/3 real processes; all snapshot to ``url``."""

    sm: StateManager

    def boot(self) -> "DRCluster":
        self.start("instance-2")
        self.start("instance-3")
        self.sm = StateManager.from_config(self.config_path, "instance-1")
        self.sm.start(wait_ready=20)
        return self

    def shutdown(self) -> None:
        self.stop_all()
        self.sm.stop()


def restore(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``hastate restore --config CONFIG ARGS...`` as its own process."""
    return subprocess.run([sys.executable, "-m", "hastate", "restore", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=120)
