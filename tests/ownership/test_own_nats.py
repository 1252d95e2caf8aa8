"""Ownership instances against a real nats-server: they split the groups, survive a death, and
take a restarted member's share back through the release handshake — sampled every few ms so
that two publishers of one group at one instant would be seen."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio

from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._errors import OwnershipError
from xypipe._metrics import Metrics
from xypipe._nats import connect
from xypipe._nats_keys import BusKeys, seed_file_of
from xypipe._nats_roles import BusLayout, inbox_prefix
from xypipe._ownership import Ownership, OwnershipConfig, open_ownership
from xypipe._ownership._hrw import assign

pytestmark = pytest.mark.nats

CFG = OwnershipConfig(enabled=True)
GROUPS = [f"g{i}" for i in range(12)]


@attrs.define
class Member:
    name: str
    own: Ownership
    scope: trio.CancelScope
    metrics: Metrics
    released: list[tuple[str, bool, str | None]] = attrs.field(factory=list)


@attrs.define
class Watchdog:
    """Samples every member's ``may_publish`` for every group every 2 ms."""

    members: dict[str, Member] = attrs.field(factory=dict)
    samples: int = 0
    doubles: list[tuple[float, str, list[str]]] = attrs.field(factory=list)
    #: Per group, the fences its publishers held, in the order they were first seen.
    fences: dict[str, list[tuple[str, int]]] = attrs.field(factory=dict)

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(0.002)

    def sample(self) -> None:
        self.samples += 1
        for g in GROUPS:
            publishers = [m.name for m in self.members.values()
                          if not m.scope.cancel_called and m.own.may_publish(g)]
            if len(publishers) > 1:
                self.doubles.append((trio.current_time(), g, publishers))
            for name in publishers:
                lease = self.members[name].own.lease(g)
                seen = self.fences.setdefault(g, [])
                if lease is not None and (not seen or seen[-1] != (name, lease.fence)):
                    seen.append((name, lease.fence))


async def _member(url: str, name: str, dog: Watchdog, lease_check: Callable | None = None,
                  *, task_status: trio.TaskStatus[Member] = trio.TASK_STATUS_IGNORED) -> None:
    metrics = Metrics()
    with trio.CancelScope() as scope:
        async with connect(url, name=name) as nc, \
                open_ownership(nc, CFG, member=name, metrics=metrics) as own:
            m = Member(name, own, scope, metrics)

            async def store_last_checkpoint(group: str) -> None:
                # Called after the group stopped publishing, before its lease is deleted.
                holder = await lease_check(group) if lease_check is not None else None
                m.released.append((group, own.may_publish(group), holder))

            own.on_release = store_last_checkpoint
            own.offer(GROUPS)
            dog.members[name] = m
            task_status.started(m)
            await trio.sleep_forever()


async def _split(dog: Watchdog, live: list[str]) -> float:
    """Wait until the live members own exactly what rendezvous hashing gives each."""
    want = assign(GROUPS, live)
    t0 = trio.current_time()
    with trio.fail_after(15):
        while True:
            owned = {n: dog.members[n].own.owned for n in live}
            if all(owned[n] == {g for g, o in want.items() if o == n} for n in live) and all(
                    dog.members[n].own.may_publish(g) for g, n in want.items()):
                return trio.current_time() - t0
            await trio.sleep(0.005)


