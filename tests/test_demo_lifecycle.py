"""The demo's lifecycle as a new user runs it, from a fresh checkout:

``xypipe demo up`` → ``demo smoke`` passes → ``demo observe`` shows the metrics in Prometheus
(asserted through its HTTP API) → ``demo down`` leaves no process behind (and ``--wipe`` no
data).

The checkout is a fresh copy of the repository's configs, page and Prometheus assets in a
temporary directory (nothing under ``var/`` yet) with the demo's fixed ports moved to free ones,
so the test runs beside a developer's own demo. Every command is the real CLI in its own
process; every process the demo started is found through the records it keeps and the process
table, and after ``down`` none may be left.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import sys
from collections.abc import Iterator

import psutil
import pytest
import trio
import yaml

from xypipe._datadir_lock import holder
from xypipe._demo._layout import Endpoint
from xypipe._demo._observe import scrape_config
from xypipe._demo._probe import get
from xypipe._nats import connect
from xypipe._nats_keys import seed_file_of

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROM = ROOT / "infra" / "prometheus"
GUARD_S = 180  # hang guard for one command on a loaded machine; each returns when done
SMOKE_CHECKS = {"demo", "healthz main", "healthz aggregator", "healthz gateway", "healthz admin",
                "page", "nats", "websocket"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_checkout(root: pathlib.Path) -> dict[int, int]:
    """What a clone holds for the demo, on free ports: the original port -> its new one."""
    shutil.copytree(ROOT / "configs", root / "configs")
    shutil.copytree(ROOT / "ui-static", root / "ui-static")
    shutil.copytree(PROM, root / "infra" / "prometheus")
    path = root / "configs" / "demo.toml"
    moved: dict[int, int] = {}

    def move(m: re.Match[str]) -> str:
        moved[int(m.group(2))] = free_port()
        return f"port{m.group(1)}{moved[int(m.group(2))]}"

    text = re.sub(r"\bport(\s*=\s*)(\d+)", move, path.read_text())
    # The page's WebSocket address names the gateway's port too.
    text = text.replace("ws://{host}:8080/ws", f"ws://{{host}}:{moved[8080]}/ws")
    path.write_text(text)
    return moved


async def xypipe(cwd: pathlib.Path, *args: str) -> tuple[int, str, str]:
    with trio.fail_after(GUARD_S):
        done = await trio.run_process(
            [sys.executable, "-m", "xypipe", "demo", *args], cwd=cwd, check=False,
            capture_stdout=True, capture_stderr=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def processes_of(root: pathlib.Path) -> list[psutil.Process]:
    """Every process whose command line or working directory is in the checkout."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
        if str(root) in text and p.pid != os.getpid():
            found.append(p)
    return found


def started_by_the_demo(root: pathlib.Path) -> list[psutil.Process]:
    """The processes the state records name, with every descendant of each."""
    out = []
    for record in (root / "var" / "demo").glob("*.json"):
        pid = json.loads(record.read_text())["process"]["pid"]
        proc = psutil.Process(pid)
        out += [proc, *proc.children(recursive=True)]
    return out


@pytest.fixture
def checkout(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, dict[int, int]]]:
    root = tmp_path / "xypipe"
    moved = fresh_checkout(root)
    try:
        yield root, moved
    finally:
        left = processes_of(root)
        for p in left:  # a failed test must not leave a demo running on the machine
            p.kill()
        psutil.wait_procs(left, timeout=10)
        assert left == [], f"processes left behind: {left}"


async def live_streams(nats_url: str, key: pathlib.Path) -> dict[str, dict]:
    """Every stream of the running demo with its configuration, through JetStream's own API
    (the superuser role may ask it)."""
    async with connect(nats_url, name="lifecycle-test", nkeys_seed=str(key)) as nc:
        reply = await nc.request("$JS.API.STREAM.LIST", b"{}", timeout=5)
    doc = json.loads(reply.data)
    return {s["config"]["name"]: s["config"] for s in doc["streams"]}


