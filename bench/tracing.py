"""What tracing costs on the hot path per tick: off (the default) against no tracing code at all,
and on at 1 % sampling.

    python bench/tracing.py                  # 5,000 symbols, 200k ticks, 7 rounds
    python bench/tracing.py --ticks 100000 --rounds 5 --ratio 0.01

The ticks are the demo market's (5 levels a side), wrapped as JetStream deliveries in batches of
1,024, through ingest's ``decode_messages`` and conflation's per-batch trace scan — the code that
runs per tick in the aggregator. Three variants, in an order that rotates every round so a busy
machine slows them alike, medians of the rounds' CPU time (``time.process_time``) reported:

* **no tracing code**: ``decode_messages`` as it was before tracing existed (the source of
  ``xypipe/_stages/ingest.py`` at ``--baseline``, loaded beside the current one);
* **off**: today's code with tracing off (what every process runs by default);
* **on, 1 %**: the SDK (``parentbased_traceidratio``, a batch span processor, an exporter that
  drops what it is given: the cost is ours and the SDK's, not a network's), the ticks the
  publisher's sampler kept carrying a ``traceparent`` (``ingest`` spans made for them), and
  conflation scanning every batch for traced ticks.

The publisher's side is timed apart: the sampler's decision for every tick it sends
(``Tracer.tick_headers``), which is where a 1 % trace costs most. Results:
bench/results/tracing.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import env_note, save
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from xypipe import _tracing
from xypipe._degrade import LevelWatch
from xypipe._log import get_logger
from xypipe._md.records import Batch
from xypipe._metrics import Metrics
from xypipe._publisher import MarketSim
from xypipe._stage import StageContext
from xypipe._stages.conflate import Conflate
from xypipe._stages.ingest import BadSourceCounter, decode_messages

ROOT = Path(__file__).resolve().parent.parent
#: The last commit before tracing: its ingest is the "no tracing code" variant.
BASELINE = "e82ceda"


class Delivery:
    __slots__ = ("data", "headers", "reply", "seq", "subject")

    def __init__(self, subject: str, data: bytes, reply: str,
                 headers: dict[str, str] | None = None) -> None:
        self.subject = subject
        self.data = data
        self.reply = reply
        self.seq = None
        self.headers = headers


class Dropping(SpanExporter):
    """Takes every span and keeps none (counts them, so the run proves spans were made)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def baseline_ingest(rev: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:xypipe/_stages/ingest.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    if "traces" in source:
        raise SystemExit(f"{rev}'s ingest already has tracing code: pick an older --baseline")
    path = Path(tempfile.mkdtemp()) / "ingest_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ingest_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deliveries(symbols: int, ticks: int, tracer: _tracing.Tracer
               ) -> tuple[list[list[Delivery]], list[list[Delivery]], int, int]:
    """The same ticks twice: without headers (for the publisher's timing), and with the
    publisher's sampler's headers."""
    now_us = time.time_ns() // 1000
    sim = MarketSim(symbols, seed=1)
    plain: list[Delivery] = []
    traced: list[Delivery] = []
    sampled = 0
    for i in range(ticks):
        t = sim.next_tick(now_us - 50)
        subject = f"xy.src.tick.{t.venue}.{t.symbol}"
        reply = f"$JS.ACK.XY_SRC.bench.1.{i + 1}.{i + 1}.{now_us * 1000}.{ticks - i - 1}"
        data = t.SerializeToString()
        headers = tracer.tick_headers(subject)
        sampled += headers is not None
        plain.append(Delivery(subject, data, reply))
        traced.append(Delivery(subject, data, reply, headers))

    def batches(ds: list[Delivery]) -> list[list[Delivery]]:
        return [ds[i:i + 1024] for i in range(0, len(ds), 1024)]
    return batches(plain), batches(traced), now_us, sampled


def timed(run: Callable[[list[Delivery], BadSourceCounter], int],
          batches: list[list[Delivery]]) -> float:
    ctx = StageContext("bench", "ingest", None, None, LevelWatch(), Metrics(),
                       get_logger("bench"))
    bad = BadSourceCounter(ctx, per_s=5)
    n = 0
    # CPU time of this process (its threads included: the SDK's export thread is part of the
    # cost), not wall time: the machine is shared, and others' work is not ours.
    t0 = time.process_time()
    for batch in batches:
        n += run(batch, bad)
    took = time.process_time() - t0
    if n != sum(len(b) for b in batches):
        raise SystemExit("ticks were lost: the bench would measure the wrong thing")
    return took