async def test_three_members_split_the_groups_and_survive_a_death(
    nats_server: EmbeddedNats
) -> None:
    dog = Watchdog()
    names = ["h/agg.0", "h/agg.1", "h/agg.2"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        members = [await nursery.start(_member, nats_server.url, n, dog) for n in names]
        await _split(dog, names)
        shares = {m.name: len(m.own.owned) for m in members}
        assert sum(shares.values()) == len(GROUPS) and all(shares.values())
        fences = {g: m.own.lease(g).fence for m in members for g in m.own.owned}  # type: ignore[union-attr]
        assert all(f > 0 for f in fences.values())
        # A death: cancelled without a release; its leases expire on the server.
        dead = members[1]
        dead.scope.cancel()
        del dog.members[dead.name]
        taken = await _split(dog, [names[0], names[2]])
        print(f"takeover after a death: {taken:.3f} s (ttl {CFG.ttl} s, renew {CFG.renew} s)")
        for g in [g for g, o in assign(GROUPS, names).items() if o == dead.name]:
            owner = next(m for m in members if m is not dead and g in m.own.owned)
            assert owner.own.lease(g).fence > fences[g]  # type: ignore[union-attr]
        assert sum(m.metrics.sample("ownership_acquired_total", {"reason": "expired"}) or 0
                   for m in members) == shares[dead.name]
        nursery.cancel_scope.cancel()
    assert dog.doubles == [] and dog.samples > 100


async def test_a_restarted_member_takes_its_share_back_through_the_release_handshake(
    nats_server: EmbeddedNats
) -> None:
    dog = Watchdog()
    names = ["h/agg.0", "h/agg.1"]
    async with connect(nats_server.url) as probe:
        leases = await probe.jetstream().kv(CFG.bucket, ttl_s=CFG.ttl,
                                            marker_ttl_s=max(1.0, CFG.ttl))

        async def holder(group: str) -> str | None:
            entry = await leases.get(group)
            return entry.value.decode() if entry is not None else None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dog.run)
            a = await nursery.start(_member, nats_server.url, names[0], dog)
            b = await nursery.start(_member, nats_server.url, names[1], dog, holder)
            await _split(dog, names)
            share_a = a.own.owned
            a.scope.cancel()  # dies
            del dog.members[a.name]
            await _split(dog, [names[1]])
            assert b.own.owned == set(GROUPS)
            # Restarted under the same name: b hands a's share back, never two publishers.
            b.released.clear()
            b_fences = {g: b.own.lease(g).fence for g in share_a}  # type: ignore[union-attr]
            dog.members.pop(names[0], None)
            a2 = await nursery.start(_member, nats_server.url, names[0], dog)
            await _split(dog, names)
            assert a2.own.owned == share_a
            # The handshake: b stopped publishing first, its lease was still there (nobody
            # could take the group before the checkpoint was stored), then it was deleted.
            released = {g: (pub, held) for g, pub, held in b.released}
            assert set(released) >= share_a
            for g in share_a:
                pub, held = released[g]
                assert pub is False and held is not None and '"owner":"h/agg.1"' in held
                assert a2.own.lease(g).fence > b_fences[g]  # type: ignore[union-attr]
            assert b.metrics.sample("ownership_released_total") == len(share_a)
            assert sum(a2.metrics.sample("ownership_acquired_total", {"reason": r}) or 0
                       for r in ("released", "stale")) == len(share_a)
            nursery.cancel_scope.cancel()
    assert dog.doubles == [] and dog.samples > 100
    for g, seen in dog.fences.items():
        fences = [f for _, f in seen]
        assert fences == sorted(set(fences)), f"{g}: fences {seen} must grow"


