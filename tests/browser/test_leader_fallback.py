"""Without SharedWorker the windows elect a leader that holds the one socket (AC 1).

``?mode=leader`` makes the client skip SharedWorker: the windows elect a leader with a Web Lock
and the leader serves the others over a BroadcastChannel. The browser still has exactly one
WebSocket, on the leader's page; when the leader window closes, its lock passes to another
window, which opens the next (and again only) socket, and every remaining window keeps
receiving.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from browser_stack import (
    Stack,
    Windows,
    hub_status,
    received,
    sample,
    scrape,
    wait_for_messages,
    wait_until,
    with_browser,
)

pytestmark = pytest.mark.browser

WINDOWS = 4


def open_sockets(w: Windows) -> list[Any]:
    """Sockets still open on pages still open (a closed page's socket went with it)."""
    return [page for page, ws in w.sockets if not page.is_closed() and not ws.is_closed()]


def leader_failover(browser: Any, stack: Stack) -> dict[str, Any]:
    url = stack.page_url + "?mode=leader"
    w = Windows(browser)
    for _ in range(WINDOWS):
        w.open(url)
    wait_for_messages(w, stack.groups)
    out: dict[str, Any] = {
        "sockets_before": len(w.sockets),
        "shared_workers": len(w.targets("shared_worker")),
        "roles": sorted(hub_status(p).get("role", "?") for p in w.pages),
        "gateway_active_before": sample(scrape(stack.gateway_metrics_url), "ws_active"),
    }
    leader = w.sockets[0][0]
    rest = [p for p in w.pages if p is not leader]
    before = [received(p) for p in rest]
    t0 = time.monotonic()
    leader.close()
    out["new_socket_s"] = wait_until(rest[0], lambda: len(w.sockets) >= 2, 20,
                                     "a new leader's socket")
    out["all_receiving_s"] = wait_until(
        rest[0], lambda: all(received(p) > n for p, n in zip(rest, before, strict=True)), 20,
        "every remaining window to receive again")
    out["failover_total_s"] = time.monotonic() - t0
    wait_until(rest[0], lambda: sample(scrape(stack.gateway_metrics_url), "ws_active") == 1, 20,
               "the old leader's socket to be gone at the gateway")
    m = scrape(stack.gateway_metrics_url)
    out["sockets_after"] = len(w.sockets)
    out["open_after"] = len(open_sockets(w))
    out["new_leader_is_remaining_window"] = w.sockets[1][0] in rest
    out["roles_after"] = sorted(hub_status(p).get("role", "?") for p in rest)
    out["hub_tabs_after"] = hub_status(rest[0]).get("tabs")
    out["gateway_after"] = (sample(m, "ws_active"),
                            sample(m, "ws_connections_total", outcome="accepted"))
    out["problems"] = list(w.problems)
    w.close()
    return out


async def test_leader_window_holds_the_only_socket_and_fails_over(stack: Stack) -> None:
    r = await trio.to_thread.run_sync(with_browser, leader_failover, stack)
    print("leader fallback:", r)
    assert r["shared_workers"] == 0, "the URL flag must keep SharedWorker out of it"
    assert r["sockets_before"] == 1
    assert r["roles"] == ["follower"] * (WINDOWS - 1) + ["leader"]
    assert r["gateway_active_before"] == 1
    assert r["sockets_after"] == 2, "exactly one new socket after the leader closed"
    assert r["open_after"] == 1
    assert r["new_leader_is_remaining_window"]
    assert r["roles_after"] == ["follower"] * (WINDOWS - 2) + ["leader"]
    assert r["hub_tabs_after"] == WINDOWS - 1
    assert r["gateway_after"] == (1.0, 2.0)
    assert r["problems"] == []
