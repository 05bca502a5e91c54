"""Reads a node's ``/v1/watch`` Server-Sent Events stream on a thread (tests, tools)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, Iterator

from hastate.testing.cluster import LocalCluster


class SSE:
    """Reads one ``/v1/watch`` stream on a thread; ``events`` grows, ``closed`` when it ends.

    ``received[i]`` is the ``time.monotonic()`` at which ``events[i]`` arrived.
    """

    def __init__(self, cluster: LocalCluster, node_id: str, query: str,
                 last_event_id: int | None = None) -> None:
        host, port = cluster.http[node_id].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Authorization": f"Bearer {cluster.admin_token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", f"/v1/watch?{query}", headers=headers)
        self.response = self.conn.getresponse()
        self.events: list[dict[str, Any]] = []
        self.received: list[float] = []
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self._parse():
                self.received.append(time.monotonic())
                self.events.append(event)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            self.closed.set()

    def _parse(self) -> Iterator[dict[str, Any]]:
        fields: dict[str, str] = {}
        while line := self.response.readline():
            line = line.decode().rstrip("\n")
            if not line:
                if fields:
                    yield {"id": int(fields["id"]) if "id" in fields else None,
                           "event": fields.get("event"), **json.loads(fields["data"])}
                fields = {}
            elif not line.startswith(":"):
                name, _, val = line.partition(": ")
                fields[name] = val

    def changes(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in ("put", "delete")]

    def close(self) -> None:
        self.conn.close()
