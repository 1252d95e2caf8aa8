"""WebSocket clients that behave like the browser's worker and account for every frame.

Each :class:`Subscriber` is a :mod:`xypipe.client` connection to a gateway (it reconnects with
backoff and resumes from its last points, as ``ui-static/xy-worker.js`` does), subscribed to
every group; the client checks epoch, per-shard sequence and the canonical checksum of every
entry, and asks for a snapshot on any doubt. Over the WebSocket every snapshot the gateway sends
is a (re)start point; everything else must continue exactly, so the suite counts as problems:

* **gap**: a delta that does not follow the last one of its stream (a hole the client was not
  told about);
* **repeat**: a delta at or below one already applied;
* **epoch change** without a snapshot first; **checksum mismatch** of a verified entry;

and reports (allowed: that is how a client is brought back after a fault) every **resync**, a
snapshot replacing a group that was live, and every **rewind**, a resync to a snapshot older
than what the client had (the user sees older prices for a moment).

For recovery time, :meth:`Subscriber.mark` starts a stopwatch: the client notes, per group, when
the first delta *emitted after the mark* (``ts_emit_us``) was applied in sequence.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio
from chaos_stack import DEV_PRIVATE_KEY

import xypipe.client as xc
from xypipe._gateway._tokens import load_private_key, mint
from xypipe.contracts import SymbolState

GROUPS = ("equities", "futures", "fx", "crypto", "rates")
#: The worker's backoff, capped low: a chaos client comes back as fast as a browser would.
RECONNECT = xc.Reconnect(base_s=0.05, cap_s=0.5)


def dev_token(subject: str = "chaos", ttl_s: float = 3600) -> str:
    return mint(load_private_key(DEV_PRIVATE_KEY), subject=subject, allow=["xy.md.>"],
                now=time.time(), ttl_s=ttl_s)


@attrs.define
class ClientStats:
    resyncs: int = 0
    rewinds: int = 0
    gaps: int = 0
    repeats: int = 0
    epoch_changes: int = 0
    snapshot_unavailable: int = 0
    errors: list[str] = attrs.field(factory=list)
    closes: list[str] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


class Subscriber:
    """One browser-like client; :meth:`run` until cancelled."""

    def __init__(self, name: str, port: int, groups: tuple[str, ...] = GROUPS) -> None:
        self.name = name
        self.port = port
        self.groups = groups
        self.stats = ClientStats()
        self.client: xc.Client | None = None
        self._live: set[str] = set()
        self._pos: dict[tuple[str, int], tuple[int, int]] = {}  # stream -> (epoch, seq) held
        self._mark_us = 0
        self._fresh: dict[str, float] = {}
        self._all_fresh = trio.Event()
        self._synced = trio.Event()
        self._scope = trio.CancelScope()

    # -- what the suite reads --------------------------------------------------------------

    def mark(self, t_wall: float) -> None:
        """Start waiting for deltas emitted at or after ``t_wall`` (time.time())."""
        self._mark_us = int(t_wall * 1e6)
        self._fresh = {}
        self._all_fresh = trio.Event()

    async def wait_fresh(self) -> dict[str, float]:
        """Until every group has applied a delta emitted after the mark: when each did."""
        await self._all_fresh.wait()
        return dict(self._fresh)

    def stale_groups(self) -> list[str]:
        return [g for g in self.groups if g not in self._fresh]

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    def _sdk(self) -> xc.ClientStatistics | None:
        return None if self.client is None else self.client.statistics()

    def problems(self) -> dict[str, int]:
        s = self._sdk()
        return {"gaps": self.stats.gaps, "repeats": self.stats.repeats,
                "epoch_changes": self.stats.epoch_changes,
                "checksum_mismatches": s.checksum_mismatches if s else 0}

    def details(self) -> list[str]:
        """The problems seen, described (the last 50)."""
        return list(self.stats.problems)

    def summary(self) -> dict[str, Any]:
        s = self._sdk()
        return {**self.problems(), "resyncs": self.stats.resyncs, "rewinds": self.stats.rewinds,
                "snapshots": s.snapshots if s else 0, "deltas": s.applied if s else 0,
                "verified": s.checksums_verified if s else 0,
                "connects": s.connects if s else 0, "resumes": s.resumed_groups if s else 0,
                "snapshot_requests": s.snapshot_requests if s else 0,
                "snapshot_unavailable": self.stats.snapshot_unavailable,
                "errors": self.stats.errors[-5:], "closes": self.stats.closes[-5:],
                "detail": self.stats.problems[:10]}

    def books(self) -> dict[str, SymbolState]:
        if self.client is None:
            return {}
        return {f"{v}.{s}": state for book in self.client.books.values()
                for (v, s), state in book.symbols.items()}

    # -- the connection ------------------------------------------------------------------

    def close(self) -> None:
        """End :meth:`run` (the client leaves)."""
        self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            while True:
                # The client reconnects by itself; only a first connection that fails (the
                # gateway not up yet) or a final close ends up here.
                try:
                    async with xc.connect(f"ws://127.0.0.1:{self.port}/ws",
                                          token=dev_token(self.name), reconnect=RECONNECT,
                                          client_name="chaos") as client:
                        self.client = client
                        await client.subscribe(*self.groups)
                        async for update in client:
                            self._on_update(update)
                except xc.ClientError as exc:
                    self.stats.closes.append(f"[{exc.code}] {exc}"[:200])
                await trio.sleep(RECONNECT.cap_s)

    def _on_update(self, u: xc.Update) -> None:
        if isinstance(u, xc.DeltaApplied):
            self._pos[(u.group, u.shard)] = (u.epoch, u.seq)
            if u.ts_emit_us >= self._mark_us and u.group not in self._fresh:
                self._fresh[u.group] = time.time()
                if all(g in self._fresh for g in self.groups):
                    self._all_fresh.set()
        elif isinstance(u, xc.SnapshotApplied):
            self._on_snapshot(u)
        elif isinstance(u, xc.DeltaSkipped):
            self._on_skipped(u)
        elif isinstance(u, xc.SnapshotRequested):
            self._live.discard(u.group)
        elif isinstance(u, xc.ErrorReceived):
            if u.name == "ERROR_CODE_SNAPSHOT_UNAVAILABLE":
                self.stats.snapshot_unavailable += 1
            else:
                self.stats.errors.append(f"{u.name}: {u.message}"[:200])
        elif isinstance(u, xc.Disconnected):
            self.stats.closes.append(f"{u.close_code}: {u.reason}"[:200])
        if not self._synced.is_set() and self.client is not None and all(
                (b := self.client.book(g)) is not None and b.synced for g in self.groups):
            self._synced.set()

    def _on_snapshot(self, u: xc.SnapshotApplied) -> None:
        if u.group in self._live:
            self.stats.resyncs += 1
            held = [self._pos.get((u.group, shard)) for shard, _ in u.shard_seq]
            if any(h is not None and h[0] == u.epoch and h[1] > seq
                   for h, (_, seq) in zip(held, u.shard_seq, strict=True)):
                self.stats.rewinds += 1
        for shard, seq in u.shard_seq:
            self._pos[(u.group, shard)] = (u.epoch, seq)
        self._live.add(u.group)

    def _on_skipped(self, u: xc.DeltaSkipped) -> None:
        where = f"{u.group}/{u.shard}"
        held = self._pos.get((u.group, u.shard))
        if u.verdict in ("gap", "future_epoch", "far_future"):
            self._live.discard(u.group)
        if u.verdict == "gap":
            self.stats.gaps += 1
            self.stats.problem(f"{where}: gap {held} -> #{u.first_seq or u.seq} "
                               f"of epoch {u.epoch}")
        elif u.verdict == "duplicate":
            self.stats.repeats += 1
            self.stats.problem(f"{where}: #{u.seq} repeated (held {held})")
        elif u.verdict == "future_epoch":
            self.stats.epoch_changes += 1
            self.stats.problem(f"{where}: epoch {u.epoch} without its snapshot (held {held})")
