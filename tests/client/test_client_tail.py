"""``xypipe tail --ws``: the command line watching what a browser receives, as a real process
against a real gateway; and ``xypipe tail`` on NATS decoding through the contract decoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from gw_support import FakeAggregator, Keys, http_port, running_gateway

from xypipe.contracts import Delta

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]


async def xypipe(*args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process([sys.executable, "-m", "xypipe", *args], cwd=ROOT,
                                      capture_stdout=True, capture_stderr=True, check=False,
                                      env=env)


async def test_tail_ws_prints_the_snapshot_and_verified_deltas_and_a_clean_summary(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner, trio.open_nursery() as n:
        url = f"ws://127.0.0.1:{http_port(runner)}/ws"

        async def market() -> None:
            while True:
                await aggregator.publish_deltas(1, ["fx"])
                await trio.sleep(0.05)

        n.start_soon(market)
        done = await xypipe("tail", "--ws", url, "--token", keys.token("tail-user"), "fx",
                            "--verify", "--count", "4")
        n.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("connected ") and "principal=tail-user" in lines[0]
    assert "subscribed fx" in lines
    assert [ln.split()[0] for ln in lines if ln.startswith(("snapshot ", "delta "))] == [
        "snapshot", "delta", "delta", "delta"]
    assert all(ln.endswith("seq ok, checksums ok") for ln in lines if ln.startswith("delta "))
    report = json.loads(lines[-1])
    assert report["messages"] == 4 and report["failures"] == {}
    assert report["checksums_verified"] > 0 and report["checksum_mismatches"] == 0


async def test_tail_ws_verify_fails_on_a_bad_checksum(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner, trio.open_nursery() as n:
        url = f"ws://127.0.0.1:{http_port(runner)}/ws"

        async def market() -> None:
            while True:
                bad = Delta.FromString(aggregator.delta_bytes("fx"))
                bad.symbols[0].checksum ^= 1
                aggregator.nc.publish_nowait("xy.md.tick.fx", bad.SerializeToString())
                await aggregator.nc.flush()
                await trio.sleep(0.05)

        n.start_soon(market)
        done = await xypipe("tail", "--ws", url, "fx", "--verify", "--count", "3", "--json",
                            env={"XYPIPE_TOKEN": keys.token(), "PATH": "/usr/bin:/bin"})
        n.cancel_scope.cancel()
    assert done.returncode == 1, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    updates = [json.loads(ln) for ln in lines[:-1]]
    deltas = [u for u in updates if u["update"] == "DeltaApplied"]
    assert deltas and deltas[0]["checksum_mismatches"] == 1
    assert deltas[0]["symbols"][0]["venue"] == "XTST"
    assert {"update": "SnapshotRequested", "group": "fx", "reason": "checksum"} in updates
    assert json.loads(lines[-1])["failures"]["checksum_mismatch"] >= 1
    assert "XY-CLI-101" in done.stderr.decode()


async def test_tail_ws_says_what_is_missing_or_refused(nats_server, keys: Keys):
    no_groups = await xypipe("tail", "--ws", "ws://127.0.0.1:1/ws", "--token", "t")
    assert no_groups.returncode == 2 and b"name the groups" in no_groups.stderr
    no_token = await xypipe("tail", "--ws", "ws://127.0.0.1:1/ws", "fx",
                            env={"PATH": "/usr/bin:/bin"})
    assert no_token.returncode == 2 and b"XYPIPE_TOKEN" in no_token.stderr
    async with running_gateway(nats_server.url, keys) as runner:
        refused = await xypipe("tail", "--ws", f"ws://127.0.0.1:{http_port(runner)}/ws",
                               "--token", "not-a-jwt", "fx")
    assert refused.returncode == 1
    assert b"[XY-SDK-004]" in refused.stderr and b"4002 (AUTH_INVALID)" in refused.stderr


async def test_tail_on_nats_reports_an_undecodable_payload_with_its_code(
    nats_server, publisher
):
    async with trio.open_nursery() as n:
        async def noise() -> None:
            while True:
                publisher.publish_nowait("xy.md.tick.fx", b"\xff\xff\xff")
                await publisher.flush()
                await trio.sleep(0.05)

        n.start_soon(noise)
        done = await xypipe("tail", "xy.md.tick.>", "--url", nats_server.url, "--count", "2")
        n.cancel_scope.cancel()
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "[XY-CLI-100] subject xy.md.tick.fx: 3 bytes do not decode as xy.md.v1.Delta" in err
