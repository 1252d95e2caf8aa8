"""Two aggregators split the groups on one bus (real nats-server, real ``xypipe run`` processes,
the publisher, a subscriber judging with the client SDK's sequence rules and checksums).

* every group is published by exactly one of them (the lease owners), and a client's books
  converge on what the publisher sent, with no gap, repeat or checksum mismatch;
* ``kill -9`` one: its groups continue from the other with no hole or repeat a client sees:
  a clean epoch change and a snapshot resync (an expired lease proves nothing about the dead
  owner's last checkpoints); the takeover time is logged;
* restart it: it takes its share back (the same member name gets the same groups);
* stop one gracefully: its groups are handed over (released, not left to expire);
* at no time do two publish the same group: per group, the fences a subscriber on ``xy.md.>``
  sees never go down (an old owner's delta after a new owner's would).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
from _agg_nats import converged, mismatches, publisher_config, truth_of

from xypipe import Runner
from xypipe._embedded import EmbeddedNats
from xypipe._errors import NatsNotFound
from xypipe._log import get_logger
from xypipe._md.client import MarketView
from xypipe._nats import NatsClient, connect
from xypipe._process import Child
from xypipe.contracts import Delta, Snapshot

pytestmark = pytest.mark.nats

LEASES = "xy_agg_leases"
MEMBERS = "xy_agg_members"
GROUPS = {"equities", "futures", "fx", "crypto", "rates"}  # the publisher's contracts
log = get_logger("test.agg_split")


def aggregator_toml(url: str, member: str) -> str:
    return f"""
[nats]
url = "{url}"

[http]
enabled = false

[pipelines.aggregator]

[[pipelines.aggregator.stages]]
use = "ingest"
ownership = {{ enabled = true, member = "{member}", ttl_ms = 1500, renew_ms = 300 }}

[[pipelines.aggregator.stages]]
use = "dedupe"
hold_ms = 1000
max_held = 256

[[pipelines.aggregator.stages]]
use = "shard"
shards = 2

[[pipelines.aggregator.stages]]
use = "conflate"

[[pipelines.aggregator.stages]]
use = "snapshot"
interval_ms = 300

[[pipelines.aggregator.stages]]
use = "publish"
"""


class Aggregator:
    """``python -m xypipe run`` of one aggregator (its pipeline in the process itself)."""

    def __init__(self, tmp: Path, url: str, member: str) -> None:
        self.member = member
        self.config = tmp / f"{member}.toml"
        self.config.write_text(aggregator_toml(url, member))
        self.log_path = tmp / f"{member}.log"
        self.proc: Child | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = Child.spawn([sys.executable, "-m", "xypipe", "run", str(self.config)],
                                    stdout=out.fileno(), stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(15):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    def problems(self) -> list[str]:
        """Tracebacks and errors in its output."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines()
                if '"level":"error"' in line or line.startswith("Traceback")]


@attrs.define
class Seen:
    """What the subscriber saw of one group."""

    fences: list[tuple[float, int]] = attrs.field(factory=list)  # (when, fence) at each change
    highest: int = 0
    interleaved: list[str] = attrs.field(factory=list)


