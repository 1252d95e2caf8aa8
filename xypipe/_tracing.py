"""Optional OpenTelemetry tracing of the key path (``pip install xypipe[otel]``).

The only module that imports ``opentelemetry``. Whether tracing is on is decided once per
process, from the standard variables: ``OTEL_TRACES_EXPORTER`` set to an exporter (``otlp`` =
OTLP over HTTP, ``console``) and ``OTEL_SDK_DISABLED`` not true; the sampler, the endpoint and the
service name come from the SDK's own ``OTEL_*`` variables (e.g. ``OTEL_TRACES_SAMPLER=
parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.01``). Off — the default, or the extra
not installed — :func:`active` returns ``None`` and every stage binds ``None`` for its hook at
start: the hot path pays one ``is not None`` test per batch (per tick in ingest and the
publisher).

The path (docs/architecture.md, "Tracing"): the publisher starts a trace per tick (the sampler
decides; only a sampled tick carries a W3C ``traceparent`` header), ingest makes an ``ingest``
span under it, conflation's ``conflate`` span continues the oldest sampled tick it folded and
links every one, ``publish`` puts its span's ``traceparent`` on the delta's NATS headers and the
gateway's ``gateway`` span, under it, ends when the frames carrying the delta are written.
Span durations are the numbers the latency histograms observe, never a clock of their own.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from xypipe._errors import TRACE_BAD_PARENT

if TYPE_CHECKING:
    from xypipe._log import Logger
    from xypipe._metrics import Metrics

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import Link, SpanContext
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed: tracing stays off
    trace = None  # type: ignore[assignment]
    RandomIdGenerator = object  # type: ignore[assignment,misc]  # PresetTraceIds's base

__all__ = [
    "TRACEPARENT",
    "ParentReader",
    "PresetTraceIds",
    "SpanContext",
    "TraceSettings",
    "Tracer",
    "active",
    "install",
    "parent_reader",
    "reset",
    "uninstall",
]

#: The W3C Trace Context header (lower case, as the propagator writes and reads it).
TRACEPARENT = "traceparent"
TRACER_NAME = "xypipe"


@attrs.frozen
class TraceSettings:
    """What the environment asks for: ``exporter`` "" = tracing off."""

    exporter: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TraceSettings:
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        # The spec's default exporter is otlp; ours is none, so nothing is sent unless asked.
        return cls("" if exporter in ("", "none") else exporter)


#: The root samplers whose decision depends on the trace id alone (a ratio).
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


class PresetTraceIds(RandomIdGenerator):
    """Random ids, except the next trace id when one was drawn already (see
    :meth:`Tracer.tick_headers`)."""

    def __init__(self) -> None:
        self.next_trace_id = 0

    def generate_trace_id(self) -> int:
        tid, self.next_trace_id = self.next_trace_id, 0
        return tid or int(super().generate_trace_id())


class Tracer:
    """The hooks of an enabled process (see the module docstring); built by :func:`install`.

    ``root_ratio`` (with a provider whose id generator is :class:`PresetTraceIds`): the root
    sampler is a trace-id ratio, so the publisher draws the trace id itself and starts a span
    only for a tick the ratio keeps — the SDK's span machinery for each of the 99 % it drops
    would cost more than the tick (bench/tracing.py)."""

    def __init__(self, provider: TracerProvider, root_ratio: float | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(TRACER_NAME)
        self._propagator = TraceContextTextMapPropagator()
        ids = provider.id_generator
        self._ids = ids if isinstance(ids, PresetTraceIds) else None
        self._bound = (TraceIdRatioBased.get_bound_for_rate(root_ratio)
                       if root_ratio is not None and self._ids is not None else None)

    # -- the publisher ---------------------------------------------------------------------------

    def tick_headers(self, subject: str) -> dict[str, str] | None:
        """A new trace for a tick about to be published: its ``traceparent`` header if the
        sampler keeps it, else ``None`` (an unsampled tick carries nothing)."""
        bound = self._bound
        if bound is not None:
            assert self._ids is not None
            trace_id = random.getrandbits(128)
            # TraceIdRatioBased's own test, on the id the span will have.
            if not trace_id or trace_id & TraceIdRatioBased.TRACE_ID_LIMIT >= bound:
                return None
            self._ids.next_trace_id = trace_id
        span = self._tracer.start_span("publisher", attributes={"xy.subject": subject})
        if not span.get_span_context().trace_flags.sampled:
            return None
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier

    # -- parsing ---------------------------------------------------------------------------------

    def parent(self, value: str) -> SpanContext | None:
        """The span context a ``traceparent`` value names, ``None`` if it is malformed."""
        ctx = self._propagator.extract({TRACEPARENT: value})
        sc = trace.get_current_span(ctx).get_span_context()
        return sc if sc.is_valid else None

    def headers_of(self, sc: SpanContext) -> dict[str, str]:
        carrier: dict[str, str] = {}
        self._propagator.inject(
            carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(sc)))
        return carrier

    # -- spans -----------------------------------------------------------------------------------

    def span(self, name: str, parent: SpanContext | None, start_ns: int, end_ns: int,
             attributes: Mapping[str, str | int] | None = None,
             links: Sequence[SpanContext] = ()) -> SpanContext:
        """A finished span ``name`` from ``start_ns`` to ``end_ns`` (wall clock): the times the
        stage measured anyway, so the span and the histogram agree."""
        context = (trace.set_span_in_context(trace.NonRecordingSpan(parent))
                   if parent is not None else None)
        span = self._tracer.start_span(
            name, context=context, start_time=start_ns, attributes=dict(attributes or {}),
            links=[Link(sc) for sc in links])
        span.end(end_time=max(end_ns, start_ns))
        return span.get_span_context()


_active: Tracer | None = None
_decided = False


def install(provider: TracerProvider, root_ratio: float | None = None) -> Tracer:
    """Turn tracing on in this process with ``provider`` (tests: an in-memory exporter; see
    :class:`Tracer` for ``root_ratio``). Stages that already started keep the hooks they
    bound."""
    global _active, _decided
    _active, _decided = Tracer(provider, root_ratio), True
    return _active


def uninstall() -> None:
    """Tracing off again (and decided: the environment is not read afterwards)."""
    global _active, _decided
    _active, _decided = None, True


def reset() -> None:
    """Undecided again: the next :func:`active` reads the environment (tests)."""
    global _active, _decided
    _active, _decided = None, False


def active(env: Mapping[str, str] | None = None) -> Tracer | None:
    """The process's tracer, ``None`` when tracing is off. Decided at the first call, from
    ``env`` (``os.environ`` by default)."""
    global _active, _decided
    if not _decided:
        _decided = True
        settings = TraceSettings.from_env(os.environ if env is None else env)
        if settings.exporter and trace is not None:
            provider, ratio = _provider(settings.exporter, os.environ if env is None else env)
            _active = Tracer(provider, ratio)
    return _active


def _provider(exporter: str, env: Mapping[str, str]) -> tuple[TracerProvider, float | None]:
    # The SDK reads the resource, the exporter's endpoint and any other sampler from OTEL_*
    # itself; a ratio sampler is built here, to know its ratio (see Tracer).
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    ratio = None
    if sampler in RATIO_SAMPLERS:
        try:
            ratio = min(max(float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")), 0.0), 1.0)
        except ValueError:
            ratio = 1.0  # as the SDK does with a malformed argument
    if ratio is None:
        provider = TracerProvider()
    else:
        root = TraceIdRatioBased(ratio)
        provider = TracerProvider(
            sampler=ParentBased(root) if sampler.startswith("parentbased") else root,
            id_generator=PresetTraceIds())
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
    return provider, ratio


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    # "otlp" and anything else the SDK would take as OTLP: OTLP over HTTP (the extra's exporter).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


class ParentReader:
    """Reads a message's ``traceparent`` for one stage: a malformed one is ignored (the message
    goes on untraced), counted in ``trace_bad_parents_total{stage}`` and logged with code
    ``XY-TRACE-001`` (the first few, then one in a thousand) — never an error of the message."""

    def __init__(self, tracer: Tracer, stage: str, metrics: Metrics, log: Logger) -> None:
        self.tracer = tracer
        self.stage = stage
        self._counter = metrics.counter(
            "trace_bad_parents", "Messages whose traceparent header was malformed (ignored: "
            "the message went on untraced)", ["stage"]).labels(stage)
        self._log = log
        self.bad = 0

    def read(self, headers: Mapping[str, str] | None, subject: str) -> SpanContext | None:
        if not headers:
            return None
        value = headers.get(TRACEPARENT)
        if value is None:
            return None
        sc = self.tracer.parent(value)
        if sc is None:
            self.bad += 1
            self._counter.inc()
            if self.bad <= 5 or self.bad % 1000 == 0:
                self._log.warning(
                    "ignored a malformed traceparent header: expected "
                    "'00-<32 hex trace id>-<16 hex span id>-<2 hex flags>'",
                    code=TRACE_BAD_PARENT, subject=subject, stage=self.stage,
                    traceparent=value[:80], ignored_so_far=self.bad)
        return sc


def parent_reader(stage: str, metrics: Metrics, log: Logger) -> ParentReader | None:
    """``stage``'s reader of incoming trace headers, ``None`` when tracing is off (decided here,
    once: the caller keeps the result for its whole run)."""
    tracer = active()
    return ParentReader(tracer, stage, metrics, log) if tracer is not None else None
