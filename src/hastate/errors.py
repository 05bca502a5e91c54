"""Exceptions raised by hastate: one root, each subclass named for its condition."""

from __future__ import annotations

from typing import Any


class HAStateError(Exception):
    """Root of every error hastate raises on purpose."""


class ConfigError(HAStateError):
    """Raised when a cluster file or constructor argument is invalid.

    The message names the file (when there is one), the key, the bad value and the fix.
    """

    def __init__(self, message: str, *, field: str | None = None, value: Any = None,
                 path: str | None = None) -> None:
        prefix = f"{path}: " if path else ""
        where = f"{field}: " if field else ""
        super().__init__(f"{prefix}{where}{message}")
        self.field = field
        self.value = value
        self.path = path


class NotLeaderError(HAStateError):
    """Raised when an operation needs the leader and none could be reached."""

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        super().__init__(message if leader is None else f"{message} (last known leader: {leader})")
        self.leader = leader


class WriteError(HAStateError):
    """Raised when a write did not complete.

    ``outcome_unknown`` is True when the write may still have been (or may later be)
    applied: the caller must read the state before retrying by hand.
    """

    def __init__(self, message: str, *, outcome_unknown: bool) -> None:
        suffix = " (outcome unknown: the write may still be applied)" if outcome_unknown \
            else " (not applied)"
        super().__init__(message + suffix)
        self.outcome_unknown = outcome_unknown


class WriteTimeoutError(WriteError):
    """Raised when a write was not confirmed within its timeout."""


class NoQuorumError(WriteError):
    """Raised when no leader with a quorum could take the write."""


class OverloadedError(WriteError):
    """Raised when a write is refused because too many writes are waiting to commit.

    The write was certainly not applied. Retry after ``retry_after`` seconds (an estimate of
    when there will be room), or slow down: the bounds are the cluster file's ``[limits]``.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(f"{message}; retry after {retry_after:.3f}s", outcome_unknown=False)
        self.retry_after = retry_after


class ConflictError(HAStateError):
    """Raised by compare-and-set when a key's revision is not the expected one."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"compare-and-set on {key!r} failed: expected revision {expected}, "
                         f"found {actual}; re-read the key and retry")
        self.key = key
        self.expected = expected
        self.actual = actual


class ReadError(HAStateError):
    """Raised when a linearizable read could not be confirmed through the leader."""


class FailoverError(HAStateError):
    """Raised when a requested leadership transfer did not complete."""


class NodeUnreachableError(HAStateError):
    """Raised when a node's HTTP endpoint did not answer; names the node and the URL."""

    def __init__(self, node: str, url: str, reason: str) -> None:
        super().__init__(f"{node} does not answer at {url}: {reason}")
        self.node = node
        self.url = url
        self.reason = reason


class StoreUnreachableError(HAStateError):
    """Raised when no endpoint of an engine's store (etcd...) answered; names the store, the
    endpoints tried and the last reason. A write that raised it may have been applied: the
    engine retries it under its exactly-once key until the write timeout."""

    def __init__(self, store: str, endpoints: list[str], reason: str) -> None:
        super().__init__(f"no {store} endpoint answered ({', '.join(endpoints)}): {reason}; "
                         f"check that the {store} cluster runs and is reachable")
        self.store = store
        self.endpoints = endpoints
        self.reason = reason


class StoreRefusedError(HAStateError):
    """Raised when an engine's store refused a request; carries its error code and message."""

    def __init__(self, store: str, request: str, code: int, message: str) -> None:
        super().__init__(f"{store} refused {request}: {message} (code {code})")
        self.store = store
        self.request = request
        self.code = code
        self.store_message = message


class MembershipRefused(HAStateError):
    """Raised when a membership change is refused; the message says why and what to do."""


class SnapshotError(HAStateError):
    """Raised when a snapshot cannot be written, read or verified."""


class SnapshotNotFoundError(SnapshotError):
    """Raised when a snapshot store has no snapshot with the requested id."""


class CorruptDataError(HAStateError):
    """Raised when a file on disk fails its checksum, format or cluster check."""


class ForeignDataError(CorruptDataError):
    """Raised when intact data belongs to another cluster: the wrong store or data_dir."""


class RestoreTargetNotEmptyError(HAStateError):
    """Raised when a snapshot would be loaded into a running cluster that already holds keys
    (a restore never overwrites: delete them, or restore into a fresh cluster)."""


class LockHeldError(HAStateError):
    """Raised when a lock is held by another owner: by a non-blocking ``Lock.acquire``, or
    by a blocking one whose timeout ran out.

    ``owner`` says who holds it, ``token`` is the holder's fencing token and ``lease`` the
    lease its grant hangs on: the lock is held as long as its holder keeps that lease alive.
    """

    def __init__(self, owner: str, *, name: str | None = None, token: int | None = None,
                 lease: int | None = None, waited: float | None = None) -> None:
        what = f"lock {name!r}" if name is not None else "lock"
        on = f" on lease {lease}" if lease is not None else ""
        after = f" after waiting {waited:.1f}s" if waited is not None else ""
        super().__init__(f"{what} is held by {owner!r}{on} (fencing token {token}){after}")
        self.owner = owner
        self.name = name
        self.token = token
        self.lease = lease