async def prometheus_shows_the_demo(port: int, jobs: set[str]) -> dict[str, float]:
    """Poll Prometheus's HTTP API until every job is up and the market's counters are there."""
    base = f"http://127.0.0.1:{port}/api/v1/query?query="
    while True:
        found: dict[str, float] = {}
        for name, promql in (("up", "up"), ("ticks", "ticks_out_total"),
                             ("forwarded", "xy_ws_messages_forwarded_total"),
                             ("ingested", "src_ingest_total"),
                             ("process_up", "process_up")):
            status, body = await get(base + promql)
            result = json.loads(body)["data"]["result"] if status == 200 else []
            for r in result:
                label = r["metric"].get("job", "") + "/" + r["metric"].get("process", "")
                found[f"{name}:{label}"] = float(r["value"][1])
        up = {k.split(":")[1].split("/")[0] for k, v in found.items()
              if k.startswith("up:") and v == 1}
        if up == jobs and any(k.startswith("ticks:") and v > 0 for k, v in found.items()) \
                and any(k.startswith("forwarded:") and v > 0 for k, v in found.items()):
            return found
        await trio.sleep(0.5)


@pytest.mark.nats
@pytest.mark.prometheus
async def test_up_smoke_observe_down_from_a_fresh_checkout(checkout):
    root, moved = checkout
    assert shutil.which("prometheus"), "prometheus not found: run scripts/setup_prometheus.sh"
    assert not (root / "var").exists()

    # -- up: in the background, ready, the URLs printed; a second up is refused.
    code, out, err = await xypipe(root, "up")
    assert code == 0, out + err
    page = f"http://127.0.0.1:{moved[5174]}/"
    assert f"xypipe demo: up — open {page} in a browser" in out
    for port in (moved[8080], moved[8090], moved[8091]):
        assert f"http://127.0.0.1:{port}/healthz" in out
    assert f"nats://127.0.0.1:{moved[4222]} (data in var/nats)" in out
    tree = json.loads((root / "var" / "demo" / "demo.json").read_text())
    assert psutil.Process(tree["process"]["pid"]).is_running()
    code, out, err = await xypipe(root, "up")
    assert code == 1 and "[XY-DEMO-001]" in err and "already up" in err, out + err

    # -- smoke: every part, one verdict line each.
    code, out, err = await xypipe(root, "smoke")
    assert code == 0, out + err
    verdicts = {line[6:26].strip(): line[:5].strip() for line in out.splitlines()
                if line.startswith(("ok ", "FAIL "))}
    assert verdicts == dict.fromkeys(SMOKE_CHECKS, "ok"), out
    assert re.search(r"websocket .*3 groups \(equities, fx, crypto\) synced from their "
                     r"snapshots, \d+ deltas in sequence, [1-9]\d* checksums verified", out), out
    assert f"xypipe demo smoke: all {len(SMOKE_CHECKS)} checks passed" in out

    # Bounded storage, live: every stream the demo made has a byte and an age limit.
    streams = await live_streams(f"nats://127.0.0.1:{moved[4222]}",
                                 seed_file_of(root / "var" / "nats", "superuser"))
    assert {"XY_SRC", "XY_MD_SNAPSHOT", "XY_AGG_SEQ"} <= streams.keys()
    for name, config in streams.items():
        if name.startswith("KV_"):  # one value per key (or a short history) per bucket
            assert 0 < config["max_msgs_per_subject"] <= 16, (name, config)
        else:
            assert 0 < config["max_bytes"] <= 128 << 20, (name, config)
            assert 0 < config["max_age"] <= 3600 * 10**9, (name, config)

    # -- more load, then Prometheus on every process.
    code, out, err = await xypipe(root, "publisher", "start", "--rate", "200")
    assert code == 0 and "publisher running" in out, out + err
    prom_port = free_port()
    code, out, err = await xypipe(root, "observe", "--port", str(prom_port))
    assert code == 0, out + err
    assert f"Prometheus at http://127.0.0.1:{prom_port}/ — every target up" in out
    with trio.fail_after(GUARD_S):
        seen = await prometheus_shows_the_demo(prom_port,
                                                {"demo", "aggregator", "gateway", "admin"})
    # The supervisor reports its children and NATS as up.
    assert {k for k, v in seen.items() if k.startswith("process_up:") and v == 1} == {
        "process_up:demo/admin", "process_up:demo/aggregator", "process_up:demo/gateway",
        "process_up:demo/nats"}
    code, out, err = await xypipe(root, "observe", "--port", str(free_port()))
    assert code == 1 and "[XY-DEMO-008]" in err, out + err

    # -- down: everything that was started is gone, NATS stopped last by the supervisor.
    started = started_by_the_demo(root)
    names = {p.name() for p in started}
    assert {"nats-server", "prometheus"} <= names, names
    assert len(started) == 7, started  # xypipe run, 3 children, nats-server, publisher, prometheus
    code, out, err = await xypipe(root, "down")
    assert code == 0, out + err
    assert "stopped the extra publisher" in out and "stopped Prometheus" in out
    assert re.search(r"stopped the demo: xypipe run \(pid \d+\), .*nats-server", out), out
    assert "killed" not in out
    assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert processes_of(root) == []
    assert holder(root / "var" / "nats") is None
    assert not list((root / "var" / "demo").glob("*.json"))
    log = (root / "var" / "demo" / "demo.log").read_text()
    stopped = [json.loads(line)["process"] for line in log.splitlines()
               if line.startswith("{") and json.loads(line).get("msg") == "process stopped"]
    assert stopped[-1] == "nats", stopped

    # -- after down: smoke fails clearly; down again is a no-op; --wipe removes the data.
    code, out, err = await xypipe(root, "smoke")
    assert code == 1 and out.startswith("FAIL  demo"), out + err
    code, out, err = await xypipe(root, "down", "--wipe")
    assert code == 0 and "not up" in out, out + err
    assert not (root / "var" / "nats").exists() and not (root / "var" / "demo").exists()


