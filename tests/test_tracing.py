"""Tracing (xypipe/_tracing.py, the otel extra) alone: off unless the OTEL_* environment asks,
off binds no hook, the W3C header is written and read back, and a malformed ``traceparent`` is
ignored and counted, never an error of the message it came with."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from xypipe import _tracing
from xypipe._degrade import LevelWatch
from xypipe._errors import TRACE_BAD_PARENT
from xypipe._log import get_logger
from xypipe._md.records import TickRec
from xypipe._metrics import Metrics
from xypipe._stage import StageContext
from xypipe._stages.ingest import BadSourceCounter, decode_messages
from xypipe.contracts import PriceLevel, Tick

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@attrs.frozen
class M:
    subject: str
    data: bytes
    seq: int = 0
    reply: str = ""
    headers: dict[str, str] | None = None


@pytest.fixture(autouse=True)
def undecided() -> Iterator[None]:
    _tracing.reset()
    yield
    _tracing.reset()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.install(provider)
    yield exporter
    provider.shutdown()


def tick_bytes(seq: int = 1) -> bytes:
    return Tick(venue="V", symbol="AAA", seq=seq, last=100, bids=[PriceLevel(price=99, size=1)],
                asks=[PriceLevel(price=101, size=1)]).SerializeToString()


@pytest.mark.parametrize(("env", "exporter"), [
    ({}, ""),
    ({"OTEL_TRACES_EXPORTER": "none"}, ""),
    ({"OTEL_TRACES_EXPORTER": " "}, ""),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ""),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "Console", "OTEL_SDK_DISABLED": "false"}, "console"),
])
def test_tracing_is_on_only_when_the_environment_names_an_exporter(
        env: dict[str, str], exporter: str) -> None:
    assert _tracing.TraceSettings.from_env(env).exporter == exporter


def test_off_is_decided_once_and_every_stage_binds_no_hook() -> None:
    assert _tracing.active({"OTEL_SERVICE_NAME": "x"}) is None
    # Decided: a later environment is not read again.
    assert _tracing.active({"OTEL_TRACES_EXPORTER": "console"}) is None
    assert _tracing.parent_reader("ingest", Metrics(), get_logger("t")) is None


def test_off_ingest_ignores_headers_and_leaves_the_tick_untraced() -> None:
    ctx = StageContext("p", "ingest", None, None, LevelWatch(), Metrics(), get_logger("t"))
    msg = M("xy.src.tick.V.AAA", tick_bytes(), 7, headers={"traceparent": GOOD})
    recs = decode_messages([msg], 1.0, BadSourceCounter(ctx, 10), traces=None)
    assert [type(r) for r in recs] == [TickRec]
    assert recs[0].trace is None


def test_on_from_the_environment_uses_the_sdk_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
    tracer = _tracing.active({"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert tracer is not None
        assert "0.01" in tracer.provider.sampler.get_description()
    finally:
        if tracer is not None:
            tracer.provider.shutdown()


@pytest.mark.parametrize(("ratio", "low", "high"), [(0.0, 0, 0), (1.0, 3000, 3000),
                                                     (0.01, 10, 60)])
def test_the_ratio_sampler_decides_on_the_trace_id_the_span_gets(
        ratio: float, low: int, high: int) -> None:
    """From the environment, a ratio sampler draws the trace id first: a tick the ratio drops
    never starts a span, a kept one's span has that id and is sampled."""
    exporter = InMemorySpanExporter()
    tracer = _tracing.active({"OTEL_TRACES_EXPORTER": "console",
                              "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                              "OTEL_TRACES_SAMPLER_ARG": str(ratio)})
    assert tracer is not None
    tracer.provider.add_span_processor(SimpleSpanProcessor(exporter))
    random.seed(7)
    try:
        kept = [h for h in (tracer.tick_headers("s") for _ in range(3000)) if h is not None]
        assert low <= len(kept) <= high
        published = [s for s in exporter.get_finished_spans() if s.name == "publisher"]
        assert len(published) == len(kept)
        for headers, span in zip(kept, published, strict=True):
            parent = tracer.parent(headers["traceparent"])
            assert parent is not None and span.context is not None
            assert parent.trace_id == span.context.trace_id and parent.trace_flags.sampled
    finally:
        tracer.provider.shutdown()


def test_a_sampled_tick_carries_a_traceparent_that_reads_back(
        spans: InMemorySpanExporter) -> None:
    tracer = _tracing.active()
    assert tracer is not None
    headers = tracer.tick_headers("xy.src.tick.V.AAA")
    assert headers is not None and set(headers) == {"traceparent"}
    parent = tracer.parent(headers["traceparent"])
    (published,) = spans.get_finished_spans()
    assert published.name == "publisher" and published.context is not None
    assert parent is not None
    assert (parent.trace_id, parent.span_id) == (published.context.trace_id,
                                                 published.context.span_id)
    assert parent.trace_flags.sampled
    # And written again as the next hop's header, unchanged.
    assert tracer.headers_of(parent) == headers
    assert tracer.parent(GOOD) is not None


def test_an_unsampled_tick_carries_nothing() -> None:
    _tracing.install(TracerProvider(sampler=ALWAYS_OFF))
    tracer = _tracing.active()
    assert tracer is not None
    assert tracer.tick_headers("xy.src.tick.V.AAA") is None


def test_ingest_continues_a_sampled_tick_in_an_ingest_span(
        spans: InMemorySpanExporter) -> None:
    metrics = Metrics()
    ctx = StageContext("p", "ingest", None, None, LevelWatch(), metrics, get_logger("t"))
    traces = _tracing.parent_reader("ingest", metrics, ctx.log)
    assert traces is not None
    msgs = [M("xy.src.tick.V.AAA", tick_bytes(1), 7, headers={"traceparent": GOOD}),
            M("xy.src.tick.V.AAA", tick_bytes(2), 8)]
    recs = decode_messages(msgs, 1.0, BadSourceCounter(ctx, 10), now_us=2_000_000,
                           traces=traces)
    traced = [r.trace for r in recs if type(r) is TickRec]
    assert traced[0] is not None and traced[1] is None
    (ingest,) = spans.get_finished_spans()
    assert ingest.name == "ingest" and ingest.parent is not None
    assert ingest.parent.span_id == 0x00f067aa0ba902b7
    assert ingest.attributes is not None and ingest.attributes["xy.key"] == "V.AAA"


@pytest.mark.parametrize("bad", [
    "garbage",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # the invalid trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # the invalid span id
    "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "",
])
def test_a_bad_traceparent_is_ignored_counted_and_logged_never_a_crash(
        spans: InMemorySpanExporter, bad: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    metrics = Metrics()
    ctx = StageContext("p", "ingest", None, None, LevelWatch(), metrics, get_logger("t"))
    traces = _tracing.parent_reader("ingest", metrics, get_logger("xypipe.t"))
    assert traces is not None
    msg = M("xy.src.tick.V.AAA", tick_bytes(), 7, headers={"traceparent": bad})
    recs = decode_messages([msg], 1.0, BadSourceCounter(ctx, 10), traces=traces)
    # The tick itself is fine: it goes on, untraced.
    assert [type(r) for r in recs] == [TickRec]
    assert recs[0].trace is None
    assert metrics.sample("trace_bad_parents_total", {"stage": "ingest"}) == 1
    assert spans.get_finished_spans() == ()
    codes = [getattr(r, "xy_fields", {}).get("code") for r in caplog.records]
    assert codes == [TRACE_BAD_PARENT]


def test_without_the_extra_tracing_is_off_even_when_asked() -> None:
    """``opentelemetry`` not installed (blocked in a fresh interpreter): every module that hooks
    tracing imports, and an exporter asked for by the environment leaves tracing off."""
    code = ("import sys; sys.modules['opentelemetry'] = None\n"
            "import xypipe._stages.ingest, xypipe._stages.conflate, xypipe._stages.publish\n"
            "import xypipe._stages.publisher, xypipe._gateway._server\n"
            "from xypipe import _tracing\n"
            "assert _tracing.active({'OTEL_TRACES_EXPORTER': 'otlp'}) is None\n"
            "print('off')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "off"
