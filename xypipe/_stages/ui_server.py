"""Serve the browser UI (``ui-static/``) on its own port, with the page's config and dev tokens.

The demo page and the SharedWorker are plain ES modules, so this is a static file server with
exact MIME types (a module script served as anything but JavaScript is refused by the browser),
plus two dynamic routes:

- ``/config.json`` tells the page where the gateway's WebSocket is (``gateway_url``, where
  ``{host}`` becomes the host name the page was loaded from), which groups to show, which
  projections of them its watchlists and top movers subscribe to (``watch_projection``,
  ``movers_projection``: the stream ``{group}/{name}``; empty = the whole group) and the
  worker's batch period.
- ``/dev/token`` (POST) mints a short-lived JWT for the hello frame — **dev/demo only**, and only
  when a token source is configured: ``token_private_key`` (a PEM private key matching the
  gateway's public key; tokens are minted by ``xypipe._gateway._tokens``) or ``token_factory``
  (``"module:callable"`` called as ``callable(subject=..., allow=[...], ttl_s=...) -> str``,
  for any other identity provider). Without one, the page connects without a token.

Files are listed once at start-up (routes are exact paths), so nothing outside ``root`` can be
reached whatever the request path says.
"""

from __future__ import annotations

import importlib
import mimetypes
import pathlib
import time
import urllib.parse
from collections.abc import Callable
from typing import Never

import attrs
import trio

from xypipe._errors import (
    UI_FILE_UNREADABLE,
    UI_ROOT_MISSING,
    UI_TOKEN_FACTORY_UNLOADABLE,
    UI_TOKEN_MINT_FAILED,
    XyError,
)
from xypipe._gateway import _tokens
from xypipe._http import Handler, HttpServer, Request, Response
from xypipe._stage import Stage, StageContext
from xypipe._validate import Invalid, group_problem, in_range, non_empty

#: Types the browser is strict about; everything else falls back to ``mimetypes``.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".ts": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".wasm": "application/wasm",
}

_NO_CACHE = (("cache-control", "no-cache"), ("x-content-type-options", "nosniff"))


def mime_type(path: pathlib.PurePath) -> str:
    suffix = path.suffix.lower()
    if suffix in MIME_TYPES:
        return MIME_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _is_module_ref(value: object) -> bool:
    if not isinstance(value, str):
        return False
    module, sep, attr = value.partition(":")
    return bool(sep and module and attr)


@attrs.frozen
class UiServerConfig:
    host: str = attrs.field(default="127.0.0.1", validator=non_empty())
    #: 5174 in the demo; 0 picks a free port (tests).
    port: int = attrs.field(default=5174, validator=in_range(0, 65535))
    #: The folder with index.html; relative paths are tried against the working directory,
    #: then against the source checkout.
    root: str = attrs.field(default="ui-static", validator=non_empty())
    #: The gateway's WebSocket URL as the page should use it; ``{host}`` = the page's host name.
    gateway_url: str = attrs.field(default="ws://{host}:8080/ws", validator=non_empty())
    #: Groups the demo page subscribes to (the first two get a watchlist each).
    groups: list[str] = attrs.field(factory=lambda: ["fx", "crypto"])
    #: Projections the page's panels subscribe to instead of whole groups: the watchlists take
    #: ``{group}/{watch_projection}`` of their group, the top movers ``{group}/{movers_projection}``
    #: of every group (the aggregator's snapshot stage declares them); "" = the whole group.
    watch_projection: str = ""
    movers_projection: str = ""
    #: The SharedWorker's batch period (the spec asks for 16..33 ms).
    batch_ms: int = attrs.field(default=16, validator=in_range(16, 33))
    token_private_key: str | None = None
    token_factory: str | None = None
    token_subject: str = attrs.field(default="demo", validator=non_empty())
    #: Subject patterns the minted token allows (least privilege: only what the page reads).
    token_allow: list[str] = attrs.field(factory=lambda: ["xy.md.>"])
    token_ttl_s: int = attrs.field(default=300, validator=in_range(10, 86_400))
    token_issuer: str | None = None
    token_audience: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.token_private_key is not None and self.token_factory is not None:
            raise Invalid("token_factory", "expected token_private_key or token_factory, not both",
                          self.token_factory)
        if self.token_factory is not None and not _is_module_ref(self.token_factory):
            raise Invalid("token_factory", 'expected "module:callable"', self.token_factory)
        if not self.gateway_url.startswith(("ws://", "wss://")):
            raise Invalid("gateway_url", "expected a ws:// or wss:// URL", self.gateway_url)
        if not self.groups or not all(isinstance(g, str) and g for g in self.groups):
            raise Invalid("groups", "expected a non-empty list of group names", self.groups)
        for key in ("watch_projection", "movers_projection"):
            name = getattr(self, key)
            problem = group_problem(name) if name else None
            if problem is not None:
                raise Invalid(key, f"expected a projection name or \"\"; {problem}", name)


TokenSource = Callable[[], str]


def resolve_root(root: str) -> pathlib.Path:
    path = pathlib.Path(root)
    candidates = [path] if path.is_absolute() else [
        pathlib.Path.cwd() / path, pathlib.Path(__file__).resolve().parents[2] / path,
    ]
    for c in candidates:
        if (c / "index.html").is_file():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise XyError(f"ui_server.root {root!r}: no index.html found (tried {tried})",
                  code=UI_ROOT_MISSING)


