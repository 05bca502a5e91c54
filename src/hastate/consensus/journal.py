"""Durable storage under PySyncObj: a checksummed, fsync'ed Raft journal and a durable dump.

PySyncObj 0.3.17 keeps its log in an mmap'ed file that is never synced, stores term and
vote with tmp+rename but no fsync, and renames the full dump without syncing the directory
(docs/pysyncobj-defects.md, defects 1 and 4). This module replaces both:

Length: one on-disk format (journal records, meta and dump) with its reader, writer and
recovery; split apart, each half would have to know the other's framing.

* :class:`DurableJournal` implements ``pysyncobj.journal.Journal``. Entries are appended
  with ``os.write`` as framed, CRC-32-checked records and made durable by :meth:`flush`, a
  group commit: everything appended since the previous flush is written and fdatasync'ed
  in one go. Nothing is acknowledged to a peer (and no entry counts toward the leader's
  commit) before the flush that covers it (see ``HastateSyncObj``).
* Term, vote and commit index live in ``<journal>.meta``, replaced atomically (tmp, fsync,
  rename, directory fsync); term and vote are stored before any message reflecting them
  is sent. The commit index is stored lazily (once a second) after a journal flush, so it
  never points past the durable log.
* Compaction (:meth:`DurableJournal.deleteEntriesTo`) rewrites the file atomically, and
  only ever runs after the dump it relies on is durable (:class:`DurableSerializer`).

File layout (all integers big-endian)::

    MAGIC (8) | header length u32 | header (msgpack) | CRC-32 of header u32
    record*:  payload length u32 | CRC-32 of (length bytes + payload) u32 | payload
    payload:  index u64 | term u64 | command bytes

At open, a bad record at the end of the file is a torn write from a crash and is cut off
(nothing after the last fsync was acknowledged). A bad record *followed by a valid one*
cannot come from a torn append: the file is corrupt and the node refuses to start, with
:class:`~hastate.errors.CorruptDataError` naming the file and the offset.

Length: the record layout, the writer, startup recovery and the dump
serializer that compaction waits for must agree byte for byte; one file keeps them together.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import msgpack
from pysyncobj.journal import Journal
from pysyncobj.serializer import Serializer

from hastate._fsutil import fsync_dir
from hastate.errors import ConfigError, CorruptDataError, HAStateError

logger = logging.getLogger(__name__)

MAGIC = b"HSJRNL\x00\x01"
META_MAGIC = b"HSJMETA\x01"
#: Version of the journal layout; readers refuse versions they do not know.
JOURNAL_FORMAT_VERSION = 1
_U32 = struct.Struct(">I")
_RECORD = struct.Struct(">II")      # payload length, CRC-32
_ENTRY = struct.Struct(">QQ")       # index, term
_MIN_PAYLOAD = _ENTRY.size
_PYSYNCOBJ_MAGIC = b"PYSYNCOBJ"

Entry = tuple  # (command: bytes, index: int, term: int)
Sync = Callable[[int], None]
# flush_observer(started_ns, ended_ns, first index, last index, entries made durable)
FlushObserver = Callable[[int, int, int, int, int], None]


def fdatasync(fd: int) -> None:
    """Make a file's data durable: fdatasync where the OS has it, else fsync."""
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def encode_record(command: bytes, index: int, term: int) -> bytes:
    """One framed journal record."""
    payload = _ENTRY.pack(index, term) + bytes(command)
    length = _U32.pack(len(payload))
    return length + _U32.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def decode_record(blob: bytes | memoryview, offset: int) -> tuple[Entry, int] | None:
    """The record at ``offset`` and the offset after it, or None if it is not intact."""
    end = len(blob)
    if offset + _RECORD.size > end:
        return None
    length, crc = _RECORD.unpack_from(blob, offset)
    start = offset + _RECORD.size
    if length < _MIN_PAYLOAD or start + length > end:
        return None
    payload = bytes(blob[start:start + length])
    if zlib.crc32(payload, zlib.crc32(bytes(blob[offset:offset + 4]))) != crc:
        return None
    index, term = _ENTRY.unpack_from(payload)
    return (payload[_ENTRY.size:], index, term), start + length


