"""``[processes.NAME] workers``: the "auto" rule, the effective count per process, the config
errors, what ``xypipe check`` shows, the ``worker`` label and a port shared with SO_REUSEPORT."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import xypipe
from xypipe._cli import main
from xypipe._config import WorkerPlan, load_config
from xypipe._errors import ConfigError
from xypipe._http import HttpServer, Request, Response
from xypipe._metrics import Metrics
from xypipe._worker import MAX_WORKERS, WorkerIdentity, auto_workers

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("cores", "others", "expected"), [
    (2, 2, 1),   # the demo on this machine: aggregator and admin take both cores
    (2, 1, 1),
    (2, 0, 2),
    (8, 2, 6),
    (1, 0, 1),
    (4, 9, 1),   # never fewer than one
    (1000, 0, MAX_WORKERS),
])
def test_auto_is_the_cores_the_other_processes_leave_free(cores, others, expected):
    assert auto_workers(cores, others) == expected


def config(processes: dict[str, dict[str, Any]], *, gateway: str = "gateway",
           http: dict[str, Any] | None = None) -> xypipe.AppConfig:
    """A config whose process ``gateway`` runs a gateway stage and every other process of
    ``processes`` a plain pipeline."""
    pipelines: dict[str, Any] = {}
    for name in processes:
        if name == gateway:
            stages = [{"use": "nats_source", "subjects": ["xy.md.>"]},
                      {"use": "gateway", "public_key": "configs/dev-keys/gateway.pub.pem",
                       "allowed_origins": ["*"]}]
        else:
            stages = [{"use": "nats_source", "subjects": ["xy.src.>"]},
                      {"use": "xypipe.testing:ListSink"}]
        pipelines[name] = {"process": name, "stages": stages}
    return xypipe.parse_config({"nats": {"url": "nats://127.0.0.1:4222"},
                                "http": http or {"port": 9100}, "processes": processes,
                                "pipelines": pipelines}, "w.toml")


GW = {"http": {"port": 8080}}


def test_a_gateway_process_defaults_to_auto_and_any_other_to_one():
    cfg = config({"gateway": GW, "aggregator": {"http": {"port": 8090}},
                  "admin": {"http": {"port": 8092}}})
    assert cfg.worker_plan("gateway", cores=2) == WorkerPlan(1, "auto", None)
    assert cfg.worker_plan("gateway", cores=8) == WorkerPlan(6, "auto", 8180)
    assert cfg.worker_plan("aggregator", cores=8) == WorkerPlan(1, "default", None)
    assert cfg.worker_plan("main") == WorkerPlan(1, "default", None)


def test_other_processes_count_with_their_own_workers_and_auto_elsewhere_too():
    cfg = config({"gateway": GW, "aggregator": {"http": {"port": 8090}, "workers": 2},
                  "admin": {"http": {"port": 8192}, "workers": "auto"}})
    # 8 cores - 2 aggregators - 1 admin (an "auto" elsewhere counts one core).
    assert cfg.worker_plan("gateway", cores=8).count == 5
    assert cfg.worker_plan("aggregator", cores=8) == WorkerPlan(2, "set", 8190)
    # admin: 8 - 2 aggregators - 1 gateway.
    assert cfg.worker_plan("admin", cores=8).count == 5


def test_an_explicit_count_and_metrics_port_are_taken_as_given():
    cfg = config({"gateway": {**GW, "workers": 3, "metrics_port": 9300},
                  "admin": {"http": {"port": 8092}, "workers": 1, "metrics_port": 9400}})
    assert cfg.worker_plan("gateway", cores=2) == WorkerPlan(3, "set", 9300)
    assert cfg.private_metrics_port("gateway", WorkerIdentity("gateway", 2, 3)) == 9302
    # A metrics_port set for a single worker is served too (the scrape config stays the same
    # whatever the count).
    assert cfg.private_metrics_port("admin", WorkerIdentity("admin", 0, 1)) == 9400


def test_auto_on_a_port_picked_at_start_is_one_worker():
    cfg = config({"gateway": {"http": {"port": 0}}})
    assert cfg.worker_plan("gateway", cores=64) == WorkerPlan(1, "auto", None)


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0"), ("many", '"many"'), (True, "true"), (2.5, "2.5"), (MAX_WORKERS + 1, "257"),
])
def test_a_wrong_worker_count_names_the_key_and_what_fits(value, shown):
    with pytest.raises(ConfigError) as caught:
        config({"gateway": {**GW, "workers": value}})
    assert str(caught.value).splitlines()[0] == (
        f'w.toml: processes.gateway.workers: expected an integer 1..{MAX_WORKERS} or "auto", '
        f"got {shown}")
    assert caught.value.code == "XY-CFG-001"


def test_several_workers_need_a_fixed_port_and_free_private_ports():
    with pytest.raises(ConfigError) as caught:
        config({"gateway": {"http": {"port": 0}, "workers": 2}})
    assert "processes.gateway.workers: expected 1 while http.port is 0, got 2" in str(
        caught.value)
    with pytest.raises(ConfigError) as caught:
        config({"gateway": {**GW, "workers": 2}, "aggregator": {"http": {"port": 8181}}})
    assert ("processes.gateway.workers: worker 1's private /metrics port 8181 "
            "(metrics_port 8180 + index) is processes.aggregator.http.port") in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        config({"gateway": {**GW, "workers": 4, "metrics_port": 65534}})
    assert ("processes.gateway.metrics_port: the private /metrics ports of 4 workers "
            "(65534..65537) go past 65535") in str(caught.value)


def test_check_shows_the_effective_worker_count(tmp_path, capsys):
    text = (ROOT / "configs" / "demo.toml").read_text().replace(
        "[processes.gateway]\n", "[processes.gateway]\nworkers = 3\nmetrics_port = 8180\n", 1)
    path = tmp_path / "demo.toml"
    path.write_text(text.replace('"configs/', f'"{ROOT}/configs/'))
    load_config(path)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "processes: admin, aggregator, gateway (workers: 3), main)" in out


def test_a_worker_label_is_on_every_rendered_sample_and_only_there():
    m = Metrics()
    m.counter("ws_connections", "d", ["outcome"]).labels("accepted").inc(3)
    m.gauge("ws_active", "d").set(2)
    m.const_labels["worker"] = "1"
    families = list(text_string_to_metric_families(m.render().decode()))
    samples = [s for f in families for s in f.samples]
    assert samples and all(s.labels.get("worker") == "1" for s in samples)
    assert {"outcome": "accepted", "worker": "1"} in [s.labels for s in samples]
    # What the process reads of its own registry is unchanged.
    assert m.sample("ws_connections_total", {"outcome": "accepted"}) == 3


async def test_two_servers_share_one_port_and_the_kernel_spreads_connections():
    from test_demo import free_port, http_get

    port = free_port()
    servers = [HttpServer("127.0.0.1", port, reuse_port=True) for _ in range(2)]
    for i, server in enumerate(servers):
        async def who(_req: Request, i: int = i) -> Response:
            return Response.text(str(i))

        server.route("/who", who)
    answers: list[str] = []
    async with trio.open_nursery() as nursery:
        for server in servers:
            await nursery.start(server.serve)
        with trio.fail_after(30):
            # Each request is a new connection from a new source port: hashed to either socket.
            while len(answers) < 64 or set(answers) != {"0", "1"}:
                status, body = await trio.to_thread.run_sync(http_get, port, "/who")
                assert status == 200
                answers.append(body)
        nursery.cancel_scope.cancel()
    assert {"0", "1"} == set(answers)


async def test_a_port_taken_without_reuse_port_is_not_shared():
    from test_demo import free_port

    port = free_port()
    plain = HttpServer("127.0.0.1", port)
    async with trio.open_nursery() as nursery:
        await nursery.start(plain.serve)
        with pytest.raises(OSError):
            await nursery.start(HttpServer("127.0.0.1", port, reuse_port=True).serve)
        nursery.cancel_scope.cancel()


def test_the_demo_layout_watches_and_scrapes_each_worker_on_its_own_port(tmp_path):
    from xypipe._demo._layout import layout_of
    from xypipe._demo._observe import scrape_config

    text = (ROOT / "configs" / "demo.toml").read_text().replace(
        "[processes.gateway]\n", "[processes.gateway]\nworkers = 2\nmetrics_port = 8180\n", 1)
    path = tmp_path / "demo.toml"
    path.write_text(text.replace('"configs/', f'"{ROOT}/configs/'))
    layout = layout_of(load_config(path))
    gateways = [(e.process, e.job, e.port) for e in layout.endpoints if e.job == "gateway"]
    assert gateways == [("gateway.0", "gateway", 8180), ("gateway.1", "gateway", 8181)]
    ports = layout.ports()
    assert ports[8080] == "gateway HTTP (its 2 workers)" and ports[8181] == "gateway.1 HTTP"
    cfg = scrape_config({"scrape_configs": [{"job_name": "gateway"}]}, tmp_path,
                        layout.endpoints)
    jobs = {j["job_name"]: j["static_configs"] for j in cfg["scrape_configs"]}
    assert jobs["gateway"] == [{"targets": ["127.0.0.1:8180", "127.0.0.1:8181"]}]


def test_the_main_runner_of_a_tree_shows_every_worker_on_its_healthz():
    cfg = config({"gateway": GW})
    runner = xypipe.Runner(cfg, process="gateway", worker=WorkerIdentity("gateway", 1, 2),
                           supervised=lambda: {"gateway.0": True, "gateway.1": False})
    doc = runner.health()
    assert doc["worker"] == 1
    assert doc["processes"] == {"gateway.0": True, "gateway.1": False}
    assert runner.metrics.const_labels == {"worker": "1"}
    single = xypipe.Runner(cfg, process="gateway", worker=WorkerIdentity("gateway", 0, 1))
    assert "worker" not in single.health() and not single.metrics.const_labels


def plain_process(port: int, metrics_port: int) -> xypipe.AppConfig:
    """One child process ``w`` running a counter into a list, with a fixed port."""
    return xypipe.parse_config({
        "http": {"port": 0},
        "processes": {"w": {"http": {"port": port}, "workers": 2,
                            "metrics_port": metrics_port}},
        "pipelines": {"p": {"process": "w", "stages": [
            {"use": "runner_stages:Endless", "interval_ms": 20},
            {"use": "xypipe.testing:ListSink"}]}},
    }, "w.toml")


async def test_two_runners_share_the_port_and_each_serves_its_own(caplog):
    import socket

    from test_demo import free_port, http_get

    # Worker 1's private port (private + 1) is taken: it keeps serving the shared port. A
    # free port whose neighbour is busy is tried again with another one.
    taken = socket.socket()
    for _ in range(50):
        port, private = free_port(), free_port()
        try:
            taken.bind(("127.0.0.1", private + 1))
            break
        except OSError:
            continue
    else:
        raise AssertionError("no free port with a free neighbour in 50 tries")
    cfg = plain_process(port, private)
    caplog.set_level(logging.INFO, logger="xypipe")
    try:
        taken.listen()
        runners = [xypipe.Runner(cfg, process="w", worker=WorkerIdentity("w", i, 2))
                   for i in range(2)]
        async with trio.open_nursery() as nursery:
            for r in runners:
                await nursery.start(r.run)
            status, body = await trio.to_thread.run_sync(http_get, private, "/healthz")
            assert status == 200 and json.loads(body)["worker"] == 0
            _, text = await trio.to_thread.run_sync(http_get, private, "/metrics")
            assert 'pipeline_running{pipeline="p",worker="0"} 1.0' in text
            seen: set[int] = set()
            with trio.fail_after(30):
                while seen != {0, 1}:
                    status, body = await trio.to_thread.run_sync(http_get, port, "/healthz")
                    seen.add(json.loads(body)["worker"])
            for r in runners:
                r.stop()
    finally:
        taken.close()
    warned = [getattr(r, "xy_fields", {}) for r in caplog.records
              if getattr(r, "xy_fields", {}).get("code") == "XY-SUP-022"]
    assert len(warned) == 1 and warned[0]["worker"] == 1 and warned[0]["port"] == private + 1


async def test_where_ports_cannot_be_shared_auto_is_one_and_sharing_is_refused(monkeypatch):
    import xypipe._config
    import xypipe._http
    from xypipe._errors import SharedPortUnsupported

    monkeypatch.setattr(xypipe._config, "ports_shared", lambda: False)
    monkeypatch.setattr(xypipe._http, "ports_shared", lambda: False)
    assert config({"gateway": GW}).worker_plan("gateway", cores=16).count == 1
    with pytest.raises(SharedPortUnsupported) as caught:
        await xypipe._http.shared_port_listeners("127.0.0.1", 0)
    assert caught.value.code == "XY-SUP-020" and "workers = 1" in str(caught.value)
