"""The demo's storage stays bounded: every JetStream stream configs/demo.toml creates has a byte
and an age limit, sized for a laptop, and every stage that creates a stream names the same ones.

Read from the loaded config (what ``xypipe run`` would create): the source stream by the
aggregator's ingest and by the publisher (whoever starts first creates it), the snapshot and
checkpoint streams by ingest and publish. The KV buckets keep one value per key (the groups) or a
short history (the feature flags), so their size follows the number of keys. The live demo's
streams are checked through JetStream's own API by tests/test_demo_lifecycle.py.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict

from xypipe import load_config
from xypipe._bus_layout import bus_layout
from xypipe._stages.ingest import IngestConfig
from xypipe._stages.publish import PublishConfig
from xypipe._stages.publisher import PublisherConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
MIB = 1 << 20
#: What the demo may keep on a laptop's disk, all streams together (a file store adds a few
#: per cent of block overhead on top).
LAPTOP_BYTES = 256 * MIB
#: An age limit that is a limit: an hour at most for the market, a day for the state.
MAX_AGE_S = {"source": 3600, "state": 86_400}


def stream_limits() -> dict[str, list[tuple[str, str, int, int]]]:
    """``{stream: [(kind, who, max_bytes, max_age_s), ...]}``, one entry per stage creating it."""
    cfg = load_config(ROOT / "configs" / "demo.toml")
    out: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)
    for name, pipeline in cfg.pipelines.items():
        for decl in pipeline.stages:
            c = decl.config
            who = f"pipelines.{name}.{decl.name}"
            if isinstance(c, IngestConfig):
                out[c.stream].append(("source", who, c.max_bytes, c.max_age_s))
            if isinstance(c, PublisherConfig) and c.ensure_stream:
                out[c.source.name].append(("source", who, c.source.max_bytes,
                                           c.source.max_age_s))
            if isinstance(c, IngestConfig | PublishConfig):
                for stream in (c.state.snapshot_stream, c.state.checkpoint_stream):
                    out[stream].append(("state", who, c.state.max_bytes, c.state.max_age_s))
    return dict(out)


def test_every_stream_the_demo_creates_has_a_byte_and_an_age_limit():
    limits = stream_limits()
    layout = bus_layout(load_config(ROOT / "configs" / "demo.toml"))
    # Every stream the config's stages use is created by one of them, with limits.
    assert set(limits) == {*layout.source_streams, *layout.state_streams}
    for stream, creators in limits.items():
        for kind, who, max_bytes, max_age_s in creators:
            assert 0 < max_bytes <= LAPTOP_BYTES, (stream, who, max_bytes)
            assert 0 < max_age_s <= MAX_AGE_S[kind], (stream, who, max_age_s)


def test_every_stage_creating_a_stream_names_the_same_limits():
    # Whoever creates a stream first sets its limits (the aggregator's ingest resets the
    # source stream's to its own): differing ones would change with the start order.
    for stream, creators in stream_limits().items():
        assert len({(b, a) for _, _, b, a in creators}) == 1, (stream, creators)


def test_all_streams_together_fit_a_laptop():
    total = sum(creators[0][2] for creators in stream_limits().values())
    assert total <= LAPTOP_BYTES, f"{total / MIB:.0f} MiB"
