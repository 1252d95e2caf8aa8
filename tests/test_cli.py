"""The ``xypipe`` command line as a person meets it: help on every option, ``--version``,
``xypipe stages`` readable (and complete as JSON), ``xypipe check`` one line per problem."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest
import trio
from _terminal import run_on_a_terminal, shown

import xypipe
from xypipe._cli import build_parser, main

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: pathlib.Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess: stdout and stderr are pipes, not a terminal."""
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # pytest sets it to 80
    return subprocess.run([sys.executable, "-m", "xypipe", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False, env={**environ, **env})


Parsers = list[tuple[str, argparse.ArgumentParser]]


def _parsers(parser: argparse.ArgumentParser, path: str) -> Parsers:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help_text():
    missing = []
    commands = _parsers(build_parser(), "xypipe")
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {c.dest}" for c in action._choices_actions if not c.help]
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert len(commands) > 15  # the walk reaches the nested commands (creds init, token keygen)
    assert missing == []


def test_version_is_the_package_version_and_the_distribution_version():
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout == f"xypipe {xypipe.__version__}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert xypipe.__version__ == project["version"]


def test_stages_prints_an_aligned_table_of_options_per_stage():
    done = cli("stages")
    assert done.returncode == 0, done.stderr
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    at = lines.index("conflate  transform; xypipe._stages.conflate:Conflate, from xypipe")
    assert lines[at + 1] == ("  Merge ticks into per-symbol state; emit one delta per "
                             "group/shard per window.")
    assert lines[at + 2] == ("  takes Restore | Batch; gives Restore | list[DeltaOut] | "
                             "list[Watermark]")
    header, rule, *rows = lines[at + 3:at + 10]
    assert header.split() == ["option", "type", "default", "expects"]
    assert set(rule) == {"─"}
    # Columns line up: every value starts where its heading does.
    starts = [header.index(h) for h in ("type", "default", "expects")]
    interval = rows[0]
    assert interval.split(None, 3) == ["interval_ms", "int", "33", "an integer 16..100"]
    assert [interval.index(v, 3) for v in ("int", "33", "an integer")] == starts
    assert "  pause_priorities   list[str]" in rows[3]  # types are not read as rich markup
    gateway = next(line for line in lines if line.startswith("gateway  "))
    assert gateway == ("gateway  sink; NATS role gateway; requires http; "
                       "xypipe._stages.gateway:Gateway, from xypipe")
    public_key = next(line for line in lines if line.strip().startswith("public_key"))
    assert public_key.split()[:3] == ["public_key", "str", "required"]


def test_stages_lists_entry_points_only_never_the_test_stages():
    done = cli("stages", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    examples = tomllib.loads(
        (ROOT / "stages/xypipe-examples/pyproject.toml").read_text())["project"]["entry-points"]
    assert set(doc) == set(shipped["xypipe.stages"]) | set(examples["xypipe.stages"])
    assert doc["nats_source"]["requires"] == ["nats"]
    assert doc["throttle"]["distribution"] == "xypipe-examples"
    # The stages of xypipe.testing are used by "module:Class" and never listed.
    text = cli("stages").stdout
    for test_only in ("CountingSource", "ListSink", "countingsource", "listsink"):
        assert test_only not in text and test_only not in done.stdout


def test_stages_output_cut_short_by_its_reader_ends_quietly():
    with subprocess.Popen([sys.executable, "-m", "xypipe", "stages"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as stages:
        assert stages.stdout is not None and stages.stderr is not None
        stages.stdout.readline()
        stages.stdout.close()  # like `| head -1`
        err = stages.stderr.read()
        # rich exits 1 on a broken pipe, as most command line tools do; nothing on stderr.
        assert stages.wait(timeout=120) == 1
    assert err == b""


BROKEN = """
[log]
level = "infoo"
[pipelines.p]
[[pipelines.p.stages]]
use = "xypipe.testing:CountingSource"
[[pipelines.p.stages]]
use = "conflate"
"""


def demo_gateways() -> int:
    """How many gateway workers "auto" gives the demo on this machine: its cores minus the
    demo's two other child processes (aggregator, admin), at least one."""
    return max(1, len(os.sched_getaffinity(0)) - 2)


def test_check_prints_one_line_per_problem_with_its_code(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    done = cli("check", str(bad), "configs/demo.toml")
    assert done.returncode == 1
    assert done.stdout == ("configs/demo.toml: ok (5 pipelines, 11 stages, processes: "
                           f"admin, aggregator, gateway (workers: {demo_gateways()}, auto), "
                           "main)\n")
    assert done.stderr.splitlines() == [
        f'{bad}: log.level: expected one of "debug", "info", "warning", "error", got "infoo"; '
        'did you mean "info"? [XY-CFG-001]',
        f"{bad}: pipelines.p.stages[1] (conflate): expected input Restore | Batch, got int "
        "from stages[0] (countingsource) [XY-CFG-100]",
        f"{bad}: pipelines.p.stages[1] (conflate): expected a sink last in the pipeline (a "
        "stage that gives nothing), got a stage that gives Restore | list[DeltaOut] | "
        "list[Watermark] with no stage after it to take it [XY-CFG-100]",
    ]


def test_a_wiring_mistake_is_refused_by_check_and_by_run_with_the_same_line(tmp_path):
    bad = tmp_path / "ends-in-a-transform.toml"
    bad.write_text(BROKEN.replace('level = "infoo"', 'level = "info"'))
    check, run = cli("check", str(bad)), cli("run", str(bad))
    assert (check.returncode, run.returncode) == (1, 2)
    assert check.stderr == run.stderr
    assert all(line.endswith("[XY-CFG-100]") for line in check.stderr.splitlines())


def test_creds_init_shows_no_progress_when_not_on_a_terminal(tmp_path, capsys):
    assert main(["creds", "init", str(tmp_path / "chain"), "--role", "reader"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.startswith(f"trust chain in {tmp_path / 'chain'}:")


def test_creds_init_shows_its_steps_on_a_terminal(tmp_path):
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    status, out, seen = run_on_a_terminal(
        [sys.executable, "-m", "xypipe", "creds", "init", "chain", "--role", "reader"],
        tmp_path, env)
    assert status == 0
    done = [line.strip() for line in shown(seen).splitlines() if line.startswith("✓")]
    assert [line.split("]")[0] for line in done] == [f"✓ [{i}/6" for i in range(1, 7)]
    assert done[0] == "✓ [1/6] keys: operator, accounts SYS and XY"
    assert out.decode().startswith("trust chain in chain:")


@pytest.mark.nats
async def test_publish_draws_progress_on_a_terminal_only(nats_url, tmp_path):
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    record = [sys.executable, "-m", "xypipe", "publish", "--url", nats_url, "--count", "500",
              "--rate", "5000", "--symbols", "20", "--record", "market.tape"]
    recorded = await trio.to_thread.run_sync(
        lambda: subprocess.run(record, cwd=tmp_path, capture_output=True, text=True, env=env,
                               timeout=120, check=False))
    assert recorded.returncode == 0 and recorded.stderr == ""  # a pipe: no progress drawn
    assert json.loads(recorded.stdout)["ticks"] == 500

    replay = [sys.executable, "-m", "xypipe", "publish", "--url", nats_url, "--replay",
              "market.tape", "--rate", "5000"]
    status, out, seen = await trio.to_thread.run_sync(run_on_a_terminal, replay, tmp_path, env)
    assert status == 0
    assert json.loads(out)["ticks"] == 500  # stdout stays machine-readable
    last = shown(seen).strip().splitlines()[-1]
    assert "replaying market.tape" in last and "500/500 ticks" in last
