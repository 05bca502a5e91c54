"""Spans for the StateManager's operations: one per call, one per proposal attempt.

``StateManager`` wears thin decorators from here, so its own code stays about the state:

* :func:`traced_write` wraps ``_write``: a CLIENT span named after the operation
  (``save_state``, ``delete``, ``compare_and_set``, ``barrier``, lock ops, ...), with the
  stable database attributes and the revision and log index of the result.
* :func:`traced_attempt` wraps each proposal: a ``hastate.propose`` span (this node leads)
  or ``hastate.forward`` span (a follower forwards to the leader), whose W3C trace context
  goes into the command's ``meta``; the leader's spans for the entry are its children.
* :func:`traced_operation` wraps other public calls (``get_state``, ``trigger_failover``,
  membership changes).

With tracing off each wrapper costs one :func:`tracing.enabled` check.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, TypeVar

from hastate.consensus.entry_trace import fail_reason_name
from hastate.errors import WriteError
from hastate.observability import tracing
from hastate.state.codec import Command

if TYPE_CHECKING:
    from hastate.consensus.node import RaftNode


class Traced(Protocol):
    """What the tracing decorators read of the object they wrap (``StateManager`` has it)."""

    instance_id: str
    cluster: str

F = TypeVar("F", bound=Callable[..., Any])
Callback = Callable[[Any, int], None]   # PySyncObj's (result, fail reason) callback

#: Operation names of command ops whose public method has another name.
OPERATION_NAMES = {"update": "save_state", "cas": "compare_and_set"}


def db_attributes(manager: "Traced", operation: str) -> dict[str, Any]:
    """The stable database attributes plus this node's id."""
    return {"db.system.name": tracing.SYSTEM, "db.operation.name": operation,
            "db.namespace": manager.cluster, "hastate.node.id": manager.instance_id}


class _Attempt:
    """One proposal attempt's span; ended by the reply, or by the next attempt / the end."""

    def __init__(self, span: Any) -> None:
        self.span = span
        self._lock = threading.Lock()
        self._ended = False

    def end(self, outcome: str) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self.span.set_attribute("hastate.outcome", outcome)
        self.span.end()


class _Operation:
    """The attempts of the write in progress on this thread."""

    def __init__(self) -> None:
        self.attempts: list[_Attempt] = []

    def close(self) -> None:
        for attempt in self.attempts:
            attempt.end("no_reply")


_operation: contextvars.ContextVar[_Operation | None] = contextvars.ContextVar(
    "hastate_operation", default=None)


def traced_write(method: F) -> F:
    """Decorate ``StateManager._write(command, timeout)``: a span per write operation."""

    @functools.wraps(method)
    def write(self: "Traced", command: Command, *args: Any, **kwargs: Any) -> Any:
        if not tracing.enabled():
            return method(self, command, *args, **kwargs)
        name = OPERATION_NAMES.get(command.op, command.op)
        nested = _operation.get() is not None  # e.g. the barrier of a get_state
        operation = _Operation()
        token = _operation.set(operation)
        try:
            with tracing.span(name, kind="internal" if nested else "client",
                              attributes=db_attributes(self, name)) as span:
                try:
                    result = method(self, command, *args, **kwargs)
                except WriteError as exc:
                    span.set_attribute("hastate.outcome_unknown", exc.outcome_unknown)
                    raise
                span.set_attribute("hastate.result", result[0])
                if result[0] == "ok":
                    span.set_attribute("hastate.revision", result[1])
                    if len(result) > 2:
                        span.set_attribute("hastate.log.index", result[2])
                elif result[0] == "txn":
                    span.set_attribute("hastate.txn.succeeded", result[1])
                    span.set_attribute("hastate.revision", result[2])
                return result
        finally:
            operation.close()
            _operation.reset(token)
    return write  # type: ignore[return-value]


def traced_attempt(node: "RaftNode", raw: bytes, callback: Callback) -> tuple[bytes, Callback]:
    """The (command, callback) to propose for one attempt, traced when a write span is current.

    Traced: a child span for the attempt, its trace context in the command's ``meta`` (a
    retry re-encodes the same client id and sequence number, so exactly-once holds), and a
    callback that ends the span with PySyncObj's answer before calling ``callback``.
    """
    operation = _operation.get()
    if operation is None or not tracing.current_is_recording():
        return raw, callback
    leading = node.is_leader()
    span = tracing.start_span(
        "hastate.propose" if leading else "hastate.forward",
        kind="internal" if leading else "client",
        attributes={"hastate.node.id": node.spec.node_id,
                    "hastate.leader.id": node.leader_id() or "",
                    "hastate.attempt": len(operation.attempts) + 1})
    operation.close()  # an earlier attempt that got no reply
    attempt = _Attempt(span)
    operation.attempts.append(attempt)
    command = Command.decode(raw)
    raw = dataclasses.replace(command, meta={**command.meta, **tracing.inject(span)}).encode()

    def replied(result: Any, error: int) -> None:
        attempt.end(fail_reason_name(error))
        callback(result, error)
    return raw, replied


def traced_operation(name: str, *, request: Callable[..., Mapping[str, Any]] | None = None,
                     result: Callable[[Any], Mapping[str, Any]] | None = None,
                     kind: str = "client") -> Callable[[F], F]:
    """Decorate a StateManager method: a span named ``name`` around each call.

    ``request(*args, **kwargs)`` and ``result(return value)`` give extra attributes.
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def traced(self: "Traced", *args: Any, **kwargs: Any) -> Any:
            if not tracing.enabled():
                return method(self, *args, **kwargs)
            attributes = db_attributes(self, name)
            if request is not None:
                attributes.update(request(*args, **kwargs))
            token = _operation.set(_Operation())
            try:
                with tracing.span(name, kind=kind, attributes=attributes) as span:
                    value = method(self, *args, **kwargs)
                    if result is not None:
                        span.set_attributes(result(value))
                    return value
            finally:
                _operation.reset(token)
        return traced  # type: ignore[return-value]
    return decorate


traced_read = traced_operation(
    "get_state",
    request=lambda consistency="linearizable", **_: {"hastate.consistency": consistency},
    result=lambda state: {"hastate.keys.count": len(state)})
traced_failover = traced_operation(
    "trigger_failover",
    request=lambda target=None, **kw: {"hastate.failover.target": target or "",
                                        "hastate.failover.reason": kw.get("reason", "manual")},
    result=lambda seconds: {"hastate.failover.seconds": seconds})
traced_add_member = traced_operation(
    "add_member", request=lambda member, **_: {"hastate.member.id": member.id},
    result=lambda index: {"hastate.log.index": index})
traced_remove_member = traced_operation(
    "remove_member", request=lambda instance_id, **_: {"hastate.member.id": instance_id},
    result=lambda index: {"hastate.log.index": index})
