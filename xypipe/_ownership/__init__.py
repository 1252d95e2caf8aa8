"""Which aggregator owns which group: JetStream KV leases over rendezvous hashing of the live
members, with a fence per acquisition (docs/architecture.md, "Aggregators that split the
groups").

::

    async with open_ownership(nc, cfg, member=ctx.worker.member, log=log,
                              metrics=ctx.metrics) as own:
        own.on_release = store_last_checkpoint      # async (group) -> None
        own.offer(known_groups)
        owned = own.owned
        while True:
            ...                                     # restore and run the owned groups,
            if own.may_publish(group):              # publishing only while the lease holds,
                delta.fence = own.lease(group).fence    # stamped with its fence
            owned = await own.wait_change(owned)

The core (:mod:`._core`, :mod:`._hrw`) is pure; :mod:`._shell` does the KV I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from xypipe._errors import BridgeError, OwnershipError
from xypipe._log import Logger, get_logger
from xypipe._metrics import Metrics
from xypipe._nats._kv import _check_key
from xypipe._ownership._config import Lease, OwnershipConfig, ReleaseHook
from xypipe._ownership._disabled import AllOwned
from xypipe._ownership._ometrics import OwnershipMetrics
from xypipe._ownership._shell import LeaseOwnership
from xypipe._trio_util import single_error_unwrapped
from xypipe.abc import NatsClient

__all__ = ["Lease", "Ownership", "OwnershipConfig", "ReleaseHook", "open_ownership"]


class Ownership(Protocol):
    """What the aggregator sees of the ownership engine (leases, or everything when off)."""

    #: Set by the aggregator: stores a group's last checkpoint when the group is handed over.
    on_release: ReleaseHook | None

    @property
    def owned(self) -> frozenset[str]:
        """The groups this member holds the lease of (changes: :meth:`wait_change`). Updated
        at the end of each step of the engine; :meth:`may_publish` and :meth:`lease` are
        live — gate every publish with ``may_publish``, never with ``owned``."""
        ...

    def lease(self, group: str) -> Lease | None:
        """This member's lease of ``group`` (owner, fence, epoch), ``None`` if not owned."""
        ...

    def may_publish(self, group: str) -> bool:
        """Whether a delta or snapshot of ``group`` may be published now (checked against the
        lease's local deadline at every call)."""
        ...

    def offer(self, groups: Iterable[str]) -> None:
        """Groups known to exist; those rendezvous hashing gives this member are claimed."""
        ...

    async def wait_change(self, seen: frozenset[str]) -> frozenset[str]:
        """Wait until :attr:`owned` differs from ``seen``; returns it."""
        ...

    def set_epoch(self, group: str, epoch: int) -> None:
        """The group's epoch, written into its lease at the next renewal."""
        ...


@asynccontextmanager
async def open_ownership(
    nc: NatsClient | None,
    cfg: OwnershipConfig,
    *,
    member: str = "",
    log: Logger | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Ownership]:
    """Run the ownership engine for the block. ``member`` (``cfg.member`` wins when set) names
    this aggregator, stable across its restarts (``ctx.worker.member``).

    Ending the block normally hands every held group over (release handshake, lease deleted)
    and withdraws the announcement; leaving it by an exception or a cancellation does not —
    like a crash, the leases then expire after ``ttl_ms``.
    """
    name = cfg.member or member
    log = log or get_logger("ownership")
    if not cfg.enabled:
        yield AllOwned(name)
        return
    if nc is None:
        raise OwnershipError("ownership.enabled needs NATS: the process has no [nats] section")
    try:
        _check_key(cfg.members_bucket, name)
    except BridgeError as exc:
        raise OwnershipError(f"ownership member name {name!r}: {exc}") from None
    js = nc.jetstream()
    try:
        # File storage: a bucket's revisions (the fences) keep growing across server restarts.
        leases = await js.kv(cfg.bucket, ttl_s=cfg.ttl, marker_ttl_s=max(1.0, cfg.ttl))
        members = await js.kv(cfg.members_bucket, ttl_s=cfg.ttl,
                              marker_ttl_s=max(1.0, cfg.ttl))
    except BridgeError as exc:
        raise OwnershipError(f"ownership buckets {cfg.bucket!r}, {cfg.members_bucket!r} "
                             f"cannot be opened: {exc}") from exc
    own = LeaseOwnership(cfg, name, leases, members, log.bind(member=name),
                         OwnershipMetrics(metrics or Metrics()))
    with single_error_unwrapped():
        async with trio.open_nursery() as nursery:
            await nursery.start(own.run)
            yield own
            with trio.CancelScope(shield=True):
                await own.leave()
            nursery.cancel_scope.cancel()
