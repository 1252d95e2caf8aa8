"""Fixtures for the browser tests: a real stack (nats-server, aggregator, gateway, ui_server,
publisher) in this process, and Debian's Chromium (scripts/setup_browser.sh installs it)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The gateway tests' helpers (gw_support: the JSON log capture), as tests/client does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from browser_stack import CHROMIUM, Stack, running_stack

from xypipe._embedded import EmbeddedNats


@pytest.fixture(autouse=True)
def chromium_installed() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found: run scripts/setup_browser.sh (Debian's "
                           "chromium; the browser tests never download a browser)")


@pytest.fixture
async def stack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(nats_server.url, tmp_path) as s:
        yield s


@pytest.fixture
async def demo_stack(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Stack]:
    """The stack as the demo runs it: the demo's projections, the panels subscribed to them."""
    async with running_stack(nats_server.url, tmp_path, projections=True) as s:
        yield s
