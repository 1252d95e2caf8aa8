"""The Prometheus assets in infra/prometheus/ are valid, their alerts fire when they should, and
the localhost variant with every rule loaded works against a real demo tree.

promtool (Debian's prometheus package, scripts/setup_prometheus.sh) checks both scrape configs
and the rule files, and runs the rules' unit tests (infra/prometheus/tests/: every alert fires
on a series that should fire it and stays quiet on its look-alikes). Then ``xypipe run`` of a
copy of configs/demo.toml on free ports is scraped by a real Prometheus with
prometheus.local.yml (its targets moved to the copy's ports, nothing else changed): every target
is up, every rule evaluates without error, the recording rules give the end-to-end percentiles
and rates from the live series, and the counters the alerts read are there at 0.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from test_demo import demo_copy, http_get, wait_healthy
from test_prometheus_scrape import _run_prometheus, _until, api, free_port

from xypipe import load_config
from xypipe.contracts import GroupRef, Ping, ServerFrame, Subscribe

sys.path.insert(0, str(Path(__file__).resolve().parent / "gateway"))
from gw_support import ws_client

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "infra" / "prometheus"
CONFIGS = sorted(PROM.glob("prometheus.*.yml"))
RULES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.test.yml"))
DEADLINE_S = 120  # hang guard for the live part; it ends as soon as every condition holds


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        raise RuntimeError("promtool not found: run scripts/setup_prometheus.sh (Debian's "
                           "prometheus package ships it)")
    return binary


def run_promtool(promtool: str, *args: str | Path, cwd: Path = PROM) -> str:
    done = subprocess.run([promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{out}"
    return out


# --------------------------------------------------------------------------- promtool


def test_the_assets_are_where_the_docs_say():
    assert [c.name for c in CONFIGS] == ["prometheus.compose.yml", "prometheus.local.yml"]
    assert {r.name for r in RULES} == {"xypipe-alerts.yml", "xypipe-recording.yml"}
    assert RULE_TESTS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_accepts_each_scrape_config_and_the_rule_files_it_loads(promtool, config):
    out = run_promtool(promtool, "check", "config", config)
    # Both variants load every rule file (rule_files are read relative to the config).
    for rule_file in RULES:
        assert f"rules/{rule_file.name}" in out, out


def test_promtool_accepts_the_rule_files(promtool):
    out = run_promtool(promtool, "check", "rules", *RULES)
    assert out.count("SUCCESS") == len(RULES), out


def test_every_alert_fires_in_the_rule_unit_tests(promtool):
    run_promtool(promtool, "test", "rules", *RULE_TESTS)
    tested = {case["alertname"] for path in RULE_TESTS
              for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    alerts = {rule["alert"] for path in RULES
              for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    assert alerts - tested == set(), "alerts no unit test shows firing"


def test_the_unit_tests_fail_when_an_alert_would_not_fire(promtool, tmp_path):
    """The unit tests can fail: with one alert's threshold out of reach, promtool says so."""
    shutil.copytree(PROM, tmp_path / "prometheus")
    alerts = tmp_path / "prometheus" / "rules" / "xypipe-alerts.yml"
    text = alerts.read_text()
    assert "(increase(src_gap_total[5m])) > 0" in text
    alerts.write_text(text.replace("(increase(src_gap_total[5m])) > 0",
                                   "(increase(src_gap_total[5m])) > 1000"))
    done = subprocess.run([promtool, "test", "rules", "tests/xypipe-alerts.test.yml"],
                          cwd=tmp_path / "prometheus", capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0
    assert "XySourceGaps" in done.stdout + done.stderr


# --------------------------------------------------------------------------- a real demo tree


def local_targets() -> dict[str, list[str]]:
    cfg = yaml.safe_load((PROM / "prometheus.local.yml").read_text())
    return {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in cfg["scrape_configs"]}


def test_the_local_variant_scrapes_every_process_of_the_demo_on_its_ports():
    cfg = load_config(ROOT / "configs" / "demo.toml")
    ports = {cfg.http_for(name).port for name in cfg.process_names()} | {cfg.http.port}
    scraped = {int(t.rpartition(":")[2]) for ts in local_targets().values() for t in ts}
    assert scraped == ports
    assert all(t.startswith("127.0.0.1:") for ts in local_targets().values() for t in ts)


def moved_config(tmp: Path, moved: dict[int, int]) -> Path:
    """prometheus.local.yml with its targets on the demo copy's ports, scraping every second."""
    cfg = yaml.safe_load((PROM / "prometheus.local.yml").read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="900ms", evaluation_interval="1s")
    cfg["rule_files"] = [str(PROM / r) for r in cfg["rule_files"]]
    for job in cfg["scrape_configs"]:
        for sc in job["static_configs"]:
            sc["targets"] = [f"127.0.0.1:{moved[int(t.rpartition(':')[2])]}"
                             for t in sc["targets"]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def query(port: int, promql: str) -> list[dict[str, Any]] | None:
    data = api(port, "query", query=promql)
    return None if data is None else list(data.get("result", []))


def values(port: int, promql: str) -> dict[str, float]:
    """``{label set as JSON: value}`` of an instant query; NaN values left out."""
    out = {}
    for r in query(port, promql) or []:
        v = float(r["value"][1])
        if not math.isnan(v):
            out[json.dumps(r["metric"], sort_keys=True)] = v
    return out


async def browser(gateway_port: int, ui_port: int) -> None:
    """Subscribe as the demo page does and read (with its heartbeat) until cancelled, so the
    gateway forwards deltas and observes their latency."""
    status, body = await trio.to_thread.run_sync(http_get, ui_port, "/dev/token")
    assert status == 200, body
    async with ws_client(gateway_port) as c:
        await c.hello(json.loads(body)["token"])
        await c.send(subscribe=Subscribe(groups=[GroupRef(group=g)
                                                 for g in ("equities", "fx", "crypto")]))
        async with trio.open_nursery() as nursery:

            async def heartbeat() -> None:
                while True:
                    await trio.sleep(2)
                    await c.send(ping=Ping(ts_us=1))

            nursery.start_soon(heartbeat)
            while True:
                frame: ServerFrame = await c.recv()
                assert not frame.HasField("error") or not frame.error.fatal, frame.error


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[tuple[dict[int, int], int]]:
    """A running demo tree: original port -> the copy's port, and the UI's port."""
    original = load_config(ROOT / "configs" / "demo.toml")
    config_path = demo_copy(tmp_path)
    cfg = load_config(config_path)
    moved = {original.http_for(n).port: cfg.http_for(n).port for n in cfg.process_names()}
    moved[original.http.port] = cfg.http.port
    ui_port = next(s.config.port for p in cfg.pipelines.values() for s in p.stages
                   if s.use == "ui_server")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for port in moved.values():
            await wait_healthy(port, 90)
        yield moved, ui_port
    finally:
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(15):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def rule_groups() -> dict[str, list[str]]:
    return {g["name"]: [r.get("record") or r["alert"] for r in g["rules"]]
            for path in RULES for g in yaml.safe_load(path.read_text())["groups"]}


def live_state(port: int) -> dict[str, Any] | None:
    """Everything the test waits for, or None while something is missing."""
    targets = api(port, "targets")
    up = {t["labels"]["job"] for t in (targets or {}).get("activeTargets", [])
          if t.get("health") == "up"}
    if up != set(local_targets()):
        return None
    groups = (api(port, "rules") or {}).get("groups", [])
    loaded = {g["name"]: [r["name"] for r in g["rules"]] for g in groups}
    health = {r["name"]: (r.get("health"), r.get("lastError", "")) for g in groups
              for r in g["rules"]}
    if loaded != rule_groups() or any(h != "ok" for h, _ in health.values()):
        return None
    state = {
        "e2e": values(port, 'point:e2e_latency_seconds:p95{point="gateway_send"}'),
        "ticks": values(port, "job:ticks_out:rate1m"),
        "forwarded": values(port, "job:xy_ws_messages_forwarded:rate1m"),
        "ingest": values(port, "job:src_ingest:rate1m"),
        "restarts": values(port, "process_restarts_total"),
        "transitions": values(port, "count by (job, scope) (backpressure_events_total)"),
        "stale": values(port, "stream_stale_total"),
    }
    if not (state["e2e"] and state["ticks"] and state["forwarded"] and state["ingest"]):
        return None
    state["errors"] = {n: e for n, (_, e) in health.items() if e}
    return state


@pytest.mark.prometheus
async def test_the_local_config_and_every_rule_run_against_a_real_demo(demo, tmp_path):
    moved, ui_port = demo
    gateway_port = moved[8080]
    prom_port = free_port()
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus not found: run scripts/setup_prometheus.sh"
    cfg = moved_config(tmp_path, moved)
    async with trio.open_nursery() as nursery:
        prom = await nursery.start(_run_prometheus, binary, cfg, prom_port, tmp_path)
        try:
            async with trio.open_nursery() as clients:
                clients.start_soon(browser, gateway_port, ui_port)
                with trio.fail_after(DEADLINE_S):
                    state = await _until(prom_port, live_state)
                clients.cancel_scope.cancel()
        finally:
            prom.terminate()  # _run_prometheus reaps it
    print("recorded and initialised series:", json.dumps(state, indent=1))
    assert state["errors"] == {}
    assert all(0 < v < 5 for v in state["e2e"].values()), state["e2e"]
    assert all(v > 0 for v in state["ticks"].values())
    # The counters the alerts take increase() of exist, at 0, before anything happened.
    restarts = {json.loads(k)["process"]: v for k, v in state["restarts"].items()}
    assert restarts == {"nats": 0.0, "aggregator": 0.0, "gateway": 0.0, "admin": 0.0}
    transitions = {json.loads(k)["scope"]: v for k, v in state["transitions"].items()}
    assert transitions == {"pipeline:aggregator": 6, "pipeline:gateway": 6,
                           "pipeline:gateway:connection": 6, "pipeline:publisher": 6,
                           "pipeline:ui": 6, "pipeline:admin": 6}
    assert len(state["stale"]) >= 2, state["stale"]  # the aggregator's XY_SRC, the gateway's
