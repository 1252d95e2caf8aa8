"""`xypipe demo` (what `make demo` runs) says where the page is before anything else.

The first line on stdout is the address of the demo page, taken from the config's ui_server
stage; the test opens that very address and finds the page, then stops the demo with Ctrl-C.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import trio

from xypipe import load_config
from xypipe._cli import page_urls

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUARD_S = 30  # hang guard: a process start on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    """What ``stream`` sends up to and including ``marker``."""
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some(1 if marker == b"\n" else 4096)
        assert chunk, f"the stream closed after {seen[-500:]!r}"
        seen += chunk
    return seen


def test_the_demo_config_announces_its_page() -> None:
    assert page_urls(load_config(ROOT / "configs" / "demo.toml")) == ["http://127.0.0.1:5174/"]


def test_a_page_on_all_interfaces_is_announced_on_localhost(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ui.toml"
    path.write_text('[[pipelines.ui.stages]]\nuse = "ui_server"\nhost = "0.0.0.0"\nport = 5999\n'
                    '[[pipelines.ui2.stages]]\nuse = "ui_server"\nport = 0\n')
    assert page_urls(load_config(path)) == ["http://localhost:5999/"]


async def test_xypipe_demo_prints_the_page_address_first_and_serves_it(
        tmp_path: pathlib.Path) -> None:
    port = free_port()
    config = tmp_path / "ui-demo.toml"
    config.write_text(f'[http]\nenabled = false\n\n[[pipelines.ui.stages]]\nuse = "ui_server"\n'
                      f'port = {port}\ngroups = ["fx"]\n')
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "demo", str(config)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with trio.fail_after(GUARD_S):
            first = await read_until(proc.stdout, b"\n")
        url = f"http://127.0.0.1:{port}/"
        assert first.decode() == (
            f"xypipe demo: open {url} in a browser (Ctrl-C stops the demo)\n")
        # The address is printed before the stages start: wait for the page's server.
        with trio.fail_after(GUARD_S):
            await read_until(proc.stderr, b"ui server listening")
        status, body = await trio.to_thread.run_sync(get, url)
        assert status == 200 and "<title>xypipe" in body
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(GUARD_S):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
