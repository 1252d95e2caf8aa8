"""Wiring mistakes: ``xypipe check`` refuses exactly what ``xypipe run`` refuses, with the same
lines naming the pipeline, the stage (index and name), what was expected and what was got."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import trio

from xypipe import MissingRequirement, Runner, WiringError, _cli, _config, load_config
from xypipe._errors import find_in_group
from xypipe._stages.publisher import Publisher
from xypipe.testing import stage_harness

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC_KEY = ROOT / "configs" / "dev-keys" / "gateway-dev.pub.pem"
NATS = '[nats]\nurl = "nats://127.0.0.1:4222"\n'
NO_HTTP = "[http]\nenabled = false\n"


def stages(pipeline: str, *tables: str) -> str:
    return "".join(f"[[pipelines.{pipeline}.stages]]\n{t.strip()}\n" for t in tables)


MISTAKES = [
    pytest.param(
        NO_HTTP + stages("agg", 'use = "xypipe.testing:CountingSource"', 'use = "conflate"',
                         'use = "xypipe.testing:ListSink"'),
        ["pipelines.agg.stages[1] (conflate): expected input Restore | Batch, got int from "
         "stages[0] (countingsource)"],
        id="counting-source-into-conflate",
    ),
    pytest.param(
        NO_HTTP + NATS + stages("agg", 'use = "ingest"', 'use = "dedupe"', 'use = "shard"',
                                'use = "conflate"', 'use = "publish"'),
        ["pipelines.agg.stages[4] (publish): expected input list[DeltaOut] | list[SnapshotOut] "
         "| list[Watermark], got Restore | list[DeltaOut] | list[Watermark] from stages[3] "
         "(conflate)"],
        id="conflate-into-publish-without-snapshot",
    ),
    pytest.param(
        NO_HTTP + stages("p", 'use = "xypipe.testing:CountingSource"',
                         'use = "runner_stages:Boom"', 'use = "conflate"',
                         'use = "xypipe.testing:ListSink"'),
        ["pipelines.p.stages[2] (conflate): expected input Restore | Batch, got int from "
         "stages[1] (boom)"],
        id="a-pass-through-stage-gives-what-it-was-given",
    ),
    pytest.param(
        NO_HTTP + NATS + stages("p", 'use = "xypipe.testing:CountingSource"',
                                'use = "nats_sink"'),
        ["pipelines.p.stages[1] (nats_sink): expected input Publishable | list[Publishable], "
         "got int from stages[0] (countingsource)"],
        id="protocol-not-met",
    ),
    pytest.param(
        NO_HTTP + stages("gw", 'use = "nats_source"\nsubjects = ["xy.md.>"]',
                         'use = "xypipe.testing:ListSink"'),
        ["pipelines.gw.stages[0] (nats_source): expected a [nats] section (this stage "
         "requires NATS), got none"],
        id="nats-stage-without-nats",
    ),
    pytest.param(
        NO_HTTP + NATS + stages(
            "gw", 'use = "nats_source"\nsubjects = ["xy.md.>"]',
            f'use = "gateway"\npublic_key = "{PUBLIC_KEY}"\nallowed_origins = ["*"]'),
        ["pipelines.gw.stages[1] (gateway): expected process 'main' to serve HTTP (this stage "
         "requires it: [http] enabled = true), got [http] enabled = false"],
        id="http-stage-in-a-process-without-http",
    ),
    pytest.param(
        NATS + '[processes.edge]\nhttp = { enabled = false }\n[pipelines.gw]\nprocess = "edge"\n'
        + stages("gw", 'use = "nats_source"\nsubjects = ["xy.md.>"]',
                 f'use = "gateway"\npublic_key = "{PUBLIC_KEY}"\nallowed_origins = ["*"]'),
        ["pipelines.gw.stages[1] (gateway): expected process 'edge' to serve HTTP (this stage "
         "requires it: [processes.edge.http] enabled = true), got [processes.edge.http] "
         "enabled = false"],
        id="http-stage-in-a-child-process-without-http",
    ),
    pytest.param(
        NO_HTTP + stages("p", 'use = "xypipe.testing:ListSink"'),
        ["pipelines.p.stages[0] (listsink): expected a source first in the pipeline (a stage "
         "that takes no input), got a stage that takes anything"],
        id="first-stage-needs-input",
    ),
    pytest.param(
        NO_HTTP + stages("p", 'use = "xypipe.testing:CountingSource"\nname = "a"',
                         'use = "xypipe.testing:CountingSource"\nname = "b"',
                         'use = "xypipe.testing:ListSink"'),
        ["pipelines.p.stages[1] (b): expected a stage that takes the output of stages[0] (a), "
         "got a source (it takes no input, so it must be first)"],
        id="source-not-first",
    ),
    pytest.param(
        NO_HTTP + stages("p", 'use = "xypipe.testing:CountingSource"',
                         'use = "xypipe.testing:ListSink"\nname = "a"',
                         'use = "xypipe.testing:ListSink"\nname = "b"'),
        ["pipelines.p.stages[1] (a): expected a stage that gives output to stages[2] (b), got a "
         "sink (it gives nothing, so it must be last)"],
        id="sink-not-last",
    ),
    pytest.param(
        NO_HTTP + stages("p", 'use = "xypipe.testing:CountingSource"'),
        ["pipelines.p.stages[0] (countingsource): expected a sink last in the pipeline (a stage "
         "that gives nothing), got a stage that gives int with no stage after it to take it"],
        id="output-with-nowhere-to-go",
    ),
    pytest.param(
        NO_HTTP + stages("p", 'use = "xypipe.testing:CountingSource"\nname = "x"',
                         'use = "xypipe.testing:ListSink"\nname = "x"'),
        ['pipelines.p.stages[0] (x).name: expected a name unique in the pipeline, got "x" 2 '
         "times; set `name` on each"],
        id="duplicate-stage-names",
    ),
    pytest.param(
        NO_HTTP + '[nats]\nurl = "embedded"\n'
        + stages("pub", 'use = "publisher"')
        + stages("agg", 'use = "ingest"', 'use = "conflate"', 'use = "snapshot"',
                 'use = "publish"'),
        ["nats.role: the stages of process 'main' need different NATS roles — adapter "
         "(pipelines.pub.stages[0] (publisher)); aggregator (pipelines.agg.stages[0] (ingest), "
         "pipelines.agg.stages[2] (snapshot), pipelines.agg.stages[3] (publish)) "
         "— and one process connects as one user; run them in separate [processes] or set "
         'nats_role (e.g. "superuser", which is not least privilege)'],
        id="two-nats-roles-in-one-process",
    ),
]


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(text))
    return path


def load_unchecked(path: pathlib.Path) -> _config.AppConfig:
    """The config as its tables structure it, without the loader's wiring check: what a tool
    building an AppConfig by hand would hand the runner."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_config, "pipeline_problems", lambda *args: [])
        mp.setattr(_config.AppConfig, "role_conflicts", lambda self: [])
        return load_config(path)


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_check_and_run_refuse_the_same_wiring_mistake_with_the_same_lines(
        tmp_path, capsys, text, expected):
    path = write(tmp_path, text)
    lines = [f"{path}: {line}" for line in expected]

    assert _cli.main(["check", str(path)]) == 1
    checked = capsys.readouterr().err.splitlines()
    assert _cli.main(["run", str(path)]) == 2
    ran = capsys.readouterr().err.splitlines()
    assert checked == ran == [f"{line} [XY-CFG-100]" for line in lines]

    with pytest.raises(WiringError) as info:
        load_config(path)
    assert info.value.problems == lines and info.value.code == "XY-CFG-100"


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_the_runner_refuses_a_miswired_config_that_skipped_the_loader(tmp_path, text, expected):
    path = write(tmp_path, text)
    cfg = load_unchecked(path)
    with pytest.raises(WiringError) as info:
        Runner(cfg)
    assert info.value.problems == [f"{path}: {line}" for line in expected]


def test_a_correct_wiring_passes_check(tmp_path, capsys):
    path = write(tmp_path, NO_HTTP + NATS + stages(
        "agg", 'use = "ingest"', 'use = "dedupe"', 'use = "shard"', 'use = "conflate"',
        'use = "snapshot"', 'use = "publish"'))
    assert _cli.main(["check", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok (1 pipelines, 6 stages")


async def test_a_stage_using_nats_it_was_not_given_fails_naming_the_requirement():
    with pytest.raises(ExceptionGroup) as info:  # the harness's nursery wraps it
        async with stage_harness(Publisher, {"symbols": 1}, name="publisher"):
            with trio.fail_after(10):
                await trio.sleep_forever()
    err = find_in_group(info.value, MissingRequirement)
    assert err is not None and err.code == "XY-STG-100"
    assert str(err).startswith("pipeline 'test', stage 'publisher': needs nats but its "
                               "process has none")
