"""The whole pipeline in operator mode, from ``xypipe creds init`` output alone.

``configs/operator.toml`` (prod profile) run by ``xypipe run`` against a real nats-server
started from the chain's own ``nats-server.conf`` (TLS only, client certificates required):
the adapter, the aggregator, the gateway and the admin each in a process of its own, each
signed in as its role with its own user JWT and client certificate. A WebSocket client checks
every sequence and checksum it receives; an admin changes a flag through the admin process and
the gateway applies it. The user JWTs live 30 s and a rotation job (``xypipe creds rotate``)
re-issues them every 8 s: the tree outlives its first JWTs without a restart, every process
having signed in again with its rotated file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._gateway._tokens import load_private_key, mint
from xypipe._md.client import MarketView
from xypipe.contracts import ClientFrame, GroupRef, Hello, Ping, ServerFrame, Subscribe

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("adapter", "aggregator", "gateway", "admin")
ORIGIN = "http://localhost:5174"
GROUPS = ("equities", "fx")
TTL_S = 30
ROTATE_EVERY_S = 8.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def xypipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xypipe", *args], cwd=ROOT, text=True,
                          capture_output=True, check=False, timeout=120)


def operator_copy(tmp_path: Path, chain: Path, nats_port: int) -> Path:
    """configs/operator.toml with free ports, this test's chain and server."""
    text = (ROOT / "configs" / "operator.toml").read_text()
    text = re.sub(r"\bport(\s*=\s*)\d+", lambda m: f"port{m.group(1)}{free_port()}", text)
    text = text.replace('"var/nats-chain', f'"{chain}')
    text = text.replace('"tls://localhost:4222"', f'"tls://localhost:{nats_port}"')
    text = text.replace("creds_poll_ms = 1000", "creds_poll_ms = 200")
    path = tmp_path / "operator.toml"
    path.write_text(text)
    return path


