"""The whole stack as an operator runs it, for the chaos suite and ``bench/chaos.py``.

* **NATS**: a real nats-server the test owns (as systemd or Kubernetes owns it in production),
  on a fixed port and data directory across restarts, with a short lame-duck period — or, for
  one case, the embedded server that ``xypipe run`` supervises itself.
* **The tree**: ``python -m xypipe run CONFIG`` with the aggregator and the gateway as child
  processes: configs/demo.toml itself, read at run time (so the suite always runs what the
  demo ships), with its NATS, its ports, and without its publisher and UI.
* **Health**: every process's ``/healthz`` polled every 50 ms, transitions kept with their time.

Everything is a real process; nothing here knows how xypipe works inside.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import h11
import trio

from xypipe import load_config
from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._process import Child

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "configs" / "demo.toml"
DEV_PUBLIC_KEY = ROOT / "configs" / "dev-keys" / "gateway-dev.pub.pem"
DEV_PRIVATE_KEY = ROOT / "configs" / "dev-keys" / "gateway-dev.key.pem"

#: nats-server's minimum lame-duck duration is 30 s, but it evicts its few clients one by one
#: over ~0.5 s each after the grace period, so the server is gone ~2 s after the signal.
LAME_DUCK_CONF = 'lame_duck_duration: "30s"\nlame_duck_grace_period: "500ms"\n'
#: Bound on starting the tree (three Python processes on a shared 2-core machine).
START_GUARD_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- NATS


@asynccontextmanager
async def external_nats(workdir: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server outside ``xypipe run`` (JetStream, file storage, lame duck ~2 s). Its port
    is chosen once and kept by every ``start()`` after a kill, like a production unit's."""
    conf = workdir / "nats.conf"
    conf.write_text(LAME_DUCK_CONF)
    async with embedded_nats(port=0, data_dir=workdir / "nats-data", config_file=conf,
                             stop_grace_s=2.0) as server:
        yield server


# --------------------------------------------------------------------------- configs


#: A table header line of a TOML file: ``[a.b]`` or ``[[a.b.c]]``.
_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")


def tree_toml(nats: str, ports: dict[str, int], *, restart: str | None = None,
              demo: Path = DEMO_CONFIG, snapshot_ms: int | None = None) -> str:
    """The demo deployment (configs/demo.toml) as production runs it: the processes named in
    ``ports`` (besides ``main``: the aggregator and/or the gateway), exactly as configured
    there, with NATS from ``nats`` (a ``[nats]`` section), those ports, and without the demo's
    publisher and UI.

    ``restart`` is an optional ``restart = ...`` value for each child (the default policy is
    what the suite tests; the benchmark raises the budget); ``snapshot_ms`` the aggregator's
    snapshot interval instead of the demo's."""
    keep = set(ports) - {"main"}
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for line in demo.read_text().splitlines():
        m = _HEADER.match(line)
        if m:
            blocks.append((m.group(1), []))
        blocks[-1][1].append(line)
    out = [nats]
    for table, lines in blocks:
        parts = table.split(".")
        if parts[0] == "nats" or (parts[0] in ("processes", "pipelines") and len(parts) > 1
                                  and parts[1] not in keep):
            continue
        text = "\n".join(lines)
        if table.startswith("processes."):
            name = table.split(".")[1]
            text = re.sub(r"\bport(\s*=\s*)\d+", rf"port\g<1>{ports[name]}", text)
            if restart:
                # The demo's own policy, if it sets one, gives way to the benchmark's budget.
                text, replaced = re.subn(r"(?m)^restart\s*=.*$", f"restart = {restart}", text)
                if not replaced:
                    text = text.replace(lines[0], f"{lines[0]}\nrestart = {restart}", 1)
        elif snapshot_ms is not None and re.search(r'(?m)^use\s*=\s*"snapshot"', text):
            text = re.sub(r"(?m)^interval_ms\s*=.*$", f"interval_ms = {snapshot_ms}", text)
        elif table == "http":
            text = re.sub(r"\bport(\s*=\s*)\d+", rf"port\g<1>{ports['main']}", text)
        # Paths in the demo are relative to the repository; the tree may run from anywhere.
        text = text.replace('"configs/', f'"{ROOT}/configs/')
        out.append(text)
    return "\n".join(out) + "\n"


def snapshot_interval_s(config: Path) -> float:
    """The aggregator's snapshot interval in a config (the phase faults are timed against)."""
    cfg = load_config(config)
    for stage in cfg.pipelines["aggregator"].stages:
        if stage.use == "snapshot":
            return float(stage.config.interval_ms) / 1000
    raise AssertionError(f"{config}: no snapshot stage in the aggregator pipeline")


def external_nats_section(url: str) -> str:
    return f'[nats]\nurl = "{url}"\n'


def embedded_nats_section(port: int, data_dir: Path, restart: str | None = None) -> str:
    return (f'[nats]\nurl = "embedded"\n\n[nats.embedded]\nport = {port}\n'
            f'data_dir = "{data_dir}"\n' + (f"restart = {restart}\n" if restart else ""))


# --------------------------------------------------------------------------- processes


