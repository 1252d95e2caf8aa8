"""The ownership engine's settings and the lease it hands the aggregator (frozen values)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from xypipe._validate import Invalid, in_range, non_empty

__all__ = ["Lease", "OwnershipConfig", "ReleaseHook"]

#: Awaited with a group this member gives away, after it stopped publishing it and before its
#: lease is deleted: the aggregator makes sure the group's last checkpoint is stored (bounded by
#: ``release_timeout_ms``; the lease is deleted even if it fails).
ReleaseHook = Callable[[str], Awaitable[None]]


@attrs.frozen
class OwnershipConfig:
    """How aggregators split the groups (the ``ownership`` table of the ``ingest`` stage).

    With ``enabled = false`` (the default) one aggregator owns every group, fence 0: today's
    single-aggregator behaviour, no buckets touched.
    """

    enabled: bool = False
    #: One key per group: ``{owner, fence, epoch}``, removed by the bucket's age limit when its
    #: holder stops renewing it.
    bucket: str = attrs.field(default="xy_agg_leases", validator=non_empty())
    #: One key per live member, rewritten every ``renew_ms``; gone ``ttl_ms`` after its last.
    members_bucket: str = attrs.field(default="xy_agg_members", validator=non_empty())
    #: The leases' and members' time to live on the server (the bucket's ``max_age``).
    ttl_ms: int = attrs.field(default=1500, validator=in_range(100, 600_000))
    #: How often a holder renews each lease and re-announces itself.
    renew_ms: int = attrs.field(default=300, validator=in_range(10, 60_000))
    #: The holder stops trusting a lease ``ttl x (1 - margin)`` after it sent the last renewal
    #: the server accepted, so it stops publishing before the server can let anyone else in.
    margin: float = attrs.field(default=0.2, validator=in_range(0.05, 0.9))
    #: How long a release waits for the aggregator to store the group's last checkpoint.
    release_timeout_ms: int = attrs.field(default=1000, validator=in_range(0, 60_000))
    #: This member's name; empty: the worker's own (``ctx.worker.member``, ``host/process.i``).
    member: str = ""

    def __attrs_post_init__(self) -> None:
        if self.renew_ms * 2 > self.ttl_ms * (1 - self.margin):
            raise Invalid("renew_ms", "expected at most half of ttl_ms x (1 - margin), so a "
                          "lease survives one lost renewal", self.renew_ms)
        if self.bucket == self.members_bucket:
            raise Invalid("members_bucket", "expected another bucket than the leases'",
                          self.members_bucket)

    @property
    def ttl(self) -> float:
        return self.ttl_ms / 1000

    @property
    def renew(self) -> float:
        return self.renew_ms / 1000


@attrs.frozen
class Lease:
    """A group as its owner holds it: ``fence`` is the leases bucket's revision at acquisition
    (grows with every new owner of the group; 0: no lease, ownership disabled); ``epoch`` the
    group's epoch as the aggregator set it (:meth:`Ownership.set_epoch`)."""

    group: str
    owner: str
    fence: int
    epoch: int
    #: The member whose lease had expired when this one was acquired ("": the group was new,
    #: handed over, or this member's own): its last deltas may not all be checkpointed.
    taken_from: str = ""
