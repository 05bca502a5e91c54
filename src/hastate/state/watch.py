"""Watchers of the replicated state: ordered change events from any held revision.

The :class:`WatchHub` is fed by the state machine on the apply path (:meth:`WatchHub.changed`
after each mutating write, :meth:`WatchHub.reset` when a dump replaces the state). Feeding
never blocks: it appends to the :class:`~hastate.state.history.History` and to each live
watcher's bounded buffer; a watcher whose buffer is full is cancelled with
:class:`~hastate.errors.WatchOverflowError` (after the events it buffered are delivered), so a
slow consumer never slows apply or other watchers.

A watcher starting in the past first catches up from the history on its own thread (etcd's
"unsynced" watchers), then joins the live feed, so catching up costs the apply path nothing.
Events are served from this node's replica: a leader change does not disturb them.

Example::

    with sm.watch(prefix="orders/", start_revision=rev + 1, prev_value=True) as events:
        for event in events:
            handle(event.type, event.key, event.value, event.revision)
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from hastate.errors import CompactedError, WatchCancelledError, WatchError, WatchOverflowError
from hastate.state.codec import decode_value
from hastate.state.history import DEFAULT_HISTORY, Change, History

logger = logging.getLogger(__name__)

#: Events a watcher may have undelivered before it is cancelled, unless configured.
DEFAULT_BUFFER = 1024
#: Revisions a catching-up watcher copies from the history per step.
_CATCH_UP_CHUNK = 128


@dataclass(frozen=True)
class WatchEvent:
    """A change (``put``/``delete``) of ``key`` at ``revision``, or a ``progress`` mark.

    For a put, ``value``, ``create_revision`` and ``version`` are the key's new ones; for a
    delete they are None, 0, 0. ``prev_value`` is the value before the change when the watch
    asked for it (None when absent). A ``progress`` event has only ``revision``: every later
    event of this watch has a larger revision.
    """

    type: str
    key: str
    revision: int
    value: Any = None
    create_revision: int = 0
    version: int = 0
    prev_value: Any = None


class Watcher:
    """One watch: iterate it (or use ``get``) to receive events; ``cancel()`` to end it."""

    def __init__(self, hub: "WatchHub", prefix: str, start: int, *, prev_value: bool,
                 progress_interval: float | None, buffer: int) -> None:
        self._hub = hub
        self.prefix = prefix
        self.prev_value = prev_value
        self.progress_interval = progress_interval
        self.buffer = buffer
        self._cond = threading.Condition(hub._lock)
        self._pending: deque[Change] = deque()
        self._next = start          # the next revision this watcher has not looked at
        self._synced = False        # fed live by the hub (else catching up from history)
        self._error: WatchError | None = None
        self._cancelled = False     # ended by cancel(): iteration just stops
        self.delivered_revision = start - 1

    # -- consumer side ---------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, waiting up to ``timeout`` (None: forever); None on timeout.

        With progress notifications on, a wait longer than ``progress_interval`` returns a
        ``progress`` event instead. Raises the :class:`WatchError` that ended the watch,
        once the events buffered before it were delivered.
        """
        with self._cond:
            change = self._next_change(timeout)
        # Decode outside the hub lock: apply never waits for a watcher's decoding.
        return change if change is None or isinstance(change, WatchEvent) \
            else self._deliver(change)

    def _next_change(self, timeout: float | None) -> Change | WatchEvent | None:
        """The next buffered change, a progress event, or None on timeout (lock held)."""
        while True:
            if self._pending:
                change = self._pending.popleft()
                self.delivered_revision = change.revision
                return change
            if self._error is not None:
                raise self._error
            if not self._synced:
                self._catch_up()
                continue
            wait = timeout if self.progress_interval is None else \
                self.progress_interval if timeout is None else min(timeout,
                                                                   self.progress_interval)
            if not self._cond.wait(wait) and not self._pending and self._error is None:
                if self.progress_interval is not None and (timeout is None or wait < timeout):
                    revision = self._hub._history.last
                    self.delivered_revision = max(self.delivered_revision, revision)
                    return WatchEvent("progress", "", revision)
                return None

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            try:
                event = self.get()
            except WatchCancelledError:
                if self._cancelled:
                    return
                raise
            if event is not None:
                yield event

    def cancel(self) -> None:
        """End the watch; iteration stops, ``get`` raises WatchCancelledError."""
        with self._cond:
            self._cancelled = True
            self._pending.clear()
            self._fail(WatchCancelledError("watch cancelled"))

    @property
    def error(self) -> WatchError | None:
        """Why the watch ended (None while it runs)."""
        return self._error

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def _deliver(self, change: Change) -> WatchEvent:
        return WatchEvent(change.type, change.key, change.revision,
                          decode_value(change.value) if change.value is not None else None,
                          change.create_revision, change.version,
                          decode_value(change.prev) if self.prev_value and
                          change.prev is not None else None)

    def _catch_up(self) -> None:
        """Copy the next chunk of history (hub lock held); join the live feed at its end."""
        history = self._hub._history
        try:
            entries = history.since(self._next, _CATCH_UP_CHUNK)
        except CompactedError as exc:
            self._fail(exc)
            return
        for revision, changes in entries:
            self._pending.extend(c for c in changes if c.key.startswith(self.prefix))
            self._next = revision + 1
        if not entries or self._next > history.last:
            self._synced = True
            self._hub._live.add(self)

    # -- hub side (hub lock held) ------------------------------------------------------------------
    def _offer(self, revision: int, changes: Sequence[Change]) -> None:
        if revision < self._next or self._error is not None:
            return
        self._next = revision + 1
        matched = [c for c in changes if c.key.startswith(self.prefix)]
        if not matched:
            return
        if len(self._pending) + len(matched) > self.buffer:
            first_missing = matched[0].revision
            self._fail(WatchOverflowError(self.buffer, first_missing))
            return
        self._pending.extend(matched)
        self._cond.notify()

    def _fail(self, error: WatchError) -> None:
        if self._error is None:
            self._error = error
        self._hub._live.discard(self)
        self._hub._watchers.discard(self)
        self._cond.notify_all()


