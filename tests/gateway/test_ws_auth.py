"""Authentication, origin and ACL over real sockets, with the audit lines they write."""

from __future__ import annotations

import time

import pytest
import trio
import trio_websocket
from gw_support import (
    Keys,
    claims,
    expect_close,
    forge,
    http_port,
    running_gateway,
    ws_client,
)

from xypipe.contracts import ErrorCode, GroupRef, Ping, RefreshToken, Subscribe


def _bad_tokens(keys: Keys, tmp_path) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    other = Keys(tmp_path / "other") if (tmp_path / "other").mkdir() is None else None
    assert other is not None
    return {
        "bad_signature": (other.token("alice"), ErrorCode.ERROR_CODE_AUTH_INVALID),
        "expired": (keys.token("alice", ttl_s=60, now=time.time() - 3600),
                    ErrorCode.ERROR_CODE_AUTH_EXPIRED),
        "wrong_audience": (keys.token("alice", audience="someone-else"),
                           ErrorCode.ERROR_CODE_AUTH_INVALID),
        "wrong_issuer": (keys.token("alice", issuer="evil"), ErrorCode.ERROR_CODE_AUTH_INVALID),
        "alg_none": (forge({"alg": "none", "typ": "JWT"}, claims()),
                     ErrorCode.ERROR_CODE_AUTH_INVALID),
        # HS/RS confusion: HMAC "signed" with the gateway's public key as the secret.
        "hs256_with_public_key": (
            forge({"alg": "HS256", "typ": "JWT"}, claims(), keys.public_path.read_bytes()),
            ErrorCode.ERROR_CODE_AUTH_INVALID),
        "not_a_jwt": ("hello", ErrorCode.ERROR_CODE_AUTH_INVALID),
    }


async def test_each_bad_token_gets_an_error_frame_a_close_code_and_an_audit_line(
    nats_server, keys: Keys, tmp_path, json_logs
):
    bad = _bad_tokens(keys, tmp_path)
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        for name, (token, code) in bad.items():
            async with ws_client(port) as c:
                reply = await c.hello(token)
                assert reply.HasField("error"), name
                assert reply.error.code == code, (name, reply.error)
                assert reply.error.fatal, name
                assert await expect_close(c) == 4000 + code, name
    denied = json_logs.find(audit=True, action="auth", outcome="denied")
    assert len(denied) == len(bad)
    text = json_logs.stream.getvalue()
    assert "signature does not verify" in text
    assert "'none' refused" in text and "'HS256' refused" in text
    # Tokens never reach the log in clear.
    for token, _ in bad.values():
        if len(token) > 20:
            assert token not in text
    assert runner.metrics.sample("ws_auth_total", {"outcome": "denied"}) == len(bad)


@pytest.mark.parametrize("kind", ["es256", "rs256"])
async def test_ec_and_rsa_keys_verify_their_own_algorithm(nats_server, tmp_path, kind):
    keys = Keys(tmp_path, kind)
    async with running_gateway(nats_server.url, keys) as runner, \
            ws_client(http_port(runner)) as c:
        reply = await c.hello(keys.token("bob"))
        assert reply.welcome.principal == "bob"


async def test_no_hello_within_the_timeout_closes_with_auth_required(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys, hello_timeout_ms=200) as runner, \
            ws_client(http_port(runner)) as c:
        f = await c.recv()
        assert f.error.code == ErrorCode.ERROR_CODE_AUTH_REQUIRED and f.error.fatal
        assert await expect_close(c) == 4000 + ErrorCode.ERROR_CODE_AUTH_REQUIRED


async def test_a_frame_before_hello_closes_with_auth_required(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys) as runner, \
            ws_client(http_port(runner)) as c:
        await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
        f = await c.recv()
        assert f.error.code == ErrorCode.ERROR_CODE_AUTH_REQUIRED
        assert "expected a Hello" in f.error.message
        assert await expect_close(c) == 4001


async def test_origin_outside_the_allow_list_is_refused_at_the_handshake(
    nats_server, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys,
                               allowed_origins=["https://app.example.com"]) as runner:
        port = http_port(runner)
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with ws_client(port, origin="https://evil.example.com"):
                pass
        assert info.value.status_code == 403
        async with ws_client(port, origin="https://app.example.com") as c:
            assert (await c.hello(keys.token())).HasField("welcome")
    assert json_logs.find(audit=True, action="connect", outcome="denied",
                          origin="https://evil.example.com")


async def test_acl_allows_granted_groups_and_refuses_others_with_audit(
    nats_server, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token("carol", ["xy.md.*.fx", "xy.md.*.fx.>"]))
        await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx"), GroupRef(group="rates")]))
        err = await c.recv_until(lambda f: f.HasField("error"))
        assert err.error.code == ErrorCode.ERROR_CODE_ACL_DENIED
        assert err.error.group == "rates" and not err.error.fatal
        assert "xy.md.snapshot.rates" in err.error.message
        sub = await c.recv_until(lambda f: f.HasField("subscribed"))
        assert [g.group for g in sub.subscribed.groups] == ["fx"]
        # Still serving after a refusal.
        await c.send(ping=Ping(nonce=7))
        pong = await c.recv_until(lambda f: f.HasField("pong"))
        assert pong.pong.nonce == 7
        assert runner.metrics.sample("acl_denied_total", {"action": "subscribe"}) == 1
    denied = json_logs.find(audit=True, action="subscribe", outcome="denied")
    assert len(denied) == 1
    assert denied[0]["sub"] == "carol" and denied[0]["group"] == "rates"
    assert denied[0]["code"] == "XY-ACL-001"
    allowed = json_logs.find(audit=True, action="subscribe", outcome="allowed")
    assert [a["group"] for a in allowed] == ["fx"]


async def test_refresh_on_a_live_connection_extends_the_session_and_narrows_the_acl(
    nats_server, keys: Keys
):
    async with running_gateway(nats_server.url, keys, leeway_s=0.0) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token("dave", ["xy.md.>"], ttl_s=2))
        await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx"), GroupRef(group="rates")]))
        await c.recv_until(lambda f: f.HasField("subscribed"))
        await c.send(refresh=RefreshToken(token=keys.token("dave", ["xy.md.*.fx", "xy.md.*.fx.>"],
                                                           ttl_s=300)))
        err = await c.recv_until(lambda f: f.HasField("error"))
        assert err.error.code == ErrorCode.ERROR_CODE_ACL_DENIED and err.error.group == "rates"
        w = await c.recv_until(lambda f: f.HasField("welcome"))
        assert w.welcome.token_expires_us > (time.time() + 200) * 1e6
        # The first token's expiry passes; the session lives on.
        await trio.sleep(2.2)  # the token's real lifetime is what is under test
        await c.send(ping=Ping(nonce=1))
        await c.recv_until(lambda f: f.HasField("pong"))


async def test_expired_token_without_refresh_ends_the_session_cleanly(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys, leeway_s=0.0) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token("erin", ttl_s=1))
        f = await c.recv_until(lambda f: f.HasField("error"), limit_s=5)
        assert f.error.code == ErrorCode.ERROR_CODE_AUTH_EXPIRED and f.error.fatal
        assert await expect_close(c) == 4003
