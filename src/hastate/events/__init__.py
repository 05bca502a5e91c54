"""Event sourcing on hastate: replicated event streams, reads and catch-up subscriptions.

See :mod:`hastate.events.streams` (append / read), :mod:`hastate.events.subscription`
(catch-up), :mod:`hastate.events.records` (the key layout) and ``docs/events.md``.
"""

from hastate.events.backend import ManagerBackend
from hastate.events.records import (ANY, NO_STREAM, STREAM_EXISTS, AppendResult, EventFilter,
                                    NewEvent, RecordedEvent)
from hastate.events.streams import EventStreams
from hastate.events.subscription import CatchUpSubscription

__all__ = ["ANY", "NO_STREAM", "STREAM_EXISTS", "AppendResult", "CatchUpSubscription",
           "EventFilter", "EventStreams", "ManagerBackend", "NewEvent", "RecordedEvent"]
