"""What goes wrong is raised as the client's own typed error, with the close code or HTTP status
the gateway gave: refused tokens, refused origins, wrong paths, nobody listening, a token that
expires mid-session — and a token callable refreshes the session before it does."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from gw_support import FakeAggregator, Keys, http_port, running_gateway, updates_until

import xypipe
import xypipe.client
from xypipe.client import (
    ClientClosed,
    ClientError,
    Connected,
    GatewayAuthError,
    GatewayUnreachable,
    HandshakeRejected,
    SnapshotApplied,
    TokenRefreshed,
    TokenUnavailable,
)

pytestmark = pytest.mark.nats


def ws_url(port: int, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{port}{path}"


async def test_a_token_signed_with_another_key_is_refused_with_4002(
    nats_server, keys: Keys, tmp_path: Path
):
    (tmp_path / "other").mkdir()
    stranger = Keys(tmp_path / "other")
    async with running_gateway(nats_server.url, keys) as runner:
        with pytest.raises(GatewayAuthError) as caught:
            async with xypipe.client.connect(ws_url(http_port(runner)),
                                             token=stranger.token()):
                pytest.fail("connected with a forged token")
    err = caught.value
    assert isinstance(err, xypipe.AuthError) and isinstance(err, ClientError)
    assert err.close_code == 4002 and err.code == "XY-SDK-004"
    assert "4002 (AUTH_INVALID)" in str(err) and err.error  # the gateway's own words too


async def test_an_expired_token_is_refused_with_4003(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys) as runner:
        with pytest.raises(GatewayAuthError) as caught:
            async with xypipe.client.connect(
                    ws_url(http_port(runner)),
                    token=keys.token(now=time.time() - 3600, ttl_s=60)):
                pytest.fail("connected with an expired token")
    assert caught.value.close_code == 4003
    assert "expired" in caught.value.error


async def test_a_token_expiring_mid_session_ends_the_iteration_with_the_close(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys, leeway_s=0) as runner:
        with pytest.raises(GatewayAuthError) as caught:
            async with xypipe.client.connect(ws_url(http_port(runner)),
                                             token=keys.token(ttl_s=1)) as c:
                await c.subscribe("fx")
                with trio.fail_after(10):
                    async for _ in c:
                        pass
        assert caught.value.close_code == 4003
        with pytest.raises(GatewayAuthError):
            await c.subscribe("rates")  # the client stays ended, with its error


async def test_a_token_callable_refreshes_the_session_before_it_expires(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    minted = []

    async def fresh_token() -> str:
        minted.append(time.time())
        return keys.token(ttl_s=2)

    async with running_gateway(nats_server.url, keys, leeway_s=0) as runner, \
            xypipe.client.connect(ws_url(http_port(runner)), token=fresh_token) as c:
        await c.subscribe("fx")
        await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        for _ in range(2):  # each refresh pushes the expiry on: the session outlives 2 tokens
            refreshed = await updates_until(c, lambda u: isinstance(u, TokenRefreshed))
            assert refreshed[-1].token_expires_us > time.time() * 1e6  # type: ignore[union-attr]
        assert c.connected and c.statistics().connects == 1 and len(minted) == 3


async def test_a_token_callable_that_fails_is_reported_as_such(nats_server, keys: Keys):
    async def broken() -> str:
        raise OSError("token service down")

    async with running_gateway(nats_server.url, keys) as runner:
        with pytest.raises(TokenUnavailable, match="OSError: token service down"):
            async with xypipe.client.connect(ws_url(http_port(runner)), token=broken):
                pytest.fail("connected without a token")


async def test_an_origin_the_gateway_does_not_allow_is_refused_with_403(
    nats_server, keys: Keys
):
    async with running_gateway(nats_server.url, keys,
                               allowed_origins=["https://app.example"]) as runner:
        url = ws_url(http_port(runner))
        with pytest.raises(HandshakeRejected) as caught:
            async with xypipe.client.connect(url, token=keys.token(),
                                             origin="https://evil.example"):
                pytest.fail("connected from a refused origin")
        assert caught.value.status == 403 and caught.value.code == "XY-SDK-003"
        async with xypipe.client.connect(url, token=keys.token(),
                                         origin="https://app.example") as c:
            assert c.connected


async def test_a_wrong_path_is_refused_with_404(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys) as runner:
        with pytest.raises(HandshakeRejected) as caught:
            async with xypipe.client.connect(ws_url(http_port(runner), "/nope"),
                                             token=keys.token()):
                pytest.fail("connected to a path that is not the WebSocket's")
    assert caught.value.status == 404


async def test_nobody_listening_is_unreachable() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(GatewayUnreachable) as caught:
        async with xypipe.client.connect(ws_url(port), token="t"):
            pytest.fail("connected to a closed port")
    assert caught.value.url == ws_url(port) and "cannot connect" in str(caught.value)


async def test_misuse_is_refused_before_any_connection() -> None:
    import ssl

    with pytest.raises(ClientError, match="ws:// or wss://"):
        async with xypipe.client.connect("http://127.0.0.1:1/ws", token="t"):
            pass
    with pytest.raises(ClientError, match="ssl_context was given for a ws:// URL"):
        async with xypipe.client.connect("ws://127.0.0.1:1/ws", token="t",
                                         ssl_context=ssl.create_default_context()):
            pass


async def test_the_client_cannot_be_used_after_its_block(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys) as runner:
        async with xypipe.client.connect(ws_url(http_port(runner)), token=keys.token()) as c:
            pass
        with pytest.raises(ClientClosed):
            await c.subscribe("fx")
        # What was not read yet can still be, then the iteration ends without an error.
        assert [type(u) for u in [u async for u in c]] == [Connected]
        with trio.fail_after(10):  # closed politely: the gateway lets the connection go
            while runner.metrics.sample("ws_active") != 0:  # noqa: ASYNC110 (a metric, no event)
                await trio.sleep(0.01)
