"""What each degradation level *does*: one frozen table, read by the aggregator and the gateway.

:mod:`xypipe._degrade` decides *when* a level is entered and left (thresholds, hysteresis,
dwell); this module says what is different while it is in force. Both sides read the same
:class:`Reaction` for a level, so "L2 trims to ``trim_depth`` levels a side" means the same thing
in the conflation window (:mod:`xypipe._md.conflation`) and in a slow browser's frames
(:mod:`xypipe._gateway._frames`):

* **L1** lowers the sampling rate: the aggregator's conflation window is ``window_factor`` times
  longer; the gateway merges each stream's due deltas into one and waits ``frame_interval_ms``
  between a connection's frames.
* **L2** also trims every entry on the wire to ``trim_depth`` book levels a side (``trimmed``
  set; the checksum still covers the full book).
* **L3** also pauses the groups whose priority is in ``paused_priorities`` (their changes wait
  for the level to come down), and a connection that stays over its budget is closed.

A level keeps every reaction of the levels below it (``*_FROM`` below). Each side builds its
policy from its own config keys: the ``conflate`` stage's ``l1_factor``, ``trim_depth`` and
``pause_priorities``; the ``gateway`` stage's ``trim_depth`` and ``level_interval_ms`` (a
gateway knows no contract priorities: its ``priority_groups`` count as high, every other group
as low). :func:`policy_table` renders the table ``docs/architecture.md`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from xypipe._degrade import DegradePolicy, Level
from xypipe._validate import Invalid
from xypipe.contracts import Priority

#: The lowest level at which each reaction is in force (a level keeps the ones below it).
WINDOW_FROM = Level.L1  # longer conflation windows
MERGE_FROM = Level.L1  # a stream's due deltas merged into one per frame (gateway)
TRIM_FROM = Level.L2  # depth trimmed on the wire
PAUSE_FROM = Level.L3  # low-priority groups paused
CLOSE_FROM = Level.L3  # a connection still over its budget is closed (gateway)

PRIORITY_NAMES: dict[int, str] = {Priority.PRIORITY_LOW: "low", Priority.PRIORITY_NORMAL: "normal",
                  Priority.PRIORITY_HIGH: "high"}


@attrs.frozen
class Reaction:
    """What is different at one level."""

    level: Level
    #: The conflation window is this many times the configured interval (1: normal).
    window_factor: int
    #: Each stream's due deltas go to a connection merged into one delta per frame.
    merge: bool
    #: Book levels a side kept on the wire (entries marked ``trimmed``); None: the full book.
    trim_depth: int | None
    #: Groups of these priorities stop updating until the level comes down.
    paused_priorities: frozenset[int]
    #: The gateway waits this long between two frames of a connection at this level.
    frame_interval_ms: int
    #: A connection at this level whose queue stays over its budget is closed (4010).
    may_close: bool

    @property
    def frame_interval_s(self) -> float:
        return self.frame_interval_ms / 1000

    def pauses(self, priority: int) -> bool:
        return priority in self.paused_priorities


def _factor(_inst: object, _attr: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise Invalid("window_factor", "expected an integer 1..10", value)


def _depth(_inst: object, _attr: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise Invalid("trim_depth", "expected an integer 1..10", value)


def _priorities(value: Iterable[int]) -> frozenset[int]:
    return frozenset(int(p) for p in value)


def _intervals(value: Sequence[int]) -> tuple[int, ...]:
    return tuple(value)


def _check_intervals(_inst: object, _attr: object, value: tuple[int, ...]) -> None:
    if len(value) != len(Level) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 60_000 for v in value
    ):
        raise Invalid("frame_interval_ms", "expected 4 integers 0..60000 (L0..L3)", list(value))


@attrs.frozen
class LevelPolicy:
    """The per-level reactions of one side (aggregator or gateway); :meth:`at` reads them."""

    #: At L1 and above, the conflation window is this many times longer.
    window_factor: int = attrs.field(default=3, validator=_factor)
    #: At L2 and above, entries keep this many levels a side on the wire.
    trim_depth: int = attrs.field(default=1, validator=_depth)
    #: At L3, groups of these priorities pause.
    paused_priorities: frozenset[int] = attrs.field(
        default=frozenset({Priority.PRIORITY_LOW}), converter=_priorities)
    #: Pause between two frames of a connection at L0..L3 (gateway).
    frame_interval_ms: tuple[int, ...] = attrs.field(
        default=(0, 100, 250, 500), converter=_intervals, validator=_check_intervals)
    _reactions: tuple[Reaction, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_reactions", tuple(self._reaction(lvl) for lvl in Level))

    def _reaction(self, level: Level) -> Reaction:
        return Reaction(
            level=level,
            window_factor=self.window_factor if level >= WINDOW_FROM else 1,
            merge=level >= MERGE_FROM,
            trim_depth=self.trim_depth if level >= TRIM_FROM else None,
            paused_priorities=self.paused_priorities if level >= PAUSE_FROM else frozenset(),
            frame_interval_ms=self.frame_interval_ms[level],
            may_close=level >= CLOSE_FROM,
        )

    def at(self, level: Level) -> Reaction:
        """The reactions in force at ``level``."""
        return self._reactions[level]

    def table(self) -> tuple[Reaction, ...]:
        """Every level's reactions, L0 first."""
        return self._reactions

    def unpaused(self, level: Level) -> Level:
        """The highest level up to ``level`` that pauses nothing: a last window (shutdown)
        goes out at it, so paused groups are flushed too."""
        while level > Level.L0 and self.at(level).paused_priorities:
            level = Level(level - 1)
        return level


def _pressures(degrade: DegradePolicy, level: Level) -> str:
    if level == Level.L0:
        return "—"
    i = level - 1
    return f"≥ {degrade.enter[i]:g} / < {degrade.leave[i]:g}"


def policy_table(levels: LevelPolicy | None = None, degrade: DegradePolicy | None = None) -> str:
    """The "Per-level policy" table of ``docs/architecture.md`` (defaults unless given); a test
    checks that the document shows exactly this."""
    levels = levels or LevelPolicy()
    degrade = degrade or DegradePolicy()
    rows = [
        "| level | in at / out below (`degrade.enter` / `leave`) | conflation window "
        "(`l1_factor`) | gateway frames (`level_interval_ms`) | trim depth (`trim_depth`) "
        "| paused priorities (`pause_priorities`) | slow browser closed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in levels.table():
        frames = "merged, " if r.merge else ""
        frames += f"{r.frame_interval_ms} ms apart" if r.frame_interval_ms else "as due"
        paused = ", ".join(PRIORITY_NAMES.get(p, str(p)) for p in sorted(r.paused_priorities))
        depth = "full book" if r.trim_depth is None else f"{r.trim_depth} a side"
        rows.append(
            f"| L{int(r.level)} | {_pressures(degrade, r.level)} | x {r.window_factor} "
            f"| {frames} | {depth} | {paused or '—'} | {'yes' if r.may_close else 'no'} |"
        )
    return "\n".join(rows) + "\n"
