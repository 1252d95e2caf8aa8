"""Fixtures that give a test a real nats-server (JetStream on, random port) and a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._nats import NatsClient, connect


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server child with JetStream and its own data dir, stopped after the test."""
    async with embedded_nats(port=0, data_dir=tmp_path / "nats-data") as server:
        yield server


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture(params=["trio-asyncio", "thread", "anyio"])
def nats_bridge(request: pytest.FixtureRequest) -> str:
    """Every Trio/asyncio bridge; tests that take this run once per bridge."""
    return str(request.param)


@pytest.fixture
async def nats_client(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    """A client on the default bridge, connected to ``nats_server``."""
    async with connect(nats_server.url, name="xypipe-tests") as nc:
        yield nc
