"""The namespace lab must connect its nodes, cut exactly the links asked, heal, and leave
nothing behind (namespaces, links, processes), even when setup fails half-way."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from . import netns
from .netns import NetnsLab, cleanup_stale

LabFactory = Callable[..., NetnsLab]


def _root_links() -> set[str]:
    """Interface names in the root namespace."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _udp_delivered(lab: NetnsLab, src: str, dst: str) -> bool:
    """True if one UDP datagram from ``src`` reaches ``dst`` within 0.5 s (directional)."""
    with lab.entered(dst):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with lab.entered(src):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((lab.address(dst), 0))
        receiver.settimeout(0.5)
        sender.sendto(b"probe", receiver.getsockname())
        try:
            return receiver.recv(16) == b"probe"
        except TimeoutError:
            return False


def test_nodes_reach_each_other_until_isolated_and_after_heal(netns_lab: LabFactory) -> None:
    lab = netns_lab(3)
    assert lab.address("n0") == "10.77.0.1" and lab.address("n2") == "10.77.0.3"
    assert lab.reachable("n0", "n1") and lab.reachable("n1", "n0")

    lab.isolate("n0")
    assert not lab.reachable("n0", "n1")
    assert not lab.reachable("n2", "n0")
    assert lab.reachable("n1", "n2")

    lab.heal()
    assert lab.blocked == frozenset()
    assert lab.reachable("n0", "n1") and lab.reachable("n2", "n0")


def test_partition_into_groups(netns_lab: LabFactory) -> None:
    lab = netns_lab(["a", "b", "c", "d"])
    lab.partition(["a", "b"])          # c and d form the other group
    assert lab.reachable("a", "b") and lab.reachable("c", "d")
    assert not lab.reachable("a", "c")
    assert not lab.reachable("d", "b")
    with pytest.raises(ValueError, match="two groups"):
        lab.partition(["a", "b"], ["b", "c"])


def test_one_way_drop_is_directional(netns_lab: LabFactory) -> None:
    lab = netns_lab(2)
    lab.drop_one_way("n0", "n1")
    assert lab.blocked == {("n0", "n1")}
    assert not _udp_delivered(lab, "n0", "n1")
    assert _udp_delivered(lab, "n1", "n0")
    lab.heal()
    assert _udp_delivered(lab, "n0", "n1")


def test_run_executes_inside_the_node_namespace(netns_lab: LabFactory) -> None:
    lab = netns_lab(2)
    out = lab.run("n1", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert f"{lab.address('n1')}/24" in out


def test_entered_only_moves_the_calling_thread_and_restores_it(netns_lab: LabFactory) -> None:
    lab = netns_lab(1)
    home = os.stat("/proc/thread-self/ns/net").st_ino
    target = os.stat(f"/run/netns/{lab.namespace('n0')}").st_ino
    entered = threading.Event()
    seen_by_other_thread: list[int] = []

    def look() -> None:
        entered.wait(5)
        seen_by_other_thread.append(os.stat("/proc/thread-self/ns/net").st_ino)

    other = threading.Thread(target=look)
    other.start()                      # already running: must stay where it is
    with lab.entered("n0"):
        assert os.stat("/proc/thread-self/ns/net").st_ino == target
        entered.set()
        other.join()
    assert seen_by_other_thread == [home]
    assert os.stat("/proc/thread-self/ns/net").st_ino == home


def test_close_removes_namespaces_links_and_processes(tmp_path: Path) -> None:
    netns.require_netns()
    links_before = _root_links()
    marker, ready = tmp_path / "terminated", tmp_path / "ready"
    with NetnsLab(3) as lab:
        assert len(_namespaces(lab.prefix)) == 4         # 3 nodes + hub
        # A node that flushes on SIGTERM: close() must let it, not just SIGKILL it.
        node = lab.popen("n1", ["sh", "-c", f"trap 'echo bye > {marker}; exit 0' TERM; "
                                            f"touch {ready}; sleep 60 & wait"])
        lab.isolate("n1")
        deadline = time.monotonic() + 5
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert node.poll() == 0
    assert marker.read_text() == "bye\n"
    assert _namespaces(lab.prefix) == []
    assert _root_links() == links_before
    lab.close()                                          # idempotent


def test_failed_start_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    netns.require_netns()
    monkeypatch.setattr(netns, "_NFT_TABLE", "this is not nft syntax\n")
    lab = NetnsLab(2)
    with pytest.raises(subprocess.CalledProcessError):
        lab.start()
    assert _namespaces(lab.prefix) == []


def test_cleanup_stale_removes_only_namespaces_of_dead_owners() -> None:
    netns.require_netns()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.PREFIX}{dead.pid}-0-n0"
    live = f"{netns.PREFIX}{os.getpid()}-999-n0"
    try:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "add", name], check=True)
        assert cleanup_stale() == [stale]
        assert _namespaces(stale) == [] and _namespaces(live) == [live]
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_without_root_tests_skip_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = netns.unavailable_reason.__wrapped__()
    assert reason == ("missing tool: network namespaces need root; enable with: "
                      "sudo -E python -m pytest -q")
    monkeypatch.setattr(netns, "unavailable_reason", lambda: reason)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        netns.require_netns()