class LockLostError(HAStateError):
    """Raised when a lock this process held is no longer its own: released, taken over after
    it expired, or not renewed in time. Stop using the resource it guards."""

    def __init__(self, message: str, *, name: str | None = None,
                 token: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.token = token


class WatchError(HAStateError):
    """Root of the errors that end a watch; resume with ``start_revision`` = last seen + 1."""


class CompactedError(WatchError):
    """Raised when a watch asks for revisions this node no longer holds.

    ``oldest_revision`` is the oldest revision still available here: read the state
    (``get_state(with_revision=True)``) and watch from its revision + 1, or start there.
    """

    def __init__(self, requested: int, oldest_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted on this node: the oldest "
                         f"revision it still holds is {oldest_revision}; re-read the state "
                         "and watch from its revision + 1 (or raise watch_history)")
        self.requested = requested
        self.oldest_revision = oldest_revision


class WatchOverflowError(WatchError):
    """Raised when a watcher fell more than its buffer behind and was cancelled.

    The events it had buffered were delivered first; resume from ``next_revision``.
    """

    def __init__(self, buffer: int, next_revision: int) -> None:
        super().__init__(f"watcher fell behind by more than {buffer} events and was "
                         f"cancelled; consume faster (or raise the buffer) and resume with "
                         f"start_revision={next_revision}")
        self.buffer = buffer
        self.next_revision = next_revision


class WatchCancelledError(WatchError):
    """Raised by a watcher after it was cancelled, or when its node stopped."""


class TxnError(HAStateError):
    """Root of the errors that refuse a transaction before anything is proposed."""


class TxnInvalidError(TxnError, ValueError):
    """Raised when a transaction is malformed: unknown target, operator or op, bad key."""


class TxnTooManyOpsError(TxnError):
    """Raised when a transaction has more compares, or more ops in a branch, than allowed."""


class TxnDuplicateKeyError(TxnError):
    """Raised when a transaction branch would modify one key twice (put twice, or a put
    inside a deleted prefix)."""


class TxnTooLargeError(TxnError):
    """Raised when a transaction's encoded size exceeds the byte cap."""


class LeaseNotFoundError(HAStateError):
    """Raised when a lease has ended (expired or revoked) or never existed: a keep-alive
    or a put attached to it is refused. Grant a new lease and write the keys again."""

    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease} has ended (expired or revoked) or never existed; "
                         "grant a new lease and write its keys again")
        self.lease = lease


class StoreRegressedError(HAStateError):
    """Raised when an engine's store reports an older revision than the instance already
    saw: the store lost acknowledged writes (e.g. a Firestore emulator restarted without
    its data). The instance refuses to go on rather than serve a past that changed."""


class NotSupportedError(HAStateError):
    """Raised when the engine under a StateManager cannot do what was asked (an operation
    another engine offers); the message names the engine, the operation and why."""

    def __init__(self, engine: str, operation: str, reason: str) -> None:
        super().__init__(f"the {engine} engine does not support {operation}: {reason}")
        self.engine = engine
        self.operation = operation


class CacheLoadTimeout(HAStateError):
    """Raised when a cache key another caller is loading did not appear within the cache's
    ``wait``; call ``get`` again (it takes the load over once that caller's marker lapses)."""


class EventStreamError(HAStateError):
    """Root of the errors of event streams (:mod:`hastate.events`)."""


class WrongExpectedVersionError(EventStreamError):
    """Raised when an append's expected version does not match the stream's actual one.

    ``actual_version`` is the stream's last version (-1: the stream does not exist): read
    the stream from there, decide again, and append with the new expected version.
    """

    def __init__(self, stream: str, expected: Any, actual_version: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, but its actual "
                         f"version is {actual_version} (-1 = no stream); re-read and decide "
                         "again")
        self.stream = stream
        self.expected = expected
        self.actual_version = actual_version


class DuplicateEventIdError(EventStreamError):
    """Raised when an append reuses event ids that are stored, but not as this same append.

    A retried append (same stream, same ids, same order) returns the original positions;
    ids already stored elsewhere (another stream, another batch) are refused, named here.
    """

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(f"event ids {event_ids} are already stored by another append; "
                         "give every new event a fresh id")
        self.event_ids = event_ids


class AppendContentionError(EventStreamError, WriteError):
    """Raised when an append kept losing its compares to concurrent writers until timeout.

    Nothing was written by this call (``outcome_unknown`` is False): retry it.
    """

    def __init__(self, attempts: int) -> None:
        super().__init__(f"append lost {attempts} races to concurrent appends before its "
                         "timeout; nothing was written, retry", outcome_unknown=False)
        self.attempts = attempts
