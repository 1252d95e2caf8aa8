"""Several ownership cores against a simulated KV server with random delays, deaths, pauses and
restarts (a discrete-event simulation, no clock but its own): at no instant may two members be
allowed to publish one group, fences grow with every new publisher, and once the faults stop
every group settles on the member rendezvous hashing gives it.

The server model is JetStream KV as the shell uses it: create only if the key holds no value,
update and delete only at the expected revision, one global revision counter, a key removed
(with a tombstone every watcher sees) ``ttl`` after the write that *stored* it, plus a random
lag of the server's expiry check. Every message (request, reply, watch entry) takes a random
delay; a paused member handles nothing until it wakes, but is still asked ``may_publish`` at
every instant (a zombie that wakes checks before it publishes).
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from xypipe._ownership._core import (
    Acquire,
    Action,
    ClearStale,
    Delete,
    OwnershipCore,
    Release,
    Renew,
)
from xypipe._ownership._hrw import assign

TTL, RENEW, MARGIN = 1.5, 0.3, 0.2


@attrs.define
class Node:
    name: str
    core: OwnershipCore
    incarnation: int
    alive: bool = True
    paused_until: float = 0.0
    #: The one wake-up at the core's next deadline that counts (earlier ones supersede).
    wake_at: float | None = None


@attrs.define
class Key:
    revision: int
    owner: str | None  # None: a tombstone (deleted or expired)


class Sim:
    def __init__(self, rng: random.Random, groups: list[str], max_delay: float) -> None:
        self.rng = rng
        self.groups = groups
        self.max_delay = max_delay
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0
        self.revision = 0
        self.kv: dict[str, Key] = {}
        self.announced: dict[str, float] = {}  # member -> when its announcement was stored
        self.nodes: dict[str, Node] = {}
        self.incarnations = 0
        self.violations: list[tuple[float, str, list[str]]] = []
        #: Per group, (publisher, fence) in the order publishers were first seen.
        self.publishers: dict[str, list[tuple[str, int]]] = {g: [] for g in groups}

    # -- the event loop -------------------------------------------------------------------------

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._queue, (t, self._n, fn))

    def delay(self) -> float:
        return self.rng.uniform(0.0005, self.max_delay)

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            t, _, fn = heapq.heappop(self._queue)
            self.now = t
            fn()
            self.check()
        self.now = end

    def check(self) -> None:
        for g in self.groups:
            pubs = [n.name for n in self.nodes.values()
                    if n.alive and n.core.may_publish(g, self.now)]
            if len(pubs) > 1:
                self.violations.append((self.now, g, pubs))
            for name in pubs:
                lease = self.nodes[name].core.lease(g)
                seen = self.publishers[g]
                if lease is not None and (not seen or seen[-1] != (name, lease.fence)):
                    seen.append((name, lease.fence))

    # -- members ----------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        old = self.nodes.get(name)
        if old is not None:
            old.alive = False  # restarted: the old process is gone
        self.incarnations += 1
        node = Node(name, OwnershipCore(name, ttl=TTL, renew=RENEW, margin=MARGIN),
                    self.incarnations)
        self.nodes[name] = node
        node.core.offer(set(self.groups))
        self.announce(node)
        # The shell reads both buckets once (what the server holds as the reads arrive).
        self.at(self.now + self.delay(), lambda: self._loaded(node))

    def _loaded(self, node: Node) -> None:
        for member, stored in self.announced.items():
            if self.now - stored <= TTL:
                node.core.member_heard(member, self.now)
        for g, key in self.kv.items():
            if key.owner is not None:
                node.core.lease_seen(g, key.owner, key.revision, self.now)
        node.core.ready = True
        self.step(node)

    def kill(self, name: str) -> None:
        if name in self.nodes:
            self.nodes[name].alive = False

    def pause(self, name: str, until: float) -> None:
        node = self.nodes.get(name)
        if node is not None:
            node.paused_until = until
            self.at(until, lambda: self.step(node))

    def deliver(self, node: Node, fn: Callable[[], None]) -> None:
        """Run ``fn`` on ``node`` after a delay (later if it is paused; never if it died)."""
        def go() -> None:
            if not node.alive or self.nodes.get(node.name) is not node:
                return
            if self.now < node.paused_until:
                self.at(node.paused_until + self.rng.uniform(0, 0.001), go)
                return
            fn()
            self.step(node)
        self.at(self.now + self.delay(), go)

    def step(self, node: Node) -> None:
        if not node.alive or self.now < node.paused_until or not node.core.ready:
            return
        for action in node.core.poll(self.now):
            self.send(node, action)
        deadline = node.core.next_deadline(self.now)
        if deadline is not None and (node.wake_at is None or deadline < node.wake_at
                                     or node.wake_at <= self.now):
            node.wake_at = deadline

            def wake() -> None:
                if node.wake_at == deadline:
                    node.wake_at = None
                    self.step(node)
            self.at(deadline, wake)

    def announce(self, node: Node) -> None:
        if not node.alive or self.nodes.get(node.name) is not node:
            return
        if self.now >= node.paused_until:
            def stored() -> None:
                self.announced[node.name] = self.now
                for other in self.nodes.values():
                    self.deliver(other, lambda o=other: o.core.member_heard(node.name, self.now))
                when = self.now
                self.at(self.now + TTL + self.rng.uniform(0, 0.2),
                        lambda: self._member_expired(node.name, when))
            self.at(self.now + self.delay(), stored)
        self.at(self.now + RENEW, lambda: self.announce(node))

    def _member_expired(self, name: str, stored: float) -> None:
        if self.announced.get(name) == stored:
            del self.announced[name]
            for other in self.nodes.values():
                self.deliver(other, lambda o=other: o.core.member_gone(name))

    # -- the KV server ----------------------------------------------------------------------------

    def send(self, node: Node, action: Action) -> None:
        if isinstance(action, Release):
            # The handshake: the aggregator stores the group's checkpoint, some time later.
            self.at(self.now + self.rng.uniform(0, 0.3),
                    lambda: self.deliver(node, lambda: node.core.handshake_done(action.group)))
            return
        self.at(self.now + self.delay(), lambda: self.serve(node, action))

    def _write(self, group: str, owner: str | None) -> int:
        self.revision += 1
        rev = self.revision
        self.kv[group] = Key(rev, owner)
        how = "released" if owner is None else ""
        for other in self.nodes.values():
            if owner is None:
                self.deliver(other, lambda o=other: o.core.lease_gone(group, rev, how, self.now))
            else:
                self.deliver(other,
                             lambda o=other: o.core.lease_seen(group, owner, rev, self.now))
        if owner is not None:
            self.at(self.now + TTL + self.rng.uniform(0, 0.25), lambda: self._expire(group, rev))
        return rev

    def _expire(self, group: str, rev: int) -> None:
        key = self.kv.get(group)
        if key is None or key.revision != rev:
            return
        self.revision += 1
        marker = self.revision
        self.kv[group] = Key(marker, None)
        for other in self.nodes.values():
            self.deliver(other,
                         lambda o=other: o.core.lease_gone(group, marker, "expired", self.now))

    def serve(self, node: Node, action: Action) -> None:
        g = action.group
        key = self.kv.get(g)
        core = node.core
        if isinstance(action, Acquire):
            if key is None or key.owner is None:
                owner = json.loads(action.value)["owner"]
                rev = self._write(g, owner)
                self.deliver(node, lambda: core.acquired(g, rev))
            else:
                self.deliver(node, lambda: core.acquire_refused(g, self.now))
        elif isinstance(action, Renew):
            if key is not None and key.owner is not None and key.revision == action.last:
                rev = self._write(g, key.owner)
                self.deliver(node, lambda: core.renewed(g, rev))
            else:
                self.deliver(node, lambda: core.renew_refused(g))
        elif isinstance(action, Delete | ClearStale):
            ok = key is not None and key.revision == action.last
            if ok:
                self._write(g, None)
            if isinstance(action, Delete):
                self.deliver(node, lambda: core.deleted(g, self.now))
            elif ok:
                self.deliver(node, lambda: core.stale_cleared(g, self.now))
            else:
                self.deliver(node, lambda: core.stale_failed(g, self.now))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 4), ngroups=st.integers(3, 12),
       max_delay=st.sampled_from([0.002, 0.05, 0.25]))
def test_never_two_publishers_fences_grow_and_the_groups_settle(
    seed: int, n: int, ngroups: int, max_delay: float
) -> None:
    rng = random.Random(seed)
    groups = [f"g{i}" for i in range(ngroups)]
    sim = Sim(rng, groups, max_delay)
    names = [f"h/agg.{i}" for i in range(n)]
    for i, name in enumerate(names):
        sim.at(i * rng.uniform(0, 0.5), lambda name=name: sim.start(name))
    # Faults for 8 s: deaths (restarted later under the same name), and pauses past the ttl.
    t = 1.0
    while t < 8.0:
        victim = rng.choice(names)
        kind = rng.choice(["kill", "pause"])
        if kind == "kill":
            sim.at(t, lambda v=victim: sim.kill(v))
            sim.at(t + rng.uniform(0.1, 3.0), lambda v=victim: sim.start(v))
        else:
            sim.at(t, lambda v=victim, t=t: sim.pause(v, t + rng.uniform(0.2, 2.5)))
        t += rng.uniform(0.5, 2.0)
    sim.run_until(16.0)
    assert sim.violations == []
    for g, seen in sim.publishers.items():
        fences = [f for _, f in seen]
        assert fences == sorted(set(fences)), f"{g}: {seen}"
    alive = [name for name, node in sim.nodes.items() if node.alive]
    want = assign(groups, alive)
    for name in alive:
        core = sim.nodes[name].core
        assert core.owned == {g for g, o in want.items() if o == name}
        assert all(core.may_publish(g, sim.now) for g in core.owned)
