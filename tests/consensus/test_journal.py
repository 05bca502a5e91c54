"""DurableJournal: model-checked operations, crash images, torn tails, corruption, ownership."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hastate.consensus.journal import DurableJournal, encode_record
from hastate.errors import ConfigError, CorruptDataError

CLUSTER, NODE = "jtest", "n1"


def _nosync(fd: int) -> None:
    """Skip fdatasync where a test only models kill -9 (the page cache survives it)."""


def open_journal(path: Path, **kwargs: object) -> DurableJournal:
    kwargs.setdefault("sync", _nosync)
    return DurableJournal(path, cluster=CLUSTER, node_id=NODE, **kwargs)  # type: ignore[arg-type]


def crash(journal: DurableJournal) -> None:
    """Drop a journal like kill -9 would: close the descriptor, flush nothing."""
    os.close(journal._fd)
    journal._fd = -1


def entries_of(n: int, start: int = 1, term: int = 1, size: int = 8) -> list[tuple]:
    return [(bytes([i % 256]) * (size + i % 5), start + i, term) for i in range(n)]


class TestModel:
    """Random operation sequences against an in-memory model, reopened after crashes."""

    ops = st.lists(st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6), st.integers(0, 2), st.integers(0, 90)),
        st.just(("flush",)),
        st.tuples(st.just("del_from"), st.integers(0, 12)),
        st.tuples(st.just("del_to"), st.integers(0, 12)),
        st.just(("clear",)),
        st.tuples(st.just("term"), st.integers(0, 50), st.sampled_from([None, "a:1", "b:2"])),
        st.tuples(st.just("commit"), st.integers(1, 60)),
        st.just(("timer",)),
        st.just(("crash",)),
        st.just(("close",)),
    ), max_size=30)

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(ops=ops)
    def test_reopen_matches_model(self, tmp_path_factory: pytest.TempPathFactory,
                                  ops: list[tuple]) -> None:
        """After any op sequence, a clean reopen shows all entries and a crash the synced ones."""
        path = tmp_path_factory.mktemp("j") / "raft.journal"
        j = open_journal(path)
        entries: list[tuple] = []      # what the journal holds in memory
        disk: list[tuple] = []         # what a crash would leave
        rewrite = False                # clear() not yet flushed
        meta = {"term": 0, "vote": None, "commit": 1}
        stored_commit = 1
        try:
            for op in ops:
                kind = op[0]
                if kind == "add":
                    _, n, term_step, size = op
                    start = entries[-1][1] + 1 if entries else 1 + size
                    term = (entries[-1][2] if entries else 0) + term_step
                    new = entries_of(n, start, term, size)
                    for e in new:
                        j.add(*e)
                    entries += new
                elif kind == "flush":
                    j.flush()
                    disk, rewrite = list(entries), False
                elif kind == "del_from":
                    j.deleteEntriesFrom(op[1])
                    if op[1] < len(entries):
                        entries = entries[:op[1]]
                        if not rewrite:
                            disk = disk[:op[1]]
                elif kind == "del_to":
                    if op[1] > 0:
                        j.deleteEntriesTo(op[1])
                        entries = entries[op[1]:]
                        disk, rewrite = list(entries), False
                elif kind == "clear":
                    j.clear()
                    entries, rewrite = [], True
                elif kind == "term":
                    j.setCurrentTerm(op[1], op[2])
                    meta.update(term=op[1], vote=op[2])
                    stored_commit = meta["commit"]
                    disk, rewrite = list(entries), False   # storing meta flushes first
                elif kind == "commit":
                    j.setRaftCommitIndex(op[1])
                    meta["commit"] = op[1]
                elif kind == "timer":
                    if j._meta_dirty:
                        disk, rewrite = list(entries), False
                    j.onOneSecondTimer()
                    stored_commit = meta["commit"]
                elif kind == "crash":
                    crash(j)
                    j = open_journal(path)
                    entries, rewrite = list(disk), False
                    meta["commit"] = stored_commit
                elif kind == "close":
                    j._destroy()
                    j = open_journal(path)
                    disk, rewrite = list(entries), False
                    stored_commit = meta["commit"]
                assert list(j) == entries
                assert j.getCurrentTerm() == meta["term"]
                assert j.getVotedForNodeId() == meta["vote"]
            j._destroy()
            j = open_journal(path)
            assert list(j) == entries
            expected_commit = min(meta["commit"], entries[-1][1]) if entries else meta["commit"]
            assert j.getRaftCommitIndex() == expected_commit
        finally:
            j._destroy()


class TestGroupCommit:
    def test_one_fsync_per_flush_whatever_the_batch_size(self, tmp_path: Path) -> None:
        """A flush of 500 entries costs one fdatasync; a flush with nothing pending costs none."""
        calls: list[int] = []
        j = open_journal(tmp_path / "raft.journal", sync=calls.append)
        before = len(calls)
        for e in entries_of(500):
            j.add(*e)
        assert j.pending == 500
        assert j.flush() == 500
        assert len(calls) - before == 1
        assert j.flush() == 0
        assert len(calls) - before == 1
        j._destroy()

    def test_compaction_counts_the_command_bytes_it_drops(self, tmp_path: Path) -> None:
        """What compaction freed (the node trims the C heap after large drops)."""
        j = open_journal(tmp_path / "raft.journal")
        batch = entries_of(50)
        for e in batch:
            j.add(*e)
        j.flush()
        j.deleteEntriesTo(20)
        assert j.stats["compacted_bytes"] == sum(len(e[0]) for e in batch[:20])
        assert [e[1] for e in j[0:1]] == [batch[20][1]]
        j._destroy()

    def test_add_refuses_a_gap(self, tmp_path: Path) -> None:
        """Entries must be contiguous: a gap is a bug upstream, never written."""
        j = open_journal(tmp_path / "raft.journal")
        j.add(b"a", 5, 1)
        with pytest.raises(Exception, match="does not follow"):
            j.add(b"b", 7, 1)
        j._destroy()


class _SyncRecorder:
    """A sync seam that records the journal file's bytes each time it is made durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.images: list[bytes] = []

    def __call__(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(self.path):
            self.images.append(self.path.read_bytes())


class TestCrashImages:
    """Every disk image a crash can leave after an acknowledged flush keeps acknowledged entries."""

    def _check_image(self, workdir: Path, image: bytes, acked: list[tuple],
                     batch: list[tuple]) -> None:
        workdir.mkdir(exist_ok=True)
        target = workdir / "raft.journal"
        target.write_bytes(image)
        j = open_journal(target)
        got, end = list(j), j._end
        j._destroy()
        assert got[:len(acked)] == acked, "an acknowledged entry was lost"
        assert got[len(acked):] == batch[:len(got) - len(acked)], "unexpected tail"
        # A torn tail was cut at the end of the last intact record.
        assert target.stat().st_size == end <= len(image)

    def test_every_prefix_and_torn_tail_of_each_batch(self, tmp_path: Path) -> None:
        """Crash anywhere inside a group commit: acknowledged entries survive, torn tail is cut."""
        rng = random.Random(4)
        path = tmp_path / "raft.journal"
        recorder = _SyncRecorder(path)
        j = DurableJournal(path, cluster=CLUSTER, node_id=NODE, sync=recorder)
        durable = path.read_bytes()
        acked: list[tuple] = []
        next_idx, term, images_checked = 1, 1, 0
        for round_ in range(12):
            if round_ in (5, 9) and len(j) > 3:
                # A conflict truncation: synced at once, so it is a new durable image.
                j.deleteEntriesFrom(len(j) - 2)
                acked = list(j)
                next_idx = acked[-1][1] + 1
                term += 1
                durable = recorder.images[-1]
            batch = [(rng.randbytes(rng.randint(0, 40)), next_idx + i, term)
                     for i in range(rng.randint(1, 6))]
            for e in batch:
                j.add(*e)
            j.flush()
            written = recorder.images[-1]
            assert written.startswith(durable), "a group commit rewrote durable bytes"
            for cut in range(len(durable), len(written) + 1):
                self._check_image(tmp_path / "img", written[:cut], acked, batch)
                images_checked += 1
            for cut in rng.sample(range(len(durable), len(written)), 8):
                junk = rng.randbytes(rng.randint(1, 30))
                self._check_image(tmp_path / "img", written[:cut] + junk, acked, batch)
                self._check_image(tmp_path / "img", written[:cut] + bytes(64), acked, batch)
                images_checked += 2
            acked, durable = list(j), written
            next_idx += len(batch)
        j._destroy()
        assert images_checked > 300

    def test_crash_during_compaction_leaves_old_or_new_file(self, tmp_path: Path) -> None:
        """deleteEntriesTo replaces the file atomically: a leftover temp file changes nothing."""
        path = tmp_path / "raft.journal"
        j = open_journal(path)
        for e in entries_of(20):
            j.add(*e)
        j.flush()
        old = path.read_bytes()
        j.deleteEntriesTo(15)
        new = path.read_bytes()
        j._destroy()
        for image, expected in ((old, entries_of(20)), (new, entries_of(20)[15:])):
            path.write_bytes(image)
            (tmp_path / "raft.journal.tmp").write_bytes(image[:len(image) // 2])
            j = open_journal(path)
            assert list(j) == expected
            j._destroy()


class TestStartupChecks:
    def _journal_with(self, path: Path, n: int) -> list[int]:
        j = open_journal(path)
        for e in entries_of(n):
            j.add(*e)
        j.flush()
        offsets = list(j._offsets)
        j._destroy()
        return offsets

    def test_corrupt_record_followed_by_valid_ones_refuses_naming_offset(self, tmp_path: Path) -> None:
        """A flipped byte mid-journal is corruption, not a torn write: start is refused."""
        path = tmp_path / "raft.journal"
        offsets = self._journal_with(path, 10)
        blob = bytearray(path.read_bytes())
        blob[offsets[4] + 12] ^= 0xFF
        path.write_bytes(bytes(blob))
        with pytest.raises(CorruptDataError, match=f"{path}.*offset {offsets[4]}.*offset {offsets[5]}"):
            open_journal(path)

    def test_corrupt_length_field_mid_journal_is_found(self, tmp_path: Path) -> None:
        """A damaged length cannot hide the valid records after it."""
        path = tmp_path / "raft.journal"
        offsets = self._journal_with(path, 10)
        blob = bytearray(path.read_bytes())
        blob[offsets[3]:offsets[3] + 4] = (10**6).to_bytes(4, "big")
        path.write_bytes(bytes(blob))
        with pytest.raises(CorruptDataError, match=f"offset {offsets[3]}"):
            open_journal(path)

    def test_torn_last_record_is_truncated_and_logged(self, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
        """A partial last record is cut off; every earlier record is kept."""
        path = tmp_path / "raft.journal"
        offsets = self._journal_with(path, 10)
        full = path.read_bytes()
        path.write_bytes(full[:-3])
        j = open_journal(path)
        assert list(j) == entries_of(9)
        j._destroy()
        assert path.stat().st_size == offsets[9]
        assert "torn tail" in caplog.text

    def test_journal_of_another_cluster_or_node_is_refused(self, tmp_path: Path) -> None:
        """The header names cluster and node; a journal copied from elsewhere is refused."""
        path = tmp_path / "raft.journal"
        self._journal_with(path, 3)
        with pytest.raises(ConfigError, match="belongs to cluster 'jtest' node 'n1'.*'other'"):
            DurableJournal(path, cluster="other", node_id=NODE, sync=_nosync)
        with pytest.raises(ConfigError, match="node 'n2'"):
            DurableJournal(path, cluster=CLUSTER, node_id="n2", sync=_nosync)

    def test_pysyncobj_file_journal_is_refused_clearly(self, tmp_path: Path) -> None:
        """An old mmap journal is not misread as records."""
        from pysyncobj.journal import FileJournal
        path = tmp_path / "raft.journal"
        fj = FileJournal(str(path))
        fj.add(b"x", 1, 0)
        fj._destroy()
        with pytest.raises(CorruptDataError, match="PySyncObj's FileJournal"):
            open_journal(path)

    def test_corrupt_meta_is_refused(self, tmp_path: Path) -> None:
        """Term and vote must never silently reset: a damaged meta file stops the node."""
        path = tmp_path / "raft.journal"
        j = open_journal(path)
        j.setCurrentTerm(7, "a:1")
        j._destroy()
        meta = tmp_path / "raft.journal.meta"
        blob = bytearray(meta.read_bytes())
        blob[-6] ^= 0x01
        meta.write_bytes(bytes(blob))
        with pytest.raises(CorruptDataError, match="raft.journal.meta"):
            open_journal(path)

    def test_term_and_vote_are_durable_at_once(self, tmp_path: Path) -> None:
        """setCurrentTerm is stored before it returns (a crash right after keeps it)."""
        path = tmp_path / "raft.journal"
        j = open_journal(path)
        j.setCurrentTerm(3, "b:2")
        crash(j)
        j = open_journal(path)
        assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (3, "b:2")
        j._destroy()


class TestAdoptDump:
    """Startup against a dump keeps the entries after it (defect 1)."""

    def _journal(self, tmp_path: Path, entries: list[tuple]) -> DurableJournal:
        j = open_journal(tmp_path / "raft.journal")
        for e in entries:
            j.add(*e)
        j.flush()
        return j

    def test_entries_after_the_dump_are_kept(self, tmp_path: Path) -> None:
        """Crash between dump rename and compaction: journal still has old head; keep the tail."""
        log = entries_of(30)
        j = self._journal(tmp_path, log)
        assert j.adopt_dump(log[19], log[18]) == 10
        assert list(j) == log[18:]
        j._destroy()
        j = open_journal(tmp_path / "raft.journal")
        assert list(j) == log[18:]
        j._destroy()

    def test_journal_behind_the_dump_is_reset_to_it(self, tmp_path: Path) -> None:
        """A follower that installed the leader's dump: its short journal is replaced."""
        log = entries_of(30)
        j = self._journal(tmp_path, log[:10])
        assert j.adopt_dump(log[24], log[23]) == 0
        assert list(j) == [log[23], log[24]]
        j._destroy()

    def test_divergent_entry_at_the_dump_index_is_dropped(self, tmp_path: Path) -> None:
        """An uncommitted suffix from an old term conflicts with applied state: the dump wins."""
        log = entries_of(30)
        j = self._journal(tmp_path, log[:20] + [(b"x", 21, 0), (b"y", 22, 0)])
        assert j.adopt_dump((b"z", 21, 1), log[19]) == 0
        assert list(j) == [log[19], (b"z", 21, 1)]
        j._destroy()

    def test_journal_starting_after_the_dump_is_refused(self, tmp_path: Path) -> None:
        """A gap between dump and journal (an old dump put back by hand) stops the node."""
        log = entries_of(30)
        j = self._journal(tmp_path, log[20:])
        with pytest.raises(CorruptDataError, match="starts at index 21 but the dump ends at 10"):
            j.adopt_dump(log[9], log[8])
        j._destroy()


def test_record_crc_covers_the_length_field() -> None:
    """A record whose length bytes change no longer verifies."""
    rec = bytearray(encode_record(b"abc", 1, 1))
    assert zlib.crc32(bytes(rec[8:]), zlib.crc32(bytes(rec[:4]))) == int.from_bytes(rec[4:8], "big")
