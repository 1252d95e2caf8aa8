"""Subject ACL: NATS-style patterns from a token's claims, checked against subjects.

Tokens are NATS-style: ``*`` matches exactly one token, ``>`` (last only) one or more. A request may
itself be a pattern (a subscription to every shard of a group is ``xy.md.tick.G.*``); it is allowed
when some granted pattern *covers* it, i.e. matches every subject the request could match.

What a browser subscription needs (least privilege, documented in docs/protocol.md):

* group ``G``, every shard: ``xy.md.snapshot.G``, ``xy.md.tick.G`` and ``xy.md.tick.G.*``;
* group ``G``, shards ``[1, 3]``: ``xy.md.snapshot.G``, ``xy.md.tick.G.1``, ``xy.md.tick.G.3``.

* projection ``G/P`` (:mod:`xypipe._md.projection`): ``xy.md.snapshot.G.p.P`` and
  ``xy.md.tick.G.p.P`` — one stream, no shards.

So ``["xy.md.*.G", "xy.md.*.G.>"]`` grants one whole group and its projections,
``["xy.md.*.G.p.P"]`` only the projection ``G/P``, and ``["xy.md.>"]`` everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from xypipe._md.projection import is_projection, stream_subject
from xypipe._validate import _is_subject

TICK_PREFIX = "xy.md.tick"
SNAPSHOT_PREFIX = "xy.md.snapshot"


def valid_pattern(pattern: str) -> bool:
    """A well-formed NATS subject or wildcard pattern."""
    return _is_subject(pattern)


def covers(granted: str, requested: str) -> bool:
    """True when every subject matched by ``requested`` is matched by ``granted``."""
    g = granted.split(".")
    r = requested.split(".")
    for i, gt in enumerate(g):
        if gt == ">":
            # ">" needs at least one more token; a requested ">" is covered by a granted ">".
            return len(r) > i
        if i >= len(r):
            return False
        rt = r[i]
        if rt == ">":
            return False
        if gt == "*":
            continue
        if rt == "*" or rt != gt:
            return False
    return len(r) == len(g)


def group_subjects(group: str, shards: Iterable[int] = ()) -> list[str]:
    """The subjects (or patterns) a subscription to ``group`` (and ``shards``) needs."""
    if is_projection(group):
        return [stream_subject(SNAPSHOT_PREFIX, group), stream_subject(TICK_PREFIX, group)]
    wanted = sorted(set(shards))
    if wanted:
        return [f"{SNAPSHOT_PREFIX}.{group}", *(f"{TICK_PREFIX}.{group}.{s}" for s in wanted)]
    return [f"{SNAPSHOT_PREFIX}.{group}", f"{TICK_PREFIX}.{group}", f"{TICK_PREFIX}.{group}.*"]


@attrs.frozen
class AclDecision:
    allowed: bool
    #: The first requested subject no granted pattern covers ("" when allowed).
    denied_subject: str = ""


@attrs.frozen
class Acl:
    """The patterns one principal may subscribe to."""

    patterns: tuple[str, ...] = attrs.field(converter=tuple)

    def allows(self, subject: str) -> bool:
        return any(covers(p, subject) for p in self.patterns)

    def check(self, subjects: Sequence[str]) -> AclDecision:
        for s in subjects:
            if not self.allows(s):
                return AclDecision(False, s)
        return AclDecision(True)

    def check_group(self, group: str, shards: Iterable[int] = ()) -> AclDecision:
        return self.check(group_subjects(group, shards))
