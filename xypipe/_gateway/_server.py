"""The gateway's Trio shell: accepts sockets, feeds the hub, samples pressure, serves admin.

:class:`GatewayServer` is created by the ``gateway`` stage. It owns the hub (fan-out core), the
set of live connections, the snapshot fetches (JetStream direct get on a cache miss), the
feature flags (JetStream KV, watched live) and the ``/admin/feature-flags`` route.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio
from google.protobuf.message import DecodeError

from xypipe._contracts import decoder_for
from xypipe._degrade import Level, Pressure, Transition
from xypipe._errors import (
    ADM_FLAG_APPLIED,
    ADM_LATE_WRITE_REVERTED,
    ADM_REVERT_FAILED,
    ADM_STORE_UNAVAILABLE,
    AUTH_LOCKOUT,
    AUTH_THROTTLED,
    GW_ANCHOR_LOOKUP_FAILED,
    GW_DELTA_REJECTED,
    GW_KNOWN_GROUPS_LOADED,
    GW_KNOWN_GROUPS_WATCH_FAILED,
    GW_REANCHORED,
    GW_SNAPSHOT_REJECTED,
    AuthError,
    BridgeError,
    KvRevisionConflict,
    NatsJsUnavailable,
    NatsNotFound,
    NatsTimeout,
)
from xypipe._gateway._audit import AuditLog, claimed_subject
from xypipe._gateway._auth import AuthExpired, TokenVerifier
from xypipe._gateway._conn import Connection
from xypipe._gateway._flags import (
    DISABLED_GROUPS,
    FORCE_LEVEL,
    FlagError,
    FlagValue,
    defaults,
    validate,
)
from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._hub import BadMessage, Built, Hub
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._session import (
    CLOSE_GOING_AWAY,
    Audit,
    KnownGroups,
    Session,
    SessionPolicy,
)
from xypipe._gateway._throttle import AuthThrottle, Lockout, client_address
from xypipe._http import Request, Response
from xypipe._log import Logger, get_logger
from xypipe._metrics import Metrics
from xypipe._nats import KeyValue, KvEntry
from xypipe._retry import Backoff, retrying
from xypipe.contracts import ClientMetrics, Delta, Error, ErrorCode, ServerFrame

_ids = itertools.count(1)
# Snapshot direct gets while the store is away: quick at first, then once a second.
_SNAPSHOT_BACKOFF = Backoff(initial_s=0.05, max_s=1.0)

#: ``updated_by`` of the value a gateway writes back over a late change.
REVERT_PRINCIPAL = "xypipe-gateway (revert of a late change)"
_MAX_IN_DOUBT = 64


@attrs.frozen
class _InDoubt:
    expected: int


def _checkpoint(subject: str, raw: bytes) -> Delta:
    """A stored checkpoint: a Delta header (no symbols) with the stream's last sequence."""
    d = Delta()
    try:
        d.ParseFromString(raw)
    except DecodeError as exc:
        raise BadMessage(subject, f"not a checkpoint Delta ({exc})") from None
    if d.seq <= 0:
        raise BadMessage(subject, f"checkpoint without seq (seq={d.seq})")
    return d


