"""Cadence watches of a ``nats_source``: subjects promised every so often, watched for silence.

The aggregator publishes every group's snapshot every ``interval_ms`` (2 s by default) whether
or not the market moves, so a gateway that receives no ``xy.md.snapshot.{group}`` for
``misses`` x that cadence has lost its aggregator (or the subscription). A rule::

    watch = [{ subject = "xy.md.snapshot.*", cadence_ms = 2000, misses = 3 }]

watches one stream per distinct subject it matches (``xy.md.snapshot.fx``, ...) plus the rule
itself (``xy.md.snapshot.*``: no matching message at all since start, or for that long, is
stale too — it is what keeps the process not-ready until the first snapshot arrives). A subject
that stays silent for ``forget_after_ms`` while others of its rule keep flowing is dropped (a
group removed from the aggregator's config must not hold health down forever).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import trio

from xypipe._health import Watch
from xypipe._stage import StageContext
from xypipe._validate import Invalid, in_range, subject_pattern


@attrs.frozen
class CadenceWatch:
    #: Subjects promised every ``cadence_ms`` (``*`` tokens: one watched stream per value).
    subject: str = attrs.field(validator=subject_pattern())
    cadence_ms: int = attrs.field(default=2000, validator=in_range(10, 3_600_000))
    #: Stale after this many missed cadences.
    misses: int = attrs.field(default=3, validator=in_range(1, 1000))
    #: Drop a silent subject after this long if its siblings flow (0 = never).
    forget_after_ms: int = attrs.field(default=600_000, validator=in_range(0, 86_400_000))

    def __attrs_post_init__(self) -> None:
        if self.forget_after_ms and self.forget_after_ms <= self.cadence_ms * self.misses:
            raise Invalid("forget_after_ms", "expected more than cadence_ms x misses (or 0)",
                          self.forget_after_ms)

    @property
    def stale_after(self) -> float:
        return self.cadence_ms * self.misses / 1000


def subject_matches(pattern: Iterable[str], subject: Iterable[str]) -> bool:
    """NATS wildcard matching on token lists (``*`` one token, ``>`` one or more)."""
    p, s = list(pattern), list(subject)
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


class _Rule:
    __slots__ = ("aggregate", "config", "per_subject", "prefix", "streams", "tokens")

    def __init__(self, config: CadenceWatch, aggregate: Watch) -> None:
        self.config = config
        self.tokens = config.subject.split(".")
        literal = []
        for t in self.tokens:
            if t in ("*", ">"):
                break
            literal.append(t)
        self.prefix = ".".join(literal)
        self.per_subject = len(literal) < len(self.tokens)
        self.aggregate = aggregate
        self.streams: dict[str, Watch] = {}


class CadenceWatches:
    """The shell a ``nats_source`` feeds with each batch it receives."""

    def __init__(self, ctx: StageContext, rules: Iterable[CadenceWatch]) -> None:
        self._ctx = ctx
        self._rules = [
            _Rule(r, ctx.watch(r.subject, stale_after=r.stale_after, gated=False))
            for r in rules
        ]

    def __bool__(self) -> bool:
        return bool(self._rules)

    def seen(self, subjects: Sequence[str]) -> None:
        for rule in self._rules:
            prefix = rule.prefix
            hit = False
            for subject in subjects:
                if not subject.startswith(prefix):
                    continue
                if not subject_matches(rule.tokens, subject.split(".")):
                    continue
                hit = True
                if not rule.per_subject:
                    continue
                w = rule.streams.get(subject)
                if w is None:
                    w = rule.streams[subject] = self._ctx.watch(
                        subject, stale_after=rule.config.stale_after, gated=False)
                w.data()
            if hit:
                rule.aggregate.data()

    def forget_silent(self) -> None:
        """Drop subjects silent for ``forget_after_ms`` while their rule's others flow."""
        for rule in self._rules:
            limit = rule.config.forget_after_ms / 1000
            if not limit or not rule.aggregate.status().fresh:
                continue
            for subject, w in list(rule.streams.items()):
                silence = w.status().silence_s
                if silence > limit:
                    del rule.streams[subject]
                    if self._ctx.watchdog is not None:
                        self._ctx.watchdog.forget(
                            subject, reason=f"silent for {silence:.0f} s while other "
                                            f"{rule.config.subject} subjects flow")

    async def run_forgetting(self) -> None:
        every = min(r.config.cadence_ms for r in self._rules) / 1000 if self._rules else 1.0
        while True:
            await trio.sleep(every)
            self.forget_silent()


__all__ = ["CadenceWatch", "CadenceWatches", "subject_matches"]
