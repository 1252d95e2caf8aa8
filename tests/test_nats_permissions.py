"""Least privilege at the NATS level: a real nats-server with accounts, users and subject
permissions. Unauthenticated clients are refused at connect; an operation outside a user's
permissions is refused by the server, and the bridge logs (XY-NATS-008) and counts every refusal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from xypipe._embedded import embedded_nats
from xypipe._errors import NatsConnectionError
from xypipe._nats import connect

pytestmark = pytest.mark.nats

SERVER_CONFIG = """
accounts {
  MD {
    users = [
      # An exchange adapter: may only publish raw ticks and reference data.
      {user: adapter, password: "adapter-secret",
       permissions: {publish: {allow: ["xy.src.>", "xy.ref.>"]}, subscribe: {deny: [">"]}}}
      # A gateway: reads market data, never publishes it.
      {user: gateway, password: "gateway-secret",
       permissions: {publish: {allow: ["_INBOX.>"]},
                     subscribe: {allow: ["xy.md.>", "xy.src.>", "_INBOX.>"]}}}
    ]
  }
}
"""


@pytest.fixture
async def secured(tmp_path: Path):  # type: ignore[no-untyped-def]
    conf = tmp_path / "nats.conf"
    conf.write_text(SERVER_CONFIG)
    async with embedded_nats(port=0, jetstream=False, config_file=conf) as server:
        yield server


async def test_a_client_without_credentials_is_refused(secured) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NatsConnectionError, match=r"[Aa]uthorization"):
        async with connect(secured.url, connect_timeout=1.0):
            pass


async def test_a_wrong_password_is_refused(secured) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NatsConnectionError, match=r"[Aa]uthorization"):
        async with connect(secured.url, user="adapter", password="guess", connect_timeout=1.0):
            pass


async def test_publishes_outside_the_users_permissions_are_refused_logged_and_counted(
    secured, caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    async with connect(secured.url, user="gateway", password="gateway-secret") as gw, \
            connect(secured.url, user="adapter", password="adapter-secret") as adapter, \
            gw.subscribe("xy.src.>") as sub:
        events = adapter.events()
        await gw.flush()
        # Allowed: a raw tick reaches the gateway user.
        await adapter.publish("xy.src.tick.XNAS.AAPL", b"tick")
        # Refused: an adapter must not forge market data for browsers.
        await adapter.publish("xy.md.tick.equities", b"forged")
        await adapter.flush()
        with trio.fail_after(5):
            async for event in events:
                if event.kind == "error":
                    break
        assert 'permissions violation for publish to "xy.md.tick.equities"' in event.detail
        with trio.fail_after(5):
            batch = await sub.receive()
        assert [(m.subject, m.data) for m in batch] == [("xy.src.tick.XNAS.AAPL", b"tick")]
        assert adapter.statistics().permission_denied == 1
    fields = [getattr(r, "xy_fields", {}) for r in caplog.records]
    refused = [f for f in fields if f.get("code") == "XY-NATS-008"]
    assert len(refused) == 1 and refused[0]["denied_total"] == 1


async def test_a_subscription_outside_the_users_permissions_is_refused_and_counted(
    secured,  # type: ignore[no-untyped-def]
) -> None:
    async with connect(secured.url, user="adapter", password="adapter-secret") as adapter:
        events = adapter.events()
        async with adapter.subscribe("xy.md.>"):
            await adapter.flush()
            with trio.fail_after(5):
                async for event in events:
                    if event.kind == "error":
                        break
        assert 'permissions violation for subscription to "xy.md.>"' in event.detail
        assert adapter.statistics().permission_denied == 1
