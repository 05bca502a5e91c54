"""hastate as a storage engine for the ``eventsourcing`` library (``hastate[eventsourcing]``).

Set ``PERSISTENCE_MODULE=hastate.eventsourcing`` and bind a running manager first::

    import hastate.eventsourcing
    hastate.eventsourcing.bind(sm)
    app = MyApplication(env={"PERSISTENCE_MODULE": "hastate.eventsourcing"})

Every insert is one hastate transaction (see :mod:`hastate.events.backend`): the events,
their stream indexes and, for process applications and projections, the tracking record
commit together or not at all, on whichever node runs the code; inserts for different
aggregates never conflict. Notification ids are the namespace's global positions
(``revision * SLOTS + i``: strictly increasing in commit order, with gaps, which the
library allows; see :mod:`hastate.events.index`); ``subscribe(gt=)`` replays by reads,
then rides hastate's watch. Namespaces:
``HASTATE_NAMESPACE`` (default ``es/<application name>``) plus ``/events``,
``/snapshots``, ``/tracking``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator, Sequence

from eventsourcing.persistence import (AggregateRecorder, ApplicationRecorder,
                                       InfrastructureFactory, InfrastructureFactoryError,
                                       IntegrityError, Notification, ProcessRecorder,
                                       StoredEvent, Subscription, Tracking, TrackingRecorder)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from hastate.events.backend import Backend, ManagerBackend, Plan, commit
from hastate.events.index import position
from hastate.events.records import (EventFilter, Layout, RecordedEvent, add_versions,
                                    encode_event, has_version, iter_versions)
from hastate.events.streams import MAX_APPEND, EventStreams

_bound: Backend | None = None
#: A projection's computation: current values of the keys it reads -> the keys to put.
Update = Callable[[dict[str, Any]], dict[str, Any]]


def bind(target: Any) -> None:
    """Make ``target`` (a StateManager or a Backend; None: unbind) the store of the
    applications constructed next."""
    global _bound
    _bound = ManagerBackend(target) if hasattr(target, "propose") else target


class _Store:
    """One namespace: the event layout plus the optimistic commit every write uses."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.backend = backend
        self.streams = EventStreams(backend, namespace)
        self.layout: Layout = self.streams.layout

    def write(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None = None,
              reads: Sequence[str] = (), update: Update | None = None) -> list[int]:
        """Insert events, a tracking record and ``update``'s keys, atomically.

        ``update`` gets the current values of ``reads`` (None when absent) and returns the
        keys to put; it may run more than once (after a concurrent change), so it must only
        compute. Compares only the aggregates' streams, ``reads`` and the tracking record:
        inserts for other aggregates never conflict.
        """
        if len(stored_events) > MAX_APPEND:
            raise ValueError(f"insert of {len(stored_events)} stored events, more than "
                             f"{MAX_APPEND}; split it")
        lay = self.layout
        streams = sorted({str(s.originator_id) for s in stored_events})
        keys = [*(lay.stream(s) for s in streams), *reads]
        if tracking is not None:
            keys.append(lay.tracking(tracking.application_name))

        def decide(values: dict[str, Any]) -> Plan[list[int]]:
            puts: dict[str, Any] = {}
            if tracking is not None:
                _check_tracking(values.get(lay.tracking(tracking.application_name)), tracking)
                puts[lay.tracking(tracking.application_name)] = tracking.notification_id
            if update is not None:
                puts.update(update({k: values.get(k) for k in reads}))
            new: dict[str, list[int]] = {s: [] for s in streams}
            now = time.time()
            for i, s in enumerate(stored_events):                 # in index order
                stream, version = str(s.originator_id), s.originator_version
                if has_version(values.get(lay.stream(stream)), version) or \
                        version in new[stream]:
                    raise IntegrityError(f"stored event already recorded: {stream} v{version}")
                new[stream].append(version)
                puts[lay.event(stream, version)] = encode_event(
                    stream, version, i, s.topic, s.state,
                    {"uuid": isinstance(s.originator_id, uuid.UUID)}, None, now)
            for stream, versions in new.items():
                puts[lay.stream(stream)] = add_versions(values.get(lay.stream(stream)),
                                                        sorted(versions))
            return Plan(puts, lambda rev: [position(rev, i) for i in range(len(stored_events))])

        with self.streams.locks.holding(streams):
            return commit(self.backend, keys, decide, rejections=(IntegrityError,))

    def max_tracking_id(self, application_name: str) -> int | None:
        key = self.layout.tracking(application_name)
        return self.backend.read([key], linearizable=True).get(key)


def _check_tracking(current: int | None, tracking: Tracking) -> None:
    if current is not None and current >= tracking.notification_id:
        raise IntegrityError(f"tracking notification id {tracking.notification_id} of "
                             f"{tracking.application_name!r} is not after {current}")