def test_the_scrape_config_of_the_stock_demo_is_the_committed_local_one():
    """``demo observe`` writes prometheus.local.yml back for configs/demo.toml's own ports."""
    from xypipe import load_config
    from xypipe._demo._layout import layout_of

    template = yaml.safe_load((PROM / "prometheus.local.yml").read_text())
    cfg = scrape_config(template, PROM, layout_of(load_config(ROOT / "configs" /
                                                                "demo.toml")).endpoints)
    assert cfg["scrape_configs"] == template["scrape_configs"]
    assert cfg["global"] == template["global"]
    assert cfg["rule_files"] == [str(PROM / "rules" / "*.yml")]


def test_the_scrape_config_follows_moved_ports_and_adds_unknown_processes():
    template = yaml.safe_load((PROM / "prometheus.local.yml").read_text())
    endpoints = [Endpoint("gateway", "gateway", "127.0.0.1", 18080),
                 Endpoint("main", "demo", "127.0.0.1", 18091),
                 Endpoint("extra", "extra", "127.0.0.1", 18099, tls=True)]
    jobs = {j["job_name"]: j for j in scrape_config(template, PROM, endpoints)["scrape_configs"]}
    assert list(jobs) == ["gateway", "demo", "extra"]  # no aggregator process: no job
    assert jobs["gateway"]["static_configs"] == [{"targets": ["127.0.0.1:18080"]}]
    assert jobs["extra"]["scheme"] == "https" and "scheme" not in jobs["demo"]


async def test_commands_against_no_demo_say_so(tmp_path):
    code, out, err = await xypipe(tmp_path, "observe")
    assert code == 1 and "the demo is not up" in err and "[XY-DEMO-002]" in err, out + err
    code, out, err = await xypipe(tmp_path, "publisher", "start")
    assert code == 1 and "[XY-DEMO-002]" in err, out + err
    code, out, err = await xypipe(tmp_path, "publisher", "stop")
    assert code == 0 and "no extra publisher is running" in out, out + err
    code, out, err = await xypipe(tmp_path, "down")
    assert code == 0 and "nothing to stop" in out, out + err


async def test_up_refuses_a_config_with_ports_picked_at_start(tmp_path):
    config = tmp_path / "zero.toml"
    config.write_text('[http]\nport = 0\n[[pipelines.p.stages]]\nuse = "ui_server"\nport = 0\n')
    code, out, err = await xypipe(tmp_path, "up", str(config))
    assert code == 1 and "[http] port is 0" in err and "[XY-DEMO-005]" in err, out + err
    assert not (tmp_path / "var" / "demo" / "demo.json").exists()


async def test_up_reports_why_the_demo_exited_while_starting(tmp_path):
    """A tree that fails at start: `up` quotes the line of its log that says why."""
    config = tmp_path / "broken.toml"
    config.write_text(f'[http]\nport = {free_port()}\n[[pipelines.p.stages]]\n'
                      f'use = "ui_server"\nport = {free_port()}\nroot = "no-such-dir"\n')
    code, out, err = await xypipe(tmp_path, "up", str(config), "--timeout", "60")
    assert code == 1 and "[XY-DEMO-003]" in err, out + err
    assert "the demo exited with status 1 while starting: xypipe: pipeline 'p', stage " \
           "'ui_server' failed" in err, err
    assert processes_of(tmp_path) == []
