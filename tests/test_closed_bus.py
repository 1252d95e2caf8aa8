"""The demo is not an open bus: its embedded NATS admits only the role users it generated.

The demo runs as a user runs it (``xypipe run`` on a copy of configs/demo.toml, free ports, its
own data dir). Then, from outside: a client without credentials is refused at connect; one with
the publisher's key (read from the data dir, as ``xypipe publish`` does) cannot publish
``xy.md.*`` — the server refuses it, the client logs ``XY-NATS-008`` and counts it — while the
same subject with the aggregator's key flows, and the demo's own market keeps flowing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_demo import ROOT, demo_copy, http_get, nats_servers_for, wait_metrics

import xypipe.client
from xypipe import load_config
from xypipe._errors import NatsConnectionError
from xypipe._gateway._tokens import load_private_key, mint
from xypipe._nats import connect
from xypipe._nats_keys import seed_file_of
from xypipe._nats_roles import inbox_prefix
from xypipe.client import DeltaApplied, ErrorReceived, SnapshotApplied

pytestmark = pytest.mark.nats


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process([sys.executable, "-m", "xypipe", *args], cwd=ROOT,
                                      capture_stdout=True, capture_stderr=True, check=False)


def _dev_token(**kw: Any) -> str:
    key = load_private_key(ROOT / "configs" / "dev-keys" / "gateway-dev.key.pem")
    return mint(key, now=time.time(), **kw)


async def browser_sees_equities(port: int) -> None:
    """A client of the gateway (:mod:`xypipe.client`) subscribed to one group gets its
    snapshot, then deltas, every sequence and checksum checked. Right after a cold start the
    group may have no snapshot yet (``SNAPSHOT_UNAVAILABLE``): the data starts with the first."""
    token = _dev_token(subject="closed-bus-test", allow=["xy.md.*.equities",
                                                         "xy.md.*.equities.>"])
    async with xypipe.client.connect(f"ws://127.0.0.1:{port}/ws", token=token,
                                     client_name="closed-bus-test") as c:
        await c.subscribe("equities")
        snapshots = 0
        with trio.fail_after(30):
            async for u in c:
                if isinstance(u, ErrorReceived):
                    assert u.name == "ERROR_CODE_SNAPSHOT_UNAVAILABLE", u
                snapshots += isinstance(u, SnapshotApplied)
                if snapshots and isinstance(u, DeltaApplied):
                    break
        stats = c.statistics()
        assert stats.checksum_mismatches == 0 and stats.checksums_verified > 0
        assert not {v for v in stats.skipped if v != "held"}, stats.skipped


def put_flag(port: int) -> int:
    token = _dev_token(subject="closed-bus-admin", allow=[], roles=["admin"])
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/feature-flags", method="PUT",
        data=json.dumps({"name": "gateway.disabled_groups", "value": ["fx"]}).encode(),
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


async def gateway_received(port: int) -> float:
    """Market data messages the demo's gateway process has received from NATS."""
    _, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "nats_source_msgs_total")


