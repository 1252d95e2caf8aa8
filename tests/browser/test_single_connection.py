"""One WebSocket per browser, whatever the number of windows, and every window fed (AC 1, 2, 6).

Five windows of one browser context load the demo page against a real stack. The pages open no
socket themselves: the SharedWorker holds the only one, which the gateway confirms
(``ws_active`` = 1, one accepted upgrade). Every window draws watchlist rows from the batches it
received, for every group it subscribed, and the render latencies the windows measured reach
the gateway as ClientMetrics (the ``client_render`` latency histogram is no longer empty).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from browser_stack import (
    DRAWN_ROW,
    Stack,
    Windows,
    hub_status,
    received,
    rows_shown,
    sample,
    scrape,
    wait_for_messages,
    wait_until,
    with_browser,
)

pytestmark = pytest.mark.browser

WINDOWS = 5


def gateway_counts(stack: Stack) -> tuple[float, float]:
    m = scrape(stack.gateway_metrics_url)
    return sample(m, "ws_active"), sample(m, "ws_connections_total", outcome="accepted")


def single_connection(browser: Any, stack: Stack) -> dict[str, Any]:
    w = Windows(browser)
    for _ in range(WINDOWS):
        w.open(stack.page_url)
    wait_for_messages(w, stack.groups)
    page0 = w.pages[0]
    out: dict[str, Any] = {
        "page_sockets": len(w.sockets),
        "shared_workers": len(w.targets("shared_worker")),
        "gateway": gateway_counts(stack),
        "hub_tabs": hub_status(page0).get("tabs"),
        "received": [received(p) for p in w.pages],
        "shown": [rows_shown(p) for p in w.pages],
    }
    # Opening another window and closing two adds no connection.
    extra = w.open(stack.page_url)
    extra.locator(DRAWN_ROW).first.wait_for(state="visible", timeout=20_000)
    w.pages[1].close()
    w.pages[2].close()
    alive = [p for p in w.pages if not p.is_closed()]
    wait_until(page0, lambda: hub_status(page0).get("tabs") == len(alive), 20,
               "the hub to see the closed windows go")
    out["after_churn"] = {
        "page_sockets": len(w.sockets),
        "shared_workers": len(w.targets("shared_worker")),
        "gateway": gateway_counts(stack),
        "hub_tabs": hub_status(page0).get("tabs"),
    }
    # The windows' render latencies reach the gateway (ClientMetrics every 2 s).
    wait_until(page0, lambda: sample(scrape(stack.gateway_metrics_url),
                                     "e2e_latency_seconds_count", point="client_render") > 0,
               20, "client_render latencies at the gateway")
    m = scrape(stack.gateway_metrics_url)
    out["metrics"] = {
        "client_render_count": sample(m, "e2e_latency_seconds_count", point="client_render"),
        "forwarded": sample(m, "xy_ws_messages_forwarded_total"),
        "ws_msgs_rate": sample(m, "ws_msgs_rate"),
    }
    out["panel_latency"] = page0.locator("#panel-status dd").all_inner_texts()
    out["problems"] = list(w.problems)
    w.close()
    return out


async def test_five_windows_share_one_websocket_and_all_receive(stack: Stack) -> None:
    r = await trio.to_thread.run_sync(with_browser, single_connection, stack)
    print("single connection:", r)
    assert r["page_sockets"] == 0, "pages opened sockets of their own"
    assert r["shared_workers"] == 1
    assert r["gateway"] == (1.0, 1.0), "(ws_active, accepted upgrades) at the gateway"
    assert r["hub_tabs"] == WINDOWS
    assert all(n > 0 for n in r["received"])
    assert all(n > 0 for n in r["shown"]), "every window draws watchlist rows"
    after = r["after_churn"]
    assert after["page_sockets"] == 0
    assert after["shared_workers"] == 1
    assert after["gateway"] == (1.0, 1.0), "opening/closing windows added no connection"
    assert after["hub_tabs"] == WINDOWS - 1
    assert r["metrics"]["client_render_count"] > 0
    assert r["metrics"]["forwarded"] > 0
    assert r["problems"] == []