def http(port: int, path: str, *, method: str = "GET", token: str | None = None,
         body: object = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def samples(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    _, text = http(port, "/metrics")
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


async def until(what: str, check, limit_s: float = 90):  # type: ignore[no-untyped-def]
    """Poll another process's state (``check`` runs in a thread) until it is truthy."""
    with trio.fail_after(limit_s):
        while not (found := await trio.to_thread.run_sync(check)):  # noqa: ASYNC110
            await trio.sleep(0.25)  # another process: a state to poll
    return found


class WsClient:
    """A browser's view, in Python: every snapshot and delta checked by the sequence rules
    and the checksums (:class:`MarketView`, the rules the browser worker shares)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.view = MarketView()
        self.levels: list[int] = []
        self.errors: list[str] = []
        self._changed = trio.Event()

    async def until(self, done) -> None:  # type: ignore[no-untyped-def]
        """Until ``done()`` holds, judged after every frame."""
        while not done():
            await self._changed.wait()

    async def run(self, token: str) -> None:
        await self.ws.send_message(ClientFrame(id=1, hello=Hello(
            token=token, protocol_version=1, client="operator-e2e")).SerializeToString())
        await self.ws.send_message(ClientFrame(id=2, subscribe=Subscribe(
            groups=[GroupRef(group=g) for g in GROUPS])).SerializeToString())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping)
            while True:
                frame = ServerFrame.FromString(await self.ws.get_message())
                if frame.HasField("error"):
                    self.errors.append(frame.error.message)
                if frame.HasField("degrade"):
                    self.levels.append(frame.degrade.level)
                for snap in frame.snapshots:
                    self.view.apply_snapshot(snap)
                for delta in frame.deltas:
                    self.view.apply_delta(delta)
                self._changed.set()
                self._changed = trio.Event()

    async def _ping(self) -> None:
        while True:
            await trio.sleep(2)
            await self.ws.send_message(ClientFrame(ping=Ping()).SerializeToString())


@asynccontextmanager
async def ws_client(port: int) -> AsyncIterator[WsClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "localhost", "/ws",
                extra_headers=[(b"origin", ORIGIN.encode())], max_message_size=16 << 20)
            try:
                yield WsClient(ws)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


class Rotations:
    """What a rotation job (cron, a systemd timer) does: ``xypipe creds rotate`` every few
    seconds."""

    def __init__(self, chain: Path) -> None:
        self.chain = chain
        self.done = 0
        self._changed = trio.Event()

    async def run(self) -> None:
        while True:
            await trio.sleep(ROTATE_EVERY_S)  # the job's period
            done = await trio.to_thread.run_sync(
                lambda: xypipe("creds", "rotate", *ROLES, "--dir", str(self.chain)))
            assert done.returncode == 0, done.stderr
            self.done += 1
            self._changed.set()
            self._changed = trio.Event()

    async def at_least(self, n: int) -> None:
        while self.done < n:
            await self._changed.wait()


async def test_the_pipeline_runs_from_creds_init_alone_and_outlives_its_first_jwts(
    tmp_path: Path,
) -> None:
    chain = tmp_path / "chain"
    init = xypipe("creds", "init", str(chain), "--config", "configs/operator.toml",
                  "--ttl", str(TTL_S))
    assert init.returncode == 0, init.stderr
    first_expiry = time.time() + TTL_S
    server: EmbeddedNats
    async with embedded_nats(port=0, jetstream=False,
                             config_file=chain / "nats-server.conf") as server:
        config = operator_copy(tmp_path, chain, server.port)
        check = xypipe("check", str(config))
        assert check.returncode == 0, check.stderr  # the prod profile has nothing to refuse
        from xypipe import load_config

        cfg = load_config(config)
        ports = {name: cfg.http_for(name).port for name in ROLES}
        log_path = tmp_path / "tree.log"
        rotations = Rotations(chain)
        with log_path.open("wb") as log:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "xypipe", "run", str(config)], cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(rotations.run)
                    await _run_and_check(tmp_path, chain, ports, cfg.http.port, first_expiry,
                                         rotations)
                    nursery.cancel_scope.cancel()
                proc.send_signal(signal.SIGINT)
                with trio.fail_after(20):
                    assert await proc.wait() == 0
            except BaseException:
                # What the tree said that went wrong, shown with the failure.
                for line in log_path.read_text().splitlines():
                    if '"level":"warning"' in line or '"level":"error"' in line:
                        print(line[:400])
                raise
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    # Each process signed in from the chain as its own role, with its client certificate.
    signed = {(d["role"], d["method"], Path(d["client_cert"]).name) for d in lines
              if d.get("msg") == "signing in to NATS"}
    assert signed == {(role, "chain", f"{role}.pem") for role in ROLES}
    # ... followed its rotated .creds file without a restart, and was never refused.
    picked_up = {Path(d["file"]).stem for d in lines if d.get("code") == "XY-SEC-014"}
    assert picked_up == set(ROLES)
    assert not [d for d in lines if d.get("code") in (
        "XY-SEC-017", "XY-SEC-020", "XY-SEC-021", "XY-SEC-022", "XY-NATS-008")]


async def _run_and_check(tmp_path: Path, chain: Path, ports: dict[str, int], supervisor: int,
                         first_expiry: float, rotations: Rotations) -> None:
    await until("the gateway ready", lambda: http(ports["gateway"], "/healthz")[0] == 200)
    key = load_private_key(chain / "tokens" / "gateway.key.pem")
    token = mint(key, subject="alice", allow=["xy.md.>"], now=time.time(), ttl_s=600)
    admin = mint(key, subject="ops", allow=[], roles=["admin"], now=time.time(), ttl_s=600)
    async with ws_client(ports["gateway"]) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.run, token)
        view = client.view
        with trio.fail_after(60):
            await client.until(lambda: view.stats.deltas >= 20 and all(
                g in view.groups and view.groups[g].synced for g in GROUPS))
        # The admin process writes a flag; the gateway (which only reads flags) applies it.
        status, body = await trio.to_thread.run_sync(lambda: http(
            ports["admin"], "/admin/feature-flags", method="PUT", token=admin,
            body={"name": "gateway.force_level", "value": 1}))
        assert status == 200, body
        with trio.fail_after(30):
            await client.until(lambda: 1 in client.levels)
        # Past the first user JWTs' expiry, after at least two rotations, data still flows.
        await trio.sleep(max(0.0, first_expiry + 3 - time.time()))  # the JWTs' own deadline
        with trio.fail_after(60):
            await rotations.at_least(2)
        before = view.stats.deltas
        with trio.fail_after(30):
            await client.until(lambda: view.stats.deltas >= before + 20)
        nursery.cancel_scope.cancel()
    stats = view.stats
    assert stats.verified > 0 and stats.checksum_mismatches == 0, stats
    assert stats.gaps == 0 and stats.repeats == 0 and not stats.rejected, stats.problems
    assert client.errors == []
    # No process restarted, none was refused anything.
    restarts = await trio.to_thread.run_sync(samples, supervisor, "process_restarts_total")
    assert restarts and all(v == 0 for v in restarts.values()), restarts
    for role in ROLES:
        refused = await trio.to_thread.run_sync(samples, ports[role], "nats_refusals_total")
        assert refused and all(v == 0 for v in refused.values()), (role, refused)
