"""The ui_server stage: static files with the MIME types browsers insist on, the page's config,
and dev tokens the gateway accepts."""

from __future__ import annotations

import json
import pathlib
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from xypipe._errors import ConfigError, XyError
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, generate_ed25519_keypair
from xypipe._stages.ui_server import UiServer
from xypipe.testing import make_config, stage_harness

ROOT = pathlib.Path(__file__).resolve().parent.parent


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


async def get(url: str, method: str = "GET", headers: dict[str, str] | None = None
              ) -> tuple[int, dict[str, str], bytes]:
    return await trio.to_thread.run_sync(fetch, url, method, headers)


@pytest.fixture
def keypair(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    private, public = generate_ed25519_keypair()
    (tmp_path / "dev.key").write_bytes(private)
    (tmp_path / "dev.pub").write_bytes(public)
    return tmp_path / "dev.key", tmp_path / "dev.pub"


async def serve(options: dict[str, Any]) -> AsyncIterator[str]:
    async with stage_harness(UiServer, {"port": 0, **options}, name="ui") as h:
        with trio.fail_after(10):
            await h.ctx.wait_ready()
        yield f"http://127.0.0.1:{h.stage.port}"


@pytest.fixture
async def ui(keypair: tuple[pathlib.Path, pathlib.Path]) -> AsyncIterator[str]:
    async for base in serve({"token_private_key": str(keypair[0]), "groups": ["fx", "crypto"],
                             "token_allow": ["xy.md.*.fx", "xy.md.*.fx.>"]}):
        yield base


async def test_module_scripts_are_served_as_javascript(ui: str) -> None:
    for path in ("/xy-worker.js", "/xy-client.js", "/xy-core.js", "/demo.js",
                 "/gen/xy_contracts.js"):
        status, headers, body = await get(ui + path)
        assert status == 200, path
        assert headers["content-type"] == "text/javascript; charset=utf-8", path
        assert body == (ROOT / "ui-static" / path.lstrip("/")).read_bytes()
    status, headers, _ = await get(ui + "/demo.css")
    assert headers["content-type"] == "text/css; charset=utf-8"


async def test_root_serves_the_demo_page(ui: str) -> None:
    status, headers, body = await get(ui + "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="demo.js">' in body


async def test_paths_outside_the_static_root_are_not_found(ui: str) -> None:
    for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/nope.js", "/gen/../demo.js.bak"):
        status, _, _ = await get(ui + path)
        assert status == 404, path


async def test_config_points_the_page_at_the_gateway_on_its_own_host(ui: str) -> None:
    status, headers, body = await get(ui + "/config.json", headers={"Host": "trader.example:5174"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc == {"wsUrl": "ws://trader.example:8080/ws", "tokenUrl": "/dev/token",
                   "groups": ["fx", "crypto"], "projections": {"watch": "", "movers": ""},
                   "batchMs": 16}


async def test_config_names_the_projections_the_panels_subscribe_to() -> None:
    async for base in serve({"groups": ["fx"], "watch_projection": "watch",
                             "movers_projection": "top"}):
        _, _, body = await get(base + "/config.json")
        assert json.loads(body)["projections"] == {"watch": "watch", "movers": "top"}


async def test_dev_token_is_accepted_by_the_gateway_verifier(
    ui: str, keypair: tuple[pathlib.Path, pathlib.Path]
) -> None:
    status, headers, body = await get(ui + "/dev/token", method="POST")
    assert status == 200
    assert headers["cache-control"] == "no-store"
    doc = json.loads(body)
    verifier = TokenVerifier.from_file(keypair[1], issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    principal = verifier.verify(doc["token"], time.time())
    assert principal.subject == "demo"
    assert principal.acl.allows("xy.md.tick.fx")
    assert not principal.acl.allows("xy.md.tick.crypto")
    assert doc["expires_in"] == 300


async def test_without_a_token_source_the_page_is_told_to_send_none() -> None:
    async for base in serve({}):
        _, _, body = await get(base + "/config.json")
        assert json.loads(body)["tokenUrl"] == ""
        status, _, body = await get(base + "/dev/token", method="POST")
        assert status == 404
        assert "no token source configured" in json.loads(body)["error"]


def custom_factory(*, subject: str, allow: list[str], ttl_s: int) -> str:
    return f"custom:{subject}:{','.join(allow)}:{ttl_s}"


async def test_a_custom_token_factory_is_pluggable() -> None:
    async for base in serve({"token_factory": f"{__name__}:custom_factory",
                             "token_subject": "bob", "token_allow": ["xy.md.>"],
                             "token_ttl_s": 60}):
        status, _, body = await get(base + "/dev/token", method="POST")
        assert status == 200
        assert json.loads(body)["token"] == "custom:bob:xy.md.>:60"


def failing_factory(**_kw: Any) -> str:
    raise RuntimeError("identity provider unreachable")


async def test_a_failing_token_source_answers_500_and_is_counted() -> None:
    async with stage_harness(UiServer, {"port": 0, "token_factory": f"{__name__}:failing_factory"},
                             name="ui") as h:
        with trio.fail_after(10):
            await h.ctx.wait_ready()
        base = f"http://127.0.0.1:{h.stage.port}"
        status, _, body = await get(base + "/dev/token", method="POST")
        assert status == 500
        assert "identity provider unreachable" in json.loads(body)["error"]
        assert h.counter("ui_token_errors_total") == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gateway_url": "http://x:8080/ws"},
         'gateway_url: expected a ws:// or wss:// URL, got "http://x:8080/ws"'),
        ({"token_factory": "nocolon"}, 'token_factory: expected "module:callable", got "nocolon"'),
        ({"token_factory": "a:b", "token_private_key": "k.pem"},
         'token_factory: expected token_private_key or token_factory, not both, got "a:b"'),
        ({"batch_ms": 50}, "batch_ms: expected an integer 16..33, got 50"),
        ({"groups": []}, "groups: expected a non-empty list of group names, got []"),
        ({"watch_projection": "my watch"}, 'watch_projection: expected a projection name or ""'),
        ({"movers_projection": "a.b"}, 'movers_projection: expected a projection name or ""'),
        ({"prot": 1}, "prot"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(UiServer, options)
    assert message in str(err.value)


async def test_a_missing_static_root_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.RaisesGroup(
        pytest.RaisesExc(XyError, match=r"ui_server.root .*: no index.html found"),
        flatten_subgroups=True,
    ):
        async with stage_harness(UiServer, {"port": 0, "root": str(tmp_path / "none")}):
            await trio.sleep_forever()
