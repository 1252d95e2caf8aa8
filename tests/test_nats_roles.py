"""Per-role users of the embedded bus: keys kept with the data, permissions by role, a role per
process — against a real nats-server wherever the server's answer is what matters."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
from pathlib import Path

import nkeys
import pytest
import trio

from xypipe import load_config, parse_config
from xypipe._bus_layout import bus_layout
from xypipe._config import AppConfig
from xypipe._errors import ConfigError, NatsConnectionError, NatsKeyError, find_in_group
from xypipe._nats import connect
from xypipe._nats_keys import BusKeys, seed_file_of
from xypipe._nats_roles import ROLES, BusLayout, inbox_prefix, permissions
from xypipe._runner import Runner

ROOT = Path(__file__).resolve().parent.parent
#: The aggregator's shortest valid pipeline: every stage that needs its NATS role.
AGGREGATOR = [{"use": "ingest"}, {"use": "conflate"}, {"use": "snapshot"}, {"use": "publish"}]


# --------------------------------------------------------------------------- roles


def test_the_demo_processes_sign_in_as_their_roles() -> None:
    cfg = load_config(ROOT / "configs" / "demo.toml")
    assert cfg.embedded_auth
    assert {p: cfg.process_role(p) for p in cfg.process_names()} == {
        "aggregator": "aggregator", "gateway": "gateway", "main": "adapter", "admin": "admin"}


def test_only_the_aggregator_may_publish_market_data() -> None:
    layout = BusLayout()
    may_publish_md = {r for r in ROLES if {"xy.md.>", ">"} & set(permissions(r, layout).publish)}
    assert may_publish_md == {"aggregator", "superuser"}
    gateway = permissions("gateway", layout)
    assert "xy.md.>" in gateway.subscribe and "_INBOX.gateway.>" in gateway.subscribe
    assert not [s for s in gateway.subscribe if s.startswith("_INBOX.") and "gateway" not in s]
    adapter = permissions("adapter", layout)
    assert {"xy.src.>", "xy.ref.>", "$JS.API.STREAM.CREATE.XY_SRC"} <= set(adapter.publish)
    assert "xy.md.>" not in adapter.subscribe
    assert permissions("publisher", layout) == adapter  # the adapter's old name


def test_only_the_admin_may_write_feature_flags_and_the_gateway_reads_them() -> None:
    layout = BusLayout()
    writes = {"$KV.xy_feature_flags.>", "$JS.API.STREAM.CREATE.KV_xy_feature_flags"}
    writers = {r for r in ROLES if writes & set(permissions(r, layout).publish)}
    assert writers == {"admin"}  # and the superuser, with ">"
    gateway = set(permissions("gateway", layout).publish)
    assert {"$JS.API.STREAM.INFO.KV_xy_feature_flags",
            "$JS.API.CONSUMER.CREATE.KV_xy_feature_flags",
            "$JS.API.DIRECT.GET.KV_xy_feature_flags.>"} <= gateway
    admin = permissions("admin", layout)
    assert not {"xy.md.>", "xy.src.>"} & set(admin.publish + admin.subscribe)


def _doc(stages: dict[str, list[dict]], **nats: object) -> dict:
    return {"nats": {"url": "embedded", **nats},
            "processes": {p: {} for p in stages if p != "main"},
            "pipelines": {p: {"process": p, "stages": s} for p, s in stages.items()}}


def test_a_process_whose_stages_need_two_roles_is_a_config_error_that_names_them() -> None:
    doc = _doc({"main": [{"use": "publisher"}], "agg": AGGREGATOR})
    doc["pipelines"]["extra"] = {"stages": AGGREGATOR}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "t.toml")
    [problem] = info.value.problems
    assert problem.startswith("t.toml: nats.role: the stages of process 'main' need different "
                              "NATS roles — adapter (pipelines.main.stages[0] (publisher)); "
                              "aggregator (pipelines.extra.stages[0] (ingest), "
                              "pipelines.extra.stages[2] (snapshot), "
                              "pipelines.extra.stages[3] (publish))")
    doc["nats"]["role"] = "superuser"
    assert parse_config(doc, "t.toml").process_role("main") == "superuser"
    # Without role users there is nothing to choose.
    doc["nats"] = {"url": "embedded", "embedded": {"auth": "none"}}
    assert not parse_config(doc, "t.toml").embedded_auth


def test_a_declared_role_must_be_a_known_one() -> None:
    doc = _doc({"w": [{"use": "runner_stages:Endless"}, {"use": "xypipe.testing:ListSink"}]})
    doc["processes"]["w"] = {"nats_role": "root"}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "t.toml")
    assert info.value.problems == [
        't.toml: processes.w.nats_role: expected one of "aggregator", "gateway", "adapter", '
        '"admin", "reader", "basic", "superuser", "publisher", got "root"']
    doc["processes"]["w"] = {"nats_role": "reader"}
    cfg = parse_config(doc, "t.toml")
    assert cfg.process_role("w") == "reader" and cfg.process_role("main") == "basic"
    doc["processes"]["w"] = {"nats_role": "publisher"}  # the adapter's old name
    assert parse_config(doc, "t.toml").process_role("w") == "adapter"


def test_the_layout_follows_the_stream_names_the_stages_use() -> None:
    doc = _doc({"agg": [{"use": "ingest", "stream": "SRC2"}, *AGGREGATOR[1:]]})
    layout = bus_layout(parse_config(doc, "t.toml"))
    assert layout.source_streams == ("SRC2",)
    assert "$JS.API.CONSUMER.CREATE.SRC2" in permissions("aggregator", layout).publish


# --------------------------------------------------------------------------- keys on disk


def test_keys_are_generated_once_kept_private_and_reused(tmp_path: Path) -> None:
    first = BusKeys.load_or_create(tmp_path)
    again = BusKeys.load_or_create(tmp_path)
    assert first.public == again.public and set(first.public) == set(ROLES)
    assert all(k.startswith("U") for k in first.public.values())
    for role in ROLES:
        assert stat.S_IMODE(seed_file_of(tmp_path, role).stat().st_mode) == 0o600
    conf = first.write_server_config(BusLayout())
    text = conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    # Public keys only: no seed in the server's configuration.
    assert all(k in text for k in first.public.values())
    for role in ROLES:
        assert seed_file_of(tmp_path, role).read_text().strip() not in text


def test_a_loose_seed_file_is_tightened_and_a_broken_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    BusKeys.load_or_create(tmp_path)
    seed = seed_file_of(tmp_path, "gateway")
    os.chmod(seed, 0o644)
    BusKeys.load_or_create(tmp_path)
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    codes = [getattr(r, "xy_fields", {}).get("code") for r in caplog.records]
    assert codes == ["XY-NATS-021"]
    account_seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_ACCOUNT)
    for bad in (b"not a seed\n", account_seed):
        seed.write_bytes(bad)
        with pytest.raises(NatsKeyError, match=r"gateway\.nk: expected a NATS user seed") as info:
            BusKeys.load_or_create(tmp_path)
        assert info.value.code == "XY-NATS-020"
        assert seed.read_bytes() == bad  # never replaced behind the operator's back


# --------------------------------------------------------------------------- a real server


def _solo(tmp_path: Path, **nats: object) -> AppConfig:
    return parse_config({
        "nats": {"url": "embedded", "embedded": {
            "port": 0, "data_dir": str(tmp_path / "nats"), "restart": {"backoff_ms": 10}},
            **nats},
        "http": {"enabled": False},
        "pipelines": {"p": {"stages": [{"use": "runner_stages:Endless"},
                                       {"use": "xypipe.testing:ListSink"}]}},
    }, "solo.toml")


async def test_a_process_connects_as_its_role_and_its_refusals_are_counted(
    tmp_path: Path
) -> None:
    runner = Runner(_solo(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        assert runner.nats_role == "basic"
        assert runner.nats.inbox_prefix == "_INBOX.basic"
        url = runner.embedded.url
        with pytest.raises(NatsConnectionError, match=r"[Aa]uthorization"):
            async with connect(url, connect_timeout=1.0):
                pass
        # Health answers still reach whoever asks (a reader here).
        reader_seed = str(seed_file_of(tmp_path / "nats", "reader"))
        async with connect(url, nkeys_seed=reader_seed,
                           inbox_prefix=inbox_prefix("reader")) as reader:
            with trio.fail_after(5):
                reply = await reader.request("xy.exec.health", b"", timeout=5)
            assert reply.data
        runner.nats.publish_nowait("xy.md.tick.forged", b"x")
        with trio.fail_after(5):
            while runner.metrics.sample(  # noqa: ASYNC110
                    "nats_refusals_total", {"reason": "permission", "op": "publish"}) != 1:
                await trio.sleep(0.01)  # the server's -ERR arrives on its own
        runner.stop()


async def test_a_restarted_server_admits_the_same_users(tmp_path: Path) -> None:
    runner = Runner(_solo(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        server = runner.embedded
        first_pid, config_file = server.pid, server.config_file
        os.kill(first_pid, signal.SIGKILL)
        with trio.fail_after(30):
            while not (server.running and server.pid != first_pid  # noqa: ASYNC110
                       and runner.nats.is_connected):
                await trio.sleep(0.05)
        assert server.config_file == config_file
        admin_seed = str(seed_file_of(tmp_path / "nats", "superuser"))
        async with connect(server.url, nkeys_seed=admin_seed,
                           inbox_prefix=inbox_prefix("superuser")) as admin:
            await admin.jetstream().ensure_stream("SOLO", ["solo.>"])
        runner.stop()
    # A second run keeps the keys: the first run's clients' seeds still sign in.
    keys_before = BusKeys.load_or_create(tmp_path / "nats").public
    runner = Runner(_solo(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        assert runner.embedded.keys.public == keys_before
        runner.stop()


def test_the_command_line_tools_find_the_demos_keys_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xypipe._cli_md import DEFAULT_URL, Credentials, credentials

    monkeypatch.chdir(tmp_path)
    assert credentials(DEFAULT_URL, None, "adapter") == Credentials()
    BusKeys.load_or_create(tmp_path / "var" / "nats")
    assert credentials(DEFAULT_URL, None, "adapter") == Credentials(
        "var/nats/auth/adapter.nk", "_INBOX.adapter")
    # Another server: nothing is guessed; an explicit role key brings its inbox along.
    assert credentials("nats://elsewhere:4222", None, "reader") == Credentials()
    assert credentials("nats://elsewhere:4222", "/keys/reader.nk", "adapter") == Credentials(
        "/keys/reader.nk", "_INBOX.reader")


async def test_a_process_pointed_at_the_embedded_bus_without_its_key_is_told_what_to_pass(
    tmp_path: Path
) -> None:
    cfg = _solo(tmp_path)
    owner = Runner(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(owner.run)
        stray = Runner(cfg, nats_url=owner.embedded.url)
        with pytest.raises(BaseExceptionGroup) as info:
            await stray.run()
        error = find_in_group(info.value, NatsConnectionError)
        assert error is not None and "Authorization Violation" in str(error)
        assert "pass --nats-nkey DATA_DIR/auth/basic.nk" in str(error)
        owner.stop()
