"""The gateway's metrics (names and meanings in docs/observability/field-dictionary.md)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from xypipe._degrade import Level
from xypipe._md.seqrules import Verdict
from xypipe._metrics import Metrics, backpressure_events

#: Render latency as browsers report it spans more than the server-side buckets.
RENDER_BUCKETS = (0.005, 0.01, 0.0167, 0.025, 0.033, 0.05, 0.075, 0.1, 0.12, 0.15, 0.18, 0.25,
                  0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    def __init__(self, m: Metrics) -> None:
        self.ws_active = m.gauge("ws_active", "Open browser WebSocket connections")
        self.ws_msgs = m.rate(
            "ws_msgs_rate", "Deltas and snapshots forwarded to browsers per second",
            "xy_ws_messages_forwarded",
        )
        self.frames = m.counter("ws_frames_sent", "WebSocket frames sent to browsers")
        self.bytes_out = m.counter("ws_bytes_sent", "Bytes written to browser sockets")
        self.frames_direct = m.counter(
            "ws_frames_direct",
            "WebSocket frames a tick's flush wrote whole straight to the socket "
            "(of ws_frames_sent)")
        self.socket_full = m.counter(
            "ws_flush_socket_full",
            "Frames a tick's flush began whose socket could not take them whole (the "
            "connection's writer finished them)")
        self.slow_consumers = m.gauge(
            "slow_consumers", "Browser connections currently degraded (level L1 or higher)"
        )
        self.by_level = m.gauge(
            "ws_connections_by_level", "Open browser connections per degradation level", ["level"]
        )
        self.backpressure = backpressure_events(m)
        self.nats_req = m.histogram(
            "nats_req_latency", "Latency of the gateway's NATS requests (seconds)", ["op"]
        )
        self.acl_denied = m.counter(
            "acl_denied", "Subscriptions refused by the subject ACL", ["action"]
        )
        self.auth = m.counter("ws_auth", "Authentication attempts by outcome", ["outcome"])
        self.auth_failures = m.counter(
            "auth_failures", "Failed authentications by surface (ws, admin) and reason",
            ["surface", "reason"],
        )
        self.auth_throttled = m.counter(
            "auth_throttled", "Authentication attempts refused unchecked: address locked out",
            ["surface"],
        )
        self.auth_lockouts = m.counter(
            "auth_lockouts", "Client addresses locked out after repeated failures", ["surface"]
        )
        self.auth_throttle_addresses = m.gauge(
            "auth_throttle_addresses", "Client addresses the auth throttle tracks (bounded)"
        )
        self.protocol_errors = m.counter(
            "ws_protocol_errors", "Error frames sent to browsers, by error code", ["code"]
        )
        self.connections = m.counter(
            "ws_connections", "WebSocket upgrade attempts by outcome", ["outcome"]
        )
        self.closes = m.counter("ws_closes", "Connections closed, by close code", ["code"])
        self.e2e = m.histogram(
            "e2e_latency_seconds",
            "End-to-end latency from the tick's arrival at the aggregator: to the gateway's "
            "send (point=gateway_send) and to the browser's render (point=client_render)",
            ["point"], buckets=RENDER_BUCKETS,
        )
        self.bad_input = m.counter(
            "gateway_bad_messages", "Aggregator messages the gateway could not use", ["reason"]
        )
        self.snapshot_get_failures = m.counter(
            "gateway_snapshot_get_failures",
            "Snapshot direct gets that failed (each is retried with backoff)",
        )
        self.snapshot_lookups = m.counter(
            "gateway_snapshot_lookups",
            "Snapshot direct gets for subscribers, by outcome (found, missing, failed)",
            ["outcome"],
        )
        self.resumes = m.counter(
            "ws_resumes", "Resume requests by outcome (bridged, snapshot) and reason",
            ["outcome", "reason"],
        )
        self.snapshot_requests = m.counter(
            "gateway_snapshot_requests",
            "Fresh snapshots asked of the aggregator for subscribers the cache could not serve",
        )
        self.resyncs = m.counter(
            "ws_resyncs", "Subscriptions resent from a snapshot, by reason "
            "(gap, epoch, pause, request)", ["reason"],
        )
        self.deltas = m.counter(
            "gateway_deltas", "Deltas from the aggregator judged by the sequence rules, by verdict",
            ["verdict"],
        )
        self.snapshots_rejected = m.counter(
            "gateway_snapshots_rejected", "Snapshots ignored by the sequence rules, by reason",
            ["reason"],
        )
        self.fenced = m.counter(
            "gateway_fenced", "Deltas and snapshots dropped because their fence is below the "
            "highest seen for their group (from an aggregator that lost the group's lease), "
            "by group", ["group"],
        )
        self.reanchors = m.counter(
            "gateway_reanchors", "Streams restarted from JetStream's record, by reason",
            ["reason"],
        )
        self.client_mismatch = m.counter(
            "client_checksum_mismatches", "Checksum mismatches reported by browsers"
        )
        self.flag_changes = m.counter(
            "feature_flag_changes", "Feature-flag changes through the admin API", ["outcome"]
        )
        self.draining = m.gauge("gateway_draining", "1 while this gateway worker drains")
        self.goaway = m.counter("gateway_goaway", "GoAway frames sent: clients told to move")
        self.drain_moves = m.counter(
            "gateway_drain_moves",
            "Clients of a drain by how they went: left (after their GoAway), closed (4100)",
            ["outcome"])
        self.drain_requests = m.counter(
            "gateway_drain_requests",
            "Admin drain requests by outcome (allowed, already, unauthenticated, forbidden)",
            ["outcome"])
        self.lookups_limited = m.counter(
            "ws_snapshot_lookups_limited",
            "Snapshot look-ups a connection asked for over its rate limit, refused, by action",
            ["action"])
        self.known_groups = m.gauge(
            "gateway_known_groups",
            "Groups in the aggregator's known-groups list as last read (-1: not loaded yet)")
        # The counters alert rules take increase() of read 0 before their first event (a series
        # born at 1 has no increase): infra/prometheus/rules/xypipe-alerts.yml.
        for verdict in Verdict:
            self.deltas.labels(verdict.value)
        for reason in ("gap", "epoch", "pause", "request"):
            self.resyncs.labels(reason)


class LevelGauges:
    """Open connections per degradation level, and the slow consumers among them (L1+)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._counts = dict.fromkeys(Level, 0)
        for lvl in Level:
            metrics.by_level.labels(f"L{int(lvl)}").set(0)
        metrics.slow_consumers.set(0)

    def move(self, old: Level | None, new: Level | None) -> None:
        """A connection left ``old`` (None: it is new) for ``new`` (None: it is gone)."""
        by_level = self._metrics.by_level
        if old is not None:
            self._counts[old] -= 1
            by_level.labels(f"L{int(old)}").set(self._counts[old])
        if new is not None:
            self._counts[new] += 1
            by_level.labels(f"L{int(new)}").set(self._counts[new])
        self._metrics.slow_consumers.set(
            sum(n for lvl, n in self._counts.items() if lvl > Level.L0))


class CounterExport:
    """Mirrors a core's running counts (label -> total) into Prometheus counters: each call
    adds only what grew since the last one."""

    def __init__(self) -> None:
        self._done: dict[str, dict[str, int]] = {}

    def export(self, name: str, counts: Mapping[str, int], counter: Counter) -> None:
        done = self._done.setdefault(name, {})
        for label, n in counts.items():
            seen = done.get(label, 0)
            if n != seen:
                counter.labels(label).inc(n - seen)
                done[label] = n
