"""The pure Raft rules (consensus/rules.py) against examples and against brute-force models."""

from __future__ import annotations

from hypothesis import given, strategies as st

from hastate.consensus import rules

# A log as the list of its entries' terms, index 1 first; terms never decrease along a log.
logs = st.lists(st.integers(0, 4), min_size=1, max_size=30).map(sorted)


def term_lookup(terms: list[int]) -> rules.TermAt:
    return lambda index: terms[index - 1] if 1 <= index <= len(terms) else None


class TestPrevote:
    def test_examples(self) -> None:
        base = dict(leader=False, term=5, current_term=4, sticky_allows=True,
                    candidate_last=(4, 10), own_last=(4, 10))
        assert rules.grants_prevote(**base)
        assert rules.grants_prevote(**{**base, "candidate_last": (4, 11)})
        assert rules.grants_prevote(**{**base, "candidate_last": (5, 1)})     # newer last term
        assert not rules.grants_prevote(**{**base, "candidate_last": (4, 9)})  # shorter log
        assert not rules.grants_prevote(**{**base, "candidate_last": (3, 99)})  # older last term
        assert not rules.grants_prevote(**{**base, "term": 4})                 # not a newer term
        assert not rules.grants_prevote(**{**base, "sticky_allows": False})    # leader heard
        assert not rules.grants_prevote(**{**base, "leader": True})

    @given(st.booleans(), st.integers(0, 9), st.integers(0, 9), st.booleans(),
           st.tuples(st.integers(0, 9), st.integers(0, 20)),
           st.tuples(st.integers(0, 9), st.integers(0, 20)))
    def test_matches_the_vote_rule(self, leader: bool, term: int, current: int, sticky: bool,
                                   cand: tuple[int, int], own: tuple[int, int]) -> None:
        up_to_date = cand[0] > own[0] or (cand[0] == own[0] and cand[1] >= own[1])
        expected = not leader and term > current and sticky and up_to_date
        assert rules.grants_prevote(leader=leader, term=term, current_term=current,
                                    sticky_allows=sticky, candidate_last=cand,
                                    own_last=own) is expected

    @given(st.sets(st.sampled_from("abcdefg")), st.sets(st.sampled_from("abcde"), min_size=1))
    def test_majority_counts_voters_only(self, granted: set[str], voters: set[str]) -> None:
        assert rules.has_majority(granted, voters) == (len(granted & voters) > len(voters) / 2)

    def test_majority_examples(self) -> None:
        assert rules.has_majority({"a"}, {"a"})                 # a one-member cluster
        assert not rules.has_majority({"a"}, {"a", "b"})        # half is not a majority
        assert rules.has_majority({"a", "b"}, {"a", "b", "c"})
        assert not rules.has_majority({"a", "x", "y"}, {"a", "b", "c"})  # non-voters ignored


class TestConflictHint:
    def test_skips_the_whole_conflicting_term(self) -> None:
        terms = [1, 1, 2, 2, 2, 3, 3]                      # indexes 1..7
        assert rules.conflict_hint(7, 0, term_lookup(terms)) == 6
        assert rules.conflict_hint(5, 0, term_lookup(terms)) == 3
        assert rules.conflict_hint(5, 3, term_lookup(terms)) == 4   # never at/below commit
        assert rules.conflict_hint(2, 0, term_lookup(terms)) == 1

    @given(logs, st.data())
    def test_is_the_first_index_of_the_term_above_commit(self, terms: list[int],
                                                         data: st.DataObject) -> None:
        index = data.draw(st.integers(1, len(terms)))
        commit = data.draw(st.integers(0, index - 1))
        hint = rules.conflict_hint(index, commit, term_lookup(terms))
        assert commit < hint <= index
        # every entry from the hint to the mismatch has the conflicting term...
        assert all(terms[i - 1] == terms[index - 1] for i in range(hint, index + 1))
        # ...and the hint is as far back as allowed: below it the term differs, or commit.
        assert hint == commit + 1 or terms[hint - 2] != terms[index - 1]