def _find_valid_record(blob: bytes, start: int) -> int | None:
    """Offset of the first intact record at or after ``start`` (byte by byte), or None."""
    limit = len(blob) - _RECORD.size - _MIN_PAYLOAD
    unpack = _U32.unpack_from
    for pos in range(start, limit + 1):
        (length,) = unpack(blob, pos)
        if length < _MIN_PAYLOAD or pos + _RECORD.size + length > len(blob):
            continue
        if decode_record(blob, pos) is not None:
            return pos
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _pack_framed(magic: bytes, fields: dict[str, Any]) -> bytes:
    raw = msgpack.packb(fields, use_bin_type=True)
    return magic + _U32.pack(len(raw)) + raw + _U32.pack(zlib.crc32(raw))


def _unpack_framed(blob: bytes, magic: bytes, source: str, what: str) -> tuple[dict[str, Any], int]:
    if blob[:len(magic)] != magic:
        raise CorruptDataError(f"{source}: not a hastate {what} (bad magic)")
    if len(blob) < len(magic) + 4:
        raise CorruptDataError(f"{source}: {what} header is truncated ({len(blob)} bytes)")
    (hlen,) = _U32.unpack_from(blob, len(magic))
    start = len(magic) + 4
    end = start + hlen
    if len(blob) < end + 4:
        raise CorruptDataError(f"{source}: {what} header is truncated ({len(blob)} bytes)")
    raw = blob[start:end]
    if zlib.crc32(raw) != _U32.unpack_from(blob, end)[0]:
        raise CorruptDataError(f"{source}: {what} header checksum mismatch at offset 0: "
                               "the file is corrupt")
    fields = msgpack.unpackb(raw, raw=False)
    if not isinstance(fields, dict):
        raise CorruptDataError(f"{source}: malformed {what} header")
    return fields, end + 4


