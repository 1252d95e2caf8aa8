"""Readiness means data: the runner folds every watched stream into /healthz (mock clock)."""

from __future__ import annotations

import logging

import trio

import xypipe
from xypipe import parse_config
from xypipe._runner import health_checks
from xypipe.contracts import HealthReport


def config() -> xypipe.AppConfig:
    stages = [{"use": "runner_stages:Bursty", "first": 5, "pause_ms": 5000,
               "interval_ms": 100, "stale_after_ms": 1000},
              {"use": "xypipe.testing:ListSink"}]
    return parse_config({"http": {"enabled": False},
                         "pipelines": {"p": {"stages": stages}}}, "test.toml")


async def test_health_is_ready_only_while_the_watched_stream_flows(autojump_clock, caplog):
    runner = xypipe.Runner(config())
    caplog.set_level(logging.INFO, logger="xypipe")
    seen: list[tuple[float, bool, list[str]]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        t0 = trio.current_time()
        for _ in range(100):  # 10 s in steps of 0.1 s
            doc = runner.health()
            seen.append((round(trio.current_time() - t0, 1), doc["ready"], doc["reasons"]))
            await trio.sleep(0.1)
        runner.stop()

    def ready_at(t: float) -> bool:
        return next(r for at, r, _ in seen if at >= t)

    # Not ready before the first item (starting), ready while items flow, not ready once the
    # stream has been silent for more than 1 s, ready again when it resumes.
    assert seen[0][1] is False and "no data since start" in seen[0][2][0]
    assert ready_at(0.3) and ready_at(0.5)
    assert not ready_at(2.0)
    stale_reasons = next(rs for at, _, rs in seen if at >= 2.0)
    assert stale_reasons == [next(r for r in stale_reasons if "stream feed: no data for" in r)]
    assert stale_reasons[0].startswith("pipeline p: stream feed: no data for 1.")
    assert not ready_at(5.0)
    assert ready_at(5.8) and ready_at(9.0)

    m = runner.metrics
    assert m.sample("stream_stale_total", {"stream": "feed"}) == 1
    assert m.sample("stream_fresh", {"stream": "feed"}) is not None
    logged = [(r.getMessage(), getattr(r, "xy_fields", {})) for r in caplog.records]
    stale = [f for msg, f in logged if f.get("code") == "XY-HLT-001"]
    back = [f for msg, f in logged if f.get("code") == "XY-HLT-002"]
    assert len(stale) == 1 and stale[0]["stream"] == "feed" and stale[0]["silence_s"] >= 1.0
    assert len(back) == 1 and back[0]["stream"] == "feed"


async def test_health_report_carries_the_same_readiness_and_reasons(autojump_clock):
    runner = xypipe.Runner(config())
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(0.35)
        ok = runner.health()
        ok_report = HealthReport.FromString(runner.health_report())
        await trio.sleep(2.0)
        stale = runner.health()
        stale_report = HealthReport.FromString(runner.health_report())
        runner.stop()
    assert ok["ready"] and ok_report.ready
    assert ok_report.checks["stream.p.feed"] == "fresh" and "reasons" not in ok_report.checks
    assert ok["pipelines"]["p"]["streams"]["feed"]["status"] == "fresh"
    assert not stale["ready"] and not stale_report.ready
    assert stale_report.checks["stream.p.feed"] == "stale"
    assert stale_report.checks["reasons"] == "\n".join(stale["reasons"])
    assert dict(stale_report.checks) == health_checks(stale)
    assert stale["pipelines"]["p"]["streams"]["feed"]["silence_s"] > 1.0
