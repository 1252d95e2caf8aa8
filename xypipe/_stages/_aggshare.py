"""What the stages of one aggregator pipeline share inside their process: the group ownership
ingest opened, the routing table shard keeps, and what publish has put on the wire.

Ingest opens the ownership (``[...ingest] ownership = {...}``) and reads the routing table to
skip a foreign tick before decoding it; shard offers every group it routes to and writes the
table; publish gates each delta and snapshot with ``may_publish``, stamps the
lease's fence, and records the last sequence it published per stream, which a restore after an
ownership change continues from (the stored checkpoints may not have caught up yet). See
``docs/architecture.md``, "Aggregators that split the groups".
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from prometheus_client import Counter

from xypipe._ownership import Ownership, ReleaseHook
from xypipe._stage import Shared, StageContext


@attrs.define(eq=False)
class AggregatorShare:
    """One aggregator pipeline's shared state (see the module docstring)."""

    #: ``None``: no ownership (every group is this aggregator's, fence 0).
    ownership: Ownership | None = None
    #: The generation of the last ``Restore`` ingest sent: publish drops what an older one
    #: emitted (it is rebuilt and re-emitted under the new one).
    generation: int = 0
    #: (group, shard) -> (epoch, seq) of the last delta publish let out.
    published: dict[tuple[str, int], tuple[int, int]] = attrs.field(factory=dict)
    #: Symbol key (``venue.symbol``) -> the group shard routes it to.
    routes: dict[str, str] = attrs.field(factory=dict)
    #: Group -> the stream sequence of the first tick routed to it in this process (owned or
    #: not): where a restore replays a group without a stored snapshot from.
    first_tick: dict[str, int] = attrs.field(factory=dict)
    #: Every source message up to this stream sequence has been routed by shard (0: unknown).
    routed_through: int = 0
    #: The stream sequence this process started reading at (its first session's start; 0: not
    #: started): ``first_tick`` is a group's first tick in the stream only if nothing the
    #: stream still holds came before it.
    seen_from: int = 0
    #: Set by publish: store a group's last checkpoint, acknowledged (the ownership's
    #: release handshake).
    store_checkpoint: ReleaseHook | None = None
    #: Every group offered so far (ingest offers them all once the ownership is open).
    offered: set[str] = attrs.field(factory=set)

    def offer(self, groups: Iterable[str]) -> None:
        groups = set(groups) - self.offered
        if not groups:
            return
        self.offered |= groups
        if self.ownership is not None:
            self.ownership.offer(groups)


def foreign_counter(ctx: StageContext) -> Counter:
    """``agg_foreign_ticks_total{where}``: ticks of groups this aggregator does not own, skipped
    by ingest before decoding (``where="ingest"``) or dropped after routing (``"shard"``)."""
    return ctx.metrics.counter(
        "agg_foreign_ticks", "Source ticks of groups another aggregator owns, skipped before "
        "decoding (where=ingest) or dropped once routed (where=shard)", ["where"])


_SHARES: Shared[dict[str, AggregatorShare]] = Shared("aggregator.share", dict)


def share_of(ctx: StageContext) -> AggregatorShare:
    """The share of ``ctx``'s pipeline (one per aggregator pipeline of the process)."""
    shares = ctx.shared.get(_SHARES)
    found = shares.get(ctx.pipeline)
    if found is None:
        found = shares[ctx.pipeline] = AggregatorShare()
    return found


__all__ = ["AggregatorShare", "foreign_counter", "share_of"]
