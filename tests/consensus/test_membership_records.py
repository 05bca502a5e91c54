"""Membership records, change commands and the quorum rule for a change."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hastate.consensus.membership import (Change, Member, MembershipError, check_change,
                                          decode_change, majority)

ids = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
ports = st.integers(1, 65535)
members = st.builds(lambda i, p, h, r: Member(i, f"10.0.0.1:{p}", h and f"10.0.0.1:{h}", r),
                    ids, ports, st.none() | ports, st.none() | st.text(max_size=20))


@given(st.sampled_from(["add", "remove"]), members)
def test_change_round_trips_through_the_log_encoding(op: str, member: Member) -> None:
    change = Change(op, member)
    raw = change.encode()
    assert raw[0] == 2 and b"\x80\x02" not in raw[:2]          # msgpack, not a pickle
    assert decode_change(raw) == change


@given(st.binary(max_size=64))
def test_garbage_membership_commands_raise_membership_error_only(body: bytes) -> None:
    try:
        change = decode_change(b"\x02" + body)
    except MembershipError:
        return
    assert isinstance(change, Change)


@pytest.mark.parametrize("command", [b"", b"\x00abc", b"\x01", b"\x03xyz"])
def test_other_commands_are_not_membership_changes(command: bytes) -> None:
    assert decode_change(command) is None


@pytest.mark.parametrize("record, problem", [
    ({"id": "bad id", "raft": "h:1"}, "member id"),
    ({"id": "n1", "raft": "no-port"}, "raft address"),
    ({"id": "n1", "raft": "h:70000"}, "raft address"),
    ({"id": "n1", "raft": "h:1", "http": "x"}, "http address"),
    ({"id": "n1", "raft": "h:1", "extra": 1}, "fields"),
    ({"raft": "h:1"}, "needs id and raft"),
    (["n1", "h:1"], "must be a map"),
])
def test_bad_member_records_name_the_problem(record: object, problem: str) -> None:
    with pytest.raises(MembershipError, match=problem):
        Member.from_dict(record)
    body = msgpack.packb({"op": "add", "member": record})
    with pytest.raises(MembershipError):
        decode_change(b"\x02" + body)


def _config(n: int) -> dict[str, Member]:
    return {f"h:{i}": Member(f"n{i}", f"h:{i}") for i in range(1, n + 1)}


def test_a_member_without_a_raft_address_may_not_join_a_raft_cluster() -> None:
    """Instances of other engines have no raft address; Raft refuses to add one."""
    refused = check_change(Change("add", Member("n9", "")), _config(3), ["h:1", "h:2"], "h:1")
    assert refused is not None and "raft address" in refused


@given(st.integers(1, 7), st.data())
def test_add_is_allowed_iff_live_members_are_a_majority_of_the_new_size(n: int,
                                                                        data: st.DataObject
                                                                        ) -> None:
    config = _config(n)
    live = data.draw(st.sets(st.sampled_from(sorted(config))))
    live.add("h:1")                                            # the leader is live
    change = Change("add", Member("new", "h:99"))
    reason = check_change(change, config, live | {"h:99"}, leader="h:1")
    assert (reason is None) == (len(live) >= majority(n + 1))
    if reason is not None:
        assert "would lose quorum" in reason


@given(st.integers(2, 7), st.data())
def test_remove_is_allowed_iff_the_remaining_live_members_are_a_majority(
        n: int, data: st.DataObject) -> None:
    config = _config(n)
    target = data.draw(st.sampled_from(sorted(config)[1:]))    # not the leader (h:1)
    live = data.draw(st.sets(st.sampled_from(sorted(config)))) | {"h:1"}
    change = Change("remove", config[target])
    reason = check_change(change, config, live, leader="h:1")
    assert (reason is None) == (len(live - {target}) >= majority(n - 1))
    after = change.apply(config)
    assert target not in after and change.apply(after, reverse=True) == config


@pytest.mark.parametrize("change, problem", [
    (Change("add", Member("n2", "h:50")), "already a member"),
    (Change("add", Member("fresh", "h:2")), "already belongs to member 'n2'"),
    (Change("remove", Member("ghost", "h:77")), "not a member"),
    (Change("remove", Member("n1", "h:1")), "is the leader"),
])
def test_conflicting_changes_are_refused_with_the_reason(change: Change, problem: str) -> None:
    config = _config(3)
    assert problem in (check_change(change, config, set(config), leader="h:1") or "")
