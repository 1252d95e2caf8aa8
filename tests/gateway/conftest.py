"""Fixtures for the gateway tests (the real nats-server comes from tests/_nats_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gw_support import JsonLogCapture, aggregator, keys, publisher


@pytest.fixture
def json_logs() -> Iterator[JsonLogCapture]:
    with JsonLogCapture().installed() as cap:
        yield cap


__all__ = ["aggregator", "keys", "publisher"]
