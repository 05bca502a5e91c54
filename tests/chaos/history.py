"""Client-side operation history for chaos tests.

Every client call made against the cluster during a fault campaign is recorded as one
:class:`Operation`: who did it (``process``), on which ``key``, what it was (``f``: read,
write or compare-and-set), its ``value``, when it was invoked and completed on one
monotonic clock, and how it ended. The checkers in :mod:`.linearizability` and
:mod:`.checkers` judge the cluster only from such histories, so the recorder must never
guess: a call whose effect is not known (timeout, lost connection, ``WriteError`` with
``outcome_unknown``) is recorded as :attr:`Outcome.UNKNOWN`, and an operation still in
flight when the history is read is reported as unknown too.

Value conventions (kept by the checkers):

* ``write``: ``value`` is the value written; ``None`` means "delete the key".
* ``cas``: ``value`` is ``(expected, new)``; ``ok`` means it applied (the register held
  ``expected``), ``fail`` means it definitely did not apply (for whatever reason).
* ``read``: ``value`` is what was read, set on completion; ``None`` means "absent".

Histories round-trip through JSON so a failing campaign can be saved next to its logs and
re-checked offline.
"""

from __future__ import annotations

import enum
import itertools
import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

#: Version of the JSON layout written by :meth:`History.to_json`.
HISTORY_FORMAT_VERSION = 1


class F(str, enum.Enum):
    """What an operation does to its key's register."""

    READ = "read"
    WRITE = "write"
    CAS = "cas"


class Outcome(str, enum.Enum):
    """How an operation ended, as far as the client knows."""

    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key.

    ``complete_ns`` is None only while the operation is in flight; for an ``unknown``
    outcome it is the time the client gave up, which the checkers ignore (the effect may
    land at any later time).
    """

    id: int
    process: str
    key: str
    f: F
    value: Any
    invoke_ns: int
    complete_ns: int | None
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of this operation."""
        return {"id": self.id, "process": self.process, "key": self.key, "f": self.f.value,
                "value": self.value, "invoke_ns": self.invoke_ns,
                "complete_ns": self.complete_ns, "outcome": self.outcome.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Operation":
        """Rebuild an operation from :meth:`to_dict` output (cas values come back as lists)."""
        return cls(id=int(data["id"]), process=str(data["process"]), key=str(data["key"]),
                   f=F(data["f"]), value=data["value"], invoke_ns=int(data["invoke_ns"]),
                   complete_ns=None if data["complete_ns"] is None else int(data["complete_ns"]),
                   outcome=Outcome(data["outcome"]))

    def describe(self) -> str:
        """A one-line human description, used in checker explanations."""
        if self.f is F.CAS:
            expected, new = self.value
            what = f"cas({expected!r}->{new!r})"
        else:
            what = f"{self.f.value}({self.value!r})"
        end = "..." if self.complete_ns is None else str(self.complete_ns)
        return (f"#{self.id} {self.process} {what} on {self.key!r} {self.outcome.value} "
                f"[{self.invoke_ns}, {end}]")


class History:
    """Thread-safe recorder of :class:`Operation` objects.

    Client threads call :meth:`invoke` just before sending a request and :meth:`complete`
    as soon as they know the result. ``clock`` is injectable so tests can build
    deterministic histories; in campaigns it must be :func:`time.monotonic_ns` of the one
    process that records every client, so all times share one clock.
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._ops: dict[int, Operation] = {}

    def invoke(self, process: str, key: str, f: F, value: Any = None) -> int:
        """Record the start of an operation and return its id.

        For a cas, ``value`` is ``(expected, new)``; for a read it is ignored (the value read
        is given to :meth:`complete`).
        """
        if f is F.CAS and (not isinstance(value, (tuple, list)) or len(value) != 2):
            raise ValueError(f"cas value must be (expected, new), got {value!r}")
        now = self._clock()
        with self._lock:
            op_id = next(self._ids)
            self._ops[op_id] = Operation(id=op_id, process=process, key=key, f=f,
                                         value=None if f is F.READ else value,
                                         invoke_ns=now, complete_ns=None,
                                         outcome=Outcome.UNKNOWN)
        return op_id

    def complete(self, op_id: int, outcome: Outcome, value: Any = None) -> Operation:
        """Record how operation ``op_id`` ended; for an ``ok`` read, ``value`` is what it read.

        Raises ValueError when the operation was already completed, so a client bug that
        reports one call twice cannot silently rewrite history.
        """
        now = self._clock()
        with self._lock:
            op = self._ops[op_id]
            if op.complete_ns is not None:
                raise ValueError(f"operation {op.describe()} already completed")
            done = replace(op, complete_ns=now, outcome=outcome,
                           value=value if op.f is F.READ else op.value)
            self._ops[op_id] = done
        return done

    def operations(self) -> list[Operation]:
        """All operations in invocation order; ones still in flight are reported ``unknown``."""
        with self._lock:
            return sorted(self._ops.values(), key=lambda o: (o.invoke_ns, o.id))

    def to_json(self) -> str:
        """Serialize the history (values must be JSON-compatible)."""
        return json.dumps({"version": HISTORY_FORMAT_VERSION,
                           "operations": [op.to_dict() for op in self.operations()]})

    @classmethod
    def from_operations(cls, ops: Iterable[Operation]) -> "History":
        """Build a history from existing operations (loaded, or written by hand in tests)."""
        history = cls()
        with history._lock:
            for op in ops:
                if op.id in history._ops:
                    raise ValueError(f"duplicate operation id {op.id}")
                history._ops[op.id] = op
            history._ids = itertools.count(max(history._ops, default=-1) + 1)
        return history

    @classmethod
    def from_json(cls, text: str) -> "History":
        """Parse :meth:`to_json` output; raises ValueError on another format version."""
        data = json.loads(text)
        if data.get("version") != HISTORY_FORMAT_VERSION:
            raise ValueError(f"unsupported history format version {data.get('version')!r}")
        return cls.from_operations(Operation.from_dict(d) for d in data["operations"])

    def save(self, path: Path) -> None:
        """Write the history as JSON to ``path`` (kept with a failed campaign's artefacts)."""
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "History":
        """Read a history written by :meth:`save`."""
        return cls.from_json(path.read_text(encoding="utf-8"))