def _stored(event: RecordedEvent, cls: type[StoredEvent] = StoredEvent, **extra: Any) -> Any:
    originator: Any = uuid.UUID(event.stream) if event.metadata.get("uuid") else event.stream
    return cls(originator_id=originator, originator_version=event.version, topic=event.type,
               state=event.data, **extra)


class HastateAggregateRecorder(AggregateRecorder):
    """Stored events of aggregates (or snapshots) in one hastate namespace."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.store = _Store(backend, namespace)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        self.store.write(stored_events, kwargs.get("tracking"))
        return None

    def select_events(self, originator_id: uuid.UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        streams = self.store.streams
        key = self.store.layout.stream(str(originator_id))
        versions = [v for v in iter_versions(streams.backend.read([key], linearizable=True)
                                             .get(key))
                    if (gt is None or v > gt) and (lte is None or v <= lte)]
        if desc:
            versions.reverse()
        if limit is not None:
            versions = versions[:limit]
        return [_stored(e) for e in streams.read_keys(
            self.store.layout.event(str(originator_id), v) for v in versions)]


class HastateApplicationRecorder(HastateAggregateRecorder, ApplicationRecorder):
    """Aggregate events plus the application sequence (notification id = global position)."""

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        return self.store.write(stored_events, kwargs.get("tracking"))

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        head = self.store.streams.head()
        end = head if stop is None else min(stop, head)
        found = self.store.streams.read_all(
            max(first, 1), to_position=end, limit=limit, linearizable=False,
            filter=EventFilter(types=frozenset(topics)) if topics else None)
        return [_stored(e, Notification, id=e.position) for e in found]

    def max_notification_id(self) -> int | None:
        return self.store.streams.head() or None

    def subscribe(self, gt: int | None = None,
                  topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return HastateSubscription(self, gt, topics)


class HastateSubscription(Subscription[HastateApplicationRecorder]):
    """Notifications after ``gt``: replayed by reads, then live from hastate's watch."""

    def __init__(self, recorder: HastateApplicationRecorder, gt: int | None = None,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._catch_up = recorder.store.streams.subscribe(
            gt or 0, filter=EventFilter(types=frozenset(topics)) if topics else None)
        self._events: Iterator[RecordedEvent] = iter(self._catch_up)

    def stop(self) -> None:
        super().stop()
        self._catch_up.stop()

    def __next__(self) -> Notification:
        if self._has_been_stopped:
            raise StopIteration
        event = next(self._events)
        return _stored(event, Notification, id=event.position)


class HastateTrackingRecorder(TrackingRecorder):
    """Tracking records; :meth:`commit` writes a projection's keys with its tracking record."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.store = _Store(backend, namespace)

    def insert_tracking(self, tracking: Tracking) -> None:
        self.store.write([], tracking)

    def commit(self, tracking: Tracking, reads: Sequence[str], update: Update) -> bool:
        """Apply a projection step and record ``tracking`` as ONE transaction.

        ``update`` maps the current values of ``reads`` (None when absent) to the keys to
        put; the puts and the tracking record commit only if none of those keys (nor the
        tracking record) changed meanwhile, so each notification applies exactly once.
        Returns False, writing nothing, when ``tracking`` is not after the recorded one:
        the notification was applied already (by this runner before a restart, or by
        another runner that overlapped with it).
        """
        try:
            self.store.write([], tracking, reads, update)
        except IntegrityError:
            return False
        return True

    def max_tracking_id(self, application_name: str) -> int | None:
        return self.store.max_tracking_id(application_name)

    def read(self, keys: Sequence[str]) -> dict[str, Any]:
        """A projection's keys (linearizable)."""
        return self.store.backend.read(keys, linearizable=True)


class HastateProcessRecorder(HastateTrackingRecorder, HastateApplicationRecorder,
                             ProcessRecorder):
    """Events and the tracking record of the notification that caused them, atomically."""


class Factory(InfrastructureFactory[HastateTrackingRecorder]):
    """The ``eventsourcing`` infrastructure factory of ``PERSISTENCE_MODULE=hastate.eventsourcing``."""

    HASTATE_NAMESPACE = "HASTATE_NAMESPACE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        if _bound is None:
            raise InfrastructureFactoryError(
                "no hastate manager bound: call hastate.eventsourcing.bind(sm) with a running "
                "StateManager before constructing the application")
        self.backend = _bound
        self.namespace = self.env.get(self.HASTATE_NAMESPACE) or f"es/{self.env.name or 'app'}"

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return HastateAggregateRecorder(self.backend, f"{self.namespace}/{purpose}")

    def application_recorder(self) -> ApplicationRecorder:
        return HastateApplicationRecorder(self.backend, f"{self.namespace}/events")

    def tracking_recorder(self, tracking_recorder_class: type[HastateTrackingRecorder] | None
                          = None) -> HastateTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else HastateTrackingRecorder
        return tracking_recorder_class(self.backend, f"{self.namespace}/tracking")

    def process_recorder(self) -> ProcessRecorder:
        return HastateProcessRecorder(self.backend, f"{self.namespace}/events")
