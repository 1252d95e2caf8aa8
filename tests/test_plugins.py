"""Plugins: stages found through the ``xypipe.stages`` entry-point group."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import textwrap
import tomllib

import pytest

import xypipe
from xypipe import _registry
from xypipe.testing import ListSink

ROOT = pathlib.Path(__file__).resolve().parent.parent

PLUGIN_MODULE = '''
import attrs
import xypipe


@attrs.frozen
class AddConfig:
    amount: int = attrs.field(default=1, validator=xypipe.in_range(-100, 100))


class Add(xypipe.Stage):
    """Add ``amount`` to every item."""

    Config = AddConfig

    async def run(self):
        async for x in self.inbox:
            await self.outbox.send(x + self.config.amount)
'''


def install_distribution(site, dist: str, module: str, source: str, entry_points: dict) -> None:
    """Install a distribution the way pip leaves it: a module plus a .dist-info directory."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[xypipe.stages]\n{lines}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    _registry._cache.clear()
    yield tmp_path
    _registry._cache.clear()


async def test_a_plugin_stage_installed_as_an_entry_point_runs_in_a_pipeline(site):
    install_distribution(site, "acme-stages", "acme_stages", PLUGIN_MODULE,
                         {"acme_add": "acme_stages:Add"})
    assert "acme_add" in xypipe.stage_entry_points()
    cfg = xypipe.parse_config({"http": {"enabled": False}, "pipelines": {"p": {"stages": [
        {"use": "xypipe.testing:CountingSource", "count": 3},
        {"use": "acme_add", "amount": 10},
        {"use": "xypipe.testing:ListSink"},
    ]}}})
    runner = xypipe.Runner(cfg)
    await runner.run()
    assert runner.stage("p", "listsink", ListSink).items == [10, 11, 12]


def test_plugin_config_is_validated_like_builtin_stages(site):
    install_distribution(site, "acme-stages", "acme_stages", PLUGIN_MODULE,
                         {"acme_add": "acme_stages:Add"})
    with pytest.raises(xypipe.ConfigError) as info:
        xypipe.parse_config({"pipelines": {"p": {"stages": [
            {"use": "xypipe.testing:CountingSource"}, {"use": "acme_add", "amount": 1000},
            {"use": "xypipe.testing:ListSink"}]}}}, "c.toml")
    assert info.value.problems == [
        "c.toml: pipelines.p.stages[1] (acme_add).amount: expected an integer -100..100, got 1000"
    ]


def test_a_broken_plugin_names_its_distribution(site):
    install_distribution(site, "broken-stages", "broken_stages", "raise ImportError('no numpy')\n",
                         {"broken": "broken_stages:Thing"})
    with pytest.raises(xypipe.PluginError) as info:
        xypipe.resolve_stage("broken")
    assert str(info.value) == (
        "entry point 'broken' = 'broken_stages:Thing' of distribution 'broken-stages' failed to "
        "load: ImportError: no numpy"
    )


def test_a_plugin_that_is_not_a_stage_is_refused_when_loaded(site):
    install_distribution(site, "odd-stages", "odd_stages", "def thing():\n    pass\n",
                         {"odd": "odd_stages:thing"})
    with pytest.raises(xypipe.PluginError, match="of distribution 'odd-stages' is not a class"):
        xypipe.resolve_stage("odd")


def test_xypipe_stages_lists_builtin_stages_with_their_options():
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "stages"], capture_output=True, text=True, check=True
    ).stdout
    lines = [line.rstrip() for line in out.splitlines()]
    assert textwrap.dedent("""\
        conflate  transform; xypipe._stages.conflate:Conflate, from xypipe
          Merge ticks into per-symbol state; emit one delta per group/shard per window.
          takes Restore | Batch; gives Restore | list[DeltaOut] | list[Watermark]
        """) in "\n".join(lines)
    assert any(line.split() == ["interval_ms", "int", "33", "an", "integer", "16..100"]
               for line in lines)
    assert ("nats_source  source; requires nats; xypipe._stages.nats_io:NatsSource, "
            "from xypipe") in lines


def test_test_only_stages_are_not_shipped_as_entry_points():
    """A production install lists only real stages; tests use "xypipe.testing:ListSink"."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    shipped = project["entry-points"]["xypipe.stages"]
    assert shipped == {
        "conflate": "xypipe._stages.conflate:Conflate",
        "dedupe": "xypipe._stages.dedupe:Dedupe",
        "flag_admin": "xypipe._stages.flag_admin:FlagAdmin",
        "gateway": "xypipe._stages.gateway:Gateway",
        "ingest": "xypipe._stages.ingest:Ingest",
        "nats_sink": "xypipe._stages.nats_io:NatsSink",
        "nats_source": "xypipe._stages.nats_io:NatsSource",
        "publish": "xypipe._stages.publish:Publish",
        "publisher": "xypipe._stages.publisher:Publisher",
        "shard": "xypipe._stages.shard:Shard",
        "snapshot": "xypipe._stages.snapshot:SnapshotStage",
        "ui_server": "xypipe._stages.ui_server:UiServer",
    }
    for use in shipped.values():
        assert xypipe.resolve_stage(use).__module__.startswith("xypipe._stages.")
