"""Instances' health for failover: ``<prefix>_members/<instance>`` holds each instance's
last reported health, region and progress (its mirror's revision), stamped with server
time; freshness compares that stamp with the server's read time of the same query, so no
two clocks are compared."""

from __future__ import annotations

import threading
import time
from typing import Callable

from google.cloud import firestore

from hastate.engines.firestore.store import Store


class MemberBoard:
    """Publishes this instance's health and reads the others' (see the module docstring)."""

    def __init__(self, store: Store, instance_id: str, region: str | None, *,
                 min_interval: float, progress: Callable[[], int]) -> None:
        self.store = store
        self.me = instance_id
        self.region = region
        self.min_interval = min_interval
        self.progress = progress
        self._lock = threading.Lock()
        self._last: tuple[bool, float] | None = None

    def publish(self, ok: bool) -> None:
        """Write this instance's health: when it changed, else at most every min_interval."""
        now = time.monotonic()
        with self._lock:
            if self._last is not None and self._last[0] == ok and \
                    now - self._last[1] < self.min_interval:
                return
            self._last = (ok, now)
        self.store.members.document(self.me).set(
            {"id": self.me, "region": self.region, "ok": ok, "progress": self.progress(),
             "reported_at": firestore.SERVER_TIMESTAMP}, timeout=5)
        self.store.costs.write("health")

    def candidates(self, fresh_after: float | None) -> list[tuple[int, str]]:
        """(progress, id) of the other instances that reported healthy since the monotonic
        time ``fresh_after`` (None: every other instance that ever reported)."""
        max_age = None if fresh_after is None else max(0.0, time.monotonic() - fresh_after)
        docs = list(self.store.members.stream(timeout=5))
        self.store.costs.read("health", len(docs))
        out = []
        for snap in docs:
            f = snap.to_dict()
            if f["id"] == self.me:
                continue
            if max_age is not None:
                age = (snap.read_time - f["reported_at"]).total_seconds()
                if not f["ok"] or age > max_age:
                    continue
            out.append((int(f.get("progress", 0)), f["id"]))
        return out
