"""Config keys set by the environment and ``--set`` over the file (docs/operations.md,
"Environment overrides"): a table of overrides through the loader and ``xypipe check``,
``check --effective`` with its sources and masked secrets, the prod profile, and one real
``xypipe run`` whose child processes see the overrides.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import trio
from test_demo import free_port, http_get, wait_healthy
from test_supervisor import Tree, tree_config

from xypipe._cli import main
from xypipe._config import TlsConfig, load_config
from xypipe._errors import ConfigError
from xypipe._overrides import RESERVED, Effective, load_effective, parse_value

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.toml"
PROD = ROOT / "configs" / "prod.toml"

SMALL = """
[nats]
url = "nats://127.0.0.1:4222"

[processes.md-feed]
http = { port = 8093 }
restart = "always"

[pipelines.feed]
process = "md-feed"

[[pipelines.feed.stages]]
use = "nats_source"
subjects = ["xy.md.tick.>"]

[[pipelines.feed.stages]]
use = "xypipe.testing:ListSink"
"""


def load(env: dict[str, str], sets: tuple[str, ...] = (), path: pathlib.Path = DEMO
         ) -> Effective:
    return load_effective(path, environ=env, sets=sets)


def gw(eff: Effective, attr: str) -> object:
    return getattr(eff.config.pipelines["gateway"].stages[1].config, attr)


# --------------------------------------------------------------------------- values by type

# (variables, what the loaded config holds for them)
GOOD = [
    ({"XYPIPE_PROCESSES__GATEWAY__WORKERS": "2"},
     lambda e: e.config.processes["gateway"].workers == 2),
    ({"XYPIPE_PROCESSES__GATEWAY__WORKERS": "auto"},
     lambda e: e.config.processes["gateway"].workers == "auto"),
    ({"XYPIPE_PROCESSES__GATEWAY__RESTART__WINDOW_S": "2.5"},
     lambda e: e.config.processes["gateway"].restart.window_s == 2.5),
    # An integer where a number goes is that number.
    ({"XYPIPE_NATS__CREDS_WARN_S": "60"}, lambda e: e.config.nats.creds_warn_s == 60.0),
    ({"XYPIPE_HTTP__ENABLED": "false"}, lambda e: e.config.http.enabled is False),
    # A string key takes the text as it is: commas, colons, no quotes.
    ({"XYPIPE_NATS__URL": "nats://a:4222,nats://b:4222"},
     lambda e: e.config.nats.servers == ["nats://a:4222", "nats://b:4222"]),
    ({"XYPIPE_LOG__LEVEL": "debug"}, lambda e: e.config.log.level == "debug"),
    # Three levels down, into a table the file leaves out.
    ({"XYPIPE_NATS__EMBEDDED__RESTART__MAX_RESTARTS": "9"},
     lambda e: e.config.nats.embedded.restart.max_restarts == 9),
    ({"XYPIPE_PROCESSES__GATEWAY__HTTP__TLS__CERT": "c.pem",
      "XYPIPE_PROCESSES__GATEWAY__HTTP__TLS__KEY": "k.pem"},
     lambda e: e.config.processes["gateway"].http.tls == TlsConfig(cert="c.pem", key="k.pem")),
    # A whole table as a TOML inline table.
    ({"XYPIPE_PROCESSES__ADMIN__HTTP": '{ host = "0.0.0.0", port = 9000 }'},
     lambda e: (e.config.processes["admin"].http.host, e.config.processes["admin"].http.port)
     == ("0.0.0.0", 9000)),
    # A stage by its index (from 0) and by its name; a list as TOML or comma-separated words.
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__1__ALLOWED_ORIGINS": '["https://a.example"]'},
     lambda e: gw(e, "allowed_origins") == ["https://a.example"]),
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__GATEWAY__ALLOWED_ORIGINS":
      "https://a.example, https://b.example"},
     lambda e: gw(e, "allowed_origins") == ["https://a.example", "https://b.example"]),
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__GATEWAY__ISSUER": "idp"},
     lambda e: gw(e, "issuer") == "idp"),
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__0__BUDGET__MAX_ITEMS": "77"},
     lambda e: e.config.pipelines["gateway"].stages[0].budget.max_items == 77),
    ({"XYPIPE_PIPELINES__AGGREGATOR__SHUTDOWN_GRACE_MS": "1234"},
     lambda e: e.config.pipelines["aggregator"].shutdown_grace_ms == 1234),
    # Any case.
    ({"XYPIPE_processes__Gateway__workers": "3"},
     lambda e: e.config.processes["gateway"].workers == 3),
    # The spec's aliases: every gateway's origins; the token key of gateway and flag admin.
    ({"ALLOWED_ORIGINS": "*"}, lambda e: gw(e, "allowed_origins") == ["*"]),
    ({"JWT_PUBLIC_KEY": "/app/.demo_pub.pem"},
     lambda e: gw(e, "public_key") == "/app/.demo_pub.pem"
     and e.config.pipelines["admin"].stages[0].config.public_key == "/app/.demo_pub.pem"),
    # A variable for the key wins over its alias.
    ({"ALLOWED_ORIGINS": "*",
      "XYPIPE_PIPELINES__GATEWAY__STAGES__1__ALLOWED_ORIGINS": "https://exact.example"},
     lambda e: gw(e, "allowed_origins") == ["https://exact.example"]),
    # xypipe's own variables are not config keys and are left alone.
    ({name: "1" for name in RESERVED},
     lambda e: e.applied == () and set(e.reserved) == RESERVED),
]


@pytest.mark.parametrize(("env", "holds"), GOOD, ids=[" ".join(e) for e, _ in GOOD])
def test_an_override_sets_its_key_with_the_value_read_by_the_key_s_type(env, holds):
    eff = load(env)
    assert holds(eff)
    # Nothing else moved: the file's config with the same keys set is the same config.
    assert eff.config.pipelines.keys() == load_config(DEMO).pipelines.keys()


def test_a_dash_in_a_name_is_written_as_an_underscore(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    eff = load({"XYPIPE_PROCESSES__MD_FEED__HTTP__PORT": "9100",
                "XYPIPE_PIPELINES__FEED__STAGES__NATS_SOURCE__SUBJECTS": "xy.a.>,xy.b.>"},
               path=path)
    assert eff.config.processes["md-feed"].http.port == 9100
    assert eff.config.pipelines["feed"].stages[0].config.subjects == ["xy.a.>", "xy.b.>"]


def test_precedence_is_command_line_then_environment_then_file():
    env = {"XYPIPE_PROCESSES__GATEWAY__WORKERS": "2", "XYPIPE_LOG__LEVEL": "warning"}
    eff = load(env, sets=("processes.gateway.workers=3",))
    assert eff.config.processes["gateway"].workers == 3
    assert eff.config.log.level == "warning"
    assert load_config(DEMO).log.level == "info"
    assert eff.source_of(("processes", "gateway", "workers")) == (
        "command line --set processes.gateway.workers")
    assert eff.source_of(("log", "level")) == "env XYPIPE_LOG__LEVEL"
    assert eff.source_of(("nats", "embedded", "port")) == "file"
    assert eff.source_of(("nats", "name")) == "default"
    # The command line goes to the child processes with the config.
    assert eff.config.cli_sets == ("processes.gateway.workers=3",)


def test_a_set_key_is_written_as_the_loader_writes_it():
    eff = load({}, sets=("pipelines.gateway.stages[1].allowed_origins=https://a.example",
                         "pipelines.gateway.stages.1.issuer=idp"))
    assert gw(eff, "allowed_origins") == ["https://a.example"]
    assert gw(eff, "issuer") == "idp"


def test_a_value_is_toml_unless_its_key_is_a_string():
    assert parse_value("4", int) == 4
    assert parse_value("4", str) == "4"
    assert parse_value("true", bool | None) is True
    assert parse_value('["a", 1]', list[object]) == ["a", 1]
    assert parse_value("auto", int | str | None) == "auto"
    assert parse_value("*", list[str]) == ["*"]
    assert parse_value("", list[str]) == []
    # No second key smuggled in by a newline: the text is one value or none.
    assert parse_value("1\nw = 2", int) == "1\nw = 2"


# --------------------------------------------------------------------------- refusals

# (variables, --set, a line of the error, its code)
BAD = [
    ({"XYPIPE_PROCESSES__GATEWAY__WORKERS": "many"}, (),
     'XYPIPE_PROCESSES__GATEWAY__WORKERS (processes.gateway.workers): expected an integer '
     '1..256 or "auto", got "many"', "XY-CFG-201"),
    ({"XYPIPE_HTTP__ENABLED": "yes"}, (),
     'XYPIPE_HTTP__ENABLED (http.enabled): expected a boolean (true or false), got "yes"',
     "XY-CFG-201"),
    ({"XYPIPE_HTTP__PORT": "70000"}, (),
     "XYPIPE_HTTP__PORT (http.port): expected an integer 0..65535, got 70000", "XY-CFG-201"),
    ({"XYPIPE_LOG__LEVEL": "verbose"}, (),
     'XYPIPE_LOG__LEVEL (log.level): expected one of "debug", "info", "warning", "error", '
     'got "verbose"', "XY-CFG-201"),
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__1__ALLOWED_ORIGINS": "[1, 2"}, (),
     "XYPIPE_PIPELINES__GATEWAY__STAGES__1__ALLOWED_ORIGINS (pipelines.gateway.stages[1] "
     '(gateway).allowed_origins): expected a TOML array, got "[1, 2" (', "XY-CFG-201"),
    ({"ALLOWED_ORIGINS": "[1]"}, (),
     "ALLOWED_ORIGINS (pipelines.gateway.stages[1] (gateway).allowed_origins", "XY-CFG-201"),
    ({}, ("processes.gateway.workers=0",),
     '--set processes.gateway.workers: expected an integer 1..256 or "auto", got 0',
     "XY-CFG-201"),
    # Unknown names, with the closest one this config has.
    ({"XYPIPE_NATS__URLL": "x"}, (),
     "XYPIPE_NATS__URLL: names no config key (nats has no key 'urll'); did you mean "
     "XYPIPE_NATS__URL?", "XY-CFG-200"),
    ({"XYPIPE_NATS_URL": "x"}, (),
     "XYPIPE_NATS_URL: names no config key (the config has no key 'nats_url'); did you mean "
     "XYPIPE_NATS__URL?", "XY-CFG-200"),
    ({"XYPIPE_PROCESSES__GATEWY__WORKERS": "2"}, (),
     "XYPIPE_PROCESSES__GATEWY__WORKERS: names no config key (processes has no key "
     "'gatewy'); did you mean XYPIPE_PROCESSES__GATEWAY__WORKERS?", "XY-CFG-200"),
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__7__ISSUER": "x"}, (),
     "XYPIPE_PIPELINES__GATEWAY__STAGES__7__ISSUER: names no config key "
     "(pipelines.gateway.stages has no item 7)", "XY-CFG-200"),
    ({"XYPIPE_PIPELINES__GATEWAY__STAGES__GATEWAY__ISUER": "x"}, (),
     "did you mean XYPIPE_PIPELINES__GATEWAY__STAGES__GATEWAY__ISSUER?", "XY-CFG-200"),
    ({"XYPIPE_WORKER_COUNT": "2"}, (), "XYPIPE_WORKER_COUNT: names no config key",
     "XY-CFG-200"),
    ({}, ("nats.embeded.port=4300",),
     "--set nats.embeded.port: names no config key (nats has no key 'embeded'); did you mean "
     "nats.embedded.port?", "XY-CFG-200"),
    ({}, ("processes.gateway.workers",),
     "--set processes.gateway.workers: expected KEY=VALUE", "XY-CFG-202"),
    ({"XYPIPE_NATS__URL": "nats://a:4222", "XYPIPE_nats__url": "nats://b:4222"}, (),
     "XYPIPE_nats__url: sets nats.url, which XYPIPE_NATS__URL sets too; keep one",
     "XY-CFG-203"),
]


@pytest.mark.parametrize(("env", "sets", "line", "code"), BAD,
                         ids=[" ".join([*e, *s]) for e, s, _, _ in BAD])
def test_a_bad_override_names_the_variable_the_key_and_what_was_expected(env, sets, line, code):
    with pytest.raises(ConfigError) as caught:
        load(env, sets)
    coded = caught.value.coded()
    assert any(line in problem and c == code for problem, c in coded), coded
    assert all(problem.startswith(f"{DEMO}: ") for problem, _ in coded)


def test_a_key_inside_a_file_value_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    with pytest.raises(ConfigError) as caught:
        load({"XYPIPE_PROCESSES__MD_FEED__RESTART__MAX_RESTARTS": "3"}, path=path)
    assert caught.value.coded() == [(
        f"{path}: XYPIPE_PROCESSES__MD_FEED__RESTART__MAX_RESTARTS: processes.md-feed.restart "
        'is "always" in the file, not a table; set XYPIPE_PROCESSES__MD_FEED__RESTART instead',
        "XY-CFG-204")]
    # The whole key, as the line says, works.
    eff = load({"XYPIPE_PROCESSES__MD_FEED__RESTART":
                '{ policy = "always", max_restarts = 3 }'}, path=path)
    assert eff.config.processes["md-feed"].restart.max_restarts == 3


def test_every_xypipe_variable_the_project_reads_is_reserved():
    # A variable xypipe reads for itself must never be taken for a mistyped key.
    used: set[str] = set()
    for pattern in ("xypipe/**/*.py", "Dockerfile", "compose.yaml", "infra/**/*", "scripts/*",
                    "Makefile"):
        for path in ROOT.glob(pattern):
            if path.is_file() and "_proto" not in path.parts:
                used |= set(re.findall(r"\bXYPIPE_[A-Z][A-Z_]*[A-Z]\b",
                                       path.read_text(errors="replace")))
    own = {name for name in used if "__" not in name} - {"XYPIPE_SERVICES"}
    assert own <= RESERVED, own - RESERVED
    assert {"XYPIPE_LOG_DIR", "XYPIPE_PROCESS", "XYPIPE_WORKER", "XYPIPE_WORKERS",
            "XYPIPE_TOKEN", "XYPIPE_HEALTHZ"} <= RESERVED


# --------------------------------------------------------------------------- xypipe check


def check(monkeypatch, capsys, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    for name in [n for n in os.environ if n.startswith("XYPIPE_") and n not in RESERVED]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = main(["check", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_check_validates_the_config_with_its_overrides(monkeypatch, capsys):
    status, out, err = check(monkeypatch, capsys,
                             {"XYPIPE_PROCESSES__GATEWAY__WORKERS": "2", "ALLOWED_ORIGINS": "*"},
                             str(DEMO), "--set", "log.level=debug")
    assert status == 0 and err == ""
    assert "gateway (workers: 2)" in out
    assert out.rstrip().endswith(
        "; set by: ALLOWED_ORIGINS, XYPIPE_PROCESSES__GATEWAY__WORKERS, --set log.level")

    status, out, err = check(monkeypatch, capsys, {"XYPIPE_PROCESSES__GATEWAY__WORKERS": "x"},
                             str(DEMO))
    assert status == 1 and out == ""
    assert err.strip() == (
        f'{DEMO}: XYPIPE_PROCESSES__GATEWAY__WORKERS (processes.gateway.workers): expected an '
        'integer 1..256 or "auto", got "x" [XY-CFG-201]')

    status, out, err = check(monkeypatch, capsys, {"XYPIPE_NATS__EMBEDED__PORT": "1"}, str(DEMO))
    assert status == 1
    assert err.strip().endswith("did you mean XYPIPE_NATS__EMBEDDED__PORT? [XY-CFG-200]")


def test_any_origin_from_the_environment_is_refused_under_the_prod_profile(monkeypatch, capsys):
    status, out, err = check(monkeypatch, capsys, {}, str(PROD))
    assert status == 0, err
    status, out, err = check(monkeypatch, capsys, {"ALLOWED_ORIGINS": "*"}, str(PROD))
    assert status == 1 and out == ""
    assert err.strip() == (
        f"{PROD}: ALLOWED_ORIGINS (pipelines.gateway.stages[1] (gateway).allowed_origins): prod "
        'profile: expected the exact origins of the UI, got ["*"] [XY-SEC-033]')
    # The same through the command line, and `xypipe run` refuses it before anything starts.
    status, out, err = check(monkeypatch, capsys, {}, str(PROD), "--set",
                             "pipelines.gateway.stages[1].allowed_origins=*")
    assert status == 1 and "[XY-SEC-033]" in err
    monkeypatch.setenv("ALLOWED_ORIGINS", "*")
    assert main(["run", str(PROD)]) == 2
    assert "ALLOWED_ORIGINS" in capsys.readouterr().err


# --------------------------------------------------------------------------- check --effective

_ROW = re.compile(r"^(?P<key>\S+) = (?P<value>.*?)\s+# (?P<source>.+)$")
_UNSET = re.compile(r"^# (?P<key>\S+): not set\s+# (?P<source>.+)$")


def effective(monkeypatch, capsys, env: dict[str, str], *args: str
              ) -> tuple[dict[str, tuple[str, str]], list[str]]:
    status, out, err = check(monkeypatch, capsys, env, "--effective", *args)
    assert status == 0, err
    rows: dict[str, tuple[str, str]] = {}
    notes = []
    lines = out.splitlines()
    assert lines[0].startswith(f"# {args[0]}: the effective config")
    for line in lines[1:]:
        m = _ROW.match(line) or _UNSET.match(line)
        if m is None:
            notes.append(line)
            continue
        rows[m["key"]] = (m.groupdict().get("value") or "", m["source"])
    return rows, notes


def test_effective_shows_every_value_with_its_source(monkeypatch, capsys):
    env = {"XYPIPE_NATS__EMBEDDED__PORT": "4300", "ALLOWED_ORIGINS": "https://a,https://b",
           "XYPIPE_PROCESSES__GATEWAY__WORKERS": "2", "XYPIPE_LOG_DIR": os.environ.get(
               "XYPIPE_LOG_DIR", "/tmp"), "XYPIPE_WORKER": "0"}
    rows, notes = effective(monkeypatch, capsys, env, str(DEMO), "--set", "log.level=debug")
    assert rows["nats.embedded.port"] == ("4300", "env XYPIPE_NATS__EMBEDDED__PORT")
    assert rows["processes.gateway.workers"] == ("2", "env XYPIPE_PROCESSES__GATEWAY__WORKERS")
    assert rows["pipelines.gateway.stages[1].allowed_origins"] == (
        '["https://a", "https://b"]', "env ALLOWED_ORIGINS (alias)")
    assert rows["log.level"] == ('"debug"', "command line --set log.level")
    assert rows["nats.url"] == ('"embedded"', "file")
    assert rows["nats.name"] == ('"xypipe"', "default")
    assert rows["nats.tls"] == ("", "default")  # not set
    assert rows["pipelines.gateway.stages[1].use"] == ('"gateway"', "file")
    assert rows["pipelines.gateway.stages[0].budget.max_items"] == ("1024", "file")
    assert rows["pipelines.aggregator.stages[0].name"] == ('"ingest"', "default")
    assert notes == ["# xypipe's own variables, not config keys: XYPIPE_LOG_DIR, XYPIPE_WORKER"]
    # Every value shown is the value the config runs with (JSON, as the loader shows values).
    cfg = load(env, ("log.level=debug",)).config
    assert json.loads(rows["pipelines.gateway.stages[1].issuer"][0]) == (
        cfg.pipelines["gateway"].stages[1].config.issuer)
    assert json.loads(rows["processes.admin.http.port"][0]) == cfg.processes["admin"].http.port
    assert json.loads(rows["pipelines.aggregator.degrade.enter"][0]) == list(
        cfg.pipelines["aggregator"].degrade.enter)


def test_effective_masks_secrets_by_name_and_by_shape(monkeypatch, capsys):
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWhlcmU"
    env = {"XYPIPE_NATS__USER": "bob", "XYPIPE_NATS__PASSWORD": "hunter2-not-shown",
           "XYPIPE_NATS__NAME": jwt}
    status, out, err = check(monkeypatch, capsys, env, "--effective", str(DEMO))
    assert status == 0, err
    assert "hunter2" not in out and jwt not in out
    rows, _ = effective(monkeypatch, capsys, env, str(DEMO))
    assert rows["nats.password"] == ('"***"', "env XYPIPE_NATS__PASSWORD")
    assert rows["nats.name"] == ('"***"', "env XYPIPE_NATS__NAME")
    assert rows["nats.user"] == ('"bob"', "env XYPIPE_NATS__USER")


def test_effective_says_when_an_alias_has_nothing_to_set(monkeypatch, capsys, tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    rows, notes = effective(monkeypatch, capsys, {"ALLOWED_ORIGINS": "*"}, str(path))
    assert "# ALLOWED_ORIGINS: this config has no stage it sets; not used" in notes
    assert rows["processes.md-feed.restart.policy"] == ('"always"', "file")


# --------------------------------------------------------------------------- a real run


async def test_child_processes_run_with_the_overrides_of_their_parent(tmp_path):
    # The file puts each child on one port; the environment moves one, the command line the
    # other: the children, which read the file again, must serve where their parent was told.
    path, ports = tree_config(tmp_path, nats_port=None, main=False,
                              children={"left": "{ backoff_ms = 10 }",
                                        "right": "{ backoff_ms = 10 }"})
    left, right = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "PYTHONUNBUFFERED": "1",
           "XYPIPE_PROCESSES__LEFT__HTTP__PORT": str(left), "XY_LOG_FORMAT": "json"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(path),
         "--set", f"processes.right.http.port={right}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env=env)
    tree = Tree(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.pump)
            assert (await wait_healthy(left, 60))["process"] == "left"
            assert (await wait_healthy(right, 60))["process"] == "right"
            health = await wait_healthy(ports["main"], 60)
            assert health["processes"] == {"left": True, "right": True}
            # Nobody serves the ports of the file.
            for port in (ports["left"], ports["right"]):
                assert (await trio.to_thread.run_sync(http_get, port, "/healthz"))[0] == 0
            # The parent and each child said which keys were set, and by whom (not the values).
            said = [x for x in tree.lines if x.get("code") == "XY-CFG-205"]
            assert len(said) >= 3
            assert said[0]["keys"] == {
                "processes.left.http.port": "env XYPIPE_PROCESSES__LEFT__HTTP__PORT",
                "processes.right.http.port": "command line --set processes.right.http.port"}
            os.killpg(proc.pid, signal.SIGINT)
            with trio.fail_after(30):
                await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
