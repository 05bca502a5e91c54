"""Waiting helpers for tests against real processes: poll outcomes, never sleep-and-hope."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from hastate.errors import WriteError


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s")


class BackgroundWriter:
    """A thread calling ``save_state({prefix+i: i})`` until stopped; records acks and errors.

    Use as a context manager around the fault or transfer under test, then check that every
    acknowledged ``i`` is in the final state.
    """

    def __init__(self, manager: Any, prefix: str = "w", timeout: float = 10.0) -> None:
        self.manager = manager
        self.prefix = prefix
        self.timeout = timeout
        self.acked: list[int] = []
        self.errors: list[WriteError] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-writer", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                self.manager.save_state({f"{self.prefix}{i}": i}, timeout=self.timeout)
                self.acked.append(i)
            except WriteError as exc:
                self.errors.append(exc)
            i += 1

    def missing_from(self, state: dict[str, Any]) -> list[int]:
        """Acknowledged writes absent from (or wrong in) ``state``."""
        return [i for i in self.acked if state.get(f"{self.prefix}{i}") != i]

    def __enter__(self) -> "BackgroundWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
