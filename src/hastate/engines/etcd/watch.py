"""One etcd watch stream (``POST /v3/watch``), read line by line on a thread of its own.

Created with ``start_revision``, ``prev_kv`` and ``progress_notify``, it hands each batch of
events to ``on_batch`` grouped by revision (etcd never splits one revision's events across
responses), and each progress notification as an empty batch at its header revision. When the
stream breaks (a member died, :meth:`EtcdWatch.restart` was called) it is opened again, on
the next endpoint, from the revision after the last one delivered, so the consumer sees every
revision once, in order. "Cancelled by compaction" ends the watch with
:class:`~hastate.errors.CompactedError` naming the oldest revision etcd still holds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import urllib3

from hastate.engines.etcd.client import EtcdClient, b64, unb64
from hastate.engines.etcd.commands import kv_record
from hastate.engines.etcd.keys import Layout
from hastate.errors import CompactedError, HAStateError, WatchError
from hastate.state.history import Change
from hastate.state.watch import WatchHub

logger = logging.getLogger(__name__)

#: (revision, events of that revision) in revision order; [] with the header revision for a
#: progress notification.
Batch = list[tuple[int, list[dict[str, Any]]]]
OnBatch = Callable[[Batch, int], None]
OnError = Callable[[WatchError], None]
RECONNECT_PAUSE = 0.2


def group(events: list[dict[str, Any]]) -> Batch:
    """Events of one watch response grouped by their revision (kv.mod_revision)."""
    out: Batch = []
    for event in events:
        revision = int(event["kv"]["mod_revision"])
        if out and out[-1][0] == revision:
            out[-1][1].append(event)
        else:
            out.append((revision, [event]))
    return out


class EtcdWatch:
    """Watch keys in [key, end) from ``start_revision``; see the module docstring."""

    def __init__(self, client: EtcdClient, key: bytes, end: bytes, start_revision: int, *,
                 on_batch: OnBatch, on_error: OnError, name: str) -> None:
        self.client = client
        self.key, self.end = key, end
        self.next_revision = start_revision
        self.on_batch = on_batch
        self.on_error = on_error
        self._stop = threading.Event()
        self._resp: Any = None
        self._lock = threading.Lock()
        self.reconnects = 0                     # streams reopened (status)
        self.endpoint: str | None = None        # where the current stream reads from
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "EtcdWatch":
        self._thread.start()
        return self

    def restart(self) -> None:
        """Drop the current stream (e.g. it stalled); it reopens from the next revision."""
        with self._lock:
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except (OSError, AttributeError, urllib3.exceptions.HTTPError):
                pass

    def stop(self) -> None:
        """End the watch (no callback after this returns, bar one in flight)."""
        self._stop.set()
        self.restart()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._one_stream()
            except CompactedError as exc:
                if not self._stop.is_set():
                    self.on_error(exc)
                return
            except (HAStateError, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                if self._stop.is_set():
                    return
                if self.client.settings.user:     # an expired token ends streams too
                    self.client.forget_token()
                logger.info("etcd watch stream broke; reopening",
                            extra={"next_revision": self.next_revision, "reason": repr(exc)})
            except Exception as exc:  # a consumer bug must not kill the stream silently
                logger.exception("etcd watch consumer failed")
                self.on_error(WatchError(f"etcd watch failed: {exc!r}"))
                return
            self.reconnects += 1
            self._stop.wait(RECONNECT_PAUSE)

    def _one_stream(self) -> None:
        body = {"create_request": {"key": b64(self.key), "range_end": b64(self.end),
                                   "start_revision": str(self.next_revision),
                                   "prev_kv": True, "progress_notify": True}}
        endpoint, resp = self.client.stream("/v3/watch", body)
        with self._lock:
            self._resp = resp
            self.endpoint = endpoint
        try:
            if self._stop.is_set():
                return
            for message in self.client.lines(resp):
                if self._stop.is_set():
                    return
                self._handle(message)
        finally:
            with self._lock:
                self._resp = None
            resp.release_conn()

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise WatchError(f"etcd watch error: {message['error']}")
        result = message.get("result", {})
        if result.get("canceled"):
            compact = int(result.get("compact_revision", 0))
            if compact:
                raise CompactedError(self.next_revision, compact)
            raise WatchError(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
        header = int(result.get("header", {}).get("revision", 0))
        events = result.get("events") or []
        if events:
            batch = group(events)
            self.on_batch(batch, header)
            self.next_revision = batch[-1][0] + 1
        elif not result.get("created") and header >= self.next_revision:
            self.on_batch([], header)
            self.next_revision = header + 1



def changes_of(layout: Layout, revision: int, events: list[dict[str, Any]]) -> list[Change]:
    """The state changes of one revision's events (``prev_kv`` gives the old values)."""
    changes = []
    for event in events:
        kv, prev = event["kv"], event.get("prev_kv")
        key = layout.state_key(unb64(kv["key"])) or ""
        old = unb64(prev.get("value")) if prev else None
        if event.get("type") == "DELETE":
            changes.append(Change("delete", key, revision, None, 0, 0, old))
        else:
            value, _, create, version = kv_record(kv)
            changes.append(Change("put", key, revision, value, create, version, old))
    return changes


def feed_hub(client: EtcdClient, layout: Layout, prefix: str, start_revision: int,
             hub: WatchHub) -> EtcdWatch:
    """Feed ``hub`` the changes of state keys under ``prefix`` from ``start_revision``,
    straight from etcd (a watch older than the mirror's history). Compaction ends the hub's
    watchers with CompactedError naming the oldest revision etcd holds."""
    def on_batch(batch: Batch, _header: int) -> None:
        for revision, events in batch:
            hub.changed(revision, changes_of(layout, revision, events))

    def on_error(error: WatchError) -> None:
        if isinstance(error, CompactedError):
            hub.reset(error.oldest_revision - 1, [])
        else:
            hub.close()

    start, end = layout.user_range(prefix)
    return EtcdWatch(client, start, end, start_revision, on_batch=on_batch, on_error=on_error,
                     name=f"hastate-etcd-watch-{prefix or '*'}").start()
