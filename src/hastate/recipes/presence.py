"""Presence: each bot publishes who it is under a lease; the others see who is up.

A bot's entry is the key ``presence/<instance>`` holding ``{instance, region,
model_version, healthy}``, attached to a lease kept alive in the background. When the bot
dies (or its health check fails, which stops the keeper), the lease expires after its TTL
and the entry is deleted through the log: every replica's :func:`members_alive` and every
watcher of ``presence/`` sees it go at the same revision.

Example::

    me = sm.presence(ttl=10, model_version="v1.2.3", health=bot_is_healthy)
    ...
    sm.members_alive()   # {"instance-1": {"instance": ..., "region": ..., ...}, ...}
    me.update(model_version="v1.2.4")
    me.stop()            # leave at once (revokes the lease)
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from hastate.recipes.lease import Lease

#: Key prefix of presence entries.
PREFIX = "presence/"


class PresenceHost(Protocol):
    """What presence needs of a :class:`~hastate.StateManager`."""

    instance_id: str
    region: str | None

    def grant_lease(self, ttl: float) -> Lease: ...

    def save_state(self, values: dict[str, Any], *, lease: Lease) -> int: ...


class Presence:
    """This bot's presence entry, kept alive while the bot (and its health check) lives."""

    def __init__(self, manager: PresenceHost, *, ttl: float = 10.0, model_version: str = "",
                 health: Callable[[], bool] | None = None, prefix: str = PREFIX) -> None:
        self.manager = manager
        self.ttl = ttl
        self.key = f"{prefix}{manager.instance_id}"
        self.health = health
        self.entry: dict[str, Any] = {"instance": manager.instance_id,
                                      "region": manager.region or "",
                                      "model_version": model_version, "healthy": True}
        self.lease: Lease | None = None

    def start(self) -> "Presence":
        """Grant the lease, publish the entry, keep the lease alive in the background."""
        self.lease = self.manager.grant_lease(self.ttl)
        self._publish()
        self.lease.keep_alive_in_background(health=self.health)
        return self

    def update(self, **fields: Any) -> int:
        """Change fields of the entry (``model_version=``, ``healthy=``...); its revision."""
        unknown = (set(fields) - set(self.entry)) | ({"instance"} & set(fields))
        if unknown:
            raise ValueError(f"presence fields {sorted(unknown)} cannot be set; settable: "
                             "region, model_version, healthy")
        self.entry.update(fields)
        return self._publish()

    def stop(self) -> None:
        """Leave now: revoke the lease, deleting the entry everywhere."""
        if self.lease is not None:
            self.lease.revoke()
            self.lease = None

    def _publish(self) -> int:
        if self.lease is None:
            raise RuntimeError("presence is not started; call start() first")
        return self.manager.save_state({self.key: dict(self.entry)}, lease=self.lease)


def members_alive(state: dict[str, Any], prefix: str = PREFIX) -> dict[str, dict[str, Any]]:
    """instance -> presence entry of every bot whose entry is in ``state``."""
    return {key[len(prefix):]: value for key, value in sorted(state.items())
            if key.startswith(prefix) and isinstance(value, dict)}
