"""The pipeline runner: wiring, budgets, degradation, failure and shutdown.

One nursery per pipeline, one task per stage, one budgeted :class:`~xypipe._edge.Edge` between
neighbours, one monitor task sampling the budgets into the pipeline's degradation controller.

Failure: a stage that raises either is restarted (``restart.policy = "on-failure"``, with
exponential backoff and a restart counter) or brings its pipeline down with a
:class:`~xypipe._errors.StageError` naming the stage; the process then stops everything else.

Shutdown is closing: :meth:`PipelineRun.stop` cancels the *sources* only; every other stage sees
its input end, flushes, returns, and the runner closes its output. A grace deadline bounds the
drain, after which whatever is left is cancelled.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import NotRequired, TypedDict, TypeVar

import attrs
import trio

from xypipe._bus_layout import bus_layout
from xypipe._config import (
    AppConfig,
    HttpConfig,
    PipelineConfig,
    StageDecl,
    TlsConfig,
    check_wiring,
)
from xypipe._contracts import use_registry
from xypipe._degrade import DegradationController, Level, LevelWatch, Pressure, Transition
from xypipe._drain_request import DRAIN, DrainRequest
from xypipe._edge import Edge
from xypipe._embedded import EmbeddedBus, EmbeddedNats, supervised_embedded_nats
from xypipe._errors import (
    DEG_LEVEL_RAISED,
    SUP_ROLLOUT_PROBE_FAILED,
    SUP_WORKER_METRICS_PORT,
    NatsBackpressure,
    NatsRefused,
    StageError,
    XyError,
    find_in_group,
)
from xypipe._health import CHECK_INTERVAL, PipelineWatchdog
from xypipe._http import HttpServer, Request, Response
from xypipe._log import get_logger
from xypipe._metrics import Metrics, RunnerMetrics, zero_transitions
from xypipe._nats import NatsClient
from xypipe._nats_session import hold_nats
from xypipe._nats_signin import sign_in
from xypipe._stage import SharedValues, StageBase, StageContext
from xypipe._watchdog import Verdict
from xypipe._worker import WorkerIdentity, ports_shared
from xypipe.abc import HttpRoutes
from xypipe.abc import NatsClient as NatsApi
from xypipe.contracts import HealthReport

S = TypeVar("S")


class StreamHealth(TypedDict):
    status: str
    silence_s: float
    reason: str


class PipelineHealthDoc(TypedDict):
    state: str
    ready: bool
    level: int
    streams: dict[str, StreamHealth]


class NatsHealth(TypedDict):
    configured: bool
    connected: bool


class HealthDoc(TypedDict):
    """The ``/healthz`` document (shape in docs/operations.md)."""

    status: str
    live: bool
    ready: bool
    reasons: list[str]
    process: str
    nats: NatsHealth
    pipelines: dict[str, PipelineHealthDoc]
    #: This copy's index, for a process that runs several (``workers = N``).
    worker: NotRequired[int]
    #: The tree's supervised processes (one per worker) and whether each runs (``main``).
    processes: NotRequired[dict[str, bool]]


class Liveness(TypedDict):
    live: bool
    process: str

_log = get_logger("runner")

HEALTH_SUBJECT = "xy.exec.health"
HEALTH_INTERVAL = 5.0


@attrs.frozen
class PipelineHealth:
    """One pipeline's readiness: its watched streams and, when not ready, why."""

    streams: tuple[Verdict, ...]
    reasons: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.reasons


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class StageRun:
    """A declared stage at run time: its context, its current instance, cancel scope, state.

    The instance is made up front (a stage's constructor does no work) and again for every
    restart, so tests and tools can reach the running stage's public attributes
    (:meth:`PipelineRun.stage`).
    """

    def __init__(self, decl: StageDecl, ctx: StageContext) -> None:
        self.decl = decl
        self.ctx = ctx
        self.instance: StageBase = decl.stage_cls(decl.config, ctx)
        self.scope = trio.CancelScope()
        self.state = "pending"  # pending → running → done | failed | restarting
        self.restarts = 0

    @property
    def is_source(self) -> bool:
        return self.ctx.inbox is None


