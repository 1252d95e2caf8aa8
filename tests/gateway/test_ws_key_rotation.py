"""Rotating the signing key over real sockets: old-key and new-key sessions side by side during
the overlap (none dropped, data flowing), the old key's sessions ended when it is removed, its
tokens refused after; reloads on a file change and on SIGHUP; a bad key file changes nothing."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import trio
from gw_support import (
    Client,
    FakeAggregator,
    Keys,
    expect_close,
    http_port,
    new_key,
    public_pem,
    running_gateway,
    server_of,
    ws_client,
)

import xypipe
from xypipe._gateway._tokens import mint
from xypipe.contracts import ErrorCode, GroupRef, Ping, RefreshToken, Subscribe


class KeyDir:
    """A key directory: private keys by kid, public halves as ``<kid>.pem``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.private: dict[str, object] = {}

    def add(self, kid: str) -> None:
        key = new_key()
        self.private[kid] = key
        tmp = self.path / f".{kid}.tmp"
        tmp.write_bytes(public_pem(key))
        tmp.rename(self.path / f"{kid}.pem")  # as an operator's deploy would: never half a file

    def remove(self, kid: str) -> None:
        (self.path / f"{kid}.pem").unlink()

    def token(self, kid: str, subject: str = "alice", ttl_s: float = 300) -> str:
        return mint(self.private[kid], subject=subject, allow=["xy.md.>"],  # type: ignore[arg-type]
                    now=time.time(), ttl_s=ttl_s, kid=kid)


async def _until(cond: Callable[[], bool], limit_s: float = 10) -> None:
    with trio.fail_after(limit_s):
        while not cond():  # noqa: ASYNC110 (a reload or a log line: nothing to await on)
            await trio.sleep(0.01)


def _kids(runner: xypipe.Runner) -> frozenset[str]:
    return server_of(runner).verifier.keys.kids


async def _alive(c: Client, nonce: int) -> None:
    await c.send(ping=Ping(nonce=nonce))
    await c.recv_until(lambda f: f.HasField("pong") and f.pong.nonce == nonce)


async def _subscribed(c: Client) -> None:
    await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
    await c.recv_until(lambda f: len(f.snapshots) > 0)


async def test_overlap_then_removal(nats_server, keys: Keys, aggregator: FakeAggregator,
                                    tmp_path: Path, json_logs) -> None:
    kd = KeyDir(tmp_path / "token-keys")
    kd.add("old")
    await aggregator.publish_deltas(1)
    await aggregator.publish_snapshots()
    async with running_gateway(nats_server.url, keys, admin=False, public_key=str(kd.path),
                               keys_reload_ms=20) as runner:
        port = http_port(runner)
        async with ws_client(port) as early, ws_client(port) as late_old, \
                ws_client(port) as fresh:
            assert (await early.hello(kd.token("old", "early"))).welcome.principal == "early"
            await _subscribed(early)
            # The new key is deployed beside the old one: the overlap begins.
            kd.add("new")
            await _until(lambda: _kids(runner) == {"old", "new"})
            assert (await fresh.hello(kd.token("new", "fresh"))).welcome.principal == "fresh"
            assert (await late_old.hello(kd.token("old", "late"))).welcome.principal == "late"
            await _subscribed(fresh)
            await _subscribed(late_old)
            # The early session refreshes onto the new key, as the identity provider now signs.
            await early.send(refresh=RefreshToken(token=kd.token("new", "early")))
            await early.recv_until(lambda f: f.HasField("welcome"))
            await aggregator.publish_deltas(5, ["fx"])
            for c in (early, late_old, fresh):  # continuous (the client checks every delta)
                await c.recv_until(lambda f, c=c: c.last[("fx", 0)][1] == aggregator.seq["fx"])
            assert not any(c.errors for c in (early, late_old, fresh))  # nobody dropped
            # The old key is removed: only the session still depending on it ends, at once.
            kd.remove("old")
            await _until(lambda: _kids(runner) == {"new"})
            code = await expect_close(late_old)
            assert code == 4000 + ErrorCode.ERROR_CODE_AUTH_EXPIRED
            assert "key 'old'" in late_old.errors[-1].message
            await aggregator.publish_deltas(3, ["fx"])
            for i, c in enumerate((early, fresh)):
                await c.recv_until(lambda f, c=c: c.last[("fx", 0)][1] == aggregator.seq["fx"])
                await _alive(c, 10 + i)
                assert not c.errors
        # After the removal an old-key token is refused, naming its kid.
        async with ws_client(port) as c:
            reply = await c.hello(kd.token("old", "mallory"))
            assert reply.error.code == ErrorCode.ERROR_CODE_AUTH_INVALID
            assert "kid 'old' names no loaded key" in reply.error.message
        m = runner.metrics
        assert m.sample("auth_failures_total", {"surface": "ws", "reason": "unknown_kid"}) == 1
        assert m.sample("auth_keys_loaded", {"surface": "ws"}) == 1
        assert m.sample("auth_key_reloads_total", {"surface": "ws", "result": "applied"}) == 2
    ended = json_logs.find(code="XY-AUTH-023")
    assert [line.get("sub") for line in ended] == ["late"]


