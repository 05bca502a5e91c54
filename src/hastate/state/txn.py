"""Multi-key transactions: compares, then one branch of operations, as one log entry.

Modeled on etcd v3's ``Txn``: every compare is evaluated against the state at the moment
the entry is applied; if all hold the ``success`` ops run, otherwise the ``failure`` ops,
in order, and every change they make shares one new cluster revision (none when they change
nothing). A later op of a branch sees the earlier ones (a ``get`` after a ``put`` returns the
new value).

Compares (:class:`Compare`) name a key, a target (``value``, ``version``,
``create_revision``, ``mod_revision``), an operator (``=``, ``!=``, ``<``, ``>``) and an
operand. A missing key has version, create_revision and mod_revision 0 (so
``create_revision(k) == 0`` means "absent": see :func:`missing`); a *value* compare on a
missing key is false whatever the operator (as in etcd: there is no value to compare).
Values compare as the decoded Python values; an ordering between values Python cannot order
(``"a" < 1``) is false.

Build compares with the helpers, ``value("pos") == 3``, ``mod_revision("pos") == r``,
``exists("pos")``, and ops with :func:`put`, :func:`delete`, :func:`delete_prefix`,
:func:`get`, :func:`get_prefix`. Limits are checked before anything is proposed (they are
the proposer's settings, so apply never depends on them): at most ``max_ops`` compares and
ops per branch (etcd: 128), no key modified twice in a branch, at most ``max_bytes`` encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import msgpack

from hastate.errors import (TxnDuplicateKeyError, TxnInvalidError, TxnTooLargeError,
                            TxnTooManyOpsError)
from hastate.state.codec import decode_value, encode_value
from hastate.state.leases import check_id
from hastate.state.record import Record

TARGETS = ("value", "version", "create_revision", "mod_revision")
OPERATORS = ("=", "!=", "<", ">")
OP_KINDS = ("put", "delete", "delete_prefix", "get", "get_prefix")
#: etcd's defaults: ``--max-txn-ops`` 128 and ``--max-request-bytes`` 1.5 MiB.
DEFAULT_MAX_OPS = 128
DEFAULT_MAX_BYTES = 1536 * 1024



@dataclass(frozen=True)
class Compare:
    """``target(key) <operator> operand``; operand is a value for ``value``, else an int."""

    key: str
    target: str
    operator: str
    operand: Any


class _Target:
    """``value("k") == 3`` builds a :class:`Compare` (as etcd clients' compare helpers)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, key: str, target: str) -> None:
        self.key, self.target = key, target

    def __eq__(self, operand: Any) -> Compare:  # type: ignore[override]
        return Compare(self.key, self.target, "=", operand)

    def __ne__(self, operand: Any) -> Compare:  # type: ignore[override]
        return Compare(self.key, self.target, "!=", operand)

    def __lt__(self, operand: Any) -> Compare:
        return Compare(self.key, self.target, "<", operand)

    def __gt__(self, operand: Any) -> Compare:
        return Compare(self.key, self.target, ">", operand)


def value(key: str) -> _Target:
    """Compare on the key's value."""
    return _Target(key, "value")


def version(key: str) -> _Target:
    """Compare on the key's version (modifications since creation; 0 = absent)."""
    return _Target(key, "version")


def create_revision(key: str) -> _Target:
    """Compare on the revision that created the key (0 = absent)."""
    return _Target(key, "create_revision")


def mod_revision(key: str) -> _Target:
    """Compare on the revision of the key's last modification (0 = absent)."""
    return _Target(key, "mod_revision")


def exists(key: str) -> Compare:
    """The key exists (``create_revision > 0``)."""
    return Compare(key, "create_revision", ">", 0)


def missing(key: str) -> Compare:
    """The key does not exist (``create_revision == 0``): "create if absent"."""
    return Compare(key, "create_revision", "=", 0)


@dataclass(frozen=True)
class Op:
    """One operation of a branch; ``key`` is the prefix for the ``*_prefix`` kinds."""

    kind: str
    key: str
    value: Any = None
    lease: int = 0


def put(key: str, value: Any, *, lease: Any = 0) -> Op:
    """Set ``key`` to ``value``, attached to ``lease`` (a Lease or its id; 0: none).

    A put without a lease detaches the key from the lease it had; the transaction is
    refused with LeaseNotFoundError when the lease has ended.
    """
    return Op("put", key, value, 0 if not lease else check_id(lease))


def delete(key: str) -> Op:
    """Remove ``key`` (nothing when absent); its response is the number deleted (0 or 1)."""
    return Op("delete", key)


def delete_prefix(prefix: str) -> Op:
    """Remove every key starting with ``prefix``; its response is the number deleted."""
    return Op("delete_prefix", prefix)


def get(key: str) -> Op:
    """Read ``key``; its response is a :class:`KeyValue` or None."""
    return Op("get", key)


def get_prefix(prefix: str) -> Op:
    """Read every key starting with ``prefix``; its response is a list of :class:`KeyValue`."""
    return Op("get_prefix", prefix)


@dataclass(frozen=True)
class KeyValue:
    """A key as a transaction's get saw it."""

    key: str
    value: Any
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True)
class TxnResult:
    """What a transaction did.

    ``succeeded``: the compares held and the success branch ran (else the failure branch).
    ``revision``: the revision the transaction committed at, or the current revision when
    it changed nothing. ``responses``: one per op of the branch that ran: None for a put,
    the number deleted for a delete, a :class:`KeyValue` (or None) for a get, a list of
    them for a get_prefix.
    """

    succeeded: bool
    revision: int
    responses: list[Any]


