"""OpenTelemetry tracing behind one door: the only hastate module that imports opentelemetry.

The API (``pip install 'hastate[otel]'``) is optional. Without it, or without a configured
``TracerProvider`` (the API's default proxy records nothing), :func:`enabled` is False and
every instrumented path skips its tracing work after that one check, so tracing costs
about nothing until an application (or ``hastate node run``, see :func:`configure_from_env`)
installs an SDK. Other modules use only the functions here; the span objects they get back
are OpenTelemetry spans (or :data:`NOOP_SPAN`), used through ``set_attribute``,
``set_attributes``, ``add_event`` and ``end``.

Trace context crosses processes in W3C Trace Context form (``traceparent``, ``tracestate``),
carried in a command's ``meta`` (see :class:`hastate.state.codec.Command`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable, Iterator, Mapping

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra is not installed: everything below is a no-op
    _trace = None

logger = logging.getLogger(__name__)

#: ``db.system.name`` of every hastate span, and the instrumentation scope's name.
SYSTEM = "hastate"

# Span kinds by name, so callers need not import opentelemetry.
_KINDS = {"internal": "INTERNAL", "client": "CLIENT", "server": "SERVER",
          "producer": "PRODUCER", "consumer": "CONSUMER"}

#: How often, at most, :func:`enabled` asks the API again while tracing is off.
RECHECK_SECONDS = 0.5

_enabled = False
_recheck_at = 0.0
_tracer: Any = None
_propagator: Any = TraceContextTextMapPropagator() if _trace is not None else None


class _NoopSpan:
    """Stands in for a span when tracing is off: every method does nothing."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Ignored."""

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Ignored."""

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Ignored."""

    def end(self, end_time: int | None = None) -> None:
        """Ignored."""


NOOP_SPAN = _NoopSpan()


def available() -> bool:
    """Whether the OpenTelemetry API is importable."""
    return _trace is not None


def enabled() -> bool:
    """True when spans can be recorded: the API is installed and a real provider is set.

    Cheap enough for every write: True is final (OpenTelemetry lets the global provider be
    set only once), and False is asked again of the API at most every
    :data:`RECHECK_SECONDS` (a provider installed after hastate started is noticed then).
    """
    global _enabled, _tracer, _recheck_at
    if _enabled:
        return True
    if _trace is None:
        return False
    now = time.monotonic()
    if now < _recheck_at:
        return False
    _recheck_at = now + RECHECK_SECONDS
    provider = _installed_provider()
    if provider is None:
        return False
    _tracer = provider.get_tracer(SYSTEM)
    _enabled = True
    return True


def _installed_provider() -> Any:
    """The global tracer provider if one was installed (not the API's default), else None."""
    provider = _trace.get_tracer_provider()
    if isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)):
        return None
    return provider


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the epoch (the span timestamp scale)."""
    return time.time_ns()


def _kind(kind: str) -> Any:
    return getattr(SpanKind, _KINDS[kind])


def start_span(name: str, *, kind: str = "internal", parent: Any = None,
               attributes: Mapping[str, Any] | None = None, start_ns: int | None = None) -> Any:
    """Start a span (not made current); ``parent`` is a context from :func:`extract` or
    :func:`context_of`, None for the current context. Returns :data:`NOOP_SPAN` when off."""
    if not enabled():
        return NOOP_SPAN
    return _tracer.start_span(name, context=parent, kind=_kind(kind), attributes=attributes,
                              start_time=start_ns)


def record_span(name: str, *, parent: Any, start_ns: int, end_ns: int, kind: str = "internal",
                attributes: Mapping[str, Any] | None = None) -> None:
    """Record a finished span after the fact, with its real start and end times.

    For phases timed on the Raft thread (queue wait, fsync, replication) where a batch
    serves many entries: the span is built once the phase is over, for traced entries only.
    """
    span = start_span(name, kind=kind, parent=parent, attributes=attributes, start_ns=start_ns)
    span.end(end_time=max(end_ns, start_ns))


def set_error(span: Any, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` (``error.type`` and an ERROR status)."""
    if span is NOOP_SPAN:
        return
    span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@contextlib.contextmanager
def span(name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None,
         parent: Any = None) -> Iterator[Any]:
    """A span made current for the ``with`` block; an exception marks it failed."""
    if not enabled():
        yield NOOP_SPAN
        return
    with _tracer.start_as_current_span(name, context=parent, kind=_kind(kind),
                                       attributes=attributes, record_exception=False,
                                       set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            set_error(current, exc)
            raise


def use(span_: Any) -> Any:
    """Make ``span_`` current; returns a token for :func:`release` (None when off)."""
    if span_ is NOOP_SPAN:
        return None
    return _otel_context.attach(_trace.set_span_in_context(span_))


def release(token: Any) -> None:
    """Undo :func:`use`."""
    if token is not None:
        _otel_context.detach(token)


def context_of(span_: Any) -> Any:
    """A context whose current span is ``span_`` (a parent for :func:`start_span`)."""
    if span_ is NOOP_SPAN:
        return None
    return _trace.set_span_in_context(span_)


def current_is_recording() -> bool:
    """Whether a recording span is current on this thread."""
    return enabled() and _trace.get_current_span().is_recording()


def inject(span_: Any = None) -> dict[str, str]:
    """W3C trace context (``traceparent``, maybe ``tracestate``) of ``span_`` or the current
    span, ready for a command's ``meta``; empty when there is none."""
    if not enabled():
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=None if span_ is None else context_of(span_))
    return carrier


def extract(meta: Mapping[str, str]) -> Any:
    """The remote parent context carried in ``meta``, or None when it holds no valid one."""
    if not enabled() or "traceparent" not in meta:
        return None
    ctx = _propagator.extract(meta)
    return ctx if _trace.get_current_span(ctx).get_span_context().is_valid else None


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex) to log records made while a span is current.

    Attach it to a handler (``handler.addFilter(TraceContextFilter())``): a formatter or
    JSON encoder then finds them on the record. Records outside a span are left unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _enabled:
            ctx = _trace.get_current_span().get_span_context()
            if ctx.is_valid:
                record.trace_id = format(ctx.trace_id, "032x")
                record.span_id = format(ctx.span_id, "016x")
        return True


def install_log_filter(handlers: list[logging.Handler] | None = None) -> None:
    """Add a :class:`TraceContextFilter` to ``handlers`` (default: the root logger's)."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, TraceContextFilter) for f in handler.filters):
            handler.addFilter(TraceContextFilter())


def configure_from_env(instance_id: str,
                       environ: Mapping[str, str] = os.environ) -> Callable[[], None] | None:
    """Node processes: export spans over OTLP/HTTP when the environment asks for it.

    Acts only when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is set, ``OTEL_SDK_DISABLED`` is not ``true`` and no provider is installed yet. The
    exporter and sampler read the standard ``OTEL_*`` variables; the resource gets
    ``service.name`` ``hastate`` (unless ``OTEL_SERVICE_NAME`` says otherwise) and
    ``service.instance.id`` = ``instance_id``. Returns a function that flushes and shuts the
    provider down, or None when nothing was configured.
    """
    if not (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if _trace is not None and _installed_provider() is not None:
        logger.info("a tracer provider is already installed; not configuring another")
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK or its "
                       "OTLP/HTTP exporter is missing (%s); no spans are exported. Install "
                       "them with: pip install 'hastate[otel-export]'", exc)
        return None
    resource = Resource.create({"service.instance.id": instance_id})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SYSTEM}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _trace.set_tracer_provider(provider)
    logger.info("exporting traces over OTLP/HTTP", extra={
        "endpoint": environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")})
    return provider.shutdown
