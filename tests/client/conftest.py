"""Fixtures for the client SDK tests: a real nats-server (tests/_nats_fixtures.py), the gateway
tests' keys and aggregator (tests/gateway/gw_support.py), and a TCP proxy a test can cut."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from client_support import Proxy
from gw_support import FakeAggregator, Keys

from xypipe._nats import NatsClient, connect


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
async def publisher(nats_server) -> AsyncIterator[NatsClient]:  # type: ignore[no-untyped-def]
    async with connect(nats_server.url, name="fake-aggregator") as nc:
        yield nc


@pytest.fixture
async def aggregator(publisher: NatsClient) -> FakeAggregator:
    agg = FakeAggregator(publisher, ["fx", "rates", "crypto"])
    await agg.setup()
    return agg


@pytest.fixture
async def proxy(nursery) -> Proxy:  # type: ignore[no-untyped-def]
    """A TCP proxy in front of whatever port a test points it at (``proxy.target``)."""
    p = Proxy()
    await nursery.start(p.serve)
    return p
