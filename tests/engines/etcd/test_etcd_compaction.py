"""Watches older than a bot's mirror are served by etcd; compacted ones end with CompactedError."""

from __future__ import annotations

import pytest

from hastate.errors import CompactedError

from .conftest import Bots


def test_old_revisions_come_from_etcd_and_compacted_ones_raise(bots: Bots) -> None:
    config = bots.config("compaction")
    writer = bots.start(config, "instance-1")
    revisions = [writer.save_state({"k": n}) for n in range(6)]
    bots.store.call(0, "/v3/kv/compaction", {"revision": str(revisions[3]), "physical": True})

    late = bots.start(config, "instance-2")         # its mirror starts after every write
    with late.watch("k", start_revision=revisions[4]) as events:
        seen = [events.get(timeout=15) for _ in revisions[4:]]
    assert [(e.revision, e.value) for e in seen] == [(revisions[4], 4), (revisions[5], 5)]

    with late.watch("k", start_revision=revisions[1]) as compacted:
        with pytest.raises(CompactedError) as caught:
            compacted.get(timeout=15)
    assert caught.value.requested == revisions[1]
    assert caught.value.oldest_revision == revisions[3]
    assert str(revisions[3]) in str(caught.value)
