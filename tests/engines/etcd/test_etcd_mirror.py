"""A bot's mirror of etcd: scans and change listeners see what its watch hub sees."""

from __future__ import annotations

from typing import Any, Sequence

from hastate.testing import wait_for

from .conftest import Bots


class Recorder:
    """A ChangeListener that keeps what it is fed."""

    def __init__(self) -> None:
        self.fed: list[tuple[int, list[tuple[str, str]]]] = []
        self.resets: list[int] = []

    def changed(self, revision: int, changes: Sequence[Any]) -> None:
        self.fed.append((revision, [(c.type, c.key) for c in changes]))

    def reset(self, revision: int, history: Sequence[Any] = ()) -> None:
        self.resets.append(revision)

    def export(self) -> list:
        return []


def test_scan_and_listeners_follow_the_state(bots: Bots) -> None:
    config = bots.config("mirror")
    writer = bots.start(config, "instance-1")
    reader_sm = bots.start(config, "instance-2")
    recorder = Recorder()
    reader_sm.engine.add_change_listener(recorder)
    first = writer.save_state({"ev/a": 1, "other": 2})
    second = writer.delete("ev/a")
    third = writer.save_state({"ev/b": 3})
    wait_for(lambda: reader_sm.revision() >= third, timeout=10)
    fed = {revision: sorted(changes) for revision, changes in recorder.fed}
    assert fed == {first: [("put", "ev/a"), ("put", "other")], second: [("delete", "ev/a")],
                   third: [("put", "ev/b")]}
    assert [revision for revision, _ in recorder.fed] == sorted(fed)     # in order, once
    found, revision = reader_sm.engine.scan("ev/")
    assert revision >= third and dict(found) == reader_sm.records(["ev/b"])
