"""The demo page's panels subscribe to projections, so a tab receives what it draws.

A real stack whose aggregator declares the demo's projections (configs/demo.toml's snapshot
stage) and whose ui_server names them as the demo's does: the watchlists subscribe to their
group's watchlist projection (``group/watch``), the top movers to every group's Top-K
(``group/top``), and no panel to a whole group — the gateway's audit lines ("subscribe
allowed") name exactly those streams. The panels still draw: the watchlists show only their
projection's symbols, the movers rank by volume, the ladder follows a watchlist row. With
``?streams=groups`` (what bench/demo_tabs.py compares against) the same page subscribes to the
whole groups again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from browser_stack import Stack, demo_projections, with_browser
from gw_support import JsonLogCapture

pytestmark = pytest.mark.browser

GUARD_MS = 30_000  # hang guard for the stack's first data

DRAWN_JS = """() => ["#panel-watch-a", "#panel-watch-b", "#panel-movers", "#panel-ladder"].every(
    (p) => document.querySelector(p + " tbody tr td:nth-child(2):not(:empty)"))"""

PAGE_JS = """() => ({
    streams: window.__xy.streams,
    byStream: {...window.__xy.byStream},
    watch: Object.fromEntries(["#panel-watch-a", "#panel-watch-b"].map((p) => [
        document.querySelector(p + " .group").textContent,
        [...document.querySelectorAll(p + " tbody tr")].map((tr) => tr.title)])),
    movers: [...document.querySelectorAll("#panel-movers tbody tr")].map(
        (tr) => [tr.cells[1].textContent, tr.cells[2].textContent, tr.cells[3].textContent]),
    ladder: document.querySelector("#panel-ladder .ladder-symbol").textContent,
})"""


def subscribed(logs: JsonLogCapture) -> list[str]:
    """The groups and projections the gateway (in this process) allowed subscriptions to."""
    return [str(x["group"]) for x in logs.find(audit=True, action="subscribe",
                                               outcome="allowed")]


@pytest.fixture
def audit() -> Iterator[JsonLogCapture]:
    with JsonLogCapture().installed() as cap:
        yield cap


def open_page(browser: Any, url: str) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.goto(url)
    page.wait_for_function(DRAWN_JS, timeout=GUARD_MS)
    out: dict[str, Any] = page.evaluate(PAGE_JS)
    out["problems"] = problems
    context.close()
    return out


def both_pages(browser: Any, stack: Stack, audit: JsonLogCapture) -> dict[str, Any]:
    after = open_page(browser, stack.page_url)
    subscribed_after = subscribed(audit)
    before = open_page(browser, stack.page_url + "?streams=groups")
    return {"after": after, "before": before, "subscribed_after": subscribed_after,
            "subscribed_before": subscribed(audit)[len(subscribed_after):]}


async def test_the_panels_subscribe_to_projections_and_still_draw(
        demo_stack: Stack, audit: JsonLogCapture) -> None:
    stack = demo_stack
    projections, keys = demo_projections()
    assert keys == {"watch_projection": "watch", "movers_projection": "top"}
    watchlists = {p["group"]: p["symbols"] for p in projections if p["name"] == "watch"}
    assert set(stack.groups) <= set(watchlists), "the demo declares a watchlist per panel"

    r = await trio.to_thread.run_sync(with_browser, both_pages, stack, audit)
    after, before = r["after"], r["before"]
    print("projections page:", json.dumps(after))
    assert after["problems"] == [] and before["problems"] == []

    # The gateway was asked for projections only, and the page says the same.
    watch = [f"{g}/watch" for g in stack.groups]
    top = [f"{g}/top" for g in stack.groups]
    assert sorted(set(r["subscribed_after"])) == sorted(watch + top), r["subscribed_after"]
    assert after["streams"] == {"live": watch, "overview": top}
    assert set(after["byStream"]) == set(watch + top), after["byStream"]
    assert all(n > 0 for n in after["byStream"].values()), after["byStream"]

    # Each watchlist draws its projection's symbols (only those the stack's market has).
    for group, titles in after["watch"].items():
        shown = {t.replace(":", ".") for t in titles}
        assert shown and shown <= set(watchlists[group]), (group, shown)
    # The movers rank the Top-Ks by volume, naming the group (not the stream).
    movers = after["movers"]
    assert len(movers) >= 5, movers
    assert {g for _, g, _ in movers} <= set(stack.groups), movers
    volumes = [int(v) for _, _, v in movers]
    assert volumes == sorted(volumes, reverse=True), movers
    # The ladder follows a symbol of a watchlist (keys are VENUE:SYMBOL on the page).
    all_watch = {k for g in stack.groups for k in watchlists[g]}
    assert after["ladder"].replace(":", ".") in all_watch, after["ladder"]

    # ?streams=groups: the whole groups again, every panel drawing.
    assert sorted(set(r["subscribed_before"])) == sorted(stack.groups), r["subscribed_before"]
    assert before["streams"] == {"live": stack.groups, "overview": stack.groups}
    for group, titles in before["watch"].items():
        assert len(titles) >= len(after["watch"][group]), (group, titles)
