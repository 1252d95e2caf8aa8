"""The ownership engine's core: live members, rendezvous assignment and one lease state machine
per group — a pure class fed events with the time passed in, returning the KV operations to do.

The shell (:mod:`xypipe._ownership._shell`) does each returned action and feeds its outcome
back; it also feeds what the two buckets' watches show. Nothing here reads a clock, sleeps or
talks to NATS, so every rule below is unit-tested with plain numbers.

A group's lease goes through (no entry: free)::

    free --Acquire--> ACQUIRING --acquired--> HELD --Renew/renewed--> HELD
    ACQUIRING --refused or failed--> free
    HELD, RELEASING --renewal refused, or the local deadline passed--> free (lost)
    HELD --rendezvous gives the group to another live member--> RELEASING (not published)
    RELEASING --handshake_done--> DELETING --Delete/deleted--> free (released)

The holder's safety rule: a lease is trusted until ``sent_at + ttl * (1 - margin)`` where
``sent_at`` is when the holder sent the last write the server accepted (the create or a
renewal). The server removes the key ``ttl`` after it *stored* that write, which is later than
it was sent, so the holder stops publishing before anyone else can acquire the group.
"""

from __future__ import annotations

import enum
import json

import attrs

from xypipe._ownership._config import Lease
from xypipe._ownership._hrw import owner_of

__all__ = [
    "Acquire",
    "Action",
    "ClearStale",
    "Delete",
    "Members",
    "OwnEvent",
    "OwnershipCore",
    "Phase",
    "Release",
    "Renew",
    "lease_value",
]


class Phase(enum.Enum):
    ACQUIRING = "acquiring"  # the create is in flight
    HELD = "held"  # ours: published while the local deadline holds
    RELEASING = "releasing"  # given away: not published, the handshake runs, renewals go on
    DELETING = "deleting"  # the handshake is done: the lease is deleted once no write is out


def lease_value(owner: str, fence: int, epoch: int) -> bytes:
    """The JSON a lease key holds."""
    return json.dumps({"owner": owner, "fence": fence, "epoch": epoch},
                      separators=(",", ":")).encode()


# -- actions: what the shell must do ------------------------------------------------------------


@attrs.frozen
class Acquire:
    """KV create of the group's lease (only if it holds no value)."""

    group: str
    value: bytes


@attrs.frozen
class Renew:
    """KV update of the group's lease, expecting revision ``last``."""

    group: str
    last: int
    value: bytes


@attrs.frozen
class Release:
    """Run the release handshake (the aggregator stores the group's last checkpoint), then
    tell :meth:`OwnershipCore.handshake_done`."""

    group: str


@attrs.frozen
class Delete:
    """KV delete of the group's lease, expecting revision ``last``."""

    group: str
    last: int


@attrs.frozen
class ClearStale:
    """KV delete (expecting ``last``) of a lease in this member's name that it does not hold."""

    group: str
    last: int


Action = Acquire | Renew | Release | Delete | ClearStale


@attrs.frozen
class OwnEvent:
    """What happened, for the shell to log and count: ``kind`` is ``acquired``, ``lost`` or
    ``released``; ``reason`` why (acquired: how the group had become free — ``new``,
    ``released``, ``expired``, ``stale``; lost: ``expired`` or ``refused``)."""

    kind: str
    group: str
    reason: str
    fence: int


# -- members ------------------------------------------------------------------------------------


class Members:
    """The live members as this member sees them: itself, and every member whose announcement
    arrived within ``ttl`` and was not deleted since."""

    def __init__(self, me: str, ttl: float) -> None:
        self.me = me
        self.ttl = ttl
        self._heard: dict[str, float] = {}

    def heard(self, member: str, now: float) -> None:
        self._heard[member] = now

    def gone(self, member: str) -> None:
        self._heard.pop(member, None)

    def live(self, now: float) -> tuple[str, ...]:
        for m, at in list(self._heard.items()):
            if now - at > self.ttl:
                del self._heard[m]
        return tuple(sorted({self.me, *self._heard}))

    def next_expiry(self) -> float | None:
        return min((at + self.ttl for at in self._heard.values()), default=None)


# -- leases -------------------------------------------------------------------------------------


@attrs.define
class _Held:
    phase: Phase
    fence: int = 0
    revision: int = 0
    #: When the write in flight (create, renewal) was sent.
    sent_at: float = 0.0
    valid_until: float = 0.0
    renew_due: float = 0.0
    in_flight: bool = False
    #: How the group had become free when it was claimed (for the acquired event).
    how: str = "new"
    #: The member whose lease had expired (not released) when it was claimed ("": none).
    taken_from: str = ""


@attrs.define
class _Seen:
    """A lease key as the watch last showed it (``owner`` None: no value)."""

    owner: str | None
    revision: int
    at: float
    #: How it became free (``released``, ``expired``), or ``held``.
    how: str
    #: Who held it before it became free (None: unknown).
    last_owner: str | None = None


