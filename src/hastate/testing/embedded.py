"""A local cluster whose first node runs inside this process, as the trading bot embeds it.

:class:`EmbeddedCluster` is a :class:`~hastate.testing.LocalCluster` plus one
:class:`~hastate.StateManager` in the calling process (``instance-1`` unless told otherwise),
optionally serving its HTTP endpoints, so a test can write through the embedded replica and
watch the others as processes. :meth:`EmbeddedCluster.running` starts all of it and always
stops all of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any, Callable, Iterator, Sequence

from hastate.manager import StateManager
from hastate.testing.cluster import ADMIN_TOKEN_ENV, LocalCluster
from hastate.testing.metrics import scrape


class EmbeddedCluster(LocalCluster):
    """LocalCluster whose ``embedded_id`` node is a StateManager in this process."""

    embedded_id = "instance-1"
    sm: StateManager | None = None

    def start_embedded(self, *, http: bool = True,
                       prepare: Callable[[StateManager], None] | None = None,
                       **options: Any) -> StateManager:
        """Start the embedded replica (with its HTTP endpoints when ``http``); return it.

        ``options`` go to :meth:`StateManager.from_config`; ``prepare`` runs on the built,
        not yet started manager (a benchmark wraps its dump writer there).
        """
        self.sm = StateManager.from_config(self.config_for(self.embedded_id), self.embedded_id,
                                           admin_token=self.admin_token, serve_http=http,
                                           **options)
        if prepare is not None:
            prepare(self.sm)
        self.sm.start()
        return self.sm

    def stop_embedded(self) -> None:
        """Stop the embedded replica (and the HTTP endpoints it serves), if running."""
        if self.sm is not None:
            self.sm.stop()
            self.sm = None

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        """As LocalCluster.leader; the embedded replica counts when it serves HTTP."""
        running = [n for n in self.ids if n in self.procs
                   or (n == self.embedded_id and self.sm is not None
                       and self.sm.http_server is not None)]
        return super().leader(among or running)

    def make_leader(self, node_id: str, timeout: float = 15.0) -> None:
        """Move leadership to ``node_id`` through the embedded replica."""
        assert self.sm is not None, "start_embedded() first"
        self.sm.trigger_failover(node_id, timeout=timeout)

    def resume_all(self) -> None:
        """SIGCONT every node process still running (a test may have paused some)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)

    def scrape(self, node_id: str) -> dict[str, Any]:
        """Metric families of ``node_id``'s /metrics."""
        return scrape(self.http[node_id])

    def cli(self, *args: str, token: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``hastate ARGS`` as a subprocess with the admin token in its environment."""
        env = dict(os.environ)
        env[ADMIN_TOKEN_ENV] = self.admin_token if token is None else token
        return subprocess.run([sys.executable, "-m", "hastate", *args], capture_output=True,
                              text=True, env=env, timeout=timeout)

    @contextlib.contextmanager
    def running(self, timeout: float = 20.0, *, http: bool = True,
                prepare: Callable[[StateManager], None] | None = None,
                **options: Any) -> Iterator["EmbeddedCluster"]:
        """Start the embedded replica and every other node; stop all of them on exit.

        ``prepare`` and ``options`` are as for :meth:`start_embedded`.
        """
        try:
            self.start_embedded(http=http, prepare=prepare, **options)
            for node_id in self.ids:
                if node_id != self.embedded_id:
                    self.start(node_id)
            assert self.sm is not None
            self.sm.wait_ready(timeout)
            self.wait_ready(None if http else [n for n in self.ids if n != self.embedded_id],
                            timeout=timeout)
            yield self
        finally:
            self.resume_all()
            self.stop_all()
            self.stop_embedded()