async def test_sighup_reloads_and_a_bad_file_keeps_the_keys_in_force(
        nats_server, keys: Keys, tmp_path: Path, json_logs) -> None:
    kd = KeyDir(tmp_path / "token-keys")
    kd.add("k1")
    async with running_gateway(nats_server.url, keys, admin=False, public_key=str(kd.path),
                               keys_reload_ms=0) as runner:
        port = http_port(runner)
        async with ws_client(port) as c1:
            assert (await c1.hello(kd.token("k1", "one"))).HasField("welcome")
            kd.add("k2")
            (kd.path / "broken.pem").write_text("-----BEGIN PUBLIC KEY-----\ntruncated")
            os.kill(os.getpid(), signal.SIGHUP)
            await _until(lambda: bool(json_logs.find(code="XY-AUTH-020")))
            assert _kids(runner) == {"k1"}  # the whole new set refused, the old one in force
            line = json_logs.find(code="XY-AUTH-020")[0]
            assert str(kd.path / "broken.pem") in line["reason"] and line["trigger"] == "SIGHUP"
            await _alive(c1, 1)
            async with ws_client(port) as c2:
                reply = await c2.hello(kd.token("k2", "two"))
                assert "kid 'k2' names no loaded key" in reply.error.message
            (kd.path / "broken.pem").unlink()
            os.kill(os.getpid(), signal.SIGHUP)
            await _until(lambda: _kids(runner) == {"k1", "k2"})
            async with ws_client(port) as c3:
                assert (await c3.hello(kd.token("k2", "three"))).HasField("welcome")
            await _alive(c1, 2)
        m = runner.metrics
        assert m.sample("auth_key_reloads_total", {"surface": "ws", "result": "refused"}) == 1
        assert m.sample("auth_key_reloads_total", {"surface": "ws", "result": "applied"}) == 1


async def _admin_get(port: int, token: str) -> int:
    def call() -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/feature-flags")
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    return await trio.to_thread.run_sync(call)


async def test_the_admin_api_follows_the_same_key_directory(nats_server, keys: Keys,
                                                            tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "token-keys")
    kd.add("old")
    async with running_gateway(nats_server.url, keys, public_key=str(kd.path),
                               keys_reload_ms=20) as runner:
        port = http_port(runner)

        def admin(kid: str) -> str:
            return mint(kd.private[kid], subject="root", allow=[], now=time.time(),  # type: ignore[arg-type]
                        roles=["admin"], kid=kid)

        assert await _admin_get(port, admin("old")) == 200
        kd.add("new")
        await _until(lambda: runner.metrics.sample(
            "auth_keys_loaded", {"surface": "admin"}) == 2)
        assert await _admin_get(port, admin("new")) == 200
        assert await _admin_get(port, admin("old")) == 200
        kd.remove("old")
        await _until(lambda: runner.metrics.sample(
            "auth_keys_loaded", {"surface": "admin"}) == 1)
        assert await _admin_get(port, admin("old")) == 401
        assert await _admin_get(port, admin("new")) == 200
        assert runner.metrics.sample(
            "auth_failures_total", {"surface": "admin", "reason": "unknown_kid"}) == 1
