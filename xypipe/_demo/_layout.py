"""Where a running demo can be reached, read off its config: pages, health, metrics, NATS.

Pure functions of an :class:`~xypipe._config.AppConfig`; the lifecycle commands record what
they return in the demo's state so later commands need not guess.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from xypipe._config import AppConfig
from xypipe._errors import DEMO_CONFIG_UNSUITABLE, DemoError
from xypipe._nats_keys import seed_file_of
from xypipe._stages.ui_server import UiServerConfig

__all__ = ["Endpoint", "Layout", "layout_of", "page_urls"]

#: The Prometheus job of the process that runs ``xypipe run`` itself (infra/prometheus names
#: the other jobs after their processes).
MAIN_JOB = "demo"


def _loopback(host: str) -> str:
    """An address to reach a listener on ``host`` from this machine."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def page_urls(cfg: AppConfig) -> list[str]:
    """Where the demo page of each ``ui_server`` stage of ``cfg`` is served (fixed ports only:
    port 0 is picked at start)."""
    urls = []
    for pipeline in cfg.pipelines.values():
        for stage in pipeline.stages:
            ui = stage.config
            if isinstance(ui, UiServerConfig) and ui.port:
                host = "localhost" if ui.host in ("0.0.0.0", "::") else (
                    f"[{ui.host}]" if ":" in ui.host else ui.host)
                urls.append(f"http://{host}:{ui.port}/")
    return urls


@attrs.frozen
class Endpoint:
    """One process's HTTP endpoint (``/healthz``, ``/metrics``)."""

    process: str
    #: Its Prometheus job.
    job: str
    host: str
    port: int
    tls: bool = False

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{_netloc(self.host, self.port)}"

    @property
    def target(self) -> str:
        """``host:port`` as Prometheus scrapes it."""
        return _netloc(self.host, self.port)


@attrs.frozen
class Layout:
    """Everything a lifecycle command needs to reach a demo started from one config."""

    pages: list[str]
    endpoints: list[Endpoint]
    #: The NATS URL to reach the bus from this machine; None without ``[nats]``.
    nats_url: str | None
    #: The embedded server's data directory (as configured, relative to the demo's working
    #: directory); None when NATS is not embedded.
    data_dir: str | None
    #: The embedded bus admits role users only: the role keys are in ``data_dir/auth/``.
    role_keys: bool
    #: The processes that sign in to NATS (each reports its health on ``xy.exec.health.*``).
    on_nats: list[str] = attrs.field(factory=list)
    #: Ports the workers of a process share (``workers = N``): the browsers' port, which lands
    #: on any worker; each worker's own endpoint is in ``endpoints``.
    shared: dict[int, str] = attrs.field(factory=dict)

    def key_of(self, role: str, cwd: Path) -> str | None:
        """The seed file ``role`` signs in with on the demo's bus (None: no credentials)."""
        if not self.role_keys or self.data_dir is None:
            return None
        return str(seed_file_of(cwd / self.data_dir, role))

    def ports(self) -> dict[int, str]:
        """Every fixed port the demo listens on, with who listens there."""
        out = {e.port: f"{e.process} HTTP" for e in self.endpoints}
        out.update(self.shared)
        if self.nats_url is not None and self.data_dir is not None:
            out[int(self.nats_url.rpartition(":")[2])] = "NATS"
        for url in self.pages:
            out[int(url.rstrip("/").rpartition(":")[2])] = "demo page"
        return out


def layout_of(cfg: AppConfig) -> Layout:
    """The layout of ``cfg``, or :class:`DemoError` (``XY-DEMO-005``) when a background demo
    of it could not be reached: a port picked at start, or no process serving health."""
    endpoints: list[Endpoint] = []
    shared: dict[int, str] = {}
    names = cfg.process_names()
    if "main" not in names and cfg.http.enabled and len(names) > 0:
        names = ["main", *names]  # the supervisor serves [http] itself
    for name in names:
        http = cfg.http_for(name)
        if not http.enabled:
            continue
        if http.port == 0:
            where = "[http] port" if name == "main" else f"[processes.{name}] http.port"
            raise DemoError(
                f"{cfg.path}: {where} is 0 (picked at start); a background demo needs fixed "
                "ports to be found again — set one", code=DEMO_CONFIG_UNSUITABLE)
        plan = cfg.worker_plan(name)
        if plan.metrics_port is None:
            endpoints.append(Endpoint(name, MAIN_JOB if name == "main" else name,
                                      _loopback(http.host), http.port, http.tls is not None))
            continue
        # Several workers: each is scraped and watched on its own port; the shared one
        # would answer for any of them.
        shared[http.port] = f"{name} HTTP (its {plan.count} workers)"
        for index in range(plan.count):
            unit = name if plan.count == 1 else f"{name}.{index}"
            endpoints.append(Endpoint(unit, name, _loopback(http.host),
                                      plan.metrics_port + index, http.tls is not None))
    if not endpoints:
        raise DemoError(f"{cfg.path}: no process serves HTTP, so nothing can tell when the "
                        "demo is ready; enable [http]", code=DEMO_CONFIG_UNSUITABLE)
    nats_url: str | None = None
    data_dir: str | None = None
    role_keys = False
    if cfg.nats is not None and cfg.nats.url == "embedded":
        emb = cfg.nats.embedded
        if emb.port == 0:
            raise DemoError(f"{cfg.path}: [nats.embedded] port is 0 (picked at start); a "
                            "background demo needs a fixed port", code=DEMO_CONFIG_UNSUITABLE)
        nats_url = f"nats://{_netloc(_loopback(emb.host), emb.port)}"
        data_dir = emb.data_dir
        role_keys = emb.auth == "roles"
    elif cfg.nats is not None:
        nats_url = cfg.nats.url.split(",")[0].strip()
    on_nats = cfg.process_names() if cfg.nats is not None else []
    return Layout(page_urls(cfg), endpoints, nats_url, data_dir, role_keys, on_nats, shared)