class WatchHub:
    """Feeds every watcher of one node from the apply path; see the module docstring."""

    def __init__(self, history: int = DEFAULT_HISTORY, buffer: int = DEFAULT_BUFFER) -> None:
        if buffer < 1:
            raise ValueError(f"watch buffer must be >= 1 event, got {buffer}")
        self._lock = threading.Lock()
        self._history = History(history)
        self._watchers: set[Watcher] = set()
        self._live: set[Watcher] = set()
        self.buffer = buffer
        self._closed = False

    # -- fed by the state machine (apply thread) -------------------------------------------------
    def changed(self, revision: int, changes: Sequence[Change]) -> None:
        """One mutating write applied at ``revision``; never blocks on a watcher."""
        with self._lock:
            self._history.append(revision, changes)
            for watcher in list(self._live):
                watcher._offer(revision, changes)

    def reset(self, revision: int, history: Sequence[tuple[int, Sequence[Change]]] = ()) -> None:
        """The state was replaced by a dump at ``revision`` carrying ``history``.

        Watchers that still needed a revision older than that history cannot get it any
        more: they deliver what they buffered, then end with CompactedError. Those that
        needed a revision the dump's history holds catch up from it; the others go on.
        """
        with self._lock:
            self._history.restore(revision, history)
            for watcher in list(self._watchers):
                if watcher._next > revision or watcher._error is not None:
                    continue
                if watcher._next <= self._history.compacted:
                    watcher._fail(CompactedError(watcher._next, self._history.oldest))
                else:
                    watcher._synced = False
                    self._live.discard(watcher)

    def export(self) -> list[tuple[int, Sequence[Change]]]:
        """The history's newest revisions, for a dump (see History.export)."""
        with self._lock:
            return self._history.export()

    # -- watchers --------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        """The newest revision fed to watchers."""
        return self._history.last

    @property
    def oldest_revision(self) -> int:
        """The oldest revision a watch may start at on this node."""
        return self._history.oldest

    def watch(self, prefix: str = "", start_revision: int | None = None, *,
              prev_value: bool = False, progress_interval: float | None = None,
              buffer: int | None = None) -> Watcher:
        """A watcher of keys starting with ``prefix`` from ``start_revision`` (None: next).

        :raises CompactedError: ``start_revision`` is older than this node's history.
        :raises WatchCancelledError: the node is stopping.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"watch prefix must be a str, got {type(prefix).__name__}")
        if start_revision is not None and (isinstance(start_revision, bool) or
                                           not isinstance(start_revision, int) or
                                           start_revision < 1):
            raise ValueError(f"start_revision must be an int >= 1 (or None for 'from now'), "
                             f"got {start_revision!r}")
        if progress_interval is not None and not progress_interval > 0:
            raise ValueError(f"progress_interval must be > 0 seconds, got {progress_interval!r}")
        with self._lock:
            if self._closed:
                raise WatchCancelledError("the node is stopped; watch another node")
            start = self._history.last + 1 if start_revision is None else start_revision
            if start <= self._history.compacted:
                raise CompactedError(start, self._history.oldest)
            watcher = Watcher(self, prefix, start, prev_value=prev_value,
                              progress_interval=progress_interval,
                              buffer=buffer if buffer is not None else self.buffer)
            self._watchers.add(watcher)
            if start > self._history.last:
                watcher._synced = True
                self._live.add(watcher)
        return watcher

    def close(self) -> None:
        """End every watcher (the node stops): they raise WatchCancelledError."""
        with self._lock:
            self._closed = True
            for watcher in list(self._watchers):
                watcher._fail(WatchCancelledError("the node stopped; resume on another node "
                                                  "or after restart with start_revision="
                                                  f"{watcher._next}"))

    def __len__(self) -> int:
        return len(self._watchers)


def run_callback(watcher: Watcher, callback: Callable[[WatchEvent], Any],
                 on_error: Callable[[WatchError], Any] | None = None) -> threading.Thread:
    """Deliver ``watcher``'s events to ``callback`` on a thread of its own.

    When the watch ends other than by ``cancel()``, ``on_error(error)`` is called (or the
    error is logged). An exception from ``callback`` cancels the watch and is logged.
    """
    def loop() -> None:
        try:
            for event in watcher:
                try:
                    callback(event)
                except Exception:
                    logger.exception("watch callback failed; watch cancelled",
                                     extra={"prefix": watcher.prefix})
                    watcher.cancel()
                    return
        except WatchError as exc:
            if on_error is not None:
                on_error(exc)
            else:
                logger.warning("watch ended: %s", exc, extra={"prefix": watcher.prefix})

    thread = threading.Thread(target=loop, name=f"hastate-watch-{watcher.prefix or '*'}",
                              daemon=True)
    thread.start()
    return thread
