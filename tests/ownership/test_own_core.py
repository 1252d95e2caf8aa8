"""The ownership core fed plain values: rendezvous assignment, the lease state machine, the
holder's deadline and the release handshake — no NATS, no clock of its own."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest

from xypipe._ownership._config import Lease, OwnershipConfig
from xypipe._ownership._core import (
    Acquire,
    Action,
    ClearStale,
    Delete,
    OwnershipCore,
    Phase,
    Release,
    Renew,
)
from xypipe._ownership._hrw import assign, owner_of
from xypipe._validate import Invalid

TTL, RENEW, MARGIN = 1.5, 0.3, 0.2
GROUPS = [f"g{i}" for i in range(50)]


def _members(n: int, cluster: int = 0) -> list[str]:
    return [f"host{cluster}/aggregator.{i}" for i in range(n)]


# --------------------------------------------------------------------------- rendezvous


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("groups", [3, 10, 20, 50])
def test_every_group_has_exactly_one_owner_and_every_member_agrees(n: int, groups: int) -> None:
    members = _members(n)
    names = GROUPS[:groups]
    a = assign(names, members)
    assert set(a) == set(names) and set(a.values()) <= set(members)
    # Any member computes the same answer, whatever order it lists the members in.
    assert assign(names, reversed(members)) == a
    assert all(owner_of(g, members[::-1]) == a[g] for g in names)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("groups", [3, 10, 20, 50])
def test_shares_are_fair_on_average_over_many_clusters(n: int, groups: int) -> None:
    """Each group's owner is an independent, uniform draw: over 300 clusters (other member
    names) every member's mean share is G/n, and the largest share stays near it."""
    shares: list[list[int]] = [[] for _ in range(n)]
    largest = []
    for cluster in range(300):
        members = _members(n, cluster)
        count = Counter(assign(GROUPS[:groups], members).values())
        for i, m in enumerate(members):
            shares[i].append(count[m])
        largest.append(max(count[m] for m in members))
    fair = groups / n
    for s in shares:
        assert abs(statistics.mean(s) - fair) <= 0.15 * fair + 0.1
    # The expected maximum of n binomial(G, 1/n) counts: within a few standard deviations.
    assert statistics.mean(largest) <= fair + 2 * (groups * (1 / n) * (1 - 1 / n)) ** 0.5 + 1


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_a_member_joining_takes_only_its_share_and_leaving_gives_back_only_its_own(
    n: int
) -> None:
    members = _members(n)
    before = assign(GROUPS, members)
    newcomer = "other/aggregator.9"
    after = assign(GROUPS, [*members, newcomer])
    moved = {g for g in GROUPS if after[g] != before[g]}
    assert moved and all(after[g] == newcomer for g in moved)
    # It leaves again (or dies): exactly its groups go back, each to the member it came from.
    assert assign(GROUPS, members) == before
    gone = members[0]
    rest = assign(GROUPS, members[1:])
    assert {g for g in GROUPS if rest[g] != before[g]} == {
        g for g in GROUPS if before[g] == gone}


# --------------------------------------------------------------------------- the state machine


def _core(me: str = "a", *, ready: bool = True) -> OwnershipCore:
    core = OwnershipCore(me, ttl=TTL, renew=RENEW, margin=MARGIN)
    core.ready = ready
    return core