async def test_a_graceful_exit_hands_over_at_once(nats_server: EmbeddedNats) -> None:
    dog = Watchdog()
    names = ["h/agg.0", "h/agg.1"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        done = trio.Event()

        async def leaving_member(task_status: trio.TaskStatus[Ownership]) -> None:
            async with connect(nats_server.url) as nc, \
                    open_ownership(nc, CFG, member=names[0], metrics=Metrics()) as own:
                own.offer(GROUPS)
                dog.members[names[0]] = Member(names[0], own, trio.CancelScope(), Metrics())
                task_status.started(own)
                await done.wait()
            del dog.members[names[0]]  # the block ended normally: handed over

        leaving = await nursery.start(leaving_member)
        b = await nursery.start(_member, nats_server.url, names[1], dog)
        await _split(dog, names)
        share = leaving.owned

        def released() -> float:
            return b.metrics.sample("ownership_acquired_total", {"reason": "released"}) or 0

        before = released()
        done.set()
        await _split(dog, [names[1]])
        # Released (deleted), not expired: taken as soon as the delete was seen.
        assert released() - before == len(share)
        assert b.metrics.sample("ownership_acquired_total", {"reason": "expired"}) == 0
        nursery.cancel_scope.cancel()
    assert dog.doubles == []


async def test_disabled_ownership_owns_every_offered_group_unfenced() -> None:
    async with open_ownership(None, OwnershipConfig(), member="solo") as own:
        assert own.owned == frozenset() and own.may_publish("anything")
        own.offer(["a", "b"])
        assert own.owned == {"a", "b"}
        own.set_epoch("a", 7)
        lease = own.lease("a")
        assert lease is not None and (lease.fence, lease.epoch, lease.owner) == (0, 7, "solo")
        with trio.fail_after(1):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(own.wait_change, frozenset({"a", "b"}))
                await trio.testing.wait_all_tasks_blocked()
                own.offer(["c"])
    with pytest.raises(OwnershipError, match="needs NATS"):
        async with open_ownership(None, CFG):
            pass


async def test_the_aggregator_role_may_use_the_ownership_buckets_and_the_gateway_may_not(
    tmp_path: Path
) -> None:
    keys = BusKeys.load_or_create(tmp_path / "nats")
    conf = keys.write_server_config(BusLayout())
    async with embedded_nats(port=0, data_dir=tmp_path / "data", config_file=conf) as server:
        seed = str(seed_file_of(tmp_path / "nats", "aggregator"))
        async with connect(server.url, nkeys_seed=seed,
                           inbox_prefix=inbox_prefix("aggregator")) as nc:
            async with open_ownership(nc, CFG, member="h/agg.0", metrics=Metrics()) as own:
                own.offer(["g"])
                with trio.fail_after(10):
                    await own.wait_change(frozenset())
                assert own.may_publish("g")
        seed = str(seed_file_of(tmp_path / "nats", "gateway"))
        async with connect(server.url, nkeys_seed=seed,
                           inbox_prefix=inbox_prefix("gateway")) as nc:
            with pytest.raises(OwnershipError, match="cannot be opened"):
                async with open_ownership(nc, CFG, member="h/gw.0"):
                    pass


async def test_a_release_hook_that_hangs_is_cut_at_its_timeout_and_the_lease_deleted_anyway(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = attrs.evolve(CFG, release_timeout_ms=200)
    hung: list[str] = []

    async def hang(group: str) -> None:
        hung.append(group)
        await trio.sleep_forever()

    async with connect(nats_server.url) as nc1, connect(nats_server.url) as nc2:
        async with open_ownership(nc1, cfg, member="h/agg.0", metrics=Metrics()) as a:
            a.on_release = hang
            a.offer(GROUPS)
            with trio.fail_after(10):
                await a.wait_change(frozenset())
                while a.owned != set(GROUPS):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            metrics = Metrics()
            async with open_ownership(nc2, cfg, member="h/agg.1", metrics=metrics) as b:
                b.offer(GROUPS)
                want = {g for g, o in assign(GROUPS, ["h/agg.0", "h/agg.1"]).items()
                        if o == "h/agg.1"}
                with trio.fail_after(10):
                    while b.owned != want:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                assert set(hung) == want
                # Deleted after the hook's timeout, not expired after the ttl.
                assert metrics.sample("ownership_acquired_total",
                                      {"reason": "released"}) == len(want)
                codes = [getattr(r, "xy_fields", {}).get("code") for r in caplog.records]
                assert codes.count("XY-OWN-003") == len(want)


async def test_an_error_in_the_block_comes_out_as_itself_and_leaves_the_leases_to_expire(
    nats_server: EmbeddedNats
) -> None:
    async with connect(nats_server.url) as nc:
        with pytest.raises(KeyError):
            async with open_ownership(nc, CFG, member="h/agg.0", metrics=Metrics()) as own:
                own.offer(["g"])
                with trio.fail_after(10):
                    await own.wait_change(frozenset())
                raise KeyError("g")
        leases = await nc.jetstream().kv(CFG.bucket, ttl_s=CFG.ttl,
                                         marker_ttl_s=max(1.0, CFG.ttl))
        entry = await leases.get("g")
        assert entry is not None and b'"owner":"h/agg.0"' in entry.value  # not handed over


async def test_after_the_server_is_killed_and_restarted_the_groups_are_split_again(
    nats_server: EmbeddedNats
) -> None:
    """A NATS outage longer than a lease's validity: every holder stops publishing by its own
    deadline, and after the restart the members take the groups again with new fences."""
    dog = Watchdog()
    names = ["h/agg.0", "h/agg.1"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dog.run)
        members = [await nursery.start(_member, nats_server.url, n, dog) for n in names]
        await _split(dog, names)
        before = {g: m.own.lease(g).fence for m in members for g in m.own.owned}  # type: ignore[union-attr]
        await nats_server.kill(signal.SIGKILL)
        with trio.fail_after(10):
            while any(m.own.may_publish(g) for m in members for g in GROUPS):  # noqa: ASYNC110
                await trio.sleep(0.01)
        await nats_server.start()
        await _split(dog, names)
        after = {g: m.own.lease(g).fence for m in members for g in m.own.owned}  # type: ignore[union-attr]
        assert all(after[g] > before[g] for g in GROUPS)
        lost = sum(m.metrics.sample("ownership_lost_total", {"reason": "expired"}) or 0
                   for m in members)
        assert lost == len(GROUPS)
        nursery.cancel_scope.cancel()
    assert dog.doubles == []
