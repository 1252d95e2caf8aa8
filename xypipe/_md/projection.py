"""Filter projections of a group: a watchlist, a predicate, a Top-K with hysteresis (sans-I/O).

A projection is a named subset of one group's symbols, published as a stream of its own — the
stream ``{group}/{name}``, on the subjects ``{prefix}.{group}.p.{name}`` — with the same
``Delta`` and ``Snapshot`` contracts as a group and a sequence of its own. A panel that draws 20
symbols then receives 20 symbols.

Membership: a symbol is a *candidate* when it is on the watchlist (if one is given) and passes
the predicate (venue, minimum session volume, price band). Without ``top_k`` every candidate is
a member. With ``top_k`` the candidates are ranked by ``top_by`` (ties by key) and, for
hysteresis, a candidate **enters** when it ranks within ``top_k`` and a member **leaves** only
when it ranks beyond ``top_k + margin`` (or stops being a candidate): a symbol oscillating
around the edge stays put, and the projection holds between ``top_k`` and ``top_k + margin``
members. A change of membership is explicit: a symbol that enters comes in the projection's next
delta with its full state (whether it ticked or not), one that leaves is in its ``removed``.

:class:`Projections` is fed the group deltas exactly as the snapshot mirror is (full entries,
never the trimmed wire form) and returns the projections' deltas; it builds their snapshots on
request. Its state after a delta is, by construction, the group's state filtered to the members
— the same entry bytes, so the same checksums.

Sequences are not checkpointed: after a restore a projection starts again at sequence 1 under a
new epoch (greater than any it used), and readers resync it from its snapshot, which follows its
first delta at once. It carries its group's fence (the publish stage stamps it).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from xypipe._degrade import Level
from xypipe._md.conflation import DELTA_SYMBOLS_TAG, DeltaOut, Entry
from xypipe._md.records import Route
from xypipe._md.snapshots import SNAPSHOT_SYMBOLS_TAG, SnapshotOut
from xypipe._md.wire import repeated_field
from xypipe._validate import GROUP_MAX, Invalid, group_problem, in_range, one_of
from xypipe.contracts import Delta, Snapshot, TopEntry

#: ``group/projection``: how clients, snapshot requests and the contracts name a projection.
PROJECTION_SEP = "/"
#: The subject token between the group and the projection's name (``xy.md.tick.G.p.NAME``): a
#: shard is a number, so the two never collide, and a subscription to every shard of a group
#: (``xy.md.tick.G.*``) does not match a projection's subjects.
PROJECTION_TOKEN = "p"
#: What a Top-K projection may rank by: the entry's value.
RANK_FIELDS: dict[str, Callable[[Entry], int]] = {
    "vol": lambda e: e[4], "oi": lambda e: e[5], "last": lambda e: e[6],
    "trades": lambda e: e[7],
}
_MAX = (1 << 63) - 1


def split_stream(name: str) -> tuple[str, str]:
    """``(group, projection)`` of a stream name (``projection`` is ``""`` for a whole group)."""
    group, _, projection = name.partition(PROJECTION_SEP)
    return group, projection


def is_projection(name: str) -> bool:
    return PROJECTION_SEP in name


def stream_subject(prefix: str, name: str) -> str:
    """The subject of stream ``name`` under ``prefix``: ``{prefix}.{group}`` for a group,
    ``{prefix}.{group}.p.{projection}`` for a projection."""
    group, projection = split_stream(name)
    if projection:
        return f"{prefix}.{group}.{PROJECTION_TOKEN}.{projection}"
    return f"{prefix}.{group}"


def stream_problem(name: object) -> str | None:
    """``None`` for a valid stream name (``group`` or ``group/projection``), else what is
    wrong."""
    if not isinstance(name, str):
        return group_problem(name)
    group, projection = split_stream(name)
    problem = group_problem(group)
    if problem is not None:
        return problem
    if PROJECTION_SEP in name:
        problem = group_problem(projection)
        if problem is not None:
            return f"projection name {projection!r}: {problem}"
    return None


def _tuple(v: Iterable[str]) -> tuple[str, ...]:
    return tuple(v)


def _name(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    problem = group_problem(value)
    if problem is not None:
        raise Invalid(attr.name, f"expected 1-{GROUP_MAX} characters of A-Z a-z 0-9 _ -; "
                      f"{problem}", value)


@attrs.frozen
class ProjectionSpec:
    """One projection, as a config declares it."""

    #: The projection's name (the stream is ``{group}/{name}``).
    name: str = attrs.field(validator=_name)
    #: The group it filters.
    group: str = attrs.field(validator=_name)
    #: Watchlist: ``VENUE.SYMBOL`` keys or bare symbols (on any venue); empty = every symbol.
    symbols: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: Only these venues; empty = every venue.
    venues: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: Session volume at least this.
    min_vol: int = attrs.field(default=0, validator=in_range(0, _MAX))
    #: Last price within [price_min, price_max], in the symbol's integer price units; 0 = open.
    price_min: int = attrs.field(default=0, validator=in_range(0, _MAX))
    price_max: int = attrs.field(default=0, validator=in_range(0, _MAX))
    #: Top-K: the ``top_k`` candidates ranked highest by ``top_by``; 0 = every candidate.
    top_k: int = attrs.field(default=0, validator=in_range(0, 1000))
    top_by: str = attrs.field(default="vol", validator=one_of(RANK_FIELDS))
    #: Hysteresis: a member leaves only when ranked beyond ``top_k + margin``.
    margin: int = attrs.field(default=0, validator=in_range(0, 1000))

    def __attrs_post_init__(self) -> None:
        if self.price_max and self.price_min > self.price_max:
            raise Invalid("price_min", f"expected at most price_max ({self.price_max})",
                          self.price_min)

    @property
    def stream(self) -> str:
        return f"{self.group}{PROJECTION_SEP}{self.name}"

    def predicate(self) -> Callable[[Entry], bool]:
        """Whether an entry is a candidate (watchlist and predicate)."""
        keys = frozenset(s for s in self.symbols if "." in s)
        bare = frozenset(s for s in self.symbols if "." not in s)
        venues = frozenset(self.venues)
        min_vol, lo, hi = self.min_vol, self.price_min, self.price_max
        watch = bool(self.symbols)

        def passes(e: Entry) -> bool:
            if watch and e[0] not in keys and e[2] not in bare:
                return False
            if venues and e[1] not in venues:
                return False
            if e[4] < min_vol:
                return False
            return not ((lo and e[6] < lo) or (hi and e[6] > hi))

        return passes


class Projection:
    """One projection's membership, sequence and mirror of its members."""

    def __init__(self, spec: ProjectionSpec, tick_prefix: str, snapshot_prefix: str) -> None:
        self.spec = spec
        self.stream = spec.stream
        self.route = Route(self.stream, 0, 1, stream_subject(tick_prefix, self.stream))
        self.snapshot_subject = stream_subject(snapshot_prefix, self.stream)
        self._passes = spec.predicate()
        value = self._value = RANK_FIELDS[spec.top_by]
        self._rank: Callable[[Entry], tuple[int, str]] = lambda e: (value(e), e[0])
        self.candidates: dict[str, Entry] = {}
        self.members: set[str] = set()
        self.epoch = 0
        self.seq = 0
        self.version = 0
        self.generation = 0
        #: Set at a restore: the first delta is followed by a snapshot at once.
        self.needs_snapshot = True

    def restart(self, entries: Iterable[Entry], epoch: int, generation: int) -> None:
        self.epoch = epoch
        self.generation = generation
        self.seq = self.version = 0
        self.needs_snapshot = True
        passes = self._passes
        self.candidates = {e[0]: e for e in entries if passes(e)}
        self.members = set(self._select(set()))

    def _select(self, members: set[str]) -> Iterable[str]:
        """The membership after a change of the candidates (hysteresis for Top-K)."""
        spec = self.spec
        if not spec.top_k:
            return self.candidates.keys()
        ranked = heapq.nlargest(spec.top_k + spec.margin, self.candidates.values(),
                                key=self._rank)
        enter = {e[0] for e in ranked[:spec.top_k]}
        keep = {e[0] for e in ranked[spec.top_k:]} & members
        return enter | keep

    def update(self, changed: Mapping[str, Entry], gone: Iterable[str]
               ) -> tuple[list[Entry], list[str]]:
        """Fold in the group's changes: the members' entries to send (changed or entered) and
        the keys that left, sorted."""
        passes, candidates, members = self._passes, self.candidates, self.members
        for key in gone:
            candidates.pop(key, None)
        for key, e in changed.items():
            if passes(e):
                candidates[key] = e
            else:
                candidates.pop(key, None)
        if self.spec.top_k:
            new = set(self._select(members))
            left = members - new
            entered = new - members
        else:
            left = {k for k in gone if k in members}
            left.update(k for k in changed if k in members and k not in candidates)
            entered = {k for k in changed if k in candidates and k not in members}
            new = (members - left) | entered
        self.members = new
        send = {k: e for k, e in changed.items() if k in new}
        for k in entered:
            send.setdefault(k, candidates[k])
        return [send[k] for k in sorted(send)], sorted(left)

    def delta(self, entries: Sequence[Entry], removed: Sequence[str], ts_emit_us: int,
              level: Level, window_ms: int, watermark: int) -> DeltaOut:
        self.seq += 1
        header = Delta(group=self.stream, shard=0, seq=self.seq, epoch=self.epoch,
                       ts_emit_us=ts_emit_us, level=level, window_ms=window_ms,
                       removed=removed)
        payload = header.SerializeToString() + repeated_field(
            DELTA_SYMBOLS_TAG, (e[3] for e in entries))
        out = DeltaOut(self.route, self.seq, self.epoch, payload, list(entries),
                       t_oldest=float("inf"), n_ticks=0, ts_emit_us=ts_emit_us, level=level,
                       window_ms=window_ms, watermark=watermark, removed=tuple(removed))
        out.generation = self.generation
        return out

    def build(self, ts_emit_us: int, window_ms: int, watermark: int) -> SnapshotOut:
        self.version += 1
        self.needs_snapshot = False
        candidates = self.candidates
        members = [candidates[k] for k in sorted(self.members)]
        spec = self.spec
        value = self._value
        top = sorted(members, key=self._rank, reverse=True)[:spec.top_k] if spec.top_k else []
        header = Snapshot(
            group=self.stream, version=self.version, epoch=self.epoch,
            shard_seq={0: self.seq}, shards=1, ts_emit_us=ts_emit_us, top_by=spec.top_by,
            top=[TopEntry(venue=e[1], symbol=e[2], value=value(e)) for e in top],
            source_stream_seq=watermark, window_ms=window_ms,
        )
        payload = header.SerializeToString() + repeated_field(
            SNAPSHOT_SYMBOLS_TAG, (e[3] for e in members))
        out = SnapshotOut(self.stream, self.snapshot_subject, payload, self.version,
                          self.epoch, {0: self.seq}, len(members))
        out.generation = self.generation
        return out


