"""``snapshot``: a full snapshot of every group every ``interval_ms`` (and on request).

Input: ``Restore`` and ``list[DeltaOut]``. Output: the same delta lists, unchanged and first,
then ``list[SnapshotOut]`` — so on the wire a snapshot always follows the deltas it includes.

The snapshot is built from the deltas themselves (see :mod:`xypipe._md.snapshots`), so it is
consistent with its ``shard_seq`` by construction. With ``request_subject`` set, a NATS request
whose payload is a group name gets that group's snapshot at once (published as well, so the
stream holds the newest); with group ownership only the owner answers.

Projections (``projections``, see :mod:`xypipe._md.projection`): each is fed the same deltas;
its deltas follow its group's in the same list, its snapshot follows its first delta after a
restore and every round of its group's snapshots; a request for ``group/projection`` is
answered with the projection's snapshot.

A ``Restore`` in mid-stream (the groups owned changed) rebuilds every mirror from it; deltas
emitted before it (an older generation) are dropped here, never applied to the new mirrors.
"""

from __future__ import annotations

import math
from typing import cast

import attrs
import trio

from xypipe._errors import AGG_NO_SNAPSHOT, AGG_PROJECTIONS_RESTARTED
from xypipe._md.conflation import DeltaOut
from xypipe._md.projection import Projections, ProjectionSpec, split_stream
from xypipe._md.records import Restore, Watermark
from xypipe._md.snapshots import TOP_BY, SnapshotBuilder, SnapshotOut
from xypipe._stage import Stage
from xypipe._stages._md_common import wall_us
from xypipe._validate import Invalid, in_range, one_of, subject_pattern
from xypipe.abc import Msg, NatsClient


@attrs.frozen
class SnapshotConfig:
    #: The spec asks for 2-5 s; shorter is allowed for tests and benchmarks.
    interval_ms: int = attrs.field(default=2000, validator=in_range(100, 60_000))
    prefix: str = attrs.field(default="xy.md.snapshot", validator=subject_pattern())
    top_by: str = attrs.field(default="vol", validator=one_of(TOP_BY))
    top_k: int = attrs.field(default=20, validator=in_range(0, 1000))
    #: NATS subject answering on-demand snapshot requests (payload: the group); "" = none.
    request_subject: str = "xy.agg.snapshot.request"
    #: Snapshot early once the source watermark has moved this many stream messages past the
    #: last snapshot's (0 = by time only): a restart then replays at most about this many,
    #: whatever the tick rate. By count and by time.
    max_replay_msgs: int = attrs.field(default=2_000, validator=in_range(0, 100_000_000))
    #: Early snapshots never come closer together than this.
    min_interval_ms: int = attrs.field(default=500, validator=in_range(10, 60_000))
    #: Named filter projections of groups, each published as a stream of its own.
    projections: list[ProjectionSpec] = attrs.field(factory=list)
    #: Where the projections' deltas go (``{tick_prefix}.{group}.p.{name}``): the prefix of
    #: the group deltas (the ``shard`` stage's).
    tick_prefix: str = attrs.field(default="xy.md.tick", validator=subject_pattern())

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for p in self.projections:
            if p.stream in seen:
                raise Invalid("projections", "expected each group/name once", p.stream)
            seen.add(p.stream)


