"""Config loading: every bad config gets an exact, actionable message."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

import xypipe
from xypipe import ConfigError, load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent

GOOD_STAGES = """
[[pipelines.p.stages]]
use = "xypipe.testing:CountingSource"
[[pipelines.p.stages]]
use = "xypipe.testing:ListSink"
"""

BAD_CONFIGS = [
    pytest.param(
        """
        [[pipelines.aggregator.stages]]
        use = "xypipe.testing:CountingSource"
        [[pipelines.aggregator.stages]]
        use = "runner_stages:Double"
        factor = "fast"
        [[pipelines.aggregator.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ['pipelines.aggregator.stages[1] (double).factor: expected an integer 1..1000, '
         'got "fast"'],
        id="wrong-type-says-range",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        cuont = 3
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ["pipelines.p.stages[0] (countingsource).cuont: unknown key; did you mean 'count'?"],
        id="unknown-stage-key-did-you-mean",
    ),
    pytest.param(
        """
        [htp]
        port = 1
        """ + GOOD_STAGES,
        ["htp: unknown key; did you mean 'http'?"],
        id="unknown-top-level-table",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "injest"
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ["pipelines.p.stages[0] (injest).use: unknown stage 'injest'; did you "
         "mean 'ingest'? (installed: INSTALLED; or use \"module:Class\")"],
        id="unknown-stage-name",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        budget = { max_items = 0 }
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ["pipelines.p.stages[0] (countingsource).budget.max_items: expected an integer "
         "1..1000000, got 0"],
        id="budget-out-of-range",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        restart = { policy = "always" }
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ['pipelines.p.stages[0] (countingsource).restart.policy: expected one of "never", '
         '"on-failure", got "always"'],
        id="restart-policy-choice",
    ),
    pytest.param(
        """
        [nats]
        url = "http://localhost:4222"
        """ + GOOD_STAGES,
        ['nats.url: expected "embedded" or nats://, tls://, ws:// or wss:// URLs separated by '
         'commas, got "http://localhost:4222"'],
        id="nats-url-scheme",
    ),
    pytest.param(
        """
        [http]
        port = 70000
        """ + GOOD_STAGES,
        ["http.port: expected an integer 0..65535, got 70000"],
        id="port-range",
    ),
    pytest.param(
        """
        [pipelines.p]
        degrade = { enter = [0.5, 0.75, 0.9], leave = [0.6, 0.65, 0.7] }
        """ + GOOD_STAGES,
        ["pipelines.p.degrade.leave: expected leave[0] < enter[0] (0.5) so the level cannot "
         "flap, got [0.6, 0.65, 0.7]"],
        id="hysteresis-inverted",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        """,
        ["pipelines.p.stages[0] (listsink): expected a source first in the pipeline (a stage "
         "that takes no input), got a stage that takes anything",
         "pipelines.p.stages[0] (listsink): expected a stage that gives output to stages[1] "
         "(countingsource), got a sink (it gives nothing, so it must be last)",
         "pipelines.p.stages[1] (countingsource): expected a stage that takes the output of "
         "stages[0] (listsink), got a source (it takes no input, so it must be first)",
         "pipelines.p.stages[1] (countingsource): expected a sink last in the pipeline (a "
         "stage that gives nothing), got a stage that gives int with no stage after it to take "
         "it"],
        id="wiring-order",
    ),
    pytest.param(
        """
        [pipelines.p]
        stages = []
        """,
        ["pipelines.p.stages: expected a non-empty value, got []"],
        id="empty-pipeline",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "runner_stages:NotAStage"
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ["pipelines.p.stages[0] (notastage).use: reference 'runner_stages:NotAStage': "
         "NotAStage.Config must be an attrs class"],
        id="not-a-stage",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        [[pipelines.p.stages]]
        use = "runner_stages:MutableConfigStage"
        """,
        ["pipelines.p.stages[1] (mutableconfigstage).use: reference "
         "'runner_stages:MutableConfigStage': MutableConfigStage.Config must be frozen "
         "(@attrs.frozen)"],
        id="mutable-config",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "no_such_module:Stage"
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ["pipelines.p.stages[0] (stage).use: cannot import module 'no_such_module': No module "
         "named 'no_such_module'"],
        id="bad-module-reference",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        count = true
        [[pipelines.p.stages]]
        use = "publisher"
        record = ["a"]
        """,
        ["pipelines.p.stages[0] (countingsource).count: expected an integer 0..10000000, got "
         "true",
         'pipelines.p.stages[1] (publisher).record: expected a string, got ["a"]'],
        id="bool-is-not-int-list-is-not-str",
    ),
    pytest.param(
        """
        [pipelines.p]
        process = "gateway"
        """ + GOOD_STAGES,
        ['pipelines.p.process: expected one of the [processes] tables (none declared), got '
         '"gateway"'],
        id="undeclared-process",
    ),
    pytest.param(
        """
        [[pipelines.p.stages]]
        use = "xypipe.testing:CountingSource"
        name = "x"
        [[pipelines.p.stages]]
        use = "runner_stages:Double"
        name = "x"
        [[pipelines.p.stages]]
        use = "xypipe.testing:ListSink"
        """,
        ['pipelines.p.stages[0] (x).name: expected a name unique in the pipeline, got "x" 2 '
         "times; set `name` on each"],
        id="duplicate-stage-names",
    ),
    pytest.param(
        """
        [nats]
        url = "tls://nats.internal:4222"
        chain = "secrets/nats"
        creds = "secrets/gateway.creds"
        tls = { cert = "secrets/gw.pem" }
        creds_pol_ms = 10
        [security]
        profil = "prod"
        [processes.w]
        nats = { chian = "x", nkey = "k", creds = "c" }
        [pipelines.p]
        process = "w"
        """ + GOOD_STAGES,
        ['nats.tls.key: expected cert and key together (a certificate and its private key), '
         'got "only one of them"',
         "nats.creds_pol_ms: unknown key; did you mean 'creds_poll_ms'?",
         "processes.w.nats.chian: unknown key; did you mean 'chain'?",
         "security.profil: unknown key; did you mean 'profile'?"],
        id="nats-sign-in-keys",
    ),
    pytest.param(
        """
        [nats]
        url = "tls://nats.internal:4222"
        chain = "secrets/nats"
        creds = "secrets/gateway.creds"
        [processes.w]
        nats = { nkey = "k", creds = "c" }
        [pipelines.p]
        process = "w"
        """ + GOOD_STAGES,
        ['nats.creds: expected one way to sign in, not chain and creds (chain: a `xypipe creds '
         "init` directory; creds: one .creds file; nkey: an NKey seed file), got \"both\"",
         'processes.w.nats.nkey: expected one way to sign in, not creds and nkey (chain: a '
         "`xypipe creds init` directory; creds: one .creds file; nkey: an NKey seed file), "
         'got "both"'],
        id="two-ways-to-sign-in",
    ),
    pytest.param(
        """
        [nats]
        url = "embedded"
        chain = "secrets/nats"
        [security]
        profile = "production"
        [processes.w]
        nats_role = "publsher"
        [pipelines.p]
        process = "w"
        """ + GOOD_STAGES,
        ['nats.chain: expected a NATS of your own (url = "tls://…"): the embedded bus signs '
         'processes in with its own keys, got "secrets/nats"',
         'processes.w.nats_role: expected one of "aggregator", "gateway", "adapter", "admin", '
         '"reader", "basic", "superuser", "publisher", got "publsher"; did you mean "publisher"?',
         'security.profile: expected one of "dev", "prod", got "production"'],
        id="chain-on-the-embedded-bus-and-unknown-profile",
    ),
    pytest.param(
        "[pipelines.p\nstages = 1",
        ["invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 13)"],
        id="toml-syntax",
    ),
]


#: Cases whose every problem is a wiring mistake (raised as WiringError, XY-CFG-100).
WIRING = {"wiring-order", "duplicate-stage-names"}


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_is_refused_with_exact_messages(tmp_path, request, text, expected):
    path = tmp_path / "prod.toml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    installed = ", ".join(sorted(xypipe.stage_entry_points()))
    assert info.value.problems == [
        f"{path}: " + line.replace("INSTALLED", installed) for line in expected
    ]
    wiring = request.node.callspec.id in WIRING
    assert info.value.code == ("XY-CFG-100" if wiring else "XY-CFG-001")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read the file: No such file"):
        load_config(tmp_path / "nope.toml")


def _shipped_configs() -> list[pathlib.Path]:
    return sorted((ROOT / "configs").rglob("*.toml"))


@pytest.mark.parametrize("path", _shipped_configs(),
                         ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.pipelines
