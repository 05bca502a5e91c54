"""Leadership transitions delivered to the bot on a thread of ours, never Raft's.

The watcher samples the lease-checked ``is_leader`` every few milliseconds, so a lease that
runs out (isolation, pause) is reported even when the Raft thread is stuck, and a slow
callback delays only later callbacks, never Raft.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

BecomeLeader = Callable[..., None]   # fn() or fn(fencing_token: int)
LoseLeadership = Callable[[], None]


def _wants_token(fn: Callable[..., None]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)


@dataclass
class _Subscription:
    on_become: BecomeLeader | None
    on_lose: LoseLeadership | None
    pass_token: bool


class LeaderWatcher:
    """Calls subscribers once per transition: become leader (with fencing token), lose it."""

    def __init__(self, is_leader: Callable[[], bool], fencing_token: Callable[[], int | None],
                 *, interval: float = 0.01, on_transition: Callable[[bool, int | None], None]
                 | None = None) -> None:
        self._is_leader = is_leader
        self._token = fencing_token
        self._interval = interval
        self._on_transition = on_transition
        self._subs: list[_Subscription] = []
        # Called with the fencing token at the next sample if this node leads by then: how a
        # subscriber added while leading hears about it (once, on the watcher thread).
        self._pending: list[Callable[[int | None], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leading = False
        self.transitions = 0

    def subscribe(self, on_become_leader: BecomeLeader | None,
                  on_lose_leadership: LoseLeadership | None) -> None:
        """Add callbacks; a subscriber added while leading hears about it at once.

        "At once" is the watcher thread's next sample, like every other callback.
        """
        sub = _Subscription(on_become_leader, on_lose_leadership,
                            on_become_leader is not None and _wants_token(on_become_leader))
        with self._lock:
            self._subs.append(sub)
        if on_become_leader is not None:
            self.when_leading(lambda token: self._call(
                on_become_leader, *((token,) if sub.pass_token else ())))

    def when_leading(self, fn: Callable[[int | None], None]) -> None:
        """Call ``fn(fencing_token)`` once at the next sample if this node leads then."""
        with self._lock:
            self._pending.append(fn)

    def start(self) -> None:
        """Start the watcher thread."""
        self._thread = threading.Thread(target=self._run, name="hastate-leader-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher; report loss of leadership first if this node was leading."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()
        if self.leading:
            self._fire(False, None)

    def _sample(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending and self.leading:   # before any transition: no subscriber hears it twice
            token = self._token()
            for fn in pending:
                self._call(fn, token)
        leading = self._is_leader()
        if leading != self.leading:
            token = self._token() if leading else None
            if leading and token is None:
                return  # lease ended between the two reads: not leading after all
            self.leading = leading
            self._fire(leading, token)

    def _fire(self, leading: bool, token: int | None) -> None:
        self.transitions += 1
        self.leading = leading
        logger.info("leadership %s", "acquired" if leading else "lost",
                    extra={"fencing_token": token})
        if self._on_transition is not None:
            self._call(self._on_transition, leading, token)
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if leading and sub.on_become is not None:
                self._call(sub.on_become, *((token,) if sub.pass_token else ()))
            elif not leading and sub.on_lose is not None:
                self._call(sub.on_lose)

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            logger.exception("leadership callback %r failed", fn)