class SnapshotStage(Stage[Restore | list[DeltaOut] | list[Watermark],
                          list[DeltaOut] | list[SnapshotOut], SnapshotConfig]):
    """Keep a mirror of every group from the deltas; emit full snapshots periodically."""

    nats_role = "aggregator"

    async def run(self) -> None:
        cfg = self.config
        self.builder = SnapshotBuilder(0, subject_prefix=cfg.prefix, top_by=cfg.top_by,
                                       top_k=cfg.top_k)
        m = self.ctx.metrics
        self._built = m.counter("snapshots_built", "Group snapshots built")
        self._rounds = m.counter("snapshot_rounds", "Rounds of snapshots of every group, by "
                                 "trigger (time: interval_ms; count: max_replay_msgs; epoch: "
                                 "a restore started new epochs)", ["trigger"])
        self._size = m.gauge("snapshot_bytes", "Size of the last snapshot", ["group"])
        self._window_ms = 0
        self.projections = Projections(cfg.projections, tick_prefix=cfg.tick_prefix,
                                       snapshot_prefix=cfg.prefix)
        self._membership = m.counter(
            "projection_membership_changes", "Symbols entering or leaving a projection",
            ["projection", "change"])
        self._members = m.gauge("projection_members", "Symbols in a projection now",
                                ["projection"])
        self._due: list[SnapshotOut] = []
        self._pdeltas = m.counter("projection_deltas", "Deltas of a projection emitted",
                                  ["projection"])
        for stream in self.projections.by_stream:  # at 0 before their first event
            self._members.labels(stream).set(0)
            self._pdeltas.labels(stream)
            for change in ("enter", "leave"):
                self._membership.labels(stream, change)
        #: The groups this aggregator owns (``None``: all), from the last restore.
        self._owned: frozenset[str] | None = None
        async with trio.open_nursery() as nursery:
            if cfg.request_subject and self.ctx.nats is not None:
                await nursery.start(self._serve_requests, self.ctx.nats, cfg.request_subject)
            await self._loop()
            nursery.cancel_scope.cancel()

    async def _loop(self) -> None:
        cfg = self.config
        interval = cfg.interval_ms / 1000
        min_gap = cfg.min_interval_ms / 1000
        max_lag = cfg.max_replay_msgs
        next_t = trio.current_time() + interval
        last_t = -math.inf
        inbox, send, builder = self.inbox, self.outbox.send, self.builder
        snapped = builder.watermark  # the watermark of the last round of snapshots
        new_epoch = False  # a restore started new epochs: snapshot with the first deltas
        while True:
            item: Restore | list[DeltaOut] | list[Watermark] | None = None
            with trio.move_on_at(next_t):
                try:
                    item = await inbox.receive()
                except trio.EndOfChannel:
                    return
            if isinstance(item, Restore):
                # A fresh start, mid-stream too: every mirror is rebuilt from it.
                builder.restore(item)
                snapped = builder.watermark
                self._owned = item.owned
                # Groups starting a new epoch: readers hold their deltas until a snapshot of
                # it exists, so one goes out with the first deltas after the rebuild, not at
                # the next interval (a fail-over must not wait for the snapshot clock).
                new_epoch = bool(item.epochs) and not item.continued
                if self.projections:
                    self.projections.restore(
                        {g: builder.serialised_entries(g) for g in self.projections.by_group},
                        wall_us(), item.generation)
                    self.ctx.log.info("projections restarted under a new epoch",
                                      code=AGG_PROJECTIONS_RESTARTED,
                                      epoch=self.projections.epoch,
                                      projections=sorted(self.projections.by_stream))
                continue
            # A list is all watermarks or all deltas (conflate sends them apart).
            if item and type(item[0]) is Watermark:
                for w in item:
                    builder.advance(w.seq)
            elif item is not None:
                deltas = cast(list[DeltaOut], item)
                if 0 < deltas[0].generation < builder.generation:
                    continue  # emitted before the last restore: rebuilt and emitted again
                for d in deltas:
                    builder.apply(d)
                    self._window_ms = d.window_ms
                await send(self._project(deltas))
                if self._due:
                    due, self._due = self._due, []
                    self._count(due)
                    await send(due)
            now = trio.current_time()
            if new_epoch and item is not None and type(item[0]) is not Watermark:
                trigger = "epoch"
                new_epoch = False
                next_t = now + interval
            elif now >= next_t:
                trigger = "time"
                next_t = max(next_t + interval, now)
            elif max_lag and builder.watermark - snapped >= max_lag and now - last_t >= min_gap:
                trigger = "count"
                next_t = now + interval
            else:
                continue
            last_t = now
            snapped = builder.watermark
            self._rounds.labels(trigger).inc()
            snaps = await self._build_round(builder)
            if self.projections and snaps:
                snaps += self.projections.build_all(wall_us(), self._window_ms,
                                                    builder.watermark, [s.group for s in snaps])
            if snaps:
                self._count(snaps)
                await send(snaps)

    async def _build_round(self, builder: SnapshotBuilder) -> list[SnapshotOut]:
        """Every group's snapshot, at one watermark (nothing reaches the builder meanwhile),
        yielding between groups: a round of thousands of symbols takes tens of ms, and built
        in one go it held up the deltas already sent to publish for as long (publish's input
        edge then looked congested and the level went up)."""
        ts = wall_us()
        out: list[SnapshotOut] = []
        for group in sorted(builder.groups):
            snap = builder.build(group, ts, self._window_ms)
            if snap is not None:
                out.append(snap)
            await trio.lowlevel.checkpoint()
        return out

    def _project(self, deltas: list[DeltaOut]) -> list[DeltaOut]:
        """The group deltas followed by their projections' deltas (and, right after a
        projection's first delta since a restore, its snapshot — sent with the next item)."""
        projections = self.projections
        if not projections:
            return deltas
        out = projections.apply(deltas)
        if not out:
            return deltas
        for d in out:
            self._pdeltas.labels(d.group).inc()
        for stream, _key, change in projections.take_events():
            self._membership.labels(stream, change).inc()
        for p in projections.by_stream.values():
            self._members.labels(p.stream).set(len(p.members))
        self._due = projections.build_due(wall_us(), self._window_ms, self.builder.watermark)
        return deltas + out

    def _count(self, snaps: list[SnapshotOut]) -> None:
        self._built.inc(len(snaps))
        for s in snaps:
            self._size.labels(s.group).set(len(s.payload))

    async def _serve_requests(self, nc: NatsClient, subject: str, *,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                              ) -> None:
        async with nc.subscribe(subject) as sub:
            task_status.started()
            async for batch in sub:
                for msg in batch:
                    await self._answer(nc, msg)

    async def _answer(self, nc: NatsClient, msg: Msg) -> None:
        group = msg.data.decode("utf-8", "replace").strip()
        base, projection = split_stream(group)
        if self._owned is not None and base not in self._owned:
            return  # another aggregator owns it and answers
        if projection:
            snap = self.projections.build(group, wall_us(), self._window_ms,
                                          self.builder.watermark)
        else:
            snap = self.builder.build(group, wall_us(), self._window_ms)
        if snap is None:
            self.ctx.log.warning("snapshot requested for an unknown or not yet consistent group",
                                 code=AGG_NO_SNAPSHOT, group=group)
            if msg.reply:
                await nc.publish(msg.reply, b"", headers={"Xy-Error": f"no snapshot of {group!r}"})
            return
        self._count([snap])
        await self.outbox.send([snap])
        if msg.reply:
            await nc.publish(msg.reply, snap.payload)