class OwnershipCore:
    """One member's view of the groups and the leases it holds (see the module's docstring)."""

    def __init__(self, me: str, *, ttl: float, renew: float, margin: float) -> None:
        self.me = me
        self.ttl = ttl
        self.renew = renew
        self.validity = ttl * (1 - margin)
        self.members = Members(me, ttl)
        #: Until the shell has loaded both buckets once, nothing is acquired or released: a
        #: member that believed itself alone would claim every group.
        self.ready = False
        #: Leaving (a graceful exit): every held group is released, nothing is claimed.
        self.leaving = False
        self._offered: set[str] = set()
        self._held: dict[str, _Held] = {}
        self._seen: dict[str, _Seen] = {}
        self._epochs: dict[str, int] = {}
        #: Groups not to try again before this time (a refused create, a failed write).
        self._retry_at: dict[str, float] = {}
        self._events: list[OwnEvent] = []
        #: Each group's rendezvous owner among ``_owners_of`` (recomputed when they change:
        #: the core is polled at every watch entry, the members change rarely).
        self._owners_of: tuple[str, ...] = ()
        self._owners: dict[str, str | None] = {}

    # -- what the aggregator reads ----------------------------------------------------------

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(g for g, h in self._held.items() if h.phase is Phase.HELD)

    def may_publish(self, group: str, now: float) -> bool:
        h = self._held.get(group)
        return h is not None and h.phase is Phase.HELD and now < h.valid_until

    def lease(self, group: str) -> Lease | None:
        h = self._held.get(group)
        if h is None or h.phase is not Phase.HELD:
            return None
        return Lease(group, self.me, h.fence, self._epochs.get(group, 0), h.taken_from)

    def phase(self, group: str) -> Phase | None:
        h = self._held.get(group)
        return h.phase if h is not None else None

    def offer(self, groups: frozenset[str] | set[str] | list[str]) -> None:
        self._offered.update(groups)

    def set_epoch(self, group: str, epoch: int) -> None:
        self._epochs[group] = epoch

    @property
    def holding(self) -> bool:
        """Whether any lease is held or being acquired, released or deleted."""
        return bool(self._held)

    def take_events(self) -> list[OwnEvent]:
        out, self._events = self._events, []
        return out

    # -- what the buckets show --------------------------------------------------------------

    def member_heard(self, member: str, now: float) -> None:
        self.members.heard(member, now)

    def member_gone(self, member: str) -> None:
        self.members.gone(member)

    def lease_seen(self, group: str, owner: str, revision: int, now: float) -> None:
        old = self._seen.get(group)
        if old is not None and old.revision > revision:
            return  # the watch and a start-up read can deliver in either order
        self._seen[group] = _Seen(owner, revision, now, "held")

    def lease_gone(self, group: str, revision: int, how: str, now: float) -> None:
        """The key was deleted (``how`` ``released``) or removed by its age (``expired``)."""
        old = self._seen.get(group)
        if old is not None and old.revision > revision:
            return
        last = old.owner if old is not None and old.owner is not None else (
            old.last_owner if old is not None else None)
        self._seen[group] = _Seen(None, revision, now, how, last)
        self._retry_at.pop(group, None)

    # -- outcomes of the shell's actions ----------------------------------------------------

    def acquired(self, group: str, revision: int) -> None:
        h = self._held.get(group)
        if h is None or h.phase is not Phase.ACQUIRING:
            return
        h.phase, h.fence, h.revision, h.in_flight = Phase.HELD, revision, revision, False
        h.valid_until = h.sent_at + self.validity
        # The create wrote fence 0 (its revision was not known yet): the first renewal writes it.
        h.renew_due = h.sent_at
        self._saw_own(group, revision, h.sent_at)
        self._events.append(OwnEvent("acquired", group, h.how, revision))

    def acquire_refused(self, group: str, now: float) -> None:
        """Someone holds the lease: wait for the watch to show it free (or a renew period)."""
        self._forget(group, Phase.ACQUIRING)
        self._retry_at[group] = now + self.renew

    def acquire_failed(self, group: str, now: float) -> None:
        """The create failed in transport: it may or may not have landed; the watch will show a
        lease in this member's name if it did (cleared as stale, then taken again)."""
        self.acquire_refused(group, now)

    def renewed(self, group: str, revision: int) -> None:
        h = self._held.get(group)
        if h is None or not h.in_flight:
            return
        h.revision, h.in_flight = revision, False
        h.valid_until = max(h.valid_until, h.sent_at + self.validity)
        h.renew_due = h.sent_at + self.renew
        self._saw_own(group, revision, h.sent_at)

    def _saw_own(self, group: str, revision: int, at: float) -> None:
        """Our own write, unless the watch already showed something later (an answer can
        arrive after the watch entry of what followed it, e.g. the key's expiry)."""
        seen = self._seen.get(group)
        if seen is None or seen.revision < revision:
            self._seen[group] = _Seen(self.me, revision, at, "held")

    def renew_refused(self, group: str) -> None:
        """The server refused the renewal (another revision, the key gone): lost at once."""
        h = self._held.pop(group, None)
        if h is not None and h.phase in (Phase.HELD, Phase.RELEASING, Phase.DELETING):
            self._events.append(OwnEvent("lost", group, "refused", h.fence))

    def renew_failed(self, group: str, now: float) -> None:
        """The renewal failed in transport: tried again next period, trusted until the deadline
        (which :meth:`poll` enforces)."""
        h = self._held.get(group)
        if h is not None:
            h.in_flight = False
            h.renew_due = now + min(self.renew, self.validity / 4)

    def handshake_done(self, group: str) -> None:
        h = self._held.get(group)
        if h is not None and h.phase is Phase.RELEASING:
            h.phase = Phase.DELETING

    def deleted(self, group: str, now: float) -> None:
        """The release's delete is done (or failed: the key then expires by its age)."""
        h = self._forget(group, Phase.DELETING)
        if h is not None:
            self._events.append(OwnEvent("released", group, "handover", h.fence))
            self._retry_at[group] = now + self.renew

    def stale_cleared(self, group: str, now: float) -> None:
        self._retry_at.pop(group, None)
        seen = self._seen.get(group)
        if seen is not None and seen.owner == self.me:
            self._seen[group] = _Seen(None, seen.revision, now, "stale")

    def stale_failed(self, group: str, now: float) -> None:
        """The delete was refused (the key moved on) or failed: what we saw is out of date.
        Forget it; the next claim's create tells (and the watch shows the key as it is)."""
        self._seen.pop(group, None)
        self._retry_at[group] = now + self.renew

    def _forget(self, group: str, phase: Phase) -> _Held | None:
        h = self._held.get(group)
        if h is None or h.phase is not phase:
            return None
        return self._held.pop(group)

    # -- the step -----------------------------------------------------------------------------

    def poll(self, now: float) -> list[Action]:
        """The actions due at ``now``; call again after every event and at
        :meth:`next_deadline`."""
        actions: list[Action] = []
        self._expire(now)
        live = self.members.live(now)
        for group, h in self._held.items():
            if h.in_flight:
                continue
            if h.phase is Phase.HELD and (
                    self.leaving or (self.ready and self._owner(group, live) != self.me)):
                h.phase = Phase.RELEASING
                actions.append(Release(group))
            if h.phase in (Phase.HELD, Phase.RELEASING) and now >= h.renew_due:
                h.in_flight, h.sent_at = True, now
                actions.append(Renew(group, h.revision,
                                     lease_value(self.me, h.fence, self._epochs.get(group, 0))))
            elif h.phase is Phase.DELETING:
                h.in_flight = True
                actions.append(Delete(group, h.revision))
        if self.ready and not self.leaving:
            actions += self._claims(now, live)
        return actions

    def _owner(self, group: str, live: tuple[str, ...]) -> str | None:
        if live != self._owners_of:
            self._owners_of, self._owners = live, {}
        owner = self._owners.get(group, "")
        if owner == "":
            owner = self._owners[group] = owner_of(group, live)
        return owner

    def _expire(self, now: float) -> None:
        for group, h in list(self._held.items()):
            if h.phase is not Phase.ACQUIRING and now >= h.valid_until:
                del self._held[group]
                self._events.append(OwnEvent("lost", group, "expired", h.fence))

    def _claims(self, now: float, live: tuple[str, ...]) -> list[Action]:
        out: list[Action] = []
        for group in sorted(self._offered):
            if group in self._held or now < self._retry_at.get(group, now):
                continue
            if self._owner(group, live) != self.me:
                continue
            seen = self._seen.get(group)
            if seen is not None and seen.owner == self.me:
                # Ours by name but not held: a previous incarnation's, or a write that landed
                # after we gave up on it. Nobody publishes under it; delete it and take it anew.
                self._retry_at[group] = now + self.ttl
                out.append(ClearStale(group, seen.revision))
                continue
            if seen is not None and seen.owner is not None and now - seen.at <= self.ttl:
                continue  # held by another; its holder releases it or the server expires it
            # Decided now: the watch may show the create's own write before its answer.
            how = seen.how if seen is not None and seen.owner is None else "new"
            if seen is None or how == "released":
                taken = ""
            elif seen.owner is not None:
                taken = seen.owner  # its holder stopped renewing: the server removes it
            else:
                taken = (seen.last_owner or "?") if how == "expired" else ""
            self._held[group] = _Held(Phase.ACQUIRING, sent_at=now, in_flight=True, how=how,
                                      taken_from="" if taken == self.me else taken)
            out.append(Acquire(group, lease_value(self.me, 0, self._epochs.get(group, 0))))
        return out

    def next_deadline(self, now: float) -> float | None:
        """When :meth:`poll` next has something to do without any event (``None``: nothing
        scheduled)."""
        times = [h.valid_until for h in self._held.values() if h.phase is not Phase.ACQUIRING]
        times += [h.renew_due for h in self._held.values() if not h.in_flight]
        times += self._retry_at.values()
        times += [s.at + self.ttl for s in self._seen.values() if s.owner is not None]
        expiry = self.members.next_expiry()
        if expiry is not None:
            times.append(expiry)
        return min((t for t in times if t > now), default=None)