def main(args: argparse.Namespace) -> None:
    exporter = Dropping()
    # As OTEL_TRACES_SAMPLER=parentbased_traceidratio builds it (xypipe/_tracing.py).
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(args.ratio)),
                              id_generator=_tracing.PresetTraceIds())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = _tracing.install(provider, root_ratio=args.ratio)
    plain, traced, now_us, sampled = deliveries(args.symbols, args.ticks, tracer)
    # The input (hundreds of thousands of messages) is the bench's, not the hot path's: out of
    # the collector's sight, so the variant that allocates spans does not pay for traversing it.
    gc.collect()
    gc.freeze()
    n = args.ticks
    old = baseline_ingest(args.baseline)
    reader = _tracing.parent_reader("ingest", Metrics(), get_logger("bench"))
    assert reader is not None
    tracer_off = None  # what every stage binds with tracing off
    folder = SimpleNamespace(_folded={})

    def none(batch: list[Delivery], bad: BadSourceCounter) -> int:
        recs = old.decode_messages(batch, 0.0, bad, None, now_us)
        return len(recs)

    def off(batch: list[Delivery], bad: BadSourceCounter) -> int:
        recs = decode_messages(batch, 0.0, bad, None, now_us, None, None, None)
        if tracer_off is not None:  # conflate's per-batch test
            Conflate._fold_traces(folder, Batch(recs, 0))  # type: ignore[arg-type]
        return len(recs)

    def on(batch: list[Delivery], bad: BadSourceCounter) -> int:
        recs = decode_messages(batch, 0.0, bad, None, now_us, None, None, reader)
        Conflate._fold_traces(folder, Batch(recs, 0))  # type: ignore[arg-type]
        return len(recs)

    # The same messages for every variant (the sampled ones carry their header; code without
    # tracing, or with it off, never reads it): only the code differs, not the memory layout.
    variants: dict[str, tuple[Callable[[list[Delivery], BadSourceCounter], int],
                              list[list[Delivery]]]] = {
        "none": (none, traced), "off": (off, traced), "on": (on, traced)}
    results: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for run, batches in variants.values():
        timed(run, batches[:20])  # warm-up (first decodes, caches), not counted
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            run, batches = variants[name]
            results[name].append(timed(run, batches) / n * 1e6)
        print(f"round {r + 1}: no tracing code {results['none'][-1]:.3f}, off "
              f"{results['off'][-1]:.3f}, on {args.ratio:.0%} {results['on'][-1]:.3f} us/tick")

    # The publisher: the sampler's decision for every tick (and a span for the kept ones).
    subjects = [d.subject for b in plain for d in b]
    pub_on: list[float] = []
    pub_off: list[float] = []
    for _ in range(args.rounds):
        t0 = time.process_time()
        for s in subjects:
            tracer.tick_headers(s)
        pub_on.append((time.process_time() - t0) / n * 1e6)
        t0 = time.process_time()
        for _s in subjects:
            if tracer_off is not None:
                tracer_off.tick_headers(_s)
        pub_off.append((time.process_time() - t0) / n * 1e6)
    provider.shutdown()
    _tracing.uninstall()

    med = {k: statistics.median(v) for k, v in results.items()}
    spread = {k: (min(v), max(v)) for k, v in results.items()}
    p_on, p_off = statistics.median(pub_on), statistics.median(pub_off)
    doc: dict[str, Any] = {
        "symbols": args.symbols, "ticks": n, "rounds": args.rounds, "ratio": args.ratio,
        "baseline": args.baseline, "sampled_ticks": sampled, "spans_exported": exporter.spans,
        "aggregator_us_per_tick": med, "aggregator_us_per_tick_min_max": spread,
        "aggregator_rounds_us_per_tick": results,
        "off_minus_none_us": med["off"] - med["none"], "on_minus_off_us": med["on"] - med["off"],
        "publisher_sampler_us_per_tick": p_on, "publisher_off_us_per_tick": p_off,
        "env": env_note(),
    }
    lines = [
        f"# Tracing cost on the hot path, {args.symbols:,} symbols, {n:,} ticks, medians of "
        f"{args.rounds} rounds", "",
        "Aggregator (ingest's `decode_messages` + conflation's trace scan, per tick):", "",
        "| variant | CPU µs/tick (median) | min .. max | vs no tracing code |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("none", "no tracing code (ingest at " + args.baseline + ")"),
                       ("off", "tracing off (default)"),
                       ("on", f"tracing on, {args.ratio:.0%} sampled")):
        lo, hi = spread[key]
        lines.append(f"| {label} | {med[key]:.3f} | {lo:.3f} .. {hi:.3f} | "
                     f"{(med[key] / med['none'] - 1) * 100:+.1f} % |")
    lines += [
        "", f"Sampled ticks: {sampled:,} of {n:,} ({sampled / n:.2%}); spans exported: "
        f"{exporter.spans:,}.", "",
        "Publisher (per tick sent):", "",
        "| variant | CPU µs/tick (median) |", "|---|---:|",
        f"| tracing off (one `is not None` test) | {p_off:.3f} |",
        f"| tracing on, {args.ratio:.0%}: the sampler's decision for every tick, a span and a "
        f"header for the kept ones | {p_on:.3f} |", "",
        f"Machine: {doc['env']} (shared: other work ran beside it, so compare the rows of this "
        "run with each other, not with other files).",
    ]
    table = "\n".join(lines)
    print(table)
    save("tracing", doc, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--ticks", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--baseline", default=BASELINE,
                    help="the commit whose ingest is the 'no tracing code' variant")
    main(ap.parse_args())
