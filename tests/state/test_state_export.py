"""An export's body round-trips, loads into the replicated state machine as a dump body does,
and anything else is refused naming where it came from."""

from __future__ import annotations

import pytest

from hastate.errors import CorruptDataError
from hastate.state.export import StateExport
from hastate.state.machine import ReplicatedState

EXPORT = StateExport(9, {"a": (b"\x01", 3, 2, 2), "b": (b"\x02", 9, 9, 1)},
                     {7: (30.0, frozenset({"b"}))})


def test_the_body_round_trips_and_loads_into_a_replica() -> None:
    body = EXPORT.to_body()
    assert StateExport.from_body(body, source="x") == EXPORT
    replica = ReplicatedState()
    replica.load_body(body)
    assert replica.revision == 9 and replica.records(["a", "b"]) == dict(EXPORT.records)
    assert replica.leases()[7].keys == {"b"} and replica.lease_of("b") == 7


@pytest.mark.parametrize("body", [{}, {"data": {"a": [b"v"]}, "revision": 1}, [1, 2]])
def test_a_foreign_body_is_refused_naming_its_source(body: object) -> None:
    with pytest.raises(CorruptDataError, match="snapshots/x.hsnap: not a state snapshot"):
        StateExport.from_body(body, source="snapshots/x.hsnap")
