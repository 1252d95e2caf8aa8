"""After the gateway restarts, the browser is back on its prior subscriptions (AC 1, 9).

Four windows hold two groups through the SharedWorker. The gateway is stopped, left down for a
moment (the worker keeps retrying with exponential backoff, one attempt at a time), and started
again on the same port. The worker reconnects, resumes every stream from its last sequence (the
new gateway, with no history, answers with snapshots) and every window receives every group
again — over exactly one new connection. How long that took is printed (the benchmark records
timings); the assertions are about correctness only.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from browser_stack import (
    Stack,
    Windows,
    by_group,
    hub_status,
    sample,
    scrape,
    wait_for_messages,
    wait_until,
    with_browser,
)

pytestmark = pytest.mark.browser

WINDOWS = 4
OUTAGE_S = 1.5


def gateway_restart(browser: Any, stack: Stack) -> dict[str, Any]:
    w = Windows(browser)
    for _ in range(WINDOWS):
        w.open(stack.page_url)
    wait_for_messages(w, stack.groups)
    page0 = w.pages[0]
    connects_before = hub_status(page0)["counters"]["connects"]

    t_stop = trio.from_thread.run(stack.stop_gateway)
    trio.from_thread.run(trio.sleep, OUTAGE_S)  # the outage the browser must ride out
    attempts_during_outage = hub_status(page0)["counters"]["connects"] - connects_before
    state_during_outage = hub_status(page0)["state"]
    seen = [by_group(p) for p in w.pages]
    t_start = trio.from_thread.run(stack.start_gateway)

    def back() -> bool:
        return all(by_group(p).get(g, 0) > before.get(g, 0)
                   for p, before in zip(w.pages, seen, strict=True) for g in stack.groups)

    wait_until(page0, back, 20, "every window to receive every prior group again")
    t_back = time.monotonic()
    m = scrape(stack.gateway_metrics_url)
    status = hub_status(page0)
    out = {
        "disconnect_to_back_s": round(t_back - t_stop, 3),
        "gateway_up_to_back_s": round(t_back - t_start, 3),
        "hub_recovery_ms": status.get("lastRecoveryMs"),
        "attempts_during_outage": attempts_during_outage,
        "state_during_outage": state_during_outage,
        "reconnects": status.get("reconnects"),
        "subscribed": sorted(status.get("subscribed", [])),
        "gateway": (sample(m, "ws_active"), sample(m, "ws_connections_total", outcome="accepted")),
        "resumes": {dict(labels).get("outcome", ""): v for (name, labels), v in m.items()
                    if name == "ws_resumes_total"},
        "page_sockets": len(w.sockets),
        "problems": list(w.problems),
    }
    w.close()
    return out


async def test_gateway_restart_is_ridden_out_on_the_prior_subscriptions(stack: Stack) -> None:
    r = await trio.to_thread.run_sync(with_browser, gateway_restart, stack)
    print("gateway restart:", r)
    assert r["state_during_outage"] in ("waiting", "connecting")
    assert r["attempts_during_outage"] >= 2, "the worker kept retrying while the gateway was down"
    assert r["reconnects"] == 1
    assert r["subscribed"] == sorted(stack.groups)
    assert r["gateway"] == (1.0, 1.0), "one browser, one new connection"
    assert sum(r["resumes"].values()) >= 1, "the worker resumed its streams"
    assert r["page_sockets"] == 0
    assert r["problems"] == []
