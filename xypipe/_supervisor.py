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

import contextlib
import os
import signal
import socket
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
    SUP_ROLLOUT_REFUSED,
    SUP_ROLLOUT_SKIPPED,
    SUP_SECOND_SIGNAL,
    SUP_WORKERS_PLANNED,
    ChildFailed,
    RolloutError,
    XyError,
)
from xypipe._http import HttpServer, Request, Response
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._overrides import load_effective
from xypipe._ownership import OwnershipConfig
from xypipe._process import Child
from xypipe._profile import check_profile
from xypipe._rollout import Outcome
from xypipe._rollout_shell import (
    ROLLOUT_SUB,
    Copy,
    RunFile,
    drive_rollout,
    rollout_audit,
    run_file_for,
)
from xypipe._runner import Runner, server_tls
from xypipe._supervise import (
    WORKER_CODES,
    Failed,
    Finished,
    Stopped,
    SupervisionMetrics,
    supervise,
)
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


def _units(cfg: AppConfig, children: list[str], *, announce: bool = True) -> list[_Unit]:
    units = []
    for process in children:
        plan = cfg.worker_plan(process)
        if announce and (plan.source == "auto" or plan.count > 1):
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

    def joined(self) -> None:
        """A rollout's successor runs beside its predecessor."""
        self._running += 1

    def left(self) -> None:
        """A copy retired by a rollout (drained and stopped on purpose)."""
        self._running -= 1

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
                    fleet = _Fleet(cfg, url, nkey_of, metrics, tree, work, supervised)
                    for unit in children:
                        await fleet.start_first(unit)
                    work.start_soon(fleet.serve, bool(signals))
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
        #: Set when the process exits on its own (seen by the supervision loop's wait).
        self.exited: trio.Event | None = None
        #: Set by a rollout retiring this copy: stop drains it (SIGTERM) within this long.
        self.drain_grace: float | None = None

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
        status = await self._proc.wait()
        if self.exited is not None:
            self.exited.set()
        return status

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        # SIGINT, not SIGTERM: the whole tree stops, so there is no peer to drain to (a
        # SIGTERM from outside is a drain: see the module docstring). A copy a rollout retires
        # has peers: it drains.
        draining = self.drain_grace is not None
        proc.send_signal(signal.SIGTERM if draining else signal.SIGINT)
        with trio.move_on_after(self.drain_grace if self.drain_grace is not None
                                else CHILD_GRACE):
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


@attrs.define
class _Slot:
    """One running copy of a unit: the first one, or a rollout's successor."""

    unit: _Unit
    #: Its supervised name: the unit's, with ``~gG`` for generation G > 0.
    name: str
    worker: _Worker
    #: Set to drain and stop this copy (by a rollout, or when the tree stops).
    retire: trio.Event = attrs.field(factory=trio.Event)
    #: Set once its supervision loop has ended.
    gone: trio.Event = attrs.field(factory=trio.Event)
    #: Set when its process exited on its own.
    exited: trio.Event = attrs.field(factory=trio.Event)
    #: A successor on trial: its failures are the rollout's to judge, not the tree's.
    probation: bool = False

    def copy(self) -> Copy:
        return Copy(self.name, self.unit.identity.control_port, self.exited)


