"""Load a deployment's TOML config into frozen, validated values.

Everything goes through one cattrs converter with ``forbid_extra_keys=True`` and strict scalar
hooks (TOML ``"5"`` is not an integer, ``true`` is not a number). Every problem is collected, not
just the first, and each is reported with its full path and what was expected::

    configs/prod.toml: pipelines.aggregator.stages[3] (conflate).interval_ms:
        expected an integer 1..1000, got "fast"

Unknown keys are errors with a did-you-mean.
"""

from __future__ import annotations

import difflib
import os
import pathlib
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn

from xypipe._degrade import DegradePolicy
from xypipe._edge import Budget
from xypipe._errors import CFG_WRONG_TYPE, ConfigError, PluginError, WiringError, XyError
from xypipe._log import FORMATS
from xypipe._log_repeats import RepeatPolicy
from xypipe._registry import resolve_stage
from xypipe._role_grants import ROLE_ALIASES, ROLES, canonical_role
from xypipe._rollout import RolloutConfig
from xypipe._stage import StageBase
from xypipe._validate import (
    Invalid,
    count_or,
    expected_of,
    in_range,
    non_empty,
    one_of,
    show,
    subject_pattern,
)
from xypipe._wiring import Provides, pipeline_problems
from xypipe._worker import (
    MAX_WORKERS,
    WorkerIdentity,
    auto_workers,
    ports_shared,
    usable_cores,
)

T = TypeVar("T")
#: A TOML table as parsed, before it is checked.
RawTable = dict[str, object]

# --------------------------------------------------------------------------- value objects


@attrs.frozen
class RestartPolicy:
    """What the runner does when a stage raises: stop the pipeline, or restart the stage."""

    policy: str = attrs.field(
        default="never", validator=one_of(["never", "on-failure"])
    )
    max_restarts: int = attrs.field(default=5, validator=in_range(0, 1_000_000))
    backoff_ms: int = attrs.field(default=100, validator=in_range(0, 600_000))
    max_backoff_ms: int = attrs.field(default=5000, validator=in_range(0, 3_600_000))


@attrs.frozen
class ProcessRestartPolicy:
    """What the supervisor does when a child process (or the embedded nats-server) dies.

    ``on-failure`` restarts after a non-zero exit or a signal, ``always`` also after a clean exit
    while the tree is not stopping, ``never`` stops the whole tree. At most ``max_restarts`` in
    any ``window_s`` seconds; the next failure stops the tree. The delay before a restart doubles
    from ``backoff_ms`` up to ``max_backoff_ms`` and starts over after a run of ``stable_s``.
    """

    policy: str = attrs.field(
        default="on-failure", validator=one_of(["always", "on-failure", "never"])
    )
    max_restarts: int = attrs.field(default=5, validator=in_range(0, 1_000_000))
    window_s: float = attrs.field(default=60.0, validator=in_range(0.001, 86_400.0))
    backoff_ms: int = attrs.field(default=100, validator=in_range(0, 600_000))
    max_backoff_ms: int = attrs.field(default=5000, validator=in_range(0, 3_600_000))
    stable_s: float = attrs.field(default=10.0, validator=in_range(0.0, 86_400.0))

    def __attrs_post_init__(self) -> None:
        if self.max_backoff_ms < self.backoff_ms:
            raise Invalid(
                "max_backoff_ms",
                f"expected at least backoff_ms ({self.backoff_ms})",
                self.max_backoff_ms,
            )


def _nats_restart_default() -> ProcessRestartPolicy:
    # Nothing works without the server, so it comes back even after a clean exit (lame duck).
    return ProcessRestartPolicy(policy="always")