def children_of(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the live children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            # The command name may hold spaces and parentheses: fields start after the last ')'.
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # exited while we looked
        out.append((int(entry), cmd))
    return out


def process_state(pid: int) -> str:
    """The one-letter state of a process (``T`` = stopped), or ``""`` if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split()[0]


class XypipeRun:
    """``python -m xypipe run CONFIG``: the process tree a user starts, its output in a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: Child | None = None
        self._log: Any = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = Child.spawn(
            [sys.executable, "-m", "xypipe", "run", str(self.config_path)],
            stdout=self._log.fileno(), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def exited(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def child_pid(self, process: str) -> int | None:
        """The pid of the live ``--process NAME`` child (it changes when it is restarted)."""
        for pid, cmd in children_of(self.pid):
            if cmd.rstrip().endswith(f"--process {process}") or f"--process {process} " in cmd:
                return pid
        return None

    def nats_pid(self) -> int | None:
        """The pid of the embedded nats-server this tree runs, if any."""
        for pid, cmd in children_of(self.pid):
            if "nats-server" in cmd.split(" ", 1)[0]:
                return pid
        return None

    def log_tail(self, lines: int = 20) -> str:
        """The last warnings, errors and non-JSON lines (tracebacks) of the tree's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        keep = [line for line in text.splitlines() if '"level":"info"' not in line]
        return "\n".join(keep[-lines:])

    async def stop(self) -> None:
        """Ctrl-C, as a user stops it; killed if it does not stop within a bound."""
        proc = self.proc
        if proc is None:
            return
        # A child left stopped by a failed case would hold SIGTERM pending forever.
        for pid, _ in children_of(proc.pid):
            with _gone_ok():
                os.kill(pid, signal.SIGCONT)
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                for pid, _ in children_of(proc.pid):
                    with _gone_ok():
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class _gone_ok:
    """Ignore ``ProcessLookupError``: the process may have exited in between."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is ProcessLookupError


def send(pid: int | None, sig: int) -> None:
    if pid is None:
        raise AssertionError(f"no process to send {signal.Signals(sig).name} to")
    os.kill(pid, sig)


# --------------------------------------------------------------------------- health


@attrs.frozen
class HealthPoint:
    t: float  # time.monotonic()
    state: str  # "ready", "not-ready", "down" (refused), "unresponsive" (no answer in time)
    detail: str


async def get_health(port: int, timeout_s: float = 0.5) -> tuple[str, str]:
    """One ``GET /healthz`` through h11: ``(state, detail)``."""
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                await stream.send_all(
                    conn.send(h11.Request(method="GET", target="/healthz",
                                          headers=[("Host", "127.0.0.1"),
                                                   ("Connection", "close")]))
                    + conn.send(h11.EndOfMessage()))
                status, body = 0, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except trio.TooSlowError:
        return "unresponsive", f"no answer within {timeout_s} s"
    except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
        return "down", f"{type(exc).__name__}: {exc}"
    try:
        doc = json.loads(body)
    except ValueError:
        return "not-ready", f"HTTP {status}, body not JSON: {body[:200]!r}"
    ready = status == 200 and doc.get("ready") is True
    reasons = doc.get("reasons") or doc.get("status", "")
    return ("ready" if ready else "not-ready"), f"HTTP {status} {reasons}"


class HealthWatch:
    """Polls one process's ``/healthz`` and keeps every transition."""

    def __init__(self, name: str, port: int, interval_s: float = 0.05) -> None:
        self.name = name
        self.port = port
        self.interval_s = interval_s
        self.timeline: list[HealthPoint] = []
        self._changed = trio.Event()
        self._scope = trio.CancelScope()

    def close(self) -> None:
        self._scope.cancel()

    @property
    def state(self) -> str:
        return self.timeline[-1].state if self.timeline else "unknown"

    async def run(self) -> None:
        with self._scope:
            await self._poll()

    async def _poll(self) -> None:
        while True:
            state, detail = await get_health(self.port)
            if state != self.state:
                self.timeline.append(HealthPoint(time.monotonic(), state, detail))
                self._changed.set()
                self._changed = trio.Event()
            await trio.sleep(self.interval_s)

    async def changed(self) -> None:
        """Until the next transition."""
        await self._changed.wait()

    async def wait_ready(self, limit_s: float, what: str = "") -> float:
        """Wait until the process answers ready; returns when it did (monotonic)."""
        with trio.move_on_after(limit_s):
            while self.state != "ready":
                await self.changed()
            return self.timeline[-1].t
        raise AssertionError(f"{self.name} /healthz not ready within {limit_s} s {what}; "
                             f"timeline: {self.describe()}")

    async def wait_serving(self, limit_s: float, what: str = "") -> None:
        """Until the process answers and every stage serves (ready, or not ready only for
        want of data: a fresh gateway is not ready before it has seen snapshots)."""
        def serving() -> bool:
            last = self.timeline[-1] if self.timeline else None
            return last is not None and (last.state == "ready" or (
                last.state == "not-ready" and "not serving" not in last.detail))

        with trio.move_on_after(limit_s):
            while not serving():
                await self.changed()
            return
        raise AssertionError(f"{self.name} not serving within {limit_s} s {what}; "
                             f"timeline: {self.describe()}")

    def dip_after(self, t0: float) -> tuple[HealthPoint, HealthPoint] | None:
        """The first not-ready (or unreachable) point from ``t0`` on — the state at ``t0``
        itself if it was not ready — and the first ready point after it, if both happened."""
        at_t0 = next((p for p in reversed(self.timeline) if p.t <= t0), None)
        down = (HealthPoint(t0, at_t0.state, at_t0.detail)
                if at_t0 is not None and at_t0.state != "ready" else
                next((p for p in self.timeline if p.t >= t0 and p.state != "ready"), None))
        if down is None:
            return None
        up = next((p for p in self.timeline if p.t > down.t and p.state == "ready"), None)
        return (down, up) if up is not None else None

    def describe(self, since: float | None = None) -> str:
        """The transitions from ``since`` (default: the first), times relative to it."""
        t0 = since if since is not None else (self.timeline[0].t if self.timeline else 0.0)
        return "; ".join(f"+{p.t - t0:.2f}s {p.state} ({p.detail[:160]})"
                         for p in self.timeline if p.t >= t0) or "nothing recorded"
