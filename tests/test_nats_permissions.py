"""Least privilege at the NATS level (the user/password profile): a real nats-server with
accounts, users and subject permissions. Unauthenticated clients are refused at connect — as an
authorization failure, every time; an operation outside a user's permissions is refused by the
server, and the bridge audits (XY-NATS-008, the server's own subject) and counts every refusal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from xypipe._embedded import embedded_nats
from xypipe._errors import NatsRefused
from xypipe._nats import Refusal, connect

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


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [f for r in caplog.records if (f := getattr(r, "xy_fields", {})).get("audit")]


#: How often each refusal is tried: the server writes its -ERR and closes at once, and a client
#: that read the close first used to report "no server reachable" now and then.
REPEAT = 25


@pytest.mark.parametrize("credentials", [{}, {"user": "adapter", "password": "guess"}],
                         ids=["no-credential", "wrong-password"])
async def test_a_refused_sign_in_is_an_authorization_failure_every_time(
    secured, caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
    credentials: dict[str, str],
) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    refusals: list[Refusal] = []
    for _ in range(REPEAT):
        with pytest.raises(NatsRefused) as refused:
            async with connect(secured.url, connect_timeout=1.0, principal="adapter",
                               on_refusal=refusals.append, **credentials):
                pass
        assert refused.value.reason == "auth"
        assert "Authorization Violation" in str(refused.value), str(refused.value)
        assert "no server reachable" not in str(refused.value)
    assert refusals == [Refusal("auth", "connect", None, "Authorization Violation")] * REPEAT
    audits = audit_lines(caplog)
    assert len(audits) == REPEAT
    assert {(a["code"], a["action"], a["outcome"], a["reason"], a["sub"]) for a in audits} == {
        ("XY-SEC-020", "nats.connect", "denied", "auth", "adapter")}


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
        # The server's own words, its subject's case kept (nats-py would lower-case it).
        assert event.detail == 'Permissions Violation for Publish to "xy.md.tick.equities"'
        with trio.fail_after(5):
            batch = await sub.receive()
        assert [(m.subject, m.data) for m in batch] == [("xy.src.tick.XNAS.AAPL", b"tick")]
        assert adapter.statistics().permission_denied == 1
    fields = [getattr(r, "xy_fields", {}) for r in caplog.records]
    refused = [f for f in fields if f.get("code") == "XY-NATS-008"]
    assert len(refused) == 1 and refused[0]["denied_total"] == 1
    # The same audit shape as the gateway's ACL denials.
    assert {k: refused[0][k] for k in ("audit", "action", "outcome", "reason", "subject")} == {
        "audit": True, "action": "nats.publish", "outcome": "denied", "reason": "permission",
        "subject": "xy.md.tick.equities"}


async def test_a_refused_subject_is_named_as_the_server_sent_it(
    secured, caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    refusals: list[Refusal] = []
    async with connect(secured.url, user="adapter", password="adapter-secret",
                       principal="adapter", on_refusal=refusals.append) as adapter:
        events = adapter.events()
        await adapter.publish("xy.md.tick.EQUITIES.Mixed_Case", b"forged")
        await adapter.publish("$JS.API.STREAM.INFO.XY_SRC", b"")
        await adapter.flush()
        with trio.fail_after(5):
            while len(refusals) < 2:
                await events.receive()
    assert refusals == [
        Refusal("permission", "publish", "xy.md.tick.EQUITIES.Mixed_Case",
                'Permissions Violation for Publish to "xy.md.tick.EQUITIES.Mixed_Case"'),
        Refusal("permission", "jetstream", "$JS.API.STREAM.INFO.XY_SRC",
                'Permissions Violation for Publish to "$JS.API.STREAM.INFO.XY_SRC"')]
    assert [(a["action"], a["subject"], a["subject_exact"], a["sub"])
            for a in audit_lines(caplog)] == [
        ("nats.publish", "xy.md.tick.EQUITIES.Mixed_Case", True, "adapter"),
        ("nats.jetstream", "$JS.API.STREAM.INFO.XY_SRC", True, "adapter")]


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
        assert event.detail == 'Permissions Violation for Subscription to "xy.md.>"'
        assert adapter.statistics().permission_denied == 1