async def test_only_the_aggregator_may_publish_market_data_on_the_demo_bus(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = demo_copy(tmp_path)
    cfg = load_config(config_path)
    assert cfg.nats is not None
    ports = {name: cfg.http_for(name).port for name in cfg.process_names()}
    url = f"nats://127.0.0.1:{cfg.nats.embedded.port}"
    data = tmp_path / "nats"
    log_path = tmp_path / "demo.log"
    log_file = log_path.open("wb")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # The demo's market flows end to end, every process signed in as its role.
        await wait_metrics(ports["aggregator"], ("ticks_out_total",), 60)
        with trio.fail_after(60):
            while await gateway_received(ports["gateway"]) == 0:  # noqa: ASYNC110
                await trio.sleep(0.2)  # another process's counter: a state to poll

        # ... to a browser: the gateway reads snapshots and serves deltas under its role ...
        await browser_sees_equities(ports["gateway"])
        # Feature flags are written by the admin process (the gateway only reads them).
        status = await trio.to_thread.run_sync(put_flag, ports["admin"])
        assert status == 200

        # The keys are kept with the data, private to their owner.
        for role in ("aggregator", "gateway", "adapter", "admin", "reader", "basic",
                     "superuser"):
            assert stat.S_IMODE(seed_file_of(data, role).stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "auth").stat().st_mode) == 0o700

        with pytest.raises(NatsConnectionError, match=r"[Aa]uthorization"):
            async with connect(url, connect_timeout=1.0):
                pass

        caplog.set_level(logging.WARNING, logger="xypipe")

        def as_role(role: str):  # type: ignore[no-untyped-def]
            return connect(url, name=f"test-{role}", nkeys_seed=str(seed_file_of(data, role)),
                           inbox_prefix=inbox_prefix(role))

        async with as_role("reader") as reader, as_role("adapter") as publisher, \
                as_role("gateway") as gateway, as_role("aggregator") as aggregator, \
                reader.subscribe("xy.md.x") as seen:
            await reader.flush()
            events = publisher.events()
            await publisher.publish("xy.md.x", b"forged")
            await publisher.flush()
            with trio.fail_after(5):
                async for event in events:
                    if event.kind == "error":
                        break
            assert event.detail == 'Permissions Violation for Publish to "xy.md.x"'
            await gateway.publish("xy.md.x", b"forged by the gateway")
            await gateway.flush()
            # The aggregator's publish is the barrier: the server handles each connection's
            # messages in order, so anything forged before it would have arrived first.
            await aggregator.publish("xy.md.x", b"real")
            await aggregator.flush()
            with trio.fail_after(5):
                batch = await seen.receive()
            assert [m.data for m in batch] == [b"real"]
            assert publisher.statistics().permission_denied == 1
            with trio.fail_after(5):
                while gateway.statistics().permission_denied < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # the server's -ERR arrives on its own
            assert aggregator.statistics().permission_denied == 0
            # A publisher cannot read the market either, nor another role's replies.
            sub_events = publisher.events()
            async with publisher.subscribe("_INBOX.gateway.>"):
                await publisher.flush()
                with trio.fail_after(5):
                    async for event in sub_events:
                        if event.kind == "error":
                            break
            assert event.detail == 'Permissions Violation for Subscription to "_INBOX.gateway.>"'
            # The gateway reads the feature flags; writing one is the admin process's job.
            flag_events = gateway.events()
            await gateway.publish("$KV.xy_feature_flags.gateway.force_level", b"forged")
            await gateway.flush()
            with trio.fail_after(5):
                async for event in flag_events:
                    if event.kind == "error":
                        break
            assert event.detail == ('Permissions Violation for Publish to '
                                    '"$KV.xy_feature_flags.gateway.force_level"')
        refused = [getattr(r, "xy_fields", {}) for r in caplog.records]
        assert len([f for f in refused if f.get("code") == "XY-NATS-008"]) == 4

        # The command line tools sign in with the keys kept in the data dir.
        tail = await cli("tail", "xy.md.>", "--url", url, "--count", "5",
                         "--nkey", str(seed_file_of(data, "reader")))
        assert tail.returncode == 0, tail.stderr
        assert tail.stdout.decode().count("xy.md.") == 5
        publish = await cli("publish", "--url", url, "--count", "50", "--rate", "1000",
                            "--nkey", str(seed_file_of(data, "adapter")))
        assert publish.returncode == 0, publish.stderr
        assert json.loads(publish.stdout)["ticks"] == 50
        anonymous = await cli("publish", "--url", url, "--count", "1")
        assert anonymous.returncode == 1
        assert b"Authorization Violation" in anonymous.stderr

        # The demo is untouched by all of this: it still flows, and stops cleanly.
        await wait_metrics(ports["aggregator"], ("ticks_out_total",), 10)
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await proc.wait() == 0
        assert nats_servers_for(data) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log_file.close()
    # No process of the demo ever acted outside its role.
    demo_log = log_path.read_text()
    signed_in = [json.loads(line) for line in demo_log.splitlines()
                 if '"signing in to NATS"' in line]
    assert {(s["role"], s["method"]) for s in signed_in} == {
        ("aggregator", "nkey"), ("gateway", "nkey"), ("adapter", "nkey"), ("admin", "nkey")}
    assert "XY-NATS-008" not in demo_log and "ermissions violation" not in demo_log
    # The demo says once that its bus runs without TLS.
    assert demo_log.count('"XY-SEC-023"') == 1
