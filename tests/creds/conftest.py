"""A trust chain from ``xypipe creds`` and a real nats-server running it: operator mode, every
client proving itself twice — a client certificate from the chain's CA (mTLS) and a user JWT
signed by the chain's account. Helpers: ``creds_support.py``."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from creds_support import Refusals, make_chain

from xypipe._creds import Chain
from xypipe._embedded import EmbeddedNats, embedded_nats

pytestmark = pytest.mark.nats


#: What a secret looks like in a log line: an NKey seed, a JWT, a PEM private key.
SECRET = re.compile(r"S[OAU][A-Z2-7]{56}|eyJ[\w-]+\.eyJ[\w-]+|PRIVATE KEY-----")


@pytest.fixture(autouse=True)
def no_secret_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test here does, no log line carries a seed, a JWT or a private key."""
    caplog.set_level(logging.DEBUG)
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    leaks = [r for r in records
             if SECRET.search(r.getMessage() + repr(getattr(r, "xy_fields", {})))]
    assert not leaks, f"secrets in log lines: {[r.getMessage() for r in leaks]}"


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return make_chain(tmp_path / "chain")


@pytest.fixture
async def secured(chain: Chain, tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server started from the chain's own ``nats-server.conf``."""
    async with embedded_nats(port=0, jetstream=False,
                             config_file=chain.paths.server_config) as server:
        yield server


@pytest.fixture
def refusals() -> Refusals:
    return Refusals()
