"""The gateway's composition root: builds its parts, owns their tasks, accepts sockets.

:class:`GatewayServer` is created by the ``gateway`` stage. It wires the parts that each do
one job — the hub (:mod:`._hub`, fan-out core), snapshot fetching and re-anchoring reads
(:mod:`._snapfetch`), the feature flags it reads (:mod:`._flagwatch`; their admin route runs in
the admin process, :mod:`xypipe._stages.flag_admin`), the known-groups watch
(:mod:`._groupwatch`), access accounting
(:mod:`._access`) — and hands each connection (:mod:`._conn`) the narrow
:class:`~._wire_core.ConnectionPorts` it needs. What it does itself: one nursery for all of
them, the set of live connections, feeding the hub from NATS one batch (a tick) at a time and
flushing what the batch made due (:mod:`._flush`), sampling the send queues of the connections
that have one, and closing every socket on the way out.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterable, Callable

import trio

from xypipe._audit import AuditLog
from xypipe._contracts import decoder_for
from xypipe._errors import (
    GW_BAD_MESSAGE,
    GW_DRAIN_CLOSED,
    GW_DRAIN_FINISHED,
    GW_DRAIN_STARTED,
    WS_ANY_ORIGIN,
)
from xypipe._gateway._access import AccessRecorder
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._conn import Connection
from xypipe._gateway._drain import DrainPlan, DrainPolicy
from xypipe._gateway._flagwatch import FlagBoard
from xypipe._gateway._flush import DirectTarget, TickFlush
from xypipe._gateway._frames import ws_binary
from xypipe._gateway._frametrace import received_traces, trace_frames
from xypipe._gateway._gmetrics import GatewayMetrics, LevelGauges
from xypipe._gateway._groupwatch import KnownGroupsWatch
from xypipe._gateway._hub import BadMessage, Hub
from xypipe._gateway._keywatch import KeyWatch
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._session import CLOSE_GOING_AWAY, KnownGroups, Session, SessionPolicy
from xypipe._gateway._session_effects import CLOSE_DRAINING
from xypipe._gateway._snapfetch import SnapshotFetcher
from xypipe._gateway._store import Msg, NatsClient
from xypipe._gateway._throttle import AuthThrottle, client_address
from xypipe._gateway._wire_core import ConnectionPorts
from xypipe._http import Request
from xypipe._log import Logger, get_logger
from xypipe._metrics import Metrics, zero_transitions
from xypipe._tracing import parent_reader
from xypipe.abc import HttpRoutes
from xypipe.contracts import GoAway, ServerFrame

__all__ = ["GatewayServer", "session_policy"]

_ids = itertools.count(1)


def session_policy(options: GatewayOptions) -> SessionPolicy:
    """The per-connection limits and timings of the gateway's options."""
    return SessionPolicy(
        hello_timeout_s=options.hello_timeout_ms / 1000,
        heartbeat_ms=options.heartbeat_ms,
        heartbeat_timeout_ms=options.heartbeat_timeout_ms,
        max_frame_bytes=options.max_frame_bytes,
        rate_per_s=options.rate_per_s,
        burst=options.burst,
        max_bad_frames=options.max_bad_frames,
        max_groups=options.max_groups,
        degrade=options.degrade,
        levels=options.levels,
        close_pressure=options.close_pressure,
        close_after_ms=options.close_after_ms,
        priority_groups=tuple(options.priority_groups),
        snapshot_lookups_per_s=options.snapshot_lookups_per_s,
        snapshot_lookup_burst=options.snapshot_lookup_burst,
    )


