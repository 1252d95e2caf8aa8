"""The ownership engine's metrics (docs/observability/field-dictionary.md)."""

from __future__ import annotations

from xypipe._metrics import Metrics

__all__ = ["ACQUIRED_REASONS", "LOST_REASONS", "OwnershipMetrics"]

#: How a group had become free when this member acquired it.
ACQUIRED_REASONS = ("new", "released", "expired", "stale")
LOST_REASONS = ("expired", "refused")


class OwnershipMetrics:
    def __init__(self, m: Metrics) -> None:
        self.owned = m.gauge("ownership_groups_owned",
                             "Groups this aggregator owns (holds the lease of) now")
        self.members = m.gauge("ownership_members",
                               "Live aggregator members as this one sees them (itself included)")
        self.acquired = m.counter(
            "ownership_acquired", "Group leases acquired, by how the group had become free "
            "(new, released, expired, stale)", ["reason"])
        self.lost = m.counter(
            "ownership_lost", "Group leases lost while held, by reason (expired: the local "
            "deadline passed before a renewal came back; refused: the server refused one)",
            ["reason"])
        self.released = m.counter(
            "ownership_released", "Groups handed over to the member rendezvous hashing gives "
            "them to (release handshake, then the lease deleted)")
        self.bad_values = m.counter(
            "ownership_bad_values", "Lease values that are not xypipe's JSON (ignored)")
        for reason in ACQUIRED_REASONS:
            self.acquired.labels(reason)
        for reason in LOST_REASONS:
            self.lost.labels(reason)