@attrs.frozen
class TlsConfig:
    """TLS files: the CA that signed the peer's certificate, and our own certificate and key
    (for NATS: the client certificate of mutual TLS)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True

    def __attrs_post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise Invalid("key" if self.key is None else "cert",
                          "expected cert and key together (a certificate and its private key)",
                          "only one of them")


def _role_name(value: object) -> object:
    # Old role names (``publisher``) are read as today's (``adapter``).
    return canonical_role(value) if isinstance(value, str) else value


#: What ``nats_role`` accepts (old names too).
_ROLE_NAMES = ROLES + tuple(ROLE_ALIASES)


@attrs.frozen
class ProcessNatsConfig:
    """How one process signs in to NATS where it differs from ``[nats]``
    (``[processes.NAME.nats]``): its own trust chain directory, ``.creds`` file, NKey seed file
    or TLS files (each TLS file given here replaces the one in ``[nats.tls]``)."""

    chain: str | None = attrs.field(default=None, validator=non_empty())
    creds: str | None = attrs.field(default=None, validator=non_empty())
    nkey: str | None = attrs.field(default=None, validator=non_empty())
    tls: TlsConfig | None = None

    def __attrs_post_init__(self) -> None:
        _one_sign_in(self.chain, self.creds, self.nkey)


def _one_sign_in(chain: str | None, creds: str | None, nkey: str | None) -> None:
    given = [k for k, v in (("chain", chain), ("creds", creds), ("nkey", nkey)) if v]
    if len(given) > 1:
        raise Invalid(given[1], f"expected one way to sign in, not {' and '.join(given)} "
                      "(chain: a `xypipe creds init` directory; creds: one .creds file; nkey: "
                      "an NKey seed file)", "both")


@attrs.frozen
class EmbeddedClusterConfig:
    """``[nats.embedded] cluster = {...}``: the embedded bus as a JetStream cluster of
    ``nodes`` nats-servers on ``host`` (docs/architecture.md, "A NATS cluster").

    Node ``i`` (0-based) serves clients on ``port + i`` (every node picks a free one when
    ``port`` is 0), talks to its peers on ``route_port + i`` (fixed: each node is told all
    its peers' route addresses before it starts), is named ``<name>-<i>`` and keeps its
    JetStream store in ``DATA_DIR/node-<i>``.
    """

    nodes: int = attrs.field(default=3, validator=in_range(1, 9))
    name: str = attrs.field(default="xypipe", validator=non_empty())
    route_port: int = attrs.field(default=6222, validator=in_range(1, 65535))

    def __attrs_post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise Invalid("name", "expected letters, digits, - or _ (a cluster and server "
                          "name part)", self.name)
        if self.route_port + self.nodes - 1 > 65535:
            raise Invalid("route_port", f"expected room for {self.nodes} route ports "
                          "(route_port + nodes - 1 <= 65535)", self.route_port)


@attrs.frozen
class EmbeddedNatsConfig:
    """The nats-server child started for ``url = "embedded"``.

    ``auth = "roles"`` (the default): the server admits only per-role NKey users, generated at
    the first start and kept in ``data_dir/auth/`` (docs/security.md); every process connects
    as its role. ``auth = "none"``: an open bus anyone on the machine may publish to (logged
    ``XY-NATS-022`` at every start).
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=4222, validator=in_range(0, 65535))
    data_dir: str = "var/nats"
    binary: str | None = None
    jetstream: bool = True
    restart: ProcessRestartPolicy = attrs.field(factory=_nats_restart_default)
    auth: str = attrs.field(default="roles", validator=one_of(["roles", "none"]))
    #: Run ``nodes`` servers as one JetStream cluster instead of one server (None: one).
    cluster: EmbeddedClusterConfig | None = None

    def __attrs_post_init__(self) -> None:
        if self.cluster is None:
            return
        last = self.port + self.cluster.nodes - 1
        if self.port and last > 65535:
            raise Invalid("port", f"expected room for {self.cluster.nodes} client ports "
                          "(port + nodes - 1 <= 65535)", self.port)
        routes = range(self.cluster.route_port, self.cluster.route_port + self.cluster.nodes)
        if self.port and set(routes) & set(range(self.port, last + 1)):
            raise Invalid("cluster.route_port", f"expected route ports apart from the client "
                          f"ports {self.port}..{last}", self.cluster.route_port)

    @property
    def nodes(self) -> int:
        """How many servers the embedded bus runs."""
        return self.cluster.nodes if self.cluster is not None else 1


