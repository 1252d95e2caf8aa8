"""`xypipe run configs/demo.toml` as a user runs it: a real process tree, stopped by Ctrl-C.

The demo's fixed ports (4222, 8080, 8090, 5174) are swapped for free ones so the test can run
beside a developer's own demo.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import trio
from prometheus_client.parser import text_string_to_metric_families

from xypipe import load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    text = (ROOT / "configs" / "demo.toml").read_text()
    # Every `port = N`, at the start of a line or inside an inline table.
    text = re.sub(r"\bport(\s*=\s*)\d+", lambda m: f"port{m.group(1)}{free_port()}", text)
    text = re.sub(r'(?m)^(\s*data_dir\s*=\s*)"[^"]*"', rf'\1"{tmp_path / "nats"}"', text)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


async def wait_healthy(port: int, deadline: float) -> dict:
    """Poll an external process's /healthz until it is ready (bounded by a hang guard)."""
    with trio.fail_after(deadline):
        while True:
            status, body = await trio.to_thread.run_sync(http_get, port, "/healthz")
            if status == 200:
                return json.loads(body)
            await trio.sleep(0.2)


def samples(text: str) -> dict[str, float]:
    """The unlabelled samples of a /metrics page, parsed by prometheus-client's own parser."""
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if not s.labels}


async def wait_metrics(port: int, names: tuple[str, ...], deadline: float) -> dict[str, float]:
    """Poll an external process's /metrics until every counter in ``names`` is above zero."""
    with trio.fail_after(deadline):
        while True:
            _, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
            found = samples(text)
            if all(found.get(n, 0) > 0 for n in names):
                return found
            await trio.sleep(0.5)


def nats_servers_for(data_dir: pathlib.Path) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if "nats-server" in line and str(data_dir) in line]


async def test_demo_runs_serves_health_and_metrics_and_ctrl_c_stops_everything(tmp_path):
    config_path = demo_copy(tmp_path)
    cfg = load_config(config_path)
    ports = {name: cfg.http_for(name).port for name in cfg.process_names()}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for name, port in ports.items():
            health = await wait_healthy(port, 60)
            assert health["ready"], (name, health)
            status, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
            assert status == 200
            assert "pipeline_running" in text and "backpressure_events_total" in text
        assert nats_servers_for(tmp_path / "nats"), "the embedded nats-server should be running"

        # The market flows: the aggregator ingests the publisher's ticks, emits deltas and
        # snapshots, and the gateway is up beside it.
        moving = await wait_metrics(ports["aggregator"], (
            "src_ingest_total", "ticks_out_total", "snapshots_out_total"), 60)
        assert moving["src_ingest_rate"] > 0, moving

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        with trio.fail_after(5):  # the acceptance bound, not a performance measurement
            code = await proc.wait()
        assert code == 0
        assert nats_servers_for(tmp_path / "nats") == []
        for port in ports.values():
            assert (await trio.to_thread.run_sync(http_get, port, "/healthz"))[0] == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()



async def test_a_dying_child_with_restart_policy_never_stops_the_whole_tree_with_an_error(
    tmp_path,
):
    # The default policy restarts it (tests/test_supervisor.py); "never" keeps the strict rule.
    config_path = tmp_path / "tree.toml"
    main_port, child_port = free_port(), free_port()
    config_path.write_text(f"""
[http]
port = {main_port}

[processes.worker]
http = {{ port = {child_port} }}
restart = "never"

[pipelines.steady]
[[pipelines.steady.stages]]
use = "runner_stages:Endless"
interval_ms = 50
[[pipelines.steady.stages]]
use = "xypipe.testing:ListSink"

[pipelines.doomed]
process = "worker"
[[pipelines.doomed.stages]]
use = "runner_stages:Endless"
interval_ms = 50
[[pipelines.doomed.stages]]
use = "runner_stages:Boom"
after = 20
[[pipelines.doomed.stages]]
use = "xypipe.testing:ListSink"
""")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )
    with trio.fail_after(30):
        stderr = b""
        async with proc.stderr:
            while chunk := await proc.stderr.receive_some(65536):
                stderr += chunk
        code = await proc.wait()
    text = stderr.decode()
    assert code == 1
    assert "pipeline 'doomed', stage 'boom' failed: ValueError: cannot handle item 20" in text
    assert "xypipe: process 'worker' exited with status 1; restart policy \"never\"" in text
    assert '"code":"XY-SUP-004"' not in text  # not restarted


