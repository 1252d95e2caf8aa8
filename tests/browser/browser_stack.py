"""A real stack for browser tests and the end-to-end benchmark, plus a real Chromium.

Stack (each part its own ``xypipe.Runner``, so the gateway can be restarted alone):
    publisher (synthetic ticks) -> NATS -> aggregator (ingest .. publish) -> NATS
    -> gateway (WebSocket, fixed port across restarts) ; ui_server (the page, /config.json,
    /dev/token minting with a keypair whose public half the gateway verifies with).

Browser: Debian's Chromium driven by Playwright (never a downloaded browser), launched with a
fresh temporary profile. Playwright's sync API cannot run inside Trio's loop, so callers run
browser code in a worker thread (``trio.to_thread.run_sync``) and call back into Trio with
``trio.from_thread.run``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

import xypipe
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, generate_ed25519_keypair
from xypipe._stages.ui_server import UiServer
from xypipe._worker import WorkerIdentity

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
READY_TIMEOUT_S = 20
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- configs


def demo_projections() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The demo's projections (configs/demo.toml's snapshot stage) and the ui stage's keys
    naming the ones its panels subscribe to: the stack serves the page as the demo does."""
    doc = tomllib.loads(DEMO_CONFIG.read_text())
    snapshot = next(s for s in doc["pipelines"]["aggregator"]["stages"] if s["use"] == "snapshot")
    ui = next(s for s in doc["pipelines"]["ui"]["stages"] if s["use"] == "ui_server")
    keys = {k: ui[k] for k in ("watch_projection", "movers_projection") if k in ui}
    return list(snapshot.get("projections", [])), keys


def aggregator_config(nats_url: str, *, interval_ms: int = 33, snapshot_ms: int = 2000,
                      projections: bool = False) -> xypipe.AppConfig:
    state = {"storage": "memory"}
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"port": 0},
        "pipelines": {"aggregator": {"stages": [
            {"use": "ingest", "name": "ingest", "storage": "memory", "start": "new",
             "state": state},
            {"use": "dedupe", "name": "dedupe"},
            {"use": "shard", "name": "shard"},
            {"use": "conflate", "name": "conflate", "interval_ms": interval_ms},
            {"use": "snapshot", "name": "snapshot", "interval_ms": snapshot_ms,
             "projections": demo_projections()[0] if projections else []},
            {"use": "publish", "name": "publish", "state": state},
        ]}},
    }, "browser-aggregator.toml")


def publisher_config(nats_url: str, *, rate: float, symbols: int) -> xypipe.AppConfig:
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"enabled": False},
        "pipelines": {"publisher": {"stages": [
            {"use": "publisher", "name": "publisher", "rate": rate, "symbols": symbols,
             "contracts_every_s": 1.0},
        ]}},
    }, "browser-publisher.toml")