@attrs.frozen
class NatsConfig:
    """Where NATS is and how processes sign in. ``url = "embedded"`` starts our own server
    (the demo default); an external NATS is reached with ``chain`` (a ``xypipe creds init``
    directory: each process takes its role's ``creds/<role>.creds`` and ``tls/<role>.pem``),
    ``creds`` (one ``.creds`` file), ``nkey``, ``user``/``password`` or ``token``, with
    ``[nats.tls]``; ``[processes.NAME.nats]`` overrides it per process (docs/security.md)."""

    url: str = attrs.field(default="embedded", validator=non_empty())
    name: str = "xypipe"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = attrs.field(default=None, validator=non_empty())
    #: A trust chain directory (``xypipe creds init``): every process signs in with its role's
    #: user JWT and client certificate from it.
    chain: str | None = attrs.field(default=None, validator=non_empty())
    #: Path of a file holding an NKey seed to sign in with (a server that knows its public key).
    nkey: str | None = attrs.field(default=None, validator=non_empty())
    #: Where replies to this process's requests arrive (a server may allow each user its own);
    #: by default ``_INBOX.<role>`` when a process signs in as a role (the embedded bus's keys,
    #: a chain or a .creds file), ``_INBOX`` otherwise.
    inbox_prefix: str | None = attrs.field(default=None, validator=subject_pattern())
    #: The NATS role of the ``main`` process (``[processes.X] nats_role`` for the others); by
    #: default the one its stages need (docs/security.md).
    role: str | None = attrs.field(default=None, converter=_role_name,
                                   validator=one_of(_ROLE_NAMES))
    tls: TlsConfig | None = None
    connect_timeout_ms: int = attrs.field(default=2000, validator=in_range(1, 600_000))
    reconnect_wait_ms: int = attrs.field(default=250, validator=in_range(1, 600_000))
    max_reconnect_attempts: int = attrs.field(default=-1, validator=in_range(-1, 1_000_000))
    #: How often a process looks at its ``.creds`` file for a rotated one (signing in again
    #: with it before the JWT in use expires), and how long before that expiry it warns.
    creds_poll_ms: int = attrs.field(default=1000, validator=in_range(10, 600_000))
    creds_warn_s: float = attrs.field(default=300.0, validator=in_range(0.0, 86_400.0))
    embedded: EmbeddedNatsConfig = attrs.field(factory=EmbeddedNatsConfig)
    #: Copies every stream and KV bucket xypipe creates keeps (JetStream ``num_replicas``);
    #: None: the embedded cluster's node count, 1 on one server. An external cluster sets it.
    replicas: int | None = attrs.field(default=None, validator=in_range(1, 5))

    def __attrs_post_init__(self) -> None:
        if (self.replicas is not None and self.url == "embedded"
                and self.replicas > self.embedded.nodes):
            raise Invalid("replicas", f"expected at most the embedded bus's {self.embedded.nodes} "
                          "node(s) (a stream cannot keep more copies than there are servers)",
                          self.replicas)
        if self.url != "embedded":
            for server in self.url.split(","):
                scheme = server.strip().split("://", 1)[0] if "://" in server else ""
                if scheme not in {"nats", "tls", "ws", "wss"}:
                    raise Invalid(
                        "url",
                        'expected "embedded" or nats://, tls://, ws:// or wss:// URLs '
                        "separated by commas",
                        self.url,
                    )
        elif self.chain or self.creds:
            raise Invalid("chain" if self.chain else "creds",
                          'expected a NATS of your own (url = "tls://…"): the embedded bus signs '
                          "processes in with its own keys", self.chain or self.creds)
        if (self.user is None) != (self.password is None):
            raise Invalid("password", "expected user and password together", "only one of them")
        _one_sign_in(self.chain, self.creds, self.nkey)

    @property
    def tls_url(self) -> bool:
        """Whether every server URL asks for TLS by its scheme (``tls://``, ``wss://``)."""
        return self.url != "embedded" and all(
            s.startswith(("tls://", "wss://")) for s in self.servers)

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.url.split(",")]

    @property
    def stream_replicas(self) -> int:
        """``replicas`` in effect: set, else the embedded bus's nodes, else 1."""
        if self.replicas is not None:
            return self.replicas
        return self.embedded.nodes if self.url == "embedded" else 1


@attrs.frozen
class HttpConfig:
    """The process's HTTP endpoint: /healthz and /metrics (and the gateway's WebSocket)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8090, validator=in_range(0, 65535))
    enabled: bool = True
    #: Serve HTTPS/WSS: ``cert`` and ``key`` (PEM files) of this endpoint.
    tls: TlsConfig | None = None

    def __attrs_post_init__(self) -> None:
        if self.tls is not None and (not self.tls.cert or not self.tls.key):
            raise Invalid("tls", "expected both cert and key (PEM files) to serve TLS",
                          {"cert": self.tls.cert, "key": self.tls.key})


@attrs.frozen
class LogConfig:
    level: str = attrs.field(
        default="info", validator=one_of(["debug", "info", "warning", "error"])
    )
    #: auto (console lines on a terminal, JSON otherwise), json or console; $XY_LOG_FORMAT and
    #: --log-format override it (docs/observability/logging.md).
    format: str = attrs.field(default="auto", validator=one_of(FORMATS))
    #: Lines of one warning (same code and message) written per window; the rest are folded
    #: into one summary line that counts them.
    repeat_limit: int = attrs.field(default=RepeatPolicy().limit,
                                    validator=in_range(1, 1_000_000))
    #: The folding window in seconds; 0 writes every line.
    repeat_window_s: float = attrs.field(default=RepeatPolicy().window_s,
                                         validator=in_range(0.0, 86_400.0))

    @property
    def repeats(self) -> RepeatPolicy:
        return RepeatPolicy(limit=self.repeat_limit, window_s=self.repeat_window_s)


@attrs.frozen
class ProcessConfig:
    """A child process of ``xypipe run``; pipelines that name it run there, on their own core."""

    http: HttpConfig = attrs.field(factory=HttpConfig)
    restart: ProcessRestartPolicy = attrs.field(factory=ProcessRestartPolicy)
    #: The NATS role this process signs in as; by default the role its stages need
    #: (docs/security.md).
    nats_role: str | None = attrs.field(default=None, converter=_role_name,
                                        validator=one_of(_ROLE_NAMES))
    #: How this process signs in to NATS where it differs from ``[nats]``.
    nats: ProcessNatsConfig | None = None
    #: How many copies of this process run, each its own supervised child: an integer, or
    #: ``"auto"`` (the cores the config leaves free, :func:`xypipe._worker.auto_workers`).
    #: Not set: ``"auto"`` for a process that runs a gateway stage, 1 for any other
    #: (:meth:`AppConfig.workers_of`). Copies share ``http.port`` (``SO_REUSEPORT``).
    workers: int | str | None = attrs.field(default=None,
                                            validator=count_or("auto", 1, MAX_WORKERS))
    #: Worker ``i`` also serves /metrics, /healthz and /livez on ``http.host``, port
    #: ``metrics_port + i``, so Prometheus can scrape every copy (the shared port lands on any
    #: of them). Not set: ``http.port + PRIVATE_PORT_OFFSET`` (8180.. for a gateway on 8080)
    #: when the process runs more than one copy, none otherwise.
    #: otherwise.
    metrics_port: int | None = attrs.field(default=None, validator=in_range(1, 65535))


@attrs.frozen
class WorkerPlan:
    """How many copies of one process run and where each serves its own /metrics."""

    count: int
    #: Why: ``"set"`` (an integer in the config), ``"auto"`` or ``"default"`` (not set; 1).
    source: str
    #: Worker ``i``'s private port is ``metrics_port + i``; None: no private ports.
    metrics_port: int | None = None

    def private_port(self, index: int) -> int | None:
        return None if self.metrics_port is None else self.metrics_port + index


#: Where the private ports of a process's workers start by default, above its HTTP port: clear
#: of the ports just above it that configs give their other processes (8090, 8091, 8092 beside
#: a gateway on 8080), however many cores "auto" finds.
PRIVATE_PORT_OFFSET = 100


def _metrics_port(proc: ProcessConfig, count: int) -> int | None:
    if proc.metrics_port is not None:
        return proc.metrics_port
    if count > 1 and proc.http.enabled and proc.http.port:
        return proc.http.port + PRIVATE_PORT_OFFSET
    return None


@attrs.frozen
class SecurityConfig:
    """``profile = "prod"`` makes ``xypipe check`` and ``xypipe run`` refuse what production
    must not have: plaintext NATS, a process without a .creds file or client certificate,
    ``allowed_origins = ["*"]``, no real token key (``xypipe/_profile.py``). ``dev`` (the
    default) allows the demo's relaxations."""

    profile: str = attrs.field(default="dev", validator=one_of(["dev", "prod"]))


