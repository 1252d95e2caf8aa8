"""Tracing end to end (the otel extra): one sampled tick's trace crosses the demo publisher, the
aggregator and the gateway, whose frames reach a real client.

The three pipelines (publisher, aggregator, gateway) run as three :class:`xypipe.Runner` in this
test process, on a real nats-server, with the SDK's ``InMemorySpanExporter``: an in-memory
exporter cannot be shared between processes, so the processes' boundary is the NATS messages
and their headers — exactly what crosses it in production (the ``traceparent`` on the tick, then
on the delta) — while the spans land in one exporter the test reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from gw_support import Keys, running_gateway, sdk
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import xypipe
from xypipe import _tracing
from xypipe._client._updates import DeltaApplied

GROUP = "fx"
STAGES = ("publisher", "ingest", "conflate", "publish", "gateway")


def aggregator_config(url: str) -> Any:
    stages = [{"use": "ingest"}, {"use": "dedupe"}, {"use": "shard"}, {"use": "conflate"},
              {"use": "snapshot", "interval_ms": 500}, {"use": "publish"}]
    return xypipe.parse_config({"nats": {"url": url}, "http": {"enabled": False},
                                "pipelines": {"aggregator": {"stages": stages}}})


def publisher_config(url: str) -> Any:
    return xypipe.parse_config({"nats": {"url": url}, "http": {"enabled": False},
                                "pipelines": {"publisher": {"stages": [{
                                    "use": "publisher", "symbols": 60, "rate": 500.0,
                                    "seed": 3, "max_ticks": 100_000}]}}})


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    _tracing.install(provider)
    try:
        yield spans
    finally:
        _tracing.reset()  # the next stage started reads the environment again (off)
        provider.shutdown()


def whole_trace(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan] | None:
    """The stages of the first trace of a tick of ``GROUP`` that has a span of every stage and
    whose ``gateway`` span's flush wrote a frame; ``None`` while there is none."""
    by_trace: dict[int, dict[str, ReadableSpan]] = {}
    for s in spans:
        assert s.context is not None
        by_trace.setdefault(s.context.trace_id, {}).setdefault(s.name, s)
    for stages in by_trace.values():
        gw = stages.get("gateway")
        if all(n in stages for n in STAGES) and gw is not None and gw.attributes \
                and str(gw.attributes.get("xy.subject")).startswith(f"xy.md.tick.{GROUP}") \
                and int(str(gw.attributes.get("xy.flush.frames", 0))) >= 1:
            return stages
    return None


async def test_one_sampled_tick_is_one_trace_from_publisher_to_gateway_frame(
    nats_server: Any, keys: Keys, exporter: InMemorySpanExporter,
) -> None:
    url = nats_server.url
    agg = xypipe.Runner(aggregator_config(url))
    pub = xypipe.Runner(publisher_config(url))
    found: dict[str, ReadableSpan] | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(agg.run)
        await agg.pipelines[0].stages[0].ctx.wait_ready()
        async with running_gateway(url, keys, admin=False) as gw:
            port = gw.http.port if gw.http is not None else 0
            token = keys.token("ann", allow=("xy.md.*.fx", "xy.md.*.fx.>"))
            async with sdk(port, token) as client:
                await client.subscribe(GROUP)
                await nursery.start(pub.run)
                with trio.fail_after(60):  # a hang guard, not a timed assertion
                    async for u in client:
                        if isinstance(u, DeltaApplied):
                            found = whole_trace(exporter.get_finished_spans())
                            if found is not None:
                                break
        pub.stop()
        agg.stop()
    assert found is not None
    pub_span, ingest, conflate, publish, gateway = (found[n] for n in STAGES)
    ctx = {n: found[n].context for n in STAGES}
    assert all(c is not None for c in ctx.values())
    # One chain: publisher -> ingest -> conflate -> publish -> gateway.
    assert pub_span.parent is None
    assert ingest.parent is not None and pub_span.context is not None
    assert ingest.parent.span_id == pub_span.context.span_id
    assert conflate.parent is not None and ingest.context is not None
    assert conflate.parent.span_id == ingest.context.span_id
    assert publish.parent is not None and conflate.context is not None
    assert publish.parent.span_id == conflate.context.span_id
    assert gateway.parent is not None and publish.context is not None
    assert gateway.parent.span_id == publish.context.span_id
    # The delta's span links the sampled ticks it folded (this one first): every tick is
    # sampled here, so one link per tick of the delta.
    assert conflate.links and conflate.links[0].context.span_id == ingest.context.span_id
    assert conflate.attributes is not None
    assert len(conflate.links) == min(int(str(conflate.attributes["xy.ticks"])), 128)
    linked = {link.context.span_id for link in conflate.links}
    ingested = {s.context.span_id for s in exporter.get_finished_spans()
                if s.name == "ingest" and s.context is not None}
    assert linked <= ingested
    # The degradation level is an attribute of the delta's spans, the group's name too.
    for span in (conflate, publish, gateway):
        assert span.attributes is not None and span.attributes.get("xy.level") == 0
    assert conflate.attributes is not None and conflate.attributes.get("xy.group") == GROUP
    assert str(gateway.attributes.get("xy.subject", "")).startswith(f"xy.md.tick.{GROUP}")
    assert gateway.attributes.get("xy.connections") == 1  # our one client of the group
