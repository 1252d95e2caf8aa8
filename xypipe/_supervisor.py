"""One ``xypipe run`` for a whole deployment: processes, embedded NATS, signals.

A Python process uses one core, so pipelines that name a ``[processes.X]`` table run in a child
``xypipe run CONFIG --process X``. The parent owns the embedded nats-server (children get its URL)
and runs the ``main`` process's pipelines itself.

A process with ``workers = N`` (:meth:`~xypipe._config.AppConfig.worker_plan`) runs as N
children, ``NAME.0`` .. ``NAME.{N-1}``, each supervised alone (its own restarts and budget) and
told which copy it is in its environment (:class:`~xypipe._worker.WorkerIdentity`); they share
the process's HTTP port (``SO_REUSEPORT``) and each serves its own /metrics on
``metrics_port + index``.

Every child and the embedded server are supervised (:func:`xypipe._supervise.supervise`): one
that dies is restarted in place (same argv, same ports) by its ``restart`` policy while the others
keep serving; the tree stops only when a restart budget is spent (or the policy is ``never``), and
then exits non-zero naming the process.

Stopping (SIGINT/SIGTERM, or a process down for good) goes in order: the children are asked to
stop (SIGINT: they finish what is in flight, without a graceful drain — every peer they could
move their clients to is stopping too) and the main runner stops, then — once all of them are
gone — the embedded nats-server, so the pipelines' last messages still reach it. Children and
the server run in their own sessions, so a terminal's Ctrl-C reaches this process only. A second
signal stops at once: everything left is killed.

A SIGTERM sent to one child (an operator, an orchestrator, a rolling restart) is a **graceful
drain** of that child (:mod:`xypipe._drain_request`): it stops taking clients, moves its own
to the other workers and exits with :data:`~xypipe._drain_request.DRAINED_EXIT`; the
supervisor starts a fresh copy at once, without counting a failure (docs/architecture.md
"Graceful drain").
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping

import attrs
import trio

from xypipe._bus_layout import bus_layout
from xypipe._config import AppConfig
from xypipe._drain_request import DRAINED_EXIT
from xypipe._embedded import EmbeddedBus, supervised_embedded_nats
from xypipe._errors import (
    GW_DRAINED_EXIT,
    SUP_HTTP_PORT_TAKEN,
    SUP_KILLED_AFTER_GRACE,
    SUP_SECOND_SIGNAL,
    SUP_WORKERS_PLANNED,
    ChildFailed,
    XyError,
)
from xypipe._http import HttpServer, Request, Response
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._process import Child
from xypipe._profile import check_profile
from xypipe._runner import Runner, server_tls
from xypipe._supervise import WORKER_CODES, Failed, Finished, SupervisionMetrics, supervise
from xypipe._worker import PROCESS_ENV, WorkerIdentity, usable_cores

__all__ = ["CHILD_GRACE", "ChildFailed", "run_process_tree"]

_log = get_logger("supervisor")

#: Children get this long after SIGTERM before they are killed.
CHILD_GRACE = 4.0


async def run_process_tree(
    cfg: AppConfig,
    *,
    process: str | None = None,
    nats_url: str | None = None,
    nats_nkey: str | None = None,
    signals: tuple[int, ...] = (),
) -> int:
    """Run ``process`` (a child), or — with ``process=None`` — the whole tree; the exit
    status (0, or :data:`DRAINED_EXIT` for a supervised child that drained). A config under
    the prod profile that relaxes what production requires is refused before anything starts
    (:mod:`xypipe._profile`)."""
    check_profile(cfg)
    if process is not None:
        return await _run_single(cfg, process, nats_url, signals, nats_nkey)
    children = [p for p in cfg.process_names() if p != "main"]
    if not children:
        return await _run_single(cfg, "main", nats_url, signals, nats_nkey)
    await _run_tree(cfg, _units(cfg, children), nats_url, signals)
    return 0


@attrs.frozen
class _Unit:
    """One supervised child: a process, or one worker of a process that runs several."""

    #: What logs, ``process_up`` and ``/healthz`` call it: the process's name, or
    #: ``NAME.INDEX`` for one of its workers.
    name: str
    identity: WorkerIdentity


def _units(cfg: AppConfig, children: list[str]) -> list[_Unit]:
    units = []
    for process in children:
        plan = cfg.worker_plan(process)
        if plan.source == "auto" or plan.count > 1:
            _log.info("workers planned", code=SUP_WORKERS_PLANNED,
                      process=process, workers=plan.count, source=plan.source,
                      cores=usable_cores(), metrics_port=plan.metrics_port)
        for index in range(plan.count):
            name = process if plan.count == 1 else f"{process}.{index}"
            units.append(_Unit(name, WorkerIdentity(process, index, plan.count)))
    return units


async def _run_single(
    cfg: AppConfig, process: str, nats_url: str | None, signals: tuple[int, ...],
    nats_nkey: str | None = None,
) -> int:
    runner = Runner(cfg, process=process, nats_url=nats_url, nats_nkey=nats_nkey)
    async with trio.open_nursery() as nursery:
        if signals:
            nursery.start_soon(_stop_on_signals, runner.stop, nursery.cancel_scope, signals,
                               runner.request_drain)
        await runner.run()
        nursery.cancel_scope.cancel()
    if runner.drained and PROCESS_ENV in os.environ:
        # Started by a supervisor: say "drained" so it starts a fresh copy, not a failure.
        _log.info("drained; exiting for a replacement", code=GW_DRAINED_EXIT,
                  process=process, status=DRAINED_EXIT)
        return DRAINED_EXIT
    return 0


async def _stop_on_signals(
    stop: Callable[[], object], scope: trio.CancelScope, signals: tuple[int, ...],
    drain: Callable[[str], object] | None = None,
) -> None:
    """The first signal stops (SIGTERM with ``drain``: drains, then stops), a second one
    cancels everything at once."""
    with trio.open_signal_receiver(*signals) as received:
        count = 0
        async for signum in received:
            count += 1
            if count == 1:
                name = signal.Signals(signum).name
                if drain is not None and signum == signal.SIGTERM:
                    _log.info("draining (signal)", signal=name)
                    drain(name)
                else:
                    _log.info("stopping (signal)", signal=name)
                    stop()
            else:
                _log.warning("second signal: stopping now", code=SUP_SECOND_SIGNAL)
                scope.cancel()


class _Tree:
    """What the members of a running tree share: the stop request and why it was made."""

    def __init__(self, members: int) -> None:
        self.stop_all = trio.Event()
        self.failures: list[XyError] = []
        self._running = members

    def fail(self, error: XyError) -> None:
        self.failures.append(error)
        self.stop_all.set()

    def finished(self) -> None:
        """A member ended cleanly and is not coming back; the tree ends with the last one."""
        self._running -= 1
        if self._running <= 0:
            self.stop_all.set()


async def _run_tree(
    cfg: AppConfig, children: list[_Unit], nats_url: str | None, signals: tuple[int, ...]
) -> None:
    main_pipelines = [p for p in cfg.pipelines.values() if p.process == "main"]
    # The parent's registry: process_restarts_total, served by the main runner's /metrics.
    metrics = Metrics()
    tree = _Tree(len(children) + (1 if main_pipelines else 0))
    nats_stop = trio.Event()
    async with trio.open_nursery() as outer:
        if signals:
            outer.start_soon(_stop_on_signals, tree.stop_all.set, outer.cancel_scope, signals)
        # Nesting is the stop order: `work` (children, main runner) ends before NATS is asked to.
        async with trio.open_nursery() as base:
            url = nats_url
            supervised = [unit.name for unit in children]
            keys = None
            if url is None and cfg.nats is not None and cfg.nats.url == "embedded":
                bus = await base.start(_own_nats, cfg, metrics, nats_stop, tree)
                # Every node: a child reaches whichever is up, and moves when it is lost.
                url = bus.url
                keys = bus.keys
                supervised += (["nats"] if len(bus.nodes) == 1
                               else [f"nats-{i}" for i in range(len(bus.nodes))])

            def nkey_of(process: str) -> str | None:
                # Each process signs in as its own role on the embedded bus.
                if keys is None:
                    return None
                return str(keys.seed_file(cfg.process_role(process)))

            if not main_pipelines and cfg.http.enabled:
                # In `outer`: /metrics answers until NATS too has stopped.
                await _serve_supervisor(cfg, children, supervised, metrics, outer)
            try:
                async with trio.open_nursery() as work:
                    for unit in children:
                        await work.start(_child, cfg, unit, url, nkey_of(unit.identity.process),
                                         metrics, tree)
                    runner = None
                    if main_pipelines:
                        runner = Runner(cfg, process="main", nats_url=url, metrics=metrics,
                                        nats_nkey=nkey_of("main"),
                                        supervised=lambda: _up(metrics, supervised))
                        work.start_soon(_main_runner, runner, tree)
                    await tree.stop_all.wait()
                    if runner is not None:
                        runner.stop()
            finally:
                nats_stop.set()
        outer.cancel_scope.cancel()
    if tree.failures:
        for extra in tree.failures[1:]:
            _log.error("also failed", code=extra.code, error=str(extra))
        raise tree.failures[0]


def _up(metrics: Metrics, supervised: list[str]) -> dict[str, bool]:
    """Whether each supervised process (each worker of one that runs several) runs now."""
    return {name: metrics.registry.get_sample_value("process_up", {"process": name}) == 1
            for name in supervised}


async def _serve_supervisor(
    cfg: AppConfig, children: list[_Unit], supervised: list[str], metrics: Metrics,
    nursery: trio.Nursery,
) -> None:
    """Without ``main`` pipelines nobody serves the parent's registry: serve it on ``[http]``,
    with a /healthz that is ready while every supervised process — every worker — runs."""
    taken = {cfg.http_for(unit.identity.process).port: unit.identity.process
             for unit in children}
    if cfg.http.port in taken:
        _log.warning("the supervisor's [http] port is a child's; it serves no /metrics",
                     code=SUP_HTTP_PORT_TAKEN, port=cfg.http.port, process=taken[cfg.http.port])
        return
    server = HttpServer(cfg.http.host, cfg.http.port, ssl_context=server_tls(cfg.http.tls))

    async def healthz(_req: Request) -> Response:
        up = _up(metrics, supervised)
        ready = all(up.values())
        return Response.json({"status": "ok" if ready else "not-ready", "live": True,
                              "ready": ready, "process": "supervisor", "processes": up},
                             200 if ready else 503)

    async def metrics_page(_req: Request) -> Response:
        return Response(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    server.route("/healthz", healthz)
    server.route("/metrics", metrics_page)
    await nursery.start(server.serve)


async def _main_runner(runner: Runner, tree: _Tree) -> None:
    try:
        await runner.run()
    except XyError as exc:
        # The children still drain and NATS stops last; the error is raised once they have.
        tree.fail(exc)
    else:
        tree.finished()


async def _own_nats(
    cfg: AppConfig, metrics: Metrics, stopping: trio.Event, tree: _Tree,
    *, task_status: trio.TaskStatus[EmbeddedBus] = trio.TASK_STATUS_IGNORED,
) -> None:
    assert cfg.nats is not None
    error = await supervised_embedded_nats(
        cfg.nats.embedded, metrics=metrics, stopping=stopping, layout=bus_layout(cfg),
        replicas=cfg.nats.stream_replicas,
        task_status=task_status,
    )
    if error is not None:
        tree.fail(error)


class _Worker:
    """``xypipe run CONFIG --process NAME`` as a :class:`~xypipe._supervise.Supervised` unit;
    ``env`` is added to ours (which copy of the process it is)."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self._proc: Child | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        # Own session: a Ctrl-C in the terminal reaches the parent only, which then stops the
        # children in order (pipelines drain before NATS goes away).
        self._proc = Child.spawn(self.argv, start_new_session=True, env=self.env)

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        # SIGINT, not SIGTERM: the whole tree stops, so there is no peer to drain to (a
        # SIGTERM from outside is a drain: see the module docstring).
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(CHILD_GRACE):
            await proc.wait()
            return
        _log.warning("child did not stop in time; killing", code=SUP_KILLED_AFTER_GRACE,
                     process=self.name)
        await self.kill()

    async def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.kill()
        await proc.wait()


async def _child(
    cfg: AppConfig, unit: _Unit, nats_url: str | None, nats_nkey: str | None, metrics: Metrics,
    tree: _Tree, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
) -> None:
    process = unit.identity.process
    argv = [sys.executable, "-m", "xypipe", "run", cfg.path, "--process", process]
    if nats_url:
        argv += ["--nats-url", nats_url]
    if nats_nkey:
        # A path, not the seed: argv is visible to every process on the machine.
        argv += ["--nats-nkey", nats_nkey]
    # The child reads the same file and inherits our environment; what our command line set
    # goes with it, so every process runs the same config.
    argv += [f"--set={item}" for item in cfg.cli_sets]
    # Each worker has the process's restart policy and a budget of its own.
    outcome = await supervise(
        unit.name, _Worker(unit.name, argv, unit.identity.environ()),
        cfg.processes[process].restart, stopping=tree.stop_all,
        metrics=SupervisionMetrics(metrics), codes=WORKER_CODES, task_status=task_status,
    )
    if isinstance(outcome, Failed):
        tree.fail(outcome.error)
    elif isinstance(outcome, Finished):
        tree.finished()