class Projections:
    """Every projection this aggregator publishes, fed the group deltas.

    ``events`` collects ``(stream, key, "enter" | "leave")`` membership changes for the shell to
    count (:meth:`take_events`)."""

    def __init__(self, specs: Iterable[ProjectionSpec], *, tick_prefix: str = "xy.md.tick",
                 snapshot_prefix: str = "xy.md.snapshot") -> None:
        self.by_stream: dict[str, Projection] = {}
        self.by_group: dict[str, list[Projection]] = {}
        for spec in specs:
            if spec.stream in self.by_stream:
                raise ValueError(f"projection {spec.stream!r} declared twice")
            p = Projection(spec, tick_prefix, snapshot_prefix)
            self.by_stream[spec.stream] = p
            self.by_group.setdefault(spec.group, []).append(p)
        self.epoch = 0
        self.events: list[tuple[str, str, str]] = []

    def __bool__(self) -> bool:
        return bool(self.by_stream)

    def restore(self, groups: Mapping[str, Iterable[Entry]], epoch: int,
                generation: int) -> None:
        """Start every projection again from its group's full state (``groups``: group ->
        entries, every entry serialised), under an epoch greater than any used before."""
        self.epoch = max(epoch, self.epoch + 1)
        for group, projections in self.by_group.items():
            entries = list(groups.get(group, ()))
            for p in projections:
                p.restart(entries, self.epoch, generation)

    def apply(self, deltas: Iterable[DeltaOut]) -> list[DeltaOut]:
        """The projections' deltas for a window's group deltas (at most one per projection;
        none for a projection nothing changed in)."""
        by_group = self.by_group
        changed: dict[str, dict[str, Entry]] = {}
        gone: dict[str, set[str]] = {}
        last: dict[str, DeltaOut] = {}
        for d in deltas:
            if d.group not in by_group:
                continue
            last[d.group] = d
            c = changed.setdefault(d.group, {})
            if d.removed:
                g = gone.setdefault(d.group, set())
                for key in d.removed:
                    c.pop(key, None)
                    g.add(key)
            for e in d.entries:
                c[e[0]] = e
                gone.get(d.group, set()).discard(e[0])
        out: list[DeltaOut] = []
        for group, d in last.items():
            c = changed.get(group, {})
            g = gone.get(group, set())
            for p in by_group[group]:
                before = p.members
                entries, removed = p.update(c, g)
                if not entries and not removed:
                    continue
                self.events.extend((p.stream, k, "enter") for k in p.members - before)
                self.events.extend((p.stream, k, "leave") for k in removed)
                out.append(p.delta(entries, removed, d.ts_emit_us, d.level, d.window_ms,
                                   d.watermark))
        return out

    def build(self, stream: str, ts_emit_us: int, window_ms: int,
              watermark: int) -> SnapshotOut | None:
        p = self.by_stream.get(stream)
        return None if p is None else p.build(ts_emit_us, window_ms, watermark)

    def build_due(self, ts_emit_us: int, window_ms: int, watermark: int) -> list[SnapshotOut]:
        """Snapshots of the projections restarted since their last one (right after their
        first delta, so readers resync at once)."""
        return [p.build(ts_emit_us, window_ms, watermark) for p in self.by_stream.values()
                if p.needs_snapshot and p.seq]

    def build_all(self, ts_emit_us: int, window_ms: int, watermark: int,
                  groups: Iterable[str]) -> list[SnapshotOut]:
        """Snapshots of every projection of ``groups`` (those a round of snapshots built)."""
        by_group = self.by_group
        return [p.build(ts_emit_us, window_ms, watermark)
                for g in groups for p in by_group.get(g, ())]

    def take_events(self) -> list[tuple[str, str, str]]:
        out, self.events = self.events, []
        return out


__all__ = ["PROJECTION_SEP", "PROJECTION_TOKEN", "Projection", "ProjectionSpec", "Projections",
           "is_projection", "split_stream", "stream_problem", "stream_subject"]
