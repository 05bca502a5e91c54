"""A subscriber added while the node already leads hears about it once, on the watcher
thread (a bot built the seed's way is started, and may lead, before it subscribes)."""

from __future__ import annotations

import threading

from hastate.failover.watcher import LeaderWatcher
from hastate.testing import wait_for


def test_late_subscriber_hears_current_leadership_once_then_transitions() -> None:
    leading = {"now": True}
    events: list[tuple[str, object, str]] = []
    watcher = LeaderWatcher(lambda: leading["now"], lambda: 7 if leading["now"] else None,
                            interval=0.005)
    watcher.start()
    try:
        wait_for(lambda: watcher.leading, what="watcher saw leadership")
        watcher.subscribe(lambda token: events.append(("become", token,
                                                       threading.current_thread().name)),
                          lambda: events.append(("lose", None, "")))
        late: list[int | None] = []
        watcher.when_leading(late.append)
        wait_for(lambda: events and late, what="late subscriber told")
        assert events == [("become", 7, "hastate-leader-watch")] and late == [7]
        leading["now"] = False
        wait_for(lambda: len(events) == 2, what="loss reported")
        leading["now"] = True
        wait_for(lambda: len(events) == 3, what="new leadership reported")
        assert [e[0] for e in events] == ["become", "lose", "become"] and late == [7]
    finally:
        watcher.stop()


def test_subscriber_added_while_following_hears_nothing_until_it_leads() -> None:
    leading = {"now": False}
    events: list[object] = []
    watcher = LeaderWatcher(lambda: leading["now"], lambda: 3, interval=0.005)
    watcher.start()
    try:
        watcher.subscribe(lambda: events.append("become"), None)
        watcher.when_leading(events.append)
        threading.Event().wait(0.05)
        assert events == []
        leading["now"] = True
        wait_for(lambda: events == ["become"], what="leadership reported once")
    finally:
        watcher.stop()