def _replace_file(path: Path, chunks: Iterable[bytes], sync: Sync) -> None:
    """Atomically replace ``path``: write a temp file, sync it, rename, sync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in chunks:
            _write_all(fd, chunk)
        sync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class DurableJournal(Journal):
    """PySyncObj journal whose appends are group-committed with fdatasync.

    Example::

        journal = DurableJournal("data/raft.journal", cluster="prod", node_id="instance-1")
        journal.add(b"\\x01", 1, 0)
        journal.flush()          # now the entry survives kill -9 and power loss

    Args:
        path: the journal file; ``<path>.meta`` holds term, vote and commit index.
        cluster: cluster name recorded in the header; a journal of another cluster is refused.
        node_id: node id recorded in the header; another node's journal is refused.
        sync: how to make a file descriptor's data durable (``os.fdatasync``). A seam for
            crash-state tests, which record what was durable at each call.

    Not thread-safe: PySyncObj uses it from its tick thread only.
    """

    def __init__(self, path: str | os.PathLike[str], *, cluster: str, node_id: str,
                 sync: Sync | None = None) -> None:
        self.path = Path(path)
        self.meta_path = self.path.with_name(self.path.name + ".meta")
        self.cluster = cluster
        self.node_id = node_id
        self._sync: Sync = sync or fdatasync
        self._entries: list[Entry] = []
        self._offsets: list[int] = []   # file offset of each record written to the file
        self._end = 0                   # file size = end of the last written record
        self._rewrite = False           # clear() happened: next flush replaces the file
        self._failed: str | None = None
        self._fd = -1
        #: Counters for metrics and tests: fsyncs, flushes, entries made durable, rewrites.
        self.stats = {"syncs": 0, "flushes": 0, "entries_synced": 0, "rewrites": 0,
                      "truncations": 0, "torn_bytes_dropped": 0, "compacted_bytes": 0}
        self._meta: dict[str, Any] = {"term": 0, "vote": None, "commit": 1}
        self._meta_dirty = False
        #: Told about every flush that made entries durable, with wall-clock times (tracing).
        self.flush_observer: FlushObserver | None = None
        self._load_meta()
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    # -- opening ------------------------------------------------------------------------
    def _header(self) -> bytes:
        return _pack_framed(MAGIC, {"format_version": JOURNAL_FORMAT_VERSION,
                                    "cluster": self.cluster, "node_id": self.node_id,
                                    "created_at": time.time()})

    def _check_owner(self, fields: dict[str, Any], source: Path) -> None:
        theirs = (fields.get("cluster"), fields.get("node_id"))
        if theirs != (self.cluster, self.node_id):
            raise ConfigError(
                f"{source} belongs to cluster {theirs[0]!r} node {theirs[1]!r}, not cluster "
                f"{self.cluster!r} node {self.node_id!r}; point data_dir at this node's own "
                "directory (a journal is never shared between nodes or clusters)",
                field="data_dir", value=str(source.parent))

    def _load(self) -> None:
        if not self.path.exists():
            header = self._header()
            _replace_file(self.path, [header], self._counted_sync)
            self._end = len(header)
            return
        blob = self.path.read_bytes()
        if blob.startswith(_PYSYNCOBJ_MAGIC):
            raise CorruptDataError(
                f"{self.path}: written by PySyncObj's FileJournal (unsynced mmap, no "
                "checksums), which hastate no longer reads; stop the node, move the data_dir "
                "away and let it re-sync from the cluster (or restore a snapshot)")
        fields, offset = _unpack_framed(blob, MAGIC, str(self.path), "journal")
        if fields.get("format_version") != JOURNAL_FORMAT_VERSION:
            raise CorruptDataError(
                f"{self.path}: journal format version {fields.get('format_version')} is not "
                f"supported (this hastate reads {JOURNAL_FORMAT_VERSION}); upgrade hastate")
        self._check_owner(fields, self.path)
        view = memoryview(blob)
        entries, offsets = self._entries, self._offsets
        while offset < len(blob):
            decoded = decode_record(view, offset)
            if decoded is None:
                self._drop_torn_tail(blob, offset)
                break
            entry, next_offset = decoded
            if entries and entry[1] != entries[-1][1] + 1:
                raise CorruptDataError(
                    f"{self.path}: record at offset {offset} has index {entry[1]}, expected "
                    f"{entries[-1][1] + 1}: the journal is corrupt; move the data_dir away "
                    "and let the node re-sync from the cluster")
            entries.append(entry)
            offsets.append(offset)
            offset = next_offset
        self._end = offset

    def _drop_torn_tail(self, blob: bytes, offset: int) -> None:
        valid = _find_valid_record(blob, offset + 1)
        if valid is not None:
            raise CorruptDataError(
                f"{self.path}: record at offset {offset} is corrupt but an intact record "
                f"follows at offset {valid}: this is not a torn write, the journal is "
                "corrupt; move the data_dir away and let the node re-sync from the cluster "
                "(or restore a snapshot)")
        dropped = len(blob) - offset
        logger.warning("journal: dropping a torn tail of %d bytes at offset %d of %s "
                       "(written after the last fsync, never acknowledged)",
                       dropped, offset, self.path)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            self._counted_sync(fd)
        finally:
            os.close(fd)
        self.stats["torn_bytes_dropped"] += dropped

    def _load_meta(self) -> None:
        if not self.meta_path.exists():
            return
        blob = self.meta_path.read_bytes()
        fields, _ = _unpack_framed(blob, META_MAGIC, str(self.meta_path), "journal meta")
        self._check_owner(fields, self.meta_path)
        self._meta = {"term": int(fields["term"]), "vote": fields["vote"],
                      "commit": int(fields["commit"])}

    # -- durability ---------------------------------------------------------------------
    def _counted_sync(self, fd: int) -> None:
        self._sync(fd)
        self.stats["syncs"] += 1

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise HAStateError(f"{self.path}: journal unusable after a failed write "
                               f"({self._failed}); restart the node")

    @property
    def pending(self) -> int:
        """Entries appended since the last flush (not yet durable)."""
        return len(self._entries) if self._rewrite else len(self._entries) - len(self._offsets)

    def flush(self) -> int:
        """Group commit: write and fdatasync everything appended since the last flush.

        Returns the number of entries made durable (0, and no syscall, when none pending).
        A failed write or sync leaves the journal unusable: after a failed fsync the page
        cache cannot be trusted, so the node must restart and re-read the file.
        """
        count = self.pending
        if count == 0 and not self._rewrite:
            return 0
        self._check_usable()
        observer = self.flush_observer
        started = time.time_ns() if observer is not None else 0
        try:
            if self._rewrite:
                self._rewrite_file()
            else:
                start = len(self._offsets)
                chunks = []
                offset = self._end
                for entry in self._entries[start:]:
                    record = encode_record(*entry)
                    self._offsets.append(offset)
                    offset += len(record)
                    chunks.append(record)
                _write_all(self._fd, b"".join(chunks))
                self._counted_sync(self._fd)
                self._end = offset
        except OSError as exc:
            self._failed = repr(exc)
            raise
        self.stats["flushes"] += 1
        self.stats["entries_synced"] += count
        if observer is not None and count:
            observer(started, time.time_ns(), self._entries[-count][1], self._entries[-1][1],
                     count)
        return count

    def _rewrite_file(self) -> None:
        header = self._header()
        offsets = []
        records = []
        offset = len(header)
        for entry in self._entries:
            record = encode_record(*entry)
            offsets.append(offset)
            offset += len(record)
            records.append(record)
        _replace_file(self.path, [header, b"".join(records)], self._counted_sync)
        old_fd, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if old_fd >= 0:
            os.close(old_fd)
        self._offsets = offsets
        self._end = offset
        self._rewrite = False
        self.stats["rewrites"] += 1

    def _store_meta(self) -> None:
        self.flush()  # a stored commit index must never point past the durable log
        fields = {"cluster": self.cluster, "node_id": self.node_id, **self._meta}
        _replace_file(self.meta_path, [_pack_framed(META_MAGIC, fields)], self._counted_sync)
        self._meta_dirty = False

    # -- pysyncobj.journal.Journal --------------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        """Append an entry (in memory until the next :meth:`flush`)."""
        if self._entries and idx != self._entries[-1][1] + 1:
            raise HAStateError(f"journal: entry {idx} does not follow {self._entries[-1][1]}")
        self._entries.append((bytes(command), idx, term))

    def clear(self) -> None:
        """Drop every entry; the file is replaced atomically at the next flush."""
        self._entries = []
        self._offsets = []
        self._rewrite = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 (PySyncObj's name)
        """Delete entries from position ``entryFrom`` on (a conflict with the leader).

        Entries already in the file are cut with ftruncate, synced at once, so a crash
        never brings them back behind entries appended after them.
        """
        if entryFrom >= len(self._entries):
            return
        entryFrom = max(entryFrom, 0)
        removed = len(self._entries) - entryFrom
        first = self._entries[entryFrom][1]
        del self._entries[entryFrom:]
        self.stats["truncations"] += 1
        logger.warning("journal: deleted %d entries from index %d (conflict with the leader)",
                       removed, first)
        if self._rewrite or entryFrom >= len(self._offsets):
            return
        self._check_usable()
        new_end = self._offsets[entryFrom]
        del self._offsets[entryFrom:]
        try:
            os.ftruncate(self._fd, new_end)
            self._counted_sync(self._fd)
        except OSError as exc:
            self._failed = repr(exc)
            raise
        self._end = new_end

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802
        """Compaction: drop entries before position ``entryTo``, rewriting the file atomically.

        PySyncObj calls this only once the dump covering those entries is durable
        (:class:`DurableSerializer`); a crash before the rename leaves the longer journal,
        which the loader trims again.
        """
        if entryTo <= 0:
            return
        self.stats["compacted_bytes"] += sum(len(entry[0]) for entry in self._entries[:entryTo])
        del self._entries[:entryTo]
        self._check_usable()
        try:
            self._rewrite_file()
        except OSError as exc:
            self._failed = repr(exc)
            raise

    def reset(self, entries: Sequence[Entry]) -> None:
        """Replace the whole journal with ``entries`` and make it durable (snapshot load)."""
        self.clear()
        for entry in entries:
            self.add(*entry)
        self.flush()

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        """Flush entries and meta, then close the file (the node is stopping)."""
        if self._fd < 0:
            return
        try:
            if self._failed is None:
                self.flush()
                if self._meta_dirty:
                    self._store_meta()
        finally:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Same as ``_destroy``: flush and close."""
        self._destroy()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802
        """Remember the commit index; stored within a second (after a flush)."""
        if raftCommitIndex != self._meta["commit"]:
            self._meta["commit"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        """The stored commit index, never past the last entry in the journal."""
        commit = int(self._meta["commit"])
        return min(commit, self._entries[-1][1]) if self._entries else commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802
        """Store term and vote durably before returning (Raft: before any reply)."""
        self._meta["term"] = term
        self._meta["vote"] = votedForNodeId
        self._check_usable()
        self._store_meta()

    def getCurrentTerm(self) -> int:  # noqa: N802
        return int(self._meta["term"])

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._meta["vote"]

    def onOneSecondTimer(self) -> None:  # noqa: N802
        """Store the commit index if it moved."""
        if self._meta_dirty and self._failed is None:
            self._store_meta()

    # -- startup against the dump (defect 1) ---------------------------------------------
    def adopt_dump(self, last: Entry, prev: Entry) -> int:
        """Line the journal up with a full dump whose last applied entries are ``prev, last``.

        Keeps every entry after the dump (PySyncObj discards the whole journal unless its
        first two entries equal the dump's, losing acknowledged entries after a crash in
        the middle of a compaction). Returns how many entries after ``last`` were kept.
        Raises CorruptDataError when the journal starts after the dump (entries missing).
        """
        last, prev = tuple(last), tuple(prev)
        if not self._entries:
            self.reset([prev, last])
            return 0
        first_idx, last_idx = self._entries[0][1], self._entries[-1][1]
        if first_idx > last[1]:
            raise CorruptDataError(
                f"{self.path}: the journal starts at index {first_idx} but the dump ends at "
                f"{last[1]}: entries in between are missing (was an old dump restored by "
                "hand?); move the data_dir away and let the node re-sync from the cluster")
        if last[1] > last_idx or self._entries[last[1] - first_idx][2] != last[2]:
            # Behind the dump, or a divergent (never committed) suffix: the dump wins.
            self.reset([prev, last])
            return 0
        pos = last[1] - first_idx
        kept = last_idx - last[1]
        if pos == 0:
            self.reset([prev, *self._entries])
        elif pos > 1:
            self.deleteEntriesTo(pos - 1)
        return kept


class DurableSerializer(Serializer):
    """PySyncObj's dump receiver, made durable (defects 1 and 4).

    hastate writes its own dumps (``HastateSyncObj._SyncObj__tryLogCompaction``: tmp, fsync,
    rename, directory fsync). A dump received from the leader (``setTransmissionData``) is
    renamed into place by PySyncObj, which never syncs it: here it is.

    A received dump that this node already has (``is_stale(path)``: its last entry is
    committed here or present in the log) is dropped and the node's own dump put back:
    PySyncObj would load it and reset the log to it, moving a follower's log, commit index
    and state backwards (the leader sends one whenever its ``nextIndex`` for the follower
    falls behind its own compacted log, which defect 2 makes common under load).
    """

    def __init__(self, fileName: str | None, transmissionBatchSize: int, tryUseFork: bool,  # noqa: N803
                 serializer: Any, deserializer: Any, serializeChecker: Any,
                 is_stale: Callable[[str], bool] | None = None) -> None:
        super().__init__(fileName, transmissionBatchSize, tryUseFork, serializer, deserializer,
                         serializeChecker)
        self._dump_path = fileName
        self._is_stale = is_stale
        #: Dumps received from a leader and dropped because this node was already past them.
        self.stale_dumps_dropped = 0

    def setTransmissionData(self, data: Any) -> bool:  # noqa: N802
        if self._dump_path is None or data is None or not data[2]:
            return super().setTransmissionData(data)
        # Last chunk: PySyncObj renames the received file over our dump. Keep ours (a hard
        # link, no copy) until we know the received one is newer.
        dump = Path(self._dump_path)
        backup = dump.with_name(dump.name + ".own")
        backup.unlink(missing_ok=True)
        if dump.exists():
            os.link(dump, backup)
        done = super().setTransmissionData(data)
        if done and self._is_stale is not None and self._is_stale(str(dump)):
            if backup.exists():
                os.replace(backup, dump)
            else:
                dump.unlink()
            fsync_dir(dump.parent)
            self.stale_dumps_dropped += 1
            logger.info("dropped a dump from the leader that this node is already past")
            return False
        backup.unlink(missing_ok=True)
        if done:
            fd = os.open(dump, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(dump.parent)
        return done