# -- building (proposer side) ------------------------------------------------------------------
def _key(key: Any, what: str, *, prefix: bool = False) -> str:
    if not isinstance(key, str) or (not key and not prefix):
        raise TxnInvalidError(f"{what} needs a non-empty str key, got {key!r}")
    return key


def _compare_wire(c: Any) -> list[Any]:
    if not isinstance(c, Compare):
        raise TxnInvalidError(f"compare items must be Compare (e.g. value('k') == 1), got {c!r}")
    key = _key(c.key, "a compare")
    if c.target not in TARGETS:
        raise TxnInvalidError(f"compare target {c.target!r} is not one of {TARGETS}")
    if c.operator not in OPERATORS:
        raise TxnInvalidError(f"compare operator {c.operator!r} is not one of {OPERATORS}")
    if c.target == "value":
        try:
            return [key, c.target, c.operator, encode_value(key, c.operand)]
        except TypeError as exc:
            raise TxnInvalidError(f"compare operand: {exc}") from None
    if isinstance(c.operand, bool) or not isinstance(c.operand, int) or c.operand < 0:
        raise TxnInvalidError(f"compare on {c.target} of {key!r} needs an int >= 0, "
                              f"got {c.operand!r}")
    return [key, c.target, c.operator, c.operand]


def _op_wire(op: Any) -> list[Any]:
    if not isinstance(op, Op) or op.kind not in OP_KINDS:
        raise TxnInvalidError(f"ops must be built with put/delete/delete_prefix/get/get_prefix, "
                              f"got {op!r}")
    key = _key(op.key, op.kind, prefix=op.kind.endswith("_prefix"))
    if op.kind == "put":
        try:
            wire = ["put", key, encode_value(key, op.value)]
        except TypeError as exc:
            raise TxnInvalidError(str(exc)) from None
        if not op.lease:
            return wire
        try:
            return wire + [check_id(op.lease)]
        except ValueError as exc:
            raise TxnInvalidError(f"put of {key!r}: {exc}") from None
    return [op.kind, key]


def _check_branch(name: str, ops: Sequence[list[Any]], max_ops: int) -> None:
    if len(ops) > max_ops:
        raise TxnTooManyOpsError(f"the {name} branch has {len(ops)} ops, more than the "
                                 f"limit of {max_ops}; split the transaction")
    puts: set[str] = set()
    deleted: set[str] = set()
    prefixes: list[str] = []
    for kind, key, *_ in ops:
        if kind == "put":
            if key in puts:
                raise TxnDuplicateKeyError(f"the {name} branch puts {key!r} twice; a "
                                           "transaction may modify a key once")
            puts.add(key)
        elif kind == "delete":
            deleted.add(key)
        elif kind == "delete_prefix":
            prefixes.append(key)
    for key in sorted(puts):
        if key in deleted or any(key.startswith(p) for p in prefixes):
            raise TxnDuplicateKeyError(f"the {name} branch both puts and deletes {key!r}; a "
                                       "transaction may modify a key once")