def token_source(cfg: UiServerConfig) -> TokenSource | None:
    """The configured way to mint a dev token, or None (the page then sends no token)."""
    if cfg.token_factory is not None:
        module_name, _, attr = cfg.token_factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise XyError(f"ui_server.token_factory {cfg.token_factory!r}: cannot load it ({exc})",
                          code=UI_TOKEN_FACTORY_UNLOADABLE) from exc
        return lambda: str(factory(subject=cfg.token_subject, allow=list(cfg.token_allow),
                                   ttl_s=cfg.token_ttl_s))
    if cfg.token_private_key is not None:
        key = _tokens.load_private_key(cfg.token_private_key)
        issuer = cfg.token_issuer if cfg.token_issuer is not None else _tokens.DEV_ISSUER
        audience = (cfg.token_audience if cfg.token_audience is not None
                    else _tokens.DEV_AUDIENCE)
        return lambda: _tokens.mint(key, subject=cfg.token_subject, allow=cfg.token_allow,
                                    now=time.time(), ttl_s=cfg.token_ttl_s, issuer=issuer,
                                    audience=audience)
    return None


def page_host(request: Request) -> str:
    """The host name the page was loaded from (IPv6 in brackets), for ``{host}``."""
    host = urllib.parse.urlsplit("//" + request.headers.get("host", "")).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class UiServer(Stage[Never, Never, UiServerConfig]):
    """Serve ui-static/ (demo page, SharedWorker, client) with /config.json and /dev/token.

    Once ready, ``port`` is the port it listens on (``port = 0`` picks a free one)."""

    ready_on_start = False

    def __init__(self, config: UiServerConfig, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        #: The bound port, once listening.
        self.port: int | None = None

    async def run(self) -> None:
        cfg = self.config
        root = resolve_root(cfg.root)
        self._mint = token_source(cfg)
        m = self.ctx.metrics
        self._requests = m.counter("ui_requests", "HTTP requests served by ui_server",
                                   ["route", "status"])
        self._tokens = m.counter("ui_tokens_minted", "Dev tokens minted by ui_server /dev/token")
        self._token_errors = m.counter("ui_token_errors",
                                       "Dev token requests that failed (see XY-UI-101 logs)")
        server = HttpServer(cfg.host, cfg.port)
        files = self._route_files(server, root)
        server.route("/config.json", self._config_json)
        server.route("/dev/token", self._dev_token, methods=("GET", "POST"))
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(server.serve)
            self.port = port
            self.ctx.log.info("ui server listening", host=cfg.host, port=port, root=str(root),
                              files=files, dev_minting=self._mint is not None)
            self.ctx.set_ready()

    def _route_files(self, server: HttpServer, root: pathlib.Path) -> int:
        count = 0
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            server.route("/" + rel.as_posix(), self._file_handler(path, "static"))
            count += 1
        server.route("/", self._file_handler(root / "index.html", "index"))
        return count

    def _file_handler(self, path: pathlib.Path, route: str) -> Handler:
        content_type = mime_type(path)

        async def handler(_request: Request) -> Response:
            try:
                body = await trio.Path(path).read_bytes()
            except OSError as exc:
                self.ctx.log.warning("ui file unreadable", code=UI_FILE_UNREADABLE, path=str(path),
                                     error=exc.strerror)
                self._requests.labels(route, "404").inc()
                return Response.text(f"{path.name}: {exc.strerror}\n", 404)
            self._requests.labels(route, "200").inc()
            return Response(200, body, content_type, headers=_NO_CACHE)

        return handler

    async def _config_json(self, request: Request) -> Response:
        cfg = self.config
        doc = {
            "wsUrl": cfg.gateway_url.replace("{host}", page_host(request)),
            "tokenUrl": "/dev/token" if self._mint is not None else "",
            "groups": list(cfg.groups),
            "projections": {"watch": cfg.watch_projection, "movers": cfg.movers_projection},
            "batchMs": cfg.batch_ms,
        }
        self._requests.labels("config", "200").inc()
        resp = Response.json(doc)
        return Response(resp.status, resp.body, resp.content_type, headers=_NO_CACHE)

    async def _dev_token(self, request: Request) -> Response:
        if self._mint is None:
            self._requests.labels("token", "404").inc()
            return Response.json({"error": "no token source configured (token_private_key or "
                                           "token_factory)"}, 404)
        try:
            token = self._mint()
        except Exception as exc:  # one place answers, counts and logs a failed mint
            self._token_errors.inc()
            self.ctx.log.error("dev token minting failed", code=UI_TOKEN_MINT_FAILED, exc=exc,
                               peer=request.peer)
            self._requests.labels("token", "500").inc()
            return Response.json({"error": f"minting failed: {type(exc).__name__}: {exc}"}, 500)
        self._tokens.inc()
        self._requests.labels("token", "200").inc()
        self.ctx.log.info("dev token minted", subject=self.config.token_subject,
                          peer=request.peer, ttl_s=self.config.token_ttl_s)
        resp = Response.json({"token": token, "expires_in": self.config.token_ttl_s})
        return Response(resp.status, resp.body, resp.content_type,
                        headers=(("cache-control", "no-store"),))
