"""What may leave the aggregator: the publish stage asks the gate before every delta and snapshot.

An item emitted under an older restore generation is dropped (the restore after an ownership
change rebuilds and re-emits it: ``publish_superseded_total{kind}``). With group ownership, an
item of a group the ownership says this aggregator may not publish — no lease, or a lease lost
or being released — is dropped too (``publish_not_owner_total{kind}``, logged ``XY-AGG-030`` at
most once a second per group); what passes carries the lease's fence (0 without ownership).
"""

from __future__ import annotations

import trio

from xypipe._errors import AGG_NOT_OWNER
from xypipe._md.wire import varint_field, varint_tag
from xypipe._stage import StageContext
from xypipe._stages._aggshare import AggregatorShare

#: ``Delta.fence`` and ``Snapshot.fence`` (proto/xy/md/v1/marketdata.proto).
DELTA_FENCE_TAG = varint_tag(11)
SNAPSHOT_FENCE_TAG = varint_tag(12)


def fenced(tag: bytes, fence: int, payload: bytes) -> bytes:
    """``payload`` with its fence field set (a protobuf message's fields may come in any order:
    one varint field in front is the same message with ``fence`` set)."""
    return varint_field(tag, fence) + payload if fence else payload


class PublishGate:
    """Decides, per item, whether it may be published and with which fence."""

    def __init__(self, ctx: StageContext, share: AggregatorShare, log_every_s: float = 1.0) -> None:
        self._share = share
        self._log = ctx.log
        self._log_every = log_every_s
        self._not_owner = ctx.metrics.counter(
            "publish_not_owner", "Deltas and snapshots dropped because this aggregator may not "
            "publish their group (no lease, or it is lost or released)", ["kind"])
        self._superseded = ctx.metrics.counter(
            "publish_superseded", "Deltas and snapshots dropped because a restore after an "
            "ownership change superseded what emitted them", ["kind"])
        #: group -> (when it was last logged, drops since).
        self._logged: dict[str, tuple[float, int]] = {}

    def admit(self, kind: str, group: str, generation: int) -> int | None:
        """The fence to publish ``kind`` ("delta" | "snapshot") of ``group`` with, or ``None``
        to drop it."""
        share = self._share
        if 0 < generation < share.generation:
            self._superseded.labels(kind).inc()
            return None
        own = share.ownership
        if own is None:
            return 0
        lease = own.lease(group) if own.may_publish(group) else None
        if lease is None:
            self._not_owner.labels(kind).inc()
            self._note(kind, group)
            return None
        return lease.fence

    def _note(self, kind: str, group: str) -> None:
        now = trio.current_time()
        last, since = self._logged.get(group, (-self._log_every, 0))
        if now - last < self._log_every:
            self._logged[group] = (last, since + 1)
            return
        self._logged[group] = (now, 0)
        self._log.info("not publishing a group this aggregator does not own",
                       code=AGG_NOT_OWNER, group=group, kind=kind, dropped_since=since)


__all__ = ["DELTA_FENCE_TAG", "SNAPSHOT_FENCE_TAG", "PublishGate", "fenced"]