def build(compare: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op], *,
          max_ops: int = DEFAULT_MAX_OPS, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Validate a transaction and return its wire form (plain msgpack types).

    :raises TxnInvalidError: a malformed compare or op (names it).
    :raises TxnTooManyOpsError: more than ``max_ops`` compares, or ops in a branch.
    :raises TxnDuplicateKeyError: a branch modifies one key twice.
    :raises TxnTooLargeError: the encoded transaction exceeds ``max_bytes``.
    """
    wire = {"compare": [_compare_wire(c) for c in compare],
            "success": [_op_wire(op) for op in success],
            "failure": [_op_wire(op) for op in failure]}
    if len(wire["compare"]) > max_ops:
        raise TxnTooManyOpsError(f"{len(wire['compare'])} compares, more than the limit of "
                                 f"{max_ops}; split the transaction")
    _check_branch("success", wire["success"], max_ops)
    _check_branch("failure", wire["failure"], max_ops)
    size = len(msgpack.packb(wire, use_bin_type=True))
    if size > max_bytes:
        raise TxnTooLargeError(f"the transaction encodes to {size} bytes, more than the cap "
                               f"of {max_bytes}; write large values separately")
    return wire


def to_result(raw: Sequence[Any], success: Sequence[Op], failure: Sequence[Op]) -> TxnResult:
    """The caller's :class:`TxnResult` from the state machine's ``("txn", ...)`` result."""
    _, succeeded, revision, responses = raw
    branch = success if succeeded else failure
    out: list[Any] = []
    for op, response in zip(branch, responses):
        if op.kind == "get":
            out.append(_key_value(response) if response is not None else None)
        elif op.kind == "get_prefix":
            out.append([_key_value(r) for r in response])
        else:
            out.append(response)
    return TxnResult(bool(succeeded), int(revision), out)


def _key_value(r: Sequence[Any]) -> KeyValue:
    key, raw, create, mod, ver = r
    return KeyValue(key, decode_value(raw), create, mod, ver)


# -- applying (state machine side, deterministic) ----------------------------------------------
def parse(wire: Any) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    """(compares, success, failure) of a wire transaction; ValueError when malformed."""
    if not isinstance(wire, dict):
        raise ValueError("transaction is not a map")
    parts = []
    for name in ("compare", "success", "failure"):
        items = wire.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, list) for i in items):
            raise ValueError(f"transaction {name} is not a list of lists")
        parts.append(items)
    compares, success, failure = parts
    for c in compares:
        if len(c) != 4 or not isinstance(c[0], str) or c[1] not in TARGETS \
                or c[2] not in OPERATORS or (c[1] == "value") != isinstance(c[3], bytes):
            raise ValueError(f"malformed compare {c!r}")
    for op in success + failure:
        if not op or op[0] not in OP_KINDS or \
                len(op) not in ((3, 4) if op[0] == "put" else (2,)) or not isinstance(op[1], str) \
                or (op[0] == "put" and not isinstance(op[2], bytes)) \
                or (len(op) == 4 and (type(op[3]) is not int or op[3] <= 0)):
            raise ValueError(f"malformed op {op!r}")
    return compares, success, failure


def leases_of(ops: Sequence[Sequence[Any]]) -> dict[str, int]:
    """key -> lease of every put in parsed ``ops`` (0: put without a lease); last one wins."""
    return {op[1]: (op[3] if len(op) == 4 else 0) for op in ops if op[0] == "put"}


def _kv_wire(key: str, record: Record) -> list[Any]:
    """A get's response: [key, encoded value, create_revision, mod_revision, version]."""
    value, mod, create, ver = record
    return [key, value, create, mod, ver]


def _ordered(actual: Any, operator: str, operand: Any) -> bool:
    try:
        if operator == "=":
            return bool(actual == operand)
        if operator == "!=":
            return bool(actual != operand)
        if operator == "<":
            return bool(actual < operand)
        return bool(actual > operand)
    except TypeError:
        return False


def holds(record: Record | None, compare: Sequence[Any]) -> bool:
    """Does ``compare`` (wire form) hold for a key whose record is ``record``?"""
    _, target, operator, operand = compare
    if target == "value":
        if record is None:
            return False
        return _ordered(decode_value(record[0]), operator, decode_value(operand))
    actual = 0 if record is None else \
        {"mod_revision": record[1], "create_revision": record[2], "version": record[3]}[target]
    return _ordered(actual, operator, operand)


def run(data: Mapping[str, Record], compares: Sequence[Sequence[Any]],
        success: Sequence[Sequence[Any]], failure: Sequence[Sequence[Any]],
        revision: int) -> tuple[bool, dict[str, Record | None], list[Any]]:
    """Evaluate a parsed transaction against ``data`` without changing it.

    Returns (succeeded, writes, responses): ``writes`` maps each key the branch changed to
    its new record (None = deleted), in the order first changed; records of puts carry
    ``revision`` (the revision the caller commits at if ``writes`` is not empty).
    """
    ok = all(holds(data.get(c[0]), c) for c in compares)
    writes: dict[str, Record | None] = {}

    def lookup(key: str) -> Record | None:
        return writes[key] if key in writes else data.get(key)

    def present(prefix: str) -> list[str]:
        keys = {k for k in data if k.startswith(prefix)}
        keys.update(k for k in writes if k.startswith(prefix))
        return sorted(k for k in keys if lookup(k) is not None)

    responses: list[Any] = []
    for kind, key, *rest in (success if ok else failure):
        if kind == "put":
            old = lookup(key)
            writes[key] = (rest[0], revision, old[2] if old else revision,
                           old[3] + 1 if old else 1)
            responses.append(None)
        elif kind == "delete":
            found = lookup(key) is not None
            if found:
                writes[key] = None
            responses.append(int(found))
        elif kind == "delete_prefix":
            keys = present(key)
            for k in keys:
                writes[k] = None
            responses.append(len(keys))
        elif kind == "get":
            record = lookup(key)
            responses.append(_kv_wire(key, record) if record is not None else None)
        else:
            responses.append([_kv_wire(k, lookup(k)) for k in present(key)])  # type: ignore[arg-type]
    return ok, writes, responses
