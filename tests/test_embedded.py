"""The embedded nats-server: start, serve, stop, and say clearly when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xypipe._embedded import embedded_nats, find_nats_server
from xypipe._errors import EmbeddedServerError
from xypipe._nats import connect

pytestmark = pytest.mark.nats


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_embedded_server_serves_clients_and_is_gone_after_exit(tmp_path: Path) -> None:
    async with embedded_nats(data_dir=tmp_path / "d") as server:
        pid = server.pid
        assert pid is not None and _alive(pid)
        assert server.port > 0 and server.url == f"nats://127.0.0.1:{server.port}"
        async with connect(server.url) as nc:
            js = nc.jetstream()
            await js.ensure_stream("EMB", ["emb.>"])
            assert await js.publish("emb.x", b"1") == 1
    assert not _alive(pid)
    assert (tmp_path / "d" / "jetstream").is_dir()


async def test_restart_keeps_port_and_jetstream_data(tmp_path: Path) -> None:
    async with embedded_nats(data_dir=tmp_path / "d") as server:
        port, first_pid = server.port, server.pid
        async with connect(server.url) as nc:
            await nc.jetstream().ensure_stream("KEEP", ["keep.>"])
            await nc.jetstream().publish("keep.a", b"kept")
        await server.restart()
        assert server.port == port and server.pid != first_pid and server.running
        async with connect(server.url) as nc:
            got = await nc.jetstream().direct_get_last("KEEP", "keep.a")
        assert got is not None and got.data == b"kept"


async def test_stop_is_idempotent_and_reaps_the_child(tmp_path: Path) -> None:
    async with embedded_nats(data_dir=tmp_path / "d") as server:
        pid = server.pid
        assert pid is not None
        await server.stop()
        await server.stop()
        assert not server.running and not _alive(pid)


async def test_missing_binary_names_every_place_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XY_NATS_SERVER", "/nonexistent/nats-server")
    with pytest.raises(EmbeddedServerError, match=r"\$XY_NATS_SERVER: /nonexistent/nats-server"):
        find_nats_server()
    with pytest.raises(EmbeddedServerError, match=r"argument: /nope/nats-server \(not an exec"):
        async with embedded_nats(binary="/nope/nats-server"):
            pass  # pragma: no cover - not reached


async def test_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    async with embedded_nats(data_dir=tmp_path / "a") as first:
        # A second server on the same port fails to bind; its log explains why.
        with pytest.raises(EmbeddedServerError, match=r"exited with status .*last log lines"):
            async with embedded_nats(port=first.port, data_dir=tmp_path / "b"):
                pass  # pragma: no cover - not reached


def test_binary_resolution_prefers_the_explicit_argument(tmp_path: Path) -> None:
    fake = tmp_path / "my-nats"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_nats_server(fake) == fake