class PipelineRun:
    """One pipeline at run time."""

    def __init__(
        self,
        config: PipelineConfig,
        metrics: Metrics,
        *,
        nats: NatsApi | None = None,
        http: HttpRoutes | None = None,
        shared: SharedValues | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.metrics = metrics
        self.rmetrics = RunnerMetrics(metrics)
        self.watch = LevelWatch()
        self.controller = DegradationController(config.degrade)
        self.transitions: list[Transition] = []
        self.edges: list[Edge[object]] = []
        self.stages: list[StageRun] = []
        self.state = "pending"
        #: Set when the pipeline has stopped, for whatever reason.
        self.finished = trio.Event()
        self._scope = trio.CancelScope()
        self._stopping = False
        self.log = _log.bind(pipeline=self.name)
        self.watchdog = PipelineWatchdog(metrics, self.log)
        shared = shared if shared is not None else SharedValues()

        decls = config.stages
        for upstream, downstream in itertools.pairwise(decls):
            self.edges.append(
                Edge[object](f"{self.name}:{upstream.name}->{downstream.name}",
                             upstream.budget)
            )
        for i, decl in enumerate(decls):
            inbox = self.edges[i - 1].receive_channel if i > 0 else None
            outbox = self.edges[i].send_channel if i < len(self.edges) else None
            ctx = StageContext(
                pipeline=self.name, name=decl.name, inbox=inbox, outbox=outbox,
                degradation=self.watch, metrics=metrics,
                log=get_logger(f"stage.{decl.name}", pipeline=self.name, stage=decl.name),
                nats=nats, http=http, shared=shared, watchdog=self.watchdog,
            )
            self.stages.append(StageRun(decl, ctx))

    def stage(self, name: str, kind: type[S]) -> S:
        """The running instance of stage ``name`` (the latest, after restarts), checked to be
        a ``kind`` — how tests and tools read a stage's public attributes."""
        for s in self.stages:
            if s.decl.name == name:
                if not isinstance(s.instance, kind):
                    raise TypeError(f"pipeline {self.name!r}, stage {name!r} is a "
                                    f"{type(s.instance).__name__}, not a {kind.__name__}")
                return s.instance
        names = ", ".join(s.decl.name for s in self.stages)
        raise KeyError(f"pipeline {self.name!r} has no stage {name!r} (it has: {names})")

    # ------------------------------------------------------------------ control

    @property
    def ready(self) -> bool:
        return not self.health().reasons

    def health(self) -> PipelineHealth:
        """Readiness with its reasons: running, every stage serving, every watched stream
        fresh (which also means no replay in progress and data seen since start)."""
        reasons: list[str] = []
        if self.state != "running":
            reasons.append(f"pipeline {self.name}: {self.state}")
        for s in self.stages:
            if not (s.ctx.is_ready or s.state == "done"):
                reasons.append(f"pipeline {self.name}: stage {s.decl.name} not serving yet "
                               f"({s.state})")
        verdicts = self.watchdog.check()
        reasons.extend(f"pipeline {self.name}: {v.reason}" for v in verdicts if not v.fresh)
        return PipelineHealth(tuple(verdicts), tuple(reasons))

    def stop(self) -> None:
        """Graceful stop: end the sources, let the rest drain within the grace period."""
        if self._stopping:
            return
        self._stopping = True
        self.log.info("pipeline stopping", grace_ms=self.config.shutdown_grace_ms)
        self._scope.deadline = min(
            self._scope.deadline, trio.current_time() + self.config.shutdown_grace_ms / 1000
        )
        for s in self.stages:
            if s.is_source:
                s.scope.cancel()

    def force_level(self, level: Level | None) -> None:
        self._apply(self.controller.force(trio.current_time(), level))

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.state = "running"
        self.rmetrics.pipeline_running.labels(self.name).set(1)
        self.rmetrics.level.labels(f"pipeline:{self.name}").set(0)
        zero_transitions(self.rmetrics.backpressure_events, f"pipeline:{self.name}")
        self.log.info("pipeline starting", stages=[s.decl.name for s in self.stages])
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    stages_done = trio.Event()
                    nursery.start_soon(self._monitor, stages_done)
                    nursery.start_soon(self._check_streams, stages_done)
                    async with trio.open_nursery() as stage_nursery:
                        for s in self.stages:
                            stage_nursery.start_soon(self._run_stage, s)
                        task_status.started()
                    stages_done.set()
            self.state = "stopped"
            self.log.info("pipeline stopped", drained=not self._scope.cancelled_caught)
        except BaseException:
            self.state = "failed"
            raise
        finally:
            self.rmetrics.pipeline_running.labels(self.name).set(0)
            self.finished.set()

    async def _run_stage(self, s: StageRun) -> None:
        decl, ctx = s.decl, s.ctx
        policy = decl.restart
        backoff = policy.backoff_ms / 1000
        try:
            with s.scope:
                while True:
                    s.state = "running"
                    if s.restarts:
                        s.instance = decl.stage_cls(decl.config, ctx)
                    if decl.stage_cls.ready_on_start:
                        ctx.set_ready()
                    try:
                        await s.instance.run()
                        s.state = "done"
                        return
                    except trio.BrokenResourceError as exc:
                        # Downstream ended before us: nothing more can be delivered.
                        if ctx.outbox is not None and self._downstream_done(s):
                            s.state = "done"
                            return
                        raise self._failed(s, exc) from exc
                    except Exception as exc:
                        self.rmetrics.stage_failures.labels(
                            self.name, decl.name, type(exc).__name__
                        ).inc()
                        if policy.policy != "on-failure" or s.restarts >= policy.max_restarts:
                            raise self._failed(s, exc) from exc
                        s.restarts += 1
                        s.state = "restarting"
                        self.rmetrics.stage_restarts.labels(self.name, decl.name).inc()
                        ctx.log.error(
                            "stage failed; restarting", code=StageError.code, exc=exc,
                            restart=s.restarts, max_restarts=policy.max_restarts,
                            backoff_ms=round(backoff * 1000),
                        )
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2 or 0.001, policy.max_backoff_ms / 1000)
        finally:
            if s.state not in ("done", "failed"):
                s.state = "done"
            # Closing is how the neighbours learn we are gone: downstream's `async for` ends,
            # upstream's next send raises BrokenResourceError.
            if ctx.outbox is not None:
                ctx.outbox.close()
            if ctx.inbox is not None:
                ctx.inbox.close()

    def _downstream_done(self, s: StageRun) -> bool:
        idx = self.stages.index(s)
        return idx + 1 < len(self.stages) and self.stages[idx + 1].state in ("done", "failed")

    def _failed(self, s: StageRun, exc: BaseException) -> StageError:
        s.state = "failed"
        err = StageError(self.name, s.decl.name, exc)
        s.ctx.log.error("stage failed; stopping the pipeline", code=err.code, exc=exc)
        return err

    async def _monitor(self, stages_done: trio.Event) -> None:
        interval = self.config.degrade.sample_ms / 1000
        while not stages_done.is_set():
            self.sample()
            with trio.move_on_after(interval):
                await stages_done.wait()

    async def _check_streams(self, stages_done: trio.Event) -> None:
        # Transitions are logged and counted by whoever checks first; this makes sure someone
        # does even when no probe asks.
        while not stages_done.is_set():
            self.watchdog.check()
            with trio.move_on_after(CHECK_INTERVAL):
                await stages_done.wait()

    def sample(self) -> Transition | None:
        """Read every edge's budget, update the gauges and the degradation level."""
        readings = []
        for edge in self.edges:
            st = edge.statistics()
            p = st.pressure()
            readings.append(p)
            self.rmetrics.edge_items.labels(edge.name).set(st.items)
            self.rmetrics.edge_bytes.labels(edge.name).set(st.bytes)
            self.rmetrics.edge_age.labels(edge.name).set(st.oldest_age)
            finite = p.value if math.isfinite(p.value) else 0.0
            self.rmetrics.edge_pressure.labels(edge.name).set(finite)
        readings.extend(
            s.ctx.reported_pressure for s in self.stages if s.ctx.reported_pressure is not None
        )
        transition = self.controller.update(trio.current_time(), Pressure.worst(readings))
        self._apply(transition)
        return transition

    def _apply(self, t: Transition | None) -> None:
        if t is None:
            return
        self.transitions.append(t)
        scope = f"pipeline:{self.name}"
        self.rmetrics.backpressure_events.labels(scope, t.direction, f"L{int(t.new)}").inc()
        self.rmetrics.level.labels(scope).set(int(t.new))
        fields = {"old_level": int(t.old), "new_level": int(t.new), "reason": t.reason,
                  "recovery": t.recovery, "pressure": round(t.pressure, 3)}
        if t.direction == "up":
            self.log.warning("degradation level raised", code=DEG_LEVEL_RAISED, **fields)
        else:
            self.log.info("degradation level lowered", **fields)
        self.watch.set(t.new, t)


