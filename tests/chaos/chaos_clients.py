"""WebSocket clients that behave like the browser's worker and account for every frame.

Each :class:`Subscriber` holds one connection to a gateway (reconnecting with backoff and
resuming from its last points, as ``ui-static/xy-worker.js`` does), subscribes to every group,
and rebuilds the groups with the project's own subscriber rules (:class:`MarketView`: epoch,
per-shard sequence, canonical checksum). Over the WebSocket every snapshot the gateway sends
is a (re)start point, so it replaces the group's state; everything else must continue exactly:

* **gap**: a delta that does not follow the last one of its stream (a hole the client was not
  told about) — counted, and answered with a ``snapshot_request`` like the worker does;
* **repeat**: a delta at or below one already applied since the last snapshot;
* **epoch change** without a snapshot first; **checksum mismatch** of a verified entry;
* **resync**: a snapshot replacing a group that was live (allowed: that is how a client is
  brought back after a fault); a **rewind** is a resync to a snapshot older than what the
  client had (reported, since the user sees older prices for a moment).

For recovery time, :meth:`Subscriber.mark` starts a stopwatch: the client notes, per group, when
the first delta *emitted after the mark* (``ts_emit_us``) was applied in sequence.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_websocket

from xypipe._gateway._tokens import load_private_key, mint
from xypipe._md.client import MarketView
from xypipe.contracts import (
    ClientFrame,
    ErrorCode,
    GroupRef,
    Hello,
    Ping,
    Resume,
    ResumePoint,
    ServerFrame,
    Snapshot,
    SnapshotRequest,
    Subscribe,
    SymbolState,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from chaos_stack import DEV_PRIVATE_KEY
from gw_support import ws_client  # the gateway tests' client socket helper

GROUPS = ("equities", "futures", "fx", "crypto", "rates")


def dev_token(subject: str = "chaos", ttl_s: float = 3600) -> str:
    return mint(load_private_key(DEV_PRIVATE_KEY), subject=subject, allow=["xy.md.>"],
                now=time.time(), ttl_s=ttl_s)


class WsView(MarketView):
    """:class:`MarketView` with the WebSocket rule: a snapshot always restarts its group."""

    def __init__(self) -> None:
        super().__init__()
        self.resyncs = 0
        self.rewinds = 0

    def apply_snapshot(self, snap: Snapshot) -> None:
        g = self.groups.get(snap.group)
        if g is not None:
            if g.synced:
                self.resyncs += 1
                if snap.epoch == g.epoch and any(
                        g.seqs.get(shard, 0) > seq for shard, seq in snap.shard_seq.items()):
                    self.rewinds += 1
            g.synced = False
            g.delta_seqs = {}
        super().apply_snapshot(snap)


@attrs.define
class ClientStats:
    connects: int = 0
    resumes: int = 0
    frames: int = 0
    snapshot_requests: int = 0
    snapshot_unavailable: int = 0
    errors: list[str] = attrs.field(factory=list)
    closes: list[str] = attrs.field(factory=list)


class Subscriber:
    """One browser-like client; :meth:`run` until cancelled."""

    def __init__(self, name: str, port: int, groups: tuple[str, ...] = GROUPS) -> None:
        self.name = name
        self.port = port
        self.groups = groups
        self.view = WsView()
        self.stats = ClientStats()
        self.session_id = ""
        self.connected = False
        self._rng = random.Random(name)
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

    def problems(self) -> dict[str, int]:
        s = self.view.stats
        return {"gaps": s.gaps, "repeats": s.repeats, "epoch_changes": s.epoch_changes,
                "checksum_mismatches": s.checksum_mismatches}

    def summary(self) -> dict[str, Any]:
        s = self.view.stats
        return {**self.problems(), "resyncs": self.view.resyncs, "rewinds": self.view.rewinds,
                "snapshots": s.snapshots, "deltas": s.deltas, "verified": s.verified,
                "connects": self.stats.connects, "resumes": self.stats.resumes,
                "snapshot_requests": self.stats.snapshot_requests,
                "snapshot_unavailable": self.stats.snapshot_unavailable,
                "errors": self.stats.errors[-5:], "closes": self.stats.closes[-5:],
                "detail": s.problems[:10]}

    def books(self) -> dict[str, SymbolState]:
        return {f"{v}.{s}": state for (v, s), state in self.view.state().items()}

    # -- the connection ------------------------------------------------------------------

    def close(self) -> None:
        """End :meth:`run` (the client leaves)."""
        self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            await self._reconnecting()

    async def _reconnecting(self) -> None:
        backoff = 0.05
        while True:
            frames = self.stats.frames
            try:
                await self._session()
            except* (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                     trio.BrokenResourceError) as group:
                exc: BaseException = group
                while isinstance(exc, BaseExceptionGroup):
                    exc = exc.exceptions[0]
                self.stats.closes.append(f"{type(exc).__name__}: {exc}"[:200])
            if self.stats.frames > frames:
                backoff = 0.05  # the last session worked: start over from a short wait
            self.connected = False
            # Jittered exponential backoff, capped low: the worker does the same.
            await trio.sleep(backoff * (0.5 + self._rng.random()))
            backoff = min(backoff * 2, 0.5)

    async def _session(self) -> None:
        async with ws_client(self.port) as c:
            ws = c.ws
            self.stats.connects += 1
            hello = Hello(token=dev_token(self.name), protocol_version=1, client="chaos",
                          session_id=self.session_id)
            await ws.send_message(ClientFrame(id=1, hello=hello).SerializeToString())
            points = self._resume_points()
            live = {p.group for p in points}
            if points:
                self.stats.resumes += 1
                await ws.send_message(
                    ClientFrame(id=2, resume=Resume(points=points)).SerializeToString())
            rest = [GroupRef(group=g) for g in self.groups if g not in live]
            if rest:
                await ws.send_message(
                    ClientFrame(id=3, subscribe=Subscribe(groups=rest)).SerializeToString())
            self.connected = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ping, ws)
                while True:
                    data = await ws.get_message()
                    frame = ServerFrame.FromString(data)
                    await self._on_frame(ws, frame)

    def _resume_points(self) -> list[ResumePoint]:
        out = []
        for g in self.view.groups.values():
            if g.synced:
                out.extend(ResumePoint(group=g.group, shard=shard, epoch=g.epoch, seq=seq)
                           for shard, seq in g.seqs.items())
        return out

    async def _ping(self, ws: Any) -> None:
        nonce = 0
        while True:
            await trio.sleep(2.0)
            nonce += 1
            await ws.send_message(ClientFrame(ping=Ping(ts_us=int(time.time() * 1e6),
                                                        nonce=nonce)).SerializeToString())

    async def _on_frame(self, ws: Any, f: ServerFrame) -> None:
        self.stats.frames += 1
        if f.HasField("welcome"):
            self.session_id = f.welcome.session_id
        if f.HasField("error"):
            if f.error.code == ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE:
                self.stats.snapshot_unavailable += 1
            else:
                self.stats.errors.append(
                    f"{ErrorCode.Name(f.error.code)}: {f.error.message}"[:200])
        view = self.view
        for snap in f.snapshots:
            view.apply_snapshot(snap)
        now = time.time()
        stats = view.stats
        for d in f.deltas:
            before = (stats.gaps, stats.epoch_changes, stats.checksum_mismatches)
            applied = view.apply_delta(d)
            if before != (stats.gaps, stats.epoch_changes, stats.checksum_mismatches):
                # What the worker does on a hole or a bad checksum: ask for a snapshot.
                self.stats.snapshot_requests += 1
                await ws.send_message(ClientFrame(
                    snapshot_request=SnapshotRequest(group=d.group)).SerializeToString())
            elif applied and d.ts_emit_us >= self._mark_us and d.group not in self._fresh:
                self._fresh[d.group] = now
                if all(g in self._fresh for g in self.groups):
                    self._all_fresh.set()
        if not self._synced.is_set() and all(
                (g := view.groups.get(name)) is not None and g.synced for name in self.groups):
            self._synced.set()