class TestNextIndexClamp:
    @given(st.integers(1, 100), st.none() | st.integers(1, 100))
    def test_a_failure_hint_only_moves_next_index_back(self, hint: int,
                                                       current: int | None) -> None:
        result = rules.clamp_next_index(hint, current)
        if current is None:
            assert result == hint
        else:
            assert result == min(hint, current)

    def test_disagreeing_replies_of_one_burst_do_not_flip(self) -> None:
        next_index = 10
        for hint in (10, 11, 10, 11, 9, 11):     # "mismatch at N" / "no entry at N+1"
            next_index = rules.clamp_next_index(hint, next_index)
        assert next_index == 9


class TestNextIndexAfterAck:
    @given(st.integers(1, 100), st.none() | st.integers(1, 100))
    def test_a_success_reply_only_moves_next_index_forward(self, acked_next: int,
                                                           current: int | None) -> None:
        result = rules.next_index_after_ack(acked_next, current)
        assert result == (acked_next if current is None else max(acked_next, current))

    @given(st.lists(st.integers(1, 50), min_size=1, max_size=30))
    def test_acks_of_a_pipeline_never_resend_what_is_in_flight(self, batches: list[int]) -> None:
        """A leader sends batches back to back, then the acks arrive in order: nextIndex
        stays past everything sent, so no entry is sent twice."""
        next_index, sent = 1, []
        for size in batches:
            sent.append(next_index + size - 1)          # last index of the batch
            next_index += size
        for last in sent:
            next_index = rules.next_index_after_ack(last + 1, next_index)
            assert next_index == sent[-1] + 1


class TestStaleDump:
    def test_examples(self) -> None:
        assert rules.dump_is_stale(10, 2, commit_index=10, term_at_dump=None)
        assert rules.dump_is_stale(10, 2, commit_index=5, term_at_dump=2)      # we hold it
        assert not rules.dump_is_stale(10, 2, commit_index=5, term_at_dump=1)  # diverged
        assert not rules.dump_is_stale(10, 2, commit_index=5, term_at_dump=None)  # behind

    @given(logs, st.data())
    def test_stale_exactly_when_the_log_already_has_the_dumps_last_entry(
            self, terms: list[int], data: st.DataObject) -> None:
        commit = data.draw(st.integers(0, len(terms)))
        dump_index = data.draw(st.integers(1, len(terms) + 5))
        dump_term = data.draw(st.integers(0, 5))
        have = term_lookup(terms)(dump_index)
        stale = rules.dump_is_stale(dump_index, dump_term, commit, have)
        assert stale == (dump_index <= commit or have == dump_term)


class TestWindowAndCommit:
    @given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000),
           st.integers(1, 300))
    def test_send_window(self, acked: int, next_index: int, first: int, window: int) -> None:
        cap = rules.send_window(acked, next_index, first, window)
        if acked == 0 or next_index <= first:
            assert cap is None                   # a first ack or a dump must not stall
        else:
            assert cap == acked + window

    @given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
    def test_follower_commit_never_passes_what_it_verified(self, commit: int, leader: int,
                                                           verified: int) -> None:
        new = rules.follower_commit(commit, leader, verified)
        if leader > commit:
            assert new == min(leader, verified) and new <= verified
        else:
            assert new == commit

    @given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
    def test_commit_after_dump(self, commit: int, dump: int, last: int) -> None:
        new = rules.commit_after_dump(commit, dump, last)
        assert new <= last
        assert new == last or new >= max(commit, dump)

    def test_compaction_due(self) -> None:
        base = dict(applied=100, last_dumped=50, now=10.0, last_dump_time=5.0,
                    min_entries=50, min_seconds=10.0, forced=False)
        assert not rules.compaction_due(**base)
        assert rules.compaction_due(**{**base, "applied": 101})
        assert rules.compaction_due(**{**base, "now": 15.5})
        assert rules.compaction_due(**{**base, "forced": True})
        # the unapplied tail does not count: only entries applied since the last dump
        assert not rules.compaction_due(**{**base, "applied": 60, "last_dumped": 50})