class GatewayServer:
    def __init__(
        self,
        options: GatewayOptions,
        metrics: Metrics,
        log: Logger,
        *,
        nats: Any = None,
        scope: str = "gateway",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.metrics = GatewayMetrics(metrics)
        self.decoder = decoder_for(metrics.registry)
        self.log = log
        self.audit = AuditLog(get_logger("audit", component="gateway"))
        self.nats = nats
        self.scope = scope
        self.wall = wall
        self.verifier = TokenVerifier.from_file(
            options.public_key, issuer=options.issuer, audience=options.audience,
            leeway_s=options.leeway_s, max_lifetime_s=options.max_token_lifetime_s,
        )
        self.policy = SessionPolicy(
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
        #: The aggregator's groups, shared by every session (None until first read).
        self.known_groups = KnownGroups()
        #: Set (and replaced) whenever the known-groups list changes.
        self.known_changed = trio.Event()
        self.metrics.known_groups.set(-1)
        self.throttle = AuthThrottle(options.auth_throttle)
        self.hub = Hub(history=options.history, tick_prefix=options.tick_prefix,
                       snapshot_prefix=options.snapshot_prefix, max_gap=options.max_seq_gap,
                       anchor_interval=options.anchor_interval_ms / 1000,
                       snapshot_request_interval=options.snapshot_request_interval_ms / 1000,
                       levels=options.levels)
        self._anchoring: set[tuple[str, int]] = set()
        self._exported: dict[str, dict[Any, int]] = {}
        self.connections: dict[int, Connection] = {}
        self.flags: dict[str, FlagValue] = defaults()
        self._flags_version = 0
        self._conn_flags: dict[int, int] = {}
        self._fetching: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._kv: KeyValue | None = None
        #: Flag writes answered as failed that might still reach the store (see _flag_entry).
        #: The last revision of each flag key seen in the store (watched or written here):
        #: what the next conditional write expects.
        self._flag_revs: dict[str, int] = {}
        self._in_doubt: dict[tuple[str, str, int], _InDoubt] = {}
        self._accepting = True
        self._drained = trio.Event()
        self._level_counts = [0, 0, 0, 0]
        for lvl in range(4):
            self.metrics.by_level.labels(f"L{lvl}").set(0)
        self.metrics.slow_consumers.set(0)
        self.metrics.ws_active.set(0)

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, inbox: Any, http: Any, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``inbox`` ends (the pipeline is stopping), then close every socket."""
        if "*" in self.options.allowed_origins:
            self.log.warning("any Origin may connect (allowed_origins = [\"*\"]): dev only",
                             code="XY-WS-001")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.nats is not None:
                await nursery.start(self._watch_flags)
                if self.options.groups_bucket:
                    nursery.start_soon(self._watch_groups)
            if http is not None:
                http.set_upgrade_handler(self.handle_upgrade)
                http.route("/admin/feature-flags", self.admin_flags, methods=("GET", "PUT"))
            nursery.start_soon(self._sampler)
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

    # -- NATS input -------------------------------------------------------------------------------

    def ingest(self, batch: list[Any]) -> None:
        now = trio.current_time()
        hub = self.hub
        for msg in batch:
            kind = hub.classify(msg.subject)
            try:
                if kind == "delta":
                    hub.on_delta(msg.subject, msg.data, now)
                elif kind == "snapshot":
                    hub.on_snapshot(msg.subject, msg.data, now)
                else:
                    raise BadMessage(msg.subject, "subject is neither a delta nor a snapshot "
                                                  f"({self.options.tick_prefix}.* / "
                                                  f"{self.options.snapshot_prefix}.*)")
            except BadMessage as exc:
                self.metrics.bad_input.labels(kind).inc()
                self.log.warning("unusable message from the aggregator", code="XY-GW-001",
                                 subject=exc.subject, reason=exc.reason)
        self.after_sequence_checks(now)

    # -- sequence checks: log, count, re-anchor from JetStream ------------------------------------

    def after_sequence_checks(self, now: float) -> None:
        """Log what the hub's sequence checks did, export its counts, and fetch the JetStream
        record of every stream it asked to re-anchor (docs/protocol.md, "Sequence rules")."""
        hub = self.hub
        for ev in hub.take_events(now):
            fields = {"group": ev.group, "shard": ev.shard, "reason": ev.reason,
                      "epoch": ev.epoch, "seq": ev.seq, "head_epoch": ev.head_epoch,
                      "head_seq": ev.head_seq}
            if ev.kind == "reanchored":
                self.log.warning("stream re-anchored from JetStream's record",
                                 code=GW_REANCHORED, **fields)
            elif ev.reason.startswith("snapshot:"):
                self.log.warning("snapshot from a replaced epoch ignored",
                                 code=GW_SNAPSHOT_REJECTED, count=ev.count, **fields)
            else:
                self.log.warning("delta rejected by the sequence rules (never believed)",
                                 code=GW_DELTA_REJECTED, count=ev.count, **fields)
        st = hub.stats
        self._export("verdicts", st.verdict_counts(), self.metrics.deltas)
        self._export("resyncs", st.resync_reasons, self.metrics.resyncs)
        self._export("reanchors", st.reanchors, self.metrics.reanchors)
        self._export("snapshots_rejected",
                     {r: n for (k, r), n in st.rejected.items() if k == "snapshot"},
                     self.metrics.snapshots_rejected)
        self._request_snapshots(hub.take_snapshot_requests(now))
        for key in hub.take_anchor_requests(now):
            if key in self._anchoring or self.nats is None or self._nursery is None:
                continue
            self._anchoring.add(key)
            self._nursery.start_soon(self._fetch_anchor, *key)

    def _request_snapshots(self, groups: list[str]) -> None:
        """Ask the aggregator for fresh snapshots; it publishes them on the snapshot subject,
        so the answer reaches every gateway (no reply needed). Fire and forget: a lost request
        is asked again while the subscriber still waits."""
        subject = self.options.snapshot_request_subject
        if not groups or not subject or self.nats is None or not self.nats.is_connected:
            return
        for group in groups:
            try:
                self.nats.publish_nowait(subject, group.encode())
            except BridgeError as exc:
                self.log.warning("snapshot request not sent", code=exc.code, group=group,
                                 error=str(exc))
                return
            self.metrics.snapshot_requests.inc()

    def _export(self, name: str, counts: dict[Any, int], counter: Any) -> None:
        done = self._exported.setdefault(name, {})
        for label, n in counts.items():
            if n != done.get(label, 0):
                counter.labels(label).inc(n - done.get(label, 0))
                done[label] = n

    async def _direct_get(self, stream: str, subject: str, op: str) -> Any:
        """The last message on ``subject`` in ``stream`` (``None``: none stored), timed into
        ``nats_req_latency{op}`` (``{op}_error`` when it fails, which it re-raises)."""
        t0 = trio.current_time()
        try:
            with trio.fail_after(self.options.nats_timeout_ms / 1000):
                msg = await self.nats.jetstream().direct_get_last(stream, subject)
        except (BridgeError, trio.TooSlowError):
            self.metrics.nats_req.labels(f"{op}_error").observe(trio.current_time() - t0)
            raise
        self.metrics.nats_req.labels(op).observe(trio.current_time() - t0)
        return msg

    async def _fetch_anchor(self, group: str, shard: int) -> None:
        """Feed the hub JetStream's record of one stream: the group's last stored snapshot,
        then the aggregator's last checkpoint of the stream (never the suspicious message)."""
        opts = self.options
        try:
            for stream, subject in (
                (opts.snapshot_stream, f"{opts.snapshot_prefix}.{group}"),
                (opts.checkpoint_stream, f"{opts.checkpoint_prefix}.{group}.{shard}"),
            ):
                try:
                    msg = await self._direct_get(stream, subject, "anchor_get")
                except (BridgeError, trio.TooSlowError) as exc:
                    self.log.warning("reading a stream's record to re-anchor it failed",
                                     code=GW_ANCHOR_LOOKUP_FAILED, stream=stream,
                                     subject=subject, error=str(exc))
                    continue
                if msg is None:
                    continue
                try:
                    if stream == opts.snapshot_stream:
                        self.hub.on_snapshot(subject, msg.data, trio.current_time())
                    else:
                        cp = _checkpoint(subject, msg.data)
                        self.hub.on_checkpoint(group, shard, cp.epoch, cp.seq,
                                               trio.current_time())
                except BadMessage as exc:
                    self.metrics.bad_input.labels("checkpoint" if stream != opts.snapshot_stream
                                                  else "snapshot").inc()
                    self.log.warning("stored record unusable", code="XY-GW-001",
                                     subject=exc.subject, reason=exc.reason)
        finally:
            self._anchoring.discard((group, shard))
        self.after_sequence_checks(trio.current_time())

    def ensure_snapshot(self, group: str) -> None:
        """Fetch the group's last snapshot by JetStream direct get if the cache has none."""
        if not self.hub.needs_snapshot(group) or group in self._fetching:
            return
        if self.nats is None or self._nursery is None:
            return
        self._fetching.add(group)
        self._nursery.start_soon(self._fetch_snapshot, group)

    async def _fetch_snapshot(self, group: str) -> None:
        """Direct get of the group's last snapshot, retried with backoff while the store cannot
        be reached (JetStream restarting, lame duck, node loss) for as long as someone waits
        for the group and no live snapshot has arrived: a subscriber who asked while
        JetStream was away gets the snapshot once it is back."""
        subject = f"{self.options.snapshot_prefix}.{group}"
        attempt = 0
        try:
            while self.hub.needs_snapshot(group) and self.hub.subscribers.get(group):
                try:
                    msg = await self._direct_get(self.options.snapshot_stream, subject,
                                                 "direct_get")
                except (BridgeError, trio.TooSlowError) as exc:
                    self.metrics.snapshot_get_failures.inc()
                    self.metrics.snapshot_lookups.labels("failed").inc()
                    attempt += 1
                    delay = _SNAPSHOT_BACKOFF.delay(attempt)
                    self.log.warning("snapshot direct get failed; retrying",
                                     code="XY-GW-002", subject=subject,
                                     stream=self.options.snapshot_stream, attempt=attempt,
                                     retry_in_ms=round(delay * 1000),
                                     error=str(exc) or "timed out",
                                     error_code=getattr(exc, "code", None))
                    if attempt == 1:
                        self._snapshot_unavailable(
                            group, "the snapshot store could not be reached (retrying)")
                    await trio.sleep(delay)
                    continue
                self.metrics.snapshot_lookups.labels("missing" if msg is None else "found").inc()
                if attempt:
                    self.log.info("snapshot direct get succeeded after retries",
                                  subject=subject, attempts=attempt)
                self._stored_snapshot(group, subject, msg)
                return
        finally:
            self._fetching.discard(group)

    def _stored_snapshot(self, group: str, subject: str, msg: Any) -> None:
        if msg is not None:
            try:
                self.hub.on_snapshot(subject, msg.data, trio.current_time())
            except BadMessage as exc:
                self.metrics.bad_input.labels("snapshot").inc()
                self.log.warning("stored snapshot unusable", code="XY-GW-001",
                                 subject=subject, reason=exc.reason)
                msg = None
        if msg is None and self.hub.needs_snapshot(group):
            self._snapshot_unavailable(group, "no snapshot stored yet")

    def _snapshot_unavailable(self, group: str, why: str) -> None:
        frame = ServerFrame(error=Error(
            code=ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE, group=group,
            message=f"group {group!r}: {why}; the subscription stays open and the data "
                    "starts with the next snapshot available",
        )).SerializeToString()
        from xypipe._gateway._hub import ws_binary

        data = ws_binary(frame)
        for ob in self.hub.subscribers.get(group, set()):
            ob.push_control(data)

    # -- connections ------------------------------------------------------------------------------

    def origin_allowed(self, origin: str | None) -> bool:
        allowed = self.options.allowed_origins
        if "*" in allowed:
            return True
        return origin is not None and origin in allowed

    def at_capacity(self) -> bool:
        return len(self.connections) >= self.options.max_connections

    def new_session(self, peer: str) -> Session:
        return Session(secrets.token_hex(8), self.verifier, self.policy, trio.current_time(),
                       peer=peer, decoder=self.decoder, throttle=self.throttle,
                       address=client_address(peer), known=self.known_groups)

    async def handle_upgrade(self, stream: trio.abc.Stream, request: Request) -> None:
        if not self._accepting:
            return
        conn = Connection(self, stream, next(_ids), request.peer)
        try:
            if not await conn.handshake(request.headers.get("origin")):
                return
            self.connections[conn.conn_id] = conn
            self._set_level_count(conn, None, Level.L0)
            self.metrics.ws_active.set(len(self.connections))
            try:
                await conn.run()
            finally:
                self.hub.drop(conn.outbox)
                self.connections.pop(conn.conn_id, None)
                self._conn_flags.pop(conn.conn_id, None)
                self._set_level_count(conn, conn.outbox.level, None)
                self.metrics.ws_active.set(len(self.connections))
                if not self.connections:
                    self._drained.set()
        finally:
            await trio.aclose_forcefully(stream)

    def _set_level_count(self, conn: Connection, old: Level | None, new: Level | None) -> None:
        if old is not None:
            self._level_counts[old] -= 1
            self.metrics.by_level.labels(f"L{int(old)}").set(self._level_counts[old])
        if new is not None:
            self._level_counts[new] += 1
            self.metrics.by_level.labels(f"L{int(new)}").set(self._level_counts[new])
        self.metrics.slow_consumers.set(sum(self._level_counts[1:]))

    def level_changed(self, conn: Connection, t: Transition) -> None:
        self._set_level_count(conn, t.old, t.new)
        self.metrics.backpressure.labels(f"{self.scope}:connection", t.direction,
                                         f"L{int(t.new)}").inc()
        fields = {"old_level": int(t.old), "new_level": int(t.new), "reason": t.reason,
                  "recovery": t.recovery, "principal": conn._principal()}
        if t.direction == "up":
            conn.log.warning("slow consumer: connection level raised", code="XY-WS-010",
                             **fields)
        else:
            conn.log.info("connection level lowered", **fields)

    def sent(self, built: Built) -> None:
        n = built.deltas + built.snapshots
        if n:
            self.metrics.ws_msgs.add(n)
        if built.oldest_arrival_us:
            lat = self.wall() - built.oldest_arrival_us / 1e6
            if lat >= 0:
                self.metrics.e2e.labels("gateway_send").observe(lat)

    def client_report(self, m: ClientMetrics) -> None:
        hist = self.metrics.e2e.labels("client_render")
        for ms in m.render_latency_ms[:1000]:
            if 0 <= ms < 3_600_000:
                hist.observe(ms / 1000)
        if m.checksum_mismatches:
            self.metrics.client_mismatch.inc(m.checksum_mismatches)

    def audit_line(self, conn: Connection, a: Audit) -> None:
        fields: dict[str, Any] = dict(a.fields)
        sub = fields.pop("principal", None)
        fields["session"] = conn.session.session_id if conn.session else ""
        audit = self.audit
        action, outcome = a.action, a.outcome
        if a.action == "auth":
            self.metrics.auth.labels(a.outcome).inc()
            if a.outcome == "denied":
                reason = "expired" if a.fields.get("error_code") == AuthExpired.code else "invalid"
                self.metrics.auth_failures.labels("ws", reason).inc()
                self.metrics.auth_throttle_addresses.set(len(self.throttle))
        if a.outcome == "denied":
            if a.action in ("subscribe", "resume", "refresh") and "group" in a.fields:
                self.metrics.acl_denied.labels(a.action).inc()
                audit.record("subscription denied by ACL", action=action, outcome=outcome,
                             sub=sub, code="XY-ACL-001", **fields)
            else:
                audit.record(f"{action} denied", action=action, outcome=outcome, sub=sub,
                             code="XY-AUTH-001", **fields)
        elif a.outcome == "expired":
            audit.record(f"{action} {outcome}", action=action, outcome=outcome, sub=sub,
                         code="XY-AUTH-003", **fields)
        else:
            audit.record(f"{action} {outcome}", action=action, outcome=outcome, sub=sub,
                         **fields)

    # -- auth throttling ----------------------------------------------------------------------

    def auth_throttled(self, surface: str, address: str) -> None:
        """An attempt refused unchecked (address locked out): counted, not logged one by one."""
        self.metrics.auth_throttled.labels(surface).inc()

    def auth_locked_out(self, surface: str, lock: Lockout) -> None:
        """One audit summary line per address per lockout."""
        self.metrics.auth_lockouts.labels(surface).inc()
        self.audit.record(
            "client address locked out after repeated authentication failures",
            code=AUTH_LOCKOUT, action="auth.throttle", outcome="locked", sub=None,
            surface=surface, address=lock.address, failures=lock.failures,
            window_s=lock.window_s, lockout_s=lock.lockout_s, strike=lock.strike,
            reasons=dict(lock.reasons), refused_during_previous_lockout=lock.refused_before)

    def _admin_auth_failed(self, address: str, reason: str) -> None:
        self.metrics.auth_failures.labels("admin", reason).inc()
        lock = self.throttle.failure(address, trio.current_time(), reason)
        self.metrics.auth_throttle_addresses.set(len(self.throttle))
        if lock is not None:
            self.auth_locked_out("admin", lock)

    async def _sampler(self) -> None:
        opts = self.options
        max_age = opts.queue_max_age_ms / 1000
        interval = opts.degrade.sample_ms / 1000
        zero = Pressure(0.0, "send queue empty")
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            # Rejections held back for the log's rate limit, resyncs counted by frame builds.
            self.after_sequence_checks(now)
            for conn in list(self.connections.values()):
                s = conn.session
                if s is None or not s.is_open:
                    continue
                if conn.idle and not conn.outbox.control:
                    if s.level == Level.L0:
                        continue
                    p = zero
                else:
                    p = self.hub.pressure(conn.outbox, now, opts.queue_max_bytes, max_age)
                s.pressure(now, p)
                conn.apply(s)

    # -- feature flags ----------------------------------------------------------------------------

    def flags_pending(self, conn: Connection) -> bool:
        return self._conn_flags.get(conn.conn_id, -1) != self._flags_version

    def apply_flags_to(self, conn: Connection) -> None:
        s = conn.session
        if s is None or not s.is_open:
            return
        self._conn_flags[conn.conn_id] = self._flags_version
        forced = self.flags[FORCE_LEVEL].value
        s.force_level(trio.current_time(), None if forced is None else Level(forced))
        s.set_disabled_groups(frozenset(self.flags[DISABLED_GROUPS].value))
        conn.apply(s)

    def _flag_changed(self, flag: FlagValue) -> None:
        self.flags[flag.name] = flag
        self._flags_version += 1
        for conn in list(self.connections.values()):
            self.apply_flags_to(conn)

    async def _watch_flags(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
        js = self.nats.jetstream(timeout=self.options.nats_timeout_ms / 1000)
        t0 = trio.current_time()
        # JetStream may be away at start-up (restarting, lame duck): wait for it, counted and
        # logged, instead of failing the gateway. The watch then survives restarts itself.
        kv: KeyValue = await retrying(
            f"open the feature-flag bucket {self.options.flags_bucket!r}",
            lambda: js.kv(self.options.flags_bucket, history=16), backoff=_SNAPSHOT_BACKOFF,
            log=self.log, on_failure=lambda exc: self.metrics.nats_req.labels(
                "kv_open_error").observe(trio.current_time() - t0),
            gave_up=lambda: bool(self.nats.closed))
        self._kv = kv
        self.metrics.nats_req.labels("kv_open").observe(trio.current_time() - t0)
        async with kv.watch(">") as watch:
            task_status.started()
            async for entry in watch:
                self._flag_entry(entry)

    async def _watch_groups(self) -> None:
        """Keep :attr:`known_groups` equal to the aggregator's bucket. Until it is read once
        the gateway accepts every well-formed group (it cannot tell yet; docs/protocol.md)."""
        bucket = self.options.groups_bucket
        js = self.nats.jetstream(timeout=self.options.nats_timeout_ms / 1000)

        async def open_and_read() -> tuple[KeyValue, list[str]]:
            # The aggregator creates and writes the bucket; a gateway only reads it (least
            # privilege: docs/security.md). One that starts first waits for it, accepting every
            # well-formed group meanwhile, as before the first read.
            try:
                kv = await js.kv(bucket, create=False)
            except NatsNotFound as exc:
                if isinstance(exc, NatsJsUnavailable):
                    raise
                raise NatsTimeout(f"known-groups bucket {bucket!r} does not exist yet (the "
                                  "aggregator creates it with its first group)") from exc
            return kv, await kv.keys()

        backoff = Backoff(initial_s=0.1, max_s=5.0)
        failures = 0
        while True:
            kv, keys = await retrying(
                f"read the known-groups bucket {bucket!r}", open_and_read,
                backoff=_SNAPSHOT_BACKOFF, log=self.log,
                gave_up=lambda: bool(self.nats.closed))
            groups = set(keys)
            self._set_known(groups)
            try:
                # The watch repeats the current values, then every change; it survives
                # reconnects itself. Starting it while the server restarts can still fail
                # (its consumer not found): then the list stays as it is and is read again.
                async with kv.watch(">") as watch:
                    failures = 0
                    async for entry in watch:
                        if entry.op == "PUT":
                            if entry.key in groups:
                                continue
                            groups.add(entry.key)
                        else:
                            groups.discard(entry.key)
                        self._set_known(groups)
            except BridgeError as exc:
                if self.nats.closed:
                    raise
                self.log.warning("known-groups watch failed; reading the bucket again",
                                 code=GW_KNOWN_GROUPS_WATCH_FAILED, bucket=bucket,
                                 error=str(exc))
                failures += 1
                await trio.sleep(backoff.delay(failures))

    def _set_known(self, groups: set[str]) -> None:
        first = self.known_groups.groups is None
        self.known_groups.groups = frozenset(groups)
        self.metrics.known_groups.set(len(groups))
        self.known_changed.set()
        self.known_changed = trio.Event()
        if first:
            self.log.info("known groups loaded", code=GW_KNOWN_GROUPS_LOADED,
                          bucket=self.options.groups_bucket, groups=sorted(groups))

    def _flag_entry(self, entry: KvEntry) -> None:
        """One entry from the flags bucket's watch: apply it and audit it (whoever wrote it),
        or — when it is a change this gateway answered as failed — hold it back and revert it."""
        name = entry.key
        self._flag_revs[name] = max(self._flag_revs.get(name, 0), entry.revision)
        current = self.flags.get(name)
        if current is not None and entry.revision <= current.revision:
            return  # already applied (a re-created watch delivers the current values again)
        if entry.op != "PUT":
            if current is None:
                return
            flag = FlagValue(name, defaults()[name].value, revision=entry.revision)
        else:
            try:
                flag = FlagValue.decode(entry.value, entry.revision)
            except (FlagError, ValueError) as exc:
                self.metrics.bad_input.labels("feature_flag").inc()
                self.log.warning("unusable feature flag in the bucket", code="XY-FLAG-002",
                                 key=entry.key, error=str(exc))
                return
        doubt = self._in_doubt.pop((flag.name, flag.updated_by, flag.updated_at_us), None)
        # A write in doubt expected an older revision: once the key moved past it without
        # that write, the server can no longer accept it.
        for key, d in list(self._in_doubt.items()):
            if key[0] == name and d.expected < entry.revision:
                del self._in_doubt[key]
        if doubt is not None and current is not None:
            # Answered as failed, arrived anyway: never applied here, and taken back out.
            self.flags[name] = attrs.evolve(current, revision=entry.revision)
            self.metrics.flag_changes.labels("late_reverted").inc()
            self.audit.record(
                "feature flag change answered as failed reached the store late: not applied, "
                "reverting", code=ADM_LATE_WRITE_REVERTED, action="admin.flag",
                outcome="reverted", sub=flag.updated_by, flag=name,
                late_value=flag.value, restored=current.value, revision=entry.revision)
            assert self._nursery is not None
            self._nursery.start_soon(self._revert, current, entry.revision)
            return
        self._flag_changed(flag)
        old = current.value if current is not None else None
        self.audit.record(
            "feature flag change applied", code=ADM_FLAG_APPLIED,
            action="admin.flag.applied", outcome="applied",
            sub=flag.updated_by or "(unknown: written outside the admin API)",
            flag=name, old=old, new=flag.value, revision=entry.revision,
            deleted=entry.op != "PUT", at_us=flag.updated_at_us)

    async def _revert(self, restore: FlagValue, late_revision: int) -> None:
        """Put ``restore`` back over a late write at ``late_revision``, conditional on it: a
        newer change by anyone wins over the revert, and a retry never reverts twice."""
        value = FlagValue(restore.name, restore.value, REVERT_PRINCIPAL,
                          int(self.wall() * 1e6))
        kv = self._kv
        assert kv is not None
        delay = 0.25
        for attempt in range(1, 9):
            try:
                with trio.fail_after(self.options.nats_timeout_ms / 1000 * 2):
                    await kv.update(restore.name, value.encode(), last=late_revision,
                                    headers={"Xy-Principal": REVERT_PRINCIPAL})
                return
            except KvRevisionConflict:
                return  # the key moved on: another gateway reverted it, or a newer change won
            except (BridgeError, trio.TooSlowError) as exc:
                self.log.warning("could not revert a late feature flag change yet",
                                 code=ADM_REVERT_FAILED, flag=restore.name, attempt=attempt,
                                 error=str(exc))
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.audit.record("late feature flag change could not be reverted", code=ADM_REVERT_FAILED,
                          severity="error", action="admin.flag", outcome="revert_failed",
                          sub=REVERT_PRINCIPAL, flag=restore.name, revision=late_revision)

    def _admin_principal(self, req: Request) -> tuple[Any, Response | None]:
        header = req.headers.get("authorization", "")
        fields: dict[str, Any] = {"action": "admin", "method": req.method, "path": req.path,
                                  "peer": req.peer}
        address = client_address(req.peer)
        verdict = self.throttle.check(address, trio.current_time())
        if not verdict.allowed:
            # Answered before the token is looked at; counted, and summarised at the lockout.
            self.auth_throttled("admin", address)
            retry = math.ceil(verdict.retry_after_s)
            return None, attrs.evolve(
                Response.json({"error": f"authentication throttled: too many failed attempts "
                                        f"from {address}; retry in {retry} s",
                               "code": AUTH_THROTTLED, "retry_after_s": retry}, 429),
                headers=(("retry-after", str(retry)),))
        if not header.lower().startswith("bearer "):
            self._admin_auth_failed(address, "missing")
            self.metrics.flag_changes.labels("unauthenticated").inc()
            self.audit.record("admin request without a bearer token", code="XY-ADM-001",
                              outcome="denied", sub=None, **fields)
            return None, Response.json({"error": "missing 'Authorization: Bearer <JWT>'"}, 401)
        try:
            principal = self.verifier.verify(header[7:].strip(), self.wall())
        except AuthError as exc:
            self._admin_auth_failed(address, "expired" if isinstance(exc, AuthExpired)
                                    else "invalid")
            self.metrics.flag_changes.labels("unauthenticated").inc()
            self.audit.record("admin request with a bad token", code="XY-ADM-001",
                              outcome="denied", sub=None,
                              claimed_sub=claimed_subject(header[7:].strip()),
                              reason=exc.message, **fields)
            return None, Response.json({"error": f"token refused: {exc.message}"}, 401)
        self.throttle.success(address, trio.current_time())
        if not principal.has_role(self.options.admin_role):
            self.metrics.flag_changes.labels("forbidden").inc()
            self.audit.record("admin request without the admin role", code="XY-ADM-002",
                              outcome="denied", sub=principal.subject,
                              roles=sorted(principal.roles), **fields)
            return None, Response.json(
                {"error": f"principal {principal.subject!r} lacks role "
                          f"{self.options.admin_role!r}"}, 403)
        return principal, None

    async def admin_flags(self, req: Request) -> Response:
        principal, refusal = self._admin_principal(req)
        if refusal is not None:
            return refusal
        if req.method == "GET":
            self.audit.record("admin read feature flags", action="admin.read",
                              outcome="allowed", sub=principal.subject)
            return Response.json({"flags": [f.to_json() for f in self.flags.values()]})
        try:
            doc = req.json()
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._flag_refused(principal, f"body is not JSON: {exc}")
        if not isinstance(doc, dict) or "name" not in doc or "value" not in doc:
            return self._flag_refused(
                principal, 'expected a JSON object {"name": <flag>, "value": <JSON value>}')
        name = doc["name"]
        try:
            value = validate(str(name), doc["value"])
        except FlagError as exc:
            return self._flag_refused(principal, str(exc))
        old = self.flags.get(name)
        flag = FlagValue(name, value, principal.subject, int(self.wall() * 1e6))
        if self._kv is not None:
            expected = self._flag_revs.get(name, 0)
            t0 = trio.current_time()
            try:
                revision = await self._kv.update(name, flag.encode(), last=expected,
                                                 headers={"Xy-Principal": principal.subject})
            except KvRevisionConflict as exc:
                self.metrics.nats_req.labels("kv_put_error").observe(trio.current_time() - t0)
                self.metrics.flag_changes.labels("conflict").inc()
                self.audit.record(
                    "feature flag change refused: the flag changed meanwhile", code=exc.code,
                    action="admin.flag", outcome="conflict",
                    sub=principal.subject, flag=name, expected_revision=expected)
                return Response.json({"error": f"{name}: changed since revision {expected} "
                                               "(another change won); read it again and retry",
                                      "expected_revision": expected}, 409)
            except BridgeError as exc:
                self.metrics.nats_req.labels("kv_put_error").observe(trio.current_time() - t0)
                self.metrics.flag_changes.labels("failed").inc()
                self._remember_in_doubt(flag, expected)
                self.audit.record(
                    "feature flag change failed: the store is unreachable; not applied, and it "
                    "will not take effect later", code=ADM_STORE_UNAVAILABLE, severity="error",
                    action="admin.flag", outcome="failed", sub=principal.subject,
                    flag=name, new=value, error=str(exc), error_code=exc.code)
                return Response.json({"error": f"flag store unavailable, change not applied "
                                               f"(it will not take effect later): {exc}"}, 503)
            self.metrics.nats_req.labels("kv_put").observe(trio.current_time() - t0)
            self._flag_revs[name] = max(self._flag_revs.get(name, 0), revision)
            flag = FlagValue(name, value, flag.updated_by, flag.updated_at_us, revision)
        else:
            self._flag_changed(flag)
        self.metrics.flag_changes.labels("changed").inc()
        self.audit.record(
            "feature flag changed", code="XY-ADM-010", action="admin.flag",
            outcome="allowed", sub=principal.subject, flag=name,
            old=old.value if old else None, new=value, at_us=flag.updated_at_us,
        )
        return Response.json({"flag": flag.to_json(), "old": old.value if old else None})

    def _remember_in_doubt(self, flag: FlagValue, expected: int) -> None:
        """A write that failed after it may have left: if it ever lands it is reverted. Bounded:
        the oldest record goes first (its write can only land while the key stays at its
        expected revision, which the next successful change ends)."""
        self._in_doubt[(flag.name, flag.updated_by, flag.updated_at_us)] = _InDoubt(expected)
        while len(self._in_doubt) > _MAX_IN_DOUBT:
            del self._in_doubt[next(iter(self._in_doubt))]

    def _flag_refused(self, principal: Any, why: str) -> Response:
        self.metrics.flag_changes.labels("invalid").inc()
        self.audit.record("feature flag change refused", code="XY-ADM-003",
                          action="admin.flag", outcome="invalid", sub=principal.subject,
                          reason=why)
        return Response.json({"error": why}, 400)