@attrs.frozen
class StageDecl:
    """One stage of a pipeline as declared, resolved and validated."""

    index: int
    name: str
    use: str
    stage_cls: type[StageBase]
    #: An instance of ``stage_cls.Config``.
    config: object
    budget: Budget
    restart: RestartPolicy

    @property
    def where(self) -> str:
        return f"stages[{self.index}] ({self.name})"


@attrs.frozen
class PipelineConfig:
    name: str
    stages: tuple[StageDecl, ...]
    degrade: DegradePolicy
    process: str = "main"
    shutdown_grace_ms: int = 3000


@attrs.frozen
class AppConfig:
    path: str
    nats: NatsConfig | None
    http: HttpConfig
    log: LogConfig
    processes: Mapping[str, ProcessConfig]
    pipelines: Mapping[str, PipelineConfig]
    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    #: ``[rollout]``: how a rolling restart judges each new copy (:mod:`xypipe._rollout`).
    rollout: RolloutConfig = attrs.field(factory=RolloutConfig)
    #: The command line's ``--set KEY=VALUE`` it was loaded with: handed on to the child
    #: processes, which read the same file and environment (:mod:`xypipe._overrides`).
    cli_sets: tuple[str, ...] = ()

    def process_names(self) -> list[str]:
        return sorted({p.process for p in self.pipelines.values()})

    def http_for(self, process: str) -> HttpConfig:
        proc = self.processes.get(process)
        return proc.http if proc is not None else self.http

    def declared_nats_role(self, process: str) -> str | None:
        """The role set for ``process`` in the config (``[nats] role`` for ``main``)."""
        if process == "main":
            return self.nats.role if self.nats is not None else None
        proc = self.processes.get(process)
        return proc.nats_role if proc is not None else None

    @property
    def embedded_auth(self) -> bool:
        """Whether processes sign in to an embedded bus with per-role users."""
        return (self.nats is not None and self.nats.url == "embedded"
                and self.nats.embedded.auth == "roles")

    def nats_for(self, process: str) -> ProcessNatsConfig | None:
        """``[processes.NAME.nats]``: how ``process`` signs in where it differs from [nats]."""
        proc = self.processes.get(process)
        return proc.nats if proc is not None else None

    def chain_of(self, process: str) -> str | None:
        """The trust chain directory ``process`` signs in from, if it uses one."""
        own = self.nats_for(process)
        if own is not None and (own.chain or own.creds or own.nkey):
            return own.chain
        return self.nats.chain if self.nats is not None else None

    @property
    def role_auth(self) -> bool:
        """Whether processes sign in as their role (the embedded bus's keys, a trust chain):
        then a process's stages must agree on one role."""
        return self.embedded_auth or any(
            self.chain_of(p) for p in self.process_names())

    def stage_roles(self, process: str) -> dict[str, list[str]]:
        """Role → the stages (``pipelines.P.stages[i] (name)``) of ``process`` that need it."""
        out: dict[str, list[str]] = {}
        for pipe in self.pipelines.values():
            if pipe.process != process:
                continue
            for decl in pipe.stages:
                role = decl.stage_cls.nats_role
                if role is not None:
                    out.setdefault(role, []).append(f"pipelines.{pipe.name}.{decl.where}")
        return out

    def role_conflicts(self) -> list[str]:
        """Problems: processes whose stages need more than one NATS role and name none (one
        connection is one user on the embedded bus; see :mod:`xypipe._nats_roles`)."""
        problems = []
        for process in self.process_names():
            if self.declared_nats_role(process) is not None:
                continue
            roles = self.stage_roles(process)
            if len(roles) > 1:
                needs = "; ".join(f"{r} ({', '.join(where)})"
                                  for r, where in sorted(roles.items()))
                key = "nats.role" if process == "main" else f"processes.{process}.nats_role"
                problems.append(
                    f"{key}: the stages of process {process!r} need different NATS roles — "
                    f"{needs} — and one process connects as one user; run them in separate "
                    f'[processes] or set nats_role (e.g. "superuser", which is not least '
                    "privilege)")
        return problems

    def process_role(self, process: str) -> str:
        """The role ``process`` connects as on the embedded bus: the one declared for it, else
        the one its stages name (``Stage.nats_role``), else ``basic`` (health only)."""
        declared = self.declared_nats_role(process)
        if declared is not None:
            return declared
        roles = self.stage_roles(process)
        if len(roles) > 1:
            raise WiringError(self.role_conflicts())
        return next(iter(roles), "basic")

    def worker_plan(self, process: str, cores: int | None = None) -> WorkerPlan:
        """How many copies of ``process`` run (``[processes.NAME] workers``) and where each
        serves its own /metrics. ``"auto"`` — the default for a process that runs a stage that
        scales out (the gateway) — is :func:`~xypipe._worker.auto_workers` of the ``cores``
        this process may use (its CPU affinity) and the config's other child processes; it is
        1 for a process whose HTTP port is picked at start (port 0 cannot be shared) or where
        a port cannot be shared at all (:func:`~xypipe._worker.ports_shared`)."""
        proc = self.processes.get(process)
        if proc is None or process == "main":
            return WorkerPlan(1, "default")
        wanted = proc.workers
        if wanted is None:
            wanted = "auto" if self._scales_out(process) else 1
        if wanted == "auto":
            source = "auto"
            if proc.http.enabled and (proc.http.port == 0 or not ports_shared()):
                count = 1
            else:
                others = sum(self._fixed_workers(p) for p in self.process_names()
                             if p not in ("main", process))
                count = auto_workers(usable_cores() if cores is None else cores, others)
        else:
            assert isinstance(wanted, int)
            count, source = wanted, "set" if proc.workers is not None else "default"
        return WorkerPlan(count, source, _metrics_port(proc, count))

    def private_metrics_port(self, process: str, worker: WorkerIdentity) -> int | None:
        """Where ``worker`` of ``process`` serves its own /metrics and /healthz (None: it
        serves them on the shared port only)."""
        proc = self.processes.get(process)
        if proc is None or process == "main":
            return None
        base = _metrics_port(proc, worker.count)
        return None if base is None else base + worker.index

    def _fixed_workers(self, process: str) -> int:
        # Another process's count as the auto rule sees it: its integer, else one core.
        proc = self.processes.get(process)
        return proc.workers if proc is not None and isinstance(proc.workers, int) else 1

    def _scales_out(self, process: str) -> bool:
        return any(decl.stage_cls.scales_out for pipe in self.pipelines.values()
                   if pipe.process == process for decl in pipe.stages)

    def provides(self, process: str) -> Provides:
        """What ``process`` gives its stages (checked against their ``requires``)."""
        return _provides(self.nats, self.http, self.processes, process)


