"""Reading the server's refusals (xypipe/_nats/_refusal.py): pure, without a server.

The same refusals from a real nats-server: tests/test_nats_permissions.py (user/password) and
tests/creds/ (operator mode, mTLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import types

import attrs
import pytest
from nats.aio.client import Client as AioClient

from xypipe._nats._refusal import (
    ErrTap,
    Refusal,
    buffered_server_error,
    server_refusal,
    tls_refusal,
)
from xypipe._nats._refusal_log import RefusalLog


@pytest.mark.parametrize(("text", "expected"), [
    # As nats-py reports them: at connect (quoted, as sent), on a live connection (lowered).
    ("nats: 'Authorization Violation'",
     Refusal("auth", "connect", None, "Authorization Violation")),
    ("nats: user authentication expired",
     Refusal("expired", "connect", None, "user authentication expired", exact=False)),
    ("nats: user authentication revoked",
     Refusal("revoked", "connect", None, "user authentication revoked", exact=False)),
    ('nats: permissions violation for publish to "xy.md.tick.eq"',
     Refusal("permission", "publish", "xy.md.tick.eq",
             'permissions violation for publish to "xy.md.tick.eq"', exact=False)),
    ('Permissions Violation for Subscription to "xy.src.>"',
     Refusal("permission", "subscribe", "xy.src.>",
             'Permissions Violation for Subscription to "xy.src.>"')),
    ('Permissions Violation for Publish to "$KV.xy_feature_flags.gateway.force_level"',
     Refusal("permission", "jetstream", "$KV.xy_feature_flags.gateway.force_level",
             'Permissions Violation for Publish to "$KV.xy_feature_flags.gateway.force_level"')),
    ("nats: stale connection", None),
    ("nats: empty response from server when expecting INFO message", None),
])
def test_the_server_s_words_say_what_was_refused(text: str, expected: Refusal | None) -> None:
    assert server_refusal(text) == expected


def test_the_tap_gives_back_a_subject_as_the_server_sent_it() -> None:
    tap = ErrTap()
    line = b"-ERR 'Permissions Violation for Publish to \"$JS.API.CONSUMER.CREATE.XY_SRC\"'\r\n"
    # Cut anywhere between two reads, even inside "-ERR"; among messages of any kind.
    for cut in (1, 3, 10, len(line) - 1):
        tap = ErrTap()
        tap.feed(b"MSG xy.md.tick.eq 1 5\r\nhello\r\n" + line[:cut])
        tap.feed(line[cut:] + b"PING\r\n")
        refusal = server_refusal(
            'nats: permissions violation for publish to "$js.api.consumer.create.xy_src"', tap)
        assert refusal == Refusal(
            "permission", "jetstream", "$JS.API.CONSUMER.CREATE.XY_SRC",
            'Permissions Violation for Publish to "$JS.API.CONSUMER.CREATE.XY_SRC"'), cut


def test_the_tap_sits_in_front_of_nats_py_s_own_parser() -> None:
    client = AioClient()
    tap = ErrTap()
    tap.install(client)
    assert tap.installed and type(client._ps).__name__ == "_TappedParser"


def test_an_err_hidden_behind_a_reset_is_found_in_the_unread_bytes() -> None:
    """The race: the server writes -ERR and closes; when the reset is seen before nats-py
    reads its answer, asyncio raises the reset and leaves the -ERR unread."""
    loop = asyncio.SelectorEventLoop()  # a loop of its own: the tests run under Trio
    try:
        reader = asyncio.StreamReader(loop=loop)
        reader.feed_data(b"-ERR 'Authorization Violation'\r\n")
        reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))
        with pytest.raises(ConnectionResetError):
            loop.run_until_complete(reader.readline())  # what nats-py's connect does
    finally:
        loop.close()
    client = types.SimpleNamespace(_transport=types.SimpleNamespace(_io_reader=reader))
    assert buffered_server_error(client) == "Authorization Violation"  # type: ignore[arg-type]
    assert buffered_server_error(types.SimpleNamespace()) is None  # type: ignore[arg-type]


def test_a_broken_off_handshake_is_a_tls_refusal() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    refusal = tls_refusal(alert)
    assert refusal is not None and refusal.reason == "tls" and refusal.op == "connect"
    assert "TLSV1_ALERT_UNKNOWN_CA" in refusal.detail
    assert tls_refusal(ConnectionResetError()) is None
    # A connection torn down while it is replaced (a reconnect) is no refusal.
    torn = ssl.SSLError(1, "[SSL: APPLICATION_DATA_AFTER_CLOSE_NOTIFY] application data after "
                           "close notify")
    torn.reason = "APPLICATION_DATA_AFTER_CLOSE_NOTIFY"
    assert tls_refusal(torn) is None


def test_a_refusal_log_counts_every_refusal_and_audits_one_a_second_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xypipe")
    seen: list[Refusal] = []
    denied: list[str] = []
    log = RefusalLog(principal="gateway", on_refusal=seen.append,
                     on_permission_denied=denied.append,
                     explain=lambda r: attrs.evolve(r, reason="expired"))
    forged = Refusal("permission", "publish", "xy.md.x",
                     'Permissions Violation for Publish to "xy.md.x"')
    for now in (0.0, 0.5, 1.2):
        log.report(forged, now=now, signed_in=True, server="tls://n:4222")
    sign_in = Refusal("auth", "connect", None, "Authorization Violation")
    assert log.report(sign_in, now=1.3, signed_in=False, server="tls://n:4222").reason == "expired"
    assert (log.total, log.permission_denied, denied) == (4, 3, ["publish"] * 3)
    assert [r.reason for r in seen] == ["permission"] * 3 + ["expired"]
    lines = [getattr(r, "xy_fields", {}) for r in caplog.records]
    assert [(f["code"], f["action"], f.get("suppressed", 0)) for f in lines] == [
        ("XY-NATS-008", "nats.publish", 0), ("XY-NATS-008", "nats.publish", 1),
        ("XY-SEC-020", "nats.connect", 0)]
    assert all(f["sub"] == "gateway" and f["audit"] for f in lines)
