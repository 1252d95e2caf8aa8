"""How long a group goes without a publisher when its aggregator dies or hands it back.

    python bench/takeover.py                  # 3 members, 30 groups, 9 trials
    python bench/takeover.py --members 2 --groups 50 --trials 10

Ownership instances (``xypipe._ownership``, default ttl 1.5 s, renew 0.3 s), each on its own
NATS connection to an embedded nats-server, split the groups. Each trial kills one (its scope
cancelled: no release, like a crash) and measures, for every group it owned, the time from the
death until a survivor may publish it (**takeover**); then restarts it under the same name and
measures, for every group that goes back to it, the time between the survivor's last
``may_publish`` and the restarted member's first (**handover gap**: the release handshake and
the delete, no TTL wait). ``may_publish`` of every member and group is sampled every 1 ms, and
two publishers of one group at one sample are counted (expected: 0).
Results: bench/results/takeover.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import env_note, save

from xypipe._embedded import embedded_nats
from xypipe._metrics import Metrics
from xypipe._nats import connect
from xypipe._ownership import Ownership, OwnershipConfig, open_ownership

CFG = OwnershipConfig(enabled=True)


class Cluster:
    def __init__(self, url: str, groups: list[str]) -> None:
        self.url = url
        self.groups = groups
        self.members: dict[str, tuple[Ownership, trio.CancelScope]] = {}
        self.doubles = 0
        #: Per group, every change of its publishers: (when, who may publish).
        self.timeline: dict[str, list[tuple[float, tuple[str, ...]]]] = {
            g: [(0.0, ())] for g in groups}

    async def member(self, name: str, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with connect(self.url, name=name) as nc, \
                    open_ownership(nc, CFG, member=name, metrics=Metrics()) as own:
                own.offer(self.groups)
                self.members[name] = (own, scope)
                task_status.started()
                await trio.sleep_forever()

    async def sample(self) -> None:
        while True:
            now = trio.current_time()
            for g in self.groups:
                pubs = tuple(n for n, (own, scope) in self.members.items()
                             if not scope.cancel_called and own.may_publish(g))
                if len(pubs) > 1:
                    self.doubles += 1
                if pubs != self.timeline[g][-1][1]:
                    self.timeline[g].append((now, pubs))
            await trio.sleep(0.001)

    def first(self, group: str, since: float, who: str, *, other: bool = False) -> float:
        """When ``who`` (or, with ``other``, anyone else) first published ``group`` since."""
        for t, pubs in self.timeline[group]:
            if t >= since and pubs and ((who not in pubs) if other else (pubs == (who,))):
                return t
        raise LookupError(group)

    def gap_before(self, group: str, t: float) -> float:
        """How long ``group`` had no publisher just before ``t`` (0: not a sample)."""
        line = self.timeline[group]
        i = next(k for k, (tt, _) in enumerate(line) if tt == t)
        prev_t, prev = line[i - 1]
        return t - prev_t if not prev else 0.0

    async def settled(self) -> None:
        with trio.fail_after(30):
            while True:
                live = [n for n, (_, s) in self.members.items() if not s.cancel_called]
                owned = [g for n in live for g in self.members[n][0].owned]
                if sorted(owned) == sorted(self.groups) and all(
                        any(self.members[n][0].may_publish(g) for n in live)
                        for g in self.groups):
                    return
                await trio.sleep(0.005)


def _ms(xs: list[float]) -> str:
    if not xs:
        return "—"
    s = sorted(xs)
    p95 = s[max(0, math.ceil(0.95 * len(s)) - 1)]  # nearest rank
    return f"{statistics.median(s) * 1000:.0f} / {p95 * 1000:.0f} / {s[-1] * 1000:.0f}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    groups = [f"g{i}" for i in range(args.groups)]
    names = [f"bench/agg.{i}" for i in range(args.members)]
    takeovers: list[float] = []
    gaps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="xypipe-takeover-") as tmp:
        async with embedded_nats(port=0, data_dir=tmp) as server, trio.open_nursery() as n:
            c = Cluster(server.url, groups)
            for name in names:
                await n.start(c.member, name)
            n.start_soon(c.sample)
            await c.settled()
            for trial in range(args.trials):
                victim = names[trial % len(names)]
                own, scope = c.members[victim]
                share = sorted(own.owned)
                died = trio.current_time()
                scope.cancel()
                await c.settled()
                await trio.sleep(0.02)  # the sampler's next round
                took = [c.first(g, died, victim, other=True) - died for g in share]
                takeovers += took
                restarted = trio.current_time()
                await n.start(c.member, victim)
                await c.settled()
                await trio.sleep(0.02)
                back = [c.first(g, restarted, victim) for g in share]
                gap = [c.gap_before(g, t) for g, t in zip(share, back, strict=True)]
                gaps += gap
                print(f"trial {trial + 1}: {victim} died owning {len(share)} groups, taken "
                      f"in {_ms(took)} ms (p50 / p95 / max); handed back with a gap of "
                      f"{_ms(gap)} ms")
            n.cancel_scope.cancel()
    return {"takeover_s": takeovers, "handover_gap_s": gaps, "doubles": c.doubles}


def main(args: argparse.Namespace) -> None:
    res = trio.run(run, args)
    doc: dict[str, Any] = {
        "members": args.members, "groups": args.groups, "trials": args.trials,
        "ttl_ms": CFG.ttl_ms, "renew_ms": CFG.renew_ms, **res, "env": env_note(),
    }
    lines = [
        f"# Group takeover and handover, {args.members} members, {args.groups} groups, "
        f"{args.trials} trials (ttl {CFG.ttl_ms} ms, renew {CFG.renew_ms} ms)", "",
        "| what | groups | p50 / p95 / max ms |",
        "|---|---:|---:|",
        f"| death → a survivor may publish (takeover) | {len(res['takeover_s'])} | "
        f"{_ms(res['takeover_s'])} |",
        f"| restart → group back, time without a publisher (handover gap) | "
        f"{len(res['handover_gap_s'])} | {_ms(res['handover_gap_s'])} |",
        "",
        f"Two publishers of one group at one 1 ms sample: **{res['doubles']}**.",
        "Takeover waits for the server to expire the dead member's lease (ttl after its last "
        "renewal, plus the server's expiry check) and its delete marker to reach a survivor's "
        "watch; a handover needs no expiry (release handshake, delete, create).",
        f"Machine: {doc['env']}",
    ]
    table = "\n".join(lines)
    print(table)
    save("takeover", doc, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--groups", type=int, default=30)
    ap.add_argument("--trials", type=int, default=9)
    main(ap.parse_args())
