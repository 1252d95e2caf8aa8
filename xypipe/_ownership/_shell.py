"""The ownership engine's Trio shell: the two KV buckets, their watches, this member's
announcement, and the KV writes the core asks for (:mod:`xypipe._ownership._core`).

Every task lives in the nursery of :meth:`LeaseOwnership.run`; every write has a deadline
shorter than a lease's validity, so a stalled server never holds a renewal back past the point
where the core stops trusting the lease anyway.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import trio

from xypipe._errors import (
    OWN_ACQUIRE_FAILED,
    OWN_ANNOUNCE_FAILED,
    OWN_BAD_VALUE,
    OWN_LOST,
    OWN_RELEASE_DELETE_FAILED,
    OWN_RELEASE_HOOK_FAILED,
    OWN_RENEW_FAILED,
    OWN_STALE_LEASE_CLEARED,
    BridgeError,
    KvKeyExists,
    KvRevisionConflict,
)
from xypipe._log import Logger
from xypipe._nats import KvEntry
from xypipe._ownership._config import Lease, OwnershipConfig, ReleaseHook
from xypipe._ownership._core import (
    Acquire,
    Action,
    ClearStale,
    Delete,
    OwnershipCore,
    OwnEvent,
    Release,
    Renew,
)
from xypipe._ownership._ometrics import OwnershipMetrics
from xypipe.abc import KeyValue

__all__ = ["LeaseOwnership"]


def _owner_of(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    owner = doc.get("owner") if isinstance(doc, dict) else None
    return owner if isinstance(owner, str) and owner else None


class LeaseOwnership:
    """Groups owned through JetStream KV leases (the ``Ownership`` the aggregator uses)."""

    def __init__(self, cfg: OwnershipConfig, member: str, leases: KeyValue, members: KeyValue,
                 log: Logger, metrics: OwnershipMetrics) -> None:
        self.cfg = cfg
        self.member = member
        self.core = OwnershipCore(member, ttl=cfg.ttl, renew=cfg.renew, margin=cfg.margin)
        #: The release handshake (see :data:`ReleaseHook`); ``None``: nothing to store.
        self.on_release: ReleaseHook | None = None
        self._leases = leases
        self._members = members
        self._log = log
        self._metrics = metrics
        self._wake = trio.Event()
        self._changed = trio.Event()
        #: Set (and replaced) after every step of the core.
        self._stepped = trio.Event()
        self._owned = frozenset[str]()
        #: A write never waits longer than this: a renewal later than it is worthless.
        self._write_timeout = max(cfg.renew, self.core.validity / 3)
        self._announce_failed_at = -math.inf

    # -- the aggregator's side --------------------------------------------------------------

    @property
    def owned(self) -> frozenset[str]:
        return self._owned

    def lease(self, group: str) -> Lease | None:
        # Live, like ``may_publish`` (``owned`` follows at the end of the core's step).
        return self.core.lease(group)

    def may_publish(self, group: str) -> bool:
        return self.core.may_publish(group, trio.current_time())

    def offer(self, groups: Iterable[str]) -> None:
        self.core.offer(set(groups))
        self._kick()

    async def wait_change(self, seen: frozenset[str]) -> frozenset[str]:
        while self._owned == seen:
            await self._changed.wait()
        return self._owned

    def set_epoch(self, group: str, epoch: int) -> None:
        self.core.set_epoch(group, epoch)

    # -- running --------------------------------------------------------------------------------

    def _kick(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Announce, watch, load both buckets once, then keep the leases until cancelled."""
        async with trio.open_nursery() as nursery:
            await self._announce_once()
            nursery.start_soon(self._announce)
            nursery.start_soon(self._watch_members)
            nursery.start_soon(self._watch_leases)
            await self._load()
            self.core.ready = True
            nursery.start_soon(self._drive, nursery)
            task_status.started()

    async def leave(self) -> None:
        """Hand every held group over (release handshake, delete) and withdraw the
        announcement; bounded by the release timeout plus a lease's lifetime."""
        self.core.leaving = True
        self._kick()
        with trio.move_on_after(self.cfg.release_timeout_ms / 1000 + self.cfg.ttl):
            while self.core.holding:
                await self._stepped.wait()
        with trio.move_on_after(self._write_timeout):
            try:
                await self._members.delete(self.member)
            except BridgeError as exc:
                self._log.warning("could not withdraw the member's announcement (it expires)",
                                  code=OWN_ANNOUNCE_FAILED, error=str(exc))

    async def _load(self) -> None:
        """Both buckets as they are, before anything is claimed (a member that believed itself
        alone would claim every group)."""
        now = trio.current_time()
        for key in await self._members.keys():
            if await self._members.get(key) is not None:
                self.core.member_heard(key, now)
        for key in await self._leases.keys():
            entry = await self._leases.get(key)
            if entry is not None:
                self._on_lease(entry)

    async def _drive(self, nursery: trio.Nursery) -> None:
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            for action in self.core.poll(now):
                nursery.start_soon(self._do, action)
            self._after_step(now)
            deadline = self.core.next_deadline(now)
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wake.wait()

    def _after_step(self, now: float) -> None:
        for ev in self.core.take_events():
            self._report(ev)
        owned = self.core.owned
        if owned != self._owned:
            self._owned = owned
            self._changed.set()
            self._changed = trio.Event()
        self._metrics.owned.set(len(owned))
        self._metrics.members.set(len(self.core.members.live(now)))
        self._stepped.set()
        self._stepped = trio.Event()

    def _report(self, ev: OwnEvent) -> None:
        m = self._metrics
        if ev.kind == "acquired":
            m.acquired.labels(ev.reason).inc()
            self._log.info("group acquired", group=ev.group, fence=ev.fence, reason=ev.reason)
        elif ev.kind == "lost":
            m.lost.labels(ev.reason).inc()
            self._log.warning("group lost: publishing stopped", code=OWN_LOST, group=ev.group,
                              fence=ev.fence, reason=ev.reason)
        else:
            m.released.inc()
            self._log.info("group handed over", group=ev.group, fence=ev.fence)

    # -- the core's actions ---------------------------------------------------------------------

    async def _do(self, action: Action) -> None:
        if isinstance(action, Release):
            await self._release(action)  # bounded by its own timeout (release_timeout_ms)
            self._kick()
            return
        try:
            with trio.fail_after(self._write_timeout):
                if isinstance(action, Acquire):
                    await self._acquire(action)
                elif isinstance(action, Renew):
                    await self._renew(action)
                elif isinstance(action, Delete):
                    await self._delete(action)
                else:
                    await self._clear_stale(action)
        except trio.TooSlowError:
            self._timed_out(action)
        self._kick()

    def _timed_out(self, action: Action) -> None:
        now = trio.current_time()
        what = f"no answer within {self._write_timeout:.3f} s"
        if isinstance(action, Acquire):
            self._acquire_failed(action.group, what)
        elif isinstance(action, Renew):
            self._renew_failed(action.group, what)
        elif isinstance(action, Delete):
            self._log.warning("lease not deleted after its release (it expires)",
                              code=OWN_RELEASE_DELETE_FAILED, group=action.group, error=what)
            self.core.deleted(action.group, now)
        elif isinstance(action, ClearStale):
            self.core.stale_failed(action.group, now)

    async def _acquire(self, a: Acquire) -> None:
        try:
            revision = await self._leases.create(a.group, a.value)
        except KvKeyExists:
            self.core.acquire_refused(a.group, trio.current_time())
        except BridgeError as exc:
            self._acquire_failed(a.group, str(exc))
        else:
            self.core.acquired(a.group, revision)

    def _acquire_failed(self, group: str, error: str) -> None:
        self._log.warning("lease not acquired; retried", code=OWN_ACQUIRE_FAILED, group=group,
                          error=error)
        self.core.acquire_failed(group, trio.current_time())

    async def _renew(self, a: Renew) -> None:
        try:
            revision = await self._leases.update(a.group, a.value, last=a.last)
        except KvRevisionConflict:
            self.core.renew_refused(a.group)
        except BridgeError as exc:
            self._renew_failed(a.group, str(exc))
        else:
            self.core.renewed(a.group, revision)

    def _renew_failed(self, group: str, error: str) -> None:
        self._log.warning("lease renewal failed; retried until its deadline",
                          code=OWN_RENEW_FAILED, group=group, error=error)
        self.core.renew_failed(group, trio.current_time())

    async def _release(self, a: Release) -> None:
        # The group already left ``owned`` and ``may_publish`` (the step that returned this
        # action published that), so the hook stores a checkpoint nothing will follow.
        hook = self.on_release
        if hook is not None:
            with trio.CancelScope(deadline=trio.current_time()
                                  + self.cfg.release_timeout_ms / 1000) as scope:
                try:
                    await hook(a.group)
                except Exception as exc:
                    self._log.warning("release hook failed; the lease is deleted anyway",
                                      code=OWN_RELEASE_HOOK_FAILED, group=a.group,
                                      error=f"{type(exc).__name__}: {exc}")
            if scope.cancelled_caught:
                self._log.warning("release hook overran its timeout; the lease is deleted "
                                  "anyway", code=OWN_RELEASE_HOOK_FAILED, group=a.group,
                                  timeout_ms=self.cfg.release_timeout_ms)
        self.core.handshake_done(a.group)

    async def _delete(self, a: Delete) -> None:
        try:
            await self._leases.delete(a.group, last=a.last)
        except BridgeError as exc:  # includes a conflict: someone else's revision now
            self._log.warning("lease not deleted after its release (it expires)",
                              code=OWN_RELEASE_DELETE_FAILED, group=a.group, error=str(exc))
        self.core.deleted(a.group, trio.current_time())

    async def _clear_stale(self, a: ClearStale) -> None:
        try:
            await self._leases.delete(a.group, last=a.last)
        except BridgeError:
            self.core.stale_failed(a.group, trio.current_time())
            return
        self._log.warning("a lease in this member's name it did not hold was deleted",
                          code=OWN_STALE_LEASE_CLEARED, group=a.group, revision=a.last)
        self.core.stale_cleared(a.group, trio.current_time())

    # -- the buckets ----------------------------------------------------------------------------

    async def _announce_once(self) -> None:
        value = json.dumps({"member": self.member}).encode()
        try:
            with trio.fail_after(self._write_timeout):
                await self._members.put(self.member, value)
        except (BridgeError, trio.TooSlowError) as exc:
            now = trio.current_time()
            if now - self._announce_failed_at >= self.cfg.ttl:
                self._announce_failed_at = now
                self._log.warning("member announcement failed; retried",
                                  code=OWN_ANNOUNCE_FAILED, member=self.member, error=str(exc))

    async def _announce(self) -> None:
        while not self.core.leaving:
            await trio.sleep(self.cfg.renew)  # the announcement's period, not a wait for data
            await self._announce_once()

    async def _watch_members(self) -> None:
        async with self._members.watch(">") as watch:
            async for entry in watch:
                if entry.op == "PUT":
                    self.core.member_heard(entry.key, trio.current_time())
                else:
                    self.core.member_gone(entry.key)
                self._kick()

    async def _watch_leases(self) -> None:
        async with self._leases.watch(">") as watch:
            async for entry in watch:
                self._on_lease(entry)
                self._kick()

    def _on_lease(self, entry: KvEntry) -> None:
        now = trio.current_time()
        if entry.op != "PUT":
            how = "released" if entry.op == "DEL" else "expired"
            self.core.lease_gone(entry.key, entry.revision, how, now)
            return
        owner = _owner_of(entry.value)
        if owner is None:
            self._metrics.bad_values.inc()
            self._log.warning("lease value is not {owner, fence, epoch} JSON; taken as held by "
                              "someone unknown", code=OWN_BAD_VALUE, group=entry.key,
                              revision=entry.revision)
            owner = "?"
        self.core.lease_seen(entry.key, owner, entry.revision, now)
