"""Fixtures for the gateway tests (the real nats-server comes from tests/_nats_fixtures.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from gw_support import JsonLogCapture, aggregator, keys, publisher


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


__all__ = ["aggregator", "keys", "publisher"]
