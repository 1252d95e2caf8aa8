"""Mixed contract versions, live, in the browser: a newer producer (``xy.md.vnext``, fields
appended to SymbolState, Delta and Snapshot; its own process) through the current gateway to
the current SharedWorker in Debian's Chromium. The worker's protobuf-es decoder keeps the
unknown fields aside and counts them (``counters.unknownFields``); every sequence continues and
every checksum verifies. The Python side of the same check: tests/mixed/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from browser_stack import (
    Service,
    Windows,
    free_port,
    gateway_config,
    hub_status,
    sample,
    scrape,
    ui_config,
    ui_port,
    wait_until,
    with_browser,
)

from xypipe._embedded import EmbeddedNats
from xypipe._gateway._tokens import generate_ed25519_keypair

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mixed"))
from proto_versions import generate

pytestmark = pytest.mark.browser

PUBLISHER = Path(__file__).resolve().parent.parent / "mixed" / "md_publisher.py"
DELTAS = 12


async def _publish(nats_url: str, py: Path, *, first: int, count: int,
                   snapshot: bool = False) -> None:
    cmd = [sys.executable, str(PUBLISHER), nats_url, str(py), "vnext", "fx",
           "--first", str(first), "--count", str(count)]
    with trio.fail_after(60):
        await trio.run_process(cmd + (["--snapshot"] if snapshot else []))


def _watch(browser: Any, url: str, publish: Any) -> dict[str, Any]:
    w = Windows(browser)
    page = w.open(url)

    def counters() -> dict[str, int]:
        return dict(hub_status(page).get("counters") or {})

    wait_until(page, lambda: counters().get("snapshots", 0) >= 1, 30, "the snapshot of fx")
    trio.from_thread.run(publish)
    wait_until(page, lambda: counters().get("deltas", 0) >= DELTAS, 30,
               f"{DELTAS} deltas of fx")
    return {"counters": counters(), "problems": list(w.problems)}


async def test_the_worker_counts_a_newer_producers_fields_and_verifies_every_checksum(
        nats_server: EmbeddedNats, tmp_path: Path) -> None:
    py = generate(tmp_path / "proto-versions")
    private, public = generate_ed25519_keypair()
    (tmp_path / "dev.key").write_bytes(private)
    (tmp_path / "dev.pub").write_bytes(public)
    gw_port = free_port()
    gateway = Service("gateway", lambda: gateway_config(nats_server.url, gw_port,
                                                        tmp_path / "dev.pub"))
    ui = Service("ui", lambda: ui_config(gw_port, tmp_path / "dev.key", ["fx"], 16))
    await _publish(nats_server.url, py, first=1, count=0, snapshot=True)
    async with trio.open_nursery() as nursery:
        await gateway.start(nursery)
        ui_runner = await ui.start(nursery)
        url = f"http://127.0.0.1:{ui_port(ui_runner)}/"

        async def publish() -> None:
            await _publish(nats_server.url, py, first=1, count=DELTAS)

        try:
            out = await trio.to_thread.run_sync(with_browser, _watch, url, publish)
            m = await trio.to_thread.run_sync(scrape, f"http://127.0.0.1:{gw_port}/metrics")
        finally:
            await ui.stop()
            await gateway.stop()
    c = out["counters"]
    print(f"\nmixed versions in the browser: {c}")
    assert c["deltas"] == DELTAS and c["gaps"] == 0 and c["rejected"] == 0
    assert c["checksumMismatches"] == 0 and c["checksumsVerified"] == 3 * DELTAS  # each entry
    # Every snapshot/delta and every entry of them carries one unknown field.
    assert c["unknownFields"] == (1 + 3) * (1 + DELTAS)
    assert c["badFrames"] == 0 and c["errors"] == 0
    # The gateway's own count is checked in tests/mixed (one registry per process there; here
    # the ui_server's runner shares this process).
    assert sample(m, "xy_ws_messages_forwarded_total") == 1 + DELTAS
    assert not [p for p in out["problems"] if "XY-" in p], out["problems"]
