"""Repeated authentication failures from one address lock it out for a while: real sockets, a
real nats-server, the gateway's own metrics and audit lines."""

from __future__ import annotations

import trio
from gw_support import Keys, claims, expect_close, forge, http_port, running_gateway, ws_client
from test_ws_admin import http

from xypipe.contracts import ErrorCode

THROTTLE = {"max_failures": 3, "window_s": 60, "lockout_s": 0.5, "max_lockout_s": 10}


async def test_bad_hellos_lock_the_address_out_then_a_good_client_gets_in(
    nats_server, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys, auth_throttle=THROTTLE) as runner:
        port = http_port(runner)
        bad = [forge({"alg": "none", "typ": "JWT"}, claims()),
               keys.token(ttl_s=-60),  # expired
               "not-a-jwt"]
        for token in bad:
            async with ws_client(port) as c:
                await c.hello(token)
                assert await expect_close(c) in (4002, 4003)

        # Locked: even a valid token is refused, unchecked, with the documented code.
        async with ws_client(port) as c:
            f = await c.hello(keys.token())
            assert f.error.code == ErrorCode.ERROR_CODE_RATE_LIMITED and f.error.fatal
            assert "authentication throttled" in f.error.message
            assert "127.0.0.1" in f.error.message and "retry in 1 s" in f.error.message
            assert await expect_close(c) == 4000 + ErrorCode.ERROR_CODE_RATE_LIMITED

        m = runner.metrics
        assert m.sample("auth_failures_total", {"surface": "ws", "reason": "invalid"}) == 2
        assert m.sample("auth_failures_total", {"surface": "ws", "reason": "expired"}) == 1
        assert m.sample("auth_lockouts_total", {"surface": "ws"}) == 1
        assert m.sample("auth_throttled_total", {"surface": "ws"}) == 1

        # The lockout is half a second: once it has passed, the same address gets in.
        await trio.sleep(THROTTLE["lockout_s"])
        async with ws_client(port) as c:
            f = await c.hello(keys.token())
            assert f.HasField("welcome") and f.welcome.principal == "alice"

    locks = json_logs.find(audit=True, action="auth.throttle")
    assert len(locks) == 1  # one summary line, not one per attempt
    lock = locks[0]
    assert lock["code"] == "XY-AUTH-004" and lock["address"] == "127.0.0.1"
    assert lock["surface"] == "ws" and lock["failures"] == 3 and lock["lockout_s"] == 0.5
    assert lock["reasons"] == {"invalid": 2, "expired": 1}
    # The refused attempt was counted, not logged.
    assert not [d for d in json_logs.lines() if "throttled" in str(d.get("detail", ""))]


async def test_bad_admin_tokens_lock_the_address_out_with_429_and_retry_after(
    nats_server, keys: Keys, json_logs
):
    async with running_gateway(nats_server.url, keys, auth_throttle=THROTTLE) as runner:
        port = http_port(runner)
        path = "/admin/feature-flags"
        assert (await http(port, "GET", path))[0] == 401
        assert (await http(port, "GET", path, "forged"))[0] == 401
        assert (await http(port, "GET", path, keys.token("root", roles=["admin"], ttl_s=-60))
                )[0] == 401
        for _ in range(2):
            status, body = await http(port, "GET", path, keys.token("root", roles=["admin"]))
            assert status == 429 and body["code"] == "XY-AUTH-005"
            assert body["retry_after_s"] == 1 and "too many failed attempts" in body["error"]
        m = runner.metrics
        assert m.sample("auth_failures_total", {"surface": "admin", "reason": "missing"}) == 1
        assert m.sample("auth_throttled_total", {"surface": "admin"}) == 2
        await trio.sleep(THROTTLE["lockout_s"])
        assert (await http(port, "GET", path, keys.token("root", roles=["admin"])))[0] == 200
    locks = json_logs.find(audit=True, action="auth.throttle")
    assert [(x["surface"], x["failures"], x["reasons"]) for x in locks] == [
        ("admin", 3, {"missing": 1, "invalid": 1, "expired": 1})]
