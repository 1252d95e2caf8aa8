"""The gateway stage's options (the ``[[pipelines.*.stages]]`` table with ``use = "gateway"``)."""

from __future__ import annotations

import attrs

from xypipe._degrade import DegradePolicy
from xypipe._gateway._throttle import ThrottlePolicy
from xypipe._levels import LevelPolicy
from xypipe._validate import Invalid, in_range, non_empty


def _default_degrade() -> DegradePolicy:
    return DegradePolicy(enter=(0.5, 0.75, 0.9), leave=(0.25, 0.5, 0.7), dwell_ms=2000,
                         sample_ms=100)


@attrs.frozen
class GatewayOptions:
    #: PEM public key (Ed25519, EC P-256 or RSA ≥ 2048) that verifies browser tokens.
    public_key: str = attrs.field(validator=non_empty())
    #: Origins allowed to open a socket (exact ``scheme://host[:port]``); ``["*"]`` only in dev.
    allowed_origins: list[str] = attrs.field(validator=non_empty())
    issuer: str = attrs.field(default="xypipe-dev", validator=non_empty())
    audience: str = attrs.field(default="xypipe-gateway", validator=non_empty())
    leeway_s: float = attrs.field(default=5.0, validator=in_range(0.0, 300.0))
    #: Longest token lifetime (exp - iat) accepted; tokens must be short-lived.
    max_token_lifetime_s: float = attrs.field(default=3600.0, validator=in_range(1.0, 86400.0))
    #: URL path of the WebSocket endpoint.
    path: str = "/ws"
    hello_timeout_ms: int = attrs.field(default=5000, validator=in_range(10, 120_000))
    heartbeat_ms: int = attrs.field(default=5000, validator=in_range(10, 600_000))
    heartbeat_timeout_ms: int = attrs.field(default=15000, validator=in_range(20, 1_800_000))
    max_frame_bytes: int = attrs.field(default=65536, validator=in_range(256, 16 * 1024 * 1024))
    rate_per_s: float = attrs.field(default=50.0, validator=in_range(0.1, 100_000.0))
    burst: int = attrs.field(default=100, validator=in_range(1, 100_000))
    max_bad_frames: int = attrs.field(default=10, validator=in_range(0, 1_000_000))
    max_groups: int = attrs.field(default=64, validator=in_range(1, 100_000))
    max_connections: int = attrs.field(default=10_000, validator=in_range(1, 1_000_000))
    #: Per-connection send-queue budget: bytes not yet written and age of the oldest.
    queue_max_bytes: int = attrs.field(default=1 << 20, validator=in_range(1024, 1 << 34))
    queue_max_age_ms: int = attrs.field(default=1000, validator=in_range(1, 600_000))
    degrade: DegradePolicy = attrs.field(factory=_default_degrade)
    #: Pause between frames at L0..L3 (longer pauses at higher levels: fewer, fuller frames).
    level_interval_ms: list[int] = attrs.field(factory=lambda: [0, 100, 250, 500])
    #: At L2 and above, entries keep this many book levels a side (as the ``conflate`` stage's
    #: ``trim_depth`` does in the aggregator).
    trim_depth: int = attrs.field(default=1, validator=in_range(1, 10))
    #: At L3, pressure at or above ``close_pressure`` for ``close_after_ms`` closes (4010).
    close_pressure: float = attrs.field(default=1.0, validator=in_range(0.01, 1000.0))
    close_after_ms: int = attrs.field(default=5000, validator=in_range(1, 600_000))
    #: Groups that keep flowing at L3 (fnmatch patterns).
    priority_groups: list[str] = attrs.field(factory=list)
    #: Deltas kept per (group, shard) for resume and for bridging snapshots.
    history: int = attrs.field(default=256, validator=in_range(2, 100_000))
    snapshot_stream: str = attrs.field(default="XY_MD_SNAPSHOT", validator=non_empty())
    #: The largest jump past a stream's head believed as a gap (lost deltas); beyond it a delta
    #: is rejected and the stream re-anchored from JetStream (docs/protocol.md, "Sequence rules").
    max_seq_gap: int = attrs.field(default=256, validator=in_range(1, 1_000_000))
    #: Where the aggregator keeps its last emitted sequence per (group, shard).
    checkpoint_stream: str = attrs.field(default="XY_AGG_SEQ", validator=non_empty())
    checkpoint_prefix: str = "xy.agg.seq"
    #: At most one JetStream look-up (and one log line per reason) per stream this often.
    anchor_interval_ms: int = attrs.field(default=1000, validator=in_range(10, 600_000))
    #: Where to ask the aggregator for a fresh snapshot of a group when a subscriber waits for
    #: one the cache cannot give (after a gap, a gateway restart); "" = wait for the next
    #: scheduled snapshot instead. At most one request per group this often.
    snapshot_request_subject: str = "xy.agg.snapshot.request"
    snapshot_request_interval_ms: int = attrs.field(default=250, validator=in_range(10, 60_000))
    tick_prefix: str = "xy.md.tick"
    snapshot_prefix: str = "xy.md.snapshot"
    flags_bucket: str = attrs.field(default="xy_feature_flags", validator=non_empty())
    #: The aggregator's known-groups KV bucket (the groups it publishes): subscribing to any
    #: other group is answered UNKNOWN_GROUP; "" = no check (docs/protocol.md, "Groups").
    groups_bucket: str = "xy_md_groups"
    #: Snapshot look-ups per connection (subscribe, resume, snapshot request; one per group):
    #: a token bucket of ``snapshot_lookup_burst``, refilled at ``snapshot_lookups_per_s``.
    snapshot_lookups_per_s: float = attrs.field(default=4.0, validator=in_range(0.01, 10_000.0))
    snapshot_lookup_burst: int = attrs.field(default=64, validator=in_range(1, 100_000))
    #: Moved: ``/admin/feature-flags`` is served by the ``flag_admin`` stage, in a process that
    #: signs in to NATS as ``admin`` (the gateway may only read the flags). Kept to say so.
    admin_role: str | None = None
    #: SO_SNDBUF for browser sockets (bytes); bounds what the kernel holds for a slow reader
    #: so the gateway's own queue, which it can degrade, sees the backlog. None = OS default.
    send_buffer_bytes: int | None = attrs.field(default=None, validator=in_range(4096, 1 << 30))
    close_grace_ms: int = attrs.field(default=1000, validator=in_range(1, 60_000))
    nats_timeout_ms: int = attrs.field(default=2000, validator=in_range(1, 60_000))
    #: Graceful drain (SIGTERM, ``POST /admin/drain``): the clients' moves (GoAway frames) are
    #: spread over this many seconds, after which whoever is left is closed (4100) and the
    #: worker exits (docs/architecture.md "Graceful drain").
    drain_s: float = attrs.field(default=10.0, validator=in_range(0.0, 3600.0))
    #: How long a client told to move has before the gateway closes its socket (4100).
    drain_close_in_ms: int = attrs.field(default=2000, validator=in_range(1, 600_000))
    #: The GoAway's retry hint: a client whose first reconnection fails waits this long.
    drain_retry_ms: int = attrs.field(default=250, validator=in_range(0, 600_000))
    #: The role a bearer token must carry to ask this worker to drain (``/admin/drain``).
    drain_role: str = attrs.field(default="admin", validator=non_empty())
    #: Authentication failures per client address (WebSocket hello, admin bearer token)
    #: before the address is locked out for a while; see docs/protocol.md "Auth throttling".
    auth_throttle: ThrottlePolicy = attrs.field(factory=ThrottlePolicy)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_timeout_ms <= self.heartbeat_ms:
            raise Invalid("heartbeat_timeout_ms",
                          f"expected more than heartbeat_ms ({self.heartbeat_ms})",
                          self.heartbeat_timeout_ms)
        if len(self.level_interval_ms) != 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 60_000
            for v in self.level_interval_ms
        ):
            raise Invalid("level_interval_ms", "expected 4 integers 0..60000 (L0..L3)",
                          self.level_interval_ms)
        for origin in self.allowed_origins:
            if origin != "*" and "://" not in origin:
                raise Invalid("allowed_origins",
                              'expected "*" or origins like "https://app.example.com"',
                              self.allowed_origins)
        if not self.path.startswith("/"):
            raise Invalid("path", 'expected a URL path like "/ws"', self.path)
        if self.admin_role is not None:
            raise Invalid("admin_role", "expected it on the flag_admin stage: /admin/feature-flags "
                          "moved out of the gateway, which may only read the flags "
                          "(docs/security.md)", self.admin_role)

    @property
    def levels(self) -> LevelPolicy:
        """What each degradation level does to a connection (frames, trim depth, pauses)."""
        return LevelPolicy(trim_depth=self.trim_depth,
                           frame_interval_ms=tuple(self.level_interval_ms))


@attrs.frozen
class FlagAdminOptions:
    """The ``flag_admin`` stage's options: who may change feature flags, and where they live.

    The token options mean what the gateway's do (the same identity provider signs both)."""

    #: PEM public key that verifies the admins' bearer tokens.
    public_key: str = attrs.field(validator=non_empty())
    issuer: str = attrs.field(default="xypipe-dev", validator=non_empty())
    audience: str = attrs.field(default="xypipe-gateway", validator=non_empty())
    leeway_s: float = attrs.field(default=5.0, validator=in_range(0.0, 300.0))
    max_token_lifetime_s: float = attrs.field(default=3600.0, validator=in_range(1.0, 86400.0))
    #: The role a token must carry to read or change flags.
    admin_role: str = attrs.field(default="admin", validator=non_empty())
    flags_bucket: str = attrs.field(default="xy_feature_flags", validator=non_empty())
    nats_timeout_ms: int = attrs.field(default=2000, validator=in_range(1, 60_000))
    #: Authentication failures per client address before it is locked out for a while.
    auth_throttle: ThrottlePolicy = attrs.field(factory=ThrottlePolicy)
