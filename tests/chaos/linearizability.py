"""Linearizability checker for a history of per-key read/write/cas registers.

Algorithm: Wing & Gong's search for a linearization, with Lowe's memoisation ("Testing for
linearizability", 2017): the history becomes a list of call and return entries sorted by
time; the search repeatedly linearizes a pending call whose model step is legal, and
backtracks when it meets the return of an operation it has not linearized yet. A cache of
(linearized-set bitmask, model state) pairs prunes configurations already explored, which
is what keeps real histories tractable. Before searching, unknown-outcome writes whose
value no operation ever observed are dropped (see :func:`_drop_unobserved`): each would
otherwise double the configurations to explore. Campaigns should write unique values
(e.g. ``f"{process}-{seq}"``) so that this pruning and the explanations are sharp.

Each key is an independent register, so the history is partitioned per key (locality of
linearizability) and every key is searched on its own, with its own time budget: a key
whose search exceeds the budget is reported ``unknown`` instead of hanging the test run.

Outcome handling:

* ``ok`` operations must take effect between invoke and complete.
* ``fail`` operations took no effect and are dropped.
* ``unknown`` writes/cas may take effect at any time after invoke, or never: their return
  entry sits at +infinity and the search may leave them out. ``unknown`` reads say nothing
  and are dropped.

Values are compared with ``==`` after freezing lists/dicts into hashable tuples, so a
history loaded from JSON (where tuples became lists) checks the same as the live one.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .history import F, Operation, Outcome

log = logging.getLogger(__name__)

#: Default per-key search budget, in seconds.
DEFAULT_KEY_BUDGET_S = 10.0

# How many search steps run between two looks at the clock.
_CLOCK_EVERY = 2048


class Verdict(str, enum.Enum):
    """Result of checking one key (or a whole history)."""

    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class KeyResult:
    """Verdict for one key.

    For ``invalid``, ``op`` is the operation the search could not linearize at the deepest
    point it reached, and ``states`` the register values possible just before it; for
    ``unknown`` (budget exhausted) ``op`` is None.
    """

    key: str
    verdict: Verdict
    op: Operation | None = None
    states: tuple[Any, ...] = ()
    explanation: str = ""
    operations: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class CheckResult:
    """Per-key verdicts; the history's verdict is the worst of them."""

    keys: dict[str, KeyResult] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        """``invalid`` if any key is, else ``unknown`` if any key is, else ``valid``."""
        verdicts = {r.verdict for r in self.keys.values()}
        for worst in (Verdict.INVALID, Verdict.UNKNOWN):
            if worst in verdicts:
                return worst
        return Verdict.VALID

    @property
    def valid(self) -> bool:
        """True only when every key was proven linearizable."""
        return self.verdict is Verdict.VALID

    def summary(self) -> str:
        """Multi-line report of every key that is not valid (for assertion messages)."""
        bad = [r for r in self.keys.values() if r.verdict is not Verdict.VALID]
        if not bad:
            return f"all {len(self.keys)} keys linearizable"
        return "\n".join(f"{r.key!r}: {r.verdict.value}: {r.explanation}" for r in bad)


@dataclass(frozen=True, slots=True)
class _FrozenDict:
    """Hashable stand-in for a dict: items sorted by repr, so equal dicts freeze (and
    print, see :func:`.checkers.state_digest`) identically, and never equal a list."""

    items: tuple[tuple[Any, Any], ...]


def freeze(value: Any) -> Any:
    """Turn lists/tuples and dicts into hashable equivalents so values can be compared
    and cached; a list and the tuple with the same items freeze equal (JSON round trip)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return _FrozenDict(tuple(sorted(((freeze(k), freeze(v)) for k, v in value.items()),
                                        key=repr)))
    return value


@dataclass(frozen=True, slots=True)
class _Step:
    """A relevant operation, pre-digested for the search loop."""

    op: Operation
    f: F
    arg: Any          # read: value read; write: value; cas: expected
    new: Any          # cas: new value; unused otherwise
    optional: bool    # unknown outcome: may be left out


def _prepare(ops: Iterable[Operation]) -> list[_Step]:
    """Drop operations that constrain nothing; freeze the rest."""
    steps = []
    for op in ops:
        if op.outcome is Outcome.FAIL or (op.f is F.READ and op.outcome is Outcome.UNKNOWN):
            continue
        if op.outcome is Outcome.OK and op.complete_ns is None:
            raise ValueError(f"ok operation without completion time: {op.describe()}")
        if op.f is F.CAS:
            expected, new = op.value
            steps.append(_Step(op, op.f, freeze(expected), freeze(new),
                               op.outcome is Outcome.UNKNOWN))
        else:
            steps.append(_Step(op, op.f, freeze(op.value), None, op.outcome is Outcome.UNKNOWN))
    return _drop_unobserved(steps)


def _drop_unobserved(steps: list[_Step]) -> list[_Step]:
    """Remove optional writes/cas whose written value no remaining operation observes.

    Sound and complete: if such an operation took effect, no read or cas could tell
    before the next write, so a linearization with it stays legal without it (and it may
    be left out anyway). Repeated to a fixpoint because dropping an optional cas removes
    its observation of ``expected``. This is what keeps writes that timed out and never
    applied from multiplying the search space.
    """
    while True:
        observed = {s.arg for s in steps if s.f is not F.WRITE}
        kept = [s for s in steps
                if not s.optional or (s.new if s.f is F.CAS else s.arg) in observed]
        if len(kept) == len(steps):
            return kept
        steps = kept


def _apply(state: Any, step: _Step) -> tuple[bool, Any]:
    """Register model: (is the step legal in ``state``, state afterwards)."""
    if step.f is F.READ:
        return state == step.arg, state
    if step.f is F.WRITE:
        return True, step.arg
    return state == step.arg, step.new


class _BudgetExceeded(Exception):
    """Raised inside the search when the key's time budget is spent."""


