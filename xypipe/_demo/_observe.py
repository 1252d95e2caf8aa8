"""``xypipe demo observe``: Debian's Prometheus scraping every process of the running demo.

The scrape config is ``infra/prometheus/prometheus.local.yml`` (its global settings and every
rule file) with its targets taken from the running demo's config: each job keeps its name and
gets the port of the process it is named after (``demo`` is the process that runs
``xypipe run`` itself). For ``configs/demo.toml`` that is the file as committed; for a copy on
other ports, the same jobs on those ports. Prometheus keeps its data in the state directory,
bounded by time and size, and is stopped by ``demo down``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import trio
import yaml

from xypipe._demo._layout import Endpoint
from xypipe._demo._lifecycle import last_words
from xypipe._demo._probe import get
from xypipe._demo._procs import launch, running, stop
from xypipe._demo._state import HelperState, StateDir, TreeState
from xypipe._errors import (
    DEMO_HELPER_FAILED,
    DEMO_HELPER_RUNNING,
    DEMO_NOT_UP,
    DEMO_OBSERVE_UNAVAILABLE,
    DemoError,
)

__all__ = ["DEFAULT_TEMPLATE", "observe", "scrape_config"]

Say = Callable[[str], None]

#: Relative to the directory the demo runs in (a checkout of xypipe).
DEFAULT_TEMPLATE = "infra/prometheus/prometheus.local.yml"
#: Prometheus's own retention: the demo's metrics never fill a laptop's disk either.
RETENTION = ("--storage.tsdb.retention.time=1d", "--storage.tsdb.retention.size=256MB")
POLL_S = 0.25


def scrape_config(template: dict[str, object], template_dir: Path,
                  endpoints: list[Endpoint]) -> dict[str, object]:
    """``template`` with each job's targets replaced by its process's endpoint (jobs with no
    such process dropped, processes with no job added after them) and rule files made absolute
    (Prometheus reads them relative to the config, which lives elsewhere)."""
    # A process with several workers has one endpoint (one target) per worker in its job.
    by_job: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        by_job.setdefault(e.job, []).append(e)
    jobs: list[dict[str, object]] = []
    raw_jobs = template.get("scrape_configs")
    for job in raw_jobs if isinstance(raw_jobs, list) else []:
        name = job.get("job_name") if isinstance(job, dict) else None
        if not isinstance(name, str) or name not in by_job:
            continue
        found = by_job.pop(name)
        jobs.append({**job, **({"scheme": "https"} if found[0].tls else {}),
                     "static_configs": [{"targets": [e.target for e in found]}]})
    for name, found in by_job.items():
        jobs.append({"job_name": name, "metrics_path": "/metrics",
                     **({"scheme": "https"} if found[0].tls else {}),
                     "static_configs": [{"targets": [e.target for e in found]}]})
    rules = template.get("rule_files")
    rule_files = [str((template_dir / str(r)).resolve()) if not Path(str(r)).is_absolute()
                  else str(r) for r in (rules if isinstance(rules, list) else [])]
    return {**template, "rule_files": rule_files, "scrape_configs": jobs}


def _targets_up(doc: object) -> dict[str, str]:
    """``{job: health}`` from ``/api/v1/targets``."""
    out: dict[str, str] = {}
    data = doc.get("data") if isinstance(doc, dict) else None
    active = data.get("activeTargets") if isinstance(data, dict) else None
    for t in active if isinstance(active, list) else []:
        labels = t.get("labels") if isinstance(t, dict) else None
        if isinstance(labels, dict):
            # A job is up once every one of its targets (every worker) is.
            job = str(labels.get("job"))
            if out.get(job, "up") == "up":
                out[job] = str(t.get("health"))
    return out


async def observe(state: StateDir, *, port: int, template: str, timeout_s: float,
                  say: Say) -> str:
    """Start Prometheus for the running demo; its URL, once every target is scraped."""
    tree: TreeState | None = state.live_tree()
    if tree is None:
        raise DemoError("the demo is not up: `xypipe demo up` first", code=DEMO_NOT_UP)
    live = state.live_helper(StateDir.PROMETHEUS)
    if live is not None:
        raise DemoError(f"already observing: Prometheus runs at {live.url} (pid "
                        f"{live.process.pid}); `xypipe demo down` stops it",
                        code=DEMO_HELPER_RUNNING)
    binary = shutil.which("prometheus")
    if binary is None:
        raise DemoError("prometheus not found on PATH: install Debian's prometheus package "
                        "(bash scripts/setup_prometheus.sh)", code=DEMO_OBSERVE_UNAVAILABLE)
    source = Path(tree.cwd) / template
    try:
        loaded = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f"cannot read the scrape config template {source}: {exc} (run from a "
                        "checkout of xypipe, or pass --template)",
                        code=DEMO_OBSERVE_UNAVAILABLE) from exc
    if not isinstance(loaded, dict):
        raise DemoError(f"{source}: expected a Prometheus config (a mapping), got "
                        f"{type(loaded).__name__}", code=DEMO_OBSERVE_UNAVAILABLE)
    cfg = scrape_config(loaded, source.parent, tree.layout.endpoints)
    state.root.mkdir(parents=True, exist_ok=True)
    state.prometheus_config.write_text(
        f"# Written by `xypipe demo observe` from {source}; targets from {tree.config}.\n"
        + yaml.safe_dump(cfg, sort_keys=False))
    url = f"http://127.0.0.1:{port}/"
    log = state.log(StateDir.PROMETHEUS)
    log.write_bytes(b"")
    launched, popen = launch(
        [binary, f"--config.file={state.prometheus_config.resolve()}",
         f"--storage.tsdb.path={state.prometheus_data.resolve()}",
         f"--web.listen-address=127.0.0.1:{port}", *RETENTION], log=log)
    state.write(StateDir.PROMETHEUS, HelperState(launched, url))
    jobs = sorted({e.job for e in tree.layout.endpoints})
    say(f"xypipe demo: starting Prometheus (pid {launched.pid}) on {url}, scraping "
        f"{', '.join(jobs)}")
    with trio.move_on_after(timeout_s):
        while True:
            status = popen.poll()
            if status is not None:
                state.forget(StateDir.PROMETHEUS)
                raise DemoError(f"Prometheus exited with status {status}: {last_words(log)}",
                                code=DEMO_HELPER_FAILED)
            code, body = await get(f"{url}api/v1/targets")
            health = _targets_up(json.loads(body)) if code == 200 else {}
            if sorted(j for j, h in health.items() if h == "up") == jobs:
                say(f"xypipe demo: Prometheus at {url} — every target up; try "
                    f"{url}graph?g0.expr=up")
                return url
            await trio.sleep(POLL_S)
    proc = running(launched)
    if proc is not None:
        await stop(proc, grace_s=10.0)
    state.forget(StateDir.PROMETHEUS)
    raise DemoError(f"Prometheus did not scrape every target ({', '.join(jobs)}) within "
                    f"{timeout_s:g} s; its log: {log}", code=DEMO_HELPER_FAILED)