class GatewayServer:
    def __init__(
        self,
        options: GatewayOptions,
        metrics: Metrics,
        log: Logger,
        *,
        nats: NatsClient | None = None,
        scope: str = "gateway",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.log = log
        self.nats = nats
        self.wall = wall
        self.metrics = GatewayMetrics(metrics)
        self.decoder = decoder_for(metrics.registry)
        audit = AuditLog(get_logger("audit", component="gateway"))
        self.verifier = TokenVerifier.from_file(
            options.public_key, issuer=options.issuer, audience=options.audience,
            leeway_s=options.leeway_s, max_lifetime_s=options.max_token_lifetime_s,
        )
        self.keywatch = KeyWatch(options.public_key, self.verifier, log=log, metrics=metrics,
                                 surface="ws", interval_s=options.keys_reload_ms / 1000,
                                 on_removed=self._keys_removed)
        self.policy = session_policy(options)
        self.throttle = AuthThrottle(options.auth_throttle)
        self.access = AccessRecorder(self.metrics, audit, self.throttle)
        #: The aggregator's groups, shared by every session (None until first read).
        self.known_groups = KnownGroups()
        self.groups = KnownGroupsWatch(options.groups_bucket, self.known_groups, self.metrics,
                                       log, timeout_s=options.nats_timeout_ms / 1000)
        self.hub = Hub(history=options.history, tick_prefix=options.tick_prefix,
                       snapshot_prefix=options.snapshot_prefix, max_gap=options.max_seq_gap,
                       anchor_interval=options.anchor_interval_ms / 1000,
                       snapshot_request_interval=options.snapshot_request_interval_ms / 1000,
                       levels=options.levels)
        self.snapshots = SnapshotFetcher(options, self.hub, self.metrics, log, self.decoder,
                                         nats)
        self.flags = FlagBoard(options.flags_bucket, self.metrics, audit, log, self.decoder,
                               timeout_s=options.nats_timeout_ms / 1000, wall=wall,
                               on_change=self._flags_changed)
        self.levels = LevelGauges(self.metrics)
        self.connections: dict[int, Connection] = {}
        #: The same connections' cores, as the tick's flush reaches them.
        self.targets: dict[int, DirectTarget] = {}
        self.flusher = TickFlush(self.hub, self.metrics)
        #: Tracing (the otel extra): None = off, decided once here.
        self.traces = parent_reader("gateway", metrics, log)
        self.ports = ConnectionPorts(
            options=options, hub=self.hub, metrics=self.metrics, access=self.access,
            levels=self.levels, snapshots=self.snapshots, flags=self.flags,
            open_session=self._open_session, at_capacity=self._at_capacity, wall=wall,
            scope=scope, log=log)
        self._accepting = True
        self._drained = trio.Event()
        #: The drain under way (None: serving).
        self.drain_plan: DrainPlan | None = None
        #: Set when the drain must look again: a connection arrived or none is left.
        self._drain_wake = trio.Event()
        self.metrics.draining.set(0)
        for outcome in ("left", "closed"):
            self.metrics.drain_moves.labels(outcome)
        # Alert rules take increase() of these: they read 0 before the first event.
        zero_transitions(self.metrics.backpressure, f"{scope}:connection")
        self.metrics.ws_active.set(0)

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, inbox: AsyncIterable[Msg | list[Msg]], http: HttpRoutes | None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``inbox`` ends (the pipeline is stopping), then close every socket."""
        if "*" in self.options.allowed_origins:
            self.log.warning("any Origin may connect (allowed_origins = [\"*\"]): dev only",
                             code=WS_ANY_ORIGIN)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.snapshots.run)
            if self.nats is not None:
                # The admin process creates the flags' bucket; until it does, the defaults hold.
                nursery.start_soon(self.flags.watch, self.nats)
                if self.options.groups_bucket:
                    nursery.start_soon(self.groups.run, self.nats)
            if http is not None:
                http.set_upgrade_handler(self.handle_upgrade)
            nursery.start_soon(self._sampler)
            await nursery.start(self.keywatch.run)
            task_status.started()
            try:
                async for batch in inbox:
                    self.ingest(batch if isinstance(batch, list) else [batch])
            finally:
                self._accepting = False
                with trio.CancelScope(shield=True):
                    await self._close_all()
                nursery.cancel_scope.cancel()

    async def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.close(CLOSE_GOING_AWAY, "gateway shutting down")
        with trio.move_on_after(self.options.close_grace_ms / 1000 + 0.5):
            while self.connections:
                self._drained = trio.Event()
                await self._drained.wait()

    # -- graceful drain -------------------------------------------------------------------------

    async def drain(self, reason: str, stop_accepting: Callable[[], None] | None = None) -> None:
        """Move every client away, spread over ``drain_s``: stop accepting (the kernel sends
        new connections to the other workers), tell each connection to go (GoAway) on the
        :class:`~._drain.DrainPlan`'s schedule, close with 4100 whoever is still there
        ``drain_close_in_ms`` after its GoAway, and return once nobody is left (at the latest
        ``drain_s`` and a close grace after the start)."""
        opts = self.options
        if stop_accepting is not None:
            stop_accepting()
        start = trio.current_time()
        plan = DrainPlan(self.connections, start,
                         DrainPolicy(opts.drain_s, opts.drain_close_in_ms / 1000))
        self.drain_plan = plan
        self.metrics.draining.set(1)
        frame = ws_binary(ServerFrame(go_away=GoAway(
            retry_ms=opts.drain_retry_ms, reason=f"draining: {reason}",
            close_in_ms=opts.drain_close_in_ms)).SerializeToString())
        self.log.info("draining: clients told to move, spread over drain_s",
                      code=GW_DRAIN_STARTED, reason=reason, clients=len(self.connections),
                      drain_s=opts.drain_s, spread_s=round(plan.policy.spread_s, 3))
        while self.connections and trio.current_time() < plan.end:
            now = trio.current_time()
            for conn_id in plan.moves_due(now):
                conn = self.connections.get(conn_id)
                if conn is None:
                    continue
                if conn.go_away(frame):
                    self.metrics.goaway.inc()
                else:
                    # Not open yet (no Welcome): there is no session to move; it reconnects.
                    conn.close(CLOSE_DRAINING, "draining: reconnect")
            self._close_overdue(plan, now)
            if not self.connections:
                break
            self._drain_wake = trio.Event()
            with trio.move_on_at(plan.next_at()):
                await self._drain_wake.wait()
        self._close_overdue(plan, max(trio.current_time(), plan.end))
        with trio.move_on_after(opts.close_grace_ms / 1000 + 0.5):
            while self.connections:
                self._drain_wake = trio.Event()
                await self._drain_wake.wait()
        stats = plan.statistics()
        self.metrics.drain_moves.labels("left").inc(stats.left)
        self.metrics.drain_moves.labels("closed").inc(stats.closed)
        self.log.info("drain finished", code=GW_DRAIN_FINISHED, reason=reason,
                      left=stats.left, closed=stats.closed, still_open=len(self.connections),
                      took_s=round(trio.current_time() - start, 3))

    def _close_overdue(self, plan: DrainPlan, now: float) -> None:
        overdue = [c for c in plan.overdue(now) if c in self.connections]
        for conn_id in overdue:
            self.connections[conn_id].close(CLOSE_DRAINING, "draining: reconnect")
        if overdue:
            self.log.warning("draining: clients that did not move were closed (4100)",
                             code=GW_DRAIN_CLOSED, clients=len(overdue))

    # -- NATS input -------------------------------------------------------------------------------

    def ingest(self, batch: list[Msg]) -> None:
        """One batch of the aggregator's messages (a tick): fed to the hub, then every
        connection it made due flushed once."""
        now = trio.current_time()
        hub = self.hub
        traces = self.traces
        traced = received_traces(traces, batch) if traces is not None else None
        made: dict[int, int] | None = {} if traced else None
        received = self.wall() if traced else 0.0
        hub.begin_tick()
        try:
            self._feed(batch, now, made)
        finally:
            due = hub.end_tick()
        self.snapshots.after_sequence_checks(now)
        tally = self.flusher.flush(due, self.targets, now, self.wall()) if due else None
        if traced:
            assert traces is not None and made is not None
            trace_frames(traces.tracer, traced, made, received, self.wall(), tally)

    def _feed(self, batch: list[Msg], now: float, made: dict[int, int] | None = None) -> None:
        """``made`` (tracing on only): per message (by ``id``), the connections it made due."""
        hub = self.hub
        for msg in batch:
            kind = hub.classify(msg.subject)
            try:
                if kind == "delta":
                    due = hub.on_delta(msg.subject, msg.data, now)
                    if made is not None:
                        made[id(msg)] = len(due)
                elif kind == "snapshot":
                    hub.on_snapshot(msg.subject, msg.data, now)
                else:
                    raise BadMessage(msg.subject, "subject is neither a delta nor a snapshot "
                                                  f"({self.options.tick_prefix}.* / "
                                                  f"{self.options.snapshot_prefix}.*)")
            except BadMessage as exc:
                self.metrics.bad_input.labels(kind).inc()
                self.log.warning("unusable message from the aggregator", code=GW_BAD_MESSAGE,
                                 subject=exc.subject, reason=exc.reason)

    # -- connections ------------------------------------------------------------------------------

    def _at_capacity(self) -> bool:
        return len(self.connections) >= self.options.max_connections

    def _open_session(self, peer: str, now: float) -> Session:
        return Session(secrets.token_hex(8), self.verifier, self.policy, now,
                       peer=peer, decoder=self.decoder, throttle=self.throttle,
                       address=client_address(peer), known=self.known_groups)

    async def handle_upgrade(self, stream: trio.abc.Stream, request: Request) -> None:
        if not self._accepting:
            return
        conn = Connection(self.ports, stream, next(_ids), request.peer)
        try:
            if not await conn.handshake(request.headers.get("origin")):
                return
            self.connections[conn.conn_id] = conn
            self.targets[conn.conn_id] = conn.core
            if self.drain_plan is not None:
                # Accepted before the listener closed: it moves at once.
                self.drain_plan.arrived(conn.conn_id, trio.current_time())
                self._drain_wake.set()
            self.levels.move(None, conn.outbox.level)
            self.metrics.ws_active.set(len(self.connections))
            try:
                await conn.run()
            finally:
                self.hub.drop(conn.outbox)
                self.connections.pop(conn.conn_id, None)
                self.targets.pop(conn.conn_id, None)
                self.levels.move(conn.outbox.level, None)
                self.metrics.ws_active.set(len(self.connections))
                if self.drain_plan is not None:
                    self.drain_plan.left(conn.conn_id)
                    self._drain_wake.set()
                if not self.connections:
                    self._drained.set()
        finally:
            await trio.aclose_forcefully(stream)

    async def _sampler(self) -> None:
        interval = self.options.degrade.sample_ms / 1000
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            # Rejections held back for the log's rate limit, resyncs counted by frame builds.
            self.snapshots.after_sequence_checks(now)
            for conn in list(self.connections.values()):
                conn.core.sample(now)

    def _keys_removed(self, kids: frozenset[str]) -> None:
        # At once rather than at the token's expiry: a removed key is one nobody may rely on.
        now = trio.current_time()
        for conn in list(self.connections.values()):
            conn.core.key_removed(kids, now)

    def _flags_changed(self) -> None:
        now = trio.current_time()
        for conn in list(self.connections.values()):
            conn.core.refresh_flags(now)
