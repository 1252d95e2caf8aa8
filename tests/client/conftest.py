"""Fixtures for the client SDK tests: a real nats-server (tests/_nats_fixtures.py), the gateway
tests' keys and aggregator (tests/gateway/gw_support.py), and a TCP proxy a test can cut."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from client_support import Proxy
from gw_support import aggregator, keys, publisher


@pytest.fixture
async def proxy(nursery) -> Proxy:  # type: ignore[no-untyped-def]
    """A TCP proxy in front of whatever port a test points it at (``proxy.target``)."""
    p = Proxy()
    await nursery.start(p.serve)
    return p


__all__ = ["aggregator", "keys", "publisher"]