async def test_a_killed_parent_takes_its_nats_server_with_it(tmp_path):
    config_path = tmp_path / "solo.toml"
    port = free_port()
    config_path.write_text(f"""
[nats]
url = "embedded"
[nats.embedded]
port = 0
data_dir = "{tmp_path / 'nats'}"
[http]
port = {port}
[pipelines.p]
[[pipelines.p.stages]]
use = "nats_source"
subjects = ["xy.src.tick.>"]
[[pipelines.p.stages]]
use = "nats_sink"
""")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_healthy(port, 60)
        assert nats_servers_for(tmp_path / "nats")
        proc.kill()  # SIGKILL: no cleanup code runs in the parent
        await proc.wait()
        # The orphaned server is not our child, so nothing can await its exit: poll the process
        # table (an exited process shows as "<defunct>" without its arguments).
        with trio.fail_after(10):
            while nats_servers_for(tmp_path / "nats"):  # noqa: ASYNC110
                await trio.sleep(0.1)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def processes_for(config_path: pathlib.Path, process: str) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if str(config_path) in line and f"--process {process}" in line]


async def test_the_demo_heals_a_killed_aggregator_and_the_market_flows_again(tmp_path):
    config_path = demo_copy(tmp_path)
    cfg = load_config(config_path)
    ports = {name: cfg.http_for(name).port for name in cfg.process_names()}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await wait_metrics(ports["aggregator"], ("ticks_out_total",), 60)
        [aggregator] = processes_for(config_path, "aggregator")
        [gateway] = processes_for(config_path, "gateway")
        os.kill(aggregator, signal.SIGKILL)
        # A fresh process (its counters start at zero) publishes deltas again.
        with trio.fail_after(60):
            while processes_for(config_path, "aggregator") in ([], [aggregator]):  # noqa: ASYNC110
                await trio.sleep(0.1)
        moving = await wait_metrics(ports["aggregator"], ("ticks_out_total",), 60)
        assert moving["ticks_out_total"] > 0
        assert processes_for(config_path, "gateway") == [gateway]  # untouched
        _, text = await trio.to_thread.run_sync(http_get, ports["main"], "/metrics")
        restarts = {s.labels["process"]: s.value for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == "process_restarts_total"}
        assert restarts == {"aggregator": 1.0, "gateway": 0.0, "admin": 0.0, "nats": 0.0}

        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await proc.wait() == 0
        assert nats_servers_for(tmp_path / "nats") == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_page_s_projections_are_declared_for_every_group_it_shows() -> None:
    """The ui stage names projections; the aggregator's snapshot stage must publish each of them
    for the groups the panels use (a missing one would leave a panel empty, not fail)."""
    import tomllib

    from xypipe._md.projection import ProjectionSpec
    from xypipe._publisher import MarketSim

    doc = tomllib.loads((ROOT / "configs" / "demo.toml").read_text())
    snapshot = next(s for s in doc["pipelines"]["aggregator"]["stages"] if s["use"] == "snapshot")
    ui = next(s for s in doc["pipelines"]["ui"]["stages"] if s["use"] == "ui_server")
    specs = [ProjectionSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
             for p in snapshot["projections"]]
    declared = {s.stream for s in specs}
    groups = ui["groups"]
    wanted = {f"{g}/{ui['watch_projection']}" for g in groups[:2]}
    wanted |= {f"{g}/{ui['movers_projection']}" for g in groups}
    assert wanted <= declared, wanted - declared
    # A watchlist names symbols of its group in the demo market (VENUE.SYMBOL).
    market = {f"{c.venue}.{c.symbol}": c.group for c in MarketSim(500, seed=1).contracts()}
    for s in specs:
        assert all(market.get(k) == s.group for k in s.symbols), (s.stream, s.symbols)