def _provides(nats: NatsConfig | None, http: HttpConfig, processes: Mapping[str, ProcessConfig],
              process: str) -> Provides:
    proc = processes.get(process)
    if proc is not None:
        return Provides(process=process, nats=nats is not None, http=proc.http.enabled,
                        http_table=f"[processes.{process}.http]")
    return Provides(process=process, nats=nats is not None, http=http.enabled,
                    http_table="[http]")


def wiring_problems(cfg: AppConfig) -> list[str]:
    """Every wiring mistake of ``cfg``: stages that do not fit their neighbours or lack what
    they require from their process, processes needing two NATS roles (see
    :mod:`xypipe._wiring`). The loader and the runner both refuse a config with any."""
    problems: list[str] = []
    for pipe in cfg.pipelines.values():
        problems += pipeline_problems(f"pipelines.{pipe.name}", pipe.stages,
                                      cfg.provides(pipe.process))
    if cfg.role_auth:
        problems += cfg.role_conflicts()
    return problems


# Raw shapes of the tables that hold other tables: structured first, checked again below.


@attrs.frozen
class _PipelineTable:
    stages: list[RawTable] = attrs.field(validator=non_empty())
    degrade: DegradePolicy = attrs.field(factory=DegradePolicy)
    process: str = "main"
    shutdown_grace_ms: int = attrs.field(default=3000, validator=in_range(1, 600_000))