class Runner:
    """Runs every pipeline of one process, with the process's NATS connection and HTTP server.

    A config with wiring mistakes is refused here too (:class:`~xypipe._errors.WiringError`,
    the lines ``xypipe check`` prints), even when it was built without the loader.
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        process: str = "main",
        metrics: Metrics | None = None,
        nats_url: str | None = None,
        nats_nkey: str | None = None,
        worker: WorkerIdentity | None = None,
        supervised: Callable[[], dict[str, bool]] | None = None,
    ) -> None:
        check_wiring(config)
        self.config = config
        self.process = process
        #: Which copy of ``process`` this is (the supervisor says so in the environment).
        self.worker = worker if worker is not None else WorkerIdentity.from_environ()
        #: For the ``main`` process of a tree: whether each supervised child (each worker)
        #: runs, shown on /healthz.
        self._supervised = supervised
        #: The seed file this process signs in to the embedded bus with (given by the
        #: supervisor to its children; taken from the server when this runner starts it).
        self.nats_nkey = nats_nkey
        self.metrics = metrics or Metrics()
        if self.worker.count > 1:
            # Every copy's samples say which copy they are: Prometheus sums over `worker`.
            self.metrics.const_labels["worker"] = str(self.worker.index)
        # Contract decoding anywhere in the process counts unknown fields into our registry.
        use_registry(self.metrics.registry)
        self.nats_url = nats_url
        self.nats: NatsClient | None = None
        self.http: HttpServer | None = None
        self.pipelines: list[PipelineRun] = []
        #: The embedded bus this runner started (every node), and its first server.
        self.bus: EmbeddedBus | None = None
        self.embedded: EmbeddedNats | None = None
        #: Values the stages of this process share (``ctx.shared``).
        self.shared = SharedValues()
        #: The process's graceful drain (SIGTERM, an admin request): see :meth:`request_drain`.
        self.drain: DrainRequest = self.shared.get(DRAIN)
        #: Set when the process stopped because a drain finished (the worker exits drained).
        self.drained = False
        self._stop_requested = trio.Event()
        # Set last on the way out: the embedded nats-server stops after everything that uses it.
        self._nats_stop = trio.Event()
        self._nats_failed: XyError | None = None

    def pipeline_configs(self) -> list[PipelineConfig]:
        return [p for p in self.config.pipelines.values() if p.process == self.process]

    def pipeline(self, name: str) -> PipelineRun:
        for p in self.pipelines:
            if p.name == name:
                return p
        running = ", ".join(p.name for p in self.pipelines) or "none started"
        raise KeyError(f"process {self.process!r} runs no pipeline {name!r} ({running})")

    def stage(self, pipeline: str, name: str, kind: type[S]) -> S:
        """The running instance of a stage, typed: ``runner.stage("gateway", "gateway",
        Gateway).server`` (see :meth:`PipelineRun.stage`). Available once :meth:`run` has
        started."""
        return self.pipeline(pipeline).stage(name, kind)

    def health(self) -> HealthDoc:
        """The readiness document served on ``/healthz`` (shape in docs/operations.md).

        Ready = NATS connected (when configured), every pipeline running with every stage
        serving, and every watched input stream fresh. ``reasons`` says why not, one line per
        cause, naming the pipeline, the stream and how long it has been silent.
        """
        nats_ok = self.nats is None or self.nats.is_connected
        reasons: list[str] = []
        if self.drain.requested.is_set():
            # First, so a load balancer (or a person) reads why at once.
            reasons.append(f"draining: {self.drain.reason}")
        if not nats_ok:
            reasons.append("nats: disconnected")
        if not self.pipelines:
            reasons.append(f"process {self.process}: no pipeline started")
        pipes: dict[str, PipelineHealthDoc] = {}
        for p in self.pipelines:
            h = p.health()
            reasons.extend(h.reasons)
            pipes[p.name] = {
                "state": p.state, "ready": h.ready, "level": int(p.watch.level),
                "streams": {v.stream: {"status": v.status.value,
                                       "silence_s": round(v.silence_s, 3),
                                       "reason": v.reason}
                            for v in h.streams},
            }
        ready = not reasons
        doc: HealthDoc = {
            "status": "ok" if ready else "not-ready",
            "live": True,
            "ready": ready,
            "reasons": reasons,
            "process": self.process,
            "nats": {"configured": self.config.nats is not None, "connected": nats_ok},
            "pipelines": pipes,
        }
        if self.worker.count > 1:
            doc["worker"] = self.worker.index
        if self._supervised is not None:
            # Shown, not judged: a child restarting does not make this process unready.
            doc["processes"] = self._supervised()
        return doc

    def liveness(self) -> Liveness:
        """``/livez``: answering at all proves the event loop runs; nothing else is checked
        (a stale input is a readiness matter — restarting the process would not fix NATS)."""
        return {"live": True, "process": self.process}

    def stop(self) -> None:
        self._stop_requested.set()

    def request_drain(self, reason: str) -> bool:
        """Drain gracefully, then stop: not ready at once, the stages that hold clients move
        them away (the gateway: GoAway, spread over ``drain_s``), then the pipelines stop.
        False when a drain was already asked for."""
        return self.drain.request(reason)

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until every pipeline ends, :meth:`stop` is called, or a stage fails."""

        try:
            await self._run(task_status)
            if self._nats_failed is not None:
                raise self._nats_failed
        except BaseExceptionGroup as group:
            # A failed stage arrives wrapped by each nursery it crossed; the operator wants the
            # stage's own error, once.
            err = find_in_group(group, StageError)
            if err is None:
                raise
            raise err from None

    async def _run(self, task_status: trio.TaskStatus[Runner]) -> None:
        # Nested nurseries give the shutdown order: pipelines, then the NATS connection and the
        # HTTP server, then the embedded nats-server they talk to (stopped, not cancelled, so it
        # gets its SIGTERM and grace; a cancelled run kills it).
        async with trio.open_nursery() as base:
            url = await self._start_nats(base) if self.config.nats is not None else None
            async with trio.open_nursery() as services:
                if url is not None:
                    self.nats = await services.start(self._hold_nats, url)
                http_cfg = self.config.http_for(self.process)
                if http_cfg.enabled:
                    self.http = self._http_server(http_cfg.host, http_cfg.port,
                                                  server_tls(http_cfg.tls),
                                                  reuse_port=self._shares_ports)
                self.pipelines = [
                    PipelineRun(p, self.metrics, nats=self.nats, http=self.http,
                                shared=self.shared)
                    for p in self.pipeline_configs()
                ]
                if self.http is not None:
                    await services.start(self.http.serve)
                    await self._serve_private(services, http_cfg)
                if self.nats is not None:
                    await services.start(self._health_on_nats, self.nats)

                async with trio.open_nursery() as watcher:
                    watcher.start_soon(self._stop_on_request)
                    watcher.start_soon(self._stop_after_drain)
                    async with trio.open_nursery() as pipes:
                        for p in self.pipelines:
                            await pipes.start(p.run)
                        task_status.started(self)
                    watcher.cancel_scope.cancel()
                if self.nats is not None and self.nats.is_connected:
                    with trio.move_on_after(1.0):
                        await self.nats.flush(timeout=1.0)
                services.cancel_scope.cancel()
            self._nats_stop.set()

    @property
    def _shares_ports(self) -> bool:
        """Copies of a process share its ports: several workers, or a supervised copy whose
        successor a rollout starts beside it (both must set ``SO_REUSEPORT``)."""
        return self.worker.count > 1 or (self.worker.supervised and ports_shared())

    async def _serve_private(self, nursery: trio.Nursery, http_cfg: HttpConfig) -> None:
        """Worker ``i``'s own /metrics and /healthz on ``metrics_port + i``: the shared port
        lands on any copy, this one on this copy only (what Prometheus scrapes)."""
        control = self.worker.control_port
        if control is not None:
            # Loopback only, for the supervisor's rollout: this copy's own health and metrics.
            try:
                await nursery.start(self._http_server("127.0.0.1", control, None).serve)
            except OSError as exc:
                _log.warning("no control port: a rollout cannot read this copy's health",
                             code=SUP_ROLLOUT_PROBE_FAILED, port=control, error=str(exc))
        port = self.config.private_metrics_port(self.process, self.worker)
        if port is None:
            return
        private = self._http_server(http_cfg.host, port, server_tls(http_cfg.tls),
                                    reuse_port=self._shares_ports)
        if self.http is not None:
            # Every route of the shared port (the same /healthz and /metrics, and the stages'
            # own, e.g. a gateway's /admin/drain, which must reach this worker and no other).
            private.share_routes(self.http)
        try:
            await nursery.start(private.serve)
        except OSError as exc:
            _log.warning("worker serves no private /metrics: its port is taken",
                         code=SUP_WORKER_METRICS_PORT, process=self.process,
                         worker=self.worker.index, port=port, error=str(exc))

    def _http_server(self, host: str, port: int, tls: ssl.SSLContext | None, *,
                     reuse_port: bool = False) -> HttpServer:
        server = HttpServer(host, port, ssl_context=tls, reuse_port=reuse_port)

        async def healthz(_req: Request) -> Response:
            doc = self.health()
            return Response.json(doc, 200 if doc["ready"] else 503)

        async def metrics(_req: Request) -> Response:
            return Response(200, self.metrics.render(),
                            "text/plain; version=0.0.4; charset=utf-8")

        async def livez(_req: Request) -> Response:
            return Response.json(self.liveness(), 200)

        server.route("/healthz", healthz)
        server.route("/readyz", healthz)
        server.route("/livez", livez)
        server.route("/metrics", metrics)
        return server

    def health_report(self) -> bytes:
        doc = self.health()
        checks = health_checks(doc)
        return HealthReport(
            service=self.process, instance=_instance_id(), live=True, ready=doc["ready"],
            checks=checks, ts_us=int(time.time() * 1_000_000),
        ).SerializeToString()

    async def _health_on_nats(
        self, nc: NatsClient, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer requests on ``xy.exec.health`` and publish a report every HEALTH_INTERVAL.

        Health goes over NATS too (the spec's admin subject), so an operator can ask every
        instance at once: ``nats req xy.exec.health ''`` collects one HealthReport each.
        """
        async with nc.subscribe(HEALTH_SUBJECT) as sub, trio.open_nursery() as nursery:
            task_status.started()

            def send(subject: str) -> None:
                # A report that cannot be queued now (the connection's publish queue is full:
                # a publisher out-producing the machine) is skipped, never fatal: the next
                # one follows within HEALTH_INTERVAL, and a process must not die of its own
                # heartbeat.
                try:
                    nc.publish_nowait(subject, self.health_report())
                except NatsBackpressure as exc:
                    _log.warning("health report skipped: the publish queue is full",
                                 code=exc.code, subject=subject)

            async def publish_periodically() -> None:
                while True:
                    if nc.is_connected:
                        send(f"{HEALTH_SUBJECT}.{self.process}")
                    await trio.sleep(HEALTH_INTERVAL)

            nursery.start_soon(publish_periodically)
            async for batch in sub:
                for msg in batch:
                    if msg.reply:
                        send(msg.reply)

    async def _stop_after_drain(self) -> None:
        await self.drain.requested.wait()
        _log.info("draining", process=self.process, reason=self.drain.reason)
        await self.drain.wait_finished()
        self.drained = True
        self.stop()

    async def _stop_on_request(self) -> None:
        await self._stop_requested.wait()
        for p in self.pipelines:
            p.stop()

    async def _start_nats(self, nursery: trio.Nursery) -> str:
        assert self.config.nats is not None
        if self.nats_url:
            return self.nats_url
        if self.config.nats.url != "embedded":
            return self.config.nats.url
        bus: EmbeddedBus = await nursery.start(self._supervise_nats)
        self.bus = bus
        self.embedded = bus.nodes[0]
        if bus.keys is not None and self.nats_nkey is None:
            self.nats_nkey = str(bus.keys.seed_file(self.nats_role))
        return bus.url

    @property
    def nats_role(self) -> str:
        """The embedded bus role this process signs in as (docs/security.md)."""
        return self.config.process_role(self.process)

    async def _hold_nats(
        self, url: str, *, task_status: trio.TaskStatus[NatsClient] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        cfg = self.config.nats
        assert cfg is not None
        signin = sign_in(self.config, self.process, embedded_nkey=self.nats_nkey)
        try:
            await hold_nats(url, cfg, signin, self.metrics, task_status=task_status)
        except NatsRefused as exc:
            if not (self.config.embedded_auth and self.nats_nkey is None):
                raise
            raise NatsRefused(
                f"{exc}; this config's embedded bus admits its role users only: pass "
                f"--nats-nkey DATA_DIR/auth/{self.nats_role}.nk (xypipe run does that for the "
                "processes it starts; docs/security.md)", reason=exc.reason) from exc

    async def _supervise_nats(
        self, *, task_status: trio.TaskStatus[EmbeddedBus] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self.config.nats is not None
        error = await supervised_embedded_nats(
            self.config.nats.embedded, metrics=self.metrics, stopping=self._nats_stop,
            replicas=self.config.nats.stream_replicas,
            layout=bus_layout(self.config), task_status=task_status,
        )
        if error is not None:
            # Down for good: the pipelines stop (they drain what they can), then run() raises.
            self._nats_failed = error
            self.stop()


def health_checks(doc: HealthDoc) -> dict[str, str]:
    """The ``checks`` map of a HealthReport: the same readiness and reasons as ``/healthz``.

    Keys: ``nats``; ``pipeline.{name}`` (its state); ``stream.{pipeline}.{stream}`` (fresh,
    starting, catching_up or stale); ``reasons`` (one line per cause, newline-separated) when
    not ready.
    """
    checks = {"nats": "connected" if doc["nats"]["connected"] else "disconnected"}
    for name, p in doc["pipelines"].items():
        checks[f"pipeline.{name}"] = p["state"]
        for stream, v in p["streams"].items():
            checks[f"stream.{name}.{stream}"] = v["status"]
    if doc["reasons"]:
        checks["reasons"] = "\n".join(doc["reasons"])
    return checks


def server_tls(tls: TlsConfig | None) -> ssl.SSLContext | None:
    """The TLS context of an HTTPS/WSS endpoint, or None for plain HTTP."""
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
    assert tls.cert is not None  # HttpConfig refuses TLS without a certificate
    ctx.load_cert_chain(tls.cert, tls.key)
    return ctx
