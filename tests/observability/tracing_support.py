"""One SDK tracer provider for the whole test process, recording only inside ``spans``.

OpenTelemetry lets a process set its global provider once, and the suite runs many test
files in one process: the provider installed here samples nothing (so hastate behaves as
if untraced) except while a test holds the ``spans`` fixture, whose in-memory exporter
then receives every finished span through a SimpleSpanProcessor.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the OpenTelemetry SDK: "
                    "pip install -e '.[test]'")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter)
from opentelemetry.sdk.trace.sampling import (Decision, Sampler,  # noqa: E402
                                              SamplingResult)


class _Switch(Sampler):
    """Records every span while ``on``, none otherwise."""

    on = False

    def should_sample(self, parent_context, trace_id, name, kind=None,  # type: ignore[override]
                      attributes=None, links=None, trace_state=None) -> SamplingResult:
        if not self.on:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "test switch"


_SWITCH = _Switch()
_EXPORTER = InMemorySpanExporter()


def _install() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return
    provider = TracerProvider(sampler=_SWITCH)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


# At import, before any test starts a node: a node notices the provider at its next tick.
_install()


class Spans:
    """The spans finished since the fixture started, with tree helpers."""

    def finished(self) -> list[ReadableSpan]:
        return list(_EXPORTER.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one {name!r} span, got {len(found)}: " \
                                f"{[s.name for s in self.finished()]}"
        return found[0]

    def trace_of(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.context.trace_id == span.context.trace_id]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.finished()
                if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def clear(self) -> None:
        _EXPORTER.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Nothing is recorded (as without an SDK) inside the block."""
        _SWITCH.on = False
        try:
            yield
        finally:
            _SWITCH.on = True


@pytest.fixture
def spans() -> Iterator[Spans]:
    from hastate.observability import tracing
    from hastate.testing import wait_for

    wait_for(tracing.enabled, timeout=2 * tracing.RECHECK_SECONDS + 1, what="tracing enabled")
    _EXPORTER.clear()
    _SWITCH.on = True
    try:
        yield Spans()
    finally:
        _SWITCH.on = False
        _EXPORTER.clear()
