"""A test skipped for a missing tool is repeated loudly at the end of the run, with the one
command that enables it (the README's test command must not pass silently without nft)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import netns

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_missing_nft_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "nft" else "/bin/" + tool)
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    assert netns.unavailable_reason.__wrapped__() == (
        "missing tool: 'nft' not found; enable with: sudo apt-get install -y nftables iproute2")


def test_the_run_ends_with_what_was_skipped_and_how_to_enable_it(tmp_path: Path) -> None:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_needs_tools.py").write_text(
        "import pytest\n"
        "REASON = 'missing tool: \\'nft\\' not found; enable with: sudo apt-get install -y "
        "nftables iproute2'\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_partition(n):\n    pytest.skip(REASON)\n"
        "def test_other():\n    pytest.skip('not this kind of skip')\n"
        "def test_runs():\n    assert True\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "-ra", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    tail = out.stdout.splitlines()
    banner = next(i for i, line in enumerate(tail) if "3 tests SKIPPED for a missing tool" in line)
    assert banner > next(i for i, line in enumerate(tail) if "short test summary" in line)
    summary = "\n".join(tail[banner:])
    assert "3 skipped ('nft' not found): " in summary and "test_needs_tools.py" in summary
    assert "enable them with: sudo apt-get install -y nftables iproute2" in summary
    assert "not this kind" not in summary