def _search(steps: list[_Step], initial: Any, deadline: float) -> tuple[bool, int, set[Any]]:
    """Wing & Gong / Lowe search over one key.

    Returns (linearizable, index of the blocking step, possible states before it). The
    entry list is a doubly linked list over arrays (index 0 is the head sentinel, -1 the
    end) so lifting and unlifting an operation is O(1) and undone in LIFO order.
    """
    n = len(steps)
    # Entries: (time, 0=call/1=return, step index); calls sort before returns at equal times
    # so touching operations count as concurrent (never a false "invalid").
    entries = sorted([(s.op.invoke_ns, 0, i) for i, s in enumerate(steps)]
                     + [(math.inf if s.optional else s.op.complete_ns, 1, i)
                        for i, s in enumerate(steps)])
    size = len(entries) + 1
    nxt = list(range(1, size)) + [-1]
    prv = [-1] + list(range(size - 1))
    step_of = [0] * size
    is_return = [False] * size
    call_at = [0] * n
    ret_at = [0] * n
    for pos, (_, kind, i) in enumerate(entries, start=1):
        step_of[pos] = i
        is_return[pos] = kind == 1
        (ret_at if kind else call_at)[i] = pos

    def unlink(pos: int) -> None:
        nxt[prv[pos]] = nxt[pos]
        if nxt[pos] != -1:
            prv[nxt[pos]] = prv[pos]

    def relink(pos: int) -> None:
        nxt[prv[pos]] = pos
        if nxt[pos] != -1:
            prv[nxt[pos]] = pos

    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    linearized = 0
    state = initial
    deepest, blocking, blocking_states = -1, 0, set()
    entry = nxt[0]
    steps_taken = 0
    while entry != -1:
        steps_taken += 1
        if steps_taken % _CLOCK_EVERY == 0 and time.monotonic() > deadline:
            raise _BudgetExceeded
        i = step_of[entry]
        if not is_return[entry]:
            legal, new_state = _apply(state, steps[i])
            if legal:
                key = (linearized | (1 << i), new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((i, state))
                    state, linearized = new_state, key[0]
                    unlink(call_at[i])
                    unlink(ret_at[i])
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        if steps[i].optional:
            # Returns at +inf sort last: every operation still pending is optional.
            return True, -1, set()
        if len(stack) > deepest:
            deepest, blocking, blocking_states = len(stack), i, {state}
        elif len(stack) == deepest and i == blocking:
            blocking_states.add(state)
        if not stack:
            return False, blocking, blocking_states
        i, state = stack.pop()
        linearized &= ~(1 << i)
        relink(ret_at[i])
        relink(call_at[i])
        entry = nxt[call_at[i]]
    return True, -1, set()


def check_key(key: str, ops: Iterable[Operation], initial: Any = None,
              budget_s: float = DEFAULT_KEY_BUDGET_S) -> KeyResult:
    """Check the operations of one key against a register that starts at ``initial``."""
    started = time.monotonic()
    steps = _prepare(ops)
    try:
        ok, blocking, states = _search(steps, freeze(initial), started + budget_s)
    except _BudgetExceeded:
        elapsed = time.monotonic() - started
        log.warning("key %r: search budget %.1fs exhausted after %d operations",
                    key, budget_s, len(steps))
        return KeyResult(key, Verdict.UNKNOWN,
                         explanation=f"search budget of {budget_s}s exhausted",
                         operations=len(steps), elapsed_s=elapsed)
    elapsed = time.monotonic() - started
    if ok:
        return KeyResult(key, Verdict.VALID, operations=len(steps), elapsed_s=elapsed)
    op = steps[blocking].op
    ordered = tuple(sorted(states, key=repr))
    explanation = (f"cannot linearize {op.describe()}: before it the register could only "
                   f"hold {', '.join(repr(s) for s in ordered)}")
    log.info("key %r not linearizable: %s", key, explanation)
    return KeyResult(key, Verdict.INVALID, op=op, states=ordered, explanation=explanation,
                     operations=len(steps), elapsed_s=elapsed)


def check_history(ops: Iterable[Operation], initial: Mapping[str, Any] | None = None,
                  budget_s: float = DEFAULT_KEY_BUDGET_S) -> CheckResult:
    """Check every key of a history; ``initial`` gives start values (default: absent/None).

    ``budget_s`` applies to each key separately, so the worst-case run time is
    ``budget_s`` times the number of keys.
    """
    per_key: dict[str, list[Operation]] = {}
    for op in ops:
        per_key.setdefault(op.key, []).append(op)
    start = initial or {}
    return CheckResult({key: check_key(key, key_ops, start.get(key), budget_s)
                        for key, key_ops in sorted(per_key.items())})