@attrs.frozen
class _AppTable:
    pipelines: dict[str, RawTable] = attrs.field(validator=non_empty())
    nats: NatsConfig | None = None
    http: HttpConfig = attrs.field(factory=HttpConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    processes: dict[str, ProcessConfig] = attrs.field(factory=dict)
    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    rollout: RolloutConfig = attrs.field(factory=RolloutConfig)


_STAGE_RESERVED = ("use", "name", "budget", "restart")

# --------------------------------------------------------------------------- the converter

_TYPE_WORDS: dict[type, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "a boolean (true or false)",
}


# Marks a type error inside the flattened lines until _with_ranges has seen it.
_TYPE_MARK = "\x00"


class _WrongType(XyError, TypeError):
    """A TOML value of the wrong type (reported with its path by the loader)."""

    code = CFG_WRONG_TYPE

    def __init__(self, expected: str, got: object) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"expected {expected}, got {show(got)}")


#: A cattrs structure hook: the raw value and the type asked for, the value made of it.
Hook = Callable[[object, object], object]


def _strict(kind: type) -> Hook:
    def hook(value: object, _type: object) -> object:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise _WrongType(_TYPE_WORDS[kind], value)
        return value

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for kind in _TYPE_WORDS:
        conv.register_structure_hook(kind, _strict(kind))

    def check_list(value: object, t: object) -> object:
        if not isinstance(value, list | tuple):
            raise _WrongType("a list", value)
        item_t = (typing.get_args(t) or (object,))[0]
        items = [v if item_t is object else conv.structure(v, item_t) for v in value]
        return tuple(items) if typing.get_origin(t) is tuple else items

    def check_table(value: object, t: object) -> object:
        if not isinstance(value, dict):
            raise _WrongType("a table", value)
        val_t = typing.get_args(t)[1]
        if val_t is object:
            return dict(value)
        out: dict[object, object] = {}
        errors: list[Exception] = []
        for k, v in value.items():
            try:
                out[k] = conv.structure(v, val_t)
            except Exception as exc:
                # The key becomes part of the reported path (processes.gateway.restart...).
                exc.add_note(IterableValidationNote(f"Structuring table value @ key {k!r}",
                                                    k, val_t))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors,
                                          typing.cast(type, t))
        return out

    def attrs_factory(cls: type) -> Hook:
        inner: Callable[[Mapping[str, object], object], object] = make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=True)

        def hook(value: object, t: object) -> object:
            if not isinstance(value, dict):
                raise _WrongType("a table", value)
            return inner(value, t)

        return hook

    def is_sequence(t: object) -> bool:
        return typing.get_origin(t) in (list, tuple)

    def is_table(t: object) -> bool:
        return typing.get_origin(t) is dict

    conv.register_structure_hook_func(is_sequence, check_list)
    conv.register_structure_hook_func(is_table, check_table)
    conv.register_structure_hook_factory(attrs.has, attrs_factory)
    restart_table = attrs_factory(ProcessRestartPolicy)

    def process_restart(value: object, t: object) -> object:
        # `restart = "always"` is short for `restart = { policy = "always" }`.
        return restart_table({"policy": value} if isinstance(value, str) else value, t)

    conv.register_structure_hook(ProcessRestartPolicy, process_restart)
    # `workers = 4` or `workers = "auto"`: the field's validator says what fits.
    conv.register_structure_hook_func(lambda t: t == (int | str | None), lambda v, _t: v)
    return conv


_converter = _make_converter()


# --------------------------------------------------------------------------- error reporting


# A TOML bare key: shown as `.key` in a path; anything else as `["key"]`.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)] if attrs.has(cls) else []