class Judge:
    """Subscribes to ``xy.md.>``: rebuilds every group with the client's rules (MarketView) and
    records the fence of every delta and snapshot per group."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.view = MarketView()
        self.groups: dict[str, Seen] = {}
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with self.nc.subscribe("xy.md.>", max_batch=1024) as sub:
            task_status.started()
            async for batch in sub:
                now = time.monotonic()
                for m in batch:
                    if m.subject.startswith("xy.md.snapshot."):
                        snap = Snapshot.FromString(m.data)
                        self._fence(snap.group, snap.fence, now, f"snapshot v{snap.version}")
                        self.view.apply_snapshot(snap)
                    elif m.subject.startswith("xy.md.tick."):
                        d = Delta.FromString(m.data)
                        self._fence(d.group, d.fence, now, f"delta #{d.seq}/{d.shard}")
                        self.view.apply_delta(d)
                self._changed.set()
                self._changed = trio.Event()

    def _fence(self, group: str, fence: int, now: float, what: str) -> None:
        g = self.groups.setdefault(group, Seen())
        if fence < g.highest:
            g.interleaved.append(f"{group}: {what} with fence {fence} after fence {g.highest}")
        elif fence > g.highest:
            g.highest = fence
            g.fences.append((now, fence))

    async def until(self, condition: Callable[[], bool], what: str, limit: float = 30,
                    detail: Callable[[], object] = lambda: "") -> None:
        with trio.move_on_after(limit):
            while not condition():
                await self._changed.wait()
            return
        raise AssertionError(f"not within {limit} s: {what}; stats {self.view.stats}; "
                             f"{detail()}")

    def first_fence_after(self, group: str, t: float) -> tuple[float, int] | None:
        return next(((when, f) for when, f in self.groups[group].fences if when > t), None)


async def owners(nc: NatsClient) -> dict[str, tuple[str, int]]:
    """group -> (owner, fence) from the leases bucket."""
    try:
        kv = await nc.jetstream().kv(LEASES, create=False)
    except NatsNotFound:
        return {}  # no aggregator has opened it yet
    out = {}
    for key in await kv.keys():
        entry = await kv.get(key)
        if entry is not None and entry.value:
            doc = json.loads(entry.value)
            out[key] = (doc["owner"], int(doc["fence"]))
    return out


async def until_members(nc: NatsClient, members: set[str], limit: float = 60) -> None:
    """Until exactly ``members`` are announced (the aggregators are up: a tick published from
    now on is theirs to replay, whichever group it turns out to be in)."""
    with trio.move_on_after(limit):
        while True:
            try:
                kv = await nc.jetstream().kv(MEMBERS, create=False)
                if set(await kv.keys()) == members:
                    return
            except NatsNotFound:
                pass  # no aggregator has opened it yet
            await trio.sleep(0.05)
    raise AssertionError(f"members never were {members}")


async def until_owners(nc: NatsClient, condition: Callable[[dict[str, tuple[str, int]]], bool],
                       what: str, limit: float = 30) -> dict[str, tuple[str, int]]:
    """Poll the leases bucket (a KV read has no event to await here) with a hang guard."""
    with trio.move_on_after(limit):
        while True:
            found = await owners(nc)
            if GROUPS <= found.keys() and condition(found):
                return found
            await trio.sleep(0.05)
    raise AssertionError(f"leases never showed {what}: {await owners(nc)}")


async def publish(nursery: trio.Nursery, url: str, venue: str, seed: int,
                  ticks: int = 6000) -> Runner:
    """A publisher run in the background (its own venue: fresh symbols, totals from 0)."""
    runner = Runner(publisher_config(url, symbols=40, rate=1500, max_ticks=ticks, seed=seed,
                                     venues=[venue]))
    await nursery.start(runner.run)
    return runner


def check_clean(judge: Judge) -> None:
    stats = judge.view.stats
    assert (stats.gaps, stats.repeats, stats.checksum_mismatches) == (0, 0, 0), stats.problems
    # A new epoch is allowed only as a clean resync (held until a snapshot): never a rejection
    # of anything but a future epoch.
    assert set(stats.rejected) <= {"future_epoch"}, stats.problems
    interleaved = [x for g in judge.groups.values() for x in g.interleaved]
    assert interleaved == [], interleaved


async def test_two_aggregators_split_the_groups_fail_over_and_take_their_share_back(
        nats_server: EmbeddedNats, tmp_path: Path) -> None:
    url = nats_server.url
    a, b = Aggregator(tmp_path, url, "agg-a"), Aggregator(tmp_path, url, "agg-b")
    try:
        async with connect(url, name="test-judge") as nc, trio.open_nursery() as nursery:
            judge = Judge(nc)
            await nursery.start(judge.run)
            a.start()
            b.start()
            await until_members(nc, {"agg-a", "agg-b"})
            # The contracts make the groups known; both members claim their share.
            first = await publish(nursery, url, "XONE", seed=1)
            split = await until_owners(nc, lambda o: {m for m, _ in o.values()} == {
                "agg-a", "agg-b"}, "both members owning groups")
            truth = truth_of(first)
            await judge.until(lambda: truth.ticks == 6000 and converged(judge.view, truth),
                              "the first run converges",
                              detail=lambda: mismatches(judge.view, truth)[:10])
            assert mismatches(judge.view, truth) == []
            check_clean(judge)
            # Each group's deltas carry exactly its lease's fence: one publisher per group.
            for group in GROUPS:
                assert judge.groups[group].highest == split[group][1], (group, split)
            b_groups = {g for g, (m, _) in split.items() if m == "agg-b"}

            # kill -9 b in the middle of a run: a takes b's groups over.
            second = await publish(nursery, url, "XTWO", seed=2)
            await judge.until(lambda: truth_of(second).ticks > 1500, "the second run going")
            killed_at = time.monotonic()
            await b.kill()
            await until_owners(nc, lambda o: all(m == "agg-a" for m, _ in o.values()),
                               "a owning every group")
            await judge.until(lambda: all(judge.first_fence_after(g, killed_at) is not None
                                          for g in b_groups), "a publishing b's groups")
            takeover = {g: round(judge.first_fence_after(g, killed_at)[0] - killed_at, 3)
                        for g in sorted(b_groups)}
            log.info("takeover after kill -9", seconds=takeover)
            print(f"takeover after kill -9 (s): {takeover}")
            truth = truth_of(second)
            await judge.until(lambda: truth.ticks == 6000 and converged(judge.view, truth),
                              "the second run converges after the takeover")
            assert mismatches(judge.view, truth) == []
            check_clean(judge)
            # b's leases expired: a cannot prove b's last deltas were all checkpointed (a NATS
            # node electing the checkpoint stream's leader loses them), so b's groups, and only
            # they, start new epochs; readers resync them by snapshot (clean, checked above; a
            # reader that got the new snapshot before the new epoch's first delta sees no
            # future epoch at all).
            changed = {p.split("/", 1)[0] for p in judge.view.stats.problems
                       if "future_epoch" in p}
            assert changed <= b_groups, judge.view.stats.problems
            judge.view.stats.problems.clear()
            judge.view.stats.epoch_changes = 0

            # b comes back under the same name: it takes exactly its share back.
            third = await publish(nursery, url, "XTRE", seed=3)
            b.start()
            await until_members(nc, {"agg-a", "agg-b"})
            back = await until_owners(
                nc, lambda o: {g for g, (m, _) in o.items() if m == "agg-b"} == b_groups,
                "b owning its share again")
            for group in b_groups:
                await judge.until(lambda g=group: judge.groups[g].highest == back[g][1],
                                  f"b publishing {group}")
            truth = truth_of(third)
            await judge.until(lambda: truth.ticks == 6000 and converged(judge.view, truth),
                              "the third run converges after the hand-back")
            assert mismatches(judge.view, truth) == []
            check_clean(judge)
            # Handed over with the last checkpoint stored: b continued a's epochs and sequences.
            assert judge.view.stats.epoch_changes == 0, judge.view.stats.problems

            # a stops gracefully (Ctrl-C): its groups are handed over, not left to expire.
            fourth = await publish(nursery, url, "XFOR", seed=4)
            await judge.until(lambda: truth_of(fourth).ticks > 1500, "the fourth run going")
            a_groups = GROUPS - b_groups
            stopped_at = time.monotonic()
            await a.stop()
            await judge.until(lambda: all(judge.first_fence_after(g, stopped_at) is not None
                                          for g in a_groups), "b publishing a's groups")
            handover = {g: round(judge.first_fence_after(g, stopped_at)[0] - stopped_at, 3)
                        for g in sorted(a_groups)}
            log.info("handover after a graceful stop", seconds=handover)
            print(f"handover after a graceful stop (s): {handover}")
            truth = truth_of(fourth)
            await judge.until(lambda: truth.ticks == 6000 and converged(judge.view, truth),
                              "the fourth run converges after the graceful stop")
            assert mismatches(judge.view, truth) == []
            check_clean(judge)
            assert judge.view.stats.epoch_changes == 0, judge.view.stats.problems
            assert "group handed over" in a.log_path.read_text()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await a.stop()
            await b.stop()
    assert a.problems() == [] and b.problems() == []
