"""What a browser session may do and what it may see: its limits and the known groups."""

from __future__ import annotations

import fnmatch

import attrs

from xypipe._degrade import DegradePolicy
from xypipe._levels import LevelPolicy
from xypipe.contracts import Priority

PROTOCOL_VERSION = 1


@attrs.frozen
class SessionPolicy:
    """Per-connection limits and timings (from the gateway stage's config)."""

    hello_timeout_s: float = 5.0
    heartbeat_ms: int = 5000
    heartbeat_timeout_ms: int = 15000
    max_frame_bytes: int = 64 * 1024
    #: Client frames per second (token bucket) and burst.
    rate_per_s: float = 50.0
    burst: int = 100
    #: Bad frames tolerated over a session before it is closed.
    max_bad_frames: int = 10
    max_groups: int = 64
    degrade: DegradePolicy = attrs.field(factory=lambda: DegradePolicy(dwell_ms=2000))
    #: What each level does (paused priorities, whether an overloaded connection may close).
    levels: LevelPolicy = attrs.field(factory=LevelPolicy)
    #: At a level that may close, a pressure at or above this for ``close_after_ms`` closes
    #: the connection.
    close_pressure: float = 1.0
    close_after_ms: int = 5000
    #: Groups that keep flowing at L3 (fnmatch patterns): high priority; the others low.
    priority_groups: tuple[str, ...] = ()
    protocol_version: int = PROTOCOL_VERSION
    #: Snapshot look-ups a connection may cause (subscribe, resume, snapshot request: one per
    #: group), a token bucket: ``snapshot_lookup_burst`` at once, then this many a second.
    snapshot_lookups_per_s: float = 4.0
    snapshot_lookup_burst: int = 64

    def is_priority(self, group: str) -> bool:
        return any(fnmatch.fnmatchcase(group, p) for p in self.priority_groups)

    def priority_of(self, group: str) -> int:
        """A gateway knows no contract priorities: ``priority_groups`` are high, others low."""
        return Priority.PRIORITY_HIGH if self.is_priority(group) else Priority.PRIORITY_LOW


@attrs.define
class KnownGroups:
    """The groups the aggregator publishes, as the gateway last read them from its KV bucket;
    one instance shared by every session. ``groups is None``: not loaded yet (or no bucket
    configured); empty: no aggregator has listed a group yet (a gateway up before the
    aggregator's first delta). In both cases every well-formed group is accepted, as a
    subscription served once the group appears (docs/protocol.md, "Groups")."""

    groups: frozenset[str] | None = None

    def knows(self, group: str) -> bool:
        return not self.groups or group in self.groups

    def like(self, group: str) -> str | None:
        """A published group equal to ``group`` but for case (the usual mistake)."""
        folded = group.casefold()
        for g in sorted(self.groups or ()):
            if g.casefold() == folded:
                return g
        return None
