"""A draining gateway worker moves the browser: GoAway → the SharedWorker reconnects at once and
resumes on the other worker, bridged from its history (no snapshot).

Two in-process gateway workers share the port (SO_REUSEPORT, as ``workers = 2`` does); the
browser's one socket lands on either. The worker holding it is asked to drain: the hub gets its
GoAway, closes, reconnects to its configured URL — the kernel now hands that to the other worker
— and resumes every stream, and every window receives every group again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from browser_stack import (
    Service,
    Stack,
    Windows,
    by_group,
    hub_status,
    running_stack,
    wait_for_messages,
    wait_until,
    with_browser,
)

from xypipe._worker import WorkerIdentity

pytestmark = pytest.mark.browser


def _value(runner: Any, name: str, **labels: str) -> float:
    # (The `worker` label is added when /metrics is rendered, not in the registry.)
    return runner.metrics.registry.get_sample_value(name, labels) or 0.0


def drain_holder(browser: Any, stack: Stack, other: Service) -> dict[str, Any]:
    w = Windows(browser)
    for _ in range(2):
        w.open(stack.page_url)
    wait_for_messages(w, stack.groups)
    page = w.pages[0]
    runners = {0: stack.gateway.runner, 1: other.runner}
    holder = next(i for i, r in runners.items() if _value(r, "ws_active") == 1)
    mover = runners[holder]
    survivor = runners[1 - holder]
    seen = [by_group(p) for p in w.pages]
    trio.from_thread.run_sync(mover.request_drain, "test")

    def back() -> bool:
        return all(by_group(p).get(g, 0) > before.get(g, 0)
                   for p, before in zip(w.pages, seen, strict=True) for g in stack.groups)

    wait_until(page, lambda: hub_status(page).get("counters", {}).get("moves", 0) >= 1, 20,
               "the hub to get its GoAway")
    wait_until(page, back, 20, "every window to receive every group again")
    status = hub_status(page)
    out = {
        "holder": holder,
        "moves": status["counters"]["moves"],
        "reconnects": status["reconnects"],
        "failures": status["failures"],
        "subscribed": sorted(status.get("subscribed", [])),
        "survivor_active": _value(survivor, "ws_active"),
        "bridged": _value(survivor, "ws_resumes_total", outcome="bridged", reason="bridged"),
        "snapshot_resumes": sum(
            s.value for f in survivor.metrics.registry.collect() for s in f.samples
            if s.name == "ws_resumes_total" and s.labels.get("outcome") == "snapshot"),
        "goaway_sent": _value(mover, "gateway_goaway_total"),
        "problems": list(w.problems),
        "page_sockets": len(w.sockets),
    }
    w.close()
    return out


async def test_the_shared_worker_moves_on_goaway_and_resumes_on_the_other_worker(
        nats_server: Any, tmp_path: Path) -> None:
    async with running_stack(nats_server.url, tmp_path,
                             gateway_options={"drain_s": 2.0, "drain_close_in_ms": 1000},
                             gateway_worker=WorkerIdentity("main", 0, 2)) as stack:
        other = Service("gateway.1", stack.gateway.make_config,
                        worker=WorkerIdentity("main", 1, 2))
        await other.start(stack.nursery)
        try:
            r = await trio.to_thread.run_sync(with_browser, drain_holder, stack, other)
        finally:
            await other.stop()
    print("drain:", r)
    assert r["goaway_sent"] == 1.0 and r["moves"] == 1
    assert r["reconnects"] == 1 and r["failures"] == 0  # moved once, not counted a failure
    assert r["subscribed"] == sorted(stack.groups)
    assert r["survivor_active"] == 1.0
    # Resumed from the survivor's history: every stream bridged, no snapshot.
    assert r["bridged"] >= 1 and r["snapshot_resumes"] == 0
    assert r["page_sockets"] == 0 and r["problems"] == []
