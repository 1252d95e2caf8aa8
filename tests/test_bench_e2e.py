"""bench/e2e_latency.py's bookkeeping, without a browser: frame work, medians and a failed run
that stays in the table, the raw peer's symbols (the demo page's groups)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from xypipe._publisher import MarketSim

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_latency", ROOT / "bench" / "e2e_latency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("e2e_latency", module)
    spec.loader.exec_module(module)
    return module


def _ok(run: int, variant: str, p99: float, bytes_per_s: int) -> dict[str, Any]:
    lat = {"n": 10, "p50": p99 / 2, "p95": p99 - 1, "p99": p99, "max": p99}
    return {"run": run, "variant": variant, "latency_ms": lat, "frame_interval_ms": lat,
            "frame_work_ms": lat, "fps_per_window": 60.0, "bytes_per_s": bytes_per_s,
            "chromium_cpu_pct": {"renderer": 10.0, "total": 12.0},
            "service_cpu_pct": {"gateway": 3.0}, "load_average": [1.0, 1.0, 1.0]}


def test_work_per_frame_sums_the_panels_frame_by_frame() -> None:
    b = _bench()
    assert b.work_per_frame({"a": [1.0, 2.0], "b": [0.5, 0.5]}) == [1.5, 2.5]
    assert b.work_per_frame({"a": [1.0, 2.0], "b": [0.5]}) == []  # not aligned: not summed
    assert b.work_per_frame({}) == []


def test_a_failed_run_is_counted_and_listed_with_its_reason() -> None:
    b = _bench()
    results = [_ok(1, "1w", 30.0, 100), _ok(1, "raw1", 20.0, 400),
               {"run": 2, "variant": "1w", "error": "stack did not start: nats | down"},
               _ok(2, "raw1", 22.0, 420), _ok(3, "1w", 40.0, 110), _ok(3, "raw1", 24.0, 380)]
    med = {v: b.medians(results, v) for v in ("1w", "raw1")}
    assert (med["1w"]["runs_ok"], med["1w"]["runs_failed"]) == (2, 1)
    assert med["1w"]["latency_p99"] == 35.0
    assert b.comparison(med)["peer_bytes_over_ours"] == round(400 / 105, 2)
    doc = {"median": med, "results": results, "variants": ["1w", "raw1"], "rate": 4000.0,
           "symbols": 500, "interval_ms": 33, "batch_ms": 16, "duration_s": 15.0,
           "warmup_s": 5.0, "runs": 3, "machine": "test", "comparison": b.comparison(med)}
    md = b.markdown(doc)
    assert "| 2 | 1w | failed: stack did not start: nats / down |" in md
    assert "| 1w | 2/1 |" in md


def test_the_raw_peer_reads_the_symbols_of_the_demo_pages_groups() -> None:
    b = _bench()
    subjects = b.peer_subjects(50)
    want = {f"xy.src.tick.{c.venue}.{c.symbol}" for c in MarketSim(50).contracts()
            if c.group in b.GROUPS}
    assert set(subjects) == want and 0 < len(subjects) < 50