class _Fleet:
    """The tree's copies, by unit, and the rollouts over them (:class:`~xypipe._rollout_shell.
    Fleet`)."""

    def __init__(self, cfg: AppConfig, url: str | None, nkey_of: Callable[[str], str | None],
                 metrics: Metrics, tree: _Tree, nursery: trio.Nursery,
                 supervised: list[str]) -> None:
        self.cfg = cfg
        self.url = url
        self.nkey_of = nkey_of
        self.metrics = metrics
        self.tree = tree
        self.nursery = nursery
        #: The names the supervisor's /healthz lists (kept current across rollouts).
        self.supervised = supervised
        self.current_slots: dict[str, _Slot] = {}
        self.successors: dict[str, _Slot] = {}
        self.rolling = False
        self.rollouts = metrics.counter("rollouts_total", "Rolling restarts, by how they ended",
                                        ["outcome"])
        for outcome in _ROLLOUT_OUTCOMES:
            self.rollouts.labels(outcome)  # each reads 0 until it happens
        self.rollout_running = metrics.gauge("rollout_running", "1 while a rollout runs")

    async def start_first(self, unit: _Unit) -> None:
        slot = self._slot(unit, 0)
        self.current_slots[unit.name] = slot
        await self.nursery.start(self._supervise, slot)

    def _slot(self, unit: _Unit, generation: int) -> _Slot:
        identity = attrs.evolve(unit.identity, generation=generation,
                                control_port=_free_port())
        unit = _Unit(unit.name, identity)
        name = unit.name if generation == 0 else f"{unit.name}~g{generation}"
        return _Slot(unit, name, _Worker(name, _argv(self.cfg, unit, self.url, self.nkey_of),
                                         identity.environ()))

    async def serve(self, rollouts: bool) -> None:
        """Until the tree stops: roll out on SIGHUP (which ``xypipe rollout CONFIG`` sends)
        when this run handles signals; then retire every copy (the tree's stop)."""
        async with trio.open_nursery() as nursery:
            if rollouts:
                nursery.start_soon(self._rollouts_on_sighup)
            await self.tree.stop_all.wait()
            for slot in [*self.current_slots.values(), *self.successors.values()]:
                slot.retire.set()
            nursery.cancel_scope.cancel()

    async def _rollouts_on_sighup(self) -> None:
        run_file = RunFile(run_file_for(self.cfg.path), self.cfg.path)
        # The handler first, then the file that tells `xypipe rollout` our pid: a SIGHUP
        # before the handler would end the tree (its default action).
        with trio.open_signal_receiver(signal.SIGHUP) as received:
            run_file.write()
            try:
                async for _ in received:
                    await self.rollout(run_file, trigger="SIGHUP")
            finally:
                run_file.remove()

    async def _supervise(self, slot: _Slot, *,
                         task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run_slot(slot, task_status)
        finally:
            slot.gone.set()

    async def _run_slot(self, slot: _Slot, task_status: trio.TaskStatus[object]) -> None:
        process = slot.unit.identity.process
        slot.worker.exited = slot.exited
        outcome = await supervise(
            slot.name, slot.worker, self.cfg.processes[process].restart, stopping=slot.retire,
            metrics=SupervisionMetrics(self.metrics), codes=WORKER_CODES, task_status=task_status,
        )
        if self.tree.stop_all.is_set() or isinstance(outcome, Stopped):
            return
        if slot.probation:
            slot.exited.set()  # the rollout rolls back; the tree keeps running
        elif isinstance(outcome, Failed):
            self.tree.fail(outcome.error)
        elif isinstance(outcome, Finished):
            self.tree.finished()

    # ---- what a rollout asks (xypipe._rollout_shell.Fleet)

    def current(self, unit: str) -> Copy:
        return self.current_slots[unit].copy()

    def peers(self, unit: str) -> list[Copy]:
        """The copies of ``unit``'s process still on the old version (not those this rollout
        already replaced: the gate compares new with old)."""
        me = self.current_slots[unit].unit.identity
        return [s.copy() for s in self.current_slots.values()
                if s.unit.identity.process == me.process
                and s.unit.identity.generation <= me.generation]

    async def start_successor(self, unit: str) -> Copy:
        if self.tree.stop_all.is_set():
            raise RolloutError("the tree is stopping")
        old = self.current_slots[unit]
        slot = self._slot(old.unit, old.unit.identity.generation + 1)
        slot.probation = True
        self.successors[unit] = slot
        self.tree.joined()
        self.supervised.append(slot.name)
        try:
            await self.nursery.start(self._supervise, slot)
        except (XyError, OSError, BaseExceptionGroup):
            self._forget(slot)
            del self.successors[unit]
            raise
        return slot.copy()

    async def retire_old(self, unit: str) -> None:
        old = self.current_slots[unit]
        new = self.successors.pop(unit)
        new.probation = False
        self.current_slots[unit] = new
        old.worker.drain_grace = _drain_grace(self.cfg, old.unit.identity.process)
        old.retire.set()
        await old.gone.wait()
        self._forget(old)

    async def retire_new(self, unit: str) -> None:
        new = self.successors.pop(unit)
        new.worker.drain_grace = _drain_grace(self.cfg, new.unit.identity.process)
        new.retire.set()
        await new.gone.wait()
        self._forget(new)

    def _forget(self, slot: _Slot) -> None:
        """A retired copy leaves /healthz, ``process_up`` and the tree's count."""
        if slot.name in self.supervised:
            self.supervised.remove(slot.name)
        with contextlib.suppress(KeyError):
            SupervisionMetrics(self.metrics).up.remove(slot.name)
        self.tree.left()

    async def rollout(self, run_file: RunFile, *, trigger: str) -> Outcome | None:
        """One rollout of every copy that may run beside its successor; None when refused."""
        if self.rolling:
            _log.warning("a rollout is already running; this request is ignored",
                         code=SUP_ROLLOUT_REFUSED, trigger=trigger)
            return None
        run_file.begin()
        try:
            fresh = _reload(self.cfg)
            units = self._rollable(fresh)
        except XyError as exc:
            reason = f"rollout refused: {exc}"
            _log.error(reason, code=SUP_ROLLOUT_REFUSED, trigger=trigger)
            rollout_audit.record(reason, action="rollout", outcome="denied", sub=ROLLOUT_SUB,
                          code=SUP_ROLLOUT_REFUSED, trigger=trigger)
            run_file.update(state="refused", reason=reason)
            self.rollouts.labels("refused").inc()
            return None
        self.rolling = True
        self.rollout_running.set(1)
        try:
            outcome = await drive_rollout(self, units, fresh.rollout, trigger=trigger,
                                          run_file=run_file)
        finally:
            self.rolling = False
            self.rollout_running.set(0)
        self.rollouts.labels("done" if outcome.ok else "rolled_back").inc()
        return outcome

    def _rollable(self, fresh: AppConfig) -> list[str]:
        now = {u.name: u for u in _units(fresh, [p for p in fresh.process_names()
                                                 if p != "main"], announce=False)}
        if set(now) != set(self.current_slots):
            raise RolloutError(
                "the config's processes or worker counts changed "
                f"({', '.join(sorted(self.current_slots))} running, "
                f"{', '.join(sorted(now)) or 'none'} configured): restart the tree")
        units = []
        for name, slot in self.current_slots.items():
            process = slot.unit.identity.process
            if side_by_side(fresh, process):
                units.append(name)
            else:
                _log.warning("not rolled: two copies side by side would publish twice",
                             code=SUP_ROLLOUT_SKIPPED, unit=name, process=process)
        if not units:
            raise RolloutError("no process may run beside its successor (a gateway, or an "
                               "aggregator with ownership leases)")
        return units


_ROLLOUT_OUTCOMES = ("done", "rolled_back", "refused")


def side_by_side(cfg: AppConfig, process: str) -> bool:
    """Whether two copies of ``process`` may run at once: it scales out (a gateway), or every
    stage that owns groups does so by lease (an aggregator with ``ownership.enabled``)."""
    stages = [decl for pipe in cfg.pipelines.values() if pipe.process == process
              for decl in pipe.stages]
    if any(decl.stage_cls.scales_out for decl in stages):
        return True
    leased = [getattr(decl.config, "ownership", None) for decl in stages]
    return any(isinstance(own, OwnershipConfig) and own.enabled for own in leased)


def _drain_grace(cfg: AppConfig, process: str) -> float:
    """How long a retired copy may take to drain: its stages' ``drain_s`` and the grace."""
    windows = [float(getattr(decl.config, "drain_s", 0.0)) for pipe in cfg.pipelines.values()
               if pipe.process == process for decl in pipe.stages]
    return max(windows, default=0.0) + CHILD_GRACE


def _reload(cfg: AppConfig) -> AppConfig:
    """The config file again, with the same ``--set`` keys and our environment over it."""
    fresh = load_effective(cfg.path, sets=cfg.cli_sets).config
    check_profile(fresh)
    return fresh


def _free_port() -> int:
    """A loopback port free now, for a copy's control server (the copy binds it a moment
    later; a port taken in between leaves that copy without one, which a rollout reports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _argv(cfg: AppConfig, unit: _Unit, nats_url: str | None,
          nkey_of: Callable[[str], str | None]) -> list[str]:
    process = unit.identity.process
    argv = [sys.executable, "-m", "xypipe", "run", cfg.path, "--process", process]
    if nats_url:
        argv += ["--nats-url", nats_url]
    nats_nkey = nkey_of(process)
    if nats_nkey:
        # A path, not the seed: argv is visible to every process on the machine.
        argv += ["--nats-nkey", nats_nkey]
    # The child reads the same file and inherits our environment; what our command line set
    # goes with it, so every process runs the same config.
    return argv + [f"--set={item}" for item in cfg.cli_sets]
