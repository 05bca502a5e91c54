"""Writes in flight: exactly-once retries, back-pressure and futures for :class:`StateManager`.

Every write is one encoded command with this manager's client id and a sequence number.
It is proposed, and proposed again with the same id after a failure or an attempt that got
no answer, until it is applied or its timeout ends; the state machine applies each
(client, seq) once, so a retry never applies a write twice. A blocking write is the same
future, waited on.

Back-pressure: a write is refused up front (``OverloadedError``, certainly not applied) when
this process already has ``max_uncommitted_entries`` (or bytes) of writes in flight, and
when the leader's queue is full (PySyncObj's ``QUEUE_FULL``) and no earlier attempt of the
write may have been applied. A write whose earlier attempt may have been applied keeps
retrying within its timeout instead: its outcome is unknown, not refused.

One sweeper thread per manager retries, times out and gives up writes; result callbacks run
on the Raft tick thread, which therefore resolves the futures (see :meth:`Proposer.submit`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Protocol

from hastate.consensus.backpressure import Admission
from hastate.consensus.outcome import NOT_PROPOSED, Outcome
from hastate.errors import NoQuorumError, OverloadedError, WriteError, WriteTimeoutError
from hastate.observability.operations import traced_attempt
from hastate.state.codec import Command

logger = logging.getLogger(__name__)

#: How often the sweeper looks for attempts without an answer and for a lost leader.
SWEEP_SECONDS = 0.05

Observer = Callable[[str, float, str], None]  # observe(op, seconds, outcome)
Finish = Callable[[tuple], Any]               # the state machine's result -> the caller's value


class _Node(Protocol):
    def propose(self, raw: bytes, callback: Callable[[Any, int], None], *,
                alone: bool = False) -> None: ...
    def leader_id(self) -> str | None: ...
    def leaderless_for(self) -> float: ...
    def leading_epoch(self) -> int | None: ...


def _raw_result(result: tuple) -> tuple:
    return result


def _conflict(result: tuple) -> bool:
    """A compare that did not hold: a refused compare-and-set or a failed transaction."""
    return result[0] == "conflict" or (result[0] == "txn" and not result[1])


@dataclasses.dataclass(eq=False)
class _Write:
    """One write until its future is resolved (fields guarded by ``Proposer._lock``)."""

    raw: bytes
    op: str
    finish: Finish
    future: Future
    started: float
    deadline: float
    attempt: int = 0
    attempt_end: float = 0.0
    retry_at: float | None = None      # set while waiting to propose again after a failure
    epoch: int | None = None           # node.leading_epoch() when the attempt was proposed
    backoff: float = 0.01
    maybe_applied: bool = False
    done: bool = False


class Proposer:
    """Proposes writes through ``node`` and resolves their futures."""

    def __init__(self, node: _Node, admission: Admission, *, client_id: bytes,
                 next_seq: Callable[[], int], observers: list[Observer],
                 attempt_timeout: float, leaderless_give_up: float, instance_id: str) -> None:
        self._node = node
        self.admission = admission
        self._client_id = client_id
        self._next_seq = next_seq
        self._observers = observers
        self._attempt_timeout = attempt_timeout
        self._give_up = leaderless_give_up
        self._instance = instance_id
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[int, _Write] = {}
        self._sweeper: threading.Thread | None = None
        self._stopping = False

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, command: Command, timeout: float, finish: Finish = _raw_result) -> Future:
        """Propose ``command`` as this client's next write; the future holds ``finish(result)``.

        The future fails with OverloadedError (not applied; ``retry_after`` says when to try
        again), WriteTimeoutError or NoQuorumError (``outcome_unknown`` says whether it may
        still apply), or whatever ``finish`` raises. Callbacks added to the future run on
        the Raft tick thread: keep them short and never wait there for another write.
        """
        client = self._client_id if command.op != "barrier" else b""
        raw = dataclasses.replace(command, client=client, seq=self._next_seq()).encode()
        return self.propose(raw, timeout, op=command.op, finish=finish)

    def propose(self, raw: bytes, timeout: float, *, op: str = "update",
                finish: Finish = _raw_result) -> Future:
        """Propose an already encoded command (with its client id and sequence number)."""
        now = time.monotonic()
        write = _Write(raw, op, finish, Future(), now, now + timeout)
        write.future.set_running_or_notify_cancel()
        if not self.admission.try_acquire(len(raw)):
            self._observe(write, "overloaded")
            write.future.set_exception(OverloadedError(
                f"instance {self._instance} has {self.admission.entries} writes in flight "
                f"(limits.max_uncommitted_entries / max_uncommitted_bytes reached)",
                retry_after=self.admission.retry_after()))
            return write.future
        with self._lock:
            self._pending[id(write)] = write
            self._ensure_sweeper()
        self._attempt(write)
        return write.future

    def _attempt(self, write: _Write) -> None:
        with self._lock:
            if write.done:
                return
            write.attempt += 1
            attempt = write.attempt
            write.retry_at = None
            write.attempt_end = min(write.deadline, time.monotonic() + self._attempt_timeout)
            write.epoch = self._node.leading_epoch()
        # Not under the lock: PySyncObj calls the callback at once when its queue is full.
        # Traced when the caller's write span is current (the first attempt of a blocking
        # write; retries run on the sweeper thread, outside it).
        self._node.propose(*traced_attempt(self._node, write.raw, lambda result, error:
                                           self._on_result(write, attempt, result, error)),
                           alone=write.op in Command.ALONE_OPS)

    def _on_result(self, write: _Write, attempt: int, result: Any, error: int) -> None:
        """A proposal's callback (Raft tick thread, or the proposer's when refused at once)."""
        if error == Outcome.SUCCESS:  # from any attempt: the dedup table says it once
            if result[0] == "expired":
                self._fail(write, WriteError("write was retried after its dedup entry expired",
                                             outcome_unknown=True))
            else:
                self._succeed(write, result)
            return
        with self._lock:
            if write.done or attempt != write.attempt:
                return  # a later attempt is under way
            if error == Outcome.QUEUE_FULL and not write.maybe_applied:
                overloaded = OverloadedError("the leader's queue of uncommitted writes is full",
                                             retry_after=self.admission.retry_after())
            else:
                overloaded = None
                if error not in NOT_PROPOSED:
                    write.maybe_applied = True
                write.retry_at = time.monotonic() + write.backoff
                write.backoff = min(write.backoff * 2, 0.2)
                self._wake.notify()
        if overloaded is not None:
            self._fail(write, overloaded)

    # -- resolving -------------------------------------------------------------------------------
    def _succeed(self, write: _Write, result: tuple) -> None:
        try:
            value = write.finish(result)
        except BaseException as exc:  # e.g. ConflictError from compare_and_set
            if self._resolve(write, "conflict" if _conflict(result) else "error"):
                write.future.set_exception(exc)
            return
        if self._resolve(write, "conflict" if _conflict(result) else "ok"):
            write.future.set_result(value)

    def _fail(self, write: _Write, exc: BaseException) -> None:
        outcome = {OverloadedError: "overloaded", NoQuorumError: "no_quorum",
                   WriteTimeoutError: "timeout"}.get(type(exc), "error")
        if self._resolve(write, outcome):
            write.future.set_exception(exc)

    def _resolve(self, write: _Write, outcome: str) -> bool:
        """Mark ``write`` done exactly once; True for the caller that did."""
        with self._lock:
            if write.done:
                return False
            write.done = True
            self._pending.pop(id(write), None)
        self.admission.release(len(write.raw))
        self._observe(write, outcome)
        return True

    def _observe(self, write: _Write, outcome: str) -> None:
        elapsed = time.monotonic() - write.started
        for observe in self._observers:
            try:
                observe(write.op, elapsed, outcome)
            except Exception:
                logger.exception("proposal observer failed")

    def status(self) -> dict[str, int]:
        """This process's writes in flight and those refused by back-pressure (any thread)."""
        return {"writes_in_flight": self.admission.entries,
                "writes_refused": self.admission.refused}

    # -- sweeping --------------------------------------------------------------------------------
    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or not self._sweeper.is_alive():
            self._sweeper = threading.Thread(target=self._sweep_forever, daemon=True,
                                             name=f"hastate-writes-{self._instance}")
            self._sweeper.start()

    def _sweep_forever(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                soonest = min((w.retry_at for w in self._pending.values()
                               if w.retry_at is not None), default=None)
                wait = SWEEP_SECONDS if soonest is None else \
                    max(0.0, min(SWEEP_SECONDS, soonest - time.monotonic()))
                self._wake.wait(wait)
            try:
                self._sweep(time.monotonic())
            except Exception:
                logger.exception("write sweeper failed; retrying")

    def _sweep(self, now: float) -> None:
        """Propose again what is due; time out or give up what cannot complete."""
        leaderless = self._node.leaderless_for()
        epoch = self._node.leading_epoch()
        again: list[_Write] = []
        failed: list[tuple[_Write, BaseException]] = []
        with self._lock:
            for write in list(self._pending.values()):
                if write.retry_at is not None:
                    if write.retry_at > now:
                        continue
                elif now < write.attempt_end or (
                        epoch is not None and write.epoch == epoch and now < write.deadline):
                    # Proposed on this node while it led, and it has led ever since: the
                    # command is in its queue or log and PySyncObj will answer; proposing it
                    # again would only add load (under overload, a storm of duplicates).
                    if leaderless > self._give_up:
                        failed.append((write, NoQuorumError(
                            f"instance {self._instance} has known no leader for "
                            f"{leaderless:.1f}s: it is cut off from the majority, or most "
                            "nodes are down; the write stays queued and may still apply "
                            "when a leader is back", outcome_unknown=True)))
                    continue
                else:
                    write.maybe_applied = True  # no answer in time: it may yet apply
                if now >= write.deadline:
                    failed.append((write, self._expired(write)))
                else:
                    again.append(write)
        for write, exc in failed:
            self._fail(write, exc)
        for write in again:
            self._attempt(write)

    def _expired(self, write: _Write) -> WriteError:
        timeout = write.deadline - write.started
        if self._node.leader_id() is None:
            return NoQuorumError(f"no leader with a quorum within {timeout:.1f}s; are a "
                                 "majority of the nodes running and reachable?",
                                 outcome_unknown=write.maybe_applied)
        return WriteTimeoutError(f"write not confirmed within {timeout:.1f}s",
                                 outcome_unknown=write.maybe_applied)

    def close(self) -> None:
        """Stop the sweeper; writes still in flight fail (their outcome may be unknown).

        A later write starts a new sweeper (a manager may be started again).
        """
        with self._lock:
            self._stopping = True
            sweeper, self._sweeper = self._sweeper, None
            self._wake.notify()
        if sweeper is not None:
            sweeper.join(1.0)
        with self._lock:
            pending = list(self._pending.values())
            self._stopping = False
        for write in pending:
            self._fail(write, WriteTimeoutError("the state manager stopped before the write "
                                                "was confirmed", outcome_unknown=True))