def gateway_config(nats_url: str, port: int, public_key: Path, **options: Any
                   ) -> xypipe.AppConfig:
    gw: dict[str, Any] = {
        "use": "gateway", "name": "gateway", "public_key": str(public_key),
        "allowed_origins": ["*"], "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE,
    }
    gw.update(options)
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"port": port},
        "pipelines": {"gateway": {"stages": [
            {"use": "nats_source", "name": "md",
             "subjects": ["xy.md.tick.>", "xy.md.snapshot.>"]},
            gw,
        ]},
            # /admin/feature-flags beside the gateway: one process may on this open bus (a
            # deployment runs it in a process of its own, signed in as admin).
            "admin": {"stages": [
                {"use": "flag_admin", "name": "flags", "public_key": str(public_key),
                 "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE}]}},
    }, "browser-gateway.toml")


def ui_config(gateway_port: int, private_key: Path, groups: list[str], batch_ms: int,
              projections: bool = False) -> xypipe.AppConfig:
    return xypipe.parse_config({
        "http": {"enabled": False},
        "pipelines": {"ui": {"stages": [
            {"use": "ui_server", "name": "ui", "port": 0,
             "gateway_url": f"ws://{{host}}:{gateway_port}/ws", "groups": groups,
             "batch_ms": batch_ms, "token_private_key": str(private_key),
             "token_subject": "browser-test",
             **(demo_projections()[1] if projections else {}),
             "token_allow": [p for g in groups for p in (f"xy.md.*.{g}", f"xy.md.*.{g}.>")]},
        ]}},
    }, "browser-ui.toml")


def ui_port(runner: xypipe.Runner) -> int:
    port = runner.stage("ui", "ui", UiServer).port
    assert port is not None, "ui_server is not listening yet"
    return port


# --------------------------------------------------------------------------- services


class Service:
    """One Runner that can be started, stopped and started again in the caller's nursery."""

    def __init__(self, name: str, make_config: Callable[[], xypipe.AppConfig],
                 worker: WorkerIdentity | None = None) -> None:
        self.name = name
        self.make_config = make_config
        #: Which copy this is (copies of a process share its port with SO_REUSEPORT).
        self.worker = worker
        self.runner: xypipe.Runner | None = None
        self._done: trio.Event | None = None

    async def start(self, nursery: trio.Nursery) -> xypipe.Runner:
        runner = xypipe.Runner(self.make_config(), worker=self.worker)
        done = trio.Event()

        async def _run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await runner.run(task_status=task_status)
            finally:
                done.set()

        await nursery.start(_run)
        with trio.fail_after(READY_TIMEOUT_S):
            for pipeline in runner.pipelines:
                for stage in pipeline.stages:
                    await stage.ctx.wait_ready()
        self.runner, self._done = runner, done
        return runner

    async def stop(self) -> None:
        if self.runner is None or self._done is None:
            return
        self.runner.stop()
        with trio.fail_after(READY_TIMEOUT_S):
            await self._done.wait()
        self.runner = None

    @property
    def http_port(self) -> int:
        assert self.runner is not None and self.runner.http is not None
        return int(self.runner.http.port)


@attrs.define
class Stack:
    nats_url: str
    groups: list[str]
    gateway_port: int
    ui_port: int
    nursery: trio.Nursery
    gateway: Service
    aggregator: Service
    publisher: Service
    ui: Service
    events: list[tuple[str, float]] = attrs.field(factory=list)

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}/"

    @property
    def gateway_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/metrics"

    async def stop_gateway(self) -> float:
        await self.gateway.stop()
        t = time.monotonic()
        self.events.append(("gateway stopped", t))
        return t

    async def start_gateway(self) -> float:
        await self.gateway.start(self.nursery)
        t = time.monotonic()
        self.events.append(("gateway started", t))
        return t


@asynccontextmanager
async def running_stack(
    nats_url: str, tmp: Path, *, groups: list[str] | None = None, rate: float = 400.0,
    symbols: int = 60, batch_ms: int = 16, snapshot_ms: int = 2000,
    gateway_options: dict[str, Any] | None = None, gateway_worker: WorkerIdentity | None = None,
    projections: bool = False,
) -> AsyncIterator[Stack]:
    """The stack; with ``projections`` the aggregator declares the demo's projections and the
    page's panels subscribe to them, as in configs/demo.toml (else every panel takes whole
    groups, what the tests of the worker's connection handling count on)."""
    groups = groups or ["equities", "fx"]
    private, public = generate_ed25519_keypair()
    (tmp / "dev.key").write_bytes(private)
    (tmp / "dev.pub").write_bytes(public)
    gw_port = free_port()
    gateway = Service("gateway", lambda: gateway_config(nats_url, gw_port, tmp / "dev.pub",
                                                        **(gateway_options or {})),
                      worker=gateway_worker)
    aggregator = Service("aggregator", lambda: aggregator_config(
        nats_url, snapshot_ms=snapshot_ms, projections=projections))
    publisher = Service("publisher", lambda: publisher_config(nats_url, rate=rate,
                                                              symbols=symbols))
    ui = Service("ui", lambda: ui_config(gw_port, tmp / "dev.key", groups, batch_ms,
                                         projections))
    async with trio.open_nursery() as nursery:
        await aggregator.start(nursery)
        await gateway.start(nursery)
        ui_runner = await ui.start(nursery)
        await publisher.start(nursery)
        stack = Stack(nats_url, groups, gw_port, ui_port(ui_runner),
                      nursery, gateway, aggregator, publisher, ui)
        try:
            yield stack
        finally:
            for service in (publisher, ui, gateway, aggregator):
                await service.stop()


# --------------------------------------------------------------------------- observing


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One /metrics scrape as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


# --------------------------------------------------------------------------- the browser


class _PlainAsyncioPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop()


def _plain_asyncio_in_this_thread() -> None:
    """Playwright's sync API runs its own asyncio loop in this thread. The NATS bridge
    (trio-asyncio) patches asyncio so that a new loop outside Trio is a Trio-driven one; a
    policy set in a thread is that thread's own under trio-asyncio, so this thread gets plain
    asyncio loops and the bridge in Trio's thread is untouched."""
    if "trio_asyncio" in sys.modules:
        asyncio.set_event_loop_policy(_PlainAsyncioPolicy())


def with_browser(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(browser, *args)`` with a fresh headless Chromium (call from a worker thread)."""
    from playwright.sync_api import sync_playwright

    _plain_asyncio_in_this_thread()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            return fn(browser, *args)
        finally:
            browser.close()


class Windows:
    """Pages of one browser context, each in its own window (a background tab would have its
    animation frames throttled, unlike the windows the spec's "4-5 windows" means), with every
    WebSocket any page opens recorded."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.context = browser.new_context(viewport={"width": 1100, "height": 800})
        self.cdp = browser.new_browser_cdp_session()
        self.pages: list[Any] = []
        self.sockets: list[tuple[Any, Any]] = []  # (page, websocket)
        self.problems: list[str] = []
        self.context.on("page", self._watch)
        self._context_id: str | None = None

    def _watch(self, page: Any) -> None:
        page.on("websocket", lambda ws: self.sockets.append((page, ws)))
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on("console", lambda m: self.problems.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)

    def open(self, url: str) -> Any:
        if not self.pages:
            page = self.context.new_page()
            page.goto(url)
            targets = self.cdp.send("Target.getTargets")["targetInfos"]
            self._context_id = next(t["browserContextId"] for t in targets
                                    if t["type"] == "page" and t["url"].startswith(url))
        else:
            with self.context.expect_page() as info:
                self.cdp.send("Target.createTarget", {
                    "url": url, "newWindow": True, "browserContextId": self._context_id,
                })
            page = info.value
        self.pages.append(page)
        return page

    def targets(self, kind: str) -> list[dict[str, Any]]:
        return [t for t in self.cdp.send("Target.getTargets")["targetInfos"]
                if t["type"] == kind]

    def close(self) -> None:
        self.context.close()


def wait_until(page: Any, predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``predicate`` (cheap, e.g. a page evaluation) until true; returns the time taken.
    The deadline is a hang guard; nothing is asserted about how long it took."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        page.wait_for_timeout(20)
    return time.monotonic() - t0


#: A watchlist row with its price drawn: the page shows market data.
DRAWN_ROW = ".watch tbody tr:has(td:nth-child(2):not(:empty))"


def rows_shown(page: Any) -> int:
    """Watchlist rows the page has drawn."""
    return int(page.locator(DRAWN_ROW).count())


def wait_for_messages(w: Windows, groups: list[str], timeout_s: float = 30) -> None:
    """Every window shows watchlist rows and has had batches of every group (hang guard only);
    on a timeout the error carries each window's hub status and page problems."""
    for i, page in enumerate(w.pages):
        if page.is_closed():
            continue
        try:
            page.locator(DRAWN_ROW).first.wait_for(state="visible", timeout=timeout_s * 1000)
            wait_until(page, lambda p=page: set(by_group(p)) >= set(groups), timeout_s,
                       f"batches of every group {groups}")
        except Exception as exc:
            raise AssertionError(
                f"window {i}: {exc}; received {received(page)} by group {by_group(page)}; "
                f"hub status {hub_status(page)}; problems {w.problems}") from exc


def received(page: Any) -> int:
    return int(page.evaluate("() => window.__xy?.received ?? 0"))


def hub_status(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.__xy?.status ?? null") or {}


def by_group(page: Any) -> dict[str, int]:
    """Batches received per group so far."""
    return dict(page.evaluate("() => ({...(window.__xy?.byGroup ?? {})})"))