def _of(actions: list[Action], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def _held(core: OwnershipCore, group: str, now: float, revision: int = 7) -> None:
    """Offer ``group`` to a lone member and let it acquire it at ``now``."""
    core.offer({group})
    [acq] = _of(core.poll(now), Acquire)
    assert acq.group == group
    core.acquired(group, revision)


def test_nothing_is_claimed_before_both_buckets_were_read() -> None:
    core = _core(ready=False)
    core.offer({"g"})
    assert core.poll(0.0) == []
    core.ready = True
    [acq] = core.poll(0.0)
    assert isinstance(acq, Acquire)
    assert json.loads(acq.value) == {"owner": "a", "fence": 0, "epoch": 0}


def test_a_group_held_by_another_is_acquired_only_once_it_is_free() -> None:
    core = _core()
    core.offer({"g"})
    core.lease_seen("g", "b", 3, 0.0)  # b holds it (b has gone, we alone remain)
    assert core.poll(0.1) == []
    core.lease_seen("g", "b", 4, 0.3)  # b renews: still held
    assert core.poll(0.5) == []
    core.lease_gone("g", 5, "expired", 1.0)
    [acq] = core.poll(1.0)
    assert isinstance(acq, Acquire) and core.phase("g") is Phase.ACQUIRING
    assert not core.may_publish("g", 1.0) and core.owned == frozenset()
    core.acquired("g", 6)
    assert core.owned == {"g"} and core.may_publish("g", 1.0)
    # Taken from b's expired lease: b's last checkpoints are not proven (a new epoch).
    assert core.lease("g") == Lease("g", "a", 6, 0, taken_from="b")
    [ev] = core.take_events()
    assert (ev.kind, ev.reason, ev.fence) == ("acquired", "expired", 6)


def test_who_a_group_is_taken_from_only_when_its_lease_expired_under_another() -> None:
    released = _core()
    released.offer({"g"})
    released.lease_seen("g", "b", 3, 0.0)
    released.lease_gone("g", 4, "released", 0.2)  # b handed it over: checkpoint stored
    [_acq] = released.poll(0.2)
    released.acquired("g", 5)
    assert released.lease("g") == Lease("g", "a", 5, 0, taken_from="")

    own = _core()
    own.offer({"g"})
    _held(own, "g", 0.0, revision=2)
    own.lease_seen("g", "a", 2, 0.0)
    # NATS away: our renewals fail, the lease is lost locally, then removed by its age.
    own.renew_failed("g", 10.0)
    own.poll(10.0)
    own.lease_gone("g", 9, "expired", 10.5)
    [_again] = _of(own.poll(10.5), Acquire)
    own.acquired("g", 10)
    assert own.lease("g") == Lease("g", "a", 10, 0, taken_from="")  # ours: we know our own


def test_a_refused_create_waits_for_the_watch_or_a_renew_period() -> None:
    core = _core()
    core.offer({"g"})
    core.poll(0.0)
    core.acquire_refused("g", 0.0)
    assert core.poll(0.1) == []
    assert core.next_deadline(0.1) == pytest.approx(RENEW)
    assert _of(core.poll(RENEW), Acquire)


def test_the_first_renewal_writes_the_fence_and_renewals_move_the_deadline() -> None:
    core = _core()
    core.set_epoch("g", 42)
    _held(core, "g", 0.0, revision=9)
    [renew] = core.poll(0.0)
    assert isinstance(renew, Renew) and renew.last == 9
    assert json.loads(renew.value) == {"owner": "a", "fence": 9, "epoch": 42}
    core.renewed("g", 10)
    assert core.next_deadline(0.0) == pytest.approx(RENEW)
    [renew] = core.poll(RENEW)
    assert isinstance(renew, Renew) and renew.last == 10
    core.renewed("g", 11)
    # Trusted until the renewal's send time + ttl x (1 - margin), never the answer's time.
    assert core.may_publish("g", RENEW + TTL * (1 - MARGIN) - 1e-6)
    assert core.lease("g") == Lease("g", "a", 9, 42)  # the fence stays the acquisition's


def test_a_lease_whose_renewals_do_not_come_back_is_lost_by_the_local_deadline_first() -> None:
    core = _core()
    _held(core, "g", 0.0)
    core.poll(0.0)  # the first renewal goes out... and never comes back
    deadline = TTL * (1 - MARGIN)
    assert deadline < TTL  # before the server could expire the key and let anyone in
    assert core.may_publish("g", deadline - 1e-6)
    assert not core.may_publish("g", deadline)  # at once, even before the next poll
    assert core.next_deadline(0.5) == pytest.approx(deadline)
    core.poll(deadline)
    assert core.owned == frozenset() and core.phase("g") is None
    [_, lost] = core.take_events()
    assert (lost.kind, lost.reason) == ("lost", "expired")
    core.renewed("g", 12)  # the answer arrives too late: ignored
    assert core.owned == frozenset()


def test_a_refused_renewal_is_lost_at_once() -> None:
    core = _core()
    _held(core, "g", 0.0)
    core.poll(0.0)
    core.renew_refused("g")
    assert not core.may_publish("g", 0.01) and core.owned == frozenset()
    assert [e.kind for e in core.take_events()] == ["acquired", "lost"]


def test_a_renewal_failed_in_transport_is_retried_until_the_deadline() -> None:
    core = _core()
    _held(core, "g", 0.0)
    core.poll(0.0)
    core.renew_failed("g", 0.05)
    assert core.may_publish("g", 0.5)
    retry = _of(core.poll(0.05 + RENEW), Renew)
    assert retry, "retried within a renew period"
    core.renewed("g", 20)
    assert core.may_publish("g", 0.05 + RENEW + TTL * (1 - MARGIN) - 1e-6)


def test_release_stops_publishing_at_once_and_deletes_only_after_the_handshake() -> None:
    core = _core("a")
    group = next(g for g in GROUPS if owner_of(g, ["a", "b"]) == "b")
    _held(core, group, 0.0, revision=5)
    core.poll(0.0)
    core.renewed(group, 6)
    core.member_heard("b", 0.1)  # b joins: rendezvous gives it the group
    actions = core.poll(0.1)
    assert _of(actions, Release) == [Release(group)]
    assert not core.may_publish(group, 0.1) and group not in core.owned
    assert core.lease(group) is None
    # The handshake runs: renewals go on (the lease must not expire under the new owner's
    # nose before the checkpoint is stored), nothing is deleted yet.
    assert _of(core.poll(RENEW), Renew) and not _of(core.poll(RENEW), Delete)
    core.renewed(group, 8)
    core.handshake_done(group)
    [delete] = core.poll(0.5)
    assert delete == Delete(group, 8)
    core.deleted(group, 0.5)
    assert core.phase(group) is None
    assert [e.kind for e in core.take_events()] == ["acquired", "released"]
    core.lease_gone(group, 9, "released", 0.5)
    assert core.poll(0.6) == []  # b's now: never taken back while b lives


def test_the_delete_waits_for_a_renewal_in_flight() -> None:
    core = _core("a")
    group = next(g for g in GROUPS if owner_of(g, ["a", "b"]) == "b")
    _held(core, group, 0.0, revision=5)
    core.member_heard("b", 0.0)
    actions = core.poll(0.0)
    assert {type(a) for a in actions} == {Release, Renew}
    core.handshake_done(group)
    assert core.poll(0.05) == []  # the renewal's answer decides the revision to delete
    core.renewed(group, 6)
    assert core.poll(0.06) == [Delete(group, 6)]


def test_a_member_gone_gives_its_groups_to_the_survivors_only_once_their_leases_are_free(
) -> None:
    core = _core("a")
    group = next(g for g in GROUPS if owner_of(g, ["a", "b"]) == "b")
    core.offer({group})
    core.member_heard("b", 0.0)
    core.lease_seen(group, "b", 3, 0.0)
    assert core.poll(0.1) == []
    core.member_gone("b")  # its announcement expired
    assert core.poll(0.2) == []  # its lease has not: it may still publish
    core.lease_gone(group, 4, "expired", 1.5)
    assert _of(core.poll(1.5), Acquire)


def test_a_silent_member_is_dropped_after_the_ttl() -> None:
    core = _core("a")
    core.member_heard("b", 0.0)
    assert core.members.live(TTL) == ("a", "b")
    assert core.members.live(TTL + 0.01) == ("a",)


def test_a_lease_in_its_own_name_it_does_not_hold_is_cleared_then_taken() -> None:
    core = _core("a")
    core.offer({"g"})
    core.lease_seen("g", "a", 3, 0.0)  # a previous incarnation's
    assert core.poll(0.0) == [ClearStale("g", 3)]
    assert core.poll(0.1) == []
    core.stale_cleared("g", 0.1)
    [acq] = core.poll(0.1)
    assert isinstance(acq, Acquire)
    core.acquired("g", 5)
    assert core.take_events()[-1].reason == "stale"


def test_leaving_hands_every_group_over() -> None:
    core = _core("a")
    _held(core, "g", 0.0)
    core.poll(0.0)
    core.renewed("g", 8)
    core.leaving = True
    assert core.poll(0.1) == [Release("g")]
    core.handshake_done("g")
    assert core.poll(0.1) == [Delete("g", 8)]
    core.deleted("g", 0.1)
    assert not core.holding
    core.offer({"h"})
    assert core.poll(0.2) == []


def test_config_refuses_a_renew_period_that_a_single_loss_would_expire() -> None:
    with pytest.raises(Invalid, match="renew_ms"):
        OwnershipConfig(ttl_ms=1000, renew_ms=500)
    with pytest.raises(Invalid, match="members_bucket"):
        OwnershipConfig(members_bucket="xy_agg_leases")
    assert OwnershipConfig().ttl == 1.5 and OwnershipConfig().renew == 0.3


def test_a_late_answer_does_not_roll_back_what_the_watch_showed_after_it() -> None:
    core = _core("a")
    core.offer({"g"})
    assert _of(core.poll(0.0), Acquire)
    # Paused: the key was created (rev 120) and expired (tombstone 131) meanwhile, and the
    # watch's tombstone is handled before the create's answer.
    core.lease_gone("g", 131, "expired", 2.0)
    core.acquired("g", 120)
    actions = core.poll(2.0)  # the lease's deadline (sent at 0) has long passed
    assert [e.kind for e in core.take_events()] == ["acquired", "lost"]
    assert _of(actions, Acquire) and not _of(actions, ClearStale)


def test_a_refused_stale_delete_forgets_the_view_and_tries_a_create() -> None:
    core = _core("a")
    core.offer({"g"})
    core.lease_seen("g", "a", 3, 0.0)
    assert core.poll(0.0) == [ClearStale("g", 3)]
    core.stale_failed("g", 0.0)
    assert core.poll(0.1) == []
    assert _of(core.poll(RENEW), Acquire)
