"""The labelled counters alert rules read are on /metrics at 0 before their first event.

``increase()`` of a series that is born at 1 is empty, so an alert would miss the first
transition, gap or stale stream, and a dashboard would show "no data" instead of 0
(infra/prometheus/rules/xypipe-alerts.yml; the promtool tests show the difference). An aggregator
and a gateway run against a real nats-server with no publisher, so nothing can have happened
yet, and their process's /metrics is read over HTTP as Prometheus reads it.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import xypipe
from xypipe._degrade import Level
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, generate_ed25519_keypair
from xypipe._md.seqrules import Verdict

Sample = tuple[str, frozenset[tuple[str, str]]]


def quiet_stack(nats_url: str, public_key: Path) -> xypipe.AppConfig:
    state = {"storage": "memory"}
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"port": 0},
        "pipelines": {
            "aggregator": {"stages": [
                {"use": "ingest", "storage": "memory", "start": "new", "state": state},
                {"use": "dedupe"}, {"use": "shard"}, {"use": "conflate"}, {"use": "snapshot"},
                {"use": "publish", "state": state},
            ]},
            "gateway": {"stages": [
                {"use": "nats_source", "subjects": ["xy.md.tick.>", "xy.md.snapshot.>"],
                 "watch": [{"subject": "xy.md.snapshot.*", "cadence_ms": 2000, "misses": 3}]},
                {"use": "gateway", "public_key": str(public_key), "allowed_origins": ["*"],
                 "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE},
            ]},
        },
    }, "initialised-test.toml")


@pytest.fixture
async def metrics_page(nats_url: str, tmp_path: Path) -> AsyncIterator[dict[Sample, float]]:
    _, public = generate_ed25519_keypair()
    (tmp_path / "dev.pub").write_bytes(public)
    runner = xypipe.Runner(quiet_stack(nats_url, tmp_path / "dev.pub"))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        with trio.fail_after(30):
            for p in runner.pipelines:
                for s in p.stages:
                    await s.ctx.wait_ready()
        url = f"http://127.0.0.1:{runner.http.port}/metrics"

        def get() -> str:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode())

        text = await trio.to_thread.run_sync(get)
        runner.stop()
    yield {(s.name, frozenset(s.labels.items())): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}


def values(page: dict[Sample, float], name: str, **labels: str) -> dict[frozenset[tuple[str, str]],
                                                                       float]:
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in page.items() if n == name and want <= lbl}


async def test_every_level_transition_of_every_scope_reads_zero(metrics_page):
    # Up to L1..L3, down to L0..L2: what a transition can be, and nothing else.
    expected = {("up", f"L{int(lvl)}") for lvl in Level if lvl > Level.L0} | {
        ("down", f"L{int(lvl)}") for lvl in Level if lvl < Level.L3}
    for scope in ("pipeline:aggregator", "pipeline:gateway", "pipeline:gateway:connection"):
        found = values(metrics_page, "backpressure_events_total", scope=scope)
        got = {(dict(lbl)["direction"], dict(lbl)["level"]): v for lbl, v in found.items()}
        assert set(got) == expected, (scope, sorted(got))
        assert set(got.values()) == {0.0}, (scope, got)


async def test_every_watched_stream_has_its_stale_counter_at_zero(metrics_page):
    watched = {dict(lbl)["stream"] for lbl in values(metrics_page, "stream_fresh")}
    assert {"xy.md.snapshot.*"} <= watched, watched  # the gateway's rule; ingest adds its own
    stale = {dict(lbl)["stream"]: v for lbl, v in
             values(metrics_page, "stream_stale_total").items()}
    assert set(stale) == watched
    assert set(stale.values()) == {0.0}, stale


async def test_the_gateways_gap_counters_read_zero_before_any_delta(metrics_page):
    verdicts = {dict(lbl)["verdict"]: v for lbl, v in
                values(metrics_page, "gateway_deltas_total").items()}
    assert verdicts == {v.value: 0.0 for v in Verdict}
    resyncs = {dict(lbl)["reason"]: v for lbl, v in
               values(metrics_page, "ws_resyncs_total").items()}
    assert resyncs == {"gap": 0.0, "epoch": 0.0, "pause": 0.0, "request": 0.0}
    # And the unlabelled ones the gap alerts read exist from the start as well.
    assert values(metrics_page, "src_gap_total") == {frozenset(): 0.0}
