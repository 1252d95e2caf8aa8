"""Fixtures for the gateway tests (the real nats-server comes from tests/_nats_fixtures.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gw_support import FakeAggregator, JsonLogCapture, Keys

from xypipe._nats import NatsClient, connect


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def json_logs() -> Iterator[JsonLogCapture]:
    cap = JsonLogCapture()
    root = logging.getLogger("xypipe")
    old_level = root.level
    root.addHandler(cap.handler)
    root.setLevel(logging.INFO)
    try:
        yield cap
    finally:
        root.removeHandler(cap.handler)
        root.setLevel(old_level)


@pytest.fixture
async def publisher(nats_server) -> AsyncIterator[NatsClient]:  # type: ignore[no-untyped-def]
    async with connect(nats_server.url, name="fake-aggregator") as nc:
        yield nc


@pytest.fixture
async def aggregator(publisher: NatsClient) -> FakeAggregator:
    agg = FakeAggregator(publisher, ["fx", "rates", "crypto"])
    await agg.setup()
    return agg
