"""What travels on the aggregator's edges: light records, decoded once at ingest.

Ticks stay the protobuf object ``Tick.FromString`` returned (no copy); the record adds what the
stages downstream need without touching the message again: the key, the source sequence, the
JetStream sequence and, once sharded, the route. Stages pass :class:`Batch` values (one item on an
edge per pull), never one record at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from xypipe.contracts import Contract, Snapshot, Tick

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext


class TickRec:
    """One decoded tick. ``sseq`` is its JetStream stream sequence (0 when not from a stream);
    ``t_in`` the Trio time it was ingested (the start of the processing-latency clock);
    ``arrival_us`` the aggregator's wall clock at ingest (what ``SymbolState.ts_arrival_us``
    carries: latency is measured from a time the server stamped, never the publisher's).
    ``reanchor`` marks a tick the door validator accepted by re-anchoring its symbol (see
    :mod:`xypipe._md.validate`): the reorder window follows it wherever its sequence is.

    ``raw`` is the payload the tick was decoded from (b"" when built in memory) and ``levels``
    its book levels read once, in canonical order (:func:`xypipe._md.book.flat_levels`; ``None``
    when nobody read them yet): reading a protobuf sub-message costs more than the parse, so
    the door, the checksum and the emitted entry all share one read (see ``docs/architecture.md``,
    "Aggregator hot path")."""

    __slots__ = ("arrival_us", "key", "levels", "raw", "reanchor", "route", "seq", "sseq", "t_in",
                 "tick", "trace")

    #: The ``ingest`` span of a sampled tick (an OpenTelemetry ``SpanContext``), set by ingest
    #: when tracing is on (see :mod:`xypipe._tracing`); ``None`` otherwise.
    trace: SpanContext | None

    def __init__(self, key: str, tick: Tick, sseq: int, t_in: float,
                 arrival_us: int = 0, raw: bytes = b"",
                 levels: list[int] | None = None) -> None:
        self.key = key
        self.tick = tick
        self.seq: int = tick.seq
        self.sseq = sseq
        self.t_in = t_in
        self.arrival_us = arrival_us
        self.raw = raw
        self.levels = levels
        self.reanchor = False
        self.route: Route | None = None
        # A plain store: a slot left unset would make conflation's scan for traced ticks (on
        # only) raise and catch an AttributeError per tick.
        self.trace = None

    def __repr__(self) -> str:
        return f"TickRec({self.key} seq={self.seq} sseq={self.sseq})"


class ContractRec:
    """Reference data for one instrument (``xy.ref.contract.{venue}.{symbol}``)."""

    __slots__ = ("contract", "key", "moved_from", "route", "sseq", "t_in")

    def __init__(self, key: str, contract: Contract, sseq: int, t_in: float) -> None:
        self.key = key
        self.contract = contract
        self.sseq = sseq
        self.t_in = t_in
        self.route: Route | None = None
        #: Set by the router when this contract moves the symbol out of a group it was routed
        #: to (by an earlier contract, a rule, the default group or a restored snapshot).
        self.moved_from: Route | None = None


class Route:
    """Where a symbol's state goes: its group, shard and the delta subject (shared per shard)."""

    __slots__ = ("group", "shard", "shards", "subject")

    def __init__(self, group: str, shard: int, shards: int, subject: str) -> None:
        self.group = group
        self.shard = shard
        self.shards = shards
        self.subject = subject

    def __repr__(self) -> str:
        return f"Route({self.subject})"


#: What a :class:`Batch` carries.
Rec = TickRec | ContractRec


@attrs.define(slots=True)
class Batch:
    """A list of records plus the source watermark: every stream message with a sequence up to
    ``watermark`` has been handed on (or dropped) by the stages before this one."""

    recs: list[Rec]
    watermark: int = 0

    @property
    def nbytes(self) -> int:
        return 0


@attrs.frozen(slots=True)
class Restore:
    """The state the aggregator (re)starts from: sent by ingest before anything else, and again
    whenever the groups it owns change (then every stage downstream starts over from it, as
    after a restart: see ``docs/architecture.md``, "Aggregators that split the groups").

    ``snapshots`` are the last snapshot of each restored group; ``checkpoints`` the last delta
    sequence emitted per ``(group, shard)``. Epochs are per group: ``epochs`` names the epoch
    of each restored group; every other group (first seen from now on) gets ``epoch``, a fresh
    one.
    """

    epoch: int
    snapshots: tuple[Snapshot, ...] = ()
    checkpoints: dict[tuple[str, int], int] = attrs.field(factory=dict)
    #: ``True`` when every restored group continues its sequence (its checkpoints and snapshot
    #: agree, replay possible); see ``continued_groups`` for the per-group answer.
    continued: bool = False
    #: First source stream sequence to replay (0: no replay).
    replay_from: int = 0
    #: Last source stream sequence when the aggregator started: the rebuild is complete once
    #: everything up to it has been folded in.
    target_seq: int = 0
    #: Trio time the aggregator started (to report how long the rebuild took).
    started_at: float = 0.0
    #: Group -> its epoch (restored groups); a group not named gets ``epoch``.
    epochs: dict[str, int] = attrs.field(factory=dict)
    #: The groups whose sequence continues from ``checkpoints``; ``None``: every restored group
    #: if ``continued``, none otherwise.
    continued_groups: frozenset[str] | None = None
    #: The groups this aggregator owns (``None``: every group, no ownership). Ticks of other
    #: groups are dropped before they reach any state.
    owned: frozenset[str] | None = None
    #: 1 for the first restore of a run, +1 for each restore after an ownership change: what
    #: was emitted under an older generation is not published.
    generation: int = 1

    def epoch_of(self, group: str) -> int:
        return self.epochs.get(group, self.epoch)

    def continues(self, group: str) -> bool:
        """Whether ``group``'s delta sequence goes on from its checkpoints."""
        if self.continued_groups is not None:
            return group in self.continued_groups
        return self.continued

    def owns(self, group: str) -> bool:
        return self.owned is None or group in self.owned


@attrs.frozen(slots=True)
class Watermark:
    """Sent by conflate after a window that emitted no delta while the source moved on (a quiet
    market, contracts only, rejected ticks): every stream message up to ``seq`` is reflected in
    what has been emitted, so snapshots may claim it."""

    seq: int


def key_of(venue: str, symbol: str) -> str:
    return f"{venue}.{symbol}"