def _flatten(exc: BaseException, cls: type | None, path: str, out: list[str]) -> None:
    """Turn cattrs' exception groups (with their path notes) into one line per problem."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            sub_path, sub_cls = path, getattr(exc, "cl", cls)
            for note in getattr(sub, "__notes__", []):
                name = getattr(note, "name", None)
                index = getattr(note, "index", None)
                if name is not None and isinstance(sub_cls, type) and attrs.has(sub_cls):
                    sub_path = _join(sub_path, name)
                    field_type = attrs.fields_dict(sub_cls)[name].type
                    sub_cls = _unwrap(field_type)
                elif index is not None and type(note).__name__ != "AttributeValidationNote":
                    if isinstance(index, str) and _BARE_KEY.fullmatch(index):
                        sub_path = _join(sub_path, index)
                    else:
                        sub_path = f"{sub_path}[{show(index) if isinstance(index, str) else index}]"
            _flatten(sub, sub_cls, sub_path, out)
        return
    if isinstance(exc, ForbiddenExtraKeysError):
        known = _field_names(exc.cl)
        for key in sorted(exc.extra_fields):
            out.append(f"{_join(path, key)}: unknown key{_did_you_mean(key, known)}")
        return
    if isinstance(exc, Invalid):
        out.append(f"{_join(path, exc.field)}: {exc.expected}, got {show(exc.got)}{exc.hint}")
        return
    if isinstance(exc, _WrongType):
        out.append(f"{path}: {_TYPE_MARK}expected {exc.expected}, got {show(exc.got)}")
        return
    if isinstance(exc, KeyError):
        out.append(f"{path}: required key is missing")
        return
    if type(exc).__name__ == "CattrsError" and "not in literal" in str(exc):
        out.append(f"{path}: {exc}")
        return
    out.append(f"{path}: {type(exc).__name__}: {exc}")


def _unwrap(t: object) -> object:
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return args[0] if len(args) == 1 else t
    if typing.get_origin(t) in (list, tuple, dict) and args:
        return args[-1]
    return t


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _structure(value: object, cls: type[T], path: str, problems: list[str]) -> T | None:
    try:
        return _converter.structure(value, cls)
    except Invalid as exc:
        problems.append(f"{_join(path, exc.field)}: {exc.expected}, got {show(exc.got)}{exc.hint}")
    except (BaseExceptionGroup, _WrongType, ForbiddenExtraKeysError) as exc:
        found: list[str] = []
        _flatten(exc, cls, path, found)
        problems.extend(_with_ranges(found, cls, path))
    return None


def _with_ranges(lines: list[str], cls: type, path: str) -> list[str]:
    """Type errors on a field with a range validator say the range too."""
    out = []
    for line in lines:
        where, _, rest = line.partition(": ")
        if not rest.startswith(_TYPE_MARK):
            out.append(line)
            continue
        rest = rest.removeprefix(_TYPE_MARK)
        field = where.rsplit(".", 1)[-1]
        owner = _owner_of(cls, where[len(path) + 1 :] if path else where)
        if owner is not None and field in attrs.fields_dict(owner):
            exp = expected_of(attrs.fields_dict(owner)[field].validator)
            if exp and ", got " in rest:
                rest = f"{exp}, got {rest.split(', got ', 1)[1]}"
        out.append(f"{where}: {rest}")
    return out


def _owner_of(cls: type, rel: str) -> type | None:
    parts = [p for p in rel.replace("]", "").split(".") if p]
    owner: object = cls
    table_key = False
    for part in parts[:-1]:
        if table_key:  # the key inside a table of tables (processes.gateway)
            table_key = False
            continue
        name = part.split("[", 1)[0]
        if not _is_attrs(owner) or name not in attrs.fields_dict(owner):
            return None
        field_type = attrs.fields_dict(owner)[name].type
        owner = _unwrap(field_type)
        table_key = typing.get_origin(field_type) is dict and "[" not in part
    return owner if _is_attrs(owner) else None


def _is_attrs(t: object) -> typing.TypeGuard[type]:
    return isinstance(t, type) and attrs.has(t)


# --------------------------------------------------------------------------- loading


def _stage_decl(
    table: object, where: str, index: int, problems: list[str]
) -> StageDecl | None:
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table, got {show(table)}")
        return None
    use = table.get("use")
    if not isinstance(use, str) or not use:
        problems.append(f'{where}.use: expected a stage name or "module:Class", got {show(use)}')
        return None
    name = table.get("name", use.rsplit(":", 1)[-1].lower())
    if not isinstance(name, str) or not name:
        problems.append(f"{where}.name: expected a non-empty string, got {show(name)}")
        return None
    label = f"{where} ({name})"
    try:
        stage_cls = resolve_stage(use)
    except PluginError as exc:
        problems.append(f"{label}.use: {exc}")
        return None
    budget = _structure(table.get("budget", {}), Budget, f"{label}.budget", problems)
    restart = _structure(table.get("restart", {}), RestartPolicy, f"{label}.restart", problems)
    options = {k: v for k, v in table.items() if k not in _STAGE_RESERVED}
    config = _structure_stage_options(options, stage_cls, label, problems)
    if budget is None or restart is None or config is None:
        return None
    return StageDecl(
        index=index, name=name, use=use, stage_cls=stage_cls, config=config,
        budget=budget, restart=restart,
    )


def _structure_stage_options(
    options: RawTable, stage_cls: type[StageBase], label: str, problems: list[str]
) -> object | None:
    cfg_cls = stage_cls.Config
    known = set(_field_names(cfg_cls))
    extra = [k for k in options if k not in known]
    for key in extra:
        choices = sorted(known | set(_STAGE_RESERVED))
        problems.append(f"{label}.{key}: unknown key{_did_you_mean(key, choices)}")
    if extra:
        options = {k: v for k, v in options.items() if k in known}
    before = len(problems)
    cfg = _structure(options, cfg_cls, label, problems)
    return cfg if len(problems) == before and not extra else None


def parse_config(doc: RawTable, path: str = "<config>") -> AppConfig:
    """Validate an already-parsed TOML document; raises :class:`ConfigError` with every problem
    (:class:`~xypipe._errors.WiringError` when every problem is a wiring mistake)."""
    problems: list[str] = []
    wiring: list[str] = []  # the problems that are wiring mistakes (see xypipe._wiring)
    pipeline_tables = doc.get("pipelines")
    shallow = {k: v for k, v in doc.items() if k != "pipelines"}
    shallow["pipelines"] = (
        {k: {} for k in pipeline_tables} if isinstance(pipeline_tables, dict) else pipeline_tables
    )
    app = _structure(shallow, _AppTable, "", problems)

    pipelines: dict[str, PipelineConfig] = {}
    if isinstance(pipeline_tables, dict):
        for pname, ptable in pipeline_tables.items():
            ppath = f"pipelines.{pname}"
            if not isinstance(ptable, dict):
                problems.append(f"{ppath}: expected a table, got {show(ptable)}")
                continue
            raw = _structure(ptable, _PipelineTable, ppath, problems)
            if raw is None:
                continue
            decls = [
                _stage_decl(t, f"{ppath}.stages[{i}]", i, problems)
                for i, t in enumerate(raw.stages)
            ]
            if any(d is None for d in decls):
                continue
            stages = tuple(d for d in decls if d is not None)
            provides = (None if app is None else
                        _provides(app.nats, app.http, app.processes, raw.process))
            found = pipeline_problems(ppath, stages, provides)
            problems += found
            wiring += found
            pipelines[pname] = PipelineConfig(
                name=pname, stages=stages, degrade=raw.degrade, process=raw.process,
                shutdown_grace_ms=raw.shutdown_grace_ms,
            )
    cfg = None
    if app is not None:
        for pipe in pipelines.values():
            if pipe.process != "main" and pipe.process not in app.processes:
                declared = ", ".join(sorted(app.processes)) or "none declared"
                problems.append(
                    f"pipelines.{pipe.name}.process: expected one of the [processes] tables "
                    f"({declared}), got {show(pipe.process)}"
                )
        cfg = AppConfig(
            path=path, nats=app.nats, http=app.http, log=app.log, processes=app.processes,
            pipelines=pipelines, security=app.security, rollout=app.rollout,
        )
        problems += worker_problems(cfg)
        if cfg.role_auth:
            conflicts = cfg.role_conflicts()
            problems += conflicts
            wiring += conflicts
    if problems or cfg is None:
        kind = WiringError if len(wiring) == len(problems) else ConfigError
        raise kind([f"{path}: {p}" for p in problems],
                   codes=[WiringError.code if p in wiring else ConfigError.code
                          for p in problems])
    return cfg


def worker_problems(cfg: AppConfig) -> list[str]:
    """Copies of a process that cannot share its port, or private /metrics ports that run out
    of range or land on a port the config already gives to something else."""
    problems: list[str] = []
    fixed: dict[int, str] = {}
    if cfg.http.enabled and cfg.http.port:
        fixed[cfg.http.port] = "http.port"
    if cfg.nats is not None and cfg.nats.url == "embedded" and cfg.nats.embedded.port:
        fixed[cfg.nats.embedded.port] = "nats.embedded.port"
    for name, declared in cfg.processes.items():
        if declared.http.enabled and declared.http.port:
            fixed[declared.http.port] = f"processes.{name}.http.port"
    for name in cfg.process_names():
        proc = cfg.processes.get(name)
        if proc is None or name == "main":
            continue
        plan = cfg.worker_plan(name)
        if plan.count > 1 and proc.http.enabled and proc.http.port == 0:
            problems.append(
                f"processes.{name}.workers: expected 1 while http.port is 0, got {plan.count} "
                "(copies share one fixed port; a port picked at start cannot be shared): set "
                "http.port")
            continue
        if plan.metrics_port is None:
            continue
        key = "metrics_port" if proc.metrics_port is not None else "workers"
        last = plan.metrics_port + plan.count - 1
        if last > 65535:
            problems.append(
                f"processes.{name}.{key}: the private /metrics ports of {plan.count} workers "
                f"({plan.metrics_port}..{last}) go past 65535; set a lower metrics_port")
            continue
        for port in range(plan.metrics_port, last + 1):
            if port in fixed:
                problems.append(
                    f"processes.{name}.{key}: worker {port - plan.metrics_port}'s private "
                    f"/metrics port {port} (metrics_port {plan.metrics_port} + index) is "
                    f"{fixed[port]}; set a metrics_port whose {plan.count} ports are free")
                break
    return problems


def check_wiring(cfg: AppConfig) -> None:
    """Raise :class:`~xypipe._errors.WiringError` for a config with wiring mistakes, with the
    lines :func:`parse_config` reports for it (the runner's guard for configs built by hand)."""
    problems = wiring_problems(cfg)
    if problems:
        raise WiringError([f"{cfg.path}: {p}" for p in problems])


def read_config_doc(path: str | os.PathLike[str], shown: str | None = None) -> RawTable:
    """The TOML document of a config file, not yet checked."""
    shown = str(path) if shown is None else shown
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read the file: {exc.strerror}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{shown}: invalid TOML: {exc}"]) from None


def load_config(path: str | os.PathLike[str]) -> AppConfig:
    """Read and validate a TOML config file, the file alone (``xypipe run`` and ``check`` set
    keys from the environment and the command line over it: :mod:`xypipe._overrides`)."""
    return parse_config(read_config_doc(path), str(path))
