"""A hastate write (:class:`~hastate.state.codec.Command`) as one etcd Txn, exactly once.

Every write is a nested Txn::

    if create_revision(<prefix>_clients/<client>/<seq>) == 0 [and the value guards hold]:
        if <the write's compares>: <its success ops> + put marker
        else:                      <its failure ops> + put marker
    else: get marker [, get the guarded keys]

so the marker commits with the write, and a retry after a lost answer finds it instead of
applying the write again (the caller rebuilds that write's result, see :func:`replay`).
The marker is attached to a long dedup lease, so markers vanish minutes after their writer.

etcd compares values as bytes, hastate as decoded Python values (``1 == 1.0``, ``"a" < "b"``
on text): a ``value`` compare is evaluated here on the key's record and guarded by
``mod_revision(key) == <that record's>`` in the outer compare; a moved key fails the guard
and the write is planned again on a fresh record. Other compares map one to one (a missing
key has version, create and mod revision 0 in both). Results are the state machine's tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from hastate.engines.etcd.client import b64, unb64
from hastate.engines.etcd.keys import Layout
from hastate.errors import NotSupportedError
from hastate.state import txn as txn_mod
from hastate.state.codec import Command
from hastate.state.txn import Record

_TARGETS = {"version": "VERSION", "create_revision": "CREATE", "mod_revision": "MOD"}
_OPERAND_FIELDS = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision"}
_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}

#: Records of state keys as this instance knows them (None = absent).
RecordOf = Callable[[str], Record | None]


@dataclass
class Plan:
    """The outer Txn of one write and what is needed to read its answer."""

    body: dict[str, Any]
    op: str
    compares: list[list[Any]] = field(default_factory=list)
    success: list[list[Any]] = field(default_factory=list)
    failure: list[list[Any]] = field(default_factory=list)
    guards: dict[str, int] = field(default_factory=dict)     # state key -> mod_revision
    expected: dict[str, int] = field(default_factory=dict)   # cas: key -> mod_revision


def _compare(key: bytes, target: str, result: str, operand: int) -> dict[str, Any]:
    return {"key": b64(key), "target": target, "result": result,
            _OPERAND_FIELDS[target]: str(operand)}


def _request(layout: Layout, op: Sequence[Any]) -> dict[str, Any]:
    """The etcd RequestOp of one parsed hastate op."""
    kind, key = op[0], op[1]
    if kind == "put":
        put: dict[str, Any] = {"key": b64(layout.user(key)), "value": b64(op[2])}
        if len(op) == 4 and op[3]:
            put["lease"] = str(op[3])
        return {"request_put": put}
    if kind == "delete":
        return {"request_delete_range": {"key": b64(layout.user(key))}}
    if kind == "get":
        return {"request_range": {"key": b64(layout.user(key))}}
    start, end = layout.user_range(key)
    if kind == "delete_prefix":
        return {"request_delete_range": {"key": b64(start), "range_end": b64(end)}}
    return {"request_range": {"key": b64(start), "range_end": b64(end)}}


def plan(command: Command, layout: Layout, marker: bytes, dedup_lease: int,
         record_of: RecordOf) -> Plan:
    """The Txn executing ``command`` once under ``marker`` (see the module docstring).

    :raises NotSupportedError: lock commands (the lock recipe runs on transactions and
        leases), lease commands (the engine calls etcd's lease API for those).
    :raises ValueError: a malformed transaction.
    """
    if command.op == "update":
        compares: list[list[Any]] = []
        success = [["put", k, v] for k, v in command.values.items()]
        failure: list[list[Any]] = []
    elif command.op == "delete":
        compares, success, failure = [], [["delete", k] for k in command.keys], []
    elif command.op == "cas":
        compares = [[k, "mod_revision", "=", int(r)] for k, r in command.expected.items()]
        success = [["put", k, v] for k, v in command.values.items()]
        failure = [["get", k] for k in command.expected]
    elif command.op == "txn":
        compares, success, failure = txn_mod.parse(command.txn)
    else:
        raise NotSupportedError("etcd", f"the {command.op!r} command",
                                "locks run on transactions and leases on this engine")
    result = Plan({}, command.op, compares, success, failure,
                  expected={k: int(r) for k, r in command.expected.items()}
                  if command.op == "cas" else {})
    inner_compares = []
    always_false = False
    for key, target, operator, operand in compares:
        if target == "value":
            record = record_of(key)
            result.guards[key] = record[1] if record is not None else 0
            always_false |= not txn_mod.holds(record, [key, target, operator, operand])
        else:
            inner_compares.append(_compare(layout.user(key), _TARGETS[target],
                                           _RESULTS[operator], operand))
    if always_false:
        inner_compares.append(_compare(layout.never, "CREATE", "GREATER", 0))
    mark = {"request_put": {"key": b64(marker), "value": b64(command.op),
                            **({"lease": str(dedup_lease)} if dedup_lease else {})}}
    inner = {"compare": inner_compares,
             "success": [_request(layout, op) for op in success] + [mark],
             "failure": [_request(layout, op) for op in failure] + [mark]}
    outer_compares = [_compare(marker, "CREATE", "EQUAL", 0)] + [
        _compare(layout.user(key), "MOD", "EQUAL", mod) for key, mod in result.guards.items()]
    result.body = {"compare": outer_compares, "success": [{"request_txn": inner}],
                   "failure": [{"request_range": {"key": b64(marker)}}] + [
                       {"request_range": {"key": b64(layout.user(k))}} for k in result.guards]}
    return result


def kv_record(kv: Mapping[str, Any]) -> Record:
    """A state record from an etcd KeyValue."""
    return (unb64(kv.get("value")), int(kv.get("mod_revision", 0)),
            int(kv.get("create_revision", 0)), int(kv.get("version", 0)))


def _kv_wire(layout: Layout, kv: Mapping[str, Any]) -> list[Any]:
    value, mod, create, version = kv_record(kv)
    return [layout.state_key(unb64(kv["key"])), value, create, mod, version]


def _response(layout: Layout, op: Sequence[Any], answer: Mapping[str, Any]) -> Any:
    kind = op[0]
    if kind == "put":
        return None
    if kind in ("delete", "delete_prefix"):
        return int(answer.get("response_delete_range", {}).get("deleted", 0))
    kvs = answer.get("response_range", {}).get("kvs") or []
    if kind == "get":
        return _kv_wire(layout, kvs[0]) if kvs else None
    return [_kv_wire(layout, kv) for kv in kvs]


def _finish(p: Plan, succeeded: bool, revision: int, responses: list[Any]) -> tuple:
    if p.op in ("update", "delete"):
        return ("ok", revision, revision)
    if p.op == "cas":
        if succeeded:
            return ("ok", revision, revision)
        for (key, expected), found in zip(p.expected.items(), responses):
            actual = found[3] if found is not None else 0
            if actual != expected:
                return ("conflict", key, expected, actual)
        return ("conflict", next(iter(p.expected)), 0, 0)
    return ("txn", succeeded, revision, responses)


def answer(p: Plan, layout: Layout, response: Mapping[str, Any]) -> tuple | None:
    """The result tuple of a Txn that ran the write (None when the outer compare failed)."""
    if not response.get("succeeded"):
        return None
    inner = response["responses"][0]["response_txn"]
    succeeded = bool(inner.get("succeeded"))
    ops = p.success if succeeded else p.failure
    answers = inner.get("responses") or []
    revision = int(response["header"]["revision"])
    return _finish(p, succeeded, revision,
                   [_response(layout, op, a) for op, a in zip(ops, answers)])


def marker_revision(response: Mapping[str, Any]) -> int:
    """The revision the write committed at, when the outer compare found its marker (else 0)."""
    kvs = (response.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
    return int(kvs[0]["mod_revision"]) if kvs else 0


def replay(p: Plan, revision: int, data: Mapping[str, Record]) -> tuple:
    """The result of a write that committed at ``revision`` (found by its marker), rebuilt
    by running it on ``data``, the state keys it touches as they were at ``revision - 1``."""
    ok, _, responses = txn_mod.run(data, p.compares, p.success, p.failure, revision)
    return _finish(p, ok, revision, responses)


def touched(p: Plan) -> tuple[list[str], list[str]]:
    """(keys, prefixes) a write reads or changes: what :func:`replay` needs."""
    keys = sorted({c[0] for c in p.compares} |
                  {op[1] for op in p.success + p.failure if not op[0].endswith("_prefix")})
    prefixes = sorted({op[1] for op in p.success + p.failure if op[0].endswith("_prefix")})
    return keys, prefixes
