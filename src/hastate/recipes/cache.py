"""A read-through cache in the replicated state, with single-flight loading across the cluster.

``cache.get(key)`` reads this replica (free). On a miss, one caller in the whole cluster
runs ``loader(key)``: it wins a create-if-absent transaction on a "loading" marker
(``<prefix><namespace>/.loading/<key>``), loads, then stores the value under a new lease
of ``ttl`` seconds and deletes the marker in one transaction. Every other caller, on any
node, waits for the value to appear on its replica. The marker is attached to a lease this
cache keeps alive in the background, so when a loader's process dies its markers vanish
after ``loading_ttl`` and another caller takes over; a loader that raises deletes its
marker at once (and the error reaches only its own caller).

So a burst of bots missing the same key calls the exchange API once per key per expiry.

Example::

    tickers = sm.cache("ticker", ttl=5, loader=lambda pair: exchange.fetch_ticker(pair))
    tickers.get("BTC/USDT")
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Callable, Iterable, Protocol

from hastate.errors import CacheLoadTimeout
from hastate.recipes.lease import Lease
from hastate.state import txn

#: Key prefix of cache entries.
PREFIX = "cache/"
_MISSING = object()


class CacheHost(Protocol):
    """What the cache needs of a :class:`~hastate.StateManager`."""

    instance_id: str

    def get_state(self, consistency: str = ..., *, keys: Iterable[str] | None = None) -> Any: ...

    def grant_lease(self, ttl: float) -> Lease: ...

    def transaction(self, compare: Any = ..., success: Any = ...,
                    failure: Any = ...) -> txn.TxnResult: ...


class Cache:
    """Namespace ``namespace`` of the replicated cache; values live ``ttl`` seconds.

    :param loader: called with the key on a miss, by one caller in the cluster at a time.
    :param loading_ttl: seconds a dead loader's marker outlives it.
    :param wait: seconds a caller waits for another caller's load before giving up.
    :param poll: seconds between looks at this replica while waiting.
    """

    def __init__(self, manager: CacheHost, namespace: str, ttl: float,
                 loader: Callable[[str], Any], *, loading_ttl: float = 10.0,
                 wait: float = 30.0, poll: float = 0.01, prefix: str = PREFIX) -> None:
        if not isinstance(namespace, str) or not namespace or "/" in namespace:
            raise ValueError(f"cache namespace must be a non-empty str without '/', "
                             f"got {namespace!r}")
        self.manager = manager
        self.ttl = ttl
        self.loader = loader
        self.loading_ttl = loading_ttl
        self.wait = wait
        self.poll = poll
        self.base = f"{prefix}{namespace}/"
        self.owner = f"{manager.instance_id}/{secrets.token_hex(6)}"
        self.loads = 0                     # loader calls made through this object
        self._marker_lease: Lease | None = None
        self._lease_mutex = threading.Lock()

    def key_of(self, key: str) -> str:
        """The state key holding ``key``'s value."""
        return f"{self.base}{key}"

    def marker_of(self, key: str) -> str:
        """The state key of ``key``'s loading marker."""
        return f"{self.base}.loading/{key}"

    def get(self, key: str) -> Any:
        """The cached value of ``key``, loading it (once across the cluster) on a miss.

        :raises CacheLoadTimeout: another caller's load took longer than ``wait``.
        :raises WriteError: the cluster did not confirm the marker or the value in time.
        """
        value_key, marker = self.key_of(key), self.marker_of(key)
        deadline = time.monotonic() + self.wait
        while True:
            value = self._local(value_key)
            if value is not _MISSING:
                return value
            won = self.manager.transaction(
                [txn.missing(value_key), txn.missing(marker)],
                [txn.put(marker, self.owner, lease=self._markers())],
                [txn.get(value_key)])
            if won.succeeded:
                return self._load(key, value_key, marker)
            if won.responses[0] is not None:
                return won.responses[0].value
            while self._local(value_key) is _MISSING and self._local(marker) is not _MISSING:
                if time.monotonic() >= deadline:
                    raise CacheLoadTimeout(f"cache {self.base!r}: key {key!r} was still being "
                                           f"loaded by another caller after {self.wait}s")
                time.sleep(self.poll)

    def close(self) -> None:
        """Revoke the markers' lease (loads in flight elsewhere are unaffected)."""
        with self._lease_mutex:
            lease, self._marker_lease = self._marker_lease, None
        if lease is not None:
            lease.revoke()

    def _load(self, key: str, value_key: str, marker: str) -> Any:
        self.loads += 1
        try:
            value = self.loader(key)
        except BaseException:
            self.manager.transaction([txn.value(marker) == self.owner], [txn.delete(marker)])
            raise
        lease = self.manager.grant_lease(self.ttl)
        # Our marker may have lapsed and another caller taken over: leave theirs alone.
        put = txn.put(value_key, value, lease=lease)
        self.manager.transaction([txn.value(marker) == self.owner], [put, txn.delete(marker)],
                                 [put])
        return value

    def _markers(self) -> Lease:
        """The lease markers are attached to (granted once, kept alive in the background)."""
        with self._lease_mutex:
            lease = self._marker_lease
            if lease is None or not lease.alive:
                lease = self._marker_lease = self.manager.grant_lease(self.loading_ttl)
                lease.keep_alive_in_background()
            return lease

    def _local(self, state_key: str) -> Any:
        found = self.manager.get_state("local", keys=[state_key])
        return found.get(state_key, _MISSING)
