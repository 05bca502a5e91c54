"""Restarting the Firestore emulator under running bots.

The emulator keeps documents in memory. Restarted *with* its data (exported just before,
imported at start: nothing was written in between), the bots' listeners reconnect, a
leader is elected again, writes go on at the next revision and a watch opened before the
restart sees them with no gap. Restarted *without* its data (what a plain emulator restart
is), the store's revision goes back: the bots refuse to go on with StoreRegressedError
rather than serve a history that changed under them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hastate import StateManager
from hastate.errors import HAStateError, StoreRegressedError
from hastate.testing import wait_for
from hastate.testing.firestore import FirestoreEmulator, cluster_file

from .conftest import started

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(emulator: FirestoreEmulator, tmp_path: Path,
         request: pytest.FixtureRequest) -> Iterator[list[StateManager]]:
    config = cluster_file(tmp_path / "cluster.toml", name=f"restart-{request.node.name[5:20]}",
                          ids=["bot-1", "bot-2"])
    with started(config, ["bot-1", "bot-2"], write_timeout=20.0) as managers:
        yield list(managers.values())


def eventually_written(sm: StateManager, values: dict) -> int:
    """Write once the store answers again (errors while it restarts are expected)."""
    result: list[int] = []

    def attempt() -> bool:
        try:
            result.append(sm.save_state(values, timeout=5))
        except HAStateError:
            return False
        return True

    wait_for(attempt, timeout=60, interval=0.5, what="a write after the restart")
    return result[0]


def test_after_a_restart_with_its_data_the_bots_go_on_where_they_were(
        emulator: FirestoreEmulator, pair: list[StateManager]) -> None:
    a, b = pair
    revisions = [a.save_state({f"k{n}": n}) for n in range(5)]
    with b.watch("k", start_revision=revisions[-1] + 1) as events:
        emulator.restart(keep_data=True)
        after = eventually_written(a, {"k5": 5})
        assert after == revisions[-1] + 1
        event = events.get(timeout=30)
    assert (event.key, event.value, event.revision) == ("k5", 5, after)
    assert b.get_state(keys=[f"k{n}" for n in range(6)]) == {f"k{n}": n for n in range(6)}
    wait_for(lambda: [sm.is_leader() for sm in pair].count(True) == 1, timeout=30,
             what="one leader after the restart")


def test_after_a_restart_without_its_data_the_bots_refuse_to_go_on(
        emulator: FirestoreEmulator, pair: list[StateManager]) -> None:
    a, b = pair
    a.save_state({"kept": 1})
    emulator.restart(keep_data=False)
    errors: list[Exception] = []

    def refused() -> bool:
        try:
            a.save_state({"after": 1}, timeout=5)
        except HAStateError as exc:
            errors.append(exc)
        return bool(errors) and isinstance(errors[-1], StoreRegressedError)

    wait_for(refused, timeout=60, interval=0.5, what="the write refused as regressed")
    assert "went back" in str(errors[-1])
    with pytest.raises(StoreRegressedError):
        b.get_state(keys=["kept"])
    assert a.status()["fatal_error"] is not None
