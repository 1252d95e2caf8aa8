"""A real Prometheus scrapes a running xypipe process (AC 6, "demo observe").

The process runs the publisher, the aggregator and the gateway; a WebSocket client subscribes
so the gateway forwards something. Debian's ``prometheus`` (scripts/setup_prometheus.sh) runs on
a free port with a generated config scraping the process's /metrics, and the test asks
Prometheus's HTTP API — not the endpoint itself — until the target is up and the series the
spec names are there: ``xy_ws_messages_forwarded_total`` (> 0), ``ws_msgs_rate``,
``ticks_out_total`` (> 0), ``ws_active``, ``snapshots_out_total``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import xypipe
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, generate_ed25519_keypair, mint
from xypipe.contracts import ClientFrame, GroupRef, Hello, Ping, ServerFrame, Subscribe

pytestmark = pytest.mark.prometheus

PROMETHEUS = "prometheus"
DEADLINE_S = 60  # hang guard for the whole wait; the wait itself ends on the condition
POLL_S = 0.25  # between questions to another process (Prometheus), never an assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_config(nats_url: str, public_key: Path) -> xypipe.AppConfig:
    state = {"storage": "memory"}
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"port": 0},
        "pipelines": {
            "aggregator": {"stages": [
                {"use": "ingest", "storage": "memory", "start": "new", "state": state},
                {"use": "dedupe"}, {"use": "shard"},
                {"use": "conflate", "interval_ms": 33},
                {"use": "snapshot", "interval_ms": 500},
                {"use": "publish", "state": state},
            ]},
            "gateway": {"stages": [
                {"use": "nats_source", "subjects": ["xy.md.tick.>", "xy.md.snapshot.>"]},
                {"use": "gateway", "public_key": str(public_key), "allowed_origins": ["*"],
                 "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE},
            ]},
            "publisher": {"stages": [{"use": "publisher", "rate": 300.0, "symbols": 30}]},
        },
    }, "prometheus-test.toml")


@pytest.fixture
async def running(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[xypipe.Runner, Any]]:
    private, public = generate_ed25519_keypair()
    (tmp_path / "dev.pub").write_bytes(public)
    key = load_pem_private_key(private, password=None)
    runner = xypipe.Runner(stack_config(nats_url, tmp_path / "dev.pub"))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        with trio.fail_after(20):
            for p in runner.pipelines:
                for s in p.stages:
                    await s.ctx.wait_ready()
        yield runner, key
        runner.stop()


def prometheus_config(tmp: Path, target_port: int) -> Path:
    cfg = tmp / "prometheus.yml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                   "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "xypipe", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    return cfg


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())["data"]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which(PROMETHEUS)
    if binary is None:
        raise RuntimeError("prometheus not found: run scripts/setup_prometheus.sh (Debian's "
                           "prometheus package)")
    return binary


async def subscribe_and_read(port: int, token: str, group: str) -> int:
    """A browser stand-in: hello, subscribe, read until a frame carries deltas."""
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send_message(ClientFrame(id=1, hello=Hello(token=token, protocol_version=1))
                              .SerializeToString())
        await ws.send_message(ClientFrame(id=2, subscribe=Subscribe(
            groups=[GroupRef(group=group)])).SerializeToString())
        deltas = 0
        async with trio.open_nursery() as nursery:

            async def heartbeat() -> None:  # as a real client does, however long we wait
                while True:
                    await trio.sleep(2)
                    await ws.send_message(ClientFrame(ping=Ping(ts_us=1)).SerializeToString())

            nursery.start_soon(heartbeat)
            while deltas == 0:
                frame = ServerFrame.FromString(await ws.get_message())
                assert not frame.HasField("error") or not frame.error.fatal, frame.error
                deltas += len(frame.deltas)
            nursery.cancel_scope.cancel()
        return deltas


async def test_prometheus_scrapes_the_spec_metrics_from_a_running_process(
    running: tuple[xypipe.Runner, Any], prometheus_binary: str, tmp_path: Path
) -> None:
    runner, key = running
    http_port = int(runner.http.port)
    token = mint(key, subject="prom-test", allow=["xy.md.>"], now=time.time(), ttl_s=120)
    with trio.fail_after(DEADLINE_S):
        await subscribe_and_read(http_port, token, "equities")

    prom_port = free_port()
    cfg = prometheus_config(tmp_path, http_port)
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(_run_prometheus, prometheus_binary, cfg, prom_port, tmp_path)
        try:
            with trio.fail_after(DEADLINE_S):
                targets = await _until(prom_port, _target_up)
                series = await _until(prom_port, _spec_series)
        finally:
            proc.terminate()
    print("prometheus target:", targets)
    print("prometheus series:", series)
    assert series["xy_ws_messages_forwarded_total"] > 0
    assert series["ticks_out_total"] > 0
    assert "ws_msgs_rate" in series
    assert "ws_active" in series
    assert "snapshots_out_total" in series


async def _run_prometheus(
    binary: str, cfg: Path, port: int, tmp: Path,
    *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    with (tmp / "prometheus.log").open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log)
        task_status.started(proc)
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _until(port: int, check: Any) -> Any:
    while True:
        found = await trio.to_thread.run_sync(check, port)
        if found:
            return found
        await trio.sleep(POLL_S)


def _target_up(port: int) -> dict[str, Any] | None:
    data = api(port, "targets")
    for t in (data or {}).get("activeTargets", []):
        if t.get("health") == "up":
            return {"url": t["scrapeUrl"], "health": t["health"]}
    return None


SPEC_SERIES = ("xy_ws_messages_forwarded_total", "ws_msgs_rate", "ticks_out_total",
               "ws_active", "snapshots_out_total")


def _spec_series(port: int) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for name in SPEC_SERIES:
        data = api(port, "query", query=name)
        if not data or not data.get("result"):
            return None
        out[name] = max(float(r["value"][1]) for r in data["result"])
    if out["xy_ws_messages_forwarded_total"] <= 0 or out["ticks_out_total"] <= 0:
        return None
    return out
